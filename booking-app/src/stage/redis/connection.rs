//! Connecting to Redis and telling "Redis is down or busy, retry" (503) apart from real faults.
//! TLS is the URL's business (`rediss://`), with the CA and client certificate from the
//! REDIS_TLS_* files; rustls on ring, the process's one crypto provider.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ClientTlsConfig, ErrorKind, RedisError, ServerErrorKind, TlsCertificates};

use crate::config::RedisConfig;
use crate::stage::StageError;

/// The client of `config`'s Redis (`what` names the caller in the error: stage redis, the
/// syncer). TLS files given with a `redis://` URL are refused: they would go unused and the
/// connection be plain text.
pub fn client(config: &RedisConfig, what: &str) -> Result<redis::Client, StageError> {
    let url = config
        .redis_url
        .as_deref()
        .ok_or_else(|| StageError::Internal(format!("{what} needs REDIS_URL (--redis-url)")))?;
    let invalid = |detail: String| StageError::Invalid(format!("REDIS_URL: {detail}"));
    let tls_files = config.redis_tls_ca_file.is_some() || config.redis_tls_cert_file.is_some();
    if !url.starts_with("rediss://") {
        if tls_files {
            return Err(invalid(
                "REDIS_TLS_* files need a rediss:// URL (TLS); this one is plain text".into(),
            ));
        }
        return redis::Client::open(url).map_err(|e| invalid(e.to_string()));
    }
    let client_tls = match (&config.redis_tls_cert_file, &config.redis_tls_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("REDIS_TLS_CERT_FILE", cert)?,
            client_key: read("REDIS_TLS_KEY_FILE", key)?,
        }),
        _ => None,
    };
    let root_cert = match &config.redis_tls_ca_file {
        Some(ca) => Some(read("REDIS_TLS_CA_FILE", ca)?),
        None => None,
    };
    redis::Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| invalid(e.to_string()))
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, StageError> {
    std::fs::read(path)
        .map_err(|e| StageError::Invalid(format!("{setting} {}: {e}", path.display())))
}

/// A self-healing multiplexed connection. While Redis is down, a command fails after at most
/// about a second (two quick reconnect attempts) instead of queueing behind the reconnects, so
/// callers answer 503 and clients retry with their idempotency key.
pub async fn connect(
    client: &redis::Client,
    response_timeout: Duration,
) -> Result<ConnectionManager, StageError> {
    let client = client.clone();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(classify)
}

/// A few multiplexed connections, handed out round-robin. One connection is not enough under
/// load: Redis reads at most 16 KB from a client per event-loop iteration and, with
/// `appendfsync always`, fsyncs once per iteration, so a single connection carrying every
/// booking gets ~25 booking scripts into each fsync however many requests wait. Each connection
/// adds its own 16 KB to the iteration: N connections, up to N times the scripts per fsync.
#[derive(Clone)]
pub struct Pool {
    connections: Arc<[ConnectionManager]>,
    next: Arc<AtomicUsize>,
}

impl Pool {
    /// `size` connections (at least one), each self-healing as `connect` describes.
    pub async fn connect(
        client: &redis::Client,
        response_timeout: Duration,
        size: usize,
    ) -> Result<Self, StageError> {
        let connections = futures::future::try_join_all(
            (0..size.max(1)).map(|_| connect(client, response_timeout)),
        )
        .await?;
        Ok(Self {
            connections: connections.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The next connection in turn (a clone is a handle on the same connection).
    pub fn get(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }
}

/// Redis errors that mean "not now" become `Unavailable` (503, retry); the rest stay `Redis`
/// (500, a bug or a broken deployment).
pub fn classify(err: RedisError) -> StageError {
    let transient = err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
        // MISCONF: Redis refuses writes because it cannot persist them (disk full, AOF error).
        // BUSY: a script runs too long. OOM: `maxmemory` is reached and the policy is
        // `noeviction` (nothing is evicted: an evicted claim or unsynced booking would be lost),
        // so writes are refused until the syncer and the expiries free memory. All pass.
        || matches!(err.code(), Some("MISCONF" | "BUSY" | "OOM"));
    if transient {
        StageError::Unavailable {
            store: "redis",
            detail: err.to_string(),
        }
    } else {
        StageError::Redis(err)
    }
}
