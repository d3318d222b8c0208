//! Step 1 of a reconcile: turn a FlashSale into a `Sale` whose every choice is resolved
//! (defaults applied, in-cluster or external store decided) or refuse it with a reason a user
//! can act on. Pure: what needs the API (do referenced Secrets exist?) is `observe`'s job.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::crd::{FlashSale, FlashSaleSpec, PullPolicy, SecretKeyRef, ServiceSpec};
use crate::error::{Error, Result};
use flashsale_contract::Stage;

pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:17";
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.4";
pub const DEFAULT_KAFKA_IMAGE: &str = "apache/kafka:4.1.0";

/// Operator-wide defaults and limits (flags of `flashsale-operator run`).
#[derive(Clone, Debug)]
pub struct Defaults {
    pub booking_app_image: String,
    /// Who may scrape the sale's metrics ports (`--metrics-from`); empty: any pod.
    pub metrics_from: Vec<NetworkPolicyPeer>,
    /// Prefixes (registries, or registry/path) every image a FlashSale names must start with
    /// (`--allowed-image-prefixes`); empty: any image.
    pub allowed_image_prefixes: Vec<String>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            booking_app_image: concat!("flashsale/booking-app:", env!("CARGO_PKG_VERSION")).into(),
            metrics_from: Vec::new(),
            allowed_image_prefixes: vec![],
        }
    }
}

/// `image` starts with `prefix` at a path boundary: "registry.corp" allows "registry.corp/app:1"
/// but not "registry.corp.evil.io/app:1".
fn image_allowed(image: &str, prefix: &str) -> bool {
    image.strip_prefix(prefix).is_some_and(|rest| {
        rest.is_empty() || prefix.ends_with(['/', ':', '@']) || rest.starts_with(['/', ':', '@'])
    })
}

/// Refuse an image the FlashSale names outside the allowlist. The operator's own defaults (its
/// booking-app image, the store images) are the installer's choice and not checked.
fn check_images(spec: &FlashSaleSpec, allowed: &[String]) -> Result<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    let named = [
        ("bookingApp.image", &spec.booking_app.image),
        ("postgres.image", &spec.postgres.in_cluster.image),
        ("redis.image", &spec.redis.in_cluster.image),
        ("kafka.image", &spec.kafka.in_cluster.image),
    ];
    for (field, image) in named {
        if let Some(image) = image
            && !allowed.iter().any(|p| image_allowed(image, p))
        {
            return Err(Error::InvalidSpec(format!(
                "{field} {image:?} is not allowed: this operator runs only images starting with {} (ALLOWED_IMAGE_PREFIXES)",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// A FlashSale with every default resolved; what the builders read.
#[derive(Clone, Debug, PartialEq)]
pub struct Sale {
    pub name: String,
    pub namespace: String,
    /// Controller owner reference to the FlashSale, put on every child.
    pub owner: OwnerReference,
    pub generation: Option<i64>,
    pub spec: FlashSaleSpec,
    pub booking_image: String,
    pub pull_policy: Option<PullPolicy>,
    pub service: ServiceSpec,
    pub postgres: Store,
    pub redis: Store,
    pub kafka: Store,
    pub kafka_topic: String,
    /// `spec.window` with its warmup parsed.
    pub window: Option<crate::schedule::SaleWindow>,
    /// The scrapers admitted to the metrics ports (from `Defaults`).
    pub metrics_from: Vec<NetworkPolicyPeer>,
    /// The optional keys (`contract::external_secret`: CA, client certificate, SASL) each
    /// external store's Secret carries, by Secret name. Empty from `validate`; set from
    /// `Observed::external_keys` before anything is built (`desired::store_tls`).
    pub external_keys: BTreeMap<String, BTreeSet<String>>,
}

/// Where a store runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Store {
    InCluster(InCluster),
    /// The app reads the store's URL from this Secret key; the operator deploys nothing.
    External(SecretKeyRef),
}

#[derive(Clone, Debug, PartialEq)]
pub struct InCluster {
    pub image: String,
    pub storage: Quantity,
    pub storage_class_name: Option<String>,
    pub resources: Option<ResourceRequirements>,
}

impl Store {
    pub fn in_cluster(&self) -> Option<&InCluster> {
        match self {
            Store::InCluster(c) => Some(c),
            Store::External(_) => None,
        }
    }
}

impl Sale {
    /// Does this sale, serving `stage`, need the store deployed? Postgres always; Redis and Kafka
    /// only for their stage.
    pub fn stage_store(&self, stage: Stage) -> Vec<(&'static str, &Store)> {
        let mut stores = vec![("postgres", &self.postgres)];
        if stage.uses_redis() {
            stores.push(("redis", &self.redis));
        }
        if stage.uses_kafka() {
            stores.push(("kafka", &self.kafka));
        }
        stores
    }
}

pub fn validate(fs: &FlashSale, defaults: &Defaults) -> Result<Sale> {
    let name = fs.name_any();
    let namespace = fs
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("FlashSale has no namespace".into()))?;
    let owner = fs
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidSpec("FlashSale has no uid yet".into()))?;
    let spec = fs.spec.clone();
    // The API server enforces these through CEL; checked again because a reconcile can see an
    // object stored before the CRD had the rule.
    if spec.capacity.min_replicas > spec.capacity.max_replicas {
        return Err(Error::InvalidSpec(
            "capacity.minReplicas exceeds capacity.maxReplicas".into(),
        ));
    }
    if !(spec.capacity.target_utilization > 0.0 && spec.capacity.target_utilization <= 1.0) {
        return Err(Error::InvalidSpec(
            "capacity.targetUtilization must be in (0, 1]".into(),
        ));
    }
    if spec
        .capacity
        .per_pod_rps
        .is_some_and(|r| !(r > 0.0 && r.is_finite()))
    {
        return Err(Error::InvalidSpec(
            "capacity.perPodRps must be a positive number".into(),
        ));
    }
    check_images(&spec, &defaults.allowed_image_prefixes)?;
    let postgres = store(
        "postgres",
        spec.postgres.external.as_ref(),
        &spec.postgres.in_cluster,
        DEFAULT_POSTGRES_IMAGE,
        "10Gi",
    )?;
    let redis = store(
        "redis",
        spec.redis.external.as_ref(),
        &spec.redis.in_cluster,
        DEFAULT_REDIS_IMAGE,
        "2Gi",
    )?;
    let kafka = store(
        "kafka",
        spec.kafka.external.as_ref(),
        &spec.kafka.in_cluster,
        DEFAULT_KAFKA_IMAGE,
        "10Gi",
    )?;
    for (what, store) in [
        ("postgres", &postgres),
        ("redis", &redis),
        ("kafka", &kafka),
    ] {
        if let Store::InCluster(c) = store {
            check_quantity(&format!("{what}.storage"), &c.storage)?;
        }
    }
    let window = spec
        .window
        .as_ref()
        .map(crate::schedule::SaleWindow::from_spec)
        .transpose()
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    Ok(Sale {
        window,
        kafka_topic: spec.kafka.topic.clone().unwrap_or_else(|| name.clone()),
        booking_image: spec
            .booking_app
            .image
            .clone()
            .unwrap_or_else(|| defaults.booking_app_image.clone()),
        pull_policy: spec.booking_app.image_pull_policy,
        service: spec.booking_app.service.clone(),
        generation: fs.metadata.generation,
        name,
        namespace,
        owner,
        spec,
        postgres,
        redis,
        kafka,
        metrics_from: defaults.metrics_from.clone(),
        external_keys: BTreeMap::new(),
    })
}

/// The store as the spec asks for it: external, or in the cluster with the defaults filled in.
fn store(
    what: &str,
    external: Option<&crate::crd::ExternalStore>,
    settings: &crate::crd::InClusterStore,
    default_image: &str,
    default_storage: &str,
) -> Result<Store> {
    match external {
        Some(_) if settings.is_set() => Err(Error::InvalidSpec(format!(
            "{what}: use either external or in-cluster settings, not both"
        ))),
        Some(ext) => Ok(Store::External(ext.secret_ref.clone())),
        None => Ok(Store::InCluster(InCluster {
            image: settings
                .image
                .clone()
                .unwrap_or_else(|| default_image.into()),
            storage: settings
                .storage
                .clone()
                .unwrap_or_else(|| Quantity(default_storage.into())),
            storage_class_name: settings.storage_class_name.clone(),
            resources: settings.resources.clone(),
        })),
    }
}

/// A storage size the API server will accept in a PVC: a number with an optional binary or
/// decimal suffix.
fn check_quantity(field: &str, q: &Quantity) -> Result<()> {
    let s = q.0.as_str();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    let known = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number_ok = !digits.is_empty() && digits.parse::<f64>().is_ok_and(|n| n > 0.0);
    if number_ok && known.contains(&suffix) {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "{field} {s:?} is not a size such as 10Gi"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::FlashSaleBuilder;

    #[test]
    fn defaults_fill_every_in_cluster_store() {
        let sale = validate(
            &FlashSaleBuilder::new("s", Stage::Redis).build(),
            &Defaults::default(),
        )
        .unwrap();
        let pg = sale.postgres.in_cluster().unwrap();
        assert_eq!(pg.image, DEFAULT_POSTGRES_IMAGE);
        assert_eq!(pg.storage, Quantity("10Gi".into()));
        assert_eq!(sale.redis.in_cluster().unwrap().image, DEFAULT_REDIS_IMAGE);
        assert_eq!(sale.kafka_topic, "s");
        assert!(sale.booking_image.starts_with("flashsale/booking-app:"));
        assert_eq!(sale.owner.controller, Some(true));
    }

    #[test]
    fn external_store_replaces_the_in_cluster_one() {
        let fs = FlashSaleBuilder::new("s", Stage::Postgres)
            .external_postgres("pg", "uri")
            .build();
        let sale = validate(&fs, &Defaults::default()).unwrap();
        assert_eq!(
            sale.postgres,
            Store::External(SecretKeyRef {
                name: "pg".into(),
                key: "uri".into()
            })
        );
    }

    #[test]
    fn external_with_in_cluster_settings_is_refused() {
        let mut fs = FlashSaleBuilder::new("s", Stage::Postgres)
            .external_postgres("pg", "url")
            .build();
        fs.spec.postgres.in_cluster.storage = Some(Quantity("1Gi".into()));
        let err = validate(&fs, &Defaults::default()).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn replica_bounds_and_utilization_are_checked() {
        let mut fs = FlashSaleBuilder::new("s", Stage::Postgres).build();
        fs.spec.capacity.min_replicas = 5;
        fs.spec.capacity.max_replicas = 2;
        assert!(validate(&fs, &Defaults::default()).is_err());
        let mut fs = FlashSaleBuilder::new("s", Stage::Postgres).build();
        fs.spec.capacity.target_utilization = 0.0;
        assert!(validate(&fs, &Defaults::default()).is_err());
    }

    #[test]
    fn storage_sizes_are_checked() {
        for (size, ok) in [
            ("10Gi", true),
            ("500M", true),
            ("1.5Gi", true),
            ("ten", false),
            ("10Gb", false),
            ("", false),
        ] {
            let mut fs = FlashSaleBuilder::new("s", Stage::Postgres).build();
            fs.spec.postgres.in_cluster.storage = Some(Quantity(size.into()));
            assert_eq!(validate(&fs, &Defaults::default()).is_ok(), ok, "{size}");
        }
    }

    #[test]
    fn a_sale_without_uid_is_not_reconciled() {
        let mut fs = FlashSaleBuilder::new("s", Stage::Postgres).build();
        fs.metadata.uid = None;
        assert!(validate(&fs, &Defaults::default()).is_err());
    }

    #[test]
    fn images_a_sale_names_must_be_on_the_allowlist() {
        let defaults = Defaults {
            allowed_image_prefixes: vec!["registry.corp".into(), "ghcr.io/flashsale/".into()],
            ..Defaults::default()
        };
        let with = |image: &str| {
            let mut fs = FlashSaleBuilder::new("s", Stage::Postgres).build();
            fs.spec.booking_app.image = Some(image.into());
            validate(&fs, &defaults)
        };
        assert!(with("registry.corp/booking-app:1").is_ok());
        assert!(with("ghcr.io/flashsale/booking-app:1").is_ok());
        for refused in [
            "registry.corp.evil.io/booking-app:1",
            "ghcr.io/other/booking-app:1",
            "booking-app:1",
        ] {
            let e = with(refused).unwrap_err();
            assert!(matches!(e, Error::InvalidSpec(_)), "{refused}");
            assert!(
                e.to_string().contains("bookingApp.image") && e.to_string().contains(refused),
                "{e}"
            );
        }
        let mut fs = FlashSaleBuilder::new("s", Stage::Redis).build();
        fs.spec.redis.in_cluster.image = Some("redis:7.4".into());
        assert!(
            validate(&fs, &defaults)
                .unwrap_err()
                .to_string()
                .contains("redis.image")
        );
        // The operator's own defaults are not the author's choice; no allowlist allows anything.
        assert!(validate(&FlashSaleBuilder::new("s", Stage::Kafka).build(), &defaults).is_ok());
        let mut fs = FlashSaleBuilder::new("s", Stage::Postgres).build();
        fs.spec.booking_app.image = Some("anything:1".into());
        assert!(validate(&fs, &Defaults::default()).is_ok());
    }
}
