//! What every handler can reach.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use taskflow_domain::Clock;
use taskflow_store::Store;

use crate::auth::{AuthSettings, TokenKeys};
use crate::rate_limit::{RateLimitSettings, RateLimits};
use crate::realtime::{RealtimeHub, RealtimeSettings};

/// Shared application state, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Source of "now".
    pub clock: Arc<dyn Clock>,
    /// Access-token signing and checking.
    pub tokens: Arc<TokenKeys>,
    /// Request budgets.
    pub rate_limits: Arc<RateLimits>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Real-time sessions and their replay logs (fed by the realtime role).
    pub realtime: RealtimeHub,
    /// Which webhook targets users may register.
    pub webhook_policy: taskflow_notify::TargetPolicy,
}

impl AppState {
    /// Assembles the state from its parts and settings.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        auth: &AuthSettings,
        rate_limit: &RateLimitSettings,
    ) -> Self {
        Self {
            store,
            clock,
            tokens: Arc::new(TokenKeys::new(auth)),
            rate_limits: Arc::new(RateLimits::new(rate_limit)),
            metrics: crate::metrics::prometheus_handle(),
            realtime: RealtimeHub::new(RealtimeSettings::default())
                .with_ticket_secret(auth.jwt_secret.expose().as_bytes()),
            webhook_policy: taskflow_notify::TargetPolicy::PUBLIC_ONLY,
        }
    }

    /// The same state with real-time streams limited by `settings`; stream tickets are signed
    /// with a key derived from `ticket_secret` (the JWT secret, so every instance accepts them).
    pub fn with_realtime(mut self, settings: RealtimeSettings, ticket_secret: &[u8]) -> Self {
        self.realtime = RealtimeHub::new(settings).with_ticket_secret(ticket_secret);
        self
    }

    /// The same state allowing or refusing private webhook targets.
    pub fn with_webhook_policy(mut self, policy: taskflow_notify::TargetPolicy) -> Self {
        self.webhook_policy = policy;
        self
    }
}
