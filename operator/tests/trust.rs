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
    let status = fs.status.as_ref()?;
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::CONFLICT && c.status == "True")?;
    (c.reason == FOREIGN_OBJECT).then(|| c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_service_and_secret_of_a_childs_name_are_left_untouched() {
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "takeover").await;
    let (service, secret) = foreign_objects(&client, &ns.name, "f0").await;
    let _controller = start_controller(&client, &ns.name);
    apply_sale(
        &client,
        &ns.name,
        &small_sale("f0", Stage::Postgres, &ns.name),
    )
    .await;

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
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::READY)
        .unwrap();
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
    let c = fs
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == types::READY)?;
    Some((c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_secret_is_referenced_only_with_its_owners_label() {
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "secretref").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("team-db".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "url".into(),
            "postgres://u:p@db.example:5432/d".into(),
        )])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let _controller = start_controller(&client, &ns.name);
    let mut fs = with_tiny_resources(
        FlashSaleBuilder::new("ext", Stage::Postgres)
            .namespace(&ns.name)
            .per_pod_rps(100.0)
            .external_postgres("team-db", "url")
            .build_for_apply(),
    );
    // An external store has no in-cluster settings (a CEL rule).
    fs.spec.postgres.in_cluster.resources = None;
    apply_sale(&client, &ns.name, &fs).await;
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
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "storetls").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("managed-db".into()),
            labels: Some(BTreeMap::from([(
                labels::ALLOW_REFERENCE.into(),
                "true".into(),
            )])),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("url".into(), "postgres://u:p@db.example:5432/d".into()),
            (
                external_secret::CA.into(),
                "-----BEGIN CERTIFICATE-----".into(),
            ),
            (
                external_secret::TLS_CERT.into(),
                "-----BEGIN CERTIFICATE-----".into(),
            ),
        ])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let _controller = start_controller(&client, &ns.name);
    let mut fs = with_tiny_resources(
        FlashSaleBuilder::new("tls", Stage::Postgres)
            .namespace(&ns.name)
            .per_pod_rps(100.0)
            .external_postgres("managed-db", "url")
            .build_for_apply(),
    );
    fs.spec.postgres.in_cluster.resources = None;
    apply_sale(&client, &ns.name, &fs).await;
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let stores = |fs: &FlashSale| {
        fs.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == types::STORES_READY)
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
    let env_of = |d: &k8s_openapi::api::apps::v1::Deployment| -> BTreeMap<String, String> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect()
    };
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
    let pod = deployment.spec.unwrap().template.spec.unwrap();
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
    let mount = pod.containers[0]
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
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "allowlist").await;
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
    apply_sale(
        &client,
        &ns.name,
        &small_sale("inside", Stage::Postgres, &ns.name),
    )
    .await;

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
