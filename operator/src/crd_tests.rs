//! The CRD's CEL rules, evaluated client-side with kube's `validate_cel` (the same rules the
//! API server runs; the integration tests check the server refuses them too).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::fixtures::FlashSaleBuilder;

fn refusal(fs: &FlashSale) -> String {
    match fs.validate_cel() {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn valid() -> FlashSale {
    FlashSaleBuilder::new("summer-tour", Stage::Redis).build()
}

fn window(start: i64, end: i64, warmup: Option<&str>) -> Option<WindowSpec> {
    Some(WindowSpec {
        starts_at: Time(Timestamp::from_second(start).unwrap()),
        ends_at: Time(Timestamp::from_second(end).unwrap()),
        warmup: warmup.map(Into::into),
    })
}

#[test]
fn a_plain_sale_passes_every_rule() {
    assert_eq!(refusal(&valid()), "");
    let mut fs = valid();
    fs.spec.window = window(1_000, 2_000, Some("1h30m"));
    fs.spec.capacity.per_pod_rps = Some(4000.0);
    fs.spec.capacity.target_utilization = 1.0;
    fs.spec.booking_app.service = ServiceSpec {
        type_: ServiceType::NodePort,
        node_port: Some(30080),
    };
    assert_eq!(refusal(&fs), "");
}

#[test]
fn min_replicas_above_max_is_refused() {
    let mut fs = valid();
    fs.spec.capacity.min_replicas = 10;
    fs.spec.capacity.max_replicas = 3;
    assert!(
        refusal(&fs).contains("capacity.minReplicas must not exceed capacity.maxReplicas"),
        "{}",
        refusal(&fs)
    );
}

#[test]
fn a_window_that_ends_before_it_starts_is_refused() {
    let mut fs = valid();
    fs.spec.window = window(2_000, 1_000, None);
    assert!(
        refusal(&fs).contains("window.endsAt must be after window.startsAt"),
        "{}",
        refusal(&fs)
    );
    fs.spec.window = window(1_000, 1_000, None);
    assert!(
        refusal(&fs).contains("endsAt"),
        "equal instants are refused too"
    );
}

#[test]
fn a_warmup_that_is_not_a_duration_is_refused() {
    let mut fs = valid();
    fs.spec.window = window(1_000, 2_000, Some("ten minutes"));
    assert!(
        refusal(&fs).contains("window.warmup must be a duration"),
        "{}",
        refusal(&fs)
    );
}

/// Whether the CRD's rule admits `text` as `window.warmup`.
fn rule_admits(text: &str) -> bool {
    let mut fs = valid();
    fs.spec.window = window(1_000, 2_000, Some(text));
    !refusal(&fs).contains("window.warmup must be a duration")
}

#[test]
fn the_warmup_rule_admits_what_the_operator_parses() {
    use crate::duration::parse_duration;
    for text in [
        "10m", "1h30m", "1h 30m", "90s", "250ms", "1.5s", "0", "0s", " 10m ", "2 hours", "1day",
        "3w", "1M", "1y", "7us", "7µs", "1min30s", "1 h 30 m", "10 mins", "1hr", "00", "1h r",
        "1h,30m",
    ]
    .iter()
    .chain(crate::duration::NOT_DURATIONS)
    {
        assert_eq!(
            rule_admits(text),
            parse_duration(text).is_ok(),
            "{text:?}: rule and parser disagree"
        );
    }
    // Where they differ, the rule is the stricter in form: digits split by a space and
    // non-ASCII spaces are the parser's leniency, refused at the door.
    for text in ["1 0m", "10\u{a0}m"] {
        assert!(
            !rule_admits(text) && parse_duration(text).is_ok(),
            "{text:?}"
        );
    }
    // And a regular expression cannot tell which fractions are exact: these pass the rule and
    // the operator reports them (InvalidSpec, from SaleWindow::from_spec).
    for text in ["1.5ns", "0.0001h"] {
        assert!(
            rule_admits(text) && parse_duration(text).is_err(),
            "{text:?}"
        );
    }
}

#[test]
fn utilization_outside_zero_to_one_is_refused() {
    for bad in [0.0, -0.5, 1.01] {
        let mut fs = valid();
        fs.spec.capacity.target_utilization = bad;
        assert!(
            refusal(&fs).contains("targetUtilization"),
            "{bad}: {}",
            refusal(&fs)
        );
    }
}

#[test]
fn a_zero_per_pod_rps_is_refused() {
    let mut fs = valid();
    fs.spec.capacity.per_pod_rps = Some(0.0);
    assert!(
        refusal(&fs).contains("capacity.perPodRps must be greater than 0"),
        "{}",
        refusal(&fs)
    );
}

#[test]
fn external_and_in_cluster_store_settings_together_are_refused() {
    let mut fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .external_postgres("pg", "url")
        .build();
    assert_eq!(refusal(&fs), "");
    fs.spec.postgres.in_cluster.storage = Some(Quantity("5Gi".into()));
    assert!(
        refusal(&fs).contains("postgres: use either external"),
        "{}",
        refusal(&fs)
    );

    let mut fs = valid();
    fs.spec.redis.external = Some(ExternalStore {
        secret_ref: SecretKeyRef {
            name: "r".into(),
            key: "url".into(),
        },
    });
    fs.spec.redis.in_cluster.image = Some("redis:7".into());
    assert!(
        refusal(&fs).contains("redis: use either external"),
        "{}",
        refusal(&fs)
    );
}

#[test]
fn a_node_port_on_a_cluster_ip_service_is_refused() {
    let mut fs = valid();
    fs.spec.booking_app.service.node_port = Some(30080);
    assert!(
        refusal(&fs).contains("nodePort needs type NodePort"),
        "{}",
        refusal(&fs)
    );
}

#[test]
fn names_that_cannot_prefix_child_names_are_refused() {
    for bad in ["9lives", "a".repeat(41).as_str()] {
        let fs = FlashSaleBuilder::new(bad, Stage::Postgres).build();
        assert!(
            refusal(&fs).contains("metadata.name must be a DNS label"),
            "{bad}: {}",
            refusal(&fs)
        );
    }
    assert_eq!(
        refusal(&FlashSaleBuilder::new(&"a".repeat(40), Stage::Postgres).build()),
        ""
    );
}

#[test]
fn a_bad_topic_name_is_refused() {
    let mut fs = valid();
    fs.spec.kafka.topic = Some("bookings/2026".into());
    assert!(refusal(&fs).contains("kafka.topic"), "{}", refusal(&fs));
}

fn with_auth(issuer: bool, audience: bool, jwks: Option<JwksSource>) -> FlashSale {
    let mut fs = valid();
    fs.spec.auth = Some(AuthSpec {
        issuer: issuer.then(|| "https://id.example.com/".into()),
        audience: audience.then(|| "tickets".into()),
        jwks,
    });
    fs
}

fn jwks_url(url: &str) -> Option<JwksSource> {
    Some(JwksSource {
        url: Some(url.into()),
        config_map_ref: None,
    })
}

fn jwks_config_map(key: &str) -> Option<JwksSource> {
    Some(JwksSource {
        url: None,
        config_map_ref: Some(ConfigMapKeyRef {
            name: "idp-keys".into(),
            key: key.into(),
        }),
    })
}

#[test]
fn an_identity_providers_jwks_by_https_url_or_config_map_passes() {
    for jwks in [
        jwks_url("https://id.example.com/.well-known/jwks.json"),
        jwks_config_map("jwks.json"),
    ] {
        let fs = with_auth(true, true, jwks);
        assert_eq!(refusal(&fs), "", "{:?}", fs.spec.auth);
    }
    // Issuer and audience alone: the generated secret, with those claims checked.
    assert_eq!(refusal(&with_auth(true, true, None)), "");
    assert_eq!(refusal(&with_auth(false, false, None)), "");
}

#[test]
fn a_jwks_url_that_is_not_https_is_refused() {
    for bad in [
        "http://id.example.com/jwks.json",
        "id.example.com/jwks.json",
        "https://",
    ] {
        let message = refusal(&with_auth(true, true, jwks_url(bad)));
        assert!(
            message.contains("auth.jwks.url must be an https:// URL"),
            "{bad}: {message}"
        );
    }
}

#[test]
fn a_jwks_source_names_exactly_one_of_url_and_config_map() {
    let both = Some(JwksSource {
        url: Some("https://id.example.com/jwks.json".into()),
        ..jwks_config_map("jwks.json").unwrap()
    });
    let neither = Some(JwksSource::default());
    for jwks in [both, neither] {
        let message = refusal(&with_auth(true, true, jwks));
        assert!(
            message.contains("set exactly one of url and configMapRef"),
            "{message}"
        );
    }
    let message = refusal(&with_auth(true, true, jwks_config_map("../etc")));
    assert!(message.contains("configMapRef.key"), "{message}");
}

#[test]
fn a_jwks_without_issuer_and_audience_is_refused() {
    for (issuer, audience) in [(false, true), (true, false), (false, false)] {
        let message = refusal(&with_auth(
            issuer,
            audience,
            jwks_url("https://id.example.com/jwks.json"),
        ));
        assert!(
            message.contains("auth.jwks needs auth.issuer and auth.audience"),
            "{issuer} {audience}: {message}"
        );
    }
}

#[test]
fn a_config_map_ref_defaults_its_key() {
    let source: JwksSource =
        serde_json::from_value(serde_json::json!({"configMapRef": {"name": "idp-keys"}})).unwrap();
    assert_eq!(source.config_map_ref.unwrap().key, "jwks.json");
}

/// Every `format` in the schema is one the API server knows (an unknown one is a warning on
/// every apply), and unsigned fields keep their bounds.
#[test]
fn the_schema_uses_only_formats_kubernetes_knows() {
    use kube::CustomResourceExt;
    fn formats(value: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(format)) = map.get("format") {
                    out.push((path.to_owned(), format.clone()));
                }
                for (key, child) in map {
                    formats(child, &format!("{path}.{key}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                items.iter().for_each(|child| formats(child, path, out))
            }
            _ => {}
        }
    }
    let crd = serde_json::to_value(FlashSale::crd()).unwrap();
    let mut found = Vec::new();
    formats(&crd, "", &mut found);
    let known = [
        "int32",
        "int64",
        "double",
        "float",
        "date-time",
        "byte",
        "int-or-string",
    ];
    let unknown: Vec<_> = found
        .iter()
        .filter(|(_, f)| !known.contains(&f.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "formats the API server does not know: {unknown:?}"
    );
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["targetRps"]["format"], "int64");
    assert_eq!(
        (
            spec["targetRps"]["minimum"].as_f64(),
            spec["targetRps"]["maximum"].as_f64()
        ),
        (Some(1.0), Some(f64::from(u32::MAX)))
    );
}

/// `kubectl explain` shows each field's description: every property of the generated schema
/// (spec and status, nested objects and list items) has one.
#[test]
fn every_crd_field_has_a_description() {
    use kube::CustomResourceExt;
    fn undescribed(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                let described = child
                    .get("description")
                    .and_then(|d| d.as_str())
                    .is_some_and(|d| !d.trim().is_empty());
                if !described {
                    out.push(child_path.clone());
                }
                undescribed(child, &child_path, out);
            }
        }
        if let Some(items) = schema.get("items") {
            undescribed(items, &format!("{path}[]"), out);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            undescribed(values, &format!("{path}{{}}"), out);
        }
    }
    let crd = serde_json::to_value(FlashSale::crd()).unwrap();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    undescribed(root, "", &mut missing);
    // The walk must reach deep fields, or an empty result would prove nothing.
    assert!(
        root["properties"]["status"]["properties"]["calibrationAttempt"]["properties"]["lastError"]
            .is_object(),
        "the walk does not see status.calibrationAttempt.lastError"
    );
    assert!(
        missing.is_empty(),
        "CRD fields without a description (add a doc comment in crd.rs / crd/status.rs): {missing:?}"
    );
}

/// A status written before the calibration key was one flattened struct (the shape every
/// operator so far has stored) reads into the key, and is written back field for field: a
/// running sale keeps its measurement and its attempt's backoff across the upgrade.
#[test]
fn a_stored_calibration_status_of_the_earlier_shape_still_reads() {
    let stored = serde_json::json!({
        "calibration": {
            "stage": "redis",
            "image": "booking-app:1",
            "resources": "requests cpu=1,memory=256Mi; limits cpu=1,memory=512Mi",
            "sloP99Ms": 200,
            "perPodRps": 4210.5,
            "drainRps": 786.5,
            "measuredAt": "2026-12-01T08:00:00Z",
            "job": "s-cal-0a1b2c3d-lg",
            "recalibrate": "1"
        },
        "calibrationAttempt": {
            "stage": "kafka",
            "image": "booking-app:2",
            "sloP99Ms": 150,
            "failures": 2,
            "retryAt": "2026-12-01T09:02:00Z",
            "lastError": "the loadgen container ended without a termination message"
        }
    });
    let status: FlashSaleStatus = serde_json::from_value(stored.clone()).unwrap();
    let record = status.calibration.as_ref().unwrap();
    assert_eq!(
        record.key,
        CalibrationKey {
            stage: Stage::Redis,
            image: "booking-app:1".into(),
            resources: Some("requests cpu=1,memory=256Mi; limits cpu=1,memory=512Mi".into()),
            slo_p99_ms: 200,
            recalibrate: Some("1".into()),
        }
    );
    assert_eq!(
        (record.per_pod_rps, record.drain_rps, record.job.as_deref()),
        (4210.5, Some(786.5), Some("s-cal-0a1b2c3d-lg"))
    );
    let attempt = status.calibration_attempt.as_ref().unwrap();
    // An attempt stored before pod sizes were recorded: no resources, no recalibration.
    assert_eq!(
        attempt.key,
        CalibrationKey {
            stage: Stage::Kafka,
            image: "booking-app:2".into(),
            resources: None,
            slo_p99_ms: 150,
            recalibrate: None,
        }
    );
    assert_eq!(attempt.failures, 2);
    assert!(attempt.started_at.is_none() && attempt.retry_at.is_some());
    let mut written = serde_json::to_value(&status).unwrap();
    // Written with the fields the struct always carries (empty conditions, zero replicas).
    for always in ["conditions", "replicas", "desiredReplicas"] {
        written.as_object_mut().unwrap().remove(always);
    }
    assert_eq!(written, stored);
}
