//! Labels on every child: the `app.kubernetes.io/*` set plus the stage. The applier finds
//! children to delete by `instance` + `managed-by`, so these must stay stable.

use std::collections::BTreeMap;

use flashsale_contract::Stage;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Stage of booking-app, worker and drain pods.
pub const STAGE: &str = "flashsale.dev/stage";

/// A Secret may be named by a sale's `spec.<store>.external.secretRef` only with this label set
/// to "true": its owner opts in, so a FlashSale author cannot put any Secret of the namespace
/// into the sale's pods (issue 14).
pub const ALLOW_REFERENCE: &str = "flashsale.dev/allow-reference";

/// Field manager of every server-side apply and value of `managed-by`.
pub const MANAGER: &str = "flashsale-operator";
const PART_OF_VALUE: &str = "flashsale";

/// What a child is, as `app.kubernetes.io/name` (the software) and `component` (its role).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Postgres,
    Redis,
    Kafka,
    BookingApi,
    Worker,
    Drain,
    Credentials,
    /// The scratch booking-app pod a calibration measures (selected by no sale Service).
    Calibration,
    /// The loadgen Job of a calibration.
    CalibrationLoad,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Postgres => "postgres",
            Component::Redis => "redis",
            Component::Kafka => "kafka",
            Component::BookingApi
            | Component::Worker
            | Component::Drain
            | Component::Calibration
            | Component::CalibrationLoad => "booking-app",
            Component::Credentials => "flashsale",
        }
    }

    fn role(self) -> &'static str {
        match self {
            Component::Postgres => "database",
            Component::Redis => "inventory-cache",
            Component::Kafka => "request-queue",
            Component::BookingApi => "api",
            Component::Worker => "worker",
            Component::Drain => "drain",
            Component::Credentials => "credentials",
            Component::Calibration => "calibration",
            Component::CalibrationLoad => "calibration-loadgen",
        }
    }
}

/// Selector of a workload's pods: never changes for a given child (selectors are immutable).
pub fn selector(
    sale: &str,
    component: Component,
    stage: Option<Stage>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (NAME.to_string(), component.name().to_string()),
        (INSTANCE.to_string(), sale.to_string()),
        (COMPONENT.to_string(), component.role().to_string()),
    ]);
    if let Some(stage) = stage {
        labels.insert(STAGE.to_string(), stage.as_str().to_string());
    }
    labels
}

/// All labels of a child object and its pods.
pub fn labels(sale: &str, component: Component, stage: Option<Stage>) -> BTreeMap<String, String> {
    let mut labels = selector(sale, component, stage);
    labels.insert(PART_OF.to_string(), PART_OF_VALUE.to_string());
    labels.insert(MANAGED_BY.to_string(), MANAGER.to_string());
    labels
}

/// Label selector (string form) of every child of one sale.
pub fn children_of(sale: &str) -> String {
    format!("{INSTANCE}={sale},{MANAGED_BY}={MANAGER}")
}

/// Label selector of every object this operator manages, in any sale (for the watches).
pub fn managed() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_contain_the_selector_and_the_ownership_labels() {
        let sel = selector("s", Component::BookingApi, Some(Stage::Redis));
        let all = labels("s", Component::BookingApi, Some(Stage::Redis));
        assert!(sel.iter().all(|(k, v)| all.get(k) == Some(v)));
        assert_eq!(all[MANAGED_BY], MANAGER);
        assert_eq!(all[STAGE], "redis");
        assert_eq!(
            children_of("s"),
            "app.kubernetes.io/instance=s,app.kubernetes.io/managed-by=flashsale-operator"
        );
    }

    #[test]
    fn api_and_worker_pods_do_not_share_a_selector() {
        assert_ne!(
            selector("s", Component::BookingApi, None),
            selector("s", Component::Worker, None)
        );
    }
}
