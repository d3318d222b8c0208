//! The identity settings of booking-app containers (`spec.auth`, booking-app's `AUTH_*`). The
//! sale's API pods verify what `spec.auth.jwks` names, the identity provider's keys (a URL, or a
//! ConfigMap key mounted as a file), and then nothing else: the generated HS256 secret is not
//! mounted into them, so whoever can read the sale's Secret cannot mint a token the live sale
//! accepts. Without a JWKS they verify that generated secret. Calibration's scratch pod and its
//! loadgen always use the generated secret, since loadgen mints its own users' tokens, with the
//! sale's issuer and audience. Workers and drain Jobs neither verify nor mint: they get nothing.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};

use super::names::{self, secret_keys};
use super::pod::env;
use crate::contract;
use crate::crd::JwksSource;
use crate::reconcile::validate::Sale;

/// Where the sale's HS256 signing secret is mounted.
const SECRET_DIR: &str = "/var/run/flashsale/auth";
const SECRET_FILE: &str = "hs256-secret";
const SECRET_VOLUME: &str = "auth";
/// Where `spec.auth.jwks.configMapRef` is mounted.
const JWKS_DIR: &str = "/var/run/flashsale/jwks";
const JWKS_FILE: &str = "jwks.json";
const JWKS_VOLUME: &str = "auth-jwks";

/// Which tokens a booking-app container deals in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// Neither verifies nor mints (the worker, the drain Job).
    None,
    /// The sale's API: `spec.auth.jwks` when set, else the generated secret.
    Sale,
    /// Calibration (scratch API pod and loadgen): the generated secret, whatever `spec.auth` says.
    Generated,
}

/// Adds `tokens`' settings to `container`: its `AUTH_*` variables and the mount of its key
/// material (`pod_volumes` gives the pod the matching volume).
pub fn configure(sale: &Sale, tokens: Tokens, container: &mut Container) {
    let auth = sale.spec.auth.as_ref();
    let jwks = auth.and_then(|a| a.jwks.as_ref());
    let (mut vars, mount): (Vec<EnvVar>, Option<VolumeMount>) = match (tokens, jwks) {
        (Tokens::None, _) => return,
        (Tokens::Sale, Some(JwksSource { url: Some(url), .. })) => {
            (vec![env(contract::AUTH_JWKS_URL, url.clone())], None)
        }
        (
            Tokens::Sale,
            Some(JwksSource {
                config_map_ref: Some(_),
                ..
            }),
        ) => (
            vec![env(
                contract::AUTH_JWKS_FILE,
                format!("{JWKS_DIR}/{JWKS_FILE}"),
            )],
            Some(mount(JWKS_VOLUME, JWKS_DIR)),
        ),
        // No JWKS (or an empty source, which the CRD refuses): the generated secret.
        (Tokens::Sale | Tokens::Generated, _) => (
            vec![env(
                contract::AUTH_HS256_SECRET_FILE,
                format!("{SECRET_DIR}/{SECRET_FILE}"),
            )],
            Some(mount(SECRET_VOLUME, SECRET_DIR)),
        ),
    };
    if let Some(issuer) = auth.and_then(|a| a.issuer.clone()) {
        vars.push(env(contract::AUTH_ISSUER, issuer));
    }
    if let Some(audience) = auth.and_then(|a| a.audience.clone()) {
        vars.push(env(contract::AUTH_AUDIENCE, audience));
    }
    container.env.get_or_insert_with(Vec::new).extend(vars);
    if let Some(mount) = mount {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(mount);
    }
}

fn mount(volume: &str, dir: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: dir.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The volumes behind the key material `container` mounts: a pod holds no key it does not use.
pub fn pod_volumes(sale: &Sale, container: &Container) -> Vec<Volume> {
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let mounted = |name: &str| mounts.iter().any(|m| m.name == name);
    let mut volumes = vec![];
    if mounted(SECRET_VOLUME) {
        volumes.push(Volume {
            name: SECRET_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::credentials_secret(&sale.name)),
                items: Some(vec![KeyToPath {
                    key: secret_keys::AUTH_HS256_SECRET.into(),
                    path: SECRET_FILE.into(),
                    ..KeyToPath::default()
                }]),
                // Readable by the non-root UID without an fsGroup; the container is its only reader.
                default_mode: Some(0o444),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let config_map = sale
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.jwks.as_ref())
        .and_then(|j| j.config_map_ref.as_ref());
    if mounted(JWKS_VOLUME)
        && let Some(r) = config_map
    {
        volumes.push(Volume {
            name: JWKS_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: r.name.clone(),
                items: Some(vec![KeyToPath {
                    key: r.key.clone(),
                    path: JWKS_FILE.into(),
                    ..KeyToPath::default()
                }]),
                default_mode: Some(0o444),
                // A missing ConfigMap or key keeps the pod from starting rather than serving
                // without the keys it was told to trust.
                optional: Some(false),
            }),
            ..Volume::default()
        });
    }
    volumes
}
