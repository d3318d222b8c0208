//! Identity: who a request comes from, taken from a verified bearer token (JWT), never from the
//! body. `Authenticator` is built once from `AuthConfig` (an HS256 secret file for local use and
//! the operator's default, a JWKS file or URL for real identity providers) and verifies a token
//! into an `Identity`; `mint` makes the local HS256 tokens of `booking-app token` and loadgen.

mod cache;
mod jwks;
pub mod mint;
mod settings;
mod verify;

pub use mint::{Minter, TokenArgs};
pub use settings::AuthConfig;
pub use verify::Verifier;

/// The scope (in the space-separated `scope` claim) or role (in the `roles` claim) that allows
/// creating events and reading every booking.
pub const ADMIN_SCOPE: &str = "flashsale:admin";

/// The caller a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: the user every booking and idempotency key belongs to.
    pub user: String,
    /// The token grants `ADMIN_SCOPE`.
    pub admin: bool,
}

/// Why a request's token was not accepted (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token signed with a key this service does not know (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why token verification could not be set up (the process refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(
        "no token verification configured: set AUTH_HS256_SECRET_FILE, AUTH_JWKS_FILE or \
         AUTH_JWKS_URL, or AUTH_DISABLED=true to trust `user_id` in request bodies (never in \
         production)"
    )]
    NotConfigured,
    #[error("AUTH_JWKS_FILE and AUTH_JWKS_URL are both set: choose one key source")]
    TwoJwksSources,
    #[error("AUTH_DISABLED=true together with key settings: choose one")]
    DisabledWithKeys,
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the HS256 secret in {path} is {len} bytes; it must be at least {min}")]
    ShortSecret {
        path: std::path::PathBuf,
        len: usize,
        min: usize,
    },
    #[error("JWKS from {source_name}: {detail}")]
    Jwks { source_name: String, detail: String },
    #[error("minting tokens needs AUTH_HS256_SECRET_FILE")]
    NoSecret,
    #[error("signing a token: {0}")]
    Sign(String),
}

/// What the HTTP layer asks: who is calling. Either tokens are verified, or (AUTH_DISABLED)
/// nobody is and the body names the user as before identity existed.
pub enum Authenticator {
    /// AUTH_DISABLED=true: no token is checked; every caller may do everything.
    Disabled,
    Verify(Verifier),
}

impl Authenticator {
    /// Reads the keys `config` names (fetching a JWKS URL once). Refuses when nothing is
    /// configured and auth is not explicitly disabled.
    pub async fn from_config(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        if config.auth_disabled {
            if config.has_keys() {
                return Err(AuthSetupError::DisabledWithKeys);
            }
            tracing::warn!(
                "AUTH_DISABLED=true: bearer tokens are not verified and every request's body \
                 names its user; anyone reaching the API can book as anyone"
            );
            return Ok(Self::Disabled);
        }
        if !config.has_keys() {
            return Err(AuthSetupError::NotConfigured);
        }
        Ok(Self::Verify(Verifier::from_config(config).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_configured_is_refused_and_disabled_must_be_alone() {
        let none = Authenticator::from_config(&AuthConfig::default()).await;
        assert!(matches!(none, Err(AuthSetupError::NotConfigured)));
        let disabled = AuthConfig {
            auth_disabled: true,
            ..AuthConfig::default()
        };
        assert!(matches!(
            Authenticator::from_config(&disabled).await,
            Ok(Authenticator::Disabled)
        ));
        let both = AuthConfig {
            auth_disabled: true,
            auth_jwks_file: Some("/nonexistent".into()),
            ..AuthConfig::default()
        };
        assert!(matches!(
            Authenticator::from_config(&both).await,
            Err(AuthSetupError::DisabledWithKeys)
        ));
        let two = AuthConfig {
            auth_jwks_file: Some("/a".into()),
            auth_jwks_url: Some("http://b".into()),
            ..AuthConfig::default()
        };
        assert!(matches!(
            Authenticator::from_config(&two).await,
            Err(AuthSetupError::TwoJwksSources)
        ));
    }
}
