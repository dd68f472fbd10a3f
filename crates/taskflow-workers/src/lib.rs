//! TaskFlow's background roles, each an [`taskflow_bus::consumer::EventHandler`] run by a
//! consumer runner (or, for the scheduler, its own loop).
//!
//! - [`audit`]: `task-events` → the append-only audit log.

pub mod audit;
