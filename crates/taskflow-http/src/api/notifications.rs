//! Notifications: the in-app feed, the user's channel preferences and webhook endpoints, and
//! the record of deliveries (with their attempts) including dead-lettered ones.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use taskflow_domain::notification::{
    Delivery, DeliveryAttempt, DeliveryStatus, Notification, NotificationPreferences, QuietWindow,
    WebhookEndpoint,
};
use taskflow_domain::{
    DeliveryId, Email, FieldError, NotificationId, ReminderId, TaskId, TimeZone, ValidationErrors,
    WebhookId,
};
use taskflow_store::StoreError;
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, IdPath, QueryParams};
use crate::state::AppState;

/// Most items one page of the feed or the delivery list holds.
pub const MAX_LIMIT: u32 = 200;
/// Most webhook endpoints one user may register.
pub const MAX_WEBHOOKS: usize = 10;

fn limit(params: &QueryParams, default: u32) -> Result<u32, ApiError> {
    match params.single("limit")? {
        None => Ok(default),
        Some(text) => match text.parse::<u32>() {
            Ok(limit @ 1..=MAX_LIMIT) => Ok(limit),
            _ => Err(ApiError::InvalidQuery(
                FieldError::new(
                    "limit",
                    "out_of_range",
                    format!("limit is a whole number from 1 to {MAX_LIMIT}"),
                )
                .into(),
            )),
        },
    }
}

fn encode_cursor((at, id): (DateTime<Utc>, NotificationId)) -> String {
    format!("{}_{id}", at.timestamp_micros())
}

fn decode_cursor(text: &str) -> Result<(DateTime<Utc>, NotificationId), ApiError> {
    let invalid = || {
        ApiError::InvalidQuery(
            FieldError::new(
                "cursor",
                "invalid_cursor",
                "pass back the next_cursor of a previous page",
            )
            .into(),
        )
    };
    let (micros, id) = text.split_once('_').ok_or_else(invalid)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    Ok((at, id.parse().map_err(|_| invalid())?))
}

/// An entry of the in-app feed.
#[derive(Serialize, ToSchema)]
pub struct NotificationResponse {
    /// Identifier.
    #[schema(value_type = String, format = Uuid)]
    pub id: NotificationId,
    /// `reminder`.
    pub kind: String,
    /// Headline (the task's title).
    pub title: String,
    /// One line of detail.
    pub body: String,
    /// The task.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub task_id: Option<TaskId>,
    /// The reminder (snooze it with `POST /api/v1/reminders/{id}/snooze`).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub reminder_id: Option<ReminderId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was read.
    pub read_at: Option<DateTime<Utc>>,
}

impl From<&Notification> for NotificationResponse {
    fn from(n: &Notification) -> Self {
        Self {
            id: n.id,
            kind: n.kind.clone(),
            title: n.title.clone(),
            body: n.body.clone(),
            task_id: n.task_id,
            reminder_id: n.reminder_id,
            created_at: n.created_at,
            read_at: n.read_at,
        }
    }
}

/// One page of the feed.
#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    /// Newest first.
    pub items: Vec<NotificationResponse>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
    /// Unread notifications in all.
    pub unread: i64,
}

/// The feed, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, description = "1–200, default 50"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
           ("unread" = Option<bool>, Query, description = "only unread ones")),
    responses((status = 200, body = NotificationList), (status = 400, body = Problem)))]
pub async fn list_notifications(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<NotificationList>, ApiError> {
    params.only(&["limit", "cursor", "unread"])?;
    let limit = limit(&params, 50)?;
    let cursor = params.single("cursor")?.map(decode_cursor).transpose()?;
    let unread_only = match params.single("unread")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::InvalidQuery(
                FieldError::new("unread", "invalid", "use true or false").into(),
            ));
        }
    };
    let page = state
        .store
        .notifications(user.id, cursor, unread_only, limit)
        .await?;
    Ok(Json(NotificationList {
        items: page.items.iter().map(NotificationResponse::from).collect(),
        next_cursor: page.next_cursor.map(encode_cursor),
        unread: page.unread,
    }))
}

/// Marks one notification read.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path, description = "Notification id")),
    responses((status = 200, body = NotificationResponse), (status = 404, body = Problem)))]
pub async fn mark_read(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<NotificationId>,
) -> Result<Json<NotificationResponse>, ApiError> {
    let now = state.clock.now();
    let notification = state.store.mark_notification_read(user.id, id, now).await?;
    Ok(Json(NotificationResponse::from(&notification)))
}

/// How many notifications changed.
#[derive(Serialize, ToSchema)]
pub struct MarkedRead {
    /// Notifications newly marked read.
    pub updated: u64,
}

/// Marks every notification read.
#[utoipa::path(post, path = "/api/v1/notifications/read-all", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = MarkedRead)))]
pub async fn mark_all_read(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<MarkedRead>, ApiError> {
    let updated = state
        .store
        .mark_all_notifications_read(user.id, state.clock.now())
        .await?;
    Ok(Json(MarkedRead { updated }))
}

/// Quiet hours in local time.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursBody {
    /// `HH:MM`, e.g. `22:00`.
    pub start: String,
    /// `HH:MM`, e.g. `07:00` (may be before `start`: the window wraps midnight).
    pub end: String,
}

/// The user's notification preferences.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesBody {
    /// The in-app feed and browser notifications.
    pub in_app: bool,
    /// E-mail (delivered only when the server has SMTP configured).
    pub email: bool,
    /// The user's webhook endpoints.
    pub webhook: bool,
    /// Where e-mail goes; the account's address when null.
    #[serde(default)]
    pub email_address: Option<String>,
    /// Deliveries due in these hours wait until they end; null for none.
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursBody>,
    /// IANA zone of the quiet hours; the account's when null.
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl From<&NotificationPreferences> for PreferencesBody {
    fn from(p: &NotificationPreferences) -> Self {
        Self {
            in_app: p.in_app,
            email: p.email,
            webhook: p.webhook,
            email_address: p.email_address.as_ref().map(|e| e.as_str().to_owned()),
            quiet_hours: p.quiet_hours.map(|q| QuietHoursBody {
                start: q.start.format("%H:%M").to_string(),
                end: q.end.format("%H:%M").to_string(),
            }),
            time_zone: p.time_zone.map(|z| z.name().to_owned()),
        }
    }
}

fn parse_time(field: &str, text: &str) -> Result<NaiveTime, FieldError> {
    let valid = text.len() == 5 && text.as_bytes()[2] == b':';
    NaiveTime::parse_from_str(text, "%H:%M")
        .ok()
        .filter(|_| valid)
        .ok_or_else(|| FieldError::new(field, "invalid_time", "use HH:MM, like 22:00"))
}

impl PreferencesBody {
    fn validate(self) -> Result<NotificationPreferences, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let email_address = self
            .email_address
            .as_deref()
            .and_then(|text| errors.check(Email::parse(text).map_err(|e| e.at("email_address"))));
        let quiet_hours = self.quiet_hours.as_ref().and_then(|q| {
            let start = errors.check(parse_time("quiet_hours.start", &q.start));
            let end = errors.check(parse_time("quiet_hours.end", &q.end));
            start
                .zip(end)
                .map(|(start, end)| QuietWindow { start, end })
        });
        let time_zone = self
            .time_zone
            .as_deref()
            .and_then(|text| errors.check(TimeZone::parse(text).map_err(|e| e.at("time_zone"))));
        errors.into_result()?;
        Ok(NotificationPreferences {
            in_app: self.in_app,
            email: self.email,
            webhook: self.webhook,
            email_address,
            quiet_hours,
            time_zone,
        })
    }
}

/// The user's preferences (the defaults until they are set).
#[utoipa::path(get, path = "/api/v1/notifications/preferences", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = PreferencesBody)))]
pub async fn get_preferences(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<PreferencesBody>, ApiError> {
    let preferences = state
        .store
        .notification_preferences(user.id)
        .await?
        .unwrap_or_default();
    Ok(Json(PreferencesBody::from(&preferences)))
}

/// Replaces the user's preferences.
#[utoipa::path(put, path = "/api/v1/notifications/preferences", tag = "notifications", security(("bearer" = [])),
    request_body = PreferencesBody,
    responses((status = 200, body = PreferencesBody), (status = 422, body = Problem)))]
pub async fn put_preferences(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<PreferencesBody>,
) -> Result<Json<PreferencesBody>, ApiError> {
    let preferences = body.validate()?;
    state
        .store
        .set_notification_preferences(user.id, &preferences, state.clock.now())
        .await?;
    Ok(Json(PreferencesBody::from(&preferences)))
}

/// Body of `POST /api/v1/webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are POSTed (`https://…`; private and loopback addresses are refused
    /// unless the operator allows them).
    pub url: String,
    /// A name for it.
    #[serde(default)]
    pub description: Option<String>,
}

/// A webhook endpoint (its secret only in the creation response).
#[derive(Serialize, ToSchema)]
pub struct WebhookResponse {
    /// Identifier.
    #[schema(value_type = String, format = Uuid)]
    pub id: WebhookId,
    /// Target URL.
    pub url: String,
    /// What the user called it.
    pub description: String,
    /// Whether deliveries go to it.
    pub enabled: bool,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// The signing secret: shown once, at creation. Verify `TaskFlow-Signature: sha256=<hex>`
    /// as HMAC-SHA256 over `<TaskFlow-Timestamp>.<body>` with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookResponse {
    fn new(endpoint: &WebhookEndpoint, with_secret: bool) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            enabled: endpoint.enabled,
            created_at: endpoint.created_at,
            secret: with_secret.then(|| endpoint.secret.clone()),
        }
    }
}

/// The user's webhook endpoints.
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub items: Vec<WebhookResponse>,
}

/// Registers a webhook endpoint; the response shows its signing secret once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "notifications", security(("bearer" = [])),
    request_body = CreateWebhookRequest,
    responses((status = 201, body = WebhookResponse), (status = 422, body = Problem)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateWebhookRequest>,
) -> Result<Response, ApiError> {
    let url = body.url.trim();
    if url.len() > 2048 {
        return Err(FieldError::new("url", "too_long", "at most 2048 characters").into());
    }
    let parsed = taskflow_notify::validate_webhook_url(url, state.webhook_policy)
        .map_err(|e| FieldError::new("url", "invalid_webhook_url", e.to_string()))?;
    let description = body.description.unwrap_or_default();
    if description.chars().count() > 200 || description.chars().any(char::is_control) {
        return Err(FieldError::new(
            "description",
            "invalid",
            "at most 200 characters on one line",
        )
        .into());
    }
    if state.store.webhook_endpoints(user.id).await?.len() >= MAX_WEBHOOKS {
        return Err(FieldError::new(
            "url",
            "too_many",
            format!("at most {MAX_WEBHOOKS} webhook endpoints per account"),
        )
        .into());
    }
    let endpoint = WebhookEndpoint {
        id: WebhookId::new(),
        user_id: user.id,
        url: parsed.to_string(),
        secret: taskflow_notify::webhook::signature::generate_secret()
            .expose()
            .to_owned(),
        description,
        enabled: true,
        created_at: state.clock.now(),
    };
    state.store.create_webhook_endpoint(&endpoint).await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookResponse::new(&endpoint, true)),
    )
        .into_response())
}

/// Lists the user's webhook endpoints (without secrets).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = WebhookList)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<WebhookList>, ApiError> {
    let endpoints = state.store.webhook_endpoints(user.id).await?;
    Ok(Json(WebhookList {
        items: endpoints
            .iter()
            .map(|e| WebhookResponse::new(e, false))
            .collect(),
    }))
}

/// Deletes a webhook endpoint.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<WebhookId>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_webhook_endpoint(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A delivery of a reminder over one channel, with its attempts.
#[derive(Serialize, ToSchema)]
pub struct DeliveryResponse {
    /// Identifier; webhooks carry it as `TaskFlow-Delivery` on every attempt.
    #[schema(value_type = String, format = Uuid)]
    pub id: DeliveryId,
    /// `webhook` or `email`.
    pub channel: String,
    /// The webhook endpoint.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub endpoint_id: Option<WebhookId>,
    /// The reminder.
    #[schema(value_type = String, format = Uuid)]
    pub reminder_id: ReminderId,
    /// Its task.
    #[schema(value_type = String, format = Uuid)]
    pub task_id: TaskId,
    /// `pending`, `sending`, `sent` or `dead`.
    #[schema(value_type = String)]
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending ones).
    pub next_attempt_at: DateTime<Utc>,
    /// The last error.
    pub last_error: Option<String>,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub sent_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub attempt_log: Vec<DeliveryAttempt>,
}

impl DeliveryResponse {
    fn new(d: &Delivery, attempts: Vec<DeliveryAttempt>) -> Self {
        Self {
            id: d.id,
            channel: d.channel.clone(),
            endpoint_id: d.endpoint_id,
            reminder_id: d.reminder_id,
            task_id: d.task_id,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error.clone(),
            created_at: d.created_at,
            sent_at: d.sent_at,
            attempt_log: attempts,
        }
    }
}

/// Deliveries, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    /// The deliveries.
    pub items: Vec<DeliveryResponse>,
}

/// The user's deliveries; `?status=dead` lists the dead-lettered ones.
#[utoipa::path(get, path = "/api/v1/notifications/deliveries", tag = "notifications", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "pending, sending, sent or dead"),
           ("limit" = Option<u32>, Query, description = "1–200, default 50")),
    responses((status = 200, body = DeliveryList), (status = 400, body = Problem)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<DeliveryList>, ApiError> {
    params.only(&["status", "limit"])?;
    let limit = limit(&params, 50)?;
    let status = params
        .single("status")?
        .map(|text| {
            text.parse::<DeliveryStatus>().map_err(|_| {
                ApiError::InvalidQuery(
                    FieldError::new("status", "invalid", "use pending, sending, sent or dead")
                        .into(),
                )
            })
        })
        .transpose()?;
    let deliveries = state.store.deliveries(user.id, status, limit).await?;
    Ok(Json(DeliveryList {
        items: deliveries
            .into_iter()
            .map(|(d, attempts)| DeliveryResponse::new(&d, attempts))
            .collect(),
    }))
}

/// Tries a dead-lettered delivery again, now: one more attempt (dead again if it fails
/// permanently or the attempts are used up; a retryable failure is retried only while attempts remain).
#[utoipa::path(post, path = "/api/v1/notifications/deliveries/{id}/retry", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 202, body = DeliveryResponse), (status = 404, body = Problem),
              (status = 409, description = "Not dead", body = Problem)))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<DeliveryId>,
) -> Result<Response, ApiError> {
    let delivery = state
        .store
        .retry_delivery(user.id, id, state.clock.now())
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => ApiError::Conflict {
                code: "delivery_not_dead",
                message: "Only a dead-lettered delivery can be retried.".into(),
            },
            other => other.into(),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeliveryResponse::new(&delivery, Vec::new())),
    )
        .into_response())
}
