//! The kube-runtime Controller: watches FlashSales (through `DeserializeGuard`, so one malformed
//! object cannot break the watch) and the children they own, runs the reconcile pipeline, and
//! retries failures with exponential backoff. The children's watches also fill the caches
//! (`observe::ChildStores`) the reconciles read instead of listing. Only events that change what
//! a reconcile reads trigger one (see `triggers`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
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
use crate::reconcile::kinds::{Cached, Child, KindStep, Nothing, PerKind};
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

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches every kind of child: the cache of each, and its events made triggers of the
/// owning sales' reconciles in `controller`.
struct WatchChildren<'a> {
    client: &'a Client,
    namespace: Option<&'a str>,
    owned: watcher::Config,
    controller: Option<Controller<DeserializeGuard<FlashSale>>>,
}

impl<'a> KindStep<'a, Nothing, Nothing> for WatchChildren<'_> {
    type Out = Cached;
    fn run<K: Child>(&mut self, _: &'a (), _: &'a ()) -> BoxFuture<'a, Result<Option<Store<K>>>> {
        let (cache, events) = cached(api::<K>(self.client, self.namespace), &self.owned);
        self.controller = self.controller.take().map(|c| c.owns_stream(events));
        futures::future::ready(Ok(Some(cache))).boxed()
    }
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
    // The sales themselves: the operator's own status writes come back as events and change
    // nothing it acts on, so they trigger nothing.
    let (sales, sale_events) = cached(
        api::<DeserializeGuard<FlashSale>>(&client, namespace),
        &watcher::Config::default(),
    );
    let sales = Controller::for_stream(sale_events, sales);
    let mut watch = WatchChildren {
        client: &client,
        namespace,
        // By the operator's label only: no cache of every Secret in the cluster.
        owned: watcher::Config::default().labels(&labels::managed()),
        controller: Some(sales),
    };
    let every = PerKind::every();
    let caches = every
        .try_zip(&every, &mut watch)
        .await
        .expect("starting a watch does not fail");
    let _stores_in_context = ctx.add_child_stores(ChildStores {
        namespace: namespace.map(str::to_string),
        caches,
    });
    let controller = watch
        .controller
        .expect("WatchChildren keeps the controller")
        // Reconciles unbounded: the applies are (`Context::apply_turn`), the status writes not.
        .with_config(Config::default().debounce(DEBOUNCE));
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
