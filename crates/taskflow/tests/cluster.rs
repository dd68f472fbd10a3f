//! Three `taskflow serve` processes, every role in each, on one PostgreSQL database and one NATS
//! JetStream (issue 6). Several users write concurrently through all three: one-off tasks are
//! created, updated and completed; each occurrence of recurring tasks is completed through every
//! instance at once; reminders fall due throughout. Mid-run the instance leading the outbox relay
//! is killed with SIGKILL while it holds the claims on a batch of due reminders, and the writes
//! go on through the other two.
//!
//! Arranging the claim: just before the batch falls due, the test takes the advisory lock every
//! transaction writing outbox rows takes (`OUTBOX_LOCK`) and pauses the two other instances
//! (SIGSTOP). The leader's scheduler claims the batch (state `firing` under its lease) and waits
//! for the lock to write the `reminder.due` events. It is killed there; the others resume and
//! the lock is released, so the claims belong to a dead process.
//!
//! Once everything has settled:
//! - no duplicate next occurrence: each (series, occurrence index) once, each completed
//!   occurrence exactly one successor, one `task.completed` event per completed task;
//! - every reminder that fell due fired exactly once (`sent`, `fire_count` 1, one `reminder.due`
//!   event), reached the feed once and the webhook receiver under exactly one `TaskFlow-Delivery`
//!   id (a receiver may see a retry of the same id);
//! - every event consumed once per consumer group: one audit entry per task event, the `audit`
//!   and `notifier` processed-event records match the outbox, nothing pending or unacknowledged
//!   on the broker, nothing dead-lettered;
//! - takeover: another instance leads the relay (gauge and log) and published what was left; the
//!   dead instance's claims were fired by the others once their lease expired, and reminders due
//!   after the kill fired too.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::{Connection as _, PgPool};
use taskflow_bus::backends::nats::NatsBus;
use taskflow_store::postgres::OUTBOX_LOCK;
use taskflow_testing::cluster::Cluster;
use taskflow_testing::{ReminderWebhooks, reminder_webhook_receiver};

const INSTANCES: usize = 3;
const USERS: usize = 3;
/// Concurrent writers per user.
const WRITERS_PER_USER: usize = 2;
const SERIES_PER_USER: usize = 2;
/// Reminders due before the kill.
const EARLY: usize = 12;
/// Reminders due together at the moment the relay leader is made to hold their claims.
const CLAIMED: usize = 10;
/// Reminders due after the kill.
const LATE: usize = 12;

/// Short leases, redelivery timeouts and polls, so a dead instance's work comes back quickly.
const SETTINGS: &[(&str, &str)] = &[
    ("TASKFLOW_DATABASE__MAX_CONNECTIONS", "16"),
    ("TASKFLOW_BUS__RELAY_POLL_INTERVAL_MS", "200"),
    ("TASKFLOW_BUS__NATS__ACK_WAIT_SECS", "2"),
    ("TASKFLOW_SCHEDULER__LEASE_SECS", "2"),
    ("TASKFLOW_SCHEDULER__POLL_INTERVAL_MS", "200"),
    ("TASKFLOW_NOTIFICATIONS__LEASE_SECS", "2"),
    ("TASKFLOW_NOTIFICATIONS__POLL_INTERVAL_MS", "200"),
    (
        "TASKFLOW_NOTIFICATIONS__WEBHOOKS__ALLOW_PRIVATE_TARGETS",
        "true",
    ),
    (
        "TASKFLOW_NOTIFICATIONS__WEBHOOK_RETRY__INITIAL_DELAY_SECS",
        "1",
    ),
    ("TASKFLOW_NOTIFICATIONS__WEBHOOK_RETRY__MAX_DELAY_SECS", "1"),
];

/// The instances clients may use, and the one that was killed.
#[derive(Clone)]
struct Instances {
    client: reqwest::Client,
    alive: Arc<Mutex<Vec<String>>>,
    killed: Arc<Mutex<Option<String>>>,
    /// Requests the kill cut off.
    cut: Arc<AtomicUsize>,
}

impl Instances {
    fn new(urls: &[String]) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            alive: Arc::new(Mutex::new(urls.to_vec())),
            killed: Arc::default(),
            cut: Arc::default(),
        }
    }

    /// The `n`th live instance, round robin.
    fn pick(&self, n: usize) -> String {
        let alive = self.alive.lock().unwrap();
        alive[n % alive.len()].clone()
    }

    fn alive(&self) -> Vec<String> {
        self.alive.lock().unwrap().clone()
    }

    /// Takes `url` out of rotation; requests to it may fail from now on.
    fn kill(&self, url: &str) {
        self.alive.lock().unwrap().retain(|u| u != url);
        *self.killed.lock().unwrap() = Some(url.to_owned());
    }

    /// Calls `path` on instance `base` as the bearer of `token`, asserting a 2xx answer. `None`
    /// when the request failed because `base` was killed (the only failure tolerated).
    async fn call(
        &self,
        method: Method,
        base: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status();
                response.text().await.map(|text| (status, text))
            }
            Err(error) => Err(error),
        };
        match answer {
            Ok((status, text)) => {
                assert!(
                    status.is_success(),
                    "{method} {path} on {base}: {status} {text}"
                );
                Some(serde_json::from_str(&text).unwrap())
            }
            Err(error) => {
                let killed = self.killed.lock().unwrap().clone();
                assert_eq!(
                    killed.as_deref(),
                    Some(base),
                    "{method} {path} on {base} failed: {error}"
                );
                self.cut.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// [`Instances::call`] on live instances until one answers.
    async fn call_any(&self, method: Method, path: &str, token: &str) -> Value {
        for n in 0.. {
            let base = self.pick(n);
            if let Some(answer) = self.call(method.clone(), &base, path, token, None).await {
                return answer;
            }
        }
        unreachable!()
    }
}

/// Writes through every instance in turn until `stop`: creates a task (every third with a
/// reminder a second later, unless that falls in `quiet`), updates it through the next
/// instance and completes every second one through the third. Returns how many it created.
async fn write_load(
    instances: Instances,
    writer: usize,
    token: String,
    quiet: std::ops::Range<DateTime<Utc>>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let [a, b, c] = [0, 1, 2].map(|k| instances.pick(writer + n + k));
        let mut body = json!({"title": format!("load w{writer} #{n}"), "tags": ["load"]});
        let remind_at = Utc::now() + TimeDelta::seconds(1);
        if n % 3 == 0 && !quiet.contains(&remind_at) {
            body["reminders"] = json!([{"at": remind_at.to_rfc3339()}]);
        }
        n += 1;
        let Some(task) = instances
            .call(Method::POST, &a, "/api/v1/tasks", &token, Some(body))
            .await
        else {
            continue;
        };
        let path = format!("/api/v1/tasks/{}", task["id"].as_str().unwrap());
        let patch = json!({"priority": "high", "description": "edited elsewhere"});
        instances
            .call(Method::PATCH, &b, &path, &token, Some(patch))
            .await;
        if n % 2 == 0 {
            instances
                .call(Method::POST, &c, &format!("{path}/complete"), &token, None)
                .await;
        }
    }
    n
}

/// A recurring task's series as the completer follows it.
#[derive(Debug)]
struct Series {
    token: String,
    series_id: String,
    /// The pending occurrence.
    current: String,
    /// Occurrences completed so far.
    completed: u64,
}

/// Until `stop`, completes the pending occurrence of every series through every live instance
/// at once, and checks that exactly one next occurrence is pending afterwards.
async fn complete_series(
    instances: Instances,
    mut series: Vec<Series>,
    stop: Arc<AtomicBool>,
) -> Vec<Series> {
    while !stop.load(Ordering::Relaxed) {
        for s in &mut series {
            let path = format!("/api/v1/tasks/{}/complete", s.current);
            let answers = futures::future::join_all(
                instances
                    .alive()
                    .iter()
                    .map(|base| instances.call(Method::POST, base, &path, &s.token, None)),
            )
            .await;
            for answer in answers.iter().flatten() {
                assert_eq!(answer["id"].as_str(), Some(s.current.as_str()));
                assert_eq!(answer["status"], "completed", "{answer}");
            }
            let listing = instances
                .call_any(
                    Method::GET,
                    &format!("/api/v1/tasks?series_id={}&status=pending", s.series_id),
                    &s.token,
                )
                .await;
            let pending = listing["items"].as_array().unwrap();
            assert_eq!(
                pending.len(),
                1,
                "after completing occurrence {} of series {}: {listing}",
                s.completed,
                s.series_id
            );
            assert_eq!(pending[0]["occurrence_index"], s.completed + 1);
            s.current = pending[0]["id"].as_str().unwrap().to_owned();
            s.completed += 1;
        }
    }
    series
}

/// Which of `urls` leads the relay (`outbox_relay_leader` 1 there, 0 on the others).
async fn relay_leader(client: &reqwest::Client, urls: &[String]) -> Option<usize> {
    let mut leaders = Vec::new();
    for (index, url) in urls.iter().enumerate() {
        let metrics = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let gauge = metrics
            .lines()
            .find_map(|line| line.strip_prefix("outbox_relay_leader "))?;
        if gauge.trim() == "1" {
            leaders.push(index);
        }
    }
    (leaders.len() == 1).then(|| leaders[0])
}

/// Polls `check` every 200 ms until it answers `Ok`, for at most `timeout`; then panics with
/// `what` and the last answer (what was still missing).
async fn settle<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(missing) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}:\n{missing}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// `(key, count)` rows of a grouping query.
async fn counts(db: &PgPool, sql: &str) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(sql)
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn strings(db: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(db).await.unwrap()
}

/// The first few of `items`, for messages.
fn some<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<T> = items.into_iter().collect();
    format!("{} {:?}", items.len(), &items[..items.len().min(5)])
}

/// What the run left behind, once it is consistent.
#[derive(Debug)]
struct Settled {
    /// Reminders that fired (state `sent`).
    fired: BTreeSet<String>,
    /// Webhook requests received.
    webhook_requests: usize,
    /// Outbox rows.
    events: i64,
    /// Messages JetStream delivered again to the `audit` and `notifier` groups.
    redelivered: u64,
}

/// Everything the run must end with, or what is still missing or wrong.
async fn settled(
    db: &PgPool,
    nats: &NatsBus,
    cluster: &Cluster,
    received: &ReminderWebhooks,
) -> Result<Settled, String> {
    let mut problems = Vec::new();
    let unpublished = strings(
        db,
        "SELECT seq::text FROM outbox WHERE published_at IS NULL ORDER BY seq",
    )
    .await;
    if !unpublished.is_empty() {
        problems.push(format!("unpublished outbox rows: {}", some(unpublished)));
    }
    // Reminders: every one due has fired (or was cancelled), once.
    let unfired = counts(
        db,
        "SELECT id::text || ' ' || state, fire_count::bigint FROM reminders
         WHERE fire_at <= now() AND state NOT IN ('sent', 'cancelled')",
    )
    .await;
    if !unfired.is_empty() {
        problems.push(format!("due reminders not fired: {}", some(unfired)));
    }
    let fired = counts(
        db,
        "SELECT id::text, fire_count::bigint FROM reminders WHERE state = 'sent'",
    )
    .await;
    let refired: Vec<_> = fired.iter().filter(|(_, n)| **n != 1).collect();
    if !refired.is_empty() {
        problems.push(format!("reminders fired more than once: {}", some(refired)));
    }
    let fired: BTreeSet<String> = fired.into_keys().collect();
    let per_reminder = |what: &str, found: BTreeMap<String, i64>| {
        let wrong: Vec<_> = fired
            .iter()
            .map(|id| (id, found.get(id).copied().unwrap_or(0)))
            .filter(|(_, n)| *n != 1)
            .collect();
        let unexpected: Vec<_> = found.keys().filter(|id| !fired.contains(*id)).collect();
        (!wrong.is_empty() || !unexpected.is_empty()).then(|| {
            format!(
                "{what}: not exactly one for {}; for reminders that did not fire: {}",
                some(wrong),
                some(unexpected)
            )
        })
    };
    let due_events = counts(
        db,
        "SELECT payload::jsonb #>> '{data,reminder_id}', count(*) FROM outbox
         WHERE event_type = 'taskflow.reminder.due.v1' GROUP BY 1",
    )
    .await;
    let feed = counts(
        db,
        "SELECT reminder_id::text, count(*) FROM notifications GROUP BY 1",
    )
    .await;
    let deliveries = counts(
        db,
        "SELECT reminder_id::text, count(*) FROM deliveries GROUP BY 1",
    )
    .await;
    problems.extend(per_reminder("reminder.due events", due_events));
    problems.extend(per_reminder("feed entries", feed));
    problems.extend(per_reminder("webhook deliveries", deliveries));
    let unsent = strings(
        db,
        "SELECT id::text || ' ' || status FROM deliveries WHERE status <> 'sent'",
    )
    .await;
    if !unsent.is_empty() {
        problems.push(format!("deliveries not sent: {}", some(unsent)));
    }
    // The receiver: each fired reminder under exactly the id of its delivery.
    let delivery_ids: BTreeMap<String, String> =
        sqlx::query_as("SELECT reminder_id::text, id::text FROM deliveries")
            .fetch_all(db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let webhook_requests = {
        let received = received.lock().unwrap();
        for (delivery, reminder) in received.iter() {
            seen.entry(reminder.clone())
                .or_default()
                .insert(delivery.clone());
        }
        received.len()
    };
    let wrong: Vec<_> = fired
        .iter()
        .filter(|id| {
            seen.get(*id).map(|ids| ids.iter().collect::<Vec<_>>())
                != delivery_ids.get(*id).map(|id| vec![id])
        })
        .map(|id| (id, seen.get(id)))
        .collect();
    if !wrong.is_empty() {
        problems.push(format!(
            "fired reminders not received under exactly their delivery id: {}",
            some(wrong)
        ));
    }
    // Consumer groups: one audit entry per task event; processed records match the outbox.
    let missing_audit = strings(
        db,
        "SELECT o.event_id FROM outbox o WHERE o.topic = 'task-events'
         AND NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.event_id = o.event_id)",
    )
    .await;
    let extra_audit = strings(
        db,
        "SELECT a.event_id FROM audit_log a WHERE NOT EXISTS
         (SELECT 1 FROM outbox o WHERE o.topic = 'task-events' AND o.event_id = a.event_id)",
    )
    .await;
    if !missing_audit.is_empty() || !extra_audit.is_empty() {
        problems.push(format!(
            "audit log: task events without an entry: {}; entries without a task event: {}",
            some(missing_audit),
            some(extra_audit)
        ));
    }
    let mut redelivered = 0;
    for (group, topic) in [("audit", "task-events"), ("notifier", "reminders")] {
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT o.event_id FROM outbox o WHERE o.topic = $2 AND NOT EXISTS
             (SELECT 1 FROM processed_events p WHERE p.consumer = $1 AND p.event_id = o.event_id)",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(db)
        .await
        .unwrap();
        let extra: Vec<String> = sqlx::query_scalar(
            "SELECT p.event_id FROM processed_events p WHERE p.consumer = $1 AND NOT EXISTS
             (SELECT 1 FROM outbox o WHERE o.topic = $2 AND o.event_id = p.event_id)",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(db)
        .await
        .unwrap();
        if !missing.is_empty() || !extra.is_empty() {
            problems.push(format!(
                "group {group}: {topic} events not processed: {}; processed records of no {topic} event: {}",
                some(missing),
                some(extra)
            ));
        }
        let stream = nats.stream_name(&cluster.physical_topic(topic));
        match nats.jetstream().get_stream(&stream).await {
            Ok(stream) => match stream.consumer_info(group).await {
                Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {
                    // Every delivery takes a consumer sequence number; each message one stream one.
                    redelivered +=
                        info.delivered.consumer_sequence - info.delivered.stream_sequence;
                }
                Ok(info) => problems.push(format!(
                    "group {group} on the broker: {} pending, {} unacknowledged",
                    info.num_pending, info.num_ack_pending
                )),
                Err(error) => problems.push(format!("group {group} on the broker: {error}")),
            },
            Err(error) => problems.push(format!("stream {stream}: {error}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(db)
        .await
        .unwrap();
    Ok(Settled {
        fired,
        webhook_requests,
        events,
        redelivered,
    })
}

/// Runs `taskflow migrate` from several processes at once: one applies the migrations under the
/// migration lock, the others wait for it and find nothing to do.
fn migrate_concurrently(cluster: &Cluster) {
    let migrations: Vec<_> = (0..INSTANCES)
        .map(|_| {
            cluster
                .command(&["migrate"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for migration in migrations {
        let output = migration.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "taskflow migrate: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Registers the users, each with a webhook endpoint at `hook`, each through other instances;
/// returns their access tokens.
async fn register_users(instances: &Instances, urls: &[String], hook: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for user in 0..USERS {
        let registered: Value = instances
            .client
            .post(format!("{}/api/v1/auth/register", urls[user % INSTANCES]))
            .json(&json!({"email": format!("user{user}@example.com"), "password": "long enough password"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = registered["access_token"].as_str().unwrap().to_owned();
        let endpoint = json!({ "url": hook });
        let base = &urls[(user + 1) % INSTANCES];
        instances
            .call(
                Method::POST,
                base,
                "/api/v1/webhooks",
                &token,
                Some(endpoint),
            )
            .await
            .unwrap();
        tokens.push(token);
    }
    tokens
}

/// Recurring tasks for every user, due tomorrow, with a reminder each (cancelled and planned
/// again with every completion, never due during the run).
async fn start_series(instances: &Instances, urls: &[String], tokens: &[String]) -> Vec<Series> {
    let mut series = Vec::new();
    for (user, token) in tokens.iter().enumerate() {
        for s in 0..SERIES_PER_USER {
            let body = json!({
                "title": format!("series u{user} #{s}"),
                "due_at": (Utc::now() + TimeDelta::days(1)).to_rfc3339(),
                "recurrence": {"rule": "daily"},
                "reminders": [{"before_due": "PT1H"}],
            });
            let base = &urls[(user + s) % INSTANCES];
            let task = instances
                .call(Method::POST, base, "/api/v1/tasks", token, Some(body))
                .await
                .unwrap();
            series.push(Series {
                token: token.clone(),
                series_id: task["series_id"].as_str().unwrap().to_owned(),
                current: task["id"].as_str().unwrap().to_owned(),
                completed: 0,
            });
        }
    }
    series
}

/// Creates one task per `(batch, instant)` of `plan` with a reminder at that instant, through
/// every instance and for every user in turn, all at once; returns each batch's reminder ids.
async fn plan_reminders(
    instances: &Instances,
    db: &PgPool,
    urls: &[String],
    tokens: &[String],
    plan: &[(&'static str, DateTime<Utc>)],
) -> BTreeMap<&'static str, Vec<uuid::Uuid>> {
    let created = futures::future::join_all(plan.iter().enumerate().map(|(i, (batch, at))| {
        let body = json!({
            "title": format!("{batch} reminder {i}"),
            "reminders": [{"at": at.to_rfc3339_opts(SecondsFormat::Millis, true)}],
        });
        let (base, token) = (&urls[i % INSTANCES], &tokens[i % USERS]);
        async move {
            let task = instances
                .call(Method::POST, base, "/api/v1/tasks", token, Some(body))
                .await
                .unwrap();
            (
                *batch,
                task["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap(),
            )
        }
    }))
    .await;
    let mut batches: BTreeMap<&'static str, Vec<uuid::Uuid>> = BTreeMap::new();
    for (batch, task) in created {
        let reminders: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM reminders WHERE task_id = $1")
                .bind(task)
                .fetch_all(db)
                .await
                .unwrap();
        batches.entry(batch).or_default().extend(reminders);
    }
    batches
}

/// Waits until every reminder of `ids` is claimed (`firing` under a lease not yet expired);
/// returns when each lease runs out.
async fn claimed_leases(db: &PgPool, ids: &[uuid::Uuid]) -> Vec<(uuid::Uuid, DateTime<Utc>)> {
    settle(
        Duration::from_secs(15),
        "the relay leader to claim the reminders due at the moment of the kill",
        || async {
            let rows: Vec<(uuid::Uuid, String, Option<DateTime<Utc>>)> =
                sqlx::query_as("SELECT id, state, lease_until FROM reminders WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(db)
                    .await
                    .unwrap();
            rows.iter()
                .map(|(id, state, lease)| match (state.as_str(), lease) {
                    ("firing", Some(lease)) if *lease > Utc::now() => Ok((*id, *lease)),
                    _ => Err(format!("{rows:?}")),
                })
                .collect()
        },
    )
    .await
}

/// No duplicate next occurrence: each (series, index) once, each completed occurrence exactly one
/// successor, every series as long as its completions made it; one `task.completed` event per
/// completed task and none for others.
async fn assert_one_successor_each(db: &PgPool, series: &[Series]) {
    let doubled = counts(
        db,
        "SELECT series_id::text || '#' || occurrence_index, count(*) FROM tasks
         WHERE series_id IS NOT NULL GROUP BY series_id, occurrence_index HAVING count(*) <> 1",
    )
    .await;
    assert!(doubled.is_empty(), "occurrences made twice: {doubled:?}");
    let successors = counts(
        db,
        "SELECT t.id::text, (SELECT count(*) FROM tasks n WHERE n.series_id = t.series_id
                             AND n.occurrence_index = t.occurrence_index + 1)
         FROM tasks t WHERE t.series_id IS NOT NULL AND t.status = 'completed'",
    )
    .await;
    assert!(
        successors.values().all(|n| *n == 1),
        "completed occurrences without exactly one successor: {successors:?}"
    );
    let lengths = counts(
        db,
        "SELECT series_id::text, count(*) FROM tasks WHERE series_id IS NOT NULL GROUP BY 1",
    )
    .await;
    for s in series {
        assert!(
            s.completed >= 2,
            "series {} completed only {} times",
            s.series_id,
            s.completed
        );
        assert_eq!(
            lengths.get(&s.series_id).copied(),
            Some(s.completed as i64 + 1),
            "occurrences of series {} after {} completions",
            s.series_id,
            s.completed
        );
    }
    let completions = counts(
        db,
        "SELECT payload::jsonb #>> '{data,task_id}', count(*) FROM outbox
         WHERE event_type = 'taskflow.task.completed.v1' GROUP BY 1",
    )
    .await;
    let completed: BTreeSet<String> =
        strings(db, "SELECT id::text FROM tasks WHERE status = 'completed'")
            .await
            .into_iter()
            .collect();
    let wrong: Vec<_> = completions
        .iter()
        .filter(|(task, n)| **n != 1 || !completed.contains(*task))
        .collect();
    assert!(wrong.is_empty(), "task.completed events: {wrong:?}");
    let silent: Vec<_> = completed
        .iter()
        .filter(|task| !completions.contains_key(*task))
        .collect();
    assert!(silent.is_empty(), "completed without an event: {silent:?}");
}

/// Each reminder of `ids` fired once (`sent`, `fire_count` 1), not before the instant paired
/// with it.
async fn assert_fired_once_after(
    db: &PgPool,
    ids: impl IntoIterator<Item = (uuid::Uuid, DateTime<Utc>)>,
    what: &str,
) {
    for (id, not_before) in ids {
        let (state, fire_count, fired_at): (String, i32, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT state, fire_count, fired_at FROM reminders WHERE id = $1")
                .bind(id)
                .fetch_one(db)
                .await
                .unwrap();
        assert!(
            state == "sent" && fire_count == 1 && fired_at.is_some_and(|at| at >= not_before),
            "{what} {id}: {state}, fired {fire_count} times, last at {fired_at:?}; expected once, \
             not before {not_before}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_lose_and_repeat_nothing_when_the_relay_leader_is_killed() {
    let (hook, received) = reminder_webhook_receiver().await;
    let mut cluster = Cluster::create(env!("CARGO_BIN_EXE_taskflow"), "cluster");
    migrate_concurrently(&cluster);
    let urls: Vec<String> = (0..INSTANCES)
        .map(|_| cluster.start(SETTINGS).url.clone())
        .collect();
    let db = PgPool::connect(&cluster.database_url()).await.unwrap();
    let nats = cluster.nats().await;
    let instances = Instances::new(&urls);
    let client = instances.client.clone();
    let leader = taskflow_testing::eventually(
        Duration::from_secs(30),
        "exactly one instance leading the relay",
        || relay_leader(&client, &urls),
    )
    .await;
    let tokens = register_users(&instances, &urls, &hook).await;
    let series = start_series(&instances, &urls, &tokens).await;

    // Reminders due before, at and after the moment of the kill.
    let started = Utc::now();
    let claim_at = started + TimeDelta::seconds(5);
    let plan: Vec<(&str, DateTime<Utc>)> = (0..EARLY)
        .map(|i| {
            (
                "early",
                started + TimeDelta::milliseconds(1200 + 150 * i as i64),
            )
        })
        .chain((0..CLAIMED).map(|_| ("claimed", claim_at)))
        .chain((0..LATE).map(|i| {
            (
                "late",
                claim_at + TimeDelta::milliseconds(1000 + 250 * i as i64),
            )
        }))
        .collect();
    let batches = plan_reminders(&instances, &db, &urls, &tokens, &plan).await;
    assert!(
        Utc::now() < claim_at - TimeDelta::seconds(1),
        "making the reminders took too long for the plan (the machine is too busy)"
    );
    let (claimed, late) = (&batches["claimed"], &batches["late"]);
    assert_eq!((claimed.len(), late.len()), (CLAIMED, LATE));

    // The load, until a few seconds after the kill. Reminders the writers plan stay clear of
    // the moment of the claim, so nothing else keeps the leader's scheduler busy then.
    let stop = Arc::new(AtomicBool::new(false));
    let quiet = claim_at - TimeDelta::seconds(2)..claim_at + TimeDelta::milliseconds(500);
    let writers: Vec<_> = (0..USERS * WRITERS_PER_USER)
        .map(|writer| {
            tokio::spawn(write_load(
                instances.clone(),
                writer,
                tokens[writer % USERS].clone(),
                quiet.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let completer = tokio::spawn(complete_series(instances.clone(), series, stop.clone()));

    // Make the relay leader hold the claims on the batch due at `claim_at`: with the outbox
    // lock taken and the others paused, its scheduler claims the batch and then waits for the
    // lock to write the events. Kill it there; resume the others; release the lock.
    sleep_until(claim_at - TimeDelta::milliseconds(400)).await;
    let mut outbox_lock = sqlx::PgConnection::connect(&cluster.database_url())
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(OUTBOX_LOCK)
        .execute(&mut outbox_lock)
        .await
        .unwrap();
    let others: Vec<usize> = (0..INSTANCES).filter(|i| *i != leader).collect();
    let paused = std::time::Instant::now();
    for &other in &others {
        cluster.pause(other);
    }
    let leases = claimed_leases(&db, claimed).await;
    instances.kill(&urls[leader]);
    cluster.kill9(leader);
    let killed_at = Utc::now();
    for &other in &others {
        cluster.resume(other);
    }
    let paused = paused.elapsed();
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(OUTBOX_LOCK)
        .execute(&mut outbox_lock)
        .await
        .unwrap();
    outbox_lock.close().await.unwrap();

    // Writes go on through the other two while the late reminders fall due.
    sleep_until(claim_at + TimeDelta::seconds(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    let series = completer.await.unwrap();

    let survivors: Vec<String> = others.iter().map(|i| urls[*i].clone()).collect();
    let new_leader = settle(
        Duration::from_secs(15),
        "another instance to lead the relay",
        || async {
            relay_leader(&client, &survivors)
                .await
                .ok_or_else(|| "no single leader among the survivors".to_owned())
        },
    )
    .await;
    let run = settle(Duration::from_secs(60), "the cluster to settle", || {
        settled(&db, &nats, &cluster, &received)
    })
    .await;
    let dead: Vec<(String, String, String)> =
        sqlx::query_as("SELECT consumer, event_type, error FROM dead_letters")
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    assert_one_successor_each(&db, &series).await;

    // Takeover: the dead instance's claims were fired by the others once its lease expired,
    // reminders due after the kill fired too, and another instance published the rest.
    assert_fired_once_after(&db, leases.iter().copied(), "claimed reminder").await;
    assert_fired_once_after(&db, late.iter().map(|id| (*id, killed_at)), "late reminder").await;
    let log = cluster.instances()[others[new_leader]].log();
    assert!(
        log.contains("this process now leads the outbox relay"),
        "the new leader's log says so:\n{log}"
    );
    let published_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at > $1")
            .bind(killed_at)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(published_after > 0, "nothing was published after the kill");
    eprintln!(
        "{written} tasks written by the load, {} series completed {} times in all, {} events, \
         {} reminders fired ({} webhook requests), {} redeliveries to audit and notifier; \
         instance {leader} killed holding {} claims ({} requests cut off, the others paused \
         {paused:?}), instance {} took over the relay",
        series.len(),
        series.iter().map(|s| s.completed).sum::<u64>(),
        run.events,
        run.fired.len(),
        run.webhook_requests,
        run.redelivered,
        leases.len(),
        instances.cut.load(Ordering::Relaxed),
        others[new_leader],
    );
    db.close().await;
}

/// `taskflow topics create` makes a stream for every topic and its dead-letter topic on the
/// configured NATS server, and running it again changes nothing.
#[tokio::test]
async fn topics_create_makes_every_stream_and_is_idempotent() {
    let cluster = Cluster::create(env!("CARGO_BIN_EXE_taskflow"), "topics");
    let logical: Vec<String> = taskflow_domain::events::Topic::ALL
        .iter()
        .flat_map(|t| {
            [
                t.name().to_owned(),
                taskflow_domain::events::dead_letter_topic(t.name()),
            ]
        })
        .collect();
    for run in ["first", "again"] {
        let output = cluster.command(&["topics", "create"]).output().unwrap();
        assert!(
            output.status.success(),
            "{run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8_lossy(&output.stdout);
        for topic in &logical {
            let physical = cluster.physical_topic(topic);
            assert!(
                printed
                    .lines()
                    .any(|l| l.starts_with(&format!("{physical} ("))),
                "{run}: {physical} not listed in {printed}"
            );
        }
    }
    let bus = cluster.nats().await;
    for topic in &logical {
        let stream = bus.stream_name(&cluster.physical_topic(topic));
        assert!(
            bus.jetstream().get_stream(&stream).await.is_ok(),
            "stream {stream} exists"
        );
    }
}
