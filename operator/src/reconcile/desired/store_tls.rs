//! TLS and authentication to external stores: what a booking-app container gets from the keys an
//! external store's Secret carries beside its URL (`contract::external_secret`, found by
//! `observe` and kept in `Sale::external_keys`). Certificates, keys and the SASL password are
//! mounted as files from that Secret, never put into a variable's value; the variables name the
//! files. Postgres with a CA is `verify-full` (the URL's `sslmode` overridden); Redis verifies
//! with it when its URL is `rediss://`; Kafka's protocol is the Secret's `security.protocol`, or
//! SASL_SSL when it carries SASL credentials, SSL when it carries only certificates. A container
//! gets the settings of the stores its stage uses; `pod_volumes` gives the pod the volumes its
//! container mounts.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};

use super::pod::{env, env_from_secret};
use crate::contract::{self, external_secret as key};
use crate::crd::SecretKeyRef;
use crate::reconcile::validate::{Sale, Store};
use flashsale_contract::Stage;

/// An external store, and how its files and variables are named in booking-app's contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Redis,
    Kafka,
}

impl StoreKind {
    const ALL: [StoreKind; 3] = [StoreKind::Postgres, StoreKind::Redis, StoreKind::Kafka];

    fn volume(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres-tls",
            StoreKind::Redis => "redis-tls",
            StoreKind::Kafka => "kafka-tls",
        }
    }

    fn dir(self) -> String {
        format!("/var/run/flashsale/{}", self.volume())
    }

    /// The variables naming the CA file and the client certificate and key files.
    fn file_vars(self) -> [&'static str; 3] {
        match self {
            StoreKind::Postgres => [
                contract::DB_SSL_ROOT_CERT,
                contract::DB_SSL_CLIENT_CERT,
                contract::DB_SSL_CLIENT_KEY,
            ],
            StoreKind::Redis => [
                contract::REDIS_TLS_CA_FILE,
                contract::REDIS_TLS_CERT_FILE,
                contract::REDIS_TLS_KEY_FILE,
            ],
            StoreKind::Kafka => [
                contract::KAFKA_SSL_CA_FILE,
                contract::KAFKA_SSL_CERT_FILE,
                contract::KAFKA_SSL_KEY_FILE,
            ],
        }
    }

    /// The Secret keys this store reads (others are left alone).
    fn keys(self) -> &'static [&'static str] {
        match self {
            StoreKind::Postgres | StoreKind::Redis => &[key::CA, key::TLS_CERT, key::TLS_KEY],
            StoreKind::Kafka => &key::KEYS,
        }
    }

    /// The keys mounted as files.
    fn file_keys(self) -> &'static [&'static str] {
        match self {
            StoreKind::Postgres | StoreKind::Redis => &[key::CA, key::TLS_CERT, key::TLS_KEY],
            StoreKind::Kafka => &[
                key::CA,
                key::TLS_CERT,
                key::TLS_KEY,
                key::KAFKA_SASL_PASSWORD,
            ],
        }
    }

    fn store(self, sale: &Sale) -> &Store {
        match self {
            StoreKind::Postgres => &sale.postgres,
            StoreKind::Redis => &sale.redis,
            StoreKind::Kafka => &sale.kafka,
        }
    }

    fn used_by(self, stage: Stage) -> bool {
        match self {
            StoreKind::Postgres => true,
            StoreKind::Redis => stage.uses_redis(),
            StoreKind::Kafka => stage.uses_kafka(),
        }
    }
}

/// Keys a Secret lacks for what it carries: a certificate needs its key (and the reverse), SASL
/// credentials need user, password and mechanism. Reported like a missing URL key (StoresReady
/// False, `ExternalSecretMissing`), so a half-given credential never reaches a pod.
pub fn incomplete(kind: StoreKind, keys: &BTreeSet<String>) -> Vec<&'static str> {
    let has = |k: &str| keys.contains(k);
    let mut groups = vec![[key::TLS_CERT, key::TLS_KEY].as_slice()];
    if kind == StoreKind::Kafka {
        groups.push(&[
            key::KAFKA_SASL_MECHANISM,
            key::KAFKA_SASL_USERNAME,
            key::KAFKA_SASL_PASSWORD,
        ]);
    }
    groups
        .into_iter()
        .filter(|group| group.iter().any(|k| has(k)))
        .flat_map(|group| group.iter().copied().filter(|k| !has(k)))
        .collect()
}

/// The store's Secret and the keys of `kind` it carries, when the store is external.
fn external(sale: &Sale, kind: StoreKind) -> Option<(&SecretKeyRef, Vec<&'static str>)> {
    let Store::External(secret) = kind.store(sale) else {
        return None;
    };
    let found = sale.external_keys.get(&secret.name)?;
    let keys: Vec<_> = kind
        .keys()
        .iter()
        .copied()
        .filter(|k| found.contains(*k))
        .collect();
    (!keys.is_empty()).then_some((secret, keys))
}

/// The variables of `kind` for a Secret carrying `keys`.
fn vars(kind: StoreKind, secret: &SecretKeyRef, keys: &[&str]) -> Vec<EnvVar> {
    let has = |k: &str| keys.contains(&k);
    let file = |k: &str| format!("{}/{k}", kind.dir());
    let [ca_var, cert_var, key_var] = kind.file_vars();
    let mut vars = vec![];
    if has(key::CA) {
        vars.push(env(ca_var, file(key::CA)));
    }
    if has(key::TLS_CERT) && has(key::TLS_KEY) {
        vars.push(env(cert_var, file(key::TLS_CERT)));
        vars.push(env(key_var, file(key::TLS_KEY)));
    }
    match kind {
        // A CA given is a CA to verify against, host name included.
        StoreKind::Postgres if has(key::CA) => {
            vars.push(env(
                contract::DB_SSL_MODE,
                contract::DB_SSL_MODE_VERIFY_FULL,
            ));
        }
        StoreKind::Kafka => {
            let sasl = has(key::KAFKA_SASL_USERNAME);
            if has(key::KAFKA_SECURITY_PROTOCOL) {
                vars.push(env_from_secret(
                    contract::KAFKA_SECURITY_PROTOCOL,
                    &secret.name,
                    key::KAFKA_SECURITY_PROTOCOL,
                ));
            } else if sasl {
                vars.push(env(
                    contract::KAFKA_SECURITY_PROTOCOL,
                    contract::KAFKA_SECURITY_SASL_SSL,
                ));
            } else if has(key::CA) || has(key::TLS_CERT) {
                vars.push(env(
                    contract::KAFKA_SECURITY_PROTOCOL,
                    contract::KAFKA_SECURITY_SSL,
                ));
            }
            if sasl {
                vars.push(env_from_secret(
                    contract::KAFKA_SASL_MECHANISM,
                    &secret.name,
                    key::KAFKA_SASL_MECHANISM,
                ));
                vars.push(env_from_secret(
                    contract::KAFKA_SASL_USERNAME,
                    &secret.name,
                    key::KAFKA_SASL_USERNAME,
                ));
                vars.push(env(
                    contract::KAFKA_SASL_PASSWORD_FILE,
                    file(key::KAFKA_SASL_PASSWORD),
                ));
            }
        }
        StoreKind::Postgres | StoreKind::Redis => {}
    }
    vars
}

/// Adds the TLS and SASL settings of the external stores `stage` uses to `container`: the
/// variables, and the mount of each store's files.
pub fn configure(sale: &Sale, stage: Stage, container: &mut Container) {
    for kind in StoreKind::ALL.into_iter().filter(|k| k.used_by(stage)) {
        let Some((secret, keys)) = external(sale, kind) else {
            continue;
        };
        container
            .env
            .get_or_insert_with(Vec::new)
            .extend(vars(kind, secret, &keys));
        if keys.iter().any(|k| kind.file_keys().contains(k)) {
            container
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: kind.volume().into(),
                    mount_path: kind.dir(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
        }
    }
}

/// The volumes behind the store files `container` mounts: each holds only the store's file keys
/// its Secret carries (never its URL, which stays a variable from the same Secret).
pub fn pod_volumes(sale: &Sale, container: &Container) -> Vec<Volume> {
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    StoreKind::ALL
        .into_iter()
        .filter(|kind| mounts.iter().any(|m| m.name == kind.volume()))
        .filter_map(|kind| {
            let (secret, keys) = external(sale, kind)?;
            let items = keys
                .iter()
                .filter(|k| kind.file_keys().contains(k))
                .map(|k| KeyToPath {
                    key: (*k).into(),
                    path: (*k).into(),
                    ..KeyToPath::default()
                })
                .collect();
            Some(Volume {
                name: kind.volume().into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.name.clone()),
                    items: Some(items),
                    // Readable by the non-root UID without an fsGroup; the container is its only
                    // reader.
                    default_mode: Some(0o444),
                    optional: Some(false),
                }),
                ..Volume::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::crd::{ExternalStore, SecretKeyRef};
    use crate::fixtures::{FlashSaleBuilder, sale_from, sizing};
    use crate::reconcile::desired::auth::Tokens;
    use crate::reconcile::desired::booking_app;
    use crate::reconcile::desired::testing::mount_of;
    use k8s_openapi::api::core::v1::PodSpec;

    fn keys(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|k| (*k).to_string()).collect()
    }

    fn external(secret: &str) -> Option<ExternalStore> {
        Some(ExternalStore {
            secret_ref: SecretKeyRef {
                name: secret.into(),
                key: "url".into(),
            },
        })
    }

    /// A sale of `stage` with every store external: Postgres in `pg`, Redis in `redis`, Kafka
    /// in `kafka`, each Secret carrying `found[secret]`.
    fn sale(stage: Stage, found: &[(&str, &[&str])]) -> Sale {
        let mut fs = FlashSaleBuilder::new("s", stage).build();
        fs.spec.postgres.external = external("pg");
        fs.spec.redis.external = external("redis");
        fs.spec.kafka.external = external("kafka");
        let mut sale = sale_from(&fs);
        sale.external_keys = found
            .iter()
            .map(|(secret, list)| ((*secret).to_string(), keys(list)))
            .collect::<BTreeMap<_, _>>();
        sale
    }

    fn pod(sale: &Sale, stage: Stage, args: &str) -> PodSpec {
        let container = booking_app::container(
            sale,
            stage,
            &sizing(1),
            vec![args.into()],
            true,
            Tokens::None,
        );
        booking_app::pod_spec(sale, container, None)
    }

    fn value(pod: &PodSpec, var: &str) -> Option<String> {
        let e = pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == var)?;
        Some(match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let r = from.secret_key_ref.as_ref().unwrap();
                format!("secret:{}/{}", r.name, r.key)
            }
            _ => panic!("{var} has neither value nor source"),
        })
    }

    /// The file `var` names is a key of `secret` mounted at that path, read-only.
    fn assert_mounted(pod: &PodSpec, var: &str, secret: &str, key: &str) {
        let path = value(pod, var).unwrap_or_else(|| panic!("{var} not set"));
        let (_, volume, file) = mount_of(pod, &path);
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some(secret));
        assert!(
            source
                .items
                .iter()
                .flatten()
                .any(|i| i.key == key && i.path == file),
            "{var}: {secret}/{key} is not mounted as {path}"
        );
    }

    #[test]
    fn postgres_with_a_ca_and_client_certificate_is_verify_full_from_mounted_files() {
        let sale = sale(
            Stage::Postgres,
            &[("pg", &[key::CA, key::TLS_CERT, key::TLS_KEY])],
        );
        let pod = pod(&sale, Stage::Postgres, "serve");
        assert_eq!(
            value(&pod, contract::DB_SSL_MODE).as_deref(),
            Some("verify-full")
        );
        assert_mounted(&pod, contract::DB_SSL_ROOT_CERT, "pg", key::CA);
        assert_mounted(&pod, contract::DB_SSL_CLIENT_CERT, "pg", key::TLS_CERT);
        assert_mounted(&pod, contract::DB_SSL_CLIENT_KEY, "pg", key::TLS_KEY);
        assert_eq!(
            value(&pod, contract::DATABASE_URL).as_deref(),
            Some("secret:pg/url")
        );
    }

    #[test]
    fn a_client_certificate_alone_keeps_the_urls_sslmode() {
        let sale = sale(Stage::Postgres, &[("pg", &[key::TLS_CERT, key::TLS_KEY])]);
        let pod = pod(&sale, Stage::Postgres, "serve");
        assert_eq!(value(&pod, contract::DB_SSL_MODE), None);
        assert_eq!(value(&pod, contract::DB_SSL_ROOT_CERT), None);
        assert_mounted(&pod, contract::DB_SSL_CLIENT_CERT, "pg", key::TLS_CERT);
    }

    #[test]
    fn redis_gets_its_ca_and_client_certificate_in_every_pod_of_stage_redis() {
        let sale = sale(
            Stage::Redis,
            &[("redis", &[key::CA, key::TLS_CERT, key::TLS_KEY])],
        );
        for args in ["serve", "worker"] {
            let pod = pod(&sale, Stage::Redis, args);
            assert_mounted(&pod, contract::REDIS_TLS_CA_FILE, "redis", key::CA);
            assert_mounted(&pod, contract::REDIS_TLS_CERT_FILE, "redis", key::TLS_CERT);
            assert_mounted(&pod, contract::REDIS_TLS_KEY_FILE, "redis", key::TLS_KEY);
        }
        // Stage postgres does not use Redis: neither its files nor its settings.
        let pod = pod(&sale, Stage::Postgres, "serve");
        assert_eq!(value(&pod, contract::REDIS_TLS_CA_FILE), None);
        assert!(pod.volumes.iter().flatten().all(|v| v.name != "redis-tls"));
    }

    #[test]
    fn kafka_sasl_credentials_are_sasl_ssl_with_the_password_as_a_file() {
        let sale = sale(
            Stage::Kafka,
            &[(
                "kafka",
                &[
                    key::CA,
                    key::KAFKA_SASL_MECHANISM,
                    key::KAFKA_SASL_USERNAME,
                    key::KAFKA_SASL_PASSWORD,
                ],
            )],
        );
        let pod = pod(&sale, Stage::Kafka, "worker");
        assert_eq!(
            value(&pod, contract::KAFKA_SECURITY_PROTOCOL).as_deref(),
            Some("SASL_SSL")
        );
        assert_eq!(
            value(&pod, contract::KAFKA_SASL_MECHANISM).as_deref(),
            Some("secret:kafka/sasl.mechanism")
        );
        assert_eq!(
            value(&pod, contract::KAFKA_SASL_USERNAME).as_deref(),
            Some("secret:kafka/sasl.username")
        );
        assert_mounted(
            &pod,
            contract::KAFKA_SASL_PASSWORD_FILE,
            "kafka",
            key::KAFKA_SASL_PASSWORD,
        );
        assert_mounted(&pod, contract::KAFKA_SSL_CA_FILE, "kafka", key::CA);
        let container = &pod.containers[0];
        assert!(
            container
                .env
                .iter()
                .flatten()
                .all(|e| e
                    .value_from
                    .as_ref()
                    .is_none_or(|f| f.secret_key_ref.as_ref().is_none_or(|r| r.key
                        != key::KAFKA_SASL_PASSWORD
                        && r.key != key::TLS_KEY))),
            "no key or password is a variable's value"
        );
    }

    #[test]
    fn kafka_protocol_is_the_secrets_or_derived_from_what_it_carries() {
        let protocol = |found: &[&str]| {
            let sale = sale(Stage::Kafka, &[("kafka", found)]);
            value(
                &pod(&sale, Stage::Kafka, "serve"),
                contract::KAFKA_SECURITY_PROTOCOL,
            )
        };
        assert_eq!(protocol(&[key::CA]).as_deref(), Some("SSL"));
        assert_eq!(
            protocol(&[key::TLS_CERT, key::TLS_KEY]).as_deref(),
            Some("SSL")
        );
        assert_eq!(
            protocol(&[key::KAFKA_SECURITY_PROTOCOL, key::CA]).as_deref(),
            Some("secret:kafka/security.protocol")
        );
        assert_eq!(
            protocol(&[]),
            None,
            "nothing but the URL: booking-app's PLAINTEXT"
        );
    }

    #[test]
    fn in_cluster_stores_get_no_tls_settings() {
        let fs = FlashSaleBuilder::new("s", Stage::Kafka).build();
        let mut sale = sale_from(&fs);
        // Keys of a Secret no external store names change nothing.
        sale.external_keys
            .insert("s-credentials".into(), keys(&[key::CA]));
        let pod = pod(&sale, Stage::Kafka, "serve");
        for var in [contract::DB_SSL_MODE, contract::KAFKA_SECURITY_PROTOCOL] {
            assert_eq!(value(&pod, var), None);
        }
        assert!(
            pod.volumes
                .iter()
                .flatten()
                .all(|v| !v.name.ends_with("-tls"))
        );
    }

    #[test]
    fn half_given_credentials_name_the_keys_they_lack() {
        assert_eq!(
            incomplete(StoreKind::Redis, &keys(&[key::TLS_CERT])),
            [key::TLS_KEY]
        );
        assert_eq!(
            incomplete(StoreKind::Postgres, &keys(&[key::TLS_KEY, key::CA])),
            [key::TLS_CERT]
        );
        assert!(incomplete(StoreKind::Postgres, &keys(&[key::CA])).is_empty());
        assert!(
            incomplete(StoreKind::Postgres, &keys(&[key::KAFKA_SASL_USERNAME])).is_empty(),
            "Postgres reads no SASL keys"
        );
        assert_eq!(
            incomplete(StoreKind::Kafka, &keys(&[key::KAFKA_SASL_USERNAME])),
            [key::KAFKA_SASL_MECHANISM, key::KAFKA_SASL_PASSWORD]
        );
        assert!(
            incomplete(
                StoreKind::Kafka,
                &keys(&[
                    key::KAFKA_SASL_USERNAME,
                    key::KAFKA_SASL_PASSWORD,
                    key::KAFKA_SASL_MECHANISM
                ])
            )
            .is_empty()
        );
    }
}
