//! Raw-version planning: given what arrived and the latest stored version of each record, decide
//! which new versions to write, which current versions to close, and which changes they carry.
//! Unchanged content (same canonical hash) plans nothing, so a re-sync writes nothing.

use std::collections::HashMap;

use serde_json::Value;

use crate::canonical::content_hash;
use crate::changes::classify::{self, Change};
use crate::model::Kind;

/// A record as fetched, keyed by employee, with the hash of its canonical content.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub employee_id: String,
    pub payload: Value,
    pub content_hash: String,
}

impl Incoming {
    /// Hashes the payload (the costly part: the driver calls it on its HTTP threads).
    pub fn new(employee_id: String, payload: Value) -> Incoming {
        Incoming {
            content_hash: content_hash(&payload),
            employee_id,
            payload,
        }
    }

    /// Same record, already hashed.
    pub fn with_hash(employee_id: String, payload: Value, content_hash: String) -> Incoming {
        Incoming {
            employee_id,
            payload,
            content_hash,
        }
    }
}

/// The latest stored version of a record (current or closed by a deletion).
#[derive(Debug, Clone)]
pub struct Existing {
    pub raw_id: i64,
    pub version: i32,
    pub content_hash: String,
    pub is_current: bool,
    /// Needed only when the content changed or the record was deleted; `None` otherwise.
    pub payload: Option<Value>,
}

/// A version to write.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub employee_id: String,
    pub payload: Value,
    pub content_hash: String,
    pub version: i32,
    /// The current version this one replaces (to be closed in the same transaction).
    pub close_raw_id: Option<i64>,
    /// The version the changes are relative to (the closed current one, or the deleted one).
    pub from_raw_id: Option<i64>,
    pub changes: Vec<Change>,
}

/// Plans the writes for one batch. A record that appears twice in the batch keeps its last
/// occurrence.
pub fn plan(
    kind: Kind,
    incoming: Vec<Incoming>,
    existing: &HashMap<String, Existing>,
) -> Vec<NewVersion> {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, rec) in incoming.iter().enumerate() {
        last.insert(rec.employee_id.clone(), i);
    }
    let mut out = Vec::new();
    for (i, rec) in incoming.into_iter().enumerate() {
        if last.get(&rec.employee_id) != Some(&i) {
            continue;
        }
        let hash = rec.content_hash;
        match existing.get(&rec.employee_id) {
            None => out.push(NewVersion {
                changes: vec![classify::created(kind, &rec.payload)],
                employee_id: rec.employee_id,
                payload: rec.payload,
                content_hash: hash,
                version: 1,
                close_raw_id: None,
                from_raw_id: None,
            }),
            Some(ex) if ex.is_current && ex.content_hash == hash => {}
            Some(ex) => {
                let mut changes = Vec::new();
                if !ex.is_current {
                    changes.push(classify::restored(kind, &rec.payload));
                }
                if ex.content_hash != hash {
                    if let Some(old) = &ex.payload {
                        changes.extend(classify::classify(kind, old, &rec.payload));
                    }
                }
                out.push(NewVersion {
                    employee_id: rec.employee_id,
                    payload: rec.payload,
                    content_hash: hash,
                    version: ex.version + 1,
                    close_raw_id: ex.is_current.then_some(ex.raw_id),
                    from_raw_id: Some(ex.raw_id),
                    changes,
                });
            }
        }
    }
    out
}

/// Why `id` cannot be an employee's key, or `None` when it can. The API uses UUIDs; any id of 1
/// to 100 characters from the letters, digits and `-`, `_`, `.`, `~` is taken (they stay one path
/// segment as they are), except `.` and `..`, which a proxy would read as path navigation. NUL
/// and other control characters, `/`, spaces and anything longer are refused: such an id would
/// change as PostgreSQL or a URL reads it, or exceed an index key.
pub fn invalid_id(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("is empty")
    } else if id.len() > 100 {
        Some("is longer than 100 characters")
    } else if id.contains('\0') {
        Some("contains a NUL character")
    } else if id.chars().any(char::is_control) {
        Some("contains a control character")
    } else if id == "." || id == ".." {
        Some("is a relative path segment (. or ..)")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    {
        Some("has characters other than letters, digits, -, _, . and ~")
    } else {
        None
    }
}

/// Why a record cannot be stored as received, or `None`: PostgreSQL's `jsonb` refuses a NUL
/// character (`\u0000`) in any string or key. Such a record is refused alone, rather than with
/// the NUL replaced: a payload is kept exactly as the API sent it, or not at all.
pub fn unstorable(v: &Value) -> Option<String> {
    let nul = |s: &str| s.contains('\0');
    let found = match v {
        Value::String(s) => nul(s),
        Value::Array(items) => return items.iter().find_map(unstorable),
        Value::Object(map) => {
            if map.keys().any(|k| nul(k)) {
                true
            } else {
                return map.values().find_map(unstorable);
            }
        }
        _ => false,
    };
    found.then(|| {
        "a string in it contains a NUL character (\\u0000), which PostgreSQL cannot store"
            .to_owned()
    })
}

/// The id of a record as the API gives it: a string, or a number rendered as text.
pub fn record_id(record: &Value) -> Option<String> {
    match record.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        // As releases before 0.4.0 wrote it: employee ids are keys of the stored history.
        Some(Value::Number(n)) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => {
                serde_json::Number::from_f64(f).map_or_else(|| n.to_string(), |n| n.to_string())
            }
            _ => n.to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_ids_are_keys() {
        for ok in [
            "3f0c9a52-7d41-4c1e-9b0e-5e1a2c3d4f50",
            "1005",
            "a.b",
            "x_y~z",
        ] {
            assert_eq!(invalid_id(ok), None, "{ok}");
        }
        let long = "a".repeat(101);
        for (bad, why) in [
            ("", "is empty"),
            (".", "is a relative path segment (. or ..)"),
            ("..", "is a relative path segment (. or ..)"),
            ("a\0b", "contains a NUL character"),
            ("3f0c9a52\u{0}evil", "contains a NUL character"),
            ("a\nb", "contains a control character"),
            (
                "a/b",
                "has characters other than letters, digits, -, _, . and ~",
            ),
            (
                "a b",
                "has characters other than letters, digits, -, _, . and ~",
            ),
            (
                "é",
                "has characters other than letters, digits, -, _, . and ~",
            ),
            (long.as_str(), "is longer than 100 characters"),
        ] {
            assert_eq!(invalid_id(bad), Some(why), "{bad:?}");
        }
    }
    use crate::model::ChangeType;
    use serde_json::json;

    fn inc(id: &str, payload: Value) -> Incoming {
        Incoming::new(id.into(), payload)
    }

    fn existing(id: i64, version: i32, payload: &Value, current: bool) -> Existing {
        Existing {
            raw_id: id,
            version,
            content_hash: content_hash(payload),
            is_current: current,
            payload: Some(payload.clone()),
        }
    }

    #[test]
    fn first_sight_is_created_version_one() {
        let batch = vec![inc("a", json!({"id":"a","status":"active"}))];
        let plan = plan(Kind::Employee, batch, &HashMap::new());
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].version, 1);
        assert_eq!(plan[0].changes.len(), 1);
        assert_eq!(plan[0].changes[0].change_type, ChangeType::Created);
    }

    #[test]
    fn same_content_with_noise_plans_nothing() {
        let old = json!({"id":"a","month_wage":2846,"dt_update":"2026-01-01T00:00:00.1"});
        let new = json!({"dt_update":"2026-02-01T00:00:00.2","month_wage":2846.0,"id":"a"});
        let ex = HashMap::from([("a".to_string(), existing(7, 3, &old, true))]);
        let batch = vec![inc("a", new)];
        assert!(plan(Kind::Employee, batch, &ex).is_empty());
    }

    #[test]
    fn changed_content_closes_the_current_version_and_diffs() {
        let old = json!({"id":"a","status":"active"});
        let new = json!({"id":"a","status":"out of service"});
        let ex = HashMap::from([("a".to_string(), existing(7, 3, &old, true))]);
        let batch = vec![inc("a", new)];
        let p = plan(Kind::Employee, batch, &ex);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].version, p[0].close_raw_id, p[0].from_raw_id),
            (4, Some(7), Some(7))
        );
        assert_eq!(
            p[0].changes
                .iter()
                .map(|c| c.change_type)
                .collect::<Vec<_>>(),
            vec![ChangeType::StatusChange]
        );
    }

    #[test]
    fn a_deleted_record_that_returns_is_restored_without_closing_anything() {
        let old = json!({"id":"a","status":"active"});
        let ex = HashMap::from([("a".to_string(), existing(9, 2, &old, false))]);
        let batch = vec![inc("a", old.clone())];
        let p = plan(Kind::Employee, batch, &ex);
        assert_eq!(
            (p[0].version, p[0].close_raw_id, p[0].from_raw_id),
            (3, None, Some(9))
        );
        assert_eq!(
            p[0].changes
                .iter()
                .map(|c| c.change_type)
                .collect::<Vec<_>>(),
            vec![ChangeType::Restored]
        );
    }

    #[test]
    fn a_record_twice_in_one_batch_keeps_the_last() {
        let batch = vec![
            inc("a", json!({"id":"a","v":1})),
            inc("a", json!({"id":"a","v":2})),
        ];
        let p = plan(Kind::Employee, batch, &HashMap::new());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].payload["v"], 2);
    }

    #[test]
    fn record_ids_are_strings_or_numbers() {
        assert_eq!(record_id(&json!({"id":"x"})), Some("x".into()));
        assert_eq!(record_id(&json!({"id":42})), Some("42".into()));
        // A number's id is its value as before payloads kept their spelling: 4.20e1 is 42.0.
        for sent in [r#"{"id":42.0}"#, r#"{"id":4.20e1}"#] {
            let v: Value = serde_json::from_str(sent).unwrap();
            assert_eq!(record_id(&v), Some("42.0".into()), "{sent}");
        }
        assert_eq!(record_id(&json!({"id":null})), None);
        assert_eq!(record_id(&json!({"id":" "})), None);
        assert_eq!(record_id(&json!({})), None);
    }
}
