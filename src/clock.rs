//! The server's clock: every "now" of the server comes from here.
//!
//! Tests move it instead of sleeping: a server started with
//! `QRGATE_CLOCK_OFFSET_SECS` runs that many seconds ahead of the system
//! clock (read once; for tests, never set in production).

use std::sync::OnceLock;

fn offset_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("QRGATE_CLOCK_OFFSET_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(0, |s| s.saturating_mul(1000))
    })
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now()
        .timestamp_millis()
        .saturating_add(offset_ms())
}

/// Unix seconds.
pub fn now() -> i64 {
    now_ms().div_euclid(1000)
}

/// Today's UTC date, `YYYY-MM-DD`.
pub fn today() -> String {
    date_of(now())
}

/// The UTC date of unix second `ts`, `YYYY-MM-DD`.
pub fn date_of(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Unix second `ts` as RFC 3339 in UTC, to the second (`2026-12-06T13:00:00Z`).
pub fn rfc3339(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A calendar day (UTC) named in a request, validated once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day(chrono::NaiveDate);

impl Day {
    /// `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Day, String> {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Day)
            .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))
    }

    pub fn date(self) -> chrono::NaiveDate {
        self.0
    }
}

impl std::fmt::Display for Day {
    /// `YYYY-MM-DD`, the form storage keys use.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_once_and_print_as_keys() {
        assert_eq!(
            Day::parse("2026-12-06").map(|d| d.to_string()),
            Ok("2026-12-06".into())
        );
        assert!(Day::parse("2026-13-01").is_err());
        assert!(Day::parse("yesterday").is_err());
    }

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_562_000), "2026-12-06T13:00:00Z");
        assert_eq!(date_of(86_400 * 365), "1971-01-01");
        assert_eq!(date_of(1_796_562_000), "2026-12-06");
    }
}
