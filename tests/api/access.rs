//! Who may do what. One table, `MATRIX`, has a row for every route of the API
//! (method and path template, as `/openapi.json` names it) and a column for
//! every kind of caller; each cell is the answer the contract promises, and the
//! test makes every cell a real HTTP call against one server (with the provider
//! simulator behind it, so that money routes get past "not configured").
//!
//! A route that the server documents (or that a handler in `src/http` declares)
//! without a row in the table fails the test: a new route needs its row.
//!
//! Cells that would change something are aimed so that a denied caller always
//! attacks a *victim* (the owner's invitation, a pending request, the plain
//! member, the group itself, the owner's payout key...) while an allowed caller
//! acts on a resource of its own; after the table, the victims are checked
//! untouched and the books clean. Then the cross-user actions the issue names
//! are asserted one by one.

use super::helpers::*;
use super::payouts::Sim;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};

/// The kinds of caller, in column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    /// No `Authorization` header.
    Anon,
    /// The owner's session token with one character changed.
    Forged,
    /// A well-formed session token that was never issued (an expired or
    /// revoked one answers the same: `tests/api/sessions.rs`).
    Unknown,
    /// A user with no role in the group (but a wallet, a linked account...).
    Outsider,
    /// A plain member of the group.
    Member,
    /// A member the owner made group admin.
    GAdmin,
    /// The group's owner, also the owner of the payout, packet and code.
    Owner,
    /// The operator's admin token.
    Op,
}
use Who::*;

const COLUMNS: [Who; 8] = [Anon, Forged, Unknown, Outsider, Member, GAdmin, Owner, Op];

/// What a cell expects: a status, or a refusal with its problem `code`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Exp {
    Is(u16),
    Refused(u16, &'static str),
}

const fn s(status: u16) -> Exp {
    Exp::Is(status)
}
const fn e(status: u16, code: &'static str) -> Exp {
    Exp::Refused(status, code)
}
/// 401 `unauthorized`.
const U: Exp = e(401, "unauthorized");
/// 403 `forbidden`.
const F: Exp = e(403, "forbidden");
/// 415 `unsupported_media_type`: past the access check.
const MEDIA: Exp = e(415, "unsupported_media_type");
/// Open to everyone, any token or none (a bad token is not looked at).
const PUBLIC: [Exp; 8] = [s(200); 8];
/// Any user session; the admin token is nobody's account.
const USERS: [Exp; 8] = [U, U, U, s(200), s(200), s(200), s(200), F];
/// The admin token only.
const fn op_only(ok: u16) -> [Exp; 8] {
    [U, U, U, F, F, F, F, s(ok)]
}

type Row = (&'static str, &'static str, [Exp; 8]);

#[rustfmt::skip]
const MATRIX: &[Row] = &[
    //                                                         anon forged unknown outsider member  gadmin  owner   admin token
    // Operations and public reads
    ("GET",    "/healthz",                                      PUBLIC),
    ("GET",    "/metrics",                                      op_only(200)),
    ("GET",    "/openapi.json",                                 PUBLIC),
    ("GET",    "/v1/keys",                                      PUBLIC),
    ("POST",   "/v1/users",                                     [s(201); 8]),
    ("GET",    "/s/{code}",                                     [s(302); 8]),
    ("GET",    "/j/{token}",                                    PUBLIC),
    ("GET",    "/p/{id}",                                       PUBLIC),
    // The payout's random id is what opens its confirmation page.
    ("GET",    "/payouts/{id}/confirm",                         PUBLIC),
    // Groups
    ("POST",   "/v1/groups",                                    [U, U, U, s(201), s(201), s(201), s(201), F]),
    ("GET",    "/v1/groups/{id}",                               [U, U, U, s(200), s(200), s(200), s(200), s(200)]),
    ("PATCH",  "/v1/groups/{id}",                               [U, U, U, F,      F,      F,      s(200), s(200)]),
    ("GET",    "/v1/groups/{id}/members",                       [U, U, U, F,      s(200), s(200), s(200), s(200)]),
    ("PUT",    "/v1/groups/{id}/admins/{user_id}",              [U, U, U, F,      F,      F,      s(204), s(204)]),
    ("DELETE", "/v1/groups/{id}/admins/{user_id}",              [U, U, U, F,      F,      F,      s(204), s(204)]),
    ("GET",    "/v1/groups/{id}/requests",                      [U, U, U, F,      F,      s(200), s(200), s(200)]),
    ("POST",   "/v1/groups/{id}/requests/{rid}/approve",        [U, U, U, F,      F,      s(200), s(200), s(200)]),
    ("POST",   "/v1/groups/{id}/requests/{rid}/reject",         [U, U, U, F,      F,      s(200), s(200), s(200)]),
    ("POST",   "/v1/groups/{id}/requests/reject",               [U, U, U, F,      F,      s(200), s(200), s(200)]),
    // A JSON body is no image: those allowed get as far as 415.
    ("PUT",    "/v1/groups/{id}/avatar",                        [U, U, U, F,      F,      MEDIA,  MEDIA,  MEDIA]),
    ("DELETE", "/v1/groups/{id}/avatar",                        [U, U, U, F,      F,      s(204), s(204), s(204)]),
    ("POST",   "/v1/groups/{id}/blocks",                        [U, U, U, F,      F,      s(204), s(204), s(204)]),
    ("POST",   "/v1/admin/groups/{id}/ban",                     op_only(200)),
    ("POST",   "/v1/admin/groups/{id}/unban",                   op_only(200)),
    // Invitations
    ("POST",   "/v1/groups/{id}/invites",                       [U, U, U, F,      s(201), s(201), s(201), F]),
    ("GET",    "/v1/invites/{id}",                              [U, U, U, F,      s(200), s(200), s(200), s(200)]),
    ("DELETE", "/v1/invites/{id}",                              [U, U, U, F,      F,      s(204), s(204), s(204)]),
    ("GET",    "/v1/invites/{id}/qr.png",                       [U, U, U, F,      s(200), s(200), s(200), s(200)]),
    ("GET",    "/v1/invites/{id}/qr.svg",                       [U, U, U, F,      s(200), s(200), s(200), s(200)]),
    ("GET",    "/v1/invites/{id}/card.png",                     [U, U, U, F,      s(200), s(200), s(200), s(200)]),
    ("POST",   "/v1/join",                                      [U, U, U, s(202), e(409, "already_member"), e(409, "already_member"), e(409, "already_member"), F]),
    ("GET",    "/v1/ws",                                        [U, U, U, s(101), s(101), s(101), s(101), F]),
    ("POST",   "/v1/ws/ticket",                                 [U, U, U, s(201), s(201), s(201), s(201), F]),
    ("GET",    "/v1/events",                                    USERS),
    // Wallets and payouts: always the caller's own
    ("GET",    "/v1/wallet",                                    USERS),
    ("GET",    "/v1/wallet/entries",                            USERS),
    ("POST",   "/v1/wallet/link",                               USERS),
    ("GET",    "/v1/wallet/link",                               USERS),
    ("POST",   "/v1/wallet/link/start",                         USERS),
    // A state nobody was issued: refused alike, whoever calls.
    ("GET",    "/v1/wallet/link/callback",                      [e(400, "link_state_invalid"); 8]),
    ("PUT",    "/v1/wallet/auto-payout",                        USERS),
    ("POST",   "/v1/payouts",                                   [U, U, U, e(409, "insufficient_funds"), e(409, "insufficient_funds"), e(409, "insufficient_funds"), s(200), F]),
    ("GET",    "/v1/payouts",                                   USERS),
    ("GET",    "/v1/payouts/{id}",                              [U, U, U, e(404, "payout_not_found"), e(404, "payout_not_found"), e(404, "payout_not_found"), s(200), F]),
    // Signed by the provider, not by a bearer token: no token makes a forgery pass.
    ("POST",   "/v1/provider/notify",                           [U; 8]),
    ("POST",   "/v1/earnings",                                  op_only(201)),
    // Between the nodes of a cluster only (a signed forward), whoever asks.
    ("POST",   "/v1/internal/limits/{kind}/{key}",              [e(403, "forward_refused"); 8]),
    ("GET",    "/v1/admin/ledger/check",                        op_only(200)),
    ("GET",    "/v1/admin/payouts",                             op_only(200)),
    ("GET",    "/v1/admin/alerts",                              op_only(200)),
    ("GET",    "/v1/admin/reports/large-transactions",          op_only(200)),
    ("POST",   "/v1/admin/users/{id}/kyc",                      op_only(204)),
    ("POST",   "/v1/admin/api-keys",                            op_only(201)),
    ("GET",    "/v1/admin/api-keys",                            op_only(200)),
    ("DELETE", "/v1/admin/api-keys/{id}",                       op_only(204)),
    ("POST",   "/v1/admin/backup",                              op_only(200)),
    ("POST",   "/v1/admin/users/{id}/freeze",                   op_only(204)),
    ("POST",   "/v1/admin/users/{id}/unfreeze",                 op_only(204)),
    ("POST",   "/v1/admin/users/{id}/sessions",                 op_only(201)),
    ("POST",   "/v1/admin/users/{id}/sessions/revoke",          op_only(204)),
    ("DELETE", "/v1/sessions/current",                          [U, U, U, s(204), s(204), s(204), s(204), F]),
    ("POST",   "/v1/admin/reconcile",                           op_only(200)),
    ("GET",    "/v1/admin/reconcile/{date}",                    op_only(200)),
    // Red packets
    ("POST",   "/v1/packets",                                   [U, U, U, e(409, "insufficient_funds"), e(409, "insufficient_funds"), e(409, "insufficient_funds"), s(201), F]),
    ("GET",    "/v1/packets/{id}",                              PUBLIC),
    ("GET",    "/v1/packets/{id}/qr.png",                       PUBLIC),
    ("POST",   "/v1/packets/{id}/claim",                        USERS),
    ("GET",    "/v1/admin/blacklist",                           op_only(200)),
    ("PUT",    "/v1/admin/blacklist/{user_id}",                 op_only(200)),
    ("DELETE", "/v1/admin/blacklist/{user_id}",                 op_only(204)),
    // Scan codes
    ("POST",   "/v1/codes",                                     [U, U, U, s(201), s(201), s(201), s(201), s(201)]),
    ("GET",    "/v1/codes/{code}",                              [U, U, U, F,      F,      F,      s(200), s(200)]),
    ("DELETE", "/v1/codes/{code}",                              [U, U, U, F,      F,      F,      s(204), s(204)]),
    // Anti-abuse
    ("POST",   "/v1/challenges/{id}",                           [U, U, U, e(400, "invalid_challenge"), e(400, "invalid_challenge"), e(400, "invalid_challenge"), e(400, "invalid_challenge"), F]),
    ("GET",    "/v1/groups/{id}/invites/{iid}/joins",           [U, U, U, F,      F,      s(200), s(200), s(200)]),
    ("GET",    "/v1/invites/{id}/analytics",                    [U, U, U, F,      F,      s(200), s(200), s(200)]),
    ("GET",    "/v1/groups/{id}/analytics",                     [U, U, U, F,      F,      s(200), s(200), s(200)]),
    ("POST",   "/v1/invites/{id}/reset",                        [U, U, U, F,      F,      s(200), s(200), s(200)]),
    ("POST",   "/v1/invites/{id}/burn",                         [U, U, U, F,      F,      s(200), s(200), s(200)]),
    ("DELETE", "/v1/groups/{id}/members/{user_id}",             [U, U, U, F,      F,      s(204), s(204), s(204)]),
    ("GET",    "/v1/admin/groups/flagged",                      op_only(200)),
    ("DELETE", "/v1/admin/groups/{id}/flag",                    op_only(204)),
    // Webhooks (one endpoint `m`, whose receiver never answers)
    ("GET",    "/v1/admin/webhooks",                            op_only(200)),
    ("GET",    "/v1/admin/webhooks/{id}/deliveries",            op_only(200)),
    // A delivery that does not exist: the operator gets as far as 404.
    ("POST",   "/v1/admin/webhooks/deliveries/{id}/resend",     [U, U, U, F, F, F, F, e(404, "delivery_not_found")]),
    ("POST",   "/v1/admin/webhooks/{id}/enable",                op_only(204)),
];

/// Routes served but deliberately absent from `/openapi.json`: the HTML
/// landing pages behind QR codes.
const UNDOCUMENTED: &[(&str, &str)] = &[
    ("GET", "/j/{token}"),
    ("GET", "/p/{id}"),
    ("GET", "/payouts/{id}/confirm"),
    ("POST", "/v1/internal/limits/{kind}/{key}"),
];

/// The owner's payout made during setup, and the key it was made with.
const PAYOUT_KEY: &str = "owner-payout-1";
const PAYOUT_FEN: u64 = 200;
/// The owner's red packet made during setup (8 shares of 100 fen: less than
/// `PAYOUT_FEN`, so a claimant can never afford the owner's payout).
const PACKET_KEY: &str = "owner-packet-1";
const DAY: &str = "2025-06-01";

fn packet_body() -> Value {
    json!({"total": 800, "count": 8, "mode": "fixed", "message": "matrix"})
}

/// Everything the cells point at.
struct Fx {
    token: HashMap<Who, String>,
    id: HashMap<Who, String>,
    spare: String,
    spare_token: String,
    g: String,
    /// Banned and unbanned by the operator's cells.
    sacrificial_group: String,
    /// Banned during setup: denied callers try to lift the ban.
    banned_group: String,
    /// The outsider owns this one.
    outsiders_group: String,
    /// A pending request nobody may decide (denied callers try).
    victim_request: String,
    victim_joiner: String,
    victim_joiner_token: String,
    approve: Vec<(Who, String)>,
    reject: Vec<(Who, String)>,
    reject_bulk: Vec<(Who, String)>,
    block: Vec<(Who, String)>,
    /// A member each allowed caller removes.
    remove: Vec<(Who, String)>,
    /// The owner's invitation (denied callers try to revoke it).
    invite: String,
    invite_token: String,
    revoke: Vec<(Who, String)>,
    member_invite: String,
    payout: String,
    packet: String,
    code: String,
    code_revoke: Vec<(Who, String)>,
    blacklisted: String,
    /// An API key's id (the operator revokes it; the others try to).
    api_key: String,
    /// A user the operator froze, and a session revoked by the operator.
    frozen_id: String,
    frozen_token: String,
    revoked_token: String,
    /// (scope, an API key holding that scope alone), one per scope.
    scope_keys: Vec<(String, String)>,
    bill: String,
    /// Where the operator's backup goes (the others' never get that far).
    backups: std::path::PathBuf,
}

impl Fx {
    fn token(&self, who: Who) -> Option<&str> {
        self.token.get(&who).map(String::as_str)
    }
    fn id(&self, who: Who) -> &str {
        &self.id[&who]
    }
    /// The caller's own user id, or the owner's for callers that have none.
    fn self_id(&self, who: Who) -> &str {
        self.id.get(&who).unwrap_or(&self.id[&Owner])
    }
}

/// The allowed caller's own resource, else the victim.
fn own_or<'a>(who: Who, own: &'a [(Who, String)], victim: &'a str) -> &'a str {
    own.iter()
        .find(|(w, _)| *w == who)
        .map_or(victim, |(_, r)| r.as_str())
}

struct Req {
    path: String,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

fn req(path: impl Into<String>) -> Req {
    Req {
        path: path.into(),
        body: None,
        headers: Vec::new(),
    }
}

impl Req {
    fn body(mut self, v: Value) -> Req {
        self.body = Some(v);
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Req {
        self.headers.push((name, value.into()));
        self
    }
}

/// The concrete request of one cell.
fn request(fx: &Fx, method: &str, route: &str, who: Who) -> Req {
    let g = &fx.g;
    let name = format!("{who:?}");
    let inv = |suffix: &str| req(format!("/v1/invites/{}{suffix}", fx.invite));
    match (method, route) {
        ("GET", "/healthz" | "/metrics" | "/openapi.json" | "/v1/keys") => req(route),
        ("POST", "/v1/users") => req(route).body(json!({"name": format!("matrix {name}")})),
        ("POST", "/v1/internal/limits/{kind}/{key}") => {
            req(format!("/v1/internal/limits/joins/{}", fx.id(Outsider)))
        }
        ("GET", "/s/{code}") => req(format!("/s/{}", fx.code)),
        ("GET", "/j/{token}") => req(format!("/j/{}", fx.invite_token)),
        ("GET", "/p/{id}") => req(format!("/p/{}", fx.packet)),
        ("GET", "/payouts/{id}/confirm") => req(format!("/payouts/{}/confirm", fx.payout)),

        ("POST", "/v1/groups") => req(route).body(json!({"name": format!("matrix {name}")})),
        ("GET", "/v1/groups/{id}") => req(format!("/v1/groups/{g}")),
        ("PATCH", "/v1/groups/{id}") => {
            req(format!("/v1/groups/{g}")).body(json!({"description": format!("set by {name}")}))
        }
        ("GET", "/v1/groups/{id}/members") => req(format!("/v1/groups/{g}/members")),
        ("PUT" | "DELETE", "/v1/groups/{id}/admins/{user_id}") => {
            // Allowed: the spare member goes up and down again. Denied: the
            // plain member is promoted (by themself, in the member column),
            // the group admin demoted.
            let victim = if method == "PUT" {
                fx.id(Member)
            } else {
                fx.id(GAdmin)
            };
            let target = if matches!(who, Owner | Op) {
                &fx.spare
            } else {
                victim
            };
            req(format!("/v1/groups/{g}/admins/{target}"))
        }
        ("GET", "/v1/groups/{id}/requests") => req(format!("/v1/groups/{g}/requests")),
        ("POST", "/v1/groups/{id}/requests/{rid}/approve") => {
            let rid = own_or(who, &fx.approve, &fx.victim_request);
            req(format!("/v1/groups/{g}/requests/{rid}/approve")).body(json!({}))
        }
        ("POST", "/v1/groups/{id}/requests/{rid}/reject") => {
            let rid = own_or(who, &fx.reject, &fx.victim_request);
            req(format!("/v1/groups/{g}/requests/{rid}/reject")).body(json!({}))
        }
        ("PUT" | "DELETE", "/v1/groups/{id}/avatar") => {
            req(format!("/v1/groups/{g}/avatar")).body(json!({"image": "not one"}))
        }
        ("POST", "/v1/groups/{id}/requests/reject") => {
            let rid = own_or(who, &fx.reject_bulk, &fx.victim_request);
            req(format!("/v1/groups/{g}/requests/reject")).body(json!({"request_ids": [rid]}))
        }
        ("POST", "/v1/groups/{id}/blocks") => {
            // Denied callers try to block (so remove) the plain member.
            let user = own_or(who, &fx.block, fx.id(Member));
            req(format!("/v1/groups/{g}/blocks")).body(json!({ "user_id": user }))
        }
        ("POST", "/v1/admin/groups/{id}/ban") => {
            let target = if who == Op { &fx.sacrificial_group } else { g };
            req(format!("/v1/admin/groups/{target}/ban"))
                .body(json!({"reason": format!("by {name}")}))
        }
        ("POST", "/v1/admin/groups/{id}/unban") => {
            let target = if who == Op {
                &fx.sacrificial_group
            } else {
                &fx.banned_group
            };
            req(format!("/v1/admin/groups/{target}/unban"))
        }

        ("POST", "/v1/groups/{id}/invites") => {
            req(format!("/v1/groups/{g}/invites")).body(json!({}))
        }
        ("GET", "/v1/invites/{id}") => inv(""),
        ("GET", "/v1/invites/{id}/qr.png") => inv("/qr.png"),
        ("GET", "/v1/invites/{id}/qr.svg") => inv("/qr.svg"),
        ("GET", "/v1/invites/{id}/card.png") => inv("/card.png"),
        ("DELETE", "/v1/invites/{id}") => req(format!(
            "/v1/invites/{}",
            own_or(who, &fx.revoke, &fx.invite)
        )),
        ("POST", "/v1/join") => req(route).body(json!({"token": fx.invite_token})),

        ("GET", "/v1/wallet" | "/v1/wallet/entries" | "/v1/wallet/link" | "/v1/payouts") => {
            req(route)
        }
        ("POST", "/v1/wallet/link") => {
            req(route).body(json!({"code": format!("matrix-link-{name}")}))
        }
        ("POST", "/v1/wallet/link/start") => req(route),
        ("GET", "/v1/wallet/link/callback") => {
            req(format!("{route}?code=matrix-{name}&state=forged-{name}"))
                .header("Accept", "application/json")
        }
        ("PUT", "/v1/wallet/auto-payout") => req(route).body(json!({"threshold": null})),
        // Everyone replays the owner's request with the owner's key: only the
        // owner gets the owner's payout back.
        ("POST", "/v1/payouts") => req(route)
            .body(json!({"amount": PAYOUT_FEN}))
            .header("Idempotency-Key", PAYOUT_KEY),
        ("GET", "/v1/payouts/{id}") => req(format!("/v1/payouts/{}", fx.payout)),
        ("POST", "/v1/provider/notify") => req(route)
            .body(json!({
                "id": format!("forged-by-{name}"),
                "event_type": "MCHTRANSFER.BILL.FINISHED",
                "resource_type": "encrypt-resource",
                "resource": {"algorithm": "AEAD_AES_256_GCM", "ciphertext": "AAAA",
                             "nonce": "000000000000", "associated_data": "mch_payment"}
            }))
            .header(
                "Wechatpay-Timestamp",
                chrono::Utc::now().timestamp().to_string(),
            )
            .header("Wechatpay-Nonce", "forged")
            .header("Wechatpay-Signature", "Zm9yZ2Vk")
            .header("Wechatpay-Serial", "SIM-PLATFORM-SERIAL"),
        ("POST", "/v1/earnings") => {
            // Denied callers try to credit themselves; the operator credits the spare.
            let (user, event) = if who == Op {
                (fx.spare.as_str(), "matrix-earning-op".to_string())
            } else {
                (fx.self_id(who), format!("matrix-earning-{name}"))
            };
            req(route).body(json!({"event_id": event, "user_id": user,
                                   "kind": "task_completed", "amount": 10_000}))
        }
        ("GET", "/v1/admin/ledger/check" | "/v1/admin/alerts" | "/v1/admin/blacklist") => {
            req(route)
        }
        ("GET", "/v1/admin/payouts") => req("/v1/admin/payouts?filter=open"),
        ("GET", "/v1/admin/reports/large-transactions") => {
            req(format!("/v1/admin/reports/large-transactions?from={DAY}"))
        }
        // Denied callers try to log in as, or lock out, the owner.
        ("POST", "/v1/admin/users/{id}/sessions") => {
            let user = if who == Op { &fx.spare } else { fx.id(Owner) };
            req(format!("/v1/admin/users/{user}/sessions"))
        }
        ("POST", "/v1/admin/users/{id}/sessions/revoke") => {
            req(format!("/v1/admin/users/{}/sessions/revoke", fx.id(Owner)))
        }
        // Denied callers try to freeze, or unfreeze, someone else.
        ("POST", "/v1/admin/users/{id}/freeze") => {
            let user = if who == Op { &fx.spare } else { fx.id(Owner) };
            req(format!("/v1/admin/users/{user}/freeze"))
                .body(json!({"reason": format!("by {name}")}))
        }
        ("POST", "/v1/admin/users/{id}/unfreeze") => {
            let user = if who == Op {
                &fx.spare
            } else {
                &fx.blacklisted
            };
            req(format!("/v1/admin/users/{user}/unfreeze")).body(json!({}))
        }
        ("POST", "/v1/admin/api-keys") => {
            req(route).body(json!({"name": format!("by {name}"), "scopes": ["reports:read"]}))
        }
        ("GET", "/v1/admin/api-keys") => req(route),
        ("POST", "/v1/admin/backup") => req(route).body(json!({"dir": fx.backups.join(&name)})),
        ("DELETE", "/v1/admin/api-keys/{id}") => req(format!("/v1/admin/api-keys/{}", fx.api_key)),
        ("DELETE", "/v1/sessions/current") => req(route),
        ("POST", "/v1/ws/ticket") => req(route),
        ("GET", "/v1/events") => req(route),
        ("POST", "/v1/admin/users/{id}/kyc") => {
            let user = if who == Op {
                &fx.spare
            } else {
                fx.self_id(who)
            };
            req(format!("/v1/admin/users/{user}/kyc")).body(json!({"verified": true}))
        }
        ("POST", "/v1/admin/reconcile") => req(route).body(json!({"date": DAY, "bill": fx.bill})),
        ("GET", "/v1/admin/reconcile/{date}") => req(format!("/v1/admin/reconcile/{DAY}")),

        // Everyone but the owner replays the owner's packet with its key.
        ("POST", "/v1/packets") => req(route).body(packet_body()).header(
            "Idempotency-Key",
            if who == Owner {
                "owner-packet-2"
            } else {
                PACKET_KEY
            },
        ),
        ("GET", "/v1/packets/{id}") => req(format!("/v1/packets/{}", fx.packet)),
        ("GET", "/v1/packets/{id}/qr.png") => req(format!("/v1/packets/{}/qr.png", fx.packet)),
        ("POST", "/v1/packets/{id}/claim") => {
            req(format!("/v1/packets/{}/claim", fx.packet)).body(json!({}))
        }
        ("PUT", "/v1/admin/blacklist/{user_id}") => {
            let user = if who == Op { &fx.spare } else { fx.id(Owner) };
            req(format!("/v1/admin/blacklist/{user}")).body(json!({"reason": format!("by {name}")}))
        }
        ("DELETE", "/v1/admin/blacklist/{user_id}") => {
            let user = if who == Op {
                &fx.spare
            } else {
                &fx.blacklisted
            };
            req(format!("/v1/admin/blacklist/{user}"))
        }

        ("POST", "/v1/codes") => {
            req(route).body(json!({"page": "/landing", "params": {"by": name}}))
        }
        ("GET", "/v1/codes/{code}") => req(format!("/v1/codes/{}", fx.code)),
        ("DELETE", "/v1/codes/{code}") => req(format!(
            "/v1/codes/{}",
            own_or(who, &fx.code_revoke, &fx.code)
        )),

        // A challenge id nobody issued (a real one needs an enforcing server:
        // tests/api/abuse.rs).
        ("POST", "/v1/challenges/{id}") => {
            req(format!("/v1/challenges/ch_{}", "A".repeat(108))).body(json!({"solution": "1"}))
        }
        ("GET", "/v1/groups/{id}/invites/{iid}/joins") => req(format!(
            "/v1/groups/{g}/invites/{}/joins?branch=true",
            fx.invite
        )),
        ("GET", "/v1/invites/{id}/analytics") => inv("/analytics"),
        ("GET", "/v1/groups/{id}/analytics") => req(format!("/v1/groups/{g}/analytics")),
        ("POST", "/v1/invites/{id}/reset") => inv("/reset").body(json!({})),
        // Allowed callers burn (the branch of) an invitation of their own;
        // denied ones try the owner's.
        ("POST", "/v1/invites/{id}/burn") => req(format!(
            "/v1/invites/{}/burn",
            own_or(who, &fx.revoke, &fx.invite)
        ))
        .body(json!({})),
        // Allowed callers remove a member of their own; denied ones try the
        // plain member (the member themself tries the group admin).
        ("DELETE", "/v1/groups/{id}/members/{user_id}") => {
            let victim = if who == Member {
                fx.id(GAdmin)
            } else {
                fx.id(Member)
            };
            req(format!(
                "/v1/groups/{g}/members/{}",
                own_or(who, &fx.remove, victim)
            ))
        }
        ("GET", "/v1/admin/groups/flagged") => req(route),
        ("DELETE", "/v1/admin/groups/{id}/flag") => req(format!("/v1/admin/groups/{g}/flag")),
        ("GET", "/v1/admin/webhooks") => req(route),
        ("GET", "/v1/admin/webhooks/{id}/deliveries") => req("/v1/admin/webhooks/m/deliveries"),
        ("POST", "/v1/admin/webhooks/deliveries/{id}/resend") => {
            req("/v1/admin/webhooks/deliveries/m.999999999/resend")
        }
        ("POST", "/v1/admin/webhooks/{id}/enable") => req("/v1/admin/webhooks/m/enable"),
        _ => panic!("no request for {method} {route}: add one to `request`"),
    }
}

/// The status of a WebSocket handshake on `/v1/ws` (the token in the query,
/// as browsers must send it).
async fn ws_status(app: &TestApp, token: Option<&str>) -> u16 {
    let url = match token {
        Some(t) => format!("{}/v1/ws?token={t}", app.base),
        None => format!("{}/v1/ws", app.base),
    };
    match awc::Client::new().ws(url).connect().await {
        Ok((resp, _conn)) => resp.status().as_u16(),
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => s.as_u16(),
        Err(e) => panic!("ws handshake: {e}"),
    }
}

async fn cell(app: &TestApp, fx: &Fx, method: &str, route: &str, who: Who) -> (u16, Value) {
    let token = fx.token(who);
    if route == "/v1/ws" {
        let status = ws_status(app, token).await;
        if status == 101 {
            return (101, Value::Null);
        }
        // Refused: the same request without the upgrade shows the problem.
        let path = token.map_or("/v1/ws".to_string(), |t| format!("/v1/ws?token={t}"));
        let (s, v) = app.get(&path, None).await;
        assert_eq!(s, status, "GET /v1/ws as {who:?} without upgrade: {v}");
        return (s, v);
    }
    if route == "/v1/sessions/current" && matches!(who, Outsider | Member | GAdmin | Owner) {
        // Each user logs out of a session of its own made for this cell, so
        // its column's token keeps working for the other rows.
        let (s, v) = app
            .post(
                &format!("/v1/admin/users/{}/sessions", fx.id(who)),
                Some(ADMIN),
                json!({}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let t = s_(&v["token"]);
        let answer = app.call_with(method, route, Some(&t), None, &[]).await;
        let (after, _) = app.get("/v1/wallet", Some(&t)).await;
        assert_eq!(after, 401, "a logged-out session answers 401");
        return answer;
    }
    if route == "/v1/admin/users/{id}/sessions/revoke" && who == Op {
        // The operator revokes a user made for it, not one of the columns.
        let (victim, tok) = app.user("revoked by the matrix").await;
        let answer = app
            .call_with(
                method,
                &format!("/v1/admin/users/{victim}/sessions/revoke"),
                token,
                None,
                &[],
            )
            .await;
        let (after, _) = app.get("/v1/wallet", Some(&tok)).await;
        assert_eq!(after, 401, "a revoked session answers 401");
        return answer;
    }
    let r = request(fx, method, route, who);
    app.call_with(method, &r.path, token, r.body, &r.headers)
        .await
}

/// What a frozen user gets where the outsider gets `outsider`: refused on
/// the routes a freeze closes; `None` where the outsider's request cannot be
/// repeated by another user (a single-use link code, the outsider's own
/// logout).
fn frozen_expects(method: &str, route: &str, outsider: Exp) -> Option<Exp> {
    match (method, route) {
        ("POST", "/v1/wallet/link") | ("DELETE", "/v1/sessions/current") => None,
        (
            "POST",
            "/v1/join"
            | "/v1/challenges/{id}"
            | "/v1/packets"
            | "/v1/codes"
            | "/v1/payouts"
            | "/v1/packets/{id}/claim",
        ) => Some(e(403, "account_frozen")),
        _ => Some(outsider),
    }
}

/// What a key holding only `scope` gets on a row (`None`: not tried).
fn scope_expects(method: &str, route: &str, row: &[Exp; 8], scope: &str) -> Option<Exp> {
    let anon_ok = matches!(row[0], Exp::Is(st) if st < 400);
    if anon_ok {
        return None; // public: a token is not looked at
    }
    if row.iter().all(|c| *c == U) || route == "/v1/ws" {
        return Some(e(401, "")); // signed by the provider; WebSockets take users only
    }
    if route.starts_with("/v1/internal/") || route == "/v1/wallet/link/callback" {
        // signed by a node of the cluster; the link state names the user: no token looked at
        return Some(row[0]);
    }
    let named = qrgate::http::auth::ROUTE_SCOPES
        .iter()
        .any(|(m, r, s)| *m == method && *r == route && *s == scope);
    match (named, method) {
        (true, "GET") => Some(row[7]),
        (true, _) => None,
        (false, _) => Some(e(403, "insufficient_scope")),
    }
}

/// The outsider's request of a row, sent with another caller's token.
async fn derived_cell(
    app: &TestApp,
    fx: &Fx,
    method: &str,
    route: &str,
    token: &str,
) -> (u16, Value) {
    if route == "/v1/ws" {
        let status = ws_status(app, Some(token)).await;
        if status == 101 {
            return (101, Value::Null);
        }
        return app.get(&format!("/v1/ws?token={token}"), None).await;
    }
    let r = request(fx, method, route, Outsider);
    app.call_with(method, &r.path, Some(token), r.body, &r.headers)
        .await
}

fn matches(exp: Exp, status: u16, body: &Value) -> bool {
    match exp {
        Exp::Is(st) => status == st,
        Exp::Refused(st, c) => status == st && code(body) == c,
    }
}

/// Every (method, path) the server documents in `/openapi.json`.
async fn documented(app: &TestApp) -> BTreeSet<(String, String)> {
    let (s, doc) = app.get("/openapi.json", None).await;
    assert_eq!(s, 200);
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every route a handler in `src/http` declares with a routing attribute
/// (`#[get("/...")]`, ...): a route left out of the OpenAPI document is
/// still caught.
fn declared() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src/http").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("read handler source");
        for line in text.lines() {
            let line = line.trim();
            for method in ["get", "put", "post", "delete", "patch"] {
                if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                    if let Some((path, _)) = rest.split_once('"') {
                        out.insert((method.to_uppercase(), path.to_string()));
                    }
                }
            }
        }
    }
    out
}

#[actix_web::test]
async fn every_route_times_every_caller() {
    let sim = Sim::start();
    // Every cell's forged notification is refused with 401, not refused
    // unread for coming too often from one address.
    let app = TestApp::spawn_with(&format!(
        "{}\n[[webhooks]]\nid = \"m\"\nurl = \"http://127.0.0.1:9/hooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        sim.config("rejected_notifications_per_minute_per_ip = 100000")
    ))
    .await;
    let fx = setup(&app, &sim).await;

    // The table covers the API: what the server documents, what the handlers
    // declare, and nothing else.
    let rows: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(rows.len(), MATRIX.len(), "a route has two rows");
    let undocumented: BTreeSet<(String, String)> = UNDOCUMENTED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let docs = documented(&app).await;
    let missing: Vec<_> = docs.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "routes in /openapi.json without a row in the access matrix: {missing:?}"
    );
    let unknown: Vec<_> = rows
        .difference(&docs)
        .filter(|r| !undocumented.contains(*r))
        .collect();
    assert!(
        unknown.is_empty(),
        "rows for routes /openapi.json does not have (list them in UNDOCUMENTED if deliberate): {unknown:?}"
    );
    assert!(
        undocumented.is_disjoint(&docs),
        "a route listed as undocumented is documented now: {:?}",
        undocumented.intersection(&docs).collect::<Vec<_>>()
    );
    let handlers = declared();
    let missing: Vec<_> = handlers.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "routes declared in src/http without a row in the access matrix: {missing:?}"
    );

    // Every cell; then two callers derived from the columns: a revoked
    // session answers as the never-issued one does, and a frozen user as
    // the outsider does, except where a freeze refuses.
    let mut wrong = Vec::new();
    let mut cells = 0;
    for (method, route, expected) in MATRIX {
        for (who, exp) in COLUMNS.iter().zip(expected) {
            let (status, body) = cell(&app, &fx, method, route, *who).await;
            cells += 1;
            if !matches(*exp, status, &body) {
                let body = body.to_string();
                wrong.push(format!(
                    "{method} {route} as {who:?}: expected {exp:?}, got {status} {}",
                    &body[..body.len().min(300)]
                ));
            }
        }
        // A column per scope: a key whose scope the route does not name is
        // refused (no side effects); one whose scope it names reads what
        // the operator reads (GETs only: writes are not repeated here).
        for (scope, key) in &fx.scope_keys {
            let Some(exp) = scope_expects(method, route, expected, scope) else {
                continue;
            };
            let (status, body) = if *route == "/v1/ws" {
                (ws_status(&app, Some(key)).await, Value::Null)
            } else {
                let r = request(&fx, method, route, Op);
                app.call_with(method, &r.path, Some(key), r.body, &r.headers)
                    .await
            };
            cells += 1;
            let ok = match exp {
                Exp::Is(st) => status == st,
                Exp::Refused(st, c) => status == st && (c.is_empty() || code(&body) == c),
            };
            if !ok {
                let body = body.to_string();
                wrong.push(format!(
                    "{method} {route} with a {scope} key: expected {exp:?}, got {status} {}",
                    &body[..body.len().min(300)]
                ));
            }
        }
        for (name, token, exp) in [
            ("a revoked session", &fx.revoked_token, Some(expected[2])),
            (
                "a frozen user",
                &fx.frozen_token,
                frozen_expects(method, route, expected[3]),
            ),
        ] {
            let Some(exp) = exp else { continue };
            let (status, body) = derived_cell(&app, &fx, method, route, token).await;
            cells += 1;
            if !matches(exp, status, &body) {
                let body = body.to_string();
                wrong.push(format!(
                    "{method} {route} as {name}: expected {exp:?}, got {status} {}",
                    &body[..body.len().min(300)]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The columns, the scope keys' cells, and two derived cells a row but
    // for the two rows a frozen user cannot repeat.
    let scoped: usize = MATRIX
        .iter()
        .map(|(m, r, row)| {
            fx.scope_keys
                .iter()
                .filter(|(s, _)| scope_expects(m, r, row, s).is_some())
                .count()
        })
        .sum();
    assert!(scoped > MATRIX.len() * 4, "most rows are tried with keys");
    assert_eq!(cells, MATRIX.len() * (COLUMNS.len() + 2) - 2 + scoped);

    cross_user_actions(&app, &fx).await;
    no_trace(&app, &fx).await;

    // The cells carried these tokens (in headers, WebSocket queries and
    // landing page paths): none of them reached the log.
    let log = app.log();
    assert!(log.contains("request"), "debug request logging is on");
    for (who, secret) in fx
        .token
        .iter()
        .map(|(w, t)| (format!("{w:?}"), t.as_str()))
        .chain([("invitation".to_string(), fx.invite_token.as_str())])
    {
        assert!(!log.contains(secret), "the {who} token reached the log");
    }
}

/// Users and what they own.
async fn setup(app: &TestApp, sim: &Sim) -> Fx {
    let (owner_id, owner) = app.payee(sim, "owner", 10_000, "o-owner").await;
    let (outsider_id, outsider) = app.payee(sim, "outsider", 0, "o-outsider").await;
    let (member_id, member) = app.payee(sim, "member", 0, "o-member").await;
    let (gadmin_id, gadmin) = app.payee(sim, "gadmin", 0, "o-gadmin").await;
    let (spare, spare_token) = app.user("spare").await;
    // The matrix's own link codes (codes are single use).
    for who in [Outsider, Member, GAdmin, Owner] {
        let openid = format!("o-{}", format!("{who:?}").to_lowercase());
        let (s, v) = sim
            .post(
                "/sim/codes",
                json!({"code": format!("matrix-link-{who:?}"), "openid": openid}),
            )
            .await;
        assert!(s < 300, "{s} {v}");
    }

    let g = app
        .group(
            &owner,
            json!({"name": "Guarded", "approval_required": true}),
        )
        .await;
    let gp = format!("/v1/groups/{g}");
    let (invite, invite_token, _) = app.invite(&owner, &g, json!({})).await;
    let approve = |rid: String| {
        let (app, owner, gp) = (app, owner.clone(), gp.clone());
        async move {
            let (s, v) = app
                .post(
                    &format!("{gp}/requests/{rid}/approve"),
                    Some(&owner),
                    json!({}),
                )
                .await;
            assert_eq!(s, 200, "{v}");
        }
    };
    let request_of = |tok: String| {
        let (app, invite_token) = (app, invite_token.clone());
        async move {
            let (s, v) = app.join(&tok, &invite_token).await;
            assert_eq!(s, 202, "{v}");
            s_(&v["request_id"])
        }
    };
    for tok in [&member, &gadmin, &spare_token] {
        approve(request_of(tok.clone()).await).await;
    }
    let (s, v) = app
        .call(
            "PUT",
            &format!("{gp}/admins/{gadmin_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 204, "{v}");

    let mut pending = Vec::new();
    for i in 0..10 {
        let (id, tok) = app.user(&format!("joiner{i}")).await;
        pending.push((id, tok.clone(), request_of(tok).await));
    }
    let (victim_joiner, victim_joiner_token, victim_request) = pending.remove(0);
    let deciders = [GAdmin, Owner, Op];
    let approve_rids = deciders.iter().map(|w| (*w, pending.remove(0).2)).collect();
    let reject_rids = deciders.iter().map(|w| (*w, pending.remove(0).2)).collect();
    let reject_bulk_rids = deciders.iter().map(|w| (*w, pending.remove(0).2)).collect();
    let mut block = Vec::new();
    for w in deciders {
        block.push((w, app.user(&format!("troll-{w:?}")).await.0));
    }
    let mut remove = Vec::new();
    for w in deciders {
        let (id, tok) = app.user(&format!("removable-{w:?}")).await;
        approve(request_of(tok).await).await;
        remove.push((w, id));
    }
    let mut revoke = Vec::new();
    for w in deciders {
        revoke.push((w, app.invite(&owner, &g, json!({})).await.0));
    }
    let (member_invite, _, _) = app.invite(&member, &g, json!({})).await;

    let sacrificial_group = app.group(&owner, json!({"name": "Sacrificial"})).await;
    let banned_group = app.group(&owner, json!({"name": "Banned"})).await;
    let (s, v) = app
        .post(
            &format!("/v1/admin/groups/{banned_group}/ban"),
            Some(ADMIN),
            json!({"reason": "setup"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let outsiders_group = app
        .group(
            &outsider,
            json!({"name": "Elsewhere", "approval_required": true}),
        )
        .await;

    // Money: the owner's payout (settled), packet, codes; a blacklisted user.
    let (s, v) = app.payout(&owner, PAYOUT_KEY, PAYOUT_FEN).await;
    assert_eq!(s, 202, "{v}");
    let payout = s_(&v["id"]);
    app.settled(&owner, &payout).await;
    let (s, v) = app
        .call_with(
            "POST",
            "/v1/packets",
            Some(&owner),
            Some(packet_body()),
            &[("Idempotency-Key", PACKET_KEY.to_string())],
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let packet = s_(&v["id"]);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (s, v) = app
            .post(
                "/v1/codes",
                Some(&owner),
                json!({"page": "/landing", "params": {"shop": "owner"}}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        codes.push(s_(&v["code"]));
    }
    let code = codes.remove(0);
    let code_revoke = vec![(Owner, codes.remove(0)), (Op, codes.remove(0))];
    let (s, v) = app
        .post(
            "/v1/admin/api-keys",
            Some(ADMIN),
            json!({"name": "matrix", "scopes": ["moderation"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let api_key = s_(&v["id"]);
    let mut scope_keys = Vec::new();
    for scope in qrgate::http::auth::SCOPES {
        let (s, v) = app
            .post(
                "/v1/admin/api-keys",
                Some(ADMIN),
                json!({"name": scope, "scopes": [scope]}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        scope_keys.push((scope.to_string(), s_(&v["key"])));
    }
    let (frozen_id, frozen_token) = app.user("frozen caller").await;
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{frozen_id}/freeze"),
            Some(ADMIN),
            json!({"reason": "matrix"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (revoked_id, revoked_token) = app.user("revoked caller").await;
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{revoked_id}/sessions/revoke"),
            Some(ADMIN),
            json!({}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (blacklisted, _) = app.user("bad").await;
    let (s, v) = app
        .call(
            "PUT",
            &format!("/v1/admin/blacklist/{blacklisted}"),
            Some(ADMIN),
            Some(json!({"reason": "setup"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let bill = qrgate_provider::bill::write_bill(&qrgate_provider::bill::Bill { rows: vec![] })
        .expect("empty bill");
    let (s, v) = app
        .post(
            "/v1/admin/reconcile",
            Some(ADMIN),
            json!({"date": DAY, "bill": bill}),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // The owner's token with its last character changed.
    let mut forged = owner.clone();
    let last = forged.pop().expect("token");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let token = HashMap::from([
        (Forged, forged),
        (
            Unknown,
            "qrs_bmV2ZXItaXNzdWVkLXNlc3Npb24tdG9rZW4tMDAwMDA".to_string(),
        ),
        (Outsider, outsider),
        (Member, member),
        (GAdmin, gadmin),
        (Owner, owner),
        (Op, ADMIN.to_string()),
    ]);
    let id = HashMap::from([
        (Outsider, outsider_id),
        (Member, member_id),
        (GAdmin, gadmin_id),
        (Owner, owner_id),
    ]);
    Fx {
        token,
        id,
        spare,
        spare_token,
        g,
        sacrificial_group,
        banned_group,
        outsiders_group,
        victim_request,
        victim_joiner,
        victim_joiner_token,
        approve: approve_rids,
        reject: reject_rids,
        reject_bulk: reject_bulk_rids,
        block,
        remove,
        invite,
        invite_token,
        revoke,
        member_invite,
        payout,
        packet,
        code,
        code_revoke,
        blacklisted,
        api_key,
        frozen_id,
        frozen_token,
        revoked_token,
        scope_keys,
        bill,
        backups: app.dir.path().join("matrix-backups"),
    }
}

/// The cross-user actions of the issue, one by one (after the table, on the
/// same server).
async fn cross_user_actions(app: &TestApp, fx: &Fx) {
    let t = |w: Who| fx.token(w).expect("a user");
    let (owner, outsider, member, gadmin) = (t(Owner), t(Outsider), t(Member), t(GAdmin));
    let owner_id = fx.id(Owner);

    // Reading someone's wallet: no route takes a user; a user id slipped into
    // the query is refused or ignored, never obeyed.
    let (_, own) = app.get("/v1/wallet", Some(outsider)).await;
    let (s, v) = app
        .get(&format!("/v1/wallet?user_id={owner_id}"), Some(outsider))
        .await;
    assert_eq!((s, &v), (200, &own), "the caller's own wallet");
    assert_ne!(
        own["balance"],
        app.get("/v1/wallet", Some(owner)).await.1["balance"]
    );
    let (s, v) = app
        .get(
            &format!("/v1/wallet/entries?user_id={owner_id}"),
            Some(outsider),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "validation_failed"), "{v}");
    let (_, v) = app.get("/v1/wallet/link", Some(outsider)).await;
    assert_eq!(v["openid"], "o-outsider", "{v}");
    // ... nor someone's payouts.
    let (s, v) = app.get("/v1/payouts", Some(outsider)).await;
    assert_eq!(s, 200);
    assert_eq!(v["payouts"], json!([]), "{v}");
    let (_, v) = app.get("/v1/payouts", Some(owner)).await;
    let ids: Vec<String> = v["payouts"]
        .as_array()
        .expect("payouts")
        .iter()
        .map(|p| s_(&p["id"]))
        .collect();
    assert_eq!(ids, vec![fx.payout.clone()]);

    // Moving someone's money: a payout or packet is always from the caller's
    // wallet; naming another user is not part of any body.
    for (path, body) in [
        (
            "/v1/payouts",
            json!({"amount": PAYOUT_FEN, "user_id": owner_id}),
        ),
        (
            "/v1/packets",
            json!({"total": 800, "count": 8, "mode": "fixed", "sender": owner_id}),
        ),
        (
            "/v1/packets",
            json!({"total": 800, "count": 8, "mode": "fixed", "funder": owner_id}),
        ),
    ] {
        let (s, v) = app
            .call_with(
                "POST",
                path,
                Some(outsider),
                Some(body),
                &[("Idempotency-Key", "cross-user".to_string())],
            )
            .await;
        assert_eq!((s, code(&v)), (400, "invalid_json"), "{path}: {v}");
    }
    // A campaign packet (funded by a merchant account) is the operator's.
    let (s, v) = app
        .call_with(
            "POST",
            "/v1/packets",
            Some(outsider),
            Some(json!({"total": 800, "count": 8, "mode": "fixed", "merchant": "acme"})),
            &[("Idempotency-Key", "cross-merchant".to_string())],
        )
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");

    // Approving in a group one does not administer: the outsider owns a
    // group of its own, which does not reach the requests of another.
    let victim = &fx.victim_request;
    let gx = &fx.outsiders_group;
    let (s, v) = app
        .post(
            &format!("/v1/groups/{gx}/requests/{victim}/approve"),
            Some(outsider),
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "request_not_found"), "{v}");
    for path in [
        format!("/v1/groups/{gx}/requests/{victim}/approve"),
        format!("/v1/groups/{gx}/requests/{victim}/reject"),
    ] {
        let (s, v) = app.post(&path, Some(gadmin), json!({})).await;
        assert_eq!((s, code(&v)), (403, "forbidden"), "{path}: {v}");
    }
    let (s, _) = app
        .get(&format!("/v1/groups/{gx}/requests"), Some(gadmin))
        .await;
    assert_eq!(s, 403, "another group's queue");
    // Rejecting in bulk from one's own group reaches nothing of another's:
    // the victim's request is not found there, the owner's invitation neither.
    let bulk = format!("/v1/groups/{gx}/requests/reject");
    let (s, v) = app
        .post(&bulk, Some(outsider), json!({"request_ids": [victim]}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rejected"], json!([]), "{v}");
    assert_eq!(v["not_found"], json!([victim]), "{v}");
    let (s, v) = app
        .post(&bulk, Some(outsider), json!({"via_invite": fx.invite}))
        .await;
    assert_eq!((s, code(&v)), (404, "invite_not_found"), "{v}");
    // A group admin moderates members, not the other admins.
    let g = &fx.g;
    let spare = &fx.spare;
    let admins = format!("/v1/groups/{g}/admins/{spare}");
    assert_eq!(app.call("PUT", &admins, Some(owner), None).await.0, 204);
    let (s, v) = app.block(gadmin, g, spare).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    assert_eq!(app.call("DELETE", &admins, Some(owner), None).await.0, 204);
    // A caller who may not block is refused before the target is looked at:
    // the answer must not tell which user ids exist.
    let owner_prefix = &owner_id[..owner_id.len() - 22];
    let nobody = format!("{owner_prefix}{}", "A".repeat(22));
    for (who, target) in [(outsider, &nobody), (outsider, spare), (member, &nobody)] {
        let (s, v) = app.block(who, g, target).await;
        assert_eq!((s, code(&v)), (403, "forbidden"), "block {target}: {v}");
    }
    let (s, v) = app.block(gadmin, g, &nobody).await;
    assert_eq!(
        (s, code(&v)),
        (404, "user_not_found"),
        "a moderator learns it: {v}"
    );
    // A pending joiner is not a member yet.
    let joiner = &fx.victim_joiner_token;
    for (m, p) in [
        ("GET", format!("/v1/groups/{g}/members")),
        ("GET", format!("/v1/invites/{}", fx.invite)),
        ("POST", format!("/v1/groups/{g}/invites")),
    ] {
        let (s, v) = app.call(m, &p, Some(joiner), Some(json!({}))).await;
        assert_eq!(
            (s, code(&v)),
            (403, "forbidden"),
            "pending joiner {m} {p}: {v}"
        );
    }

    // Revoking someone else's invitation: the member may revoke their own
    // only; the owner of one group may not revoke another group's.
    let (mine, _, _) = app.invite(member, g, json!({})).await;
    let (s, v) = app
        .call(
            "DELETE",
            &format!("/v1/invites/{mine}"),
            Some(outsider),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    let (s, v) = app
        .call(
            "DELETE",
            &format!("/v1/invites/{}", fx.member_invite),
            Some(outsider),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    let (s, _) = app
        .call("DELETE", &format!("/v1/invites/{mine}"), Some(member), None)
        .await;
    assert_eq!(s, 204, "a member revokes their own invitation");
    let (elsewhere, _, _) = app.invite(outsider, gx, json!({})).await;
    let (s, v) = app
        .call(
            "DELETE",
            &format!("/v1/invites/{elsewhere}"),
            Some(owner),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");

    // Claiming on behalf of another: the claim is the caller's; a body naming
    // somebody else is refused, and `ref` (a referral) credits nobody on a
    // plain packet.
    let (claimant_id, claimant) = app.user("claimant").await;
    let claim = format!("/v1/packets/{}/claim", fx.packet);
    for body in [
        json!({"user_id": owner_id}),
        json!({"user": owner_id}),
        json!({"claimant": owner_id}),
    ] {
        let (s, v) = app.post(&claim, Some(&claimant), body.clone()).await;
        assert_eq!((s, code(&v)), (400, "invalid_json"), "{body}: {v}");
    }
    let owner_before = app.balance(owner).await;
    let (s, v) = app
        .post(&claim, Some(&claimant), json!({ "ref": owner_id }))
        .await;
    assert_eq!(s, 200, "{v}");
    let amount = v["amount"].as_i64().expect("amount");
    assert!(amount > 0);
    assert!(
        s_(&v["share_url"]).ends_with(&format!("ref={claimant_id}")),
        "{v}"
    );
    assert_eq!(
        app.balance(&claimant).await,
        amount,
        "the share is the caller's"
    );
    assert_eq!(
        app.balance(owner).await,
        owner_before,
        "nothing to the named user"
    );
    let (s, v) = app.post(&claim, Some(&claimant), json!({})).await;
    assert_eq!((s, code(&v)), (409, "already_claimed"), "{v}");

    // Reading someone's packet claims: who claimed what is the sender's and
    // the operator's to know. Everyone else sees the counts and their own
    // share, and no claims while the packet is open; the split seed stays
    // hidden while it is open.
    let public = packet_view(app, &fx.packet, None).await;
    assert_eq!(public["seed"], Value::Null, "{public}");
    assert_eq!(public["claims"], json!([]), "{public}");
    assert_eq!(public["claimed_count"], 5, "{public}");
    assert!(public.get("your_claim").is_none(), "{public}");
    let mine = packet_view(app, &fx.packet, Some(outsider)).await;
    assert_eq!(mine["claims"], json!([]), "{mine}");
    assert_eq!(mine["your_claim"]["user_id"], fx.id(Outsider), "{mine}");
    let full = packet_view(app, &fx.packet, Some(owner)).await;
    assert_eq!(
        packet_view(app, &fx.packet, Some(ADMIN)).await["claims"],
        full["claims"]
    );
    let claimants: BTreeSet<String> = full["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| s_(&c["user_id"]))
        .collect();
    let expected: BTreeSet<String> = [Outsider, Member, GAdmin, Owner]
        .iter()
        .map(|w| fx.id(*w).to_string())
        .chain([claimant_id.clone()])
        .collect();
    assert_eq!(claimants, expected);
    for c in full["claims"].as_array().expect("claims") {
        let keys: BTreeSet<&str> = c
            .as_object()
            .expect("claim")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, BTreeSet::from(["user_id", "amount", "at"]), "{c}");
    }

    // Reading a group: anyone signed in may, but its counters are for the
    // owner, its admins and operators.
    for (who, role, counters) in [
        (Outsider, Value::Null, false),
        (Member, json!("member"), false),
        (GAdmin, json!("admin"), true),
        (Owner, json!("owner"), true),
        (Op, Value::Null, true),
    ] {
        let (s, v) = app.get(&format!("/v1/groups/{g}"), fx.token(who)).await;
        assert_eq!(s, 200);
        assert_eq!(v["my_role"], role, "{who:?}: {v}");
        assert_eq!(!v["counters"].is_null(), counters, "{who:?}: {v}");
    }

    // A group's events reach its members only.
    use futures_util::SinkExt;
    for (tok, answer) in [(outsider, "error"), (member, "subscribed")] {
        let mut conn = super::ws::connect(app, tok).await;
        conn.send(awc::ws::Message::Text(
            json!({ "subscribe": format!("group:{g}") })
                .to_string()
                .into(),
        ))
        .await
        .expect("send");
        let v = super::ws::next_of(&mut conn, answer).await;
        if answer == "error" {
            assert_eq!(v["code"], "forbidden", "{v}");
        }
    }

    // Tokens that are not quite right: nobody, on a user route and an
    // operator route alike.
    let mut admin_tampered = ADMIN.to_string();
    admin_tampered.pop();
    let bad = [
        format!("Bearer {owner}x"),
        format!("Bearer x{owner}"),
        format!("Bearer {}", owner.to_uppercase()),
        format!("Basic {owner}"),
        owner.to_string(),
        "Bearer ".to_string(),
        "Bearer qrs_".to_string(),
        format!("Bearer {}", "qrs_".repeat(80)),
        format!("Bearer {ADMIN}x"),
        format!("Bearer {admin_tampered}"),
        format!("Bearer qrs_{ADMIN}"),
    ];
    for header in &bad {
        for path in ["/v1/wallet", "/v1/admin/ledger/check"] {
            let (s, v) = app
                .call_with(
                    "GET",
                    path,
                    None,
                    None,
                    &[("Authorization", header.clone())],
                )
                .await;
            assert_eq!(
                (s, code(&v)),
                (401, "unauthorized"),
                "{path} with a bad header: {v}"
            );
        }
    }
}

/// A packet as `tok` sees it, but for `opens` (which excludes the sender's).
async fn packet_view(app: &TestApp, packet: &str, tok: Option<&str>) -> Value {
    let (s, mut v) = app.get(&format!("/v1/packets/{packet}"), tok).await;
    assert_eq!(s, 200, "{v}");
    if let Some(o) = v.as_object_mut() {
        o.remove("opens");
    }
    v
}

/// What the denied cells attacked is as it was.
async fn no_trace(app: &TestApp, fx: &Fx) {
    let owner = fx.token(Owner).expect("owner");
    let g = &fx.g;
    let (_, v) = app.get(&format!("/v1/groups/{g}"), Some(owner)).await;
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(v["approval_required"], true, "{v}");
    assert_eq!(v["description"], "set by Op", "the last allowed PATCH: {v}");
    // owner, member, group admin, spare, and the three approved requests
    assert_eq!(v["member_count"], 7, "{v}");
    // the victim, and the outsider's join
    assert_eq!(v["pending_requests"], 2, "{v}");

    let (_, v) = app
        .get(&format!("/v1/groups/{g}/members"), Some(owner))
        .await;
    let roles: HashMap<String, String> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (s_(&m["user_id"]), s_(&m["role"])))
        .collect();
    for (user, role) in [
        (fx.id(Owner), "owner"),
        (fx.id(GAdmin), "admin"),
        (fx.id(Member), "member"),
        (fx.spare.as_str(), "member"),
    ] {
        assert_eq!(roles.get(user).map(String::as_str), Some(role), "{roles:?}");
    }
    assert!(!roles.contains_key(fx.id(Outsider)));
    for (_, troll) in &fx.block {
        assert!(!roles.contains_key(troll));
    }

    let (_, v) = app
        .get(&format!("/v1/groups/{g}/requests"), Some(owner))
        .await;
    let pending: Vec<(String, String)> = v["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| (s_(&r["id"]), s_(&r["user_id"])))
        .collect();
    assert!(
        pending.contains(&(fx.victim_request.clone(), fx.victim_joiner.clone())),
        "{pending:?}"
    );

    for inv in [&fx.invite, &fx.member_invite] {
        let (_, v) = app.get(&format!("/v1/invites/{inv}"), Some(owner)).await;
        assert_eq!(
            (&v["revoked"], &v["state"]),
            (&json!(false), &json!("live")),
            "{v}"
        );
    }
    for (_, inv) in &fx.revoke {
        let (_, v) = app.get(&format!("/v1/invites/{inv}"), Some(owner)).await;
        assert_eq!(v["state"], "revoked", "an allowed revoke: {v}");
    }

    let (_, v) = app
        .get(&format!("/v1/groups/{}", fx.banned_group), Some(owner))
        .await;
    assert_eq!(v["status"], "banned", "{v}");
    let (_, v) = app
        .get(&format!("/v1/groups/{}", fx.sacrificial_group), Some(owner))
        .await;
    assert_eq!(
        v["status"], "active",
        "banned then unbanned by the operator: {v}"
    );

    let (_, v) = app
        .get(&format!("/v1/codes/{}", fx.code), Some(owner))
        .await;
    assert_eq!(v["status"], "live", "{v}");

    let (_, v) = app.get("/v1/admin/blacklist", Some(ADMIN)).await;
    let listed: BTreeSet<String> = v
        .as_array()
        .expect("blacklist")
        .iter()
        .map(|e| s_(&e["user_id"]))
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([fx.blacklisted.clone(), fx.frozen_id.clone()]),
        "{v}"
    );

    // Money: the denied earnings credited nobody, the replayed keys moved nothing.
    let reasons = |tok: String| async move {
        // Credits from other holders (a claim, an earning) reach the wallet's
        // entries once its actor applied its inbox, which a read of the
        // wallet starts and the entries route (read from storage) does not
        // wait for: look again for up to 2 s.
        let mut out = Vec::new();
        for _ in 0..100 {
            app.balance(&tok).await;
            let (s, v) = app.get("/v1/wallet/entries?limit=200", Some(&tok)).await;
            assert_eq!(s, 200, "{v}");
            out = v["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .map(|e| s_(&e["reason"]))
                .collect::<Vec<String>>();
            if !out.is_empty() {
                break;
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        out
    };
    for who in [Outsider, Member, GAdmin] {
        let r = reasons(fx.token(who).expect("user").to_string()).await;
        assert_eq!(r, vec!["packet_claim".to_string()], "{who:?}");
        let (_, v) = app.get("/v1/payouts", fx.token(who)).await;
        assert_eq!(v["payouts"], json!([]), "{who:?}");
    }
    let r = reasons(owner.to_string()).await;
    assert_eq!(r.iter().filter(|r| *r == "earning").count(), 1, "{r:?}");
    let spare_tok = fx.spare_token.clone();
    assert_eq!(reasons(spare_tok).await, vec!["earning".to_string()]);

    app.books_clean().await;
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
    assert!(
        !super::helpers::any_file_holds(&app.data_dir(), owner.as_bytes()),
        "session token stored in clear"
    );
}

/// Every route a key may call is in the scope table, and only those: the
/// rows the operator may call (and anonymous callers may not), apart from
/// the key management itself and backups (which write files wherever the
/// caller says on the server's host): those take the admin token alone.
#[test]
fn every_route_the_operator_calls_names_the_scope_a_key_needs() {
    use qrgate::http::auth::ROUTE_SCOPES;
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    for (method, route, cells) in MATRIX {
        let op_ok = matches!(cells[7], Exp::Is(st) if st < 300);
        let anon_refused = matches!(cells[0], Exp::Refused(401, _));
        let token_only = route.starts_with("/v1/admin/api-keys") || *route == "/v1/admin/backup";
        if op_ok && anon_refused && !token_only {
            want.insert((method.to_string(), route.to_string()));
        }
    }
    let have: BTreeSet<(String, String)> = ROUTE_SCOPES
        .iter()
        .map(|(m, r, _)| (m.to_string(), r.to_string()))
        .collect();
    // More, where the operator is not a matrix column's plain success:
    // campaign packets (created with a merchant), users created by a
    // service (not limited per address), an avatar (an image body).
    let extra: BTreeSet<(String, String)> = have.difference(&want).cloned().collect();
    assert_eq!(
        extra,
        BTreeSet::from([
            ("POST".to_string(), "/v1/packets".to_string()),
            ("POST".to_string(), "/v1/users".to_string()),
            // the matrix sends it JSON: the operator gets as far as 415
            ("PUT".to_string(), "/v1/groups/{id}/avatar".to_string()),
            // a delivery that does not exist: as far as 404
            (
                "POST".to_string(),
                "/v1/admin/webhooks/deliveries/{id}/resend".to_string(),
            ),
        ]),
        "scoped routes that are not operator routes"
    );
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "operator routes without a scope: {missing:?}"
    );
}

/// Fake accounts and floods, from outside: a farm of fresh accounts on a
/// campaign packet and its referral budget, a phone shared by many
/// accounts, and a flood of join requests through one link. (Account
/// creation bursts are in `abuse.rs`; WebSocket caps in `ws.rs`; body
/// limits in `errors.rs`; anonymous images in `qr.rs`; forged and replayed
/// notifications in `payouts.rs`; the packet view's privacy above.)
#[actix_web::test]
async fn fake_accounts_and_request_floods_are_held_off() {
    use super::abuse::{answer, solve};
    const CONFIG: &str = "[risk]\nmode = \"enforce\"\n[risk.challenge]\npow_bits = 8\n\
        [limits]\nmax_pending_requests_per_invite = 3\n\
        [packets]\nclaims_per_minute_per_user = 1000\n";
    let mut app = TestApp::spawn_with(CONFIG).await;
    // Established accounts: made now, used two days later.
    let (vet_id, vet) = app.user("vet").await;
    let (_, friend) = app.user("friend").await;
    let mut phones = Vec::new();
    for i in 0..4 {
        phones.push(app.user(&format!("phone{i}")).await.1);
    }
    let (_, sender) = app.funded("sender", 1000).await;
    app.env = vec![("QRGATE_CLOCK_OFFSET_SECS".into(), (2 * 86_400).to_string())];
    app.restart().await;

    let campaign = |key: &'static str, count: u32| {
        let app = &app;
        async move {
            let (s, v) = app
                .create_packet(
                    ADMIN,
                    key,
                    json!({"total": 10 * count, "count": count, "mode": "fixed",
                           "merchant": "acme", "referral_budget_fen": 20,
                           "referral_bonus_fen": 10, "ttl_seconds": 86_400}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
            s_(&v["id"])
        }
    };
    let pid = campaign("farmed", 6).await;
    // Established accounts claim without a question; a referral pays.
    let (s, v) = app.claim(&vet, &pid, json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app.claim(&friend, &pid, json!({"ref": vet_id})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(app.wallet(&vet).await["balance"], 10 + 10);

    // A fresh account must solve a challenge bound to it and to this claim.
    let (_, farm) = app.user("farm").await;
    let (s, v) = app.claim(&farm, &pid, json!({"ref": vet_id})).await;
    assert_eq!((s, code(&v)), (403, "challenge_required"), "{v}");
    let c = v["challenge"].clone();
    assert!(
        s_(&c["answer_url"]).starts_with("/v1/challenges/ch_"),
        "{c}"
    );
    let (s, v) = answer(&app, &friend, &c, &solve(&c)).await;
    assert_eq!(
        (s, code(&v)),
        (400, "invalid_challenge"),
        "someone else's: {v}"
    );
    let id = s_(&c["id"]);
    let wrong = (0..)
        .map(|n: u32| n.to_string())
        .find(|x| !qrgate::domain::challenge::pow_solves(&id, x, 8))
        .expect("a wrong answer");
    let (s, v) = answer(&app, &farm, &c, &wrong).await;
    assert_eq!((s, code(&v)), (403, "challenge_failed"), "{v}");
    let (s, v) = answer(&app, &farm, &c, &solve(&c)).await;
    assert_eq!(s, 200, "the answer makes the claim: {v}");
    assert_eq!(
        (s_(&v["packet_id"]), v["amount"].as_u64()),
        (pid.clone(), Some(10))
    );
    assert_eq!(app.wallet(&farm).await["balance"], 10);
    assert_eq!(
        app.wallet(&vet).await["balance"],
        10 + 10,
        "a fresh account earns its referrer no bonus"
    );
    let (s, v) = answer(&app, &farm, &c, &solve(&c)).await;
    assert_eq!(
        (s, code(&v)),
        (409, "already_claimed"),
        "one claim per challenge: {v}"
    );

    // A personal packet asks nothing of a fresh account.
    let (s, v) = app
        .create_packet(
            &sender,
            "personal",
            json!({"total": 100, "count": 2, "mode": "fixed"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app.claim(&farm, &s_(&v["id"]), json!({})).await;
    assert_eq!(s, 200, "{v}");

    // Established accounts on one phone: the fourth is asked.
    let pid2 = campaign("phones", 5).await;
    for (i, tok) in phones.iter().enumerate() {
        let (s, v) = app
            .call_with(
                "POST",
                &format!("/v1/packets/{pid2}/claim"),
                Some(tok),
                Some(json!({})),
                &[("X-Device-Id", "one-phone".to_string())],
            )
            .await;
        if i < 3 {
            assert_eq!(s, 200, "account {i}: {v}");
        } else {
            assert_eq!((s, code(&v)), (403, "challenge_required"), "{v}");
        }
    }

    // A flood of join requests through one link fills its queue, not the
    // moderators' day; they reject it in one call.
    let g = app
        .group(&vet, json!({"name": "Gated", "approval_required": true}))
        .await;
    let (iid, flooded, _) = app.invite(&vet, &g, json!({})).await;
    let (_, other, _) = app.invite(&vet, &g, json!({})).await;
    let mut waiting = Vec::new();
    for i in 0..4 {
        let (uid, tok) = app.user(&format!("flood{i}")).await;
        let (s, v) = app.join(&tok, &flooded).await;
        if i < 3 {
            assert_eq!(s, 202, "{v}");
            waiting.push(s_(&v["request_id"]));
        } else {
            assert_eq!((s, code(&v)), (409, "too_many_pending_requests"), "{v}");
            let (s, v) = app.join(&tok, &other).await;
            assert_eq!(s, 202, "another invitation has its own queue: {v}");
            waiting.push(uid);
        }
    }
    let bulk = format!("/v1/groups/{g}/requests/reject");
    let (s, v) = app
        .post(&bulk, Some(&friend), json!({"via_invite": iid}))
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "not a moderator: {v}");
    for bad in [
        json!({}),
        json!({"request_ids": []}),
        json!({"request_ids": [waiting[0]], "via_invite": iid}),
        json!({"request_ids": vec![waiting[0].clone(); 501]}),
    ] {
        let (s, v) = app.post(&bulk, Some(&vet), bad.clone()).await;
        assert_eq!((s, code(&v)), (400, "validation_failed"), "{bad}: {v}");
    }
    let (s, v) = app
        .post(&bulk, Some(&vet), json!({"via_invite": iid}))
        .await;
    assert_eq!(s, 200, "{v}");
    let rejected: BTreeSet<String> = v["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| s_(&r["request_id"]))
        .collect();
    assert_eq!(rejected, waiting[..3].iter().cloned().collect(), "{v}");
    assert_eq!(v["remaining"], 0);
    let (s, v) = app
        .post(&bulk, Some(&vet), json!({"via_invite": iid}))
        .await;
    assert_eq!(
        (s, v["rejected"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );

    // Kept across a restart: the queue as the bulk rejection left it, and
    // the farm's claim.
    app.restart().await;
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/requests"), Some(&vet))
        .await;
    assert_eq!(s, 200, "{v}");
    let users: Vec<String> = v["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| s_(&r["user_id"]))
        .collect();
    assert_eq!(users, vec![waiting[3].clone()], "{v}");
    assert_eq!(app.wallet(&farm).await["balance"], 10 + 50);
    let (_, again) = app.user("flood-again").await;
    let (s, v) = app.join(&again, &flooded).await;
    assert_eq!(s, 202, "the queue has room again: {v}");
    app.books_clean().await;
}
