//! Issuing a scan code: from the pool against drawing a fresh one.
//!
//! ```text
//! cargo bench --bench codes
//! ```
//!
//! - `codes/issue_from_pool`: take a pre-generated code from the in-memory
//!   pool, write its text (id and keyed-blake3 tag) and URL, and base64 its
//!   PNG for the answer: what `POST /v1/codes` does on a pool hit, less the
//!   durable write.
//! - `codes/issue_fresh`: the same with the code drawn on the spot (random
//!   id, tag, QR encoding and PNG at the default 256 px): a pool miss.
//! - `codes/parse`: checking a presented code's tag, what `/s/{code}` pays
//!   before any lookup (and all a forged code ever costs).
//!
//! The ratio of the first two is what the pool saves a burst.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};

use qrgate::codes::pool::{self, Pool, Pooled};
use qrgate::domain::code;

const KEY: [u8; 32] = [9; 32];
const BASE: &str = "https://qr.example.com";
const SIZE: u32 = 256;

/// What the answer carries: the code, its URL and the image in base64.
fn answer(p: &Pooled) -> (String, String, String) {
    let text = code::encode(&KEY, &p.id);
    let url = code::url(BASE, &text);
    (text, url, STANDARD.encode(&p.png))
}

fn bench_codes(c: &mut Criterion) {
    let pool = Pool::new(usize::MAX, 0, Duration::ZERO);
    let sample = pool::generate(&KEY, BASE, SIZE).unwrap_or_else(|e| panic!("render: {e}"));
    let text = code::encode(&KEY, &sample.id);

    let mut g = c.benchmark_group("codes");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("issue_from_pool", |b| {
        b.iter_batched(
            || pool.extend([sample.clone()]),
            |()| pool.take().map(|p| answer(black_box(&p))),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("issue_fresh", |b| {
        b.iter(|| {
            pool::generate(black_box(&KEY), BASE, SIZE)
                .map(|p| answer(&p))
                .is_ok()
        })
    });
    g.bench_function("parse", |b| {
        b.iter(|| code::parse(black_box(&KEY), black_box(&text)).is_ok())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_codes
}
criterion_main!(benches);
