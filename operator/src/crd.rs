//! The `FlashSale` custom resource: what a user asks for (spec) and what the operator saw (status).
//! Cross-field rules are CEL (`x-kubernetes-validations`) so the API server refuses bad sales
//! before they reach the reconciler; `crds/flashsale.yaml` is generated from these types.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use flashsale_contract::Stage;
pub use status::{
    CalibrationAttempt, CalibrationKey, CalibrationRecord, FlashSaleStatus, Phase, SizingStatus,
};

mod status;

/// schemars writes Rust's unsigned types as `format: uint32` (etc.), which the API server does
/// not know and warns about on every apply. Kubernetes knows `int32` and `int64`: an unsigned
/// field becomes `int64` with the type's bounds (schemars already sets `minimum: 0`), so the
/// API server refuses what the operator could not read. Applied to the spec's and the status's
/// schemas, recursively.
pub fn kubernetes_integer_formats(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        let maximum = match object.get("format").and_then(serde_json::Value::as_str) {
            Some("uint8") => Some(u64::from(u8::MAX)),
            Some("uint16") => Some(u64::from(u16::MAX)),
            Some("uint32") => Some(u64::from(u32::MAX)),
            Some("uint64" | "uint") => Some(i64::MAX.unsigned_abs()),
            _ => None,
        };
        if let Some(maximum) = maximum {
            object.insert("format".into(), "int64".into());
            object.entry("maximum").or_insert_with(|| maximum.into());
        }
    }
    schemars::transform::transform_subschemas(&mut kubernetes_integer_formats, schema);
}

/// A flash sale: one event sold at a target request rate, served by the booking system at `stage`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flashsale.dev",
    version = "v1alpha1",
    kind = "FlashSale",
    plural = "flashsales",
    shortname = "fs",
    namespaced,
    status = "FlashSaleStatus",
    derive = "PartialEq",
    doc = "A flash sale: the booking system for one event, at one inventory stage, sized for a target request rate.",
    cel,
    printcolumn(name = "Stage", type_ = "string", json_path = ".spec.stage"),
    printcolumn(name = "Target RPS", type_ = "integer", json_path = ".spec.targetRps"),
    printcolumn(name = "Per-Pod RPS", type_ = "number", json_path = ".status.perPodRps"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 40")
        .message("metadata.name must be a DNS label of at most 40 characters starting with a letter: it prefixes the names of the sale's Services and StatefulSets")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integer_formats)]
pub struct FlashSaleSpec {
    /// Which inventory stage serves the sale: postgres (row locking), redis (Lua counter with
    /// write-behind to Postgres) or kafka (queue, decided by workers). Changing it on a live sale
    /// drains the old stage first (see README, "Changing the stage").
    pub stage: Stage,

    /// Requests per second the sale must sustain at its peak.
    #[schemars(range(min = 1))]
    pub target_rps: u32,

    /// What is sold.
    pub event: EventSpec,

    /// When the sale is open; capacity is scaled up `warmup` before it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,

    /// How booking-app replicas are sized.
    #[serde(default)]
    pub capacity: CapacitySpec,

    /// The booking service pods.
    #[serde(default)]
    pub booking_app: BookingAppSpec,

    /// The database every stage writes bookings to.
    #[serde(default)]
    pub postgres: PostgresSpec,

    /// Used by stage redis. Ignored by the other stages.
    #[serde(default)]
    pub redis: RedisSpec,

    /// Used by stage kafka. Ignored by the other stages.
    #[serde(default)]
    pub kafka: KafkaSpec,

    /// Who may reach the sale's pods: by default each store admits only the sale's own pods,
    /// the booking API any client, and the metrics port only the scrapers the operator's install
    /// names.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// How the booking API verifies its users' bearer tokens. Absent: HS256 tokens signed with
    /// the secret the operator generates into the sale's credentials Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
}

/// The identity provider the sale trusts. With a JWKS source the sale's API pods verify only
/// tokens its keys signed (and carrying this issuer and audience): the generated HS256 secret is
/// not given to them, so whoever can read the sale's Secret cannot mint a token the sale accepts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.jwks) || (has(self.issuer) && has(self.audience))").message("auth.jwks needs auth.issuer and auth.audience: without them a token the identity provider issued for any other application would be accepted")
)]
pub struct AuthSpec {
    /// Required `iss` of every token; the tokens calibration mints carry it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// Required `aud` of every token; the tokens calibration mints carry it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub audience: Option<String>,
    /// The identity provider's public keys (ES256/ES384/RS256/RS384/RS512). Absent: the
    /// generated HS256 secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksSource>,
}

/// Where the JWKS is: exactly one of `url` and `configMapRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("has(self.url) != has(self.configMapRef)").message("auth.jwks: set exactly one of url and configMapRef")
)]
pub struct JwksSource {
    /// The identity provider's JWKS endpoint, fetched by every API pod at start, every 5 minutes
    /// and when a token names an unknown key. https only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') && size(self) > 8").message("auth.jwks.url must be an https:// URL: keys fetched over plain http could be replaced on the way"))]
    pub url: Option<String>,
    /// A ConfigMap key holding the JWKS document, mounted into the API pods as a file (read at
    /// start: a changed key set takes effect as the pods restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// ConfigMap in the FlashSale's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the JWKS (`{"keys": [...]}`).
    #[serde(default = "default_jwks_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("auth.jwks.configMapRef.key must be a ConfigMap key (letters, digits, '-', '_', '.')"))]
    pub key: String,
}

fn default_jwks_key() -> String {
    "jwks.json".into()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Render the sale's NetworkPolicies (default true). Turn it off only where something else
    /// isolates the stores (a service mesh, cluster-wide policies): off, every pod of the cluster
    /// reaches the sale's Postgres, Redis and Kafka.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may call the booking API port, as the `from` peers of a NetworkPolicy rule (pod,
    /// namespace selectors or IP blocks). Absent or empty: any client. The sale's own pods are
    /// always admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            api_from: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventSpec {
    /// Display name of the event.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// Tickets on sale.
    #[schemars(range(min = 1))]
    pub tickets: u32,
    /// Most tickets one user may book.
    #[serde(default = "default_per_user_limit")]
    #[schemars(range(min = 1))]
    pub per_user_limit: u32,
}

fn default_per_user_limit() -> u32 {
    2
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.endsAt > self.startsAt").message("window.endsAt must be after window.startsAt")
)]
pub struct WindowSpec {
    /// When the sale opens (RFC 3339).
    pub starts_at: Time,
    /// When the sale closes (RFC 3339).
    pub ends_at: Time,
    /// How long before `startsAt` to be at full size: a duration such as 10m, 1h30m, 1h 30m or
    /// 90s (humantime's syntax, the one every flashsale duration is written in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::WARMUP_RULE).message("window.warmup must be a duration such as 10m, 1h30m or 90s"))]
    pub warmup: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("capacity.minReplicas must not exceed capacity.maxReplicas")
)]
pub struct CapacitySpec {
    /// Requests per second one booking-app pod sustains within the SLO. Pin it to skip
    /// calibration; leave it out and the operator measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("capacity.perPodRps must be greater than 0"))]
    pub per_pod_rps: Option<f64>,
    /// Fraction of a pod's measured capacity to plan for, in (0, 1]: headroom for spikes.
    #[serde(default = "default_target_utilization")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("capacity.targetUtilization must be greater than 0 and at most 1"))]
    pub target_utilization: f64,
    /// Fewest booking-app replicas, also used outside the sale window.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most booking-app replicas, whatever the target.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Latency objective for calibration: a pod's capacity is the rate it serves with p99 at or
    /// under this many milliseconds.
    #[serde(default = "default_slo_p99_ms")]
    #[schemars(range(min = 1))]
    pub slo_p99_ms: u32,
}

fn default_target_utilization() -> f64 {
    0.7
}
fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    100
}
fn default_slo_p99_ms() -> u32 {
    200
}

impl Default for CapacitySpec {
    fn default() -> Self {
        Self {
            per_pod_rps: None,
            target_utilization: default_target_utilization(),
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            slo_p99_ms: default_slo_p99_ms(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BookingAppSpec {
    /// booking-app container image (the same image runs the API, the worker and calibration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Image pull policy for booking-app containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Requests and limits of each booking-app pod; calibration measures a pod of this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Postgres connections per booking-app pod; derived from the replica count when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub db_pool_size: Option<u32>,
    /// How the booking API is exposed.
    #[serde(default)]
    pub service: ServiceSpec,
    /// The stage's background worker (kafka consumer, redis write-behind syncer).
    #[serde(default)]
    pub worker: WorkerSpec,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.nodePort) || self.type != 'ClusterIP'").message("bookingApp.service.nodePort needs type NodePort or LoadBalancer")
)]
pub struct ServiceSpec {
    /// Kubernetes Service type of the booking API: ClusterIP (default), NodePort or LoadBalancer.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Fixed node port (30000-32767), e.g. the one a kind cluster maps to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Worker replicas; derived (partitions, drain rate) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// A managed store outside the cluster's control: the app reads its URL from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalStore {
    /// The Secret key holding the store's connection URL, passed to booking-app as its URL setting.
    /// The same Secret may carry ca.crt (the CA to verify the server against), tls.crt and tls.key
    /// (a client certificate) and, for Kafka, security.protocol, sasl.mechanism, sasl.username and
    /// sasl.password; they are mounted as files into the pods.
    pub secret_ref: SecretKeyRef,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret in the FlashSale's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key holding the connection URL (postgres://…, redis://…, or host:port[,host:port] for Kafka).
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_secret_key() -> String {
    "url".into()
}

/// A store the operator deploys in the cluster: a one-replica StatefulSet with a data volume.
/// Flattened into `PostgresSpec`, `RedisSpec` and `KafkaSpec`, so each reads `postgres.image`,
/// `redis.storage`, … while the fields and their rules are written once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InClusterStore {
    /// Image of the in-cluster store (default: postgres:17, redis:7.4, apache/kafka:4.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Size of the data volume (default: postgres 10Gi, redis 2Gi, kafka 10Gi); fixed once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
    /// StorageClass of the data volume (default: the cluster's); fixed once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Requests and limits of the store's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl InClusterStore {
    /// Any in-cluster setting given (which `external` excludes).
    pub fn is_set(&self) -> bool {
        self != &Self::default()
    }
}

const EXTERNAL_OR_IN_CLUSTER: &str = "!has(self.external) || !(has(self.image) || has(self.storage) || has(self.storageClassName) || has(self.resources))";

/// The spec of one store: `external` (described by the doc comments given) or the in-cluster
/// settings, not both (a CEL rule naming `$store` and what `$managed` one it would be), then the
/// store's own fields. Written once for the three stores; a macro rather than a generic struct
/// because each store's schema carries its own descriptions and rule message.
macro_rules! store_spec {
    (
        $(#[$external_doc:meta])*
        $name:ident, $store:literal, $managed:literal { $($own:tt)* }
    ) => {
        #[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
        #[serde(rename_all = "camelCase")]
        #[x_kube(
            cel,
            validation = Rule::new(EXTERNAL_OR_IN_CLUSTER).message(concat!(
                $store,
                ": use either external (",
                $managed,
                ") or in-cluster settings (image, storage, storageClassName, resources), not both"
            ))
        )]
        pub struct $name {
            $(#[$external_doc])*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub external: Option<ExternalStore>,
            #[serde(flatten)]
            pub in_cluster: InClusterStore,
            $($own)*
        }
    };
}

store_spec! {
    /// Use this database instead of deploying one.
    PostgresSpec, "postgres", "a managed database" {}
}

store_spec! {
    /// Use this Redis instead of deploying one: a single primary (not Redis Cluster), persisting
    /// with AOF `appendfsync always`, or a crash can lose bookings the client was told are confirmed.
    RedisSpec, "redis", "a managed Redis" {}
}

store_spec! {
    /// Use these brokers instead of deploying one.
    KafkaSpec, "kafka", "a managed cluster" {
        /// Topic the booking requests go to (default: the sale's name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = 249))]
        #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9._-]{1,249}$')").message("kafka.topic may only contain letters, digits, '.', '_' and '-' (at most 249)"))]
        pub topic: Option<String>,
        /// Partitions of the topic; at least the worker replicas (derived when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1))]
        pub partitions: Option<i32>,
    }
}

impl FlashSale {
    /// The condition of this type in the current status, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
#[path = "crd_tests.rs"]
mod tests;
