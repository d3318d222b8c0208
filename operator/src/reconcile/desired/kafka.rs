//! The in-cluster Kafka of stage kafka: one combined broker+controller (KRaft) from the
//! apache/kafka image, configured through its `KAFKA_*` environment variables. booking-app
//! creates the topic (KAFKA_TOPIC, KAFKA_PARTITIONS) when it starts.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, Service};

use super::labels::Component;
use super::names;
use super::pod::{container_security, env, resources, tcp_probe};
use super::store::{StoreShape, stateful_set};
use super::{KAFKA_CONTROLLER_PORT, KAFKA_PORT};
use crate::reconcile::validate::{InCluster, Sale};

/// UID of `appuser` in apache/kafka.
const UID: i64 = 1000;
const DATA_DIR: &str = "/var/lib/kafka/data";

/// Bootstrap address booking-app connects to.
pub fn bootstrap(sale: &Sale) -> String {
    format!(
        "{}:{KAFKA_PORT}",
        names::service_host(&names::kafka(&sale.name), &sale.namespace)
    )
}

pub fn build(sale: &Sale, store: &InCluster) -> (StatefulSet, Service) {
    let settings = [
        ("CLUSTER_ID", cluster_id(&sale.owner.uid)),
        ("KAFKA_NODE_ID", "1".into()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
        (
            "KAFKA_LISTENERS",
            format!("PLAINTEXT://:{KAFKA_PORT},CONTROLLER://:{KAFKA_CONTROLLER_PORT}"),
        ),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://{}", bootstrap(sale)),
        ),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
        ("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT".into()),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
        (
            "KAFKA_CONTROLLER_QUORUM_VOTERS",
            format!("1@localhost:{KAFKA_CONTROLLER_PORT}"),
        ),
        ("KAFKA_LOG_DIRS", format!("{DATA_DIR}/logs")),
        // One broker: every internal topic has one replica.
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".into()),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1".into()),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".into()),
        (
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
            "1".into(),
        ),
        ("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1".into()),
        ("KAFKA_MIN_INSYNC_REPLICAS", "1".into()),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into()),
        // booking-app creates its topic with the partitions the sizing asks for.
        ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false".into()),
        ("KAFKA_HEAP_OPTS", "-Xms512m -Xmx512m".into()),
    ];
    let container = Container {
        name: "kafka".into(),
        image: Some(store.image.clone()),
        env: Some(settings.iter().map(|(k, v)| env(k, v.clone())).collect()),
        readiness_probe: Some(tcp_probe("kafka", 5, 3)),
        liveness_probe: Some(tcp_probe("controller", 15, 8)),
        resources: Some(resources(
            store.resources.as_ref(),
            ("500m", "1Gi"),
            ("2", "1536Mi"),
        )),
        // The image's start script writes server.properties under /opt/kafka/config.
        security_context: Some(container_security(false)),
        ..Container::default()
    };
    stateful_set(
        sale,
        store,
        StoreShape {
            name: names::kafka(&sale.name),
            component: Component::Kafka,
            container,
            ports: vec![("kafka", KAFKA_PORT), ("controller", KAFKA_CONTROLLER_PORT)],
            uid: UID,
            data_dir: DATA_DIR,
            extra_volumes: vec![],
            keep_data: false,
        },
    )
}

/// KRaft cluster id: 16 bytes, URL-safe base64 without padding (22 characters). Derived from the
/// FlashSale's uid so it is stable across reconciles and unique per sale.
pub fn cluster_id(uid: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hex: Vec<u8> = uid.bytes().filter(u8::is_ascii_hexdigit).collect();
    let mut bytes = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        bytes[i] = digit(pair[0]) << 4 | pair.get(1).map_or(0, |c| digit(*c));
    }
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = bits << 8 | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sale;
    use crate::reconcile::desired::testing::container;
    use flashsale_contract::Stage;

    #[test]
    fn cluster_id_is_the_uid_in_kafka_base64() {
        // 00000000-0000-0000-0000-000000000000 → 22 'A'; bytes ff.. → '_' and a final 'w'.
        assert_eq!(
            cluster_id("00000000-0000-0000-0000-000000000000"),
            "A".repeat(22)
        );
        assert_eq!(
            cluster_id("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            format!("{}w", "_".repeat(21))
        );
        assert_eq!(cluster_id("5f0c8a2e-8d5b-4b8f-9a57-0c1a9cfd3a11").len(), 22);
    }

    #[test]
    fn kafka_is_a_single_kraft_node_advertising_its_service() {
        let sale = sale("s", Stage::Kafka);
        let (sts, svc) = build(&sale, sale.kafka.in_cluster().unwrap());
        let c = container(&sts);
        let get = |k: &str| {
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.name == k)
                .and_then(|e| e.value.clone())
                .unwrap()
        };
        assert_eq!(get("KAFKA_PROCESS_ROLES"), "broker,controller");
        assert_eq!(
            get("KAFKA_ADVERTISED_LISTENERS"),
            "PLAINTEXT://s-kafka.ns.svc:9092"
        );
        assert_eq!(get("CLUSTER_ID").len(), 22);
        assert_eq!(c.image.as_deref(), Some("apache/kafka:4.1.0"));
        assert_eq!(svc.spec.unwrap().ports.unwrap().len(), 2);
        assert_eq!(bootstrap(&sale), "s-kafka.ns.svc:9092");
    }
}
