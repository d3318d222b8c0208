//! The stage's background worker: `booking-app worker` as its own Deployment (stage kafka: the
//! consumer group that decides queued requests; stage redis: the write-behind syncer), and the
//! drain Job, the same worker run with `--drain` until the stage's backlog is empty.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::auth::Tokens;
use super::booking_app::{container, deployment, pod_spec};
use super::labels::{self, Component};
use super::names;
use super::pod::meta;
use crate::contract;
use crate::reconcile::sizing::Sizing;
use crate::reconcile::validate::Sale;
use flashsale_contract::Stage;

/// Retries of the drain pod before the Job is Failed (and the stage change stops, visibly).
const DRAIN_BACKOFF_LIMIT: i32 = 6;

pub fn worker_deployment(sale: &Sale, stage: Stage, sizing: &Sizing) -> Deployment {
    let container = container(
        sale,
        stage,
        sizing,
        vec![contract::CMD_WORKER.into()],
        true,
        Tokens::None,
    );
    deployment(
        sale,
        names::worker_deployment(&sale.name, stage),
        Component::Worker,
        stage,
        sizing.worker_replicas,
        container,
    )
}

pub fn drain_job(sale: &Sale, stage: Stage, sizing: &Sizing) -> Job {
    let args = vec![
        contract::CMD_WORKER.into(),
        contract::flag::arg(contract::flag::DRAIN),
    ];
    let container = container(sale, stage, sizing, args, false, Tokens::None);
    Job {
        metadata: meta(
            sale,
            names::drain_job(&sale.name, stage),
            Component::Drain,
            Some(stage),
        ),
        spec: Some(JobSpec {
            backoff_limit: Some(DRAIN_BACKOFF_LIMIT),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::labels(&sale.name, Component::Drain, Some(stage))),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(sale, container, Some("OnFailure"))),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{sale, sizing};
    use crate::reconcile::desired::testing::{container, pod};

    #[test]
    fn worker_runs_the_worker_subcommand_for_its_stage() {
        let sale = sale("s", Stage::Kafka);
        let mut sz = sizing(3);
        sz.worker_replicas = 4;
        let d = worker_deployment(&sale, Stage::Kafka, &sz);
        assert_eq!(d.metadata.name.as_deref(), Some("s-worker-kafka"));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(4));
        let c = container(&d);
        assert_eq!(c.args.as_deref(), Some(&["worker".to_string()][..]));
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone();
        assert_eq!(
            ready.as_deref(),
            Some("/healthz"),
            "a worker serves /healthz, not /readyz"
        );
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()[labels::COMPONENT],
            "worker"
        );
    }

    #[test]
    fn drain_job_runs_the_worker_until_the_backlog_is_empty() {
        let sale = sale("s", Stage::Redis);
        let job = drain_job(&sale, Stage::Redis, &sizing(1));
        assert_eq!(job.metadata.name.as_deref(), Some("s-drain-redis"));
        let pod = pod(&job);
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref(),
            Some(&["worker".to_string(), "--drain".to_string()][..])
        );
        let stage = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "STAGE")
            .unwrap();
        assert_eq!(stage.value.as_deref(), Some("redis"));
        assert!(c.readiness_probe.is_none(), "a Job's pod is not probed");
    }
}
