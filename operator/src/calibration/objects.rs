//! The calibration objects, built without I/O: a one-replica booking-app Deployment exactly like
//! the sale's API pods (same image, resources, stores, pool) but selected by no sale Service, a
//! Service in front of it alone, and the Job running loadgen against that Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PodTemplateSpec, ResourceRequirements, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    LOADGEN_CONTAINER, Run, TERMINATION_MESSAGE_PATH, attempt_digest, job_name, server_name,
};
use crate::contract::{self, flag};
use crate::reconcile::desired::auth::{self, Tokens};
use crate::reconcile::desired::booking_app;
use crate::reconcile::desired::labels::{self, Component};
use crate::reconcile::desired::names;
use crate::reconcile::desired::pod::{
    container_security, meta, pod_resources, quantity_millicores,
};
use crate::reconcile::sizing::Sizing;
use crate::reconcile::validate::Sale;

/// Pod label naming one calibration attempt, so its Service selects that attempt's pod only.
pub const ATTEMPT_LABEL: &str = "flashsale.dev/calibration";

/// A search of ~15 steps of 12 s each takes minutes; past this the Job fails and is retried.
pub const JOB_DEADLINE_SECONDS: i64 = 30 * 60;

/// Where loadgen finds the scratch pod.
pub fn server_url(sale: &Sale, run: &Run) -> String {
    let service = server_name(&sale.name, &run.key, run.attempt);
    format!(
        "http://{}:{}",
        names::service_host(&service, &sale.namespace),
        contract::HTTP_PORT
    )
}

/// The objects of `run`: the scratch Deployment and its Service, plus the Job once the pod is Ready.
pub fn build(sale: &Sale, run: &Run, sizing: &Sizing) -> (Deployment, Service, Option<Job>) {
    let stage = run.key.stage;
    let name = server_name(&sale.name, &run.key, run.attempt);
    let attempt = BTreeMap::from([(
        ATTEMPT_LABEL.to_string(),
        attempt_digest(&run.key, run.attempt),
    )]);

    // It serves loadgen's tokens, which are signed with the generated secret: never the sale's
    // JWKS, whose private keys only the identity provider holds.
    let container = booking_app::container(
        sale,
        stage,
        sizing,
        vec![contract::CMD_SERVE.into()],
        true,
        Tokens::Generated,
    );
    let mut deployment = booking_app::deployment(
        sale,
        name.clone(),
        Component::Calibration,
        stage,
        1,
        container,
    );
    if let Some(spec) = deployment.spec.as_mut() {
        spec.selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .extend(attempt.clone());
        if let Some(template_meta) = spec.template.metadata.as_mut() {
            template_meta
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(attempt.clone());
        }
    }

    let mut selector = labels::selector(&sale.name, Component::Calibration, Some(stage));
    selector.extend(attempt);
    let service = Service {
        metadata: meta(sale, name, Component::Calibration, Some(stage)),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(contract::HTTP_PORT_NAME.into()),
                port: contract::HTTP_PORT,
                target_port: Some(IntOrString::String(contract::HTTP_PORT_NAME.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let job = run.with_job.then(|| loadgen_job(sale, run));
    (deployment, service, job)
}

/// CPU request of the loadgen pod: twice what the scratch pod (the sale's API pod size)
/// requests, so a small pod is measured by a generator that still fits a small node. A request
/// in a form `pod::quantity_millicores` does not read falls back to the default pod's (2 CPUs).
fn loadgen_cpu(sale: &Sale) -> Quantity {
    let pod = pod_resources(sale.spec.booking_app.resources.as_ref());
    let millis = pod
        .requests
        .as_ref()
        .and_then(|r| r.get("cpu"))
        .and_then(quantity_millicores)
        .unwrap_or(1000);
    Quantity(format!("{}m", millis.saturating_mul(2)))
}

fn loadgen_job(sale: &Sale, run: &Run) -> Job {
    let stage = run.key.stage;
    let mut container = Container {
        name: LOADGEN_CONTAINER.into(),
        args: Some(vec![
            contract::CMD_LOADGEN.into(),
            flag::arg(flag::URL),
            server_url(sale, run),
            flag::arg(flag::FIND_CAPACITY),
            flag::arg(flag::SLO_P99_MS),
            run.key.slo_p99_ms.to_string(),
            flag::arg(flag::TERMINATION_MESSAGE_PATH),
            TERMINATION_MESSAGE_PATH.into(),
            flag::arg(flag::NO_PROGRESS),
        ]),
        termination_message_path: Some(TERMINATION_MESSAGE_PATH.into()),
        termination_message_policy: Some("File".into()),
        // The generator must not be what saturates: twice the CPU the measured pod requests, and
        // no CPU limit so it can take more where the node has it.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), loadgen_cpu(sale)),
                ("memory".to_string(), Quantity("256Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("1Gi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(container_security(true)),
        // Image, pull policy and entrypoint of booking-app; nothing else of its containers.
        ..booking_app::program(sale)
    };
    // Its simulated users' tokens, signed as the scratch pod verifies them.
    auth::configure(sale, Tokens::Generated, &mut container);
    let name = job_name(&sale.name, &run.key, run.attempt);
    Job {
        metadata: meta(sale, name, Component::CalibrationLoad, Some(stage)),
        spec: Some(JobSpec {
            // Retries are the operator's, with backoff and a condition saying why.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(JOB_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::labels(
                        &sale.name,
                        Component::CalibrationLoad,
                        Some(stage),
                    )),
                    ..ObjectMeta::default()
                }),
                spec: Some(booking_app::pod_spec(sale, container, Some("Never"))),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::CalibrationKey;
    use crate::fixtures::{sale, sizing};
    use crate::reconcile::desired::testing::{container, env_of, pod};
    use flashsale_contract::Stage;

    fn run(with_job: bool) -> Run {
        let key = CalibrationKey {
            stage: Stage::Redis,
            image: "img:1".into(),
            resources: Some("requests cpu=1; limits cpu=1".into()),
            slo_p99_ms: 150,
            recalibrate: None,
        };
        Run {
            key,
            attempt: 1,
            with_job,
        }
    }

    #[test]
    fn names_fit_dns_labels_and_differ_per_attempt() {
        let key = run(false).key;
        let long = "a".repeat(40);
        assert!(job_name(&long, &key, u32::MAX).len() <= 63);
        assert_ne!(server_name("s", &key, 1), server_name("s", &key, 2));
        assert_eq!(
            job_name("s", &key, 1),
            format!("{}-lg", server_name("s", &key, 1))
        );
    }

    #[test]
    fn scratch_pod_is_an_api_pod_that_no_sale_service_selects() {
        let sale = sale("s", Stage::Redis);
        let (deployment, service, job) = build(&sale, &run(false), &sizing(3));
        assert!(job.is_none(), "loadgen waits for a Ready pod");
        let spec = deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let pod_labels = spec.template.metadata.clone().unwrap().labels.unwrap();
        let container = container(&deployment);
        assert_eq!(container.args.as_deref(), Some(&["serve".to_string()][..]));
        assert_eq!(env_of(container)["STAGE"].value.as_deref(), Some("redis"));
        let api_selector = labels::selector("s", Component::BookingApi, Some(Stage::Redis));
        assert!(
            !api_selector
                .iter()
                .all(|(k, v)| pod_labels.get(k) == Some(v)),
            "the sale's Service must not route to it"
        );
        let own_selector = service.spec.unwrap().selector.unwrap();
        assert!(
            own_selector
                .iter()
                .all(|(k, v)| pod_labels.get(k) == Some(v)),
            "its own Service routes to it"
        );
        assert!(own_selector.contains_key(ATTEMPT_LABEL));
    }

    #[test]
    fn loadgen_job_writes_its_result_as_the_termination_message() {
        let sale = sale("s", Stage::Redis);
        let (_, _, job) = build(&sale, &run(true), &sizing(3));
        let job = job.unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(job_name("s", &run(true).key, 1).as_str())
        );
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
        let pod = pod(&job);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.name, LOADGEN_CONTAINER);
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"],
            Quantity("2000m".into()),
            "twice the default pod's CPU"
        );
        let args = c.args.clone().unwrap().join(" ");
        assert!(args.starts_with("loadgen --url http://s-cal-"), "{args}");
        assert!(
            args.contains(".ns.svc:8080 --find-capacity --slo-p99-ms 150"),
            "{args}"
        );
        assert!(
            args.contains("--termination-message-path /dev/termination-log"),
            "{args}"
        );
        let env: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(
            env,
            [contract::AUTH_HS256_SECRET_FILE],
            "loadgen needs no store credentials, only the secret its tokens are signed with"
        );
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert!(
            pod.volumes
                .iter()
                .flatten()
                .any(|v| v.name == mount.name && v.secret.is_some()),
            "the secret is mounted"
        );
    }

    /// With the sale's users verified by an identity provider, calibration still mints its own
    /// tokens: the scratch pod verifies the generated secret (never the JWKS, whose private keys
    /// it cannot have) and loadgen signs with it, both with the sale's issuer and audience.
    #[test]
    fn calibration_mints_and_verifies_its_own_tokens_whatever_the_sale_trusts() {
        let mut fs = crate::fixtures::FlashSaleBuilder::new("s", Stage::Redis).build();
        fs.spec.auth = Some(crate::crd::AuthSpec {
            issuer: Some("https://id.example.com/".into()),
            audience: Some("tickets".into()),
            jwks: Some(crate::crd::JwksSource {
                url: Some("https://id.example.com/jwks.json".into()),
                config_map_ref: None,
            }),
        });
        let sale = crate::fixtures::sale_from(&fs);
        let (deployment, _, job) = build(&sale, &run(true), &sizing(3));
        let job = job.unwrap();
        for (what, pod) in [("scratch pod", pod(&deployment)), ("loadgen", pod(&job))] {
            let env = env_of(&pod.containers[0]);
            assert!(env.contains_key(contract::AUTH_HS256_SECRET_FILE), "{what}");
            assert!(!env.contains_key(contract::AUTH_JWKS_URL), "{what}");
            assert_eq!(
                env[contract::AUTH_ISSUER].value.as_deref(),
                Some("https://id.example.com/"),
                "{what}"
            );
            assert_eq!(
                env[contract::AUTH_AUDIENCE].value.as_deref(),
                Some("tickets"),
                "{what}"
            );
            assert!(
                pod.volumes.iter().flatten().any(|v| v.secret.is_some()),
                "{what} mounts the secret"
            );
        }
    }

    #[test]
    fn loadgen_asks_twice_the_cpu_of_a_small_pod() {
        let mut fs = crate::fixtures::FlashSaleBuilder::new("s", Stage::Redis).build();
        fs.spec.booking_app.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity("150m".into()))])),
            ..ResourceRequirements::default()
        });
        let sale = crate::fixtures::sale_from(&fs);
        let (_, _, job) = build(&sale, &run(true), &sizing(3));
        let c = &pod(job.as_ref().unwrap()).containers[0];
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"],
            Quantity("300m".into())
        );
    }
}
