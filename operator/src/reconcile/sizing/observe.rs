//! The read `sizing::decide` needs beyond the sale's children: the calibration attempt's Job
//! and pods (`calibration::observe`), and, only with a `LoadObserver` (`--observe-load`), the
//! API pods' request counters. Everything else it reads, `reconcile::observe` has already listed.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use super::{Inputs, calibration_key, stores_ready};
use crate::autoscale::scrape::{LoadObserver, ready_targets};
use crate::calibration::{self, JobState, Observation};
use crate::crd::FlashSaleStatus;
use crate::reconcile::desired::labels::{self, Component};
use crate::reconcile::observe::Observed;
use crate::reconcile::validate::Sale;

/// Reads what `decide` needs from the cluster: the calibration attempt's Job pods, and (only
/// with a `LoadObserver`, i.e. `--observe-load`) the API pods' request counters.
pub async fn observe(
    client: &Client,
    sale: &Sale,
    previous: &FlashSaleStatus,
    observed: &Observed,
    recalibrate: Option<String>,
    load: Option<&LoadObserver>,
    now: DateTime<Utc>,
) -> Result<Inputs, kube::Error> {
    let key = calibration_key(sale, recalibrate.clone());
    let settled = sale.spec.capacity.per_pod_rps.is_some()
        || previous
            .calibration
            .as_ref()
            .is_some_and(|r| key.matches_record(r));
    let calibration = if settled {
        Observation {
            server_ready: false,
            job: JobState::Absent,
        }
    } else {
        let attempt = previous
            .calibration_attempt
            .as_ref()
            .filter(|a| key.matches_attempt(a))
            .map_or(1, |a| a.failures + 1);
        calibration::observe::observe(client, sale, observed, &key, attempt).await?
    };
    let load = match load {
        Some(observer) => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &sale.namespace);
            let selector =
                labels::selector(&sale.name, Component::BookingApi, Some(sale.spec.stage))
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
            let targets = ready_targets(
                &pods
                    .list(&ListParams::default().labels(&selector))
                    .await?
                    .items,
            );
            let key = format!("{}/{}", sale.namespace, sale.name);
            Some(observer.observe(&key, &targets, now).await)
        }
        None => None,
    };
    Ok(Inputs {
        now,
        recalibrate,
        stores_ready: stores_ready(sale, observed),
        calibration,
        load,
        stage_changing: false,
    })
}
