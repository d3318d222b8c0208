//! The public keys of an identity provider, from a JWKS file or URL. A URL is fetched at start,
//! refreshed every AUTH_JWKS_REFRESH_SECS, and fetched again (at most every `MIN_REFETCH`) when a
//! token names a `kid` the set does not have, so a key rotation is picked up without a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{AuthError, AuthSetupError};

/// Algorithms accepted from a JWKS: asymmetric only, so a public key can never be used as an
/// HMAC secret (algorithm confusion).
pub const JWKS_ALGORITHMS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
];

/// An unknown `kid` triggers a fetch at most this often, so garbage tokens cannot hammer the IdP.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// A JWKS fetch taking longer fails (the previous keys stay).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One usable key: the key and the algorithm it is restricted to (`alg` of the JWK), if any.
struct Key {
    key: Arc<DecodingKey>,
    alg: Option<Algorithm>,
}

/// The keys of one JWKS document.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Key>,
    /// Keys without a `kid`: used when a token names none.
    unnamed: Vec<Key>,
}

enum Source {
    /// Read once at start; a new key set is a new rollout.
    File,
    Url {
        url: axum::http::Uri,
        // Boxed: the client is large, and `File` carries nothing.
        client: Box<HttpsClient>,
    },
}

pub struct Jwks {
    source: Source,
    keys: RwLock<Arc<KeySet>>,
    /// When the URL was last fetched; held across a fetch so concurrent misses fetch once.
    fetched: tokio::sync::Mutex<Instant>,
}

impl Jwks {
    pub fn from_file(path: PathBuf) -> Result<Arc<Self>, AuthSetupError> {
        let bytes = std::fs::read(&path).map_err(|source| AuthSetupError::Read {
            path: path.clone(),
            source,
        })?;
        let keys = parse(&bytes).map_err(|detail| AuthSetupError::Jwks {
            source_name: path.display().to_string(),
            detail,
        })?;
        Ok(Arc::new(Self {
            source: Source::File,
            keys: RwLock::new(Arc::new(keys)),
            fetched: tokio::sync::Mutex::new(Instant::now()),
        }))
    }

    /// Fetches `url` once (start-up fails if that fails) and refreshes it every `refresh`.
    pub async fn from_url(url: &str, refresh: Duration) -> Result<Arc<Self>, AuthSetupError> {
        let setup = |detail: String| AuthSetupError::Jwks {
            source_name: url.to_owned(),
            detail,
        };
        let uri = axum::http::Uri::from_str(url).map_err(|e| setup(e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| setup(format!("TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let keys = fetch(&client, &uri).await.map_err(setup)?;
        tracing::info!(
            url,
            keys = keys.by_kid.len() + keys.unnamed.len(),
            "JWKS fetched"
        );
        let jwks = Arc::new(Self {
            source: Source::Url {
                url: uri,
                client: Box::new(client),
            },
            keys: RwLock::new(Arc::new(keys)),
            fetched: tokio::sync::Mutex::new(Instant::now()),
        });
        tokio::spawn(refresh_every(Arc::downgrade(&jwks), refresh));
        Ok(jwks)
    }

    /// The key a token with `kid` and `alg` is verified with.
    pub async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(key) = self.find(kid, alg)? {
            return Ok(key);
        }
        if matches!(self.source, Source::Url { .. }) {
            self.refetch(Some(MIN_REFETCH)).await;
            if let Some(key) = self.find(kid, alg)? {
                return Ok(key);
            }
        }
        Err(AuthError::UnknownKey(kid.map(str::to_owned)))
    }

    fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<Arc<DecodingKey>>, AuthError> {
        let keys = self.keys.read().expect("JWKS lock").clone();
        let key = match kid {
            Some(kid) => keys.by_kid.get(kid),
            None => match keys.unnamed.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        };
        let Some(key) = key else { return Ok(None) };
        if key.alg.is_some_and(|restricted| restricted != alg) {
            return Err(AuthError::Invalid(format!(
                "the key is for {:?}, the token says {alg:?}",
                key.alg.unwrap()
            )));
        }
        Ok(Some(key.key.clone()))
    }

    /// Fetches the URL again unless it was fetched less than `unless_within` ago; a failure
    /// keeps the previous keys.
    async fn refetch(&self, unless_within: Option<Duration>) {
        let Source::Url { url, client } = &self.source else {
            return;
        };
        let mut fetched = self.fetched.lock().await;
        if unless_within.is_some_and(|within| fetched.elapsed() < within) {
            return;
        }
        *fetched = Instant::now();
        match fetch(client, url).await {
            Ok(keys) => *self.keys.write().expect("JWKS lock") = Arc::new(keys),
            Err(error) => {
                tracing::warn!(%url, error, "JWKS refresh failed; keeping the previous keys")
            }
        }
    }
}

async fn refresh_every(jwks: Weak<Jwks>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(jwks) = jwks.upgrade() else { return };
        jwks.refetch(None).await;
    }
}

async fn fetch(client: &HttpsClient, url: &axum::http::Uri) -> Result<KeySet, String> {
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.get(url.clone()))
        .await
        .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = tokio::time::timeout(
        FETCH_TIMEOUT,
        Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
    )
    .await
    .map_err(|_| format!("body not read within {FETCH_TIMEOUT:?}"))?
    .map_err(|e| e.to_string())?;
    parse(&body.to_bytes())
}

/// The usable keys of a JWKS document: RSA and EC keys; symmetric and unknown ones are skipped.
fn parse(bytes: &[u8]) -> Result<KeySet, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = KeySet::default();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        if !matches!(
            jwk.algorithm,
            AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
        ) {
            tracing::warn!(?kid, "JWKS key skipped: only RSA and EC keys are accepted");
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            Some(alg) => match Algorithm::from_str(&alg.to_string()) {
                Ok(alg) if JWKS_ALGORITHMS.contains(&alg) => Some(alg),
                _ => {
                    tracing::warn!(?kid, %alg, "JWKS key skipped: algorithm not accepted");
                    continue;
                }
            },
            None => None,
        };
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(key) => Arc::new(key),
            Err(error) => {
                tracing::warn!(?kid, %error, "JWKS key skipped: unreadable");
                continue;
            }
        };
        match kid {
            Some(kid) => {
                keys.by_kid.insert(kid, Key { key, alg });
            }
            None => keys.unnamed.push(Key { key, alg }),
        }
    }
    if keys.by_kid.is_empty() && keys.unnamed.is_empty() {
        return Err("no usable key (RSA or EC) in the set".into());
    }
    Ok(keys)
}
