//! The in-cluster Redis of stage redis: AOF with `appendfsync always`, so a Redis crash cannot
//! lose a booking the client was told is confirmed (README, "Redis persistence").

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::REDIS_PORT;
use super::labels::Component;
use super::names::{self, secret_keys};
use super::pod::{container_security, env_from_secret, exec_probe, resources};
use super::store::{StoreShape, stateful_set};
use crate::reconcile::validate::{InCluster, Sale};

/// UID of `redis` in the official image.
const UID: i64 = 999;
const DATA_DIR: &str = "/data";

/// Share of the container's memory limit Redis may use for data (`maxmemory`): the rest is its
/// own overhead, the AOF rewrite's copy-on-write and the buffers of its clients.
const MAXMEMORY_SHARE: (u64, u64) = (3, 4);

/// `maxmemory` for a container limited to `limit` (a Kubernetes quantity), if it parses.
fn maxmemory(limit: &Quantity) -> Option<u64> {
    Some(super::pod::quantity_bytes(limit)? / MAXMEMORY_SHARE.1 * MAXMEMORY_SHARE.0)
}

pub fn build(sale: &Sale, store: &InCluster) -> (StatefulSet, Service) {
    let secret = names::credentials_secret(&sale.name);
    let resources = resources(store.resources.as_ref(), ("250m", "256Mi"), ("1", "1Gi"));
    // A bound on Redis's data, and `noeviction`: past it writes are refused (the API answers 503)
    // rather than keys evicted, because an evicted claim or unsynced booking would be lost.
    let limit = resources
        .limits
        .as_ref()
        .and_then(|l| l.get("memory"))
        .and_then(maxmemory);
    let mut args: Vec<String> = [
        "--port",
        &REDIS_PORT.to_string(),
        "--dir",
        DATA_DIR,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--requirepass",
        "$(REDIS_PASSWORD)",
    ]
    .map(String::from)
    .to_vec();
    if let Some(bytes) = limit {
        args.extend(
            [
                "--maxmemory",
                &bytes.to_string(),
                "--maxmemory-policy",
                "noeviction",
            ]
            .map(String::from),
        );
    }
    let container = Container {
        name: "redis".into(),
        image: Some(store.image.clone()),
        command: Some(vec!["redis-server".into()]),
        // $(REDIS_PASSWORD) is expanded by the kubelet from the env below.
        args: Some(args),
        env: Some(vec![
            env_from_secret("REDIS_PASSWORD", &secret, secret_keys::REDIS_PASSWORD),
            // redis-cli (the probes) reads the password from here, not from argv.
            env_from_secret("REDISCLI_AUTH", &secret, secret_keys::REDIS_PASSWORD),
        ]),
        readiness_probe: Some(exec_probe(
            &["redis-cli", "-p", &REDIS_PORT.to_string(), "ping"],
            5,
            3,
        )),
        liveness_probe: Some(exec_probe(
            &["redis-cli", "-p", &REDIS_PORT.to_string(), "ping"],
            15,
            6,
        )),
        resources: Some(resources),
        security_context: Some(container_security(true)),
        ..Container::default()
    };
    stateful_set(
        sale,
        store,
        StoreShape {
            name: names::redis(&sale.name),
            component: Component::Redis,
            container,
            ports: vec![("redis", REDIS_PORT)],
            uid: UID,
            data_dir: DATA_DIR,
            extra_volumes: vec![],
            keep_data: false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sale;
    use crate::reconcile::desired::testing::container;
    use flashsale_contract::Stage;

    #[test]
    fn redis_fsyncs_every_write_and_requires_the_generated_password() {
        let sale = sale("s", Stage::Redis);
        let (sts, svc) = build(&sale, sale.redis.in_cluster().unwrap());
        let args = container(&sts).args.clone().unwrap().join(" ");
        assert!(
            args.contains("--appendonly yes --appendfsync always"),
            "{args}"
        );
        assert!(args.contains("--requirepass $(REDIS_PASSWORD)"), "{args}");
        assert_eq!(
            sts.spec
                .unwrap()
                .persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
        assert_eq!(svc.metadata.name.as_deref(), Some("s-redis"));
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 6379);
        // The default 1Gi limit: 768 MiB of data, then writes refused rather than keys evicted.
        assert!(
            args.contains("--maxmemory 805306368 --maxmemory-policy noeviction"),
            "{args}"
        );
    }

    #[test]
    fn maxmemory_is_three_quarters_of_the_limit() {
        let q = |s: &str| maxmemory(&Quantity(s.into()));
        assert_eq!(q("1Gi"), Some(805_306_368));
        assert_eq!(q("512Mi"), Some(402_653_184));
        assert_eq!(q("2G"), Some(1_500_000_000));
        assert_eq!(q("1.5Gi"), Some(1_207_959_552));
        assert_eq!(q("1000"), Some(750));
        assert_eq!(q("lots"), None);
        assert_eq!(q("0"), None);
    }
}
