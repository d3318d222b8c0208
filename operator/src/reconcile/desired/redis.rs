//! The in-cluster Redis of stage redis: AOF with `appendfsync always`, so a Redis crash cannot
//! lose a booking the client was told is confirmed (README, "Redis persistence").

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Service, VolumeMount};

use super::REDIS_PORT;
use super::labels::Component;
use super::names::{self, DATA_VOLUME, secret_keys};
use super::pod::{container_security, env_from_secret, exec_probe, resources};
use super::store::{StoreShape, stateful_set};
use crate::reconcile::validate::{InCluster, Sale};

/// UID of `redis` in the official image.
const UID: i64 = 999;

pub fn build(sale: &Sale, store: &InCluster) -> (StatefulSet, Service) {
    let secret = names::credentials_secret(&sale.name);
    let container = Container {
        name: "redis".into(),
        image: Some(store.image.clone()),
        command: Some(vec!["redis-server".into()]),
        // $(REDIS_PASSWORD) is expanded by the kubelet from the env below.
        args: Some(
            [
                "--port",
                &REDIS_PORT.to_string(),
                "--dir",
                "/data",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--requirepass",
                "$(REDIS_PASSWORD)",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![
            env_from_secret("REDIS_PASSWORD", &secret, secret_keys::REDIS_PASSWORD),
            // redis-cli (the probes) reads the password from here, not from argv.
            env_from_secret("REDISCLI_AUTH", &secret, secret_keys::REDIS_PASSWORD),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            ..ContainerPort::default()
        }]),
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
        resources: Some(resources(
            store.resources.as_ref(),
            ("250m", "256Mi"),
            ("1", "1Gi"),
        )),
        security_context: Some(container_security(true)),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: "/data".into(),
            ..VolumeMount::default()
        }]),
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
            extra_volumes: vec![],
            keep_data: false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sale;
    use crate::stage::Stage;

    #[test]
    fn redis_fsyncs_every_write_and_requires_the_generated_password() {
        let sale = sale("s", Stage::Redis);
        let (sts, svc) = build(&sale, sale.redis.in_cluster().unwrap());
        let spec = sts.spec.unwrap();
        let args = spec.template.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap()
            .join(" ");
        assert!(
            args.contains("--appendonly yes --appendfsync always"),
            "{args}"
        );
        assert!(args.contains("--requirepass $(REDIS_PASSWORD)"), "{args}");
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
        assert_eq!(svc.metadata.name.as_deref(), Some("s-redis"));
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 6379);
    }
}
