//! Request bodies bounded by `MAX_BODY_BYTES`, refused with a 413 the client can read.
//!
//! Answering before a large body is read and then closing the connection makes the kernel reset
//! it while the client is still sending, and the client sees `connection reset` instead of the
//! answer. So the rest of an oversized body is read and dropped (up to `DRAIN_MAX_BYTES`, within
//! the request timeout) before the 413 goes out; past that bound the 413 says `Connection: close`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::error::ApiError;

/// Most bytes of an oversized body read and dropped so its 413 reaches the client.
pub const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// What the middleware needs: the bound and how long a body may take to arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Reads the body (at most `max_bytes`) before the handler runs, so every handler sees a body
/// that fits, or the refusal to send instead: an oversized one is answered 413 after it has been
/// drained (called by the API's edge, `super::edge`).
pub async fn read(limit: BodyLimit, request: Request) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = limit.max_bytes as u64;
    let read = async {
        if declared.is_some_and(|n| n > max) {
            return Err(drain(body, 0).await);
        }
        read_bounded(body, limit.max_bytes).await
    };
    Err(match tokio::time::timeout(limit.timeout, read).await {
        Ok(Ok(bytes)) => return Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Err(Drained::Whole)) => too_large(limit.max_bytes, false),
        Ok(Err(Drained::Partly)) => too_large(limit.max_bytes, true),
        Ok(Err(Drained::Broken)) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body could not be read",
        )
        .into_response(),
        Err(_) => {
            let mut answer = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
            .into_response();
            close(&mut answer);
            answer
        }
    })
}

/// How an oversized body ended.
enum Drained {
    /// Read to its end: the connection can carry on.
    Whole,
    /// Longer than `DRAIN_MAX_BYTES`: answered without reading the rest.
    Partly,
    /// The client's body failed mid-way.
    Broken,
}

async fn read_bounded(mut body: Body, max: usize) -> Result<Bytes, Drained> {
    // The usual body is one frame: kept as it came, copied only once a second one arrives.
    let mut single: Option<Bytes> = None;
    let mut buffer = Vec::new();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Drained::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > max {
            return Err(drain(body, len as u64).await);
        }
        match single.take() {
            None if buffer.is_empty() => single = Some(data),
            previous => {
                if let Some(previous) = previous {
                    buffer.extend_from_slice(&previous);
                }
                buffer.extend_from_slice(&data);
            }
        }
    }
    Ok(single.unwrap_or_else(|| Bytes::from(buffer)))
}

async fn drain(mut body: Body, mut seen: u64) -> Drained {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Drained::Broken;
        };
        if let Some(data) = frame.data_ref() {
            seen += data.len() as u64;
        }
        if seen > DRAIN_MAX_BYTES {
            return Drained::Partly;
        }
    }
    Drained::Whole
}

fn too_large(max: usize, closing: bool) -> Response {
    tracing::debug!(max, closing, "request body too large");
    let mut answer = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {max} bytes"),
    )
    .into_response();
    if closing {
        close(&mut answer);
    }
    answer
}

fn close(answer: &mut Response) {
    answer
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}
