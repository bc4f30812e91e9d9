//! WorkFlowEngine time tasks: `getTime` and `calculateTimeDiff`.
//!
//! Itential runs these on moment.js, and their values say so: a time travels as an object
//! `{"time": <text>, "formatString": <moment.js format>}` (what `getTime` gives as `time` and
//! what `calculateTimeDiff` takes), and a difference as a moment.js duration read in several
//! units. The formats here are moment.js's tokens that name a date, a time or an offset
//! (`YYYY YY M MM MMM MMMM D DD Do d dd ddd dddd H HH h hh m mm s ss S... Z ZZ A a X x`, text
//! in `[...]` as written); a format using one of moment.js's other tokens (week numbers,
//! quarters, locale formats such as `LLLL`) ends the task in error naming the token, rather
//! than giving a time other than the one Itential would.
//!
//! The clock is the step's: `getTime` reads the `now` of the step that runs it, so one step
//! gives every task one time and a test can fix it.

use chrono::{
    DateTime, Datelike, Duration as TimeDelta, FixedOffset, Months, NaiveDate, NaiveDateTime,
    NaiveTime, Timelike, Utc,
};
use serde_json::{json, Map, Value};

use super::{describe, js, one, parse_json, Outcome};
use crate::domain::json::type_name;

/// moment.js's default format, which `getTime` uses when its `format` is empty.
pub const DEFAULT_FORMAT: &str = "YYYY-MM-DDTHH:mm:ss.SSSSSSZZ";

/// Longest format, in bytes: formats are a few dozen characters; this keeps a format (and
/// what it writes) small whatever a variable holds.
const MAX_FORMAT_LEN: usize = 256;

/// Longest time text `calculateTimeDiff` reads, in bytes.
const MAX_TIME_LEN: usize = 256;

/// Milliseconds in a day, and moment.js's days in 400 years (146097) over months in 400
/// years (4800): how a duration is read in months and years.
const DAY_MS: f64 = 86_400_000.0;
const DAYS_PER_400_YEARS: f64 = 146_097.0;
const MONTHS_PER_400_YEARS: f64 = 4_800.0;

const MONTHS: [&str; 12] = [
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
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

// --- getTime --------------------------------------------------------------------------------

/// `getTime`: the step's time, moved by `offsetDuration` (an object of moment.js units such as
/// `{"days": -30, "hours": 4}`, the same as JSON text, or a number of milliseconds), shown at
/// the UTC offset `timezone` (`-04:00`; empty: UTC) in `format` (empty: [`DEFAULT_FORMAT`]).
/// Outgoing `time` is `{"time": <text>, "formatString": <format>}`, the shape
/// `calculateTimeDiff` and the other time tasks take. The time is read to the millisecond,
/// as JavaScript's clock gives it.
pub(super) fn get_time(
    incoming: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Outcome, String> {
    let offset = utc_offset(incoming.get("timezone"))?;
    let format = match incoming.get("format") {
        None | Some(Value::Null) => DEFAULT_FORMAT,
        Some(Value::String(text)) if text.is_empty() => DEFAULT_FORMAT,
        Some(Value::String(text)) => text.as_str(),
        Some(other) => return Err(format!("format must be a string, not {}", type_name(other))),
    };
    let tokens = tokens(format).map_err(|why| format!("format {why}"))?;
    let millis = now.timestamp_millis();
    let now = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or(now);
    let time = add_offset_duration(now.with_timezone(&offset), incoming.get("offsetDuration"))?;
    Ok(Outcome::success(one(
        "time",
        json!({"time": write(&tokens, &time), "formatString": format}),
    )))
}

/// A `timezone`: `+HH:MM`, `-HH:MM`, `+HHMM`, `+HH`, `Z` or `UTC`; missing or empty is UTC.
fn utc_offset(value: Option<&Value>) -> Result<FixedOffset, String> {
    let utc = FixedOffset::east_opt(0).expect("zero is a valid offset");
    let text = match value {
        None | Some(Value::Null) => return Ok(utc),
        Some(Value::String(text)) => text.trim(),
        Some(other) => {
            return Err(format!(
                "timezone must be a UTC offset such as \"-04:00\", not {}",
                type_name(other)
            ))
        }
    };
    if text.is_empty() || text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
        return Ok(utc);
    }
    parse_offset(text)
        .filter(|(_, used)| *used == text.len())
        .map(|(offset, _)| offset)
        .ok_or_else(|| {
            format!(
                "timezone must be a UTC offset such as \"-04:00\", not {}",
                describe(&Value::String(text.to_owned()))
            )
        })
}

/// An offset at the start of `text` (`+HH:MM`, `+HHMM`, `+HH`, `Z`), and the bytes it took.
fn parse_offset(text: &str) -> Option<(FixedOffset, usize)> {
    let bytes = text.as_bytes();
    if bytes.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'z')) {
        return FixedOffset::east_opt(0).map(|offset| (offset, 1));
    }
    let sign = match bytes.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digit = |at: usize| {
        bytes
            .get(at)
            .filter(|b| b.is_ascii_digit())
            .map(|b| i32::from(b - b'0'))
    };
    let hours = digit(1)? * 10 + digit(2)?;
    let (minutes, used) = match (bytes.get(3), digit(3), digit(4)) {
        (Some(b':'), _, _) => (digit(4)? * 10 + digit(5)?, 6),
        (_, Some(tens), Some(ones)) => (tens * 10 + ones, 5),
        _ => (0, 3),
    };
    if hours > 16 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).map(|offset| (offset, used))
}

/// `time` moved by `offsetDuration`, as moment.js's `add` does: milliseconds (and hours,
/// minutes, seconds) first, then days and weeks on the calendar, then months, quarters and
/// years (a day past the end of a month becomes its last day); days and months are rounded
/// to whole ones.
fn add_offset_duration(
    time: DateTime<FixedOffset>,
    duration: Option<&Value>,
) -> Result<DateTime<FixedOffset>, String> {
    let parsed;
    let units = match duration {
        None | Some(Value::Null) => return Ok(time),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(time),
        Some(Value::String(text)) if text.trim_start().starts_with('{') => {
            parsed = parse_json(text).map_err(|why| format!("offsetDuration: {why}"))?;
            match &parsed {
                Value::Object(units) => units,
                _ => return Err("offsetDuration must be an object or a number".to_owned()),
            }
        }
        Some(value @ (Value::Number(_) | Value::String(_))) => {
            let millis = number(value).ok_or_else(|| {
                format!(
                    "offsetDuration must be an object or a number of milliseconds, not {}",
                    describe(value)
                )
            })?;
            return shift(time, millis, 0.0, 0.0);
        }
        Some(Value::Object(units)) => units,
        Some(other) => {
            return Err(format!(
                "offsetDuration must be an object or a number, not {}",
                type_name(other)
            ))
        }
    };
    let (mut millis, mut days, mut months) = (0.0, 0.0, 0.0);
    for (unit, amount) in units {
        let amount = number(amount).ok_or_else(|| {
            format!(
                "offsetDuration.{unit} must be a number, not {}",
                describe(amount)
            )
        })?;
        match unit.as_str() {
            "years" | "year" | "y" => months += amount * 12.0,
            "quarters" | "quarter" | "Q" => months += amount * 3.0,
            "months" | "month" | "M" => months += amount,
            "weeks" | "week" | "w" => days += amount * 7.0,
            "days" | "day" | "d" => days += amount,
            "hours" | "hour" | "h" => millis += amount * 3_600_000.0,
            "minutes" | "minute" | "m" => millis += amount * 60_000.0,
            "seconds" | "second" | "s" => millis += amount * 1_000.0,
            "milliseconds" | "millisecond" | "ms" => millis += amount,
            _ => {
                return Err(format!(
                    "offsetDuration.{unit} is not a unit: use years, quarters, months, weeks, \
                     days, hours, minutes, seconds or milliseconds"
                ))
            }
        }
    }
    shift(time, millis, days, months)
}

/// A number, or its text.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => js::parse_number(text),
        _ => None,
    }
}

fn shift(
    time: DateTime<FixedOffset>,
    millis: f64,
    days: f64,
    months: f64,
) -> Result<DateTime<FixedOffset>, String> {
    let out_of_range = || "offsetDuration moves the time out of range".to_owned();
    // JavaScript's round half away from zero, as moment's absRound.
    let whole = |amount: f64| -> Result<i64, String> {
        let rounded = amount.abs().round().copysign(amount);
        if rounded.abs() > 1e8 {
            return Err(out_of_range());
        }
        Ok(rounded as i64)
    };
    if !millis.is_finite() || millis.abs() > 1e16 {
        return Err(out_of_range());
    }
    let mut time = time
        .checked_add_signed(TimeDelta::milliseconds(millis.trunc() as i64))
        .ok_or_else(out_of_range)?;
    time = time
        .checked_add_signed(TimeDelta::try_days(whole(days)?).ok_or_else(out_of_range)?)
        .ok_or_else(out_of_range)?;
    let months = whole(months)?;
    let count = Months::new(u32::try_from(months.unsigned_abs()).map_err(|_| out_of_range())?);
    time = if months >= 0 {
        time.checked_add_months(count)
    } else {
        time.checked_sub_months(count)
    }
    .ok_or_else(out_of_range)?;
    Ok(time)
}

// --- calculateTimeDiff ----------------------------------------------------------------------

/// `calculateTimeDiff`: `firstTime` minus `secondTime`, each `{"time", "formatString"}` as
/// `getTime` gives it (a plain ISO 8601 text, or a number of epoch milliseconds, is taken
/// too). Outgoing `timeDiff` is the difference as moment.js reads a duration: `milliseconds`,
/// `seconds`, `minutes`, `hours`, `days`, `months` and `years` (each the whole difference in
/// that unit, fractions kept; a month is 146097/4800 days, as moment.js counts). A time
/// without an offset is read as UTC.
pub(super) fn calculate_time_diff(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let first = instant(incoming, "firstTime")?;
    let second = instant(incoming, "secondTime")?;
    let millis = (first - second) as f64;
    let days = millis / DAY_MS;
    let months = days * MONTHS_PER_400_YEARS / DAYS_PER_400_YEARS;
    let mut diff = Map::new();
    for (unit, amount) in [
        ("milliseconds", millis),
        ("seconds", millis / 1_000.0),
        ("minutes", millis / 60_000.0),
        ("hours", millis / 3_600_000.0),
        ("days", days),
        ("months", months),
        ("years", months / 12.0),
    ] {
        diff.insert(unit.to_owned(), js::number_value(amount));
    }
    Ok(Outcome::success(one("timeDiff", Value::Object(diff))))
}

/// The epoch milliseconds of a time value named `key`.
fn instant(incoming: &Map<String, Value>, key: &str) -> Result<i64, String> {
    let value = incoming
        .get(key)
        .ok_or_else(|| format!("{key} is missing"))?;
    match value {
        Value::Object(object) => {
            let time = match object.get("time") {
                Some(Value::String(time)) => time,
                Some(other) => {
                    return Err(format!(
                        "{key}.time must be a string, not {}",
                        type_name(other)
                    ))
                }
                None => return Err(format!("{key}.time is missing")),
            };
            match object.get("formatString") {
                None | Some(Value::Null) => iso_instant(time, key),
                Some(Value::String(format)) if format.is_empty() => iso_instant(time, key),
                Some(Value::String(format)) => {
                    let tokens =
                        tokens(format).map_err(|why| format!("{key}.formatString {why}"))?;
                    read(&tokens, time).map_err(|why| {
                        format!(
                            "{key}.time {} does not match formatString {format:?}: {why}",
                            describe(&Value::String(time.clone()))
                        )
                    })
                }
                Some(other) => Err(format!(
                    "{key}.formatString must be a string, not {}",
                    type_name(other)
                )),
            }
        }
        Value::String(time) => iso_instant(time, key),
        Value::Number(number) => number
            .as_f64()
            .filter(|millis| millis.abs() <= 8.64e15)
            .map(|millis| millis.trunc() as i64)
            .ok_or_else(|| format!("{key} is out of range")),
        other => Err(format!(
            "{key} must be an object with time and formatString, not {}",
            type_name(other)
        )),
    }
}

/// An ISO 8601 time: RFC 3339 exactly, else read as moment.js reads its ISO format.
fn iso_instant(text: &str, key: &str) -> Result<i64, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(time.timestamp_millis());
    }
    let tokens = tokens("YYYY-MM-DDTHH:mm:ss.SSSSZ").expect("the ISO format is valid");
    read(&tokens, text).map_err(|why| {
        format!(
            "{key} {} is not an ISO 8601 time: {why}",
            describe(&Value::String(text.to_owned()))
        )
    })
}

// --- moment.js formats ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(String),
    Year4,
    Year2,
    /// Month number, at least this many digits.
    Month(usize),
    MonthName {
        long: bool,
    },
    Day(usize),
    DayOrdinal,
    Weekday,
    WeekdayName {
        len: usize,
    },
    Hour24(usize),
    Hour12(usize),
    Minute(usize),
    Second(usize),
    /// Fraction of a second, this many digits.
    Fraction(usize),
    Offset {
        colon: bool,
    },
    Meridiem {
        upper: bool,
    },
    UnixSeconds,
    UnixMillis,
}

/// A format's tokens. The error names a moment.js token this service does not read.
fn tokens(format: &str) -> Result<Vec<Token>, String> {
    if format.len() > MAX_FORMAT_LEN {
        return Err(format!("is longer than {MAX_FORMAT_LEN} bytes"));
    }
    let chars: Vec<char> = format.chars().collect();
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c == '[' {
            if let Some(end) = chars[at + 1..].iter().position(|&c| c == ']') {
                literal.extend(&chars[at + 1..at + 1 + end]);
                at += end + 2;
                continue;
            }
        }
        if c == '\\' && at + 1 < chars.len() {
            literal.push(chars[at + 1]);
            at += 2;
            continue;
        }
        let run = chars[at..].iter().take_while(|&&next| next == c).count();
        let (token, len) = match (c, run) {
            ('Y', 4..) => (Token::Year4, 4),
            ('Y', 2 | 3) => (Token::Year2, 2),
            ('M', 4..) => (Token::MonthName { long: true }, 4),
            ('M', 3) => (Token::MonthName { long: false }, 3),
            ('M', n) => (Token::Month(n), n),
            ('D', 1) if chars.get(at + 1) == Some(&'o') => (Token::DayOrdinal, 2),
            ('D', n @ (1 | 2)) => (Token::Day(n), n),
            ('d', 1) => (Token::Weekday, 1),
            ('d', n) => (Token::WeekdayName { len: n.min(4) }, n.min(4)),
            ('H', n) => (Token::Hour24(n.min(2)), n.min(2)),
            ('h', n) => (Token::Hour12(n.min(2)), n.min(2)),
            ('m', n) => (Token::Minute(n.min(2)), n.min(2)),
            ('s', n) => (Token::Second(n.min(2)), n.min(2)),
            ('S', n) => (Token::Fraction(n.min(9)), n.min(9)),
            ('Z', 1) => (Token::Offset { colon: true }, 1),
            ('Z', _) => (Token::Offset { colon: false }, 2),
            ('A', _) => (Token::Meridiem { upper: true }, 1),
            ('a', _) => (Token::Meridiem { upper: false }, 1),
            ('X', _) => (Token::UnixSeconds, 1),
            ('x', _) => (Token::UnixMillis, 1),
            // moment.js's other tokens: quarters, days of the year, weeks, eras, time zone
            // names, locale formats.
            (
                'Q' | 'D' | 'e' | 'E' | 'w' | 'W' | 'Y' | 'y' | 'g' | 'G' | 'k' | 'z' | 'L' | 'l'
                | 'N',
                n,
            ) => {
                let token: String = chars[at..at + n].iter().collect();
                return Err(format!(
                    "uses the moment.js token {token:?}, which this service does not support"
                ));
            }
            _ => {
                literal.push(c);
                at += 1;
                continue;
            }
        };
        if !literal.is_empty() {
            tokens.push(Token::Literal(std::mem::take(&mut literal)));
        }
        tokens.push(token);
        at += len;
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    Ok(tokens)
}

fn ordinal(day: u32) -> String {
    let suffix = match (day % 10, day % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{day}{suffix}")
}

/// `time` written in the format of `tokens`.
fn write(tokens: &[Token], time: &DateTime<FixedOffset>) -> String {
    let mut out = String::new();
    for token in tokens {
        match token {
            Token::Literal(text) => out.push_str(text),
            Token::Year4 => out.push_str(&format!("{:04}", time.year())),
            Token::Year2 => out.push_str(&format!("{:02}", time.year().rem_euclid(100))),
            Token::Month(width) => out.push_str(&format!("{:0width$}", time.month())),
            Token::MonthName { long } => {
                let name = MONTHS[time.month0() as usize];
                out.push_str(if *long { name } else { &name[..3] });
            }
            Token::Day(width) => out.push_str(&format!("{:0width$}", time.day())),
            Token::DayOrdinal => out.push_str(&ordinal(time.day())),
            Token::Weekday => {
                out.push_str(&time.weekday().num_days_from_sunday().to_string());
            }
            Token::WeekdayName { len } => {
                let name = WEEKDAYS[time.weekday().num_days_from_sunday() as usize];
                out.push_str(if *len == 4 { name } else { &name[..*len] });
            }
            Token::Hour24(width) => out.push_str(&format!("{:0width$}", time.hour())),
            Token::Hour12(width) => {
                let hour = match time.hour() % 12 {
                    0 => 12,
                    hour => hour,
                };
                out.push_str(&format!("{hour:0width$}"));
            }
            Token::Minute(width) => out.push_str(&format!("{:0width$}", time.minute())),
            Token::Second(width) => out.push_str(&format!("{:0width$}", time.second())),
            Token::Fraction(digits) => {
                // Milliseconds, cut or padded with zeros as moment.js writes them.
                let millis = format!("{:03}", time.timestamp_subsec_millis());
                let mut text: String = millis.chars().take(*digits).collect();
                text.extend(std::iter::repeat_n('0', digits.saturating_sub(3)));
                out.push_str(&text);
            }
            Token::Offset { colon } => {
                let seconds = time.offset().local_minus_utc();
                let sign = if seconds < 0 { '-' } else { '+' };
                let minutes = seconds.abs() / 60;
                let separator = if *colon { ":" } else { "" };
                out.push_str(&format!(
                    "{sign}{:02}{separator}{:02}",
                    minutes / 60,
                    minutes % 60
                ));
            }
            Token::Meridiem { upper } => {
                let text = if time.hour() < 12 { "am" } else { "pm" };
                out.push_str(&if *upper {
                    text.to_uppercase()
                } else {
                    text.to_owned()
                });
            }
            Token::UnixSeconds => out.push_str(&time.timestamp().to_string()),
            Token::UnixMillis => out.push_str(&time.timestamp_millis().to_string()),
        }
    }
    out
}

/// The fields a format read from a time.
#[derive(Default)]
struct Fields {
    year: Option<i32>,
    month: Option<u32>,
    day: Option<u32>,
    hour: Option<u32>,
    minute: u32,
    second: u32,
    millis: u32,
    pm: Option<bool>,
    offset: Option<FixedOffset>,
    epoch_millis: Option<i64>,
}

/// The epoch milliseconds of `text` read in the format of `tokens`, as moment.js reads in its
/// forgiving mode: each token takes the first match in what is left of the text, skipping
/// what comes before it, and a token with no match leaves its field at its default (the first
/// month, day one, midnight, UTC). A text in which no date token matched is an error.
fn read(tokens: &[Token], text: &str) -> Result<i64, String> {
    if text.len() > MAX_TIME_LEN {
        return Err(format!("it is longer than {MAX_TIME_LEN} bytes"));
    }
    let mut rest = text;
    let mut fields = Fields::default();
    let mut matched_date = false;
    for token in tokens {
        let Some((start, len, value)) = find(token, rest) else {
            continue;
        };
        let found = &rest[start..start + len];
        rest = &rest[start + len..];
        let number = || found.parse::<i64>().ok();
        match token {
            Token::Literal(_) | Token::Weekday | Token::WeekdayName { .. } => {}
            Token::Year4 => fields.year = number().and_then(|n| i32::try_from(n).ok()),
            Token::Year2 => {
                fields.year = number().map(|n| n as i32 + if n > 68 { 1900 } else { 2000 })
            }
            Token::Month(_) => fields.month = number().map(|n| n as u32),
            Token::MonthName { .. } => fields.month = value,
            Token::Day(_) | Token::DayOrdinal => fields.day = value.or(number().map(|n| n as u32)),
            Token::Hour24(_) | Token::Hour12(_) => fields.hour = number().map(|n| n as u32),
            Token::Minute(_) => fields.minute = number().unwrap_or(0) as u32,
            Token::Second(_) => fields.second = number().unwrap_or(0) as u32,
            Token::Fraction(_) => {
                let digits: String = found
                    .chars()
                    .chain(std::iter::repeat('0'))
                    .take(3)
                    .collect();
                fields.millis = digits.parse().unwrap_or(0);
            }
            Token::Offset { .. } => fields.offset = parse_offset(found).map(|(offset, _)| offset),
            Token::Meridiem { .. } => fields.pm = Some(found.to_ascii_lowercase().starts_with('p')),
            Token::UnixSeconds => {
                fields.epoch_millis = found
                    .parse::<f64>()
                    .ok()
                    .filter(|seconds| seconds.abs() < 8.64e12)
                    .map(|seconds| (seconds * 1000.0).trunc() as i64)
            }
            Token::UnixMillis => fields.epoch_millis = number(),
        }
        matched_date |= !matches!(token, Token::Literal(_));
    }
    if let Some(millis) = fields.epoch_millis {
        return Ok(millis);
    }
    if !matched_date || fields.year.is_none() && fields.month.is_none() && fields.day.is_none() {
        return Err("no date in it".to_owned());
    }
    let mut hour = fields.hour.unwrap_or(0);
    match fields.pm {
        Some(true) if hour < 12 => hour += 12,
        Some(false) if hour == 12 => hour = 0,
        _ => {}
    }
    let year = fields.year.unwrap_or(1970);
    let month = fields.month.unwrap_or(1);
    let day = fields.day.unwrap_or(1);
    let date = NaiveDate::from_ymd_opt(year, month, day)
        .ok_or_else(|| format!("{year:04}-{month:02}-{day:02} is not a date"))?;
    let time = NaiveTime::from_hms_milli_opt(hour, fields.minute, fields.second, fields.millis)
        .ok_or_else(|| {
            format!(
                "{hour:02}:{:02}:{:02} is not a time of day",
                fields.minute, fields.second
            )
        })?;
    let local = NaiveDateTime::new(date, time);
    let offset = fields
        .offset
        .unwrap_or(FixedOffset::east_opt(0).expect("zero"));
    let utc = local - TimeDelta::seconds(i64::from(offset.local_minus_utc()));
    Ok(utc.and_utc().timestamp_millis())
}

/// Where `token` first matches in `text`: the start, the length, and for names the number
/// they stand for.
fn find(token: &Token, text: &str) -> Option<(usize, usize, Option<u32>)> {
    let digits = |min: usize, max: usize| -> Option<(usize, usize, Option<u32>)> {
        let bytes = text.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            if bytes[start].is_ascii_digit() {
                let len = bytes[start..]
                    .iter()
                    .take(max)
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if len >= min {
                    return Some((start, len, None));
                }
            }
            start += 1;
        }
        None
    };
    let word = |names: &[&str], len: Option<usize>| -> Option<(usize, usize, Option<u32>)> {
        let lower = text.to_ascii_lowercase();
        names
            .iter()
            .enumerate()
            .filter_map(|(index, name)| {
                let name = match len {
                    Some(len) => &name[..len.min(name.len())],
                    None => name,
                };
                lower
                    .find(&name.to_ascii_lowercase())
                    .map(|start| (start, name.len(), Some(index as u32 + 1)))
            })
            .min_by_key(|(start, len, _)| (*start, std::cmp::Reverse(*len)))
    };
    match token {
        Token::Literal(literal) => text
            .find(literal.as_str())
            .map(|at| (at, literal.len(), None)),
        Token::Year4 => digits(1, 4),
        Token::Year2 => digits(2, 2),
        Token::Month(_) | Token::Day(_) | Token::Hour24(_) | Token::Hour12(_) => digits(1, 2),
        Token::Minute(_) | Token::Second(_) => digits(1, 2),
        Token::Weekday => digits(1, 1),
        Token::DayOrdinal => {
            let (start, len, _) = digits(1, 2)?;
            let day = text[start..start + len].parse().ok();
            let suffix = text[start + len..]
                .get(..2)
                .filter(|s| ["st", "nd", "rd", "th"].contains(&s.to_ascii_lowercase().as_str()))
                .map_or(0, str::len);
            Some((start, len + suffix, day))
        }
        Token::Fraction(n) if *n <= 3 => digits(1, *n),
        Token::Fraction(_) => digits(1, usize::MAX),
        Token::MonthName { long: true } => word(&MONTHS, None).or_else(|| word(&MONTHS, Some(3))),
        Token::MonthName { long: false } => word(&MONTHS, Some(3)),
        Token::WeekdayName { len } => {
            word(&WEEKDAYS, (*len < 4).then_some(*len)).or_else(|| word(&WEEKDAYS, Some(3)))
        }
        Token::Offset { .. } => (0..text.len())
            .filter(|&at| text.is_char_boundary(at))
            .find_map(|at| parse_offset(&text[at..]).map(|(_, len)| (at, len, None))),
        Token::Meridiem { .. } => {
            let lower = text.to_ascii_lowercase();
            ["am", "pm", "a", "p"]
                .iter()
                .filter_map(|m| lower.find(m).map(|at| (at, m.len(), None)))
                .min_by_key(|(at, len, _)| (*at, std::cmp::Reverse(*len)))
        }
        Token::UnixSeconds => {
            let (start, mut len, _) = digits(1, 16)?;
            let rest = &text[start + len..];
            if let Some(fraction) = rest.strip_prefix('.') {
                len += 1 + fraction
                    .bytes()
                    .take(3)
                    .take_while(u8::is_ascii_digit)
                    .count();
            }
            let negative = start > 0 && text.as_bytes()[start - 1] == b'-';
            Some(if negative {
                (start - 1, len + 1, None)
            } else {
                (start, len, None)
            })
        }
        Token::UnixMillis => {
            let (start, len, _) = digits(1, 16)?;
            let negative = start > 0 && text.as_bytes()[start - 1] == b'-';
            Some(if negative {
                (start - 1, len + 1, None)
            } else {
                (start, len, None)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap_or_else(|why| panic!("{why}"))
    }

    fn written(format: &str, time: &str) -> String {
        write(
            &tokens(format).unwrap_or_else(|why| panic!("{why}")),
            &at(time),
        )
    }

    fn read_back(format: &str, text: &str) -> Result<i64, String> {
        read(&tokens(format).unwrap_or_else(|why| panic!("{why}")), text)
    }

    #[test]
    fn formats_write_moment_tokens_and_keep_the_rest_as_written() {
        let time = "2023-04-01T13:05:09.052-04:00";
        assert_eq!(
            written(DEFAULT_FORMAT, time),
            "2023-04-01T13:05:09.052000-0400"
        );
        assert_eq!(written("MMM-DD-YYYY", time), "Apr-01-2023");
        assert_eq!(written("hh:mm:ss A", time), "01:05:09 PM");
        assert_eq!(
            written("dddd, MMMM Do YY [at] h a", time),
            "Saturday, April 1st 23 at 1 pm"
        );
        assert_eq!(
            written("X x SS Z", time),
            "1680368709 1680368709052 05 -04:00"
        );
        assert_eq!(written("D Do", "2023-04-12T00:00:00Z"), "12 12th");
    }

    #[test]
    fn formats_with_tokens_the_service_does_not_read_are_refused_by_name() {
        for (format, token) in [("LLLL", "LLLL"), ("wo", "w"), ("DDDD", "DDDD"), ("Q", "Q")] {
            let error = tokens(format).unwrap_err();
            assert!(error.contains(&format!("{token:?}")), "{format}: {error}");
        }
    }

    #[test]
    fn times_are_read_back_as_moment_reads_them_forgivingly() {
        let millis = |text: &str| at(text).timestamp_millis();
        assert_eq!(
            read_back(DEFAULT_FORMAT, "2023-04-28T01:21:14.052000-1100"),
            Ok(millis("2023-04-28T12:21:14.052Z"))
        );
        // Missing parts keep their defaults; no offset is UTC.
        assert_eq!(
            read_back("YYYY-MM-DDTHH:mm:ss.SSSZ", "2023-04-28T12:21:14Z"),
            Ok(millis("2023-04-28T12:21:14Z"))
        );
        assert_eq!(
            read_back("YYYY-MM-DD", "2023-04-28"),
            Ok(millis("2023-04-28T00:00:00Z"))
        );
        assert_eq!(
            read_back("MMMM Do YYYY, h:mm a", "February 3rd 2024, 12:30 am"),
            Ok(millis("2024-02-03T00:30:00Z"))
        );
        assert_eq!(read_back("x", "1680368709052"), Ok(1_680_368_709_052));
        assert!(read_back("YYYY-MM-DD", "2023-02-30")
            .unwrap_err()
            .contains("not a date"));
        assert!(read_back("YYYY-MM-DD", "soon").is_err());
    }

    #[test]
    fn what_get_time_writes_calculate_time_diff_reads_back() {
        let time = at("2026-12-01T09:30:07.123+05:30");
        for format in [DEFAULT_FORMAT, "YYYY-MM-DD HH:mm:ss.SSS ZZ", "x", "X"] {
            let tokens = tokens(format).unwrap_or_else(|why| panic!("{why}"));
            let millis = if format == "X" {
                1000 * time.timestamp()
            } else {
                time.timestamp_millis()
            };
            assert_eq!(
                read(&tokens, &write(&tokens, &time)),
                Ok(millis),
                "{format}"
            );
        }
    }
}
