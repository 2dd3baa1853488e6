//! `memory`: what G groups of M members cost the server in resident memory,
//! whether it falls back once idle actors are passivated, and how long a
//! restart with that many memberships on disk takes.
//!
//! The memberships are written straight into a fresh data dir by
//! `qrgate seed` (the same write sets the server makes, through its storage
//! module; going through the API would take hours for 10M joins), before
//! the server ever runs on it.
//! Then: start the server and time it to `/healthz`; read its RSS; activate
//! every group (`GET /v1/groups/{id}`, which rebuilds the actor from
//! storage) and check each has its M members; read RSS; wait until the idle
//! actors are passivated; read RSS; SIGKILL it, restart on the same dir and
//! time that to `/healthz`.

use super::{client, run_all, Api, ServerDir, SpawnedServer};
use actix_web::http::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct MemArgs {
    pub groups: usize,
    pub members: usize,
    /// Ledger entries to seed after the memberships.
    pub entries: u64,
    /// The server's `[actors] idle_timeout_seconds`.
    pub idle_timeout: u64,
    /// The server's `[storage] cache_mb`, if not its default.
    pub cache_mb: Option<u64>,
    pub connections: usize,
    pub json: bool,
}

/// How long the allocator is given to return freed pages before a
/// reading (at most; a third of the idle timeout if that is shorter, so
/// the actors are still resident at the reading).
const SETTLE: Duration = Duration::from_secs(12);

pub fn run(a: &MemArgs) -> Result<(), String> {
    if !(1..=10_000_000).contains(&a.groups)
        || a.connections == 0
        || !(1..=86_400).contains(&a.idle_timeout)
    {
        return Err(
            "--groups must be 1 to 10000000, --idle-timeout 1 to 86400, --connections at least 1"
                .into(),
        );
    }
    let extra = format!(
        "\n[actors]\nidle_timeout_seconds = {}\n{}",
        a.idle_timeout,
        super::storage_config(a.cache_mb, false, None)
    );
    let dir = ServerDir::new(&extra)?;
    let t = Instant::now();
    let groups = seed(&dir.data, a)?;
    let seed_s = t.elapsed().as_secs_f64();
    let memberships = (a.groups * a.members) as u64;
    eprintln!(
        "load: seeded {} groups, {memberships} memberships in {seed_s:.1} s ({} on disk)",
        a.groups,
        human(dir_size(&dir.data))
    );

    let (server, base, start_s) = start_timed(&dir)?;
    let mut figures =
        actix_web::rt::System::new().block_on(measure(a, &server, &base, &dir.admin, &groups))?;
    server.kill();
    let (server, base, restart_s) = start_timed(&dir)?;
    let rss_restarted = rss_bytes(server.pid())?;
    let checked = actix_web::rt::System::new().block_on(async {
        let api = Api {
            c: client(4),
            spread: vec![base.clone()],
            base,
            admin: dir.admin.clone(),
            turn: Default::default(),
        };
        // One group read back after the SIGKILL restart.
        let v = api
            .call(
                Method::GET,
                &format!("/v1/groups/{}", groups[0]),
                &dir.admin,
                Value::Null,
            )
            .await?;
        Ok::<_, String>(v["member_count"].as_u64())
    })?;
    drop(server);
    figures["seed_s"] = json!(seed_s);
    figures["ledger_entries"] = json!(a.entries);
    figures["first_start_s"] = json!(start_s);
    figures["restart_after_kill_s"] = json!(restart_s);
    figures["rss_after_restart_bytes"] = json!(rss_restarted);
    figures["disk_bytes"] = json!(dir_size(&dir.data));
    let checks = [
        (
            "every group activated with its members",
            figures["activated_ok"] == json!(a.groups),
        ),
        (
            "every group resident at the reading",
            figures["resident_actors_when_active"] == json!(a.groups),
        ),
        (
            "a group read back after kill -9 and restart",
            checked == Some(a.members as u64),
        ),
        ("restart to /healthz under 5 s", restart_s < 5.0),
    ];
    report(a, &figures, &checks);
    match checks.iter().filter(|(_, ok)| !ok).count() {
        0 => Ok(()),
        n => Err(format!("{n} check(s) failed")),
    }
}

/// `qrgate seed` into `data`: the seeded groups' ids.
fn seed(data: &Path, a: &MemArgs) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .arg("seed")
        .arg("--data-dir")
        .arg(data)
        .args(["--groups", &a.groups.to_string()])
        .args(["--members", &a.members.to_string()])
        .args(["--entries", &a.entries.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run qrgate seed: {e}"))?;
    if !out.status.success() {
        return Err(format!("qrgate seed failed ({})", out.status));
    }
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    if ids.len() != a.groups {
        return Err(format!(
            "qrgate seed wrote {} of {} groups",
            ids.len(),
            a.groups
        ));
    }
    Ok(ids)
}

/// Launch on `dir` and time it until `/healthz` answers 200.
fn start_timed(dir: &ServerDir) -> Result<(SpawnedServer, String, f64), String> {
    let mut t = Instant::now();
    let mut tries = 0;
    let (server, base) = loop {
        match SpawnedServer::launch(&dir.config) {
            Ok(s) => break s,
            // sled's I/O threads may hold the seeding store's lock a moment
            // after it was shut down (seen after 10M memberships).
            Err(e) if tries < 30 => {
                tries += 1;
                eprintln!("load: {e}; trying again in 1 s");
                std::thread::sleep(Duration::from_secs(1));
                t = Instant::now();
            }
            Err(e) => return Err(e),
        }
    };
    let ok = actix_web::rt::System::new().block_on(async {
        let c = client(1);
        for _ in 0..500 {
            if let Ok(r) = c.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    return true;
                }
            }
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        false
    });
    if !ok {
        return Err("the server did not answer /healthz".into());
    }
    Ok((server, base, t.elapsed().as_secs_f64()))
}

async fn measure(
    a: &MemArgs,
    server: &SpawnedServer,
    base: &str,
    admin: &str,
    groups: &[String],
) -> Result<Value, String> {
    let pid = server.pid();
    let api = Api {
        c: client(a.connections),
        base: base.to_string(),
        spread: vec![base.to_string()],
        admin: admin.to_string(),
        turn: Default::default(),
    };
    let rss_start = rss_bytes(pid)?;
    // Group actors resident before (none, unless seeding grows some) stay.
    let start = scrape(&api).await?;
    let before = start.actors;
    let t = Instant::now();
    let counts = run_all("activations", groups.len(), a.connections, |i| {
        let (api, path) = (&api, format!("/v1/groups/{}", groups[i]));
        async move {
            let v = api.call(Method::GET, &path, admin, Value::Null).await?;
            Ok(v["member_count"].as_u64())
        }
    })
    .await?;
    let activation_s = t.elapsed().as_secs_f64();
    let activated_ok = counts
        .iter()
        .filter(|c| **c == Some(a.members as u64))
        .count();
    let rss_activated = rss_bytes(pid)?;
    // The allocator returns the activations' temporaries after a while
    // (jemalloc's decay): read again once settled, every actor still resident.
    let settle = SETTLE.min(Duration::from_secs(a.idle_timeout) / 3);
    actix_web::rt::time::sleep(settle).await;
    let active = scrape(&api).await?;
    let resident = active.actors;
    let rss_active = rss_bytes(pid)?;
    // One more activation when everything is warm: what a single one takes.
    let t = Instant::now();
    api.call(
        Method::GET,
        &format!("/v1/groups/{}", groups[0]),
        admin,
        Value::Null,
    )
    .await?;
    let warm_ms = t.elapsed().as_secs_f64() * 1e3;

    // Passivation: the actors' idle timers fire within timeout + timeout/2.
    eprintln!(
        "load: waiting for the idle actors to be passivated ({} s timeout)",
        a.idle_timeout
    );
    let deadline = Instant::now() + Duration::from_secs(a.idle_timeout * 2 + 60);
    let mut left = resident;
    while Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
        left = scrape(&api).await?.actors.saturating_sub(before);
        if left == 0 {
            break;
        }
    }
    let passivated_after_s = t.elapsed().as_secs_f64();
    let rss_passivated = rss_bytes(pid)?;
    actix_web::rt::time::sleep(settle).await;
    let rss_idle = rss_bytes(pid)?;
    let idle = scrape(&api).await?;
    Ok(json!({
        "groups": a.groups,
        "members": a.members,
        "memberships": a.groups * a.members,
        "activated_ok": activated_ok,
        "activation_s": activation_s,
        "activations_per_s": groups.len() as f64 / activation_s.max(1e-9),
        "one_read_when_warm_ms": warm_ms,
        "resident_actors_when_active": resident.saturating_sub(before),
        "resident_actors_after_idle": left,
        "passivated_after_s": passivated_after_s,
        "settle_s": settle.as_secs_f64(),
        "rss_at_start_bytes": rss_start,
        "rss_just_activated_bytes": rss_activated,
        "rss_all_active_bytes": rss_active,
        "rss_when_passivated_bytes": rss_passivated,
        "rss_after_passivation_bytes": rss_idle,
        "rss_per_active_group_bytes": rss_active.saturating_sub(rss_start) / a.groups.max(1) as u64,
        "heap_allocated_at_start_bytes": start.heap_allocated,
        "heap_allocated_all_active_bytes": active.heap_allocated,
        "heap_allocated_after_passivation_bytes": idle.heap_allocated,
        "heap_resident_at_start_bytes": start.heap_resident,
        "heap_resident_all_active_bytes": active.heap_resident,
        "heap_resident_after_passivation_bytes": idle.heap_resident,
    }))
}

/// What the server's `/metrics` says of its actors and its heap.
struct Scrape {
    /// `qrgate_group_actors_resident`.
    actors: u64,
    /// jemalloc's live bytes and the bytes it keeps resident
    /// (`qrgate_heap_bytes`); 0 where the server does not report them.
    heap_allocated: u64,
    heap_resident: u64,
}

async fn scrape(api: &Api) -> Result<Scrape, String> {
    let url = format!("{}/metrics", api.base);
    let mut res = api
        .c
        .get(url)
        .insert_header(("Authorization", format!("Bearer {}", api.admin)))
        .send()
        .await
        .map_err(|e| format!("/metrics: {e}"))?;
    let body = res
        .body()
        .limit(1 << 24)
        .await
        .map_err(|e| format!("/metrics: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Ok(Scrape {
        actors: value("qrgate_group_actors_resident")
            .ok_or("no qrgate_group_actors_resident in /metrics")?,
        heap_allocated: value("qrgate_heap_bytes{kind=\"allocated\"}").unwrap_or(0),
        heap_resident: value("qrgate_heap_bytes{kind=\"resident\"}").unwrap_or(0),
    })
}

/// The resident set of process `pid` (Linux `/proc`).
fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read the server's memory (/proc/{pid}/status): {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc status".into())
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn human(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn report(a: &MemArgs, f: &Value, checks: &[(&str, bool)]) {
    if a.json {
        let mut v = f.clone();
        v["scenario"] = json!("memory");
        v["checks"] = checks
            .iter()
            .map(|(name, ok)| json!({"name": name, "ok": ok}))
            .collect();
        println!("{v}");
        return;
    }
    let mib = |k: &str| human(f[k].as_u64().unwrap_or(0));
    let kib = |k: &str| f[k].as_u64().unwrap_or(0) as f64 / 1024.0;
    let num = |k: &str| f[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "memory: {} groups x {} members = {} memberships ({} on disk, seeded in {:.1} s)",
        a.groups,
        a.members,
        f["memberships"],
        mib("disk_bytes"),
        num("seed_s")
    );
    println!(
        "  first start to /healthz      {:>10.2} s",
        num("first_start_s")
    );
    println!(
        "  RSS at start                 {:>14}",
        mib("rss_at_start_bytes")
    );
    println!(
        "  activation of every group    {:>10.1} s ({:.0} groups/s; a warm read {:.2} ms)",
        num("activation_s"),
        num("activations_per_s"),
        num("one_read_when_warm_ms")
    );
    println!(
        "  RSS all active               {:>14} ({} actors; {:.1} KiB per group; {} just after)",
        mib("rss_all_active_bytes"),
        f["resident_actors_when_active"],
        kib("rss_per_active_group_bytes"),
        mib("rss_just_activated_bytes")
    );
    println!(
        "  heap live / held (jemalloc)  {:>14} / {} at start, {} / {} all active, {} / {} after passivation",
        mib("heap_allocated_at_start_bytes"),
        mib("heap_resident_at_start_bytes"),
        mib("heap_allocated_all_active_bytes"),
        mib("heap_resident_all_active_bytes"),
        mib("heap_allocated_after_passivation_bytes"),
        mib("heap_resident_after_passivation_bytes")
    );
    println!(
        "  RSS after passivation        {:>14} ({} s later: {})",
        mib("rss_when_passivated_bytes"),
        num("settle_s"),
        mib("rss_after_passivation_bytes")
    );
    println!(
        "  actors left after idle       {:>10} (after {:.0} s)",
        f["resident_actors_after_idle"],
        num("passivated_after_s")
    );
    println!(
        "  restart after kill -9        {:>10.2} s to /healthz",
        num("restart_after_kill_s")
    );
    println!(
        "  RSS after restart            {:>14}",
        mib("rss_after_restart_bytes")
    );
    for (name, ok) in checks {
        println!("check {name}: {}", if *ok { "ok" } else { "FAILED" });
    }
}
