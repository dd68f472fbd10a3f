//! TaskFlow's domain: entities, validated values and the rules that govern them.
//!
//! Nothing here performs I/O. Values coming from outside are parsed into newtypes whose
//! constructors enforce the rules (parse, don't validate), so code past the edge never sees a
//! title that is too long or a tag that is not normalised. "Now" is never read here; callers pass
//! instants from an injected [`Clock`].
//!
//! Layout: [`ids`] (typed identifiers), [`validation`] (field errors), [`time`] (clock, time
//! zones), [`user`] (accounts), [`task`] (tasks and their fields).

pub mod events;
pub mod ids;
pub mod notification;
pub mod reminder;
pub mod task;
pub mod time;
pub mod user;
pub mod validation;

pub use ids::{
    DeliveryId, NotificationId, ReminderId, SeriesId, TaskId, TokenId, UserId, WebhookId,
};
pub use reminder::{ReminderPlan, ReminderSpec};
pub use task::{
    Description, NewTask, Priority, Recurrence, RecurrenceSpec, Tag, Tags, Task, TaskChange,
    TaskPatch, TaskStatus, Title,
};
pub use taskflow_recurrence as recurrence;
pub use time::{Clock, ManualClock, SystemClock, TimeZone};
pub use user::{DisplayName, Email, Password, User};
pub use validation::{FieldError, ValidationErrors};
