//! Issue 14 against the real API server of `hack/control-plane.sh up`: what a platform team checks
//! before installing the operator. No takeovers: an object that holds a child's name and is not
//! the sale's is left exactly as it was, and the sale says so.

mod common;

use std::collections::BTreeMap;

use common::*;
use flashsale_contract::Stage;
use flashsale_operator::crd::{FlashSale, Phase};
use flashsale_operator::fixtures::FlashSaleBuilder;
use flashsale_operator::reconcile::desired::{labels, names};
use flashsale_operator::reconcile::status::{FOREIGN_OBJECT, types};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};

/// Someone's own Service and Secret, created before the sale, under the names its children take.
async fn foreign_objects(client: &Client, ns: &str, sale: &str) -> (Service, Secret) {
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        labels: Some(BTreeMap::from([("team".into(), "payments".into())])),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(names::booking_service(sale)),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".into(), "payments".into())])),
            ports: Some(vec![ServicePort {
                port: 443,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The Secret even carries the labels the sale's children have: a label is no proof of
    // ownership, the controller owner reference is.
    let mut secret_meta = meta(names::credentials_secret(sale));
    secret_meta.labels.as_mut().unwrap().extend(labels::labels(
        sale,
        labels::Component::Credentials,
        None,
    ));
    let secret = Secret {
        metadata: secret_meta,
        string_data: Some(BTreeMap::from([("token".into(), "not-yours".into())])),
        ..Default::default()
    };
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create foreign Service");
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create foreign Secret");
    (service, secret)
}

fn conflict_message(fs: &FlashSale) -> Option<String> {
    let c = fs.condition(types::CONFLICT)?;
    (c.status == "True" && c.reason == FOREIGN_OBJECT).then(|| c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_service_and_secret_of_a_childs_name_are_left_untouched() {
    let (client, ns) = setup("takeover").await;
    let (service, secret) = foreign_objects(&client, &ns.name, "f0").await;
    let _controller = start_controller(&client, &ns.name);
    apply_small_sale(&client, &ns.name, "f0", Stage::Postgres).await;

    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let fs = wait_for(&sales, "f0", "reporting the conflict", |fs| {
        conflict_message(fs).is_some_and(|m| m.contains("Service f0-booking-app"))
    })
    .await;
    let message = conflict_message(&fs).unwrap();
    eprintln!("Conflict condition: {message}");
    assert!(
        message.contains("Secret f0-credentials"),
        "both objects named: {message}"
    );
    let status = fs.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Degraded));
    let ready = fs.condition(types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", FOREIGN_OBJECT)
    );

    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let note = wait_until("a Conflict Warning event", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=f0"))
            .await
            .ok()?;
        list.items.into_iter().find_map(|e| {
            (e.reason.as_deref() == Some("Conflict") && e.type_.as_deref() == Some("Warning"))
                .then_some(e.message)
                .flatten()
        })
    })
    .await;
    eprintln!("Conflict event: {note}");
    assert!(note.contains("Service f0-booking-app"), "{note}");

    // A few passes later (requeues every 10 s) the objects are still exactly what was created.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let service_now = services.get(&service.name_any()).await.unwrap();
    let secret_now = secrets.get(&secret.name_any()).await.unwrap();
    assert_eq!(service_now.resource_version(), service.resource_version());
    assert_eq!(secret_now.resource_version(), secret.resource_version());
    assert_eq!(
        serde_json::to_value(&service_now).unwrap(),
        serde_json::to_value(&service).unwrap(),
        "Service byte-for-byte"
    );
    assert_eq!(
        serde_json::to_value(&secret_now).unwrap(),
        serde_json::to_value(&secret).unwrap(),
        "Secret byte-for-byte"
    );
    // Nothing of the sale was created beside them.
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        stateful_sets
            .get_opt(&names::postgres("f0"))
            .await
            .unwrap()
            .is_none()
    );

    // Once the names are free the sale goes ahead, and its children are its own.
    services
        .delete(&service.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    secrets
        .delete(&secret.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let uid = fs.uid().unwrap();
    let owned = wait_for(&services, "f0-booking-app", "the sale's own", |s| {
        s.owner_references().iter().any(|o| o.uid == uid)
    })
    .await;
    assert_ne!(owned.uid(), service.uid());
    wait_for(&sales, "f0", "without the conflict", |fs| {
        conflict_message(fs).is_none()
    })
    .await;
}

fn ready_condition(fs: &FlashSale) -> Option<(String, String)> {
    let c = fs.condition(types::READY)?;
    Some((c.reason.clone(), c.message.clone()))
}

/// An external Postgres's Secret: its URL under "url" and the `more` keys; labelled as its owner's
/// consent to be referenced if `allow_reference`.
fn store_secret(name: &str, allow_reference: bool, more: &[(&str, &str)]) -> Secret {
    let url = ("url", "postgres://u:p@db.example:5432/d");
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: allow_reference
                .then(|| BTreeMap::from([(labels::ALLOW_REFERENCE.into(), "true".into())])),
            ..Default::default()
        },
        string_data: Some(
            std::iter::once(&url)
                .chain(more)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// `secret` created, the controller started, and sale `name` applied with the Secret's "url" as
/// its external Postgres (and no in-cluster settings: a CEL rule).
async fn sale_on_external_postgres(
    client: &Client,
    ns: &str,
    name: &str,
    secret: Secret,
) -> (Api<Secret>, RunningController) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let controller = start_controller(client, ns);
    let mut fs = with_tiny_resources(
        FlashSaleBuilder::new(name, Stage::Postgres)
            .namespace(ns)
            .per_pod_rps(100.0)
            .external_postgres(&secret.name_any(), "url")
            .build_for_apply(),
    );
    fs.spec.postgres.in_cluster.resources = None;
    apply_sale(client, ns, &fs).await;
    (secrets, controller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_secret_is_referenced_only_with_its_owners_label() {
    let (client, ns) = setup("secretref").await;
    let secret = store_secret("team-db", false, &[]);
    let (secrets, _controller) = sale_on_external_postgres(&client, &ns.name, "ext", secret).await;
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let refused = wait_for(&sales, "ext", "refused for the Secret", |fs| {
        ready_condition(fs).is_some_and(|(reason, _)| reason == "InvalidSpec")
    })
    .await;
    let (_, message) = ready_condition(&refused).unwrap();
    eprintln!("Ready: InvalidSpec: {message}");
    assert!(
        message.contains("team-db")
            && message.contains(flashsale_operator::reconcile::desired::labels::ALLOW_REFERENCE),
        "{message}"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns.name);
    assert!(
        deployments
            .get_opt(&names::booking_deployment("ext", Stage::Postgres))
            .await
            .unwrap()
            .is_none(),
        "no pod was given the Secret"
    );

    // The owner opts in: the sale goes ahead at its next look (30 s, the Secret is not watched).
    secrets
        .patch(
            "team-db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {
                flashsale_operator::reconcile::desired::labels::ALLOW_REFERENCE: "true"
            }}})),
        )
        .await
        .unwrap();
    wait_for(
        &deployments,
        &names::booking_deployment("ext", Stage::Postgres),
        "created",
        |_| true,
    )
    .await;
}

/// Issue 17: the CA and client certificate an external store's Secret carries reach the pods as
/// mounted files the API server accepts; a certificate without its key is named, not mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_secrets_tls_keys_are_mounted_and_a_half_given_pair_is_named() {
    use flashsale_operator::contract::{self, external_secret};
    let (client, ns) = setup("storetls").await;
    let pair_half = [
        (external_secret::CA, "-----BEGIN CERTIFICATE-----"),
        (external_secret::TLS_CERT, "-----BEGIN CERTIFICATE-----"),
    ];
    let secret = store_secret("managed-db", true, &pair_half);
    let (secrets, _controller) = sale_on_external_postgres(&client, &ns.name, "tls", secret).await;
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let stores = |fs: &FlashSale| {
        fs.condition(types::STORES_READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let lacking = wait_for(&sales, "tls", "the missing tls.key named", |fs| {
        stores(fs).is_some_and(|(status, reason, message)| {
            status == "False"
                && reason == "ExternalSecretMissing"
                && message.contains("managed-db/tls.key")
        })
    })
    .await;
    eprintln!("StoresReady: {:?}", stores(&lacking));

    secrets
        .patch(
            "managed-db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"stringData": {
                external_secret::TLS_KEY: "-----BEGIN PRIVATE KEY-----"
            }})),
        )
        .await
        .unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns.name);
    // The Secret is not watched: the pair arrives at the sale's next look (30 s while a key is
    // missing).
    let deployment = wait_for(
        &deployments,
        &names::booking_deployment("tls", Stage::Postgres),
        "the client certificate mounted",
        |d| env_of(d).contains_key(contract::DB_SSL_CLIENT_KEY),
    )
    .await;
    let env = env_of(&deployment);
    assert_eq!(
        env[contract::DB_SSL_MODE],
        contract::DB_SSL_MODE_VERIFY_FULL
    );
    let pod = pod_spec(&deployment);
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("managed-db"))
        .expect("a volume of the store's Secret");
    let items: Vec<_> = volume
        .secret
        .as_ref()
        .unwrap()
        .items
        .iter()
        .flatten()
        .map(|i| i.key.as_str())
        .collect();
    assert_eq!(
        items,
        [
            external_secret::CA,
            external_secret::TLS_CERT,
            external_secret::TLS_KEY
        ]
    );
    let mount = first_container(&deployment)
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("mounted");
    for var in [
        contract::DB_SSL_ROOT_CERT,
        contract::DB_SSL_CLIENT_CERT,
        contract::DB_SSL_CLIENT_KEY,
    ] {
        assert!(
            env[var].starts_with(&mount.mount_path),
            "{var}={} outside {}",
            env[var],
            mount.mount_path
        );
    }
    wait_for(&sales, "tls", "stores ready", |fs| {
        stores(fs).is_some_and(|(status, ..)| status == "True")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_outside_the_allowlist_is_refused() {
    let (client, ns) = setup("allowlist").await;
    let ctx = std::sync::Arc::new(flashsale_operator::context::Context::new(
        client.clone(),
        std::sync::Arc::new(flashsale_operator::metrics::Metrics::default()),
        flashsale_operator::reconcile::validate::Defaults {
            booking_app_image: "registry.corp.example/booking-app:test".into(),
            allowed_image_prefixes: vec!["registry.corp.example/".into()],
            ..Default::default()
        },
    ));
    let _controller = start_controller_with(ctx, &ns.name);
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let outside = small_sale("outside", Stage::Postgres, &ns.name);
    let mut outside = outside;
    outside.spec.booking_app.image = Some("docker.io/someone/booking-app:1".into());
    apply_sale(&client, &ns.name, &outside).await;
    // The operator's own default image is not the author's choice: a sale naming none goes ahead.
    apply_small_sale(&client, &ns.name, "inside", Stage::Postgres).await;

    let refused = wait_for(&sales, "outside", "refused for its image", |fs| {
        ready_condition(fs).is_some_and(|(reason, _)| reason == "InvalidSpec")
    })
    .await;
    let (_, message) = ready_condition(&refused).unwrap();
    eprintln!("Ready: InvalidSpec: {message}");
    assert!(
        message.contains("docker.io/someone/booking-app:1")
            && message.contains("registry.corp.example/"),
        "{message}"
    );
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        &stateful_sets,
        &names::postgres("inside"),
        "created",
        |_| true,
    )
    .await;
    assert!(
        stateful_sets
            .get_opt(&names::postgres("outside"))
            .await
            .unwrap()
            .is_none()
    );
}
