//! Scenarios made of heterogeneous steps, each one measured HTTP request:
//! `approvals`, `payouts` and `mixed` (a weighted mix of their request kinds
//! and of joins, earnings, claims and scans).
//!
//! Each kind of request is a component with its setup (public and admin API,
//! not measured), a step (the measured request, with its bookkeeping) and its
//! invariant checks, so `mixed` is those components side by side.

mod payouts;
pub use payouts::Payouts;

use super::record::Recorder;
use super::sim::SimApi;
use super::{field, outcome, run_all, Api, Check, Row, Tally};
use actix_web::http::Method;
use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

/// A step's answer: its kind (the outcome's prefix) and the HTTP result;
/// `None` when there was nothing to do (e.g. no request to approve yet).
pub type StepOut = Option<(&'static str, Result<(u16, Bytes), String>)>;

/// Run `step(worker, k)` on `conns` concurrent workers until `limit`
/// measured steps or `duration`; `pace` is a pause between a worker's steps
/// (not measured).
pub async fn drive_steps<F, Fut>(
    name: &str,
    conns: usize,
    limit: u64,
    duration: Duration,
    pace: Duration,
    rec: &Recorder,
    step: F,
) -> Result<Row, String>
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = StepOut>,
{
    let (next, sent, start) = (Cell::new(0u64), Cell::new(0u64), Instant::now());
    let deadline = start + duration;
    let step = &step;
    let worker = |w: usize| {
        let (next, sent) = (&next, &sent);
        async move {
            let mut t = Tally::new()?;
            while sent.get() < limit && Instant::now() < deadline {
                let k = next.get();
                next.set(k + 1);
                sent.set(sent.get() + 1);
                let t0 = Instant::now();
                let Some((kind, res)) = step(w, k).await else {
                    sent.set(sent.get() - 1);
                    actix_web::rt::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                let ok = t.record(micros, kind, res).await;
                rec.record(micros, ok);
                if !pace.is_zero() {
                    actix_web::rt::time::sleep(pace).await;
                }
            }
            Ok::<_, String>(t)
        }
    };
    let parts = join_all((0..conns).map(worker)).await;
    let secs = start.elapsed().as_secs_f64();
    let mut all = Tally::new()?;
    for part in parts {
        all.merge(part?)?;
    }
    Ok(all.into_row(name, conns, secs))
}

impl Tally {
    /// Count one answer under `kind outcome`; whether it was a 2xx.
    async fn record(&mut self, micros: u64, kind: &str, res: Result<(u16, Bytes), String>) -> bool {
        self.hist.saturating_record(micros.max(1));
        let (key, ok) = match res {
            Ok((s, b)) => (outcome(s, &b), (200..300).contains(&s)),
            Err(e) => {
                self.first_err.get_or_insert(e);
                actix_web::rt::time::sleep(Duration::from_millis(10)).await; // no busy loop
                ("transport_error".to_string(), false)
            }
        };
        self.ok += u64::from(ok);
        let key = if kind.is_empty() {
            key
        } else {
            format!("{kind} {key}")
        };
        *self.outcomes.entry(key).or_insert(0) += 1;
        ok
    }
}

/// Whether a write's answer was lost: no answer (the node died, the
/// connection broke) or a 5xx (e.g. `node_unavailable`: the owner took a
/// forward and did not answer). It may or may not have been applied; the
/// harness sends it again after the run, as a client would, and counts it
/// by that answer.
pub(crate) fn lost(res: &Result<(u16, Bytes), String>) -> bool {
    match res {
        Ok((s, _)) => *s >= 500,
        Err(_) => true,
    }
}

/// The error `code` of an answer.
fn code_of(b: &[u8]) -> String {
    serde_json::from_slice::<Value>(b)
        .ok()
        .and_then(|v| v["code"].as_str().map(String::from))
        .unwrap_or_default()
}

/// 2xx with a JSON body: that body.
fn json_2xx(res: &Result<(u16, Bytes), String>) -> Option<Value> {
    match res {
        Ok((s, b)) if (200..300).contains(s) => serde_json::from_slice(b).ok(),
        _ => None,
    }
}

/// `n` users created with the admin token: (user id, session token).
pub async fn users(
    api: &Api,
    admin: &str,
    label: &str,
    n: usize,
    conc: usize,
) -> Result<Vec<(String, String)>, String> {
    run_all(label, n, conc, |i| async move {
        let v = api
            .call(
                Method::POST,
                "/v1/users",
                admin,
                json!({ "name": format!("load-{label}-{i}") }),
            )
            .await?;
        Ok((field(&v, "user_id")?, field(&v, "token")?))
    })
    .await
}

/// Request `k`'s (group, user) when every group gets one join per round
/// and every (user, group) pair is distinct for `users` rounds.
fn pair(k: u64, groups: usize, users: usize) -> (usize, usize) {
    let (g, u) = (groups as u64, users as u64);
    ((k % g) as usize, ((k % g + k / g) % u) as usize)
}

/// A group joined through one invitation: id, owner's token, `{"token"}` body.
pub struct Group {
    pub id: String,
    pub owner: String,
    pub body: Bytes,
}

async fn groups(
    api: &Api,
    owners: &[(String, String)],
    label: &str,
    n: usize,
    spec: Value,
    conc: usize,
) -> Result<Vec<Group>, String> {
    let spec = &spec;
    run_all(label, n, conc, |i| async move {
        let owner = &owners[i % owners.len()].1;
        let mut body = spec.clone();
        body["name"] = json!(format!("load {label} {i}"));
        let v = api.call(Method::POST, "/v1/groups", owner, body).await?;
        let id = field(&v, "id")?;
        let path = format!("/v1/groups/{id}/invites");
        let inv = api.call(Method::POST, &path, owner, json!({})).await?;
        let body = Bytes::from(json!({ "token": field(&inv, "token")? }).to_string());
        Ok(Group {
            id,
            owner: owner.clone(),
            body,
        })
    })
    .await
}

// ---------------------------------------------------------------- joins (open groups)

/// Joins into open 500-seat groups.
pub struct Joins {
    groups: Vec<Group>,
    users: Vec<(String, String)>,
    next: Cell<u64>,
    /// The users each group has let in (answered 200).
    joined: RefCell<Vec<HashSet<usize>>>,
    /// Joins whose answer was lost: (group, user).
    lost: RefCell<Vec<(usize, usize)>>,
}

impl Joins {
    pub async fn setup(
        api: &Api,
        admin: &str,
        n_groups: usize,
        users: Vec<(String, String)>,
        conc: usize,
    ) -> Result<Joins, String> {
        let owners = self::users(api, admin, "owner", (n_groups / 50).clamp(1, 300), conc).await?;
        let spec = json!({"member_limit": 500});
        let groups = groups(api, &owners, "open group", n_groups, spec, conc).await?;
        Ok(Joins {
            joined: RefCell::new(vec![HashSet::new(); groups.len()]),
            lost: RefCell::new(Vec::new()),
            groups,
            users,
            next: Cell::new(0),
        })
    }

    pub async fn step(&self, api: &Api) -> StepOut {
        let k = self.next.get();
        self.next.set(k + 1);
        let (g, u) = pair(k, self.groups.len(), self.users.len());
        let res = api
            .raw(
                Method::POST,
                "/v1/join",
                &self.users[u].1,
                self.groups[g].body.clone(),
                None,
            )
            .await;
        if matches!(&res, Ok((200, _))) {
            self.joined.borrow_mut()[g].insert(u);
        } else if lost(&res) {
            self.lost.borrow_mut().push((g, u));
        }
        Some(("join", res))
    }

    /// Send the joins whose answer was lost again: a member now (200, or
    /// `already_member`) counts as joined.
    pub async fn settle_lost(&self, api: &Api) -> Result<(), String> {
        let lost = std::mem::take(&mut *self.lost.borrow_mut());
        for (g, u) in lost {
            let body = self.groups[g].body.clone();
            let (s, b) = api
                .again(Method::POST, "/v1/join", &self.users[u].1, body, None)
                .await?;
            if s == 200 || code_of(&b) == "already_member" {
                self.joined.borrow_mut()[g].insert(u);
            }
        }
        Ok(())
    }

    pub async fn check(&self, api: &Api) -> Result<Vec<Check>, String> {
        self.settle_lost(api).await?;
        let (mut within, mut exact) = (0, 0);
        let joined: Vec<u64> = self
            .joined
            .borrow()
            .iter()
            .map(|j| j.len() as u64)
            .collect();
        for (g, group) in self.groups.iter().enumerate() {
            let path = format!("/v1/groups/{}", group.id);
            let v = api
                .call(Method::GET, &path, &group.owner, Value::Null)
                .await?;
            let (count, limit) = (v["member_count"].as_u64(), v["member_limit"].as_u64());
            within += u64::from(count.zip(limit).is_some_and(|(c, l)| c <= l));
            exact += u64::from(count == Some(1 + joined[g]));
        }
        let n = self.groups.len() as u64;
        Ok(vec![
            ("open groups within their member limit", within, n),
            (
                "open groups with member count = owner + joins answered 200",
                exact,
                n,
            ),
        ])
    }
}

// ---------------------------------------------------------------- approvals

/// Joins into approval-required groups (202 pending) and their approval by
/// the owner or, one in four, the operator (admin token).
pub struct Approvals {
    groups: Vec<Group>,
    users: Vec<(String, String)>,
    admin: String,
    next_join: Cell<u64>,
    /// Pending requests not yet approved: (group, request id, user).
    queue: RefCell<VecDeque<(usize, String, usize)>>,
    requested: RefCell<Vec<u64>>,
    approved: RefCell<Vec<Vec<usize>>>,
    /// Requests whose answer was lost: (group, user).
    lost_requests: RefCell<Vec<(usize, usize)>>,
    /// Approvals whose answer was lost: (group, user).
    lost_approvals: RefCell<Vec<(usize, usize)>>,
}

impl Approvals {
    pub async fn setup(
        api: &Api,
        admin: &str,
        n_groups: usize,
        users: Vec<(String, String)>,
        conc: usize,
    ) -> Result<Approvals, String> {
        let owners = self::users(api, admin, "moderator", (n_groups / 50).clamp(1, 300), conc);
        let owners = owners.await?;
        let spec = json!({"member_limit": 100, "approval_required": true});
        let groups = groups(api, &owners, "approval group", n_groups, spec, conc).await?;
        Ok(Approvals {
            requested: RefCell::new(vec![0; groups.len()]),
            approved: RefCell::new(vec![Vec::new(); groups.len()]),
            lost_requests: RefCell::new(Vec::new()),
            lost_approvals: RefCell::new(Vec::new()),
            groups,
            users,
            admin: admin.to_string(),
            next_join: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
        })
    }

    /// A join into an approval group: 202 pending (queued for approval) or,
    /// once members and pending requests fill the seats, 409 group_full.
    pub async fn join(&self, api: &Api) -> StepOut {
        let k = self.next_join.get();
        self.next_join.set(k + 1);
        let (g, u) = pair(k, self.groups.len(), self.users.len());
        let res = api
            .raw(
                Method::POST,
                "/v1/join",
                &self.users[u].1,
                self.groups[g].body.clone(),
                None,
            )
            .await;
        if let (Ok((202, _)), Some(v)) = (&res, json_2xx(&res)) {
            if let Some(rid) = v["request_id"].as_str() {
                self.queue.borrow_mut().push_back((g, rid.to_string(), u));
                self.requested.borrow_mut()[g] += 1;
            }
        } else if lost(&res) {
            self.lost_requests.borrow_mut().push((g, u));
        }
        Some(("request", res))
    }

    /// Approve the oldest pending request; `None` when there is none.
    pub async fn approve(&self, api: &Api, k: u64) -> StepOut {
        let (g, rid, u) = self.queue.borrow_mut().pop_front()?;
        let group = &self.groups[g];
        let who = if k.is_multiple_of(4) {
            &self.admin
        } else {
            &group.owner
        };
        let path = format!("/v1/groups/{}/requests/{rid}/approve", group.id);
        let res = api
            .raw(Method::POST, &path, who, Bytes::from_static(b"{}"), None)
            .await;
        if matches!(&res, Ok((200, _))) {
            self.approved.borrow_mut()[g].push(u);
        } else if lost(&res) {
            self.lost_approvals.borrow_mut().push((g, u));
        }
        Some(("approve", res))
    }

    /// Settle the writes whose answer was lost: a request is sent again (a
    /// pending request now, 202 or `request_pending`, counts as requested);
    /// an approval counts if its user is a member.
    pub async fn settle_lost(&self, api: &Api) -> Result<(), String> {
        let lost = std::mem::take(&mut *self.lost_requests.borrow_mut());
        for (g, u) in lost {
            let body = self.groups[g].body.clone();
            let (s, b) = api
                .again(Method::POST, "/v1/join", &self.users[u].1, body, None)
                .await?;
            if s == 202 || code_of(&b) == "request_pending" {
                self.requested.borrow_mut()[g] += 1;
            }
        }
        let lost = std::mem::take(&mut *self.lost_approvals.borrow_mut());
        for (g, u) in lost {
            let group = &self.groups[g];
            let path = format!("/v1/groups/{}/members", group.id);
            let m = api
                .call(Method::GET, &path, &group.owner, Value::Null)
                .await?;
            let member = m["members"]
                .as_array()
                .is_some_and(|a| a.iter().any(|m| m["user_id"] == self.users[u].0.as_str()));
            if member {
                self.approved.borrow_mut()[g].push(u);
            }
        }
        Ok(())
    }

    pub async fn check(&self, api: &Api) -> Result<Vec<Check>, String> {
        self.settle_lost(api).await?;
        let approved = self.approved.borrow().clone();
        let requested = self.requested.borrow().clone();
        let (mut within, mut exact, mut found, mut pending) = (0, 0, 0, 0);
        for (g, group) in self.groups.iter().enumerate() {
            let path = format!("/v1/groups/{}", group.id);
            let v = api
                .call(Method::GET, &path, &group.owner, Value::Null)
                .await?;
            let (count, limit) = (v["member_count"].as_u64(), v["member_limit"].as_u64());
            within += u64::from(count.zip(limit).is_some_and(|(c, l)| c <= l));
            pending += v["pending_requests"].as_u64().unwrap_or(u64::MAX / 4);
            let path = format!("/v1/groups/{}/members", group.id);
            let m = api
                .call(Method::GET, &path, &group.owner, Value::Null)
                .await?;
            let ids: HashSet<&str> = m["members"]
                .as_array()
                .map(|a| a.iter().filter_map(|m| m["user_id"].as_str()).collect())
                .unwrap_or_default();
            let want = 1 + approved[g].len() as u64;
            exact += u64::from(count == Some(want) && ids.len() as u64 == want);
            found += approved[g]
                .iter()
                .filter(|&&u| ids.contains(self.users[u].0.as_str()))
                .count() as u64;
        }
        let n = self.groups.len() as u64;
        let total_approved: u64 = approved.iter().map(|a| a.len() as u64).sum();
        let total_requested: u64 = requested.iter().sum();
        Ok(vec![
            ("approval groups within their member limit", within, n),
            ("approved requests that are members", found, total_approved),
            (
                "approval groups with member count = owner + approvals (count and list)",
                exact,
                n,
            ),
            (
                "pending requests = answered 202 - approved",
                pending,
                total_requested - total_approved,
            ),
        ])
    }
}

// ---------------------------------------------------------------- earnings

/// Earnings (admin token) of 1 to 100 fen credited to a set of wallets.
pub struct Earnings {
    users: Vec<(String, String)>,
    run: String,
    next: Cell<u64>,
    credited: RefCell<Vec<u64>>,
    /// Earnings whose answer was lost: (user, body, amount).
    lost: RefCell<Vec<(usize, Bytes, u64)>>,
}

impl Earnings {
    pub fn new(users: Vec<(String, String)>, run: &str) -> Earnings {
        Earnings {
            credited: RefCell::new(vec![0; users.len()]),
            lost: RefCell::new(Vec::new()),
            users,
            run: run.to_string(),
            next: Cell::new(0),
        }
    }

    pub async fn step(&self, api: &Api, admin: &str) -> StepOut {
        let k = self.next.get();
        self.next.set(k + 1);
        let u = (k % self.users.len() as u64) as usize;
        let amount = 1 + k % 100;
        let body = json!({"event_id": format!("load-{}-earn-{k}", self.run),
                          "user_id": self.users[u].0, "kind": "task_completed", "amount": amount});
        let body = Bytes::from(body.to_string());
        let res = api
            .raw(Method::POST, "/v1/earnings", admin, body.clone(), None)
            .await;
        if matches!(&res, Ok((201, _))) {
            self.credited.borrow_mut()[u] += amount;
        } else if lost(&res) {
            self.lost.borrow_mut().push((u, body, amount));
        }
        Some(("earning", res))
    }

    /// Send the earnings whose answer was lost again (the event id makes
    /// it idempotent): 201 or 200 (the original) counts as credited.
    pub async fn settle_lost(&self, api: &Api, admin: &str) -> Result<(), String> {
        let lost = std::mem::take(&mut *self.lost.borrow_mut());
        for (u, body, amount) in lost {
            let (s, _) = api
                .again(Method::POST, "/v1/earnings", admin, body, None)
                .await?;
            if s == 200 || s == 201 {
                self.credited.borrow_mut()[u] += amount;
            }
        }
        Ok(())
    }

    pub async fn check(&self, api: &Api, admin: &str) -> Result<Vec<Check>, String> {
        self.settle_lost(api, admin).await?;
        let credited = self.credited.borrow().clone();
        let mut equal = 0;
        for (u, (_, token)) in self.users.iter().enumerate() {
            let w = api
                .call(Method::GET, "/v1/wallet", token, Value::Null)
                .await?;
            equal += u64::from(w["balance"].as_u64() == Some(credited[u]));
        }
        Ok(vec![(
            "earning wallets: balance = earnings answered 201",
            equal,
            self.users.len() as u64,
        )])
    }
}

// ---------------------------------------------------------------- claims

/// Red packet claims spread over campaign packets with a share for every user.
pub struct Claims {
    packets: Vec<String>,
    users: Vec<(String, String)>,
    next: Cell<u64>,
    /// The users each packet paid a share (answered 200).
    claimed: RefCell<Vec<HashSet<usize>>>,
    /// Claims whose answer was lost: (packet, user).
    lost: RefCell<Vec<(usize, usize)>>,
}

impl Claims {
    pub async fn setup(
        api: &Api,
        admin: &str,
        n: usize,
        users: Vec<(String, String)>,
        conc: usize,
    ) -> Result<Claims, String> {
        let per = users.len();
        let packets = run_all("packet", n, conc, |i| api.packet(admin, i, per)).await?;
        Ok(Claims {
            claimed: RefCell::new(vec![HashSet::new(); packets.len()]),
            lost: RefCell::new(Vec::new()),
            packets,
            users,
            next: Cell::new(0),
        })
    }

    pub async fn step(&self, api: &Api) -> StepOut {
        let k = self.next.get();
        self.next.set(k + 1);
        let (p, u) = pair(k, self.packets.len(), self.users.len());
        let path = format!("/v1/packets/{}/claim", self.packets[p]);
        let res = api
            .raw(
                Method::POST,
                &path,
                &self.users[u].1,
                Bytes::from_static(b"{}"),
                None,
            )
            .await;
        if matches!(&res, Ok((200, _))) {
            self.claimed.borrow_mut()[p].insert(u);
        } else if lost(&res) {
            self.lost.borrow_mut().push((p, u));
        }
        Some(("claim", res))
    }

    /// Send the claims whose answer was lost again: a share paid now (200,
    /// or `already_claimed`) counts as claimed.
    pub async fn settle_lost(&self, api: &Api) -> Result<(), String> {
        let lost = std::mem::take(&mut *self.lost.borrow_mut());
        for (p, u) in lost {
            let path = format!("/v1/packets/{}/claim", self.packets[p]);
            let body = Bytes::from_static(b"{}");
            let (s, b) = api
                .again(Method::POST, &path, &self.users[u].1, body, None)
                .await?;
            if s == 200 || code_of(&b) == "already_claimed" {
                self.claimed.borrow_mut()[p].insert(u);
            }
        }
        Ok(())
    }

    pub async fn check(&self, api: &Api, admin: &str) -> Result<Vec<Check>, String> {
        self.settle_lost(api).await?;
        let claimed: Vec<u64> = self
            .claimed
            .borrow()
            .iter()
            .map(|c| c.len() as u64)
            .collect();
        let (mut recorded, mut within) = (0, 0);
        for (p, id) in self.packets.iter().enumerate() {
            let v = api
                .call(
                    Method::GET,
                    &format!("/v1/packets/{id}"),
                    admin,
                    Value::Null,
                )
                .await?;
            recorded += u64::from(v["claimed_count"].as_u64() == Some(claimed[p]));
            let (c, t) = (v["claimed_amount"].as_u64(), v["total"].as_u64());
            within += u64::from(c.zip(t).is_some_and(|(c, t)| c <= t));
        }
        let n = self.packets.len() as u64;
        Ok(vec![
            (
                "packets whose claims recorded = claims answered 200",
                recorded,
                n,
            ),
            ("packets whose claims sum to at most their total", within, n),
        ])
    }
}

// ---------------------------------------------------------------- scans

/// `GET /s/{code}` as a phone sends it.
pub struct Scans {
    codes: Vec<String>,
    next: Cell<u64>,
    answered: RefCell<Vec<u64>>,
}

impl Scans {
    pub async fn setup(api: &Api, admin: &str, n: usize, conc: usize) -> Result<Scans, String> {
        let codes = run_all("code", n, conc, |i| async move {
            let body = json!({"page": "/landing", "params": {"campaign": "load-mixed", "n": i}});
            let v = api.call(Method::POST, "/v1/codes", admin, body).await?;
            field(&v, "code")
        })
        .await?;
        Ok(Scans {
            answered: RefCell::new(vec![0; codes.len()]),
            codes,
            next: Cell::new(0),
        })
    }

    pub async fn step(&self, api: &Api) -> StepOut {
        let k = self.next.get();
        self.next.set(k + 1);
        let i = (k % self.codes.len() as u64) as usize;
        let req = api
            .c
            .get(format!("{}/s/{}", api.base, self.codes[i]))
            .insert_header(("Accept", "text/html"));
        let res = super::send(req, Bytes::new()).await;
        if matches!(&res, Ok((302, _))) {
            self.answered.borrow_mut()[i] += 1;
        }
        Some(("scan", res))
    }

    pub async fn check(&self, api: &Api, admin: &str) -> Result<Vec<Check>, String> {
        // Scan counts are flushed once a second.
        actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
        let answered = self.answered.borrow().clone();
        let mut equal = 0;
        for (i, code) in self.codes.iter().enumerate() {
            let path = format!("/v1/codes/{code}");
            let v = api.call(Method::GET, &path, admin, Value::Null).await?;
            equal += u64::from(v["scans"].as_u64() == Some(answered[i]));
        }
        Ok(vec![(
            "codes whose scans counted = resolutions answered 302",
            equal,
            self.codes.len() as u64,
        )])
    }
}

// ---------------------------------------------------------------- mixed

/// The request kinds of `mixed`, in `--mix` order.
pub const KINDS: [&str; 7] = [
    "join", "request", "approve", "earning", "payout", "claim", "scan",
];
pub const DEFAULT_MIX: &str = "join=25,request=15,approve=10,earning=15,payout=10,claim=15,scan=10";

/// Parse `kind=weight,...` (kinds from [`KINDS`], missing ones weigh 0).
pub fn parse_mix(s: &str) -> Result<[u64; 7], String> {
    let mut w = [0u64; 7];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--mix: `{part}` is not kind=weight"))?;
        let i = KINDS
            .iter()
            .position(|n| *n == k.trim())
            .ok_or_else(|| format!("--mix: unknown kind `{k}` (kinds: {})", KINDS.join(", ")))?;
        w[i] = v
            .trim()
            .parse()
            .map_err(|_| format!("--mix: weight of `{k}` is not a whole number"))?;
    }
    if w.iter().sum::<u64>() == 0 {
        return Err("--mix: every weight is 0".into());
    }
    if w[2] > 0 && w[1] == 0 {
        return Err("--mix: approve needs request (nothing to approve otherwise)".into());
    }
    Ok(w)
}

/// The kind of mixed request `k`: spread evenly by a multiplicative hash.
pub fn pick(weights: &[u64; 7], k: u64) -> usize {
    let total: u64 = weights.iter().sum();
    let mut x = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % total.max(1);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    0
}

/// The components of a mixed run (those with weight 0 are absent).
pub struct Mixed {
    pub weights: [u64; 7],
    pub joins: Option<Joins>,
    pub approvals: Option<Approvals>,
    pub earnings: Option<Earnings>,
    pub payouts: Option<Payouts>,
    pub claims: Option<Claims>,
    pub scans: Option<Scans>,
}

impl Mixed {
    pub async fn step(&self, api: &Api, admin: &str, k: u64) -> StepOut {
        match pick(&self.weights, k) {
            0 => self.joins.as_ref()?.step(api).await,
            1 => self.approvals.as_ref()?.join(api).await,
            2 => match self.approvals.as_ref()?.approve(api, k).await {
                Some(out) => Some(out),
                // nothing pending yet: send a request instead
                None => self.approvals.as_ref()?.join(api).await,
            },
            3 => self.earnings.as_ref()?.step(api, admin).await,
            4 => self.payouts.as_ref()?.step(api).await,
            5 => self.claims.as_ref()?.step(api).await,
            _ => self.scans.as_ref()?.step(api).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_spreads_by_weight() {
        let w = parse_mix(DEFAULT_MIX).expect("default mix");
        assert_eq!(w, [25, 15, 10, 15, 10, 15, 10]);
        let mut seen = [0u64; 7];
        for k in 0..100_000 {
            seen[pick(&w, k)] += 1;
        }
        for (i, n) in seen.iter().enumerate() {
            let want = w[i] * 1000;
            assert!(n.abs_diff(want) < want / 10 + 50, "{i}: {n} vs {want}");
        }
        assert_eq!(pick(&parse_mix("scan=1").expect("one kind"), 7), 6);
        assert!(parse_mix("join=x").is_err());
        assert!(parse_mix("nope=1").is_err());
        assert!(parse_mix("join=0").is_err());
        assert!(parse_mix("approve=1").is_err());
    }

    #[test]
    fn pairs_are_distinct_for_a_round_of_users() {
        let mut seen = HashSet::new();
        for k in 0..(7 * 13) {
            assert!(seen.insert(pair(k, 7, 13)));
        }
    }
}
