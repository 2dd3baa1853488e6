//! Who may do what: every moderation action is denied to those who may not.

use super::helpers::*;
use serde_json::json;

#[actix_web::test]
async fn outsiders_and_plain_members_are_denied_every_admin_action() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(
            &owner,
            json!({"name": "Guarded", "approval_required": true}),
        )
        .await;
    let (iid, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (joiner_id, joiner) = app.user("joiner").await;
    let (_, v) = app.join(&joiner, &tok).await;
    let rid = s_(&v["request_id"]);
    let (member_id, member) = app.user("member").await;
    let (_, v) = app.join(&member, &tok).await;
    let mrid = s_(&v["request_id"]);
    assert_eq!(
        app.post(
            &format!("/v1/groups/{g}/requests/{mrid}/approve"),
            Some(&owner),
            json!({})
        )
        .await
        .0,
        200
    );
    let (_, outsider) = app.user("outsider").await;
    let forged = "qrs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    // (method, path, body) of every action reserved to moderators / members / operators
    let gp = format!("/v1/groups/{g}");
    let moderator_actions: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("GET", format!("{gp}/requests"), None),
        (
            "POST",
            format!("{gp}/requests/{rid}/approve"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("{gp}/requests/{rid}/reject"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("{gp}/blocks"),
            Some(json!({"user_id": joiner_id})),
        ),
        ("PUT", format!("{gp}/admins/{member_id}"), None),
        ("DELETE", format!("{gp}/admins/{member_id}"), None),
        (
            "PATCH",
            gp.clone(),
            Some(json!({"approval_required": false})),
        ),
        ("DELETE", format!("/v1/invites/{iid}"), None),
    ];
    let member_actions: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("GET", format!("{gp}/members"), None),
        ("POST", format!("{gp}/invites"), Some(json!({}))),
        ("GET", format!("/v1/invites/{iid}"), None),
        ("GET", format!("/v1/invites/{iid}/qr.png"), None),
        ("GET", format!("/v1/invites/{iid}/qr.svg"), None),
        ("GET", format!("/v1/invites/{iid}/card.png"), None),
    ];
    let admin_actions: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        (
            "POST",
            format!("/v1/admin/groups/{g}/ban"),
            Some(json!({"reason": "x"})),
        ),
        ("POST", format!("/v1/admin/groups/{g}/unban"), None),
    ];

    for (m, p, b) in moderator_actions
        .iter()
        .chain(&member_actions)
        .chain(&admin_actions)
    {
        let (s, v) = app.call(m, p, None, b.clone()).await;
        assert_eq!((s, code(&v)), (401, "unauthorized"), "anonymous {m} {p}");
        let (s, v) = app.call(m, p, Some(forged), b.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (401, "unauthorized"),
            "forged session {m} {p}"
        );
        let (s, v) = app.call(m, p, Some(&outsider), b.clone()).await;
        assert_eq!((s, code(&v)), (403, "forbidden"), "outsider {m} {p}: {v}");
    }
    for (m, p, b) in moderator_actions.iter().chain(&admin_actions) {
        let (s, v) = app.call(m, p, Some(&member), b.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (403, "forbidden"),
            "plain member {m} {p}: {v}"
        );
    }
    // Members may read; the pending joiner is not a member yet.
    for (m, p, b) in &member_actions {
        let (s, _) = app.call(m, p, Some(&member), b.clone()).await;
        assert!(s == 200 || s == 201, "member {m} {p} -> {s}");
        let (s, _) = app.call(m, p, Some(&joiner), b.clone()).await;
        assert_eq!(s, 403, "pending joiner {m} {p}");
    }
    // A member may revoke their own invitation but not the owner's.
    let (s, v) = app
        .post(&format!("{gp}/invites"), Some(&member), json!({}))
        .await;
    assert_eq!(s, 201);
    let own = s_(&v["id"]);
    assert_eq!(
        app.call("DELETE", &format!("/v1/invites/{iid}"), Some(&member), None)
            .await
            .0,
        403
    );
    assert_eq!(
        app.call("DELETE", &format!("/v1/invites/{own}"), Some(&member), None)
            .await
            .0,
        204
    );
    // The operator may moderate any group, but is nobody's user account.
    assert_eq!(app.get(&format!("{gp}/requests"), Some(ADMIN)).await.0, 200);
    let (s, v) = app
        .post("/v1/join", Some(ADMIN), json!({"token": tok}))
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"));
    let (s, v) = app
        .post("/v1/groups", Some(ADMIN), json!({"name": "x"}))
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"));
    // Nothing above changed the group.
    let (_, v) = app.get(&gp, Some(&owner)).await;
    assert_eq!(v["status"], "active");
    assert_eq!(v["approval_required"], true);
    assert_eq!(v["member_count"], 2);
    assert_eq!(v["pending_requests"], 1);
}

#[actix_web::test]
async fn secrets_never_reach_the_logs() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Quiet"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (_, u) = app.user("u").await;
    assert_eq!(app.join(&u, &tok).await.0, 200);
    let _ = app.get(&format!("/v1/ws?token={u}"), None).await;
    // The landing page carries the invitation token in its path.
    let _ = app.get(&format!("/j/{tok}"), None).await;
    let _ = app
        .get(
            "/v1/groups/g_AAAAAAAAAAAAAAAAAAAAAA",
            Some("qrs_wrong-token-value"),
        )
        .await;
    let log = app.log();
    assert!(
        log.contains("request"),
        "debug request logging is on: {log}"
    );
    for secret in [
        owner.as_str(),
        u.as_str(),
        tok.as_str(),
        ADMIN,
        "qrs_wrong-token-value",
    ] {
        assert!(!log.contains(secret), "a secret leaked into the log");
    }
    // Only hashes are stored: the raw session token is not in the data files.
    let mut found = false;
    for entry in walk(&app.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(owner.len()).any(|w| w == owner.as_bytes()) {
            found = true;
        }
    }
    assert!(!found, "session token stored in clear");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[actix_web::test]
async fn money_routes_check_who_calls() {
    let app = TestApp::spawn().await;
    let (uid, user) = app.user("payee").await;
    let forged = "qrs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    // The caller's own wallet and payouts: a session is required.
    let own: Vec<(&str, &str, Option<serde_json::Value>)> = vec![
        ("GET", "/v1/wallet", None),
        ("GET", "/v1/wallet/entries", None),
        ("GET", "/v1/wallet/link", None),
        ("POST", "/v1/wallet/link", Some(json!({"code": "c"}))),
        (
            "PUT",
            "/v1/wallet/auto-payout",
            Some(json!({"threshold": null})),
        ),
        ("POST", "/v1/payouts", Some(json!({"amount": 100}))),
        ("GET", "/v1/payouts", None),
        ("GET", "/v1/payouts/p_AAAAAAAAAAAAAAAAAAAAAA", None),
        (
            "POST",
            "/v1/packets",
            Some(json!({"total": 10, "count": 1, "mode": "fixed"})),
        ),
        ("POST", "/v1/packets/rp_AAAAAAAAAAAAAAAAAAAAAA/claim", None),
    ];
    for (m, p, b) in &own {
        for who in [None, Some(forged)] {
            let (s, v) = app.call(m, p, who, b.clone()).await;
            assert_eq!(
                (s, code(&v)),
                (401, "unauthorized"),
                "{m} {p} as {who:?}: {v}"
            );
        }
    }
    // Operator routes: a user's session is not enough.
    let admin: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        (
            "POST",
            "/v1/earnings".into(),
            Some(json!({"event_id": "e", "user_id": uid, "kind": "task_completed", "amount": 5})),
        ),
        ("GET", "/v1/admin/ledger/check".into(), None),
        ("GET", "/v1/admin/payouts?filter=open".into(), None),
        ("GET", "/v1/admin/alerts".into(), None),
        (
            "POST",
            "/v1/admin/reconcile".into(),
            Some(json!({"date": "2026-01-01", "bill": ""})),
        ),
        ("GET", "/v1/admin/reconcile/2026-01-01".into(), None),
        (
            "GET",
            "/v1/admin/reports/large-transactions?from=2026-01-01".into(),
            None,
        ),
        (
            "POST",
            format!("/v1/admin/users/{uid}/kyc"),
            Some(json!({"verified": true})),
        ),
        ("GET", "/v1/admin/blacklist".into(), None),
        (
            "PUT",
            format!("/v1/admin/blacklist/{uid}"),
            Some(json!({"reason": "x"})),
        ),
        ("DELETE", format!("/v1/admin/blacklist/{uid}"), None),
    ];
    for (m, p, b) in &admin {
        let (s, v) = app.call(m, p, Some(&user), b.clone()).await;
        assert_eq!((s, code(&v)), (403, "forbidden"), "{m} {p}: {v}");
        let (s, _) = app.call(m, p, None, b.clone()).await;
        assert_eq!(s, 401, "{m} {p}");
    }
    // Nothing moved.
    assert_eq!(app.balance(&user).await, 0);
    let (_, w) = app.get("/v1/admin/ledger/check", Some(ADMIN)).await;
    assert_eq!(w["transfers"], 0, "{w}");
}

/// The group admin column of the matrix: admins moderate (requests, blocks,
/// any invitation) but do not own (settings, admins, bans are the owner's or
/// the operator's).
#[actix_web::test]
async fn group_admins_moderate_but_do_not_own() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Ruled", "approval_required": true}))
        .await;
    let gp = format!("/v1/groups/{g}");
    let (iid, tok, _) = app.invite(&owner, &g, json!({})).await;
    let join = |name: &'static str| {
        let (app, tok) = (&app, tok.clone());
        async move {
            let (id, t) = app.user(name).await;
            let (s, v) = app.join(&t, &tok).await;
            assert_eq!(s, 202, "{v}");
            (id, t, s_(&v["request_id"]))
        }
    };
    let (admin_id, admin, r) = join("admin").await;
    assert_eq!(
        app.post(
            &format!("{gp}/requests/{r}/approve"),
            Some(&owner),
            json!({})
        )
        .await
        .0,
        200
    );
    let (s, _) = app
        .call(
            "PUT",
            &format!("{gp}/admins/{admin_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (other_id, _, r2) = join("other").await;
    assert_eq!(
        app.post(
            &format!("{gp}/requests/{r2}/approve"),
            Some(&owner),
            json!({})
        )
        .await
        .0,
        200
    );
    let (_, _, pending) = join("pending").await;
    let (troll_id, _, _) = join("troll").await;

    // Owner-only (and operator) actions: refused to the group admin.
    let owner_only: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        (
            "PATCH",
            gp.clone(),
            Some(json!({"description": "mine now"})),
        ),
        ("PUT", format!("{gp}/admins/{other_id}"), None),
        ("DELETE", format!("{gp}/admins/{admin_id}"), None),
        (
            "POST",
            format!("/v1/admin/groups/{g}/ban"),
            Some(json!({"reason": "x"})),
        ),
    ];
    for (m, p, b) in &owner_only {
        let (s, v) = app.call(m, p, Some(&admin), b.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (403, "forbidden"),
            "group admin {m} {p}: {v}"
        );
    }
    // Moderation: allowed to the group admin.
    let (s, v) = app.get(&format!("{gp}/requests"), Some(&admin)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .post(
            &format!("{gp}/requests/{pending}/reject"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .post(
            &format!("{gp}/blocks"),
            Some(&admin),
            json!({"user_id": troll_id}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = app
        .call("DELETE", &format!("/v1/invites/{iid}"), Some(&admin), None)
        .await;
    assert_eq!(s, 204, "an admin revokes the owner's invitation: {v}");
    // Nothing owner-only changed.
    let (_, v) = app.get(&gp, Some(&owner)).await;
    assert_eq!(v["status"], "active");
    assert_ne!(v["description"], "mine now");
    let (_, v) = app.get(&format!("{gp}/members"), Some(&owner)).await;
    let roles: Vec<(String, String)> = v["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| (s_(&m["user_id"]), s_(&m["role"])))
        .collect();
    assert!(
        roles.contains(&(admin_id.clone(), "admin".into())),
        "{roles:?}"
    );
    assert!(
        roles.contains(&(other_id.clone(), "member".into())),
        "{roles:?}"
    );
}
