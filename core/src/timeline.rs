//! Timeline events of one employee's working life, from an `/employments` payload: hired and
//! rehired, employment ended, contract started, renewed, changed and ended, salary changed, hours
//! changed.
//!
//! Values are copied into `details` as the payload has them (with serde_json's
//! `arbitrary_precision`, `2846.50` stays `2846.50`). Wage arithmetic (`amount`, `percent`) is
//! left to PostgreSQL's `numeric`: the events carry the old and new wage as they are written,
//! and `employes_timeline_events` adds both figures.
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

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::NaiveDate;
use serde_json::{json, Map, Value};

use crate::model::parse_api_date;

/// One event computed from an `/employments` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmploymentEvent {
    pub event_date: NaiveDate,
    pub event_type: &'static str,
    pub title: String,
    /// A JSON object (compact text); its values are copied from the payload.
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
#[error("not valid JSON ({0})")]
pub struct JsonError(pub String);

/// The events of one `/employments` payload given as text (`payload::text` of a stored version).
pub fn employment_events(payload: &str) -> Result<Vec<EmploymentEvent>, JsonError> {
    let v: Value = serde_json::from_str(payload).map_err(|e| JsonError(e.to_string()))?;
    Ok(events_of(&v))
}

/// The events of a payload as the API sent it, which are those of its stored version (the sync
/// computes them without reading the version back), or `None` when a number in it is written
/// otherwise than PostgreSQL's `numeric` prints it (an exponent, a negative zero): the stored
/// version's events then differ in `details`, and are read from the stored text instead.
pub fn events_of_received(payload: &Value) -> Option<Vec<EmploymentEvent>> {
    numbers_print_as_numeric(payload).then(|| events_of(payload))
}

/// The events of one `/employments` payload.
pub fn events_of(payload: &Value) -> Vec<EmploymentEvent> {
    let mut out = Vec::new();
    let employments = sorted_items(payload.get("data"), Order::NoDateLast);
    for (i, e) in employments.iter().enumerate() {
        let n = i + 1;
        employment(e, n, &mut out);
        let employment_id = e.id.clone().unwrap_or_else(|| n.to_string());
        let periods = |kind: &str| sorted_items(e.fields.get(kind), Order::NoDateFirst);
        salaries(&periods("salary"), &employment_id, &mut out);
        hours(&periods("hours"), &employment_id, &mut out);
        contracts(&periods("contracts"), &employment_id, &mut out);
    }
    out
}

/// Hired (the first employment) or rehired, and terminated when it has an end date.
fn employment(e: &Item, n: usize, out: &mut Vec<EmploymentEvent>) {
    let id_text = e.id.as_deref().unwrap_or("");
    let details = json!({"employment_id": e.raw("id"), "start_date": e.raw("start_date"),
                         "end_date": e.raw("end_date")})
    .to_string();
    if let Some(sd) = e.start {
        let (kind, title) = if n == 1 {
            ("hired", "Hired")
        } else {
            ("rehired", "Rehired")
        };
        out.push(plain(
            sd,
            kind,
            title,
            details.clone(),
            format!("employment:{id_text}:{n}"),
        ));
    }
    if let Some(ed) = e.end {
        out.push(plain(
            ed,
            "terminated",
            "Employment ended",
            details,
            format!("employment-end:{id_text}:{n}"),
        ));
    }
}

/// The key of the `k`-th period of an employment: `prefix:employment:period:k`.
fn period_key(prefix: &str, employment_id: &str, p: &Item, k: usize) -> String {
    format!(
        "{prefix}:{employment_id}:{}:{k}",
        p.id.as_deref().unwrap_or("")
    )
}

/// Contract started (the first), renewed or changed (the later ones), and ended (the last one,
/// when it has an end date).
fn contracts(periods: &[Item], employment_id: &str, out: &mut Vec<EmploymentEvent>) {
    for (j, p) in periods.iter().enumerate() {
        let k = j + 1;
        let prev = j.checked_sub(1).map(|i| &periods[i]);
        if let Some(sd) = p.start {
            let title = match prev {
                None => "Contract started".to_string(),
                Some(prev) if prev.text("contract_duration") != p.text("contract_duration") => {
                    format!(
                        "Contract changed to {}",
                        p.text("contract_duration").as_deref().unwrap_or("unknown")
                    )
                }
                Some(_) => "Contract renewed".to_string(),
            };
            let details = json!({"contract_id": p.raw("id"), "contract_duration": p.raw("contract_duration"),
                                 "previous_contract_duration": prev.map_or(Value::Null, |x| x.raw("contract_duration")),
                                 "start_date": p.raw("start_date"), "end_date": p.raw("end_date")});
            let kind = if k == 1 {
                "contract_started"
            } else {
                "contract_renewed"
            };
            out.push(EmploymentEvent {
                title,
                ..plain(
                    sd,
                    kind,
                    "",
                    details.to_string(),
                    period_key("contract", employment_id, p, k),
                )
            });
        }
        if let (true, Some(ed)) = (k == periods.len(), p.end) {
            let details = json!({"contract_id": p.raw("id"), "contract_duration": p.raw("contract_duration"),
                                 "end_date": p.raw("end_date")});
            out.push(plain(
                ed,
                "contract_ended",
                "Contract ended",
                details.to_string(),
                period_key("contract-end", employment_id, p, k),
            ));
        }
    }
}

/// Salary changed, for every period after the first, with the wages it compares.
fn salaries(periods: &[Item], employment_id: &str, out: &mut Vec<EmploymentEvent>) {
    for (j, p) in periods.iter().enumerate().skip(1) {
        let (prev, Some(sd)) = (&periods[j - 1], p.start) else {
            continue;
        };
        let prev_month = prev.number("month_wage");
        let old_wage = prev_month.or_else(|| prev.number("hour_wage"));
        let new_wage = if prev_month.is_some() {
            p.number("month_wage")
        } else {
            p.number("hour_wage")
        };
        let details = json!({"old_month_wage": prev.raw("month_wage"), "new_month_wage": p.raw("month_wage"),
                             "old_hour_wage": prev.raw("hour_wage"), "new_hour_wage": p.raw("hour_wage"),
                             "salary_id": p.raw("id")});
        out.push(EmploymentEvent {
            old_wage: old_wage.map(str::to_string),
            new_wage: new_wage.map(str::to_string),
            ..plain(
                sd,
                "salary_changed",
                "Salary changed",
                details.to_string(),
                period_key("salary", employment_id, p, j + 1),
            )
        });
    }
}

/// Hours changed, for every period after the first.
fn hours(periods: &[Item], employment_id: &str, out: &mut Vec<EmploymentEvent>) {
    for (j, p) in periods.iter().enumerate().skip(1) {
        let (prev, Some(sd)) = (&periods[j - 1], p.start) else {
            continue;
        };
        let details = json!({"old_hours_per_week": prev.raw("hours_per_week"), "new_hours_per_week": p.raw("hours_per_week"),
                             "old_days_per_week": prev.raw("days_per_week"), "new_days_per_week": p.raw("days_per_week"),
                             "employee_type": p.raw("employee_type"), "hours_id": p.raw("id")});
        out.push(plain(
            sd,
            "hours_changed",
            "Hours changed",
            details.to_string(),
            period_key("hours", employment_id, p, j + 1),
        ));
    }
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

/// Whether every number in `v` is written as `numeric` prints it: no exponent and no negative
/// zero (JSON has no leading zeros, `+` or bare `.`, and `numeric` keeps trailing zeros).
fn numbers_print_as_numeric(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            let text = n.as_str();
            let digits = text.strip_prefix('-');
            let negative = digits.is_some();
            let digits = digits.unwrap_or(text);
            digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && !(negative && digits.bytes().all(|b| b == b'0' || b == b'.'))
        }
        Value::Array(items) => items.iter().all(numbers_print_as_numeric),
        Value::Object(map) => map.values().all(numbers_print_as_numeric),
        _ => true,
    }
}

/// Where items without a start date go.
#[derive(Clone, Copy)]
enum Order {
    NoDateFirst,
    NoDateLast,
}

/// An employment or a period: its fields, and what it is ordered by.
struct Item<'a> {
    fields: &'a Map<String, Value>,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    /// `id` as text (`->>`): `None` for a missing id or JSON null.
    id: Option<String>,
    pos: usize,
    order: Order,
}

/// The objects of an array (anything else skipped), in the timeline's order.
fn sorted_items(list: Option<&Value>, order: Order) -> Vec<Item<'_>> {
    let Some(Value::Array(list)) = list else {
        return Vec::new();
    };
    let mut items: Vec<Item> = list
        .iter()
        .enumerate()
        .filter_map(|(pos, v)| v.as_object().map(|fields| Item::new(fields, pos, order)))
        .collect();
    items.sort_by(compare);
    items
}

impl<'a> Item<'a> {
    fn new(fields: &'a Map<String, Value>, pos: usize, order: Order) -> Item<'a> {
        let date = |k: &str| fields.get(k).and_then(parse_api_date);
        Item {
            start: date("start_date"),
            end: date("end_date"),
            id: text(fields.get("id")),
            fields,
            pos,
            order,
        }
    }

    /// The value as the payload has it, or `null` when absent.
    fn raw(&self, key: &str) -> Value {
        self.fields.get(key).cloned().unwrap_or(Value::Null)
    }

    /// `->>`: the value as text, `None` for absent or JSON null.
    fn text(&self, key: &str) -> Option<String> {
        text(self.fields.get(key))
    }

    /// The value's text when it is a JSON number.
    fn number(&self, key: &str) -> Option<&'a str> {
        match self.fields.get(key) {
            Some(Value::Number(n)) => Some(n.as_str()),
            _ => None,
        }
    }
}

/// `->>`: a string's content, `None` for null or absent, anything else as JSON text.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Start dates (undated first or last), then ids ascending (missing ids last, as SQL's default
/// NULLS LAST), then payload order.
fn compare(a: &Item, b: &Item) -> Ordering {
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
    let ids = match (&a.id, &b.id) {
        (Some(x), Some(y)) => x.as_bytes().cmp(y.as_bytes()),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
    };
    dates.then(ids).then(a.pos.cmp(&b.pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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

    /// An event's details as a JSON value (their text is compact JSON).
    fn details(e: &EmploymentEvent) -> Value {
        serde_json::from_str(&e.details).expect("details are JSON")
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
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
        assert_eq!(details(&delta.upsert[1])["contract_duration"], "onbepaald");
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
    fn a_received_payload_gives_the_events_of_its_stored_text() {
        let payload = r#"{"data": [{"start_date": "2020-01-01T00:00:00", "id": "m1",
            "salary": [{"month_wage": 2000.00, "id": "s1", "start_date": "2020-01-01T00:00:00"},
                       {"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": 2100.50}]}]}"#;
        let v: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(events_of_received(&v), Some(events(payload)));
        // numeric prints these differently (1000, 0): the stored text has to be read instead.
        for n in ["1e3", "1.5E-2", "2e+1", "-0", "-0.00"] {
            let v: Value =
                serde_json::from_str(&format!(r#"{{"data": [{{"month_wage": {n}}}]}}"#)).unwrap();
            assert_eq!(events_of_received(&v), None, "{n}");
        }
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
            details(&evs[0]),
            json(
                r#"{"employment_id": "a", "start_date": "2020-03-01T00:00:00", "end_date": "2023-12-31T00:00:00"}"#
            )
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
            details(&evs[2]),
            json(
                r#"{"employment_id": null, "start_date": "2021-01-01T00:00:00", "end_date": null}"#
            )
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
            details(&evs[1]),
            json(
                r#"{"contract_id": "k1", "contract_duration": "12 months", "previous_contract_duration": null, "start_date": "2020-01-01T00:00:00", "end_date": "2020-12-31T00:00:00"}"#
            )
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
        assert_eq!(details(&evs[1])["previous_contract_duration"], 6);
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
            details(salary[0]),
            json(
                r#"{"old_month_wage": 2846.50, "new_month_wage": 2900.00, "old_hour_wage": 17, "new_hour_wage": 17.5, "salary_id": "s2"}"#
            )
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
            details(&evs[0]),
            json(
                r#"{"old_hours_per_week": 40, "new_hours_per_week": 40, "old_days_per_week": null, "new_days_per_week": 5, "employee_type": null, "hours_id": "h1"}"#
            )
        );
    }

    #[test]
    fn escaped_ids_are_read_as_text_and_copied_as_written() {
        let evs = events(
            r#"{"data": [{"id": "a\"b\u00e9\ud83d\ude00", "start_date": "2020-01-01T00:00:00"}]}"#,
        );
        assert_eq!(evs[0].event_key, "employment:a\"b\u{e9}\u{1F600}:1");
        assert_eq!(details(&evs[0])["employment_id"], "a\"b\u{e9}\u{1F600}");
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

    /// Deeper than serde_json reads (128 levels; the API client reads no deeper, so no stored
    /// payload is): an error, never a stack overflow.
    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            r#"{{"data": [{{"id": "e", "start_date": "2020-01-01T00:00:00", "x": {}{}}}]}}"#,
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        assert!(employment_events(&deep).is_err());
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
}
