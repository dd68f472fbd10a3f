//! Storage for TaskFlow: the traits every backend implements, their error type, and the
//! backends themselves.
//!
//! Every method that touches a user's data takes that user's [`UserId`], so isolation between
//! users is part of each signature rather than a filter someone may forget. Backends own their
//! migrations (`migrations/<backend>/`) and apply them when asked by [`Store::migrate`].
//!
//! Layout: [`error`] ([`StoreError`]), [`query`] (listing filters, sorting and cursors),
//! [`sqlite`] (the embedded default), [`conformance`] (one behaviour story run on every backend).

pub mod conformance;
pub mod error;
pub mod query;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskflow_domain::{Email, SeriesId, Task, TaskId, TokenId, User, UserId};

pub use error::StoreError;
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

/// Tasks.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores a new task (owned by `task.user_id`).
    async fn insert_task(&self, task: &Task) -> Result<(), StoreError>;
    /// One of the user's tasks.
    async fn task(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError>;
    /// Replaces the user's task with `task` if its stored version is still `expected_version`,
    /// and in the same transaction creates `next_occurrence` unless its (series, index) exists.
    /// [`StoreError::NotFound`] when the user has no such task, [`StoreError::VersionMismatch`] when it changed.
    /// Returns whether the next occurrence was created.
    async fn update_task(
        &self,
        user: UserId,
        task: &Task,
        expected_version: i64,
        next_occurrence: Option<&Task>,
    ) -> Result<bool, StoreError>;
    /// Deletes one of the user's tasks, if its version matches `expected_version` when given.
    async fn delete_task(
        &self,
        user: UserId,
        id: TaskId,
        expected_version: Option<i64>,
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

/// Everything the application needs from a database.
#[async_trait]
pub trait Store: UserStore + TokenStore + TaskStore + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Whether the database answers and every known migration is applied.
    async fn readiness(&self) -> Result<(), StoreError>;
    /// Closes connections (waits for in-flight statements).
    async fn close(&self);
}
