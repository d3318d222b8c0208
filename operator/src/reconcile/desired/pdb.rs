//! A PodDisruptionBudget over the serving stage's API pods: node drains take them one at a time,
//! so a sale never loses more than one pod's capacity to maintenance.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{self, Component};
use super::names;
use super::pod::meta;
use crate::reconcile::validate::Sale;
use flashsale_contract::Stage;

pub fn build(sale: &Sale, serving: Stage) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(
            sale,
            names::booking_pdb(&sale.name),
            Component::BookingApi,
            None,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(
                    &sale.name,
                    Component::BookingApi,
                    Some(serving),
                )),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sale;

    #[test]
    fn pdb_allows_one_api_pod_down_at_a_time() {
        let pdb = build(&sale("s", Stage::Redis), Stage::Redis);
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        let sel = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(sel[labels::COMPONENT], "api");
        assert_eq!(sel[labels::STAGE], "redis");
    }
}
