//! Secret calendar feeds on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
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
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO calendar_feeds (user_id, token_hash, prefix, created_at, last_used_at)
                         VALUES (?, ?, ?, ?, NULL)
                         ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash,
                             prefix = excluded.prefix, created_at = excluded.created_at, last_used_at = NULL",
                    )
                    .bind(feed.user_id.to_string())
                    .bind(&token_hash)
                    .bind(&feed.prefix)
                    .bind(micros(feed.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| unique_violation(e, &[("calendar_feeds.token_hash", "calendar_feeds_hash")]))?;
                    Ok(((), None))
                })
            })
            .await
    }

    async fn calendar_feed(&self, user: UserId) -> Result<Option<CalendarFeed>, StoreError> {
        let row = sqlx::query("SELECT * FROM calendar_feeds WHERE user_id = ?")
            .bind(user.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else { return Ok(None) };
        let last_used: Option<i64> = row.try_get("last_used_at")?;
        Ok(Some(CalendarFeed {
            user_id: user,
            prefix: row.try_get("prefix")?,
            created_at: instant(row.try_get("created_at")?)?,
            last_used_at: last_used.map(instant).transpose()?,
        }))
    }

    async fn delete_calendar_feed(&self, user: UserId) -> Result<(), StoreError> {
        let done = self
            .writes
            .write(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM calendar_feeds WHERE user_id = ?")
                        .bind(user.to_string())
                        .execute(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                    Ok((done, None))
                })
            })
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn user_by_calendar_feed(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT f.last_used_at AS feed_last_used, u.*
             FROM calendar_feeds f JOIN users u ON u.id = f.user_id
             WHERE f.token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else { return Ok(None) };
        let user = user_from_row(&row)?;
        // Record use at most once a minute, so feed fetches stay reads in the common case.
        let last_used: Option<i64> = row.try_get("feed_last_used")?;
        if last_used.is_none_or(|last| micros(now) - last > 60_000_000) {
            let hash = token_hash.to_vec();
            self.writes
                .write(move |conn| {
                    Box::pin(async move {
                        sqlx::query(
                            "UPDATE calendar_feeds SET last_used_at = ? WHERE token_hash = ?",
                        )
                        .bind(micros(now))
                        .bind(hash)
                        .execute(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                        Ok(((), None))
                    })
                })
                .await?;
        }
        Ok(Some(user))
    }
}
