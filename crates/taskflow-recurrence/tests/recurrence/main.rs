//! Integration tests of taskflow-recurrence (one binary, several modules).
#![allow(clippy::unwrap_used)]

mod bad_input;
mod common;
mod describe;
mod dst;
mod libical;
mod prop;
mod rfc;
mod schedule;
