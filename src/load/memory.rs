//! `memory`: what G groups of M members cost the server in resident memory,
//! whether it falls back once idle actors are passivated, and how long a
//! restart with that many memberships on disk takes.
//!
//! The memberships are written straight into a fresh data dir through the
//! storage module (the same write sets the server makes; going through the
//! API would take hours for 10M joins), before the server ever runs on it.
//! Then: start the server and time it to `/healthz`; read its RSS; activate
//! every group (`GET /v1/groups/{id}`, which rebuilds the actor from
//! storage) and check each has its M members; read RSS; wait until the idle
//! actors are passivated; read RSS; SIGKILL it, restart on the same dir and
//! time that to `/healthz`.

use super::{client, run_all, Api, ServerDir, SpawnedServer};
use crate::domain::group::{Group, GroupStatus, Invite, JoinRisk, Member, Role, MEMBER_TIERS};
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::domain::risk::{Reason, Stage};
use crate::domain::roster::Roster;
use crate::keys::KeyRing;
use crate::storage::{Storage, WriteSet};
use actix_web::http::Method;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::Path;
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

/// Memberships written before the seeding store is reopened.
const REOPEN_EVERY: usize = 1_000_000;

/// Memberships per write set while seeding (one group commit each).
const SEED_BATCH: usize = 50_000;

pub fn run(a: &MemArgs) -> Result<(), String> {
    let largest = MEMBER_TIERS[MEMBER_TIERS.len() - 1] as usize;
    if a.members == 0 || a.members > largest {
        return Err(format!(
            "--members must be 1 to {largest} (the largest group tier)"
        ));
    }
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
    let groups = actix_web::rt::System::new().block_on(async {
        let groups = seed(&dir.data, a.groups, a.members).await?;
        if a.entries > 0 {
            seed_ledger(&dir.data, a.entries).await?;
        }
        Ok::<_, String>(groups)
    })?;
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
            base,
            admin: dir.admin.clone(),
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

/// Write `groups` groups of `members` members (the owner and the rest
/// through one invitation of the owner's, a tenth of them with a risk
/// score), `SEED_BATCH` memberships per durable write set, two in flight.
///
/// Keys go in ascending order (sorted group ids): random inserts make sled
/// rewrite pages all over the tree, and sled's memory grows with the
/// pages written (3.5 GB after 1.5M random memberships); the store is also
/// closed and reopened every `REOPEN_EVERY` memberships to release it.
/// Open the seeding store; sled's background threads may hold the file
/// lock of the handle just shut down for a moment, so a lock error is
/// retried for up to 10 s.
async fn open_store(data: &Path, journal_key: [u8; 32]) -> Result<Storage, String> {
    let mut tries = 0;
    loop {
        match Storage::open(data, journal_key) {
            Ok(s) => return Ok(s),
            Err(e) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                tries += 1;
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn seed(data: &Path, groups: usize, members: usize) -> Result<Vec<GroupId>, String> {
    let keys = KeyRing::load_or_create(data).map_err(|e| e.to_string())?;
    let mut store = open_store(data, keys.journal_key()).await?;
    let now = chrono::Utc::now().timestamp();
    // The smallest tier that holds them (`run` checked that one does).
    let limit = MEMBER_TIERS
        .into_iter()
        .find(|t| *t as usize >= members)
        .unwrap_or(MEMBER_TIERS[MEMBER_TIERS.len() - 1]);
    let mut ids: Vec<GroupId> = (0..groups).map(|_| GroupId::random()).collect();
    ids.sort_unstable();
    let mut in_flight = VecDeque::new();
    let mut w = WriteSet::new();
    let (mut batched, mut since_open) = (0, 0);
    let (mut last, start) = (Instant::now(), Instant::now());
    for (n, &g) in ids.iter().enumerate() {
        let (owner, invite) = (UserId::random(), InviteId::random());
        let mut users: Vec<UserId> = (1..members).map(|_| UserId::random()).collect();
        users.sort_unstable();
        w.group(&Group {
            id: g,
            name: format!("memory group {n}"),
            description: "seeded by qrgate load --scenario memory".into(),
            owner_id: owner,
            member_limit: limit,
            approval_required: false,
            status: GroupStatus::Active,
            epoch: 0,
            ban_reason: None,
            created_at: now,
            join_rate_per_minute: None,
        });
        let inv = Invite {
            id: invite,
            group_id: g,
            creator_id: owner,
            created_at: now,
            expires_at: now + 30 * 86_400,
            max_uses: None,
            uses: members.saturating_sub(1) as u32,
            revoked: false,
            epoch: 0,
            tag: [7; 32],
            // As long as a real token (kind, ids, expiry, signature).
            token: "x".repeat(150),
            parent_id: None,
            depth: 0,
            stage: Stage::Open,
            stage_changed_at: 0,
            stage_reset_at: 0,
        };
        w.invite(&inv);
        w.invite_index(&inv);
        let roster = Roster::new(
            (0..members)
                .map(|k| {
                    let first = k == 0;
                    Member {
                        user_id: if first { owner } else { users[k - 1] },
                        role: if first { Role::Owner } else { Role::Member },
                        joined_at: now - (members - k) as i64,
                        via_invite: (!first).then_some(invite),
                        invited_by: (!first).then_some(owner),
                        risk: (k % 10 == 5).then(|| JoinRisk {
                            score: 35,
                            reasons: vec![Reason::NewAccount],
                            challenged: false,
                            new_account: true,
                        }),
                    }
                })
                .collect(),
        );
        w.roster(g, &roster);
        batched += members;
        if batched >= SEED_BATCH || n + 1 == groups {
            in_flight.push_back(store.submit(std::mem::take(&mut w)));
            since_open += batched;
            batched = 0;
            if in_flight.len() > 2 {
                if let Some(f) = in_flight.pop_front() {
                    f.await.map_err(|e| e.to_string())?;
                }
            }
            if since_open >= REOPEN_EVERY && n + 1 < groups {
                for f in in_flight.drain(..) {
                    f.await.map_err(|e| e.to_string())?;
                }
                store.shutdown().map_err(|e| e.to_string())?;
                store = open_store(data, keys.journal_key()).await?;
                since_open = 0;
            }
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            let rate = ((n + 1) * members) as f64 / start.elapsed().as_secs_f64();
            eprintln!("seed: {}/{groups} groups ({rate:.0} memberships/s)", n + 1);
        }
    }
    for f in in_flight {
        f.await.map_err(|e| e.to_string())?;
    }
    store.shutdown().map_err(|e| e.to_string())?;
    Ok(ids)
}

/// Earnings of `ENTRIES_PER_WALLET` each into `entries / ENTRIES_PER_WALLET`
/// wallets, as the wallets' actors write them (the transfer, its chain
/// record, the wallet's entry and account, the revenue account), in write
/// sets of `LEDGER_BATCH`. Ends without a checkpoint (as a kill would), so
/// the journal written since the last one is replayed at the next start.
async fn seed_ledger(data: &Path, entries: u64) -> Result<(), String> {
    use crate::domain::ids::TransferId;
    use crate::domain::ledger::{
        self, Account, AccountId, Entry, JournalRecord, Kind, Reason, Spec,
    };
    const ENTRIES_PER_WALLET: u64 = 1_000;
    const LEDGER_BATCH: u64 = 5_000;
    let keys = KeyRing::load_or_create(data).map_err(|e| e.to_string())?;
    let store = open_store(data, keys.journal_key()).await?;
    let now = chrono::Utc::now().timestamp();
    let mut revenue = Account::open(AccountId::Revenue("task_completed".into()));
    let mut wallet = Account::open(AccountId::Wallet(UserId::random()));
    let mut in_flight = VecDeque::new();
    let mut w = WriteSet::new();
    let (mut last, start) = (Instant::now(), Instant::now());
    for i in 0..entries {
        if i > 0 && i % ENTRIES_PER_WALLET == 0 {
            w.account(&wallet);
            wallet = Account::open(AccountId::Wallet(UserId::random()));
        }
        let spec = Spec {
            id: TransferId::derive("earning", &[b"seed", &i.to_le_bytes()]),
            debit: revenue.id.clone(),
            credit: wallet.id.clone(),
            amount: 1 + i % 500,
            kind: Kind::Single,
            reason: Reason::Earning,
            user_data: String::new(),
        };
        let d = ledger::decide(&spec, &revenue, None, now).map_err(|e| format!("{e:?}"))?;
        revenue.apply(&d.debit).map_err(|e| format!("{e:?}"))?;
        wallet.apply(&d.credit()).map_err(|e| format!("{e:?}"))?;
        w.new_transfer(&d.transfer);
        w.journal(&JournalRecord {
            transfer: d.transfer.clone(),
            debit: d.debit,
            credit: d.credit(),
        });
        w.entry(&Entry::of(&d.transfer, &wallet, d.credit()));
        if (i + 1) % LEDGER_BATCH == 0 || i + 1 == entries {
            w.account(&wallet);
            w.account(&revenue);
            in_flight.push_back(store.submit(std::mem::take(&mut w)));
            if in_flight.len() > 2 {
                if let Some(f) = in_flight.pop_front() {
                    f.await.map_err(|e| e.to_string())?;
                }
            }
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            let rate = (i + 1) as f64 / start.elapsed().as_secs_f64();
            eprintln!("seed: {}/{entries} ledger entries ({rate:.0}/s)", i + 1);
        }
    }
    for f in in_flight {
        f.await.map_err(|e| e.to_string())?;
    }
    store.abandon();
    Ok(())
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
    groups: &[GroupId],
) -> Result<Value, String> {
    let pid = server.pid();
    let api = Api {
        c: client(a.connections),
        base: base.to_string(),
        admin: admin.to_string(),
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
