//! PostgreSQL over TLS (rustls): `sslmode=require` URLs, as managed PostgreSQL services demand,
//! connect encrypted; a certificate that cannot be verified (`sslmode=verify-full`) is a clear
//! connection error, never a panic.
//!
//! The server is `postgres://postgres@127.0.0.1:5432/postgres` (trust auth) unless
//! `TASKFLOW_TEST_POSTGRES_URL` names another admin URL. With TLS off on that server, the test
//! checks instead that `sslmode=require` is refused with a message naming TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use taskflow_store::postgres::{PostgresSettings, PostgresStore};
use taskflow_store::{Store as _, StoreError};

fn admin_url() -> String {
    std::env::var("TASKFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_sslmode(url: &str, mode: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}sslmode={mode}")
}

async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
    let mut settings = PostgresSettings::new(url);
    settings.max_connections = 1;
    settings.acquire_timeout = Duration::from_secs(10);
    PostgresStore::connect(&settings).await
}

#[tokio::test]
async fn sslmode_require_connects_encrypted_and_unverifiable_certificates_are_clear_errors() {
    let plain = admin_url();
    let mut admin = PgConnection::connect(&with_sslmode(&plain, "disable"))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {plain}: {e}"));
    let (ssl,): (String,) = sqlx::query_as("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();

    let require = with_sslmode(&plain, "require");
    if ssl != "on" {
        eprintln!("the server has TLS off: checking only that sslmode=require is refused clearly");
        let Err(error) = connect(&require).await else {
            panic!("sslmode=require connected to a server without TLS");
        };
        let message = error.to_string().to_lowercase();
        assert!(
            message.contains("tls") || message.contains("ssl"),
            "{message}"
        );
        return;
    }

    // The store connects with sslmode=require, and the session really is encrypted.
    let store = connect(&require).await.expect("sslmode=require connects");
    store.close().await;
    let mut session = PgConnection::connect(&require).await.unwrap();
    let (encrypted,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut session)
            .await
            .unwrap();
    assert!(encrypted, "the session is encrypted");
    session.close().await.unwrap();

    // A local server's certificate is self-signed: full verification must fail cleanly.
    let Err(error) = connect(&with_sslmode(&plain, "verify-full")).await else {
        panic!("a self-signed certificate passed full verification");
    };
    assert!(
        matches!(error, StoreError::Unavailable(_)),
        "connection trouble is `Unavailable`: {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("cannot connect to PostgreSQL") && message.contains("certificate"),
        "{message}"
    );
}
