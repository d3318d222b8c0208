//! Shared harness of the integration tests: a client for the control plane that
//! `hack/control-plane.sh up` runs on loopback, the CRD installed, one fresh namespace and one
//! in-process controller per test, sales sized for kwok's nodes, pre-bound volumes, polling
//! helpers that fail with the last state seen, and readers of the pods a workload runs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flashsale_contract::Stage;
use flashsale_operator::context::Context;
use flashsale_operator::crd::FlashSale;
use flashsale_operator::fixtures::FlashSaleBuilder;
use flashsale_operator::metrics::Metrics;
use flashsale_operator::reconcile::validate::Defaults;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, HostPathVolumeSource, Namespace, ObjectReference, PersistentVolume,
    PersistentVolumeSpec, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// The booking-app image the tests' operator defaults to.
pub const IMAGE: &str = "flashsale/booking-app:test";

/// Long enough for a loaded 2-core machine; a wait that runs out fails the test with context.
pub const WAIT: Duration = Duration::from_secs(120);

/// The kubeconfig from $KUBECONFIG, else from hack/.control-plane.env; panics naming the fix.
pub fn kubeconfig_path() -> String {
    if let Ok(path) = std::env::var("KUBECONFIG") {
        return path;
    }
    let env_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/.control-plane.env");
    let text = std::fs::read_to_string(env_file).unwrap_or_else(|_| {
        panic!("no KUBECONFIG and no {env_file}: start the test control plane with `hack/control-plane.sh up`")
    });
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
        .next()
        .unwrap_or_else(|| {
            panic!("{env_file} has no `export KUBECONFIG=` line: rerun `hack/control-plane.sh up`")
        })
}

pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig =
        Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    let client = Client::try_from(config).expect("client");
    client.apiserver_version().await.unwrap_or_else(|e| {
        panic!(
            "API server from {path} does not answer ({e}): is `hack/control-plane.sh up` running?"
        )
    });
    client
}

/// Apply the CRD (as `flashsale-operator crd` prints it) and wait until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = FlashSale::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply("flashsale-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    wait_until("CRD established", || async {
        let crd = crds.get(&name).await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
    // Established can precede discovery by a moment.
    let sales: Api<FlashSale> = Api::all(client.clone());
    wait_until("FlashSale API served", || async {
        sales.list(&Default::default()).await.ok().map(|_| ())
    })
    .await;
}

/// A fresh namespace, deleted (with everything in it) when the guard drops.
pub struct TestNamespace {
    pub name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime ends with the test, so a task spawned on it never ran and every
        // test's pods stayed on kwok's nodes until they were full ("Too many pods"). Delete from
        // a thread with its own runtime and client, and wait until the API server took it.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let client = client().await;
                // The test's controller is gone: nobody would remove the sales' drain
                // finalizers, and the namespace would stay Terminating for ever.
                let sales: Api<FlashSale> = Api::namespaced(client.clone(), &name);
                for sale in sales
                    .list(&Default::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                {
                    let clear = serde_json::json!({ "metadata": { "finalizers": null } });
                    let _ = sales
                        .patch(
                            &sale.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&clear),
                        )
                        .await;
                }
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("deleting test namespace {}: {e}", self.name);
        }
    }
}

/// What every test starts with: a client, the CRD served, and a fresh namespace named after `test`.
pub async fn setup(test: &str) -> (Client, TestNamespace) {
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, test).await;
    (client, ns)
}

pub async fn namespace(client: &Client, test: &str) -> TestNamespace {
    let suffix: u32 = rand::random::<u32>() % 1_000_000;
    let name = format!("fs-{test}-{suffix}");
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    TestNamespace { name }
}

pub fn context(client: &Client) -> Arc<Context> {
    Arc::new(plain_context(client))
}

/// The operator's defaults in these tests: booking-app is `IMAGE`.
pub fn defaults() -> Defaults {
    Defaults {
        booking_app_image: IMAGE.into(),
        ..Defaults::default()
    }
}

/// A new sale's first pass, as the controller would run it: its status only, the children
/// created by the pass after, at once (see `reconcile::reconcile_sale`).
pub async fn first_pass(ctx: &Context, ns: &str, name: &str) {
    let action = flashsale_operator::reconcile::reconcile_by_name(ctx, ns, name)
        .await
        .expect("first reconcile");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::ZERO),
        "a new sale's first pass writes its status and creates nothing"
    );
}

/// A Context of its own (e.g. to drive `reconcile_by_name` step by step, with a clock).
pub fn plain_context(client: &Client) -> Context {
    Context::new(client.clone(), Arc::new(Metrics::default()), defaults())
}

/// The controller, watching only `namespace`, until the handle is dropped.
pub struct RunningController(tokio::task::JoinHandle<()>);

impl Drop for RunningController {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn start_controller(client: &Client, namespace: &str) -> RunningController {
    start_controller_with(context(client), namespace)
}

/// `start_controller` with a context of the test's own (other defaults or limits).
pub fn start_controller_with(ctx: Arc<Context>, namespace: &str) -> RunningController {
    let ns = namespace.to_string();
    RunningController(tokio::spawn(async move {
        flashsale_operator::controller::run_controller(ctx, Some(&ns)).await;
    }))
}

/// Poll `check` until it returns Some, or panic after `WAIT`.
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Wait until the object exists and satisfies `ok`; on timeout, show the last version seen.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, what: &str, ok: F) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
    F: Fn(&K) -> bool,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    loop {
        match api.get_opt(name).await {
            Ok(Some(obj)) if ok(&obj) => return obj,
            Ok(seen) => last = seen,
            Err(e) => eprintln!("get {name}: {e}"),
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {WAIT:?} waiting for {name} to be {what}; last seen: {last:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Wait until the object is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    wait_until(&format!("{name} to be deleted"), || async {
        match api.get_opt(name).await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await
}

/// `fs` with tiny requests everywhere, so kwok's nodes fit every test at once.
pub fn with_tiny_resources(mut fs: FlashSale) -> FlashSale {
    let tiny = ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("10m".into())),
            ("memory".into(), Quantity("16Mi".into())),
        ])),
        ..Default::default()
    };
    fs.spec.booking_app.resources = Some(tiny.clone());
    fs.spec.booking_app.worker.resources = Some(tiny.clone());
    fs.spec.postgres.in_cluster.resources = Some(tiny.clone());
    fs.spec.redis.in_cluster.resources = Some(tiny.clone());
    fs.spec.kafka.in_cluster.resources = Some(tiny);
    fs
}

/// A small pinned sale for the test cluster (100 rps per pod, target 200, 2-20 replicas), with
/// tiny requests so kwok's nodes fit every test at once.
pub fn small_sale(name: &str, stage: Stage, ns: &str) -> FlashSale {
    with_tiny_resources(
        FlashSaleBuilder::new(name, stage)
            .namespace(ns)
            .per_pod_rps(100.0)
            .target_rps(200)
            .replicas(2, 20)
            .build_for_apply(),
    )
}

pub async fn apply_sale(client: &Client, ns: &str, fs: &FlashSale) -> FlashSale {
    let api: Api<FlashSale> = Api::namespaced(client.clone(), ns);
    api.patch(
        &fs.name_any(),
        &PatchParams::apply("flashsale-tests").force(),
        &Patch::Apply(fs),
    )
    .await
    .expect("apply FlashSale")
}

/// `small_sale(name, stage, ns)`, applied.
pub async fn apply_small_sale(client: &Client, ns: &str, name: &str, stage: Stage) -> FlashSale {
    apply_sale(client, ns, &small_sale(name, stage, ns)).await
}

pub async fn patch_spec(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let api: Api<FlashSale> = Api::namespaced(client.clone(), ns);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": spec })),
    )
    .await
    .expect("patch FlashSale");
}

/// A PersistentVolume pre-bound to the StatefulSet's claim: kwok nodes have no provisioner.
pub async fn volume_for(client: &Client, ns: &str, claim: &str) -> String {
    let name = format!("{ns}-{claim}");
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".into(),
                Quantity("10Gi".into()),
            )])),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            host_path: Some(HostPathVolumeSource {
                path: format!("/nonexistent/{name}"),
                type_: None,
            }),
            claim_ref: Some(ObjectReference {
                namespace: Some(ns.into()),
                name: Some(claim.into()),
                ..Default::default()
            }),
            storage_class_name: Some(String::new()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create PV");
    name
}

/// The replicas a Deployment asks for.
pub fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref()?.replicas
}

/// A child that runs pods from a template. The API server fills in its spec and the template's,
/// so an object read back always has both.
pub trait Workload {
    fn pod_template(&self) -> &PodTemplateSpec;
}

macro_rules! workload {
    ($($kind:ty),*) => {$(
        impl Workload for $kind {
            fn pod_template(&self) -> &PodTemplateSpec {
                &self.spec.as_ref().expect(concat!(stringify!($kind), " without a spec")).template
            }
        }
    )*};
}
workload!(Deployment, Job);

/// The pod a workload runs.
pub fn pod_spec(w: &impl Workload) -> &PodSpec {
    w.pod_template()
        .spec
        .as_ref()
        .expect("a pod template without a spec")
}

/// The first (for our children: the only) container of the pod a workload runs.
pub fn first_container(w: &impl Workload) -> &Container {
    &pod_spec(w).containers[0]
}

/// The first container's environment: each variable with a literal value, by name.
pub fn env_of(w: &impl Workload) -> BTreeMap<String, String> {
    first_container(w)
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}
