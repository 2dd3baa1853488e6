//! The pool of pre-generated scan codes: random ids with their QR images,
//! drawn ahead of demand so that a burst of creations renders nothing.
//!
//! The pool lives in sled (`sp/` records, see `storage::codes`) and, for
//! serving, in memory here. A code leaves the memory pool when it is taken;
//! it leaves sled in the write set that binds it. A refill task keeps the
//! pool between `pool_low_water` and `pool_size`, rendering off the async
//! workers, preferably while nobody is taking codes, and on at most half of
//! one core (it rests after each chunk as long as the chunk took).

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::code::{self, CodeId};
use crate::metrics;
use crate::qr::QrError;

/// Longest the refill waits for a lull before it renders anyway.
pub const MAX_LULL_WAIT: Duration = Duration::from_secs(5);
/// Codes rendered and stored together by the refill.
pub const CHUNK: usize = 16;

/// A pre-generated code: its id and the PNG of its URL's QR code.
#[derive(Clone)]
pub struct Pooled {
    pub id: CodeId,
    pub png: Bytes,
}

/// Draw a new code for `base`: a random id, its text (id and tag) and the
/// QR image of its URL. About half a millisecond of CPU: call it off the
/// async workers.
pub fn generate(tag_key: &[u8; 32], base: &str, qr_size: u32) -> Result<Pooled, QrError> {
    let id = CodeId::random();
    let url = code::url(base, &code::encode(tag_key, &id));
    let png = crate::qr::render_png(&url, qr_size)?;
    Ok(Pooled {
        id,
        png: Bytes::from(png),
    })
}

struct Inner {
    ready: VecDeque<Pooled>,
    last_take: Option<Instant>,
}

/// The in-memory side of the pool; the refill task and the creators share it.
pub struct Pool {
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
    pub size: usize,
    pub low_water: usize,
    pub idle: Duration,
}

impl Pool {
    pub fn new(size: usize, low_water: usize, idle: Duration) -> Pool {
        Pool {
            inner: Mutex::new(Inner {
                ready: VecDeque::new(),
                last_take: None,
            }),
            wake: tokio::sync::Notify::new(),
            size,
            low_water,
            idle,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update of a queue;
        // the queue itself is still a valid queue.
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    /// Take a code; `None` when the pool is empty. Wakes the refill when the
    /// pool falls below the low-water mark.
    pub fn take(&self) -> Option<Pooled> {
        let (got, left) = self.with(|i| {
            i.last_take = Some(Instant::now());
            (i.ready.pop_front(), i.ready.len())
        });
        metrics::CODE_POOL_SIZE.set(left as i64);
        if left < self.low_water {
            self.wake.notify_one();
        }
        got
    }

    /// Give back a code taken but not bound (its sled record is still there).
    pub fn put_back(&self, p: Pooled) {
        let n = self.with(|i| {
            i.ready.push_front(p);
            i.ready.len()
        });
        metrics::CODE_POOL_SIZE.set(n as i64);
    }

    /// Add codes that are on disk.
    pub fn extend(&self, codes: impl IntoIterator<Item = Pooled>) {
        let n = self.with(|i| {
            i.ready.extend(codes);
            i.ready.len()
        });
        metrics::CODE_POOL_SIZE.set(n as i64);
    }

    pub fn len(&self) -> usize {
        self.with(|i| i.ready.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time since the last take (`None`: nothing taken yet).
    pub fn since_last_take(&self) -> Option<Duration> {
        self.with(|i| i.last_take.map(|t| t.elapsed()))
    }

    /// Resolve once the pool is below its low-water mark.
    pub async fn below_low_water(&self) {
        loop {
            let notified = self.wake.notified();
            if self.len() < self.low_water {
                return;
            }
            notified.await;
        }
    }

    /// Resolve once no code was taken for `idle`, or after [`MAX_LULL_WAIT`].
    pub async fn lull(&self) {
        let started = Instant::now();
        loop {
            let wait = match self.since_last_take() {
                Some(since) if since < self.idle => self.idle - since,
                _ => return,
            };
            let left = MAX_LULL_WAIT.saturating_sub(started.elapsed());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(wait.min(left)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled(n: u8) -> Pooled {
        Pooled {
            id: CodeId([n; 12]),
            png: Bytes::new(),
        }
    }

    #[test]
    fn take_in_order_and_put_back_first() {
        let p = Pool::new(10, 2, Duration::ZERO);
        p.extend([pooled(1), pooled(2), pooled(3)]);
        assert_eq!(p.take().map(|c| c.id), Some(CodeId([1; 12])));
        let two = p.take().unwrap();
        p.put_back(two);
        assert_eq!(p.len(), 2);
        assert_eq!(p.take().map(|c| c.id), Some(CodeId([2; 12])));
        assert_eq!(p.take().map(|c| c.id), Some(CodeId([3; 12])));
        assert!(p.take().is_none());
        assert!(p.since_last_take().is_some());
    }

    /// A generated code's image stays far below what a sled leaf may hold
    /// (about 7 KB per value, 17 values under sled's 128 KiB blob threshold)
    /// at the largest configurable size and the longest base URL.
    #[test]
    fn generated_codes_decode_to_their_url_and_stay_small() {
        let long = format!("https://{}", "q".repeat(248));
        for (base, size, max) in [
            ("https://qrgate.example.com", 256, 3000),
            ("https://qrgate.example.com", 512, 5000),
            (long.as_str(), 512, 7000),
        ] {
            let p = generate(&[1; 32], base, size).unwrap();
            assert!(p.png.len() < max, "{size} px: {} bytes", p.png.len());
            let img = image::load_from_memory(&p.png).unwrap().to_luma8();
            let mut prepared = rqrr::PreparedImage::prepare(img);
            let grids = prepared.detect_grids();
            let (_, content) = grids[0].decode().unwrap();
            assert_eq!(content, code::url(base, &code::encode(&[1; 32], &p.id)));
        }
    }
}
