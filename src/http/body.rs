//! The raw body of routes that read it themselves (an optional JSON body,
//! a provider's signed notification): at most `limits.max_body_bytes`, like
//! every JSON body; an uploaded image at most `limits.max_image_bytes`.
//! Refused beyond with 413 `payload_too_large`.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;

use super::AppState;
use crate::error::ApiError;

/// A request body read whole, within the limit.
pub struct RawBody(pub Bytes);

impl std::ops::Deref for RawBody {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.0
    }
}

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(16 * 1024, |s| s.config.limits.max_body_bytes);
        let read = read_limited(req, payload, limit);
        Box::pin(async move { read.await.map(RawBody) })
    }
}

/// An uploaded image read whole: at most `limits.max_image_bytes`.
pub struct ImageBody(pub Bytes);

impl FromRequest for ImageBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(1 << 20, |s| s.config.limits.max_image_bytes);
        let read = read_limited(req, payload, limit);
        Box::pin(async move { read.await.map(ImageBody) })
    }
}

/// Read a body of at most `limit` bytes; refused before reading when
/// `Content-Length` says more.
fn read_limited(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> impl Future<Output = Result<Bytes, ApiError>> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut payload = payload.take();
    async move {
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::InvalidJson(format!("the request body could not be read: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}
