//! Checks on free-form JSON that every document passes before it is stored.

use serde_json::{Map, Value};

use super::error::Violations;

/// The path of `key` inside the object at `path`: `options.variables.device`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The path of item `index` of the array at `path`: `options.groups[1]`.
pub fn index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// Reports every string and key holding U+0000 below `path`: PostgreSQL's `jsonb` cannot store
/// it, and the caller should hear about it rather than get an internal error.
pub fn reject_nul(value: &Value, path: &str, violations: &mut Violations) {
    const MESSAGE: &str = "must not contain the character U+0000";
    match value {
        Value::String(s) if s.contains('\0') => violations.push(path, MESSAGE),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                reject_nul(item, &index(path, i), violations);
            }
        }
        Value::Object(map) => reject_nul_in(map, path, violations),
        _ => {}
    }
}

/// [`reject_nul`] for every key and value of the object at `path`.
pub fn reject_nul_in(map: &Map<String, Value>, path: &str, violations: &mut Violations) {
    for (key, item) in map {
        let item_path = join(path, key);
        if key.contains('\0') {
            violations.push(item_path, "key must not contain the character U+0000");
        } else {
            reject_nul(item, &item_path, violations);
        }
    }
}

/// A short name of a JSON value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_reported_with_their_path() {
        let mut v = Violations::default();
        reject_nul(
            &json!({"a": ["ok", "bad\u{0}"], "b\u{0}": 1, "c": {"d": "x\u{0}y"}}),
            "options.variables",
            &mut v,
        );
        let err = v.into_result(()).unwrap_err();
        let crate::domain::Error::InvalidArgument { violations } = err else {
            panic!("expected invalid argument")
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "options.variables.a[1]",
                "options.variables.b\u{0}",
                "options.variables.c.d"
            ]
        );
    }
}
