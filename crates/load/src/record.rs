//! What every measured run records besides its overall histogram: a progress
//! bar (stderr, only on a terminal) and a timeline of latency percentiles and
//! throughput in fixed slots, for `--plot`.

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Width of one timeline slot.
pub const SLOT: Duration = Duration::from_millis(250);

/// One slot of the timeline: requests answered in it and their latencies.
struct Slot {
    hist: Histogram<u64>,
    ok: u64,
}

/// A point of the timeline (the end of its slot), as plotted.
#[derive(Serialize, Clone, Debug)]
pub struct Point {
    pub t_s: f64,
    pub rps: f64,
    pub ok_rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Progress bar and timeline of one measured run (single-threaded: the
/// load client is one actix System).
pub struct Recorder {
    start: Instant,
    slots: RefCell<Vec<Slot>>,
    bar: ProgressBar,
    /// The bar counts time (ms of `duration`) rather than requests.
    by_time: Option<Duration>,
}

/// Whether a progress bar may be drawn: stdout is a terminal and the output
/// is not JSON.
pub fn bar_wanted(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

impl Recorder {
    /// A run bounded by `limit` requests (when finite) or else by `duration`.
    pub fn new(label: &str, limit: u64, duration: Duration, show: bool) -> Recorder {
        let by_time = (limit == u64::MAX).then_some(duration);
        let bar = if !show {
            ProgressBar::hidden()
        } else if by_time.is_some() {
            let b = ProgressBar::with_draw_target(
                Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
                ProgressDrawTarget::stderr(),
            );
            b.set_style(
                ProgressStyle::with_template("{prefix:>10} [{bar:30}] {elapsed}/{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        } else {
            let b = ProgressBar::with_draw_target(Some(limit), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {pos}/{len} requests, {per_sec}, {elapsed} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        };
        bar.set_prefix(label.to_string());
        if let Some(d) = by_time {
            bar.set_message(format!("{}s", d.as_secs()));
        }
        Recorder {
            start: Instant::now(),
            slots: RefCell::new(Vec::new()),
            bar,
            by_time,
        }
    }

    /// One answered request: its latency and whether it succeeded.
    pub fn record(&self, micros: u64, ok: bool) {
        let elapsed = self.start.elapsed();
        let i = (elapsed.as_micros() / SLOT.as_micros()) as usize;
        let mut slots = self.slots.borrow_mut();
        while slots.len() <= i {
            // Bounds are constants: cannot fail. 2 significant figures keep a
            // slot small (about 20 KB) for runs of minutes.
            match Histogram::new_with_bounds(1, 60_000_000, 2) {
                Ok(hist) => slots.push(Slot { hist, ok: 0 }),
                Err(_) => return,
            }
        }
        let slot = &mut slots[i];
        slot.hist.saturating_record(micros.max(1));
        slot.ok += u64::from(ok);
        match self.by_time {
            Some(_) => self
                .bar
                .set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
            None => self.bar.inc(1),
        }
    }

    /// Stop the bar; the timeline, one point per slot.
    pub fn finish(&self) -> Vec<Point> {
        self.bar.finish_and_clear();
        let secs = SLOT.as_secs_f64();
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        self.slots
            .borrow()
            .iter()
            .enumerate()
            .map(|(i, s)| Point {
                t_s: (i + 1) as f64 * secs,
                rps: s.hist.len() as f64 / secs,
                ok_rps: s.ok as f64 / secs,
                p50_ms: ms(&s.hist, 0.5),
                p90_ms: ms(&s.hist, 0.9),
                p99_ms: ms(&s.hist, 0.99),
                max_ms: ms(&s.hist, 1.0),
            })
            .collect()
    }
}
