//! Scan codes: the pure rules. A code binds a landing page and its
//! parameters to a short string on one fixed path (`/s/{code}`).
//!
//! A code is 24 base64url characters (no padding) of 18 bytes: a random
//! 12-byte id followed by a 6-byte tag, the first bytes of
//! `blake3::keyed_hash(tag_key, id)`. The tag key derives from the data
//! dir's secret, so only this server makes codes whose tag checks, and a
//! forged or mistyped code is refused before any storage read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::UserId;

pub const ID_LEN: usize = 12;
pub const TAG_LEN: usize = 6;
/// Characters of a code: base64url of `ID_LEN + TAG_LEN` bytes.
pub const CODE_LEN: usize = 24;
/// Visitors remembered per code; `unique_visitors` stops growing there.
pub const MAX_VISITORS_PER_CODE: u64 = 10_000;
/// An expired or revoked code is forgotten this long afterwards (it then
/// answers `code_not_found`).
pub const RETENTION_SECONDS: i64 = 30 * 86_400;

/// The random part of a code: what storage keys use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CodeId(pub [u8; ID_LEN]);

impl CodeId {
    pub fn random() -> Self {
        CodeId(super::ids::random_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

fn tag(key: &[u8; 32], id: &CodeId) -> [u8; TAG_LEN] {
    let h = blake3::keyed_hash(key, &id.0);
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&h.as_bytes()[..TAG_LEN]);
    t
}

/// The text of a code: base64url(id || tag).
pub fn encode(key: &[u8; 32], id: &CodeId) -> String {
    let mut raw = [0u8; ID_LEN + TAG_LEN];
    raw[..ID_LEN].copy_from_slice(&id.0);
    raw[ID_LEN..].copy_from_slice(&tag(key, id));
    URL_SAFE_NO_PAD.encode(raw)
}

/// A code that is not one of ours: wrong length or alphabet, or a tag that
/// does not check. Nothing is read to find this out.
#[derive(Debug, PartialEq, Eq)]
pub struct Forged;

/// Parse a code and check its tag (constant time).
pub fn parse(key: &[u8; 32], s: &str) -> Result<CodeId, Forged> {
    if s.len() != CODE_LEN {
        return Err(Forged);
    }
    let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| Forged)?;
    let raw: [u8; ID_LEN + TAG_LEN] = raw.try_into().map_err(|_| Forged)?;
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&raw[..ID_LEN]);
    let id = CodeId(id);
    let want = tag(key, &id);
    let diff = want
        .iter()
        .zip(&raw[ID_LEN..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(id)
    } else {
        Err(Forged)
    }
}

/// The URL a code's QR image holds.
pub fn url(base: &str, code: &str) -> String {
    format!("{base}/s/{code}")
}

/// A landing page path: `/` then 1 to 64 of `a-z0-9_-/`.
pub fn valid_page(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    (1..=64).contains(&rest.len())
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-/".contains(&b))
}

/// First path segments the server itself answers: a path page may not take
/// one (the server serves path pages itself when no other site does).
pub const RESERVED_SEGMENTS: [&str; 8] =
    ["v1", "s", "j", "p", "healthz", "metrics", "payouts", "link"];

/// An absolute landing page: `http(s)://host[:port]/path`, no query, no
/// fragment, no user info, at most 512 characters. Answers its host.
pub fn absolute_page_host(p: &str) -> Option<String> {
    if p.len() > 512 || !(p.starts_with("https://") || p.starts_with("http://")) {
        return None;
    }
    let u = url::Url::parse(p).ok()?;
    if u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
        || p.contains('?')
        || p.contains('#')
    {
        return None;
    }
    u.host_str().map(str::to_ascii_lowercase)
}

/// Why a code's page is not where a visitor may be sent.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAllowed;

/// Where a scan sends a browser: the page (a path under `base`, or an
/// absolute page whose host is in `hosts`) with the code's parameters as
/// its query string (strings as they are, other values as compact JSON).
pub fn destination(
    page: &str,
    base: &str,
    hosts: &[String],
    params: &Map<String, Value>,
) -> Result<String, NotAllowed> {
    let target = if valid_page(page) {
        format!("{}{page}", base.trim_end_matches('/'))
    } else {
        let host = absolute_page_host(page).ok_or(NotAllowed)?;
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            return Err(NotAllowed);
        }
        page.to_string()
    };
    let mut u = url::Url::parse(&target).map_err(|_| NotAllowed)?;
    if !params.is_empty() {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            match v {
                Value::String(s) => q.append_pair(k, s),
                Value::Null => q.append_pair(k, ""),
                other => q.append_pair(k, &other.to_string()),
            };
        }
    }
    Ok(u.into())
}

/// The page must be one of the configured ones.
pub fn check_page(pages: &[String], page: &str) -> Result<(), String> {
    if pages.iter().any(|p| p == page) {
        Ok(())
    } else {
        Err(format!(
            "page must be one of the configured pages: {}",
            pages.join(", ")
        ))
    }
}

/// `params` must be a JSON object of at most `max_bytes` bytes as compact JSON.
pub fn check_params(params: Value, max_bytes: usize) -> Result<Map<String, Value>, String> {
    let Value::Object(map) = params else {
        return Err("params must be a JSON object".into());
    };
    let size = serde_json::to_vec(&map)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(format!(
            "params must be at most {max_bytes} bytes as compact JSON (it is {size})"
        ));
    }
    Ok(map)
}

/// A code bound to a page and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub code: String,
    pub page: String,
    pub params: Map<String, Value>,
    pub created_at: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Who created it: a user, or the operator (`None`).
    #[serde(default)]
    pub creator: Option<UserId>,
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Live,
    Expired,
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

impl Binding {
    /// Revocation wins over expiry.
    pub fn status(&self, now: i64) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if self.expires_at.is_some_and(|e| now >= e) {
            Status::Expired
        } else {
            Status::Live
        }
    }

    /// When the code may be forgotten: [`RETENTION_SECONDS`] after it
    /// expired or was revoked, whichever comes first; never for a live code
    /// without expiry.
    pub fn forget_at(&self) -> Option<i64> {
        let end = match (self.expires_at, self.revoked_at) {
            (None, None) => return None,
            (Some(e), None) => e,
            (None, Some(r)) => r,
            (Some(e), Some(r)) => e.min(r),
        };
        Some(end.saturating_add(RETENTION_SECONDS))
    }
}

/// Scans of one code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub scans: u64,
    /// Distinct visitors, at most [`MAX_VISITORS_PER_CODE`].
    pub unique: u64,
}

/// The visitor cookie's value: 22 base64url characters (16 bytes).
pub fn valid_visitor_cookie(v: &str) -> bool {
    v.len() == 22
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The cookie value for a visitor without one: a keyed hash of the client
/// address and User-Agent, so the visit that sets the cookie and the later
/// visits that send it back count as the same visitor.
pub fn visitor_cookie_for(key: &[u8; 32], ip: &str, user_agent: &str) -> String {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"addr\0");
    h.update(ip.as_bytes());
    h.update(b"\0");
    h.update(user_agent.as_bytes());
    URL_SAFE_NO_PAD.encode(&h.finalize().as_bytes()[..16])
}

/// What is stored of a visitor: a keyed hash of its cookie value.
pub fn visitor_hash(key: &[u8; 32], cookie: &str) -> [u8; 16] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"cookie\0");
    h.update(cookie.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Seconds from `now` to the start of the next business day, for a day that
/// starts at midnight `offset_hours` east of UTC.
pub fn secs_to_next_day(now: i64, offset_hours: i32) -> u64 {
    let local = now + i64::from(offset_hours) * 3600;
    (86_400 - local.rem_euclid(86_400)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: [u8; 32] = [3; 32];

    #[test]
    fn codes_round_trip_and_forgeries_fail() {
        let id = CodeId::random();
        let c = encode(&KEY, &id);
        assert_eq!(c.len(), CODE_LEN);
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(parse(&KEY, &c), Ok(id));
        assert_eq!(parse(&[4; 32], &c), Err(Forged), "another server's key");
        // Every single-character change is caught.
        for i in 0..c.len() {
            let mut b = c.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(parse(&KEY, std::str::from_utf8(&b).unwrap()), Err(Forged));
        }
        for bad in [
            "",
            "short",
            &"A".repeat(23),
            &"A".repeat(25),
            &"!".repeat(24),
        ] {
            assert_eq!(parse(&KEY, bad), Err(Forged), "{bad:?}");
        }
        // Multi-byte characters of the right byte length are refused too.
        assert_eq!(parse(&KEY, &"é".repeat(12)), Err(Forged));
    }

    #[test]
    fn destinations() {
        let mut params = Map::new();
        params.insert("campaign".into(), json!("spring sale & more"));
        params.insert("n".into(), json!(3));
        params.insert("tags".into(), json!(["a", "b"]));
        params.insert("none".into(), Value::Null);
        let hosts = vec!["shop.example.com".to_string()];
        assert_eq!(
            destination("/landing", "https://qr.example.com/", &hosts, &params).as_deref(),
            Ok("https://qr.example.com/landing?campaign=spring+sale+%26+more&n=3&none=&tags=%5B%22a%22%2C%22b%22%5D")
        );
        assert_eq!(
            destination("/landing", "http://h", &hosts, &Map::new()).as_deref(),
            Ok("http://h/landing")
        );
        assert_eq!(
            destination(
                "https://SHOP.example.com/promo",
                "http://h",
                &hosts,
                &Map::new()
            )
            .as_deref(),
            Ok("https://shop.example.com/promo")
        );
        for refused in [
            "https://evil.example.com/promo",
            "https://shop.example.com.evil.com/x",
            "https://user@shop.example.com/x",
            "https://shop.example.com/x?y=1",
            "https://shop.example.com/x#y",
            "javascript:alert(1)",
            "//shop.example.com/x",
            "/Landing",
        ] {
            assert_eq!(
                destination(refused, "http://h", &hosts, &params),
                Err(NotAllowed),
                "{refused}"
            );
        }
        assert_eq!(
            absolute_page_host("https://shop.example.com:8443/a/b").as_deref(),
            Some("shop.example.com")
        );
    }

    #[test]
    fn pages() {
        for ok in ["/landing", "/promo", "/a", "/shop/spring-2026_x"] {
            assert!(valid_page(ok), "{ok}");
        }
        let long = format!("/{}", "a".repeat(65));
        for bad in [
            "",
            "/",
            "landing",
            "/Landing",
            "/a b",
            "/a?b",
            "/é",
            long.as_str(),
        ] {
            assert!(!valid_page(bad), "{bad}");
        }
        let pages = vec!["/landing".to_string()];
        assert!(check_page(&pages, "/landing").is_ok());
        assert!(check_page(&pages, "/promo")
            .unwrap_err()
            .contains("/landing"));
    }

    #[test]
    fn params_must_be_a_small_object() {
        assert!(check_params(json!({"a": 1, "b": [1, 2]}), 100).is_ok());
        assert!(check_params(json!({}), 2).is_ok());
        assert!(check_params(json!([1]), 100)
            .unwrap_err()
            .contains("object"));
        assert!(check_params(json!("x"), 100).is_err());
        assert!(check_params(Value::Null, 100).is_err());
        let big = json!({ "k": "x".repeat(100) });
        assert!(check_params(big.clone(), 100)
            .unwrap_err()
            .contains("at most 100"));
        assert!(check_params(big, 110).is_ok());
    }

    #[test]
    fn status_revocation_wins() {
        let mut b = Binding {
            code: "c".into(),
            page: "/p".into(),
            params: Map::new(),
            created_at: 10,
            expires_at: Some(20),
            creator: None,
            revoked_at: None,
        };
        assert_eq!(b.status(19), Status::Live);
        assert_eq!(b.status(20), Status::Expired);
        b.revoked_at = Some(15);
        assert_eq!(b.status(16), Status::Revoked);
        assert_eq!(b.status(25), Status::Revoked);
        assert_eq!(b.forget_at(), Some(15 + RETENTION_SECONDS));
        b.revoked_at = None;
        assert_eq!(b.forget_at(), Some(20 + RETENTION_SECONDS));
        b.expires_at = None;
        assert_eq!(b.status(i64::MAX), Status::Live);
        assert_eq!(b.forget_at(), None);
    }

    #[test]
    fn visitors() {
        let c = visitor_cookie_for(&KEY, "10.0.0.1", "curl/8");
        assert!(valid_visitor_cookie(&c));
        assert_eq!(c, visitor_cookie_for(&KEY, "10.0.0.1", "curl/8"));
        assert_ne!(c, visitor_cookie_for(&KEY, "10.0.0.2", "curl/8"));
        assert_ne!(c, visitor_cookie_for(&[5; 32], "10.0.0.1", "curl/8"));
        assert!(!valid_visitor_cookie("short"));
        assert!(!valid_visitor_cookie(&"a;".repeat(11)));
        assert_ne!(visitor_hash(&KEY, "a"), visitor_hash(&KEY, "b"));
    }

    #[test]
    fn next_business_day() {
        // 2026-01-01T00:00:00Z is 08:00 in UTC+8: 16 h to go.
        assert_eq!(secs_to_next_day(1_767_225_600, 8), 16 * 3600);
        assert_eq!(secs_to_next_day(1_767_225_600, 0), 86_400);
    }
}
