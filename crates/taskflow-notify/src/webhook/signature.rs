//! Webhook signatures: what is signed, and how a receiver checks it.
//!
//! Every request carries
//!
//! ```text
//! TaskFlow-Timestamp: 1767225600
//! TaskFlow-Signature: sha256=<64 lowercase hex digits>
//! ```
//!
//! where the hex digits are `HMAC-SHA256(key = the target's secret as UTF-8 bytes,
//! message = "<timestamp>.<body>")`: the decimal timestamp exactly as sent in the header, one
//! `.`, then the raw request body bytes (the CloudEvent JSON, unparsed). A receiver
//!
//! 1. reads the raw body before any JSON parsing (re-serialising changes bytes);
//! 2. recomputes the HMAC over `timestamp + "." + body` and compares it with the header in
//!    constant time ([`verify_signature`]);
//! 3. rejects timestamps too far from its own clock ([`timestamp_is_fresh`], e.g. 5 minutes),
//!    so a captured request cannot be replayed later;
//! 4. deduplicates on `TaskFlow-Delivery`, which stays the same across retries of a delivery
//!    (while the timestamp and signature change with every attempt).

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::Secret;

/// The prefix naming the algorithm in `TaskFlow-Signature`.
pub const SIGNATURE_PREFIX: &str = "sha256=";

type HmacSha256 = Hmac<Sha256>;

fn mac_of(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `TaskFlow-Signature` value for `body` sent at `timestamp` (Unix seconds):
/// `sha256=` and the lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` keyed with `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac_of(secret, &timestamp.to_string(), body).finalize();
    format!("{SIGNATURE_PREFIX}{}", hex::encode(digest.into_bytes()))
}

/// Whether `signature` (the `TaskFlow-Signature` header) is the signature of `body` sent with
/// the `TaskFlow-Timestamp` header `timestamp`, under `secret`. The comparison takes the same
/// time wherever the first difference is, so it leaks nothing about the expected value.
/// Malformed input (not `sha256=` + hex, a non-numeric timestamp) is simply `false`.
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(hex_digits) = signature.trim().strip_prefix(SIGNATURE_PREFIX) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digits) else {
        return false;
    };
    mac_of(secret, timestamp, body)
        .verify_slice(&expected)
        .is_ok()
}

/// Whether the `TaskFlow-Timestamp` header `timestamp` is within `tolerance` of `now` (either
/// side, for clock skew). Receivers use it against replays.
pub fn timestamp_is_fresh(timestamp: &str, now: DateTime<Utc>, tolerance: Duration) -> bool {
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    seconds.abs_diff(now.timestamp()) <= tolerance.unsigned_abs()
}

/// A new random signing secret: 32 random bytes as 64 lowercase hex characters (the key is the
/// text's UTF-8 bytes, like any other secret).
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_dot_body() {
        let signature = sign(b"secret", 1_767_225_600, b"{\"a\":1}");
        // Independent computation of the same MAC over the documented message.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(b"secret").unwrap();
        mac.update(b"1767225600.{\"a\":1}");
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature, expected);
        assert_eq!(signature.len(), "sha256=".len() + 64);
        assert_eq!(signature, signature.to_lowercase());
    }

    #[test]
    fn known_answer() {
        // Computed independently with Python's hmac module.
        assert_eq!(
            sign(b"whsec-test", 1_767_225_600, br#"{"specversion":"1.0"}"#),
            "sha256=a97badadce71439e920c5197a60ee7184100ca2885dffdf5b082450b666c7be8"
        );
    }

    #[test]
    fn verification_rejects_any_change() {
        let body = br#"{"id":"1"}"#;
        let signature = sign(b"s3cret", 1_700_000_000, body);
        assert!(verify_signature(b"s3cret", "1700000000", body, &signature));
        assert!(!verify_signature(b"other", "1700000000", body, &signature));
        assert!(!verify_signature(b"s3cret", "1700000001", body, &signature));
        assert!(!verify_signature(
            b"s3cret",
            "1700000000",
            br#"{"id":"2"}"#,
            &signature
        ));
        assert!(!verify_signature(
            b"s3cret",
            "1700000000",
            body,
            &signature.to_uppercase()
        ));
        assert!(!verify_signature(
            b"s3cret",
            "1700000000",
            body,
            &signature[7..]
        ));
        assert!(!verify_signature(
            b"s3cret",
            "1700000000",
            body,
            "sha256=zz"
        ));
        assert!(!verify_signature(b"s3cret", "1700000000", body, "sha256="));
        assert!(!verify_signature(b"s3cret", "", body, &signature));
        assert!(!verify_signature(b"s3cret", "17.0", body, &signature));
        // Moving the separator between timestamp and body must not verify.
        let shifted = sign(b"k", 12, b"3.x");
        assert!(!verify_signature(b"k", "123", b"x", &shifted));
    }

    #[test]
    fn freshness_allows_skew_both_ways() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let five_minutes = Duration::from_secs(300);
        assert!(timestamp_is_fresh("1700000000", now, five_minutes));
        assert!(timestamp_is_fresh("1699999700", now, five_minutes));
        assert!(timestamp_is_fresh("1700000300", now, five_minutes));
        assert!(!timestamp_is_fresh("1699999699", now, five_minutes));
        assert!(!timestamp_is_fresh("1700000301", now, five_minutes));
        assert!(!timestamp_is_fresh("soon", now, five_minutes));
    }

    #[test]
    fn generated_secrets_are_random_hex() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
