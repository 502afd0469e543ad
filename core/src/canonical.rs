//! Canonical form of an API payload: the one representation that is hashed to decide whether a
//! fetched record is a new version. Two payloads that differ only in key order, number spelling
//! (`2846` vs `2846.0`), null-versus-absent fields, the order of id-keyed period arrays or volatile
//! bookkeeping (`dt_update`) have the same canonical form; anything else (including trailing
//! spaces in strings) is content.

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// Keys that are bookkeeping rather than content; dropped at any depth.
pub const VOLATILE_KEYS: &[&str] = &["dt_update"];

/// The canonical form of `v`: object keys sorted, volatile and null-valued keys removed,
/// integral floats written as integers, id-keyed arrays sorted by id.
pub fn canonicalize(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, Value)> = map
                .iter()
                .filter(|(k, v)| !v.is_null() && !VOLATILE_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k, canonicalize(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            // Inserted in sorted order, so the map is sorted whether or not serde_json
            // preserves insertion order.
            let mut out = Map::with_capacity(entries.len());
            for (k, v) in entries {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(canonicalize).collect();
            if is_id_keyed(&items) {
                // Ties (duplicate ids) are broken by content so that the order of the input never
                // leaks into the canonical form.
                items.sort_by_cached_key(|item| {
                    (id_key(item).unwrap_or_default(), serialize_sorted(item))
                });
            }
            Value::Array(items)
        }
        Value::Number(n) => Value::Number(canonical_number(n)),
        other => other.clone(),
    }
}

/// Compact JSON of the canonical form, object keys in byte order.
pub fn canonical_string(v: &Value) -> String {
    serialize_sorted(&canonicalize(v))
}

/// Lowercase hex SHA-256 of [`canonical_string`].
pub fn content_hash(v: &Value) -> String {
    let digest = Sha256::digest(canonical_string(v).as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 0x0f), 16).unwrap_or('0'));
    }
    hex
}

/// The string form of an element's `id` when it is a non-null scalar (string, number, bool).
pub(crate) fn id_key(v: &Value) -> Option<String> {
    match v.as_object()?.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(canonical_number(n).to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// True when every element is an object with a non-null scalar `id` (vacuously true when empty):
/// such arrays are sets of periods keyed by id, not sequences.
pub(crate) fn is_id_keyed(items: &[Value]) -> bool {
    items.iter().all(|item| id_key(item).is_some())
}

const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// A number as its value, not its spelling, for hashes, diffs and ids: `2846`, `2846.0` and
/// `2846.00` are one value, `...456` and `...457` two. Payloads are parsed with serde_json's
/// `arbitrary_precision`, so a number arrives as the text the API wrote; its value is read from
/// that text exactly (any magnitude, any precision), never through an f64.
///
/// The text given to a value is the one releases before 0.4.0 gave it, whenever that text means
/// the same value: an integer as an integer, anything else as the shortest text of the nearest
/// f64. So the hashes of stored versions do not change. Only a number that an f64 cannot hold
/// exactly (more than 15 significant digits, or beyond its range, or an integer of 2^53 or more
/// written as a float) gets its exact decimal text: its hash changes once, where before it
/// could not be told apart from its neighbours.
pub fn plain_number(n: &Number) -> Number {
    let via_f64 = f64_form(n);
    if fits_an_f64(n.as_str()) {
        return via_f64;
    }
    match (Decimal::parse(n.as_str()), Decimal::parse(via_f64.as_str())) {
        (Some(exact), Some(approx)) if exact == approx => via_f64,
        (Some(exact), _) => exact.to_text().parse().unwrap_or(via_f64),
        (None, _) => via_f64,
    }
}

/// The form releases before 0.4.0 gave every number.
fn f64_form(n: &Number) -> Number {
    if let Some(i) = n.as_i64() {
        return Number::from(i);
    }
    if let Some(u) = n.as_u64() {
        return Number::from(u);
    }
    let n = n
        .as_f64()
        .and_then(Number::from_f64)
        .unwrap_or_else(|| n.clone());
    match n.as_f64() {
        // -2^63 (inclusive) to 2^63 (exclusive): exactly the integers an i64 holds.
        Some(f) if f.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&f) => {
            Number::from(f as i64)
        }
        _ => n,
    }
}

/// Whether the text is a plain decimal (no exponent) of at most 15 significant digits: the
/// nearest f64 then prints back as the same value, so the exact reading can be skipped.
fn fits_an_f64(text: &str) -> bool {
    let mut digits = 0;
    let mut leading = true;
    for b in text.bytes() {
        match b {
            b'0' if leading => {}
            b'0'..=b'9' => {
                leading = false;
                digits += 1;
            }
            b'-' | b'.' => {}
            _ => return false,
        }
    }
    digits <= 15
}

/// The exact value of a JSON number's text: `digits` × 10^`exponent`, without leading or
/// trailing zeros (zero is `0` × 10^0, whatever its sign).
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Decimal {
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (
                &rest[..i],
                rest[i + 1..].trim_start_matches('+').parse::<i64>().ok()?,
            ),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all = format!("{int}{frac}");
        let mut exponent = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
        let trimmed = all.trim_start_matches('0');
        let digits = trimmed.trim_end_matches('0');
        if digits.is_empty() {
            return Some(Decimal {
                negative: false,
                digits: "0".into(),
                exponent: 0,
            });
        }
        exponent = exponent.checked_add(i64::try_from(trimmed.len() - digits.len()).ok()?)?;
        Some(Decimal {
            negative,
            digits: digits.to_owned(),
            exponent,
        })
    }

    /// Plain decimal text while the number is within 10^-20 .. 10^40, else scientific.
    fn to_text(&self) -> String {
        let sign = if self.negative { "-" } else { "" };
        let len = self.digits.len() as i64;
        let magnitude = self.exponent + len - 1;
        if !(-20..=40).contains(&magnitude) {
            let (first, rest) = self.digits.split_at(1);
            let dot = if rest.is_empty() { "" } else { "." };
            return format!("{sign}{first}{dot}{rest}e{magnitude}");
        }
        if self.exponent >= 0 {
            format!(
                "{sign}{}{}",
                self.digits,
                "0".repeat(self.exponent as usize)
            )
        } else if -self.exponent < len {
            let (int, frac) = self.digits.split_at((len + self.exponent) as usize);
            format!("{sign}{int}.{frac}")
        } else {
            let zeros = "0".repeat((-self.exponent - len) as usize);
            format!("{sign}0.{zeros}{}", self.digits)
        }
    }
}

fn canonical_number(n: &Number) -> Number {
    plain_number(n)
}

/// Compact JSON with object keys sorted at every depth, independent of the map implementation.
fn serialize_sorted(v: &Value) -> String {
    let mut out = String::new();
    write_sorted(v, &mut out);
    out
}

fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same(a: Value, b: Value) -> bool {
        content_hash(&a) == content_hash(&b)
    }

    #[test]
    fn key_order_does_not_change_the_canonical_string() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":3,"y":2},"b":1}"#).unwrap();
        assert_eq!(canonical_string(&a), r#"{"a":{"x":3,"y":2},"b":1}"#);
        assert_eq!(canonical_string(&a), canonical_string(&b));
    }

    /// The payload keeps the spelling the API sent (it is stored from this Value); the hash does
    /// not see it.
    #[test]
    fn a_numbers_spelling_is_kept_in_the_payload_but_is_not_content() {
        let sent = r#"{"month_wage":2846.50,"hours_per_week":40.0,"yearly_wage":34158.000,"big":123456789012345678901234567890}"#;
        let a: Value = serde_json::from_str(sent).unwrap();
        assert_eq!(a.to_string(), sent);
        let b: Value = serde_json::from_str(
            r#"{"month_wage":2846.5,"hours_per_week":40,"yearly_wage":34158,"big":1.2345678901234567890123456789e29}"#,
        )
        .unwrap();
        assert_eq!(canonical_string(&a), canonical_string(&b));
        assert!(same(a, b));
        let other: Value = serde_json::from_str(r#"{"month_wage":2846.51}"#).unwrap();
        assert!(!same(other, json!({"month_wage": 2846.5})));
        // Beyond an f64 (serde_json refused such a body before): read, and content. serde_json
        // writes it back as 1e+400, the same number for jsonb.
        let huge: Value = serde_json::from_str(r#"{"w":1e400}"#).unwrap();
        let huger: Value = serde_json::from_str(r#"{"w":1e401}"#).unwrap();
        assert!(!same(huge, huger));
    }

    #[test]
    fn integral_float_equals_integer() {
        let a: Value = serde_json::from_str(r#"{"month_wage":2846.0}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"month_wage":2846}"#).unwrap();
        assert_eq!(canonical_string(&a), r#"{"month_wage":2846}"#);
        assert!(same(a, b));
    }

    #[test]
    fn fractional_float_is_kept_exactly() {
        let v: Value =
            serde_json::from_str(r#"{"hour_wage":18.24,"yearly_wage":30736.677}"#).unwrap();
        assert_eq!(
            canonical_string(&v),
            r#"{"hour_wage":18.24,"yearly_wage":30736.677}"#
        );
        assert!(!same(json!(18.24), json!(18)));
    }

    #[test]
    fn negative_zero_becomes_zero() {
        let v: Value = serde_json::from_str("-0.0").unwrap();
        assert_eq!(canonical_string(&v), "0");
        assert_eq!(canonicalize(&v), json!(0));
    }

    #[test]
    fn float_outside_i64_range_stays_a_float() {
        let v: Value = serde_json::from_str("1e20").unwrap();
        assert_eq!(canonical_string(&v), "1e+20");
        // 2^63 is no f64 text's value (9.223372036854776e+18 is 9223372036854776000): exact.
        let two_pow_63: Value = serde_json::from_str("9223372036854775808.0").unwrap();
        assert_eq!(canonical_string(&two_pow_63), "9223372036854775808");
        let min: Value = serde_json::from_str("-9223372036854775808.0").unwrap();
        assert_eq!(canonicalize(&min), json!(i64::MIN));
    }

    /// Values, not f64 approximations: the hashes and diffs see a change in the 17th
    /// significant digit, of a 23-digit integer, or below an f64's smallest value.
    #[test]
    fn numbers_compare_by_their_exact_value() {
        let n = |t: &str| -> Value { serde_json::from_str(t).unwrap() };
        for (a, b) in [
            ("2846.1234567890123456", "2846.1234567890123457"),
            ("12345678901234567890123", "12345678901234567890124"),
            ("-1e-400", "0"),
            ("1e-400", "-1e-400"),
            ("9007199254740993", "9007199254740992"),
        ] {
            assert!(!same(n(a), n(b)), "{a} and {b} are different values");
        }
        for (a, b) in [
            ("2846.1234567890123456", "2846.12345678901234560"),
            ("12345678901234567890123", "1.2345678901234567890123e22"),
            ("-1e-400", "-0.1e-399"),
            ("2846", "2846.000000000000000000"),
            ("0.1", "1e-1"),
        ] {
            assert!(same(n(a), n(b)), "{a} and {b} are one value");
        }
        assert_eq!(
            canonical_string(&n("12345678901234567890123")),
            "12345678901234567890123"
        );
        assert_eq!(
            canonical_string(&n("2846.12345678901234560")),
            "2846.1234567890123456"
        );
        assert_eq!(canonical_string(&n("-1e-400")), "-1e-400");
    }

    /// Every number an f64 holds exactly keeps the text releases before 0.4.0 hashed.
    #[test]
    fn hashes_of_ordinary_numbers_are_those_of_earlier_releases() {
        for (text, before) in [
            ("2846.50", "2846.5"),
            ("30736.677", "30736.677"),
            ("40.0", "40"),
            ("1e20", "1e+20"),
            ("0.000001", "1e-6"),
            ("-0.0", "0"),
            ("18446744073709551615", "18446744073709551615"),
            ("123456789012345.6", "123456789012345.6"),
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(canonical_string(&v), before, "{text}");
        }
    }

    /// The same, over many numbers: random f64s written with 15 significant digits, and decimals
    /// of up to 15 digits with up to 6 zeros after them, get exactly the form releases before
    /// 0.4.0 gave them.
    #[test]
    fn the_f64_form_is_kept_for_every_number_an_f64_holds() {
        let mut z: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            z
        };
        for _ in 0..20_000 {
            let f = f64::from_bits(next());
            // An integral f64 of 2^53 or more is printed with fewer digits than its value has
            // (6.834600931303167e+16 for 68346009313031672), and the form before 0.4.0 wrote
            // that f64's value as the integer: another value than the text's. Those get their
            // exact text now (the one case where a stored hash changes, see plain_number).
            // A subnormal holds fewer than 15 digits: exact text too.
            if !f.is_normal()
                || !(f / 1e300).is_normal()
                || (f.fract() == 0.0 && f.abs() >= 9_007_199_254_740_992.0)
            {
                continue;
            }
            // 15 significant digits: what an f64 holds of a decimal.
            for text in [format!("{f:.14e}"), format!("{:.14e}", f / 1e300)] {
                let n: Number = text.parse().unwrap();
                assert_eq!(plain_number(&n), f64_form(&n), "{text}");
            }
            let digits = next() % 1_000_000_000_000_000;
            let scale = (next() % 16) as usize;
            let zeros = "0".repeat((next() % 7) as usize);
            let text = format!("{digits}");
            let text = if scale > 0 && scale < text.len() {
                format!(
                    "{}.{}{zeros}",
                    &text[..text.len() - scale],
                    &text[text.len() - scale..]
                )
            } else {
                text
            };
            let n: Number = text.parse().unwrap();
            assert_eq!(plain_number(&n), f64_form(&n), "{text}");
        }
    }

    #[test]
    fn large_unsigned_integer_is_kept() {
        let v: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(canonical_string(&v), "18446744073709551615");
    }

    #[test]
    fn dt_update_is_ignored_at_top_level_and_nested() {
        let a = json!({"id": "e1", "dt_update": "2025-07-02T14:22:15.133794",
                       "employment": {"dt_update": "x", "start_date": "2024-09-01T00:00:00"}});
        let b = json!({"id": "e1", "dt_update": "2025-08-01T09:00:00.000001",
                       "employment": {"start_date": "2024-09-01T00:00:00"}});
        assert_eq!(
            canonical_string(&a),
            r#"{"employment":{"start_date":"2024-09-01T00:00:00"},"id":"e1"}"#
        );
        assert!(same(a, b));
    }

    #[test]
    fn null_and_absent_are_the_same() {
        assert!(same(json!({"a": 1, "end_date": null}), json!({"a": 1})));
        assert!(same(json!({"employment": null}), json!({})));
        assert_eq!(canonical_string(&json!({"x": {"y": null}})), r#"{"x":{}}"#);
    }

    #[test]
    fn nulls_inside_plain_arrays_are_content() {
        assert_eq!(canonical_string(&json!([null, 1])), "[null,1]");
        assert!(!same(json!([null, 1]), json!([1])));
    }

    #[test]
    fn id_keyed_arrays_are_order_insensitive() {
        let a =
            json!({"salary": [{"id": "p2", "month_wage": 3000}, {"id": "p1", "month_wage": 2846}]});
        let b = json!({"salary": [{"id": "p1", "month_wage": 2846.0}, {"id": "p2", "month_wage": 3000}]});
        assert_eq!(
            canonical_string(&a),
            r#"{"salary":[{"id":"p1","month_wage":2846},{"id":"p2","month_wage":3000}]}"#
        );
        assert!(same(a, b));
    }

    #[test]
    fn numeric_ids_sort_by_their_string_form() {
        let v = json!([{"id": 10}, {"id": 9}, {"id": 1.0}]);
        assert_eq!(canonical_string(&v), r#"[{"id":1},{"id":10},{"id":9}]"#);
    }

    #[test]
    fn duplicate_ids_sort_by_content_so_input_order_does_not_matter() {
        let a = json!([{"id": "p", "v": 2}, {"id": "p", "v": 1}]);
        let b = json!([{"id": "p", "v": 1}, {"id": "p", "v": 2}]);
        assert!(same(a, b));
    }

    #[test]
    fn arrays_without_ids_are_order_sensitive() {
        assert!(!same(json!([1, 2]), json!([2, 1])));
        assert!(!same(
            json!([{"n": 1}, {"n": 2}]),
            json!([{"n": 2}, {"n": 1}])
        ));
        // One element without an id makes the whole array a sequence.
        assert!(!same(
            json!([{"id": "a"}, {"id": "b"}, {"n": 1}]),
            json!([{"id": "b"}, {"id": "a"}, {"n": 1}])
        ));
        assert!(!same(
            json!([{"id": null}, {"id": "a"}]),
            json!([{"id": "a"}, {"id": null}])
        ));
    }

    #[test]
    fn trailing_spaces_in_strings_are_content() {
        assert!(!same(
            json!({"street": "Lange Gracht "}),
            json!({"street": "Lange Gracht"})
        ));
        assert_eq!(
            canonical_string(&json!({"street": "Lange Gracht "})),
            r#"{"street":"Lange Gracht "}"#
        );
    }

    #[test]
    fn nested_structures_compare_by_content() {
        let a = json!({"data": [{"id": "e1", "hours": [{"id": "h2", "hours_per_week": 32.0}, {"id": "h1", "end_date": null}]}]});
        let b = json!({"data": [{"hours": [{"id": "h1"}, {"hours_per_week": 32, "id": "h2"}], "id": "e1"}]});
        assert!(same(a.clone(), b));
        let c = json!({"data": [{"id": "e1", "hours": [{"id": "h1"}, {"hours_per_week": 32.5, "id": "h2"}]}]});
        assert!(!same(a, c));
    }

    #[test]
    fn real_employee_record_is_canonicalised() {
        let received: Value = serde_json::from_str(
            r#"{
  "id": "3f0c9a52-uuid", "administration_id": "company uuid", "employee_type_id": 3,
  "employee_number": 93, "first_name": "Anna", "surname": "Jansen", "surname_prefix": "",
  "initials": "A.", "gender": "female", "date_of_birth": "1996-09-17T00:00:00",
  "street": "Lange Gracht ", "housenumber": "50", "zipcode": "2611AB", "city": "Delft",
  "country_code": "NL", "iban": "NL00BANK0123456789", "email": "anna@example.org",
  "phone_number": "+31 6 12345678", "status": "active", "yearly_wage": 29252.42,
  "dt_create": "0001-01-01T00:00:00", "dt_update": "2025-07-02T14:22:15.133794",
  "employment": {
    "start_date": "2024-09-01T00:00:00", "end_date": "2025-11-09T00:00:00",
    "contract": {"start_date": "2024-11-20T00:00:00", "end_date": "2025-11-09T00:00:00",
                 "hours_per_week": 30, "max_hours": null, "min_hours": null,
                 "days_per_week": 5, "employee_type": "parttime"},
    "tax_details": {"start_date": "2024-09-01T00:00:00", "is_reduction_applied": true},
    "salary": {"start_date": "2025-07-01T00:00:00", "hour_wage": 18.24,
               "month_wage": 2846, "yearly_wage": 30736.677}
  }
}"#,
        )
        .unwrap();
        let expected = concat!(
            r#"{"administration_id":"company uuid","city":"Delft","country_code":"NL","#,
            r#""date_of_birth":"1996-09-17T00:00:00","dt_create":"0001-01-01T00:00:00","#,
            r#""email":"anna@example.org","employee_number":93,"employee_type_id":3,"#,
            r#""employment":{"contract":{"days_per_week":5,"employee_type":"parttime","#,
            r#""end_date":"2025-11-09T00:00:00","hours_per_week":30,"start_date":"2024-11-20T00:00:00"},"#,
            r#""end_date":"2025-11-09T00:00:00","salary":{"hour_wage":18.24,"month_wage":2846,"#,
            r#""start_date":"2025-07-01T00:00:00","yearly_wage":30736.677},"start_date":"2024-09-01T00:00:00","#,
            r#""tax_details":{"is_reduction_applied":true,"start_date":"2024-09-01T00:00:00"}},"#,
            r#""first_name":"Anna","gender":"female","housenumber":"50","iban":"NL00BANK0123456789","#,
            r#""id":"3f0c9a52-uuid","initials":"A.","phone_number":"+31 6 12345678","status":"active","#,
            r#""street":"Lange Gracht ","surname":"Jansen","surname_prefix":"","yearly_wage":29252.42,"#,
            r#""zipcode":"2611AB"}"#
        );
        assert_eq!(canonical_string(&received), expected);

        let mut resent = received.clone();
        resent["dt_update"] = json!("2025-09-30T08:00:00.5");
        resent["employment"]["salary"]["month_wage"] = json!(2846.0);
        assert_eq!(content_hash(&resent), content_hash(&received));
    }

    #[test]
    fn canonicalize_is_idempotent() {
        let v = json!({"b": [{"id": "2"}, {"id": "1", "x": 1.0}], "a": null, "dt_update": 1});
        let once = canonicalize(&v);
        assert_eq!(canonicalize(&once), once);
    }

    #[test]
    fn content_hash_is_stable() {
        // sha256 of the bytes {"a":1}
        assert_eq!(
            content_hash(&json!({"dt_update": "now", "a": 1.0})),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
        assert_eq!(content_hash(&json!({"a": 1})).len(), 64);
    }
}
