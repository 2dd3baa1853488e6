//! The pages' languages: Simplified Chinese and English, one Fluent message
//! catalogue each (`locales/*/pages.ftl`, compiled in), the reader's
//! language from `?lang=` or `Accept-Language`, and dates and amounts
//! formatted for it. Problem+json stays English: it is read by programs.

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use std::sync::LazyLock;
use unic_langid::LanguageIdentifier;

const EN: &str = include_str!("../locales/en/pages.ftl");
const ZH_CN: &str = include_str!("../locales/zh-CN/pages.ftl");

/// A language the pages speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhCn,
}

type Bundle = FluentBundle<FluentResource>;

fn bundle(tag: &str, source: &str) -> Bundle {
    let id: LanguageIdentifier = tag.parse().unwrap_or_default();
    let resource = FluentResource::try_new(source.to_string()).unwrap_or_else(|(r, errors)| {
        tracing::error!(lang = tag, ?errors, "message catalogue has errors");
        r
    });
    let mut b = FluentBundle::new_concurrent(vec![id]);
    // Pages are HTML: no Unicode isolation marks around interpolated values.
    b.set_use_isolating(false);
    if let Err(errors) = b.add_resource(resource) {
        tracing::error!(lang = tag, ?errors, "message catalogue has duplicate ids");
    }
    b
}

static BUNDLES: LazyLock<[Bundle; 2]> =
    LazyLock::new(|| [bundle("en", EN), bundle("zh-CN", ZH_CN)]);

/// The `err-{code}` messages (the catalogues have the same ids; a test checks).
static ERROR_IDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    EN.lines()
        .filter_map(|l| l.split_once(" ="))
        .map(|(id, _)| id)
        .filter(|id| id.starts_with("err-"))
        .collect()
});

/// Unix second `ts` in the zone `offset_hours` east of UTC, formatted.
fn local(ts: i64, offset_hours: i32, format: &str) -> String {
    let tz = chrono::FixedOffset::east_opt(offset_hours * 3600);
    match (tz, chrono::DateTime::from_timestamp(ts, 0)) {
        (Some(tz), Some(t)) => t.with_timezone(&tz).format(format).to_string(),
        _ => String::new(),
    }
}

/// A value a message interpolates.
pub enum Arg<'a> {
    Str(&'a str),
    Num(u64),
}

impl Lang {
    /// The language tag (`<html lang>`).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    fn from_tag(tag: &str) -> Option<Lang> {
        let id: LanguageIdentifier = tag.trim().parse().ok()?;
        match id.language.as_str() {
            "zh" => Some(Lang::ZhCn),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// `?lang=` when it names a language the pages speak, else the first
    /// of `Accept-Language` (by quality) that they speak, else English.
    /// Every Chinese tag reads the Simplified Chinese pages.
    pub fn negotiate(query_lang: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(l) = query_lang.and_then(Lang::from_tag) {
            return l;
        }
        // `tag;q=0.8` entries, the best quality first (ties keep their order).
        let mut ranked: Vec<(f32, &str)> = accept_language
            .unwrap_or_default()
            .split(',')
            .take(32)
            .filter_map(|entry| {
                let mut parts = entry.split(';');
                let tag = parts.next()?.trim();
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
                (q > 0.0).then_some((q, tag))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked
            .iter()
            .find_map(|(_, tag)| Lang::from_tag(tag))
            .unwrap_or(Lang::En)
    }

    /// The reader's language of a page request.
    pub fn of(req: &actix_web::HttpRequest) -> Lang {
        let query = url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == "lang")
            .map(|(_, v)| v.into_owned());
        let accept = req
            .headers()
            .get(actix_web::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        Lang::negotiate(query.as_deref(), accept)
    }

    fn bundle(self) -> &'static Bundle {
        &BUNDLES[match self {
            Lang::En => 0,
            Lang::ZhCn => 1,
        }]
    }

    /// A message (its id when the catalogue lacks it, so a gap shows).
    pub fn t(self, id: &str) -> String {
        self.fmt(id, &[])
    }

    /// A message with its arguments.
    pub fn fmt(self, id: &str, args: &[(&str, Arg)]) -> String {
        let b = self.bundle();
        let Some(pattern) = b.get_message(id).and_then(|m| m.value()) else {
            return id.to_string();
        };
        let mut fa = FluentArgs::new();
        for (k, v) in args {
            match v {
                Arg::Str(s) => fa.set(*k, FluentValue::from(*s)),
                Arg::Num(n) => fa.set(*k, FluentValue::from(*n)),
            }
        }
        let mut errors = vec![];
        let out = b.format_pattern(pattern, Some(&fa), &mut errors);
        if !errors.is_empty() {
            tracing::warn!(lang = self.tag(), id, ?errors, "message formatting failed");
        }
        out.into_owned()
    }

    /// The messages a page's script shows, as a JSON object (id -> text):
    /// `ids`, `extra` (already formatted), and every `err-{code}` (the
    /// API's refusals as a page words them).
    pub fn script_messages(self, ids: &[&str], extra: &[(&str, String)]) -> String {
        let mut m = serde_json::Map::new();
        for id in ids.iter().chain(ERROR_IDS.iter()) {
            m.insert((*id).to_string(), self.t(id).into());
        }
        for (k, v) in extra {
            m.insert((*k).to_string(), v.clone().into());
        }
        serde_json::Value::Object(m).to_string()
    }

    /// A day, in the business time zone (`offset_hours` east of UTC):
    /// "13 Dec 2026", "2026年12月13日".
    pub fn date(self, ts: i64, offset_hours: i32) -> String {
        local(
            ts,
            offset_hours,
            match self {
                Lang::En => "%-d %b %Y",
                Lang::ZhCn => "%Y年%-m月%-d日",
            },
        )
    }

    /// A day and time in the business time zone: "13 Dec 2026 18:05",
    /// "2026年12月13日 18:05".
    pub fn date_time(self, ts: i64, offset_hours: i32) -> String {
        local(
            ts,
            offset_hours,
            match self {
                Lang::En => "%-d %b %Y %H:%M",
                Lang::ZhCn => "%Y年%-m月%-d日 %H:%M",
            },
        )
    }

    /// A day without its year: "13 Dec", "12月13日".
    pub fn short_date(self, ts: i64, offset_hours: i32) -> String {
        local(
            ts,
            offset_hours,
            match self {
                Lang::En => "%-d %b",
                Lang::ZhCn => "%-m月%-d日",
            },
        )
    }

    /// A card's validity line: "该二维码7天内(12月13日前)有效".
    pub fn validity(self, now: i64, expires_at: i64, offset_hours: i32) -> String {
        let days = (expires_at - now + 86_399).div_euclid(86_400);
        if days <= 1
            && self.short_date(now, offset_hours) == self.short_date(expires_at, offset_hours)
        {
            return self.t("card-valid-today");
        }
        self.fmt(
            "card-valid",
            &[
                ("days", Arg::Num(u64::try_from(days.max(1)).unwrap_or(1))),
                ("date", Arg::Str(&self.short_date(expires_at, offset_hours))),
            ],
        )
    }

    /// An amount in fen: "¥12.30" in both languages.
    pub fn amount(self, fen: u64) -> String {
        format!("¥{}.{:02}", fen / 100, fen % 100)
    }
}

/// The ids of a catalogue's messages (a message starts a line: `id = ...`).
#[cfg(test)]
fn ids(source: &str) -> std::collections::BTreeSet<String> {
    assert!(
        FluentResource::try_new(source.to_string()).is_ok(),
        "parses"
    );
    source
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|l| l.split_once(" =").map(|(id, _)| id.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_parse_and_have_the_same_messages() {
        let (en, zh) = (ids(EN), ids(ZH_CN));
        assert!(en.len() > 40, "{}", en.len());
        assert_eq!(
            en.symmetric_difference(&zh).collect::<Vec<_>>(),
            Vec::<&String>::new()
        );
        for id in &en {
            for l in [Lang::En, Lang::ZhCn] {
                assert_ne!(&l.t(id), id, "{id} in {l:?}");
            }
        }
    }

    #[test]
    fn the_readers_language() {
        use Lang::*;
        for (q, accept, want) in [
            (None, None, En),
            (None, Some("zh-CN,zh;q=0.9,en;q=0.8"), ZhCn),
            (None, Some("zh_CN"), ZhCn),
            (None, Some("en-US,en;q=0.9,zh;q=0.8"), En),
            (None, Some("fr-FR,zh-TW;q=0.8,en;q=0.5"), ZhCn),
            (None, Some("en;q=0.1,zh-Hans;q=0.9"), ZhCn),
            (None, Some("de, fr"), En),
            (Some("zh"), Some("en"), ZhCn),
            (Some("en"), Some("zh-CN"), En),
            (Some("xx"), Some("zh-CN"), ZhCn),
            (Some("<script>"), None, En),
            (None, Some("zh;q=0, en"), En),
            (None, Some("*"), En),
        ] {
            assert_eq!(Lang::negotiate(q, accept), want, "{q:?} {accept:?}");
        }
    }

    #[test]
    fn messages_dates_and_amounts() {
        let args = [("count", Arg::Num(1)), ("limit", Arg::Num(1))];
        assert_eq!(Lang::En.fmt("invite-members", &args), "1 of 1 member");
        let args = [("count", Arg::Num(3)), ("limit", Arg::Num(500))];
        assert_eq!(Lang::En.fmt("invite-members", &args), "3 of 500 members");
        assert_eq!(Lang::ZhCn.fmt("invite-members", &args), "3/500 位成员");
        let name = [("name", Arg::Str("徒步小组 <Hikers>"))];
        assert_eq!(
            Lang::ZhCn.fmt("invite-title", &name),
            "加入「徒步小组 <Hikers>」"
        );
        assert_eq!(Lang::En.t("no-such-message"), "no-such-message");
        // 2026-12-12 20:00 UTC is the 13th in UTC+8
        let ts = 1_797_105_600;
        assert_eq!(Lang::En.date(ts, 8), "13 Dec 2026");
        assert_eq!(Lang::ZhCn.date(ts, 8), "2026年12月13日");
        assert_eq!(Lang::En.date(ts, 0), "12 Dec 2026");
        assert_eq!(Lang::ZhCn.amount(1230), "¥12.30");
        let now = ts - 7 * 86_400 + 3600;
        assert_eq!(
            Lang::ZhCn.validity(now, ts, 8),
            "该二维码7天内(12月13日前)有效"
        );
        assert_eq!(
            Lang::En.validity(now, ts, 8),
            "Valid for 7 days (until 13 Dec)"
        );
        assert_eq!(
            Lang::En.validity(ts - 86_000, ts, 8),
            "Valid for 1 day (until 13 Dec)"
        );
        assert_eq!(Lang::ZhCn.validity(ts - 60, ts, 8), "该二维码仅今天有效");
        assert_eq!(Lang::En.amount(5), "¥0.05");
        let js: serde_json::Value =
            serde_json::from_str(&Lang::ZhCn.script_messages(&["failed"], &[("x", "y".into())]))
                .unwrap();
        assert_eq!(js["failed"], "出错了，请重试。");
        assert_eq!(js["err-group_full"], "群已满员。");
        assert_eq!(js["x"], "y");
    }
}
