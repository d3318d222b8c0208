//! Deleting a sale without losing what it accepted. Every FlashSale carries the finalizer
//! `flashsale.dev/drain` from its first reconcile, so `kubectl delete` only marks it: the API
//! server keeps the sale, and so its children (their owner is still there), until the operator
//! takes the finalizer off. Meanwhile the sale's booking API is stopped, the stage's backlog is
//! handed to Postgres by the same drain Job a stage change runs (stage redis: the write-behind
//! stream synced; stage kafka: every queued request decided), and the credentials Secret is
//! handed to the kept Postgres volume, so a sale recreated under the same name finds the password
//! its database was initialised with. Only then is the finalizer removed and garbage collection
//! takes the rest. `plan` is pure; `add`, `release` and `keep_credentials` do the I/O.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::desired::names;
use super::transition::DrainState;
use crate::crd::FlashSale;
use crate::error::Result;
use flashsale_contract::Stage;

/// Held on every sale until its stage is drained.
pub const FINALIZER: &str = "flashsale.dev/drain";
/// A field manager of its own: applying the finalizer list with it adds or removes exactly our
/// entry (finalizers is a set for server-side apply), whoever else put one there.
const FINALIZER_MANAGER: &str = "flashsale-operator-finalizer";

/// Where the deletion of a sale stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Teardown {
    /// The booking API pods of the serving stage are stopping (`remaining` still exist).
    StoppingPods { stage: Stage, remaining: usize },
    /// The drain Job of the stage runs.
    Draining { stage: Stage },
    /// The drain Job gave up: the sale stays, so nothing is lost; the README says how to let it
    /// go anyway.
    DrainFailed { stage: Stage },
    /// Nothing is held outside Postgres any more: the finalizer can go.
    Release(Released),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// The sale never served (no status.stage).
    NeverServed,
    /// Stage postgres decides in Postgres: nothing to drain.
    NothingToDrain,
    /// The stage's in-cluster store no longer exists: there is nothing left to drain from.
    StoreGone,
    /// The drain Job succeeded.
    Drained,
}

impl Released {
    pub fn reason(self) -> &'static str {
        match self {
            Released::NeverServed => "NeverServed",
            Released::NothingToDrain => "NothingToDrain",
            Released::StoreGone => "StoreGone",
            Released::Drained => "Drained",
        }
    }
}

/// What the teardown of a sale serving `serving` does next. `api_pods` counts the stage's booking
/// API pods (terminating ones included), `store_exists` says whether the store holding its
/// backlog is still there (always true for an external store), `drain` is its drain Job's state.
pub fn plan(
    serving: Option<Stage>,
    api_pods: usize,
    store_exists: bool,
    drain: Option<DrainState>,
) -> Teardown {
    let Some(stage) = serving else {
        return Teardown::Release(Released::NeverServed);
    };
    if !stage.needs_drain() {
        return Teardown::Release(Released::NothingToDrain);
    }
    if !store_exists {
        return Teardown::Release(Released::StoreGone);
    }
    if api_pods > 0 {
        return Teardown::StoppingPods {
            stage,
            remaining: api_pods,
        };
    }
    match drain {
        Some(DrainState::Succeeded) => Teardown::Release(Released::Drained),
        Some(DrainState::Failed) => Teardown::DrainFailed { stage },
        Some(DrainState::Running) | None => Teardown::Draining { stage },
    }
}

impl Teardown {
    /// The Drained condition: (status, reason, message).
    pub fn condition(self) -> (bool, &'static str, String) {
        match self {
            Teardown::StoppingPods { stage, remaining } => (
                false,
                "StoppingPods",
                format!(
                    "deleting: stopping the stage {stage} booking API ({remaining} pod(s) left)"
                ),
            ),
            Teardown::Draining { stage } => (
                false,
                "Draining",
                format!("deleting: the drain Job hands the stage {stage} backlog to Postgres"),
            ),
            Teardown::DrainFailed { stage } => (
                false,
                "DrainFailed",
                format!(
                    "deleting: the stage {stage} drain Job failed; the sale is kept so nothing is \
                     lost (see its logs; README \"Deleting a sale\" says how to let it go anyway)"
                ),
            ),
            Teardown::Release(r) => (true, r.reason(), "deleting: nothing left to drain".into()),
        }
    }
}

pub fn has_finalizer(fs: &FlashSale) -> bool {
    fs.finalizers().iter().any(|f| f == FINALIZER)
}

fn finalizer_patch(fs: &FlashSale, finalizers: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": FlashSale::api_version(&()),
        "kind": FlashSale::kind(&()),
        "metadata": { "name": fs.name_any(), "finalizers": finalizers },
    })
}

/// Put the finalizer on (before the sale gets any child).
pub async fn add(client: &Client, fs: &FlashSale) -> Result<()> {
    let api: Api<FlashSale> = Api::namespaced(client.clone(), &fs.namespace().unwrap_or_default());
    api.patch(
        &fs.name_any(),
        &PatchParams::apply(FINALIZER_MANAGER),
        &Patch::Apply(finalizer_patch(fs, &[FINALIZER])),
    )
    .await?;
    Ok(())
}

/// Take the finalizer off: the API server then deletes the sale and garbage collection its children.
pub async fn release(client: &Client, fs: &FlashSale) -> Result<()> {
    let api: Api<FlashSale> = Api::namespaced(client.clone(), &fs.namespace().unwrap_or_default());
    api.patch(
        &fs.name_any(),
        &PatchParams::apply(FINALIZER_MANAGER),
        &Patch::Apply(finalizer_patch(fs, &[])),
    )
    .await?;
    info!(sale = %fs.name_any(), "finalizer removed");
    Ok(())
}

/// The claim of the in-cluster Postgres' data volume, which outlives the sale.
pub fn postgres_claim(sale: &str) -> String {
    names::data_claim(&names::postgres(sale))
}

/// Whether this is the sale's credentials Secret held by its kept Postgres volume (the state
/// `keep_credentials` leaves it in), with no controller: a sale recreated under the same name
/// adopts it.
pub fn is_kept_with_volume(meta: &ObjectMeta, sale: &str) -> bool {
    let claim = postgres_claim(sale);
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    meta.name.as_deref() == Some(names::credentials_secret(sale).as_str())
        && owners
            .iter()
            .all(|o| o.controller != Some(true) || o.kind == "PersistentVolumeClaim")
        && owners
            .iter()
            .any(|o| o.kind == "PersistentVolumeClaim" && o.name == claim)
}

/// Hand the credentials Secret to the kept Postgres volume: its only owner becomes the claim, so
/// garbage collection keeps the Secret exactly as long as the database it opens. Nothing to do
/// when the claim does not exist (external Postgres, or never provisioned).
pub async fn keep_credentials(client: &Client, namespace: &str, sale: &str) -> Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let Some(claim) = claims.get_opt(&postgres_claim(sale)).await? else {
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = names::credentials_secret(sale);
    if secrets.get_opt(&name).await?.is_none() {
        return Ok(());
    }
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "PersistentVolumeClaim".into(),
        name: claim.name_any(),
        uid: claim.uid().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    };
    // A merge patch replaces the whole list: the sale's reference goes, the claim's stays.
    let patch = json!({ "metadata": { "ownerReferences": [owner] } });
    secrets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    info!(secret = %name, claim = %claim.name_any(), "credentials kept with the Postgres volume");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stage::*;

    #[test]
    fn a_sale_that_never_served_or_serves_postgres_goes_at_once() {
        assert_eq!(
            plan(None, 3, true, None),
            Teardown::Release(Released::NeverServed)
        );
        assert_eq!(
            plan(Some(Postgres), 3, true, None),
            Teardown::Release(Released::NothingToDrain)
        );
    }

    #[test]
    fn redis_and_kafka_stop_their_api_then_drain_then_go() {
        for stage in [Redis, Kafka] {
            assert_eq!(
                plan(Some(stage), 2, true, None),
                Teardown::StoppingPods {
                    stage,
                    remaining: 2
                }
            );
            assert_eq!(
                plan(Some(stage), 0, true, None),
                Teardown::Draining { stage }
            );
            assert_eq!(
                plan(Some(stage), 0, true, Some(DrainState::Running)),
                Teardown::Draining { stage }
            );
            assert_eq!(
                plan(Some(stage), 0, true, Some(DrainState::Succeeded)),
                Teardown::Release(Released::Drained)
            );
        }
    }

    #[test]
    fn a_failed_drain_keeps_the_sale() {
        let t = plan(Some(Redis), 0, true, Some(DrainState::Failed));
        assert_eq!(t, Teardown::DrainFailed { stage: Redis });
        assert!(!t.condition().0);
    }

    #[test]
    fn a_sale_whose_store_is_gone_is_released_at_once() {
        assert_eq!(
            plan(Some(Kafka), 4, false, None),
            Teardown::Release(Released::StoreGone)
        );
    }

    #[test]
    fn only_the_postgres_claim_keeps_credentials() {
        let mut meta = ObjectMeta {
            name: Some("s-credentials".into()),
            ..ObjectMeta::default()
        };
        assert!(!is_kept_with_volume(&meta, "s"));
        meta.owner_references = Some(vec![OwnerReference {
            kind: "PersistentVolumeClaim".into(),
            name: "data-s-postgres-0".into(),
            ..OwnerReference::default()
        }]);
        assert!(is_kept_with_volume(&meta, "s"));
        assert!(!is_kept_with_volume(&meta, "t"), "another sale's");
        meta.name = Some("s-other".into());
        assert!(!is_kept_with_volume(&meta, "s"), "not the credentials");
    }
}
