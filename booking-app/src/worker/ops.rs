//! The operations endpoints of a standalone `booking-app worker` process: `/healthz` for its
//! probes and `/metrics` for its series (stage kafka adds the consumer group's lag, which inside
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
use crate::http::Metrics;
use crate::stage::kafka::client::KafkaSettings;
use crate::stage::kafka::metrics::GroupMetrics;
use crate::stage::kafka::tail::monitor_lag;

/// `/healthz` and `/metrics` over `metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(encode))
        .with_state(metrics)
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
    tokio::spawn(crate::server::serve(
        listener,
        router(metrics),
        shutdown.cancelled_owned(),
    ));
    Ok(())
}
