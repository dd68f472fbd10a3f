//! Personal access tokens for scripts: created and shown once, stored only as a hash.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use taskflow_domain::TokenId;
use taskflow_store::AccessToken;
use utoipa::ToSchema;

use crate::auth::{CurrentUser, new_personal_token, personal_token_hash};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, IdPath, QueryParams};
use crate::state::AppState;

/// Body of `POST /api/v1/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What the token is for (1–100 characters).
    #[schema(example = "backup script")]
    pub name: String,
    /// Days until it expires (1–3650); omitted: never.
    pub expires_in_days: Option<i64>,
}

/// A token's metadata.
#[derive(Serialize, ToSchema)]
pub struct TokenInfo {
    /// Identifier.
    #[schema(value_type = String, format = Uuid)]
    pub id: TokenId,
    /// Name.
    pub name: String,
    /// The first characters of the secret.
    pub prefix: String,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last use (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<AccessToken> for TokenInfo {
    fn from(t: AccessToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

/// A freshly created token: the only time its secret is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// Metadata.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret; use as `Authorization: Bearer <token>`.
    pub token: String,
}

/// The user's tokens.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    /// Newest first.
    pub items: Vec<TokenInfo>,
}

/// Creates a personal access token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", security(("bearer" = [])), request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 422, body = Problem)))]
pub async fn create_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "name",
            "invalid",
            "a token name has 1–100 characters on one line",
        ));
    }
    let now = state.clock.now();
    let expires_at = match body.expires_in_days {
        None => None,
        Some(days @ 1..=3650) => Some(now + TimeDelta::days(days)),
        Some(_) => {
            return Err(ApiError::field(
                "expires_in_days",
                "out_of_range",
                "give 1 to 3650 days, or omit for no expiry",
            ));
        }
    };
    let secret = new_personal_token();
    let token = AccessToken {
        id: TokenId::new(),
        user_id: user.id,
        name: name.to_owned(),
        prefix: secret.chars().take(8).collect(),
        created_at: now,
        last_used_at: None,
        expires_at,
    };
    state
        .store
        .create_access_token(&token, &personal_token_hash(&secret))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info: token.into(),
            token: secret,
        }),
    ))
}

/// Lists the user's personal access tokens (without secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = TokenList)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<TokenList>, ApiError> {
    params.only(&[])?;
    let items = state
        .store
        .access_tokens(user.id)
        .await?
        .into_iter()
        .map(TokenInfo::from)
        .collect();
    Ok(Json(TokenList { items }))
}

/// Revokes a personal access token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TokenId>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_access_token(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
