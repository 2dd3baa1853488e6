//! Liveness, metrics and the OpenAPI document.

use actix_web::{get, web, HttpResponse};
use utoipa::OpenApi;

use crate::http::AppState;

/// Liveness: 200 once the server accepts requests; 503 with the reason
/// while storage refuses writes (a full disk, an I/O error).
#[utoipa::path(
    responses(
        (status = 200, description = "ok"),
        (status = 503, description = "writes are refused; the body says why")
    ),
    tag = "ops"
)]
#[get("/healthz")]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.storage.write_refusal() {
        None => HttpResponse::Ok().content_type("text/plain").body("ok"),
        Some(why) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("writes refused: {why}")),
    }
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
