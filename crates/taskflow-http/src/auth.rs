//! Authentication: argon2id password hashes, HS256 access tokens (JWT) and personal access tokens.
//!
//! A request authenticates with `Authorization: Bearer <token>`. Tokens starting with
//! [`PAT_PREFIX`] are personal access tokens, looked up by their SHA-256 hash; anything else must
//! be a JWT signed with HS256 by the configured secret (so another service holding the secret,
//! such as a Better Auth deployment, can mint tokens we accept). `alg: none` and every other
//! algorithm are refused.

use std::fmt;
use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use taskflow_domain::{Email, TimeZone, User, UserId};

use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of personal access tokens, so they are recognisable (and scannable in leaked code).
pub const PAT_PREFIX: &str = "tfp_";

/// A secret string whose `Debug` and `Serialize` never reveal it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"[redacted]\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Environment variables made only of digits arrive as numbers; a secret is still text.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            String(String),
            Number(serde_json::Number),
        }
        Ok(Secret(match Text::deserialize(deserializer)? {
            Text::String(s) => s,
            Text::Number(n) => n.to_string(),
        }))
    }
}

/// Authentication settings (`[auth]` in the config file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 signing secret, at least 32 bytes. Empty: the binary generates one and keeps it in the data folder.
    pub jwt_secret: Secret,
    /// `iss` claim written into and required from access tokens.
    pub issuer: String,
    /// `aud` claim written into and required from access tokens.
    pub audience: String,
    /// Lifetime of access tokens from `/auth/login`, in seconds.
    pub access_token_ttl_secs: u64,
    /// Accept JWTs whose `sub` is not one of our user ids, creating an account from their `email` claim.
    pub provision_external_users: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::default(),
            issuer: "taskflow".into(),
            audience: "taskflow".into(),
            access_token_ttl_secs: 3600,
            provision_external_users: true,
        }
    }
}

/// Claims of our access tokens.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: our user id, or an external identity.
    pub sub: String,
    /// Expiry (seconds since epoch).
    pub exp: i64,
    /// Issued at.
    #[serde(default)]
    pub iat: i64,
    /// Issuer.
    #[serde(default)]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default)]
    pub aud: Option<serde_json::Value>,
    /// E-mail, used to provision external users.
    #[serde(default)]
    pub email: Option<String>,
    /// Display name of external users.
    #[serde(default)]
    pub name: Option<String>,
}

/// Signs and checks access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    settings: AuthSettings,
}

impl TokenKeys {
    /// Keys for the configured secret.
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if !settings.issuer.is_empty() {
            validation.set_issuer(&[settings.issuer.as_str()]);
            validation.required_spec_claims.insert("iss".into());
        }
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[settings.audience.as_str()]);
            validation.required_spec_claims.insert("aud".into());
        }
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            settings: settings.clone(),
        }
    }

    /// A signed access token for `user`, valid from `now` for the configured lifetime.
    pub fn issue(&self, user: &User, now: DateTime<Utc>) -> Result<String, ApiError> {
        let claims = Claims {
            sub: user.id.to_string(),
            iat: now.timestamp(),
            exp: now.timestamp() + self.ttl_secs() as i64,
            iss: (!self.settings.issuer.is_empty()).then(|| self.settings.issuer.clone()),
            aud: (!self.settings.audience.is_empty())
                .then(|| serde_json::Value::String(self.settings.audience.clone())),
            email: Some(user.email.to_string()),
            name: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing token: {e}")))
    }

    /// Lifetime of issued tokens in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.settings.access_token_ttl_secs
    }

    /// The claims of a valid token (signature, algorithm, expiry, issuer and audience checked).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("token_expired")
                }
                _ => ApiError::Unauthorized("invalid_token"),
            })
    }

    /// Whether unknown subjects may be provisioned.
    pub fn provisions_external_users(&self) -> bool {
        self.settings.provision_external_users
    }
}

/// Hashes a password with argon2id (OWASP parameters), off the async threads.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let _permit = hashing_permit().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&random_bytes::<16>())
            .map_err(|e| ApiError::Internal(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("hashing task: {e}")))?
}

/// Checks a password against a stored hash. With no hash (unknown e-mail) it checks against a
/// dummy hash anyway, so response time does not reveal which e-mails have accounts.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let known = stored.is_some();
    let hash = match stored {
        Some(hash) => hash,
        None => match DUMMY.get() {
            Some(hash) => hash.clone(),
            None => {
                let hash = hash_password(hex::encode(random_bytes::<16>())).await?;
                DUMMY.get_or_init(|| hash).clone()
            }
        },
    };
    let _permit = hashing_permit().await?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| ApiError::Internal(format!("stored hash: {e}")))?;
        // Verify first, then look at `known`: the work must not depend on whether the account exists.
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(matches && known)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("verify task: {e}")))?
}

/// Bounds how many password hashes run at once: each takes ~19 MiB and tens of milliseconds,
/// so a flood of sign-ins must queue instead of exhausting memory and blocking threads.
async fn hashing_permit() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let permits = PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores * 2)
    });
    permits
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("password hashing is shut down".into()))
}

/// `N` random bytes from the OS generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A new personal access token secret: `tfp_` and 43 URL-safe characters (256 bits).
pub fn new_personal_token() -> String {
    use base64::Engine as _;
    format!(
        "{PAT_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

/// What we store instead of a personal access token: its SHA-256.
pub fn personal_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The authenticated caller, placed in request extensions by [`require_user`].
#[derive(Clone, Debug)]
pub struct CurrentUser(pub Arc<User>);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CurrentUser>()
            .cloned()
            .ok_or(ApiError::Unauthorized("missing_token"))
    }
}

/// Middleware for protected routes: authenticates the bearer token, applies the per-user rate
/// limit, and stores [`CurrentUser`] for the handler.
pub async fn require_user(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer_token(request.headers())?;
    let user = authenticate(&state, token).await?;
    state.rate_limits.check_user(user.id)?;
    request.extensions_mut().insert(CurrentUser(Arc::new(user)));
    Ok(next.run(request).await)
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing_token"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("invalid_token"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthorized("invalid_token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() || token.len() > 8192 {
        return Err(ApiError::Unauthorized("invalid_token"));
    }
    Ok(token.trim())
}

/// Resolves a bearer token to its user.
pub async fn authenticate(state: &AppState, token: &str) -> Result<User, ApiError> {
    if token.starts_with(PAT_PREFIX) {
        return state
            .store
            .authenticate_access_token(&personal_token_hash(token), state.clock.now())
            .await?
            .ok_or(ApiError::Unauthorized("invalid_token"));
    }
    let claims = state.tokens.verify(token)?;
    if let Ok(id) = claims.sub.parse::<UserId>()
        && let Some(user) = state.store.user(id).await?
    {
        return Ok(user);
    }
    if let Some(user) = state.store.user_by_external_subject(&claims.sub).await? {
        return Ok(user);
    }
    if !state.tokens.provisions_external_users() || claims.sub.parse::<UserId>().is_ok() {
        return Err(ApiError::Unauthorized("invalid_token"));
    }
    provision_external_user(state, &claims).await
}

async fn provision_external_user(state: &AppState, claims: &Claims) -> Result<User, ApiError> {
    if claims.sub.is_empty() || claims.sub.len() > 255 {
        return Err(ApiError::Unauthorized("invalid_token"));
    }
    let email = claims
        .email
        .as_deref()
        .and_then(|e| Email::parse(e).ok())
        .ok_or(ApiError::Unauthorized("invalid_token"))?;
    let user = User {
        id: UserId::new(),
        email,
        display_name: claims
            .name
            .as_deref()
            .and_then(|n| taskflow_domain::DisplayName::parse(n).ok()),
        time_zone: TimeZone::UTC,
        is_admin: false,
        created_at: state.clock.now(),
    };
    match state.store.create_external_user(&user, &claims.sub).await {
        Ok(()) => Ok(user),
        // Two first requests at once: the other one created it.
        Err(taskflow_store::StoreError::Conflict("users_external_subject")) => state
            .store
            .user_by_external_subject(&claims.sub)
            .await?
            .ok_or(ApiError::Unauthorized("invalid_token")),
        // The e-mail belongs to a local account: do not merge identities silently.
        Err(taskflow_store::StoreError::Conflict(_)) => {
            Err(ApiError::Unauthorized("invalid_token"))
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&AuthSettings {
            jwt_secret: Secret::new("0123456789abcdef0123456789abcdef"),
            ..AuthSettings::default()
        })
    }

    fn user() -> User {
        User {
            id: UserId::new(),
            email: Email::parse("a@example.com").unwrap(),
            display_name: None,
            time_zone: TimeZone::UTC,
            is_admin: false,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn issued_tokens_verify() {
        let keys = keys();
        let user = user();
        let token = keys.issue(&user, Utc::now()).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, user.id.to_string());
    }

    #[test]
    fn expired_tampered_and_unsigned_tokens_fail() {
        let keys = keys();
        let user = user();
        let old = keys
            .issue(&user, Utc::now() - chrono::TimeDelta::hours(2))
            .unwrap();
        assert_eq!(keys.verify(&old).unwrap_err().code(), "token_expired");

        let token = keys.issue(&user, Utc::now()).unwrap();
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.verify(&tampered).is_err());

        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = token.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{}.",
            engine.encode(br#"{"alg":"none","typ":"JWT"}"#),
            payload
        );
        assert!(keys.verify(&none).is_err());

        let other = TokenKeys::new(&AuthSettings {
            jwt_secret: Secret::new("another-secret-another-secret-xx"),
            ..AuthSettings::default()
        });
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2hunter2");
        assert_eq!(format!("{secret:?}"), "\"[redacted]\"");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn personal_tokens_have_a_prefix_and_hash_stably() {
        let token = new_personal_token();
        assert!(token.starts_with(PAT_PREFIX));
        assert_eq!(token.len(), 4 + 43);
        assert_eq!(personal_token_hash(&token), personal_token_hash(&token));
        assert_ne!(
            personal_token_hash(&token),
            personal_token_hash(&new_personal_token())
        );
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(
            verify_password("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(!verify_password("anything".into(), None).await.unwrap());
    }
}
