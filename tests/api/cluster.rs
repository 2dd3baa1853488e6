//! The log of cluster mode (`storage::jetstream`) against a real 3-server
//! NATS JetStream cluster on loopback (`scripts/nats-cluster`). Without
//! `nats-server` these tests print SKIPPED and pass, unless
//! `QRGATE_REQUIRE_NATS=1` (as in CI), where they fail.

use bytes::Bytes;
use qrgate::domain::placement;
use qrgate::storage::jetstream::{AppendError, Entry, LogOptions, StreamLog};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Three nats-server processes, stopped on drop.
pub(super) struct Nats {
    dir: tempfile::TempDir,
    pub(super) urls: Vec<String>,
    base: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nats-cluster")
}

impl Nats {
    /// `None` (after printing SKIPPED) when nats-server is missing and not required.
    pub(super) fn start() -> Option<Nats> {
        let found = Command::new("nats-server")
            .arg("--version")
            .output()
            .is_ok();
        if !found {
            assert!(
                std::env::var("QRGATE_REQUIRE_NATS").as_deref() != Ok("1"),
                "nats-server is required (QRGATE_REQUIRE_NATS=1) but not installed"
            );
            eprintln!("SKIPPED: nats-server not installed (apt-get install nats-server)");
            return None;
        }
        // Ports base..base+2 (clients), +100.. (routes), +4000.. (monitoring):
        // distinct per test and per process.
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 21000 + (std::process::id() % 50) as u16 * 100 + n * 10;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(script())
            .arg(dir.path())
            .arg(base.to_string())
            .output()
            .expect("run scripts/nats-cluster");
        assert!(
            out.status.success(),
            "nats-cluster failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let urls = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(',')
            .map(str::to_string)
            .collect();
        Some(Nats { dir, urls, base })
    }

    /// The server (1 to 3) leading `stream`, from a live server's monitoring port.
    fn leader_of(&self, stream: &str) -> usize {
        for i in 0..3u16 {
            let url = format!(
                "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
                self.base + 4000 + i
            );
            let Ok(out) = Command::new("curl").args(["-fs", &url]).output() else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                continue;
            };
            let leaders = v["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                .filter(|d| d["name"] == stream)
                .filter_map(|d| d["cluster"]["leader"].as_str().map(str::to_string));
            for l in leaders {
                if let Some(n) = l.strip_prefix('n').and_then(|n| n.parse().ok()) {
                    return n;
                }
            }
        }
        panic!("no leader of {stream}");
    }

    /// `kill -9` server `i` (1 to 3).
    pub(super) fn kill(&self, i: usize) {
        self.signal(i, "-KILL");
    }

    /// Send `signal` (`-STOP`, `-CONT`, `-KILL`) to server `i` (1 to 3).
    pub(super) fn signal(&self, i: usize, signal: &str) {
        let pid =
            std::fs::read_to_string(self.dir.path().join(format!("n{i}.pid"))).expect("pid file");
        let status = Command::new("kill")
            .args([signal, pid.trim()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Start server `i` (1 to 3) again on its store, after a kill.
    pub(super) fn restart(&self, i: usize) {
        let dir = self.dir.path();
        let _ = std::fs::remove_file(dir.join(format!("n{i}.pid")));
        // Detached (as scripts/nats-cluster starts it), so that no zombie
        // of ours outlives its kill.
        let conf = dir.join(format!("n{i}.conf"));
        let log = dir.join(format!("n{i}.log"));
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "setsid nats-server -c '{}' >>'{}' 2>&1 </dev/null &",
                conf.display(),
                log.display()
            ))
            .status()
            .expect("start nats-server");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join(format!("n{i}.pid")).exists() {
            assert!(Instant::now() < deadline, "n{i} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What each server says of the log's stream (for a failed test).
    pub(super) fn describe(&self) -> String {
        let mut out = String::new();
        for i in 0..3u16 {
            let url = format!(
                "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
                self.base + 4000 + i
            );
            let got = Command::new("curl")
                .args(["-fs", "-m", "2", &url])
                .output()
                .ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
            let Some(v) = got else {
                out.push_str(&format!("n{}: no answer\n", i + 1));
                continue;
            };
            let detail = v["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                .find(|d| d["name"] == "QRGATE")
                .map(|d| format!("state {} cluster {}", d["state"], d["cluster"]))
                .unwrap_or_default();
            out.push_str(&format!(
                "n{}: meta {} {detail}\n",
                i + 1,
                v["meta_cluster"]
            ));
        }
        let fresh = std::thread::scope(|s| {
            s.spawn(|| {
                let mut opts = LogOptions::new(self.urls.clone());
                opts.retry_for = Duration::from_secs(5);
                StreamLog::connect(opts).and_then(|l| l.stream_last().map_err(|e| e.to_string()))
            })
            .join()
        });
        out.push_str(&format!(
            "a fresh client reads the stream's last position: {fresh:?}\n"
        ));
        out
    }

    /// Make the log lose its entries, as NATS servers that crash together
    /// can do to its tail: the stream is deleted, made again, and given
    /// `keep` entries of a throwaway entity. Blocking: call it off any
    /// async runtime.
    pub(super) fn lose_the_log(&self, keep: u64) {
        let url = self.urls[0].clone();
        block_on(async move {
            let client = async_nats::connect(url).await.expect("connect");
            async_nats::jetstream::new(client)
                .delete_stream("QRGATE")
                .await
                .expect("delete the stream");
        });
        let log = self.log();
        for i in 0..keep {
            block_on(log.append("node/lost", i, &format!("lost-{i}"), payload("x")))
                .expect("append");
        }
    }

    /// The server (1 to 3) leading the stream of qrgate's log.
    pub(super) fn log_leader(&self) -> usize {
        self.leader_of("QRGATE")
    }

    pub(super) fn log(&self) -> StreamLog {
        self.log_with(LogOptions::new(self.urls.clone()))
    }

    fn log_with(&self, opts: LogOptions) -> StreamLog {
        StreamLog::connect(opts).expect("connect to the cluster")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        // A failed test keeps the servers' logs for a look.
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("qrgate-nats-logs-{}", self.base));
            if std::fs::create_dir_all(&keep).is_ok() {
                for i in 1..=3 {
                    let log = format!("n{i}.log");
                    let _ = std::fs::copy(self.dir.path().join(&log), keep.join(&log));
                }
                eprintln!("NATS logs kept in {}", keep.display());
            }
        }
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn payload(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// Read `n` entries from `from` on (at most 30 s).
fn read(log: &StreamLog, from: u64, n: usize) -> Vec<Entry> {
    let mut rx = log.follow(from);
    block_on(async {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while out.len() < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => out.push(e),
                Ok(None) => panic!("follow ended"),
                Err(_) => panic!("only {} of {n} entries in 30 s", out.len()),
            }
        }
        out
    })
}

/// One writer per entity: an append names the position it read, a stale
/// writer is refused, a retried message id lands once, entities are
/// independent, and every node reads the same entries in the same order.
#[test]
fn appends_are_compare_and_set_per_entity_and_read_back_in_order() {
    let Some(nats) = Nats::start() else { return };
    let log = nats.log();
    assert_eq!(log.last("group/g_a").expect("last"), 0);
    let s1 = block_on(log.append("group/g_a", 0, "a-1", payload("a1"))).expect("first append");
    let s2 = block_on(log.append("group/g_a", s1, "a-2", payload("a2"))).expect("second append");
    assert!(s2 > s1);
    // A writer that read before a-2 is stale.
    let stale = block_on(log.append("group/g_a", s1, "a-x", payload("ax")));
    assert_eq!(
        stale,
        Err(AppendError::Conflict {
            entity: "group/g_a".into(),
            expected: s1
        })
    );
    let conflicts = qrgate::metrics::LOG_APPENDS.with_label_values(&["conflict"]);
    assert!(conflicts.get() >= 1, "the refusal is counted");
    // Another entity starts at 0 whatever the stream holds.
    let w1 = block_on(log.append("wallet/u_b", 0, "b-1", payload("b1"))).expect("other entity");
    // The same message id again (a retry whose answer was lost) lands once.
    let again = block_on(log.append("wallet/u_b", 0, "b-1", payload("b1"))).expect("retry");
    assert_eq!(again, w1);
    assert_eq!(log.last("group/g_a").expect("last"), s2);
    assert_eq!(log.last("wallet/u_b").expect("last"), w1);

    let other_node = nats.log();
    let entries = read(&other_node, 1, 3);
    let seen: Vec<(u64, &str, &[u8])> = entries
        .iter()
        .map(|e| (e.seq, e.entity.as_str(), &e.payload[..]))
        .collect();
    assert_eq!(
        seen,
        [
            (s1, "group/g_a", &b"a1"[..]),
            (s2, "group/g_a", &b"a2"[..]),
            (w1, "wallet/u_b", &b"b1"[..])
        ]
    );
    assert_eq!(read(&other_node, s2, 1)[0].seq, s2);
}

/// Appends go on through the `kill -9` of the stream's leader (the
/// election answers nothing for a few seconds; appends retry under their
/// message id), and none is lost or doubled.
#[test]
fn appends_survive_the_loss_of_one_server() {
    let Some(nats) = Nats::start() else { return };
    let log = nats.log();
    let mut last = 0;
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..300u32 {
        if i == 100 {
            nats.kill(nats.leader_of("QRGATE"));
        }
        let id = format!("w-{i}");
        let started = Instant::now();
        last = block_on(log.append("wallet/u_k", last, &id, payload(&id)))
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
        slowest = slowest.max(started.elapsed());
        acked.push(last);
    }
    eprintln!("slowest append, across the leader's loss: {slowest:?}");
    assert!(
        qrgate::metrics::LOG_RETRIES.get() >= 1,
        "the leader's loss made appends retry"
    );
    // Each append waited for the one before it, so their positions rise.
    assert!(acked.windows(2).all(|w| w[0] < w[1]));
    let entries = read(&nats.log(), 1, 300);
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), acked);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(&e.payload[..], format!("w-{i}").as_bytes());
    }
}

/// Nodes are live while their heartbeats are; when one stops, it drops out
/// of every node's list once its last heartbeat expires, and only the
/// entities it owned get a new owner.
#[test]
fn a_node_that_stops_its_heartbeat_leaves_and_only_its_entities_move() {
    let Some(nats) = Nats::start() else { return };
    let opts = LogOptions {
        node_ttl: Duration::from_secs(5),
        ..LogOptions::new(nats.urls.clone())
    };
    let logs: Vec<StreamLog> = (0..3).map(|_| nats.log_with(opts.clone())).collect();
    for (i, log) in logs.iter().enumerate() {
        log.announce(
            &format!("node-{i}"),
            &format!("http://127.0.0.1:{}", 9000 + i),
            10 * i as u64,
        )
        .expect("announce");
    }
    let ids = |log: &StreamLog| -> Vec<String> {
        log.live_nodes()
            .expect("live nodes")
            .into_iter()
            .map(|n| n.id)
            .collect()
    };
    assert_eq!(ids(&logs[2]), ["node-0", "node-1", "node-2"]);
    let n1 = &logs[0].live_nodes().expect("live nodes")[1];
    assert_eq!(
        (n1.url.as_str(), n1.checkpoint),
        ("http://127.0.0.1:9001", 10)
    );
    let entities: Vec<String> = (0..300).map(|i| format!("group/g_{i}")).collect();
    let before: Vec<String> = ids(&logs[0]);
    let owners_before: Vec<Option<String>> = entities
        .iter()
        .map(|e| placement::owner(e, &before).map(str::to_string))
        .collect();
    // node-1 stops; the others keep announcing, every tenth of the ttl.
    let deadline = Instant::now() + Duration::from_secs(25);
    let after = loop {
        std::thread::sleep(Duration::from_millis(500));
        logs[0]
            .announce("node-0", "http://127.0.0.1:9000", 0)
            .expect("announce");
        logs[2]
            .announce("node-2", "http://127.0.0.1:9002", 20)
            .expect("announce");
        let now = ids(&logs[2]);
        if !now.iter().any(|n| n == "node-1") {
            break now;
        }
        assert!(Instant::now() < deadline, "node-1 never expired: {now:?}");
    };
    assert_eq!(after, ["node-0", "node-2"]);
    assert_eq!(ids(&logs[0]), after, "every node sees the same list");
    for (e, was) in entities.iter().zip(owners_before) {
        let now = placement::owner(e, &after).map(str::to_string);
        if was.as_deref() != Some("node-1") {
            assert_eq!(now, was, "{e} moved though its owner is live");
        }
    }
}

/// A heartbeat, or a shared value, is read back at once through any
/// server, even one whose replica of the bucket has not applied it yet:
/// reads go to the bucket's leader.
#[test]
fn heartbeats_and_shared_values_are_seen_at_once_through_every_server() {
    let Some(nats) = Nats::start() else { return };
    // Make the buckets, then find the heartbeats' leader.
    drop(nats.log());
    let leader = nats.leader_of("KV_qrgate-nodes");
    let through = |i: usize| nats.log_with(LogOptions::new(vec![nats.urls[i - 1].clone()]));
    let writer = through(leader);
    let readers: Vec<StreamLog> = (1..=3).filter(|&i| i != leader).map(through).collect();
    for i in 0..200u64 {
        let id = format!("node-{}", i % 7);
        writer
            .announce(&id, "http://127.0.0.1:9000", i)
            .expect("announce");
        for r in &readers {
            let seen = r.live_nodes().expect("live nodes");
            let got = seen.iter().find(|n| n.id == id).map(|n| n.checkpoint);
            assert_eq!(got, Some(i), "heartbeat {i} of {id} read back: {seen:?}");
        }
        if i % 10 == 0 {
            let key = format!("k{i}");
            assert!(writer.share(&key, payload(&key)).expect("share"));
            for r in &readers {
                assert_eq!(r.shared(&key).expect("shared"), Some(payload(&key)));
            }
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
