//! Secret calendar feeds on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use taskflow_domain::{User, UserId};

use super::rows::user_from_row;
use super::{PostgresStore, at_micros, pg_error};
use crate::error::StoreError;
use crate::{CalendarFeed, CalendarFeedStore};

#[async_trait]
impl CalendarFeedStore for PostgresStore {
    async fn replace_calendar_feed(
        &self,
        feed: &CalendarFeed,
        token_hash: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO calendar_feeds (user_id, token_hash, prefix, created_at, last_used_at)
             VALUES ($1, $2, $3, $4, NULL)
             ON CONFLICT (user_id) DO UPDATE SET token_hash = EXCLUDED.token_hash,
                 prefix = EXCLUDED.prefix, created_at = EXCLUDED.created_at, last_used_at = NULL",
        )
        .bind(feed.user_id.as_uuid())
        .bind(token_hash)
        .bind(&feed.prefix)
        .bind(at_micros(feed.created_at))
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn calendar_feed(&self, user: UserId) -> Result<Option<CalendarFeed>, StoreError> {
        let row = sqlx::query("SELECT * FROM calendar_feeds WHERE user_id = $1")
            .bind(user.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(CalendarFeed {
            user_id: user,
            prefix: row.try_get("prefix")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
        }))
    }

    async fn delete_calendar_feed(&self, user: UserId) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM calendar_feeds WHERE user_id = $1")
            .bind(user.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
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
        let now = at_micros(now);
        let row = sqlx::query(
            "SELECT f.last_used_at AS feed_last_used, u.*
             FROM calendar_feeds f JOIN users u ON u.id = f.user_id
             WHERE f.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        let Some(row) = row else { return Ok(None) };
        let user = user_from_row(&row)?;
        // Record use at most once a minute, so feed fetches stay reads in the common case.
        let last_used: Option<DateTime<Utc>> = row.try_get("feed_last_used")?;
        if last_used.is_none_or(|last| now - last > TimeDelta::minutes(1)) {
            sqlx::query("UPDATE calendar_feeds SET last_used_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(token_hash)
                .execute(&self.pool)
                .await
                .map_err(pg_error)?;
        }
        Ok(Some(user))
    }
}
