//! Pieces every pod template shares: hardened security contexts, env helpers, probes, the
//! object metadata with owner reference. Kept here so each builder only says what is specific.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, PodSecurityContext, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{self, Component};
use crate::reconcile::validate::Sale;
use flashsale_contract::Stage;

/// Metadata of a child: name, namespace, labels and the controller owner reference, so
/// deleting the FlashSale garbage-collects it and changes to it wake the controller.
pub fn meta(sale: &Sale, name: String, component: Component, stage: Option<Stage>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(sale.namespace.clone()),
        labels: Some(labels::labels(&sale.name, component, stage)),
        owner_references: Some(vec![sale.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Non-root, no privilege escalation, seccomp RuntimeDefault; `fs_group` makes mounted volumes
/// writable by the image's user.
pub fn pod_security(uid: i64, fs_group: bool) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: fs_group.then_some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Drops every capability. `read_only_root` is false only for images that write their own
/// configuration at start (apache/kafka).
pub fn container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Requests and limits given in the spec, else these defaults.
/// Requests and limits of a booking-app pod (API, worker or drain): the spec's, else 1 CPU
/// (request = limit, so calibration measures a pod of exactly this size).
pub fn pod_resources(given: Option<&ResourceRequirements>) -> ResourceRequirements {
    resources(given, ("1", "256Mi"), ("1", "512Mi"))
}

/// Millicores of a CPU quantity (`2`, `500m`, `1.5`), if it is one of the plain forms.
pub fn quantity_millicores(quantity: &Quantity) -> Option<u64> {
    let s = quantity.0.trim();
    let (number, scale) = match s.strip_suffix('m') {
        Some(millis) => (millis, 1.0),
        None => (s, 1000.0),
    };
    let millis = number
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)?
        * scale;
    Some(millis.ceil() as u64)
}

/// Bytes of a memory quantity (`512Mi`, `1G`, `1048576`), if it is one of the plain forms.
pub fn quantity_bytes(quantity: &Quantity) -> Option<u64> {
    let s = quantity.0.trim();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale: u64 = match &s[digits.len()..] {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    let bytes = digits.parse::<f64>().ok().filter(|n| *n > 0.0)? * scale as f64;
    Some(bytes as u64)
}

pub fn resources(
    spec: Option<&ResourceRequirements>,
    requests: (&str, &str),
    limits: (&str, &str),
) -> ResourceRequirements {
    if let Some(given) = spec {
        return given.clone();
    }
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(requests)),
        limits: Some(pair(limits)),
        ..ResourceRequirements::default()
    }
}

pub fn http_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

pub fn exec_probe(command: &[&str], period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Probe::default()
    }
}

pub fn tcp_probe(port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.into()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_read_as_millicores() {
        let m = |s: &str| quantity_millicores(&Quantity(s.into()));
        assert_eq!(m("2"), Some(2000));
        assert_eq!(m("500m"), Some(500));
        assert_eq!(m("1.5"), Some(1500));
        assert_eq!(m(" 250m "), Some(250));
        assert_eq!(m("0"), None);
        assert_eq!(m("2k"), None);
        assert_eq!(m("lots"), None);
    }
}
