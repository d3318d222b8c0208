//! One reconcile of a FlashSale, as a pipeline:
//! `validate -> observe -> plan (stage transition) + size -> build -> apply -> status`.
//! Only `observe` (with `sizing::observe`: the calibration attempt's Job and pods, the API pods'
//! request counters), `apply` and the status write do I/O; `validate`, `transition::plan`,
//! `sizing::decide`, `desired::build` and `status::compute` are pure and unit-tested.
//! A sale being deleted takes the same pipeline with `teardown::plan` in place of the stage
//! transition: its API stopped, its backlog drained, then its finalizer removed.

pub mod applied;
pub mod apply;
pub mod desired;
pub mod events;
pub mod kinds;
pub mod observe;
pub mod ownership;
pub mod sizing;
pub mod status;
pub mod teardown;
pub mod transition;
pub mod validate;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::context::Context;
use crate::crd::{FlashSale, FlashSaleStatus};
use crate::error::{Error, Result};
use desired::credentials::Credentials;
use desired::labels::MANAGER;
use teardown::Teardown;
use transition::{LeaveStep, Leaving, StagePlan};

/// How soon to look again when something outside the watched children is awaited
/// (an external store's Secret, which the operator does not watch).
const WAIT_FOR_EXTERNAL: Duration = Duration::from_secs(30);
const RESYNC: Duration = Duration::from_secs(300);
const TEARDOWN_RECHECK: Duration = Duration::from_secs(10);
/// How soon to look again at a name taken by a foreign object (not watched: it has not our
/// labels, or not our owner reference). Also the wait for a recreated sale's predecessor's
/// children to be garbage-collected.
const WAIT_FOR_CONFLICT: Duration = Duration::from_secs(10);

/// Reconcile one FlashSale.
///
/// A sale with no status yet (a new one) gets a pass of its own that writes its status and
/// creates nothing: the sizing needs nothing from the cluster, and the conditions, computed from
/// what was observed, say what is not created yet (for a new sale phase Pending, every child
/// `... not created yet`). The next pass, at once, creates the children; the passes woken by
/// their events report them as they come up. As CloudNativePG registers a cluster's phase before
/// creating its first instance. With the status written after the applies, 100 sales applied at
/// once waited up to half a minute for it: the API server allocates ClusterIPs one at a time (one
/// lock around an IPAddress create), and every sale's booking-app Service waited in that line.
/// Such a pass does not wait for a turn to apply either (`Context::apply_turn`): the passes that
/// do take theirs before reading the children and give it back before writing the status.
#[instrument(skip_all, fields(sale = %fs.name_any(), namespace = fs.namespace().unwrap_or_default()))]
pub async fn reconcile_sale(fs: &FlashSale, ctx: &Context) -> Result<Action> {
    let previous = fs.status.clone().unwrap_or_default();
    let now_utc = ctx.clock.now();
    let now = crate::schedule::to_time(now_utc);
    if fs.metadata.deletion_timestamp.is_some() {
        return teardown_sale(fs, ctx, &previous).await;
    }
    // Before the first child: from here on, deleting the sale waits for its drain.
    if !teardown::has_finalizer(fs) {
        teardown::add(&ctx.client, fs).await?;
    }
    let mut sale = match validate::validate(fs, &ctx.defaults) {
        Ok(sale) => sale,
        Err(e @ Error::InvalidSpec(_)) => {
            warn!(error = %e, "spec cannot be served");
            let status = status::compute_invalid(&previous, fs.metadata.generation, &e, &now);
            write_status(ctx, fs, &previous, &status).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };

    // The turn is taken before the children are read, so a pass waiting for one holds nothing
    // of them; a new sale's first pass (no status yet) writes only its status and takes none.
    let mut turn = match fs.status {
        Some(_) => Some(ctx.apply_turn().await),
        None => None,
    };
    let changing = previous.stage.is_some_and(|s| s != sale.spec.stage);
    let stores = ctx.child_stores(&sale.namespace);
    let observed = observe::observe(
        &ctx.client,
        stores.as_ref(),
        &sale,
        previous.stage,
        changing,
    );
    let mut observed = match observed.await {
        Ok(observed) => observed,
        // An external store's Secret without the opt-in label: not watched, so look again.
        Err(e @ Error::InvalidSpec(_)) => {
            warn!(error = %e, "spec cannot be served");
            let status = status::compute_invalid(&previous, fs.metadata.generation, &e, &now);
            write_status(ctx, fs, &previous, &status).await?;
            return Ok(Action::requeue(WAIT_FOR_EXTERNAL));
        }
        Err(e) => return Err(e),
    };
    // What the external stores' Secrets carry decides the pods' TLS files and settings.
    sale.external_keys = observed.external_keys.clone();
    let drain = previous
        .stage
        .and_then(|s| observed.job(&desired::names::drain_job(&sale.name, s)));
    let plan = transition::plan(
        sale.spec.stage,
        previous.stage,
        observed.serving_pods,
        drain,
    );
    // The switch is recorded before the new stage's pods are created: should this pass fail
    // half-way, the next one must not mistake the new stage's pods for the old stage's.
    if let Some(old) = previous.stage.filter(|s| *s != plan.serving) {
        info!(from = %old, to = %plan.serving, "switching stage");
        patch_status_stage(ctx, fs, plan.serving).await?;
    }
    let recalibrate = fs
        .annotations()
        .get(crate::calibration::RECALIBRATE_ANNOTATION)
        .cloned();
    let load = ctx.load_observer.as_ref();
    let mut inputs = sizing::observe::observe(
        &ctx.client,
        &sale,
        &previous,
        &observed,
        recalibrate,
        load,
        now_utc,
    )
    .await?;
    inputs.stage_changing = plan.leaving.is_some();
    let sizing = sizing::decide(&sale, &previous, &inputs);

    // A new sale's first pass: its status, sizing included, before anything is created. Keyed
    // on the status being absent, not on it differing: the next pass cannot take this way again.
    if fs.status.is_none() {
        let status = status::compute(&previous, &sale, &plan, &sizing, &observed, &now);
        write_status(ctx, fs, &previous, &status).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }

    let credentials = observed
        .credentials(&sale)
        .unwrap_or_else(Credentials::generate);
    let children = desired::build(&sale, &plan, &sizing, &credentials);
    if turn.is_none() {
        turn = Some(ctx.apply_turn().await);
    }
    let applied = apply::apply(&ctx.client, &ctx.applied, &sale, children, &observed).await;
    drop(turn);
    match applied {
        Ok(conflicts) => observed.conflicts = conflicts,
        Err(e @ Error::InvalidSpec(_)) => {
            warn!(error = %e, "spec cannot be applied");
            let status = status::compute_invalid(&previous, fs.metadata.generation, &e, &now);
            write_status(ctx, fs, &previous, &status).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    }

    let status = status::compute(&previous, &sale, &plan, &sizing, &observed, &now);
    write_status(ctx, fs, &previous, &status).await?;
    let requeue = if !observed.conflicts.is_empty() {
        WAIT_FOR_CONFLICT
    } else if observed.missing_external.is_empty() {
        sizing.requeue_after(now_utc).unwrap_or(RESYNC)
    } else {
        WAIT_FOR_EXTERNAL
    };
    Ok(Action::requeue(requeue))
}

/// A pass over a sale being deleted (see `teardown`): stop the serving stage's API, run its drain
/// Job, and once nothing is held outside Postgres hand the credentials to the kept volume and
/// remove the finalizer.
async fn teardown_sale(
    fs: &FlashSale,
    ctx: &Context,
    previous: &FlashSaleStatus,
) -> Result<Action> {
    if !teardown::has_finalizer(fs) {
        // Another party's finalizer holds the sale: ours is done.
        return Ok(Action::await_change());
    }
    let now_utc = ctx.clock.now();
    let now = crate::schedule::to_time(now_utc);
    let name = fs.name_any();
    let namespace = fs.namespace().unwrap_or_default();
    let mut sale = match validate::validate(fs, &ctx.defaults) {
        Ok(sale) => sale,
        Err(e) => {
            // Without a valid spec no drain Job can be built: the sale goes as Kubernetes would
            // delete it without the operator, and the log says so.
            warn!(error = %e, "deleted sale has an invalid spec: released without a drain");
            teardown::keep_credentials(&ctx.client, &namespace, &name).await?;
            teardown::release(&ctx.client, fs).await?;
            return Ok(Action::await_change());
        }
    };
    let turn = ctx.apply_turn().await;
    let stores = ctx.child_stores(&sale.namespace);
    let observed =
        observe::observe(&ctx.client, stores.as_ref(), &sale, previous.stage, true).await?;
    // The drain Job reaches the stores as the sale's pods do.
    sale.external_keys = observed.external_keys.clone();
    let step = match previous.stage {
        Some(stage) => teardown::plan(
            Some(stage),
            observed.serving_pods,
            observed.store_exists(&sale, stage),
            observed.job(&desired::names::drain_job(&sale.name, stage)),
        ),
        None => teardown::plan(None, 0, true, None),
    };
    let (stage, leave) = match step {
        Teardown::Release(reason) => {
            info!(reason = reason.reason(), "sale drained: releasing it");
            teardown::keep_credentials(&ctx.client, &namespace, &name).await?;
            teardown::release(&ctx.client, fs).await?;
            return Ok(Action::await_change());
        }
        Teardown::StoppingPods { stage, remaining } => {
            (stage, LeaveStep::StoppingPods { remaining })
        }
        Teardown::Draining { stage } => (stage, LeaveStep::Draining),
        Teardown::DrainFailed { stage } => (stage, LeaveStep::DrainFailed),
    };
    // The serving stage leaves for nowhere: its API at zero, its worker kept emptying the backlog,
    // its drain Job once the API pods are gone; no calibration, no load followed.
    let plan = StagePlan {
        serving: stage,
        leaving: Some(Leaving {
            from: stage,
            to: stage,
            step: leave,
        }),
    };
    let mut sizing = sizing::decide(&sale, previous, &sizing::Inputs::at(now_utc));
    sizing.calibration.run = None;
    let credentials = observed
        .credentials(&sale)
        .unwrap_or_else(Credentials::generate);
    let children = desired::build(&sale, &plan, &sizing, &credentials);
    apply::apply(&ctx.client, &ctx.applied, &sale, children, &observed).await?;
    drop(turn);
    let status = status::compute_deleting(previous, fs.metadata.generation, step, &now);
    write_status(ctx, fs, previous, &status).await?;
    // Pods and Jobs are watched; the requeue only bounds a missed event.
    Ok(Action::requeue(TEARDOWN_RECHECK))
}

/// Server-side apply of the whole status (one owner, so fields left out are removed), then the
/// Events its transitions call for.
async fn write_status(
    ctx: &Context,
    fs: &FlashSale,
    previous: &FlashSaleStatus,
    status: &FlashSaleStatus,
) -> Result<()> {
    // Nothing to write: the apply would change nothing either (and no Event is due).
    if fs.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<FlashSale> =
        Api::namespaced(ctx.client.clone(), &fs.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": FlashSale::api_version(&()),
        "kind": FlashSale::kind(&()),
        "status": status,
    });
    api.patch_status(
        &fs.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    let reference = fs.object_ref(&());
    for event in events::transitions(previous, status) {
        // An event lost is a log line lost, not a reason to reconcile again.
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = %event.reason, "publishing event failed");
        }
    }
    Ok(())
}

async fn patch_status_stage(
    ctx: &Context,
    fs: &FlashSale,
    stage: flashsale_contract::Stage,
) -> Result<()> {
    let api: Api<FlashSale> =
        Api::namespaced(ctx.client.clone(), &fs.namespace().unwrap_or_default());
    let patch = json!({ "status": { "stage": stage } });
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(&fs.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Entry point for tests and the controller: reconcile the sale as it is stored now.
pub async fn reconcile_by_name(ctx: &Context, namespace: &str, name: &str) -> Result<Action> {
    let api: Api<FlashSale> = Api::namespaced(ctx.client.clone(), namespace);
    let fs = api.get(name).await?;
    reconcile_sale(&fs, ctx).await
}
