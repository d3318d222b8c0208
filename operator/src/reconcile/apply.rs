//! Step 4 of a reconcile: make the cluster match the desired children. Server-side apply with
//! one field manager, in two waves (policies, credentials and Services before the workloads that
//! use them; the objects of a wave at once), then delete what this sale owns but no longer wants (e.g. Kafka after moving back to
//! stage redis). Jobs are created once and never patched: their pod template is immutable.
//! A child whose desired object is the one applied last time, onto the object as it was left
//! (see `applied`), is not applied again: most passes are triggered by the children's status
//! and change nothing, and 100 sales applying every child on every pass saturated the API server.
//! Before anything is applied, every desired child's name is checked (see `ownership`): when one
//! is taken by an object that is not this sale's, nothing is applied and the conflicts are returned.

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use super::applied::{self, Applied};
use super::desired::Children;
use super::desired::labels::MANAGER;
use super::kinds::{Child, KindStep, Objects, Same};
use super::observe::{self, Observed};
use super::ownership::{self, Conflict};
use super::validate::Sale;
use crate::error::{Error, Result};

/// Apply `children`, or nothing when a name is taken: then the objects in the way.
pub async fn apply(
    client: &Client,
    applied: &Applied,
    sale: &Sale,
    children: Children,
    observed: &Observed,
) -> Result<Vec<Conflict>> {
    let ns = sale.namespace.as_str();
    let uid = sale.owner.uid.as_str();
    let (want, have) = (&children, &observed.children);
    // The look-ups of a new sale's names (a dozen) go out together, not one after another.
    let mut check = ForeignNames { client, sale };
    let found = want.try_zip(have, &mut check).await?;
    let conflicts: Vec<Conflict> = found.into_vec().concat();
    if !conflicts.is_empty() {
        // Half a sale (its Deployment beside someone else's Service of the name its clients
        // resolve) would be worse than none: nothing is applied until the names are free.
        for c in &conflicts {
            warn!(kind = c.kind, name = %c.name, owner = %c.owner, "name taken by a foreign object");
        }
        return Ok(conflicts);
    }
    // Two waves, each applied at once: what the workloads need (policies, so a store is isolated
    // before it starts; credentials; Services; disruption budgets), then the workloads. One wave
    // per kind made a new sale's first pass seven round trips instead of two.
    futures::try_join!(
        apply_all(
            client,
            applied,
            ns,
            &want.network_policies,
            &have.network_policies,
        ),
        apply_all(client, applied, ns, &want.secrets, &have.secrets),
        apply_all(client, applied, ns, &want.services, &have.services),
        apply_all(client, applied, ns, &want.pdbs, &have.pdbs),
    )?;
    futures::try_join!(
        async {
            apply_all(
                client,
                applied,
                ns,
                &want.stateful_sets,
                &have.stateful_sets,
            )
            .await
            .map_err(immutable_as_invalid_spec)
        },
        apply_all(client, applied, ns, &want.deployments, &have.deployments),
        create_missing(client, ns, &want.jobs, &have.jobs),
    )?;

    delete_orphans(client, applied, ns, uid, &have.jobs, &want.jobs).await?;
    delete_orphans(
        client,
        applied,
        ns,
        uid,
        &have.deployments,
        &want.deployments,
    )
    .await?;
    delete_orphans(client, applied, ns, uid, &have.pdbs, &want.pdbs).await?;
    delete_orphans(
        client,
        applied,
        ns,
        uid,
        &have.stateful_sets,
        &want.stateful_sets,
    )
    .await?;
    delete_orphans(client, applied, ns, uid, &have.services, &want.services).await?;
    delete_orphans(client, applied, ns, uid, &have.secrets, &want.secrets).await?;
    delete_orphans(
        client,
        applied,
        ns,
        uid,
        &have.network_policies,
        &want.network_policies,
    )
    .await?;
    Ok(conflicts)
}

/// Finds, for every kind, the desired names held by objects that are not the sale's (`foreign`).
struct ForeignNames<'a> {
    client: &'a Client,
    sale: &'a Sale,
}

impl<'a> KindStep<'a, Objects, Objects> for ForeignNames<'a> {
    type Out = Same<Vec<Conflict>>;
    fn run<K: Child>(
        &mut self,
        desired: &'a Vec<K>,
        observed: &'a Vec<K>,
    ) -> BoxFuture<'a, Result<Vec<Conflict>>> {
        foreign(self.client, self.sale, desired, observed).boxed()
    }
}

/// The desired `objects` whose name an object not accepted by the sale holds. `observed`
/// holds only the sale's own children (see `observe`); a name absent from it is looked up, so
/// this costs a request only for children not created yet.
async fn foreign<K: Child>(
    client: &Client,
    sale: &Sale,
    objects: &[K],
    observed: &[K],
) -> Result<Vec<Conflict>> {
    let api: Api<K> = Api::namespaced(client.clone(), &sale.namespace);
    let lookups = objects
        .iter()
        .map(|o| o.name_any())
        .filter(|name| observe::find(observed, name).is_none())
        .map(|name| {
            let api = api.clone();
            async move { api.get_metadata_opt(&name).await }
        });
    let existing = futures::future::try_join_all(lookups).await?;
    Ok(existing
        .into_iter()
        .flatten()
        .filter(|e| !ownership::accepts_meta(&e.metadata, &sale.owner.uid, &sale.name))
        .map(|e| Conflict::new(kind_of::<K>(), &e.metadata))
        .collect())
}

async fn apply_all<K: Child>(
    client: &Client,
    applied: &Applied,
    ns: &str,
    objects: &[K],
    observed: &[K],
) -> Result<()> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    // force: this operator is the only rightful owner of the fields it sets.
    let params = PatchParams::apply(MANAGER).force();
    let kind = kind_of::<K>();
    // The objects of one kind do not depend on each other: applied together (the order that
    // matters is between the waves, kept by the caller).
    let applies = objects.iter().map(|object| {
        let (api, params) = (&api, &params);
        async move {
            let name = object.name_any();
            let hash = applied::hash_of(object);
            let current = observed
                .iter()
                .find(|o| o.meta().name.as_deref() == Some(name.as_str()))
                .map(|o| o.meta());
            if applied.is_current(kind, ns, &name, hash, current) {
                debug!(%kind, %name, "unchanged since applied");
                return Ok(());
            }
            match api.patch(&name, params, &Patch::Apply(object)).await {
                Ok(answer) => applied.record(kind, ns, &name, hash, answer.meta()),
                Err(e) => {
                    applied.forget(kind, ns, &name);
                    return Err(Error::from(e));
                }
            }
            debug!(%kind, %name, "applied");
            Ok(())
        }
    });
    futures::future::join_all(applies)
        .await
        .into_iter()
        .collect::<Result<()>>()
}

/// `K::kind`, as the `&'static str` the memory of applies is keyed by.
fn kind_of<K: Child>() -> &'static str {
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "other",
    }
}

async fn create_missing<K: Child>(
    client: &Client,
    ns: &str,
    objects: &[K],
    existing: &[K],
) -> Result<()> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    for object in objects {
        let name = object.name_any();
        if existing.iter().any(|e| e.name_any() == name) {
            continue;
        }
        match api
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..PostParams::default()
                },
                object,
            )
            .await
        {
            Ok(_) => info!(kind = %K::kind(&()), %name, "created"),
            // Created by a reconcile that raced this one; same content.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Delete `observed` objects owned by the sale (`uid`) that are not `desired`.
async fn delete_orphans<K: Child>(
    client: &Client,
    applied: &Applied,
    ns: &str,
    uid: &str,
    observed: &[K],
    desired: &[K],
) -> Result<()> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    // Background: the Job's pods, the Deployment's ReplicaSets go with it.
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for object in observed {
        let name = object.name_any();
        let owned = object.owner_references().iter().any(|o| o.uid == uid);
        let wanted = desired.iter().any(|d| d.name_any() == name);
        if owned && !wanted && object.meta().deletion_timestamp.is_none() {
            applied.forget(kind_of::<K>(), ns, &name);
            match api.delete(&name, &params).await {
                Ok(_) => info!(kind = %K::kind(&()), %name, "deleted, no longer part of the sale"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// A StatefulSet refuses changes to its volume template (e.g. a new storage size): that is the
/// spec asking for the impossible, not a reason to retry.
fn immutable_as_invalid_spec(e: Error) -> Error {
    match e {
        Error::Kube(kube::Error::Api(s)) if s.code == 422 => Error::InvalidSpec(format!(
            "a store cannot change this way once created (storage and storageClassName are fixed): {}",
            s.message
        )),
        other => other,
    }
}
