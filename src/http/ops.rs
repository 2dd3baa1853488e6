//! Liveness and metrics.

use actix_web::{get, web, HttpRequest, HttpResponse};

use crate::error::ApiError;
use crate::http::{auth, AppState};

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
        None => {
            let mut body = String::from("ok");
            if let Some(node) = &state.node {
                body.push_str(&format!(
                    "\nnode {}\napplied {}\nlive {}",
                    node.id,
                    state.storage.position(),
                    node.live().join(",")
                ));
            }
            HttpResponse::Ok().content_type("text/plain").body(body)
        }
        Some(why) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("writes refused: {why}")),
    }
}

/// Prometheus metrics in the text exposition format: the admin token, unless
/// `[metrics] public = true`.
#[utoipa::path(
    responses(
        (status = 200, description = "Prometheus text"),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)
    ),
    security(("bearer" = [])), tag = "ops"
)]
#[get("/metrics")]
pub async fn metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !state.config.metrics.public {
        auth::require_admin(&state, &req)?;
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render()))
}
