//! What the service can store or compare with what it stored: the checks every caller-given
//! text and time passes at the edge, before it becomes a SQL parameter.
//!
//! PostgreSQL's `text` and `jsonb` cannot hold U+0000, and its `timestamptz` has a range of
//! its own; a value outside either reaches the database only to come back as an error the
//! caller did not cause. Checked here, such a value is INVALID_ARGUMENT naming its field.

use chrono::{DateTime, NaiveDate, Utc};

use super::error::Error;

/// What is said of a text holding U+0000.
pub const NUL_DESCRIPTION: &str = "must not contain the character U+0000";

/// What is said of a time outside [`EARLIEST_TIME`] ..= [`LATEST_TIME`].
pub const TIME_RANGE_DESCRIPTION: &str =
    "must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z";

/// The earliest time the service takes: the start of the range of `google.protobuf.Timestamp`.
pub const EARLIEST_TIME: DateTime<Utc> = match NaiveDate::from_ymd_opt(1, 1, 1) {
    Some(date) => date.and_time(chrono::NaiveTime::MIN).and_utc(),
    None => panic!("0001-01-01 is a date"),
};

/// The latest time the service takes: the end of the range of `google.protobuf.Timestamp` at
/// PostgreSQL's precision (microseconds). Digits below the microsecond are dropped when a
/// time is stored, so any time within that last microsecond is taken too.
pub const LATEST_TIME: DateTime<Utc> = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(date) => match date.and_hms_nano_opt(23, 59, 59, 999_999_999) {
        Some(time) => time.and_utc(),
        None => panic!("23:59:59.999999999 is a time"),
    },
    None => panic!("9999-12-31 is a date"),
};

/// Whether `text` can become a SQL parameter: it holds no U+0000.
pub fn check_text(text: &str) -> Result<(), &'static str> {
    if text.contains('\0') {
        Err(NUL_DESCRIPTION)
    } else {
        Ok(())
    }
}

/// `text`, when it can become a SQL parameter; else INVALID_ARGUMENT naming `field`.
pub fn text<'a>(text: &'a str, field: &str) -> Result<&'a str, Error> {
    check_text(text).map_err(|description| Error::invalid(field, description))?;
    Ok(text)
}

/// Whether `time` is one the service can store and compare: within
/// [`EARLIEST_TIME`] ..= [`LATEST_TIME`], well inside PostgreSQL's range.
pub fn check_time(time: DateTime<Utc>) -> Result<DateTime<Utc>, &'static str> {
    if (EARLIEST_TIME..=LATEST_TIME).contains(&time) {
        Ok(time)
    } else {
        Err(TIME_RANGE_DESCRIPTION)
    }
}

/// `time`, when the service can store it; else INVALID_ARGUMENT naming `field`.
pub fn time(time: DateTime<Utc>, field: &str) -> Result<DateTime<Utc>, Error> {
    check_time(time).map_err(|description| Error::invalid(field, description))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_a_nul_character_is_refused_by_field() {
        assert_eq!(text("a b", "name").unwrap(), "a b");
        let err = text("a\0b", "name").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request: name: must not contain the character U+0000"
        );
    }

    #[test]
    fn times_are_taken_from_year_1_to_year_9999() {
        // The bounds `google/protobuf/timestamp.proto` states, in seconds since the epoch.
        assert_eq!(EARLIEST_TIME.timestamp(), -62_135_596_800);
        assert_eq!(LATEST_TIME.timestamp(), 253_402_300_799);
        assert!(check_time(EARLIEST_TIME).is_ok());
        assert!(check_time(LATEST_TIME).is_ok());
        assert!(check_time(EARLIEST_TIME - chrono::Duration::microseconds(1)).is_err());
        assert!(check_time(LATEST_TIME + chrono::Duration::nanoseconds(1)).is_err());
        let err = time(DateTime::<Utc>::MIN_UTC, "created_after").unwrap_err();
        assert!(err.to_string().contains("created_after"), "{err}");
    }
}
