//! A PostgreSQL database of a test's own on the server tests use, dropped afterwards.

use sqlx::{Connection as _, Executor as _, PgConnection};

/// How to start the local server the tests expect.
const START_COMMAND: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// The server's maintenance database: `TASKFLOW_TEST_POSTGRES_URL`, by default the local
/// server every test script starts (trust auth on 127.0.0.1:5432).
pub fn admin_url() -> String {
    std::env::var("TASKFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `name` (query parameters kept) and, when given, logging
/// in as `(user, password)`.
pub fn url_for(url: &str, name: &str, login: Option<(&str, &str)>) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut authority = base[authority_start..path_start].to_owned();
    if let Some((user, password)) = login {
        let host = authority
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, h)| h);
        authority = format!("{user}:{password}@{host}");
    }
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}{authority}/{name}{query}", &base[..authority_start])
}

/// A connection to `url`; panics, saying how to start the server, if it is unreachable.
async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url}: {e}\n\
             Start the local server with `{START_COMMAND}` (or set TASKFLOW_TEST_POSTGRES_URL)."
        )
    })
}

/// A fresh, empty database, dropped (with any connections still open to it, and the role
/// [`Self::restrict_login`] made) when this guard is dropped, also when the test panics.
#[derive(Debug)]
pub struct ScratchPostgres {
    /// The database's name: a prefix and a unique suffix.
    pub name: String,
    /// URL of the database (as the admin, or as the restricted role once made).
    pub url: String,
    /// The role made by [`Self::restrict_login`].
    role: Option<String>,
}

impl ScratchPostgres {
    /// Creates database `<prefix>_<unique suffix>`.
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        let mut admin = connect(&admin_url()).await;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Self {
            url: url_for(&admin_url(), &name, None),
            name,
            role: None,
        }
    }

    /// Makes [`Self::url`] log in as a new role that may create tables in the `public` schema
    /// but not extensions (no CREATE privilege on the database): like a locked-down production
    /// account.
    pub async fn restrict_login(&mut self) {
        let role = format!("{}_app", self.name);
        let password = uuid::Uuid::now_v7().simple().to_string();
        let mut admin = connect(&admin_url()).await;
        admin
            .execute(format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'").as_str())
            .await
            .expect("create role");
        self.role = Some(role.clone());
        let _ = admin.close().await;
        let mut inside = self.admin_connection().await;
        inside
            .execute(format!("GRANT CREATE ON SCHEMA public TO {role}").as_str())
            .await
            .expect("grant");
        let _ = inside.close().await;
        self.url = url_for(&admin_url(), &self.name, Some((&role, &password)));
    }

    /// A direct connection to this database as the admin.
    pub async fn admin_connection(&self) -> PgConnection {
        connect(&url_for(&admin_url(), &self.name, None)).await
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        let (name, role) = (self.name.clone(), self.role.take());
        // Drop may run inside the test's runtime (or while unwinding from a panic): clean up on
        // a thread with a runtime of its own, and wait for it.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let Ok(mut admin) = PgConnection::connect(&admin_url()).await else {
                    eprintln!("cannot drop test database {name}: server unreachable");
                    return;
                };
                if let Err(e) = admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                {
                    eprintln!("cannot drop test database {name}: {e}");
                }
                if let Some(role) = role
                    && let Err(e) = admin
                        .execute(format!("DROP ROLE IF EXISTS {role}").as_str())
                        .await
                {
                    eprintln!("cannot drop test role {role}: {e}");
                }
                let _ = admin.close().await;
            });
        });
        let _ = cleanup.join();
    }
}
