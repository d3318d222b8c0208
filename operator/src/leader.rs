//! Leader election (issue 14): the operator's replicas share one coordination.k8s.io Lease and
//! only its holder runs the controller, so two replicas never reconcile a sale at once and a
//! standby takes over within about one lease duration of the leader's death (within
//! `STANDBY_POLL` when the leader stops cleanly: it releases the Lease). Built on
//! `kube-lease-manager`.

use std::future::Future;
use std::time::{Duration, Instant};

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tracing::{info, warn};

/// How long a Lease holds without renewal: a dead leader's successor waits at most this long.
pub const DEFAULT_LEASE_DURATION_SECONDS: u64 = 15;
/// The holder renews this long before its Lease would expire; also the clock skew between nodes
/// the election tolerates.
pub const DEFAULT_LEASE_GRACE_SECONDS: u64 = 5;
/// How often a standby reads the Lease (client-go's retryPeriod): a Lease released by a leader
/// that stopped cleanly is taken within this.
pub const STANDBY_POLL: Duration = Duration::from_secs(2);

/// Which Lease, and who is asking for it.
#[derive(Clone, Debug)]
pub struct Election {
    pub lease_name: String,
    pub namespace: String,
    /// Unique per process: the pod name in a cluster.
    pub identity: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: LeaseManagerError,
    },
    #[error(
        "lost the lease {0} to another replica: stopping, so that one replica reconciles at a time"
    )]
    Lost(String),
    #[error("lease grace ({grace} s) must be shorter than the lease duration ({duration} s)")]
    Durations { duration: u64, grace: u64 },
}

impl Election {
    fn lease_error(&self, source: LeaseManagerError) -> LeaderError {
        LeaderError::Lease {
            namespace: self.namespace.clone(),
            name: self.lease_name.clone(),
            source,
        }
    }
}

/// Wait for the Lease, then run `work` while holding it. Returns when `work` ends (the Lease is
/// released, so a standby takes over at once), or `Lost` when another replica took the Lease:
/// `work` is dropped mid-way, as a crash would, and the caller exits so that it starts afresh.
pub async fn run_while_leading<F>(
    client: Client,
    election: &Election,
    on_change: impl Fn(bool),
    work: F,
) -> Result<(), LeaderError>
where
    F: Future<Output = ()>,
{
    if election.grace_seconds >= election.duration_seconds {
        return Err(LeaderError::Durations {
            duration: election.duration_seconds,
            grace: election.grace_seconds,
        });
    }
    let lease = format!("{}/{}", election.namespace, election.lease_name);
    info!(%lease, identity = %election.identity, "waiting to lead");
    let waited = Instant::now();
    // The manager sleeps until the holder's Lease would expire, without looking again: a Lease
    // released by a leader that stopped cleanly would stay unnoticed that long. So a standby
    // looks again every STANDBY_POLL, through a manager built afresh (one GET).
    let manager = loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(election.duration_seconds)
            .with_grace(election.grace_seconds)
            .build()
            .await
            .map_err(|e| election.lease_error(e))?;
        match tokio::time::timeout(STANDBY_POLL, manager.changed()).await {
            Ok(Ok(true)) => break manager,
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(e)) => {
                warn!(%lease, error = %e, "taking the lease failed; trying again");
                tokio::time::sleep(STANDBY_POLL).await;
            }
        }
    };
    // From here the manager renews the Lease and says when it is lost.
    let (mut leading, task) = manager.watch().await;
    info!(%lease, identity = %election.identity, waited_ms = waited.elapsed().as_millis() as u64, "leading: starting the controller");
    on_change(true);
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            () = &mut work => break Ok(()),
            changed = leading.changed() => {
                if changed.is_err() || !*leading.borrow_and_update() {
                    warn!(%lease, identity = %election.identity, "leadership lost");
                    break Err(LeaderError::Lost(lease.clone()));
                }
            }
        }
    };
    on_change(false);
    // Closing the channel makes the manager release the Lease (if still held) and end.
    drop(leading);
    match task.await {
        Ok(Ok(_)) => info!(%lease, "lease released"),
        Ok(Err(e)) => warn!(%lease, error = %e, "releasing the lease failed"),
        Err(e) => warn!(%lease, error = %e, "lease task failed"),
    }
    outcome
}

/// This process's identity: `POD_NAME` in a cluster, else host name and process id (two local
/// processes must differ).
pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "flashsale-operator".into());
        format!("{host}-{}", std::process::id())
    })
}
