//! Stage kafka with its broker gone: requests are answered 503 (never 202, never a hang), and
//! once the broker is back the same pod and worker recover by themselves and every acknowledged
//! request is decided. It stops the shared broker, so it is `#[ignore]`d in the ordinary run and
//! run alone by `make test-faults` (part of `make test`), after every other test binary.

mod common;
mod kafka_support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::StatusCode;
use uuid::Uuid;

use kafka_support::{Worker, eventually, id_of, kafka_config, start_pod};

/// `hack/services.sh ACTION kafka`, from the repository root.
fn services(action: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(root.join("hack/services.sh"))
        .args([action, "kafka"])
        .current_dir(&root)
        .status()
        .expect("run hack/services.sh");
    assert!(
        status.success(),
        "hack/services.sh {action} kafka failed: {status}"
    );
}

/// Deletes the `test-…` topics earlier runs left on the shared broker (every test makes its own,
/// with 3 partitions, and never deletes it). A broker killed with -9 loads every partition's log
/// before it serves again; on a machine that had run the suite a few dozen times, thousands of
/// them made that recovery outlast this test's wait. This test runs alone (`make test-faults`,
/// after every other test binary), so no other test is using them.
async fn delete_leftover_test_topics(brokers: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("kafka admin client");
    let metadata = admin
        .inner()
        .fetch_metadata(None, std::time::Duration::from_secs(30))
        .expect("kafka metadata");
    let leftovers: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| name.starts_with("test-"))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(60)));
    for chunk in leftovers.chunks(200) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for result in admin
            .delete_topics(&names, &options)
            .await
            .expect("delete the leftover test topics")
        {
            // A topic another cleanup deleted first is as good as deleted.
            if let Err((topic, code)) = result {
                eprintln!("leftover topic {topic} not deleted: {code}");
            }
        }
    }
    eprintln!("deleted {} leftover test topics", leftovers.len());
}

/// Puts the broker back even when an assertion fails halfway, so later runs find it up.
struct BrokerGuard {
    stopped: bool,
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if self.stopped {
            services("start");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "stops the shared Kafka broker: run alone by `make test-faults`"]
async fn broker_down_answers_503_and_recovery_loses_no_acknowledged_request() {
    common::init_logs();
    let mut config = kafka_config("broker");
    delete_leftover_test_topics(
        config
            .kafka
            .kafka_brokers
            .as_deref()
            .expect("KAFKA_BROKERS"),
    )
    .await;
    config.kafka.kafka_produce_timeout_ms = 2_000;
    let (config, pool, pod) = start_pod(config).await;
    let worker = Worker::start(&config, pool.clone());
    let event = pod.create_event(10_000, None).await;
    let mut acknowledged = BTreeSet::new();

    for round in ["stop", "kill9"] {
        for i in 0..20 {
            let (status, body) = pod
                .book(event, &format!("{round}-before-{i}"), 1, None)
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            acknowledged.insert(id_of(&body));
        }

        let mut guard = BrokerGuard { stopped: true };
        services(round);
        // Bounded: the producer gives up after KAFKA_PRODUCE_TIMEOUT_MS; the client's own
        // timeout (EVENTUAL) turns a hang into a failure.
        for i in 0..3 {
            let asked = std::time::Instant::now();
            let (status, body) = pod
                .book(event, &format!("{round}-outage-{i}"), 1, None)
                .await;
            eprintln!(
                "{round}: broker down, answered {status} after {:?}",
                asked.elapsed()
            );
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "broker down must be 503: {body}"
            );
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
        }
        // Acknowledged bookings stay readable while the broker is away.
        let known = *acknowledged.iter().next().unwrap();
        let (status, body) = pod.booking(known).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        services("start");
        guard.stopped = false;
        let restarted = std::time::Instant::now();
        // The same pod recovers by itself: no restart, no reconnect by hand.
        let id = eventually("the pod acknowledges requests again", || {
            let pod = &pod;
            async move {
                let (status, body) = pod.book(event, &format!("{round}-after"), 1, None).await;
                match status {
                    StatusCode::ACCEPTED => Some(id_of(&body)),
                    StatusCode::SERVICE_UNAVAILABLE => None,
                    other => panic!("unexpected {other}: {body}"),
                }
            }
        })
        .await;
        eprintln!(
            "{round}: broker back, first 202 after {:?}",
            restarted.elapsed()
        );
        acknowledged.insert(id);
    }

    // Every acknowledged request is decided, and none of the refused ones was stored.
    let (p, n) = (&pool, acknowledged.len() as i64);
    eventually("the worker decides every acknowledged request", || async move {
        let decided: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings WHERE event_id = $1 AND user_id NOT LIKE '%-outage-%'")
            .bind(event)
            .fetch_one(p)
            .await
            .unwrap();
        (decided == n).then_some(())
    })
    .await;
    let stored: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM bookings WHERE event_id = $1")
            .bind(event)
            .fetch_all(&pool)
            .await
            .unwrap();
    let stored_ids: BTreeSet<Uuid> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        stored_ids, acknowledged,
        "Postgres must hold exactly the acknowledged requests"
    );
    assert!(
        stored.iter().all(|(_, status)| status == "confirmed"),
        "{stored:?}"
    );
    worker.stop().await;
    pod.stop().await;
}
