//! qrgate nodes in cluster mode: three real server processes over a real
//! 3-server NATS JetStream cluster on loopback, talked to over HTTP. Without
//! `nats-server` these print SKIPPED and pass, unless `QRGATE_REQUIRE_NATS=1`.

use super::cluster::Nats;
use super::helpers::{code, s_, TestApp, ADMIN};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SECRET: &str = "cluster-secret-for-tests-0123456789abcdef";

fn node_config(nats: &Nats, id: &str) -> String {
    format!(
        "[cluster]\nnats = [{}]\nnode_id = \"{id}\"\nsecret = \"{SECRET}\"\n",
        nats.urls
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Three nodes on `nats`, started one after the other.
async fn nodes(nats: &Nats) -> Vec<TestApp> {
    let mut out = Vec::new();
    for id in ["n1", "n2", "n3"] {
        out.push(TestApp::spawn_with(&node_config(nats, id)).await);
    }
    out
}

/// Ask until `ok` holds for the answer (another node applies a write within
/// milliseconds; 10 s is a failure).
async fn eventually(
    app: &TestApp,
    path: &str,
    token: &str,
    ok: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = app.get(path, Some(token)).await;
        if ok(s, &v) || Instant::now() > deadline {
            return (s, v);
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/healthz`: its status and its text.
async fn healthz(app: &TestApp) -> (u16, String) {
    let (s, v) = app.get("/healthz", None).await;
    (s, v.as_str().unwrap_or_default().to_string())
}

/// A join's status, 0 when the node was gone before it answered.
async fn try_join(app: &TestApp, token: &str, invite: &str) -> u16 {
    match app
        .client
        .post(format!("{}/v1/join", app.base))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({ "token": invite }))
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn member_ids(v: &Value) -> HashSet<String> {
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| s_(&m["user_id"]))
        .collect()
}

/// A user, a session, a group and an invitation made through one node work
/// through the others; a session ended on one node ends on every node; a
/// node restarted on its data dir catches up with what it missed.
#[actix_web::test]
async fn users_sessions_and_invitations_work_through_every_node() {
    let Some(nats) = Nats::start() else { return };
    let mut n = nodes(&nats).await;
    let (owner_id, owner) = n[0].user("owner").await;
    let g = n[0]
        .group(&owner, json!({"name": "hikers", "member_limit": 100}))
        .await;
    let (_, invite, _) = n[0].invite(&owner, &g, json!({})).await;

    // The owner's session, made on n1, on n2 and n3.
    for app in &n[1..] {
        let (s, v) = eventually(app, &format!("/v1/groups/{g}"), &owner, |s, _| s == 200).await;
        assert_eq!(s, 200, "{v}");
    }
    // The invitation's landing page through every node (served by the
    // group's owner, which counts the scan in the group's actor).
    for app in &n {
        let r = app
            .client
            .get(format!("{}/j/{invite}", app.base))
            .insert_header(("Accept", "text/html"))
            .send()
            .await
            .expect("landing page");
        assert_eq!(r.status().as_u16(), 200, "through {}", app.base);
    }

    // A user made on n3 joins through n2 with the invitation made on n1.
    let (joiner_id, joiner) = n[2].user("joiner").await;
    let (s, v) = n[1].join(&joiner, &invite).await;
    assert_eq!(s, 200, "{v}");
    let path = format!("/v1/groups/{g}/members");
    let (_, v) = eventually(&n[0], &path, &owner, |_, v| {
        member_ids(v).contains(&joiner_id)
    })
    .await;
    assert_eq!(
        member_ids(&v),
        HashSet::from([owner_id.clone(), joiner_id.clone()])
    );

    // A brand-new account joins at once through the node it was made on,
    // the group's owner being another node for two of the three.
    for (k, app) in n.iter().enumerate() {
        let (_, tok) = app.user(&format!("quick{k}")).await;
        let (s, v) = app.join(&tok, &invite).await;
        assert_eq!(s, 200, "through n{}: {v}", k + 1);
    }

    // Logged out on n2: refused on n1 and n3 too.
    let (s, _) = n[1]
        .call("DELETE", "/v1/sessions/current", Some(&joiner), None)
        .await;
    assert_eq!(s, 204);
    for app in [&n[0], &n[2]] {
        let (s, v) = eventually(app, &format!("/v1/groups/{g}"), &joiner, |s, _| s == 401).await;
        assert_eq!(s, 401, "{v}");
    }

    // n3 stops; n1 takes joins; n3 comes back on its data dir and sees them.
    n[2].kill9();
    let mut later = Vec::new();
    for i in 0..5 {
        let (uid, tok) = n[0].user(&format!("late{i}")).await;
        assert_eq!(n[0].join(&tok, &invite).await.0, 200);
        later.push(uid);
    }
    n[2].restart().await;
    let (s, v) = n[2].get(&path, Some(&owner)).await;
    assert_eq!(s, 200, "{v}");
    let seen = member_ids(&v);
    assert!(later.iter().all(|u| seen.contains(u)), "{v}");
    assert_eq!(seen.len(), 10, "{v}");
    let (s, body) = healthz(&n[2]).await;
    assert_eq!(s, 200);
    assert!(body.starts_with("ok\nnode n3\napplied "), "{body}");
    let _ = ADMIN;
}

/// Joins into one group sent round-robin through all three nodes: the
/// group fills to exactly its seats, never more, and every node agrees.
#[actix_web::test]
async fn joins_through_every_node_fill_a_group_exactly() {
    let Some(nats) = Nats::start() else { return };
    let n = nodes(&nats).await;
    const SEATS: usize = 500;
    const JOINERS: usize = 600;
    let (_, owner) = n[0].user("owner").await;
    let g = n[0]
        .group(&owner, json!({"name": "rush", "member_limit": SEATS}))
        .await;
    let (_, invite, _) = n[0].invite(&owner, &g, json!({})).await;
    let mut users = Vec::new();
    for i in 0..JOINERS {
        users.push(n[i % 3].user(&format!("u{i}")).await);
    }
    let started = Instant::now();
    let mut joined = HashSet::new();
    let mut other = Vec::new();
    // 12 at a time, each through the next node.
    for chunk in users.chunks(12).enumerate() {
        let (c, batch) = chunk;
        let calls = batch.iter().enumerate().map(|(i, (uid, tok))| {
            let app = &n[(c * 12 + i) % 3];
            let invite = invite.clone();
            async move { (uid.clone(), app.join(tok, &invite).await) }
        });
        for (uid, (s, v)) in futures_util::future::join_all(calls).await {
            match s {
                200 => {
                    joined.insert(uid);
                }
                _ => other.push((s, v["code"].as_str().unwrap_or("").to_string())),
            }
        }
    }
    eprintln!(
        "{JOINERS} joins through 3 nodes in {:?}: {} joined, others {:?}",
        started.elapsed(),
        joined.len(),
        other
            .iter()
            .fold(std::collections::BTreeMap::new(), |mut m, (s, c)| {
                *m.entry(format!("{s} {c}")).or_insert(0) += 1;
                m
            })
    );
    let mut refused_at_apply = 0.0;
    for app in &n {
        refused_at_apply += app.metric("qrgate_log_refused_at_apply_total").await;
    }
    let mut forwarded = 0.0;
    for app in &n {
        forwarded += app.metric("qrgate_forwards_total{outcome=\"sent\"}").await;
    }
    eprintln!(
        "entries refused at apply, summed over the nodes: {refused_at_apply}; requests forwarded to their group's owner: {forwarded}"
    );
    assert!(forwarded > 0.0, "joins reach the group's owner");
    assert!(
        joined.len() < SEATS,
        "never more than the seats (the owner holds one)"
    );
    assert!(
        other
            .iter()
            .all(|(s, c)| *s == 409 && c == "group_full" || *s == 503),
        "{other:?}"
    );
    // Every node agrees on the members: each 2xx is there, and the group is full.
    let path = format!("/v1/groups/{g}/members");
    for app in &n {
        let (_, v) = eventually(app, &path, &owner, |_, v| member_ids(v).len() == SEATS).await;
        let members = member_ids(&v);
        assert!(joined.iter().all(|u| members.contains(u)), "{v}");
        assert_eq!(members.len(), SEATS, "{v}");
    }
}

/// `kill -9` of the node that owns three busy groups in the middle of joins
/// into them: every join answered 2xx (through any node) is a member, and
/// the other nodes serve the groups again at once (within 30 s).
#[actix_web::test]
async fn a_node_killed_under_joins_loses_no_acknowledged_join() {
    let Some(nats) = Nats::start() else { return };
    let mut n = nodes(&nats).await;
    let (_, owner) = n[0].user("owner").await;
    // Three groups that one node owns: the one killed.
    let ids: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    let owner_of =
        |g: &str| qrgate::domain::placement::owner(&format!("group/{g}"), &ids).map(str::to_string);
    let mut groups = Vec::new();
    let mut victim = None;
    while groups.len() < 3 {
        let (g, tok) = n[0].open_groups(&owner, 1).await.remove(0);
        let o = owner_of(&g);
        if victim.is_none() {
            victim = o.clone();
        }
        if o == victim {
            groups.push((g, tok));
        }
    }
    let victim = victim.expect("an owner");
    let v = ids.iter().position(|i| *i == victim).expect("a node");
    let mut users = Vec::new();
    for i in 0..240 {
        users.push(n[i % 3].user(&format!("u{i}")).await);
    }
    let mut joined: Vec<(String, String)> = Vec::new();
    let mut killed_at = None;
    let mut first_after_kill = None;
    let pid = n[v].child.as_ref().map(|c| c.id()).expect("the owner runs");
    for (c, batch) in users.chunks(12).enumerate() {
        let live: Vec<&TestApp> = n.iter().filter(|a| a.child.is_some()).collect();
        let calls = batch.iter().enumerate().map(|(i, (uid, tok))| {
            let app = live[(c * 12 + i) % live.len()];
            let (g, invite) = groups[i % groups.len()].clone();
            async move { (uid.clone(), g, try_join(app, tok, &invite).await) }
        });
        // In the middle of one batch, with its joins in flight at the owner.
        let kill = async {
            if c == 10 {
                actix_web::rt::time::sleep(Duration::from_millis(3)).await;
                let status = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .expect("kill");
                assert!(status.success());
                Some(Instant::now())
            } else {
                None
            }
        };
        let (answers, at) =
            futures_util::future::join(futures_util::future::join_all(calls), kill).await;
        if let Some(at) = at {
            killed_at = Some(at);
            n[v].kill9();
        }
        for (uid, g, s) in answers {
            if s == 200 {
                joined.push((g, uid));
                if c > 10 && first_after_kill.is_none() {
                    first_after_kill = killed_at.map(|k| k.elapsed());
                }
            }
        }
    }
    let after = first_after_kill.expect("joins went on after the kill");
    eprintln!(
        "{} joins acknowledged; the first after the kill {after:?} after it",
        joined.len()
    );
    assert!(after < Duration::from_secs(30), "{after:?}");
    assert!(joined.len() > 200, "{}", joined.len());
    for app in n.iter().filter(|a| a.child.is_some()) {
        for (g, _) in &groups {
            let want: HashSet<&String> = joined
                .iter()
                .filter(|(jg, _)| jg == g)
                .map(|(_, u)| u)
                .collect();
            let path = format!("/v1/groups/{g}/members");
            let (_, v) = eventually(app, &path, &owner, |_, v| {
                let have = member_ids(v);
                want.iter().all(|u| have.contains(*u))
            })
            .await;
            let have = member_ids(&v);
            let missing: Vec<_> = want.iter().filter(|u| !have.contains(**u)).collect();
            assert!(
                missing.is_empty(),
                "acknowledged joins missing on {}: {missing:?}",
                app.base
            );
        }
    }
}

/// Nodes forward requests to each other signed with the cluster secret: a
/// forward signed with another secret, sent too long ago, or unsigned is
/// refused (403 `forward_refused`); one signed right is served.
#[actix_web::test]
async fn a_forged_forward_is_refused() {
    let Some(nats) = Nats::start() else { return };
    let app = TestApp::spawn_with(&node_config(&nats, "n1")).await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "guarded", "member_limit": 100}))
        .await;
    let target = format!("/v1/groups/{g}");
    let auth = format!("Bearer {owner}");
    let authorization: [(&str, &[u8]); 1] = [("authorization", auth.as_bytes())];
    let signed = |secret: &str, sent_ms: i64| sign_as_n2(secret, &target, &authorization, sent_ms);
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    let at = now_ms();
    let (s, v) = send(
        &app,
        &target,
        &owner,
        signed("another-secret-of-at-least-32-characters", at),
        at,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("forward_refused")),
        "{v}"
    );
    let old = at - 120_000;
    let (s, v) = send(&app, &target, &owner, signed(SECRET, old), old).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("forward_refused")),
        "{v}"
    );
    let (s, v) = send(&app, &target, &owner, "00".repeat(32), at).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("forward_refused")),
        "{v}"
    );
    let (s, v) = app
        .call_with(
            "GET",
            &target,
            Some(&owner),
            None,
            &[("x-qrgate-forward-from", "n2".to_string())],
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("forward_refused")),
        "{v}"
    );
    // A forward is served once its owner applied what the sender had. One
    // naming a position the log never reached waits: a write is then
    // refused (503), a read is served from what the owner applied (as
    // every read is when the log has no quorum).
    let far = "999999999".to_string();
    let body = json!({"description": "changed by a lagging forward"});
    let bytes = serde_json::to_vec(&body).expect("json");
    let at = now_ms();
    let headers: [(&str, &[u8]); 3] = [
        ("authorization", auth.as_bytes()),
        ("content-type", b"application/json"),
        ("x-qrgate-forward-position", far.as_bytes()),
    ];
    let signature = sign_as_n2_req(SECRET, "PATCH", &target, &headers, &bytes, at);
    let started = Instant::now();
    let (s, v) = send_req(
        &app,
        "PATCH",
        &target,
        &owner,
        signature,
        at,
        Some(&far),
        Some(body),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("storage_unavailable")),
        "{v}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let at = now_ms();
    let headers: [(&str, &[u8]); 2] = [
        ("authorization", auth.as_bytes()),
        ("x-qrgate-forward-position", far.as_bytes()),
    ];
    let signature = sign_as_n2(SECRET, &target, &headers, at);
    let started = Instant::now();
    let (s, v) = send_at(&app, &target, &owner, signature, at, Some(&far)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["description"], "", "the refused write left nothing: {v}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Signed with the cluster's secret: served.
    let at = now_ms();
    let (s, v) = send(&app, &target, &owner, signed(SECRET, at), at).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        app.metric("qrgate_forwards_total{outcome=\"refused\"}")
            .await,
        4.0
    );
}

/// The signature node n2 would give a GET of `target` with `headers`,
/// under the cluster secret `secret`.
fn sign_as_n2(secret: &str, target: &str, headers: &[(&str, &[u8])], sent_ms: i64) -> String {
    sign_as_n2_req(secret, "GET", target, headers, b"", sent_ms)
}

/// [`sign_as_n2`] for any method and body.
fn sign_as_n2_req(
    secret: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    sent_ms: i64,
) -> String {
    use qrgate::domain::forward::{sign, Forward};
    let key = blake3::derive_key("qrgate 2026 cluster forward", secret.as_bytes());
    sign(
        &key,
        &Forward {
            method,
            target,
            headers,
            body,
            from_node: "n2",
            sent_ms,
            hops: 1,
        },
    )
}

/// A GET of `target` as a forward from node n2 with `signature`.
async fn send(
    app: &TestApp,
    target: &str,
    token: &str,
    signature: String,
    sent_ms: i64,
) -> (u16, Value) {
    send_at(app, target, token, signature, sent_ms, None).await
}

/// [`send`], naming the log position the sender had applied.
async fn send_at(
    app: &TestApp,
    target: &str,
    token: &str,
    signature: String,
    sent_ms: i64,
    position: Option<&str>,
) -> (u16, Value) {
    send_req(
        app, "GET", target, token, signature, sent_ms, position, None,
    )
    .await
}

/// A forward from node n2 of any method and JSON body.
#[allow(clippy::too_many_arguments)]
async fn send_req(
    app: &TestApp,
    method: &str,
    target: &str,
    token: &str,
    signature: String,
    sent_ms: i64,
    position: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut headers = vec![
        ("x-qrgate-forward-from", "n2".to_string()),
        ("x-qrgate-forward-at", sent_ms.to_string()),
        ("x-qrgate-forward-hops", "1".to_string()),
        ("x-qrgate-forward-signature", signature),
    ];
    if let Some(p) = position {
        headers.push(("x-qrgate-forward-position", p.to_string()));
    }
    app.call_with(method, target, Some(token), body, &headers)
        .await
}

/// The log is trimmed below the latest snapshot; a node whose checkpoint
/// it was trimmed past (here a new node, its data dir empty) starts from
/// that snapshot, holds everything written before, and takes writes.
#[actix_web::test]
async fn a_new_node_starts_from_the_snapshot_once_the_log_is_trimmed() {
    let Some(nats) = Nats::start() else { return };
    let fast = "snapshot_secs = 1\n";
    let n1 = TestApp::spawn_with(&(node_config(&nats, "n1") + fast)).await;
    let (owner_id, owner) = n1.user("owner").await;
    let g = n1
        .group(&owner, json!({"name": "snapshotted", "member_limit": 100}))
        .await;
    let (_, invite, _) = n1.invite(&owner, &g, json!({})).await;
    let mut want = HashSet::from([owner_id]);
    for i in 0..20 {
        let (uid, tok) = n1.user(&format!("u{i}")).await;
        assert_eq!(n1.join(&tok, &invite).await.0, 200);
        want.insert(uid);
    }
    // The log client blocks: off this test's runtime.
    let urls = nats.urls.clone();
    let trimmed = std::thread::spawn(move || {
        let log = qrgate::storage::jetstream::StreamLog::connect(
            qrgate::storage::jetstream::LogOptions::new(urls),
        )
        .expect("connect");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let first = log.first().expect("first");
            if first > 1 || Instant::now() > deadline {
                return first;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .join()
    .expect("the log client");
    assert!(trimmed > 1, "the log was never trimmed");
    let mut n2 = TestApp::spawn_with(&(node_config(&nats, "n2") + fast)).await;
    assert!(
        n2.log().contains("installed the cluster's snapshot"),
        "{}",
        n2.log()
    );
    // n2 alone serves the group now (n1 is gone), from what it installed.
    drop(n1);
    let path = format!("/v1/groups/{g}/members");
    let (s, v) = n2.get(&path, Some(&owner)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(member_ids(&v), want);
    let (uid, tok) = n2.user("after").await;
    assert_eq!(n2.join(&tok, &invite).await.0, 200);
    want.insert(uid);
    n2.restart().await;
    let (_, v) = n2.get(&path, Some(&owner)).await;
    assert_eq!(member_ids(&v), want);
}

/// Scans of one code through every node are counted once each: the code's
/// landing page is served by its owner, whose memory counts them.
#[actix_web::test]
async fn scans_through_every_node_are_all_counted() {
    let Some(nats) = Nats::start() else { return };
    let mut n = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let extra = format!(
            "public_base_url = \"http://qr.test\"\n{}[codes]\npool_size = 0\npool_low_water = 0\n",
            node_config(&nats, id)
        );
        n.push(TestApp::spawn_with(&extra).await);
    }
    // Every node sees the others live (heartbeats every 1.5 s).
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    let (s, v) = n[0]
        .post("/v1/codes", Some(ADMIN), json!({"page": "/landing"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let code = s_(&v["code"]);
    for app in &n {
        for _ in 0..5 {
            let r = app
                .client
                .get(format!("{}/s/{code}", app.base))
                .insert_header(("Accept", "application/json"))
                .insert_header(("Cookie", "qrv=aaaaaaaaaaaaaaaaaaaaaa"))
                .send()
                .await
                .expect("scan");
            assert_eq!(r.status().as_u16(), 200);
        }
    }
    for app in &n {
        let (s, v) = app.get(&format!("/v1/codes/{code}"), Some(ADMIN)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (v["scans"].as_u64(), v["unique_visitors"].as_u64()),
            (Some(15), Some(1)),
            "through {}: {v}",
            app.base
        );
    }
}

/// Every node loads the stored pool of codes at start, so two nodes may
/// hold the same pooled code: the second to bind it draws a fresh one
/// instead, and every create answers 201 with a code of its own.
#[actix_web::test]
async fn codes_made_through_two_nodes_from_one_pool_are_all_distinct() {
    let Some(nats) = Nats::start() else { return };
    let codes = "public_base_url = \"http://qr.test\"\n";
    let pool = "[codes]\npool_size = 10\npool_low_water = 2\nrefill_idle_ms = 100\n";
    let n1 = TestApp::spawn_with(&format!("{codes}{}{pool}", node_config(&nats, "n1"))).await;
    // n1's pool is drawn and stored before n2 starts and loads it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while n1.metric("qrgate_code_pool_size").await < 10.0 {
        assert!(Instant::now() < deadline, "n1's pool never filled");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let n2 = TestApp::spawn_with(&format!("{codes}{}{pool}", node_config(&nats, "n2"))).await;
    let mut seen = HashSet::new();
    for app in [&n1, &n2] {
        for _ in 0..10 {
            let (s, v) = app
                .post("/v1/codes", Some(ADMIN), json!({"page": "/landing"}))
                .await;
            assert_eq!(s, 201, "{v}");
            assert!(seen.insert(s_(&v["code"])), "a code handed out twice: {v}");
        }
    }
}

/// A WebSocket on one node hears what another node handled: every node
/// applies every event, and pushes it to the sockets it holds.
#[actix_web::test]
async fn a_websocket_on_one_node_hears_a_join_handled_on_another() {
    use super::ws::{connect, next_of};
    use awc::ws;
    use futures_util::SinkExt;
    let Some(nats) = Nats::start() else { return };
    let n = nodes(&nats).await;
    let (_, owner) = n[0].user("owner").await;
    let g = n[0]
        .group(&owner, json!({"name": "heard", "member_limit": 100}))
        .await;
    let (_, invite, _) = n[0].invite(&owner, &g, json!({})).await;
    for (k, listener) in n.iter().enumerate() {
        let mut conn = connect(listener, &owner).await;
        next_of(&mut conn, "hello").await;
        conn.send(ws::Message::Text(
            format!("{{\"subscribe\":\"group:{g}\"}}").into(),
        ))
        .await
        .expect("subscribe");
        next_of(&mut conn, "subscribed").await;
        // The join goes through the next node (and on to the group's owner).
        let (uid, tok) = n[(k + 1) % 3].user(&format!("j{k}")).await;
        let (s, v) = n[(k + 1) % 3].join(&tok, &invite).await;
        assert_eq!(s, 200, "{v}");
        let ev = next_of(&mut conn, "member_joined").await;
        assert_eq!(ev["user_id"], uid.as_str(), "{ev}");
    }
}

/// The same earning event sent through two nodes at once is credited once.
#[actix_web::test]
async fn the_same_earning_through_two_nodes_is_credited_once() {
    let Some(nats) = Nats::start() else { return };
    let n = nodes(&nats).await;
    let (alice, alice_tok) = n[0].user("alice").await;
    for i in 0..10 {
        let event = format!("ev-{i}");
        let (a, b) = futures_util::future::join(
            n[1].earn(&event, &alice, 100),
            n[2].earn(&event, &alice, 100),
        )
        .await;
        let codes = [a.0, b.0];
        assert!(
            codes.contains(&201) && codes.iter().all(|c| *c == 201 || *c == 200),
            "one credit and one replay of it: {a:?} {b:?}"
        );
        assert_eq!(a.1["transfer_id"], b.1["transfer_id"]);
    }
    let path = "/v1/wallet";
    for app in &n {
        let (_, v) = eventually(app, path, &alice_tok, |_, v| v["balance"] == 1000).await;
        assert_eq!(v["balance"], 1000, "{v}");
    }
    n[0].books_clean().await;
    // A node backs nothing up: the stream is the store of record.
    let target = n[0].dir.path().join("backup");
    let (s, v) = n[0]
        .post("/v1/admin/backup", Some(ADMIN), json!({ "dir": target }))
        .await;
    assert_eq!((s, code(&v)), (409, "backup_not_supported"), "{v}");
    assert!(!target.exists(), "nothing written");
}

/// `qrgate load` spreads its requests over the nodes given as several
/// `--url`s, and its checks hold for the cluster.
#[actix_web::test]
async fn the_load_harness_drives_every_node_of_a_cluster() {
    let Some(nats) = Nats::start() else { return };
    let limits = "[limits]\ngroup_joins_per_minute = 60000\ngroup_joins_per_minute_max = 60000\n\
                  user_joins_per_minute = 1000000\nusers_per_minute_per_ip = 1000000\n";
    let mut n = Vec::new();
    for id in ["n1", "n2", "n3"] {
        n.push(TestApp::spawn_with(&format!("{}{limits}", node_config(&nats, id))).await);
    }
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    let mut args: Vec<String> = [
        "--json",
        "--scenario",
        "joins",
        "--groups",
        "20",
        "--users",
        "60",
        "--requests",
        "600",
        "--connections",
        "8",
        "--admin-token",
        ADMIN,
    ]
    .map(String::from)
    .to_vec();
    for app in &n {
        args.push("--url".into());
        args.push(app.base.clone());
    }
    let v = super::load::load_with(&args);
    assert_eq!(v["outcomes"]["joined"], 600, "{v}");
    assert!(v["checks"].as_array().is_some_and(|c| !c.is_empty()), "{v}");
    // Every join was served once, by the owner of its group; every node
    // took joins (it forwarded some: those of groups it does not own).
    let (mut served, mut sent, mut outs) = (0.0, 0.0, Vec::new());
    for app in &n {
        let join = "qrgate_http_requests_total{method=\"POST\",route=\"/v1/join\",status=\"200\"}";
        let out = "qrgate_http_requests_total{method=\"POST\",route=\"forwarded\",status=\"200\"}";
        served += app.metric(join).await;
        let forwarded = app.metric(out).await;
        eprintln!(
            "{}: joins served {}, forwarded {forwarded}, forwards taken {}, not sent {}",
            app.base,
            app.metric(join).await,
            app.metric("qrgate_forwards_total{outcome=\"served\"}")
                .await,
            app.metric("qrgate_forwards_total{outcome=\"not_sent\"}")
                .await
        );
        sent += forwarded;
        outs.push((app.base.clone(), forwarded));
    }
    for (base, forwarded) in outs {
        assert!(forwarded > 0.0, "{base} forwarded no join");
    }
    assert_eq!(served, 600.0);
    assert!(sent > 0.0, "joins reached their groups' owners");
}

/// 1 for an answer `ok`, 0 for a refusal with 429 and `code` (anything
/// else fails the test).
fn tally(s: u16, v: &Value, ok: u16, code: &str) -> usize {
    if s == ok {
        return 1;
    }
    assert_eq!((s, v["code"].as_str()), (429, Some(code)), "{v}");
    0
}

/// Wait until every node sees all of `n` live (heartbeats every 1.5 s).
async fn all_live(n: &[TestApp]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for app in n {
        loop {
            let (_, body) = healthz(app).await;
            let live = body
                .lines()
                .find_map(|l| l.strip_prefix("live "))
                .unwrap_or("");
            if live.split(',').count() == n.len() {
                break;
            }
            assert!(Instant::now() < deadline, "{} sees live: {live}", app.base);
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A user's joins per minute, a user's claims per minute, a user's scan
/// codes per day and the accounts made per network are counted once for
/// the cluster (by the node holding each key), not once per node: through
/// three nodes a user gets no more than through one.
#[actix_web::test]
async fn per_user_and_per_network_limits_hold_across_the_nodes() {
    let Some(nats) = Nats::start() else { return };
    let limits = "[limits]\nuser_joins_per_minute = 3\nusers_per_minute_per_ip = 2\n\
                  [packets]\nclaims_per_minute_per_user = 2\n\
                  [codes]\npool_size = 0\npool_low_water = 0\nuser_quota_per_day = 2\n";
    let mut n = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let top = "public_base_url = \"http://qr.test\"\n";
        n.push(TestApp::spawn_with(&format!("{top}{}{limits}", node_config(&nats, id))).await);
    }
    all_live(&n).await;

    // Accounts without the admin token: 2 a minute from this address.
    let mut made = 0;
    for i in 0..6 {
        let (s, v) = n[i % 3]
            .post("/v1/users", None, json!({ "name": format!("anon{i}") }))
            .await;
        made += tally(s, &v, 201, "rate_limited");
    }
    assert_eq!(made, 2, "accounts from one network through three nodes");

    // One user joins six groups, two through each node: 3 a minute.
    let (_, owner) = n[0].user("owner").await;
    let (_, joiner) = n[0].user("joiner").await;
    let mut joined = 0;
    for i in 0..6 {
        let g = n[0]
            .group(
                &owner,
                json!({"name": format!("g{i}"), "member_limit": 100}),
            )
            .await;
        let (_, invite, _) = n[0].invite(&owner, &g, json!({})).await;
        let (s, v) = n[i % 3].join(&joiner, &invite).await;
        joined += tally(s, &v, 200, "rate_limited");
    }
    assert_eq!(joined, 3, "joins by one user through three nodes");

    // One user claims from six packets, two through each node: 2 a minute.
    let (sender, sender_tok) = n[0].user("sender").await;
    let (_, claimer) = n[0].user("claimer").await;
    assert_eq!(n[0].earn("fund", &sender, 6000).await.0, 201);
    let mut claimed = 0;
    for i in 0..6 {
        let (s, v) = n[0]
            .create_packet(
                &sender_tok,
                &format!("p{i}"),
                json!({"total": 1000, "count": 10, "mode": "fixed"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = n[i % 3].claim(&claimer, &s_(&v["id"]), json!({})).await;
        claimed += tally(s, &v, 200, "rate_limited");
    }
    assert_eq!(claimed, 2, "claims by one user through three nodes");

    // One user makes scan codes through every node: 2 a day.
    let mut codes = 0;
    for i in 0..6 {
        let (s, v) = n[i % 3]
            .post("/v1/codes", Some(&claimer), json!({"page": "/landing"}))
            .await;
        codes += tally(s, &v, 201, "code_quota_exceeded");
    }
    assert_eq!(codes, 2, "scan codes by one user through three nodes");
    let asked: f64 = {
        let mut sum = 0.0;
        for app in &n {
            sum += app
                .metric("qrgate_limit_asks_total{outcome=\"asked\"}")
                .await;
        }
        sum
    };
    assert!(asked > 0.0, "no node asked another for a limit");
}

/// Joins, approvals, earnings, payouts through one shared provider
/// simulator, red packet claims and scans, round-robin through the three
/// nodes, with one node killed (`kill -9`) half-way: every acknowledged
/// write is there afterwards, no payout reaches the provider twice, no
/// share is paid twice, and the books hold for the whole cluster (every
/// node holds every wallet, so one node's check covers them all).
#[actix_web::test]
async fn mixed_load_through_every_node_survives_a_node_killed_half_way() {
    let Some(nats) = Nats::start() else { return };
    let sim = super::payouts::Sim::start();
    let limits = "[limits]\ngroup_joins_per_minute = 60000\ngroup_joins_per_minute_max = 60000\n\
                  user_joins_per_minute = 1000000\nusers_per_minute_per_ip = 1000000\n\
                  [packets]\nclaims_per_minute_per_user = 1000000\n";
    let mut n = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let extra = format!("{}{limits}{}", node_config(&nats, id), sim.config(""));
        n.push(TestApp::spawn_with(&extra).await);
    }
    all_live(&n).await;
    let mut args: Vec<String> = [
        "--json",
        "--scenario",
        "mixed",
        "--groups",
        "12",
        "--users",
        "120",
        "--packets",
        "3",
        // Scans are counted in their owner's memory and stored once a
        // second: a node killed loses up to a second of its counts.
        "--mix",
        "join=25,request=15,approve=10,earning=15,payout=10,claim=15",
        "--duration",
        "10",
        "--connections",
        "8",
        "--settle-timeout",
        "60",
        "--admin-token",
        ADMIN,
        "--paysim",
        &sim.base,
    ]
    .map(String::from)
    .to_vec();
    for app in &n {
        args.push("--url".into());
        args.push(app.base.clone());
    }
    let load = std::thread::spawn(move || super::load::load_report(&args).1);
    // Setup takes a few seconds; then n3 dies under load.
    let deadline = Instant::now() + Duration::from_secs(60);
    while n[2]
        .metric("qrgate_http_requests_total{method=\"POST\",route=\"/v1/earnings\",status=\"201\"}")
        .await
        < 5.0
    {
        assert!(Instant::now() < deadline, "the load never reached n3");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    n[2].kill9();
    let v = actix_web::rt::task::spawn_blocking(move || load.join())
        .await
        .expect("join the load thread")
        .expect("the load run");
    eprintln!("{v}");
    // Requests sent to n3 after its death got no answer; those (and any
    // whose answer was lost) the harness sent again afterwards, as a client
    // would, and its checks count them by that answer.
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    assert!(checks.len() >= 10, "{v}");
    for c in &checks {
        if c["name"] == "kinds of request with transport errors" {
            assert!(c["got"].as_u64() > Some(0), "n3 died under load: {c}");
        } else {
            assert_eq!(c["ok"], true, "{c}");
        }
    }
    // The harness's payout checks compare every acknowledged payout with
    // the provider's transfers (paid once, failed ones unpaid, none sent
    // under a second number); payouts must have happened for them to mean
    // anything.
    assert!(!sim.transfers().await.is_empty(), "{v}");
    for app in &n[..2] {
        app.books_clean().await;
    }
}

/// Joins of fresh users into one group, round-robin through the nodes,
/// keeping those acknowledged.
struct Joiner {
    users: Vec<(String, String)>,
    invite: String,
    next: usize,
    acked: Vec<String>,
}

impl Joiner {
    /// Join until `streak` joins in a row succeed; how long that took from
    /// `since`. Fails past `limit`. A node whose log went back (NATS 2.9
    /// servers stopped together can come back without an entry the node
    /// had applied, one never acknowledged) refuses writes until it is
    /// restarted, as `/healthz` says: it is restarted, as an operator would.
    async fn until_streak(
        &mut self,
        n: &mut [TestApp],
        nats: &Nats,
        streak: usize,
        since: Instant,
        limit: Duration,
    ) -> Duration {
        let mut run = 0;
        let mut answers: Vec<u16> = Vec::new();
        while run < streak {
            if since.elapsed() > limit {
                for app in n {
                    let log = app.log();
                    let tail: Vec<&str> = log
                        .lines()
                        .filter(|l| !l.contains("DEBUG"))
                        .rev()
                        .take(30)
                        .collect();
                    eprintln!("--- {} ---", app.base);
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
                eprintln!("{}", nats.describe());
                panic!("no {streak} joins in a row within {limit:?}; answers {answers:?}");
            }
            let (uid, tok) = self.users[self.next].clone();
            let app = &mut n[self.next % n.len()];
            self.next += 1;
            let s = try_join(app, &tok, &self.invite).await;
            answers.push(s);
            if s == 200 {
                self.acked.push(uid);
                run += 1;
            } else {
                run = 0;
                let (hs, why) = healthz(app).await;
                if hs == 503 && why.contains("went back") {
                    eprintln!("{}: {why}; restarted", app.base);
                    app.restart().await;
                }
                actix_web::rt::time::sleep(Duration::from_millis(200)).await;
            }
        }
        since.elapsed()
    }
}

/// The log's servers fail under the nodes. One NATS server killed, and one
/// stopped (SIGSTOP): writes go on after the stream elects a leader. Two
/// of three stopped (the quorum lost): writes answer 503, reads from memory
/// go on, and writes resume once the servers return. Every acknowledged
/// join is there on every node at the end.
#[actix_web::test]
async fn writes_ride_out_the_loss_of_a_nats_server_and_of_the_quorum() {
    let Some(nats) = Nats::start() else { return };
    let mut n = nodes(&nats).await;
    all_live(&n).await;
    let (_, owner) = n[0].user("owner").await;
    let g = n[0]
        .group(&owner, json!({"name": "resilient", "member_limit": 500}))
        .await;
    let (_, invite, _) = n[0].invite(&owner, &g, json!({})).await;
    // A group nobody writes during the outage.
    let quiet = n[0]
        .group(&owner, json!({"name": "quiet", "member_limit": 100}))
        .await;
    let mut users = Vec::new();
    for i in 0..300 {
        users.push(n[i % 3].user(&format!("u{i}")).await);
    }
    let mut j = Joiner {
        users,
        invite,
        next: 0,
        acked: Vec::new(),
    };
    j.until_streak(&mut n, &nats, 5, Instant::now(), Duration::from_secs(10))
        .await;

    // The stream's leader killed. (Alone on the machine the joins resume
    // within 4-11 s; 45 s leaves room for the rest of the suite running
    // on the same cores.)
    let leader = nats.log_leader();
    nats.kill(leader);
    let t = j
        .until_streak(&mut n, &nats, 5, Instant::now(), Duration::from_secs(45))
        .await;
    eprintln!("NATS server n{leader} killed: 5 joins in a row after {t:?}");
    nats.restart(leader);
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    j.until_streak(&mut n, &nats, 5, Instant::now(), Duration::from_secs(45))
        .await;

    // The stream's leader stopped (it holds its connections, answers nothing).
    let leader = nats.log_leader();
    nats.signal(leader, "-STOP");
    let t = j
        .until_streak(&mut n, &nats, 5, Instant::now(), Duration::from_secs(45))
        .await;
    eprintln!("NATS server n{leader} stopped: 5 joins in a row after {t:?}");
    nats.signal(leader, "-CONT");
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    j.until_streak(&mut n, &nats, 5, Instant::now(), Duration::from_secs(45))
        .await;

    // Two of three servers stopped: no quorum. (Two killed is another
    // matter: NATS servers that crash together can come back without
    // entries they acknowledged; see the test below.)
    let leader = nats.log_leader();
    let other = if leader == 1 { 2 } else { 1 };
    nats.signal(leader, "-STOP");
    nats.signal(other, "-STOP");
    let (uid, tok) = j.users[j.next].clone();
    j.next += 1;
    let started = Instant::now();
    let s = try_join(&n[0], &tok, &j.invite).await;
    eprintln!(
        "quorum lost: a join answered {s} after {:?}",
        started.elapsed()
    );
    if s == 200 {
        // Answered before the servers noticed the loss.
        j.acked.push(uid);
    } else {
        assert_eq!(s, 503, "a write without a quorum");
    }
    // Reads go on: at once for a group with no write in flight; for the
    // group whose join failed, once that join's write has failed (the log
    // tries for 20 s), from what the node applied.
    for app in &n {
        let (s, v) = app.get(&format!("/v1/groups/{quiet}"), Some(&owner)).await;
        assert_eq!(s, 200, "a read without a quorum: {v}");
    }
    let deadline = Instant::now() + Duration::from_secs(25);
    for app in &n {
        loop {
            let (s, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
            if s == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a read without a quorum: {s} {v}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
    }
    nats.signal(leader, "-CONT");
    nats.signal(other, "-CONT");
    let t = j
        .until_streak(&mut n, &nats, 5, Instant::now(), Duration::from_secs(60))
        .await;
    eprintln!("quorum back: 5 joins in a row after {t:?}");

    // Every acknowledged join, on every node.
    let path = format!("/v1/groups/{g}/members");
    for app in &n {
        let (_, v) = eventually(app, &path, &owner, |_, v| {
            let ids = member_ids(v);
            j.acked.iter().all(|u| ids.contains(u))
        })
        .await;
        let ids = member_ids(&v);
        let missing: Vec<_> = j.acked.iter().filter(|u| !ids.contains(*u)).collect();
        assert!(
            missing.is_empty(),
            "{}: acknowledged joins missing: {missing:?}",
            app.base
        );
    }
}

/// The log loses entries a node applied (here the stream is deleted and
/// made again shorter, as NATS servers that crash together can do to its
/// tail): the node stops applying rather than skip what the log now holds
/// at those positions, refuses writes and says why on /healthz; a restart
/// rebuilds it from the log, and it serves again.
#[actix_web::test]
async fn a_node_whose_log_went_back_refuses_writes_until_a_restart_rebuilds_it() {
    let Some(nats) = Nats::start() else { return };
    let extra = format!(
        "{}[storage]\ncheckpoint_secs = 1\n",
        node_config(&nats, "n1")
    );
    let mut app = TestApp::spawn_with(&extra).await;
    for i in 0..5 {
        app.user(&format!("before{i}")).await;
    }
    // A checkpoint holds them (every second).
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    let nats = std::thread::spawn(move || {
        nats.lose_the_log(2);
        nats
    })
    .join()
    .expect("lose the log");
    // The node asks the stream again for 10 s before it believes it went
    // back (a stale answer after an election looks the same).
    let deadline = Instant::now() + Duration::from_secs(35);
    let body = loop {
        let (status, body) = healthz(&app).await;
        if status == 503 {
            break body;
        }
        if Instant::now() > deadline {
            let log = app.log();
            let warned: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            panic!("the node never noticed: {body}\n{}", warned.join("\n"));
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("the log went back"), "{body}");
    let (s, v) = app
        .post("/v1/users", Some(ADMIN), json!({"name": "during"}))
        .await;
    assert_eq!(
        (s, s_(&v["code"])),
        (503, "storage_unavailable".into()),
        "{v}"
    );

    app.restart().await;
    assert!(
        app.log()
            .contains("the log went back behind this node's checkpoint"),
        "the restart rebuilt the node"
    );
    let (s, v) = app
        .post("/v1/users", Some(ADMIN), json!({"name": "after"}))
        .await;
    assert_eq!(s, 201, "{v}");
    drop(nats);
}

/// A red packet funded through one node, claimed through the others and
/// left to expire: its owner (and only its owner) settles it, the claims
/// credit wallets whose requests go to other nodes, the rest goes back to
/// the sender, and every node shows the same balances and clean books.
#[actix_web::test]
async fn a_packet_claimed_through_every_node_refunds_its_sender_once() {
    let Some(nats) = Nats::start() else { return };
    let fast = "[packets]\nmin_ttl_seconds = 1\nclaims_per_minute_per_user = 1000\n";
    let mut n = Vec::new();
    for id in ["n1", "n2", "n3"] {
        n.push(TestApp::spawn_with(&format!("{}{fast}", node_config(&nats, id))).await);
    }
    all_live(&n).await;
    let changes = "qrgate_cluster_placement_changes_total";
    let mut placed = Vec::new();
    for app in &n {
        placed.push(app.metric(changes).await);
    }
    let (sender, sender_tok) = n[0].user("sender").await;
    assert_eq!(n[1].earn("fund", &sender, 1000).await.0, 201);
    let (s, v) = n[2]
        .create_packet(
            &sender_tok,
            "refund-me",
            json!({"total": 600, "count": 6, "mode": "fixed", "ttl_seconds": 3}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let packet = s_(&v["id"]);
    let mut claimers = Vec::new();
    for (k, app) in n.iter().enumerate() {
        let (_, tok) = n[(k + 1) % 3].user(&format!("claimer{k}")).await;
        let (s, v) = app.claim(&tok, &packet, json!({})).await;
        assert_eq!(s, 200, "{v}");
        claimers.push(tok);
    }
    // Expired: settled by its owner once; 300 fen back to the sender.
    let closed = n[0].packet_closed(&packet).await;
    assert_eq!(closed["status"], "closed", "{closed}");
    for app in &n {
        let (_, v) = eventually(app, "/v1/wallet", &sender_tok, |_, v| v["balance"] == 700).await;
        assert_eq!(
            (v["balance"].as_i64(), v["available"].as_i64()),
            (Some(700), Some(700)),
            "{v}"
        );
        for tok in &claimers {
            let (_, v) = eventually(app, "/v1/wallet", tok, |_, v| v["balance"] == 100).await;
            assert_eq!(v["balance"], 100, "{v}");
        }
        app.books_clean().await;
    }
    // Packets that expire together are settled once each, each by its
    // owner (the sweeps of all three nodes find them due; each settlement
    // attempt is counted on the node that decides it).
    let (other, other_tok) = n[0].user("other sender").await;
    assert_eq!(n[1].earn("fund-other", &other, 2000).await.0, 201);
    let mut packets = vec![packet.clone()];
    for i in 0..20 {
        let (s, v) = n[i % 3]
            .create_packet(
                &other_tok,
                &format!("many-{i}"),
                json!({"total": 100, "count": 1, "mode": "fixed", "ttl_seconds": 2}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        packets.push(s_(&v["id"]));
    }
    let (_, v) = eventually(&n[0], "/v1/wallet", &other_tok, |_, v| {
        v["available"] == 2000
    })
    .await;
    assert_eq!(v["available"], 2000, "every packet refunded: {v}");
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    let ids: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    let mut total = 0.0;
    let mut stable = true;
    let mut by_node = Vec::new();
    for (k, app) in n.iter().enumerate() {
        let owned = packets
            .iter()
            .filter(|p| {
                qrgate::domain::placement::owner(&format!("packet/{p}"), &ids)
                    == Some(ids[k].as_str())
            })
            .count();
        let settled = app.metric("qrgate_packets_total{event=\"closed\"}").await;
        total += settled;
        stable &= app.metric(changes).await == placed[k];
        by_node.push((settled, owned as f64));
    }
    assert_eq!(
        total,
        packets.len() as f64,
        "each packet settled once: {by_node:?}"
    );
    // Who settles follows placement; a node that missed a heartbeat under
    // load moves packets to another owner for a moment, and the metric
    // says so.
    if stable {
        for (k, (settled, owned)) in by_node.iter().enumerate() {
            assert_eq!(settled, owned, "n{} settled what it owns", k + 1);
        }
    } else {
        eprintln!("placement changed during the test: settled, owned per node {by_node:?}");
    }
    n[2].books_clean().await;
}

/// A session made through one node works at once on every other node: a
/// node that does not know a token yet applies what the log holds before
/// it answers 401.
#[actix_web::test]
async fn a_session_made_through_one_node_works_at_once_on_the_others() {
    let Some(nats) = Nats::start() else { return };
    let n = nodes(&nats).await;
    // Many at once, so that the next node is often behind.
    let answers = futures_util::future::join_all((0..150).map(|i| {
        let (here, next) = (&n[i % 3], &n[(i + 1) % 3]);
        async move {
            let (_, tok) = here.user(&format!("fresh{i}")).await;
            next.get("/v1/wallet", Some(&tok)).await
        }
    }))
    .await;
    for (i, (s, v)) in answers.iter().enumerate() {
        assert_eq!(*s, 200, "session {i} on the next node: {v}");
    }
    let (s, v) = n[0].get("/v1/wallet", Some("qrs_not-a-session")).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
}

/// Every node numbers every feed alike: a sender whose packet is claimed
/// through all three nodes reads the same feed, the same seqs, from each,
/// and resumes on one node where another left off.
#[actix_web::test]
async fn every_node_numbers_a_feed_alike() {
    let Some(nats) = Nats::start() else { return };
    let n = nodes(&nats).await;
    all_live(&n).await;
    let (sender, sender_tok) = n[0].user("sender").await;
    assert_eq!(n[1].earn("fund", &sender, 3000).await.0, 201);
    let (s, v) = n[2]
        .create_packet(
            &sender_tok,
            "feed",
            json!({"total": 1200, "count": 12, "mode": "fixed"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let packet = s_(&v["id"]);
    for i in 0..12 {
        let (_, tok) = n[i % 3].user(&format!("c{i}")).await;
        let (s, v) = n[(i + 1) % 3].claim(&tok, &packet, json!({})).await;
        assert_eq!(s, 200, "{v}");
    }
    // 12 claims and the emptying.
    let mut feeds = Vec::new();
    for app in &n {
        let (_, v) = eventually(app, "/v1/events?after=0&limit=1000", &sender_tok, |_, v| {
            v["events"].as_array().is_some_and(|e| e.len() == 13)
        })
        .await;
        feeds.push(v["events"].clone());
    }
    let seqs: Vec<u64> = feeds[0]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (1..=13).collect::<Vec<_>>());
    assert_eq!(feeds[0], feeds[1], "n1 and n2 number the feed alike");
    assert_eq!(feeds[0], feeds[2], "n1 and n3 number the feed alike");
    // Read the first 5 on one node, the rest on another.
    let (_, v) = n[0]
        .get("/v1/events?after=0&limit=5", Some(&sender_tok))
        .await;
    let after = v["next_after"].as_u64().expect("next_after");
    let (_, rest) = n[2]
        .get(&format!("/v1/events?after={after}"), Some(&sender_tok))
        .await;
    let mut joined = v["events"].as_array().expect("events").clone();
    joined.extend(rest["events"].as_array().expect("events").iter().cloned());
    assert_eq!(Value::Array(joined), feeds[0]);
}

async fn placement_changes(n: &[TestApp]) -> f64 {
    let mut m = 0.0;
    for app in n {
        m += app.metric("qrgate_cluster_placement_changes_total").await;
    }
    m
}

/// Webhooks in a cluster: every node queues each delivery, one node sends
/// it, and what it sent leaves every node's queue.
#[actix_web::test]
async fn each_webhook_goes_out_from_one_node_and_leaves_every_queue() {
    use super::webhooks::{config, Receiver};
    let Some(nats) = Nats::start() else { return };
    let rx = Receiver::start(200).await;
    let hooks = config(&[("crm", &rx.url, "[\"member_joined\"]")]);
    let mut n = Vec::new();
    for id in ["n1", "n2", "n3"] {
        n.push(TestApp::spawn_with(&format!("{}{hooks}", node_config(&nats, id))).await);
    }
    all_live(&n).await;
    let settled = placement_changes(&n).await;
    let (_, owner) = n[0].user("owner").await;
    let g = n[0].group(&owner, json!({"name": "Hooks"})).await;
    let (_, tok, _) = n[0].invite(&owner, &g, json!({})).await;
    for i in 0..9 {
        let (_, t) = n[i % 3].user(&format!("w{i}")).await;
        assert_eq!(try_join(&n[(i + 1) % 3], &t, &tok).await, 200);
    }
    let got = rx
        .until("ten member_joined", 30, |g| {
            g.iter().map(|r| r.id.clone()).collect::<HashSet<_>>().len() >= 10
        })
        .await;
    // Every node's queue empties: the sender's deliveries left them all.
    for app in &n {
        let mut v = json!(null);
        for _ in 0..100 {
            v = app.get("/v1/admin/webhooks", Some(ADMIN)).await.1;
            if v["endpoints"][0]["queued"] == 0 {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(v["endpoints"][0]["queued"], 0, "{v}");
    }
    let moved = placement_changes(&n).await - settled;
    let distinct = got
        .iter()
        .map(|r| r.id.clone())
        .collect::<HashSet<_>>()
        .len();
    println!(
        "webhooks: {} received, {distinct} distinct, placement changes {moved}",
        got.len()
    );
    if moved == 0.0 {
        assert_eq!(got.len(), distinct, "sent by one node, once each");
    }
}
