//! booking-app's API Deployment (one per stage, see `names::booking_deployment`) and the
//! Service in front of the serving stage's pods; `app_env` is the configuration contract
//! (`crate::contract`) filled in for a stage, shared with the worker and the drain Job (the
//! identity settings, which differ by container, come from `auth`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, PodSpec, PodTemplateSpec, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::auth::{self, Tokens};
use super::kafka;
use super::labels::{self, Component};
use super::names::{self, secret_keys};
use super::pod::{
    container_security, env, env_from_secret, http_probe, meta, pod_resources, pod_security,
};
use super::store_tls;
use crate::crd::{PullPolicy, ServiceType};
use crate::reconcile::sizing::Sizing;
use crate::reconcile::validate::{Sale, Store};
use crate::{capacity, contract};
use flashsale_contract::Stage;

/// UUID v5 namespace of sale event ids (a fixed random UUID: ids never collide with other v5 uses).
const SALE_EVENT_NAMESPACE: uuid::Uuid = uuid::uuid!("6c1f9a52-3d4e-4b8a-9f0e-2a7d5c8b1e43");

/// UID booking-app images run as (the distroless `nonroot` user).
pub const UID: i64 = 65532;

/// Id of the sale's event (`status.eventId`): derived from the FlashSale's uid, so every pod,
/// every stage and every reconcile names the same event, and a recreated FlashSale a new one.
pub fn sale_event_id(sale: &Sale) -> uuid::Uuid {
    uuid::Uuid::new_v5(&SALE_EVENT_NAMESPACE, sale.owner.uid.as_bytes())
}

/// The environment of every booking-app container of `stage`.
pub fn app_env(sale: &Sale, stage: Stage, sizing: &Sizing) -> Vec<EnvVar> {
    let secret = names::credentials_secret(&sale.name);
    let from_store = |var: &str, store: &Store, generated_key: &str| match store {
        Store::InCluster(_) => env_from_secret(var, &secret, generated_key),
        Store::External(r) => env_from_secret(var, &r.name, &r.key),
    };
    let mut vars = vec![
        env(contract::STAGE, stage.as_str()),
        env(
            contract::LISTEN_ADDR,
            format!("0.0.0.0:{}", contract::HTTP_PORT),
        ),
        env(
            contract::METRICS_LISTEN_ADDR,
            format!("0.0.0.0:{}", contract::METRICS_PORT),
        ),
        from_store(
            contract::DATABASE_URL,
            &sale.postgres,
            secret_keys::DATABASE_URL,
        ),
        env(
            contract::DB_POOL_SIZE,
            sizing.derived.connections.pool.to_string(),
        ),
        env(contract::MIGRATE_ON_START, "true"),
        // The worker runs in its own Deployment, sized on its own.
        env(contract::RUN_WORKER, "false"),
        env(contract::LOG_FORMAT, contract::LOG_FORMAT_JSON),
        // `serve` creates the sale's event if absent; an existing one (partly sold) is kept.
        env(contract::SALE_EVENT_ID, sale_event_id(sale).to_string()),
        env(contract::SALE_EVENT_NAME, sale.spec.event.name.clone()),
        env(
            contract::SALE_EVENT_TICKETS,
            sale.spec.event.tickets.to_string(),
        ),
        env(
            contract::SALE_EVENT_PER_USER_LIMIT,
            sale.spec.event.per_user_limit.to_string(),
        ),
    ];
    if stage.uses_redis() {
        vars.push(from_store(
            contract::REDIS_URL,
            &sale.redis,
            secret_keys::REDIS_URL,
        ));
        vars.push(env(
            contract::REDIS_KEY_PREFIX,
            format!("flashsale:{}:{}", sale.namespace, sale.name),
        ));
    }
    if stage.uses_kafka() {
        vars.push(match &sale.kafka {
            Store::InCluster(_) => env(contract::KAFKA_BROKERS, kafka::bootstrap(sale)),
            Store::External(r) => env_from_secret(contract::KAFKA_BROKERS, &r.name, &r.key),
        });
        vars.push(env(contract::KAFKA_TOPIC, sale.kafka_topic.clone()));
        if let Some(bytes) = kafka_view_bytes(sale) {
            vars.push(env(contract::KAFKA_MAX_QUEUED_BYTES, bytes.to_string()));
        }
        vars.push(env(
            contract::KAFKA_PARTITIONS,
            sizing.kafka_partitions().to_string(),
        ));
        vars.push(env(
            contract::KAFKA_CONSUMER_GROUP,
            format!("{}-workers", sale.kafka_topic),
        ));
    }
    vars
}

/// Share of an API pod's memory limit its view of the kafka queue may take (booking-app's own
/// default, 64 MiB, is this share of the default 512Mi); the rest is the process, its
/// connections and librdkafka's bounded buffers. A floor keeps tiny pods able to queue at all.
const KAFKA_VIEW_SHARE: u64 = 8;
const KAFKA_VIEW_FLOOR: u64 = 4 << 20;

/// KAFKA_MAX_QUEUED_BYTES for the sale's API pods, from their memory limit (if it parses).
fn kafka_view_bytes(sale: &Sale) -> Option<u64> {
    let resources = pod_resources(sale.spec.booking_app.resources.as_ref());
    let limit = resources.limits.as_ref()?.get("memory")?;
    Some((super::pod::quantity_bytes(limit)? / KAFKA_VIEW_SHARE).max(KAFKA_VIEW_FLOOR))
}

/// The booking-app program as every container of it runs it: image, pull policy, entrypoint.
pub fn program(sale: &Sale) -> Container {
    Container {
        name: "booking-app".into(),
        image: Some(sale.booking_image.clone()),
        image_pull_policy: sale.pull_policy.map(|p| match p {
            PullPolicy::Always => "Always".into(),
            PullPolicy::IfNotPresent => "IfNotPresent".into(),
            PullPolicy::Never => "Never".into(),
        }),
        command: Some(vec!["booking-app".into()]),
        ..Container::default()
    }
}

/// A booking-app container running `args`, dealing in `tokens`; probes only for long-running
/// ones.
pub fn container(
    sale: &Sale,
    stage: Stage,
    sizing: &Sizing,
    args: Vec<String>,
    probes: bool,
    tokens: Tokens,
) -> Container {
    let spec = &sale.spec.booking_app;
    let resources = pod_resources(
        if args.first().map(String::as_str) == Some(contract::CMD_SERVE) {
            spec.resources.as_ref()
        } else {
            spec.worker.resources.as_ref()
        },
    );
    // `serve` answers /readyz once its stores do; a standalone worker serves only /healthz.
    let readiness_path = if args.first().map(String::as_str) == Some(contract::CMD_SERVE) {
        contract::READYZ_PATH
    } else {
        contract::HEALTHZ_PATH
    };
    let mut container = Container {
        args: Some(args),
        env: Some(app_env(sale, stage, sizing)),
        ports: probes.then(|| {
            vec![
                ContainerPort {
                    name: Some(contract::HTTP_PORT_NAME.into()),
                    container_port: contract::HTTP_PORT,
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some(contract::METRICS_PORT_NAME.into()),
                    container_port: contract::METRICS_PORT,
                    ..ContainerPort::default()
                },
            ]
        }),
        readiness_probe: probes.then(|| http_probe(readiness_path, contract::HTTP_PORT_NAME, 5, 3)),
        liveness_probe: probes
            .then(|| http_probe(contract::HEALTHZ_PATH, contract::HTTP_PORT_NAME, 10, 3)),
        // Migrations run before the server listens: give start-up a minute before liveness counts.
        startup_probe: probes
            .then(|| http_probe(contract::HEALTHZ_PATH, contract::HTTP_PORT_NAME, 2, 30)),
        // CPU request = limit: calibration measures a pod of exactly this size.
        resources: Some(resources),
        security_context: Some(container_security(true)),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..program(sale)
    };
    auth::configure(sale, tokens, &mut container);
    store_tls::configure(sale, stage, &mut container);
    container
}

/// The pod of a booking-app `container`: its scratch space and the key material it mounts.
pub fn pod_spec(sale: &Sale, container: Container, restart_policy: Option<&str>) -> PodSpec {
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    volumes.extend(auth::pod_volumes(sale, &container));
    volumes.extend(store_tls::pod_volumes(sale, &container));
    PodSpec {
        containers: vec![container],
        restart_policy: restart_policy.map(Into::into),
        security_context: Some(pod_security(UID, false)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(30),
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// A long-running booking-app Deployment (API or worker) of `stage`.
pub fn deployment(
    sale: &Sale,
    name: String,
    component: Component,
    stage: Stage,
    replicas: i32,
    container: Container,
) -> Deployment {
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        (
            "prometheus.io/port".to_string(),
            contract::METRICS_PORT.to_string(),
        ),
        (
            "prometheus.io/path".to_string(),
            contract::METRICS_PATH.to_string(),
        ),
    ]);
    Deployment {
        metadata: meta(sale, name, component, Some(stage)),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector(&sale.name, component, Some(stage))),
                ..LabelSelector::default()
            },
            // Surge, never dip: a sale must not lose capacity during a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::labels(&sale.name, component, Some(stage))),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(sale, container, None)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The API pods of `stage`. With a known per-pod capacity they admit only what they can answer
/// within the SLO (`capacity::in_flight_limit`) and shed the rest; the calibration's scratch pod
/// keeps booking-app's generous default, so a new measurement is never capped by the last one.
pub fn api_deployment(sale: &Sale, stage: Stage, replicas: i32, sizing: &Sizing) -> Deployment {
    let mut container = container(
        sale,
        stage,
        sizing,
        vec![contract::CMD_SERVE.into()],
        true,
        Tokens::Sale,
    );
    if let Some(per_pod_rps) = sizing.calibration.per_pod_rps {
        let slo = sale.spec.capacity.slo_p99_ms;
        let vars = container.env.get_or_insert_with(Vec::new);
        vars.push(env(
            contract::MAX_IN_FLIGHT,
            capacity::in_flight_limit(per_pod_rps, slo).to_string(),
        ));
        vars.push(env(
            contract::ADMISSION_WAIT_MS,
            capacity::admission_wait_ms(slo).to_string(),
        ));
    }
    deployment(
        sale,
        names::booking_deployment(&sale.name, stage),
        Component::BookingApi,
        stage,
        replicas,
        container,
    )
}

/// The booking API Service, selecting the pods of the stage being served.
pub fn service(sale: &Sale, serving: Stage) -> Service {
    let type_ = match sale.service.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: meta(
            sale,
            names::booking_service(&sale.name),
            Component::BookingApi,
            None,
        ),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(labels::selector(
                &sale.name,
                Component::BookingApi,
                Some(serving),
            )),
            ports: Some(vec![ServicePort {
                name: Some(contract::HTTP_PORT_NAME.into()),
                port: contract::HTTP_PORT,
                target_port: Some(IntOrString::String(contract::HTTP_PORT_NAME.into())),
                node_port: sale.service.node_port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where the booking API answers inside the cluster.
pub fn endpoint(sale: &Sale) -> String {
    format!(
        "http://{}:{}",
        names::service_host(&names::booking_service(&sale.name), &sale.namespace),
        contract::HTTP_PORT
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{FlashSaleBuilder, sale, sale_from, sizing};
    use crate::reconcile::desired::testing::{self, env_of, mount_of, pod};

    /// The environment of an API container of `sale` at `stage`.
    fn serve_env(sale: &Sale, stage: Stage, sizing: &Sizing) -> BTreeMap<String, EnvVar> {
        let args = vec![contract::CMD_SERVE.into()];
        env_of(&container(sale, stage, sizing, args, true, Tokens::Sale))
    }

    /// Each `(variable, value)` of `expected` is set to that value.
    fn assert_values(env: &BTreeMap<String, EnvVar>, expected: &[(&str, &str)]) {
        for &(var, value) in expected {
            assert_eq!(env[var].value.as_deref(), Some(value), "{var}");
        }
    }

    /// The Secret and key `var` is read from.
    fn secret_ref<'a>(env: &'a BTreeMap<String, EnvVar>, var: &str) -> (&'a str, &'a str) {
        let from = env[var].value_from.as_ref();
        let r = from.and_then(|f| f.secret_key_ref.as_ref());
        let r = r.unwrap_or_else(|| panic!("{var} is not read from a Secret"));
        (r.name.as_str(), r.key.as_str())
    }

    #[test]
    fn api_pods_get_the_contract_for_their_stage() {
        let sale = sale("s", Stage::Kafka);
        let d = api_deployment(&sale, Stage::Kafka, 7, &sizing(7));
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(7));
        let c = testing::container(&d);
        assert_eq!(c.args.as_deref(), Some(&["serve".to_string()][..]));
        let env = env_of(c);
        assert_values(
            &env,
            &[
                ("STAGE", "kafka"),
                ("LISTEN_ADDR", "0.0.0.0:8080"),
                ("KAFKA_BROKERS", "s-kafka.ns.svc:9092"),
                ("KAFKA_TOPIC", "s"),
                // The queue's view: an eighth of the default 512Mi limit.
                ("KAFKA_MAX_QUEUED_BYTES", "67108864"),
                ("KAFKA_CONSUMER_GROUP", "s-workers"),
                ("RUN_WORKER", "false"),
            ],
        );
        assert!(
            !env.contains_key("REDIS_URL"),
            "stage kafka does not use redis"
        );
        assert_eq!(
            secret_ref(&env, "DATABASE_URL"),
            ("s-credentials", "database-url")
        );
        assert!(
            env.keys().all(|k| contract::ENV_VARS.contains(&k.as_str())),
            "only contract variables"
        );
    }

    #[test]
    fn api_pods_admit_what_their_measured_capacity_answers_within_the_slo() {
        let sale = sale("s", Stage::Redis);
        let mut sized = sizing(3);
        sized.calibration.per_pod_rps = Some(4000.0);
        let d = api_deployment(&sale, Stage::Redis, 3, &sized);
        let env = env_of(testing::container(&d));
        let slo = sale.spec.capacity.slo_p99_ms;
        let expected = (4000.0 * f64::from(slo) / 2000.0).ceil() as u32;
        assert_values(
            &env,
            &[
                ("MAX_IN_FLIGHT", &expected.max(16).to_string()),
                ("ADMISSION_WAIT_MS", &(slo / 4).to_string()),
            ],
        );
        // Nothing measured yet: booking-app's own default.
        sized.calibration.per_pod_rps = None;
        let d = api_deployment(&sale, Stage::Redis, 3, &sized);
        assert!(!env_of(testing::container(&d)).contains_key("MAX_IN_FLIGHT"));
        assert_eq!(
            capacity::in_flight_limit(10.0, 200),
            capacity::MIN_IN_FLIGHT
        );
        assert_eq!(
            capacity::in_flight_limit(f64::NAN, 200),
            capacity::MIN_IN_FLIGHT
        );
        assert_eq!(capacity::in_flight_limit(10_000.0, 200), 1000);
    }

    #[test]
    fn api_pods_create_the_sales_event_with_an_id_derived_from_the_flashsale() {
        let mut fs = FlashSaleBuilder::new("s", Stage::Redis).build();
        fs.spec.event = crate::crd::EventSpec {
            name: "Tour 2026".into(),
            tickets: 5000,
            per_user_limit: 4,
        };
        let sale = sale_from(&fs);
        let env = serve_env(&sale, Stage::Redis, &sizing(1));
        let id = env["SALE_EVENT_ID"].value.clone().unwrap();
        assert_eq!(id.parse::<uuid::Uuid>().unwrap().get_version_num(), 5);
        assert_eq!(id, sale_event_id(&sale).to_string());
        assert_values(
            &env,
            &[
                ("SALE_EVENT_NAME", "Tour 2026"),
                ("SALE_EVENT_TICKETS", "5000"),
                ("SALE_EVENT_PER_USER_LIMIT", "4"),
            ],
        );
        // Same FlashSale, same id: at every stage, every reconcile, with any spec change.
        let mut changed = fs.clone();
        changed.spec.event.tickets = 10;
        let again = serve_env(&sale_from(&changed), Stage::Kafka, &sizing(3));
        assert_eq!(again["SALE_EVENT_ID"].value.as_deref(), Some(id.as_str()));
        // Another FlashSale (another uid), another event.
        let mut other = fs.clone();
        other.metadata.uid = Some("another-uid".into());
        assert_ne!(sale_event_id(&sale_from(&other)).to_string(), id);
    }

    #[test]
    fn api_pods_are_probed_hardened_and_sized() {
        let sale = sale("s", Stage::Postgres);
        let d = api_deployment(&sale, Stage::Postgres, 2, &sizing(2));
        let pod = pod(&d);
        let c = &pod.containers[0];
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        };
        assert_eq!(path(&c.readiness_probe), "/readyz");
        assert_eq!(path(&c.liveness_probe), "/healthz");
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert!(
            c.resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()
                .contains_key("cpu")
        );
    }

    #[test]
    fn external_stores_are_read_from_the_users_secret() {
        let fs = FlashSaleBuilder::new("s", Stage::Redis)
            .external_postgres("managed-pg", "uri")
            .build();
        let sale = sale_from(&fs);
        let env = serve_env(&sale, Stage::Redis, &sizing(1));
        assert_eq!(secret_ref(&env, "DATABASE_URL"), ("managed-pg", "uri"));
        assert_eq!(
            secret_ref(&env, "REDIS_URL"),
            ("s-credentials", "redis-url")
        );
        assert_eq!(
            env["REDIS_KEY_PREFIX"].value.as_deref(),
            Some("flashsale:ns:s"),
            "per sale: sales may share a Redis"
        );
    }

    fn with_auth(auth: crate::crd::AuthSpec) -> Sale {
        let mut fs = FlashSaleBuilder::new("s", Stage::Redis).build();
        fs.spec.auth = Some(auth);
        sale_from(&fs)
    }

    fn jwks(url: Option<&str>, config_map: Option<(&str, &str)>) -> crate::crd::AuthSpec {
        crate::crd::AuthSpec {
            issuer: Some("https://id.example.com/".into()),
            audience: Some("tickets".into()),
            jwks: Some(crate::crd::JwksSource {
                url: url.map(Into::into),
                config_map_ref: config_map.map(|(name, key)| crate::crd::ConfigMapKeyRef {
                    name: name.into(),
                    key: key.into(),
                }),
            }),
        }
    }

    fn api_pod(sale: &Sale) -> PodSpec {
        pod(&api_deployment(sale, Stage::Redis, 2, &sizing(2))).clone()
    }

    /// The file a variable names lies in a directory the container mounts from `volume`.
    fn mounted_file(pod: &PodSpec, var: &str) -> (String, Volume) {
        let path = env_of(&pod.containers[0])[var].value.clone().unwrap();
        let (_, volume, file) = mount_of(pod, &path);
        (file, volume.clone())
    }

    /// Whether any volume or variable of the pod reads the generated signing secret.
    fn holds_generated_secret(pod: &PodSpec) -> bool {
        let volume = pod.volumes.iter().flatten().any(|v| {
            v.secret.as_ref().is_some_and(|s| {
                s.items
                    .iter()
                    .flatten()
                    .any(|i| i.key == secret_keys::AUTH_HS256_SECRET)
            })
        });
        volume || env_of(&pod.containers[0]).contains_key(contract::AUTH_HS256_SECRET_FILE)
    }

    #[test]
    fn by_default_api_pods_verify_the_generated_secret() {
        let pod = api_pod(&sale("s", Stage::Redis));
        let (file, volume) = mounted_file(&pod, contract::AUTH_HS256_SECRET_FILE);
        let secret = volume.secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("s-credentials"));
        let item = &secret.items.unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            (secret_keys::AUTH_HS256_SECRET, file.as_str())
        );
        let env = env_of(&pod.containers[0]);
        for absent in [
            contract::AUTH_JWKS_URL,
            contract::AUTH_JWKS_FILE,
            contract::AUTH_ISSUER,
            contract::AUTH_AUDIENCE,
        ] {
            assert!(!env.contains_key(absent), "{absent} without spec.auth");
        }
    }

    #[test]
    fn issuer_and_audience_alone_keep_the_generated_secret() {
        let sale = with_auth(crate::crd::AuthSpec {
            issuer: Some("flashsale".into()),
            audience: Some("s".into()),
            jwks: None,
        });
        let pod = api_pod(&sale);
        assert!(holds_generated_secret(&pod));
        let env = env_of(&pod.containers[0]);
        assert_values(
            &env,
            &[("AUTH_ISSUER", "flashsale"), ("AUTH_AUDIENCE", "s")],
        );
    }

    #[test]
    fn with_a_jwks_url_api_pods_verify_only_the_identity_providers_keys() {
        let sale = with_auth(jwks(Some("https://id.example.com/jwks.json"), None));
        let pod = api_pod(&sale);
        let env = env_of(&pod.containers[0]);
        assert_values(
            &env,
            &[
                ("AUTH_JWKS_URL", "https://id.example.com/jwks.json"),
                ("AUTH_ISSUER", "https://id.example.com/"),
                ("AUTH_AUDIENCE", "tickets"),
            ],
        );
        assert!(!env.contains_key("AUTH_JWKS_FILE"));
        assert!(
            !holds_generated_secret(&pod),
            "the live sale must not accept tokens minted with the Secret"
        );
        let volumes: Vec<_> = pod.volumes.iter().flatten().map(|v| &v.name).collect();
        assert_eq!(volumes, ["tmp"], "no key material to mount");
        assert!(
            env.keys().all(|k| contract::ENV_VARS.contains(&k.as_str())),
            "only contract variables"
        );
    }

    #[test]
    fn a_jwks_config_map_is_mounted_as_the_jwks_file() {
        let sale = with_auth(jwks(None, Some(("idp-keys", "keys.json"))));
        let pod = api_pod(&sale);
        let (file, volume) = mounted_file(&pod, contract::AUTH_JWKS_FILE);
        let config_map = volume.config_map.unwrap();
        assert_eq!(config_map.name, "idp-keys");
        assert_eq!(config_map.optional, Some(false));
        let item = &config_map.items.unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            ("keys.json", file.as_str())
        );
        let env = env_of(&pod.containers[0]);
        assert!(!env.contains_key("AUTH_JWKS_URL"));
        assert_eq!(env["AUTH_AUDIENCE"].value.as_deref(), Some("tickets"));
        assert!(!holds_generated_secret(&pod));
    }

    #[test]
    fn workers_get_no_identity_settings_or_keys() {
        for sale in [
            sale("s", Stage::Redis),
            with_auth(jwks(None, Some(("idp-keys", "jwks.json")))),
        ] {
            let d = super::super::worker::worker_deployment(&sale, Stage::Redis, &sizing(1));
            let pod = pod(&d);
            assert!(
                env_of(&pod.containers[0])
                    .keys()
                    .all(|k| !k.starts_with("AUTH_")),
                "a worker verifies no token"
            );
            let volumes: Vec<_> = pod.volumes.iter().flatten().map(|v| &v.name).collect();
            assert_eq!(volumes, ["tmp"]);
        }
    }

    #[test]
    fn service_selects_the_serving_stage_and_can_pin_a_node_port() {
        let mut fs = FlashSaleBuilder::new("s", Stage::Redis).build();
        fs.spec.booking_app.service = crate::crd::ServiceSpec {
            type_: ServiceType::NodePort,
            node_port: Some(30080),
        };
        let sale = sale_from(&fs);
        let spec = service(&sale, Stage::Postgres).spec.unwrap();
        assert_eq!(spec.selector.unwrap()[labels::STAGE], "postgres");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.ports.unwrap()[0].node_port, Some(30080));
        assert_eq!(endpoint(&sale), "http://s-booking-app.ns.svc:8080");
    }
}
