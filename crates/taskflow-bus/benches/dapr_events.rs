//! The Dapr bus in the events benchmark: sustained task writes through the outbox, published
//! through the sidecar's HTTP API and delivered back to the app's subscription route, measured
//! exactly like `taskflow bench events` measures the other buses ([`outbox_bench::measure`]).
//!
//! The Dapr sidecar cannot run here, so the bus talks to the local double the tests use
//! (`tests/dapr_double`), which follows Dapr's HTTP contract and delivers one event at a time
//! per topic; against a real sidecar the figures include its own overhead (~1.2 ms p99 by
//! Dapr's published numbers) and the broker behind it.
//!
//! `cargo bench -p taskflow-bus --features dapr --bench dapr_events -- [--rounds N] [--users N] [--bulk-publish N] [--out-dir DIR]`
//! prints the medians and writes `<DIR>/events-dapr.json` (default `bench-results`; with
//! `--bulk-publish` above 1, `events-dapr-bulk.json`). With one user (the default) every
//! event of a topic has one partition key, so the bus publishes them one request at a time;
//! `--users` spreads the writes over that many keys. `--bulk-publish N` sets
//! `bulk_publish_max_messages` (default 1: one event per request): each request then carries
//! the next event of up to N keys.

#[path = "../tests/dapr_double/mod.rs"]
mod dapr_double;

use std::path::PathBuf;
use std::sync::Arc;

use dapr_double::{DaprDouble, DoubleConfig};
use taskflow_bus::backends::dapr::{DaprBus, DaprSettings};
use taskflow_bus::outbox_bench::{self, BenchError};
use taskflow_bus::{EventBus, TopicNames};
use taskflow_domain::events::Topic;
use taskflow_store::Store;
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};

/// The `taskflow` binary's allocator, so these figures compare with `taskflow bench events`.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The goal for the Dapr double: commit-to-consume p99 ≤ 25 ms at 10 000 events/s.
const GOAL_P99_MS: f64 = 25.0;

/// What the command line asks for.
struct Options {
    rounds: usize,
    users: usize,
    bulk_publish: u32,
    out_dir: PathBuf,
}

/// `--rounds N`, `--users N`, `--bulk-publish N` and `--out-dir DIR` (cargo's own `--bench`
/// argument is ignored).
fn options() -> Result<Options, BenchError> {
    let (mut rounds, mut users, mut out_dir) = (5, 1, PathBuf::from("bench-results"));
    let mut bulk_publish = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args.next().ok_or("--rounds needs a number")?.parse()?;
                if rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--users" => {
                users = args.next().ok_or("--users needs a number")?.parse()?;
                if users == 0 {
                    return Err("--users must be at least 1".into());
                }
            }
            "--bulk-publish" => {
                bulk_publish = args
                    .next()
                    .ok_or("--bulk-publish needs a number")?
                    .parse()?;
            }
            "--out-dir" => out_dir = args.next().ok_or("--out-dir needs a folder")?.into(),
            "--bench" => {}
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(Options {
        rounds,
        users,
        bulk_publish,
        out_dir,
    })
}

#[tokio::main]
async fn main() -> Result<(), BenchError> {
    let Options {
        rounds,
        users,
        bulk_publish,
        out_dir,
    } = options()?;
    let dir = std::env::temp_dir().join(format!("taskflow-bench-dapr-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect(&SqliteSettings::new(format!(
            "sqlite://{}/bench.db",
            dir.display()
        )))
        .await?,
    );
    store.migrate().await?;

    let double = DaprDouble::start(DoubleConfig::default()).await;
    let names = TopicNames {
        prefix: format!("bench-{}-", uuid::Uuid::now_v7().simple()),
        ..TopicNames::default()
    };
    let bus = Arc::new(DaprBus::new(&DaprSettings {
        http_endpoint: double.endpoint(),
        bulk_publish_max_messages: bulk_publish,
        ..DaprSettings::default()
    })?);
    bus.register(&names.physical(Topic::TaskUpdates.name()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_url = format!("http://{}", listener.local_addr()?);
    let router = bus.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    println!(
        "sustained writes through the outbox (dapr bus → local sidecar double, SQLite synchronous=FULL):"
    );
    let attach = async || {
        if let Err(error) = double.attach_app("taskflow", &app_url).await {
            eprintln!("the double could not read the app's subscriptions: {error}");
        }
    };
    let bus_dyn: Arc<dyn EventBus> = bus.clone();
    let figures =
        outbox_bench::measure(store.clone(), bus_dyn, names, rounds, users, attach).await?;
    println!(
        "  {:.0} events/s committed (2 events per task write)",
        figures.events_per_second
    );
    println!(
        "  commit-to-consume at {:.0} events/s: p50 {:.2} ms, p99 {:.2} ms (goal p99 ≤ {GOAL_P99_MS} ms at 10 000/s), {:.2}× the goal; commit to accepted by the sidecar p99 {:.2} ms",
        figures.latency_rate,
        figures.p50_ms,
        figures.p99_ms,
        figures.p99_ms / GOAL_P99_MS,
        figures.publish_p99_ms
    );
    let result = serde_json::json!({
        "benchmark": "events",
        "backend": "dapr (local sidecar double)",
        "store": "sqlite (synchronous=FULL)",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "rounds": rounds,
        "users": users,
        "bulk_publish_max_messages": bulk_publish,
        "events_per_second_median": figures.events_per_second,
        "events_per_second_rounds": figures.events_per_second_rounds,
        "latency_rate_events_per_second": figures.latency_rate,
        "commit_to_consume_p50_ms_median": figures.p50_ms,
        "commit_to_consume_p99_ms_median": figures.p99_ms,
        "commit_to_published_p99_ms_median": figures.publish_p99_ms,
        "unconsumed_updates": figures.unconsumed,
        "goal_p99_ms": GOAL_P99_MS,
        "ratio_p99_to_goal": figures.p99_ms / GOAL_P99_MS,
    });
    bus.shutdown();
    double.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(if bulk_publish > 1 {
        "events-dapr-bulk.json"
    } else {
        "events-dapr.json"
    });
    std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
    println!("result written to {}", path.display());
    Ok(())
}
