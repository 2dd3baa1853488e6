//! The landing pages browsers get at `/s/{code}`: small self-contained HTML
//! (no external assets, no script). Every value is escaped. Keep the page of
//! a code in [`render_code_page`], so a template engine can replace it.

use crate::domain::code::Binding;
use serde_json::Value;

/// Escape text for HTML element content and double- or single-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;\
padding:0 1rem;color:#222;line-height:1.4}h1{font-size:1.4rem}table{border-collapse:collapse;\
width:100%}th,td{text-align:left;padding:.4rem;border-bottom:1px solid #ddd;vertical-align:top;\
word-break:break-word}th{width:35%;color:#555;font-weight:600}.muted{color:#777;font-size:.9rem}";

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><style>{STYLE}</style></head>\n<body>{body}</body></html>\n",
        escape(title)
    )
}

/// The page a live code lands on: its page name and its parameters.
pub fn render_code_page(binding: &Binding) -> String {
    let mut rows = String::new();
    for (k, v) in &binding.params {
        let shown = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>\n",
            escape(k),
            escape(&shown)
        ));
    }
    let table = if rows.is_empty() {
        "<p class=\"muted\">No parameters.</p>".to_string()
    } else {
        format!("<table>\n{rows}</table>")
    };
    let body = format!(
        "<main data-page=\"{page}\"><h1>{page}</h1>\n{table}\n<p class=\"muted\">Code {code}</p></main>",
        page = escape(&binding.page),
        code = escape(&binding.code),
    );
    document(&binding.page, &body)
}

/// The page for a code that does not resolve (unknown, expired, revoked).
pub fn render_missing_page(title: &str, message: &str) -> String {
    let body = format!(
        "<main><h1>{}</h1>\n<p>{}</p></main>",
        escape(title),
        escape(message)
    );
    document(title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_value_is_escaped() {
        let params = json!({
            "<b>k</b>": "<script>alert('x')</script>",
            "n": 5,
            "nested": {"a": "\"q\" & <x>"},
        });
        let b = Binding {
            code: "AAAA".into(),
            page: "/landing".into(),
            params: params.as_object().unwrap().clone(),
            created_at: 0,
            expires_at: None,
            creator: None,
            revoked_at: None,
        };
        let html = render_code_page(&b);
        assert!(html.starts_with("<!doctype html>"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;k&lt;/b&gt;"));
        assert!(html.contains("<td>5</td>"));
        assert!(
            html.contains("&quot;a&quot;"),
            "non-strings as JSON, escaped"
        );
        assert!(html.contains("&amp; &lt;x&gt;"));
        assert!(html.contains("<h1>/landing</h1>"));
        assert!(!html.contains("http"), "no external assets");
        let missing = render_missing_page("Not found", "<x>");
        assert!(missing.contains("&lt;x&gt;"));
    }
}
