//! The error type of the crate.

/// Why a recurrence rule or schedule was rejected or could not be evaluated.
///
/// Every variant has a stable snake_case [`code`](RecurrenceError::code) that API layers can
/// return to clients; the `Display` text is an English explanation meant for people.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecurrenceError {
    /// The text is not a valid preset or RRULE (syntax, unknown part, bad value, RFC 5545
    /// constraint, or rejected by the `rrule` engine).
    #[error("invalid recurrence rule: {reason}")]
    Invalid {
        /// What is wrong, in English.
        reason: String,
    },
    /// FREQ is SECONDLY, MINUTELY or HOURLY: tasks recur at most once a day.
    #[error(
        "unsupported frequency {freq}: tasks recur at most once a day; use DAILY, WEEKLY, MONTHLY or YEARLY"
    )]
    UnsupportedFrequency {
        /// The frequency that was given, upper-cased.
        freq: String,
    },
    /// A rule part that is valid RFC 5545 (or RFC 7529) but that TaskFlow does not support.
    #[error("unsupported rule part {part}: {reason}")]
    UnsupportedPart {
        /// The rule part, e.g. `BYHOUR` or `RSCALE`.
        part: String,
        /// Why it is not supported and what to do instead.
        reason: String,
    },
    /// UNTIL lies before the first occurrence (DTSTART) of the series.
    #[error("UNTIL ({until}) is before the start of the series ({start})")]
    UntilBeforeStart {
        /// The UNTIL value as given.
        until: String,
        /// The start of the series.
        start: String,
    },
    /// The schedule itself (not its rule) is unusable, e.g. a start date out of range.
    #[error("invalid schedule: {reason}")]
    InvalidSchedule {
        /// What is wrong, in English.
        reason: String,
    },
    /// The rule yields no occurrence (after the requested moment) within the search horizon.
    #[error(
        "the rule has no further occurrence within the search horizon of {} years",
        crate::MAX_SEARCH_YEARS
    )]
    NoOccurrences,
    /// Evaluating the rule needed more work than the iteration or time budget allows.
    #[error("the rule is too expensive to evaluate (iteration or time budget exceeded)")]
    TooExpensive,
}

impl RecurrenceError {
    /// A stable snake_case code for this error, suitable for API responses.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_rrule",
            Self::UnsupportedFrequency { .. } => "unsupported_frequency",
            Self::UnsupportedPart { .. } => "unsupported_rule_part",
            Self::UntilBeforeStart { .. } => "until_before_start",
            Self::InvalidSchedule { .. } => "invalid_schedule",
            Self::NoOccurrences => "no_occurrences",
            Self::TooExpensive => "rule_too_expensive",
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid {
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(part: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::UnsupportedPart {
            part: part.into(),
            reason: reason.into(),
        }
    }
}
