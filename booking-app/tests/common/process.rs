//! The `booking-app` binary as its own process: a free loopback port, and waiting for `/readyz`
//! while failing fast if the process died.

use std::time::{Duration, Instant};

use tokio::process::Child;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client for a `booking-app` process, as the harness's admin (`auth::DEFAULT_USER`), no
/// proxy, no timeout.
pub fn admin_client() -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(super::auth::default_headers())
        .no_proxy()
        .build()
        .unwrap()
}

/// Sends `request` and reads its answer as JSON; panics if either fails.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Waits until `base`/readyz answers 2xx; panics if the child exits first or after `EVENTUAL`.
pub async fn wait_ready(child: &mut Child, base: &str) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("booking-app exited before it was ready: {status}");
        }
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(started.elapsed() < super::EVENTUAL, "booking-app not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
