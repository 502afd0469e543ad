//! Field-level difference between two versions of a payload, computed on their canonical forms,
//! with arrays of periods matched by `id` so that a new salary period is one addition rather than
//! a shifted list.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::canonical::{canonicalize, id_key, is_id_keyed};

/// One step of a path into a payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSeg {
    /// An object key.
    Key(String),
    /// The element of an id-keyed array whose `id` has this string form.
    Id(String),
}

/// One changed field. `old` is `None` when the field was added, `new` is `None` when it was
/// removed; values are canonical.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldChange {
    pub path: Vec<PathSeg>,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl FieldChange {
    /// The path as a JSONPath-like string: `$` for the root, `.key` for plain keys, `["key"]`
    /// (JSON-escaped) for other keys, `[id=VALUE]` for id-matched elements, e.g.
    /// `$.data[id=e1].salary[id=s2].month_wage`. An id that contains anything but
    /// `[A-Za-z0-9_.-]` is written JSON-quoted, `[id="a]b"]`, so that the path stays unambiguous.
    pub fn path_string(&self) -> String {
        path_string(&self.path)
    }
}

pub(crate) fn path_string(path: &[PathSeg]) -> String {
    let mut out = String::from("$");
    for seg in path {
        match seg {
            PathSeg::Key(k) if is_plain(k, false) => {
                out.push('.');
                out.push_str(k);
            }
            PathSeg::Key(k) => {
                out.push('[');
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(']');
            }
            PathSeg::Id(id) if is_plain(id, true) => {
                out.push_str("[id=");
                out.push_str(id);
                out.push(']');
            }
            PathSeg::Id(id) => {
                out.push_str("[id=");
                out.push_str(&Value::String(id.clone()).to_string());
                out.push(']');
            }
        }
    }
    out
}

fn is_plain(s: &str, id: bool) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (id && (b == b'-' || b == b'.')))
}

/// Every field that differs between the canonical forms of `old` and `new`, in traversal order
/// (object keys sorted, id-keyed elements sorted by id).
///
/// - Objects: a key present on one side only is one change for its whole subtree.
/// - Arrays that are id-keyed on both sides (every element an object with a scalar `id`, ids
///   unique): elements matched by id; an element on one side only is one change at `[id=..]`.
/// - Any other arrays, scalars and type changes: one change for the whole value.
pub fn diff(old: &Value, new: &Value) -> Vec<FieldChange> {
    diff_canonical(&canonicalize(old), &canonicalize(new))
}

/// [`diff`] of two values that are already canonical.
pub(crate) fn diff_canonical(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(&mut Vec::new(), old, new, &mut out);
    out
}

fn walk(path: &mut Vec<PathSeg>, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => walk_objects(path, a, b, out),
        (Value::Array(a), Value::Array(b)) => match (by_id(a), by_id(b)) {
            (Some(a), Some(b)) => walk_id_arrays(path, &a, &b, out),
            _ => push(path, Some(old), Some(new), out),
        },
        _ => push(path, Some(old), Some(new), out),
    }
}

fn walk_objects(
    path: &mut Vec<PathSeg>,
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    out: &mut Vec<FieldChange>,
) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        path.push(PathSeg::Key(key.clone()));
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) => walk(path, x, y, out),
            (x, y) => push(path, x, y, out),
        }
        path.pop();
    }
}

fn walk_id_arrays(
    path: &mut Vec<PathSeg>,
    a: &BTreeMap<String, &Value>,
    b: &BTreeMap<String, &Value>,
    out: &mut Vec<FieldChange>,
) {
    let ids: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for id in ids {
        path.push(PathSeg::Id(id.clone()));
        match (a.get(id), b.get(id)) {
            (Some(x), Some(y)) => walk(path, x, y, out),
            (x, y) => push(path, x.copied(), y.copied(), out),
        }
        path.pop();
    }
}

/// Elements by id when the array is id-keyed with unique ids; duplicates make matching by id
/// meaningless, so such arrays are compared whole.
fn by_id(items: &[Value]) -> Option<BTreeMap<String, &Value>> {
    if !is_id_keyed(items) {
        return None;
    }
    let mut map = BTreeMap::new();
    for item in items {
        if map.insert(id_key(item)?, item).is_some() {
            return None;
        }
    }
    Some(map)
}

fn push(path: &[PathSeg], old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    out.push(FieldChange {
        path: path.to_vec(),
        old: old.cloned(),
        new: new.cloned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(changes: &[FieldChange]) -> Vec<(String, Option<Value>, Option<Value>)> {
        changes
            .iter()
            .map(|c| (c.path_string(), c.old.clone(), c.new.clone()))
            .collect()
    }

    fn key(k: &str) -> PathSeg {
        PathSeg::Key(k.to_string())
    }

    fn id(i: &str) -> PathSeg {
        PathSeg::Id(i.to_string())
    }

    #[test]
    fn path_string_renders_root_keys_and_ids() {
        let c = FieldChange {
            path: vec![
                key("data"),
                id("e1"),
                key("salary"),
                id("s2"),
                key("month_wage"),
            ],
            old: None,
            new: None,
        };
        assert_eq!(c.path_string(), "$.data[id=e1].salary[id=s2].month_wage");
        let root = FieldChange {
            path: vec![],
            old: None,
            new: None,
        };
        assert_eq!(root.path_string(), "$");
    }

    #[test]
    fn path_string_quotes_keys_that_are_not_identifiers() {
        let c = FieldChange {
            path: vec![
                key("a b"),
                key("quote\"d"),
                key(""),
                key("x-y"),
                key("ok_1"),
            ],
            old: None,
            new: None,
        };
        assert_eq!(c.path_string(), r#"$["a b"]["quote\"d"][""]["x-y"].ok_1"#);
    }

    #[test]
    fn path_string_keeps_uuid_ids_plain_and_quotes_odd_ids() {
        let c = FieldChange {
            path: vec![
                key("data"),
                id("3f0c9a52-1b2c-4d5e-8f90-0123456789ab"),
                key("hours"),
                id("a]b"),
            ],
            old: None,
            new: None,
        };
        assert_eq!(
            c.path_string(),
            r#"$.data[id=3f0c9a52-1b2c-4d5e-8f90-0123456789ab].hours[id="a]b"]"#
        );
    }

    #[test]
    fn equal_values_give_no_changes() {
        assert!(diff(
            &json!({"a": [1, 2], "b": {"c": 1}}),
            &json!({"b": {"c": 1.0}, "a": [1, 2]})
        )
        .is_empty());
    }

    #[test]
    fn noise_only_differences_give_no_changes() {
        let old = json!({"id": "e1", "dt_update": "2025-01-01T00:00:00.1", "month_wage": 2846, "end_date": null});
        let new = json!({"month_wage": 2846.0, "dt_update": "2025-02-01T00:00:00.2", "id": "e1"});
        assert!(diff(&old, &new).is_empty());
    }

    #[test]
    fn scalar_change_is_a_leaf_change() {
        let d = diff(&json!({"city": "Delft"}), &json!({"city": "Leiden"}));
        assert_eq!(
            d,
            vec![FieldChange {
                path: vec![key("city")],
                old: Some(json!("Delft")),
                new: Some(json!("Leiden"))
            }]
        );
    }

    #[test]
    fn root_scalar_change_has_root_path() {
        assert_eq!(
            rows(&diff(&json!(1), &json!(2))),
            vec![("$".into(), Some(json!(1)), Some(json!(2)))]
        );
    }

    #[test]
    fn type_change_is_a_leaf_change() {
        let d = diff(&json!({"a": {"x": 1}}), &json!({"a": [1]}));
        assert_eq!(
            rows(&d),
            vec![("$.a".into(), Some(json!({"x": 1})), Some(json!([1])))]
        );
    }

    #[test]
    fn key_on_one_side_is_one_change_for_the_whole_subtree() {
        let d = diff(
            &json!({"a": 1, "gone": {"x": 1, "y": 2}}),
            &json!({"a": 1, "added": {"z": [1]}}),
        );
        assert_eq!(
            rows(&d),
            vec![
                ("$.added".into(), None, Some(json!({"z": [1]}))),
                ("$.gone".into(), Some(json!({"x": 1, "y": 2})), None),
            ]
        );
    }

    #[test]
    fn null_to_value_is_an_addition() {
        let d = diff(
            &json!({"end_date": null}),
            &json!({"end_date": "2025-11-09T00:00:00"}),
        );
        assert_eq!(
            rows(&d),
            vec![(
                "$.end_date".into(),
                None,
                Some(json!("2025-11-09T00:00:00"))
            )]
        );
    }

    #[test]
    fn changes_come_out_in_sorted_key_order() {
        let d = diff(
            &json!({"z": 1, "a": 1, "m": {"b": 1, "a": 1}}),
            &json!({"z": 2, "a": 2, "m": {"b": 2, "a": 2}}),
        );
        let paths: Vec<String> = d.iter().map(FieldChange::path_string).collect();
        assert_eq!(paths, vec!["$.a", "$.m.a", "$.m.b", "$.z"]);
    }

    #[test]
    fn id_keyed_arrays_are_matched_by_id() {
        let old = json!({"p": [{"id": "b", "v": 1}, {"id": "a", "v": 1}, {"id": "c", "v": 1}]});
        let new = json!({"p": [{"id": "d", "v": 1}, {"id": "a", "v": 2}, {"id": "b", "v": 1}]});
        assert_eq!(
            rows(&diff(&old, &new)),
            vec![
                ("$.p[id=a].v".into(), Some(json!(1)), Some(json!(2))),
                ("$.p[id=c]".into(), Some(json!({"id": "c", "v": 1})), None),
                ("$.p[id=d]".into(), None, Some(json!({"id": "d", "v": 1}))),
            ]
        );
    }

    #[test]
    fn reordering_an_id_keyed_array_is_no_change() {
        assert!(diff(
            &json!([{"id": 1}, {"id": 2}]),
            &json!([{"id": 2}, {"id": 1}])
        )
        .is_empty());
    }

    #[test]
    fn empty_array_to_id_keyed_array_adds_elements() {
        let d = diff(&json!({"data": []}), &json!({"data": [{"id": "e1"}]}));
        assert_eq!(
            rows(&d),
            vec![("$.data[id=e1]".into(), None, Some(json!({"id": "e1"})))]
        );
    }

    #[test]
    fn plain_arrays_are_compared_whole() {
        let d = diff(&json!({"tags": [1, 2, 3]}), &json!({"tags": [1, 2, 4]}));
        assert_eq!(
            rows(&d),
            vec![(
                "$.tags".into(),
                Some(json!([1, 2, 3])),
                Some(json!([1, 2, 4]))
            )]
        );
        let d = diff(&json!({"tags": [1, 2]}), &json!({"tags": [2, 1]}));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn array_id_keyed_on_one_side_only_is_compared_whole() {
        let d = diff(
            &json!({"p": [{"id": "a"}]}),
            &json!({"p": [{"id": "a"}, {"n": 1}]}),
        );
        assert_eq!(
            rows(&d),
            vec![(
                "$.p".into(),
                Some(json!([{"id": "a"}])),
                Some(json!([{"id": "a"}, {"n": 1}]))
            )]
        );
    }

    #[test]
    fn array_with_duplicate_ids_is_compared_whole() {
        let d = diff(
            &json!([{"id": "a", "v": 1}, {"id": "a", "v": 2}]),
            &json!([{"id": "a", "v": 1}, {"id": "a", "v": 3}]),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path_string(), "$");
    }

    #[test]
    fn employee_raise_changes_salary_fields_and_top_level_yearly_wage() {
        let old = json!({
            "id": "e1", "first_name": "Anna", "yearly_wage": 29252.42, "dt_update": "2025-07-02T14:22:15.133794",
            "employment": {"start_date": "2024-09-01T00:00:00",
                "salary": {"start_date": "2025-07-01T00:00:00", "hour_wage": 18.24, "month_wage": 2846, "yearly_wage": 30736.677}}
        });
        let new = json!({
            "id": "e1", "first_name": "Anna", "yearly_wage": 30421.0, "dt_update": "2026-01-02T10:00:00.000001",
            "employment": {"start_date": "2024-09-01T00:00:00",
                "salary": {"start_date": "2026-01-01T00:00:00", "hour_wage": 18.97, "month_wage": 2960.0, "yearly_wage": 31968.0}}
        });
        assert_eq!(
            rows(&diff(&old, &new)),
            vec![
                (
                    "$.employment.salary.hour_wage".into(),
                    Some(json!(18.24)),
                    Some(json!(18.97))
                ),
                (
                    "$.employment.salary.month_wage".into(),
                    Some(json!(2846)),
                    Some(json!(2960))
                ),
                (
                    "$.employment.salary.start_date".into(),
                    Some(json!("2025-07-01T00:00:00")),
                    Some(json!("2026-01-01T00:00:00"))
                ),
                (
                    "$.employment.salary.yearly_wage".into(),
                    Some(json!(30736.677)),
                    Some(json!(31968))
                ),
                (
                    "$.yearly_wage".into(),
                    Some(json!(29252.42)),
                    Some(json!(30421))
                ),
            ]
        );
    }

    #[test]
    fn employments_envelope_with_new_salary_period_and_previous_closed() {
        let old = json!({"data": [{"id": "e1", "start_date": "2024-09-01T00:00:00", "end_date": null,
        "salary": [
            {"id": "s1", "start_date": "2024-09-01T00:00:00", "end_date": null, "month_wage": 2846, "is_active": true}
        ]}]});
        let new = json!({"data": [{"id": "e1", "start_date": "2024-09-01T00:00:00",
        "salary": [
            {"id": "s2", "start_date": "2026-01-01T00:00:00", "end_date": null, "month_wage": 2960, "is_active": true},
            {"id": "s1", "start_date": "2024-09-01T00:00:00", "end_date": "2025-12-31T00:00:00", "month_wage": 2846.0, "is_active": false}
        ]}]});
        assert_eq!(
            rows(&diff(&old, &new)),
            vec![
                (
                    "$.data[id=e1].salary[id=s1].end_date".into(),
                    None,
                    Some(json!("2025-12-31T00:00:00"))
                ),
                (
                    "$.data[id=e1].salary[id=s1].is_active".into(),
                    Some(json!(true)),
                    Some(json!(false))
                ),
                (
                    "$.data[id=e1].salary[id=s2]".into(),
                    None,
                    Some(
                        json!({"id": "s2", "start_date": "2026-01-01T00:00:00", "month_wage": 2960, "is_active": true})
                    )
                ),
            ]
        );
    }
}
