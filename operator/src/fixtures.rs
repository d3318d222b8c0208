//! Test builders: FlashSales, validated sales and sizings with sensible values, so each test
//! states only what it is about. Public so the integration tests in `tests/` use them too.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{EventSpec, ExternalStore, FlashSale, FlashSaleSpec, SecretKeyRef};
use crate::reconcile::sizing::{self, Sizing};
use crate::reconcile::validate::{Defaults, Sale, validate};
use flashsale_contract::Stage;

pub struct FlashSaleBuilder {
    fs: FlashSale,
}

impl FlashSaleBuilder {
    /// A sale in namespace `ns` with a uid and generation 1, as if read back from the API.
    pub fn new(name: &str, stage: Stage) -> Self {
        let spec = FlashSaleSpec {
            stage,
            target_rps: 1_000,
            event: EventSpec {
                name: "Summer Tour".into(),
                tickets: 10_000,
                per_user_limit: 2,
            },
            window: None,
            capacity: Default::default(),
            booking_app: Default::default(),
            postgres: Default::default(),
            redis: Default::default(),
            kafka: Default::default(),
            network_policy: Default::default(),
            auth: None,
        };
        let mut fs = FlashSale::new(name, spec);
        fs.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some("5f0c8a2e-8d5b-4b8f-9a57-0c1a9cfd3a11".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        Self { fs }
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.fs.metadata.namespace = Some(ns.into());
        self
    }

    pub fn target_rps(mut self, rps: u32) -> Self {
        self.fs.spec.target_rps = rps;
        self
    }

    pub fn per_pod_rps(mut self, rps: f64) -> Self {
        self.fs.spec.capacity.per_pod_rps = Some(rps);
        self
    }

    pub fn replicas(mut self, min: i32, max: i32) -> Self {
        self.fs.spec.capacity.min_replicas = min;
        self.fs.spec.capacity.max_replicas = max;
        self
    }

    pub fn external_postgres(mut self, secret: &str, key: &str) -> Self {
        self.fs.spec.postgres.external = Some(ExternalStore {
            secret_ref: SecretKeyRef {
                name: secret.into(),
                key: key.into(),
            },
        });
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        self.fs.spec.booking_app.image = Some(image.into());
        self
    }

    pub fn build(self) -> FlashSale {
        self.fs
    }

    /// The object as a client submits it: no uid, generation or namespace-assigned fields.
    pub fn build_for_apply(self) -> FlashSale {
        let mut fs = self.fs;
        fs.metadata.uid = None;
        fs.metadata.generation = None;
        fs
    }
}

/// A validated sale with the builder's defaults.
pub fn sale(name: &str, stage: Stage) -> Sale {
    sale_from(&FlashSaleBuilder::new(name, stage).build())
}

pub fn sale_from(fs: &FlashSale) -> Sale {
    validate(fs, &Defaults::default()).expect("fixture FlashSale is valid")
}

/// The sizing of a default sale, with `replicas` booking pods and no calibration under way.
pub fn sizing(replicas: i32) -> Sizing {
    let mut s = sized(&sale("s", Stage::Kafka));
    s.booking_replicas = replicas;
    s.calibration.run = None;
    s
}

/// The sizing of `sale` with an empty status, at a fixed instant, nothing observed yet.
pub fn sized(sale: &Sale) -> Sizing {
    sizing::decide(
        sale,
        &Default::default(),
        &sizing::Inputs::at(chrono::DateTime::UNIX_EPOCH),
    )
}
