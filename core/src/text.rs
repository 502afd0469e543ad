//! Text for people: what an API answered, or what went wrong, made fit for a session's `error`
//! and a "Sync now" panel. An API body can be a megabyte of HTML with escape sequences and
//! scripts in it; a message shows a short, clean summary of it, and the log row's `details` a
//! bounded excerpt.

/// The longest `error` a session shows, in characters.
pub const SENTENCE_MAX: usize = 500;
/// The longest excerpt of an API body that goes into a log row's `details`, in characters.
pub const EXCERPT_MAX: usize = 4096;
/// The longest summary of an API body inside a message, in characters.
pub const SUMMARY_MAX: usize = 200;

/// `s` with every control character (ESC, NUL, newlines, ...) a space, runs of white space one
/// space, and at most `max` characters (cut with an ellipsis).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut count = 0;
    let mut space = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        // A terminal escape sequence (ESC [ ... final letter) goes whole.
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
            continue;
        }
        if c.is_control() || c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if count >= max {
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// A message for a session's `error` or a log row's `message`: one clean line of at most
/// [`SENTENCE_MAX`] characters.
pub fn sentence(s: &str) -> String {
    clean(s, SENTENCE_MAX)
}

/// What an API body says, in a few words: its JSON `message` (or `error`) when it has one, else
/// its text without HTML tags, scripts and styles, cleaned and cut to [`SUMMARY_MAX`].
pub fn summarize_body(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["message", "error", "detail"] {
            if let Some(m) = v.get(key).and_then(serde_json::Value::as_str) {
                return clean(m, SUMMARY_MAX);
            }
        }
    }
    let text = if body.trim_start().starts_with('<') {
        strip_html(body)
    } else {
        body.to_owned()
    };
    clean(&text, SUMMARY_MAX)
}

/// A bounded excerpt of an API body for a log row's `details`: control characters made spaces.
pub fn excerpt(body: &str) -> String {
    clean(body, EXCERPT_MAX)
}

/// The text of an HTML document: tags dropped, and the content of `script` and `style` too.
fn strip_html(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        out.push(' ');
        let tag = &rest[open..];
        let lower: String = tag.chars().take(8).collect::<String>().to_ascii_lowercase();
        let skip_to = ["<script", "<style"]
            .iter()
            .find(|t| lower.starts_with(*t))
            .map(|t| format!("</{}", &t[1..]));
        rest = match skip_to {
            Some(end) => match tag.to_ascii_lowercase().find(&end) {
                Some(i) => &tag[i..],
                None => "",
            },
            None => tag,
        };
        rest = match rest.find('>') {
            Some(i) => &rest[i + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// The wait a `Retry-After` header asks for, in either form RFC 9110 allows: a number of
/// seconds, or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, and the obsolete RFC 850 and
/// asctime forms). A date in the past is no wait; anything else is `None`.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<std::time::Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| std::time::Duration::from_secs_f64(secs.min(1e9)));
    }
    let formats = [
        "%a, %d %b %Y %H:%M:%S GMT",
        "%A, %d-%b-%y %H:%M:%S GMT",
        "%a %b %e %H:%M:%S %Y",
    ];
    let at = formats.iter().find_map(|f| {
        chrono::NaiveDateTime::parse_from_str(value, f)
            .ok()
            .map(|t| t.and_utc())
    })?;
    let now: chrono::DateTime<chrono::Utc> = now.into();
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn clean_drops_control_characters_and_bounds_the_length() {
        assert_eq!(clean("a\u{1b}[31mred\u{1b}[0m\u{0}\n\n  b", 100), "ared b");
        assert_eq!(clean(&"x".repeat(600), 500).chars().count(), 501);
        assert!(clean(&"x".repeat(600), 500).ends_with('…'));
        assert_eq!(clean("  padded  ", 100), "padded");
    }

    #[test]
    fn an_html_body_is_summarised_without_tags_or_scripts() {
        let body = format!(
            "<!DOCTYPE html><html><head><style>p {{color: red}}</style><script>alert('x')</script></head>\
             <body><h1>400 Bad Request</h1>\u{1b}[2J{}</body></html>",
            "<p>filler</p>".repeat(100_000)
        );
        let s = summarize_body(&body);
        assert!(s.starts_with("400 Bad Request"), "{s}");
        assert!(
            !s.contains('<') && !s.contains("alert") && !s.contains('\u{1b}'),
            "{s}"
        );
        assert!(s.chars().count() <= SUMMARY_MAX + 1);
        assert!(excerpt(&body).chars().count() <= EXCERPT_MAX + 1);
        assert_eq!(
            summarize_body(r#"{"message":"Invalid\nvalue"}"#),
            "Invalid value"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:43 GMT", now),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after("Sun Nov  6 08:49:57 1994", now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("-1", now), None);
        assert_eq!(retry_after("soon", now), None);
    }
}
