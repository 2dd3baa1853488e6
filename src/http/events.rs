//! `GET /v1/events`: the caller's feed, for clients that were not
//! connected when their events happened (and for those that poll).

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

use super::auth::User;
use super::AppState;
use crate::domain::feed::Feed;
use crate::error::ApiError;
use crate::feeds::{frame, Page, MAX_LIMIT};

/// Longest long-poll.
pub const MAX_WAIT_SECS: u64 = 30;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The last `seq` the client has; omitted: from the oldest the feed
    /// holds. Older than the feed holds: 410 `events_expired`.
    after: Option<u64>,
    /// At most this many events (default 100, at most 1000).
    limit: Option<usize>,
    /// With no event after `after`, wait up to this many seconds (at most
    /// 30) for one.
    wait: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    /// Oldest first; each with `seq`, `feed` ("user"), `type`, `at` and
    /// the fields of its type (see the event catalogue in docs/api.md).
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// Pass as `after` next time.
    next_after: u64,
    /// The oldest `seq` the feed holds.
    oldest_seq: u64,
    /// The feed's latest `seq`.
    last_seq: u64,
}

/// The caller's events after `after`, oldest first; long-polls up to
/// `wait` seconds when there are none yet.
#[utoipa::path(
    params(EventsQuery),
    responses(
        (status = 200, body = EventsPage),
        (status = 400, body = crate::error::Problem),
        (status = 401, body = crate::error::Problem),
        (status = 410, body = crate::error::Problem, description = "`events_expired`: events after `after` are no longer held; `oldest_seq` says where the feed starts")
    ),
    security(("bearer" = [])), tag = "events"
)]
#[get("/v1/events")]
pub async fn events(
    state: web::Data<AppState>,
    user: User,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::validation(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::validation(format!(
            "wait must be 0 to {MAX_WAIT_SECS} seconds"
        )));
    }
    let feed = Feed::User(user.0);
    let feeds = &state.feeds;
    let page = if wait == 0 {
        feeds.read(&state.storage, feed, q.after, limit)?
    } else {
        // Registered before the read, so an event that lands between the
        // read and the wait still wakes it.
        let notify = feeds.waiter(feed);
        let page = {
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let page = feeds.read(&state.storage, feed, q.after, limit);
            match page {
                Ok(p) if p.events.is_empty() => {
                    let _ = tokio::time::timeout(Duration::from_secs(wait), woken).await;
                    feeds.read(&state.storage, feed, q.after, limit)
                }
                other => other,
            }
        };
        feeds.release(feed, notify);
        page?
    };
    Ok(HttpResponse::Ok().json(view(feed, q.after, page)))
}

fn view(feed: Feed, after: Option<u64>, page: Page) -> EventsPage {
    let next_after = page
        .events
        .last()
        .map(|(seq, _)| *seq)
        .unwrap_or_else(|| after.unwrap_or(page.head.oldest.saturating_sub(1)));
    EventsPage {
        events: page
            .events
            .iter()
            .filter_map(|(seq, s)| serde_json::from_str(&frame(feed, *seq, s)).ok())
            .collect(),
        next_after,
        oldest_seq: page.head.oldest,
        last_seq: page.head.last,
    }
}
