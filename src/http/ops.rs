//! Liveness, metrics, and online backups.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::backup::BackupError;
use crate::error::{ApiError, Problem};
use crate::http::auth::Admin;
use crate::http::{auth, AppState};

/// Liveness: 200 once the server accepts requests; 503 with the reason
/// while storage refuses writes (a full disk, an I/O error) or the outbox
/// consumer has failed for 30 s.
#[utoipa::path(
    responses(
        (status = 200, description = "ok"),
        (status = 503, description = "writes are refused; the body says why")
    ),
    tag = "ops"
)]
#[get("/healthz")]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let refusal = state
        .storage
        .write_refusal()
        .map(|why| format!("writes refused: {why}"))
        .or_else(|| state.consumer.stuck());
    match refusal {
        None => {
            let mut body = String::from("ok");
            if let Some(addr) = state.embedded_provider {
                body.push_str(&format!(
                    "\nprovider embedded_simulator at http://{addr} (no real money moves)"
                ));
            }
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
            .body(why),
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// An absolute path on the server's host, outside the data dir: a new
    /// directory (created 0700) or an empty one.
    dir: String,
}

/// A finished backup.
#[derive(Serialize, ToSchema)]
pub struct BackupDone {
    dir: String,
    /// The journal position the backup is consistent at: every write
    /// acknowledged before the backup was asked for is in it, and none
    /// after this position.
    position: u64,
    /// The checkpoint within it (a restored server replays the journal after it).
    checkpoint: u64,
    files: usize,
    bytes: u64,
    /// Unix seconds when it finished.
    created_at: i64,
}

/// Back up the running server into `dir` on its host (admin token only):
/// a checkpoint and the journal after it, and the data dir's secrets,
/// without stopping writes. One at a time. Restore it with `qrgate restore`.
#[utoipa::path(
    request_body = BackupRequest,
    responses(
        (status = 200, body = BackupDone),
        (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "`backup_target_not_empty`, `backup_running`, or `backup_not_supported` (a cluster node)", body = Problem),
        (status = 500, description = "`backup_failed`: an I/O error; the target is left empty", body = Problem)
    ),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/backup")]
pub async fn backup(
    state: web::Data<AppState>,
    _: Admin,
    body: web::Json<BackupRequest>,
) -> Result<HttpResponse, ApiError> {
    let dir = std::path::PathBuf::from(body.dir.trim());
    let st = state.clone();
    let target = dir.clone();
    let m = web::block(move || crate::backup::run(&st.storage, &st.config.data_dir, &target))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(|e| match e {
            BackupError::Running => ApiError::BackupRunning,
            BackupError::TargetNotEmpty(_) => ApiError::BackupTargetNotEmpty(e.to_string()),
            BackupError::BadTarget(why) => ApiError::validation(why),
            BackupError::Unsupported(why) => ApiError::BackupNotSupported(why),
            BackupError::Failed(why) => ApiError::BackupFailed(why),
        })?;
    Ok(HttpResponse::Ok().json(BackupDone {
        dir: dir.display().to_string(),
        position: m.position,
        checkpoint: m.checkpoint,
        files: m.files.len(),
        bytes: m.bytes(),
        created_at: m.created_at,
    }))
}
