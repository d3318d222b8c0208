//! What every reconcile shares: the client, the event recorder, metrics, operator defaults and
//! the per-sale failure counts behind the exponential backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::autoscale::scrape::LoadObserver;
use crate::metrics::Metrics;
use crate::reconcile::applied::Applied;
use crate::reconcile::observe::ChildStores;
use crate::reconcile::validate::Defaults;
use crate::schedule::{Clock, SystemClock};

/// First retry delay after a failed reconcile; doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Sales applying their children at once, by default (`--concurrency`). Unbounded, 100 new sales
/// meant 100 reconciles each sending its ~16 requests at the same moment, and every re-trigger by
/// a child's status applied every child again: the API server of a small control plane slowed
/// down for every client (a 100-sale `kubectl apply` took a minute instead of a second). An apply
/// mostly waits on the API server, so a few dozen at a time keep it busy.
///
/// The bound is on applies, not on reconciles (kube-runtime's own limit is left unbounded): a
/// pass that only writes a status (a new sale's first, see `reconcile::reconcile_sale`) waits
/// for nobody. Bounding the reconciles instead, 100 sales applied at once waited up to 17 s for
/// their first status: the 32 slots were held by applies queued behind the API server's ClusterIP
/// allocator, which takes one Service at a time.
pub const CONCURRENCY: u16 = 32;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub defaults: Defaults,
    /// Consecutive failures per sale ("namespace/name").
    failures: Mutex<HashMap<String, u32>>,
    /// "Now" for sale windows, cooldowns and calibration retries; tests hold it still.
    pub clock: Arc<dyn Clock>,
    /// Reads the API pods' request counters (`--observe-load`); `None` never contacts a pod.
    pub load_observer: Option<LoadObserver>,
    /// What was applied to each child, so an unchanged one is not applied again.
    pub applied: Applied,
    /// The turns of the sales applying their children at once (`CONCURRENCY` unless set;
    /// `None`: unbounded).
    applying: Option<Semaphore>,
    /// The caches of the sales' children each running controller keeps (one per watched
    /// namespace, or one for all), by a number of their own; `observe` reads them instead of
    /// listing.
    child_stores: Mutex<Vec<(u64, ChildStores)>>,
    next_stores: AtomicU64,
}

/// A sale's turn to read and apply its children (`Context::apply_turn`), until dropped.
pub struct ApplyTurn<'a> {
    _permit: Option<SemaphorePermit<'a>>,
}

/// Keeps a controller's caches in the `Context` while it lives: a controller that stops (the
/// Lease lost, shutdown) takes its caches, which nothing updates any more, with it.
pub struct ChildStoresGuard {
    ctx: Arc<Context>,
    id: u64,
}

impl Drop for ChildStoresGuard {
    fn drop(&mut self) {
        self.ctx
            .child_stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.id);
    }
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, defaults: Defaults) -> Self {
        let reporter = Reporter {
            controller: crate::reconcile::desired::labels::MANAGER.into(),
            // The pod name when running in a cluster (downward API), else the host's.
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            defaults,
            failures: Mutex::default(),
            clock: Arc::new(SystemClock),
            load_observer: None,
            applied: Applied::default(),
            applying: Some(Semaphore::new(CONCURRENCY.into())),
            child_stores: Mutex::default(),
            next_stores: AtomicU64::new(0),
        }
    }

    /// A controller's caches, read by the reconciles of sales in the namespaces they cover
    /// until the guard is dropped.
    pub fn add_child_stores(self: &Arc<Self>, stores: ChildStores) -> ChildStoresGuard {
        let id = self.next_stores.fetch_add(1, Ordering::Relaxed);
        self.child_stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, stores));
        ChildStoresGuard {
            ctx: self.clone(),
            id,
        }
    }

    /// The caches covering `namespace`, if a controller keeps them.
    pub fn child_stores(&self, namespace: &str) -> Option<ChildStores> {
        self.child_stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.cover(namespace))
            .cloned()
    }

    /// At most `n` sales applying their children at once (0: unbounded).
    pub fn with_concurrency(self, n: u16) -> Self {
        Self {
            applying: (n > 0).then(|| Semaphore::new(n.into())),
            ..self
        }
    }

    /// Wait for a turn to apply a sale's children (see `CONCURRENCY`); it lasts as long as the
    /// `ApplyTurn`.
    pub async fn apply_turn(&self) -> ApplyTurn<'_> {
        let _permit = match &self.applying {
            // Never closed: an error cannot happen, and would only mean "go ahead".
            Some(permits) => permits.acquire().await.ok(),
            None => None,
        };
        ApplyTurn { _permit }
    }

    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// Follow observed load: read every ready API pod's /metrics (pod IPs are contacted).
    pub fn with_load_observer(self, observer: LoadObserver) -> Self {
        Self {
            load_observer: Some(observer),
            ..self
        }
    }

    /// Record a failure of `key` and return how long to wait before retrying it.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    /// A success resets the backoff of `key`.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// 2 s, 4 s, 8 s, … capped at 5 minutes.
pub fn backoff_delay(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(2), Duration::from_secs(4));
        assert_eq!(backoff_delay(5), Duration::from_secs(32));
        assert_eq!(backoff_delay(30), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }
}
