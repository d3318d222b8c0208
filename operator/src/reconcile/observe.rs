//! Step 2 of a reconcile: read what exists. Lists the sale's children by label (for status and
//! for finding orphans), the credentials it generated earlier, the pods of a stage being left,
//! and the Secrets that external stores point at. The only reads of a reconcile (but for the
//! applier's look-up of a name not listed here). A listed object that carries the sale's labels
//! but is not the sale's (`ownership::accepts`) is left out: it is someone else's. An external
//! store's Secret without the opt-in label `flashsale.dev/allow-reference: "true"` refuses the
//! sale (InvalidSpec).
//!
//! Under the controller the children come from `ChildStores`, the caches its watches keep, not
//! from seven list requests per pass: 100 sales made ~700 reconciles, ~4,800 lists, and those
//! lists, not the applies, kept a small API server busy. A store is written before the event
//! that triggers a reconcile reaches the queue, so a pass sees at least what triggered it; what
//! the pass itself applied may not be in it yet, which costs an apply (`applied` finds no current
//! version) or a create answered 409, never a missed child. Without stores (tests calling
//! `reconcile_sale` directly, a store not yet filled) the seven lists run, at the same time.

use std::collections::{BTreeMap, BTreeSet};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store as Cache;
use kube::{Client, Resource, ResourceExt};

use super::desired::Children;
use super::desired::credentials::Credentials;
use super::desired::labels::{self, Component};
use super::desired::names;
use super::desired::store_tls::{self, StoreKind};
use super::kinds::{Cached, Child, KindStep, Nothing, Objects, PerKind};
use super::transition::DrainState;
use super::validate::{Sale, Store};
use crate::contract::external_secret;
use crate::error::{Error, Result};
use flashsale_contract::Stage;

/// Everything a reconcile knows about the cluster, taken before it changes anything.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The sale's children, by kind.
    pub children: Children,
    /// API pods of the stage in status.stage, terminating ones included (only counted while the
    /// sale is moving to another stage).
    pub serving_pods: usize,
    /// External store Secrets (or keys) that do not exist: "secret/key".
    pub missing_external: Vec<String>,
    /// The optional TLS and SASL keys (`contract::external_secret`) each needed external
    /// store's Secret carries, by Secret name (see `Sale::external_keys`).
    pub external_keys: BTreeMap<String, BTreeSet<String>>,
    /// Objects holding a child's name that are not the sale's: found by the applier, which then
    /// applied nothing.
    pub conflicts: Vec<super::ownership::Conflict>,
}

/// Readiness of a Deployment or StatefulSet as its controller reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    /// The workload controller has seen the latest spec.
    pub current: bool,
}

impl Workload {
    pub fn is_ready(&self) -> bool {
        self.current && self.ready >= self.desired && self.updated >= self.desired
    }
}

pub(crate) fn find<'a, T: Resource>(objects: &'a [T], name: &str) -> Option<&'a T> {
    objects
        .iter()
        .find(|o| o.meta().name.as_deref() == Some(name))
}

impl Observed {
    pub fn credentials(&self, sale: &Sale) -> Option<Credentials> {
        find(
            &self.children.secrets,
            &names::credentials_secret(&sale.name),
        )
        .and_then(Credentials::from_secret)
    }

    pub fn deployment(&self, name: &str) -> Option<Workload> {
        let d = find(&self.children.deployments, name)?;
        let status = d.status.clone().unwrap_or_default();
        Some(Workload {
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            current: status.observed_generation >= d.metadata.generation,
        })
    }

    pub fn stateful_set(&self, name: &str) -> Option<Workload> {
        let s = find(&self.children.stateful_sets, name)?;
        let status = s.status.clone().unwrap_or_default();
        Some(Workload {
            desired: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            current: status.observed_generation >= s.metadata.generation,
        })
    }

    pub fn job(&self, name: &str) -> Option<DrainState> {
        let status = find(&self.children.jobs, name)?
            .status
            .clone()
            .unwrap_or_default();
        let has = |type_: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == type_ && c.status == "True")
        };
        Some(if has("Complete") || status.succeeded.unwrap_or(0) > 0 {
            DrainState::Succeeded
        } else if has("Failed") {
            DrainState::Failed
        } else {
            DrainState::Running
        })
    }

    /// The store holding `stage`'s backlog still exists (an external one always counts as there).
    pub fn store_exists(&self, sale: &Sale, stage: Stage) -> bool {
        let (store, name) = match stage {
            Stage::Redis => (&sale.redis, names::redis(&sale.name)),
            Stage::Kafka => (&sale.kafka, names::kafka(&sale.name)),
            Stage::Postgres => (&sale.postgres, names::postgres(&sale.name)),
        };
        match store {
            Store::External(_) => true,
            _ => find(&self.children.stateful_sets, &name).is_some(),
        }
    }

    /// Whether the stores `stage` uses answer, as (ready, CamelCase reason, sentence): the
    /// StoresReady condition, and what calibration waits for.
    pub fn stores(&self, sale: &Sale, stage: Stage) -> (bool, &'static str, String) {
        if let Some(missing) = self.missing_external.first() {
            return (
                false,
                "ExternalSecretMissing",
                format!("external store Secret key {missing} not found"),
            );
        }
        let mut waiting = vec![];
        let mut ready = vec![];
        for (what, store, sts) in [
            ("postgres", &sale.postgres, names::postgres(&sale.name)),
            ("redis", &sale.redis, names::redis(&sale.name)),
            ("kafka", &sale.kafka, names::kafka(&sale.name)),
        ] {
            let used = what == "postgres"
                || (what == "redis" && stage.uses_redis())
                || (what == "kafka" && stage.uses_kafka());
            match store {
                _ if !used => {}
                Store::External(_) => ready.push(format!("{what} (external)")),
                Store::InCluster(_) => match self.stateful_set(&sts) {
                    Some(w) if w.ready >= 1 && w.current => ready.push(what.to_string()),
                    Some(w) => waiting.push(format!("{what} {}/{} ready", w.ready, w.desired)),
                    None => waiting.push(format!("{what} not created yet")),
                },
            }
        }
        if waiting.is_empty() {
            (true, "StoresReady", format!("{} ready", ready.join(", ")))
        } else {
            (false, "StoresStarting", waiting.join("; "))
        }
    }

    /// Nothing of the sale exists yet.
    pub fn is_empty(&self) -> bool {
        self.children.stateful_sets.is_empty() && self.children.deployments.is_empty()
    }
}

/// The caches of every child kind a controller watches (objects with the operator's label in
/// `namespace`, or in every namespace when `None`), filled by the controller's own watches.
#[derive(Clone)]
pub struct ChildStores {
    pub namespace: Option<String>,
    pub caches: PerKind<Cached>,
}

impl ChildStores {
    /// These stores hold the children of sales in `namespace`.
    pub fn cover(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// Reads the sale's children of every kind (see `children`).
struct ReadChildren<'a> {
    client: &'a Client,
    sale: &'a Sale,
    selector: &'a str,
}

impl<'a> KindStep<'a, Cached, Nothing> for ReadChildren<'a> {
    type Out = Objects;
    fn run<K: Child>(
        &mut self,
        cache: &'a Option<Cache<K>>,
        _: &'a (),
    ) -> BoxFuture<'a, Result<Vec<K>>> {
        children(self.client, cache.as_ref(), self.sale, self.selector).boxed()
    }
}

/// The sale's children of kind `K`: from `store` once it holds its first full list, else listed.
/// Sorted by name either way, as a list answers.
async fn children<K: Child>(
    client: &Client,
    store: Option<&Cache<K>>,
    sale: &Sale,
    selector: &str,
) -> Result<Vec<K>> {
    let filled = |s: &&Cache<K>| {
        s.wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok())
    };
    let mut items = match store.filter(filled) {
        Some(store) => {
            let mut items: Vec<K> = store
                .state_filter(|o| is_child_of(o, sale))
                .iter()
                .map(|o| K::clone(o))
                .collect();
            items.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
            items
        }
        None => {
            let api: Api<K> = Api::namespaced(client.clone(), &sale.namespace);
            api.list(&ListParams::default().labels(selector))
                .await?
                .items
        }
    };
    items.retain(|o| super::ownership::accepts_meta(o.meta(), &sale.owner.uid, &sale.name));
    Ok(items)
}

/// What `labels::children_of(sale)` selects, for an object of a store.
fn is_child_of<K: Resource>(object: &K, sale: &Sale) -> bool {
    let labels = object.labels();
    object.meta().namespace.as_deref() == Some(sale.namespace.as_str())
        && labels.get(labels::INSTANCE).map(String::as_str) == Some(sale.name.as_str())
        && labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
}

/// Read the sale's children (from `stores` when given, see the module doc); `serving` is
/// status.stage, whose API pods are counted when `count_serving_pods` (the sale moves to another
/// stage, or is being deleted).
pub async fn observe(
    client: &Client,
    stores: Option<&ChildStores>,
    sale: &Sale,
    serving: Option<Stage>,
    count_serving_pods: bool,
) -> Result<Observed> {
    let ns = sale.namespace.as_str();
    let selector = labels::children_of(&sale.name);
    let caches = match stores.filter(|s| s.cover(ns)) {
        Some(stores) => stores.caches.clone(),
        None => PerKind::default(),
    };
    let mut read = ReadChildren {
        client,
        sale,
        selector: &selector,
    };
    let mut observed = Observed {
        children: caches.try_zip(&PerKind::every(), &mut read).await?,
        ..Observed::default()
    };
    if let Some(old) = serving.filter(|_| count_serving_pods) {
        let pods_selector = labels::selector(&sale.name, Component::BookingApi, Some(old))
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        observed.serving_pods = pods
            .list_metadata(&ListParams::default().labels(&pods_selector))
            .await?
            .items
            .len();
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let stages = [Some(sale.spec.stage), serving];
    let needed = [
        (true, &sale.postgres, StoreKind::Postgres),
        (
            stages.iter().flatten().any(|s| s.uses_redis()),
            &sale.redis,
            StoreKind::Redis,
        ),
        (
            stages.iter().flatten().any(|s| s.uses_kafka()),
            &sale.kafka,
            StoreKind::Kafka,
        ),
    ];
    for (_, store, kind) in needed.into_iter().filter(|(needed, ..)| *needed) {
        if let Store::External(r) = store {
            let secret = secrets.get_opt(&r.name).await?;
            if let Some(s) = &secret
                && !allows_reference(s)
            {
                return Err(Error::InvalidSpec(format!(
                    "Secret {} may not be referenced by a FlashSale: its owner opts in with the label {}=\"true\"",
                    r.name,
                    labels::ALLOW_REFERENCE
                )));
            }
            let keys: BTreeSet<String> = secret
                .iter()
                .flat_map(|s| {
                    let data = s.data.iter().flat_map(|d| d.keys());
                    data.chain(s.string_data.iter().flat_map(|d| d.keys()))
                })
                .cloned()
                .collect();
            if !keys.contains(&r.key) {
                observed
                    .missing_external
                    .push(format!("{}/{}", r.name, r.key));
            }
            for lacking in store_tls::incomplete(kind, &keys) {
                observed
                    .missing_external
                    .push(format!("{}/{lacking}", r.name));
            }
            let optional: BTreeSet<String> = keys
                .into_iter()
                .filter(|k| external_secret::KEYS.contains(&k.as_str()))
                .collect();
            observed.external_keys.insert(r.name.clone(), optional);
        }
    }
    Ok(observed)
}

/// The Secret's owner let FlashSales reference it (`labels::ALLOW_REFERENCE`).
fn allows_reference(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::ALLOW_REFERENCE))
        .is_some_and(|v| v == "true")
}
