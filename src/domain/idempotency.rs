//! Idempotency keys of StartJob: a retried start with the same key returns the first job.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::Error;
use super::job::StartJob;

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
        let canonical = serde_json::json!({
            "workflow": self.workflow,
            "description": options.description,
            "type": options.job_type,
            "variables": sorted(&Value::Object(options.variables.clone())),
            "groups": options.groups,
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        hex::encode(digest)
    }
}

/// `value` with every object's keys in sorted order.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::JobOptions;
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
    fn fingerprints_ignore_key_order_but_not_values() {
        let a = start(json!({"x": 1, "y": {"b": 2, "a": 1}}));
        let b = start(json!({"y": {"a": 1, "b": 2}, "x": 1}));
        let c = start(json!({"x": 2, "y": {"a": 1, "b": 2}}));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
