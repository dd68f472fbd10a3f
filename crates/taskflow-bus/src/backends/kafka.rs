//! The kafka backend (being written).
