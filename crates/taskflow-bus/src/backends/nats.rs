//! The nats backend (being written).
