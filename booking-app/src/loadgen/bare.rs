//! The floor of the HTTP path: an axum endpoint that parses a booking and answers `202 pending`
//! without deciding or queueing anything. `make bench` drives it with the same loadgen to show
//! what stage kafka's acceptance costs above plain axum on the same machine. Never a real service.

use std::net::SocketAddr;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use uuid::Uuid;

use crate::domain::{Booking, BookingRequest, BookingStatus, Event, NewEvent};

#[derive(Debug, Clone, clap::Args)]
pub struct BareServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
}

/// `POST /events`, `POST /events/{id}/bookings` and `GET /readyz`, answered without any store.
pub fn router() -> Router {
    Router::new()
        .route("/events", post(create_event))
        .route("/events/{id}/bookings", post(book))
        .route("/readyz", get(|| async { "ok" }))
}

/// Serves until ctrl-c or SIGTERM.
pub async fn serve(args: BareServeArgs) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, "bare axum endpoint serving (benchmark floor, books nothing)");
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn create_event(Json(new): Json<NewEvent>) -> (StatusCode, Json<Event>) {
    let event = Event {
        id: Uuid::new_v4(),
        name: new.name,
        tickets: new.tickets,
        remaining: new.tickets,
        per_user_limit: new.per_user_limit,
        created_at: Utc::now(),
    };
    (StatusCode::CREATED, Json(event))
}

/// The same answer stage kafka's acceptance gives (a pending `Booking` and its `Location`), so
/// both do comparable parsing and serializing; only the deciding and queueing are missing.
async fn book(
    Path(event_id): Path<Uuid>,
    Json(request): Json<BookingRequest>,
) -> (StatusCode, [(header::HeaderName, String); 1], Json<Booking>) {
    let booking = Booking {
        id: Uuid::new_v4(),
        event_id,
        user_id: request.user_id,
        quantity: request.quantity,
        status: BookingStatus::Pending,
        reason: None,
        position: None,
        created_at: Utc::now(),
    };
    let location = format!("/bookings/{}", booking.id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(booking),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn answers_202_with_a_pending_booking_the_loadgen_can_read() {
        let request = Request::post(format!("/events/{}/bookings", Uuid::new_v4()))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"user_id":"user-1","quantity":2}"#))
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(matches!(
            super::super::client::classify(202, &body),
            super::super::client::Answer::Pending(_)
        ));
    }

    #[tokio::test]
    async fn refuses_a_malformed_booking_like_axum_does() {
        let request = Request::post(format!("/events/{}/bookings", Uuid::new_v4()))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"user":"x"}"#))
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
