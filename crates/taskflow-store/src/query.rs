//! What a task listing asks for: filters, sort order and the keyset cursor that pages through it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use taskflow_domain::{Priority, SeriesId, Tag, Task, TaskId, TaskStatus};

/// Field a listing is ordered by. Ties are always broken by task id, so the order is total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    /// Due instant; tasks without one come last in either direction.
    DueAt,
    /// Priority rank (`none` lowest).
    Priority,
    /// Creation instant.
    CreatedAt,
    /// Last change instant.
    UpdatedAt,
    /// Title, case-insensitively.
    Title,
    /// Full-text relevance, best first (only with a search text).
    Relevance,
}

impl SortField {
    /// Parses the `sort` query value.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "due_at" => Self::DueAt,
            "priority" => Self::Priority,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            "title" => Self::Title,
            "relevance" => Self::Relevance,
            _ => return None,
        })
    }

    /// The direction used when the client names none.
    pub fn default_direction(&self) -> SortDirection {
        match self {
            Self::DueAt | Self::Title | Self::Relevance => SortDirection::Asc,
            Self::Priority | Self::CreatedAt | Self::UpdatedAt => SortDirection::Desc,
        }
    }
}

/// Ascending or descending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortDirection {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// How several `tag` filters combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TagMode {
    /// Tasks with at least one of the tags.
    #[default]
    Any,
    /// Tasks with every one of the tags.
    All,
}

/// The sort key of the last row of a page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CursorKey {
    /// The row had no value (a task without a due date).
    Null,
    /// An integer key (instants in microseconds, priority ranks).
    Int(i64),
    /// A relevance score.
    Float(f64),
    /// A text key (lower-cased title).
    Text(String),
}

/// Where the next page starts: after the row with this sort key and id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Sort the cursor was made for; using it with another sort is an error.
    #[serde(rename = "s")]
    pub sort: SortField,
    /// Direction the cursor was made for.
    #[serde(rename = "d")]
    pub direction: SortDirection,
    /// Sort key of the last row.
    #[serde(rename = "k")]
    pub key: CursorKey,
    /// Id of the last row.
    #[serde(rename = "i")]
    pub id: TaskId,
}

/// Why a cursor string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    /// Not something we produced.
    #[error("the cursor is malformed; pass back `next_cursor` exactly as received")]
    Malformed,
    /// Made for another sort order.
    #[error("the cursor belongs to another sort order; start again without a cursor")]
    SortMismatch,
}

impl Cursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        // Serialising this plain struct cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a cursor back, checking it matches the requested order.
    pub fn decode(
        text: &str,
        sort: SortField,
        direction: SortDirection,
    ) -> Result<Self, CursorError> {
        if text.len() > 2048 {
            return Err(CursorError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| CursorError::Malformed)?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| CursorError::Malformed)?;
        if cursor.sort != sort || cursor.direction != direction {
            return Err(CursorError::SortMismatch);
        }
        let key_fits = match (&cursor.key, sort) {
            (CursorKey::Null, SortField::DueAt) => true,
            (
                CursorKey::Int(_),
                SortField::DueAt
                | SortField::Priority
                | SortField::CreatedAt
                | SortField::UpdatedAt,
            ) => true,
            (CursorKey::Float(f), SortField::Relevance) => f.is_finite(),
            (CursorKey::Int(_), SortField::Relevance) => true,
            (CursorKey::Text(_), SortField::Title) => true,
            _ => false,
        };
        if !key_fits {
            return Err(CursorError::Malformed);
        }
        Ok(cursor)
    }

    /// The cursor pointing after `task` in the given order (`score` for relevance).
    pub fn after(
        task: &Task,
        sort: SortField,
        direction: SortDirection,
        score: Option<f64>,
    ) -> Self {
        let key = match sort {
            SortField::DueAt => task
                .due_at
                .map_or(CursorKey::Null, |d| CursorKey::Int(d.timestamp_micros())),
            SortField::Priority => CursorKey::Int(task.priority.rank()),
            SortField::CreatedAt => CursorKey::Int(task.created_at.timestamp_micros()),
            SortField::UpdatedAt => CursorKey::Int(task.updated_at.timestamp_micros()),
            SortField::Title => CursorKey::Text(title_key(task.title.as_str())),
            SortField::Relevance => CursorKey::Float(score.unwrap_or(0.0)),
        };
        Self {
            sort,
            direction,
            key,
            id: task.id,
        }
    }
}

/// The case-folded title used for sorting by title.
pub fn title_key(title: &str) -> String {
    title.to_lowercase()
}

/// A listing request; the user comes separately.
#[derive(Clone, Debug)]
pub struct TaskQuery {
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
    /// Only tasks with one of these priorities (empty: any).
    pub priorities: Vec<Priority>,
    /// Tag filter (empty: any).
    pub tags: Vec<Tag>,
    /// How `tags` combine.
    pub tag_mode: TagMode,
    /// Only tasks due strictly before this instant.
    pub due_before: Option<DateTime<Utc>>,
    /// Only tasks due at or after this instant.
    pub due_after: Option<DateTime<Utc>>,
    /// `Some(true)`: only pending tasks past due at `now`; `Some(false)`: only the others.
    pub overdue: Option<bool>,
    /// The instant "overdue" is judged at.
    pub now: DateTime<Utc>,
    /// `Some(true)`: only tasks that repeat; `Some(false)`: only one-off tasks.
    pub recurring: Option<bool>,
    /// Only occurrences of this series.
    pub series_id: Option<SeriesId>,
    /// Full-text search words (prefix-matched, all must match).
    pub search_terms: Vec<String>,
    /// Order.
    pub sort: SortField,
    /// Direction.
    pub direction: SortDirection,
    /// Page size (1–200).
    pub limit: u32,
    /// Continue after this cursor.
    pub after: Option<Cursor>,
}

impl TaskQuery {
    /// Most rows one page may hold.
    pub const MAX_LIMIT: u32 = 200;

    /// All tasks, newest first, 50 a page.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            status: None,
            priorities: Vec::new(),
            tags: Vec::new(),
            tag_mode: TagMode::Any,
            due_before: None,
            due_after: None,
            overdue: None,
            now,
            recurring: None,
            series_id: None,
            search_terms: Vec::new(),
            sort: SortField::CreatedAt,
            direction: SortDirection::Desc,
            limit: 50,
            after: None,
        }
    }
}

/// Splits free text into search terms: runs of letters and digits, at most 16 of at most 64 characters.
pub fn search_terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(16)
        .map(|t| t.chars().take(64).collect::<String>().to_lowercase())
        .collect()
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct TaskPage {
    /// The tasks, in order.
    pub items: Vec<Task>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<Cursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_check_the_sort() {
        let cursor = Cursor {
            sort: SortField::DueAt,
            direction: SortDirection::Asc,
            key: CursorKey::Int(42),
            id: TaskId::new(),
        };
        let text = cursor.encode();
        assert_eq!(
            Cursor::decode(&text, SortField::DueAt, SortDirection::Asc).unwrap(),
            cursor
        );
        assert_eq!(
            Cursor::decode(&text, SortField::Title, SortDirection::Asc).unwrap_err(),
            CursorError::SortMismatch
        );
        for bad in ["", "!!!", "eyJ4IjoxfQ", &"A".repeat(5000)] {
            assert_eq!(
                Cursor::decode(bad, SortField::DueAt, SortDirection::Asc).unwrap_err(),
                CursorError::Malformed
            );
        }
    }

    #[test]
    fn a_text_key_is_refused_for_a_date_sort() {
        let cursor = Cursor {
            sort: SortField::DueAt,
            direction: SortDirection::Asc,
            key: CursorKey::Text("x".into()),
            id: TaskId::new(),
        };
        assert!(Cursor::decode(&cursor.encode(), SortField::DueAt, SortDirection::Asc).is_err());
    }

    #[test]
    fn search_terms_split_on_punctuation() {
        assert_eq!(search_terms("Buy milk, eggs!"), vec!["buy", "milk", "eggs"]);
        assert!(search_terms("!!! \"").is_empty());
        assert_eq!(search_terms(&"w ".repeat(100)).len(), 16);
    }
}
