//! What wakes a sale's reconcile. Every watch event of a FlashSale or one of its children used to
//! trigger one; most changed nothing the reconcile reads (a Deployment's status moves five or six
//! times while kwok or a kubelet starts its pods, its conditions' timestamps each time; the
//! operator's own status write came back as an event of the sale). With 100 sales applied at
//! once those passes filled the reconcile slots and the sales created last waited for them.
//!
//! Each watched kind says, as a digest, what of it the reconcile reads ([`Digest`]); an event
//! whose object has the digest the previous event of that object had triggers nothing.
//! Deletions always trigger (a deleted child must be re-created). The caches
//! (`observe::ChildStores`, the controller's store of sales) are written before the filter, so a
//! reconcile still reads every object as it is now. The resync (`reconcile::RESYNC`) stays the
//! net under all of it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::crd::FlashSale;

/// The part of an object a reconcile acts on, as a hash.
pub trait Digest: Resource {
    fn digest(&self) -> u64;
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What every kind shares: its spec's version, labels and annotations (ownership, the
/// recalibrate annotation), owners, finalizers and whether it is being deleted.
fn metadata(meta: &ObjectMeta) -> impl Hash + '_ {
    (
        meta.generation,
        &meta.labels,
        &meta.annotations,
        meta.owner_references
            .iter()
            .flatten()
            .map(|o| &o.uid)
            .collect::<Vec<_>>(),
        &meta.finalizers,
        meta.deletion_timestamp.is_some(),
    )
}

/// A sale: what a user or another controller changes, not the status the operator writes.
impl Digest for DeserializeGuard<FlashSale> {
    fn digest(&self) -> u64 {
        hash_of(metadata(self.meta()))
    }
}

/// A workload (Deployment, StatefulSet: the same fields): its replicas and how many are updated
/// and ready (`observe::Workload`).
macro_rules! workload {
    ($($kind:ty),*) => {$(
        impl Digest for $kind {
            fn digest(&self) -> u64 {
                let status = self.status.as_ref();
                hash_of((
                    metadata(&self.metadata),
                    self.spec.as_ref().and_then(|s| s.replicas),
                    status.and_then(|s| s.observed_generation),
                    status.and_then(|s| s.ready_replicas),
                    status.and_then(|s| s.updated_replicas),
                ))
            }
        }
    )*};
}
workload!(Deployment, StatefulSet);

/// A Job: whether it is running, done or failed, and why (its conditions without their times).
impl Digest for Job {
    fn digest(&self) -> u64 {
        let status = self.status.as_ref();
        let conditions: Vec<_> = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (&c.type_, &c.status, &c.reason, &c.message))
            .collect();
        hash_of((
            metadata(&self.metadata),
            conditions,
            status.and_then(|s| s.succeeded),
            status.and_then(|s| s.failed),
            status.and_then(|s| s.active),
        ))
    }
}

/// Kinds whose every change may matter (a Secret's data, a Service's ports) and which change
/// rarely: their resource version.
macro_rules! every_change {
    ($($kind:ty),*) => {$(
        impl Digest for $kind {
            fn digest(&self) -> u64 {
                hash_of(&self.metadata.resource_version)
            }
        }
    )*};
}
every_change!(Secret, Service, PodDisruptionBudget, NetworkPolicy);

/// The objects of a reflected watch whose digest changed, and every deleted one.
pub fn changed<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Digest + Clone + Send + 'static,
{
    // Keyed by uid: a re-created object of the same name is a new one. Deletions remove their
    // entry, so the map holds one u64 per live object of the watch.
    let mut last: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |event| {
        future::ready(match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let digest = object.digest();
                let uid = object.uid().unwrap_or_default();
                (last.insert(uid, digest) != Some(digest)).then_some(Ok(object))
            }
            Ok(watcher::Event::Delete(object)) => {
                last.remove(&object.uid().unwrap_or_default());
                Some(Ok(object))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use watcher::Event;

    fn deployment(uid: &str, ready: i32, progressing_at: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "ns", "uid": uid, "generation": 1},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "True",
                    "lastUpdateTime": progressing_at, "lastTransitionTime": progressing_at}]},
        }))
        .unwrap()
    }

    async fn passed<K: Digest + Clone + Send + 'static>(events: Vec<Event<K>>) -> Vec<K> {
        changed(futures::stream::iter(events.into_iter().map(Ok)))
            .map(Result::unwrap)
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_status_tick_that_changes_nothing_read_wakes_nobody() {
        let first = deployment("u1", 1, "2026-12-03T10:00:00Z");
        let tick = deployment("u1", 1, "2026-12-03T10:00:05Z");
        let ready = deployment("u1", 2, "2026-12-03T10:00:06Z");
        let out = passed(vec![
            Event::Apply(first),
            Event::Apply(tick),
            Event::Apply(ready.clone()),
        ])
        .await;
        let ready_counts: Vec<_> = out
            .iter()
            .map(|d| d.status.as_ref().and_then(|s| s.ready_replicas))
            .collect();
        assert_eq!(ready_counts, [Some(1), Some(2)]);
    }

    #[tokio::test]
    async fn a_deletion_and_a_recreation_always_wake_the_owner() {
        let d = deployment("u1", 2, "2026-12-03T10:00:00Z");
        let again = deployment("u2", 2, "2026-12-03T10:00:00Z");
        let out = passed(vec![
            Event::Apply(d.clone()),
            Event::Delete(d.clone()),
            Event::Apply(again),
        ])
        .await;
        assert_eq!(out.len(), 3);
    }

    #[tokio::test]
    async fn a_relist_of_unchanged_objects_wakes_nobody() {
        let d = deployment("u1", 2, "2026-12-03T10:00:00Z");
        let out = passed(vec![
            Event::Apply(d.clone()),
            Event::Init,
            Event::InitApply(d.clone()),
            Event::InitDone,
        ])
        .await;
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_spec_edit_or_a_new_label_changes_a_workloads_digest() {
        let d = deployment("u1", 2, "2026-12-03T10:00:00Z");
        let mut edited = d.clone();
        edited.metadata.generation = Some(2);
        let mut relabelled = d.clone();
        relabelled
            .labels_mut()
            .insert("app.kubernetes.io/managed-by".into(), "someone".into());
        assert_ne!(d.digest(), edited.digest());
        assert_ne!(d.digest(), relabelled.digest());
        let mut scaled = d.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(3);
        assert_ne!(d.digest(), scaled.digest());
        let mut noisy = d.clone();
        noisy.status = Some(DeploymentStatus {
            available_replicas: Some(2),
            ..d.status.clone().unwrap()
        });
        assert_eq!(d.digest(), noisy.digest());
    }

    #[test]
    fn a_job_that_ends_changes_its_digest_its_times_do_not() {
        let running = Job {
            status: Some(JobStatus {
                active: Some(1),
                ..JobStatus::default()
            }),
            ..Job::default()
        };
        let failed = Job {
            status: Some(JobStatus {
                failed: Some(1),
                conditions: Some(vec![JobCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    message: Some("BackoffLimitExceeded".into()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
            ..Job::default()
        };
        let mut failed_later = failed.clone();
        failed_later
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .last_probe_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_ne!(running.digest(), failed.digest());
        assert_eq!(failed.digest(), failed_later.digest());
    }

    #[test]
    fn a_sales_status_write_changes_nothing_its_spec_does() {
        let sale: FlashSale = serde_json::from_value(serde_json::json!({
            "apiVersion": "flashsale.dev/v1alpha1", "kind": "FlashSale",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"stage": "redis", "targetRps": 100, "event": {"name": "e", "tickets": 10}},
        }))
        .unwrap();
        let guard = |fs: &FlashSale| DeserializeGuard(Ok(fs.clone()));
        let mut written = sale.clone();
        written.status = Some(Default::default());
        let mut edited = sale.clone();
        edited.metadata.generation = Some(2);
        assert_eq!(guard(&sale).digest(), guard(&written).digest());
        assert_ne!(guard(&sale).digest(), guard(&edited).digest());
    }
}
