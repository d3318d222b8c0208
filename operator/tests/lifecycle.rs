//! A sale's life beyond serving, against the real API server of the test control plane: its
//! NetworkPolicies (accepted by the API server, selecting the sale's own pods), its deletion
//! (the finalizer holds it until the stage is drained, then only the Postgres volume and the
//! credentials it opens stay), its recreation under the same name, and calibration held while
//! the sale window is open.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use flashsale_contract::Stage;
use flashsale_operator::crd::{FlashSale, Phase};
use flashsale_operator::fixtures::FlashSaleBuilder;
use flashsale_operator::reconcile::desired::{labels, names};
use flashsale_operator::reconcile::reconcile_by_name;
use flashsale_operator::reconcile::teardown::{self, FINALIZER};
use flashsale_operator::schedule::ManualClock;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Does `selector` (matchLabels and matchExpressions In/NotIn) select a pod labelled `labels`?
fn selects(selector: &LabelSelector, pod: &Pod) -> bool {
    let labels = pod.labels();
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            other => panic!("operator {other} not expected"),
        }
    });
    by_labels && by_expressions
}

async fn pods(client: &Client, ns: &str, sale: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{}={sale}", labels::INSTANCE)))
        .await
        .expect("list pods")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_gets_network_policies_the_api_server_accepts() {
    let (client, ns) = setup("netpol").await;
    let _controller = start_controller(&client, &ns.name);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for (stage, store) in [
        (Stage::Postgres, None),
        (Stage::Redis, Some(6379)),
        (Stage::Kafka, Some(9092)),
    ] {
        let name = format!("np-{stage}");
        apply_small_sale(&client, &ns.name, &name, stage).await;
        let api_deployment = names::booking_deployment(&name, stage);
        wait_for(&deployments, &api_deployment, "created", |_| true).await;
        let postgres = wait_for(&policies, &names::postgres(&name), "created", |_| true).await;
        let api = wait_for(
            &policies,
            &names::api_network_policy(&name),
            "created",
            |_| true,
        )
        .await;
        wait_for(
            &policies,
            &names::internal_network_policy(&name),
            "created",
            |_| true,
        )
        .await;
        let mut stores = vec![(postgres, 5432)];
        if let Some(port) = store {
            let store_name = if stage == Stage::Redis {
                names::redis(&name)
            } else {
                names::kafka(&name)
            };
            stores.push((
                wait_for(&policies, &store_name, "created", |_| true).await,
                port,
            ));
        }
        // kwok runs the sale's pods: once each store's pod exists, every pod the operator made
        // is admitted to each store, and each store policy selects exactly its store's pod.
        let sale_pods = wait_until("the sale's store and API pods", || async {
            let pods = pods(&client, &ns.name, &name).await;
            let each_store_has_its_pod = stores.iter().all(|(policy, _)| {
                let guarded = policy.spec.as_ref().unwrap().pod_selector.as_ref().unwrap();
                pods.iter().filter(|p| selects(guarded, p)).count() == 1
            });
            (each_store_has_its_pod && pods.len() > stores.len()).then_some(pods)
        })
        .await;
        for (policy, port) in &stores {
            let spec = policy.spec.clone().unwrap();
            let rule = &spec.ingress.as_ref().unwrap()[0];
            let ports: Vec<_> = rule
                .ports
                .iter()
                .flatten()
                .map(|p| p.port.clone())
                .collect();
            assert_eq!(ports.len(), 1);
            assert_eq!(
                serde_json::to_value(&ports[0]).unwrap(),
                json!(port),
                "{}",
                policy.name_any()
            );
            let from = rule.from.as_ref().expect("a store admits named peers only");
            let admitted = from[0].pod_selector.as_ref().unwrap();
            for pod in &sale_pods {
                assert!(
                    selects(admitted, pod),
                    "{} does not admit {}",
                    policy.name_any(),
                    pod.name_any()
                );
            }
        }
        // The API pods are guarded by the API policy, which opens the API port to anyone.
        let api_spec = api.spec.unwrap();
        let guarded = api_spec.pod_selector.as_ref().unwrap();
        assert!(sale_pods.iter().any(|p| selects(guarded, p)));
        assert!(api_spec.ingress.unwrap()[0].from.is_none());
        // Metrics on their own port.
        let d = deployments.get(&api_deployment).await.unwrap();
        let container = first_container(&d);
        assert!(
            container
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some("metrics") && p.container_port == 9090)
        );
    }

    // Turned off: the policies go.
    patch_spec(
        &client,
        &ns.name,
        "np-redis",
        json!({ "networkPolicy": { "enabled": false } }),
    )
    .await;
    wait_gone(&policies, "np-redis-redis").await;
    wait_gone(&policies, "np-redis-booking-app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_redis_sale_drains_it_first_then_keeps_only_the_volume_and_recreating_it_gets_ready()
 {
    let (client, ns) = setup("delete").await;
    let name = "gone";
    let claim = teardown::postgres_claim(name);
    let pv = volume_for(&client, &ns.name, &claim).await;
    let _controller = start_controller(&client, &ns.name);
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);

    apply_small_sale(&client, &ns.name, name, Stage::Redis).await;
    let first = wait_for(&sales, name, "Ready", |s| {
        s.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
    })
    .await;
    assert!(first.finalizers().iter().any(|f| f == FINALIZER));
    let credentials = names::credentials_secret(name);
    let password = |s: &Secret| s.data.clone().unwrap()["postgres-password"].clone();
    let first_password = password(&secrets.get(&credentials).await.unwrap());

    sales
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    // Held by the finalizer: the API stops, then the drain Job runs while the sale and its
    // stores still exist.
    wait_for(&sales, name, "Deleting", |s| {
        s.status.as_ref().and_then(|s| s.phase) == Some(Phase::Deleting)
    })
    .await;
    let drain = names::drain_job(name, Stage::Redis);
    let job = wait_for(&jobs, &drain, "created", |_| true).await;
    let api_replicas = replicas(
        &deployments
            .get(&names::booking_deployment(name, Stage::Redis))
            .await
            .unwrap(),
    );
    assert_eq!(api_replicas, Some(0), "the API is stopped before the drain");
    assert!(
        sales.get_opt(name).await.unwrap().is_some(),
        "the sale outlives its drain Job's creation"
    );
    assert!(
        stateful_sets
            .get_opt(&names::redis(name))
            .await
            .unwrap()
            .is_some()
    );
    let args = first_container(&job).args.clone().unwrap();
    assert_eq!(args, ["worker", "--drain"]);

    // kwok completes the drain Job's pod; then the sale goes and garbage collection takes its
    // children, all but the Postgres volume and the credentials that open it.
    wait_gone(&sales, name).await;
    for d in [
        names::booking_deployment(name, Stage::Redis),
        names::worker_deployment(name, Stage::Redis),
    ] {
        wait_gone(&deployments, &d).await;
    }
    for s in [names::postgres(name), names::redis(name)] {
        wait_gone(&stateful_sets, &s).await;
    }
    wait_gone(&services, &names::booking_service(name)).await;
    wait_gone(&jobs, &drain).await;
    let kept_claim = claims
        .get(&claim)
        .await
        .expect("the Postgres volume's claim is kept");
    let kept = secrets.get(&credentials).await.expect("credentials kept");
    assert!(teardown::is_kept_with_volume(&kept.metadata, name));
    assert_eq!(
        kept.owner_references()
            .iter()
            .map(|o| o.uid.as_str())
            .collect::<Vec<_>>(),
        [kept_claim.uid().unwrap().as_str()]
    );

    // The same name again: the kept credentials are adopted (the database's password), Ready.
    apply_small_sale(&client, &ns.name, name, Stage::Redis).await;
    let second = wait_for(&sales, name, "Ready again", |s| {
        s.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
    })
    .await;
    let adopted = secrets.get(&credentials).await.unwrap();
    assert_eq!(password(&adopted), first_password);
    assert!(
        adopted
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == second.uid().as_ref() && o.controller == Some(true)),
        "owned by the new sale: {:?}",
        adopted.owner_references()
    );
    // Let the test's namespace go: delete the sale and wait for its release.
    sales.delete(name, &DeleteParams::default()).await.unwrap();
    wait_gone(&sales, name).await;
    let _ = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone())
        .delete(&pv, &DeleteParams::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_store_is_gone_is_released_at_once() {
    let (client, ns) = setup("storegone").await;
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let controller = start_controller(&client, &ns.name);
    let name = "orphaned";
    apply_small_sale(&client, &ns.name, name, Stage::Kafka).await;
    wait_for(&sales, name, "serving kafka", |s| {
        s.status.as_ref().and_then(|s| s.stage) == Some(Stage::Kafka)
            && s.finalizers().iter().any(|f| f == FINALIZER)
    })
    .await;
    wait_for(&stateful_sets, &names::kafka(name), "created", |_| true).await;
    // The operator is away while someone deletes the Kafka StatefulSet and the sale.
    drop(controller);
    stateful_sets
        .delete(&names::kafka(name), &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&stateful_sets, &names::kafka(name)).await;
    sales.delete(name, &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sales.get_opt(name).await.unwrap().is_some(),
        "held while no operator looks"
    );
    let _controller = start_controller(&client, &ns.name);
    wait_gone(&sales, name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_waits_for_the_window_to_end_even_when_its_key_changes() {
    let (client, ns) = setup("calhold").await;
    let name = "held";
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-01T18:30:00Z")));
    let ctx = plain_context(&client).with_clock(clock.clone());
    let mut fs = with_tiny_resources(
        FlashSaleBuilder::new(name, Stage::Postgres)
            .namespace(&ns.name)
            .target_rps(1000)
            .replicas(2, 20)
            .build_for_apply(),
    );
    fs.spec.window = Some(
        serde_json::from_value(json!({
            "startsAt": "2026-12-01T18:00:00Z", "endsAt": "2026-12-01T20:00:00Z", "warmup": "10m"
        }))
        .unwrap(),
    );
    apply_sale(&client, &ns.name, &fs).await;
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let calibration = format!(
        "{},{}=calibration",
        labels::children_of(name),
        labels::COMPONENT
    );
    let calibration_objects = || async {
        let d = deployments
            .list(&ListParams::default().labels(&calibration))
            .await
            .unwrap()
            .items
            .len();
        let j = Api::<Job>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default().labels(&labels::children_of(name)))
            .await
            .unwrap()
            .items
            .len();
        d + j
    };
    let calibrated = |fs: &FlashSale| {
        fs.status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Calibrated")
                    .cloned()
            })
            .expect("Calibrated condition")
    };

    // The scratch pod needs the stores (StoresReady), which kwok makes Ready in its own time:
    // first wait for them, so that what holds the calibration below is the window alone.
    let stores_ready = |fs: &FlashSale| {
        fs.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "StoresReady" && c.status == "True")
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        reconcile_by_name(&ctx, &ns.name, name)
            .await
            .expect("reconcile");
        if stores_ready(&sales.get(name).await.unwrap()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stores never became ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Inside the window: no scratch pod, no Job, however often it looks. (The loop above ran
    // the new sale's status-only first pass.)
    for _ in 0..3 {
        reconcile_by_name(&ctx, &ns.name, name)
            .await
            .expect("reconcile");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(calibration_objects().await, 0);
    let held = calibrated(&sales.get(name).await.unwrap());
    assert_eq!(held.reason, "WaitingForWindowEnd", "{}", held.message);

    // A key change (recalibration asked for) inside the window: still nothing.
    sales
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"flashsale.dev/recalibrate": "1"}}})),
        )
        .await
        .unwrap();
    clock.set(at("2026-12-01T19:59:59Z"));
    reconcile_by_name(&ctx, &ns.name, name)
        .await
        .expect("reconcile");
    assert_eq!(calibration_objects().await, 0);

    // The window is over: the scratch pod starts.
    clock.set(at("2026-12-01T20:00:00Z"));
    reconcile_by_name(&ctx, &ns.name, name)
        .await
        .expect("reconcile");
    assert_eq!(
        calibration_objects().await,
        1,
        "the scratch pod's Deployment"
    );
    let started = calibrated(&sales.get(name).await.unwrap());
    assert_eq!(started.reason, "Calibrating", "{}", started.message);
}
