//! Timeline events of one employee's working life, from the text of an `/employments` payload
//! as PostgreSQL prints a `jsonb` (`payload::text`): hired and rehired, employment ended,
//! contract started, renewed, changed and ended, salary changed, hours changed.
//!
//! Values are copied into `details` exactly as the payload text has them (`2846.50` stays
//! `2846.50`), so this works on the text itself instead of a `serde_json::Value`, whose numbers
//! are `f64`. Wage arithmetic (`amount`, `percent`) is left to PostgreSQL's `numeric`: the
//! events carry the old and new wage as they are written, and `employes_timeline_events` adds
//! both figures.
//!
//! Rules (the SQL contract of `employes_timeline`):
//! - employments are the objects of `data` (anything else there is skipped), numbered per
//!   employee `n = 1, 2, ...` by start date (no date last), then id, then payload order;
//! - each has `salary`, `hours` and `contracts` periods (objects only), numbered
//!   `k = 1, 2, ...` within their employment by start date (no date first), then id, then
//!   payload order; each period is compared with the one before it;
//! - `n = 1` is `hired`, later ones `rehired`; an end date adds `terminated`;
//! - contract `k = 1` is `contract_started`, later ones `contract_renewed` (titled "Contract
//!   changed to ..." when the duration differs); the last contract with an end date adds
//!   `contract_ended`;
//! - salary and hours periods after the first are `salary_changed` and `hours_changed`;
//! - an event without a date (none, malformed, impossible or the `0001-01-01` sentinel) is left
//!   out.
//!
//! Ids and text are compared byte by byte: the same order whatever the database's collation.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::NaiveDate;

use crate::classify::parse_api_date_str;

/// One event computed from an `/employments` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmploymentEvent {
    pub event_date: NaiveDate,
    pub event_type: &'static str,
    pub title: String,
    /// A JSON object; its values are copied verbatim from the payload text.
    pub details: String,
    /// Unique per employee and `event_type`: `hired` and `rehired` share `employment:...`.
    pub event_key: String,
    /// `salary_changed` only: the old and new wage (month wage, or hour wage when the earlier
    /// period has no month wage) as the payload writes them; `None` when not a number.
    pub old_wage: Option<String>,
    pub new_wage: Option<String>,
}

/// The payload text is not JSON.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("not valid JSON at byte {at}: {what}")]
pub struct JsonError {
    pub at: usize,
    pub what: &'static str,
}

/// Computes the events of one `/employments` payload (the text of a `jsonb`, or any JSON).
pub fn employment_events(payload: &str) -> Result<Vec<EmploymentEvent>, JsonError> {
    let doc = Doc::parse(payload)?;
    let mut out = Vec::new();
    let Some(data) = doc.root().get("data") else {
        return Ok(out);
    };
    let mut employments = Vec::new();
    for (pos, item) in data.elements().enumerate() {
        if item.is_object() {
            employments.push(Item::new(item, pos, Order::NoDateLast));
        }
    }
    sort_items(&mut employments);
    for (i, e) in employments.iter().enumerate() {
        let n = i + 1;
        let id_text = e.id.as_deref().unwrap_or("");
        let employment_details = format!(
            r#"{{"employment_id": {}, "start_date": {}, "end_date": {}}}"#,
            e.raw("id"),
            e.raw("start_date"),
            e.raw("end_date")
        );
        if let Some(sd) = e.start {
            out.push(plain(
                sd,
                if n == 1 { "hired" } else { "rehired" },
                if n == 1 { "Hired" } else { "Rehired" },
                employment_details.clone(),
                format!("employment:{id_text}:{n}"),
            ));
        }
        if let Some(ed) = e.end {
            out.push(plain(
                ed,
                "terminated",
                "Employment ended",
                employment_details,
                format!("employment-end:{id_text}:{n}"),
            ));
        }
        let employment_id: Cow<str> = match &e.id {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(n.to_string()),
        };
        for kind in ["salary", "hours", "contracts"] {
            let mut periods = Vec::new();
            if let Some(list) = e.fields.get(kind) {
                for (pos, p) in list.elements().enumerate() {
                    if p.is_object() {
                        periods.push(Item::new(p, pos, Order::NoDateFirst));
                    }
                }
            }
            sort_items(&mut periods);
            let count = periods.len();
            for (j, p) in periods.iter().enumerate() {
                let k = j + 1;
                let prev = j.checked_sub(1).map(|i| &periods[i]);
                let key = |prefix: &str| {
                    format!(
                        "{prefix}:{employment_id}:{}:{k}",
                        p.id.as_deref().unwrap_or("")
                    )
                };
                match kind {
                    "contracts" => {
                        if let Some(sd) = p.start {
                            let title = match prev {
                                None => "Contract started".to_string(),
                                Some(prev)
                                    if prev.text("contract_duration")
                                        != p.text("contract_duration") =>
                                {
                                    format!(
                                        "Contract changed to {}",
                                        p.text("contract_duration").as_deref().unwrap_or("unknown")
                                    )
                                }
                                Some(_) => "Contract renewed".to_string(),
                            };
                            out.push(EmploymentEvent {
                                title,
                                ..plain(
                                    sd,
                                    if k == 1 { "contract_started" } else { "contract_renewed" },
                                    "",
                                    format!(
                                        r#"{{"contract_id": {}, "contract_duration": {}, "previous_contract_duration": {}, "start_date": {}, "end_date": {}}}"#,
                                        p.raw("id"),
                                        p.raw("contract_duration"),
                                        prev.map_or("null", |x| x.raw("contract_duration")),
                                        p.raw("start_date"),
                                        p.raw("end_date")
                                    ),
                                    key("contract"),
                                )
                            });
                        }
                        if let (true, Some(ed)) = (k == count, p.end) {
                            out.push(plain(
                                ed,
                                "contract_ended",
                                "Contract ended",
                                format!(
                                    r#"{{"contract_id": {}, "contract_duration": {}, "end_date": {}}}"#,
                                    p.raw("id"),
                                    p.raw("contract_duration"),
                                    p.raw("end_date")
                                ),
                                key("contract-end"),
                            ));
                        }
                    }
                    "salary" => {
                        let (Some(prev), Some(sd)) = (prev, p.start) else {
                            continue;
                        };
                        let prev_month = prev.number("month_wage");
                        let old_wage = prev_month.or_else(|| prev.number("hour_wage"));
                        let new_wage = if prev_month.is_some() {
                            p.number("month_wage")
                        } else {
                            p.number("hour_wage")
                        };
                        out.push(EmploymentEvent {
                            old_wage: old_wage.map(str::to_string),
                            new_wage: new_wage.map(str::to_string),
                            ..plain(
                                sd,
                                "salary_changed",
                                "Salary changed",
                                format!(
                                    r#"{{"old_month_wage": {}, "new_month_wage": {}, "old_hour_wage": {}, "new_hour_wage": {}, "salary_id": {}}}"#,
                                    prev.raw("month_wage"),
                                    p.raw("month_wage"),
                                    prev.raw("hour_wage"),
                                    p.raw("hour_wage"),
                                    p.raw("id")
                                ),
                                key("salary"),
                            )
                        });
                    }
                    _ => {
                        let (Some(prev), Some(sd)) = (prev, p.start) else {
                            continue;
                        };
                        out.push(plain(
                            sd,
                            "hours_changed",
                            "Hours changed",
                            format!(
                                r#"{{"old_hours_per_week": {}, "new_hours_per_week": {}, "old_days_per_week": {}, "new_days_per_week": {}, "employee_type": {}, "hours_id": {}}}"#,
                                prev.raw("hours_per_week"),
                                p.raw("hours_per_week"),
                                prev.raw("days_per_week"),
                                p.raw("days_per_week"),
                                p.raw("employee_type"),
                                p.raw("id")
                            ),
                            key("hours"),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn plain(
    event_date: NaiveDate,
    event_type: &'static str,
    title: &str,
    details: String,
    event_key: String,
) -> EmploymentEvent {
    EmploymentEvent {
        event_date,
        event_type,
        title: title.to_string(),
        details,
        event_key,
        old_wage: None,
        new_wage: None,
    }
}

/// What an employee's stored employment events need when its `/employments` payload changes
/// from one whose events are `old` to one whose events are `new` (both by `employment_events`,
/// so the stored rows are `old`'s): the events to insert or update (new ones, and ones whose
/// date, title, details or wages differ; `employes_timeline_details` computes the stored
/// details from these alone) and the `(event_type, event_key)` of the ones to delete. An event
/// is identified by its type and key, as in `employes_timeline`'s unique index. A raise adds one
/// salary event to an employee's history and changes none of the others: one row to write
/// instead of the employee's whole timeline.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventDelta {
    pub upsert: Vec<EmploymentEvent>,
    /// Sorted.
    pub gone: Vec<(&'static str, String)>,
}

pub fn event_delta(old: Vec<EmploymentEvent>, new: Vec<EmploymentEvent>) -> EventDelta {
    let mut old: HashMap<(&'static str, String), EmploymentEvent> = old
        .into_iter()
        .map(|e| ((e.event_type, e.event_key.clone()), e))
        .collect();
    let mut upsert = Vec::new();
    for e in new {
        if old.remove(&(e.event_type, e.event_key.clone())).as_ref() != Some(&e) {
            upsert.push(e);
        }
    }
    let mut gone: Vec<_> = old.into_keys().collect();
    gone.sort_unstable();
    EventDelta { upsert, gone }
}

/// The text PostgreSQL prints for this value as a `jsonb` (`payload::jsonb::text`), which is
/// what `employment_events` is defined on: keys ordered as `jsonb` stores them (shorter first,
/// then byte order; a duplicate key was already dropped by the parser, the last one kept, as
/// `jsonb` does), `": "` and `", "` between items, strings escaped as `jsonb` escapes them.
/// `None` when a number is not written as PostgreSQL's `numeric` prints it (an exponent, a
/// negative zero): the caller then lets PostgreSQL print the stored payload. Lets a sync
/// compute the events of the payloads it has just written without reading them back.
pub fn jsonb_text(v: &serde_json::Value) -> Option<String> {
    let mut out = String::new();
    write_jsonb(v, &mut out)?;
    Some(out)
}

fn write_jsonb(v: &serde_json::Value, out: &mut String) -> Option<()> {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let text = n.to_string();
            if !prints_as_numeric(&text) {
                return None;
            }
            out.push_str(&text);
        }
        Value::String(s) => write_jsonb_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb_string(key, out);
                out.push_str(": ");
                write_jsonb(value, out)?;
            }
            out.push('}');
        }
    }
    Some(())
}

/// Whether `numeric` prints this JSON number exactly as written: no exponent and no negative
/// zero (JSON has no leading zeros, `+` or bare `.`, and `numeric` keeps trailing zeros).
fn prints_as_numeric(text: &str) -> bool {
    let digits = text.strip_prefix('-');
    let negative = digits.is_some();
    let digits = digits.unwrap_or(text);
    digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !(negative && digits.bytes().all(|b| b == b'0' || b == b'.'))
}

/// A string as `jsonb` prints it: `"` and `\\` escaped, the usual short escapes, other control
/// characters as `\u00xx`, everything else as is.
fn write_jsonb_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Where items without a start date go.
#[derive(Clone, Copy)]
enum Order {
    NoDateFirst,
    NoDateLast,
}

/// An employment or a period: its fields, and what it is ordered by.
struct Item<'a> {
    fields: Json<'a>,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    /// `id` as text (`->>`): `None` for a missing id or JSON null.
    id: Option<Cow<'a, str>>,
    pos: usize,
    order: Order,
}

impl<'a> Item<'a> {
    fn new(fields: Json<'a>, pos: usize, order: Order) -> Item<'a> {
        let date = |k: &str| fields.get(k).and_then(Json::date);
        let (start, end) = (date("start_date"), date("end_date"));
        let id = fields.get("id").and_then(|v| v.text());
        Item {
            start,
            end,
            id,
            fields,
            pos,
            order,
        }
    }

    /// The value's text as it is in the payload, or `null` when absent.
    fn raw(&self, key: &str) -> &'a str {
        self.fields.get(key).map_or("null", |v| v.raw())
    }

    /// `->>`: the value as text, `None` for absent or JSON null.
    fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        self.fields.get(key).and_then(|v| v.text())
    }

    /// The value's text when it is a JSON number.
    fn number(&self, key: &str) -> Option<&'a str> {
        self.fields
            .get(key)
            .filter(|v| v.is_number())
            .map(|v| v.raw())
    }
}

fn sort_items(items: &mut [Item]) {
    items.sort_by(|a, b| {
        let dates = match (a.start, b.start) {
            (Some(x), Some(y)) => x.cmp(&y),
            (None, None) => Ordering::Equal,
            (None, Some(_)) => match a.order {
                Order::NoDateFirst => Ordering::Less,
                Order::NoDateLast => Ordering::Greater,
            },
            (Some(_), None) => match a.order {
                Order::NoDateFirst => Ordering::Greater,
                Order::NoDateLast => Ordering::Less,
            },
        };
        // Ids ascending, missing ids last (SQL's default NULLS LAST), then payload order.
        let ids = match (&a.id, &b.id) {
            (Some(x), Some(y)) => x.as_bytes().cmp(y.as_bytes()),
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
        };
        dates.then(ids).then(a.pos.cmp(&b.pos))
    });
}

/// A JSON text read once into a tree of spans: every value knows where it is in the text, its
/// key (in an object) and its first child and next sibling. Built without recursion, so depth
/// costs no stack.
struct Doc<'a> {
    text: &'a str,
    nodes: Vec<Node>,
}

const NONE: u32 = u32::MAX;

struct Node {
    start: u32,
    end: u32,
    /// The key's literal (with quotes) when the value is an object member.
    key: (u32, u32),
    first_child: u32,
    next: u32,
}

/// One value of a [`Doc`].
#[derive(Clone, Copy)]
struct Json<'a> {
    doc: &'a Doc<'a>,
    idx: u32,
}

impl<'a> Doc<'a> {
    fn parse(text: &'a str) -> Result<Doc<'a>, JsonError> {
        if text.len() >= NONE as usize {
            return Err(JsonError {
                at: 0,
                what: "text too long",
            });
        }
        let mut s = Scanner { text, at: 0 };
        let mut nodes: Vec<Node> = Vec::with_capacity(text.len() / 16);
        // Open containers: (node, its last child so far, is an object).
        let mut open: Vec<(u32, u32, bool)> = Vec::new();
        let mut key = (0, 0);
        s.ws();
        loop {
            let idx = nodes.len() as u32;
            nodes.push(Node {
                start: s.at as u32,
                end: 0,
                key,
                first_child: NONE,
                next: NONE,
            });
            if let Some((parent, last, _)) = open.last_mut() {
                if *last == NONE {
                    nodes[*parent as usize].first_child = idx;
                } else {
                    nodes[*last as usize].next = idx;
                }
                *last = idx;
            }
            match s.peek() {
                Some(c @ (b'{' | b'[')) => {
                    s.at += 1;
                    s.ws();
                    let is_object = c == b'{';
                    if !s.eat(if is_object { b'}' } else { b']' }) {
                        open.push((idx, NONE, is_object));
                        if is_object {
                            key = s.key()?;
                        }
                        s.ws();
                        continue;
                    }
                }
                Some(b'"') => s.string()?,
                Some(_) => s.scalar()?,
                None => return Err(s.err("unexpected end")),
            }
            nodes[idx as usize].end = s.at as u32;
            // After a complete value: close containers, or go on to the next element.
            loop {
                let Some(&(node, _, is_object)) = open.last() else {
                    s.ws();
                    if s.at != text.len() {
                        return Err(s.err("text after the value"));
                    }
                    return Ok(Doc { text, nodes });
                };
                s.ws();
                if s.eat(b',') {
                    if is_object {
                        key = s.key()?;
                    }
                    s.ws();
                    break;
                }
                if s.eat(if is_object { b'}' } else { b']' }) {
                    nodes[node as usize].end = s.at as u32;
                    open.pop();
                    continue;
                }
                return Err(s.err(if is_object {
                    "expected ',' or '}'"
                } else {
                    "expected ',' or ']'"
                }));
            }
        }
    }

    fn root(&'a self) -> Json<'a> {
        Json { doc: self, idx: 0 }
    }
}

impl<'a> Json<'a> {
    fn node(&self) -> &'a Node {
        &self.doc.nodes[self.idx as usize]
    }

    /// The value's text, exactly as written.
    fn raw(&self) -> &'a str {
        let n = self.node();
        &self.doc.text[n.start as usize..n.end as usize]
    }

    fn first(&self) -> u8 {
        self.doc.text.as_bytes()[self.node().start as usize]
    }

    fn is_number(&self) -> bool {
        matches!(self.first(), b'-' | b'0'..=b'9')
    }

    fn is_object(&self) -> bool {
        self.first() == b'{'
    }

    fn children(&self) -> impl Iterator<Item = Json<'a>> + 'a {
        let doc = self.doc;
        std::iter::successors(
            Some(self.node().first_child).filter(|&i| i != NONE),
            move |&i| Some(doc.nodes[i as usize].next).filter(|&i| i != NONE),
        )
        .map(move |idx| Json { doc, idx })
    }

    /// Its elements if it is an array; nothing otherwise.
    fn elements(&self) -> impl Iterator<Item = Json<'a>> + 'a {
        let is_array = self.first() == b'[';
        self.children().filter(move |_| is_array)
    }

    /// `->`: the member with this key if it is an object (the last one, as `jsonb` keeps).
    fn get(&self, key: &str) -> Option<Json<'a>> {
        if !self.is_object() {
            return None;
        }
        self.children().filter(|m| m.key_is(key)).last()
    }

    /// Whether its key (in an object) is `key`, which has no backslash. Unescapes only a key
    /// that could match: an escape makes the literal longer than what it stands for.
    fn key_is(&self, key: &str) -> bool {
        let (start, end) = self.node().key;
        let lit = &self.doc.text[start as usize..end as usize];
        let inner = &lit[1..lit.len() - 1];
        match inner.len().cmp(&key.len()) {
            Ordering::Less => false,
            Ordering::Equal => inner == key,
            Ordering::Greater => inner.contains('\\') && self.key() == key,
        }
    }

    /// Its key, unescaped, when it is an object member.
    fn key(&self) -> Cow<'a, str> {
        let (start, end) = self.node().key;
        unescape(&self.doc.text[start as usize..end as usize])
    }

    /// `->>`: strings unescaped, `null` as `None`, anything else as written.
    fn text(&self) -> Option<Cow<'a, str>> {
        match self.first() {
            b'"' => Some(unescape(self.raw())),
            b'n' => None,
            _ => Some(Cow::Borrowed(self.raw())),
        }
    }

    /// An API date (see `classify::parse_api_date_str`).
    fn date(self) -> Option<NaiveDate> {
        if self.first() != b'"' {
            return None;
        }
        parse_api_date_str(&unescape(self.raw()))
    }
}

/// The content of a JSON string literal (quotes included in `lit`, already validated).
fn unescape(lit: &str) -> Cow<'_, str> {
    let inner = &lit[1..lit.len() - 1];
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex = |chars: &mut std::str::Chars| {
                    let h: String = chars.by_ref().take(4).collect();
                    u32::from_str_radix(&h, 16).unwrap_or(0xFFFD)
                };
                let hi = hex(&mut chars);
                let code = if (0xD800..0xDC00).contains(&hi) && chars.as_str().starts_with("\\u") {
                    chars.next();
                    chars.next();
                    let lo = hex(&mut chars);
                    0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    hi
                };
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Cow::Owned(out)
}

/// The lexical part of the JSON reader: strings, numbers and literals.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl Scanner<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError { at: self.at, what }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn string(&mut self) -> Result<(), JsonError> {
        if !self.eat(b'"') {
            return Err(self.err("expected a string"));
        }
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            self.at += 1;
            match b {
                b'"' => return Ok(()),
                b'\\' => {
                    match bytes.get(self.at) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                        Some(b'u')
                            if bytes
                                .get(self.at + 1..self.at + 5)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            self.at += 4;
                        }
                        _ => return Err(self.err("bad escape in a string")),
                    }
                    self.at += 1;
                }
                0..=0x1f => return Err(self.err("control character in a string")),
                _ => {}
            }
        }
        Err(self.err("unterminated string"))
    }

    fn scalar(&mut self) -> Result<(), JsonError> {
        let rest = &self.text[self.at..];
        for lit in ["true", "false", "null"] {
            if rest.starts_with(lit) {
                self.at += lit.len();
                return Ok(());
            }
        }
        // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        let bytes = self.text.as_bytes();
        let digits = |s: &mut Self| {
            let from = s.at;
            while bytes.get(s.at).is_some_and(u8::is_ascii_digit) {
                s.at += 1;
            }
            s.at > from
        };
        self.eat(b'-');
        if self.eat(b'0') {
        } else if !digits(self) {
            return Err(self.err("expected a value"));
        }
        if self.eat(b'.') && !digits(self) {
            return Err(self.err("expected digits after '.'"));
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !digits(self) {
                return Err(self.err("expected digits in an exponent"));
            }
        }
        Ok(())
    }

    /// A member's key and colon; returns the key's literal.
    fn key(&mut self) -> Result<(u32, u32), JsonError> {
        self.ws();
        let start = self.at;
        self.string()?;
        let end = self.at;
        self.ws();
        if !self.eat(b':') {
            return Err(self.err("expected ':'"));
        }
        Ok((start as u32, end as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(payload: &str) -> Vec<EmploymentEvent> {
        employment_events(payload).expect("valid payload")
    }

    fn summary(evs: &[EmploymentEvent]) -> Vec<String> {
        evs.iter()
            .map(|e| {
                format!(
                    "{} {} {} | {}",
                    e.event_date, e.event_type, e.event_key, e.title
                )
            })
            .collect()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn event_delta_writes_only_what_changed() {
        let before = r#"{"data": [{"id": "m1", "start_date": "2019-05-01T00:00:00",
            "contracts": [{"id": "c1", "start_date": "2019-05-01T00:00:00", "contract_duration": "1 jaar"},
                          {"id": "c2", "start_date": "2020-05-01T00:00:00", "contract_duration": "1 jaar"}],
            "salary": [{"id": "s1", "start_date": "2019-05-01T00:00:00", "month_wage": 2846.50}]}]}"#;
        // A raise (s2), the second contract withdrawn, the first one's duration corrected.
        let after = r#"{"data": [{"id": "m1", "start_date": "2019-05-01T00:00:00",
            "contracts": [{"id": "c1", "start_date": "2019-05-01T00:00:00", "contract_duration": "onbepaald"}],
            "salary": [{"id": "s1", "start_date": "2019-05-01T00:00:00", "month_wage": 2846.50},
                       {"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": 2900.00}]}]}"#;
        let delta = event_delta(events(before), events(after));
        assert_eq!(
            summary(&delta.upsert),
            [
                "2021-01-01 salary_changed salary:m1:s2:2 | Salary changed",
                "2019-05-01 contract_started contract:m1:c1:1 | Contract started",
            ],
            "{delta:?}"
        );
        assert!(delta.upsert[1]
            .details
            .contains(r#""contract_duration": "onbepaald""#));
        let salary = &delta.upsert[0];
        assert_eq!(
            (salary.old_wage.as_deref(), salary.new_wage.as_deref()),
            (Some("2846.50"), Some("2900.00"))
        );
        assert_eq!(
            delta.gone,
            [("contract_renewed", "contract:m1:c2:2".to_owned())]
        );
        // Nothing changed: nothing to write. No earlier version: everything is new.
        assert_eq!(
            event_delta(events(after), events(after)),
            EventDelta::default()
        );
        let first = event_delta(vec![], events(after));
        assert_eq!(first.upsert, events(after));
        assert!(first.gone.is_empty());
        // Everything gone (an empty payload): every old event is deleted, in key order.
        let emptied = event_delta(events(before), events(r#"{"data": []}"#));
        assert!(emptied.upsert.is_empty());
        assert_eq!(
            emptied
                .gone
                .iter()
                .map(|(t, k)| format!("{t} {k}"))
                .collect::<Vec<_>>(),
            [
                "contract_renewed contract:m1:c2:2",
                "contract_started contract:m1:c1:1",
                "hired employment:m1:1",
            ]
        );
    }

    #[test]
    fn jsonb_text_is_the_text_postgres_prints_for_a_jsonb() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"bb": [1, 2.50, -0.5, 0, 12345678901234567890123456789, true, null, {}, []],
                "b": {"z": 1, "a": 2, "a": 3}, "a": "x\"y\\z\n\t\b\f\r\u0001\u001f/é\u00e9 😀", "ba": -3.0}"#,
        )
        .unwrap();
        assert_eq!(
            jsonb_text(&v).as_deref(),
            Some(
                r#"{"a": "x\"y\\z\n\t\b\f\r\u0001\u001f/éé 😀", "b": {"a": 3, "z": 1}, "ba": -3.0, "bb": [1, 2.50, -0.5, 0, 12345678901234567890123456789, true, null, {}, []]}"#
            )
        );
        // numeric prints these differently (1000, 0): PostgreSQL has to print them.
        for n in ["1e3", "1.5E-2", "2e+1", "-0", "-0.00"] {
            let v: serde_json::Value =
                serde_json::from_str(&format!(r#"{{"data": [{{"month_wage": {n}}}]}}"#)).unwrap();
            assert_eq!(jsonb_text(&v), None, "{n}");
        }
        // The events of that text are the events of the payload.
        let payload = r#"{"data": [{"start_date": "2020-01-01T00:00:00", "id": "m1",
            "salary": [{"month_wage": 2000.00, "id": "s1", "start_date": "2020-01-01T00:00:00"},
                       {"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": 2100.50}]}]}"#;
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(events(&jsonb_text(&v).unwrap()), events(payload));
    }

    #[test]
    fn employments_are_numbered_by_start_date_with_undated_last() {
        let evs = events(
            r#"{"data": [
                {"id": "c", "start_date": null},
                {"id": "b", "start_date": "2024-01-01T00:00:00", "end_date": "2024-06-30T00:00:00"},
                {"id": "a", "start_date": "2020-03-01T00:00:00", "end_date": "2023-12-31T00:00:00"},
                "not an object", 7
            ]}"#,
        );
        assert_eq!(
            summary(&evs),
            [
                "2020-03-01 hired employment:a:1 | Hired",
                "2023-12-31 terminated employment-end:a:1 | Employment ended",
                "2024-01-01 rehired employment:b:2 | Rehired",
                "2024-06-30 terminated employment-end:b:2 | Employment ended",
            ]
        );
        assert_eq!(
            evs[0].details,
            r#"{"employment_id": "a", "start_date": "2020-03-01T00:00:00", "end_date": "2023-12-31T00:00:00"}"#
        );
    }

    #[test]
    fn same_start_orders_by_id_then_payload_order_and_missing_ids_last() {
        let evs = events(
            r#"{"data": [
                {"start_date": "2021-01-01T00:00:00"},
                {"id": "z", "start_date": "2021-01-01T00:00:00"},
                {"id": "Z", "start_date": "2021-01-01T00:00:00"}
            ]}"#,
        );
        // Byte order: "Z" < "z"; no id sorts last and gives an empty key part.
        assert_eq!(
            evs.iter().map(|e| e.event_key.as_str()).collect::<Vec<_>>(),
            ["employment:Z:1", "employment:z:2", "employment::3"]
        );
        assert_eq!(
            evs[2].details,
            r#"{"employment_id": null, "start_date": "2021-01-01T00:00:00", "end_date": null}"#
        );
    }

    #[test]
    fn contracts_start_renew_change_and_end() {
        let evs = events(
            r#"{"data": [{"id": 11, "start_date": "2020-01-01T00:00:00", "contracts": [
                {"id": "k3", "start_date": "2022-01-01T00:00:00", "end_date": "2022-12-31T00:00:00", "contract_duration": "permanent"},
                {"id": "k1", "start_date": "2020-01-01T00:00:00", "end_date": "2020-12-31T00:00:00", "contract_duration": "12 months"},
                {"id": "k2", "start_date": "2021-01-01T00:00:00", "end_date": "2021-12-31T00:00:00", "contract_duration": "12 months"},
                {"id": "k0", "start_date": "0001-01-01T00:00:00"}
            ]}]}"#,
        );
        let s = summary(&evs);
        assert_eq!(
            s,
            [
                "2020-01-01 hired employment:11:1 | Hired",
                // k0 has no usable date: first in order (undated first), but no event.
                "2020-01-01 contract_renewed contract:11:k1:2 | Contract changed to 12 months",
                "2021-01-01 contract_renewed contract:11:k2:3 | Contract renewed",
                "2022-01-01 contract_renewed contract:11:k3:4 | Contract changed to permanent",
                "2022-12-31 contract_ended contract-end:11:k3:4 | Contract ended",
            ]
        );
        // A numeric employment id is used as written in keys.
        assert_eq!(
            evs[1].details,
            r#"{"contract_id": "k1", "contract_duration": "12 months", "previous_contract_duration": null, "start_date": "2020-01-01T00:00:00", "end_date": "2020-12-31T00:00:00"}"#
        );
    }

    #[test]
    fn first_contract_starts_and_a_missing_duration_is_unknown() {
        let evs = events(
            r#"{"data": [{"id": "e", "contracts": [
                {"id": "k1", "start_date": "2020-01-01T00:00:00", "contract_duration": 6},
                {"id": "k2", "start_date": "2020-07-01T00:00:00"}
            ]}]}"#,
        );
        // The employment has no start: no hired event, but its periods count.
        assert_eq!(
            summary(&evs),
            [
                "2020-01-01 contract_started contract:e:k1:1 | Contract started",
                "2020-07-01 contract_renewed contract:e:k2:2 | Contract changed to unknown",
            ]
        );
        assert!(evs[1]
            .details
            .contains(r#""previous_contract_duration": 6"#));
    }

    #[test]
    fn salary_changes_keep_the_wages_as_written() {
        let evs = events(
            r#"{"data": [{"start_date": "2019-05-01T00:00:00", "salary": [
                {"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": 2900.00, "hour_wage": 17.5},
                {"id": "s1", "start_date": "2019-05-01T00:00:00", "month_wage": 2846.50, "hour_wage": 17},
                {"id": "s3", "start_date": "2022-01-01T00:00:00", "month_wage": null, "hour_wage": 18}
            ]}]}"#,
        );
        let salary: Vec<_> = evs
            .iter()
            .filter(|e| e.event_type == "salary_changed")
            .collect();
        assert_eq!(salary.len(), 2);
        // Employment without an id: its number stands in for it in keys.
        assert_eq!(salary[0].event_key, "salary:1:s2:2");
        assert_eq!(salary[0].event_date, d("2021-01-01"));
        assert_eq!(salary[0].old_wage.as_deref(), Some("2846.50"));
        assert_eq!(salary[0].new_wage.as_deref(), Some("2900.00"));
        assert_eq!(
            salary[0].details,
            r#"{"old_month_wage": 2846.50, "new_month_wage": 2900.00, "old_hour_wage": 17, "new_hour_wage": 17.5, "salary_id": "s2"}"#
        );
        // The earlier period has a month wage, so the new one is compared by month wage: null.
        assert_eq!(salary[1].old_wage.as_deref(), Some("2900.00"));
        assert_eq!(salary[1].new_wage, None);
    }

    #[test]
    fn hour_wages_are_compared_when_there_is_no_month_wage() {
        let evs = events(
            r#"{"data": [{"salary": [
                {"start_date": "2020-01-01T00:00:00", "hour_wage": 15.25},
                {"start_date": "2020-06-01T00:00:00", "hour_wage": 16, "month_wage": 2500}
            ]}]}"#,
        );
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].old_wage.as_deref(), Some("15.25"));
        assert_eq!(evs[0].new_wage.as_deref(), Some("16"));
        assert_eq!(evs[0].event_key, "salary:1::2");
    }

    #[test]
    fn hours_changes_and_undated_periods_first() {
        let evs = events(
            r#"{"data": [{"id": "e", "hours": [
                {"id": "h2", "start_date": "2021-01-01T00:00:00", "hours_per_week": 32, "days_per_week": 4, "employee_type": "fixed"},
                {"id": "h0", "hours_per_week": 40},
                {"id": "h1", "start_date": "2020-01-01T00:00:00", "hours_per_week": 40, "days_per_week": 5}
            ]}]}"#,
        );
        assert_eq!(
            summary(&evs),
            [
                "2020-01-01 hours_changed hours:e:h1:2 | Hours changed",
                "2021-01-01 hours_changed hours:e:h2:3 | Hours changed",
            ]
        );
        assert_eq!(
            evs[0].details,
            r#"{"old_hours_per_week": 40, "new_hours_per_week": 40, "old_days_per_week": null, "new_days_per_week": 5, "employee_type": null, "hours_id": "h1"}"#
        );
    }

    #[test]
    fn escaped_ids_are_read_as_text_and_copied_as_written() {
        let evs = events(
            r#"{"data": [{"id": "a\"b\u00e9\ud83d\ude00", "start_date": "2020-01-01T00:00:00"}]}"#,
        );
        assert_eq!(evs[0].event_key, "employment:a\"b\u{e9}\u{1F600}:1");
        assert!(evs[0]
            .details
            .contains(r#""employment_id": "a\"b\u00e9\ud83d\ude00""#));
    }

    #[test]
    fn impossible_dates_and_other_shapes_give_no_events() {
        assert!(events(r#"{"data": [{"start_date": "2025-02-30T00:00:00"}]}"#).is_empty());
        assert!(events(r#"{"data": [{"start_date": "0000-05-01T00:00:00"}]}"#).is_empty());
        assert!(events(r#"{"data": {"id": 1}}"#).is_empty());
        assert!(events(r#"[1, 2]"#).is_empty());
        assert!(events(r#"{"other": []}"#).is_empty());
        assert!(events(r#"{"data": [{"salary": "none", "start_date": 20200101}]}"#).is_empty());
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        let deep = format!(
            r#"{{"data": [{{"id": "e", "start_date": "2020-01-01T00:00:00", "x": {}{}}}]}}"#,
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        assert_eq!(events(&deep).len(), 1);
    }

    #[test]
    fn malformed_text_is_an_error() {
        for bad in [
            "",
            "{",
            r#"{"data": [}"#,
            r#"{"data": [1,]}"#,
            r#"{"a" 1}"#,
            r#"{"a": "\x"}"#,
            r#"{"a": 01}"#,
            "{} x",
        ] {
            assert!(employment_events(bad).is_err(), "{bad:?} was accepted");
        }
    }

    /// A small deterministic generator (xorshift), so the randomized tests below are repeatable.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn string(&mut self) -> String {
            const CHARS: &[char] = &[
                'a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\u{1}', 'é', '€', '😀', '-', ':',
            ];
            (0..self.below(6))
                .map(|_| CHARS[self.below(CHARS.len() as u64) as usize])
                .collect()
        }

        fn value(&mut self, depth: u32) -> serde_json::Value {
            use serde_json::{json, Map, Value};
            match self.below(if depth > 4 { 5 } else { 7 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 1),
                2 => json!(self.next() as i64 >> self.below(60)),
                3 => json!((self.next() >> 11) as f64 / 1e4 - 4e11),
                4 => Value::String(self.string()),
                5 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
                _ => {
                    let mut m = Map::new();
                    for _ in 0..self.below(4) {
                        m.insert(self.string(), self.value(depth + 1));
                    }
                    Value::Object(m)
                }
            }
        }
    }

    /// Checks a parsed value against what serde_json reads from the same text.
    fn same(j: Json, v: &serde_json::Value) {
        use serde_json::Value;
        assert_eq!(&serde_json::from_str::<Value>(j.raw()).unwrap(), v);
        match v {
            Value::String(s) => assert_eq!(j.text().as_deref(), Some(s.as_str())),
            Value::Null => assert_eq!(j.text(), None),
            Value::Array(items) => {
                let got: Vec<Json> = j.elements().collect();
                assert_eq!(got.len(), items.len());
                for (g, item) in got.into_iter().zip(items) {
                    same(g, item);
                }
            }
            Value::Object(m) => {
                assert_eq!(j.children().count(), m.len());
                for (k, item) in m {
                    // Keys with a backslash are looked up by their unescaped text too.
                    let member = j.children().find(|c| c.key() == *k).expect("key present");
                    same(member, item);
                    if !k.contains('\\') {
                        assert!(j.get(k).is_some());
                    }
                }
            }
            _ => assert_eq!(j.text().as_deref(), Some(j.raw())),
        }
    }

    #[test]
    fn reads_any_json_as_serde_json_does() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        for i in 0..3000 {
            let v = g.value(0);
            // Compact and pretty text, and PostgreSQL's jsonb spacing, all read the same.
            let text = match i % 3 {
                0 => v.to_string(),
                1 => serde_json::to_string_pretty(&v).unwrap(),
                _ => v.to_string().replace(',', ", ").replace(':', ": "),
            };
            let Ok(reparsed) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue; // the naive spacing can land inside a string
            };
            let doc = Doc::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            same(doc.root(), &reparsed);
        }
    }

    #[test]
    fn damaged_json_never_panics_and_is_rejected_when_serde_json_rejects_it() {
        let mut g = Gen(0x2545_F491_4F6C_DD1D);
        for _ in 0..5000 {
            let mut bytes = g.value(0).to_string().into_bytes();
            for _ in 0..=g.below(3) {
                if bytes.is_empty() {
                    break;
                }
                let at = g.below(bytes.len() as u64) as usize;
                match g.below(3) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, b"{}[],:\"\\0e-.tn "[g.below(14) as usize]),
                    _ => bytes.truncate(at),
                }
            }
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            let ours = Doc::parse(&text).is_ok();
            // serde_json also rejects numbers beyond f64 (1e999, which numeric holds) and lone
            // surrogates (\ud800, which PostgreSQL never prints).
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(_) => assert!(ours, "{text:?}: we reject it, serde_json reads it"),
                Err(e) => {
                    let allowed = e.to_string().contains("out of range") || text.contains("\\u");
                    assert!(
                        !ours || allowed,
                        "{text:?}: we accept it, serde_json says {e}"
                    );
                }
            }
        }
    }
}
