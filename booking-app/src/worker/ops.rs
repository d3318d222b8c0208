//! The operations endpoints of a standalone `booking-app worker` process: `/healthz` for its
//! probes and `/metrics` for its series (on METRICS_LISTEN_ADDR when set, for `serve` too) (stage kafka adds the consumer group's lag, which inside
//! `serve` the stage itself exports).

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::Stage;
use crate::metrics::Metrics;
use crate::stage::kafka::client::KafkaSettings;
use crate::stage::kafka::metrics::GroupMetrics;
use crate::stage::kafka::tail::monitor_lag;

/// `/healthz` and `/metrics` over `metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    health_routes()
        .route("/metrics", get(encode))
        .with_state(metrics)
}

fn health_router(metrics: Arc<Metrics>) -> Router {
    health_routes().with_state(metrics)
}

fn health_routes() -> Router<Arc<Metrics>> {
    Router::new().route(
        "/healthz",
        get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
    )
}

/// Serves `/healthz` and `/metrics` on METRICS_LISTEN_ADDR until `shutdown`, when it is set.
pub async fn spawn_metrics_listener(
    config: &Config,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(addr) = config.http.metrics_listen_addr else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding METRICS_LISTEN_ADDR {addr}"))?;
    tokio::spawn(crate::server::serve(
        listener,
        router(metrics),
        shutdown.clone().cancelled_owned(),
    ));
    Ok(())
}

async fn encode(State(metrics): State<Arc<Metrics>>) -> axum::response::Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Binds `config.listen_addr` and serves the router until `shutdown`; for stage kafka also keeps
/// the group's lag gauges current.
pub async fn spawn(
    config: &Config,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.stage == Stage::Kafka {
        let settings = KafkaSettings::from_config(&config.kafka)?;
        let reader = Arc::new(settings.offsets_reader()?);
        let partitions = settings.ensure_topics().await?;
        let group = GroupMetrics::register(&metrics);
        tokio::spawn(monitor_lag(
            settings,
            reader,
            partitions,
            group,
            shutdown.child_token(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    // /metrics on LISTEN_ADDR only when it has no port of its own.
    let ops = if config.http.metrics_listen_addr.is_some() {
        health_router(metrics.clone())
    } else {
        router(metrics.clone())
    };
    spawn_metrics_listener(config, metrics, &shutdown).await?;
    tokio::spawn(crate::server::serve(
        listener,
        ops,
        shutdown.cancelled_owned(),
    ));
    Ok(())
}
