//! kill -9 while joins are in flight: every join that was answered 2xx is
//! there after the restart.

use super::helpers::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[actix_web::test]
async fn sigkill_during_joins_loses_no_acknowledged_join() {
    let mut app = TestApp::spawn_with(
        "[limits]\ngroup_joins_per_minute = 60000\ngroup_joins_per_minute_max = 60000\n",
    )
    .await;
    let (_, owner) = app.user("owner").await;
    let groups = app.open_groups(&owner, 8).await;
    let mut users = Vec::new();
    for i in 0..600 {
        users.push(app.user(&format!("u{i}")).await);
    }
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let base = app.base.clone();
    let client = client();
    let mut tasks = Vec::new();
    for (i, (uid, utok)) in users.iter().enumerate() {
        let (g, itok) = groups[i % groups.len()].clone();
        let (uid, utok) = (uid.clone(), utok.clone());
        let acked = Arc::clone(&acked);
        let client = client.clone();
        let base = base.clone();
        tasks.push(actix_web::rt::spawn(async move {
            // spread the joins over ~300 ms so the kill lands mid-stream
            actix_web::rt::time::sleep(Duration::from_micros(500 * i as u64)).await;
            let r = client
                .post(format!("{base}/v1/join"))
                .insert_header(("Authorization", format!("Bearer {utok}")))
                .send_json(&json!({"token": itok}))
                .await;
            if let Ok(r) = r {
                if r.status().is_success() {
                    acked.lock().unwrap().push((g, uid));
                }
            }
        }));
    }
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    app.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "some joins were acknowledged before the kill"
    );
    assert!(
        acked.len() < users.len(),
        "the kill landed while joins were in flight ({} acked)",
        acked.len()
    );
    app.restart().await;
    let started = std::time::Instant::now();
    let mut present = std::collections::HashSet::new();
    for (g, _) in &groups {
        let (s, v) = app
            .get(&format!("/v1/groups/{g}/members"), Some(&owner))
            .await;
        assert_eq!(s, 200);
        for m in v["members"].as_array().unwrap() {
            present.insert((g.clone(), s_(&m["user_id"])));
        }
    }
    for a in &acked {
        assert!(
            present.contains(a),
            "acknowledged join {a:?} lost after kill -9"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // sled writes large values to separate blob files that it never fsyncs;
    // qrgate keeps every value small enough to stay in the (fdatasynced) log.
    let blobs = std::fs::read_dir(app.data_dir().join("db").join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "no sled blob files");
}

#[actix_web::test]
async fn sigkill_right_after_an_acknowledged_write_loses_nothing() {
    let mut app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "instant"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for round in 0..3 {
        // A single small write sits in the store's in-process buffer unless the
        // 2xx waited for the flush; kill -9 right after the answer.
        let (uid, u) = app.user(&format!("u{round}")).await;
        let (s, _) = app.join(&u, &tok).await;
        assert_eq!(s, 200);
        app.kill9();
        app.restart().await;
        let (s, v) = app.get(&format!("/v1/groups/{g}/members"), Some(&u)).await;
        assert_eq!(
            s, 200,
            "round {round}: the session and the membership survived: {v}"
        );
        assert!(v["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == uid.as_str()));
    }
}

/// A disk that fills up (the server's file size limit, `ulimit -f`, with
/// SIGXFSZ ignored so writes fail with EFBIG as on a full disk): writes that
/// cannot be made durable answer 503 `storage_unavailable`, never 2xx;
/// `/healthz` answers 503 with the reason; reads keep being served, from
/// memory and from the checkpoint alike; after a restart with room,
/// everything acknowledged is there. (Writes resuming once space is free
/// are tested under the journal's fault-injecting file layer.)
#[actix_web::test]
async fn a_full_disk_refuses_writes_with_503_and_keeps_serving_reads() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Full disk"})).await;
    // The same data dir, now with a file size limit a little above what is there.
    app.kill9();
    let cfg = app.dir.path().join("config.toml");
    let db = app.data_dir().join("db").join("db");
    // The largest file there (sled's, or the journal segment writes go to).
    let journal = std::fs::read_dir(app.data_dir().join("journal"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let size_kb = std::fs::metadata(&db)
        .map(|m| m.len())
        .unwrap_or(0)
        .max(journal)
        / 1024;
    let limit_kb = size_kb + 2048;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kb}; exec {} serve --config {}",
            env!("CARGO_BIN_EXE_qrgate"),
            cfg.display()
        ))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    app.base = line
        .trim()
        .strip_prefix("qrgate listening on ")
        .expect("listening")
        .to_string();
    app.child = Some(child);
    app.client = client();
    app.wait_healthy().await;
    // The group's actor is now resident (in memory).
    let (s, _) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(s, 200);
    // Write until the disk is full: big descriptions, each acknowledged or
    // refused. The journal fills its segment with zeros ahead of the
    // frames, so the first refusal can come while room is left below the
    // limit: later writes may still land there, each either durable (201)
    // or refused (503), until nothing fits at all.
    let mut acked = Vec::new();
    let mut first_refusal = None;
    let mut last = 0;
    for i in 0..40_000 {
        let (s, v) = app
            .post(
                "/v1/groups",
                Some(&owner),
                json!({"name": format!("filler {i}"), "description": "x".repeat(280)}),
            )
            .await;
        match s {
            201 => acked.push(s_(&v["id"])),
            _ => assert_eq!((s, code(&v)), (503, "storage_unavailable"), "{v}"),
        }
        last = s;
        if s == 503 {
            let first = *first_refusal.get_or_insert(i);
            if i > first + 20 {
                break;
            }
        }
    }
    assert!(first_refusal.is_some(), "the disk never filled up");
    assert_eq!(last, 503, "the disk stays full");
    let (s, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(s, 200, "reads from memory keep working: {v}");
    // A read that activates a group from storage is served too (sled is
    // not written on the request path, so its I/O state does not matter).
    let (s, v) = app
        .get(&format!("/v1/groups/{}", acked[0]), Some(&owner))
        .await;
    assert_eq!(s, 200, "reads from storage keep working: {v}");
    let mut r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status().as_u16(), 503, "healthz says writes are refused");
    let body = r.body().await.expect("body");
    assert!(
        String::from_utf8_lossy(&body).contains("disk full"),
        "and why: {body:?}"
    );
    // Restart with room: everything acknowledged is there.
    app.restart().await;
    for id in acked.iter().rev().take(50).chain(std::iter::once(&g)) {
        let (s, v) = app.get(&format!("/v1/groups/{id}"), Some(&owner)).await;
        assert_eq!(s, 200, "acknowledged group {id} lost: {v}");
    }
    eprintln!("{} writes acknowledged before the disk filled", acked.len());
}
