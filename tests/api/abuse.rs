//! Anti-abuse on invitations: a bot wave steps up one invitation only,
//! challenges (proof of work and an external captcha), lineage and branch
//! burns, analytics, group reputation.

use super::helpers::*;
use super::ws::{connect, next_of};
use serde_json::{json, Value};
use std::time::Duration;

/// Small thresholds so a test-sized wave trips them: a fresh account (30)
/// through an invitation whose 5+ recent joiners were mostly new (20) is
/// flagged at 50, whatever the minute; a burst above 5 attempts a minute
/// adds 20.
const ENFORCE: &str = r#"
[risk]
mode = "enforce"
invite_attempts_per_minute = 5
min_sample = 5
challenge_after_flagged = 3
approval_after_flagged = 6
pause_after_flagged = 9
reputation_min_attempts = 1000

[risk.weights]
new_account = 30

[risk.challenge]
pow_bits = 8
ttl_seconds = 5
"#;

async fn join_dev(app: &TestApp, user: &str, tok: &str, device: &str) -> (u16, Value) {
    app.call_with(
        "POST",
        "/v1/join",
        Some(user),
        Some(json!({ "token": tok })),
        &[("X-Device-Id", device.to_string())],
    )
    .await
}

pub(super) async fn answer(
    app: &TestApp,
    user: &str,
    challenge: &Value,
    solution: &str,
) -> (u16, Value) {
    app.post(
        &format!("/v1/challenges/{}", s_(&challenge["id"])),
        Some(user),
        json!({ "solution": solution }),
    )
    .await
}

pub(super) fn solve(challenge: &Value) -> String {
    let bits = challenge["pow_bits"].as_u64().expect("pow_bits") as u8;
    qrgate::domain::challenge::pow_solve(&s_(&challenge["id"]), bits)
}

async fn stage_of(app: &TestApp, token: &str, iid: &str) -> String {
    let (s, v) = app.get(&format!("/v1/invites/{iid}"), Some(token)).await;
    assert_eq!(s, 200, "{v}");
    s_(&v["stage"])
}

#[actix_web::test]
async fn a_bot_wave_steps_up_its_invitation_only() {
    let app = TestApp::spawn_with(ENFORCE).await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Poster", "member_limit": 200}))
        .await;
    let (leaked, leaked_tok, _) = app.invite(&owner, &g, json!({})).await;
    let (other, other_tok, _) = app.invite(&owner, &g, json!({})).await;
    let mut ws = connect(&app, &owner).await;

    // 20 fresh accounts through the leaked invitation
    let mut codes = Vec::new();
    for i in 0..20 {
        let (_, bot) = app.user(&format!("bot{i}")).await;
        let (s, v) = app.join(&bot, &leaked_tok).await;
        let code = if s == 200 {
            "joined".to_string()
        } else {
            s_(&v["code"])
        };
        if code == "challenge_required" {
            assert_eq!(s, 403);
            let c = &v["challenge"];
            assert_eq!(c["kind"], "pow");
            assert_eq!(c["pow_bits"], 8);
            assert!(s_(&c["id"]).starts_with("ch_"));
            assert_eq!(
                s_(&c["answer_url"]),
                format!("/v1/challenges/{}", s_(&c["id"]))
            );
        }
        codes.push(code);
    }
    // the first five look like anyone; then flagged joins are challenged,
    // the invitation steps up, and finally it pauses
    assert!(codes[..5].iter().all(|c| c == "joined"), "{codes:?}");
    assert!(codes[5..].iter().all(|c| c != "joined"), "{codes:?}");
    assert_eq!(codes[5], "challenge_required", "{codes:?}");
    assert_eq!(
        codes.last().map(String::as_str),
        Some("invite_paused"),
        "{codes:?}"
    );
    assert_eq!(stage_of(&app, &owner, &leaked).await, "paused");
    for stage in ["challenge", "approval", "paused"] {
        let e = next_of(&mut ws, "invite_stage_changed").await;
        assert_eq!(e["stage"], stage, "{e}");
        assert_eq!(s_(&e["invite_id"]), leaked);
    }
    assert!(
        app.metric("qrgate_invite_stage_changes_total{stage=\"paused\"}")
            .await
            >= 1.0
    );
    assert!(app.metric("qrgate_joins_flagged_total").await >= 9.0);

    // the group's other invitation keeps working for a newcomer
    assert_eq!(stage_of(&app, &owner, &other).await, "open");
    let (_, human) = app.user("human").await;
    let (s, v) = app.join(&human, &other_tok).await;
    assert_eq!(s, 200, "{v}");
    // ... and the paused one refuses even a solved challenge's owner
    let (_, late) = app.user("late").await;
    let (s, v) = app.join(&late, &leaked_tok).await;
    assert_eq!((s, s_(&v["code"]).as_str()), (403, "invite_paused"), "{v}");

    // analytics of the leaked invitation tell the story
    let (s, a) = app
        .get(&format!("/v1/invites/{leaked}/analytics"), Some(&owner))
        .await;
    assert_eq!(s, 200, "{a}");
    let t = &a["totals"];
    assert_eq!(t["attempts"], 21, "{a}");
    assert_eq!(t["joins"], 5, "{a}");
    assert!(t["flagged"].as_u64() >= Some(9), "{a}");
    assert!(t["challenges_issued"].as_u64() >= Some(1), "{a}");
    assert!(t["refusals"]["invite_paused"].as_u64() >= Some(2), "{a}");
    assert_eq!(a["stage"], "paused");
    assert!(!a["series"].as_array().expect("series").is_empty());
    // a plain member may not read it
    let (s, _) = app
        .get(&format!("/v1/invites/{leaked}/analytics"), Some(&human))
        .await;
    assert_eq!(s, 403);

    // the owner resets it: open again, a flagged join is challenged, not refused
    let (s, _) = app
        .post(
            &format!("/v1/invites/{leaked}/reset"),
            Some(&human),
            json!({}),
        )
        .await;
    assert_eq!(s, 403, "members may not reset");
    let (s, v) = app
        .post(
            &format!("/v1/invites/{leaked}/reset"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stage"], "open");
    let e = next_of(&mut ws, "invite_stage_changed").await;
    assert_eq!(e["stage"], "open");
    let (s, v) = app.join(&late, &leaked_tok).await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (403, "challenge_required"),
        "{v}"
    );
    let (s, v) = answer(&app, &late, &v["challenge"], &solve(&v["challenge"])).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "joined");
    // the stage survives a restart (it is stored with the invitation)
    let (_, bot) = app.user("bot-late").await;
    for _ in 0..3 {
        let (s, _) = join_dev(&app, &bot, &leaked_tok, "farm").await;
        assert_eq!(s, 403);
    }
    let before = stage_of(&app, &owner, &leaked).await;
    let mut app = app;
    app.restart().await;
    assert_eq!(stage_of(&app, &owner, &leaked).await, before);
}

#[actix_web::test]
async fn a_solved_challenge_lets_one_user_in_once() {
    let app = TestApp::spawn_with(&ENFORCE.replace("ttl_seconds = 5", "ttl_seconds = 300")).await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Shop"})).await;
    let (iid, tok, _) = app.invite(&owner, &g, json!({})).await;
    // one device behind many accounts: its fourth account is flagged
    // (new account 30 + shared device 30)
    let mut users = Vec::new();
    for i in 0..4 {
        let (uid, t) = app.user(&format!("farm{i}")).await;
        users.push((uid, t));
    }
    for (_, t) in &users[..3] {
        let (s, v) = join_dev(&app, t, &tok, "device-42").await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, u) = &users[3];
    let (s, v) = join_dev(&app, u, &tok, "device-42").await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (403, "challenge_required"),
        "{v}"
    );
    assert_eq!(v["type"], "https://qrgate.dev/problems/challenge_required");
    let c = v["challenge"].clone();

    // wrong answers are refused and the challenge stays answerable
    // (a random string solves 8 bits once in 256: pick one that does not)
    let wrong = (0..)
        .map(|n| format!("w{n}"))
        .find(|w| !qrgate::domain::challenge::pow_solves(&s_(&c["id"]), w, 8))
        .expect("a wrong answer");
    let (s, v) = answer(&app, u, &c, &wrong).await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (403, "challenge_failed"),
        "{v}"
    );
    let (s, v) = app
        .post(
            &format!("/v1/challenges/{}", s_(&c["id"])),
            Some(u),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (400, "validation_failed"),
        "{v}"
    );
    // someone else cannot use it, solved or not
    let (_, thief) = app.user("thief").await;
    let (s, v) = answer(&app, &thief, &c, &solve(&c)).await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (400, "invalid_challenge"),
        "{v}"
    );
    // a forged id is invalid
    let mut forged = s_(&c["id"]);
    forged.replace_range(10..11, if &forged[10..11] == "A" { "B" } else { "A" });
    let (s, v) = answer(&app, u, &json!({"id": forged, "pow_bits": 8}), "1").await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (400, "invalid_challenge"),
        "{v}"
    );

    // solved: in, once
    let solution = solve(&c);
    let (s, v) = answer(&app, u, &c, &solution).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(s_(&v["group_id"]), g);
    let (s, v) = answer(&app, u, &c, &solution).await;
    assert_eq!((s, s_(&v["code"]).as_str()), (409, "challenge_used"), "{v}");
    // the lineage records the score, its reasons and the challenge
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/invites/{iid}/joins"), Some(&owner))
        .await;
    assert_eq!(s, 200, "{v}");
    let me = v["joins"]
        .as_array()
        .expect("joins")
        .iter()
        .find(|j| j["user_id"] == users[3].0.as_str())
        .cloned()
        .expect("the challenged user is listed");
    assert_eq!(me["risk"]["challenged"], true, "{me}");
    assert!(me["risk"]["score"].as_u64() >= Some(50), "{me}");
    let reasons = me["risk"]["reasons"].to_string();
    assert!(
        reasons.contains("shared_device") && reasons.contains("new_account"),
        "{me}"
    );

    assert!(
        app.metric("qrgate_challenges_total{kind=\"pow\",outcome=\"passed\"}")
            .await
            >= 1.0
    );
    // used even after a restart (it is stored), and after removal
    let mut app = app;
    app.restart().await;
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/groups/{g}/members/{}", users[3].0),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = answer(&app, u, &c, &solution).await;
    assert_eq!((s, s_(&v["code"]).as_str()), (409, "challenge_used"), "{v}");

    // X-Device-Id is validated
    let (s, v) = join_dev(&app, &thief, &tok, &"x".repeat(129)).await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (400, "validation_failed"),
        "{v}"
    );
}

#[actix_web::test]
async fn a_challenge_not_answered_in_time_expires() {
    let mut app = TestApp::spawn_with(ENFORCE).await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Slow"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for i in 0..3 {
        let (_, t) = app.user(&format!("farm{i}")).await;
        assert_eq!(join_dev(&app, &t, &tok, "device-42").await.0, 200);
    }
    let (_, slow) = app.user("slow").await;
    let (s, v) = join_dev(&app, &slow, &tok, "device-42").await;
    assert_eq!(s, 403, "{v}");
    let slow_c = v["challenge"].clone();
    // Six seconds later (the challenge lives five), without waiting them.
    app.env = vec![("QRGATE_CLOCK_OFFSET_SECS".into(), "6".into())];
    app.restart().await;
    let (s, v) = answer(&app, &slow, &slow_c, &solve(&slow_c)).await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (410, "challenge_expired"),
        "{v}"
    );
}

#[actix_web::test]
async fn lineage_traces_branches_and_survives_removal_and_restart() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Tree"})).await;
    let (root, root_tok, _) = app.invite(&owner, &g, json!({})).await;
    let (a_id, a) = app.user("a").await;
    assert_eq!(app.join(&a, &root_tok).await.0, 200);
    // a re-shares the root; b comes through a's branch and re-shares it again
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/invites"),
            Some(&a),
            json!({"parent_id": root}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (s_(&v["parent_id"]), v["depth"].as_u64()),
        (root.clone(), Some(1))
    );
    let (child, child_tok) = (s_(&v["id"]), s_(&v["token"]));
    let (b_id, b) = app.user("b").await;
    assert_eq!(app.join(&b, &child_tok).await.0, 200);
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/invites"),
            Some(&b),
            json!({"parent_id": child}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (grandchild, grandchild_tok) = (s_(&v["id"]), s_(&v["token"]));
    let (c_id, c) = app.user("c").await;
    assert_eq!(app.join(&c, &grandchild_tok).await.0, 200);
    // a sibling branch from the root
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/invites"),
            Some(&owner),
            json!({"parent_id": root}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let sibling_tok = s_(&v["token"]);
    // a parent from another group, or an unknown one, is refused
    let g2 = app.group(&owner, json!({"name": "Other"})).await;
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g2}/invites"),
            Some(&owner),
            json!({"parent_id": root}),
        )
        .await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (400, "validation_failed"),
        "{v}"
    );

    // (sorted: joins within one second are listed in user id order)
    let joins = |v: &Value| -> Vec<(String, String, String)> {
        let mut j: Vec<_> = v["joins"]
            .as_array()
            .expect("joins")
            .iter()
            .map(|j| (s_(&j["user_id"]), s_(&j["via_invite"]), s_(&j["status"])))
            .collect();
        j.sort();
        j
    };
    let sorted = |mut v: Vec<(String, String, String)>| {
        v.sort();
        v
    };
    let path = format!("/v1/groups/{g}/invites/{root}/joins?branch=true");
    let (s, v) = app.get(&path, Some(&owner)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        joins(&v),
        sorted(vec![
            (a_id.clone(), root.clone(), "member".into()),
            (b_id.clone(), child.clone(), "member".into()),
            (c_id.clone(), grandchild.clone(), "member".into()),
        ])
    );
    let (_, v) = app
        .get(
            &format!("/v1/groups/{g}/invites/{root}/joins"),
            Some(&owner),
        )
        .await;
    assert_eq!(
        joins(&v).len(),
        1,
        "without branch: only the root's own joins"
    );
    // the creator of a branch may see it; other members and outsiders may not
    let (s, _) = app
        .get(&format!("/v1/groups/{g}/invites/{child}/joins"), Some(&a))
        .await;
    assert_eq!(s, 200);
    let (s, _) = app.get(&path, Some(&c)).await;
    assert_eq!(s, 403);
    let (_, outsider) = app.user("outsider").await;
    let (s, _) = app.get(&path, Some(&outsider)).await;
    assert_eq!(s, 403);

    // removal, blocking and leaving keep the chain
    let (s, v) = app
        .call(
            "DELETE",
            &format!("/v1/groups/{g}/members/{b_id}"),
            Some(&c),
            None,
        )
        .await;
    assert_eq!(s, 403, "a plain member removes nobody: {v}");
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/groups/{g}/members/{b_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/groups/{g}/members/{c_id}"),
            Some(&c),
            None,
        )
        .await;
    assert_eq!(s, 204, "members may leave");
    assert_eq!(app.block(&owner, &g, &a_id).await.0, 204);
    let owner_id = s_(&app.get(&format!("/v1/groups/{g}"), Some(&owner)).await.1["owner_id"]);
    let (s, v) = app
        .call(
            "DELETE",
            &format!("/v1/groups/{g}/members/{owner_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (409, "cannot_remove_owner"),
        "{v}"
    );
    let want = sorted(vec![
        (a_id.clone(), root.clone(), "blocked".to_string()),
        (b_id.clone(), child.clone(), "removed".to_string()),
        (c_id.clone(), grandchild.clone(), "left".to_string()),
    ]);
    let (_, v) = app.get(&path, Some(&owner)).await;
    assert_eq!(joins(&v), want);
    let (_, v) = app
        .get(&format!("/v1/groups/{g}/members"), Some(&owner))
        .await;
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1), "{v}");
    let mut app = app;
    app.restart().await;
    let (_, v) = app.get(&path, Some(&owner)).await;
    assert_eq!(joins(&v), want, "after a restart");

    // burning the child's branch kills the grandchild, not the root or the sibling
    let (_, d) = app.user("d").await;
    assert_eq!(app.join(&d, &child_tok).await.0, 200);
    let (s, v) = app
        .post(&format!("/v1/invites/{child}/burn"), Some(&d), json!({}))
        .await;
    assert_eq!(
        s, 403,
        "a member who did not create it may not burn it: {v}"
    );
    let (s, v) = app
        .post(
            &format!("/v1/invites/{child}/burn"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revoked"], json!([child, grandchild]));
    let (_, e) = app.user("e").await;
    for t in [&child_tok, &grandchild_tok] {
        let (s, v) = app.join(&e, t).await;
        assert_eq!((s, s_(&v["code"]).as_str()), (410, "invite_revoked"), "{v}");
    }
    assert_eq!(app.join(&e, &sibling_tok).await.0, 200, "the sibling lives");
    let (_, f) = app.user("f").await;
    assert_eq!(app.join(&f, &root_tok).await.0, 200, "the root lives");
    // a revoked invitation cannot be re-shared
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/invites"),
            Some(&owner),
            json!({"parent_id": child}),
        )
        .await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (400, "validation_failed"),
        "{v}"
    );
}

#[actix_web::test]
async fn a_group_of_flagged_joins_is_listed_and_limited() {
    let app = TestApp::spawn_with(
        r#"
[risk]
mode = "enforce"
reputation_min_attempts = 4
reputation_flagged_share = 0.5
suspect_invites_per_hour = 2
"#,
    )
    .await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Farm"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for i in 0..6 {
        let (_, u) = app.user(&format!("u{i}")).await;
        join_dev(&app, &u, &tok, "one-phone").await;
    }
    let (s, v) = app.get("/v1/admin/groups/flagged", Some(ADMIN)).await;
    assert_eq!(s, 200, "{v}");
    let listed = v["groups"].as_array().expect("groups");
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!(s_(&listed[0]["group_id"]), g);
    let (s, _) = app.get("/v1/admin/groups/flagged", Some(&owner)).await;
    assert_eq!(s, 403, "operators only");
    // invitation creation is limited to two an hour (the first one counts)
    let (s, v) = app
        .post(&format!("/v1/groups/{g}/invites"), Some(&owner), json!({}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .post(&format!("/v1/groups/{g}/invites"), Some(&owner), json!({}))
        .await;
    assert_eq!((s, s_(&v["code"]).as_str()), (429, "rate_limited"), "{v}");
    // the listing survives a restart; clearing it lifts the limit
    let mut app = app;
    app.restart().await;
    let (_, v) = app.get("/v1/admin/groups/flagged", Some(ADMIN)).await;
    assert_eq!(v["groups"].as_array().map(Vec::len), Some(1));
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/admin/groups/{g}/flag"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (_, v) = app.get("/v1/admin/groups/flagged", Some(ADMIN)).await;
    assert_eq!(v["groups"].as_array().map(Vec::len), Some(0));
    let (s, v) = app
        .post(&format!("/v1/groups/{g}/invites"), Some(&owner), json!({}))
        .await;
    assert_eq!(s, 201, "{v}");
}

#[actix_web::test]
async fn observe_mode_scores_without_acting() {
    let app = TestApp::spawn().await; // tests default to observe
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Watch"})).await;
    let (iid, tok, _) = app.invite(&owner, &g, json!({})).await;
    for i in 0..5 {
        let (_, u) = app.user(&format!("w{i}")).await;
        let (s, v) = join_dev(&app, &u, &tok, "same").await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, v) = app
        .get(&format!("/v1/groups/{g}/invites/{iid}/joins"), Some(&owner))
        .await;
    let joins = v["joins"].as_array().expect("joins");
    assert_eq!(joins.len(), 5, "{v}");
    assert!(
        joins
            .iter()
            .any(|j| j["risk"]["score"].as_u64() >= Some(50)),
        "the fifth account on one device scores as flagged: {v}"
    );
    assert!(
        joins.iter().all(|j| j["risk"]["challenged"] == false),
        "{v}"
    );
    assert_eq!(stage_of(&app, &owner, &iid).await, "open");
}

/// A captcha provider with the siteverify shape: `good` passes.
async fn fake_captcha() -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    #[derive(serde::Deserialize)]
    struct Form {
        secret: String,
        response: String,
    }
    let server = HttpServer::new(|| {
        App::new().route(
            "/siteverify",
            web::post().to(|f: web::Form<Form>| async move {
                let ok = f.secret == "s3cret" && f.response == "good";
                HttpResponse::Ok().json(json!({ "success": ok }))
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("http://{addr}/siteverify"), handle)
}

#[actix_web::test]
async fn an_external_captcha_provider_decides() {
    let (url, provider) = fake_captcha().await;
    let app = TestApp::spawn_with(&format!(
        r#"
[risk]
mode = "enforce"

[risk.challenge]
kind = "captcha"

[risk.challenge.captcha]
verify_url = "{url}"
secret = "s3cret"
site_key = "site-key-1"
"#
    ))
    .await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Captcha"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for i in 0..3 {
        let (_, u) = app.user(&format!("p{i}")).await;
        assert_eq!(join_dev(&app, &u, &tok, "dev").await.0, 200);
    }
    let (_, u) = app.user("p3").await;
    let (s, v) = join_dev(&app, &u, &tok, "dev").await;
    assert_eq!(s, 403, "{v}");
    let c = v["challenge"].clone();
    assert_eq!(
        (c["kind"].clone(), c["site_key"].clone()),
        (json!("captcha"), json!("site-key-1"))
    );
    let at = format!("/v1/challenges/{}", s_(&c["id"]));
    let (s, v) = app.post(&at, Some(&u), json!({"response": "bad"})).await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (403, "challenge_failed"),
        "{v}"
    );
    let (s, v) = app.post(&at, Some(&u), json!({"response": "good"})).await;
    assert_eq!(s, 200, "{v}");
    // the provider down: 502, nothing joined
    provider.stop(true).await;
    let (_, u2) = app.user("p4").await;
    let (s, v) = join_dev(&app, &u2, &tok, "dev").await;
    assert_eq!(s, 403, "{v}");
    let at = format!("/v1/challenges/{}", s_(&v["challenge"]["id"]));
    let (s, v) = app.post(&at, Some(&u2), json!({"response": "good"})).await;
    assert_eq!(
        (s, s_(&v["code"]).as_str()),
        (502, "captcha_unavailable"),
        "{v}"
    );
}

/// One flagged account that never answers its challenges and only retries
/// POST /v1/join cannot pause a public invitation: the ladder counts
/// flagged users, not their retries.
#[actix_web::test]
async fn one_account_retrying_cannot_step_up_an_invitation() {
    let app = TestApp::spawn_with(&ENFORCE.replace("new_account = 30", "new_account = 50")).await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Poster"})).await;
    let (iid, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (_, bot) = app.user("bot").await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        let (_, v) = app.join(&bot, &tok).await;
        codes.push(s_(&v["code"]));
    }
    let (_, v) = app.get(&format!("/v1/invites/{iid}"), Some(&owner)).await;
    assert_eq!(s_(&v["stage"]), "open", "{codes:?} stage={}", v["stage"]);
    assert!(codes.iter().all(|c| c == "challenge_required"), "{codes:?}");
}

/// The caller's own state (here: a member re-joining, which no rate limit
/// stops) is not counted against the invitation: nobody can raise
/// `invite_burst`/`invite_failures` for every later joiner that way.
#[actix_web::test]
async fn refused_attempts_poison_the_invitation_signals() {
    let app = TestApp::spawn_with(ENFORCE).await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Poster"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for _ in 0..60 {
        let (s, v) = app.join(&owner, &tok).await;
        assert_eq!((s, s_(&v["code"]).as_str()), (409, "already_member"));
    }
    // a newcomer (fresh account, alone) is not taken for a wave
    let (_, human) = app.user("human").await;
    let (s, v) = app.join(&human, &tok).await;
    assert_eq!(s, 200, "{v}");
    let (s, a) = app
        .get(&format!("/v1/groups/{g}/analytics"), Some(&owner))
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        a["totals"]["attempts"], 1,
        "only the newcomer's attempt: {a}"
    );
    assert_eq!(a["totals"]["refusals"], json!({}), "{a}");
}

/// docs/anti-abuse.md: "a kill -9 can lose the last second of counts" (and no more).
#[actix_web::test]
async fn analytics_survive_a_kill_after_two_seconds() {
    let mut app = TestApp::spawn_with("").await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "G"})).await;
    let (iid, tok, _) = app.invite(&owner, &g, json!({})).await;
    for i in 0..3 {
        let (_, u) = app.user(&format!("u{i}")).await;
        assert_eq!(app.join(&u, &tok).await.0, 200);
    }
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    app.restart().await; // kill -9
    let (s, a) = app
        .get(&format!("/v1/invites/{iid}/analytics"), Some(&owner))
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["totals"]["joins"], 3, "{a}");
}

/// Clearing a flagged group survives a restart, and so does the
/// invitation-creation limit of a flagged group.
#[actix_web::test]
async fn a_cleared_flag_and_the_suspect_limit_survive_a_restart() {
    let cfg = r#"
[risk]
mode = "enforce"
reputation_min_attempts = 4
reputation_flagged_share = 0.5
suspect_invites_per_hour = 2
"#;
    let mut app = TestApp::spawn_with(cfg).await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Farm"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for i in 0..6 {
        let (_, u) = app.user(&format!("u{i}")).await;
        app.call_with(
            "POST",
            "/v1/join",
            Some(&u),
            Some(json!({"token": tok})),
            &[("X-Device-Id", "one-phone".to_string())],
        )
        .await;
    }
    assert_eq!(create_invite(&app, &owner, &g).await, 201);
    assert_eq!(create_invite(&app, &owner, &g).await, 429);
    app.restart().await;
    assert_eq!(
        create_invite(&app, &owner, &g).await,
        429,
        "limit reset by a restart"
    );

    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/admin/groups/{g}/flag"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    app.restart().await;
    let (_, u) = app.user("late").await;
    app.call_with(
        "POST",
        "/v1/join",
        Some(&u),
        Some(json!({"token": tok})),
        &[("X-Device-Id", "one-phone".to_string())],
    )
    .await;
    let (_, v) = app.get("/v1/admin/groups/flagged", Some(ADMIN)).await;
    assert_eq!(v["groups"].as_array().map(Vec::len), Some(0), "{v}");
}

/// A plain member who created an invitation sees who joined through it,
/// not their risk scores (those are for moderators).
#[actix_web::test]
async fn invitation_creators_do_not_see_risk_scores() {
    let app = TestApp::spawn_with(ENFORCE).await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "G"})).await;
    let (_, otok, _) = app.invite(&owner, &g, json!({})).await;
    let (_, m) = app.user("m").await;
    assert_eq!(app.join(&m, &otok).await.0, 200);
    let (iid, tok, _) = app.invite(&m, &g, json!({})).await;
    let (_, x) = app.user("x").await;
    assert_eq!(app.join(&x, &tok).await.0, 200);
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/invites/{iid}/joins"), Some(&m))
        .await;
    assert_eq!(s, 200, "{v}");
    let risk: &Value = &v["joins"][0]["risk"];
    assert!(risk.is_null(), "{v}");
}

async fn create_invite(app: &TestApp, owner: &str, g: &str) -> u16 {
    app.post(&format!("/v1/groups/{g}/invites"), Some(owner), json!({}))
        .await
        .0
}

/// `X-Forwarded-For` counts only when the peer is a trusted proxy: behind
/// one, each client has its own limits; without one, a client cannot pick
/// its own address.
#[actix_web::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let new_user = |app: &TestApp, from: &'static str| {
        let req = app
            .client
            .post(format!("{}/v1/users", app.base))
            .insert_header(("X-Forwarded-For", from));
        async move {
            let mut r = req.send_json(&json!({"name": "n"})).await.expect("request");
            let v: Value =
                serde_json::from_slice(&r.body().await.expect("body")).unwrap_or_default();
            (r.status().as_u16(), v)
        }
    };
    let limits = "[limits]\nusers_per_minute_per_ip = 2\n";
    let behind =
        TestApp::spawn_with(&format!("trusted_proxies = [\"127.0.0.0/8\"]\n{limits}")).await;
    for _ in 0..2 {
        assert_eq!(new_user(&behind, "203.0.113.1").await.0, 201);
    }
    let (s, v) = new_user(&behind, "203.0.113.1").await;
    assert_eq!((s, code(&v)), (429, "rate_limited"), "{v}");
    assert_eq!(
        new_user(&behind, "203.0.113.2").await.0,
        201,
        "another client"
    );
    // A client naming someone else in front of the proxy is still itself.
    let (s, v) = new_user(&behind, "198.51.100.1, 203.0.113.1").await;
    assert_eq!((s, code(&v)), (429, "rate_limited"), "{v}");

    let direct = TestApp::spawn_with(limits).await;
    for from in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(new_user(&direct, from).await.0, 201);
    }
    let (s, v) = new_user(&direct, "203.0.113.3").await;
    assert_eq!(
        (s, code(&v)),
        (429, "rate_limited"),
        "the header is not believed: {v}"
    );
}

/// A burst of new accounts from one network asks each further one for a
/// proof of work; a solved one creates the account, once.
#[actix_web::test]
async fn a_burst_of_new_accounts_from_one_network_needs_a_proof_of_work() {
    let app = TestApp::spawn_with(
        "[limits]\nusers_per_minute_per_network_before_challenge = 2\n[risk]\nmode = \"enforce\"\n[risk.challenge]\npow_bits = 8\n",
    )
    .await;
    let create = |body: Value| app.post("/v1/users", None, body);
    for n in 0..2 {
        let (s, v) = create(json!({ "name": format!("n{n}") })).await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = create(json!({"name": "third"})).await;
    assert_eq!((s, code(&v)), (403, "challenge_required"), "{v}");
    let c = &v["challenge"];
    assert_eq!(
        (c["kind"].as_str(), c["answer_url"].as_str()),
        (Some("pow"), Some("/v1/users")),
        "{v}"
    );
    let id = s_(&c["id"]);
    let bits = c["pow_bits"].as_u64().unwrap() as u8;
    let (s, v) = create(json!({"name": "third", "challenge_id": id, "solution": "wrong"})).await;
    assert_eq!((s, code(&v)), (403, "challenge_failed"), "{v}");
    let solution = qrgate::domain::challenge::pow_solve(&id, bits);
    let answer = json!({"name": "third", "challenge_id": id, "solution": solution});
    let (s, v) = create(answer.clone()).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = create(answer).await;
    assert_eq!((s, code(&v)), (409, "challenge_used"), "{v}");
    let (s, v) = create(json!({"name": "x", "challenge_id": id})).await;
    assert_eq!((s, code(&v)), (400, "validation_failed"), "{v}");
    // The operator (a service creating users) is never asked.
    let (s, v) = app
        .post("/v1/users", Some(ADMIN), json!({"name": "svc"}))
        .await;
    assert_eq!(s, 201, "{v}");
}

/// Invitations are capped per member and hour, and per group counting the
/// revoked ones: a create-and-revoke loop fills neither memory nor disk.
#[actix_web::test]
async fn invitations_are_capped_per_member_and_hour_and_per_group_revoked_ones_included() {
    let app = TestApp::spawn_with(
        "[limits]\ninvites_per_member_per_hour = 3\nmax_live_invites_per_group = 5\nmax_stored_invites_per_group = 5\n",
    )
    .await;
    let (_, owner) = app.user("owner").await;
    let (_, member) = app.user("member").await;
    let g = app.group(&owner, json!({"name": "capped"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    assert_eq!(app.join(&member, &tok).await.0, 200);
    let path = format!("/v1/groups/{g}/invites");
    let create = |who: String| {
        let path = path.clone();
        let app = &app;
        async move { app.post(&path, Some(&who), json!({})).await }
    };
    let mut made = Vec::new();
    for _ in 0..3 {
        let (s, v) = create(member.clone()).await;
        assert_eq!(s, 201, "{v}");
        made.push(s_(&v["id"]));
    }
    let (s, v) = create(member.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (429, "rate_limited"),
        "the member's fourth in the hour: {v}"
    );
    // Revoked ones still count toward what the group stores.
    for id in &made[..2] {
        let (s, v) = app
            .call("DELETE", &format!("/v1/invites/{id}"), Some(&owner), None)
            .await;
        assert_eq!(s, 204, "{v}");
    }
    let (s, v) = create(owner.clone()).await;
    assert_eq!(s, 201, "the fifth stored: {v}");
    let (s, v) = create(owner.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (409, "too_many_invites"),
        "three live, five stored: {v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("revoked"), "{v}");
}

/// Revoking an invitation, or burning its branch, drops the join requests
/// that came through it: their seats come free, and the requester and the
/// group's feed hear it.
#[actix_web::test]
async fn revoking_or_burning_an_invitation_drops_its_pending_requests() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(
            &owner,
            json!({"name": "tight", "approval_required": true, "member_limit": 100}),
        )
        .await;
    let (a, a_tok, _) = app.invite(&owner, &g, json!({})).await;
    let (b, b_tok, _) = app.invite(&owner, &g, json!({})).await;
    let (x_id, x) = app.user("x").await;
    let (_, y) = app.user("y").await;
    let mut x_ws = connect(&app, &x).await;
    next_of(&mut x_ws, "hello").await;
    assert_eq!(app.join(&x, &a_tok).await.0, 202);
    let (_, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(v["pending_requests"], 1, "x's request holds a seat: {v}");
    let (s, _) = app
        .call("DELETE", &format!("/v1/invites/{a}"), Some(&owner), None)
        .await;
    assert_eq!(s, 204);
    let e = next_of(&mut x_ws, "join_request_dropped").await;
    assert_eq!(
        (e["user_id"].as_str(), e["invite_id"].as_str()),
        (Some(x_id.as_str()), Some(a.as_str())),
        "{e}"
    );
    let (_, reqs) = app
        .get(&format!("/v1/groups/{g}/requests"), Some(&owner))
        .await;
    assert_eq!(reqs["requests"].as_array().map(Vec::len), Some(0), "{reqs}");
    let (_, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(v["pending_requests"], 0, "its seat is free: {v}");
    // Burning the branch drops a request through it too.
    assert_eq!(app.join(&y, &b_tok).await.0, 202);
    let (s, v) = app
        .post(&format!("/v1/invites/{b}/burn"), Some(&owner), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, reqs) = app
        .get(&format!("/v1/groups/{g}/requests"), Some(&owner))
        .await;
    assert_eq!(reqs["requests"].as_array().map(Vec::len), Some(0), "{reqs}");
}
