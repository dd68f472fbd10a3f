//! The OpenAPI 3.1 document, generated from the handlers' annotations, and a small docs page.

use axum::Json;
use axum::response::Html;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "TaskFlow API", description = "Tasks with priorities, tags, due dates and full-text search. Errors are RFC 9457 problem+json with a stable `code`."),
    paths(
        api::health::healthz, api::health::readyz,
        api::accounts::register, api::accounts::login, api::accounts::me,
        api::tokens::create_token, api::tokens::list_tokens, api::tokens::delete_token,
        api::tasks::create_task, api::tasks::list_tasks, api::tasks::get_task, api::tasks::update_task,
        api::tasks::complete_task, api::tasks::reopen_task, api::tasks::delete_task,
        api::quick_add::quick_add,
        api::calendar::export_calendar, api::calendar::calendar_feed, api::calendar::create_feed,
        api::calendar::get_feed, api::calendar::delete_feed, api::calendar::import_ics,
        api::tags::list_tags,
        api::series::skip_occurrence, api::series::cancel_recurrence, api::series::preview_occurrences, api::series::preview_rule,
        api::series::get_series,
        api::reminders::task_reminders, api::reminders::snooze_reminder,
        api::notifications::list_notifications, api::notifications::mark_read,
        api::notifications::mark_all_read, api::notifications::get_preferences,
        api::notifications::put_preferences, api::notifications::create_webhook,
        api::notifications::list_webhooks, api::notifications::delete_webhook,
        api::notifications::list_deliveries, api::notifications::retry_delivery,
        api::events::audit_log, api::events::list_dead_letters, api::events::replay_dead_letter,
        crate::realtime::routes::create_ticket, crate::realtime::routes::sse_stream,
        crate::realtime::routes::websocket_stream,
    ),
    modifiers(&BearerAuth),
    tags((name = "accounts", description = "Registration, sign-in, personal access tokens"),
         (name = "tasks", description = "Tasks and tags"),
         (name = "calendar", description = "iCalendar export, secret feed URLs and import"),
         (name = "recurrence", description = "Recurring tasks and their series"),
         (name = "reminders", description = "Scheduled reminders: list and snooze"),
         (name = "notifications", description = "In-app feed, preferences, webhooks, deliveries"),
         (name = "events", description = "Audit log and dead letters"),
         (name = "realtime", description = "Live task updates over Server-Sent Events and WebSocket"),
         (name = "operations", description = "Health"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An access token from /api/v1/auth/login, or a personal access token (tfp_…)"))
                    .build(),
            ),
        );
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /docs`: a dependency-free page listing every operation from the OpenAPI document.
pub async fn docs_page() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
