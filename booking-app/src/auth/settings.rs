//! The identity settings, read alike by `serve`, `worker`, `loadgen` and `token` (README
//! "Configuration contract"; the operator writes them into pods).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use flashsale_contract::env;

use super::AuthSetupError;

/// Shortest accepted HS256 secret: HMAC-SHA256 keys shorter than its 256-bit output are weaker.
pub const MIN_SECRET_BYTES: usize = 32;

/// Where signing keys come from, and what a token must say.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthConfig {
    /// File holding the shared HS256 secret (local use, and the operator's generated default).
    /// `booking-app token` and loadgen sign with it.
    #[arg(long, env = env::AUTH_HS256_SECRET_FILE)]
    pub auth_hs256_secret_file: Option<PathBuf>,

    /// File holding a JWKS (`{"keys":[...]}`, ES256/ES384/RS256/RS384/RS512 public keys).
    #[arg(long, env = env::AUTH_JWKS_FILE)]
    pub auth_jwks_file: Option<PathBuf>,

    /// URL of the identity provider's JWKS; fetched at start, every
    /// AUTH_JWKS_REFRESH_SECS, and when a token names an unknown `kid`.
    #[arg(long, env = env::AUTH_JWKS_URL)]
    pub auth_jwks_url: Option<String>,

    /// How often AUTH_JWKS_URL is fetched again (keys rotate).
    #[arg(long, env = "AUTH_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub auth_jwks_refresh_secs: u64,

    /// Required `iss` of every token (not checked when absent).
    #[arg(long, env = env::AUTH_ISSUER)]
    pub auth_issuer: Option<String>,

    /// Required `aud` of every token (not checked when absent).
    #[arg(long, env = env::AUTH_AUDIENCE)]
    pub auth_audience: Option<String>,

    /// Verify no token: every booking names its user in `user_id`, anyone may create events.
    /// Only for trusted networks; logged as a warning at start.
    #[arg(long, env = "AUTH_DISABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub auth_disabled: bool,

    /// Most verified tokens remembered (until they expire) so a repeated token is not verified
    /// again; beyond it expired ones are dropped, then all.
    #[arg(long, env = "AUTH_CACHE_ENTRIES", default_value_t = 10_000)]
    pub auth_cache_entries: usize,
}

impl AuthConfig {
    /// Any key source is configured.
    pub fn has_keys(&self) -> bool {
        self.auth_hs256_secret_file.is_some()
            || self.auth_jwks_file.is_some()
            || self.auth_jwks_url.is_some()
    }

    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.auth_jwks_refresh_secs.max(1))
    }

    /// The HS256 secret, when a file is configured.
    pub fn hs256_secret(&self) -> Result<Option<Vec<u8>>, AuthSetupError> {
        self.auth_hs256_secret_file
            .as_deref()
            .map(read_secret)
            .transpose()
    }
}

/// The file's bytes without trailing whitespace (a secret written by `echo` or a Secret mount).
fn read_secret(path: &Path) -> Result<Vec<u8>, AuthSetupError> {
    let mut secret = std::fs::read(path).map_err(|source| AuthSetupError::Read {
        path: path.to_owned(),
        source,
    })?;
    while secret.last().is_some_and(u8::is_ascii_whitespace) {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthSetupError::ShortSecret {
            path: path.to_owned(),
            len: secret.len(),
            min: MIN_SECRET_BYTES,
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_trimmed_and_must_be_long_enough() {
        let dir = std::env::temp_dir().join(format!("auth-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, format!("{}\n", "s".repeat(MIN_SECRET_BYTES))).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let config = |path: &Path| AuthConfig {
            auth_hs256_secret_file: Some(path.to_owned()),
            ..AuthConfig::default()
        };
        assert_eq!(
            config(&good).hs256_secret().unwrap().unwrap().len(),
            MIN_SECRET_BYTES
        );
        assert!(matches!(
            config(&short).hs256_secret(),
            Err(AuthSetupError::ShortSecret { len: 8, .. })
        ));
        assert!(matches!(
            config(&dir.join("missing")).hs256_secret(),
            Err(AuthSetupError::Read { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
