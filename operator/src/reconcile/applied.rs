//! What this operator last applied, per child, so a pass whose desired child is the one it
//! applied before, onto an object nobody has changed since, skips the request. An entry holds
//! the hash of the desired object and the version of the object the apply answered with: the
//! `metadata.generation` of kinds that have one (Deployment, StatefulSet, PDB: status updates do
//! not move it, any spec change does), else `resourceVersion` (Secret, Service). A child that was
//! deleted or recreated (another uid), changed by someone (another version) or wanted
//! differently (another hash) is applied again; so is everything after `TTL`, so drift the
//! version does not show (a Deployment's annotations) is corrected within it, and everything
//! once after a restart (the memory is not persisted).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::core::ObjectMeta;

/// Longest time an apply is skipped for: a full apply at least this often (the resync period).
pub const TTL: Duration = Duration::from_secs(300);
/// Entries of children gone for good (deleted sales) are pruned past this many.
const PRUNE_ABOVE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: &'static str,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug)]
struct Entry {
    hash: u64,
    uid: String,
    version: String,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct Applied {
    entries: Mutex<HashMap<Key, Entry>>,
}

/// The version this memory compares: generation where the kind keeps one, else resourceVersion.
fn version(meta: &ObjectMeta) -> Option<String> {
    match meta.generation {
        Some(g) => Some(format!("g{g}")),
        None => meta.resource_version.clone().map(|rv| format!("rv{rv}")),
    }
}

pub fn hash_of<T: serde::Serialize>(desired: &T) -> u64 {
    let mut h = DefaultHasher::new();
    // Serializing a k8s-openapi object cannot fail; a failure only means "apply".
    serde_json::to_vec(desired).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl Applied {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `observed` (as listed this pass) is the object this operator applied `hash` onto, unchanged since.
    pub fn is_current(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        hash: u64,
        observed: Option<&ObjectMeta>,
    ) -> bool {
        let Some(meta) = observed else { return false };
        if meta.deletion_timestamp.is_some() {
            return false;
        }
        let key = Key {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        };
        self.lock().get(&key).is_some_and(|e| {
            e.hash == hash
                && e.at.elapsed() < TTL
                && meta.uid.as_deref() == Some(e.uid.as_str())
                && version(meta).as_deref() == Some(e.version.as_str())
        })
    }

    /// Remember the answer of an apply of `hash`.
    pub fn record(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        hash: u64,
        answer: &ObjectMeta,
    ) {
        let key = Key {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        };
        let mut entries = self.lock();
        match (answer.uid.clone(), version(answer)) {
            (Some(uid), Some(version)) => {
                entries.insert(
                    key,
                    Entry {
                        hash,
                        uid,
                        version,
                        at: Instant::now(),
                    },
                );
            }
            _ => {
                entries.remove(&key);
            }
        }
        if entries.len() > PRUNE_ABOVE {
            entries.retain(|_, e| e.at.elapsed() < TTL);
        }
    }

    pub fn forget(&self, kind: &'static str, namespace: &str, name: &str) {
        self.lock().remove(&Key {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, generation: Option<i64>, rv: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            generation,
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    #[test]
    fn skips_only_the_same_desired_object_onto_the_unchanged_child() {
        let applied = Applied::default();
        let answer = meta("u1", Some(2), "100");
        assert!(
            !applied.is_current("Deployment", "ns", "d", 7, Some(&answer)),
            "nothing applied yet"
        );
        applied.record("Deployment", "ns", "d", 7, &answer);
        // A status update moves resourceVersion, not generation.
        assert!(applied.is_current(
            "Deployment",
            "ns",
            "d",
            7,
            Some(&meta("u1", Some(2), "105"))
        ));
        assert!(
            !applied.is_current("Deployment", "ns", "d", 8, Some(&answer)),
            "wanted differently"
        );
        assert!(
            !applied.is_current(
                "Deployment",
                "ns",
                "d",
                7,
                Some(&meta("u1", Some(3), "106"))
            ),
            "spec changed by someone"
        );
        assert!(
            !applied.is_current(
                "Deployment",
                "ns",
                "d",
                7,
                Some(&meta("u2", Some(2), "107"))
            ),
            "recreated"
        );
        assert!(
            !applied.is_current("Deployment", "ns", "d", 7, None),
            "deleted"
        );
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        let terminating = ObjectMeta {
            deletion_timestamp: Some(now),
            ..answer.clone()
        };
        assert!(!applied.is_current("Deployment", "ns", "d", 7, Some(&terminating)));
        assert!(
            !applied.is_current("Service", "ns", "d", 7, Some(&answer)),
            "another kind"
        );
        applied.forget("Deployment", "ns", "d");
        assert!(
            !applied.is_current("Deployment", "ns", "d", 7, Some(&answer)),
            "forgotten"
        );
    }

    #[test]
    fn kinds_without_generation_compare_resource_version() {
        let applied = Applied::default();
        applied.record("Secret", "ns", "s", 1, &meta("u1", None, "10"));
        assert!(applied.is_current("Secret", "ns", "s", 1, Some(&meta("u1", None, "10"))));
        assert!(
            !applied.is_current("Secret", "ns", "s", 1, Some(&meta("u1", None, "11"))),
            "changed by someone"
        );
    }
}
