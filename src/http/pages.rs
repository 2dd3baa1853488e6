//! The pages a phone opens after a scan: server-rendered HTML (askama
//! templates in `templates/`, escaped by default), no external assets, a few
//! lines of script that create a session when there is none and call the
//! public API.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use askama::Template;

use super::{id, AppState};
use crate::domain::ids::PacketId;
use crate::domain::join::{Admission, Refusal};
use crate::domain::token;
use crate::error::ApiError;
use crate::groups::actor::Preview;
use crate::i18n::{Arg, Lang};

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    l: Lang,
    title: &'a str,
    detail: &'a str,
}

#[derive(Template)]
#[template(path = "code.html")]
struct CodePage<'a> {
    l: Lang,
    page: &'a str,
    /// The parameters the scan brought, as the query string had them.
    rows: Vec<(&'a str, &'a str)>,
}

/// The built-in landing page (see `codes::landing`): its page name and the
/// parameters a scan brought.
pub fn render_landing_page(
    l: Lang,
    page: &str,
    params: &[(String, String)],
) -> Result<String, askama::Error> {
    CodePage {
        l,
        page,
        rows: params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    }
    .render()
}

/// A page of one message, from its catalogue messages `{key}-title` and
/// `{key}-detail`: why a link leads nowhere, or what a link did.
pub fn render_message_page(l: Lang, key: &str) -> Result<String, askama::Error> {
    let (title, detail) = (l.t(&format!("{key}-title")), l.t(&format!("{key}-detail")));
    MessagePage {
        l,
        title: &title,
        detail: &detail,
    }
    .render()
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage<'a> {
    l: Lang,
    title: String,
    token: &'a str,
    group_id: String,
    name: &'a str,
    description: &'a str,
    initial: String,
    colour: String,
    /// The group's avatar as a `data:` URL (the page loads nothing else).
    avatar: Option<String>,
    /// The initials (and a colour each) of the first members, when the
    /// group shows them.
    preview: Vec<(String, String)>,
    /// "3 of 500 members", "invitation valid until 13 Dec 2026".
    members: String,
    valid_until: String,
    approval: bool,
    /// The texts its script shows (JSON).
    messages: String,
}

#[derive(Template)]
#[template(path = "packet.html")]
struct PacketPage<'a> {
    l: Lang,
    id: String,
    message: &'a str,
    merchant: Option<&'a str>,
    theme_class: String,
    /// "3 of 5 shares left", "¥5.00 in total", "until 13 Dec 2026".
    shares: String,
    total: String,
    until: String,
    open: bool,
    closed_text: String,
    geofenced: bool,
    /// The texts its script shows (JSON).
    messages: String,
}

/// The script sources of a page's Content-Security-Policy: the hash of
/// each of its inline scripts, so that those run and nothing injected
/// does (`'none'` for a page without scripts).
fn script_sources(html: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script>") {
        let body = &rest[start + "<script>".len()..];
        let Some(end) = body.find("</script>") else {
            break;
        };
        let digest = sha2::Sha256::digest(&body.as_bytes()[..end]);
        out.push_str(&format!(
            " 'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end..];
    }
    if out.is_empty() {
        out.push_str(" 'none'");
    }
    out
}

/// The Content-Security-Policy of a page: its own scripts by hash (and
/// WeChat's JS-SDK where the page loads it), inline styles, requests to
/// this server only, and never inside a frame.
fn content_security_policy(html: &str) -> String {
    let mut scripts = script_sources(html);
    if html.contains(&format!("<script src=\"{JSSDK_URL}\"")) {
        scripts = format!("{} {JSSDK_URL}", scripts.replace(" 'none'", ""));
    }
    format!(
        "default-src 'none'; script-src{scripts}; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// An HTML answer. Pages carry tokens in their URL, so they are never
/// cached and never leak through `Referer`; no other site may frame them.
pub fn html(status: StatusCode, body: Result<String, askama::Error>) -> HttpResponse {
    match body {
        Ok(b) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-store"))
            .insert_header(("Vary", "Accept"))
            .insert_header(("Referrer-Policy", "no-referrer"))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header(("X-Frame-Options", "DENY"))
            .insert_header(("Content-Security-Policy", content_security_policy(&b)))
            .body(b),
        Err(e) => {
            tracing::error!(error = %e, "page rendering failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

fn message(status: StatusCode, l: Lang, key: &str) -> HttpResponse {
    html(status, render_message_page(l, key))
}

/// Texts every page's script may show: the session and challenge steps,
/// and the API's refusals by code.
const SCRIPT_TEXTS: [&str; 5] = [
    "guest",
    "working-verify",
    "failed",
    "needs-app",
    "no-session",
];

/// A colour per group, the same on every visit.
fn colour(seed: &[u8]) -> String {
    let h = blake3::hash(seed);
    let b = h.as_bytes();
    format!("hsl({}, 55%, 42%)", u16::from_le_bytes([b[0], b[1]]) % 360)
}

/// The landing page of an invitation link: the group, and a Join button that
/// creates a session if needed, joins, and follows an approval live.
#[get("/j/{token}")]
pub async fn invite_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let l = Lang::of(&req);
    let text = path.into_inner();
    let invalid = || message(StatusCode::NOT_FOUND, l, "invalid-invite");
    let Ok(parsed) = token::parse(&text) else {
        return Ok(invalid());
    };
    if state.keys.verifying_key(parsed.claims.kid).is_none() {
        return Ok(invalid());
    }
    let Some(g) = state.groups.group_of_token(&parsed).await? else {
        return Ok(invalid());
    };
    let tag = parsed.tag(state.keys.tag_key());
    let p = state
        .groups
        .call(
            g,
            Preview {
                claims: parsed.claims,
                tag,
            },
        )
        .await?;
    let (status, key) = match p.admission {
        Ok(a) => {
            let name = &p.group.name;
            let offset = state.config.payouts.day_offset_hours;
            let joined = l.fmt("invite-joined", &[("name", Arg::Str(name))]);
            let page = InvitePage {
                l,
                title: l.fmt("invite-title", &[("name", Arg::Str(name))]),
                token: &text,
                group_id: g.to_string(),
                name,
                description: &p.group.description,
                initial: name
                    .chars()
                    .next()
                    .map(|c| c.to_uppercase().to_string())
                    .unwrap_or_default(),
                colour: colour(g.as_bytes()),
                avatar: super::groups::avatar_jpeg(&state, &p.group)?.map(|jpeg| {
                    use base64::Engine;
                    format!(
                        "data:image/jpeg;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(jpeg)
                    )
                }),
                preview: p
                    .members
                    .iter()
                    .map(|u| {
                        let name = state.storage.user(*u).ok().flatten().map(|u| u.name);
                        let initial = name
                            .as_deref()
                            .and_then(|n| n.trim().chars().next())
                            .map_or_else(|| "·".to_string(), |c| c.to_uppercase().to_string());
                        (initial, colour(u.as_bytes()))
                    })
                    .collect(),
                members: l.fmt(
                    "invite-members",
                    &[
                        ("count", Arg::Num(u64::from(p.member_count))),
                        ("limit", Arg::Num(u64::from(p.group.member_limit))),
                    ],
                ),
                valid_until: l.fmt(
                    "invite-valid-until",
                    &[("date", Arg::Str(&l.date(p.expires_at, offset)))],
                ),
                approval: a == Admission::Request,
                messages: l.script_messages(
                    &[
                        &SCRIPT_TEXTS[..],
                        &[
                            "invite-joining",
                            "invite-pending",
                            "invite-rejected",
                            "invite-request-expired",
                        ],
                    ]
                    .concat(),
                    &[("invite-joined", joined)],
                ),
            };
            return Ok(html(StatusCode::OK, page.render()));
        }
        Err(Refusal::InvalidToken) => return Ok(invalid()),
        Err(Refusal::Expired) => (410, "invite-expired"),
        Err(Refusal::Revoked) => (410, "invite-revoked"),
        Err(Refusal::Exhausted) => (410, "invite-used-up"),
        Err(Refusal::GroupBanned) => (403, "group-banned"),
        Err(Refusal::GroupFull) => (409, "group-full"),
        Err(Refusal::QueueFull) => (409, "queue-full"),
        Err(Refusal::Paused) => (403, "invite-paused"),
        Err(Refusal::AlreadyMember | Refusal::RequestPending | Refusal::Blocked) => {
            (200, "invite-known")
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok(message(status, l, key))
}

/// The landing page of a red packet: its message and theme, the advertising
/// label of campaign packets, and an Open button that claims a share.
#[get("/p/{id}")]
pub async fn packet_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let l = Lang::of(&req);
    let not_found = || message(StatusCode::NOT_FOUND, l, "packet-missing");
    let Ok(pid) = id(PacketId::parse, &path) else {
        return Ok(not_found());
    };
    let s = match state.wallets.packet(pid, true, 0..0, None).await {
        Ok(s) => s,
        Err(ApiError::Packet(crate::domain::packet::Refusal::NotFound)) => return Ok(not_found()),
        Err(e) => return Err(e),
    };
    let p = &s.packet;
    let left = p.count.saturating_sub(s.tally.claims);
    let expired = crate::clock::now() >= p.expires_at || p.closed.is_some();
    let offset = state.config.payouts.day_offset_hours;
    let shares = |left: Arg| {
        l.fmt(
            "packet-shares-left",
            &[("left", left), ("count", Arg::Num(u64::from(p.count)))],
        )
    };
    let page = PacketPage {
        l,
        id: pid.to_string(),
        message: &p.message,
        merchant: p.merchant.as_deref(),
        theme_class: p
            .theme
            .as_deref()
            .map_or(String::new(), |t| format!("theme-{t}")),
        shares: shares(Arg::Num(u64::from(left))),
        total: l.fmt("packet-total", &[("amount", Arg::Str(&l.amount(p.total)))]),
        until: l.fmt(
            "packet-until",
            &[("date", Arg::Str(&l.date(p.expires_at, offset)))],
        ),
        open: left > 0 && !expired,
        closed_text: l.t(if left == 0 {
            "packet-all-claimed"
        } else {
            "packet-expired"
        }),
        geofenced: p.geofence.is_some(),
        // The script puts the count into the line after a claim.
        messages: l.script_messages(
            &[&SCRIPT_TEXTS[..], &["packet-opening", "packet-won"]].concat(),
            &[("packet-shares-left", shares(Arg::Str("%LEFT%")))],
        ),
    };
    Ok(html(StatusCode::OK, page.render()))
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    l: Lang,
    amount: String,
    /// What became of the payout.
    status: String,
    /// "Confirm by 13 Dec 2026 18:05".
    until: String,
    confirm: Option<crate::domain::payout::Confirm>,
    /// `wx.config`'s arguments (JSON), when the provider gave a ticket.
    jsapi: Option<String>,
    /// The texts its script shows (JSON).
    messages: String,
}

/// WeChat's JS-SDK, which a page must load and configure before it may
/// ask for the user's confirmation.
pub const JSSDK_URL: &str = "https://res.wx.qq.com/open/js/jweixin-1.6.0.js";

/// The page where a user confirms receipt of a payout in WeChat: opened in
/// WeChat's browser, it loads and configures the JS-SDK (`wx.config` signed
/// with the official account's `jsapi_ticket` over this page's URL), and its
/// button hands the transfer's package to
/// `WeixinJSBridge.invoke('requestMerchantTransfer', ...)`. The payout id
/// (random, known to its user only) is what opens it; the page shows the
/// amount and status and nothing of the user. Only the payee's own WeChat
/// account can confirm the transfer.
#[get("/payouts/{id}/confirm")]
pub async fn payout_confirm_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    use crate::domain::payout::PayoutState;
    let l = Lang::of(&req);
    let not_found = || message(StatusCode::NOT_FOUND, l, "payout-missing");
    let Ok(pid) = id(crate::domain::ids::PayoutId::parse, &path) else {
        return Ok(not_found());
    };
    let Some(p) = state.wallets.payout(pid)? else {
        return Ok(not_found());
    };
    let (mch_id, app_id) = state.config.merchant_ids();
    let confirm = crate::domain::payout::confirm_of(&p, mch_id, app_id);
    let status = l.t(match p.state {
        PayoutState::Pending => "confirm-status-pending",
        PayoutState::Processing => "confirm-status-processing",
        PayoutState::AwaitingConfirmation if confirm.is_some() => "confirm-status-awaiting",
        PayoutState::AwaitingConfirmation => "confirm-status-pending",
        PayoutState::Succeeded => "confirm-status-succeeded",
        PayoutState::Failed => "confirm-status-failed",
        PayoutState::Cancelled => "confirm-status-cancelled",
    });
    let offset = state.config.payouts.day_offset_hours;
    let until = p.confirm_by.map_or(String::new(), |t| {
        l.fmt(
            "confirm-until",
            &[("date", Arg::Str(&l.date_time(t, offset)))],
        )
    });
    // The JS-SDK signs the page's URL as the browser has it.
    let jsapi = match (&confirm, &state.provider) {
        (Some(_), Some(provider)) => {
            let url = format!("{}{}", state.base_url, req.uri());
            match provider.jsapi_config(&url).await {
                Ok(c) => serde_json::to_string(&c).ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "no JS-SDK ticket for the confirmation page");
                    None
                }
            }
        }
        _ => None,
    };
    let page = ConfirmPage {
        l,
        amount: l.amount(p.amount),
        status,
        until,
        confirm,
        jsapi,
        messages: l.script_messages(
            &[
                "confirm-done",
                "confirm-later",
                "confirm-failed",
                "confirm-needs-wechat",
            ],
            &[],
        ),
    };
    Ok(html(StatusCode::OK, page.render()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_allows_its_own_scripts_by_hash_and_no_framing() {
        use base64::Engine;
        use sha2::Digest;
        let page = "<p>x</p><script>run(1)</script><div></div><script>\nrun(2);\n</script>";
        let csp = content_security_policy(page);
        let hash = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s.as_bytes()))
        };
        assert!(
            csp.contains(&format!(
                "script-src 'sha256-{}' 'sha256-{}';",
                hash("run(1)"),
                hash("\nrun(2);\n")
            )),
            "{csp}"
        );
        assert!(!csp.contains("script-src 'unsafe-inline'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(content_security_policy("<p>no scripts</p>").contains("script-src 'none';"));
        // WeChat's JS-SDK, where a page (from its template) loads it.
        let sdk = format!("<script src=\"{JSSDK_URL}\"></script><script>go()</script>");
        let csp = content_security_policy(&sdk);
        assert!(csp.contains(&format!("' {JSSDK_URL};")), "{csp}");
        assert!(!content_security_policy("<p>x</p>").contains("res.wx.qq.com"));
    }

    #[test]
    fn landing_pages_escape_every_value_and_carry_no_script() {
        let params = vec![
            (
                "<b>k</b>".to_string(),
                "<script>alert('x')</script>".to_string(),
            ),
            ("n".to_string(), "5".to_string()),
            ("nested".to_string(), r#"{"a":"\"q\" & <x>"}"#.to_string()),
        ];
        let html = render_landing_page(Lang::En, "/landing", &params).unwrap();
        assert!(html.starts_with("<!doctype html>"));
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"));
        assert!(html.contains("alert(&#39;x&#39;)"));
        assert!(html.contains("<td>5</td>"));
        assert!(html.contains("&#34;a&#34;"), "{html}");
        assert!(html.contains("<h1>/landing</h1>"));
        assert!(!html.contains("http"), "no external assets");
        let missing = render_message_page(Lang::ZhCn, "code-missing").unwrap();
        assert!(missing.contains("<html lang=\"zh-CN\">"), "{missing}");
        assert!(missing.contains("没有这个二维码"), "{missing}");
    }
}
