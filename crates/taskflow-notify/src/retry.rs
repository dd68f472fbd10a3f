//! When to try a failed delivery again, and when to stop.
//!
//! Delays grow exponentially from `initial` (1 s, 2 s, 4 s … by default) up to `max` (512 s),
//! and the tenth attempt is the last. Each delay is shortened by a random part of at most
//! `jitter` (a fraction, at most 0.5) so deliveries that failed together do not all come back in
//! the same second:
//!
//! ```text
//! nominal(n) = min(initial × 2^(n-1), max)          n = attempts made so far, n ≥ 1
//! delay(n)   = nominal(n) × (1 − jitter × u)         u uniform in [0, 1)
//! ```
//!
//! So a delay never exceeds the cap and never drops below half its nominal value. A receiver's
//! `Retry-After` is a floor on top of that ([`RetryPolicy::decide`]).
//!
//! Configuration follows the project's settings: whole seconds in `*_secs` fields,
//! `{ "max_attempts": 10, "initial_delay_secs": 1, "max_delay_secs": 512, "jitter": 0.2 }`.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::DeliveryError;

/// The largest jitter fraction: a delay is never shorter than half its nominal value.
pub const MAX_JITTER: f64 = 0.5;

/// How often and how far apart failed deliveries are tried again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RetryPolicyConfig", into = "RetryPolicyConfig")]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after this many the delivery is dead-lettered.
    pub max_attempts: u32,
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The longest delay (the cap of the exponential growth).
    pub max: Duration,
    /// The largest fraction a delay is shortened by at random, `0.0..=0.5` (larger values are
    /// treated as 0.5).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(512),
            jitter: 0.2,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Stop and dead-letter the delivery.
    GiveUp(GiveUpReason),
}

/// Why a delivery is not tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The error is permanent: another attempt would fail the same way.
    Permanent,
    /// Every allowed attempt was made.
    Exhausted,
}

impl GiveUpReason {
    /// A stable name: `permanent` or `exhausted`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
        }
    }
}

impl RetryPolicy {
    /// Checks the invariants; the message says how to fix the configuration.
    pub fn validate(&self) -> Result<(), InvalidRetryPolicy> {
        let fail = |message: String| Err(InvalidRetryPolicy(message));
        if self.max_attempts == 0 {
            return fail("max_attempts must be at least 1 (1 means: never retry)".into());
        }
        if self.initial.is_zero() {
            return fail("initial_delay_secs must be at least 1".into());
        }
        if self.max < self.initial {
            return fail(format!(
                "max_delay_secs ({}) must not be smaller than initial_delay_secs ({})",
                self.max.as_secs(),
                self.initial.as_secs()
            ));
        }
        if !(0.0..=MAX_JITTER).contains(&self.jitter) {
            return fail(format!(
                "jitter must be a fraction between 0 and {MAX_JITTER}, got {}",
                self.jitter
            ));
        }
        Ok(())
    }

    /// Whether `attempts` attempts used up the budget.
    pub fn is_exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }

    /// The delay before the next attempt when `attempts` attempts were made, without jitter.
    /// Zero attempts need no delay.
    pub fn nominal_delay(&self, attempts: u32) -> Duration {
        if attempts == 0 {
            return Duration::ZERO;
        }
        // 2^(n-1), saturating long before the shift could overflow.
        let factor = 1u32.checked_shl(attempts - 1).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt when `attempts` attempts were made, with random jitter.
    pub fn delay_after(&self, attempts: u32) -> Duration {
        self.delay_after_with_rng(attempts, &mut rand::rng())
    }

    /// [`delay_after`](Self::delay_after) drawing the jitter from `rng` (a seeded RNG makes it
    /// reproducible).
    pub fn delay_after_with_rng<R: Rng + ?Sized>(&self, attempts: u32, rng: &mut R) -> Duration {
        self.delay_with_sample(attempts, rng.random::<f64>())
    }

    /// The delay for a given jitter sample `u` in `[0, 1)`: `nominal × (1 − jitter × u)`.
    /// `u = 0` gives the nominal delay; values outside `[0, 1]` are clamped. Deterministic.
    pub fn delay_with_sample(&self, attempts: u32, u: f64) -> Duration {
        let nominal = self.nominal_delay(attempts);
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, MAX_JITTER)
        };
        let u = if u.is_nan() { 0.0 } else { u.clamp(0.0, 1.0) };
        nominal.mul_f64(1.0 - jitter * u)
    }

    /// What to do after the `attempts`-th attempt failed with `error`: give up if the error is
    /// permanent or the budget is spent, else wait the jittered delay, or the receiver's
    /// `Retry-After` if that is longer.
    pub fn decide(&self, attempts: u32, error: &DeliveryError) -> RetryDecision {
        self.decide_with_sample(attempts, error, rand::rng().random::<f64>())
    }

    /// [`decide`](Self::decide) with a given jitter sample (see
    /// [`delay_with_sample`](Self::delay_with_sample)). Deterministic.
    pub fn decide_with_sample(
        &self,
        attempts: u32,
        error: &DeliveryError,
        u: f64,
    ) -> RetryDecision {
        if !error.is_retryable() {
            return RetryDecision::GiveUp(GiveUpReason::Permanent);
        }
        if self.is_exhausted(attempts) {
            return RetryDecision::GiveUp(GiveUpReason::Exhausted);
        }
        let delay = self.delay_with_sample(attempts, u);
        RetryDecision::RetryAfter(error.retry_after().map_or(delay, |floor| delay.max(floor)))
    }
}

/// A retry policy that breaks an invariant; the text says which and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry policy: {0}")]
pub struct InvalidRetryPolicy(String);

/// The configuration shape of [`RetryPolicy`]: whole seconds, like the rest of the settings.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RetryPolicyConfig {
    max_attempts: u32,
    initial_delay_secs: u64,
    max_delay_secs: u64,
    jitter: f64,
}

impl Default for RetryPolicyConfig {
    fn default() -> Self {
        RetryPolicy::default().into()
    }
}

impl From<RetryPolicy> for RetryPolicyConfig {
    fn from(policy: RetryPolicy) -> Self {
        Self {
            max_attempts: policy.max_attempts,
            initial_delay_secs: policy.initial.as_secs(),
            max_delay_secs: policy.max.as_secs(),
            jitter: policy.jitter,
        }
    }
}

impl TryFrom<RetryPolicyConfig> for RetryPolicy {
    type Error = InvalidRetryPolicy;

    fn try_from(config: RetryPolicyConfig) -> Result<Self, Self::Error> {
        let policy = Self {
            max_attempts: config.max_attempts,
            initial: Duration::from_secs(config.initial_delay_secs),
            max: Duration::from_secs(config.max_delay_secs),
            jitter: config.jitter,
        };
        policy.validate()?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn nominal_delays_double_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let delays: Vec<u64> = (1..=12)
            .map(|n| policy.nominal_delay(n).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 512, 512]);
        assert_eq!(policy.nominal_delay(0), Duration::ZERO);
        assert_eq!(policy.nominal_delay(u32::MAX), secs(512));
        assert_eq!(policy.nominal_delay(40), secs(512));
    }

    #[test]
    fn jitter_stays_between_the_floor_and_the_nominal_delay() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_with_sample(3, 0.0), secs(4));
        assert_eq!(
            policy.delay_with_sample(3, 1.0),
            Duration::from_millis(3200)
        );
        assert_eq!(
            policy.delay_with_sample(3, 0.5),
            Duration::from_millis(3600)
        );
        let mut rng = StdRng::seed_from_u64(7);
        for attempts in 1..=15 {
            let nominal = policy.nominal_delay(attempts);
            for _ in 0..200 {
                let delay = policy.delay_after_with_rng(attempts, &mut rng);
                assert!(delay <= nominal && delay <= policy.max, "{delay:?}");
                assert!(
                    delay >= nominal.mul_f64(0.8),
                    "{delay:?} < 80% of {nominal:?}"
                );
            }
        }
    }

    #[test]
    fn oversized_jitter_never_goes_below_half() {
        let policy = RetryPolicy {
            jitter: 3.0,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay_with_sample(10, 1.0), secs(256));
        assert_eq!(policy.delay_with_sample(10, 7.0), secs(256));
        assert_eq!(policy.delay_with_sample(10, -1.0), secs(512));
        let no_jitter = RetryPolicy {
            jitter: f64::NAN,
            ..RetryPolicy::default()
        };
        assert_eq!(no_jitter.delay_with_sample(2, 0.9), secs(2));
    }

    #[test]
    fn seeded_rngs_give_reproducible_delays() {
        let policy = RetryPolicy::default();
        let run = || {
            let mut rng = StdRng::seed_from_u64(42);
            (1..=10)
                .map(|n| policy.delay_after_with_rng(n, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn exhaustion_counts_every_attempt() {
        let policy = RetryPolicy::default();
        assert!(!policy.is_exhausted(0));
        assert!(!policy.is_exhausted(9));
        assert!(policy.is_exhausted(10));
        assert!(policy.is_exhausted(11));
    }

    #[test]
    fn decisions_respect_permanence_budget_and_retry_after() {
        let policy = RetryPolicy::default();
        let unavailable = DeliveryError::HttpStatus {
            status: 503,
            retry_after: None,
            body: String::new(),
        };
        assert_eq!(
            policy.decide_with_sample(1, &unavailable, 0.0),
            RetryDecision::RetryAfter(secs(1))
        );
        assert_eq!(
            policy.decide_with_sample(10, &unavailable, 0.0),
            RetryDecision::GiveUp(GiveUpReason::Exhausted)
        );
        let gone = DeliveryError::HttpStatus {
            status: 410,
            retry_after: None,
            body: String::new(),
        };
        assert_eq!(
            policy.decide_with_sample(1, &gone, 0.0),
            RetryDecision::GiveUp(GiveUpReason::Permanent)
        );
        let slow_down = |after| DeliveryError::HttpStatus {
            status: 429,
            retry_after: Some(secs(after)),
            body: String::new(),
        };
        // Retry-After is a floor: longer than the backoff wins, shorter does not.
        assert_eq!(
            policy.decide_with_sample(2, &slow_down(30), 0.0),
            RetryDecision::RetryAfter(secs(30))
        );
        assert_eq!(
            policy.decide_with_sample(8, &slow_down(30), 0.0),
            RetryDecision::RetryAfter(secs(128))
        );
    }

    #[test]
    fn configuration_uses_whole_seconds_and_is_validated() {
        let policy: RetryPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(policy, RetryPolicy::default());
        let json = serde_json::to_value(RetryPolicy::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "max_attempts": 10, "initial_delay_secs": 1, "max_delay_secs": 512, "jitter": 0.2
            })
        );
        let custom: RetryPolicy =
            serde_json::from_str(r#"{"max_attempts": 3, "initial_delay_secs": 5}"#).unwrap();
        assert_eq!(custom.max_attempts, 3);
        assert_eq!(custom.initial, secs(5));
        assert_eq!(custom.max, secs(512));

        for (bad, hint) in [
            (r#"{"max_attempts": 0}"#, "max_attempts"),
            (r#"{"initial_delay_secs": 0}"#, "initial_delay_secs"),
            (
                r#"{"initial_delay_secs": 60, "max_delay_secs": 30}"#,
                "max_delay_secs",
            ),
            (r#"{"jitter": 0.9}"#, "jitter"),
            (r#"{"jitter": -0.1}"#, "jitter"),
            (r#"{"initial": 1}"#, "unknown field"),
        ] {
            let error = serde_json::from_str::<RetryPolicy>(bad).unwrap_err();
            assert!(error.to_string().contains(hint), "{bad}: {error}");
        }
    }
}
