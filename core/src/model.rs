//! The shared vocabulary of the sync: which endpoint a record came from ([`Kind`]), the types
//! of the changes it can carry ([`ChangeType`]) and how an API date is read.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde_json::Value;

/// Which endpoint a raw payload came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Kind {
    /// The bare employee record (`/employees`, `/employees/{id}`).
    Employee,
    /// The envelope `{"data":[employment...]}` of `/employees/{id}/employments`.
    Employments,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Employee, Kind::Employments];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Employee => "employee",
            Kind::Employments => "employments",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the known kinds or change types.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("unknown {what} \"{value}\"; expected one of: {allowed}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub allowed: String,
}

impl FromStr for Kind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "kind",
                value: s.to_string(),
                allowed: Kind::ALL.map(Kind::as_str).join(", "),
            })
    }
}

/// The type of a detected change, as stored in `employes_changes.change_type`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
    Restored,
    SalaryChange,
    HoursChange,
    ContractChange,
    StatusChange,
    Termination,
    Hired,
    Rehired,
}

impl ChangeType {
    pub const ALL: [ChangeType; 11] = [
        ChangeType::Created,
        ChangeType::Updated,
        ChangeType::Deleted,
        ChangeType::Restored,
        ChangeType::SalaryChange,
        ChangeType::HoursChange,
        ChangeType::ContractChange,
        ChangeType::StatusChange,
        ChangeType::Termination,
        ChangeType::Hired,
        ChangeType::Rehired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
            ChangeType::Restored => "restored",
            ChangeType::SalaryChange => "salary_change",
            ChangeType::HoursChange => "hours_change",
            ChangeType::ContractChange => "contract_change",
            ChangeType::StatusChange => "status_change",
            ChangeType::Termination => "termination",
            ChangeType::Hired => "hired",
            ChangeType::Rehired => "rehired",
        }
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeType {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChangeType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "change type",
                value: s.to_string(),
                allowed: ChangeType::ALL.map(ChangeType::as_str).join(", "),
            })
    }
}

/// The date an API date string starts with (`YYYY-MM-DD`, then anything such as `T00:00:00`).
/// Non-strings, other formats, the sentinel `0001-01-01`, impossible dates (2025-02-30) and year
/// 0000 (PostgreSQL has no year 0: written as an effective date it would fail the batch) give
/// `None`.
pub fn parse_api_date(v: &Value) -> Option<NaiveDate> {
    parse_api_date_str(v.as_str()?)
}

/// [`parse_api_date`] of a string's content.
pub fn parse_api_date_str(s: &str) -> Option<NaiveDate> {
    let prefix = s.get(..10)?;
    let b = prefix.as_bytes();
    let shape_ok = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok || s.as_bytes().get(10).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    // 0001-01-01 is the API's "no date".
    if prefix == "0001-01-01" {
        return None;
    }
    // The shape is checked above: read the digits directly (chrono's format parser costs more
    // than the rest of a timeline event).
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    match num(0..4) {
        0 => None,
        year => NaiveDate::from_ymd_opt(year as i32, num(5..7), num(8..10)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn parse_api_date_reads_the_date_prefix() {
        assert_eq!(
            parse_api_date(&json!("2025-07-01T00:00:00")),
            Some(d("2025-07-01"))
        );
        assert_eq!(
            parse_api_date(&json!("2025-07-02T14:22:15.133794")),
            Some(d("2025-07-02"))
        );
        assert_eq!(parse_api_date(&json!("2025-07-01")), Some(d("2025-07-01")));
    }

    #[test]
    fn parse_api_date_rejects_sentinel_non_strings_and_other_shapes() {
        assert_eq!(parse_api_date(&json!("0001-01-01T00:00:00")), None);
        assert_eq!(parse_api_date(&json!(null)), None);
        assert_eq!(parse_api_date(&json!(20250701)), None);
        assert_eq!(parse_api_date(&json!("2025-7-1")), None);
        assert_eq!(parse_api_date(&json!("2025-02-30T00:00:00")), None);
        assert_eq!(parse_api_date(&json!("01-07-2025")), None);
        assert_eq!(parse_api_date(&json!("2025-07-011")), None);
        assert_eq!(parse_api_date(&json!("")), None);
        // No year 0 in PostgreSQL: an effective date in it would fail the whole batch.
        assert_eq!(parse_api_date(&json!("0000-05-01T00:00:00")), None);
        assert_eq!(parse_api_date(&json!("9999-12-31")), Some(d("9999-12-31")));
    }

    #[test]
    fn kind_and_change_type_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        }
        assert_eq!(Kind::Employments.as_str(), "employments");
        for t in ChangeType::ALL {
            assert_eq!(t.as_str().parse::<ChangeType>(), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        assert_eq!(ChangeType::SalaryChange.as_str(), "salary_change");
        assert_eq!(
            "employe".parse::<Kind>().unwrap_err().to_string(),
            "unknown kind \"employe\"; expected one of: employee, employments"
        );
    }
}
