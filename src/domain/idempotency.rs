//! Idempotency keys of StartJob: a retried start with the same key returns the first job.

use serde_json::{Map, Value};
use std::io::Write;

use sha2::{Digest, Sha256};

use super::error::Error;
use super::start::StartJob;

/// The header (HTTP) and metadata (gRPC) name, as errors name it.
pub const FIELD: &str = "idempotency-key";

/// A key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<Self, Error> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                FIELD,
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    /// A key from an HTTP header or gRPC metadata value, as raw bytes.
    pub fn from_header(bytes: &[u8]) -> Result<Self, Error> {
        std::str::from_utf8(bytes)
            .map_err(|_| Error::invalid(FIELD, "must be 1 to 255 visible ASCII characters"))
            .and_then(Self::parse)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl StartJob {
    /// A digest of what the request asks for, the same whatever the order of JSON keys: a
    /// replay with a key must ask for the same thing as the first call.
    pub fn fingerprint(&self) -> String {
        let options = &self.options;
        // The canonical form is hashed as it is written, with no copy of the variables (they
        // may be megabytes): `{"workflow":..,"description":..,"type":..,"variables":..,
        // "groups":..}`, compact, every object's keys sorted.
        let mut hasher = HashWriter(Sha256::new());
        let out = &mut hasher;
        let written: std::io::Result<()> = (|| {
            out.write_all(b"{\"workflow\":")?;
            serde_json::to_writer(&mut *out, &self.workflow)?;
            out.write_all(b",\"description\":")?;
            serde_json::to_writer(&mut *out, &options.description)?;
            out.write_all(b",\"type\":")?;
            serde_json::to_writer(&mut *out, &options.job_type)?;
            out.write_all(b",\"variables\":")?;
            write_sorted_map(&mut *out, &options.variables)?;
            out.write_all(b",\"groups\":")?;
            serde_json::to_writer(&mut *out, &options.groups)?;
            out.write_all(b"}")
        })();
        written.expect("hashing does not fail");
        hex::encode(hasher.0.finalize())
    }
}

/// Feeds what is written to the hash.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `value` as compact JSON with every object's keys in sorted order.
fn write_sorted(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    match value {
        Value::Object(map) => write_sorted_map(out, map),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_sorted(out, item)?;
            }
            out.write_all(b"]")
        }
        scalar => Ok(serde_json::to_writer(out, scalar)?),
    }
}

fn write_sorted_map(out: &mut impl Write, map: &Map<String, Value>) -> std::io::Result<()> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.write_all(b"{")?;
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        write_sorted(out, &map[key])?;
    }
    out.write_all(b"}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::start::JobOptions;
    use serde_json::json;

    fn start(variables: Value) -> StartJob {
        StartJob {
            workflow: "W".into(),
            options: JobOptions {
                variables: variables.as_object().unwrap().clone(),
                ..JobOptions::default()
            },
        }
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse("order-42:retry").is_ok());
        for bad in ["", "has space", "tab\t", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_are_those_stored_keys_were_made_with() {
        // The digest of the canonical JSON written out whole, as keys stored by earlier
        // versions were: a replay after an upgrade still matches.
        let request = StartJob {
            workflow: "W".into(),
            options: JobOptions {
                description: Some("nightly".into()),
                job_type: None,
                variables: json!({"z": [1, {"b": 2.5, "a": null}], "a": "x\u{1}"})
                    .as_object()
                    .unwrap()
                    .clone(),
                groups: Some(vec!["aaaaaaaaaaaaaaaaaaaaaaaa".into()]),
                ignored: Vec::new(),
            },
        };
        let canonical = r#"{"workflow":"W","description":"nightly","type":null,"variables":{"a":"x\u0001","z":[1,{"a":null,"b":2.5}]},"groups":["aaaaaaaaaaaaaaaaaaaaaaaa"]}"#;
        assert_eq!(
            request.fingerprint(),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
    }

    #[test]
    fn fingerprints_ignore_key_order_but_not_values() {
        let a = start(json!({"x": 1, "y": {"b": 2, "a": 1}}));
        let b = start(json!({"y": {"a": 1, "b": 2}, "x": 1}));
        let c = start(json!({"x": 2, "y": {"a": 1, "b": 2}}));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
