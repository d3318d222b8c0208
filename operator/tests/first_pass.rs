//! A new sale's first reconcile pass (against the test control plane, `hack/control-plane.sh
//! up`): its status, sizing included, before any child exists.

mod common;

use common::*;
use flashsale_contract::Stage;
use flashsale_operator::crd::{FlashSale, Phase};
use flashsale_operator::reconcile::desired::names;
use flashsale_operator::reconcile::reconcile_by_name;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;

/// A new sale's status carries its sizing before any of its children exists, and says so; the
/// pass after creates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sales_first_pass_writes_its_sizing_and_creates_nothing() {
    let (client, ns) = setup("first-pass").await;
    let ctx = context(&client);
    apply_small_sale(&client, &ns.name, "fresh", Stage::Postgres).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let api_name = names::booking_deployment("fresh", Stage::Postgres);

    first_pass(&ctx, &ns.name, "fresh").await;
    let sale: FlashSale = Api::namespaced(client.clone(), &ns.name)
        .get("fresh")
        .await
        .unwrap();
    let status = sale.status.clone().expect("status written");
    // ceil(200 / (100 × 0.7)) = 3
    assert_eq!(status.desired_replicas, 3);
    assert!(status.sizing.is_some());
    assert_eq!(status.observed_generation, sale.metadata.generation);
    assert_eq!(status.phase, Some(Phase::Pending));
    let booking = sale.condition("BookingAppReady").expect("BookingAppReady");
    assert_eq!(
        (booking.status.as_str(), booking.reason.as_str()),
        ("False", "NotCreated")
    );
    assert_eq!(sale.condition("Ready").unwrap().status, "False");
    assert!(deployments.get_opt(&api_name).await.unwrap().is_none());
    assert!(
        stateful_sets
            .get_opt("fresh-postgres")
            .await
            .unwrap()
            .is_none()
    );

    reconcile_by_name(&ctx, &ns.name, "fresh")
        .await
        .expect("second pass");
    let api = deployments
        .get(&api_name)
        .await
        .expect("created by the second pass");
    assert_eq!(replicas(&api), Some(3));
    assert!(
        stateful_sets
            .get_opt("fresh-postgres")
            .await
            .unwrap()
            .is_some()
    );
}
