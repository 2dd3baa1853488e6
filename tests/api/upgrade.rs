//! Data dirs written by earlier versions still serve.

use super::helpers::*;
use qrgate::domain::ids::GroupId;
use qrgate::domain::roster::Roster;
use qrgate::storage::WriteSet;
use serde_json::{json, Value};
use std::path::Path;

/// Members by user id: (user id, role, via invite).
async fn roster(app: &TestApp, g: &str, token: &str) -> Vec<(String, String, String)> {
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/members"), Some(token))
        .await;
    assert_eq!(s, 200, "{v}");
    let mut out: Vec<_> = v["members"]
        .as_array()
        .map(|a| a.iter().map(row).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn row(m: &Value) -> (String, String, String) {
    let via = m["via_invite"].as_str().unwrap_or("none").to_string();
    (s_(&m["user_id"]), s_(&m["role"]), via)
}

/// Count the records under `prefix` + the group id.
fn records(data: &Path, prefix: &[u8], g: GroupId) -> usize {
    let store = open_storage(data, [0; 32], Default::default());
    let n = store.count_prefix(&[prefix, g.as_bytes()].concat());
    store.shutdown().expect("close the data dir");
    n
}

/// A group whose members were stored one record each (before the
/// buckets) loads with every member, role and lineage; its first
/// activation moves them into buckets, and joins, role changes and
/// removals after that are kept across a kill -9.
#[actix_web::test]
async fn members_stored_one_record_each_still_load_and_move_into_buckets() {
    let mut app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Old", "member_limit": 100}))
        .await;
    let (iid, tok, _) = app.invite(&owner, &g, json!({"ttl_seconds": 3600})).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let (id, t) = app.user(&format!("u{n}")).await;
        assert_eq!(app.join(&t, &tok).await.0, 200);
        ids.push(id);
    }
    let path = format!("/v1/groups/{g}/admins/{}", ids[0]);
    assert_eq!(app.call("PUT", &path, Some(&owner), None).await.0, 204);
    let before = roster(&app, &g, &owner).await;
    assert_eq!(before.len(), 7);
    assert!(before.iter().filter(|r| r.2 == iid).count() == 6);
    app.terminate();

    // Rewrite the group as an earlier version stored it.
    let gid = GroupId::parse(&g).expect("group id");
    let store = open_storage(&app.data_dir(), [0; 32], Default::default());
    let snap = store.load_group(gid).expect("load").expect("the group");
    assert!(snap.legacy_members.is_empty());
    let mut w = WriteSet::new();
    for m in &snap.members {
        w.member_record_before_buckets(gid, m);
    }
    w.roster(gid, &Roster::default());
    actix_web::rt::time::timeout(std::time::Duration::from_secs(10), store.commit(w))
        .await
        .expect("in time")
        .expect("written");
    store.shutdown().expect("close");
    assert_eq!(records(&app.data_dir(), b"mb/", gid), 0);
    assert_eq!(records(&app.data_dir(), b"m/", gid), 7);

    app.restart().await;
    assert_eq!(roster(&app, &g, &owner).await, before);
    // Changes after the move: one more join, a role back, a removal.
    let (late, t) = app.user("late").await;
    assert_eq!(app.join(&t, &tok).await.0, 200);
    assert_eq!(app.call("DELETE", &path, Some(&owner), None).await.0, 204);
    let gone = format!("/v1/groups/{g}/members/{}", ids[1]);
    assert_eq!(app.call("DELETE", &gone, Some(&owner), None).await.0, 204);
    let after = roster(&app, &g, &owner).await;
    assert_eq!(after.len(), 7);
    assert!(after.iter().any(|r| r.0 == late));
    assert!(!after.iter().any(|r| r.0 == ids[1]));
    assert!(after.iter().any(|r| r.0 == ids[0] && r.1 == "member"));
    app.kill9();
    assert_eq!(records(&app.data_dir(), b"m/", gid), 0);
    assert!(records(&app.data_dir(), b"mb/", gid) > 0);
    app.restart().await;
    assert_eq!(roster(&app, &g, &owner).await, after);
}

/// A data dir written by the release before the journal (sled only, the
/// outbox in sled's `o/` records, its last events not yet consumed when it
/// was killed): `tests/fixtures/make-datadir-before-journal.py` made it
/// with that release's binary. It opens with everything in it, carries on
/// in the new layout (a journal beside sled), and its old outbox is
/// consumed once and removed.
#[actix_web::test]
async fn a_data_dir_written_before_the_journal_opens_and_carries_on() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("datadir-before-journal.json")).expect("read"),
    )
    .expect("json");
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(fixtures.join("datadir-before-journal.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(status.success());
    assert!(!dir.path().join("data/journal").exists());
    // It holds events its outbox had not consumed when it was killed.
    let store = open_storage(&dir.path().join("data"), [0; 32], Default::default());
    assert!(store.count_prefix(b"o/") > 0, "unconsumed outbox records");
    store.abandon();
    // The server's clock is set to a few minutes after the fixture was
    // made (2026-12-06 09:20 UTC), so what it holds with an expiry (the red
    // packet for a day, sessions, the invitation for a week) is as it was
    // then, whenever this runs.
    const MADE_AT: i64 = 1_796_549_100;
    let offset = MADE_AT + 600 - chrono::Utc::now().timestamp();
    let mut app = TestApp::spawn_in_env(
        dir,
        "",
        vec![("QRGATE_CLOCK_OFFSET_SECS".into(), offset.to_string())],
    )
    .await;
    assert!(
        app.data_dir().join("journal").is_dir(),
        "the journal is created"
    );
    let tok = |name: &str| s_(&expect["users"][name]["token"]);
    let owner = tok("owner");
    let g = s_(&expect["group"]);
    for round in 0..2 {
        // Memberships, with every member the old release acknowledged.
        let (s, v) = app
            .get(&format!("/v1/groups/{g}/members"), Some(&owner))
            .await;
        assert_eq!(s, 200, "{v}");
        let ids: Vec<String> = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| s_(&m["user_id"]))
            .collect();
        for m in expect["members"].as_array().expect("members") {
            assert!(ids.contains(&s_(m)), "round {round}: member {m} kept");
        }
        // The pending request, the wallets, the packet and the scan code.
        let ga = s_(&expect["approval_group"]);
        let (s, v) = app
            .get(&format!("/v1/groups/{ga}/requests"), Some(&owner))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["requests"][0]["id"], expect["request_id"], "{v}");
        // Alice's earnings, 300 of them held by her packet.
        let earned = expect["alice_balance"].as_i64().expect("balance");
        let w = app.wallet(&tok("alice")).await;
        assert_eq!(
            (w["balance"].as_i64(), w["available"].as_i64()),
            (Some(earned), Some(earned - 300)),
            "{w}"
        );
        assert_eq!(
            app.balance(&tok("bob")).await,
            expect["bob_claim"].as_i64().expect("claim")
        );
        let (s, v) = app
            .claim(&tok("bob"), &s_(&expect["packet"]), json!({}))
            .await;
        assert_eq!((s, code(&v)), (409, "already_claimed"), "{v}");
        let (s, v) = app
            .get(&format!("/v1/codes/{}", s_(&expect["code"])), Some(ADMIN))
            .await;
        assert_eq!(s, 200, "{v}");
        app.books_clean().await;
        // Every join is counted once: the old outbox's last events included.
        let joins = 16 + round;
        let mut counted = Value::Null;
        for _ in 0..100 {
            let (_, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
            if v["counters"]["joins"] == joins {
                counted = v;
                break;
            }
            counted = v;
            actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(counted["counters"]["joins"], joins, "{counted}");
        if round == 0 {
            // The old invitation (signed under the old key) still admits,
            // and what is written now lands in the journal.
            let (_, t) = app.user("newcomer").await;
            assert_eq!(app.join(&t, &s_(&expect["invite_token"])).await.0, 200);
            app.kill9();
            app.restart().await;
        }
    }
    app.terminate();
    // After a graceful stop sled holds everything, the old outbox gone.
    let store = open_storage(&app.data_dir(), [0; 32], Default::default());
    assert_eq!(store.count_prefix(b"o/"), 0, "old outbox records removed");
    store.shutdown().expect("close");
}
