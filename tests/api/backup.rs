//! Online backup, restore and the offline check of a data dir, against the
//! real server and the real binary's commands.

use super::helpers::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FAST: &str = "[packets]\nmin_ttl_seconds = 1\nclaims_per_minute_per_user = 1000\n[wallets]\nearning_max_fen = 1000000\n";

/// Run `qrgate <args>`.
fn qrgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args(args)
        .env_remove("QRGATE_DATA_DIR")
        .output()
        .expect("run qrgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `qrgate check-data` on `dir`, waiting out sled's lock of a handle just
/// closed (by a server, or by the test's own edit).
fn check_data(dir: &Path, json: bool) -> Output {
    let d = dir.to_str().expect("path");
    let mut args = vec!["check-data", "--data-dir", d];
    if json {
        args.push("--json");
    }
    for _ in 0..100 {
        let o = qrgate(&args);
        if o.status.code() == Some(1) && text(&o).contains("is in use") {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return o;
    }
    panic!("{} stayed in use", dir.display());
}

fn restore(from: &Path, to: &Path) -> Output {
    qrgate(&[
        "restore",
        "--from",
        from.to_str().expect("path"),
        "--data-dir",
        to.to_str().expect("path"),
    ])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}

/// Open a stopped data dir's sled (the server's lock may linger a moment).
fn open_sled(data: &Path) -> (sled::Db, sled::Tree) {
    for _ in 0..100 {
        match sled::open(data.join("db")) {
            Ok(db) => {
                let t = db.open_tree("state").expect("tree");
                return (db, t);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    panic!("sled of {} stayed locked", data.display());
}

/// Phases of the mixed load around the backup.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

#[derive(Clone, Debug)]
struct Write {
    kind: &'static str,
    user: String,
    /// The phase when it was sent, and whether it was acknowledged before
    /// the backup was asked for.
    sent: u8,
    acked_before: bool,
    ok: bool,
}

#[actix_web::test]
async fn a_backup_under_mixed_load_restores_exactly_what_was_acknowledged_before_it() {
    // Checkpoints every second: the backup's snapshot holds the setup, its
    // journal the writes since.
    let config = format!("{FAST}[storage]\ncheckpoint_secs = 1\n");
    let mut app = TestApp::spawn_with(&config).await;
    let (_, owner) = app.funded("owner", 100_000).await;
    let groups = app.open_groups(&owner, 2).await;
    let (s, v) = app
        .create_packet(
            &owner,
            "backup-packet",
            json!({"total": 20_000, "count": 200, "mode": "fixed", "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let packet = s_(&v["id"]);
    // One user per write, so each write can be looked for on its own.
    let mut users = Vec::new();
    for n in 0..360 {
        users.push(app.user(&format!("u{n}")).await);
    }
    // A checkpoint holds the setup.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let log: Arc<Mutex<Vec<Write>>> = Arc::default();
    let mut tasks = Vec::new();
    for (lane, chunk) in users.chunks(60).enumerate() {
        let chunk = chunk.to_vec();
        let (phase, log, base) = (phase.clone(), log.clone(), app.base.clone());
        let (invite, packet) = (groups[lane % 2].1.clone(), packet.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let c = client();
            for (uid, tok) in chunk {
                let kind = ["join", "earn", "claim"][lane % 3];
                let sent = phase.load(Ordering::SeqCst);
                let req = match kind {
                    "join" => c
                        .post(format!("{base}/v1/join"))
                        .insert_header(("Authorization", format!("Bearer {tok}")))
                        .send_json(&json!({ "token": invite })),
                    "earn" => c
                        .post(format!("{base}/v1/earnings"))
                        .insert_header(("Authorization", format!("Bearer {ADMIN}")))
                        .send_json(&json!({"event_id": format!("e-{uid}"), "user_id": uid, "kind": "task_completed", "amount": 7})),
                    _ => c
                        .post(format!("{base}/v1/packets/{packet}/claim"))
                        .insert_header(("Authorization", format!("Bearer {tok}")))
                        .send_json(&json!({})),
                };
                let ok = matches!(req.await, Ok(r) if r.status().is_success());
                let acked_before = ok && phase.load(Ordering::SeqCst) == BEFORE;
                log.lock().unwrap().push(Write {
                    kind,
                    user: uid,
                    sent,
                    acked_before,
                    ok,
                });
                actix_web::rt::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    // The backup once a third of the writes were answered.
    while log.lock().unwrap().len() < 120 {
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let target = app.dir.path().join("backups/one");
    phase.store(DURING, Ordering::SeqCst);
    let (s, b) = app
        .post("/v1/admin/backup", Some(ADMIN), json!({ "dir": target }))
        .await;
    phase.store(AFTER, Ordering::SeqCst);
    assert_eq!(s, 200, "{b}");
    assert!(b["checkpoint"].as_u64().unwrap() > 0, "{b}");
    assert!(
        b["position"].as_u64().unwrap() > b["checkpoint"].as_u64().unwrap(),
        "journal frames after the checkpoint are in the backup: {b}"
    );
    for t in tasks {
        t.await.unwrap();
    }
    let writes = log.lock().unwrap().clone();
    let count = |f: &dyn Fn(&Write) -> bool| writes.iter().filter(|w| f(w)).count();
    assert_eq!(count(&|w| !w.ok), 0, "every write succeeds: {writes:?}");
    assert!(count(&|w| w.acked_before) >= 100, "{writes:?}");
    assert!(count(&|w| w.sent == AFTER) >= 60, "{writes:?}");
    for kind in ["join", "earn", "claim"] {
        assert!(
            count(&|w| w.kind == kind && w.acked_before) > 0
                && count(&|w| w.kind == kind && w.sent == AFTER) > 0,
            "{kind} on both sides of the backup"
        );
    }
    assert_eq!(app.metric("qrgate_backups_total{result=\"ok\"}").await, 1.0);
    // The source goes on; the backup is restored elsewhere.
    app.terminate();
    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let o = restore(&target, &data);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("clean"), "{}", text(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "a restored data dir is private");
    let back = TestApp::spawn_in(restored, &config).await;
    let (_, v) = back
        .get(&format!("/v1/groups/{}/members", groups[0].0), Some(&owner))
        .await;
    let mut members: std::collections::HashSet<String> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| s_(&m["user_id"]))
        .collect();
    let (_, v) = back
        .get(&format!("/v1/groups/{}/members", groups[1].0), Some(&owner))
        .await;
    members.extend(
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| s_(&m["user_id"])),
    );
    let claims: std::collections::HashSet<String> = back.packet(&packet).await["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| s_(&c["user_id"]))
        .collect();
    let tokens: std::collections::HashMap<&str, &str> = users
        .iter()
        .map(|(u, t)| (u.as_str(), t.as_str()))
        .collect();
    for w in &writes {
        let there = match w.kind {
            "join" => members.contains(&w.user),
            "claim" => claims.contains(&w.user),
            _ => back.balance(tokens[w.user.as_str()]).await == 7,
        };
        if w.acked_before {
            assert!(
                there,
                "acknowledged before the backup, missing from it: {w:?}"
            );
        }
        if w.sent == AFTER {
            assert!(!there, "sent after the backup answered, yet in it: {w:?}");
        }
    }
    back.books_clean().await;
}

#[actix_web::test]
async fn check_data_finds_a_flipped_journal_byte_a_flipped_ledger_page_and_an_edited_balance() {
    let mut app = TestApp::spawn_with(FAST).await;
    let mut users = Vec::new();
    for n in 0..40 {
        let (id, tok) = app.user(&format!("w{n}")).await;
        for e in 0..3 {
            let (s, v) = app.earn(&format!("a-{n}-{e}"), &id, 10 + e).await;
            assert_eq!(s, 201, "{v}");
        }
        users.push((id, tok));
    }
    // SIGTERM writes a last checkpoint: the ledger is in sled's pages.
    assert!(app.terminate().success());
    // Then more, left in the journal only.
    app.restart().await;
    // (Not the first user's: its balance is edited in sled below, and the
    // journal would write over that.)
    for (n, (id, _)) in users.iter().enumerate().skip(1) {
        let (s, v) = app.earn(&format!("b-{n}"), id, 5).await;
        assert_eq!(s, 201, "{v}");
    }
    let o = qrgate(&["check-data", "--data-dir", app.data_dir().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is in use"), "{}", text(&o));
    app.kill9();
    let source = app.data_dir();

    let o = check_data(&source, false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).ends_with("clean\n"), "{}", text(&o));
    let o = check_data(&source, true);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["clean"], true, "{v}");
    assert!(v["replayed_frames"].as_u64().unwrap() >= 40, "{v}");
    assert!(v["accounts"].as_u64().unwrap() >= 40, "{v}");

    let scratch = tempfile::tempdir().unwrap();
    // A flipped byte in a journal frame (the first one: whole frames follow).
    let dir = scratch.path().join("journal-flip");
    copy_dir(&source, &dir);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let seg = segments.first().expect("a segment").clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[16 + 5] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let o = check_data(&dir, false);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        text(&o).contains(&format!("FINDING journal/{name} offset 0:")),
        "{}",
        text(&o)
    );

    // A flipped byte in a page of the ledger's hash chain.
    let dir = scratch.path().join("page-flip");
    copy_dir(&source, &dir);
    let page_key = {
        let (db, tree) = open_sled(&dir);
        let (k, v) = tree
            .scan_prefix(b"lJ/")
            .next()
            .expect("a chain page")
            .unwrap();
        let mut v = v.to_vec();
        // Past the item header (12) and the chain hash (32): the record.
        v[12 + 32 + 3] ^= 0x01;
        tree.insert(&k, v).unwrap();
        db.flush().unwrap();
        k
    };
    let o = check_data(&dir, true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let want = format!("key lJ/{}", hex(&page_key[3..]));
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["where"].as_str().is_some_and(|w| w.starts_with(&want))),
        "{want} in {v}"
    );

    // An edited balance.
    let dir = scratch.path().join("balance-edit");
    copy_dir(&source, &dir);
    let account = {
        let (db, tree) = open_sled(&dir);
        let wallet = format!("la/wallet:{}", users[0].0);
        let v = tree.get(wallet.as_bytes()).unwrap().expect("account");
        let mut a: Value = serde_json::from_slice(&v).unwrap();
        let posted = a["credits_posted"].as_u64().expect("credits_posted");
        a["credits_posted"] = json!(posted + 100);
        tree.insert(wallet.as_bytes(), serde_json::to_vec(&a).unwrap())
            .unwrap();
        db.flush().unwrap();
        wallet
    };
    let o = check_data(&dir, false);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("FINDING key {account}:")),
        "{}",
        text(&o)
    );
    // The source itself was never touched.
    assert_eq!(check_data(&source, false).status.code(), Some(0));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[actix_web::test]
async fn a_crash_during_a_backup_leaves_the_source_intact_and_the_target_refused() {
    for point in ["backup_state_written", "backup_before_manifest"] {
        let mut app = TestApp::spawn_with(FAST).await;
        let (id, tok) = app.user("saver").await;
        for e in 0..20 {
            let (s, v) = app.earn(&format!("c-{e}"), &id, 3).await;
            assert_eq!(s, 201, "{v}");
        }
        app.env = vec![("QRGATE_CRASH_AT".into(), point.into())];
        app.restart().await;
        let target = app.dir.path().join("half");
        let answer = app
            .client
            .post(format!("{}/v1/admin/backup", app.base))
            .insert_header(("Authorization", format!("Bearer {ADMIN}")))
            .send_json(&json!({ "dir": target }))
            .await;
        assert!(answer.is_err(), "the server died mid-backup ({point})");
        assert!(target.join("state.snap").exists(), "{point}");
        let fresh = app.dir.path().join("restored");
        let o = restore(&target, &fresh);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("MANIFEST.json"), "{}", text(&o));
        assert!(!fresh.join("db").exists(), "nothing restored");
        // The source starts, whole.
        app.env.clear();
        app.restart().await;
        assert_eq!(app.balance(&tok).await, 60, "{point}");
        app.books_clean().await;
        app.terminate();
        assert_eq!(check_data(&app.data_dir(), false).status.code(), Some(0));
    }
}

#[actix_web::test]
async fn backups_refuse_bad_targets_and_restore_refuses_damage() {
    let app = TestApp::spawn_with(FAST).await;
    let (id, _) = app.user("one").await;
    let (s, _) = app.earn("x-1", &id, 9).await;
    assert_eq!(s, 201);
    let backup = |dir: Value| app.post("/v1/admin/backup", Some(ADMIN), json!({ "dir": dir }));
    let (s, v) = backup(json!("relative/dir")).await;
    assert_eq!((s, code(&v)), (400, "validation_failed"), "{v}");
    let (s, v) = backup(json!(app.data_dir().join("inside"))).await;
    assert_eq!((s, code(&v)), (400, "validation_failed"), "{v}");
    let full = app.dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("something"), b"x").unwrap();
    let (s, v) = backup(json!(full)).await;
    assert_eq!((s, code(&v)), (409, "backup_target_not_empty"), "{v}");
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1, "left alone");
    let (_, user) = app.user("nobody").await;
    let (s, v) = app
        .post(
            "/v1/admin/backup",
            Some(&user),
            json!({"dir": app.dir.path().join("u")}),
        )
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    assert!(!app.dir.path().join("u").exists());

    // A good one, into an existing empty directory.
    let good = app.dir.path().join("good");
    std::fs::create_dir_all(&good).unwrap();
    let (s, v) = backup(json!(good)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = backup(json!(good)).await;
    assert_eq!((s, code(&v)), (409, "backup_target_not_empty"), "{v}");
    // Restore refuses a data dir that is not empty.
    let o = restore(&good, &app.data_dir());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not empty"), "{}", text(&o));
    // ... and a backup changed since it was written.
    let bad = app.dir.path().join("bad");
    copy_dir(&good, &bad);
    let snap = bad.join("state.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&snap, bytes).unwrap();
    let fresh = app.dir.path().join("fresh");
    let o = restore(&bad, &fresh);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("does not match the manifest"),
        "{}",
        text(&o)
    );
    assert!(!fresh.join("db").exists());
    // The good one restores, and a server starts on it.
    let o = restore(&good, &fresh);
    assert!(o.status.success(), "{}", text(&o));
    let m: Value =
        serde_json::from_slice(&std::fs::read(good.join("MANIFEST.json")).unwrap()).unwrap();
    assert!(
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "secret.key"),
        "{m}"
    );
}
