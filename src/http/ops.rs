//! Liveness, metrics and the OpenAPI document.

use actix_web::{get, HttpResponse};
use utoipa::OpenApi;

/// Liveness: 200 once the server accepts requests.
#[utoipa::path(responses((status = 200, description = "ok")), tag = "ops")]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(responses((status = 200, description = "Prometheus text")), tag = "ops")]
#[get("/metrics")]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

/// This document.
#[utoipa::path(responses((status = 200, description = "OpenAPI 3.1 JSON")), tag = "ops")]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}
