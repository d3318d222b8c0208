//! The sale's generated credentials Secret: passwords for the in-cluster Postgres and Redis,
//! the URLs booking-app reads, and the HS256 secret its bearer tokens are signed with (mounted
//! as a file into every booking-app pod: API, worker, calibration). Generated once (by `observe`, when the Secret does not exist
//! yet) and then read back every reconcile, never regenerated: the data volumes were
//! initialised with them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::labels::Component;
use super::names::{self, secret_keys};
use super::pod::meta;
use super::{POSTGRES_DATABASE, POSTGRES_PORT, POSTGRES_USER, REDIS_PORT};
use crate::reconcile::validate::Sale;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub postgres_password: String,
    pub redis_password: String,
    /// booking-app's AUTH_HS256_SECRET_FILE content: the calibration Job's loadgen and
    /// `booking-app token` sign with it, the API verifies with it.
    pub auth_secret: String,
}

impl Credentials {
    /// Fresh random passwords: alphanumeric, so they need no escaping inside a URL.
    pub fn generate() -> Self {
        Self {
            postgres_password: random_secret(32),
            redis_password: random_secret(32),
            auth_secret: random_secret(AUTH_SECRET_LEN),
        }
    }

    /// The passwords an existing Secret holds, if it holds both.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let read = |key: &str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|s| !s.is_empty())
        };
        Some(Self {
            postgres_password: read(secret_keys::POSTGRES_PASSWORD)?,
            redis_password: read(secret_keys::REDIS_PASSWORD)?,
            // A Secret written before tokens existed gets one now; the passwords are kept.
            auth_secret: read(secret_keys::AUTH_HS256_SECRET)
                .unwrap_or_else(|| random_secret(AUTH_SECRET_LEN)),
        })
    }
}

/// 48 alphanumeric characters: ~285 bits, above HMAC-SHA256's 256 (booking-app wants >= 32 bytes).
const AUTH_SECRET_LEN: usize = 48;

/// Random alphanumeric characters: no escaping needed inside a URL or a file.
fn random_secret(len: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn secret(sale: &Sale, creds: &Credentials) -> Secret {
    let postgres_host = names::service_host(&names::postgres(&sale.name), &sale.namespace);
    let redis_host = names::service_host(&names::redis(&sale.name), &sale.namespace);
    let data = BTreeMap::from([
        (
            secret_keys::POSTGRES_PASSWORD,
            creds.postgres_password.clone(),
        ),
        (
            secret_keys::DATABASE_URL,
            format!(
                "postgres://{POSTGRES_USER}:{}@{postgres_host}:{POSTGRES_PORT}/{POSTGRES_DATABASE}",
                creds.postgres_password
            ),
        ),
        (secret_keys::REDIS_PASSWORD, creds.redis_password.clone()),
        (secret_keys::AUTH_HS256_SECRET, creds.auth_secret.clone()),
        (
            secret_keys::REDIS_URL,
            format!(
                "redis://:{}@{redis_host}:{REDIS_PORT}/0",
                creds.redis_password
            ),
        ),
    ]);
    Secret {
        metadata: meta(
            sale,
            names::credentials_secret(&sale.name),
            Component::Credentials,
            None,
        ),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sale;
    use flashsale_contract::Stage;

    #[test]
    fn secret_round_trips_its_passwords() {
        let creds = Credentials::generate();
        let secret = secret(&sale("s", Stage::Redis), &creds);
        assert_eq!(Credentials::from_secret(&secret), Some(creds.clone()));
        let url =
            String::from_utf8(secret.data.unwrap()[secret_keys::DATABASE_URL].0.clone()).unwrap();
        assert_eq!(
            url,
            format!(
                "postgres://flashsale:{}@s-postgres.ns.svc:5432/flashsale",
                creds.postgres_password
            )
        );
    }

    #[test]
    fn generated_passwords_are_long_random_and_url_safe() {
        let (a, b) = (Credentials::generate(), Credentials::generate());
        assert_ne!(a, b);
        assert_eq!(a.postgres_password.len(), 32);
        assert!(a.redis_password.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn a_secret_missing_a_password_is_not_trusted() {
        let mut secret = secret(&sale("s", Stage::Redis), &Credentials::generate());
        secret
            .data
            .as_mut()
            .unwrap()
            .remove(secret_keys::REDIS_PASSWORD);
        assert_eq!(Credentials::from_secret(&secret), None);
    }

    #[test]
    fn a_secret_from_before_tokens_keeps_its_passwords_and_gains_a_signing_secret() {
        let creds = Credentials::generate();
        let mut secret = secret(&sale("s", Stage::Redis), &creds);
        secret
            .data
            .as_mut()
            .unwrap()
            .remove(secret_keys::AUTH_HS256_SECRET);
        let read = Credentials::from_secret(&secret).unwrap();
        assert_eq!(read.postgres_password, creds.postgres_password);
        assert_eq!(read.redis_password, creds.redis_password);
        assert_eq!(read.auth_secret.len(), AUTH_SECRET_LEN);
    }
}
