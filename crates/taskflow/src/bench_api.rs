//! `taskflow bench api`: create / list / complete throughput and latency over HTTP, with
//! `--concurrency` clients, against `taskflow serve` (every role, so each write's events are
//! relayed and consumed) on SQLite and on PostgreSQL.
//!
//! The server is a child process, so its CPU time and the load generator's (this process) are
//! measured apart and reported as cores used. Per database:
//!
//! 0. **baseline**: `GET /api/v1/me` back to back (authenticated, writes nothing): the ceiling
//!    of the HTTP path and the load generator; creates are also reported as a ratio to it.
//! 1. **peak**: closed loop (each client sends its next request when the previous one is
//!    answered) for `--round-secs`, `--rounds` times per operation. After each create round the
//!    benchmark waits until the audit consumer has consumed every event, and reports the rate
//!    that includes that drain too (creates/s *with events consumed*).
//! 2. **half peak**: open loop at half the median peak rate: request `k` is due at
//!    `start + k / rate` and its latency counts from then, so a server that falls behind is
//!    charged for the queue it causes (no coordinated omission). Each half-peak phase also
//!    reports, from the server's `/metrics` scraped before and after it, where the server's
//!    time went (`server`: the HTTP handler, the SQLite readers' and writer's queues, the
//!    writer's transactions and commits, checkpoints).
//!
//! Each client acts as a user of its own for creates and completions (it completes tasks it
//! created, each at most once). Lists read one more user, whose `--list-tasks` tasks all
//! clients create before the list rounds (the rate of that phase is one user's create rate).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::bench::{BenchOptions, median, millis, percentile};
use crate::bench_reminders::{free_port, serve_command, wait_listening};

mod server_metrics;

/// The goals on this 2-core machine.
const GOAL_CREATES_PER_S_SQLITE: f64 = 25_000.0;
const GOAL_CREATES_PER_S_POSTGRES: f64 = 10_000.0;
const GOAL_P99_MS: f64 = 10.0;

/// The list requests, taken in turn: the first page in the default order, pending tasks by due
/// date, one tag, and a full-text search.
const LIST_QUERIES: [&str; 4] = [
    "limit=50",
    "status=pending&sort=due_at&limit=50",
    "tag=bench-3&limit=50",
    "q=report&limit=50",
];

/// Runs the benchmark on every database `--database` names.
pub async fn api(options: &BenchOptions) -> anyhow::Result<Value> {
    let databases: Vec<&str> = match options.database.as_str() {
        "both" => vec!["sqlite", "postgres"],
        "sqlite" => vec!["sqlite"],
        "postgres" => vec!["postgres"],
        other => anyhow::bail!("--database: expected sqlite, postgres or both, got {other:?}"),
    };
    match options.backend.as_str() {
        "memory" => {}
        #[cfg(feature = "nats")]
        "nats" => {}
        other => anyhow::bail!("--backend: bench api runs on memory or nats, got {other:?}"),
    }
    anyhow::ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(options.rounds > 0, "--rounds must be at least 1");
    let mut results = serde_json::Map::new();
    for database in databases {
        println!("== {database}");
        let result = one_database(options, database).await?;
        results.insert(database.to_owned(), result);
    }
    Ok(json!({
        "benchmark": "api",
        "concurrency": options.concurrency,
        "round_secs": options.round_secs,
        "rounds": options.rounds,
        "list_tasks": options.list_tasks,
        "create_rate": (options.create_rate > 0.0).then_some(options.create_rate),
        "bus": options.backend,
        "users": "one per client for creates and completions; lists read one more user holding --list-tasks tasks",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "note": "the load generator runs on the same machine; *_cores figures are CPU seconds per wall second",
        "databases": results,
    }))
}

async fn one_database(options: &BenchOptions, database: &str) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!(
        "taskflow-bench-api-{}",
        hex::encode(taskflow_http::auth::random_bytes::<6>())
    ));
    std::fs::create_dir_all(&dir)?;
    let postgres = if database == "postgres" {
        Some(ScratchDatabase::create(&options.postgres_url).await?)
    } else {
        None
    };
    let bus = BenchBus::new(options);
    let outcome = async {
        let server = Server::start(
            &dir,
            postgres.as_ref().map(|db| db.url.as_str()),
            options,
            &bus,
        )
        .await?;
        let result = measure(options, database, &server).await;
        drop(server);
        result
    }
    .await;
    bus.clean_up().await;
    if let Some(db) = postgres {
        db.drop_database().await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure(options: &BenchOptions, database: &str, server: &Server) -> anyhow::Result<Value> {
    let api = Arc::new(Api::register(&server.base, options.concurrency).await?);
    let run = |operation: Operation, rate: Option<f64>, secs: f64| {
        let api = api.clone();
        async move {
            drive(
                api,
                operation,
                options.concurrency,
                Duration::from_secs_f64(secs),
                rate,
                server.pid,
            )
            .await
        }
    };

    // Completions take tasks the clients created, and may run faster than creations did: before
    // completing `count` tasks in all, each client tops its stock up (unmeasured creates).
    let restock = |count: f64| {
        let api = api.clone();
        let run = &run;
        async move {
            let per_client = (count / options.concurrency as f64).ceil() as usize;
            while api.fewest_open() < per_client {
                let missing = (per_client - api.fewest_open()) * options.concurrency;
                let secs = (missing as f64 / 500.0).clamp(0.2, 30.0);
                run(Operation::Create, None, secs).await?;
            }
            wait_for_audit(server, api.writes()).await
        }
    };

    // Warm-up: connections, caches, the first group commits.
    run(Operation::Create, None, 2.0).await?;
    wait_for_audit(server, api.writes()).await?;

    // The baseline: authenticated round trips that write nothing, through the same middleware,
    // clients and connections. Their rate is the ceiling of the HTTP path and load generator on
    // this machine, so the creates' ratio to it says how much the write itself costs.
    let mut baseline = Vec::new();
    for round in 0..options.rounds {
        let stats = run(Operation::Me, None, options.round_secs).await?;
        println!("baseline (GET /api/v1/me) round {round}: {}", stats.line());
        baseline.push(stats);
    }
    let baseline_peak = median(&mut baseline.iter().map(Stats::rate).collect::<Vec<_>>());

    let mut creates = Vec::new();
    for round in 0..options.rounds {
        let mut stats = run(Operation::Create, None, options.round_secs).await?;
        stats.drain = wait_for_audit(server, api.writes()).await?;
        println!("create round {round}: {}", stats.line());
        creates.push(stats);
    }
    let create_peak = median(&mut creates.iter().map(Stats::rate).collect::<Vec<_>>());
    println!(
        "creates at peak: {:.2}x the baseline's round trips",
        create_peak / baseline_peak
    );

    // One more user, whose `--list-tasks` tasks every client creates (one user's writes are
    // serialized on PostgreSQL, so this runs at about one user's rate).
    println!("creating {} tasks for one user", options.list_tasks);
    let started = Instant::now();
    while api.listed() < options.list_tasks {
        let left = options.list_tasks - api.listed();
        let secs = (left as f64 / create_peak.max(100.0)).clamp(0.2, 30.0);
        run(Operation::Seed, None, secs).await?;
    }
    wait_for_audit(server, api.writes()).await?;
    let seeding = started.elapsed();
    println!("  took {:.1} s", seeding.as_secs_f64());
    let tasks_listed = api.listed();

    let mut lists = Vec::new();
    for round in 0..options.rounds {
        let stats = run(Operation::List, None, options.round_secs).await?;
        println!("list round {round}: {}", stats.line());
        lists.push(stats);
    }
    let list_peak = median(&mut lists.iter().map(Stats::rate).collect::<Vec<_>>());

    // Room for completions at up to twice the creation rate.
    let rounds_secs = options.round_secs * options.rounds as f64;
    restock(2.0 * create_peak * rounds_secs).await?;
    let mut completes = Vec::new();
    for round in 0..options.rounds {
        let mut stats = run(Operation::Complete, None, options.round_secs).await?;
        stats.drain = wait_for_audit(server, api.writes()).await?;
        println!("complete round {round}: {}", stats.line());
        completes.push(stats);
    }
    let complete_peak = median(&mut completes.iter().map(Stats::rate).collect::<Vec<_>>());

    let mut half = serde_json::Map::new();
    for (name, operation, peak) in [
        ("create", Operation::Create, create_peak),
        ("list", Operation::List, list_peak),
        ("complete", Operation::Complete, complete_peak),
    ] {
        let rate = match operation {
            Operation::Create if options.create_rate > 0.0 => options.create_rate,
            _ => peak / 2.0,
        };
        if matches!(operation, Operation::Complete) {
            restock(1.2 * rate * rounds_secs).await?;
        }
        let before = scrape(server).await?;
        let mut rounds = Vec::new();
        for round in 0..options.rounds {
            let stats = run(operation, Some(rate), options.round_secs).await?;
            println!(
                "{name} at half peak ({rate:.0}/s) round {round}: {}",
                stats.line()
            );
            rounds.push(stats);
        }
        let inside = scrape(server).await?.since(&before);
        println!("  inside the server: {}", server_metrics::line(&inside));
        wait_for_audit(server, api.writes()).await?;
        let mut phase = summary(&rounds, Some(rate));
        phase["server"] = inside;
        half.insert(name.to_owned(), phase);
    }

    let goal_creates = if database == "sqlite" {
        GOAL_CREATES_PER_S_SQLITE
    } else {
        GOAL_CREATES_PER_S_POSTGRES
    };
    let create_summary = summary(&creates, None);
    let half_create_p99 = half["create"]["p99_ms_median"].as_f64().unwrap_or(f64::NAN);
    let half_list_p99 = half["list"]["p99_ms_median"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "database": database,
        "db_connections": options.db_connections,
        "sqlite_checkpoints": (database == "sqlite").then_some(&options.sqlite_checkpoints),
        "peak": {
            "baseline_me": summary(&baseline, None),
            "create": create_summary,
            "create_ratio_to_baseline": create_peak / baseline_peak,
            "list": summary(&lists, None),
            "complete": summary(&completes, None),
        },
        "half_peak": half,
        "tasks_listed": tasks_listed,
        "one_user_creates_per_s": tasks_listed as f64 / seeding.as_secs_f64(),
        "goals": {
            "creates_per_s": goal_creates,
            "creates_per_s_measured": create_peak,
            "creates_ratio_to_goal": create_peak / goal_creates,
            "p99_ms_at_half_peak": GOAL_P99_MS,
            "create_p99_ms_at_half_peak": half_create_p99,
            "list_p99_ms_at_half_peak": half_list_p99,
            "meets_creates": create_peak >= goal_creates,
            "meets_create_p99": half_create_p99 <= GOAL_P99_MS,
            "meets_list_p99": half_list_p99 <= GOAL_P99_MS,
        },
    }))
}

/// One benchmarked request kind.
#[derive(Clone, Copy, Debug)]
enum Operation {
    /// A task of the client's own user.
    Create,
    /// A task of the user whose tasks are listed.
    Seed,
    /// A page of the listed user's tasks.
    List,
    /// Completes one of the client's own user's tasks.
    Complete,
    /// `GET /api/v1/me` as the client's own user: the baseline, which writes nothing.
    Me,
}

/// What one round measured.
struct Stats {
    requests: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    /// List rounds: the latencies of each of [`LIST_QUERIES`], sorted.
    per_query: Vec<Vec<Duration>>,
    server_cpu: Duration,
    /// Bytes the server caused to be written to storage (`write_bytes` of `/proc/<pid>/io`:
    /// the database, its log and checkpoints; 0 where the kernel does not say).
    server_written: u64,
    client_cpu: Duration,
    /// CPU time of every `postgres` process on this machine (zero on SQLite).
    database_cpu: Duration,
    /// How long the audit consumer took, after the round, to consume the round's events.
    drain: Duration,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }

    /// Requests per second counting the time until their events were consumed.
    fn rate_consumed(&self) -> f64 {
        self.requests as f64 / (self.wall + self.drain).as_secs_f64()
    }

    fn p(&self, p: f64) -> f64 {
        millis(percentile(&self.latencies, p))
    }

    fn line(&self) -> String {
        format!(
            "{:>7.0}/s p50 {:.2} ms p99 {:.2} ms (server {:.2} cores, {:.0} KiB written per request, postgres {:.2}, load generator {:.2}{})",
            self.rate(),
            self.p(50.0),
            self.p(99.0),
            self.server_cpu.as_secs_f64() / self.wall.as_secs_f64(),
            self.server_written as f64 / 1024.0 / self.requests.max(1) as f64,
            self.database_cpu.as_secs_f64() / self.wall.as_secs_f64(),
            self.client_cpu.as_secs_f64() / self.wall.as_secs_f64(),
            if self.drain.is_zero() {
                String::new()
            } else {
                format!(", events drained {:.0} ms later", millis(self.drain))
            }
        ) + &self.per_query_line()
    }

    /// ` p99 by query: …` for list rounds, empty otherwise.
    fn per_query_line(&self) -> String {
        if self.per_query.iter().all(Vec::is_empty) {
            return String::new();
        }
        let parts: Vec<String> = LIST_QUERIES
            .iter()
            .zip(&self.per_query)
            .map(|(query, latencies)| {
                format!("{query}: {:.1} ms", millis(percentile(latencies, 99.0)))
            })
            .collect();
        format!("\n    p99 by query: {}", parts.join("; "))
    }
}

/// Medians over rounds.
fn summary(rounds: &[Stats], target_rate: Option<f64>) -> Value {
    let column = |f: &dyn Fn(&Stats) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
    json!({
        "target_per_s": target_rate,
        "per_s_median": column(&Stats::rate),
        "per_s_with_events_consumed_median": column(&Stats::rate_consumed),
        "p50_ms_median": column(&|s| s.p(50.0)),
        "p99_ms_median": column(&|s| s.p(99.0)),
        "p99_ms_rounds": rounds.iter().map(|s| s.p(99.0)).collect::<Vec<_>>(),
        "per_s_rounds": rounds.iter().map(Stats::rate).collect::<Vec<_>>(),
        "server_cores_median": column(&|s| s.server_cpu.as_secs_f64() / s.wall.as_secs_f64()),
        "load_generator_cores_median": column(&|s| s.client_cpu.as_secs_f64() / s.wall.as_secs_f64()),
        "postgres_cores_median": column(&|s| s.database_cpu.as_secs_f64() / s.wall.as_secs_f64()),
        "server_written_kib_per_request_median": column(&|s| s.server_written as f64 / 1024.0 / s.requests.max(1) as f64),
        "requests_total": rounds.iter().map(|s| s.requests).sum::<usize>(),
        "per_query": per_query_summary(rounds),
    })
}

/// List rounds: p50 and p99 (medians over rounds) of each of [`LIST_QUERIES`].
fn per_query_summary(rounds: &[Stats]) -> Value {
    if rounds.iter().all(|s| s.per_query.iter().all(Vec::is_empty)) {
        return Value::Null;
    }
    let mut queries = serde_json::Map::new();
    for (i, query) in LIST_QUERIES.iter().enumerate() {
        let at = |p: f64| {
            median(
                &mut rounds
                    .iter()
                    .map(|s| millis(percentile(&s.per_query[i], p)))
                    .collect::<Vec<_>>(),
            )
        };
        queries.insert(
            (*query).to_owned(),
            json!({"p50_ms_median": at(50.0), "p99_ms_median": at(99.0)}),
        );
    }
    Value::Object(queries)
}

/// Runs `operation` from `concurrency` clients for `duration`: back to back (`rate` `None`) or
/// request `k` due at `k / rate` seconds (latency counted from then).
async fn drive(
    api: Arc<Api>,
    operation: Operation,
    concurrency: usize,
    duration: Duration,
    rate: Option<f64>,
    server_pid: u32,
) -> anyhow::Result<Stats> {
    let next_slot = Arc::new(AtomicU64::new(0));
    let server_before = cpu_time(&server_pid.to_string())?;
    let written_before = written_bytes(&server_pid.to_string());
    let client_before = cpu_time("self")?;
    let database_before = postgres_cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let api = api.clone();
        let next_slot = next_slot.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut per_query = vec![Vec::new(); LIST_QUERIES.len()];
            loop {
                let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                let due = match rate {
                    Some(rate) => started + Duration::from_secs_f64(slot as f64 / rate),
                    None => Instant::now(),
                };
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                match operation {
                    Operation::Create => {
                        let id = api.create(worker, slot, false).await?;
                        api.created_by[worker].lock().expect("ids").push_back(id);
                    }
                    Operation::Seed => {
                        api.create(worker, slot, true).await?;
                    }
                    Operation::List => {
                        let which = slot as usize % LIST_QUERIES.len();
                        api.list(worker, LIST_QUERIES[which]).await?;
                        per_query[which].push(due.elapsed());
                    }
                    Operation::Complete => {
                        let id = api.created_by[worker].lock().expect("ids").pop_front();
                        let Some(id) = id else {
                            anyhow::bail!("client {worker} completed every task it created");
                        };
                        api.complete(worker, &id).await?;
                    }
                    Operation::Me => api.me(worker).await?,
                }
                latencies.push(due.elapsed());
            }
            anyhow::Ok((latencies, per_query))
        }));
    }
    let mut latencies = Vec::new();
    let mut per_query = vec![Vec::new(); LIST_QUERIES.len()];
    for worker in workers {
        let (mine, mine_per_query) = worker.await??;
        latencies.extend(mine);
        for (all, one) in per_query.iter_mut().zip(mine_per_query) {
            all.extend(one);
        }
    }
    for one in &mut per_query {
        one.sort();
    }
    let wall = started.elapsed();
    latencies.sort();
    Ok(Stats {
        requests: latencies.len(),
        per_query,
        wall,
        latencies,
        server_cpu: cpu_time(&server_pid.to_string())?.saturating_sub(server_before),
        server_written: written_bytes(&server_pid.to_string()).saturating_sub(written_before),
        client_cpu: cpu_time("self")?.saturating_sub(client_before),
        database_cpu: postgres_cpu_time().saturating_sub(database_before),
        drain: Duration::ZERO,
    })
}

/// User plus system CPU time of `/proc/<pid>` (`self` for this process).
fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short stat")?.parse::<u64>()?)
    };
    // utime and stime are fields 14 and 15 of stat(5), in USER_HZ (100 on Linux) ticks.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Bytes `/proc/<pid>/io` says the process caused to be written to storage so far (0 if it
/// cannot be read).
fn written_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes:"))
                .and_then(|bytes| bytes.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of every process named `postgres` (the server and its backends; those that ended
/// during a round are missed, so this is a lower bound).
fn postgres_cpu_time() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            pid.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat.contains("(postgres)").then_some(())?;
            cpu_time(&pid).ok()
        })
        .sum()
}

/// The server's `/metrics` text now.
async fn metrics_text(client: &reqwest::Client, server: &Server) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{}/metrics", server.base))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The server's latency histograms now (see [`server_metrics`]).
async fn scrape(server: &Server) -> anyhow::Result<server_metrics::Snapshot> {
    let text = metrics_text(&reqwest::Client::new(), server).await?;
    Ok(server_metrics::Snapshot::parse(&text))
}

/// Waits until the audit consumer consumed `expected` task events and returns how long that took.
async fn wait_for_audit(server: &Server, expected: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let client = reqwest::Client::new();
    loop {
        let text = metrics_text(&client, server).await?;
        let consumed: f64 = text
            .lines()
            .filter(|line| {
                line.starts_with("events_consumed_total{")
                    && line.contains("topic=\"task-events\"")
                    && line.contains("group=\"audit\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if consumed as u64 >= expected {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the audit consumer consumed {consumed} of {expected} task events in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// HTTP clients, one connection and one user each, and the user whose tasks are listed.
struct Api {
    clients: Vec<reqwest::Client>,
    base: String,
    /// Client `i` acts as user `tokens[i]`.
    tokens: Vec<String>,
    /// The user whose tasks are listed.
    lister: String,
    /// Tasks client `i` created and has not completed yet.
    created_by: Vec<Mutex<VecDeque<String>>>,
    created: AtomicU64,
    listed: AtomicU64,
    completed: AtomicU64,
}

impl Api {
    /// Registers a user per client and the listed user.
    async fn register(base: &str, concurrency: usize) -> anyhow::Result<Self> {
        let clients: Vec<reqwest::Client> = (0..concurrency)
            .map(|_| {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .build()
            })
            .collect::<Result<_, _>>()?;
        let register = |i: usize| {
            let client = clients[i % clients.len()].clone();
            async move {
                crate::bench::register(&client, base, &format!("bench-api-{i}@example.com")).await
            }
        };
        let mut tokens = futures::future::try_join_all((0..=concurrency).map(register)).await?;
        let lister = tokens.pop().context("no listed user")?;
        Ok(Self {
            created_by: (0..concurrency).map(|_| Mutex::default()).collect(),
            clients,
            base: base.to_owned(),
            tokens,
            lister,
            created: AtomicU64::new(0),
            listed: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        })
    }

    /// Tasks the listed user holds.
    fn listed(&self) -> usize {
        self.listed.load(Ordering::Relaxed) as usize
    }

    /// Open tasks the client with the fewest has created and not completed yet.
    fn fewest_open(&self) -> usize {
        self.created_by
            .iter()
            .map(|ids| ids.lock().expect("ids").len())
            .min()
            .unwrap_or(0)
    }

    /// Task events written so far (one per create and one per completion of a one-off task).
    fn writes(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
            + self.listed.load(Ordering::Relaxed)
            + self.completed.load(Ordering::Relaxed)
    }

    /// Creates a task as client `worker`'s user (or as the listed user) and returns its id.
    async fn create(&self, worker: usize, slot: u64, for_lister: bool) -> anyhow::Result<String> {
        // A realistic task: a due date in the user's zone, two tags, a description; every
        // tenth mentions "report" so the search query finds a few.
        let word = if slot.is_multiple_of(10) {
            "report"
        } else {
            "task"
        };
        let priority = ["low", "medium", "high"][slot as usize % 3];
        let body = json!({
            "title": format!("Bench {word} {slot}"),
            "description": "Created by taskflow bench api",
            "due_at": format!("2027-0{}-1{}T09:30:00+01:00", 1 + slot % 9, slot % 10),
            "time_zone": "Europe/Berlin",
            "priority": priority,
            "tags": ["bench", format!("bench-{}", slot % 10)],
        });
        let token = if for_lister {
            &self.lister
        } else {
            &self.tokens[worker]
        };
        let task: Value = self.clients[worker]
            .post(format!("{}/api/v1/tasks", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if for_lister {
            self.listed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.created.fetch_add(1, Ordering::Relaxed);
        }
        Ok(task["id"].as_str().context("task without id")?.to_owned())
    }

    async fn list(&self, worker: usize, query: &str) -> anyhow::Result<()> {
        let body = self.clients[worker]
            .get(format!("{}/api/v1/tasks?{query}", self.base))
            .bearer_auth(&self.lister)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        anyhow::ensure!(!body.is_empty(), "empty list answer");
        Ok(())
    }

    async fn me(&self, worker: usize) -> anyhow::Result<()> {
        self.clients[worker]
            .get(format!("{}/api/v1/me", self.base))
            .bearer_auth(&self.tokens[worker])
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok(())
    }

    async fn complete(&self, worker: usize, id: &str) -> anyhow::Result<()> {
        self.clients[worker]
            .post(format!("{}/api/v1/tasks/{id}/complete", self.base))
            .bearer_auth(&self.tokens[worker])
            .send()
            .await?
            .error_for_status()?;
        self.completed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The event bus the server runs with: `--backend` with names of the benchmark's own.
struct BenchBus {
    backend: String,
    nats_url: String,
    /// Physical topic prefix (and, for NATS, the stream prefix), unique per run.
    prefix: String,
}

impl BenchBus {
    fn new(options: &BenchOptions) -> Self {
        Self {
            backend: options.backend.clone(),
            nats_url: options.nats_url.clone(),
            prefix: format!(
                "bench{}",
                hex::encode(taskflow_http::auth::random_bytes::<4>())
            ),
        }
    }

    fn configure(&self, command: &mut std::process::Command) {
        command.env("TASKFLOW_BUS__BACKEND", &self.backend);
        if self.backend == "nats" {
            command
                .env("TASKFLOW_BUS__NATS__URL", &self.nats_url)
                .env(
                    "TASKFLOW_BUS__NATS__STREAM_PREFIX",
                    self.prefix.to_uppercase(),
                )
                .env("TASKFLOW_BUS__TOPICS__PREFIX", format!("{}-", self.prefix));
        }
    }

    /// Deletes the streams the server created (NATS); errors are reported, not fatal.
    async fn clean_up(&self) {
        #[cfg(feature = "nats")]
        if self.backend == "nats" {
            let settings = taskflow_bus::backends::nats::NatsSettings {
                url: self.nats_url.clone(),
                stream_prefix: self.prefix.to_uppercase(),
                ..Default::default()
            };
            let names = taskflow_bus::TopicNames {
                prefix: format!("{}-", self.prefix),
                ..Default::default()
            };
            let deleted = match taskflow_bus::backends::nats::NatsBus::connect(&settings).await {
                Ok(bus) => bus.delete_topics(&names).await,
                Err(error) => Err(error),
            };
            if let Err(error) = deleted {
                eprintln!("could not delete the benchmark's NATS streams: {error}");
            }
        }
    }
}

/// `taskflow serve` with every role on `dir` (SQLite) or `database_url`; killed when dropped.
struct Server {
    child: std::process::Child,
    pid: u32,
    base: String,
}

impl Server {
    async fn start(
        dir: &Path,
        database_url: Option<&str>,
        options: &BenchOptions,
        bus: &BenchBus,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = serve_command(dir, port)?;
        bus.configure(&mut command);
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        if let Some(url) = database_url {
            command.env("TASKFLOW_DATABASE__URL", url);
        }
        if options.db_connections > 0 {
            command.env(
                "TASKFLOW_DATABASE__MAX_CONNECTIONS",
                options.db_connections.to_string(),
            );
        }
        command.env(
            "TASKFLOW_DATABASE__SQLITE_CHECKPOINTS",
            &options.sqlite_checkpoints,
        );
        let child = command.spawn().context("starting taskflow serve")?;
        let pid = child.id();
        let server = Self {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_listening(port).await?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database of the benchmark's own on the PostgreSQL server, dropped afterwards.
struct ScratchDatabase {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create(admin: &str) -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        let name = format!(
            "taskflow_bench_{}",
            hex::encode(taskflow_http::auth::random_bytes::<6>())
        );
        let mut url = url::Url::parse(admin).context("--postgres-url")?;
        let mut connection = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("connecting to {}", url.host_str().unwrap_or("?")))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await?;
        connection.close().await?;
        url.set_path(&name);
        Ok(Self {
            admin: admin.to_owned(),
            name,
            url: url.into(),
        })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let mut connection = sqlx::PgConnection::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut connection)
        .await?;
        connection.close().await?;
        Ok(())
    }
}

/// Where `--postgres-url` points by default: `TASKFLOW_TEST_POSTGRES_URL`, else the local server.
pub fn default_postgres_url() -> String {
    std::env::var("TASKFLOW_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}
