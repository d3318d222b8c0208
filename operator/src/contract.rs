//! booking-app's contract as the operator writes it into pods: the `flashsale-contract` crate
//! (environment variable names, subcommands and flags, ports and probe paths), which booking-app
//! declares its settings from, so a rename on either side is a compile error. Here, on top of it,
//! only what the operator alone needs: ports as Kubernetes writes them, and the keys it looks for
//! in an external store's Secret.

pub use flashsale_contract::env::*;
pub use flashsale_contract::{
    CMD_LOADGEN, CMD_SERVE, CMD_WORKER, HEALTHZ_PATH, HTTP_PORT_NAME, METRICS_PATH,
    METRICS_PORT_NAME, READYZ_PATH, flag,
};

/// The API port of a booking-app pod (API and probes), as a Kubernetes port number.
pub const HTTP_PORT: i32 = flashsale_contract::HTTP_PORT as i32;
/// The metrics port of a booking-app pod (`/metrics`, and `/healthz`).
pub const METRICS_PORT: i32 = flashsale_contract::METRICS_PORT as i32;

/// Keys an external store's Secret (`spec.<store>.external.secretRef`) may carry beside its URL
/// key, named as cert-manager and `kubernetes.io/tls` Secrets name them and, for Kafka, as
/// librdkafka names its properties. The operator mounts the files and sets the variables above
/// (README "TLS and authentication to external stores").
pub mod external_secret {
    /// PEM CA bundle the store's server certificate must chain to.
    pub const CA: &str = "ca.crt";
    /// PEM client certificate and its key (mutual TLS).
    pub const TLS_CERT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
    /// Kafka: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (derived when absent).
    pub const KAFKA_SECURITY_PROTOCOL: &str = "security.protocol";
    /// Kafka: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub const KAFKA_SASL_MECHANISM: &str = "sasl.mechanism";
    pub const KAFKA_SASL_USERNAME: &str = "sasl.username";
    pub const KAFKA_SASL_PASSWORD: &str = "sasl.password";

    /// Every key the operator looks for.
    pub const KEYS: [&str; 7] = [
        CA,
        TLS_CERT,
        TLS_KEY,
        KAFKA_SECURITY_PROTOCOL,
        KAFKA_SASL_MECHANISM,
        KAFKA_SASL_USERNAME,
        KAFKA_SASL_PASSWORD,
    ];
}
