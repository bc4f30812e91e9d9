//! Paging: which jobs a list holds, how many items a page holds and the opaque tokens that say
//! where the next one starts.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};

use super::error::Error;
use super::ids::is_object_id;
use super::job::JobStatus;
use super::storable;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The page size a caller asked for: 0 means the default, larger than the maximum is capped.
pub fn page_size(requested: i32, field: &str) -> Result<i64, Error> {
    match i64::from(requested) {
        n if n < 0 => Err(Error::invalid(field, "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// Which jobs ListJobs returns.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub workflow: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// Where the next page of jobs starts: after the job with this creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl JobCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "j1:{}:{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    pub fn decode(token: &str, field: &str) -> Result<Self, Error> {
        let bad = || Error::invalid(field, "is not a page token this service issued");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(3, ':');
        let (Some("j1"), Some(micros), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        // A forged token may name any time: only one the service could have stored is taken.
        let created_at = DateTime::from_timestamp_micros(micros)
            .and_then(|time| storable::check_time(time).ok())
            .ok_or_else(bad)?;
        if !is_object_id(id) {
            return Err(bad());
        }
        Ok(JobCursor {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// Where the next page of workflows starts: after the workflow with this name.
pub fn encode_name_cursor(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("w1:{name}"))
}

pub fn decode_name_cursor(token: &str, field: &str) -> Result<String, Error> {
    let bad = || Error::invalid(field, "is not a page token this service issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let name = text.strip_prefix("w1:").ok_or_else(bad)?;
    // No stored name holds U+0000: a token with one is forged.
    storable::check_text(name).map_err(|_| bad())?;
    Ok(name.to_owned())
}

/// Where the next page of tasks starts: after `skip` tasks. Tasks change status as jobs run,
/// so no key orders them for good; an offset pages them as the REST route does, and a task
/// that moves between two pages' reads may be seen twice or not at all.
pub fn encode_skip_cursor(skip: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("t1:{skip}"))
}

pub fn decode_skip_cursor(token: &str, field: &str) -> Result<i64, Error> {
    let bad = || Error::invalid(field, "is not a page token this service issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let skip = text.strip_prefix("t1:").ok_or_else(bad)?;
    skip.parse::<i64>()
        .ok()
        .filter(|skip| *skip >= 0)
        .ok_or_else(bad)
}

/// Cuts `items` (fetched with one extra row) to at most `limit` items and `max_bytes` bytes, as
/// `size_of` measures them, keeping at least one item; returns whether items were left out,
/// that is, whether there is a next page. A page of large items holds fewer of them: the page
/// size is an upper bound.
pub fn fit_page<T>(
    items: &mut Vec<T>,
    limit: i64,
    max_bytes: usize,
    size_of: impl Fn(&T) -> usize,
) -> bool {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut bytes = 0usize;
    let mut keep = 0;
    for item in items.iter().take(limit) {
        bytes = bytes.saturating_add(size_of(item));
        if keep > 0 && bytes > max_bytes {
            break;
        }
        keep += 1;
    }
    let more = items.len() > keep;
    items.truncate(keep);
    more
}

/// The length of `value` written as JSON, without keeping the text.
pub fn json_size<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    /// Counts what is written and drops it.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and the values measured are JSON.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_cursors_round_trip() {
        let cursor = JobCursor {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_000).unwrap(),
            id: "0123456789abcdef01234567".into(),
        };
        assert_eq!(
            JobCursor::decode(&cursor.encode(), "page_token").unwrap(),
            cursor
        );
    }

    #[test]
    fn foreign_tokens_are_rejected_by_field() {
        for token in ["", "%%%", "aGVsbG8", &encode_name_cursor("x")] {
            let err = JobCursor::decode(token, "page_token").unwrap_err();
            assert!(err.to_string().contains("page_token"), "{token}: {err}");
        }
    }

    #[test]
    fn forged_tokens_with_values_the_database_cannot_take_are_rejected() {
        for micros in [
            i64::MIN,
            i64::MAX,
            -62_135_596_800_000_001,
            253_402_300_800_000_000,
        ] {
            let token = URL_SAFE_NO_PAD.encode(format!("j1:{micros}:0123456789abcdef01234567"));
            let err = JobCursor::decode(&token, "page_token").unwrap_err();
            assert!(err.to_string().contains("page_token"), "{micros}: {err}");
        }
        let err = decode_name_cursor(&encode_name_cursor("a\0b"), "page_token").unwrap_err();
        assert!(err.to_string().contains("page_token"), "{err}");
    }

    #[test]
    fn pages_stop_at_their_byte_bound_but_hold_at_least_one_item() {
        let mut items = vec![400, 400, 400, 400];
        assert!(fit_page(&mut items, 10, 1000, |n| *n));
        assert_eq!(items, [400, 400]);
        let mut huge = vec![5000, 1];
        assert!(fit_page(&mut huge, 10, 1000, |n| *n));
        assert_eq!(huge, [5000]);
        let mut small = vec![1, 1, 1];
        assert!(fit_page(&mut small, 2, 1000, |n| *n));
        assert_eq!(small.len(), 2);
        let mut all = vec![1, 1];
        assert!(!fit_page(&mut all, 2, 1000, |n| *n));
        assert_eq!(json_size(&serde_json::json!({"a": [1, 2]})), 11);
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0, "page_size").unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5000, "page_size").unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1, "page_size").is_err());
    }

    #[test]
    fn name_cursors_round_trip() {
        assert_eq!(
            decode_name_cursor(&encode_name_cursor("a: b"), "t").unwrap(),
            "a: b"
        );
    }

    #[test]
    fn task_page_tokens_hold_an_offset() {
        let token = encode_skip_cursor(150);
        assert_eq!(decode_skip_cursor(&token, "page_token").unwrap(), 150);
        for forged in [
            "nope",
            &URL_SAFE_NO_PAD.encode("t1:-1"),
            &URL_SAFE_NO_PAD.encode("w1:3"),
        ] {
            assert!(
                decode_skip_cursor(forged, "page_token").is_err(),
                "{forged}"
            );
        }
    }
}
