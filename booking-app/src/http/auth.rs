//! Who is calling: the `Caller` extractor verifies `Authorization: Bearer <token>` (401 when it
//! is missing or bad) and answers the questions handlers ask: which user books, may they create
//! events, may they read this booking (403 when not).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Authenticator, Identity};

/// The caller of a request, as far as the service can tell.
#[derive(Debug, Clone)]
pub enum Caller {
    /// AUTH_DISABLED: nobody is verified; the body names the user and everything is allowed.
    Unverified,
    /// A verified token's identity.
    Verified(Identity),
}

impl Caller {
    /// The user a booking is for: the token's subject. A body `user_id` may repeat it; naming
    /// someone else is 403. Without verification the body's `user_id` is required.
    pub fn booking_user(&self, body_user: Option<String>) -> Result<String, ApiError> {
        match (self, body_user) {
            (Caller::Verified(identity), None) => Ok(identity.user.clone()),
            (Caller::Verified(identity), Some(user)) if user == identity.user => Ok(user),
            (Caller::Verified(identity), Some(_)) => Err(ApiError::forbidden(format!(
                "user_id must be the token's subject ({:?}) or omitted",
                identity.user
            ))),
            (Caller::Unverified, Some(user)) => Ok(user),
            (Caller::Unverified, None) => Err(ApiError::invalid(
                "user_id: required (AUTH_DISABLED: no token names the user)",
            )),
        }
    }

    /// 403 unless the caller may manage events.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Verified(identity) if !identity.admin => Err(ApiError::forbidden(format!(
                "creating events needs the {} scope or role",
                crate::auth::ADMIN_SCOPE
            ))),
            _ => Ok(()),
        }
    }

    /// 403 unless the caller is `owner` or an admin.
    pub fn require_owner(&self, owner: &str) -> Result<(), ApiError> {
        match self {
            Caller::Verified(identity) if !identity.admin && identity.user != owner => {
                Err(ApiError::forbidden("this booking belongs to another user"))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let verifier = match state.auth.as_ref() {
            Authenticator::Disabled => return Ok(Caller::Unverified),
            Authenticator::Verify(verifier) => verifier,
        };
        let token = bearer_token(parts)?;
        Ok(Caller::Verified(verifier.verify(token).await?))
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        tracing::debug!(%error, "request refused: no valid token");
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string())
    }
}
