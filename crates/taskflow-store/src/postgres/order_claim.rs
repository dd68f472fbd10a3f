//! One outbox order per database: a process refuses to write events next to processes that
//! order them the other way.
//!
//! [`OutboxOrder::Global`] writers make `seq` order commit order because the in-process bus
//! follows the outbox by position; [`OutboxOrder::PerKey`] writers commit different users side
//! by side, so their rows may appear out of `seq` order. One per-key writer is enough for an
//! in-process bus on the same database to skip rows for good, for instance while a rolling
//! update moves the deployment from `bus.backend = memory` to a broker. So each event-writing
//! process *claims* its order for as long as it runs: a session-level shared advisory lock on
//! the order's key, held on a connection of its own. A process of the other order sees that
//! lock and refuses to start. The check and the claim happen under one more advisory lock
//! ([`CLAIM_CHECK_LOCK`]), so two processes of different orders starting together cannot both
//! pass the check.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use super::{OutboxOrder, pg_error};
use crate::error::StoreError;

/// Session advisory lock held by processes writing with [`OutboxOrder::Global`] (`'tfogloba'`).
pub const GLOBAL_ORDER_LOCK: i64 = 0x7466_6f67_6c6f_6261;

/// Session advisory lock held by processes writing with [`OutboxOrder::PerKey`] (`'tfoperke'`).
pub const PER_KEY_ORDER_LOCK: i64 = 0x7466_6f70_6572_6b65;

/// Held for the moment of one check and claim (`'tfocheck'`).
pub const CLAIM_CHECK_LOCK: i64 = 0x7466_6f63_6865_636b;

/// The lock of `order`, and that of the other order.
fn keys(order: OutboxOrder) -> (i64, i64) {
    match order {
        OutboxOrder::Global => (GLOBAL_ORDER_LOCK, PER_KEY_ORDER_LOCK),
        OutboxOrder::PerKey => (PER_KEY_ORDER_LOCK, GLOBAL_ORDER_LOCK),
    }
}

/// What a running process with `order` is, in the words of the settings.
fn described(order: OutboxOrder) -> &'static str {
    match order {
        OutboxOrder::Global => "the in-process bus (`bus.backend = \"memory\"`)",
        OutboxOrder::PerKey => "an external broker (`bus.backend` nats, kafka or dapr)",
    }
}

/// Claims `order` on a new connection, which holds the claim until it is closed; refuses
/// ([`StoreError::Unavailable`]) while a process of the other order holds its claim.
pub(crate) async fn claim(
    options: &PgConnectOptions,
    order: OutboxOrder,
) -> Result<PgConnection, StoreError> {
    let mut conn = options.connect().await.map_err(pg_error)?;
    let (own, other) = keys(order);
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(CLAIM_CHECK_LOCK)
        .execute(&mut conn)
        .await
        .map_err(pg_error)?;
    let claimed = check_and_claim(&mut conn, order, own, other).await;
    let released = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(CLAIM_CHECK_LOCK)
        .execute(&mut conn)
        .await
        .map_err(pg_error);
    match claimed.and(released) {
        Ok(_) => Ok(conn),
        Err(error) => {
            let _ = conn.close().await;
            Err(error)
        }
    }
}

/// With [`CLAIM_CHECK_LOCK`] held: `other` must be free, then `own` is taken shared.
async fn check_and_claim(
    conn: &mut PgConnection,
    order: OutboxOrder,
    own: i64,
    other: i64,
) -> Result<(), StoreError> {
    let other_free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(other)
        .fetch_one(&mut *conn)
        .await
        .map_err(pg_error)?;
    if !other_free {
        let other_order = match order {
            OutboxOrder::Global => OutboxOrder::PerKey,
            OutboxOrder::PerKey => OutboxOrder::Global,
        };
        return Err(StoreError::Unavailable(format!(
            "another TaskFlow process on this database runs with {}, and this one with {}: \
             their outbox writes are ordered differently and the in-process bus could skip \
             events. Run every process on one database with the same kind of bus (to switch, \
             stop the old processes first)",
            described(other_order),
            described(order)
        )));
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(other)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(own)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Whether the claim's connection still answers (its session, and so the claim, is alive).
pub(crate) async fn holds(conn: &mut PgConnection) -> bool {
    let ping = sqlx::query("SELECT 1").execute(conn);
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), ping).await,
        Ok(Ok(_))
    )
}
