//! The error every store method returns.

/// What went wrong in storage, in terms callers can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist for this user.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken; the name says which (e.g. `users_email`).
    #[error("conflict on {0}")]
    Conflict(&'static str),
    /// The row changed since the caller read it.
    #[error("version mismatch: the stored version is {current}")]
    VersionMismatch {
        /// The version now stored.
        current: i64,
    },
    /// The database cannot be reached or is not ready (e.g. migrations missing).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be read back (a bug or manual tampering).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Anything else from the driver.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Anything else from the embedded SQLite driver.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// Maps driver errors that mean "the database is not there" to [`StoreError::Unavailable`].
    pub(crate) fn from_sqlx(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(error.to_string())
            }
            other => Self::Database(other),
        }
    }
}
