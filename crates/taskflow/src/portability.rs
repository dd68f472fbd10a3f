//! `taskflow export` and `taskflow import`: the whole database as JSON Lines, to move between
//! SQLite and PostgreSQL (the format is described in `taskflow_store::portability`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::Utc;
use taskflow_store::Store;
use taskflow_store::portability;

use crate::app;
use crate::settings::{Settings, redact_url};

/// Output buffer: large writes, few system calls.
const BUFFER: usize = 1 << 20;

/// Exports the configured database to `out` (standard output when `None`). A file is written
/// under a temporary name and renamed when complete, so a failed export leaves no partial file.
pub async fn export(settings: &Settings, out: Option<&Path>) -> anyhow::Result<()> {
    let store = app::open_store(settings).await?;
    let result = export_from(store.as_ref(), out).await;
    store.close().await;
    let counts = result?;
    eprintln!("taskflow: exported {counts}");
    Ok(())
}

async fn export_from(store: &dyn Store, out: Option<&Path>) -> anyhow::Result<portability::Counts> {
    store
        .readiness()
        .await
        .context("the database is not ready to export")?;
    let backlog = store.outbox_backlog().await?;
    if backlog.unpublished > 0 {
        eprintln!(
            "taskflow: warning: {} events are not yet published; effects still in flight \
             (e.g. audit entries) are not in this export; stop the server and let the relay \
             catch up for a complete copy",
            backlog.unpublished
        );
    }
    let Some(path) = out else {
        let mut stdout = BufWriter::with_capacity(BUFFER, std::io::stdout());
        let counts = portability::export(store, &mut stdout, Utc::now())
            .await
            .context("exporting")?;
        stdout.flush().context("writing to standard output")?;
        return Ok(counts);
    };
    let partial = partial_path(path);
    let written = async {
        let file =
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut writer = BufWriter::with_capacity(BUFFER, file);
        let counts = portability::export(store, &mut writer, Utc::now())
            .await
            .context("exporting")?;
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", partial.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        anyhow::Ok(counts)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// `<path>.partial`, next to `path`.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Validates the whole of `file`, migrates the configured database and imports into it (it
/// must be empty) in one transaction.
pub async fn import(settings: &Settings, file: &Path) -> anyhow::Result<()> {
    let reader = BufReader::with_capacity(
        BUFFER,
        File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let records =
        portability::parse(reader).with_context(|| format!("reading {}", file.display()))?;
    let store = app::open_store(settings).await?;
    let result = async {
        store.migrate().await.context("applying migrations")?;
        portability::import(store.as_ref(), records)
            .await
            .with_context(|| {
                format!(
                    "importing {} into {}",
                    file.display(),
                    redact_url(&settings.database_url())
                )
            })
    }
    .await;
    store.close().await;
    println!("imported {}", result?);
    Ok(())
}
