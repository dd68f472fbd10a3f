//! The notification store on both backends: one story run on a fresh SQLite file and on a
//! fresh PostgreSQL database (`taskflow_test_<uuid>`, dropped afterwards).
//!
//! The server is `postgres://postgres@127.0.0.1:5432/postgres` (trust auth) unless
//! `TASKFLOW_TEST_POSTGRES_URL` names another admin URL. A missing server fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, NaiveTime, TimeDelta, TimeZone as _, Utc};
use taskflow_domain::notification::{
    Delivery, DeliveryAttempt, DeliveryStatus, Notification, NotificationPreferences, QuietWindow,
    WebhookEndpoint,
};
use taskflow_domain::{
    DeliveryId, Email, NotificationId, ReminderId, TaskId, TimeZone, User, UserId, WebhookId,
};
use taskflow_store::postgres::{PostgresSettings, PostgresStore};
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use taskflow_store::{ConsumerEffect, DeliveryOutcome, NotificationPlan, Store, StoreError};
use taskflow_testing::postgres::ScratchPostgres;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap()
}

/// `start()` plus `seconds`.
fn at(seconds: i64) -> DateTime<Utc> {
    start() + TimeDelta::seconds(seconds)
}

fn user(email: &str) -> User {
    User {
        id: UserId::new(),
        email: Email::parse(email).unwrap(),
        display_name: None,
        time_zone: TimeZone::UTC,
        is_admin: false,
        created_at: start(),
    }
}

fn endpoint(owner: UserId, url: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        id: WebhookId::new(),
        user_id: owner,
        url: url.to_owned(),
        secret: "s3cret".to_owned(),
        description: "my hook".to_owned(),
        enabled: true,
        created_at: start(),
    }
}

fn notification(owner: UserId, dedup_key: &str, created_at: DateTime<Utc>) -> Notification {
    Notification {
        id: NotificationId::new(),
        user_id: owner,
        kind: "reminder".to_owned(),
        title: "Water the plants".to_owned(),
        body: "Due in 1 hour".to_owned(),
        task_id: Some(TaskId::new()),
        reminder_id: Some(ReminderId::new()),
        dedup_key: dedup_key.to_owned(),
        created_at,
        read_at: None,
    }
}

fn delivery(
    owner: UserId,
    channel: &str,
    endpoint_id: Option<WebhookId>,
    next_attempt_at: DateTime<Utc>,
) -> Delivery {
    Delivery {
        id: DeliveryId::new(),
        user_id: owner,
        reminder_id: ReminderId::new(),
        task_id: TaskId::new(),
        channel: channel.to_owned(),
        endpoint_id,
        idempotency_key: format!("r1:1:{channel}:{endpoint_id:?}"),
        status: DeliveryStatus::Pending,
        payload: format!(r#"{{"channel":"{channel}"}}"#),
        attempts: 0,
        next_attempt_at,
        last_error: None,
        created_at: at(1),
        updated_at: at(1),
        sent_at: None,
    }
}

fn attempt(
    number: u32,
    when: DateTime<Utc>,
    outcome: &str,
    error: Option<&str>,
) -> DeliveryAttempt {
    DeliveryAttempt {
        attempt: number,
        at: when,
        outcome: outcome.to_owned(),
        error: error.map(str::to_owned),
        duration_ms: 12,
    }
}

fn notify(plan: &NotificationPlan) -> ConsumerEffect {
    ConsumerEffect::Notify(plan.clone())
}

/// One delivery of the user, with its attempts.
async fn find_delivery(
    store: &dyn Store,
    owner: UserId,
    id: DeliveryId,
) -> (Delivery, Vec<DeliveryAttempt>) {
    store
        .deliveries(owner, None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|(d, _)| d.id == id)
        .expect("the delivery is listed")
}

async fn story(store: &dyn Store) {
    let alice = user("alice@example.com");
    let bob = user("bob@example.com");
    store.create_user(&alice, "hash").await.unwrap();
    store.create_user(&bob, "hash").await.unwrap();
    let (a, b) = (alice.id, bob.id);

    // Preferences: none until set, then exactly what was set.
    assert_eq!(store.notification_preferences(a).await.unwrap(), None);
    let preferences = NotificationPreferences {
        in_app: true,
        email: true,
        webhook: false,
        email_address: Some(Email::parse("alerts@example.com").unwrap()),
        quiet_hours: Some(QuietWindow {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(7, 30, 0).unwrap(),
        }),
        time_zone: Some(TimeZone::parse("Europe/Berlin").unwrap()),
    };
    store
        .set_notification_preferences(a, &preferences, at(0))
        .await
        .unwrap();
    assert_eq!(
        store.notification_preferences(a).await.unwrap(),
        Some(preferences)
    );
    let defaults = NotificationPreferences::default();
    store
        .set_notification_preferences(a, &defaults, at(1))
        .await
        .unwrap();
    assert_eq!(
        store.notification_preferences(a).await.unwrap(),
        Some(defaults)
    );
    assert_eq!(store.notification_preferences(b).await.unwrap(), None);

    // Webhook endpoints: listed for their owner only, deleted by their owner only.
    let hook = endpoint(a, "https://hooks.example.com/one");
    let other = endpoint(a, "https://hooks.example.com/two");
    store.create_webhook_endpoint(&hook).await.unwrap();
    store.create_webhook_endpoint(&other).await.unwrap();
    let mut both = vec![hook.clone(), other.clone()];
    both.sort_by_key(|e| e.id);
    assert_eq!(store.webhook_endpoints(a).await.unwrap(), both);
    assert_eq!(store.webhook_endpoints(b).await.unwrap(), vec![]);
    assert!(matches!(
        store.delete_webhook_endpoint(b, other.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_webhook_endpoint(a, other.id).await.unwrap();
    assert!(matches!(
        store.delete_webhook_endpoint(a, other.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.webhook_endpoints(a).await.unwrap(),
        vec![hook.clone()]
    );

    // Applying a plan stores the notification, its deliveries and its event once.
    let mut changes = store.delivery_changes();
    let first = notification(a, "r1:1", at(1));
    let webhook = delivery(a, "webhook", Some(hook.id), at(10));
    let email = delivery(a, "email", None, at(5));
    let event = first.created_event(None);
    let plan = NotificationPlan {
        notification: Some(first.clone()),
        deliveries: vec![webhook.clone(), email.clone()],
        events: vec![event.clone()],
    };
    assert!(
        store
            .apply_once("notifier", "event-1", &notify(&plan), at(1))
            .await
            .unwrap()
    );
    assert!(changes.has_changed().unwrap());
    assert_eq!(*changes.borrow_and_update(), Some(at(5)));
    // The same event again: nothing.
    assert!(
        !store
            .apply_once("notifier", "event-1", &notify(&plan), at(2))
            .await
            .unwrap()
    );
    // The same firing under another event id: the dedup keys keep everything single.
    let again = NotificationPlan {
        notification: Some(notification(a, "r1:1", at(2))),
        deliveries: vec![
            Delivery {
                id: DeliveryId::new(),
                ..webhook.clone()
            },
            Delivery {
                id: DeliveryId::new(),
                next_attempt_at: at(3),
                ..email.clone()
            },
        ],
        events: vec![notification(a, "r1:1", at(2)).created_event(None)],
    };
    assert!(
        store
            .apply_once("notifier", "event-2", &notify(&again), at(2))
            .await
            .unwrap()
    );
    assert!(!changes.has_changed().unwrap());
    let page = store.notifications(a, None, false, 10).await.unwrap();
    assert_eq!(page.items, vec![first.clone()]);
    assert_eq!(page.unread, 1);
    assert_eq!(store.deliveries(a, None, 10).await.unwrap().len(), 2);
    let outbox = store.events_after("task-updates", 0, 100).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].event_id, event.event.id);
    assert_eq!(outbox[0].event_type, "taskflow.notification.created.v1");
    assert_eq!(outbox[0].partition_key, a.to_string());

    // The feed: newest first, paged by (created_at, id), with the unread count.
    let mut feed = vec![first.clone()];
    for (key, seconds) in [("r2:1", 2), ("r3:1", 3), ("r4:1", 3)] {
        let n = notification(a, key, at(seconds));
        let plan = NotificationPlan {
            notification: Some(n.clone()),
            deliveries: vec![],
            events: vec![n.created_event(None)],
        };
        assert!(
            store
                .apply_once("notifier", &format!("event-{key}"), &notify(&plan), at(3))
                .await
                .unwrap()
        );
        feed.push(n);
    }
    feed.sort_by_key(|n| std::cmp::Reverse((n.created_at, n.id)));
    let page = store.notifications(a, None, false, 3).await.unwrap();
    assert_eq!(page.items, feed[..3].to_vec());
    assert_eq!(page.unread, 4);
    let cursor = page.next_cursor.expect("a next page");
    assert_eq!(cursor, (feed[2].created_at, feed[2].id));
    let page = store
        .notifications(a, Some(cursor), false, 3)
        .await
        .unwrap();
    assert_eq!(page.items, feed[3..].to_vec());
    assert_eq!(page.next_cursor, None);
    let exact = store.notifications(a, None, false, 4).await.unwrap();
    assert_eq!(exact.items, feed);
    assert_eq!(exact.next_cursor, None);
    let theirs = store.notifications(b, None, false, 10).await.unwrap();
    assert!(theirs.items.is_empty());
    assert_eq!(theirs.unread, 0);

    // Reading: one (not someone else's), then all.
    assert!(matches!(
        store.mark_notification_read(b, first.id, at(4)).await,
        Err(StoreError::NotFound)
    ));
    let read = store
        .mark_notification_read(a, first.id, at(4))
        .await
        .unwrap();
    assert_eq!(read.read_at, Some(at(4)));
    let read = store
        .mark_notification_read(a, first.id, at(5))
        .await
        .unwrap();
    assert_eq!(
        read.read_at,
        Some(at(4)),
        "reading twice keeps the first instant"
    );
    let unread = store.notifications(a, None, true, 10).await.unwrap();
    assert_eq!(unread.items.len(), 3);
    assert!(unread.items.iter().all(|n| n.id != first.id));
    assert_eq!(unread.unread, 3);
    assert_eq!(
        store.mark_all_notifications_read(a, at(6)).await.unwrap(),
        3
    );
    assert_eq!(
        store.mark_all_notifications_read(a, at(7)).await.unwrap(),
        0
    );
    let page = store.notifications(a, None, false, 10).await.unwrap();
    assert_eq!(page.unread, 0);
    assert!(page.items.iter().all(|n| n.read_at.is_some()));

    // Claims: due deliveries, with their endpoint, claimed once.
    assert_eq!(store.next_delivery_at().await.unwrap(), Some(at(5)));
    let (_, none) = store.claim_deliveries(at(4), at(64), 10).await.unwrap();
    assert!(none.is_empty());
    let (token, claimed) = store.claim_deliveries(at(20), at(80), 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].delivery.id, email.id);
    assert_eq!(claimed[0].endpoint, None);
    assert_eq!(claimed[1].delivery.id, webhook.id);
    assert_eq!(claimed[1].endpoint, Some(hook.clone()));
    assert!(
        claimed
            .iter()
            .all(|c| c.delivery.status == DeliveryStatus::Sending)
    );
    let (_, twice) = store.claim_deliveries(at(20), at(80), 10).await.unwrap();
    assert!(twice.is_empty());
    assert_eq!(store.next_delivery_at().await.unwrap(), Some(at(80)));

    // Attempts: a wrong token records nothing; retry, then dead.
    assert!(
        !store
            .record_delivery_attempt(
                uuid::Uuid::now_v7(),
                webhook.id,
                &attempt(1, at(21), "retry", Some("HTTP 500")),
                &DeliveryOutcome::Retry(at(30)),
                &[],
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .record_delivery_attempt(
                token,
                webhook.id,
                &attempt(1, at(21), "retry", Some("HTTP 500")),
                &DeliveryOutcome::Retry(at(30)),
                &[],
            )
            .await
            .unwrap()
    );
    assert_eq!(*changes.borrow_and_update(), Some(at(30)));
    let (d, attempts) = find_delivery(store, a, webhook.id).await;
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.next_attempt_at, at(30));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(attempts.len(), 1);
    assert!(
        store
            .record_delivery_attempt(
                token,
                email.id,
                &attempt(1, at(22), "sent", None),
                &DeliveryOutcome::Sent,
                &[],
            )
            .await
            .unwrap()
    );
    let (d, _) = find_delivery(store, a, email.id).await;
    assert_eq!(d.status, DeliveryStatus::Sent);
    assert_eq!(d.sent_at, Some(at(22)));
    assert_eq!(d.attempts, 1);
    assert_eq!(store.next_delivery_at().await.unwrap(), Some(at(30)));

    let (token, claimed) = store.claim_deliveries(at(30), at(90), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, webhook.id);
    assert_eq!(claimed[0].delivery.attempts, 1);
    let dead = attempt(2, at(31), "dead", Some("HTTP 410"));
    assert!(
        store
            .record_delivery_attempt(token, webhook.id, &dead, &DeliveryOutcome::Dead, &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_delivery_attempt(token, webhook.id, &dead, &DeliveryOutcome::Dead, &[])
            .await
            .unwrap(),
        "the claim ended with the first record"
    );
    let listed = store
        .deliveries(a, Some(DeliveryStatus::Dead), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let (d, attempts) = &listed[0];
    assert_eq!(d.id, webhook.id);
    assert_eq!(d.status, DeliveryStatus::Dead);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_error.as_deref(), Some("HTTP 410"));
    assert_eq!(
        attempts,
        &vec![attempt(1, at(21), "retry", Some("HTTP 500")), dead.clone()]
    );
    assert!(
        store
            .deliveries(b, Some(DeliveryStatus::Dead), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.dead_delivery_count().await.unwrap(), 1);
    assert_eq!(store.next_delivery_at().await.unwrap(), None);

    // Retrying a dead delivery: the owner's only, dead ones only.
    assert!(matches!(
        store.retry_delivery(b, webhook.id, at(40)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.retry_delivery(a, email.id, at(40)).await,
        Err(StoreError::Conflict("delivery_not_dead"))
    ));
    let retried = store.retry_delivery(a, webhook.id, at(40)).await.unwrap();
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.next_attempt_at, at(40));
    assert_eq!(retried.attempts, 2);
    assert_eq!(find_delivery(store, a, webhook.id).await.0, retried);
    assert_eq!(*changes.borrow_and_update(), Some(at(40)));
    assert_eq!(store.dead_delivery_count().await.unwrap(), 0);
    assert_eq!(store.next_delivery_at().await.unwrap(), Some(at(40)));

    // An expired lease can be claimed again; the old claim is lost.
    let (lost, claimed) = store.claim_deliveries(at(40), at(50), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let (_, held) = store.claim_deliveries(at(45), at(105), 10).await.unwrap();
    assert!(held.is_empty(), "the lease still holds");
    let (token, claimed) = store.claim_deliveries(at(60), at(120), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, webhook.id);
    assert_eq!(claimed[0].endpoint, Some(hook.clone()));
    assert!(
        !store
            .record_delivery_attempt(
                lost,
                webhook.id,
                &attempt(3, at(61), "sent", None),
                &DeliveryOutcome::Sent,
                &[],
            )
            .await
            .unwrap()
    );
    // Deferred (quiet hours) is not an attempt.
    assert!(
        store
            .record_delivery_attempt(
                token,
                webhook.id,
                &attempt(3, at(61), "deferred", None),
                &DeliveryOutcome::Deferred(at(3600)),
                &[],
            )
            .await
            .unwrap()
    );
    let (d, attempts) = find_delivery(store, a, webhook.id).await;
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.next_attempt_at, at(3600));
    assert_eq!(attempts.len(), 2);
    assert_eq!(*changes.borrow_and_update(), Some(at(3600)));
}

#[tokio::test]
async fn notifications_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("taskflow-store-{}", uuid::Uuid::now_v7()));
    let url = format!("sqlite://{}/test.db", dir.display());
    let store = SqliteStore::connect(&SqliteSettings::new(url))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    story(&store).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn notifications_on_postgres() {
    let db = ScratchPostgres::create("taskflow_test").await;
    let store = PostgresStore::connect(&PostgresSettings::new(&db.url))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    story(&store).await;
    store.close().await;
}
