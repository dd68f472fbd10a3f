//! `taskflow bench …`: performance measurements that print medians and write a JSON result file.
//!
//! Each benchmark reports its figures against a baseline measured in the same run where one
//! exists (e.g. completing a recurring task vs. completing a one-off task) and against the goal
//! stated in the issue. The machine is shared and noisy, so every figure is the median of
//! several rounds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{TimeZone as _, Utc};
use serde_json::{Value, json};
use taskflow_domain::SystemClock;
use taskflow_domain::recurrence::{Anchor, RecurrenceRule, Schedule};
use taskflow_http::AppState;
use taskflow_http::auth::{AuthSettings, Secret};
use taskflow_http::rate_limit::RateLimitSettings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// Which benchmark to run.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Benchmark {
    /// Next-occurrence computation and completing recurring tasks over HTTP.
    Recurrence,
    /// Task writes through the outbox to the in-process bus: events/s and commit-to-consume latency.
    Events,
    /// Reminder firing: lateness, bursts, millions pending and restart after kill -9.
    Reminders,
    /// Many concurrent SSE and WebSocket streams: change-to-frame latency and memory per idle
    /// connection.
    Fanout,
    /// Create / list / complete throughput and latency over HTTP with concurrent clients, on
    /// SQLite and PostgreSQL.
    Api,
}

/// Options shared by the benchmarks.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchOptions {
    /// Where to write the machine-readable result.
    #[arg(long, default_value = "bench-results")]
    pub out_dir: PathBuf,
    /// Rounds per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Tasks completed per HTTP round.
    #[arg(long, default_value_t = 400)]
    pub tasks: usize,
    /// `bench events`: users the writes go to in turn (the events' partition keys); 1 puts
    /// every event in one ordered stream per topic.
    #[arg(long, default_value_t = 1)]
    pub users: usize,
    /// Event bus for `bench events`: `memory`, `nats` (the server in `--nats-url`; the
    /// benchmark uses its own streams and deletes them) or `kafka` (`--kafka-brokers`); for
    /// `bench api`: `memory` or `nats` (with PostgreSQL, an external bus lets writers of
    /// different users commit side by side).
    #[arg(long, default_value = "memory")]
    pub backend: String,
    /// NATS server for `--backend nats`.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Kafka bootstrap brokers for `--backend kafka` (the benchmark creates topics of its own
    /// and deletes them).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// `bench events --backend kafka`: librdkafka settings `KEY=VALUE` for the benchmark's
    /// clients (repeatable), e.g. `--kafka-extra fetch.wait.max.ms=5`.
    #[arg(long, value_parser = parse_key_value)]
    pub kafka_extra: Vec<(String, String)>,
    /// `bench reminders`: reminders spread over `--spread-secs`.
    #[arg(long, default_value_t = 3000)]
    pub reminders: usize,
    /// `bench reminders`: how many seconds the spread reminders cover.
    #[arg(long, default_value_t = 30)]
    pub spread_secs: u64,
    /// `bench reminders`: reminders due in the same instant (one burst per round).
    #[arg(long, default_value_t = 100_000)]
    pub burst: usize,
    /// `bench reminders`: reminders pending far ahead for the memory and restart phase (0 skips it).
    #[arg(long, default_value_t = 10_000_000)]
    pub pending: usize,
    /// `bench fanout`: changes per round timed on one session (single-user latency).
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    /// `bench fanout`: sessions of one user a change fans out to (0 skips that phase).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// `bench fanout`: streams held at once over several processes (0 skips that phase).
    #[arg(long, default_value_t = 50_000)]
    pub connections: usize,
    /// `bench fanout`: `taskflow serve` processes sharing the `--connections` (a process may
    /// hold only 20 000 open files here).
    #[arg(long, default_value_t = 3)]
    pub servers: usize,
    /// `bench fanout`: load-generator processes opening the `--connections`.
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// `bench fanout`: streams per user in the `--connections` phase (within the default cap of
    /// 20 per user and server).
    #[arg(long, default_value_t = 10)]
    pub sessions_per_user: usize,
    /// `bench fanout`: seconds the `--connections` are held before every user's task changes
    /// (longer than the 15 s heartbeat, so each stream must receive one).
    #[arg(long, default_value_t = 20)]
    pub hold_secs: u64,
    /// `bench fanout`: the servers' heartbeat interval (`[realtime] heartbeat_secs`; the
    /// default is the server's); `--hold-secs` must be longer.
    #[arg(long, default_value_t = 15)]
    pub heartbeat_secs: u64,
    /// `bench events`, and `bench api` on SQLite: the store's `database.sqlite_checkpoints`,
    /// `background` (a thread of their own, the default) or `commit` (SQLite's automatic
    /// checkpoints), to compare them.
    #[arg(long, default_value = "background", value_parser = ["commit", "background"])]
    pub sqlite_checkpoints: String,
    /// `bench api`: `sqlite`, `postgres` or `both`.
    #[arg(long, default_value = "both")]
    pub database: String,
    /// `bench api`: the PostgreSQL database through which the benchmark creates (and afterwards
    /// drops) a database of its own.
    #[arg(long, default_value_t = crate::bench_api::default_postgres_url())]
    pub postgres_url: String,
    /// `bench api`: the server's `database.max_connections` (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub db_connections: u32,
    /// `bench api`: concurrent HTTP clients, one connection each.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// `bench api`: seconds per measured round.
    #[arg(long, default_value_t = 5.0)]
    pub round_secs: f64,
    /// `bench api`: open-loop create rate per second instead of half the measured peak (0), to
    /// compare the create latency of two setups at one load.
    #[arg(long, default_value_t = 0.0)]
    pub create_rate: f64,
    /// `bench api`: tasks the user holds when lists are measured.
    #[arg(long, default_value_t = 100_000)]
    pub list_tasks: usize,
    /// Internal: run as a load generator of `bench fanout` (commands on standard input).
    #[arg(long, hide = true)]
    pub fanout_client: bool,
}

/// Parses a `KEY=VALUE` command-line pair (a non-empty key is required).
fn parse_key_value(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {pair:?}")),
    }
}

/// Runs `which` and writes `<out_dir>/<name>.json`.
pub async fn run(which: Benchmark, options: BenchOptions) -> anyhow::Result<()> {
    if options.fanout_client {
        anyhow::ensure!(
            matches!(which, Benchmark::Fanout),
            "--fanout-client belongs to `bench fanout`"
        );
        return crate::bench_fanout::load::run_child().await;
    }
    let (name, result) = match which {
        Benchmark::Recurrence => ("recurrence".to_owned(), recurrence(&options).await?),
        // One file per backend: events.json (memory), events-nats.json, events-kafka.json.
        Benchmark::Events => (
            match options.backend.as_str() {
                "memory" => "events".to_owned(),
                other => format!("events-{other}"),
            },
            events(&options).await?,
        ),
        Benchmark::Reminders => (
            "reminders".to_owned(),
            crate::bench_reminders::reminders(&options).await?,
        ),
        Benchmark::Fanout => (
            "fanout".to_owned(),
            crate::bench_fanout::fanout(&options).await?,
        ),
        // api.json (in-process bus), api-nats.json.
        Benchmark::Api => (
            match options.backend.as_str() {
                "memory" => "api".to_owned(),
                other => format!("api-{other}"),
            },
            crate::bench_api::api(&options).await?,
        ),
    };
    std::fs::create_dir_all(&options.out_dir)
        .with_context(|| format!("creating {}", options.out_dir.display()))?;
    let path = options.out_dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
    println!("result written to {}", path.display());
    Ok(())
}

pub(crate) use taskflow_bus::outbox_bench::{median, millis, percentile};

/// Occurrences per second of chaining `next_after` for one rule on this thread.
fn occurrences_per_second(schedule: &Schedule, window: Duration) -> anyhow::Result<f64> {
    let mut computed = 0u64;
    let started = Instant::now();
    while started.elapsed() < window {
        // Restart the chain every 1000 occurrences so monthly and yearly rules stay within the
        // supported years (a long-lived series looks like this too: a few thousand occurrences).
        let mut due = schedule.start_utc();
        let mut index = 0u32;
        for _ in 0..1000 {
            match schedule.next_after(due, due, index)? {
                Some(next) => {
                    due = next;
                    index += 1;
                }
                None => {
                    due = schedule.start_utc();
                    index = 0;
                }
            }
            computed += 1;
        }
    }
    Ok(computed as f64 / started.elapsed().as_secs_f64())
}

async fn recurrence(options: &BenchOptions) -> anyhow::Result<Value> {
    const GOAL_PER_SECOND: f64 = 1_000_000.0;
    const GOAL_P99_MS: f64 = 10.0;
    let start = Utc
        .with_ymd_and_hms(2027, 1, 4, 9, 0, 0)
        .single()
        .context("start")?
        .naive_utc();
    let mut computation = Vec::new();
    println!("next-occurrence computation (one thread; goal ≥ {GOAL_PER_SECOND} occurrences/s):");
    for rule in [
        "FREQ=DAILY",
        "FREQ=WEEKLY;BYDAY=MO,WE,FR",
        "FREQ=MONTHLY;BYMONTHDAY=1",
        "FREQ=MONTHLY;BYDAY=-1FR",
    ] {
        let schedule = Schedule::new(
            RecurrenceRule::parse(rule)?,
            Anchor::Due,
            chrono_tz::Europe::Berlin,
            start,
        );
        let mut rounds = Vec::new();
        for _ in 0..options.rounds {
            rounds.push(occurrences_per_second(
                &schedule,
                Duration::from_millis(600),
            )?);
        }
        let per_second = median(&mut rounds);
        println!(
            "  {rule:<32} {per_second:>12.0}/s  ({:.2}× goal)",
            per_second / GOAL_PER_SECOND
        );
        computation.push(
            json!({"rule": rule, "occurrences_per_second_median": per_second, "rounds": rounds,
            "ratio_to_goal": per_second / GOAL_PER_SECOND}),
        );
    }

    println!(
        "completing over HTTP (sequential client, SQLite, {} tasks a round):",
        options.tasks
    );
    let server = BenchServer::start().await?;
    let mut recurring_p99 = Vec::new();
    let mut one_off_p99 = Vec::new();
    let mut recurring_p50 = Vec::new();
    let mut one_off_p50 = Vec::new();
    let mut worst = Duration::ZERO;
    for _ in 0..options.rounds {
        for (recurring, p50s, p99s) in [
            (false, &mut one_off_p50, &mut one_off_p99),
            (true, &mut recurring_p50, &mut recurring_p99),
        ] {
            let mut latencies = server.complete_tasks(options.tasks, recurring).await?;
            latencies.sort();
            if recurring {
                worst = worst.max(latencies.last().copied().unwrap_or_default());
            }
            p50s.push(millis(percentile(&latencies, 50.0)));
            p99s.push(millis(percentile(&latencies, 99.0)));
        }
    }
    server.stop();
    let (rp50, rp99, op50, op99) = (
        median(&mut recurring_p50),
        median(&mut recurring_p99),
        median(&mut one_off_p50),
        median(&mut one_off_p99),
    );
    println!(
        "  recurring: p50 {rp50:.2} ms, p99 {rp99:.2} ms (goal ≤ {GOAL_P99_MS} ms), max {:.2} ms",
        millis(worst)
    );
    println!(
        "  one-off baseline: p50 {op50:.2} ms, p99 {op99:.2} ms; recurring/one-off p99 ratio {:.2}",
        rp99 / op99
    );
    Ok(json!({
        "benchmark": "recurrence",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "rounds": options.rounds,
        "next_occurrence": computation,
        "completion_over_http": {
            "tasks_per_round": options.tasks,
            "recurring_p50_ms_median": rp50, "recurring_p99_ms_median": rp99, "recurring_max_ms": millis(worst),
            "one_off_p50_ms_median": op50, "one_off_p99_ms_median": op99,
            "recurring_to_one_off_p99_ratio": rp99 / op99,
            "goal_p99_ms": GOAL_P99_MS, "meets_goal": rp99 <= GOAL_P99_MS,
        },
    }))
}

/// Registers `email` at the server at `base` and returns its access token.
pub(crate) async fn register(
    client: &reqwest::Client,
    base: &str,
    email: &str,
) -> anyhow::Result<String> {
    let registered: Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": "benchmark password"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(registered["access_token"]
        .as_str()
        .context("registration answered no token")?
        .to_owned())
}

/// The real app in this process, on a temporary SQLite file, without rate limits.
struct BenchServer {
    base: String,
    client: reqwest::Client,
    token: String,
    shutdown: CancellationToken,
    dir: PathBuf,
}

impl BenchServer {
    async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("taskflow-bench-{}", uuid_like()));
        let mut settings = Settings {
            data_dir: dir.clone(),
            ..Settings::default()
        };
        settings.auth = AuthSettings {
            jwt_secret: Secret::new(hex::encode(taskflow_http::auth::random_bytes::<32>())),
            ..AuthSettings::default()
        };
        let store = crate::app::open_store(&settings).await?;
        store.migrate().await?;
        let state = AppState::new(
            store,
            Arc::new(SystemClock),
            &settings.auth,
            &RateLimitSettings {
                enabled: false,
                ..RateLimitSettings::default()
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(taskflow_http::serve(listener, state, async move {
            signal.cancelled().await
        }));
        let client = reqwest::Client::new();
        let token = register(&client, &base, "bench@example.com").await?;
        Ok(Self {
            base,
            client,
            token,
            shutdown,
            dir,
        })
    }

    /// Creates `count` tasks, then completes them one at a time, returning each completion's latency.
    async fn complete_tasks(&self, count: usize, recurring: bool) -> anyhow::Result<Vec<Duration>> {
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let mut body = json!({"title": format!("bench {i}"), "due_at": "2027-01-04T09:00:00+01:00",
                "time_zone": "Europe/Berlin", "tags": ["bench"]});
            if recurring {
                body["recurrence"] = json!({"rule": "FREQ=WEEKLY;BYDAY=MO,WE,FR"});
            }
            let task: Value = self
                .client
                .post(format!("{}/api/v1/tasks", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            ids.push(task["id"].as_str().context("id")?.to_owned());
        }
        let mut latencies = Vec::with_capacity(count);
        for id in ids {
            let started = Instant::now();
            self.client
                .post(format!("{}/api/v1/tasks/{id}/complete", self.base))
                .bearer_auth(&self.token)
                .send()
                .await?
                .error_for_status()?;
            latencies.push(started.elapsed());
        }
        Ok(latencies)
    }

    fn stop(self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn uuid_like() -> String {
    hex::encode(taskflow_http::auth::random_bytes::<8>())
}

async fn events(options: &BenchOptions) -> anyhow::Result<Value> {
    use taskflow_bus::backends::memory::MemoryBus;
    use taskflow_bus::outbox_bench;
    use taskflow_bus::{EventBus, TopicNames};

    const GOAL_EVENTS_PER_SECOND: f64 = 25_000.0;
    // The goals: p99 ≤ 2 ms in-process, ≤ 5 ms through NATS (at 10 000 events/s).
    let goal_p99_ms: f64 = match options.backend.as_str() {
        "nats" => 5.0,
        "kafka" => 25.0,
        _ => 2.0,
    };
    let dir = std::env::temp_dir().join(format!("taskflow-bench-events-{}", uuid_like()));
    let mut settings = Settings {
        data_dir: dir.clone(),
        ..Settings::default()
    };
    settings.database.sqlite_checkpoints = options.sqlite_checkpoints.clone();
    let store = crate::app::open_store(&settings).await?;
    store.migrate().await?;
    let names = TopicNames {
        prefix: format!("bench-{}-", uuid_like()),
        ..TopicNames::default()
    };
    let (bus, cleanup): (Arc<dyn EventBus>, Option<futures_cleanup::Step>) = match options
        .backend
        .as_str()
    {
        "memory" => (Arc::new(MemoryBus::new(store.clone(), names.clone())), None),
        #[cfg(feature = "nats")]
        "nats" => {
            let settings = taskflow_bus::backends::nats::NatsSettings {
                url: options.nats_url.clone(),
                stream_prefix: names.prefix.trim_end_matches('-').replace('-', "_"),
                ..Default::default()
            };
            let bus = Arc::new(taskflow_bus::backends::nats::NatsBus::connect(&settings).await?);
            let (streams, names) = (bus.clone(), names.clone());
            let cleanup: futures_cleanup::Step = Box::new(move || {
                Box::pin(async move {
                    let _ = streams.delete_topics(&names).await;
                })
            });
            (bus, Some(cleanup))
        }
        #[cfg(feature = "kafka")]
        "kafka" => {
            let settings = taskflow_bus::backends::kafka::KafkaSettings {
                brokers: options.kafka_brokers.clone(),
                client_id: "taskflow-bench".into(),
                // librdkafka settings passed through, e.g. `fetch.wait.max.ms=5` for brokers
                // whose fetch does not return as soon as data arrives (tansu 0.6).
                extra: options.kafka_extra.iter().cloned().collect(),
                ..Default::default()
            };
            taskflow_bus::backends::kafka::create_topics(&settings, &settings.topic_specs(&names))
                .await?;
            // Topics of its own (unique prefix), left on the broker: run it against a
            // throwaway broker such as tansu with in-memory storage.
            let bus = Arc::new(taskflow_bus::backends::kafka::KafkaBus::new(settings)?);
            (bus, None)
        }
        other => anyhow::bail!(
            "bench events supports --backend memory, nats or kafka (a build with the `kafka` feature), not `{other}`"
        ),
    };
    let backend_name = bus.name();
    let relay_only_bookkeeps = bus.consumers_read_outbox();
    println!(
        "sustained writes through the outbox ({backend_name} bus, SQLite synchronous=FULL, {} checkpoints):",
        options.sqlite_checkpoints
    );
    let figures = outbox_bench::measure(
        store.clone(),
        bus,
        names,
        options.rounds,
        options.users,
        async || {},
    )
    .await;
    if let Some(cleanup) = cleanup {
        cleanup().await;
    }
    let figures = figures.map_err(|e| anyhow::anyhow!("{e}"))?;
    let events_per_second = figures.events_per_second;
    println!(
        "  {events_per_second:.0} events/s committed (2 events per task write), {:.2}× the goal of {GOAL_EVENTS_PER_SECOND}",
        events_per_second / GOAL_EVENTS_PER_SECOND
    );
    let (p50, p99, writes_per_second) =
        (figures.p50_ms, figures.p99_ms, figures.latency_rate / 2.0);
    let rates = figures.events_per_second_rounds;
    // Where consumers read the outbox themselves (the in-process bus), the relay only records
    // rows as published, off their path.
    let relay_leg = if relay_only_bookkeeps {
        "commit to recorded as published (bookkeeping, not on the consumers' path)"
    } else {
        "commit to accepted by the bus"
    };
    println!(
        "  commit-to-consume at {:.0} events/s: p50 {p50:.2} ms, p99 {p99:.2} ms (goal p99 ≤ {goal_p99_ms} ms at 10 000/s); {relay_leg} p99 {:.2} ms",
        writes_per_second * 2.0,
        figures.publish_p99_ms
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "benchmark": "events",
        "backend": backend_name,
        "store": "sqlite (synchronous=FULL)",
        "sqlite_checkpoints": options.sqlite_checkpoints,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "rounds": options.rounds,
        "users": options.users,
        "events_per_second_median": events_per_second,
        "events_per_second_rounds": rates,
        "goal_events_per_second": GOAL_EVENTS_PER_SECOND,
        "ratio_to_goal": events_per_second / GOAL_EVENTS_PER_SECOND,
        "latency_rate_events_per_second": writes_per_second * 2.0,
        "commit_to_consume_p50_ms_median": p50,
        "commit_to_consume_p99_ms_median": p99,
        "commit_to_published_p99_ms_median": figures.publish_p99_ms,
        "latency_measured_from": "the write's acknowledgement (its transaction durable); an update consumed before the writer's task took the acknowledgement counts as 0",
        "unconsumed_updates": figures.unconsumed,
        "goal_p99_ms": goal_p99_ms,
    }))
}

/// Boxed cleanup futures (deleting the benchmark's broker streams).
mod futures_cleanup {
    /// A cleanup step's future.
    pub type Cleanup = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    /// A cleanup step, run once at the end.
    pub type Step = Box<dyn FnOnce() -> Cleanup + Send>;
}
