//! The capacity engine against a real API server (`hack/control-plane.sh up`). kwok runs no
//! container, so the test stands in for the kubelet of the calibration Job's pod: it writes the
//! loadgen result into the pod's terminated state, as a kubelet copies /dev/termination-log.
//! The operator runs step by step (`reconcile_by_name`), so it looks only when the test says,
//! e.g. after the result is written, never at kwok's message-less completion of the same pod.
//! Sale windows and cooldowns run on a `ManualClock`; observed load comes from injected counters.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use flashsale_contract::Stage;
use flashsale_operator::autoscale::scrape::{LoadObserver, PodTarget, RequestCounter, ScrapeError};
use flashsale_operator::calibration::CalibrationKey;
use flashsale_operator::calibration::{LOADGEN_CONTAINER, job_name};
use flashsale_operator::context::Context;
use flashsale_operator::crd::{FlashSale, FlashSaleStatus};
use flashsale_operator::fixtures::FlashSaleBuilder;
use flashsale_operator::reconcile::desired::{labels, names};
use flashsale_operator::reconcile::reconcile_by_name;
use flashsale_operator::reconcile::sizing::calibration_key;
use flashsale_operator::reconcile::validate::validate;
use flashsale_operator::schedule::{ManualClock, to_time};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;

/// An uncalibrated sale sized for kwok's nodes.
fn sale(name: &str, stage: Stage, ns: &str) -> FlashSale {
    with_tiny_resources(
        FlashSaleBuilder::new(name, stage)
            .namespace(ns)
            .target_rps(7_000)
            .replicas(2, 50)
            .build_for_apply(),
    )
}

/// Reconcile again and again (kwok readies pods between passes) until the sale has a
/// calibration Job for its stage, the first attempt at its calibration key; returns the Job's
/// name and the sale as it is then.
async fn reconcile_until_calibration_job(
    ctx: &Context,
    ns: &str,
    fs: &FlashSale,
) -> (String, FlashSale) {
    let (name, stage) = (fs.name_any(), fs.spec.stage);
    let name = name.as_str();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        pass(ctx, ns, name).await;
        let jobs = calibration_jobs(&ctx.client, ns, name).await;
        if let Some(job) = jobs
            .iter()
            .find(|j| j.labels().get(labels::STAGE).map(String::as_str) == Some(stage.as_str()))
        {
            assert_eq!(job.name_any(), job_name(name, &key(fs), 1));
            let seen = Api::<FlashSale>::namespaced(ctx.client.clone(), ns)
                .get(name)
                .await
                .expect("get FlashSale");
            return (job.name_any(), seen);
        }
        if tokio::time::Instant::now() > deadline {
            let fs = Api::<FlashSale>::namespaced(ctx.client.clone(), ns)
                .get(name)
                .await
                .expect("get FlashSale");
            panic!(
                "timed out after {WAIT:?}: no calibration Job for stage {stage}; status: {:#?}",
                fs.status
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One reconcile pass of the sale, as the controller would run it.
async fn pass(ctx: &Context, ns: &str, name: &str) -> Action {
    reconcile_by_name(ctx, ns, name).await.expect("reconcile")
}

/// The replicas Deployment `name` asks for now.
async fn replicas_now(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    replicas(&deployments.get(name).await.unwrap())
}

/// The sale's status as the API server has it now.
async fn status_of(sales: &Api<FlashSale>, name: &str) -> FlashSaleStatus {
    sales.get(name).await.unwrap().status.unwrap()
}

/// The calibration key the operator uses for `fs` with this file's defaults.
fn key(fs: &FlashSale) -> CalibrationKey {
    let sale = validate(fs, &defaults()).expect("a valid sale");
    calibration_key(&sale, None)
}

/// The sale's children of one component (by their component label).
async fn components<K>(client: &Client, ns: &str, sale: &str, component: &str) -> Vec<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let selector = format!(
        "{},{}={component}",
        labels::children_of(sale),
        labels::COMPONENT
    );
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap_or_else(|e| panic!("list {component}: {e}"))
        .items
}

/// The calibration Jobs of the sale.
async fn calibration_jobs(client: &Client, ns: &str, sale: &str) -> Vec<Job> {
    components(client, ns, sale, "calibration-loadgen").await
}

/// The scratch booking-app Deployments the calibration Jobs load.
async fn calibration_servers(client: &Client, ns: &str, sale: &str) -> Vec<Deployment> {
    components(client, ns, sale, "calibration").await
}

/// Stand in for the kubelet: the Job's pod ends with `message` as its termination message; then
/// one reconcile pass of `sale` reads it.
async fn finish_job_pod(ctx: &Context, ns: &str, sale: &str, job: &str, message: &str) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let pod = wait_until(&format!("a pod of Job {job}"), || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let name = pod.name_any();
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default();
    let now = to_time(Utc::now());
    let status = json!({ "status": {
        "phase": "Succeeded",
        "containerStatuses": [{
            "name": LOADGEN_CONTAINER, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": {
                "exitCode": 0, "reason": "Completed", "message": message, "startedAt": now, "finishedAt": now,
            }},
        }],
    }});
    // kwok may be completing the same pod (without a message) right now: write until ours stays.
    wait_until(&format!("the result in pod {name}"), || async {
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .ok()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = pods.get(&name).await.ok()?;
        let terminated = seen
            .status?
            .container_statuses?
            .into_iter()
            .next()?
            .state?
            .terminated?;
        (terminated.message.as_deref() == Some(message)).then_some(())
    })
    .await;
    pass(ctx, ns, sale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_result_sizes_the_sale_and_only_a_new_pod_or_stage_recalibrates() {
    let (client, ns) = setup("calibrate").await;
    let ctx = plain_context(&client);
    let name = "cal-sale";
    let mut volumes = vec![
        volume_for(
            &client,
            &ns.name,
            &names::data_claim(&names::postgres(name)),
        )
        .await,
    ];
    // As applied (with its uid), to compute the calibration keys the operator uses.
    let mut fs = apply_sale(&client, &ns.name, &sale(name, Stage::Postgres, &ns.name)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);

    // Uncalibrated: minReplicas while the scratch pod starts, then the loadgen Job.
    let (job, fs_seen) = reconcile_until_calibration_job(&ctx, &ns.name, &fs).await;
    let status = fs_seen.status.clone().unwrap();
    assert_eq!(
        (status.desired_replicas, status.measured_per_pod_rps),
        (2, None)
    );
    let calibrated = fs_seen.condition("Calibrated").unwrap();
    assert_eq!(
        (calibrated.status.as_str(), calibrated.reason.as_str()),
        ("False", "Calibrating"),
        "{calibrated:?}"
    );
    let api_deployment = names::booking_deployment(name, Stage::Postgres);
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(2));

    // The Job's pod ends with loadgen's result; the next pass records it and sizes from it.
    let result = r#"{"perPodRps":1000.0,"sloP99Ms":200,"p99Ms":120.5,"errorRate":0.0}"#;
    finish_job_pod(&ctx, &ns.name, name, &job, result).await;
    let fs_seen = sales.get(name).await.unwrap();
    let status = fs_seen.status.clone().unwrap();
    assert_eq!(status.measured_per_pod_rps, Some(1000.0));
    let record = status.calibration.clone().expect("calibration record");
    assert_eq!(
        (
            record.key.stage,
            record.key.image.as_str(),
            record.key.slo_p99_ms
        ),
        (Stage::Postgres, IMAGE, 200)
    );
    assert_eq!(
        record.key.resources,
        key(&fs).resources,
        "the measured pod size is recorded"
    );
    assert_eq!(record.job.as_deref(), Some(job.as_str()));
    assert_eq!(
        fs_seen
            .condition("Calibrated")
            .map(|c| (c.status.clone(), c.reason.clone())),
        Some(("True".into(), "Measured".into()))
    );
    // ceil(7000 / (1000 × 0.7)) = 10
    assert_eq!(status.desired_replicas, 10);
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(10));
    wait_gone(&Api::<Job>::namespaced(client.clone(), &ns.name), &job).await;
    assert!(
        calibration_servers(&client, &ns.name, name)
            .await
            .iter()
            .all(|d| d.metadata.deletion_timestamp.is_some())
    );

    // A new target resizes from the same measurement: no new calibration.
    patch_spec(&client, &ns.name, name, json!({ "targetRps": 14_000 })).await;
    pass(&ctx, &ns.name, name).await;
    pass(&ctx, &ns.name, name).await;
    let status = status_of(&sales, name).await;
    assert_eq!(status.desired_replicas, 20);
    assert_eq!(
        status.calibration.as_ref().map(|r| &r.measured_at),
        Some(&record.measured_at),
        "not measured again"
    );
    assert_eq!(status.calibration_attempt, None);
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(20));
    assert!(calibration_jobs(&client, &ns.name, name).await.is_empty());

    // A bigger pod serves more: measured again, and sized with the old number meanwhile.
    let bigger = json!({ "requests": { "cpu": "20m", "memory": "16Mi" } });
    patch_spec(
        &client,
        &ns.name,
        name,
        json!({ "bookingApp": { "resources": bigger } }),
    )
    .await;
    fs.spec.booking_app.resources = Some(serde_json::from_value(bigger).unwrap());
    let (job, fs_seen) = reconcile_until_calibration_job(&ctx, &ns.name, &fs).await;
    let status = fs_seen.status.clone().unwrap();
    assert_eq!(
        (status.desired_replicas, status.measured_per_pod_rps),
        (20, None),
        "a live sale keeps its size"
    );
    let calibrated = fs_seen.condition("Calibrated").unwrap();
    assert!(
        calibrated
            .message
            .contains("sized meanwhile with the previous measurement"),
        "{calibrated:?}"
    );
    let result = r#"{"perPodRps":2000.0,"sloP99Ms":200,"p99Ms":90.0,"errorRate":0.0}"#;
    finish_job_pod(&ctx, &ns.name, name, &job, result).await;
    let status = status_of(&sales, name).await;
    // ceil(14000 / (2000 × 0.7)) = 10
    assert_eq!(
        (status.measured_per_pod_rps, status.desired_replicas),
        (Some(2000.0), 10)
    );

    // A new stage needs a new measurement: minReplicas until it is there. At stage kafka the
    // result also carries the drain rate of the sale's workers, which plans the queue.
    volumes.push(volume_for(&client, &ns.name, &names::data_claim(&names::kafka(name))).await);
    patch_spec(&client, &ns.name, name, json!({ "stage": "kafka" })).await;
    fs.spec.stage = Stage::Kafka;
    let (job, _) = reconcile_until_calibration_job(&ctx, &ns.name, &fs).await;
    let status = status_of(&sales, name).await;
    assert_eq!(
        (status.desired_replicas, status.measured_per_pod_rps),
        (2, None)
    );
    let result =
        r#"{"perPodRps":5000.0,"sloP99Ms":200,"p99Ms":80.0,"errorRate":0.0,"drainRps":800.0}"#;
    finish_job_pod(&ctx, &ns.name, name, &job, result).await;
    pass(&ctx, &ns.name, name).await;
    let status = status_of(&sales, name).await;
    assert_eq!(
        (
            status.measured_per_pod_rps,
            status.calibration.as_ref().map(|r| r.key.stage)
        ),
        (Some(5000.0), Some(Stage::Kafka))
    );
    assert_eq!(status.measured_drain_rps, Some(800.0));
    // ceil(14000 / (5000 × 0.7)) = 4
    assert_eq!(status.desired_replicas, 4);
    let kafka_api = names::booking_deployment(name, Stage::Kafka);
    assert_eq!(replicas_now(&deployments, &kafka_api).await, Some(4));
    let queue = status
        .sizing
        .and_then(|s| s.queue)
        .expect("status.sizing.queue");
    assert_eq!(
        queue,
        "1 worker decides the event in order at 800 rps; at the target of 14000 rps the queue grows by 13200 rps (792000 per minute)"
    );
    let workers = names::worker_deployment(name, Stage::Kafka);
    assert_eq!(replicas_now(&deployments, &workers).await, Some(1));

    for pv in volumes {
        let _ = Api::<PersistentVolume>::all(client.clone())
            .delete(&pv, &DeleteParams::default())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_window_holds_min_replicas_until_startsat_minus_warmup() {
    let (client, ns) = setup("window").await;
    let now: DateTime<Utc> = "2026-12-01T16:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let ctx = plain_context(&client).with_clock(clock.clone());
    let name = "window-sale";
    let mut fs = sale(name, Stage::Postgres, &ns.name);
    fs.spec.capacity.per_pod_rps = Some(1000.0);
    fs.spec.window = Some(
        serde_json::from_value(json!({
            "startsAt": "2026-12-01T18:00:00Z", "endsAt": "2026-12-01T20:00:00Z", "warmup": "10m"
        }))
        .unwrap(),
    );
    apply_sale(&client, &ns.name, &fs).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let api_deployment = names::booking_deployment(name, Stage::Postgres);

    // Hours before: minReplicas, and the next look is exactly at startsAt − warmup.
    first_pass(&ctx, &ns.name, name).await;
    let action = pass(&ctx, &ns.name, name).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(110 * 60)));
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(2));
    let sizing = status_of(&sales, name).await.sizing.unwrap();
    assert_eq!(sizing.reason, "BeforeWindow", "{}", sizing.message);

    // A second before, still held.
    clock.set("2026-12-01T17:49:59Z".parse().unwrap());
    assert_eq!(
        pass(&ctx, &ns.name, name).await,
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(2));

    // At startsAt − warmup: the computed size, ceil(7000 / 700) = 10; next look when the doors open.
    clock.advance(TimeDelta::seconds(1));
    let action = pass(&ctx, &ns.name, name).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10 * 60)));
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(10));

    // After endsAt: back to minReplicas.
    clock.set("2026-12-01T20:00:00Z".parse().unwrap());
    pass(&ctx, &ns.name, name).await;
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(2));
    assert_eq!(
        status_of(&sales, name).await.sizing.unwrap().reason,
        "AfterWindow"
    );
}

/// Request counters the test sets, standing in for the pods' /metrics (kwok pods serve nothing,
/// and their IPs must never be contacted): every read is recorded, none leaves the process.
#[derive(Default)]
struct FakeCounters {
    served: std::sync::Mutex<f64>,
    read_ips: std::sync::Mutex<Vec<String>>,
}

impl RequestCounter for FakeCounters {
    fn read<'a>(&'a self, pod: &'a PodTarget) -> BoxFuture<'a, Result<f64, ScrapeError>> {
        self.read_ips.lock().unwrap().push(pod.ip.clone());
        let served = *self.served.lock().unwrap();
        Box::pin(async move { Ok(served) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_load_above_plan_adds_pods() {
    let (client, ns) = setup("observe").await;
    let start: DateTime<Utc> = "2026-12-01T18:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let counters = Arc::new(FakeCounters::default());
    let ctx = plain_context(&client)
        .with_clock(clock.clone())
        .with_load_observer(LoadObserver::new(counters.clone()));
    let name = "busy-sale";
    let mut fs = sale(name, Stage::Postgres, &ns.name);
    fs.spec.capacity.per_pod_rps = Some(1000.0);
    fs.spec.target_rps = 2_100;
    apply_sale(&client, &ns.name, &fs).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let api_deployment = names::booking_deployment(name, Stage::Postgres);

    // Sized for the target: ceil(2100 / 700) = 3 pods, which kwok makes Ready.
    first_pass(&ctx, &ns.name, name).await;
    pass(&ctx, &ns.name, name).await;
    wait_for(&deployments, &api_deployment, "3 ready pods", |d| {
        d.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
    })
    .await;

    // A round of readings (the first pass, with no pod ready yet, read none): no rate yet.
    clock.advance(TimeDelta::seconds(15));
    pass(&ctx, &ns.name, name).await;
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(3));
    let read = counters.read_ips.lock().unwrap().clone();
    assert_eq!(read.len(), 3, "one read per ready pod: {read:?}");

    // 15 s later each pod has served 1400 rps, twice what a pod is planned for: 6 pods.
    *counters.served.lock().unwrap() = 1400.0 * 15.0;
    clock.advance(TimeDelta::seconds(15));
    pass(&ctx, &ns.name, name).await;
    assert_eq!(replicas_now(&deployments, &api_deployment).await, Some(6));
    let status = status_of(&sales, name).await;
    assert_eq!(
        (status.observed_rps, status.observed_per_pod_rps),
        (Some(4_200.0), Some(1400.0))
    );
    let sizing = status.sizing.unwrap();
    assert_eq!(sizing.reason, "ObservedLoad", "{}", sizing.message);
}
