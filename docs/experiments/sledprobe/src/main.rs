use std::time::Instant;
fn main() {
    let dir = std::env::temp_dir().join(format!("sledprobe-{}", std::process::id()));
    let db = sled::Config::new().path(&dir).cache_capacity(256 << 20).open().unwrap();
    let t = db.open_tree("state").unwrap();
    let per_batch: usize = std::env::args().nth(1).map(|v| v.parse().unwrap()).unwrap_or(100);
    let keys_per: usize = std::env::args().nth(2).map(|v| v.parse().unwrap()).unwrap_or(5);
    let vsize: usize = std::env::args().nth(3).map(|v| v.parse().unwrap()).unwrap_or(400);
    let n = 20_000usize;
    let v = vec![b'x'; vsize];
    let start = Instant::now();
    let mut seq = 0u64;
    for b in 0..(n / per_batch) {
        let mut batch = sled::Batch::default();
        for i in 0..per_batch {
            let id = (b * per_batch + i) as u64;
            let h = id.wrapping_mul(0x9E3779B97F4A7C15);
            // random-ish transfer key, account key (1000 accounts), entry key, sequential journal, inbox
            let keys: [Vec<u8>; 5] = [
                [b"lt/".as_ref(), &h.to_be_bytes()].concat(),
                [b"la/".as_ref(), &(id % 1000).to_be_bytes()].concat(),
                [b"le/".as_ref(), &(id % 1000).to_be_bytes(), &id.to_be_bytes()].concat(),
                [b"lj/".as_ref(), &{ seq += 1; seq }.to_be_bytes()].concat(),
                [b"lq/".as_ref(), &h.to_be_bytes()].concat(),
            ];
            for k in keys.iter().take(keys_per) {
                batch.insert(k.clone(), v.clone());
            }
        }
        t.apply_batch(batch).unwrap();
        db.flush().unwrap();
    }
    let s = start.elapsed().as_secs_f64();
    println!("batch {per_batch} keys/transfer {keys_per} value {vsize}B: {:.0} transfers/s ({:.1} us/key)", n as f64 / s, s * 1e6 / (n * keys_per) as f64);
    let _ = std::fs::remove_dir_all(&dir);
}
