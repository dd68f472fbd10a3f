//! User accounts and the values that make them up.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::UserId;
use crate::time::{TimeZone, truncate_for_message};
use crate::validation::FieldError;

/// A normalised (trimmed, lower-case) e-mail address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Longest address accepted (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    /// Parses and normalises an address.
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let normalised = input.trim().to_lowercase();
        if normalised.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                "email",
                "too_long",
                format!("an e-mail address has at most {} characters", Self::MAX_LEN),
            ));
        }
        let valid = email_address::EmailAddress::is_valid(&normalised)
            && normalised
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain.contains('.') && !domain.starts_with('['));
        if !valid {
            return Err(FieldError::new(
                "email",
                "invalid_email",
                format!(
                    "`{}` is not an e-mail address like `name@example.com`",
                    truncate_for_message(input)
                ),
            ));
        }
        Ok(Self(normalised))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an address read back from storage (already normalised when stored).
    pub fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as typed, checked for length. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Fewest characters accepted.
    pub const MIN_CHARS: usize = 8;
    /// Most characters accepted (bounds hashing work).
    pub const MAX_CHARS: usize = 1024;

    /// Checks the length rules.
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let chars = input.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(FieldError::new(
                "password",
                "too_short",
                format!("a password needs at least {} characters", Self::MIN_CHARS),
            ));
        }
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                "password",
                "too_long",
                format!("a password has at most {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(input.to_owned()))
    }

    /// The secret itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A display name: trimmed, 1–100 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// Most characters accepted.
    pub const MAX_CHARS: usize = 100;

    /// Parses a display name.
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new(
                "display_name",
                "empty",
                "a display name cannot be blank; omit it instead",
            ));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "display_name",
                "too_long",
                format!("a display name has at most {} characters", Self::MAX_CHARS),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::new(
                "display_name",
                "invalid_characters",
                "a display name cannot contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a name read back from storage.
    pub fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

/// An account as the rest of the system sees it (no password hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Identifier.
    pub id: UserId,
    /// Normalised e-mail address, unique.
    pub email: Email,
    /// Optional name shown in the UI.
    pub display_name: Option<DisplayName>,
    /// Default zone for the user's tasks.
    pub time_zone: TimeZone,
    /// Whether the account may use administrative endpoints.
    pub is_admin: bool,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@x.com",
            "ann@localhost",
            "a b@x.com",
            "ann@@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            Email::parse(&format!("{}@x.com", "a".repeat(300)))
                .unwrap_err()
                .code,
            "too_long"
        );
    }

    #[test]
    fn passwords_need_eight_characters_counted_as_chars() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse("ééééééé").is_err());
        assert!(Password::parse(&"x".repeat(1025)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret-password").unwrap()),
            "Password([redacted])"
        );
    }

    #[test]
    fn display_names_are_trimmed() {
        assert_eq!(DisplayName::parse("  Ann ").unwrap().as_str(), "Ann");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{0007}b").is_err());
    }
}
