//! Bus backends, one module each.

pub mod memory;
