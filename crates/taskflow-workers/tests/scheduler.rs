//! The reminder scheduler against real stores (SQLite and PostgreSQL), with an injected clock:
//! nothing here sleeps. Each scenario runs on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use serde_json::Value;
use taskflow_domain::events::task_events;
use taskflow_domain::reminder::{Offset, ReminderState, reminder_due_event};
use taskflow_domain::{
    Clock, Email, ManualClock, NewTask, RecurrenceSpec, ReminderPlan, ReminderSpec, Task,
    TaskPatch, TimeZone, Title, User, UserId,
};
use taskflow_store::Store;
use taskflow_store::postgres::{PostgresSettings, PostgresStore};
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use taskflow_testing::postgres::ScratchPostgres;
use taskflow_workers::scheduler::{Scheduler, SchedulerSettings};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 3, 1, 9, 0, 0).unwrap()
}

/// A temporary folder removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A migrated SQLite store in a folder of its own, removed with the returned guard.
async fn sqlite() -> (Arc<dyn Store>, ScratchDir) {
    let dir = std::env::temp_dir().join(format!("taskflow-sched-{}", uuid::Uuid::now_v7()));
    let url = format!("sqlite://{}/test.db", dir.display());
    let store = SqliteStore::connect(&SqliteSettings::new(url))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    (Arc::new(store), ScratchDir(dir))
}

/// A migrated PostgreSQL store on a database of its own, dropped with the returned guard.
async fn postgres() -> (Arc<dyn Store>, ScratchPostgres) {
    let db = ScratchPostgres::create("taskflow_sched").await;
    let store = PostgresStore::connect(&PostgresSettings::new(&db.url))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    (Arc::new(store), db)
}

struct Fixture {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    user: User,
}

impl Fixture {
    async fn new(store: Arc<dyn Store>) -> Self {
        let user = User {
            id: UserId::new(),
            email: Email::parse(&format!("u{}@example.com", uuid::Uuid::now_v7().simple()))
                .unwrap(),
            display_name: None,
            time_zone: TimeZone::UTC,
            is_admin: false,
            created_at: start(),
        };
        store.create_user(&user, "h").await.expect("user");
        Self {
            store,
            clock: Arc::new(ManualClock::new(start())),
            user,
        }
    }

    fn scheduler(&self) -> Scheduler {
        Scheduler::new(
            self.store.clone(),
            self.clock.clone(),
            SchedulerSettings {
                batch: 3,
                horizon: 4,
                ..SchedulerSettings::default()
            },
        )
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A task due at `due` with `reminders`, stored.
    async fn task(
        &self,
        title: &str,
        due: Option<DateTime<Utc>>,
        reminders: Vec<ReminderSpec>,
        recurrence: Option<&str>,
    ) -> Task {
        let task = Task::create(
            self.user.id,
            TimeZone::UTC,
            NewTask {
                title: Title::parse(title).unwrap(),
                description: Default::default(),
                priority: Default::default(),
                tags: Default::default(),
                due_at: due,
                time_zone: None,
                recurrence: recurrence.map(|rule| RecurrenceSpec {
                    rule: taskflow_domain::recurrence::RecurrenceRule::parse(rule).unwrap(),
                    anchor: taskflow_domain::recurrence::Anchor::Due,
                }),
                reminders: ReminderPlan::new(reminders).unwrap(),
            },
            self.now(),
        )
        .expect("valid task");
        let events = task_events(
            taskflow_domain::events::TaskEventKind::Created,
            &task,
            self.now(),
            None,
        );
        self.store
            .insert_task(&task, &events)
            .await
            .expect("insert");
        task
    }

    /// Applies a change to a stored task (like the API does), returning the new state.
    async fn change(&self, task: &Task, change: Option<taskflow_domain::TaskChange>) -> Task {
        let change = change.expect("a change");
        let next = change.next_occurrence.as_ref().map(|n| (n, &[][..]));
        self.store
            .update_task(self.user.id, &change.task, task.version, &[], next)
            .await
            .expect("update");
        change.task
    }

    /// `reminder.due` events in the outbox, as JSON data, in commit order.
    async fn due_events(&self) -> Vec<Value> {
        self.store
            .events_after("reminders", 0, 10_000)
            .await
            .expect("outbox")
            .into_iter()
            .map(|r| serde_json::from_str::<Value>(&r.payload).unwrap())
            .filter(|event| event["type"] == "taskflow.reminder.due.v1")
            .map(|event| event["data"].clone())
            .collect()
    }
}

fn at(instant: DateTime<Utc>) -> ReminderSpec {
    ReminderSpec::At(instant)
}

fn before(text: &str) -> ReminderSpec {
    ReminderSpec::BeforeDue(Offset::parse("x", text).unwrap())
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(#[tokio::test] async fn $name() {
                let (store, _dir) = super::sqlite().await;
                super::$name(store).await;
            })*
        }
        mod postgres_backend {
            $(#[tokio::test] async fn $name() {
                let (store, _db) = super::postgres().await;
                super::$name(store).await;
            })*
        }
    };
}

on_both_backends!(
    fires_in_order_at_the_instant_never_early,
    an_earlier_reminder_wakes_the_scheduler,
    leases_keep_two_schedulers_apart_and_expire,
    a_restart_fires_missed_reminders_at_once_marked_late,
    completing_at_the_instant_of_firing_fires_at_most_once,
    plans_follow_due_dates_occurrences_and_snoozes,
    bursts_fire_in_batches,
);

async fn fires_in_order_at_the_instant_never_early(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let t0 = f.now();
    f.task("third", None, vec![at(t0 + secs(30))], None).await;
    f.task("first", None, vec![at(t0 + secs(10))], None).await;
    f.task("second", None, vec![at(t0 + secs(20))], None).await;
    let mut scheduler = f.scheduler();
    scheduler.refresh().await.unwrap();
    assert_eq!(scheduler.next_wake(), Some(t0 + secs(10)));

    f.clock.set(t0 + secs(10) - TimeDelta::microseconds(1));
    let report = scheduler.fire_due().await.unwrap();
    assert_eq!(report.fired, 0, "one microsecond early fires nothing");

    f.clock.set(t0 + secs(10));
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 1);
    assert_eq!(scheduler.next_wake(), Some(t0 + secs(20)));
    f.clock.set(t0 + secs(35));
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 2);
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 0, "once only");
    assert_eq!(scheduler.next_wake(), None);

    let titles: Vec<Value> = f
        .due_events()
        .await
        .iter()
        .map(|d| d["title"].clone())
        .collect();
    assert_eq!(titles, ["first", "second", "third"]);
    let first = &f.due_events().await[0];
    assert_eq!(first["remind_at"], serde_json::json!(t0 + secs(10)));
    assert_eq!(first["late_by_ms"], 0);
    assert_eq!(first["fire_count"], 1);
}

async fn an_earlier_reminder_wakes_the_scheduler(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let t0 = f.now();
    let mut changes = f.store.reminder_changes();
    f.task("later", None, vec![at(t0 + secs(600))], None).await;
    let mut scheduler = f.scheduler();
    scheduler.refresh().await.unwrap();
    assert_eq!(scheduler.next_wake(), Some(t0 + secs(600)));
    changes.borrow_and_update();

    f.task("sooner", None, vec![at(t0 + secs(5))], None).await;
    assert!(
        changes.has_changed().unwrap(),
        "the store announces the new instant"
    );
    let announced = (*changes.borrow_and_update()).expect("an instant");
    assert_eq!(announced, t0 + secs(5));
    scheduler.note(announced);
    assert_eq!(scheduler.next_wake(), Some(t0 + secs(5)));
    f.clock.set(t0 + secs(5));
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 1);
    assert_eq!(scheduler.next_wake(), Some(t0 + secs(600)));
}

async fn leases_keep_two_schedulers_apart_and_expire(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let t0 = f.now();
    f.task("a", None, vec![at(t0 + secs(1))], None).await;
    f.task("b", None, vec![at(t0 + secs(1))], None).await;
    f.clock.set(t0 + secs(1));
    // Instance A claims and then crashes before firing.
    let claim = f
        .store
        .claim_due_reminders(f.now(), f.now() + secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claim.due.len(), 2);
    // Instance B finds nothing to claim while the lease holds.
    let mut b = f.scheduler();
    b.refresh().await.unwrap();
    assert_eq!(
        b.next_wake(),
        Some(t0 + secs(31)),
        "B wakes when the lease expires"
    );
    assert_eq!(b.fire_due().await.unwrap().fired, 0);
    // After expiry B takes over and fires both, marked late.
    f.clock.set(t0 + secs(31));
    let report = b.fire_due().await.unwrap();
    assert_eq!(report.fired, 2);
    assert!(report.lateness.iter().all(|l| *l >= secs(30)));
    // A comes back and fires its stale claim: nothing happens.
    let stale: Vec<_> = claim
        .due
        .iter()
        .map(|d| (d.reminder.id, reminder_due_event(d, 1, f.now())))
        .collect();
    assert_eq!(
        f.store
            .fire_reminders(claim.token, &stale, f.now())
            .await
            .unwrap(),
        0
    );
    assert_eq!(f.due_events().await.len(), 2, "each fired once");
}

async fn a_restart_fires_missed_reminders_at_once_marked_late(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let t0 = f.now();
    f.task("missed", None, vec![at(t0 + secs(10))], None).await;
    f.task("future", None, vec![at(t0 + secs(7200))], None)
        .await;
    // The process was down for an hour; a new scheduler starts.
    f.clock.set(t0 + secs(3610));
    let mut scheduler = f.scheduler();
    scheduler.refresh().await.unwrap();
    assert!(scheduler.next_wake().unwrap() <= f.now(), "due at once");
    let report = scheduler.fire_due().await.unwrap();
    assert_eq!(report.fired, 1);
    let event = &f.due_events().await[0];
    assert_eq!(event["title"], "missed");
    assert_eq!(event["late_by_ms"], 3_600_000);
    assert_eq!(scheduler.next_wake(), Some(t0 + secs(7200)));
}

async fn completing_at_the_instant_of_firing_fires_at_most_once(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let t0 = f.now();
    // Claimed, then the task is completed, then the claimant fires: nothing is sent.
    let task = f.task("raced", None, vec![at(t0 + secs(1))], None).await;
    f.clock.set(t0 + secs(1));
    let claim = f
        .store
        .claim_due_reminders(f.now(), f.now() + secs(30), 10)
        .await
        .unwrap();
    let done = f.change(&task, task.completed(f.now()).unwrap()).await;
    let events: Vec<_> = claim
        .due
        .iter()
        .map(|d| (d.reminder.id, reminder_due_event(d, 1, f.now())))
        .collect();
    assert_eq!(
        f.store
            .fire_reminders(claim.token, &events, f.now())
            .await
            .unwrap(),
        0
    );
    let states: Vec<ReminderState> = f
        .store
        .task_reminders(f.user.id, done.id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states, [ReminderState::Cancelled]);

    // Fired first, then completed: sent once, and completing changes nothing about it.
    let task = f.task("fired", None, vec![at(t0 + secs(2))], None).await;
    f.clock.set(t0 + secs(2));
    let mut scheduler = f.scheduler();
    scheduler.refresh().await.unwrap();
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 1);
    f.change(&task, task.completed(f.now()).unwrap()).await;
    f.clock.set(t0 + secs(60));
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 0);
    let fired: Vec<Value> = f.due_events().await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["title"], "fired");
    let reminders = f.store.task_reminders(f.user.id, task.id).await.unwrap();
    assert_eq!(reminders[0].state, ReminderState::Sent);

    // Deleting cancels.
    let task = f
        .task("deleted", None, vec![at(t0 + secs(120))], None)
        .await;
    f.store
        .delete_task(f.user.id, task.id, None, Arc::new(|_| Vec::new()))
        .await
        .unwrap();
    f.clock.set(t0 + secs(200));
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 0);
    assert_eq!(
        f.store.task_reminders(f.user.id, task.id).await.unwrap()[0].state,
        ReminderState::Cancelled
    );
}

async fn plans_follow_due_dates_occurrences_and_snoozes(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let t0 = f.now();
    let due = t0 + TimeDelta::hours(2);
    let task = f
        .task(
            "standup",
            Some(due),
            vec![before("PT1H")],
            Some("FREQ=DAILY"),
        )
        .await;
    let reminders = f.store.task_reminders(f.user.id, task.id).await.unwrap();
    assert_eq!(reminders.len(), 1);
    assert_eq!(reminders[0].remind_at, due - TimeDelta::hours(1));
    assert_eq!(reminders[0].key, "before_due:PT1H");

    // Moving the due date moves the reminder: the old one is cancelled, a new one scheduled.
    let moved = f
        .change(
            &task,
            task.patched(
                TaskPatch {
                    due_at: Some(Some(due + TimeDelta::hours(1))),
                    ..TaskPatch::default()
                },
                f.now(),
            )
            .unwrap(),
        )
        .await;
    let reminders = f.store.task_reminders(f.user.id, task.id).await.unwrap();
    let scheduled: Vec<_> = reminders
        .iter()
        .filter(|r| r.state == ReminderState::Scheduled)
        .collect();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].remind_at, due);
    assert!(
        reminders
            .iter()
            .any(|r| r.state == ReminderState::Cancelled)
    );

    // It fires; snoozing makes it fire again ten minutes later.
    f.clock.set(due);
    let mut scheduler = f.scheduler();
    scheduler.refresh().await.unwrap();
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 1);
    let snoozed = f
        .store
        .snooze_reminder(f.user.id, scheduled[0].id, due + secs(600), f.now())
        .await
        .unwrap();
    assert_eq!(snoozed.state, ReminderState::Scheduled);
    assert!(
        f.store
            .snooze_reminder(UserId::new(), scheduled[0].id, due, f.now())
            .await
            .is_err(),
        "another user cannot snooze it"
    );
    scheduler.note(due + secs(600));
    f.clock.set(due + secs(600));
    assert_eq!(scheduler.fire_due().await.unwrap().fired, 1);
    let events = f.due_events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["fire_count"], 2);

    // Completing the occurrence creates the next one with the same plan, scheduled.
    let done = f.change(&moved, moved.completed(f.now()).unwrap()).await;
    assert_eq!(done.status, taskflow_domain::TaskStatus::Completed);
    let occurrences = f
        .store
        .series_occurrences(f.user.id, moved.series_id.unwrap())
        .await
        .unwrap();
    let next = occurrences.last().unwrap();
    assert_eq!(next.occurrence_index, 1);
    assert_eq!(next.reminders, moved.reminders);
    let next_reminders = f.store.task_reminders(f.user.id, next.id).await.unwrap();
    assert_eq!(next_reminders.len(), 1);
    assert_eq!(next_reminders[0].state, ReminderState::Scheduled);
    assert_eq!(
        next_reminders[0].remind_at,
        next.due_at.unwrap() - TimeDelta::hours(1)
    );
    // Snoozing a reminder of a closed task is refused.
    assert!(
        f.store
            .snooze_reminder(f.user.id, scheduled[0].id, due + secs(900), f.now())
            .await
            .is_err()
    );
}

async fn bursts_fire_in_batches(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let t0 = f.now();
    for i in 0..10 {
        f.task(&format!("burst {i}"), None, vec![at(t0 + secs(5))], None)
            .await;
    }
    let mut scheduler = f.scheduler(); // batch of 3, horizon of 4
    scheduler.refresh().await.unwrap();
    f.clock.set(t0 + secs(5));
    let report = scheduler.fire_due().await.unwrap();
    assert_eq!(report.fired, 10, "batches continue until nothing is due");
    assert_eq!(f.due_events().await.len(), 10);
    assert_eq!(f.store.pending_reminder_count().await.unwrap(), 0);
}
