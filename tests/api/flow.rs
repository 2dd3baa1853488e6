//! The invitation flow end to end, every join outcome, and persistence across restarts.

use super::helpers::*;
use serde_json::json;
use std::time::Duration;

#[actix_web::test]
async fn invitation_flow_and_every_refusal() {
    let app = TestApp::spawn().await;
    let (owner_id, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Hikers", "member_limit": 200}))
        .await;
    let (s, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(s, 200);
    assert_eq!(v["owner_id"], owner_id.as_str());
    assert_eq!(v["member_count"], 1);
    assert_eq!(v["member_limit"], 200);
    assert_eq!(v["status"], "active");

    let (iid, tok, url) = app
        .invite(&owner, &g, json!({"ttl_seconds": 3600, "max_uses": 2}))
        .await;
    assert!(url.ends_with(&format!("/j/{tok}")), "{url}");
    assert!(url.starts_with(&app.base));
    assert_eq!(tok.len(), 151);
    assert!(
        !tok.contains(&g[2..]),
        "the token must not carry the public group id"
    );

    let (bob_id, bob) = app.user("bob").await;
    let (s, v) = app.join(&bob, &tok).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("joined")), "{v}");
    assert_eq!(v["group_id"], g.as_str());
    let (s, v) = app.join(&bob, &tok).await;
    assert_eq!((s, code(&v)), (409, "already_member"));

    // Lineage: bob came through the invitation, created by the owner.
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/members"), Some(&bob))
        .await;
    assert_eq!(s, 200);
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let b = members
        .iter()
        .find(|m| m["user_id"] == bob_id.as_str())
        .unwrap();
    assert_eq!(b["via_invite"], iid.as_str());
    assert_eq!(b["invited_by"], owner_id.as_str());
    assert_eq!(b["role"], "member");

    // max_uses = 2
    let (_, carol) = app.user("carol").await;
    assert_eq!(app.join(&carol, &tok).await.0, 200);
    let (_, dave) = app.user("dave").await;
    let (s, v) = app.join(&dave, &tok).await;
    assert_eq!((s, code(&v)), (410, "invite_exhausted"));

    // invalid and tampered tokens
    let mut tampered: Vec<u8> = tok.clone().into_bytes();
    tampered[100] = if tampered[100] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        tampered.as_str(),
        "",
        "abc",
        &"A".repeat(151),
        &format!("{tok}A"),
    ] {
        let (s, v) = app.join(&dave, bad).await;
        assert_eq!((s, code(&v)), (400, "invalid_token"), "token {bad:?}");
        assert_eq!(v["status"], 400);
        assert!(v["detail"].as_str().is_some() && v["title"].as_str().is_some());
    }

    // revoke
    let (iid2, tok2, _) = app.invite(&owner, &g, json!({})).await;
    let (s, _) = app
        .call("DELETE", &format!("/v1/invites/{iid2}"), Some(&owner), None)
        .await;
    assert_eq!(s, 204);
    let (s, v) = app.join(&dave, &tok2).await;
    assert_eq!((s, code(&v)), (410, "invite_revoked"));

    // expiry
    let (_, tok3, _) = app.invite(&owner, &g, json!({"ttl_seconds": 1})).await;
    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    let (s, v) = app.join(&dave, &tok3).await;
    assert_eq!((s, code(&v)), (410, "invite_expired"));

    // ttl bounds are explained
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/invites"),
            Some(&owner),
            json!({"ttl_seconds": 604801}),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "validation_failed"));
    assert!(v["detail"].as_str().unwrap().contains("7 days"));

    // block: a blocked user cannot join, and blocking a member removes them
    let (_, tok4, _) = app.invite(&owner, &g, json!({})).await;
    let (eve_id, eve) = app.user("eve").await;
    let (s, _) = app.block(&owner, &g, &eve_id).await;
    assert_eq!(s, 204);
    let (s, v) = app.join(&eve, &tok4).await;
    assert_eq!((s, code(&v)), (403, "blocked"));
    let (s, _) = app.block(&owner, &g, &bob_id).await;
    assert_eq!(s, 204);
    let (s, _) = app
        .get(&format!("/v1/groups/{g}/members"), Some(&bob))
        .await;
    assert_eq!(s, 403, "a blocked member is no longer a member");
    let (s, v) = app.block(&owner, &g, &owner_id).await;
    assert_eq!((s, code(&v)), (409, "cannot_block_owner"));

    // ban burns every invitation; unban does not bring them back
    let (s, v) = app.ban_group(&g, "spam").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "banned");
    let (s, v) = app.join(&dave, &tok4).await;
    assert_eq!((s, code(&v)), (403, "group_banned"));
    let (s, v) = app
        .post(&format!("/v1/groups/{g}/invites"), Some(&owner), json!({}))
        .await;
    assert_eq!((s, code(&v)), (403, "group_banned"));
    let (s, _) = app
        .call(
            "POST",
            &format!("/v1/admin/groups/{g}/unban"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = app.join(&dave, &tok4).await;
    assert_eq!(
        (s, code(&v)),
        (410, "invite_revoked"),
        "burned by the ban for good"
    );
    let (_, tok5, _) = app.invite(&owner, &g, json!({})).await;
    assert_eq!(
        app.join(&dave, &tok5).await.0,
        200,
        "new invitations work after unban"
    );

    // outcomes are counted in /metrics
    assert!(
        app.metric("qrgate_join_outcomes_total{outcome=\"invalid_token\"}")
            .await
            >= 5.0
    );
    assert!(
        app.metric("qrgate_join_outcomes_total{outcome=\"joined\"}")
            .await
            >= 3.0
    );
}

#[actix_web::test]
async fn approval_queue_reserves_seats_and_decisions_are_moderated() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Club", "approval_required": true}))
        .await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (ann_id, ann) = app.user("ann").await;
    let (s, v) = app.join(&ann, &tok).await;
    assert_eq!((s, v["status"].as_str()), (202, Some("pending")), "{v}");
    let rid = s_(&v["request_id"]);
    let (s, v) = app.join(&ann, &tok).await;
    assert_eq!((s, code(&v)), (409, "request_pending"));

    // a plain member may not see or decide requests; an appointed admin may
    let (ben_id, ben) = app.user("ben").await;
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/requests"), Some(&ben))
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"));
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/requests"), Some(&owner))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["requests"][0]["id"], rid.as_str());
    assert_eq!(v["requests"][0]["user_id"], ann_id.as_str());
    let (s, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!((s, v["pending_requests"].as_u64()), (200, Some(1)));

    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/requests/{rid}/approve"),
            Some(&ben),
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"));
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/requests/{rid}/approve"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("approved")), "{v}");
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/requests/{rid}/approve"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (404, "request_not_found"),
        "a decided request is no longer pending"
    );
    let (s, _) = app
        .get(&format!("/v1/groups/{g}/members"), Some(&ann))
        .await;
    assert_eq!(s, 200, "approved joiner is a member");

    // ben joins (pending), gets appointed? No: make ann an admin and let her reject ben.
    let (s, v) = app.join(&ben, &tok).await;
    assert_eq!(s, 202, "{v}");
    let ben_rid = s_(&v["request_id"]);
    let (s, _) = app
        .call(
            "PUT",
            &format!("/v1/groups/{g}/admins/{ann_id}"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(s, 403, "only the owner appoints admins");
    let (s, _) = app
        .call(
            "PUT",
            &format!("/v1/groups/{g}/admins/{ann_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/requests/{ben_rid}/reject"),
            Some(&ann),
            json!({}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("rejected")));
    let (s, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(s, 200);
    assert_eq!(v["member_count"], 2);
    assert_eq!(v["pending_requests"], 0);
    let _ = ben_id;
}

#[actix_web::test]
async fn pending_requests_hold_seats_until_they_expire() {
    let app = TestApp::spawn_with(
        "[limits]\njoin_request_ttl_seconds = 6\n[actors]\nidle_timeout_seconds = 2\n",
    )
    .await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(
            &owner,
            json!({"name": "Tiny", "approval_required": true, "member_limit": 100}),
        )
        .await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    // 99 pending requests fill the 100 seats (owner holds one). Users are
    // made first so the requests, which expire after 6 s, go in quickly even
    // on a loaded machine.
    let mut users = Vec::new();
    for i in 0..99 {
        users.push(app.user(&format!("u{i}")).await.1);
    }
    let (_, late) = app.user("late").await;
    for t in &users {
        let (s, v) = app.join(t, &tok).await;
        assert_eq!(s, 202, "{v}");
    }
    let (s, v) = app.join(&late, &tok).await;
    assert_eq!(
        (s, code(&v)),
        (409, "group_full"),
        "reserved seats count against the limit"
    );
    actix_web::rt::time::sleep(Duration::from_millis(7500)).await;
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/requests"), Some(&owner))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["requests"].as_array().unwrap().len(),
        0,
        "requests expired"
    );
    let (s, v) = app.join(&late, &tok).await;
    assert_eq!(s, 202, "an expired request releases its seat: {v}");
}

#[actix_web::test]
async fn everything_survives_a_restart_and_idle_actors_come_back() {
    let mut app = TestApp::spawn_with("[actors]\nidle_timeout_seconds = 1\n").await;
    let (owner_id, owner) = app.user("owner").await;
    let g = app
        .group(
            &owner,
            json!({"name": "Persist", "approval_required": true}),
        )
        .await;
    let (iid, tok, _) = app.invite(&owner, &g, json!({"max_uses": 3})).await;
    let (_, a) = app.user("a").await;
    let (s, v) = app.join(&a, &tok).await;
    assert_eq!(s, 202);
    let rid = s_(&v["request_id"]);
    let (s, _) = app
        .post(
            &format!("/v1/groups/{g}/requests/{rid}/approve"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, b) = app.user("b").await;
    assert_eq!(app.join(&b, &tok).await.0, 202);

    // Idle passivation and reactivation from storage.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    assert!(app.metric("qrgate_group_actor_passivations_total").await >= 1.0);
    let (s, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(
        (
            s,
            v["member_count"].as_u64(),
            v["pending_requests"].as_u64()
        ),
        (200, Some(2), Some(1))
    );

    app.restart().await;
    let (s, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(s, 200, "session tokens survive a restart");
    assert_eq!(v["owner_id"], owner_id.as_str());
    assert_eq!(v["member_count"], 2);
    assert_eq!(v["pending_requests"], 1);
    assert_eq!(
        v["counters"]["joins"], 1,
        "the approved request joined through the invitation"
    );
    assert_eq!(v["counters"]["requests"], 2);
    assert_eq!(v["counters"]["approvals"], 1);
    let (s, v) = app.get(&format!("/v1/invites/{iid}"), Some(&owner)).await;
    assert_eq!(s, 200);
    assert_eq!(v["uses"], 2);
    assert_eq!(v["counters"]["requests"], 2);
    assert_eq!(v["state"], "live");
    let (_, c) = app.user("c").await;
    assert_eq!(
        app.join(&c, &tok).await.0,
        202,
        "the invitation still works after restart"
    );
    let (_, d) = app.user("d").await;
    assert_eq!(
        code(&app.join(&d, &tok).await.1),
        "invite_exhausted",
        "use count survived"
    );
}

#[actix_web::test]
async fn group_full_exactly_at_the_limit_under_200_concurrent_joiners() {
    let app = TestApp::spawn_with(
        "[limits]\nuser_joins_per_minute = 1000\ngroup_joins_per_minute = 10000\n",
    )
    .await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Popular", "member_limit": 100}))
        .await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let mut users = Vec::new();
    for i in 0..200 {
        users.push(app.user(&format!("fan{i}")).await.1);
    }
    let joins = users.iter().map(|u| app.join(u, &tok));
    let results = futures_util::future::join_all(joins).await;
    let joined = results.iter().filter(|(s, _)| *s == 200).count();
    let full = results
        .iter()
        .filter(|(s, v)| *s == 409 && code(v) == "group_full")
        .count();
    assert_eq!(joined, 99, "owner + 99 = the limit of 100");
    assert_eq!(full, 101, "every other joiner is told the group is full");
    let (_, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(v["member_count"], 100);
    let (_, v) = app
        .get(&format!("/v1/groups/{g}/members"), Some(&owner))
        .await;
    assert_eq!(v["members"].as_array().unwrap().len(), 100);
}

#[actix_web::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = TestApp::spawn_with("[limits]\nuser_joins_per_minute = 2\n").await;
    let (_, owner) = app.user("owner").await;
    let (_, u) = app.user("hopper").await;
    let mut last = (0, serde_json::Value::Null);
    for i in 0..3 {
        let g = app.group(&owner, json!({"name": format!("g{i}")})).await;
        let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
        last = app.join(&u, &tok).await;
        if i < 2 {
            assert_eq!(last.0, 200);
        }
    }
    assert_eq!((last.0, code(&last.1)), (429, "rate_limited"));
    // Retry-After header
    let g = app.group(&owner, json!({"name": "one more"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let resp = app
        .client
        .post(format!("{}/v1/join", app.base))
        .insert_header(("Authorization", format!("Bearer {u}")))
        .send_json(&json!({"token": tok}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let ra: u64 = resp
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&ra), "{ra}");

    // per-group limit, overridable by the owner
    let g = app.group(&owner, json!({"name": "slow"})).await;
    let (s, v) = app
        .call(
            "PATCH",
            &format!("/v1/groups/{g}"),
            Some(&owner),
            Some(json!({"join_rate_per_minute": 1})),
        )
        .await;
    assert_eq!(
        (s, v["join_rate_per_minute"].as_u64()),
        (200, Some(1)),
        "{v}"
    );
    let (s, v) = app
        .call(
            "PATCH",
            &format!("/v1/groups/{g}"),
            Some(&owner),
            Some(json!({"join_rate_per_minute": 0})),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "validation_failed"));
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (_, x) = app.user("x").await;
    let (_, y) = app.user("y").await;
    assert_eq!(app.join(&x, &tok).await.0, 200);
    let (s, v) = app.join(&y, &tok).await;
    assert_eq!((s, code(&v)), (429, "rate_limited"));
}

#[actix_web::test]
async fn a_rate_limited_user_cannot_use_up_a_groups_quota() {
    let app =
        TestApp::spawn_with("[limits]\nuser_joins_per_minute = 1\ngroup_joins_per_minute = 3\n")
            .await;
    let (_, owner) = app.user("owner").await;
    let (_, greedy) = app.user("greedy").await;
    let warmup = app.group(&owner, json!({"name": "warmup"})).await;
    let (_, wt, _) = app.invite(&owner, &warmup, json!({})).await;
    assert_eq!(app.join(&greedy, &wt).await.0, 200);
    let g = app.group(&owner, json!({"name": "target"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for _ in 0..6 {
        let (s, v) = app.join(&greedy, &tok).await;
        assert_eq!((s, code(&v)), (429, "rate_limited"));
    }
    for i in 0..3 {
        let (_, u) = app.user(&format!("fair{i}")).await;
        let (s, v) = app.join(&u, &tok).await;
        assert_eq!(s, 200, "the group's quota is intact: {v}");
    }
}

#[actix_web::test]
async fn refusals_write_nothing() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "full", "member_limit": 100}))
        .await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (_, u) = app.user("u").await;
    assert_eq!(app.join(&u, &tok).await.0, 200);
    // let the outbox consumer settle, then count commits across refusals
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let before = app.metric("qrgate_storage_commit_write_sets_count").await;
    for _ in 0..20 {
        assert_eq!(code(&app.join(&u, &tok).await.1), "already_member");
        assert_eq!(code(&app.join(&u, "garbage").await.1), "invalid_token");
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.metric("qrgate_storage_commit_write_sets_count").await,
        before
    );
    assert!(before > 0.0, "the metric counts commits");
}

#[actix_web::test]
async fn concurrent_joins_across_passivations_are_all_kept() {
    let app = TestApp::spawn_with(
        "[actors]\nidle_timeout_seconds = 1\n[limits]\nuser_joins_per_minute = 1000\n",
    )
    .await;
    let (_, owner) = app.user("owner").await;
    let mut groups = Vec::new();
    for i in 0..10 {
        let g = app
            .group(
                &owner,
                json!({"name": format!("g{i}"), "member_limit": 200}),
            )
            .await;
        let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
        groups.push((g, tok));
    }
    let mut expected = vec![1usize; groups.len()];
    for wave in 0..3 {
        let mut users = Vec::new();
        for i in 0..40 {
            users.push(app.user(&format!("w{wave}u{i}")).await.1);
        }
        let joins = users
            .iter()
            .enumerate()
            .map(|(i, u)| app.join(u, &groups[i % groups.len()].1));
        let results = futures_util::future::join_all(joins).await;
        for (i, (s, v)) in results.iter().enumerate() {
            assert_eq!(*s, 200, "{v}");
            expected[i % groups.len()] += 1;
        }
        // idle long enough for every group actor to passivate between waves
        actix_web::rt::time::sleep(Duration::from_millis(2200)).await;
    }
    assert!(app.metric("qrgate_group_actor_passivations_total").await >= 20.0);
    for (i, (g, _)) in groups.iter().enumerate() {
        let (_, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
        assert_eq!(
            v["member_count"].as_u64(),
            Some(expected[i] as u64),
            "group {i}"
        );
    }
}
