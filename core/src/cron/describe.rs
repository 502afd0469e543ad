//! A schedule in plain English: "every 6 hours", "daily at 02:00 UTC".

use std::fmt::Write as _;

use super::*;

/// How a field restricts its unit, for descriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Any,
    /// `*/n`.
    Every(u32),
    One(u32),
    Other,
}

/// Which days a schedule runs on.
enum Days<'a> {
    All,
    DomOnly(&'a Field),
    DowOnly(&'a Field),
    Both { and: bool },
}

impl Schedule {
    /// A plain-English description, e.g. "every 6 hours" or "daily at 02:00 UTC".
    pub fn describe(&self) -> String {
        let m = self.shape(MINUTE);
        let h = self.shape(HOUR);
        let month = self.shape(MONTH);
        let days = self.days();
        let at = |hh: u32, mm: u32| format!("{hh:02}:{mm:02} UTC");
        match (m, h, month, &days) {
            (Shape::Any, Shape::Any, Shape::Any, Days::All) => return "every minute".into(),
            (Shape::Every(n), Shape::Any, Shape::Any, Days::All) if 60 % n == 0 => {
                return format!("every {n} minutes");
            }
            (Shape::One(mm), Shape::Any, Shape::Any, Days::All) => {
                return format!("hourly at minute {mm}");
            }
            (Shape::One(mm), Shape::Every(n), Shape::Any, Days::All) if 24 % n == 0 => {
                return if mm == 0 {
                    format!("every {n} hours")
                } else {
                    format!("every {n} hours at minute {mm}")
                };
            }
            (Shape::One(mm), Shape::One(hh), Shape::Any, Days::All) => {
                return format!("daily at {}", at(hh, mm));
            }
            (Shape::One(mm), Shape::One(hh), Shape::Any, Days::DowOnly(f)) => {
                if let Some(d) = single(f.bits) {
                    return format!("weekly on {} at {}", DOW_FULL[d as usize], at(hh, mm));
                }
                if f.bits == 0b11_1110 {
                    return format!("every weekday (Monday-Friday) at {}", at(hh, mm));
                }
            }
            (Shape::One(mm), Shape::One(hh), Shape::Any, Days::DomOnly(f)) => {
                if let Some(d) = single(f.bits) {
                    return format!("monthly on day {d} at {}", at(hh, mm));
                }
            }
            (Shape::One(mm), Shape::One(hh), Shape::One(mo), Days::DomOnly(f)) => {
                if let Some(d) = single(f.bits) {
                    let month = MONTH_FULL[mo as usize - 1];
                    return format!("yearly on {month} {d} at {}", at(hh, mm));
                }
            }
            _ => {}
        }
        self.describe_generic(m, &days)
    }

    fn describe_generic(&self, m: Shape, days: &Days<'_>) -> String {
        let f = &self.fields;
        let mut out = match m {
            Shape::Any => "every minute".to_string(),
            Shape::Every(n) if 60 % n == 0 => format!("every {n} minutes"),
            _ => format!("at minute {}", f[MINUTE].text),
        };
        if self.shape(HOUR) != Shape::Any {
            let unit = if single(f[HOUR].bits).is_some() {
                "hour"
            } else {
                "hours"
            };
            let joiner = if out.starts_with("at ") {
                "past"
            } else {
                "during"
            };
            let _ = write!(out, " {joiner} {unit} {}", f[HOUR].text);
        }
        match days {
            Days::All => {}
            Days::DomOnly(d) => {
                let _ = write!(out, " on day-of-month {}", d.text);
            }
            Days::DowOnly(d) => {
                let _ = write!(out, " on day-of-week {}", d.text);
            }
            Days::Both { and } => {
                let op = if *and { "and" } else { "or" };
                let _ = write!(
                    out,
                    " on day-of-month {} {op} day-of-week {}",
                    f[DOM].text, f[DOW].text
                );
            }
        }
        if self.shape(MONTH) != Shape::Any {
            let _ = write!(out, " in month {}", f[MONTH].text);
        }
        let _ = write!(out, " (cron `{}`, UTC)", self.expression);
        out
    }

    fn shape(&self, i: usize) -> Shape {
        let f = &self.fields[i];
        let spec = &SPECS[i];
        let top = if i == DOW { 6 } else { spec.max };
        let full = (spec.min..=top).fold(0u64, |acc, v| acc | 1 << v);
        if f.bits == full {
            return Shape::Any;
        }
        if let [Item::All { step }] = f.items.as_slice() {
            return Shape::Every(*step);
        }
        single(f.bits).map_or(Shape::Other, Shape::One)
    }

    fn days(&self) -> Days<'_> {
        let dom_any = self.shape(DOM) == Shape::Any;
        let dow_any = self.shape(DOW) == Shape::Any;
        match (dom_any, dow_any) {
            (true, true) => Days::All,
            // With OR, an unrestricted side lets every day through.
            (true, false) | (false, true) if !self.days_and => Days::All,
            (true, false) => Days::DowOnly(&self.fields[DOW]),
            (false, true) => Days::DomOnly(&self.fields[DOM]),
            (false, false) => Days::Both { and: self.days_and },
        }
    }
}

fn single(bits: u64) -> Option<u32> {
    (bits.count_ones() == 1).then(|| bits.trailing_zeros())
}
