//! Real-time streams: `GET /api/v1/stream` (Server-Sent Events) and `GET /api/v1/ws`
//! (WebSocket), fed from the `task-updates` topic through the [`RealtimeHub`].
//!
//! # Messages
//! Each update has a per-user `seq`, a `type` (`task.changed` or `notification.created`) and
//! `data` (for `task.changed` the event's data: `task_id`, `user_id`, `change` = `upserted` |
//! `deleted`, `version`, `task` (null when deleted), `timestamp`; for `notification.created`:
//! `user_id`, `timestamp` and the `notification` as the feed shows it).
//! - SSE: `id: <seq>`, `event: <type>`, `data: <json>`; a comment as heartbeat when nothing
//!   was sent for [`RealtimeSettings::heartbeat`] (15 s by default).
//! - WebSocket: text frames `{"seq": …, "type": …, "data": …}`; a ping every heartbeat. What
//!   clients send is ignored; a message over [`routes::WS_MAX_MESSAGE`] closes the stream.
//!
//! Each update is rendered once per format and the bytes are shared by every session it goes
//! to, since one change may fan out to thousands of streams.
//!
//! A `resync` message (`data: {"reason": "too_far_behind" | "slow_consumer", "seq": n}`) tells
//! the client to reload its task list and continue from `seq`: sent when the resume position is
//! older than the replay log, and as the last message to a session dropped for not keeping up
//! (its queue of [`RealtimeSettings::session_queue`] updates filled up).
//!
//! # Resuming
//! SSE clients resume with `Last-Event-ID` (browsers send it when reconnecting) or
//! `?resume_from=<seq>`, WebSocket clients with `?resume_from=<seq>`. See [`RealtimeHub`] for how
//! `seq` is assigned and how far back resumption works.
//!
//! # Authentication
//! `Authorization: Bearer <token>` as everywhere, or `?ticket=` with a ticket from
//! `POST /api/v1/stream/tickets` (60 s, single use) for browsers. Access tokens are never
//! accepted in the URL. More than [`RealtimeSettings::max_connections_per_user`] open streams
//! of one user → 429.

pub mod hub;
pub mod routes;
pub mod tickets;

pub use hub::{RealtimeHub, RealtimeSettings};
