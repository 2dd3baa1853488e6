//! What the server's storage did during a measured run, from `/metrics`:
//! journal bytes and commit rounds, checkpoints and their durations.

use super::Api;

/// Cumulative storage counters at one moment.
#[derive(Clone, Copy, Default)]
pub(super) struct Figures {
    journal_bytes: f64,
    rounds: f64,
    write_sets: f64,
    append_secs: f64,
    checkpoints: f64,
    checkpoint_secs: f64,
}

pub(super) async fn scrape(api: &Api) -> Option<Figures> {
    let mut res = api
        .c
        .get(format!("{}/metrics", api.base))
        .insert_header(("Authorization", format!("Bearer {}", api.admin)))
        .send()
        .await
        .ok()?;
    let body = res.body().limit(1 << 24).await.ok()?;
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some(Figures {
        journal_bytes: value("qrgate_journal_bytes_total"),
        rounds: value("qrgate_storage_flush_seconds_count"),
        write_sets: value("qrgate_storage_commit_write_sets_sum"),
        append_secs: value("qrgate_storage_flush_seconds_sum"),
        checkpoints: value("qrgate_checkpoint_seconds_count"),
        checkpoint_secs: value("qrgate_checkpoint_seconds_sum"),
    })
}

/// One line on what happened between `before` and `after`, `secs` apart.
pub(super) fn line(before: Figures, after: Figures, secs: f64) -> String {
    let d = |f: fn(&Figures) -> f64| f(&after) - f(&before);
    let bytes = d(|f| f.journal_bytes);
    let rounds = d(|f| f.rounds).max(1.0);
    let checkpoints = d(|f| f.checkpoints);
    let cp_mean = if checkpoints > 0.0 {
        1000.0 * d(|f| f.checkpoint_secs) / checkpoints
    } else {
        0.0
    };
    format!(
        "storage: journal {:.1} MB/s ({:.1} MB in {secs:.1} s), {:.0} rounds of {:.1} write sets, \
         append (write + fdatasync) mean {:.2} ms; {checkpoints:.0} checkpoints, mean {cp_mean:.0} ms",
        bytes / 1e6 / secs.max(1e-9),
        bytes / 1e6,
        rounds,
        d(|f| f.write_sets) / rounds,
        1000.0 * d(|f| f.append_secs) / rounds,
    )
}
