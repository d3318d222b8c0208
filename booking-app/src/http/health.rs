//! Liveness and readiness: `/healthz` says the process answers, `/readyz` that the stage's
//! stores answer too (a pod that cannot reach them is taken out of its Service).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::domain::Stage;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: String,
    pub stage: Stage,
}

/// `GET /healthz`
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = HealthStatus)))]
pub async fn healthz(State(state): State<AppState>) -> axum::Json<HealthStatus> {
    axum::Json(HealthStatus {
        status: "ok".into(),
        stage: state.inventory.stage(),
    })
}

/// `GET /readyz`
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every store of the stage answers", body = HealthStatus),
        (status = 503, description = "A store does not answer", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<HealthStatus>, ApiError> {
    if let Err(err) = state.inventory.ready().await {
        tracing::warn!(error = %err, "not ready");
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a store of this stage does not answer",
        ));
    }
    Ok(axum::Json(HealthStatus {
        status: "ready".into(),
        stage: state.inventory.stage(),
    }))
}
