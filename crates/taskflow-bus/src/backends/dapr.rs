//! The dapr backend (being written).
