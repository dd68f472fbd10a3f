//! Moving a whole database between backends: the `taskflow export` / `taskflow import` format.
//!
//! An export is [JSON Lines](https://jsonlines.org/): UTF-8, one JSON object per line, each
//! with a `kind`. The first line is the [`Header`]
//! (`{"kind":"taskflow-export","version":1,"exported_at":"…"}`); every other line is one
//! [`Record`], in this order: `user`, `access_token`, `task`, `audit`, `dead_letter`, each kind
//! sorted by id (audit entries in log order). Two exports of the same data are byte-identical
//! apart from the header's `exported_at`, whichever backend they come from.
//!
//! - Every field is always written (absent values as `null`) and required on import: a
//!   truncated record is an error, never a silent default. Unknown fields are refused too, so
//!   data a newer TaskFlow wrote is never dropped silently.
//! - Instants are RFC 3339 in UTC with exactly six fractional digits (`2026-03-01T12:00:00.000000Z`);
//!   both backends store microseconds, so nothing is rounded.
//! - New kinds (e.g. `reminder`) can be added without changing `version`: an importer that does
//!   not know a kind refuses the file with the line number rather than dropping those lines.
//!   `version` changes only when the meaning of an existing field changes.
//! - Not exported: the outbox, consumer offsets and processed-event records. They are runtime
//!   state of the event pipeline, not user data; an import starts them empty. Export after the
//!   relay and consumers have caught up (stop the server, or check `outbox_backlog`), otherwise
//!   events still in flight (e.g. audit entries not yet written) are not in the export.
//! - Derived columns are not exported either: SQLite's `seq` rowids and full-text index,
//!   PostgreSQL's `search` vector, `title_key` and the `task_tags` rows are rebuilt on import.
//!
//! An import goes into an empty database only (one without users, tokens, tasks, audit entries
//! or dead letters) and runs in one transaction: it succeeds whole or leaves nothing. It keeps
//! ids, versions and instants exactly and writes **no outbox events**: it restores existing
//! data rather than making new changes, so consumers (audit log, webhooks, other services)
//! must not see the tasks "created" again — the audit log itself is part of the export.

use std::collections::HashSet;
use std::fmt;
use std::io::{BufRead, Write};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::{
    Description, DisplayName, Email, Priority, Recurrence, SeriesId, Tags, Task, TaskId,
    TaskStatus, TimeZone, Title, TokenId, User, UserId,
};

use crate::error::StoreError;
use crate::{AccessToken, AuditEntry, DeadLetter};

/// The `kind` of the header line.
pub const HEADER_KIND: &str = "taskflow-export";

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What can go wrong exporting or importing.
#[derive(Debug, thiserror::Error)]
pub enum PortabilityError {
    /// A line of the file is not a valid record (1-based line number).
    #[error("line {line}: {message}")]
    Line {
        /// Line number, counting from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The target database already holds data (the name says which table).
    #[error(
        "the database is not empty (table `{0}` has rows): import only into a freshly created database"
    )]
    NotEmpty(&'static str),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<sqlx::Error> for PortabilityError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::from_sqlx(error))
    }
}

/// Whole-database export and import, implemented by every backend.
#[async_trait]
pub trait PortabilityStore: Send + Sync {
    /// Hands every record to `sink` in export order (see the [module docs](self)), all read
    /// from one consistent snapshot. Stops at the first error of `sink`.
    async fn export_records(
        &self,
        sink: &mut (dyn FnMut(Record) -> Result<(), PortabilityError> + Send),
    ) -> Result<(), PortabilityError>;

    /// Inserts `records` into an empty database in one transaction, keeping ids, versions and
    /// instants, and writing no outbox events. [`PortabilityError::NotEmpty`] (and nothing
    /// written) when the database holds data. Records may come in any order.
    async fn import_records(&self, records: Vec<Record>) -> Result<(), PortabilityError>;
}

/// Instants as RFC 3339 UTC with exactly six fractional digits.
mod instant {
    use super::*;

    pub(super) fn format(at: &DateTime<Utc>) -> String {
        at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    pub(super) fn parse(text: &str) -> Result<DateTime<Utc>, String> {
        let at = DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("`{text}` is not an RFC 3339 instant: {e}"))?
            .to_utc();
        if at.timestamp_subsec_nanos() % 1_000 != 0 {
            return Err(format!("`{text}` is more precise than microseconds"));
        }
        Ok(at)
    }

    pub(super) fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(at))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional instants: like [`instant`], `null` when absent; the field itself is required.
mod optional_instant {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&instant::format(at)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| instant::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Deserialises an `Option` field that must be present (as a value or `null`).
fn required<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{text}` is not hexadecimal"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// The first line of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`HEADER_KIND`].
    pub kind: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    /// When the export was taken.
    #[serde(with = "instant")]
    pub exported_at: DateTime<Utc>,
}

impl Header {
    /// The header of an export taken at `exported_at` by this version.
    pub fn new(exported_at: DateTime<Utc>) -> Self {
        Self {
            kind: HEADER_KIND.to_owned(),
            version: FORMAT_VERSION,
            exported_at,
        }
    }
}

/// One line of an export after the header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// An account.
    User(UserRecord),
    /// A personal access token.
    AccessToken(AccessTokenRecord),
    /// A task (every occurrence of a series is its own task).
    Task(TaskRecord),
    /// An audit log entry.
    Audit(AuditRecord),
    /// A dead letter.
    DeadLetter(DeadLetterRecord),
}

impl Record {
    /// Position of the kind in export (and insertion) order: users before what refers to them.
    pub fn rank(&self) -> u8 {
        match self {
            Self::User(_) => 0,
            Self::AccessToken(_) => 1,
            Self::Task(_) => 2,
            Self::Audit(_) => 3,
            Self::DeadLetter(_) => 4,
        }
    }

    /// Checks what serde cannot: time zones, recurrence rules, hex, duplicate tags.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::User(user) => user.to_user().map(|_| ()),
            Self::AccessToken(token) => token.secret_hash().map(|_| ()),
            Self::Task(task) => task.to_task().map(|_| ()),
            Self::Audit(_) | Self::DeadLetter(_) => Ok(()),
        }
    }
}

/// Sorts records into insertion order (stable: audit entries keep their log order).
pub fn sort_for_import(records: &mut [Record]) {
    records.sort_by_key(Record::rank);
}

/// An account, with its password hash and external identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// Identifier.
    pub id: uuid::Uuid,
    /// E-mail address.
    pub email: String,
    /// Password hash (PHC string); empty for accounts provisioned from an external identity.
    pub password_hash: String,
    /// Display name.
    #[serde(deserialize_with = "required")]
    pub display_name: Option<String>,
    /// IANA time zone name.
    pub time_zone: String,
    /// Administrator flag.
    pub is_admin: bool,
    /// The external identity (JWT `sub`) the account was provisioned for.
    #[serde(deserialize_with = "required")]
    pub external_subject: Option<String>,
    /// Creation instant.
    #[serde(with = "instant")]
    pub created_at: DateTime<Utc>,
}

impl UserRecord {
    /// The record of `user` with its stored hash and external subject.
    pub fn new(user: &User, password_hash: String, external_subject: Option<String>) -> Self {
        Self {
            id: user.id.as_uuid(),
            email: user.email.as_str().to_owned(),
            password_hash,
            display_name: user.display_name.as_ref().map(|n| n.as_str().to_owned()),
            time_zone: user.time_zone.name().to_owned(),
            is_admin: user.is_admin,
            external_subject,
            created_at: user.created_at,
        }
    }

    /// The account (values kept as stored; only the time zone must be known).
    pub fn to_user(&self) -> Result<User, String> {
        Ok(User {
            id: UserId::from_uuid(self.id),
            email: Email::from_trusted(self.email.clone()),
            display_name: self.display_name.clone().map(DisplayName::from_trusted),
            time_zone: TimeZone::parse(&self.time_zone).map_err(|e| e.to_string())?,
            is_admin: self.is_admin,
            created_at: self.created_at,
        })
    }
}

/// A personal access token: metadata and the hash of its secret (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessTokenRecord {
    /// Identifier.
    pub id: uuid::Uuid,
    /// Owner.
    pub user_id: uuid::Uuid,
    /// What the owner called it.
    pub name: String,
    /// The first characters of the secret.
    pub prefix: String,
    /// The secret's hash, lower-case hexadecimal.
    pub token_hash: String,
    /// Creation instant.
    #[serde(with = "instant")]
    pub created_at: DateTime<Utc>,
    /// Last authenticated use.
    #[serde(with = "optional_instant")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// Expiry.
    #[serde(with = "optional_instant")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl AccessTokenRecord {
    /// The record of `token` and its secret hash.
    pub fn new(token: &AccessToken, secret_hash: &[u8]) -> Self {
        Self {
            id: token.id.as_uuid(),
            user_id: token.user_id.as_uuid(),
            name: token.name.clone(),
            prefix: token.prefix.clone(),
            token_hash: hex(secret_hash),
            created_at: token.created_at,
            last_used_at: token.last_used_at,
            expires_at: token.expires_at,
        }
    }

    /// The token's metadata.
    pub fn to_token(&self) -> AccessToken {
        AccessToken {
            id: TokenId::from_uuid(self.id),
            user_id: UserId::from_uuid(self.user_id),
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
        }
    }

    /// The decoded secret hash.
    pub fn secret_hash(&self) -> Result<Vec<u8>, String> {
        unhex(&self.token_hash).map_err(|e| format!("token_hash: {e}"))
    }
}

/// Every stored column of a task (derived ones excepted: `title_key`, search indexes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRecord {
    /// Identifier.
    pub id: uuid::Uuid,
    /// Owner.
    pub user_id: uuid::Uuid,
    /// The series this task is an occurrence of.
    #[serde(deserialize_with = "required")]
    pub series_id: Option<uuid::Uuid>,
    /// Position in its series (0 for the first occurrence and for one-off tasks).
    pub occurrence_index: u32,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// `pending`, `completed` or `skipped`.
    pub status: TaskStatus,
    /// `none`, `low`, `medium`, `high` or `urgent`.
    pub priority: Priority,
    /// Tags in the order the user gave them.
    pub tags: Vec<String>,
    /// Due instant.
    #[serde(with = "optional_instant")]
    pub due_at: Option<DateTime<Utc>>,
    /// IANA time zone name.
    pub time_zone: String,
    /// Normalised RRULE (all three recurrence fields are set or none).
    #[serde(deserialize_with = "required")]
    pub recurrence_rule: Option<String>,
    /// `due` or `completion`.
    #[serde(deserialize_with = "required")]
    pub recurrence_anchor: Option<String>,
    /// Wall-clock start of the series in `time_zone`, ISO 8601 without offset.
    #[serde(deserialize_with = "required")]
    pub recurrence_dtstart: Option<String>,
    /// Creation instant.
    #[serde(with = "instant")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "instant")]
    pub updated_at: DateTime<Utc>,
    /// When it was completed or skipped.
    #[serde(with = "optional_instant")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version.
    pub version: i64,
    /// Reminder plan (absent in exports made before reminders existed). On import the
    /// scheduled reminders are derived from it again; those already past are not scheduled.
    #[serde(default)]
    pub reminders: taskflow_domain::ReminderPlan,
    /// UID of the iCalendar VTODO the task was imported from (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ical_uid: Option<String>,
}

const DTSTART_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f";

impl TaskRecord {
    /// The record of `task`.
    pub fn new(task: &Task) -> Self {
        let recurrence = task.recurrence.as_ref();
        Self {
            id: task.id.as_uuid(),
            user_id: task.user_id.as_uuid(),
            series_id: task.series_id.map(|s| s.as_uuid()),
            occurrence_index: task.occurrence_index,
            title: task.title.as_str().to_owned(),
            description: task.description.as_str().to_owned(),
            status: task.status,
            priority: task.priority,
            tags: task.tags.to_strings(),
            due_at: task.due_at,
            time_zone: task.time_zone.name().to_owned(),
            recurrence_rule: recurrence.map(|r| r.rule.as_str().to_owned()),
            recurrence_anchor: recurrence.map(|r| {
                match r.anchor {
                    Anchor::Due => "due",
                    Anchor::Completion => "completion",
                }
                .to_owned()
            }),
            recurrence_dtstart: recurrence.map(|r| r.dtstart.format(DTSTART_FORMAT).to_string()),
            created_at: task.created_at,
            updated_at: task.updated_at,
            completed_at: task.completed_at,
            version: task.version,
            reminders: task.reminders.clone(),
            ical_uid: task.ical_uid.clone(),
        }
    }

    /// The task, with text kept exactly as exported; fails on an unknown time zone, an invalid
    /// or partial recurrence, or a repeated tag.
    pub fn to_task(&self) -> Result<Task, String> {
        let recurrence = match (
            &self.recurrence_rule,
            &self.recurrence_anchor,
            &self.recurrence_dtstart,
        ) {
            (None, None, None) => None,
            (Some(rule), Some(anchor), Some(dtstart)) => Some(Recurrence {
                rule: RecurrenceRule::parse(rule).map_err(|e| format!("recurrence_rule: {e}"))?,
                anchor: match anchor.as_str() {
                    "due" => Anchor::Due,
                    "completion" => Anchor::Completion,
                    other => {
                        return Err(format!(
                            "recurrence_anchor: `{other}` is neither `due` nor `completion`"
                        ));
                    }
                },
                dtstart: NaiveDateTime::parse_from_str(dtstart, DTSTART_FORMAT)
                    .map_err(|e| format!("recurrence_dtstart: `{dtstart}`: {e}"))?,
            }),
            _ => {
                return Err(
                    "recurrence_rule, recurrence_anchor and recurrence_dtstart are all set or all null"
                        .into(),
                );
            }
        };
        if let Some(uid) = &self.ical_uid
            && (uid.trim().is_empty()
                || uid.chars().count() > 255
                || uid.chars().any(char::is_control))
        {
            return Err("ical_uid: 1 to 255 characters without control characters".into());
        }
        let mut seen = HashSet::new();
        if let Some(tag) = self.tags.iter().find(|t| !seen.insert(t.as_str())) {
            return Err(format!("tags: `{tag}` appears twice"));
        }
        Ok(Task {
            id: TaskId::from_uuid(self.id),
            user_id: UserId::from_uuid(self.user_id),
            title: Title::from_trusted(self.title.clone()),
            description: Description::from_trusted(self.description.clone()),
            status: self.status,
            priority: self.priority,
            tags: Tags::from_trusted(self.tags.clone()),
            due_at: self.due_at,
            time_zone: TimeZone::parse(&self.time_zone).map_err(|e| e.to_string())?,
            recurrence,
            series_id: self.series_id.map(SeriesId::from_uuid),
            occurrence_index: self.occurrence_index,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
            version: self.version,
            reminders: self.reminders.clone(),
            ical_uid: self.ical_uid.clone(),
        })
    }
}

/// An audit log entry (exported in log order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// The event it records.
    pub event_id: String,
    /// Owner.
    pub user_id: uuid::Uuid,
    /// Task.
    pub task_id: uuid::Uuid,
    /// CloudEvents type.
    pub event_type: String,
    /// When the change happened.
    #[serde(with = "instant")]
    pub occurred_at: DateTime<Utc>,
    /// The event's data.
    pub data: serde_json::Value,
}

impl From<&AuditEntry> for AuditRecord {
    fn from(entry: &AuditEntry) -> Self {
        Self {
            event_id: entry.event_id.clone(),
            user_id: entry.user_id.as_uuid(),
            task_id: entry.task_id.as_uuid(),
            event_type: entry.event_type.clone(),
            occurred_at: entry.occurred_at,
            data: entry.data.clone(),
        }
    }
}

/// A dead letter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRecord {
    /// Identifier.
    pub id: uuid::Uuid,
    /// The consumer that gave up.
    pub consumer: String,
    /// Topic of the event.
    pub topic: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event as received (text, not necessarily JSON).
    pub payload: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    #[serde(with = "instant")]
    pub created_at: DateTime<Utc>,
    /// When it was last replayed.
    #[serde(with = "optional_instant")]
    pub replayed_at: Option<DateTime<Utc>>,
}

impl From<&DeadLetter> for DeadLetterRecord {
    fn from(letter: &DeadLetter) -> Self {
        Self {
            id: letter.id,
            consumer: letter.consumer.clone(),
            topic: letter.topic.clone(),
            event_id: letter.event_id.clone(),
            event_type: letter.event_type.clone(),
            payload: letter.payload.clone(),
            error: letter.error.clone(),
            attempts: letter.attempts,
            created_at: letter.created_at,
            replayed_at: letter.replayed_at,
        }
    }
}

/// How many records of each kind an export or import held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `user` records.
    pub users: u64,
    /// `access_token` records.
    pub access_tokens: u64,
    /// `task` records.
    pub tasks: u64,
    /// `audit` records.
    pub audit: u64,
    /// `dead_letter` records.
    pub dead_letters: u64,
}

impl Counts {
    /// Counts one more `record`.
    pub fn add(&mut self, record: &Record) {
        match record {
            Record::User(_) => self.users += 1,
            Record::AccessToken(_) => self.access_tokens += 1,
            Record::Task(_) => self.tasks += 1,
            Record::Audit(_) => self.audit += 1,
            Record::DeadLetter(_) => self.dead_letters += 1,
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} users, {} access tokens, {} tasks, {} audit entries, {} dead letters",
            self.users, self.access_tokens, self.tasks, self.audit, self.dead_letters
        )
    }
}

/// Writes the header and every record of `store` to `out` as JSON Lines (not flushed).
pub async fn export(
    store: &dyn PortabilityStore,
    out: &mut (dyn Write + Send),
    exported_at: DateTime<Utc>,
) -> Result<Counts, PortabilityError> {
    let json = |e: serde_json::Error| PortabilityError::Io(std::io::Error::other(e));
    serde_json::to_writer(&mut *out, &Header::new(exported_at)).map_err(json)?;
    out.write_all(b"\n")?;
    let mut counts = Counts::default();
    store
        .export_records(&mut |record: Record| {
            serde_json::to_writer(&mut *out, &record).map_err(json)?;
            out.write_all(b"\n")?;
            counts.add(&record);
            Ok(())
        })
        .await?;
    Ok(counts)
}

/// Parses and validates a whole export: the header, then every record. The first bad line is
/// reported with its number; blank lines are ignored.
pub fn parse(input: impl BufRead) -> Result<Vec<Record>, PortabilityError> {
    let mut records = Vec::new();
    let mut header_seen = false;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| PortabilityError::Line {
            line: number,
            message: format!("cannot be read: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| PortabilityError::Line {
            line: number,
            message,
        };
        if !header_seen {
            check_header(&line).map_err(bad)?;
            header_seen = true;
            continue;
        }
        let record: Record = serde_json::from_str(&line).map_err(|e| bad(describe(&e)))?;
        record.validate().map_err(bad)?;
        records.push(record);
    }
    if !header_seen {
        return Err(PortabilityError::Line {
            line: 1,
            message: "the file is empty: expected the `taskflow-export` header".into(),
        });
    }
    Ok(records)
}

fn check_header(line: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Probe {
        kind: Option<String>,
        version: Option<u32>,
    }
    let probe: Probe = serde_json::from_str(line).map_err(|e| describe(&e))?;
    if probe.kind.as_deref() != Some(HEADER_KIND) {
        return Err(format!(
            "not a TaskFlow export: the first line must be the `{HEADER_KIND}` header"
        ));
    }
    match probe.version {
        Some(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(format!(
                "format version {other} is not supported (this TaskFlow reads version {FORMAT_VERSION})"
            ));
        }
        None => return Err("the header has no `version`".into()),
    }
    serde_json::from_str::<Header>(line)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// A serde_json error without its "at line 1 column N" (the caller names the file's line).
fn describe(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let text = text.strip_suffix(&suffix).unwrap_or(&text);
    let text = text.replace("unknown variant", "unknown record kind");
    if error.column() > 0 {
        format!("{text} (column {})", error.column())
    } else {
        text
    }
}

/// Imports `records` (as [`parse`] returns them) into the empty `store` in one transaction.
pub async fn import(
    store: &dyn PortabilityStore,
    mut records: Vec<Record>,
) -> Result<Counts, PortabilityError> {
    let mut counts = Counts::default();
    for record in &records {
        counts.add(record);
    }
    sort_for_import(&mut records);
    store.import_records(records).await?;
    Ok(counts)
}
