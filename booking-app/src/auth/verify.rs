//! Token verification: the header's `alg` picks the key (HS256: the shared secret; ES/RS: the
//! JWKS key named by `kid`), then signature, `exp`, `nbf`, `iss` and `aud` are checked by
//! `jsonwebtoken` and `sub` becomes the identity.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::cache::TokenCache;
use super::jwks::{JWKS_ALGORITHMS, Jwks};
use super::{ADMIN_SCOPE, AuthConfig, AuthError, AuthSetupError, Identity};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// The claims booking-app reads (`iss`, `aud`, `nbf` are checked by `jsonwebtoken`).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// OAuth 2 style: space-separated scopes.
    #[serde(default)]
    scope: Option<String>,
    /// Role claim of many identity providers.
    #[serde(default)]
    roles: Vec<String>,
}

pub struct Verifier {
    hs256: Option<Arc<DecodingKey>>,
    jwks: Option<Arc<Jwks>>,
    /// The checks of each accepted algorithm, built once (a `Validation` is several allocations).
    validations: Vec<(Algorithm, Validation)>,
    cache: TokenCache,
}

impl Verifier {
    pub async fn from_config(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let hs256 = config
            .hs256_secret()?
            .map(|secret| DecodingKey::from_secret(&secret).map(Arc::new))
            .transpose()
            .map_err(|e| AuthSetupError::Sign(e.to_string()))?;
        let jwks = match (&config.auth_jwks_file, &config.auth_jwks_url) {
            (Some(_), Some(_)) => return Err(AuthSetupError::TwoJwksSources),
            (Some(path), None) => Some(Jwks::from_file(path.clone())?),
            (None, Some(url)) => Some(Jwks::from_url(url, config.jwks_refresh()).await?),
            (None, None) => None,
        };
        if hs256.is_none() && jwks.is_none() {
            return Err(AuthSetupError::NotConfigured);
        }
        tracing::info!(
            hs256 = hs256.is_some(),
            jwks = jwks.is_some(),
            issuer = config.auth_issuer.as_deref(),
            audience = config.auth_audience.as_deref(),
            "verifying bearer tokens"
        );
        let issuer = config.auth_issuer.as_deref();
        let audience = config.auth_audience.as_deref();
        let validations = std::iter::once(Algorithm::HS256)
            .chain(JWKS_ALGORITHMS.iter().copied())
            .map(|alg| (alg, validation(alg, issuer, audience)))
            .collect();
        Ok(Self {
            hs256,
            jwks,
            validations,
            cache: TokenCache::new(config.auth_cache_entries),
        })
    }

    /// The identity `token` proves, or why it proves none.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(identity) = self.cache.get(token, now) {
            return Ok(identity);
        }
        let header = jsonwebtoken::decode_header(token).map_err(from_jwt_error)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.clone().ok_or_else(|| {
                AuthError::Invalid("HS256 tokens are not accepted by this service".into())
            })?,
            alg if JWKS_ALGORITHMS.contains(&alg) => match &self.jwks {
                Some(jwks) => jwks.key(header.kid.as_deref(), alg).await?,
                None => {
                    return Err(AuthError::Invalid(format!(
                        "{alg:?} tokens are not accepted by this service"
                    )));
                }
            },
            alg => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {alg:?} is not accepted"
                )));
            }
        };
        let validation = self
            .validations
            .iter()
            .find_map(|(alg, validation)| (*alg == header.alg).then_some(validation))
            .ok_or_else(|| {
                AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg))
            })?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, validation)
            .map_err(from_jwt_error)?
            .claims;
        crate::validation::validate_user_id(&claims.sub)
            .map_err(|e| AuthError::Invalid(format!("sub {e}")))?;
        let admin = claims
            .scope
            .as_deref()
            .is_some_and(|scope| scope.split(' ').any(|s| s == ADMIN_SCOPE))
            || claims.roles.iter().any(|r| r == ADMIN_SCOPE);
        let identity = Identity {
            user: claims.sub,
            admin,
        };
        self.cache.insert(token, identity.clone(), claims.exp, now);
        Ok(identity)
    }
}

/// What a token of `alg` must carry and satisfy: signature, `exp` and `sub` always, `nbf` when
/// present, `iss` and `aud` when configured.
fn validation(alg: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn from_jwt_error(error: jsonwebtoken::errors::Error) -> AuthError {
    let problem = match error.kind() {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key".to_owned(),
        _ => error.to_string(),
    };
    AuthError::Invalid(problem)
}
