//! HTTP integration tests: each starts the real app on port 0 with a fresh database.

mod health;
