//! The operator's one error type. `metric_label` names a variant for the failures metric;
//! `reason` names it for the FlashSale's Ready condition.

use thiserror::Error;

#[derive(Error, Debug)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// The spec cannot be served as written; retried only when the spec changes.
    #[error("invalid FlashSale: {0}")]
    InvalidSpec(String),

    /// The stored object does not match the CRD's Rust types (e.g. written by a newer operator).
    #[error("FlashSale cannot be read: {0}")]
    Malformed(String),

    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Low-cardinality label for `flashsale_operator_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "kube_client",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Malformed(_) => "malformed",
            Error::Serialize { .. } => "serialize",
        }
    }

    /// CamelCase reason for the Ready condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Malformed(_) => "Malformed",
            Error::Serialize { .. } => "InternalError",
        }
    }

    /// Retrying does not help until the user edits the FlashSale.
    pub fn needs_spec_change(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::Malformed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_reasons_are_stable_identifiers() {
        let e = Error::InvalidSpec("x".into());
        assert_eq!(e.metric_label(), "invalid_spec");
        assert_eq!(e.reason(), "InvalidSpec");
        assert!(e.needs_spec_change());
        assert!(!Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded).needs_spec_change());
    }
}
