//! Durable transfers per second through the wallet actors and the committer,
//! in process (no HTTP): each transfer is decided by its wallet's actor,
//! journalled with its hash-chain link, and awaited until flushed to disk.
//!
//! Run: `cargo bench --bench ledger`. Criterion reports the time for 1,024
//! transfers submitted together and awaited; transfers/s = 1024 / time.
//! - `spread`: earnings into 1,000 different wallets (1,000 actors).
//! - `hot`: earnings into one wallet (one actor serialises them all).
//! - `durable_transfers_no_storage`: the same with the journal switched
//!   off (`StorageOptions::journal = false`): the actor path alone.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qrgate::config::Config;
use qrgate::domain::ids::UserId;
use qrgate::registry::Arbiters;
use qrgate::storage::{Storage, StorageOptions};
use qrgate::wallets::{Shared, Wallets};

const IN_FLIGHT: u64 = 1024;

fn ledger(c: &mut Criterion) {
    run(c, "durable_transfers", true);
    run(c, "durable_transfers_no_storage", false);
}

fn run(c: &mut Criterion, group: &str, journal: bool) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let sys = actix_web::rt::System::new();
    let wallets = sys.block_on(async {
        let opts = StorageOptions {
            journal,
            ..StorageOptions::default()
        };
        let storage = match Storage::open_with(dir.path(), [3; 32], opts) {
            Ok(s) => s,
            Err(e) => panic!("open: {e}"),
        };
        Wallets::new(
            Arc::new(Shared::new(Config::default(), storage)),
            Arbiters::start(2),
        )
    });
    let next = AtomicU64::new(0);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(IN_FLIGHT));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    for (name, users) in [("spread", 1000u64), ("hot", 1)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let first = next.fetch_add(IN_FLIGHT, Ordering::Relaxed);
                    total += sys.block_on(async {
                        let started = Instant::now();
                        let calls = (first..first + IN_FLIGHT).map(|n| {
                            let mut id = [0u8; 16];
                            id[..8].copy_from_slice(&(n % users).to_be_bytes());
                            let w = wallets.clone();
                            async move {
                                w.earn(&format!("bench-{n}"), UserId(id), "task_completed", 1)
                                    .await
                            }
                        });
                        for r in futures_util::future::join_all(calls).await {
                            if let Err(e) = r {
                                panic!("transfer failed: {e}");
                            }
                        }
                        started.elapsed()
                    });
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ledger);
criterion_main!(benches);
