//! Token-bucket request budgets (GCRA via `governor`): per user on authenticated routes, per
//! client IP on the others, and tighter buckets for sign-in/registration and task creation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use taskflow_domain::UserId;

use crate::error::ApiError;
use crate::state::AppState;

/// Budgets (`[rate_limit]` in the config file). Rates are refills; bursts are bucket sizes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Turn all limits off (benchmarks, trusted networks).
    pub enabled: bool,
    /// Requests per second per signed-in user, sustained.
    pub user_per_second: u32,
    /// Requests a signed-in user may make at once.
    pub user_burst: u32,
    /// Requests per second per client IP on routes that need no sign-in.
    pub ip_per_second: u32,
    /// Burst per client IP.
    pub ip_burst: u32,
    /// Sign-in and registration attempts per minute per client IP.
    pub auth_per_minute: u32,
    /// Burst of sign-in and registration attempts per client IP.
    pub auth_burst: u32,
    /// Task creations per minute per user (the specification's 100/minute).
    pub task_create_per_minute: u32,
    /// Burst of task creations per user.
    pub task_create_burst: u32,
    /// Take the client IP from the last `X-Forwarded-For` hop (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            user_per_second: 50,
            user_burst: 500,
            ip_per_second: 20,
            ip_burst: 200,
            auth_per_minute: 20,
            auth_burst: 10,
            task_create_per_minute: 100,
            task_create_burst: 100,
            trust_forwarded_for: false,
        }
    }
}

impl RateLimitSettings {
    /// Checks every budget is positive; the message says which setting to fix.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("user_per_second", self.user_per_second),
            ("user_burst", self.user_burst),
            ("ip_per_second", self.ip_per_second),
            ("ip_burst", self.ip_burst),
            ("auth_per_minute", self.auth_per_minute),
            ("auth_burst", self.auth_burst),
            ("task_create_per_minute", self.task_create_per_minute),
            ("task_create_burst", self.task_create_burst),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(format!(
                    "rate_limit.{name} must be at least 1; set rate_limit.enabled = false to turn limits off"
                ));
            }
        }
        Ok(())
    }
}

/// The live buckets.
pub struct RateLimits {
    enabled: bool,
    trust_forwarded_for: bool,
    user: DefaultKeyedRateLimiter<UserId>,
    ip: DefaultKeyedRateLimiter<IpAddr>,
    auth: DefaultKeyedRateLimiter<IpAddr>,
    task_create: DefaultKeyedRateLimiter<UserId>,
}

fn nz(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap_or(NonZeroU32::MIN)
}

impl RateLimits {
    /// Buckets for `settings`.
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            enabled: settings.enabled,
            trust_forwarded_for: settings.trust_forwarded_for,
            user: RateLimiter::keyed(
                Quota::per_second(nz(settings.user_per_second))
                    .allow_burst(nz(settings.user_burst)),
            ),
            ip: RateLimiter::keyed(
                Quota::per_second(nz(settings.ip_per_second)).allow_burst(nz(settings.ip_burst)),
            ),
            auth: RateLimiter::keyed(
                Quota::per_minute(nz(settings.auth_per_minute))
                    .allow_burst(nz(settings.auth_burst)),
            ),
            task_create: RateLimiter::keyed(
                Quota::per_minute(nz(settings.task_create_per_minute))
                    .allow_burst(nz(settings.task_create_burst)),
            ),
        }
    }

    fn check<K: Clone + std::hash::Hash + Eq>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Spends one request of `user`'s budget.
    pub fn check_user(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.user, &user)
    }

    /// Spends one task creation of `user`'s budget.
    pub fn check_task_create(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.task_create, &user)
    }

    /// Forgets buckets that are full again, bounding memory.
    pub fn forget_idle(&self) {
        self.user.retain_recent();
        self.ip.retain_recent();
        self.auth.retain_recent();
        self.task_create.retain_recent();
    }

    /// The key of the client's per-IP buckets: its IPv4 address, or its IPv6 /64 (one host
    /// usually owns a whole /64, so keying on full addresses would give it unlimited buckets).
    fn client_ip(&self, request: &Request) -> IpAddr {
        match self.peer_ip(request) {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut segments = v6.segments();
                    segments[4..].fill(0);
                    IpAddr::V6(segments.into())
                }
            },
            v4 => v4,
        }
    }

    fn peer_ip(&self, request: &Request) -> IpAddr {
        if self.trust_forwarded_for
            && let Some(ip) = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// Middleware: per-IP budget for routes that need no sign-in.
pub async fn limit_by_ip(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ip = state.rate_limits.client_ip(&request);
    state.rate_limits.check(&state.rate_limits.ip, &ip)?;
    Ok(next.run(request).await)
}

/// Middleware: the tighter per-IP budget for sign-in and registration.
pub async fn limit_auth_attempts(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ip = state.rate_limits.client_ip(&request);
    state.rate_limits.check(&state.rate_limits.auth, &ip)?;
    Ok(next.run(request).await)
}
