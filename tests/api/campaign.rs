//! The crash campaign: rounds of a randomised mixed workload (joins, join
//! requests and approvals, earnings, packet creates and claims, payouts
//! through the provider simulator) against the real server, each ended by
//! `kill -9` at a random moment, then a restart and the invariants:
//!
//! - the server answers `/healthz` within 5 s of the restart;
//! - every acknowledged (2xx) write is there: memberships, approvals,
//!   earnings (sending one again answers 200 "already there", never 201),
//!   packets and claims (with the same amount);
//! - the books check is clean (sum zero, balances equal entries, chain intact);
//! - no group is over its member limit; no packet paid more than its total or
//!   one user twice; every expired packet gets settled (no hold leaked);
//! - every acknowledged payout is there; at the end every payout reaches a
//!   final state and the provider paid no payout twice.
//!
//! `cargo test` runs 3 short rounds with a random seed (printed). For a longer
//! campaign, or to replay a seed:
//! `QRGATE_CAMPAIGN_ROUNDS=20 QRGATE_CAMPAIGN_SEED=1234 cargo test --test integration campaign -- --nocapture`

use super::helpers::*;
use super::payouts::Sim;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

const CONFIG: &str = "[limits]\ngroup_joins_per_minute = 60000\ngroup_joins_per_minute_max = 60000\nuser_joins_per_minute = 100000\n\
[packets]\nmin_ttl_seconds = 1\nclaims_per_minute_per_user = 100000\n[wallets]\nearning_max_fen = 100000\n";

/// Everything the server acknowledged so far.
#[derive(Default, Clone)]
struct Acked {
    /// (group, user) memberships answered 200 (joins and approvals).
    members: HashSet<(String, String)>,
    /// (group, request id, user) join requests answered 202.
    requests: Vec<(String, String, String)>,
    /// event id -> (user, amount)
    earnings: HashMap<String, (String, u64)>,
    /// packet id -> total
    packets: HashMap<String, u64>,
    /// (packet, user) -> amount
    claims: HashMap<(String, String), u64>,
    /// payout id -> its user's token
    payouts: HashMap<String, String>,
}

struct World {
    owner: String,
    /// (group id, invitation token, approval required)
    groups: Vec<(String, String, bool)>,
    /// (user id, token)
    users: Vec<(String, String)>,
    /// Users with money and a linked payment account: (user id, token).
    payees: Vec<(String, String)>,
}

async fn setup(app: &TestApp, sim: &Sim) -> World {
    let (_, owner) = app.user("owner").await;
    let mut groups = Vec::new();
    for i in 0..6 {
        let approval = i % 3 == 2;
        let g = app
            .group(
                &owner,
                json!({"name": format!("g{i}"), "member_limit": 100, "approval_required": approval}),
            )
            .await;
        let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
        groups.push((g, tok, approval));
    }
    let mut users = Vec::new();
    for i in 0..120 {
        users.push(app.user(&format!("u{i}")).await);
    }
    let mut payees = Vec::new();
    for i in 0..8 {
        payees.push(
            app.payee(sim, &format!("p{i}"), 30_000, &format!("o-p{i}"))
                .await,
        );
    }
    World {
        owner,
        groups,
        users,
        payees,
    }
}

/// One request of the workload, recorded if acknowledged.
async fn step(
    base: &str,
    c: &awc::Client,
    w: &World,
    rng: &RefCell<SmallRng>,
    acked: &RefCell<Acked>,
    round: usize,
    n: u64,
) -> Result<(), ()> {
    let call =
        |method: &str, path: String, token: String, body: Option<Value>, key: Option<String>| {
            let mut req = match method {
                "POST" => c.post(format!("{base}{path}")),
                _ => c.get(format!("{base}{path}")),
            }
            .insert_header(("Authorization", format!("Bearer {token}")));
            if let Some(k) = key {
                req = req.insert_header(("Idempotency-Key", k));
            }
            async move {
                let mut r = match body {
                    Some(b) => req.send_json(&b).await,
                    None => req.send().await,
                }
                .map_err(|_| ())?;
                let s = r.status().as_u16();
                let b = r.body().limit(1 << 22).await.map_err(|_| ())?;
                Ok::<_, ()>((
                    s,
                    serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
                ))
            }
        };
    let (kind, u, g) = {
        let mut r = rng.borrow_mut();
        (
            r.random_range(0..100u32),
            r.random_range(0..w.users.len()),
            r.random_range(0..w.groups.len()),
        )
    };
    let (uid, utok) = w.users[u].clone();
    match kind {
        0..=29 => {
            let (gid, itok, _) = w.groups[g].clone();
            let (s, v) = call(
                "POST",
                "/v1/join".into(),
                utok,
                Some(json!({"token": itok})),
                None,
            )
            .await?;
            match s {
                200 => {
                    acked.borrow_mut().members.insert((gid, uid));
                }
                202 => {
                    let rid = v["request_id"].as_str().unwrap_or_default().to_string();
                    acked.borrow_mut().requests.push((gid, rid, uid));
                }
                _ => {}
            }
        }
        30..=39 => {
            let pending = {
                let a = acked.borrow();
                let i = rng.borrow_mut().random_range(0..a.requests.len().max(1));
                a.requests.get(i).cloned()
            };
            if let Some((gid, rid, ruser)) = pending {
                let path = format!("/v1/groups/{gid}/requests/{rid}/approve");
                let (s, _) = call("POST", path, w.owner.clone(), Some(json!({})), None).await?;
                if s == 200 {
                    acked.borrow_mut().members.insert((gid, ruser));
                }
            }
        }
        40..=64 => {
            let amount = rng.borrow_mut().random_range(1..500u64);
            let event = format!("ev-{round}-{n}");
            let body = json!({"event_id": event, "user_id": uid, "kind": "task_completed", "amount": amount});
            let (s, _) = call(
                "POST",
                "/v1/earnings".into(),
                ADMIN.into(),
                Some(body),
                None,
            )
            .await?;
            if s == 201 {
                acked.borrow_mut().earnings.insert(event, (uid, amount));
            }
        }
        90..=99 => {
            let (p, amount) = {
                let mut r = rng.borrow_mut();
                (
                    r.random_range(0..w.payees.len()),
                    r.random_range(100..300u64),
                )
            };
            let (_, ptok) = w.payees[p].clone();
            let key = Some(format!("po-{round}-{n}"));
            let body = Some(json!({ "amount": amount }));
            let (s, v) = call("POST", "/v1/payouts".into(), ptok.clone(), body, key).await?;
            if s == 202 {
                let id = v["id"].as_str().unwrap_or_default().to_string();
                acked.borrow_mut().payouts.insert(id, ptok);
            }
        }
        65..=74 => {
            let (count, ttl) = {
                let mut r = rng.borrow_mut();
                (r.random_range(1..8u64), r.random_range(1..6u32))
            };
            let total = count * 10;
            let body = json!({"total": total, "count": count, "mode": "lucky", "ttl_seconds": ttl});
            let key = Some(format!("pk-{round}-{n}"));
            let (s, v) = call("POST", "/v1/packets".into(), utok, Some(body), key).await?;
            if s == 201 {
                let id = v["id"].as_str().unwrap_or_default().to_string();
                acked.borrow_mut().packets.insert(id, total);
            }
        }
        _ => {
            let packet = {
                let a = acked.borrow();
                let ids: Vec<&String> = a.packets.keys().collect();
                (!ids.is_empty()).then(|| ids[rng.borrow_mut().random_range(0..ids.len())].clone())
            };
            if let Some(p) = packet {
                let path = format!("/v1/packets/{p}/claim");
                let (s, v) = call("POST", path, utok, Some(json!({})), None).await?;
                if s == 200 {
                    let amount = v["amount"].as_u64().unwrap_or(0);
                    acked.borrow_mut().claims.insert((p, uid), amount);
                }
            }
        }
    }
    Ok(())
}

async fn check(app: &TestApp, w: &World, acked: &Acked) {
    // Memberships, and no group over its limit.
    let mut members: HashMap<String, HashSet<String>> = HashMap::new();
    for (gid, _, _) in &w.groups {
        let (s, v) = app
            .get(&format!("/v1/groups/{gid}/members"), Some(&w.owner))
            .await;
        assert_eq!(s, 200, "{v}");
        let list = v["members"].as_array().cloned().unwrap_or_default();
        assert!(
            list.len() <= 100,
            "group {gid} over its limit: {}",
            list.len()
        );
        members.insert(
            gid.clone(),
            list.iter().map(|m| s_(&m["user_id"])).collect(),
        );
    }
    for (gid, uid) in &acked.members {
        assert!(
            members[gid].contains(uid),
            "acknowledged membership of {uid} in {gid} lost"
        );
    }
    // Earnings: sending an acknowledged one again finds it there.
    for (event, (uid, amount)) in &acked.earnings {
        let (s, v) = app.earn(event, uid, *amount).await;
        assert_eq!(s, 200, "acknowledged earning {event} lost or changed: {v}");
    }
    // Packets and their claims.
    for (id, total) in &acked.packets {
        let (s, v) = app
            .get(&format!("/v1/packets/{id}?claims_limit=1000"), Some(ADMIN))
            .await;
        assert_eq!(s, 200, "acknowledged packet {id} lost: {v}");
        assert!(v["claimed_amount"].as_u64().unwrap_or(0) <= *total, "{v}");
        let claims = v["claims"].as_array().cloned().unwrap_or_default();
        let users: HashSet<String> = claims.iter().map(|c| s_(&c["user_id"])).collect();
        assert_eq!(users.len(), claims.len(), "a user paid twice: {v}");
        for ((p, uid), amount) in &acked.claims {
            if p == id {
                let got = claims.iter().find(|c| c["user_id"] == uid.as_str());
                assert_eq!(
                    got.and_then(|c| c["amount"].as_u64()),
                    Some(*amount),
                    "acknowledged claim of {uid} on {p} lost"
                );
            }
        }
    }
    for (id, tok) in &acked.payouts {
        let (s, v) = app.get(&format!("/v1/payouts/{id}"), Some(tok)).await;
        assert_eq!(s, 200, "acknowledged payout {id} lost: {v}");
    }
    app.books_clean().await;
}

async fn campaign(rounds: usize, seed: u64) {
    eprintln!(
        "crash campaign: {rounds} rounds, seed {seed} (replay with QRGATE_CAMPAIGN_SEED={seed})"
    );
    // The kill schedule replays exactly from the seed; the workload's order
    // also depends on timing (24 clients share one generator).
    let mut schedule = SmallRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let rng = RefCell::new(SmallRng::seed_from_u64(seed));
    let sim = Sim::start();
    let mut app = TestApp::spawn_with(&format!(
        "{CONFIG}{}",
        sim.config("daily_max_count = 100000\ndaily_max_fen = 100000000\n")
    ))
    .await;
    let w = setup(&app, &sim).await;
    let acked = Rc::new(RefCell::new(Acked::default()));
    for round in 0..rounds {
        let run_ms = schedule.random_range(100..1200u64);
        let stop = Rc::new(RefCell::new(false));
        let base = app.base.clone();
        let c = client();
        let steps = Rc::new(RefCell::new(0u64));
        let workers = (0..24).map(|k| {
            let (base, c, w, rng, acked, stop) = (&base, &c, &w, &rng, &acked, stop.clone());
            let steps = steps.clone();
            async move {
                let mut n = k as u64 * 1_000_000;
                while !*stop.borrow() {
                    n += 1;
                    if step(base, c, w, rng, acked, round, n).await.is_err() {
                        break; // the server is gone
                    }
                    *steps.borrow_mut() += 1;
                }
            }
        });
        let killer = async {
            actix_web::rt::time::sleep(Duration::from_millis(run_ms)).await;
            app.kill9();
            *stop.borrow_mut() = true;
        };
        futures_util::future::join(futures_util::future::join_all(workers), killer).await;
        let t0 = Instant::now();
        app.restart().await;
        let up = t0.elapsed();
        assert!(
            up < Duration::from_secs(5),
            "round {round}: healthy after {up:?}"
        );
        let a = acked.borrow().clone();
        eprintln!(
            "round {round}: {} requests answered, killed after {run_ms} ms, healthy {} ms after restart; acknowledged so far: {} members, {} earnings, {} packets, {} claims, {} payouts",
            steps.borrow(),
            up.as_millis(),
            a.members.len(),
            a.earnings.len(),
            a.packets.len(),
            a.claims.len(),
            a.payouts.len()
        );
        check(&app, &w, &a).await;
    }
    // Every packet expires within 6 s: all of them get settled.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ids: Vec<String> = acked.borrow().packets.keys().cloned().collect();
    for id in ids {
        loop {
            let (_, v) = app.get(&format!("/v1/packets/{id}"), None).await;
            if v["status"] == "closed" {
                break;
            }
            assert!(Instant::now() < deadline, "packet {id} never settled: {v}");
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Every payout reaches a final state, and none was paid twice.
    let payouts: Vec<(String, String)> = acked
        .borrow()
        .payouts
        .iter()
        .map(|(id, tok)| (id.clone(), tok.clone()))
        .collect();
    for (id, tok) in &payouts {
        app.settled(tok, id).await;
    }
    let mut seen = HashSet::new();
    for t in sim.transfers().await {
        assert!(seen.insert(s_(&t["partner_trade_no"])), "paid twice: {t}");
    }
    app.books_clean().await;
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[actix_web::test]
async fn crash_campaign_keeps_every_acknowledged_write() {
    let seed = env_or("QRGATE_CAMPAIGN_SEED", rand::random::<u32>() as u64);
    campaign(env_or("QRGATE_CAMPAIGN_ROUNDS", 3) as usize, seed).await;
}
