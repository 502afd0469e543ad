//! Cron schedules as pg_cron 1.4 understands them (vixie cron syntax, evaluated in UTC):
//! validation with messages a DBA can act on, a plain-English description, and next-run times.
//! The syntax check is ours, so that everything accepted here is accepted by pg_cron; the
//! next-run search is croner's.

use chrono::{DateTime, Duration, Timelike, Utc};

mod describe;
mod parse;

pub use parse::parse;

/// An invalid cron expression; the message says what is wrong and what is allowed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct CronError(pub String);

/// A validated cron schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    expression: String,
    fields: [Field; 5],
    /// Day-of-month and day-of-week combine with AND (vixie cron: when either field starts with
    /// `*`) rather than OR (both restricted).
    days_and: bool,
    cron: croner::Cron,
}

#[derive(Clone, Debug)]
struct Field {
    /// The field as written (after macro expansion).
    text: String,
    items: Vec<Item>,
    /// Bit v set when value v matches; day-of-week 7 is folded into 0.
    bits: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    /// `*` or `*/step`.
    All { step: u32 },
    /// `n` (lo == hi, step 1), `a-b` or `a-b/step`.
    Range { lo: u32, hi: u32, step: u32 },
}

struct Spec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of `names[0]`.
    names_base: u32,
}

const MINUTE: usize = 0;
const HOUR: usize = 1;
const DOM: usize = 2;
const MONTH: usize = 3;
const DOW: usize = 4;

const MONTH_NAMES: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DOW_NAMES: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_FULL: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DOW_FULL: &[&str] = &[
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const SPECS: [Spec; 5] = [
    Spec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    Spec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    Spec {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    Spec {
        name: "month",
        min: 1,
        max: 12,
        names: MONTH_NAMES,
        names_base: 1,
    },
    Spec {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: DOW_NAMES,
        names_base: 0,
    },
];

const FIELDS_HINT: &str = "minute hour day-of-month month day-of-week";

const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Schedule {
    /// The expression as given, with whitespace normalised to single spaces.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first run strictly after `t` (whole minutes, UTC); `None` if there is none.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.with_nanosecond(0)?;
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The gap between the next two runs after `from`; zero if the schedule has no two runs.
    pub fn typical_interval(&self, from: DateTime<Utc>) -> Duration {
        self.next_after(from)
            .and_then(|a| Some(self.next_after(a)? - a))
            .unwrap_or_else(Duration::zero)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, from: &str) -> String {
        parse(expr)
            .unwrap()
            .next_after(utc(from))
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    }

    fn error(expr: &str) -> String {
        parse(expr).unwrap_err().to_string()
    }

    fn describe(expr: &str) -> String {
        parse(expr).unwrap().describe()
    }

    const FROM: &str = "2026-11-25T14:53:00Z";

    #[test]
    fn invalid_expressions_are_rejected_with_what_is_wrong_and_allowed() {
        let cases: &[(&str, &str)] = &[
            ("", "cron expression is empty; expected 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 */6 * * *\""),
            ("   ", "cron expression is empty; expected 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 */6 * * *\""),
            ("0 0 * * * *", "cron expression must have 5 fields (minute hour day-of-month month day-of-week), got 6"),
            ("0 0 * *", "cron expression must have 5 fields (minute hour day-of-month month day-of-week), got 4"),
            ("0 24 * * *", "hour value 24 is out of range 0-23"),
            ("60 * * * *", "minute value 60 is out of range 0-59"),
            ("0 0 0 * *", "day-of-month value 0 is out of range 1-31"),
            ("0 0 32 * *", "day-of-month value 32 is out of range 1-31"),
            ("0 0 * 13 *", "month value 13 is out of range 1-12"),
            ("0 0 * * 8", "day-of-week value 8 is out of range 0-7"),
            ("0 99999999999 * * *", "hour value 99999999999 is out of range 0-23"),
            ("*/0 * * * *", "step must be at least 1 in \"*/0\""),
            ("0 1-10/0 * * *", "step must be at least 1 in \"1-10/0\""),
            ("*/60 * * * *", "step 60 in \"*/60\" is too large for the minute field (at most 59)"),
            ("*/x * * * *", "step \"x\" in \"*/x\" is not a number"),
            ("*/ * * * *", "step \"\" in \"*/\" is not a number"),
            ("*/2/3 * * * *", "more than one step in minute field element \"*/2/3\""),
            ("5/15 * * * *", "a step is only allowed after * or a range, got \"5/15\" in minute field (write */N or a-b/N)"),
            ("5-2 * * * *", "range 5-2 in minute field is reversed"),
            ("0 0 * * fri-sun", "range fri-sun in day-of-week field is reversed"),
            ("1-2-3 * * * *", "invalid range \"1-2-3\" in minute field; expected a-b, e.g. 1-5"),
            ("5- * * * *", "missing number in minute field element \"5-\""),
            ("1,,2 * * * *", "empty list element in minute field \"1,,2\""),
            ("0 0 1 foo *", "unknown month name \"foo\" (allowed: jan-dec or 1-12)"),
            ("0 0 1 january *", "unknown month name \"january\" (allowed: jan-dec or 1-12)"),
            ("0 0 * * monday", "unknown day-of-week name \"monday\" (allowed: sun-sat or 0-7)"),
            ("0 noon * * *", "hour value \"noon\" is not a number (allowed: 0-23)"),
            ("0 0 L * *", "day-of-month value \"L\" is not a number (allowed: 1-31)"),
            ("0 0 ? * *", "unexpected character '?' in day-of-month field \"?\"; allowed: digits, '*', ',', '-' and '/'"),
            ("0 0 * * 5#2", "unexpected character '#' in day-of-week field \"5#2\"; allowed: digits, names, '*', ',', '-' and '/'"),
            ("0 0 * * *\u{0}", "unexpected character '\\u{0}' in day-of-week field \"*\\u{0}\"; allowed: digits, names, '*', ',', '-' and '/'"),
            ("1* * * * *", "unexpected character '*' in minute field element \"1*\"; expected a number"),
            ("0 0 * *-2 *", "unexpected character '*' in month field element \"*-2\"; expected a number or a name"),
            ("0 0 $ * *", "unexpected character '$' in day-of-month field \"$\"; allowed: digits, '*', ',', '-' and '/'"),
            ("@reboot", "@reboot is not supported: pg_cron only runs jobs on a time schedule"),
            ("@every_5m", "unknown macro \"@every_5m\"; supported: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"),
            ("@daily 5", "macro @daily takes no fields, got \"@daily 5\""),
            ("30 seconds", "seconds schedules (\"30 seconds\") are not supported by pg_cron 1.4; use a 5-field cron expression (the finest is \"* * * * *\", every minute)"),
            ("0 0 * * * é", "cron expression contains the non-ASCII character 'é'; only digits, month and day names (jan-dec, sun-sat), '*', ',', '-', '/' and @macros are allowed"),
            ("０ * * * *", "cron expression contains the non-ASCII character '０'; only digits, month and day names (jan-dec, sun-sat), '*', ',', '-', '/' and @macros are allowed"),
            ("0 0 30 2 *", "schedule never runs: day-of-month 30 never occurs in month 2"),
            ("0 0 31 apr,jun *", "schedule never runs: day-of-month 31 never occurs in month apr,jun"),
            ("every 6 hours", "cron expression must have 5 fields (minute hour day-of-month month day-of-week), got 3"),
        ];
        for (expr, message) in cases {
            assert_eq!(&error(expr), message, "for {expr:?}");
        }
    }

    #[test]
    fn valid_expressions_are_accepted() {
        for expr in [
            "* * * * *",
            "0 */6 * * *",
            "0,30 8-18 * * 1-5",
            "0 0 1-31/2 * *",
            "0 0 * * 0-7",
            "0 0 * JAN-mar SUN",
            "0 0 1 * *",
            "@yearly",
            "@ANNUALLY",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            "0 0 29 2 *",
            "0 0 30 2 1",
            "*/59 * * * *",
        ] {
            assert!(parse(expr).is_ok(), "{expr:?}: {:?}", parse(expr).err());
        }
    }

    #[test]
    fn expression_is_kept_with_whitespace_normalised() {
        assert_eq!(
            parse("  0  */6 * *\t*\n").unwrap().expression(),
            "0 */6 * * *"
        );
        assert_eq!(parse("@Daily").unwrap().expression(), "@Daily");
    }

    #[test]
    fn next_after_computes_the_next_run_in_utc() {
        assert_eq!(next("0 */6 * * *", FROM), "2026-11-25T18:00:00+00:00");
        assert_eq!(next("0 2 * * *", FROM), "2026-11-26T02:00:00+00:00");
        assert_eq!(next("30 9 * * mon", FROM), "2026-11-30T09:30:00+00:00");
        assert_eq!(next("0 0 1 jan *", FROM), "2027-01-01T00:00:00+00:00");
        assert_eq!(next("0 0 29 feb *", FROM), "2028-02-29T00:00:00+00:00");
        assert_eq!(next("*/15 * * * *", FROM), "2026-11-25T15:00:00+00:00");
        assert_eq!(next("* * * * *", FROM), "2026-11-25T14:54:00+00:00");
        assert_eq!(next("0 12 * 2 *", FROM), "2027-02-01T12:00:00+00:00");
        assert_eq!(next("0 0 31 * *", FROM), "2026-12-31T00:00:00+00:00");
        assert_eq!(next("@weekly", FROM), "2026-11-29T00:00:00+00:00");
        assert_eq!(next("@monthly", FROM), "2026-12-01T00:00:00+00:00");
        assert_eq!(next("@hourly", FROM), "2026-11-25T15:00:00+00:00");
    }

    #[test]
    fn day_of_week_seven_and_zero_are_sunday() {
        assert_eq!(next("0 0 * * 7", FROM), "2026-11-29T00:00:00+00:00");
        assert_eq!(next("0 0 * * 0", FROM), "2026-11-29T00:00:00+00:00");
        assert_eq!(next("0 0 * * sun", FROM), "2026-11-29T00:00:00+00:00");
    }

    #[test]
    fn restricted_day_of_month_and_day_of_week_match_either() {
        // The 13th OR any Friday, as in vixie cron and pg_cron.
        let s = parse("0 0 13 * 5").unwrap();
        let mut t = utc(FROM);
        let mut runs = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t).unwrap();
            runs.push(t.date_naive().to_string());
        }
        assert_eq!(
            runs,
            vec!["2026-11-27", "2026-12-04", "2026-12-11", "2026-12-13"]
        );
    }

    #[test]
    fn starred_day_field_makes_days_match_both_like_vixie_cron() {
        // Day-of-month starts with '*', so odd days that are also Mondays.
        assert_eq!(next("0 0 */2 * 1", FROM), "2026-12-07T00:00:00+00:00");
        assert_eq!(next("0 0 1 * */7", FROM), "2027-08-01T00:00:00+00:00");
    }

    #[test]
    fn next_after_is_strictly_after() {
        assert_eq!(
            next("0 */6 * * *", "2026-11-25T18:00:00Z"),
            "2026-11-26T00:00:00+00:00"
        );
        assert_eq!(
            next("0 */6 * * *", "2026-11-25T17:59:59.999Z"),
            "2026-11-25T18:00:00+00:00"
        );
        assert_eq!(
            next("0 */6 * * *", "2026-11-25T18:00:00.5Z"),
            "2026-11-26T00:00:00+00:00"
        );
    }

    #[test]
    fn typical_interval_is_the_gap_between_the_next_two_runs() {
        let from = utc(FROM);
        assert_eq!(
            parse("0 */6 * * *").unwrap().typical_interval(from),
            Duration::hours(6)
        );
        assert_eq!(
            parse("*/15 * * * *").unwrap().typical_interval(from),
            Duration::minutes(15)
        );
        assert_eq!(
            parse("0 2 * * *").unwrap().typical_interval(from),
            Duration::days(1)
        );
        assert_eq!(
            parse("30 9 * * mon").unwrap().typical_interval(from),
            Duration::days(7)
        );
        assert_eq!(
            parse("0 0 1 * *").unwrap().typical_interval(from),
            Duration::days(31)
        );
        assert_eq!(
            parse("0 8,17 * * *")
                .unwrap()
                .typical_interval(Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap()),
            Duration::hours(15)
        );
    }

    #[test]
    fn describe_common_shapes_in_plain_english() {
        assert_eq!(describe("* * * * *"), "every minute");
        assert_eq!(describe("*/1 * * * *"), "every minute");
        assert_eq!(describe("*/15 * * * *"), "every 15 minutes");
        assert_eq!(describe("30 * * * *"), "hourly at minute 30");
        assert_eq!(describe("@hourly"), "hourly at minute 0");
        assert_eq!(describe("0 */6 * * *"), "every 6 hours");
        assert_eq!(describe("15 */2 * * *"), "every 2 hours at minute 15");
        assert_eq!(describe("0 2 * * *"), "daily at 02:00 UTC");
        assert_eq!(describe("@daily"), "daily at 00:00 UTC");
        assert_eq!(describe("30 9 * * 1"), "weekly on Monday at 09:30 UTC");
        assert_eq!(describe("30 9 * * MON"), "weekly on Monday at 09:30 UTC");
        assert_eq!(describe("0 0 * * 7"), "weekly on Sunday at 00:00 UTC");
        assert_eq!(describe("@weekly"), "weekly on Sunday at 00:00 UTC");
        assert_eq!(describe("0 0 1 * *"), "monthly on day 1 at 00:00 UTC");
        assert_eq!(describe("@monthly"), "monthly on day 1 at 00:00 UTC");
        assert_eq!(describe("0 0 1 1 *"), "yearly on January 1 at 00:00 UTC");
        assert_eq!(
            describe("0 8 * * 1-5"),
            "every weekday (Monday-Friday) at 08:00 UTC"
        );
        assert_eq!(
            describe("0 8 * * mon-fri"),
            "every weekday (Monday-Friday) at 08:00 UTC"
        );
    }

    #[test]
    fn describe_falls_back_to_a_faithful_generic_sentence() {
        assert_eq!(
            describe("5 1,13 1-7 * *"),
            "at minute 5 past hours 1,13 on day-of-month 1-7 (cron `5 1,13 1-7 * *`, UTC)"
        );
        assert_eq!(
            describe("0 0 13 * 5"),
            "at minute 0 past hour 0 on day-of-month 13 or day-of-week 5 (cron `0 0 13 * 5`, UTC)"
        );
        assert_eq!(
            describe("0 0 */2 * 1"),
            "at minute 0 past hour 0 on day-of-month */2 and day-of-week 1 (cron `0 0 */2 * 1`, UTC)"
        );
        assert_eq!(
            describe("*/10 9-17 * * 1-5"),
            "every 10 minutes during hours 9-17 on day-of-week 1-5 (cron `*/10 9-17 * * 1-5`, UTC)"
        );
        assert_eq!(
            describe("*/7 * * * *"),
            "at minute */7 (cron `*/7 * * * *`, UTC)"
        );
        assert_eq!(
            describe("0 */5 * * *"),
            "at minute 0 past hours */5 (cron `0 */5 * * *`, UTC)"
        );
        assert_eq!(
            describe("0 12 * jun-aug *"),
            "at minute 0 past hour 12 in month jun-aug (cron `0 12 * jun-aug *`, UTC)"
        );
    }

    #[test]
    fn unrestricted_day_of_month_written_as_a_range_lets_every_day_through() {
        // Neither day field starts with '*', so they are ORed and 1-31 matches every day.
        assert_eq!(describe("0 3 1-31 * 1"), "daily at 03:00 UTC");
        assert_eq!(next("0 3 1-31 * 1", FROM), "2026-11-26T03:00:00+00:00");
    }
}
