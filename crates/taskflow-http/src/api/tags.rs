//! The user's tags.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::error::{ApiError, Problem};
use crate::extract::QueryParams;
use crate::state::AppState;

/// One tag and its use.
#[derive(Serialize, ToSchema)]
pub struct TagResponse {
    /// The tag.
    pub tag: String,
    /// Tasks carrying it.
    pub count: i64,
    /// Pending tasks carrying it.
    pub pending: i64,
}

/// The user's tags.
#[derive(Serialize, ToSchema)]
pub struct TagList {
    /// Most used first, then alphabetical.
    pub items: Vec<TagResponse>,
}

/// Lists the user's tags with counts.
#[utoipa::path(get, path = "/api/v1/tags", tag = "tasks", security(("bearer" = [])),
    responses((status = 200, body = TagList), (status = 401, body = Problem)))]
pub async fn list_tags(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<TagList>, ApiError> {
    params.only(&[])?;
    let items = state
        .store
        .tag_counts(user.id)
        .await?
        .into_iter()
        .map(|c| TagResponse {
            tag: c.tag,
            count: c.tasks,
            pending: c.pending,
        })
        .collect();
    Ok(Json(TagList { items }))
}
