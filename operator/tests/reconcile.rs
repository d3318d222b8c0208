//! The operator against a real API server (`hack/control-plane.sh up`: etcd, kube-apiserver,
//! controller-manager, scheduler, kwok nodes). Each test gets its own namespace and its own
//! in-process controller watching only that namespace.

mod common;

use std::collections::BTreeMap;

use common::*;
use flashsale_contract::Stage;
use flashsale_operator::crd::{FlashSale, Phase};
use flashsale_operator::reconcile::desired::{labels, names};
use flashsale_operator::reconcile::reconcile_by_name;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

fn owned_by(obj: &impl Resource, owner: &FlashSale) -> bool {
    obj.meta().owner_references.iter().flatten().any(|o| {
        Some(&o.uid) == owner.metadata.uid.as_ref()
            && o.controller == Some(true)
            && o.kind == "FlashSale"
    })
}

fn env_value(d: &Deployment, var: &str) -> Option<String> {
    env_of(d).remove(var)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_a_sale_creates_every_child_owned_by_it() {
    let (client, ns) = setup("children").await;
    let _controller = start_controller(&client, &ns.name);
    let fs = apply_small_sale(&client, &ns.name, "tour", Stage::Kafka).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let api = wait_for(&deployments, "tour-booking-app-kafka", "created", |_| true).await;
    // ceil(200 / (100 × 0.7)) = 3
    assert_eq!(replicas(&api), Some(3));
    assert_eq!(env_value(&api, "STAGE").as_deref(), Some("kafka"));
    assert_eq!(
        env_value(&api, "KAFKA_BROKERS"),
        Some(format!("tour-kafka.{}.svc:9092", ns.name))
    );
    let worker = wait_for(&deployments, "tour-worker-kafka", "created", |_| true).await;
    assert_eq!(
        first_container(&worker).args.as_deref(),
        Some(&["worker".to_string()][..])
    );

    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns.name);
    for name in ["tour-postgres", "tour-kafka"] {
        let sts = wait_for(&stateful_sets, name, "created", |_| true).await;
        assert!(owned_by(&sts, &fs), "{name} owner");
        let svc = wait_for(&services, name, "created", |_| true).await;
        assert!(owned_by(&svc, &fs), "{name} service owner");
    }
    let svc = wait_for(&services, "tour-booking-app", "created", |_| true).await;
    assert_eq!(svc.spec.unwrap().selector.unwrap()[labels::STAGE], "kafka");
    let secret = wait_for(&secrets, "tour-credentials", "created", |_| true).await;
    let pdb = wait_for(&pdbs, "tour-booking-app", "created", |_| true).await;
    for obj in [
        api.metadata.clone(),
        worker.metadata.clone(),
        secret.metadata.clone(),
        pdb.metadata.clone(),
    ] {
        assert!(
            obj.owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == fs.metadata.uid.as_ref()),
            "{:?} owner",
            obj.name
        );
        assert_eq!(obj.labels.unwrap()[labels::MANAGED_BY], labels::MANAGER);
    }
    assert!(
        stateful_sets.get_opt("tour-redis").await.unwrap().is_none(),
        "stage kafka runs no redis"
    );

    // The generated password survives further reconciles.
    let password = secret.data.as_ref().unwrap()[names::secret_keys::POSTGRES_PASSWORD].clone();
    patch_spec(&client, &ns.name, "tour", json!({ "targetRps": 300 })).await;
    wait_for(&deployments, "tour-booking-app-kafka", "resized", |d| {
        replicas(d) == Some(5)
    })
    .await;
    let again = secrets.get("tour-credentials").await.unwrap();
    assert_eq!(
        again.data.unwrap()[names::secret_keys::POSTGRES_PASSWORD],
        password
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_target_and_stage_updates_children_and_removes_stale_ones() {
    let (client, ns) = setup("stages").await;
    let _controller = start_controller(&client, &ns.name);
    apply_small_sale(&client, &ns.name, "sale", Stage::Postgres).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        &deployments,
        "sale-booking-app-postgres",
        "at 3 replicas",
        |d| replicas(d) == Some(3),
    )
    .await;

    // targetRps: the same Deployment is resized.
    patch_spec(&client, &ns.name, "sale", json!({ "targetRps": 1000 })).await;
    wait_for(
        &deployments,
        "sale-booking-app-postgres",
        "at 15 replicas",
        |d| replicas(d) == Some(15),
    )
    .await;

    // postgres → redis: nothing to drain; the postgres stage's pods stop, then redis starts.
    patch_spec(&client, &ns.name, "sale", json!({ "stage": "redis" })).await;
    wait_for(&deployments, "sale-booking-app-redis", "created", |d| {
        env_value(d, "STAGE").as_deref() == Some("redis")
    })
    .await;
    wait_for(&deployments, "sale-worker-redis", "created", |_| true).await;
    wait_for(&stateful_sets, "sale-redis", "created", |_| true).await;
    wait_gone(&deployments, "sale-booking-app-postgres").await;
    wait_for(&sales, "sale", "serving redis", |s| {
        s.status.as_ref().and_then(|s| s.stage) == Some(Stage::Redis)
    })
    .await;

    // redis → postgres: the redis backlog is drained by a Job before postgres pods start.
    patch_spec(&client, &ns.name, "sale", json!({ "stage": "postgres" })).await;
    wait_for(&sales, "sale", "draining", |s| {
        s.status.as_ref().and_then(|s| s.phase) == Some(Phase::Draining)
    })
    .await;
    let job = wait_for(&jobs, "sale-drain-redis", "created", |_| true).await;
    let args = first_container(&job).args.clone().unwrap();
    assert_eq!(args, ["worker", "--drain"]);
    // kwok completes the Job's pod; then the sale switches and the redis stage is removed.
    wait_for(
        &deployments,
        "sale-booking-app-postgres",
        "recreated",
        |d| replicas(d) == Some(15),
    )
    .await;
    wait_gone(&stateful_sets, "sale-redis").await;
    wait_gone(&deployments, "sale-worker-redis").await;
    wait_gone(&deployments, "sale-booking-app-redis").await;
    wait_gone(&jobs, "sale-drain-redis").await;
    let sale = wait_for(&sales, "sale", "serving postgres", |s| {
        s.status.as_ref().and_then(|s| s.stage) == Some(Stage::Postgres)
    })
    .await;
    let settled = sale
        .condition("StageSettled")
        .expect("StageSettled condition");
    assert_eq!(
        (settled.status.as_str(), settled.reason.as_str()),
        ("True", "Serving")
    );

    // Both switches are on the record. The recorder folds repeats of a reason into one Event
    // series, so count occurrences, not objects.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let reasons = wait_until("two StageSwitched events", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=sale"))
            .await
            .ok()?;
        let occurrences = |e: &Event| {
            e.series
                .as_ref()
                .map_or(e.count.unwrap_or(1), |s| s.count.unwrap_or(1))
        };
        let switched: i32 = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("StageSwitched"))
            .map(occurrences)
            .sum();
        let reasons: Vec<String> = list.items.into_iter().filter_map(|e| e.reason).collect();
        (switched >= 2).then_some(reasons)
    })
    .await;
    assert!(reasons.iter().any(|r| r == "Draining"), "{reasons:?}");
}

/// `spec.auth` trusting an identity provider: its JWKS by URL or ConfigMap.
fn idp(url: Option<&str>, config_map: Option<&str>) -> flashsale_operator::crd::AuthSpec {
    flashsale_operator::crd::AuthSpec {
        issuer: Some("https://id.example.com/".into()),
        audience: Some("tickets".into()),
        jwks: Some(flashsale_operator::crd::JwksSource {
            url: url.map(Into::into),
            config_map_ref: config_map.map(|name| flashsale_operator::crd::ConfigMapKeyRef {
                name: name.into(),
                key: "jwks.json".into(),
            }),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sales_are_refused_by_the_api_server_with_the_cel_message() {
    let (client, ns) = setup("invalid").await;
    let api: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    type Mutation = Box<dyn Fn(&mut FlashSale)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "min-max",
            Box::new(|fs| {
                fs.spec.capacity.min_replicas = 9;
                fs.spec.capacity.max_replicas = 3;
            }),
            "capacity.minReplicas must not exceed capacity.maxReplicas",
        ),
        (
            "util",
            Box::new(|fs| fs.spec.capacity.target_utilization = 1.5),
            "capacity.targetUtilization must be greater than 0 and at most 1",
        ),
        (
            "window",
            Box::new(|fs| {
                let t = |s| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::from_second(s).unwrap(),
                    )
                };
                fs.spec.window = Some(flashsale_operator::crd::WindowSpec {
                    starts_at: t(2_000_000_000),
                    ends_at: t(1_900_000_000),
                    warmup: Some("10m".into()),
                });
            }),
            "window.endsAt must be after window.startsAt",
        ),
        (
            "both",
            Box::new(|fs| {
                fs.spec.postgres.external = Some(flashsale_operator::crd::ExternalStore {
                    secret_ref: flashsale_operator::crd::SecretKeyRef {
                        name: "pg".into(),
                        key: "url".into(),
                    },
                });
                fs.spec.postgres.in_cluster.storage = Some(Quantity("1Gi".into()));
            }),
            "postgres: use either external",
        ),
        (
            "port",
            Box::new(|fs| fs.spec.booking_app.service.node_port = Some(30080)),
            "nodePort needs type NodePort or LoadBalancer",
        ),
        (
            "jwks-http",
            Box::new(|fs| fs.spec.auth = Some(idp(Some("http://id.example.com/jwks"), None))),
            "auth.jwks.url must be an https:// URL",
        ),
        (
            "jwks-both",
            Box::new(|fs| {
                fs.spec.auth = Some(idp(Some("https://id.example.com/jwks"), Some("idp-keys")))
            }),
            "auth.jwks: set exactly one of url and configMapRef",
        ),
        (
            "jwks-anyone",
            Box::new(|fs| {
                let mut auth = idp(None, Some("idp-keys"));
                auth.audience = None;
                fs.spec.auth = Some(auth);
            }),
            "auth.jwks needs auth.issuer and auth.audience",
        ),
    ];
    for (name, mutate, message) in cases {
        let mut fs = small_sale(name, Stage::Postgres, &ns.name);
        mutate(&mut fs);
        match api.create(&PostParams::default(), &fs).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains(message),
                    "{name}: {}",
                    status.message
                );
            }
            other => panic!("{name}: expected a 422 refusal, got {other:?}"),
        }
    }
    let mut long = small_sale(&"a".repeat(41), Stage::Postgres, &ns.name);
    long.metadata.name = Some("a".repeat(41));
    let err = api.create(&PostParams::default(), &long).await.unwrap_err();
    assert!(err.to_string().contains("at most 40 characters"), "{err}");
    // And a valid one is accepted, an identity provider's sale too.
    api.create(
        &PostParams::default(),
        &small_sale("fine", Stage::Postgres, &ns.name),
    )
    .await
    .expect("valid sale accepted");
    let mut idp_sale = small_sale("idp", Stage::Postgres, &ns.name);
    idp_sale.spec.auth = Some(idp(Some("https://id.example.com/jwks"), None));
    let created = api
        .create(&PostParams::default(), &idp_sale)
        .await
        .expect("a sale trusting an https JWKS is accepted");
    assert_eq!(
        created.spec.auth, idp_sale.spec.auth,
        "spec.auth is kept whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_sale_garbage_collects_its_children() {
    let (client, ns) = setup("gc").await;
    let controller = start_controller(&client, &ns.name);
    apply_small_sale(&client, &ns.name, "gone", Stage::Redis).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    wait_for(&deployments, "gone-worker-redis", "created", |_| true).await;
    wait_for(&stateful_sets, "gone-redis", "created", |_| true).await;
    // Stop the controller first: the drain finalizer then holds the sale and its children,
    // until it is taken off by hand (README, "Deleting a sale"); the garbage collector alone
    // removes the children then.
    drop(controller);
    let sales = Api::<FlashSale>::namespaced(client.clone(), &ns.name);
    sales
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        sales.get_opt("gone").await.unwrap().is_some(),
        "held by its finalizer"
    );
    assert!(
        deployments
            .get_opt("gone-worker-redis")
            .await
            .unwrap()
            .is_some()
    );
    sales
        .patch(
            "gone",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    for name in ["gone-booking-app-redis", "gone-worker-redis"] {
        wait_gone(&deployments, name).await;
    }
    for name in ["gone-postgres", "gone-redis"] {
        wait_gone(&stateful_sets, name).await;
    }
    wait_gone(&secrets, "gone-credentials").await;
}

/// resourceVersion of the sale and of every child it owns.
async fn versions(client: &Client, ns: &str, sale: &str) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels(&labels::children_of(sale));
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($kind:ty) => {
            for o in Api::<$kind>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .unwrap()
            {
                out.insert(
                    format!("{}/{}", <$kind as Resource>::kind(&()), o.name_any()),
                    o.resource_version().unwrap(),
                );
            }
        };
    }
    collect!(Deployment);
    collect!(StatefulSet);
    collect!(Service);
    collect!(Secret);
    collect!(Job);
    collect!(PodDisruptionBudget);
    let fs = Api::<FlashSale>::namespaced(client.clone(), ns)
        .get(sale)
        .await
        .unwrap();
    out.insert("FlashSale".into(), fs.resource_version().unwrap());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_becomes_ready_and_a_second_reconcile_changes_nothing() {
    let (client, ns) = setup("ready").await;
    let pv = volume_for(&client, &ns.name, &names::data_claim("ready-sale-postgres")).await;
    let controller = start_controller(&client, &ns.name);
    apply_small_sale(&client, &ns.name, "ready-sale", Stage::Postgres).await;
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    let sale = wait_for(&sales, "ready-sale", "Ready", |s| {
        s.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
    })
    .await;

    let status = sale.status.clone().unwrap();
    assert_eq!((status.replicas, status.desired_replicas), (3, 3));
    assert_eq!(status.per_pod_rps, Some(100.0));
    assert_eq!(status.stage, Some(Stage::Postgres));
    assert_eq!(status.observed_generation, sale.metadata.generation);
    for t in [
        "Ready",
        "StoresReady",
        "BookingAppReady",
        "StageSettled",
        "Calibrated",
    ] {
        let c = sale.condition(t).unwrap_or_else(|| panic!("no {t}"));
        assert_eq!(c.status, "True", "{t}: {c:?}");
    }

    // With the controller stopped and the cluster settled, a reconcile pass writes nothing.
    drop(controller);
    let ctx = context(&client);
    reconcile_by_name(&ctx, &ns.name, "ready-sale")
        .await
        .expect("reconcile");
    let before = versions(&client, &ns.name, "ready-sale").await;
    reconcile_by_name(&ctx, &ns.name, "ready-sale")
        .await
        .expect("second reconcile");
    let after = versions(&client, &ns.name, "ready-sale").await;
    assert_eq!(
        before, after,
        "a reconcile with nothing to change must not write"
    );
    assert!(before.len() >= 6, "{before:?}");

    let _ = Api::<PersistentVolume>::all(client.clone())
        .delete(&pv, &DeleteParams::default())
        .await;
}
