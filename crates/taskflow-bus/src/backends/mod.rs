//! Bus backends, one module each; the heavy ones sit behind cargo features.

pub mod memory;

#[cfg(feature = "dapr")]
pub mod dapr;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
