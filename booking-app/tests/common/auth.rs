//! The identity every test app and spawned booking-app shares: one random HS256 secret file per
//! test process, a fixed issuer and audience, and tokens minted the way `booking-app token` does.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use booking_app::auth::{AuthConfig, Minter};

pub const ISSUER: &str = "flashsale-tests";
pub const AUDIENCE: &str = "booking-app-tests";
/// The harness's own caller when a request names no user: an admin, so it may create events
/// and read every booking.
pub const DEFAULT_USER: &str = "alice";
const TTL: Duration = Duration::from_secs(3600);

/// A secret file of this test process (random, never committed), created on first use.
pub fn secret_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("flashsale-test-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the test secret's directory");
        let path = dir.join("hs256-secret");
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        std::fs::write(&path, secret).expect("write the test secret");
        path
    })
}

/// The settings a test app verifies tokens with.
pub fn config() -> AuthConfig {
    AuthConfig {
        auth_hs256_secret_file: Some(secret_file().clone()),
        auth_issuer: Some(ISSUER.into()),
        auth_audience: Some(AUDIENCE.into()),
        auth_cache_entries: 10_000,
        auth_jwks_refresh_secs: 300,
        ..AuthConfig::default()
    }
}

/// The same settings as environment variables, for a spawned `booking-app`.
pub fn env() -> [(&'static str, String); 3] {
    [
        (
            "AUTH_HS256_SECRET_FILE",
            secret_file().display().to_string(),
        ),
        ("AUTH_ISSUER", ISSUER.into()),
        ("AUTH_AUDIENCE", AUDIENCE.into()),
    ]
}

fn minter() -> &'static Minter {
    static MINTER: OnceLock<Minter> = OnceLock::new();
    MINTER.get_or_init(|| {
        Minter::from_config(&config())
            .expect("test secret readable")
            .expect("a secret is configured")
    })
}

/// A valid token for `user` (an admin one when `admin`).
pub fn token(user: &str, admin: bool) -> String {
    minter().token(user, admin, TTL).expect("token signs")
}

/// The `Authorization` value of `token(user, admin)`.
pub fn bearer(user: &str, admin: bool) -> String {
    format!("Bearer {}", token(user, admin))
}

/// Headers of a harness client: `DEFAULT_USER`'s admin token, sent unless a request sets its own.
pub fn default_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        bearer(DEFAULT_USER, true).parse().expect("a header value"),
    );
    headers
}

/// The verifier of a test app configured by `config`.
pub async fn authenticator(
    config: &booking_app::config::Config,
) -> std::sync::Arc<booking_app::auth::Authenticator> {
    std::sync::Arc::new(
        booking_app::auth::Authenticator::from_config(&config.auth)
            .await
            .expect("test auth settings"),
    )
}

/// loadgen's flags for signing its users' tokens the way the test apps verify them.
pub fn loadgen_flags() -> Vec<String> {
    vec![
        "--auth-hs256-secret-file".into(),
        secret_file().display().to_string(),
        "--auth-issuer".into(),
        ISSUER.into(),
        "--auth-audience".into(),
        AUDIENCE.into(),
    ]
}
