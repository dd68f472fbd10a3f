//! Storage for TaskFlow: the traits every backend implements, their error type, and the
//! backends themselves.
//!
//! Every method that touches a user's data takes that user's [`UserId`], so isolation between
//! users is part of each signature rather than a filter someone may forget. Backends own their
//! migrations (`migrations/<backend>/`) and apply them when asked by [`Store::migrate`].
//!
//! Layout: [`error`] ([`StoreError`]), [`query`] (listing filters, sorting and cursors),
//! [`sqlite`] (the embedded default), [`postgres`] (a shared server), [`conformance`] (one
//! behaviour story run on every backend), [`portability`] (whole-database export and import).

pub mod conformance;
pub mod error;
pub mod portability;
pub mod postgres;
pub mod query;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::notification::{
    Delivery, DeliveryAttempt, DeliveryStatus, Notification, NotificationPreferences,
    WebhookEndpoint,
};
use taskflow_domain::reminder::{DueReminder, Reminder};
use taskflow_domain::{
    DeliveryId, Email, NotificationId, ReminderId, SeriesId, Task, TaskId, TokenId, User, UserId,
    WebhookId,
};

pub use error::StoreError;
pub use portability::PortabilityStore;
pub use query::{Cursor, SortDirection, SortField, TagMode, TaskPage, TaskQuery};

/// A personal access token's metadata (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// Identifier.
    pub id: TokenId,
    /// Owner.
    pub user_id: UserId,
    /// What the owner called it.
    pub name: String,
    /// The first characters of the secret, to recognise it in a list.
    pub prefix: String,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last time it authenticated a request.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A tag and how many of the user's tasks carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagCount {
    /// The tag.
    pub tag: String,
    /// Number of tasks with it.
    pub tasks: i64,
    /// Number of pending tasks with it.
    pub pending: i64,
}

/// Raises the newest committed outbox seq announced on `commits` to `seq` (never lowers it)
/// and wakes relays and in-process consumers, also when `seq` is not the newest: on
/// PostgreSQL with a lock per user, a lower seq may commit after a higher one, and the relay
/// must not wait for its poll interval to see it.
pub(crate) fn announce_outbox_commit(commits: &tokio::sync::watch::Sender<i64>, seq: i64) {
    commits.send_modify(|newest| *newest = (*newest).max(seq));
}

/// Makes the events of a deletion from the task as it was when deleted.
pub type EventsFor = std::sync::Arc<dyn Fn(&Task) -> Vec<OutgoingEvent> + Send + Sync>;

/// Accounts.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new account. [`StoreError::Conflict`] when the e-mail is taken.
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError>;
    /// The account with this e-mail and its password hash.
    async fn user_credentials(&self, email: &Email) -> Result<Option<(User, String)>, StoreError>;
    /// The account with this id.
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// The account provisioned for an external identity (a JWT `sub` that is not one of our ids).
    async fn user_by_external_subject(&self, subject: &str) -> Result<Option<User>, StoreError>;
    /// Stores an account for an external identity. [`StoreError::Conflict`] when the subject or e-mail is taken.
    async fn create_external_user(&self, user: &User, subject: &str) -> Result<(), StoreError>;
    /// Grants (`true`) or revokes the admin role of the account with this e-mail; an operator
    /// action (`taskflow admin grant|revoke`). [`StoreError::NotFound`] when there is no such account.
    async fn set_admin(&self, email: &Email, is_admin: bool) -> Result<User, StoreError>;
}

/// Personal access tokens (stored as hashes).
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token's metadata and the hash of its secret.
    async fn create_access_token(
        &self,
        token: &AccessToken,
        secret_hash: &[u8],
    ) -> Result<(), StoreError>;
    /// The user's tokens, newest first.
    async fn access_tokens(&self, user: UserId) -> Result<Vec<AccessToken>, StoreError>;
    /// Deletes one of the user's tokens. [`StoreError::NotFound`] when the user has no such token.
    async fn delete_access_token(&self, user: UserId, id: TokenId) -> Result<(), StoreError>;
    /// The owner of an unexpired token with this secret hash, recording `now` as its last use.
    async fn authenticate_access_token(
        &self,
        secret_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError>;
}

/// A user's secret calendar feed (its token is stored only as a hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalendarFeed {
    /// Owner.
    pub user_id: UserId,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    /// When the current token was made.
    pub created_at: DateTime<Utc>,
    /// Last time a calendar program fetched the feed (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Secret calendar feed URLs: one per user; creating another replaces (rotates) it.
#[async_trait]
pub trait CalendarFeedStore: Send + Sync {
    /// Stores `feed` with the hash of its token, replacing the user's previous feed.
    async fn replace_calendar_feed(
        &self,
        feed: &CalendarFeed,
        token_hash: &[u8],
    ) -> Result<(), StoreError>;
    /// The user's feed, if they have one.
    async fn calendar_feed(&self, user: UserId) -> Result<Option<CalendarFeed>, StoreError>;
    /// Revokes the user's feed. [`StoreError::NotFound`] when they have none.
    async fn delete_calendar_feed(&self, user: UserId) -> Result<(), StoreError>;
    /// The owner of the feed with this token hash, recording `now` as its last use.
    async fn user_by_calendar_feed(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError>;
}

/// Tasks.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores a new task (owned by `task.user_id`) and its events.
    async fn insert_task(&self, task: &Task, events: &[OutgoingEvent]) -> Result<(), StoreError>;
    /// One of the user's tasks.
    async fn task(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError>;
    /// Replaces the user's task with `task` if its stored version is still `expected_version`,
    /// and in the same transaction creates `next_occurrence` unless its (series, index) exists.
    /// [`StoreError::NotFound`] when the user has no such task, [`StoreError::VersionMismatch`] when it changed.
    /// `events` are written with the change; `next_events` only if the next occurrence was created.
    /// Returns whether the next occurrence was created.
    async fn update_task(
        &self,
        user: UserId,
        task: &Task,
        expected_version: i64,
        events: &[OutgoingEvent],
        next_occurrence: Option<(&Task, &[OutgoingEvent])>,
    ) -> Result<bool, StoreError>;
    /// Deletes one of the user's tasks, if its version matches `expected_version` when given,
    /// writing the events `events_for` makes from the task as it was.
    async fn delete_task(
        &self,
        user: UserId,
        id: TaskId,
        expected_version: Option<i64>,
        events_for: EventsFor,
    ) -> Result<(), StoreError>;
    /// One page of the user's tasks.
    async fn list_tasks(&self, user: UserId, query: &TaskQuery) -> Result<TaskPage, StoreError>;
    /// Every occurrence of one of the user's series, oldest first.
    async fn series_occurrences(
        &self,
        user: UserId,
        series: SeriesId,
    ) -> Result<Vec<Task>, StoreError>;
    /// The user's tags with counts, most used first.
    async fn tag_counts(&self, user: UserId) -> Result<Vec<TagCount>, StoreError>;
}

/// One row of the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Commit order.
    pub seq: i64,
    /// The CloudEvent id.
    pub event_id: String,
    /// Logical topic name.
    pub topic: String,
    /// Ordering key (the user id).
    pub partition_key: String,
    /// CloudEvents type.
    pub event_type: String,
    /// The CloudEvent as JSON.
    pub payload: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// How far the relay is behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Rows not yet published.
    pub unpublished: i64,
    /// Write time of the oldest unpublished row.
    pub oldest_unpublished_at: Option<DateTime<Utc>>,
}

/// The outbox and the bookkeeping of consumers.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Writes events on their own (dead-letter notices, replays).
    async fn enqueue_events(&self, events: &[OutgoingEvent]) -> Result<(), StoreError>;
    /// Unpublished rows in commit order.
    async fn unpublished_events(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError>;
    /// Unpublished rows for a relay whose batch up to seq `marking_through` is still being
    /// marked published. A store that commits rows in seq order returns only rows after it
    /// (SQLite does); the default returns [`Self::unpublished_events`], including rows still
    /// being marked, which the relay skips.
    async fn unpublished_events_after(
        &self,
        marking_through: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let _ = marking_through;
        self.unpublished_events(limit).await
    }
    /// Marks rows as handed to the bus. The relay hands rows over in seq order, the first
    /// unpublished ones first, so a backend may record just the highest seq (SQLite does).
    async fn mark_published(&self, seqs: &[i64], at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Rows of `topic` after `after_seq`, in commit order (the in-process bus reads these).
    async fn events_after(
        &self,
        topic: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError>;
    /// Where consumer `group` stands on `topic` (0 before its first commit).
    async fn consumer_offset(&self, group: &str, topic: &str) -> Result<i64, StoreError>;
    /// Records that `group` has handled `topic` up to `seq`.
    async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        seq: i64,
    ) -> Result<(), StoreError>;
    /// Deletes published rows written (SQLite) or published (PostgreSQL) before `before` that
    /// every in-process consumer group has read,
    /// and processed-event records older than `before`. Returns the outbox rows deleted.
    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// The relay's backlog.
    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError>;
    /// Changes whenever a transaction that wrote outbox rows commits (value: the newest seq).
    fn outbox_commits(&self) -> tokio::sync::watch::Receiver<i64>;
    /// Whether this process leads the outbox relay now, taking the lead when it is free.
    ///
    /// At most one process leads at a time, so several relays never publish a row twice
    /// concurrently and per-key order holds. On PostgreSQL the leader holds a session advisory
    /// lock on a connection of its own, checked on every call: the lock goes with the session
    /// the moment the leader's process dies or its connection breaks, and the next call of a
    /// standby takes over. A lead not checked again within `lapse_after` lapses too: the server
    /// ends the idle session (`idle_session_timeout`, PostgreSQL 14 and later), so a leader that
    /// stopped working — a frozen process, a node gone without closing its connection — cannot
    /// keep it; choose it above the longest pause between a working leader's calls. The
    /// embedded SQLite store has one process and always leads.
    async fn lead_outbox_relay(&self, lapse_after: std::time::Duration)
    -> Result<bool, StoreError>;
    /// Gives the lead up (on shutdown), so a standby takes over without waiting.
    async fn resign_outbox_relay(&self);
}

/// One entry of a task's audit history.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// The event it records.
    pub event_id: String,
    /// Owner.
    pub user_id: UserId,
    /// Task.
    pub task_id: TaskId,
    /// CloudEvents type.
    pub event_type: String,
    /// When the change happened.
    pub occurred_at: DateTime<Utc>,
    /// The event's data.
    pub data: serde_json::Value,
}

/// Which audit entries to read: the caller's, optionally of one task, one page at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this task's entries.
    pub task: Option<TaskId>,
    /// Continue after this position (an [`AuditPage::next`] of the previous page).
    pub after: Option<i64>,
    /// Newest entries first instead of oldest first.
    pub newest_first: bool,
    /// At most this many entries.
    pub limit: u32,
}

impl AuditQuery {
    /// The position the page starts after: the cursor, or before the first entry in the chosen
    /// order (log positions are positive).
    pub(crate) fn start(&self) -> i64 {
        self.after
            .unwrap_or(if self.newest_first { i64::MAX } else { 0 })
    }

    /// How many rows to fetch: one beyond the limit, to learn whether another page follows.
    pub(crate) fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of a user's audit log.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditPage {
    /// The entries, in the order asked for.
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts (pass it as [`AuditQuery::after`]); `None` on the last page.
    pub next: Option<i64>,
}

impl AuditPage {
    /// The page from rows fetched with [`AuditQuery::fetch`], each with its log position.
    pub(crate) fn from_rows(mut rows: Vec<(i64, AuditEntry)>, limit: u32) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Self {
            entries: rows.into_iter().map(|(_, entry)| entry).collect(),
            next,
        }
    }
}

/// What a consumer does to the database for one event; applied together with the record that
/// the event was processed, so a redelivered event has no second effect.
#[derive(Clone, Debug, PartialEq)]
pub enum ConsumerEffect {
    /// Nothing to store (the event only needed acknowledging).
    Nothing,
    /// Append to the audit log.
    Audit(AuditEntry),
    /// Record what a fired reminder notifies (the notifier).
    Notify(NotificationPlan),
}

/// What the notifier stores for one `reminder.due` event, in one transaction with the record
/// that the event was processed.
#[derive(Clone, Debug, PartialEq)]
pub struct NotificationPlan {
    /// The in-app feed entry (skipped if its dedup key exists).
    pub notification: Option<Notification>,
    /// Deliveries to make (skipped where the idempotency key exists).
    pub deliveries: Vec<Delivery>,
    /// Events written with the notification (`notification.created`), only if it was new.
    pub events: Vec<OutgoingEvent>,
}

/// A delivery a notifier claimed, with what attempting it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The delivery.
    pub delivery: Delivery,
    /// The endpoint of a webhook delivery (`None` when it was deleted or disabled).
    pub endpoint: Option<WebhookEndpoint>,
}

/// How an attempt ended, as the notifier records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered.
    Sent,
    /// Failed; try again at this instant.
    Retry(DateTime<Utc>),
    /// Not attempted: quiet hours; try at this instant (not counted as an attempt).
    Deferred(DateTime<Utc>),
    /// Failed for good: dead-lettered.
    Dead,
}

/// A page of the in-app feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationPage {
    /// Newest first.
    pub items: Vec<Notification>,
    /// Pass back to get the next page.
    pub next_cursor: Option<(DateTime<Utc>, NotificationId)>,
    /// Unread notifications in all.
    pub unread: i64,
}

/// The notification feed, preferences, webhook endpoints and deliveries.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// The user's preferences (`None`: never set; the defaults apply).
    async fn notification_preferences(
        &self,
        user: UserId,
    ) -> Result<Option<NotificationPreferences>, StoreError>;
    /// Replaces the user's preferences.
    async fn set_notification_preferences(
        &self,
        user: UserId,
        preferences: &NotificationPreferences,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Registers a webhook endpoint.
    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;
    /// The user's webhook endpoints, oldest first.
    async fn webhook_endpoints(&self, user: UserId) -> Result<Vec<WebhookEndpoint>, StoreError>;
    /// Deletes one of the user's endpoints. [`StoreError::NotFound`] when there is none.
    async fn delete_webhook_endpoint(&self, user: UserId, id: WebhookId) -> Result<(), StoreError>;
    /// One page of the user's feed, newest first, after `cursor`.
    async fn notifications(
        &self,
        user: UserId,
        cursor: Option<(DateTime<Utc>, NotificationId)>,
        unread_only: bool,
        limit: u32,
    ) -> Result<NotificationPage, StoreError>;
    /// Marks one notification read (no change if it already is). [`StoreError::NotFound`]
    /// when the user has no such notification.
    async fn mark_notification_read(
        &self,
        user: UserId,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Notification, StoreError>;
    /// Marks every notification of the user read; returns how many changed.
    async fn mark_all_notifications_read(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// The instant of the soonest pending delivery (or expired claim), if any.
    async fn next_delivery_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Atomically claims up to `limit` deliveries due at `now`, leased until `lease_until`.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<(uuid::Uuid, Vec<ClaimedDelivery>), StoreError>;
    /// Records an attempt of a delivery held under claim `token`, its outcome and `events`
    /// (`notification.delivered` / `notification.failed`) in one transaction. `false` when the
    /// claim was lost (nothing recorded).
    async fn record_delivery_attempt(
        &self,
        token: uuid::Uuid,
        id: DeliveryId,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        events: &[OutgoingEvent],
    ) -> Result<bool, StoreError>;
    /// The user's deliveries (optionally with one status), newest first, with their attempts.
    async fn deliveries(
        &self,
        user: UserId,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<(Delivery, Vec<DeliveryAttempt>)>, StoreError>;
    /// Makes one of the user's dead deliveries pending again, due at `now`.
    /// [`StoreError::NotFound`] when there is none; [`StoreError::Conflict`] (`delivery_not_dead`)
    /// when it is not dead.
    async fn retry_delivery(
        &self,
        user: UserId,
        id: DeliveryId,
        now: DateTime<Utc>,
    ) -> Result<Delivery, StoreError>;
    /// How many deliveries are dead.
    async fn dead_delivery_count(&self) -> Result<i64, StoreError>;
    /// Changes after a commit created or rescheduled deliveries (value: the earliest instant).
    fn delivery_changes(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>>;
}

/// An event a consumer gave up on.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// Identifier.
    pub id: uuid::Uuid,
    /// The consumer (group) that failed.
    pub consumer: String,
    /// Logical topic the event came from.
    pub topic: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event as JSON.
    pub payload: String,
    /// The last error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
    /// When it was last replayed.
    pub replayed_at: Option<DateTime<Utc>>,
}

/// Consumer effects, dead letters and the audit log.
#[async_trait]
pub trait ConsumerStore: Send + Sync {
    /// Applies `effect` and records (`consumer`, `event_id`) in one transaction. `false` when
    /// the event was already processed (nothing applied).
    async fn apply_once(
        &self,
        consumer: &str,
        event_id: &str,
        effect: &ConsumerEffect,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Stores a dead letter and, in the same transaction, its notice on `<topic>.dlq`.
    async fn record_dead_letter(
        &self,
        letter: &DeadLetter,
        notice: &OutgoingEvent,
    ) -> Result<(), StoreError>;
    /// Dead letters, newest first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError>;
    /// Re-publishes a dead letter's event on its topic (through the outbox) and notes the replay.
    async fn replay_dead_letter(
        &self,
        id: uuid::Uuid,
        now: DateTime<Utc>,
    ) -> Result<DeadLetter, StoreError>;
    /// One page of the user's audit entries (in log order, or newest first), optionally of one
    /// task.
    async fn audit_entries(&self, user: UserId, query: AuditQuery)
    -> Result<AuditPage, StoreError>;
}

/// Reminders a scheduler claimed together: they fire under `token` until `lease_until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReminderClaim {
    /// Identifies this claim; firing checks it, so an expired and re-claimed reminder is not
    /// fired by its first claimant too.
    pub token: uuid::Uuid,
    /// When the claim lapses and another scheduler may take the reminders over.
    pub lease_until: DateTime<Utc>,
    /// The claimed reminders with what their events need, soonest first.
    pub due: Vec<DueReminder>,
    /// Claimed reminders whose task no longer exists (marked `failed`).
    pub orphaned: u64,
}

/// The scheduled reminders: the table every scheduler instance works from.
///
/// Task writes keep it in step with each task's plan in the same transaction
/// ([`taskflow_domain::reminder::wanted_reminders`]): new entries are scheduled, entries the
/// plan no longer asks for (or of a task that was closed or deleted) are cancelled.
#[async_trait]
pub trait ReminderStore: Send + Sync {
    /// The next instants at which something becomes claimable, soonest first, at most `limit`:
    /// the fire instants of scheduled reminders and the lease expiries of claimed ones.
    async fn upcoming_reminder_instants(
        &self,
        limit: u32,
    ) -> Result<Vec<DateTime<Utc>>, StoreError>;
    /// Atomically claims up to `limit` reminders due at `now` (scheduled ones whose instant has
    /// come, and claimed ones whose lease expired), leasing them until `lease_until`.
    async fn claim_due_reminders(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<ReminderClaim, StoreError>;
    /// Marks the reminders of claim `token` as sent and writes their events, in one
    /// transaction; a reminder no longer held under `token` (cancelled, or its lease taken over)
    /// is skipped with its event. Returns how many were fired.
    async fn fire_reminders(
        &self,
        token: uuid::Uuid,
        fired: &[(ReminderId, OutgoingEvent)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// The reminders of one of the user's tasks, soonest first.
    async fn task_reminders(&self, user: UserId, task: TaskId)
    -> Result<Vec<Reminder>, StoreError>;
    /// Reschedules one of the user's reminders to fire at `fire_at` (again, if it already
    /// fired). [`StoreError::NotFound`] when the user has no such reminder,
    /// [`StoreError::Conflict`] (`reminder_cancelled`) when it was cancelled or its task is closed.
    async fn snooze_reminder(
        &self,
        user: UserId,
        id: ReminderId,
        fire_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError>;
    /// How many reminders wait to fire (scheduled or claimed).
    async fn pending_reminder_count(&self) -> Result<i64, StoreError>;
    /// Changes after a commit scheduled reminders; the value is the earliest instant among them,
    /// so a sleeping scheduler can wake early.
    fn reminder_changes(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>>;
}

/// Announces on `changes` that work (reminders, deliveries) is now due at `earliest`, waking
/// sleeping schedulers and notifiers.
/// What reconciling a task's reminders with its plan did, inside the task's transaction.
#[derive(Debug, Default)]
pub(crate) struct ReminderSync {
    /// The earliest newly scheduled instant (announced to schedulers after the commit).
    pub earliest: Option<DateTime<Utc>>,
    /// `reminder.scheduled` / `reminder.cancelled` events, written with the task's events.
    pub events: Vec<taskflow_domain::events::OutgoingEvent>,
}

impl ReminderSync {
    /// Adds what another reconciliation in the same transaction did.
    pub fn merge(&mut self, other: ReminderSync) {
        self.earliest = self.earliest.into_iter().chain(other.earliest).min();
        self.events.extend(other.events);
    }
}

/// The trace context a command's events carry, for the events its side effects cause.
pub(crate) fn trace_of(events: &[taskflow_domain::events::OutgoingEvent]) -> Option<&str> {
    events.iter().find_map(|e| e.event.traceparent.as_deref())
}

pub(crate) fn announce_earliest(
    changes: &tokio::sync::watch::Sender<Option<DateTime<Utc>>>,
    earliest: Option<DateTime<Utc>>,
) {
    if let Some(earliest) = earliest {
        changes.send_replace(Some(earliest));
    }
}

/// Everything the application needs from a database.
#[async_trait]
pub trait Store:
    UserStore
    + TokenStore
    + TaskStore
    + ReminderStore
    + NotificationStore
    + OutboxStore
    + ConsumerStore
    + PortabilityStore
    + CalendarFeedStore
    + 'static
{
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Whether the database answers and every known migration is applied.
    async fn readiness(&self) -> Result<(), StoreError>;
    /// Closes connections (waits for in-flight statements).
    async fn close(&self);
}
