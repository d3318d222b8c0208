//! The kube-runtime Controller: watches FlashSales (through `DeserializeGuard`, so one malformed
//! object cannot break the watch) and the children they own, runs the reconcile pipeline, and
//! retries failures with exponential backoff. The children's watches also fill the caches
//! (`observe::ChildStores`) the reconciles read instead of listing. Only events that change what
//! a reconcile reads trigger one (see `triggers`).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::context::Context;
use crate::crd::FlashSale;
use crate::error::{Error, Result};
use crate::reconcile::observe::ChildStores;
use crate::reconcile::{self, desired::labels};
use crate::triggers::{self, Digest};

pub use crate::context::CONCURRENCY;
/// A sale's children change in bursts (a Deployment's status moves a few times as its pods
/// start): the triggers within this window make one reconcile.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Reconcile one watched object: malformed ones are reported, valid ones go through the pipeline.
async fn reconcile(guarded: Arc<DeserializeGuard<FlashSale>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let key = format!(
        "{}/{}",
        guarded.namespace().unwrap_or_default(),
        guarded.name_any()
    );
    let result = match &guarded.0 {
        Ok(fs) => reconcile::reconcile_sale(fs, &ctx).await,
        Err(invalid) => {
            let event = Event {
                type_: EventType::Warning,
                reason: "Malformed".into(),
                note: Some(format!(
                    "FlashSale does not match this operator's schema: {}",
                    invalid.error
                )),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &guarded.object_ref(&())).await {
                warn!(error = %e, "publishing event failed");
            }
            Err(Error::Malformed(invalid.error.clone()))
        }
    };
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

fn error_policy(
    guarded: Arc<DeserializeGuard<FlashSale>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = format!(
        "{}/{}",
        guarded.namespace().unwrap_or_default(),
        guarded.name_any()
    );
    ctx.metrics.reconcile_failed(&key, error);
    if error.needs_spec_change() {
        warn!(sale = %key, %error, "waiting for the FlashSale to change");
        return Action::await_change();
    }
    let delay = ctx.backoff(&key);
    warn!(sale = %key, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Fail fast, with the fix, when the CRD is not installed (or FlashSales of a watched namespace
/// may not be listed: a namespaced install lists only its own namespaces).
pub async fn check_crd(client: &Client, namespaces: &[String]) -> anyhow::Result<()> {
    let apis: Vec<Api<FlashSale>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    for api in apis {
        if let Err(e) = api.list(&ListParams::default().limit(1)).await {
            anyhow::bail!(
                "cannot list FlashSales ({e}). Is the CRD installed? \
                 Install it with: flashsale-operator crd | kubectl apply --server-side -f -  (or helm install the chart)"
            );
        }
    }
    Ok(())
}

/// One controller per watched namespace (a namespaced install may not watch the whole cluster),
/// or one for the whole cluster when `namespaces` is empty; returns when all have stopped.
pub async fn run_controllers(ctx: Arc<Context>, namespaces: &[String]) {
    if namespaces.is_empty() {
        return run_controller(ctx, None).await;
    }
    futures::future::join_all(
        namespaces
            .iter()
            .map(|ns| run_controller(ctx.clone(), Some(ns.as_str()))),
    )
    .await;
}

/// A watch of the objects of kind `K` that keeps them in a store: the stream triggers
/// reconciles (of their owners, for children) when what a reconcile reads of them changed (see
/// `triggers`), each object written to the store before it is passed on. Managed fields are
/// dropped (nothing reads them; they are a good part of an object's size).
fn cached<K>(
    api: Api<K>,
    config: &watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Digest
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, config.clone())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer);
    (store, triggers::changed(events))
}

/// Run the controller until `shutdown_on_signal` (SIGTERM/SIGINT) or the future is dropped.
/// `namespace` limits it to one namespace (tests run one controller per namespace).
pub async fn run_controller(ctx: Arc<Context>, namespace: Option<&str>) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    // Children are watched by the operator's label only: no cache of every Secret in the cluster.
    let owned = watcher::Config::default().labels(&labels::managed());
    let (stateful_sets, stateful_set_events) =
        cached(api::<StatefulSet>(&client, namespace), &owned);
    let (deployments, deployment_events) = cached(api::<Deployment>(&client, namespace), &owned);
    let (services, service_events) = cached(api::<Service>(&client, namespace), &owned);
    let (secrets, secret_events) = cached(api::<Secret>(&client, namespace), &owned);
    let (jobs, job_events) = cached(api::<Job>(&client, namespace), &owned);
    let (pdbs, pdb_events) = cached(api::<PodDisruptionBudget>(&client, namespace), &owned);
    let (network_policies, network_policy_events) =
        cached(api::<NetworkPolicy>(&client, namespace), &owned);
    let _stores_in_context = ctx.add_child_stores(ChildStores {
        namespace: namespace.map(str::to_string),
        secrets,
        services,
        stateful_sets,
        pdbs,
        deployments,
        jobs,
        network_policies,
    });
    // The sales themselves: the operator's own status writes come back as events and change
    // nothing it acts on, so they trigger nothing.
    let (sales, sale_events) = cached(
        api::<DeserializeGuard<FlashSale>>(&client, namespace),
        &watcher::Config::default(),
    );
    let controller = Controller::for_stream(sale_events, sales)
        .owns_stream(stateful_set_events)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(secret_events)
        .owns_stream(job_events)
        .owns_stream(pdb_events)
        .owns_stream(network_policy_events)
        .with_config(
            Config::default()
                .concurrency(ctx.concurrency)
                .debounce(DEBOUNCE),
        );
    let _cached_sales_in_metrics = ctx.metrics.sales.watch(controller.store());
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(sale = %object.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "controller event"),
            }
        })
        .await;
    info!("controller stopped");
}
