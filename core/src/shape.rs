//! Type checks of the fields the views and the timeline read. A record that fails them is still
//! stored verbatim (schema drift must never fail a sync); the sync logs a warning naming the
//! employee and the field so a DBA knows why a column reads NULL.

use serde_json::Value;

#[derive(Clone, Copy)]
enum Want {
    Text,
    Number,
    Date,
}

impl Want {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Want::Text => v.is_string(),
            Want::Number => v.is_number(),
            Want::Date => v.as_str().is_some_and(|s| {
                crate::model::parse_api_date(v).is_some() || s.starts_with("0001-01-01")
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Want::Text => "a string",
            Want::Number => "a number",
            Want::Date => "a date (YYYY-MM-DDT00:00:00)",
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks `fields` of `obj` (absent or null is always fine) and appends problems.
fn check(obj: &Value, prefix: &str, fields: &[(&str, Want)], out: &mut Vec<String>) {
    for (name, want) in fields {
        match obj.get(name) {
            None | Some(Value::Null) => {}
            Some(v) if want.accepts(v) => {}
            Some(v) => out.push(format!(
                "{prefix}{name} is {}, expected {}",
                kind_of(v),
                want.name()
            )),
        }
    }
}

fn object_or_null(v: Option<&Value>, path: &str, out: &mut Vec<String>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Object(_)) => true,
        Some(other) => {
            out.push(format!("{path} is {}, expected an object", kind_of(other)));
            false
        }
    }
}

/// Problems in an employee record (list item or detail).
pub fn check_employee(record: &Value) -> Vec<String> {
    let mut out = Vec::new();
    use Want::*;
    check(
        record,
        "",
        &[
            ("employee_number", Number),
            ("first_name", Text),
            ("surname", Text),
            ("status", Text),
            ("email", Text),
            ("date_of_birth", Date),
            ("yearly_wage", Number),
        ],
        &mut out,
    );
    if object_or_null(record.get("employment"), "employment", &mut out) {
        let e = &record["employment"];
        check(
            e,
            "employment.",
            &[("start_date", Date), ("end_date", Date)],
            &mut out,
        );
        if object_or_null(e.get("contract"), "employment.contract", &mut out) {
            check(
                &e["contract"],
                "employment.contract.",
                &[
                    ("start_date", Date),
                    ("end_date", Date),
                    ("hours_per_week", Number),
                    ("days_per_week", Number),
                    ("employee_type", Text),
                ],
                &mut out,
            );
        }
        if object_or_null(e.get("salary"), "employment.salary", &mut out) {
            check(
                &e["salary"],
                "employment.salary.",
                &[
                    ("start_date", Date),
                    ("hour_wage", Number),
                    ("month_wage", Number),
                    ("yearly_wage", Number),
                ],
                &mut out,
            );
        }
    }
    out
}

/// Problems in an `/employments` body (already known to have a `data` array).
pub fn check_employments(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    use Want::*;
    let items = body
        .get("data")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        let at = format!("data[{i}].");
        if !item.is_object() {
            out.push(format!(
                "data[{i}] is {}, expected an object",
                kind_of(item)
            ));
            continue;
        }
        check(
            item,
            &at,
            &[("id", Text), ("start_date", Date), ("end_date", Date)],
            &mut out,
        );
        let periods: [(&str, &[(&str, Want)]); 3] = [
            (
                "salary",
                &[
                    ("start_date", Date),
                    ("end_date", Date),
                    ("hour_wage", Number),
                    ("month_wage", Number),
                    ("yearly_wage", Number),
                ],
            ),
            (
                "hours",
                &[
                    ("start_date", Date),
                    ("end_date", Date),
                    ("hours_per_week", Number),
                    ("days_per_week", Number),
                ],
            ),
            (
                "contracts",
                &[
                    ("start_date", Date),
                    ("end_date", Date),
                    ("contract_duration", Text),
                ],
            ),
        ];
        for (list, fields) in periods {
            match item.get(list) {
                None | Some(Value::Null) => {}
                Some(Value::Array(ps)) => {
                    for (j, p) in ps.iter().enumerate() {
                        check(p, &format!("{at}{list}[{j}]."), fields, &mut out);
                    }
                }
                Some(other) => out.push(format!(
                    "{at}{list} is {}, expected an array",
                    kind_of(other)
                )),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_well_formed_record_has_no_problems() {
        let r = json!({"id":"a","employee_number":93,"status":"active","date_of_birth":"1996-09-17T00:00:00",
            "dt_create":"0001-01-01T00:00:00","yearly_wage":29252.42,"employment":{"start_date":"2024-09-01T00:00:00",
            "end_date":null,"contract":{"hours_per_week":30,"max_hours":null,"employee_type":"parttime"},
            "salary":{"start_date":"2025-07-01T00:00:00","month_wage":2846}}});
        assert!(check_employee(&r).is_empty());
        assert!(check_employee(&json!({"id":"b","employment":null})).is_empty());
    }

    #[test]
    fn wrong_types_are_named_with_their_path() {
        let r = json!({"id":"a","employment":{"contract":{"hours_per_week":"30"},"salary":{"month_wage":"2846","start_date":"soon"}}});
        assert_eq!(
            check_employee(&r),
            vec![
                "employment.contract.hours_per_week is a string, expected a number",
                "employment.salary.start_date is a string, expected a date (YYYY-MM-DDT00:00:00)",
                "employment.salary.month_wage is a string, expected a number",
            ]
        );
        assert_eq!(
            check_employee(&json!({"employment": 5})),
            vec!["employment is a number, expected an object"]
        );
    }

    #[test]
    fn history_periods_are_checked() {
        let b = json!({"data":[{"id":"e","salary":[{"month_wage":"x"}],"hours":{"a":1},"contracts":[]}, 7]});
        assert_eq!(
            check_employments(&b),
            vec![
                "data[0].salary[0].month_wage is a string, expected a number",
                "data[0].hours is an object, expected an array",
                "data[1] is a number, expected an object",
            ]
        );
    }
}
