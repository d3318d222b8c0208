//! Leader election against the real API server of `hack/control-plane.sh up` (issue 14): two
//! `flashsale-operator run` processes share a Lease, one leads and reconciles, the other stands
//! by; `kill -9` of the leader hands over within seconds.

mod common;

use common::*;
use flashsale_contract::Stage;
use flashsale_operator::crd::FlashSale;
use kube::Client;
use kube::api::Api;

/// A `flashsale-operator run` process of this test (the binary, as a pod runs it), with short
/// lease durations; killed when dropped.
struct OperatorProcess {
    child: std::process::Child,
    identity: String,
    log: std::path::PathBuf,
    port: u16,
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OperatorProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its `flashsale_operator_leader` gauge, read from its /metrics.
    async fn leader_gauge(&self) -> Option<i64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("flashsale_operator_leader "))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// A port for an operator's HTTP server, chosen by the kernel (an ephemeral port, not a fixed
/// range: the tests of this file run at once, and a fixed range's first free port was picked by
/// two of them, or taken by another process of the machine).
fn free_port(skip: &[u16]) -> u16 {
    loop {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port on 127.0.0.1")
            .port();
        if !skip.contains(&port) {
            return port;
        }
    }
}

const TEST_LEASE: &str = "flashsale-operator-test";

fn spawn_operator(identity: &str, ns: &str, port: u16) -> OperatorProcess {
    spawn_operator_with_lease(identity, ns, port, 3, 1)
}

fn spawn_operator_with_lease(
    identity: &str,
    ns: &str,
    port: u16,
    duration_seconds: u64,
    grace_seconds: u64,
) -> OperatorProcess {
    let log = std::env::temp_dir().join(format!("{ns}-{identity}.log"));
    let file = std::fs::File::create(&log).expect("operator log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_flashsale-operator"))
        .arg("run")
        .env("KUBECONFIG", kubeconfig_path())
        .env("WATCH_NAMESPACE", ns)
        .env("LEASE_NAME", TEST_LEASE)
        .env("LEASE_NAMESPACE", ns)
        .env("LEASE_DURATION_SECONDS", duration_seconds.to_string())
        .env("LEASE_GRACE_SECONDS", grace_seconds.to_string())
        .env("POD_NAME", identity)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("BOOKING_APP_IMAGE", "flashsale/booking-app:test")
        .env("LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,flashsale_operator=debug")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start flashsale-operator");
    OperatorProcess {
        child,
        identity: identity.into(),
        log,
        port,
    }
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns);
    leases
        .get_opt(TEST_LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn reconciled_generation(sales: &Api<FlashSale>, generation: i64) -> FlashSale {
    wait_for(sales, "le", "reconciled at the current generation", |fs| {
        fs.metadata.generation == Some(generation)
            && fs.status.as_ref().and_then(|s| s.observed_generation) == Some(generation)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_one_leads_and_a_kill_9_hands_over_within_seconds() {
    let (client, ns) = setup("leader").await;
    let port_a = free_port(&[]);
    let a = spawn_operator("op-a", &ns.name, port_a);
    wait_until("op-a leading", || async {
        (lease_holder(&client, &ns.name).await.as_deref() == Some("op-a")).then_some(())
    })
    .await;
    let b = spawn_operator("op-b", &ns.name, free_port(&[port_a]));
    wait_until("op-b waiting to lead", || async {
        b.log().contains("waiting to lead").then_some(())
    })
    .await;

    let fs = apply_small_sale(&client, &ns.name, "le", Stage::Postgres).await;
    let sales: Api<FlashSale> = Api::namespaced(client.clone(), &ns.name);
    reconciled_generation(&sales, fs.metadata.generation.unwrap()).await;
    assert_eq!(
        lease_holder(&client, &ns.name).await.as_deref(),
        Some("op-a")
    );
    assert_eq!(a.leader_gauge().await, Some(1), "op-a's leader gauge");
    assert_eq!(b.leader_gauge().await, Some(0), "op-b's leader gauge");
    assert!(a.log().contains("reconciled"), "op-a reconciles");
    assert!(
        !b.log().contains("reconciled") && !b.log().contains("leading: starting"),
        "the standby reconciled: {}",
        b.log()
    );

    // kill -9: no chance to release the Lease; the standby waits for it to expire.
    let a_pid = a.child.id();
    let killed = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &a_pid.to_string()])
        .status()
        .expect("kill -9");
    assert!(status.success(), "kill -9 {a_pid}");
    drop(a);
    let handed_over = wait_until("op-b leading after op-a was killed", || async {
        (lease_holder(&client, &ns.name).await.as_deref() == Some("op-b")).then(|| killed.elapsed())
    })
    .await;
    eprintln!(
        "op-a (pid {a_pid}) killed with SIGKILL; op-b holds the Lease {:.1} s later (lease 3 s, grace 1 s)",
        handed_over.as_secs_f64()
    );
    assert!(
        handed_over < std::time::Duration::from_secs(10),
        "hand-over took {handed_over:?}"
    );

    // The new leader reconciles: a spec change is picked up and its status written.
    patch_spec(
        &client,
        &ns.name,
        "le",
        serde_json::json!({"targetRps": 300}),
    )
    .await;
    let generation = sales.get("le").await.unwrap().metadata.generation.unwrap();
    reconciled_generation(&sales, generation).await;
    let reconciled_by_b = killed.elapsed();
    eprintln!(
        "generation {generation} reconciled by op-b {:.1} s after the kill",
        reconciled_by_b.as_secs_f64()
    );
    assert!(b.log().contains("leading: starting the controller"));
    assert!(b.log().contains("reconciled"));
    wait_until("op-b's leader gauge at 1", || async {
        (b.leader_gauge().await == Some(1)).then_some(())
    })
    .await;
    assert_eq!(b.identity, "op-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_by_sigterm_releases_the_lease_and_the_standby_takes_it_at_once() {
    let (client, ns) = setup("handover").await;
    // A 30 s Lease: a standby that waited for it to expire would take 30 s.
    let port_a = free_port(&[]);
    let a = spawn_operator_with_lease("op-a", &ns.name, port_a, 30, 5);
    wait_until("op-a leading", || async {
        (lease_holder(&client, &ns.name).await.as_deref() == Some("op-a")).then_some(())
    })
    .await;
    let b = spawn_operator_with_lease("op-b", &ns.name, free_port(&[port_a]), 30, 5);
    wait_until("op-b waiting to lead", || async {
        b.log().contains("waiting to lead").then_some(())
    })
    .await;

    let stopped = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let handed_over = wait_until("op-b leading after op-a stopped", || async {
        (lease_holder(&client, &ns.name).await.as_deref() == Some("op-b"))
            .then(|| stopped.elapsed())
    })
    .await;
    eprintln!(
        "op-a stopped with SIGTERM; op-b holds the Lease {:.1} s later (lease 30 s)",
        handed_over.as_secs_f64()
    );
    assert!(a.log().contains("lease released"), "{}", a.log());
    assert!(
        handed_over < std::time::Duration::from_secs(8),
        "hand-over took {handed_over:?}: the standby waited for the Lease to expire"
    );
}
