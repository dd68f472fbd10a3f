//! Secret calendar feeds on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};
use taskflow_domain::{User, UserId};

use super::SqliteStore;
use super::rows::{micros, user_from_row};
use super::unique_violation;
use crate::error::StoreError;
use crate::{CalendarFeed, CalendarFeedStore};

fn instant(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Corrupt(format!("calendar_feeds instant out of range: {value}")))
}

#[async_trait]
impl CalendarFeedStore for SqliteStore {
    async fn replace_calendar_feed(
        &self,
        feed: &CalendarFeed,
        token_hash: &[u8],
    ) -> Result<(), StoreError> {
        let (feed, token_hash) = (feed.clone(), token_hash.to_vec());
        self.writes
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO calendar_feeds (user_id, token_hash, prefix, created_at, last_used_at)
                     VALUES (?, ?, ?, ?, NULL)
                     ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash,
                         prefix = excluded.prefix, created_at = excluded.created_at, last_used_at = NULL",
                )?
                .execute(params![
                    feed.user_id.to_string(),
                    token_hash,
                    feed.prefix,
                    micros(feed.created_at),
                ])
                .map_err(|e| {
                    unique_violation(e, &[("calendar_feeds.token_hash", "calendar_feeds_hash")])
                })?;
                Ok(((), None))
            })
            .await
    }

    async fn calendar_feed(&self, user: UserId) -> Result<Option<CalendarFeed>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT * FROM calendar_feeds WHERE user_id = ?")?
                .query_row([user.to_string()], |row| {
                    Ok((|| {
                        let last_used: Option<i64> = row.get("last_used_at")?;
                        Ok::<_, StoreError>(CalendarFeed {
                            user_id: user,
                            prefix: row.get("prefix")?,
                            created_at: instant(row.get("created_at")?)?,
                            last_used_at: last_used.map(instant).transpose()?,
                        })
                    })())
                })
                .optional()?
                .transpose()
        })
        .await
    }

    async fn delete_calendar_feed(&self, user: UserId) -> Result<(), StoreError> {
        self.writes
            .write(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM calendar_feeds WHERE user_id = ?")?
                    .execute([user.to_string()])?;
                if deleted == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(((), None))
            })
            .await
    }

    async fn user_by_calendar_feed(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        let hash = token_hash.to_vec();
        let found = {
            let hash = hash.clone();
            self.read(move |conn| {
                conn.prepare_cached(
                    "SELECT f.last_used_at AS feed_last_used, u.*
                     FROM calendar_feeds f JOIN users u ON u.id = f.user_id
                     WHERE f.token_hash = ?",
                )?
                .query_row([hash], |row| {
                    Ok(user_from_row(row)
                        .and_then(|user| Ok((user, row.get::<_, Option<i64>>("feed_last_used")?))))
                })
                .optional()?
                .transpose()
            })
            .await?
        };
        let Some((user, last_used)) = found else {
            return Ok(None);
        };
        // Record use at most once a minute, so feed fetches stay reads in the common case.
        if last_used.is_none_or(|last| micros(now) - last > 60_000_000) {
            self.writes
                .write(move |conn| {
                    conn.prepare_cached(
                        "UPDATE calendar_feeds SET last_used_at = ? WHERE token_hash = ?",
                    )?
                    .execute(params![micros(now), hash])?;
                    Ok(((), None))
                })
                .await?;
        }
        Ok(Some(user))
    }
}
