//! The syntax pg_cron 1.4 accepts, checked field by field with messages a DBA can act on.

use croner::parser::{CronParser, Seconds, Year};

use super::*;

fn err<T>(msg: impl Into<String>) -> Result<T, CronError> {
    Err(CronError(msg.into()))
}

/// Parses and validates a 5-field cron expression or macro (`@daily`...).
pub fn parse(expr: &str) -> Result<Schedule, CronError> {
    let tokens: Vec<&str> = expr.split_whitespace().collect();
    if tokens.is_empty() {
        return err(format!(
            "cron expression is empty; expected 5 fields ({FIELDS_HINT}), e.g. \"0 */6 * * *\""
        ));
    }
    if let Some(c) = expr.chars().find(|c| !c.is_ascii()) {
        return err(format!(
            "cron expression contains the non-ASCII character '{c}'; only digits, month and \
             day names (jan-dec, sun-sat), '*', ',', '-', '/' and @macros are allowed"
        ));
    }
    let expression = tokens.join(" ");

    let expanded: Vec<&str> = if tokens[0].starts_with('@') {
        let name = tokens[0].to_ascii_lowercase();
        if name == "@reboot" {
            return err("@reboot is not supported: pg_cron only runs jobs on a time schedule");
        }
        let Some((_, fields)) = MACROS.iter().find(|(m, _)| *m == name) else {
            return err(format!(
                "unknown macro \"{}\"; supported: {}",
                tokens[0],
                MACROS
                    .iter()
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if tokens.len() > 1 {
            return err(format!(
                "macro {name} takes no fields, got \"{expression}\""
            ));
        }
        fields.split(' ').collect()
    } else {
        tokens.clone()
    };

    if tokens.len() == 2
        && matches!(
            tokens[1].to_ascii_lowercase().as_str(),
            "second" | "seconds"
        )
    {
        return err(format!(
            "seconds schedules (\"{expression}\") are not supported by pg_cron 1.4; use a \
             5-field cron expression (the finest is \"* * * * *\", every minute)"
        ));
    }
    if expanded.len() != 5 {
        return err(format!(
            "cron expression must have 5 fields ({FIELDS_HINT}), got {}",
            expanded.len()
        ));
    }

    let mut parsed = Vec::with_capacity(5);
    for (text, spec) in expanded.iter().zip(SPECS.iter()) {
        parsed.push(parse_field(text, spec)?);
    }
    let fields: [Field; 5] = parsed
        .try_into()
        .map_err(|_| CronError("internal error: field count".into()))?;
    let days_and = fields[DOM].text.starts_with('*') || fields[DOW].text.starts_with('*');
    check_some_day_exists(&fields, days_and)?;

    let mut pattern: Vec<String> = fields.iter().map(croner_field).collect();
    if days_and && pattern[DOM] != "*" && pattern[DOW] != "*" {
        // croner combines restricted day fields with OR unless the day-of-week carries `+`.
        pattern[DOW].insert(0, '+');
    }
    let pattern = pattern.join(" ");
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .build()
        .parse(&pattern)
        .map_err(|e| {
            CronError(format!(
                "internal error: croner rejected \"{pattern}\": {e}"
            ))
        })?;

    Ok(Schedule {
        expression,
        fields,
        days_and,
        cron,
    })
}

fn parse_field(text: &str, spec: &Spec) -> Result<Field, CronError> {
    let name = spec.name;
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "*,-/".contains(*c)))
    {
        let allowed = if spec.names.is_empty() {
            "digits, '*', ',', '-' and '/'"
        } else {
            "digits, names, '*', ',', '-' and '/'"
        };
        return err(format!(
            "unexpected character '{}' in {name} field \"{}\"; allowed: {allowed}",
            c.escape_default(),
            text.escape_default()
        ));
    }
    let mut items = Vec::new();
    let mut bits = 0u64;
    for elem in text.split(',') {
        if elem.is_empty() {
            return err(format!("empty list element in {name} field \"{text}\""));
        }
        let mut parts = elem.splitn(3, '/');
        let base = parts.next().unwrap_or_default();
        let step = match (parts.next(), parts.next()) {
            (None, _) => None,
            (Some(s), None) => Some(parse_step(s, elem, spec)?),
            (Some(_), Some(_)) => {
                return err(format!(
                    "more than one step in {name} field element \"{elem}\""
                ))
            }
        };
        let item = if base == "*" {
            Item::All {
                step: step.unwrap_or(1),
            }
        } else if let Some((a, b)) = base.split_once('-') {
            if b.contains('-') {
                return err(format!(
                    "invalid range \"{base}\" in {name} field; expected a-b, e.g. 1-5"
                ));
            }
            let lo = parse_value(a, elem, spec)?;
            let hi = parse_value(b, elem, spec)?;
            if lo > hi {
                return err(format!("range {a}-{b} in {name} field is reversed"));
            }
            Item::Range {
                lo,
                hi,
                step: step.unwrap_or(1),
            }
        } else {
            let v = parse_value(base, elem, spec)?;
            if step.is_some() {
                return err(format!(
                    "a step is only allowed after * or a range, got \"{elem}\" in {name} field \
                     (write */N or a-b/N)"
                ));
            }
            Item::Range {
                lo: v,
                hi: v,
                step: 1,
            }
        };
        let (lo, hi, step) = match item {
            Item::All { step } => (spec.min, spec.max, step),
            Item::Range { lo, hi, step } => (lo, hi, step),
        };
        for v in (lo..=hi).step_by(step as usize) {
            let v = if spec.max == 7 && v == 7 { 0 } else { v };
            bits |= 1 << v;
        }
        items.push(item);
    }
    Ok(Field {
        text: text.to_string(),
        items,
        bits,
    })
}

fn parse_step(s: &str, elem: &str, spec: &Spec) -> Result<u32, CronError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!("step \"{s}\" in \"{elem}\" is not a number"));
    }
    let step = s.parse::<u32>().unwrap_or(u32::MAX);
    if step == 0 {
        return err(format!("step must be at least 1 in \"{elem}\""));
    }
    let span = spec.max - spec.min;
    if step > span {
        return err(format!(
            "step {s} in \"{elem}\" is too large for the {} field (at most {span})",
            spec.name
        ));
    }
    Ok(step)
}

fn parse_value(s: &str, elem: &str, spec: &Spec) -> Result<u32, CronError> {
    let name = spec.name;
    let range = format!("{}-{}", spec.min, spec.max);
    if s.is_empty() {
        return err(format!("missing number in {name} field element \"{elem}\""));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
            _ => err(format!("{name} value {s} is out of range {range}")),
        };
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_alphanumeric()) {
        let expected = if spec.names.is_empty() {
            "a number"
        } else {
            "a number or a name"
        };
        return err(format!(
            "unexpected character '{c}' in {name} field element \"{elem}\"; expected {expected}"
        ));
    }
    if spec.names.is_empty() {
        return err(format!(
            "{name} value \"{s}\" is not a number (allowed: {range})"
        ));
    }
    let lower = s.to_ascii_lowercase();
    match spec.names.iter().position(|n| *n == lower) {
        Some(i) => Ok(spec.names_base + i as u32),
        None => {
            let first = spec.names[0];
            let last = spec.names[spec.names.len() - 1];
            let kind = if spec.max == 7 {
                "day-of-week"
            } else {
                "month"
            };
            err(format!(
                "unknown {kind} name \"{s}\" (allowed: {first}-{last} or {range})"
            ))
        }
    }
}

/// Rejects day-of-month/month combinations that never happen (`0 0 30 2 *`), which pg_cron
/// would accept and never run.
fn check_some_day_exists(fields: &[Field; 5], days_and: bool) -> Result<(), CronError> {
    // With OR, any restricted day-of-week lets the schedule run.
    if !days_and {
        return Ok(());
    }
    const MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let possible = (1..=12u32).any(|m| {
        fields[MONTH].bits & (1 << m) != 0
            && (1..=MAX_DAYS[m as usize - 1]).any(|d| fields[DOM].bits & (1 << d) != 0)
    });
    if possible {
        Ok(())
    } else {
        err(format!(
            "schedule never runs: day-of-month {} never occurs in month {}",
            fields[DOM].text, fields[MONTH].text
        ))
    }
}

fn croner_field(f: &Field) -> String {
    if f.items.contains(&Item::All { step: 1 }) {
        return "*".to_string();
    }
    f.items
        .iter()
        .map(|item| match *item {
            Item::All { step } => format!("*/{step}"),
            Item::Range { lo, hi, step: 1 } if lo == hi => lo.to_string(),
            Item::Range { lo, hi, step: 1 } => format!("{lo}-{hi}"),
            Item::Range { lo, hi, step } => format!("{lo}-{hi}/{step}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}
