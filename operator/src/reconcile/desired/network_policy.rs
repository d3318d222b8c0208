//! The sale's NetworkPolicies (`spec.networkPolicy`, on by default). Each store admits only the
//! sale's own pods, on its own port; the booking API pods admit `spec.networkPolicy.apiFrom`
//! (default: any client) on the API port; every booking-app pod admits the scrapers the
//! operator's install names (`--metrics-from`, the chart's `networkPolicy.metricsFrom`) on the
//! metrics port. "The sale's own pods" are those carrying its `instance` and `managed-by` labels:
//! labels anyone who may create pods in the namespace can set, so a namespace is the trust
//! boundary, as with every label-based policy. Egress is left open (DNS, external stores).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{self, Component};
use super::names;
use super::pod::meta;
use crate::contract;
use crate::reconcile::validate::Sale;

/// A store's policy: `component`'s pods admit the sale's pods on `ports`.
pub fn store(sale: &Sale, name: String, component: Component, ports: &[i32]) -> NetworkPolicy {
    let mut rules = vec![rule(ports, Some(vec![sale_pods(sale)]))];
    if component == Component::Kafka {
        // The combined broker/controller reaches its own controller listener.
        rules.push(rule(
            &[super::KAFKA_CONTROLLER_PORT],
            Some(vec![peer(labels::selector(&sale.name, component, None))]),
        ));
    }
    policy(
        sale,
        name,
        component,
        LabelSelector {
            match_labels: Some(labels::selector(&sale.name, component, None)),
            ..LabelSelector::default()
        },
        rules,
    )
}

/// The booking API pods, and the sale's other booking-app pods (worker, drain, calibration),
/// which admit only the sale's own pods on the API port (the calibration Job calls its scratch
/// pod there).
pub fn booking(sale: &Sale, api_from: &[NetworkPolicyPeer]) -> [NetworkPolicy; 2] {
    let metrics = rule(
        &[contract::METRICS_PORT],
        (!sale.metrics_from.is_empty()).then(|| sale.metrics_from.clone()),
    );
    let mut api_peers = api_from.to_vec();
    let api = if api_peers.is_empty() {
        rule(&[contract::HTTP_PORT], None)
    } else {
        api_peers.push(sale_pods(sale));
        rule(&[contract::HTTP_PORT], Some(api_peers))
    };
    let api_pods = LabelSelector {
        match_labels: Some(labels::selector(&sale.name, Component::BookingApi, None)),
        ..LabelSelector::default()
    };
    let mut others = labels::selector(&sale.name, Component::BookingApi, None);
    let api_role = others
        .remove(labels::COMPONENT)
        .expect("a selector names its component");
    let other_pods = LabelSelector {
        match_labels: Some(others),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: labels::COMPONENT.into(),
            operator: "NotIn".into(),
            values: Some(vec![api_role]),
        }]),
    };
    [
        policy(
            sale,
            names::api_network_policy(&sale.name),
            Component::BookingApi,
            api_pods,
            vec![api, metrics.clone()],
        ),
        policy(
            sale,
            names::internal_network_policy(&sale.name),
            Component::Worker,
            other_pods,
            vec![
                rule(&[contract::HTTP_PORT], Some(vec![sale_pods(sale)])),
                metrics,
            ],
        ),
    ]
}

/// Every pod the operator runs for this sale.
fn sale_pods(sale: &Sale) -> NetworkPolicyPeer {
    peer(BTreeMap::from([
        (labels::INSTANCE.to_string(), sale.name.clone()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
    ]))
}

fn peer(match_labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(match_labels),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// `from: None` admits any source.
fn rule(ports: &[i32], from: Option<Vec<NetworkPolicyPeer>>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from,
        ports: Some(
            ports
                .iter()
                .map(|p| NetworkPolicyPort {
                    port: Some(IntOrString::Int(*p)),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                })
                .collect(),
        ),
    }
}

fn policy(
    sale: &Sale,
    name: String,
    component: Component,
    pods: LabelSelector,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(sale, name, component, None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sale;
    use flashsale_contract::Stage;

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .map(|p| match p.port {
                Some(IntOrString::Int(n)) => n,
                _ => panic!("numeric ports only"),
            })
            .collect()
    }

    #[test]
    fn a_store_admits_only_the_sales_pods_on_its_port() {
        let s = sale("s", Stage::Redis);
        let p = store(&s, "s-redis".into(), Component::Redis, &[6379]);
        let spec = p.spec.unwrap();
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(ports(&rules[0]), [6379]);
        let from = rules[0].from.as_ref().unwrap();
        let labels = from[0]
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(labels[labels::INSTANCE], "s");
        assert_eq!(labels[labels::MANAGED_BY], labels::MANAGER);
        assert!(from[0].namespace_selector.is_none(), "same namespace only");
    }

    #[test]
    fn the_api_admits_anyone_by_default_and_the_named_clients_otherwise() {
        let s = sale("s", Stage::Postgres);
        let [api, _] = booking(&s, &[]);
        let rules = api.spec.unwrap().ingress.unwrap();
        assert_eq!(ports(&rules[0]), [contract::HTTP_PORT]);
        assert!(rules[0].from.is_none());
        let client = peer(BTreeMap::from([(
            "role".to_string(),
            "frontend".to_string(),
        )]));
        let [api, _] = booking(&s, std::slice::from_ref(&client));
        let from = api.spec.unwrap().ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(from.len(), 2, "the named clients and the sale's own pods");
        assert_eq!(from[0], client);
    }

    #[test]
    fn metrics_have_a_port_of_their_own_open_to_the_named_scrapers() {
        let mut s = sale("s", Stage::Kafka);
        s.metrics_from = vec![peer(BTreeMap::from([(
            "app".to_string(),
            "prometheus".to_string(),
        )]))];
        for p in booking(&s, &[]) {
            let rules = p.spec.unwrap().ingress.unwrap();
            let metrics = rules
                .iter()
                .find(|r| ports(r) == [contract::METRICS_PORT])
                .unwrap();
            assert_eq!(metrics.from.as_ref().unwrap(), &s.metrics_from);
        }
    }
}
