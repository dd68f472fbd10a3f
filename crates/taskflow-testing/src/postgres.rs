//! A PostgreSQL database of a test's own on the server tests use, dropped afterwards.

use sqlx::{Connection as _, Executor as _, PgConnection};

/// The server's maintenance database: `TASKFLOW_TEST_POSTGRES_URL`, by default the local
/// server every test script starts (trust auth on 127.0.0.1:5432).
pub fn admin_url() -> String {
    std::env::var("TASKFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `name` (query parameters kept).
pub fn url_for(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{name}{query}", &base[..path_start])
}

/// A fresh, empty database, dropped (with any connections still open to it) when this guard
/// is dropped, also when the test panics.
#[derive(Debug)]
pub struct ScratchPostgres {
    /// The database's name: `prefix` and a unique suffix.
    pub name: String,
    /// URL of the database.
    pub url: String,
}

impl ScratchPostgres {
    /// Creates database `<prefix>_<unique suffix>`; panics if the server is unreachable.
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        Self {
            url: url_for(&admin, &name),
            name,
        }
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside the test's runtime: clean up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let Ok(mut conn) = PgConnection::connect(&admin_url()).await else {
                    eprintln!("cannot drop test database {name}: server unreachable");
                    return;
                };
                if let Err(e) = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                {
                    eprintln!("cannot drop test database {name}: {e}");
                }
                let _ = conn.close().await;
            });
        });
        let _ = cleanup.join();
    }
}
