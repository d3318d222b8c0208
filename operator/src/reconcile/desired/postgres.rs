//! The in-cluster Postgres: the source of truth of every stage. Data volume kept when the
//! StatefulSet goes away (it holds the bookings); `max_connections` fixed by the sizing so
//! rescaling booking-app never restarts it.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, Service, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::labels::Component;
use super::names::{self, secret_keys};
use super::pod::{container_security, env, env_from_secret, exec_probe, resources};
use super::store::{StoreShape, stateful_set};
use super::{POSTGRES_DATABASE, POSTGRES_PORT, POSTGRES_USER};
use crate::reconcile::sizing::Sizing;
use crate::reconcile::validate::{InCluster, Sale};

/// UID of `postgres` in the Debian-based official image.
const UID: i64 = 999;
const DATA_DIR: &str = "/var/lib/postgresql/data";

pub fn build(sale: &Sale, store: &InCluster, sizing: &Sizing) -> (StatefulSet, Service) {
    let name = names::postgres(&sale.name);
    let ready = [
        "pg_isready",
        "-h",
        "127.0.0.1",
        "-U",
        POSTGRES_USER,
        "-d",
        POSTGRES_DATABASE,
    ];
    let empty_dir = |name: &str, medium: Option<&str>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            size_limit: medium.map(|_| Quantity("256Mi".into())),
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    };
    let container = Container {
        name: "postgres".into(),
        image: Some(store.image.clone()),
        args: Some(vec![
            "-c".into(),
            format!(
                "max_connections={}",
                sizing.derived.connections.max_connections
            ),
        ]),
        env: Some(vec![
            env("POSTGRES_USER", POSTGRES_USER),
            env("POSTGRES_DB", POSTGRES_DATABASE),
            env_from_secret(
                "POSTGRES_PASSWORD",
                &names::credentials_secret(&sale.name),
                secret_keys::POSTGRES_PASSWORD,
            ),
            // A subdirectory: the volume's root may hold lost+found, which initdb refuses.
            env("PGDATA", format!("{DATA_DIR}/pgdata")),
        ]),
        readiness_probe: Some(exec_probe(&ready, 5, 3)),
        liveness_probe: Some(exec_probe(&ready, 15, 6)),
        resources: Some(resources(
            store.resources.as_ref(),
            ("500m", "512Mi"),
            ("2", "1Gi"),
        )),
        security_context: Some(container_security(true)),
        volume_mounts: Some(vec![
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
            mount("shm", "/dev/shm"),
        ]),
        ..Container::default()
    };
    stateful_set(
        sale,
        store,
        StoreShape {
            name,
            component: Component::Postgres,
            container,
            ports: vec![("postgres", POSTGRES_PORT)],
            uid: UID,
            data_dir: DATA_DIR,
            extra_volumes: vec![
                empty_dir("run", None),
                empty_dir("tmp", None),
                empty_dir("shm", Some("Memory")),
            ],
            keep_data: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{sale, sizing};
    use crate::reconcile::desired::testing::pod;
    use flashsale_contract::Stage;

    #[test]
    fn postgres_is_one_hardened_replica_with_generated_password_and_kept_data() {
        let sale = sale("s", Stage::Postgres);
        let sz = sizing(2);
        let (sts, svc) = build(&sale, sale.postgres.in_cluster().unwrap(), &sz);
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(sts.metadata.name.as_deref(), Some("s-postgres"));
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .as_ref()
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Retain")
        );
        let pod = pod(&sts);
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_user,
            Some(999)
        );
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_ref().unwrap()[1],
            format!("max_connections={}", sz.derived.connections.max_connections)
        );
        let password = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "POSTGRES_PASSWORD")
            .unwrap();
        assert_eq!(
            password
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "s-credentials"
        );
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        assert!(c.readiness_probe.as_ref().unwrap().exec.is_some());
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            claim
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "10Gi"
        );
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        assert_eq!(sts.metadata.owner_references.unwrap()[0].kind, "FlashSale");
    }
}
