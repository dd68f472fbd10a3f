//! The kinds of channel a notification can travel through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A notification channel. The snake_case names (`in_app`, `webhook`, `email`) are stable: they
/// are stored in the deliveries table, used as metric labels and accepted in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Shown in the user's open sessions and notification list; never leaves the platform.
    InApp,
    /// An HTTP POST of the signed CloudEvent to a URL the user registered.
    Webhook,
    /// An email through the configured SMTP relay.
    Email,
}

impl ChannelKind {
    /// Every channel, in a fixed order.
    pub const ALL: [ChannelKind; 3] = [Self::InApp, Self::Webhook, Self::Email];

    /// The stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InApp => "in_app",
            Self::Webhook => "webhook",
            Self::Email => "email",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the channel names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a channel; use one of in_app, webhook, email")]
pub struct UnknownChannel(pub String);

impl FromStr for ChannelKind {
    type Err = UnknownChannel;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownChannel(text.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_round_trip() {
        for (kind, name) in ChannelKind::ALL.iter().zip(["in_app", "webhook", "email"]) {
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.to_string(), name);
            assert_eq!(name.parse::<ChannelKind>().unwrap(), *kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
            let back: ChannelKind = serde_json::from_value(name.into()).unwrap();
            assert_eq!(back, *kind);
        }
        assert!("sms".parse::<ChannelKind>().is_err());
        assert!("InApp".parse::<ChannelKind>().is_err());
    }
}
