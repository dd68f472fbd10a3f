//! The in-process fan-out of real-time updates: per-user sessions, sequence numbers and replay.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use taskflow_domain::UserId;
use tokio::sync::mpsc;

use super::tickets::Tickets;

/// Limits of the real-time streams.
#[derive(Clone, Debug, PartialEq)]
pub struct RealtimeSettings {
    /// Open streams (SSE and WebSocket together) one user may hold on one instance.
    pub max_connections_per_user: usize,
    /// Updates kept per user for resumption.
    pub replay_capacity: usize,
    /// How long updates are kept for resumption (and an idle user's log survives).
    pub replay_window: Duration,
    /// Updates a session may have waiting before it is dropped as too slow.
    pub session_queue: usize,
    /// Interval of SSE comments and WebSocket pings.
    pub heartbeat: Duration,
    /// Lifetime of stream tickets.
    pub ticket_ttl: Duration,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        Self {
            max_connections_per_user: 20,
            replay_capacity: 1000,
            replay_window: Duration::from_secs(600),
            session_queue: 256,
            heartbeat: Duration::from_secs(15),
            ticket_ttl: Duration::from_secs(60),
        }
    }
}

/// One update as sessions receive it.
#[derive(Debug)]
pub struct Update {
    /// Per-user sequence number, strictly increasing.
    pub seq: i64,
    /// `task.changed` (later also `notification.created`).
    pub event_type: String,
    /// The payload as JSON (for `task.changed`: the event's data), serialized once.
    pub data_json: String,
    /// The update as an SSE frame, rendered once for every session (see `routes`).
    pub(crate) sse_frame: OnceLock<axum::body::Bytes>,
    /// The update as a WebSocket text frame, rendered once for every session.
    pub(crate) ws_frame: OnceLock<axum::extract::ws::Utf8Bytes>,
    logged_at: Instant,
}

/// Why a session must reload its state instead of applying updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// The requested position is older than the replay log.
    TooFarBehind,
    /// The session did not keep up and was dropped.
    SlowConsumer,
}

impl ResyncReason {
    /// The reason as clients see it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TooFarBehind => "too_far_behind",
            Self::SlowConsumer => "slow_consumer",
        }
    }
}

/// What a new session must be sent before live updates.
#[derive(Debug)]
pub enum Backlog {
    /// The missed updates, oldest first (empty when nothing was missed or no position was given).
    Replay(Vec<Arc<Update>>),
    /// Too far behind: reload, then continue from `seq`.
    Resync {
        /// The user's latest sequence number on this instance (0 when none yet).
        seq: i64,
    },
}

/// Why a session was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The user already holds the maximum number of streams.
    TooManyConnections,
}

/// An open session: its backlog, then live updates.
pub struct Session {
    /// What to send first.
    pub backlog: Backlog,
    receiver: mpsc::Receiver<Arc<Update>>,
    dropped: Arc<AtomicBool>,
    registration: Registration,
}

/// The next thing a session should send.
#[derive(Debug)]
pub enum Next {
    /// An update.
    Update(Arc<Update>),
    /// The session was too slow: send a resync instruction (with the latest `seq`) and close.
    Dropped {
        /// The user's latest sequence number.
        seq: i64,
    },
    /// The hub is gone.
    Closed,
}

impl Session {
    /// Waits for the next live update.
    pub async fn next(&mut self) -> Next {
        if let Some(next) = self.dropped_marker() {
            return next;
        }
        match self.receiver.recv().await {
            Some(update) => match self.dropped_marker() {
                Some(next) => next,
                None => Next::Update(update),
            },
            None => self.dropped_marker().unwrap_or(Next::Closed),
        }
    }

    fn dropped_marker(&self) -> Option<Next> {
        self.dropped.load(Ordering::Acquire).then(|| Next::Dropped {
            seq: self.registration.hub.latest_seq(self.registration.user),
        })
    }
}

struct Registration {
    hub: Arc<HubInner>,
    user: UserId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        if let Some(log) = state.users.get_mut(&self.user) {
            log.sessions.retain(|s| s.id != self.id);
            if log.sessions.is_empty() {
                log.idle_since = Some(Instant::now());
            }
        }
    }
}

struct SessionSlot {
    id: u64,
    sender: mpsc::Sender<Arc<Update>>,
    dropped: Arc<AtomicBool>,
}

struct UserLog {
    /// The last sequence number handed out.
    last_seq: i64,
    /// Every update of this user with a higher seq is in `entries` (or still to come).
    floor: i64,
    entries: VecDeque<Arc<Update>>,
    sessions: Vec<SessionSlot>,
    idle_since: Option<Instant>,
}

struct State {
    users: HashMap<UserId, UserLog>,
    /// The highest seq (or candidate seq) seen for anyone.
    watermark: i64,
    next_session: u64,
    last_sweep: Instant,
    /// Shutting down: sessions end at once.
    closed: bool,
}

struct HubInner {
    settings: RealtimeSettings,
    state: Mutex<State>,
}

impl HubInner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is one push).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn latest_seq(&self, user: UserId) -> i64 {
        self.lock().users.get(&user).map_or(0, |log| log.last_seq)
    }
}

/// Per-user fan-out of updates to open sessions, with a bounded replay log.
///
/// Sequence numbers are derived from the event: the CloudEvent `time` in microseconds, raised to
/// one more than the user's previous number when it is not above it. Every instance consumes the
/// same per-user order, so for the same update instances normally assign the same number and a
/// client may resume on another instance; exact resumption is guaranteed on the instance that
/// holds the log. A user's log starts when their first session opens; its `floor` (the highest
/// number seen for anyone at that moment, later the last evicted number) is the oldest position
/// it can resume from: older positions get a resync.
#[derive(Clone)]
pub struct RealtimeHub {
    inner: Arc<HubInner>,
    tickets: Arc<Tickets>,
}

impl std::fmt::Debug for RealtimeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeHub")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Default for RealtimeHub {
    fn default() -> Self {
        Self::new(RealtimeSettings::default())
    }
}

impl RealtimeHub {
    /// A hub with `settings`.
    pub fn new(settings: RealtimeSettings) -> Self {
        Self {
            tickets: Arc::new(Tickets::new(&[], settings.ticket_ttl)),
            inner: Arc::new(HubInner {
                settings,
                state: Mutex::new(State {
                    users: HashMap::new(),
                    watermark: 0,
                    next_session: 0,
                    last_sweep: Instant::now(),
                    closed: false,
                }),
            }),
        }
    }

    /// The same hub with stream tickets signed by a key derived from `secret` (the JWT secret),
    /// so that every instance sharing it accepts them.
    pub fn with_ticket_secret(mut self, secret: &[u8]) -> Self {
        self.tickets = Arc::new(Tickets::new(secret, self.inner.settings.ticket_ttl));
        self
    }

    /// Stream tickets.
    pub fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// The hub's limits.
    pub fn settings(&self) -> &RealtimeSettings {
        &self.inner.settings
    }

    /// Opens a session for `user`, resuming after `resume_from` when given.
    pub fn connect(&self, user: UserId, resume_from: Option<i64>) -> Result<Session, ConnectError> {
        let settings = &self.inner.settings;
        let mut state = self.inner.lock();
        let state = &mut *state;
        let watermark = state.watermark;
        let log = state.users.entry(user).or_insert_with(|| UserLog {
            last_seq: watermark,
            floor: watermark,
            entries: VecDeque::new(),
            sessions: Vec::new(),
            idle_since: None,
        });
        evict(log, settings);
        if log.sessions.len() >= settings.max_connections_per_user {
            return Err(ConnectError::TooManyConnections);
        }
        let backlog = match resume_from {
            None => Backlog::Replay(Vec::new()),
            Some(position) if position >= log.floor => Backlog::Replay(
                log.entries
                    .iter()
                    .filter(|u| u.seq > position)
                    .cloned()
                    .collect(),
            ),
            Some(_) => Backlog::Resync { seq: log.last_seq },
        };
        let (sender, receiver) = mpsc::channel(settings.session_queue.max(1));
        let dropped = Arc::new(AtomicBool::new(false));
        state.next_session += 1;
        let id = state.next_session;
        // When shutting down the sender is dropped here: the session ends after its backlog.
        if !state.closed {
            log.sessions.push(SessionSlot {
                id,
                sender,
                dropped: dropped.clone(),
            });
        }
        log.idle_since = None;
        metrics::gauge!("realtime_sessions").increment(1.0);
        Ok(Session {
            backlog,
            receiver,
            dropped,
            registration: Registration {
                hub: self.inner.clone(),
                user,
                id,
            },
        })
    }

    /// Whether `user` has a log here (an open session, or one recently).
    pub fn tracks(&self, user: UserId) -> bool {
        self.inner.lock().users.contains_key(&user)
    }

    /// Hands an update to `user`'s sessions; returns its seq, or `None` when nobody here
    /// follows the user (the update is dropped).
    pub fn publish(
        &self,
        user: UserId,
        event_type: &str,
        time: DateTime<Utc>,
        data: serde_json::Value,
    ) -> Option<i64> {
        let settings = &self.inner.settings;
        let candidate = time.timestamp_micros();
        let mut guard = self.inner.lock();
        let state = &mut *guard;
        if state.last_sweep.elapsed() > Duration::from_secs(60) {
            state.last_sweep = Instant::now();
            let window = settings.replay_window;
            state
                .users
                .retain(|_, log| log.idle_since.is_none_or(|since| since.elapsed() < window));
        }
        let Some(log) = state.users.get_mut(&user) else {
            state.watermark = state.watermark.max(candidate);
            return None;
        };
        let seq = candidate.max(log.last_seq + 1);
        log.last_seq = seq;
        state.watermark = state.watermark.max(seq);
        let update = Arc::new(Update {
            seq,
            event_type: event_type.to_owned(),
            data_json: serde_json::to_string(&data).unwrap_or_else(|_| "null".into()),
            sse_frame: OnceLock::new(),
            ws_frame: OnceLock::new(),
            logged_at: Instant::now(),
        });
        log.entries.push_back(update.clone());
        evict(log, settings);
        log.sessions.retain(|session| {
            match session.sender.try_send(update.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Too slow: never make the others wait; tell it to resync and let it go.
                    session.dropped.store(true, Ordering::Release);
                    metrics::counter!("realtime_sessions_dropped_total").increment(1);
                    tracing::info!(%user, "dropping a slow real-time session");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if log.sessions.is_empty() && log.idle_since.is_none() {
            log.idle_since = Some(Instant::now());
        }
        Some(seq)
    }

    /// Ends every open session (at shutdown, so that graceful shutdown need not wait for
    /// endless streams); clients reconnect elsewhere and resume.
    pub fn close_sessions(&self) {
        let mut state = self.inner.lock();
        state.closed = true;
        for log in state.users.values_mut() {
            log.sessions.clear();
        }
    }

    /// The last seq handed out for `user` here (0 when none).
    pub fn latest_seq(&self, user: UserId) -> i64 {
        self.inner.latest_seq(user)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        metrics::gauge!("realtime_sessions").decrement(1.0);
    }
}

fn evict(log: &mut UserLog, settings: &RealtimeSettings) {
    while let Some(oldest) = log.entries.front() {
        if log.entries.len() > settings.replay_capacity
            || oldest.logged_at.elapsed() > settings.replay_window
        {
            log.floor = log.floor.max(oldest.seq);
            log.entries.pop_front();
        } else {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(capacity: usize, queue: usize) -> RealtimeHub {
        RealtimeHub::new(RealtimeSettings {
            replay_capacity: capacity,
            session_queue: queue,
            max_connections_per_user: 2,
            ..RealtimeSettings::default()
        })
    }

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    }

    #[tokio::test]
    async fn sequences_increase_and_resume_replays_or_resyncs() {
        let hub = hub(3, 16);
        let user = UserId::new();
        assert_eq!(
            hub.publish(user, "task.changed", at(5), serde_json::json!(0)),
            None
        );
        let mut session = hub.connect(user, None).unwrap();
        let seqs: Vec<i64> = [10, 10, 3, 20, 30]
            .into_iter()
            .map(|t| {
                hub.publish(user, "task.changed", at(t), serde_json::json!(t))
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [10, 11, 12, 20, 30]);
        for seq in &seqs {
            match session.next().await {
                Next::Update(u) => assert_eq!(u.seq, *seq),
                other => panic!("{other:?}"),
            }
        }
        let resumed = hub.connect(user, Some(12)).unwrap();
        match &resumed.backlog {
            Backlog::Replay(updates) => {
                assert_eq!(updates.iter().map(|u| u.seq).collect::<Vec<_>>(), [20, 30]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            hub.connect(user, Some(1)),
            Err(ConnectError::TooManyConnections)
        ));
        drop(session);
        assert!(matches!(
            hub.connect(user, Some(10)).unwrap().backlog,
            Backlog::Resync { seq: 30 }
        ));
    }

    #[tokio::test]
    async fn a_full_queue_drops_only_that_session() {
        let hub = hub(100, 2);
        let user = UserId::new();
        let mut slow = hub.connect(user, None).unwrap();
        let mut fast = hub.connect(user, None).unwrap();
        for t in 1..=5 {
            hub.publish(user, "task.changed", at(t), serde_json::Value::Null);
            assert!(matches!(fast.next().await, Next::Update(_)));
        }
        assert!(matches!(slow.next().await, Next::Dropped { seq: 5 }));
        let other = UserId::new();
        assert!(!hub.tracks(other));
    }
}
