//! A spike well past capacity, for every stage: the `booking-app` binary as a pod runs it (worker
//! inside), with a small in-flight limit, takes an open-loop burst far above what that limit
//! admits. Only 201/202/409 and `503 overloaded` (with `Retry-After`) come back, every 2xx
//! survives (loadgen's invariant check follows each one into Postgres), nothing is oversold, and
//! the process's peak memory stays bounded. Correctness only: no speed is asserted.

mod common;

use common::process::{free_port, wait_ready};

use std::process::Stdio;

use booking_app::domain::Stage;
use booking_app::loadgen::{LoadgenArgs, Session};
use clap::Parser;
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_booking-app");
/// The peak resident memory a spike may cost the server (an unbounded queue would pass it).
const MAX_PEAK_RSS_KIB: u64 = 256 * 1024;
/// Places inside the stage: a few, so the burst is far past what is admitted.
const IN_FLIGHT: &str = "8";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

fn serve(stage: Stage, port: u16) -> Child {
    let unique = format!("spike-{}", uuid::Uuid::new_v4().simple());
    Command::new(BINARY)
        .arg("serve")
        .env("STAGE", stage.as_str())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env("DB_POOL_SIZE", "8")
        .env("MAX_IN_FLIGHT", IN_FLIGHT)
        .env("ADMISSION_WAIT_MS", "5")
        .env("REDIS_KEY_PREFIX", &unique)
        .env("KAFKA_TOPIC", &unique)
        .env("KAFKA_CONSUMER_GROUP", format!("{unique}-workers"))
        .env("KAFKA_PARTITIONS", "1")
        .envs(common::auth::env())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start booking-app")
}

/// Peak resident set of a process, from /proc (KiB).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

async fn spike(stage: Stage) {
    common::require_services(stage);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve(stage, port);
    wait_ready(&mut child, &base).await;

    // Open loop at 3,000/s for 2 s against 8 places: the burst is shed, the sale sells out
    // (300 tickets; 2,000 users at most 2 each), and the invariant check follows every answer.
    let auth = common::auth::loadgen_flags();
    let args = Cli::parse_from(auth.iter().map(String::as_str).fold(
        vec![
            "loadgen",
            "--url",
            &base,
            "--json",
            "--no-progress",
            "--warmup",
            "0s",
            "--rate",
            "3000",
            "--duration",
            "2s",
            "--concurrency",
            "1024",
            "--tickets",
            "300",
            "--per-user-limit",
            "2",
            "--users",
            "2000",
            "--max-quantity",
            "2",
            "--request-timeout",
            "20s",
            "--pending-timeout",
            "60s",
        ],
        |mut all, flag| {
            all.push(flag);
            all
        },
    ))
    .args;
    let run = Session::new(args)
        .unwrap()
        .sale()
        .await
        .expect("the sale runs");
    let answers = &run.report.answers;
    let allowed = [
        "201 confirmed",
        "202 pending",
        "409 sold_out",
        "409 per_user_limit",
        "503 shed (Retry-After)",
    ];
    for (label, n) in answers {
        assert!(
            allowed.contains(&label.as_str()),
            "stage {stage}: {n} answers '{label}' (all: {answers:?})"
        );
    }
    assert!(
        answers.get("503 shed (Retry-After)").copied().unwrap_or(0) > 0,
        "stage {stage}: nothing was shed: {answers:?}"
    );
    let decided = ["201 confirmed", "202 pending"]
        .iter()
        .filter_map(|l| answers.get(*l))
        .sum::<u64>();
    assert!(
        decided > 0,
        "stage {stage}: nothing was admitted: {answers:?}"
    );
    let invariants = run.invariants.as_ref().expect("invariants are checked");
    assert!(invariants.ok, "stage {stage}: {invariants}");
    assert!(
        invariants.observed.confirmed_quantity <= 300,
        "stage {stage}: oversold: {invariants}"
    );

    let peak = peak_rss_kib(child.id().expect("child pid"));
    assert!(
        peak < MAX_PEAK_RSS_KIB,
        "stage {stage}: peak RSS {peak} KiB"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "stage {stage}: the server died during the spike"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spike_past_capacity_at_stage_postgres_is_shed_and_loses_nothing() {
    spike(Stage::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spike_past_capacity_at_stage_redis_is_shed_and_loses_nothing() {
    spike(Stage::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spike_past_capacity_at_stage_kafka_is_shed_and_loses_nothing() {
    spike(Stage::Kafka).await;
}
