//! The conformance story on a fresh SQLite file.

use taskflow_store::Store;
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};

#[tokio::test]
async fn sqlite_store_passes_the_conformance_story() {
    let dir = std::env::temp_dir().join(format!("taskflow-store-{}", uuid::Uuid::now_v7()));
    let url = format!("sqlite://{}/test.db", dir.display());
    let store = SqliteStore::connect(&SqliteSettings::new(url))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrating twice is a no-op");
    taskflow_store::conformance::run(&store).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_unmigrated_store_is_not_ready() {
    let dir = std::env::temp_dir().join(format!("taskflow-store-{}", uuid::Uuid::now_v7()));
    let url = format!("sqlite://{}/test.db", dir.display());
    let store = SqliteStore::connect(&SqliteSettings::new(url))
        .await
        .expect("connect");
    assert!(store.readiness().await.is_err());
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
