//! Registration, sign-in and the caller's own account.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use taskflow_domain::{DisplayName, Email, Password, TimeZone, User, UserId, ValidationErrors};
use taskflow_store::StoreError;
use utoipa::ToSchema;

use crate::auth::{CurrentUser, hash_password, verify_password};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, QueryParams};
use crate::state::AppState;

/// Body of `POST /api/v1/auth/register`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// E-mail address (unique, case-insensitive).
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    /// Optional name shown in the UI.
    pub display_name: Option<String>,
    /// IANA zone used as the default for tasks (default `UTC`).
    #[schema(example = "Europe/Berlin")]
    pub time_zone: Option<String>,
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// E-mail address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// An account as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    /// Identifier.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// E-mail address.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Default IANA zone.
    pub time_zone: String,
    /// Whether the account has the admin role.
    pub is_admin: bool,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserResponse {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.to_string(),
            display_name: user.display_name.as_ref().map(|n| n.as_str().to_owned()),
            time_zone: user.time_zone.name().to_owned(),
            is_admin: user.is_admin,
            created_at: user.created_at,
        }
    }
}

/// An access token for the `Authorization: Bearer` header.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Result of registering: the account and a token to start with.
#[derive(Serialize, ToSchema)]
pub struct RegisterResponse {
    /// The new account.
    pub user: UserResponse,
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Creates an account.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "accounts", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 409, description = "E-mail taken", body = Problem),
              (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let mut errors = ValidationErrors::new();
    let email = errors.check(Email::parse(&body.email));
    let password = errors.check(Password::parse(&body.password));
    let display_name = body
        .display_name
        .as_deref()
        .and_then(|n| errors.check(DisplayName::parse(n)));
    let time_zone = match body.time_zone.as_deref() {
        Some(zone) => errors.check(TimeZone::parse(zone)),
        None => Some(TimeZone::UTC),
    };
    errors.into_result()?;
    let (Some(email), Some(password), Some(time_zone)) = (email, password, time_zone) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let hash = hash_password(password.expose().to_owned()).await?;
    let user = User {
        id: UserId::new(),
        // Nobody becomes an admin by registering: operators grant the role (`taskflow admin grant`).
        is_admin: false,
        email,
        display_name,
        time_zone,
        created_at: state.clock.now(),
    };
    match state.store.create_user(&user, &hash).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict {
                code: "email_taken",
                message: "An account with this e-mail address already exists; sign in instead."
                    .into(),
            });
        }
        Err(other) => return Err(other.into()),
    }
    tracing::info!(user_id = %user.id, "account registered");
    let access_token = state.tokens.issue(&user, state.clock.now())?;
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            user: UserResponse::from(&user),
            access_token,
            token_type: "Bearer",
            expires_in: state.tokens.ttl_secs(),
        }),
    ))
}

/// Exchanges e-mail and password for an access token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if body.password.chars().count() > Password::MAX_CHARS {
        return Err(ApiError::InvalidCredentials);
    }
    let found = match Email::parse(&body.email) {
        Ok(email) => state.store.user_credentials(&email).await?,
        Err(_) => None,
    };
    let (user, hash) = match found {
        Some((user, hash)) if !hash.is_empty() => (Some(user), Some(hash)),
        _ => (None, None),
    };
    if !verify_password(body.password, hash).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let user = user.ok_or(ApiError::InvalidCredentials)?;
    Ok(Json(TokenResponse {
        access_token: state.tokens.issue(&user, state.clock.now())?,
        token_type: "Bearer",
        expires_in: state.tokens.ttl_secs(),
    }))
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = UserResponse), (status = 401, body = Problem)))]
pub async fn me(
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<UserResponse>, ApiError> {
    params.only(&[])?;
    Ok(Json(UserResponse::from(user.as_ref())))
}
