//! Extractors whose rejections are `ApiError`, so a malformed body or id gets the same
//! `{"error":{...}}` shape as every other error: malformed JSON 400, wrong content type 415,
//! wrong types or unknown fields 422, too large 413, a path id that is not a UUID 400.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// `axum::Json` with `ApiError` rejections.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// `axum::extract::Path` with `ApiError` rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
