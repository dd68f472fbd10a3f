//! Stream tickets: short-lived, single-use credentials for `?ticket=`, because browsers cannot
//! set headers on `EventSource` or `WebSocket`.
//!
//! A ticket is an HS256 JWT signed with a key derived from the JWT secret (so any instance
//! sharing the secret accepts it, and it can never pass as an access token), with audience
//! [`TICKET_AUDIENCE`], a random `jti` and an expiry of [`RealtimeSettings::ticket_ttl`]. Each
//! instance remembers redeemed `jti`s until they expire: a ticket opens one stream per instance.
//!
//! [`RealtimeSettings::ticket_ttl`]: super::RealtimeSettings::ticket_ttl

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use taskflow_domain::UserId;

use crate::auth::random_bytes;
use crate::error::ApiError;

/// The `aud` claim of stream tickets.
pub const TICKET_AUDIENCE: &str = "taskflow-stream-ticket";

#[derive(Serialize, Deserialize)]
struct TicketClaims {
    sub: String,
    exp: i64,
    aud: String,
    jti: String,
}

/// Issues and redeems stream tickets.
pub struct Tickets {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
    redeemed: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// Tickets signed with a key derived from `secret` (a random key when it is empty).
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"taskflow realtime stream tickets\0");
        if secret.is_empty() {
            hasher.update(random_bytes::<32>());
        } else {
            hasher.update(secret);
        }
        let key = hasher.finalize();
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            ttl,
            redeemed: Mutex::new(HashMap::new()),
        }
    }

    /// A ticket for `user` and when it expires.
    pub fn issue(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), ApiError> {
        let ttl = chrono::TimeDelta::from_std(self.ttl)
            .map_err(|e| ApiError::Internal(format!("ticket ttl: {e}")))?;
        let expires_at = now + ttl;
        let claims = TicketClaims {
            sub: user.to_string(),
            // `exp` is in whole seconds: rounded up, so a ticket lasts at least its TTL (rounded
            // down, a 1 s ticket issued late in a second expired within milliseconds).
            exp: expires_at.timestamp() + i64::from(expires_at.timestamp_subsec_nanos() > 0),
            aud: TICKET_AUDIENCE.into(),
            jti: hex::encode(random_bytes::<16>()),
        };
        let ticket = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing ticket: {e}")))?;
        Ok((ticket, expires_at))
    }

    /// The user of a valid, unexpired ticket not redeemed here before; it cannot be used again.
    pub fn redeem(&self, ticket: &str, now: DateTime<Utc>) -> Result<UserId, ApiError> {
        if ticket.len() > 2048 {
            return Err(ApiError::Unauthorized("invalid_ticket"));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[TICKET_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        // Expiry is checked below against the app's clock.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<TicketClaims>(ticket, &self.decoding, &validation)
            .map_err(|_| ApiError::Unauthorized("invalid_ticket"))?
            .claims;
        if claims.exp <= now.timestamp() {
            return Err(ApiError::Unauthorized("ticket_expired"));
        }
        let user: UserId = claims
            .sub
            .parse()
            .map_err(|_| ApiError::Unauthorized("invalid_ticket"))?;
        let mut redeemed = self
            .redeemed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = now.timestamp();
        redeemed.retain(|_, exp| *exp > current);
        if redeemed.insert(claims.jti, claims.exp).is_some() {
            return Err(ApiError::Unauthorized("ticket_used"));
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_work_once_until_they_expire() {
        let tickets = Tickets::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let user = UserId::new();
        let now = Utc::now();
        let (ticket, _) = tickets.issue(user, now).unwrap();
        assert_eq!(tickets.redeem(&ticket, now).unwrap(), user);
        assert_eq!(
            tickets.redeem(&ticket, now).unwrap_err().code(),
            "ticket_used"
        );
        let (late, _) = tickets.issue(user, now).unwrap();
        let later = now + chrono::TimeDelta::seconds(61);
        assert_eq!(
            tickets.redeem(&late, later).unwrap_err().code(),
            "ticket_expired"
        );
        // Issued late in a second, a short ticket still works after the second boundary.
        let short = Tickets::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(1));
        let late_in_second = DateTime::from_timestamp(1_800_000_000, 999_000_000).unwrap();
        let (quick, _) = short.issue(user, late_in_second).unwrap();
        let just_after = late_in_second + chrono::TimeDelta::milliseconds(500);
        assert_eq!(short.redeem(&quick, just_after).unwrap(), user);
        let other = Tickets::new(b"another secret another secret 12", Duration::from_secs(60));
        let (foreign, _) = other.issue(user, now).unwrap();
        assert_eq!(
            tickets.redeem(&foreign, now).unwrap_err().code(),
            "invalid_ticket"
        );
    }
}
