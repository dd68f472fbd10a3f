//! The MCP (Model Context Protocol) server, built on the official Rust SDK (`rmcp`).
//!
//! Two transports serve the same [`TaskflowMcp`] handler: Streamable HTTP at `/mcp` (each
//! request authenticates with `Authorization: Bearer <token>`, checked before MCP sees it)
//! and stdio (`taskflow mcp`, for desktop assistants, acting with a personal access token from
//! the configuration or the environment).
//!
//! Every tool is a call of the REST API, dispatched in-process to the same router with the
//! caller's token: validation, per-user isolation, rate limits, events and errors are exactly
//! the API's. A failed call (bad arguments, a task that is not the caller's, a refused value)
//! is a tool result with `isError: true` and the API's explanation, never a protocol error;
//! only an unknown tool name is one. Resources: `task://{id}`. Prompt: `plan_my_day`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use chrono::{DateTime, Utc};
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, JsonObject, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    Prompt, PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use taskflow_domain::Clock;
use taskflow_domain::reminder::{Offset, ReminderSpec};
use tower::ServiceExt as _;

/// What the MCP server calls: the API router (without `/mcp`) and the clock.
#[derive(Clone)]
pub struct TaskflowMcp {
    api: Router,
    clock: Arc<dyn Clock>,
    /// The token of the stdio transport; `None` on HTTP, where each request brings its own.
    token: Option<String>,
}

impl TaskflowMcp {
    /// A server calling `api` (a router with state, e.g. [`crate::api_router`]). `token` is the
    /// fixed bearer token of a stdio session; `None` takes it from each HTTP request.
    pub fn new(api: Router, clock: Arc<dyn Clock>, token: Option<String>) -> Self {
        Self { api, clock, token }
    }

    fn bearer(&self, context: &RequestContext<RoleServer>) -> Option<String> {
        if let Some(token) = &self.token {
            return Some(format!("Bearer {token}"));
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Calls the API; `Ok` for 2xx with the JSON body (or `null`), `Err` with a message for
    /// people otherwise.
    async fn call(
        &self,
        context: &RequestContext<RoleServer>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(bearer) = self.bearer(context) {
            request = request.header(header::AUTHORIZATION, bearer);
        }
        let request = match &body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| format!("the API failed: {e}"))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 8 * 1024 * 1024)
            .await
            .map_err(|e| format!("cannot read the API's answer: {e}"))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(value);
        }
        Err(problem_text(status.as_u16(), &value))
    }
}

/// A problem+json answer as one line for a person (and an assistant) to read.
fn problem_text(status: u16, problem: &Value) -> String {
    let code = problem["code"].as_str().unwrap_or("error");
    let detail = problem["detail"].as_str().unwrap_or("the request failed");
    let mut text = match code {
        "not_found" => "No such task in your account.".to_owned(),
        _ => format!("{detail} ({code}, HTTP {status})"),
    };
    if let Some(errors) = problem["errors"].as_array() {
        for e in errors {
            text.push_str(&format!(
                "\n- {}: {} ({})",
                e["field"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or(""),
                e["code"].as_str().unwrap_or("")
            ));
        }
    }
    text
}

fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

fn parse_args<T: DeserializeOwned>(args: Option<JsonObject>) -> Result<T, CallToolResult> {
    let value = Value::Object(args.unwrap_or_default());
    serde_json::from_value(value).map_err(|e| tool_error(format!("invalid arguments: {e}")))
}

fn id_path(id: &str) -> Result<String, CallToolResult> {
    uuid::Uuid::parse_str(id.trim())
        .map(|u| u.to_string())
        .map_err(|_| tool_error(format!("`{id}` is not a task id (a UUID)")))
}

fn query_string(pairs: &[(&str, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// A recurrence for `add_task`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecurrenceArg {
    /// An RFC 5545 RRULE such as `FREQ=WEEKLY;BYDAY=MO` or a preset: daily, weekdays, weekly,
    /// biweekly, monthly, yearly.
    pub rule: String,
    /// `due` (default: follow the calendar) or `completion` (count from each completion).
    pub anchor: Option<String>,
}

/// Arguments of `add_task`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTaskArgs {
    /// Title, 1–500 characters.
    pub title: String,
    /// Longer notes.
    pub description: Option<String>,
    /// none, low, medium, high or urgent.
    pub priority: Option<String>,
    /// Tags (lower-case words without spaces).
    pub tags: Option<Vec<String>>,
    /// Due instant, RFC 3339 with an offset (2026-12-01T09:00:00+01:00).
    pub due_at: Option<String>,
    /// IANA time zone of the task; defaults to the account's.
    pub time_zone: Option<String>,
    /// Makes the task repeat (needs due_at).
    pub recurrence: Option<RecurrenceArg>,
}

/// Arguments of `list_tasks`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ListTasksArgs {
    /// pending or completed.
    pub status: Option<String>,
    /// Only these priorities.
    pub priority: Option<Vec<String>>,
    /// Only tasks with any of these tags.
    pub tags: Option<Vec<String>>,
    /// Due at or after this RFC 3339 instant.
    pub due_after: Option<String>,
    /// Due strictly before this RFC 3339 instant.
    pub due_before: Option<String>,
    /// Only overdue tasks (true) or only the others (false).
    pub overdue: Option<bool>,
    /// Full-text search (prefix match over title, description and tags).
    pub query: Option<String>,
    /// due_at, priority, created_at, updated_at, title or relevance.
    pub sort: Option<String>,
    /// asc or desc.
    pub order: Option<String>,
    /// 1–200 (default 50).
    pub limit: Option<u32>,
}

/// Arguments naming one task.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskIdArgs {
    /// The task id.
    pub id: String,
}

/// Arguments of `update_task`: only the fields given change.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskArgs {
    /// The task id.
    pub id: String,
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New priority.
    pub priority: Option<String>,
    /// New tags (replacing the old ones).
    pub tags: Option<Vec<String>>,
    /// New due instant (RFC 3339).
    pub due_at: Option<String>,
    /// Remove the due date.
    pub clear_due_at: Option<bool>,
    /// New IANA time zone.
    pub time_zone: Option<String>,
}

/// Arguments of `set_recurrence`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRecurrenceArgs {
    /// The task id.
    pub id: String,
    /// The RRULE or preset; omit (or null) to stop the series (this occurrence stays).
    pub rule: Option<String>,
    /// due or completion.
    pub anchor: Option<String>,
}

/// Arguments of `add_reminder`: exactly one of `before_due` and `at`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddReminderArgs {
    /// The task id.
    pub id: String,
    /// This long before the due date, an ISO 8601 duration (PT30M, PT1H, P1D, P1W).
    pub before_due: Option<String>,
    /// At this RFC 3339 instant.
    pub at: Option<String>,
}

/// Arguments of `search_tasks`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchTasksArgs {
    /// Words to look for (prefix match over title, description and tags).
    pub query: String,
    /// 1–200 (default 20).
    pub limit: Option<u32>,
}

/// Arguments of `quick_add`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuickAddArgs {
    /// One line of plain English, e.g. "pay rent every month on the 1st at 9am #finance !high".
    pub text: String,
    /// IANA zone the text's times are meant in; defaults to the account's.
    pub time_zone: Option<String>,
    /// Only parse, do not create.
    pub dry_run: Option<bool>,
}

/// The PATCH body that adds `spec` to `task`'s reminder plan (as the API shows it); the API
/// then validates the plan (at most 10, none in the past, relative ones need a due date).
pub fn add_reminder_to_task(task: &Value, spec: &ReminderSpec) -> Result<Value, String> {
    let mut reminders = task["reminders"].as_array().cloned().unwrap_or_default();
    let added = serde_json::to_value(spec).map_err(|e| e.to_string())?;
    if !reminders.contains(&added) {
        reminders.push(added);
    }
    Ok(json!({ "reminders": reminders }))
}

fn object_schema(value: Value) -> Arc<JsonObject> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

fn task_output() -> Arc<JsonObject> {
    object_schema(json!({
        "type": "object",
        "properties": {"task": {"type": "object", "description": "The task as the REST API shows it"}},
        "required": ["task"]
    }))
}

fn list_output() -> Arc<JsonObject> {
    object_schema(json!({
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "object"}},
            "next_cursor": {"type": ["string", "null"]}
        },
        "required": ["items"]
    }))
}

fn tool<T: JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    output: Arc<JsonObject>,
) -> Tool {
    Tool::new(name, description, Arc::new(JsonObject::new()))
        .with_input_schema::<T>()
        .with_raw_output_schema(output)
}

/// Every tool with its input and output schema.
pub fn tools() -> Vec<Tool> {
    vec![
        tool::<AddTaskArgs>(
            "add_task",
            "Create a task for the signed-in user.",
            task_output(),
        ),
        tool::<ListTasksArgs>(
            "list_tasks",
            "List the user's tasks with filters (status, priority, tags, due range, overdue, full-text query), sorting and a limit.",
            list_output(),
        ),
        tool::<TaskIdArgs>("get_task", "Read one of the user's tasks.", task_output()),
        tool::<UpdateTaskArgs>(
            "update_task",
            "Change some fields of a task; fields left out stay as they are.",
            task_output(),
        ),
        tool::<TaskIdArgs>(
            "complete_task",
            "Mark a task completed (a repeating task gets its next occurrence).",
            task_output(),
        ),
        tool::<TaskIdArgs>(
            "reopen_task",
            "Make a completed task pending again.",
            task_output(),
        ),
        tool::<TaskIdArgs>(
            "delete_task",
            "Delete a task.",
            object_schema(json!({
                "type": "object",
                "properties": {"deleted": {"type": "boolean"}, "id": {"type": "string"}},
                "required": ["deleted", "id"]
            })),
        ),
        tool::<SetRecurrenceArgs>(
            "set_recurrence",
            "Make a task repeat (RRULE or preset), or stop its series when no rule is given.",
            task_output(),
        ),
        tool::<AddReminderArgs>(
            "add_reminder",
            "Add a reminder to a task: before its due date (ISO 8601 duration) or at an instant.",
            task_output(),
        ),
        tool::<SearchTasksArgs>(
            "search_tasks",
            "Full-text search over the user's tasks, best matches first.",
            list_output(),
        ),
        tool::<QuickAddArgs>(
            "quick_add",
            "Create a task from one line of plain English (dates, times, recurrence, #tags, !priority, reminders).",
            object_schema(json!({
                "type": "object",
                "properties": {
                    "parsed": {"type": "object"},
                    "task": {"type": ["object", "null"]},
                    "not_applied": {"type": "array", "items": {"type": "object"}}
                },
                "required": ["parsed", "not_applied"]
            })),
        ),
    ]
}

impl TaskflowMcp {
    async fn run_tool(
        &self,
        name: &str,
        args: Option<JsonObject>,
        cx: &RequestContext<RoleServer>,
    ) -> Result<Value, CallToolResult> {
        let api = |result: Result<Value, String>| result.map_err(tool_error);
        let task = |value: Value| json!({ "task": value });
        match name {
            "add_task" => {
                let a: AddTaskArgs = parse_args(args)?;
                let mut body = json!({ "title": a.title });
                for (key, value) in [
                    ("description", a.description.map(Value::from)),
                    ("priority", a.priority.map(Value::from)),
                    ("tags", a.tags.map(Value::from)),
                    ("due_at", a.due_at.map(Value::from)),
                    ("time_zone", a.time_zone.map(Value::from)),
                    (
                        "recurrence",
                        a.recurrence
                            .map(|r| json!({ "rule": r.rule, "anchor": r.anchor })),
                    ),
                ] {
                    if let Some(value) = value {
                        body[key] = value;
                    }
                }
                api(self
                    .call(cx, Method::POST, "/api/v1/tasks", Some(body))
                    .await)
                .map(task)
            }
            "list_tasks" => {
                let a: ListTasksArgs = parse_args(args)?;
                let mut q: Vec<(&str, String)> = Vec::new();
                let mut push = |k: &'static str, v: Option<String>| {
                    if let Some(v) = v {
                        q.push((k, v));
                    }
                };
                push("status", a.status);
                push("priority", a.priority.map(|p| p.join(",")));
                push("tag", a.tags.map(|t| t.join(",")));
                push("due_after", a.due_after);
                push("due_before", a.due_before);
                push("overdue", a.overdue.map(|b| b.to_string()));
                push("q", a.query);
                push("sort", a.sort);
                push("order", a.order);
                push("limit", a.limit.map(|l| l.to_string()));
                let path = format!("/api/v1/tasks?{}", query_string(&q));
                api(self.call(cx, Method::GET, &path, None).await)
            }
            "search_tasks" => {
                let a: SearchTasksArgs = parse_args(args)?;
                let path = format!(
                    "/api/v1/tasks?{}",
                    query_string(&[("q", a.query), ("limit", a.limit.unwrap_or(20).to_string())])
                );
                api(self.call(cx, Method::GET, &path, None).await)
            }
            "get_task" | "complete_task" | "reopen_task" | "delete_task" => {
                let a: TaskIdArgs = parse_args(args)?;
                let id = id_path(&a.id)?;
                let (method, suffix) = match name {
                    "get_task" => (Method::GET, ""),
                    "complete_task" => (Method::POST, "/complete"),
                    "reopen_task" => (Method::POST, "/reopen"),
                    _ => (Method::DELETE, ""),
                };
                let path = format!("/api/v1/tasks/{id}{suffix}");
                let value = api(self.call(cx, method, &path, None).await)?;
                Ok(if name == "delete_task" {
                    json!({ "deleted": true, "id": id })
                } else {
                    task(value)
                })
            }
            "update_task" => {
                let a: UpdateTaskArgs = parse_args(args)?;
                let id = id_path(&a.id)?;
                let mut body = json!({});
                for (key, value) in [
                    ("title", a.title.map(Value::from)),
                    ("description", a.description.map(Value::from)),
                    ("priority", a.priority.map(Value::from)),
                    ("tags", a.tags.map(Value::from)),
                    ("due_at", a.due_at.map(Value::from)),
                    ("time_zone", a.time_zone.map(Value::from)),
                ] {
                    if let Some(value) = value {
                        body[key] = value;
                    }
                }
                if a.clear_due_at == Some(true) {
                    body["due_at"] = Value::Null;
                }
                if body.as_object().is_some_and(|o| o.is_empty()) {
                    return Err(tool_error("give at least one field to change"));
                }
                let path = format!("/api/v1/tasks/{id}");
                api(self.call(cx, Method::PATCH, &path, Some(body)).await).map(task)
            }
            "set_recurrence" => {
                let a: SetRecurrenceArgs = parse_args(args)?;
                let id = id_path(&a.id)?;
                let recurrence = match a.rule {
                    Some(rule) => json!({ "rule": rule, "anchor": a.anchor }),
                    None => Value::Null,
                };
                let path = format!("/api/v1/tasks/{id}");
                api(self
                    .call(
                        cx,
                        Method::PATCH,
                        &path,
                        Some(json!({ "recurrence": recurrence })),
                    )
                    .await)
                .map(task)
            }
            "add_reminder" => {
                let a: AddReminderArgs = parse_args(args)?;
                let id = id_path(&a.id)?;
                let spec = match (a.before_due.as_deref(), a.at.as_deref()) {
                    (Some(offset), None) => ReminderSpec::BeforeDue(
                        Offset::parse("before_due", offset).map_err(|e| tool_error(e.message))?,
                    ),
                    (None, Some(at)) => ReminderSpec::At(
                        DateTime::parse_from_rfc3339(at.trim())
                            .map(|t| t.with_timezone(&Utc))
                            .map_err(|_| {
                                tool_error("`at` is an RFC 3339 instant like 2026-12-01T08:00:00Z")
                            })?,
                    ),
                    _ => return Err(tool_error("give exactly one of `before_due` and `at`")),
                };
                let path = format!("/api/v1/tasks/{id}");
                let current = api(self.call(cx, Method::GET, &path, None).await)?;
                let body = add_reminder_to_task(&current, &spec).map_err(tool_error)?;
                api(self.call(cx, Method::PATCH, &path, Some(body)).await).map(task)
            }
            "quick_add" => {
                let a: QuickAddArgs = parse_args(args)?;
                let mut body = json!({ "text": a.text, "dry_run": a.dry_run.unwrap_or(false) });
                if let Some(zone) = a.time_zone {
                    body["time_zone"] = Value::from(zone);
                }
                api(self
                    .call(cx, Method::POST, "/api/v1/tasks/quick", Some(body))
                    .await)
            }
            _ => Err(tool_error(format!("unknown tool `{name}`"))),
        }
    }

    /// The text of the "plan my day" prompt: today's and overdue pending tasks.
    async fn plan_my_day(&self, cx: &RequestContext<RoleServer>) -> Result<String, String> {
        let me = self.call(cx, Method::GET, "/api/v1/me", None).await?;
        let zone: chrono_tz::Tz = me["time_zone"]
            .as_str()
            .and_then(|z| z.parse().ok())
            .unwrap_or(chrono_tz::UTC);
        let now = self.clock.now();
        let today = now.with_timezone(&zone).date_naive();
        let start = taskflow_domain::recurrence::resolve_local(
            zone,
            today.and_time(chrono::NaiveTime::MIN),
        );
        let end = today
            .succ_opt()
            .map(|d| {
                taskflow_domain::recurrence::resolve_local(zone, d.and_time(chrono::NaiveTime::MIN))
            })
            .unwrap_or(start);
        let overdue = self
            .call(
                cx,
                Method::GET,
                "/api/v1/tasks?status=pending&overdue=true&sort=due_at&limit=100",
                None,
            )
            .await?;
        let due_today = self
            .call(
                cx,
                Method::GET,
                &format!(
                    "/api/v1/tasks?{}",
                    query_string(&[
                        ("status", "pending".into()),
                        ("due_after", now.max(start).to_rfc3339()),
                        ("due_before", end.to_rfc3339()),
                        ("sort", "due_at".into()),
                        ("limit", "100".into()),
                    ])
                ),
                None,
            )
            .await?;
        let line = |t: &Value| {
            let due = t["due_at"]
                .as_str()
                .and_then(|d| d.parse::<DateTime<Utc>>().ok())
                .map(|d| d.with_timezone(&zone).format("%a %d %b %H:%M").to_string())
                .unwrap_or_default();
            format!(
                "- [{}] {} (due {due}, priority {}, id {})",
                t["status"].as_str().unwrap_or(""),
                t["title"].as_str().unwrap_or(""),
                t["priority"].as_str().unwrap_or("none"),
                t["id"].as_str().unwrap_or("")
            )
        };
        let section = |title: &str, list: &Value| {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                format!("{title}: none.\n")
            } else {
                format!(
                    "{title}:\n{}\n",
                    items.iter().map(line).collect::<Vec<_>>().join("\n")
                )
            }
        };
        Ok(format!(
            "Help me plan my day ({today}, time zone {zone}). Suggest an order, with times, for what I \
             should do today; put urgent and overdue work first and say what can wait.\n\n{}\n{}",
            section("Overdue", &overdue),
            section("Due today", &due_today)
        ))
    }
}

impl ServerHandler for TaskflowMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new("taskflow", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "TaskFlow tasks of the signed-in user: add, list, search, update, complete, reopen and \
             delete tasks, make them repeat, and quick-add from plain English. Read a task as \
             task://{id}; the plan_my_day prompt lists today's and overdue tasks.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if !tools().iter().any(|t| t.name == request.name) {
            return Err(McpError::invalid_params(
                format!("unknown tool `{}`", request.name),
                None,
            ));
        }
        let result = match self
            .run_tool(&request.name, request.arguments, &context)
            .await
        {
            Ok(value) if value.is_object() => CallToolResult::structured(value),
            Ok(value) => CallToolResult::structured(json!({ "result": value })),
            Err(error) => error,
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let list = self
            .call(
                &context,
                Method::GET,
                "/api/v1/tasks?status=pending&sort=due_at&limit=100",
                None,
            )
            .await
            .map_err(|e| McpError::invalid_request(e, None))?;
        let resources = list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                Resource::new(
                    format!("task://{}", t["id"].as_str().unwrap_or_default()),
                    t["title"].as_str().unwrap_or_default(),
                )
                .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("task://{id}", "task")
                .with_description("One of your tasks as JSON")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let not_found =
            || McpError::resource_not_found(format!("no resource {}", request.uri), None);
        let id = request
            .uri
            .strip_prefix("task://")
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .ok_or_else(not_found)?;
        let task = self
            .call(&context, Method::GET, &format!("/api/v1/tasks/{id}"), None)
            .await
            .map_err(|_| not_found())?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(task.to_string(), request.uri.clone())
                .with_mime_type("application/json"),
        ])
        .into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(vec![
            Prompt::new(
                "plan_my_day",
                Some("Plan my day: today's and overdue tasks, to put in order"),
                None,
            )
            .with_title("Plan my day"),
        ]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if request.name != "plan_my_day" {
            return Err(McpError::invalid_params(
                format!("unknown prompt `{}`", request.name),
                None,
            ));
        }
        let text = self
            .plan_my_day(&context)
            .await
            .map_err(|e| McpError::invalid_request(e, None))?;
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description("Today's and overdue tasks")
                .into(),
        )
    }
}

/// Serves `server` over standard input and output until the client disconnects.
pub async fn serve_stdio(server: TaskflowMcp) -> anyhow::Result<()> {
    use rmcp::ServiceExt as _;
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP session did not start: {e}"))?;
    running.waiting().await?;
    Ok(())
}

/// The Streamable HTTP transport of `server`'s tools, to nest at `/mcp` behind authentication.
pub fn http_service(
    api: Router,
    clock: Arc<dyn Clock>,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    TaskflowMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    // Every request carries a bearer token that a browser on another site cannot add, so
    // DNS-rebinding protection by Host name is not needed; any host the API serves is allowed.
    // Stateless: no session lives in one process's memory, so any instance behind a load
    // balancer can answer any request; simple calls are answered as plain JSON.
    let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    config.legacy_session_mode = false;
    config.json_response = true;
    let server = TaskflowMcp::new(api, clock, None);
    StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config)
}
