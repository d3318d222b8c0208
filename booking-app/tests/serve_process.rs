//! The `booking-app` binary as a pod runs it: configured from the environment, migrating on
//! start, and on SIGTERM finishing the request in flight before exiting 0.

mod common;

use common::process::{admin_client, free_port, json_of, wait_ready};

use std::process::Stdio;
use std::time::{Duration, Instant};

use booking_app::domain::Stage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_booking-app");

fn serve(port: u16) -> Child {
    serve_with(port, &[])
}

fn serve_with(port: u16, extra_env: &[(&str, String)]) -> Child {
    Command::new(BINARY)
        .arg("serve")
        .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("STAGE", "postgres")
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("DB_POOL_SIZE", "4")
        .envs(common::auth::env())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start booking-app")
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    common::require_services(Stage::Postgres);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve(port);
    wait_ready(&mut child, &base).await;
    let client = admin_client();
    let event = json_of(
        client
            .post(format!("{base}/events"))
            .json(&serde_json::json!({"name": "shutdown", "tickets": 5})),
    )
    .await;
    let event_id = event["id"].as_str().unwrap();

    // A booking in flight: headers sent, and `100 Continue` proves the handler is reading the
    // body, which the client holds back until shutdown has begun.
    let body = r#"{"user_id":"alice","quantity":2}"#;
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /events/{event_id}/bookings HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Authorization: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        common::auth::bearer("alice", false),
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut conn, b"\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");

    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    // Shutdown has begun once new connections are refused.
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(
            started.elapsed() < common::EVENTUAL,
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    conn.write_all(body.as_bytes()).await.unwrap();
    let response = read_until(&mut conn, b"}").await;
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight request not finished: {response}"
    );
    assert!(response.contains(r#""status":"confirmed""#), "{response}");

    let status = tokio::time::timeout(common::EVENTUAL, child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// With METRICS_LISTEN_ADDR, `/metrics` has a port of its own (a NetworkPolicy can keep it to
/// the scrapers) and is gone from the API port.
#[tokio::test]
async fn metrics_listen_addr_moves_metrics_off_the_api_port() {
    common::require_services(Stage::Postgres);
    let (port, metrics_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve_with(
        port,
        &[("METRICS_LISTEN_ADDR", format!("127.0.0.1:{metrics_port}"))],
    );
    wait_ready(&mut child, &base).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let on_api = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), 404);
    let body: serde_json::Value = on_api.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&metrics_port.to_string()),
        "{body}"
    );
    let metrics = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("booking_http_requests")
    );
    let health = client
        .get(format!("http://127.0.0.1:{metrics_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn migrate_applies_the_schema_and_bad_settings_fail_loudly() {
    common::require_services(Stage::Postgres);
    let migrate = Command::new(BINARY).arg("migrate").output().await.unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let unreachable = Command::new(BINARY)
        .arg("serve")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")
        .env("DB_ACQUIRE_TIMEOUT_MS", "2000")
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .envs(common::auth::env())
        .output()
        .await
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("connecting to Postgres"));

    // No way to tell users apart: refused before anything else, naming the settings.
    let no_auth = Command::new(BINARY)
        .arg("serve")
        .env_remove("AUTH_HS256_SECRET_FILE")
        .env_remove("AUTH_JWKS_FILE")
        .env_remove("AUTH_JWKS_URL")
        .env_remove("AUTH_DISABLED")
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .await
        .unwrap();
    assert!(!no_auth.status.success());
    let stderr = String::from_utf8_lossy(&no_auth.stderr);
    assert!(
        stderr.contains("AUTH_HS256_SECRET_FILE") && stderr.contains("AUTH_DISABLED=true"),
        "{stderr}"
    );

    let bad_stage = Command::new(BINARY)
        .args(["serve", "--stage", "mysql"])
        .output()
        .await
        .unwrap();
    assert!(!bad_stage.status.success());
    assert!(String::from_utf8_lossy(&bad_stage.stderr).contains("possible values"));
}

async fn read_until(conn: &mut TcpStream, end: &[u8]) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    while !buf.windows(end.len()).any(|w| w == end) {
        let n = tokio::time::timeout(common::EVENTUAL, conn.read(&mut chunk))
            .await
            .expect("read")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        assert!(started.elapsed() < common::EVENTUAL);
    }
    String::from_utf8_lossy(&buf).into_owned()
}
