//! Notification delivery: hold, out-of-order batches, duplicates, and the
//! WeChat redelivery schedule scaled by the time factor.

use std::sync::Arc;
use std::time::Duration;

use super::state::Notice;
use super::{Sim, NOTIFY_SCHEDULE_SECS};

/// Deadline of one notification POST.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands a new notification to delivery: held, batched, or sent now,
/// depending on the faults. Must run on an actix/tokio runtime.
pub fn dispatch(sim: &Arc<Sim>, notice: Notice) {
    let mut st = sim.lock();
    if st.faults.hold_notifications {
        st.held.push(notice);
        return;
    }
    if !st.faults.out_of_order {
        drop(st);
        spawn_sequence(sim, vec![notice]);
        return;
    }
    st.batch.push(notice);
    if st.batch_armed {
        return;
    }
    st.batch_armed = true;
    let window = match st.faults.batch_window_ms {
        Some(ms) => Duration::from_millis(ms),
        None => sim.scaled(Duration::from_secs(NOTIFY_SCHEDULE_SECS[0])),
    };
    drop(st);
    let sim = Arc::clone(sim);
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(window).await;
        flush_batch(&sim);
    });
}

/// Sends the collected out-of-order batch, newest first.
pub fn flush_batch(sim: &Arc<Sim>) {
    let mut batch = {
        let mut st = sim.lock();
        st.batch_armed = false;
        std::mem::take(&mut st.batch)
    };
    batch.reverse();
    if !batch.is_empty() {
        spawn_sequence(sim, batch);
    }
}

/// Releases held notifications (newest first while `out_of_order` is on);
/// returns how many.
pub fn release(sim: &Arc<Sim>) -> usize {
    let (mut held, reverse) = {
        let mut st = sim.lock();
        (std::mem::take(&mut st.held), st.faults.out_of_order)
    };
    if reverse {
        held.reverse();
    }
    let n = held.len();
    if n > 0 {
        spawn_sequence(sim, held);
    }
    n
}

/// First attempts one after the other (so their order is the order of
/// `notices`), then each unacknowledged one on its own retry schedule.
fn spawn_sequence(sim: &Arc<Sim>, notices: Vec<Notice>) {
    let sim = Arc::clone(sim);
    actix_web::rt::spawn(async move {
        for notice in notices {
            if !attempt(&sim, &notice).await {
                let sim = Arc::clone(&sim);
                actix_web::rt::spawn(async move { retry(&sim, &notice).await });
            }
        }
    });
}

async fn retry(sim: &Arc<Sim>, notice: &Notice) {
    for secs in NOTIFY_SCHEDULE_SECS {
        actix_web::rt::time::sleep(sim.scaled(Duration::from_secs(secs))).await;
        if attempt(sim, notice).await {
            return;
        }
    }
    tracing::warn!(
        id = %notice.id,
        out_bill_no = %notice.out_bill_no,
        "notification never acknowledged; giving up"
    );
}

/// One delivery (two POSTs with `duplicate_notifications`, each signed;
/// two with `replay_notifications`, the second a copy of the first); true
/// when a POST was answered 200 or 204.
async fn attempt(sim: &Arc<Sim>, notice: &Notice) -> bool {
    let (duplicate, replay) = {
        let s = sim.lock();
        (
            s.faults.duplicate_notifications,
            s.faults.replay_notifications,
        )
    };
    let copies = if duplicate || replay { 2 } else { 1 };
    let mut acked = false;
    let mut signed = None;
    for _ in 0..copies {
        let headers = match signed.take() {
            Some(h) => h,
            None => match sim.sign(notice.body.as_bytes()) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign a notification");
                    return acked;
                }
            },
        };
        if replay {
            signed = Some(headers.clone());
        }
        let ok = post(notice, &headers).await;
        sim.lock().record_delivery(&notice.out_bill_no, ok);
        acked |= ok;
    }
    acked
}

async fn post(notice: &Notice, headers: &qrgate_provider::sign::ResponseHeaders) -> bool {
    let client = awc::Client::builder()
        .timeout(POST_TIMEOUT)
        .disable_redirects()
        .finish();
    let mut request = client
        .post(notice.notify_url.as_str())
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("User-Agent", "qrgate-paysim"));
    for (name, value) in headers.pairs() {
        request = request.insert_header((name, value));
    }
    match request.send_body(notice.body.clone()).await {
        Ok(mut response) => {
            let status = response.status().as_u16();
            // Drain (bounded) so the connection can be reused.
            let _ = response.body().limit(64 * 1024).await;
            tracing::debug!(id = %notice.id, status, "notification delivered");
            status == 200 || status == 204
        }
        Err(e) => {
            tracing::debug!(id = %notice.id, error = %e, "notification delivery failed");
            false
        }
    }
}

/// `NOTIFY_SCHEDULE_SECS` as the delays `retry` sleeps, for a factor.
#[cfg(test)]
pub(crate) fn schedule(factor: f64) -> Vec<Duration> {
    NOTIFY_SCHEDULE_SECS
        .iter()
        .map(|s| super::scale(Duration::from_secs(*s), factor))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_wechat_scaled() {
        let full: u64 = NOTIFY_SCHEDULE_SECS.iter().sum();
        // 15 s, 15 s, 30 s, 3 m, 10 m, 20 m, 30 m ×3, 60 m, 3 h ×3, 6 h ×2.
        assert_eq!(NOTIFY_SCHEDULE_SECS.len(), 15);
        assert_eq!(full, 86_640);
        let fast = schedule(0.01);
        assert_eq!(fast[0], Duration::from_millis(150));
        assert_eq!(fast[14], Duration::from_secs(216));
    }
}
