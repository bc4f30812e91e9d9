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

/// Deepest nesting of objects and arrays the service takes, counted from a request's root (a
/// request body's top-level object is level 1; gRPC: the request message). One limit for both
/// front doors, and low enough that every job and workflow the service stores can be read back
/// by every mainstream gRPC client: each JSON level is two or three protobuf messages
/// (`Struct`, its map entry, `Value`), and clients such as grpcio and protobuf-java stop
/// decoding at 100 levels of messages.
pub const MAX_DEPTH: usize = 32;

/// Most JSON values (objects, arrays, strings, numbers, booleans, nulls) one request may hold.
/// A 4 MiB body of tiny values (`[0,0,0,...]`) is two million of them, each of which costs
/// dozens of bytes in memory and is copied several times on the way to the database; the
/// largest real workflow export has about 2,200.
pub const MAX_VALUES: usize = 100_000;

/// Parses `bytes` as JSON within [`MAX_DEPTH`] and [`MAX_VALUES`]. A first pass over the bytes
/// counts and measures without building anything, so what is refused costs no memory; only a
/// document within the bounds is then parsed into a tree. serde_json has no such limits of its
/// own (only a fixed recursion limit of 128), hence this pass.
pub fn parse_bounded(bytes: &[u8]) -> Result<Value, BoundedJsonError> {
    use serde::de::DeserializeSeed;
    let state = Scan::default();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let scanned = Level {
        scan: &state,
        depth: 0,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    if let Some(violation) = state.refused.into_inner() {
        return Err(BoundedJsonError::Bounds(violation));
    }
    scanned.map_err(BoundedJsonError::Syntax)?;
    serde_json::from_slice(bytes).map_err(BoundedJsonError::Syntax)
}

/// Why [`parse_bounded`] refused a document.
#[derive(Debug)]
pub enum BoundedJsonError {
    /// Not JSON.
    Syntax(serde_json::Error),
    /// JSON, but nested too deep or holding too many values; names where.
    Bounds(super::error::FieldViolation),
}

/// What the counting pass has seen: values so far, the path to the current one, and why it
/// stopped, if it did.
#[derive(Default)]
struct Scan {
    values: std::cell::Cell<usize>,
    path: std::cell::RefCell<Vec<String>>,
    refused: std::cell::RefCell<Option<super::error::FieldViolation>>,
}

impl Scan {
    fn refuse<E: serde::de::Error>(&self, description: String) -> E {
        let path = self.path.borrow().concat();
        let path = path.strip_prefix('.').unwrap_or(&path).to_owned();
        *self.refused.borrow_mut() = Some(super::error::FieldViolation::new(path, description));
        E::custom("refused")
    }
}

/// One value of the document, `depth` containers down.
struct Level<'a> {
    scan: &'a Scan,
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Level<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let values = self.scan.values.get() + 1;
        if values > MAX_VALUES {
            return Err(self.scan.refuse(format!(
                "is past the limit of {MAX_VALUES} JSON values (objects, arrays, strings, numbers, booleans, nulls) in one request"
            )));
        }
        self.scan.values.set(values);
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        let mut i = 0;
        loop {
            self.scan.path.borrow_mut().push(format!("[{i}]"));
            let item = items.next_element_seed(Level {
                scan: self.scan,
                depth,
            })?;
            self.scan.path.borrow_mut().pop();
            if item.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        while let Some(key) = entries.next_key::<std::borrow::Cow<'de, str>>()? {
            self.scan.path.borrow_mut().push(format!(".{key}"));
            entries.next_value_seed(Level {
                scan: self.scan,
                depth,
            })?;
            self.scan.path.borrow_mut().pop();
        }
        Ok(())
    }
}

impl Level<'_> {
    /// The depth of a container's items, or the refusal when the container is too deep.
    fn enter<E: serde::de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(self.scan.refuse(format!(
                "nests objects and arrays deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(depth)
    }
}

/// An estimate of the memory a JSON tree holds beyond its root `Value`: what caches weigh their
/// entries by. Written here because no crate measures serde_json trees; it counts each value,
/// each object entry (key, value, hash and index slot) and the text of strings and keys.
pub fn heap_size(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items
            .iter()
            .map(|item| std::mem::size_of::<Value>() + heap_size(item))
            .sum(),
        Value::Object(map) => map_heap_size(map),
        _ => 0,
    }
}

/// [`heap_size`] of an object's entries.
pub fn map_heap_size(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(key, value)| entry_heap_size(key, value))
        .sum()
}

/// [`heap_size`] of one object entry.
pub fn entry_heap_size(key: &str, value: &Value) -> usize {
    const ENTRY: usize = std::mem::size_of::<String>() + std::mem::size_of::<Value>() + 16;
    ENTRY + key.len() + heap_size(value)
}

/// The object `value` is: what tests build with `json!({...})`.
#[cfg(test)]
pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
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

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn bounded_parsing_takes_documents_within_the_bounds() {
        let value = parse_bounded(br#"{"a": [1, "two", null, {"b": true}]}"#).unwrap();
        assert_eq!(value, json!({"a": [1, "two", null, {"b": true}]}));
        assert!(parse_bounded(nested(MAX_DEPTH).as_bytes()).is_ok());
        let many = format!("[{}]", vec!["0"; MAX_VALUES - 1].join(","));
        assert!(parse_bounded(many.as_bytes()).is_ok());
    }

    #[test]
    fn bounded_parsing_names_where_a_document_is_too_deep_or_too_large() {
        let deep = format!(r#"{{"options": {{"variables": {{"x": {}}}}}}}"#, nested(40));
        let Err(BoundedJsonError::Bounds(v)) = parse_bounded(deep.as_bytes()) else {
            panic!("too deep")
        };
        assert!(
            v.field.starts_with("options.variables.x[0][0]"),
            "{}",
            v.field
        );
        assert!(
            v.description.contains("deeper than 32"),
            "{}",
            v.description
        );

        let many = format!("{{\"list\": [{}]}}", vec!["0"; 2 * MAX_VALUES].join(","));
        let Err(BoundedJsonError::Bounds(v)) = parse_bounded(many.as_bytes()) else {
            panic!("too many")
        };
        assert_eq!(v.field, format!("list[{}]", MAX_VALUES - 2));
        assert!(matches!(
            parse_bounded(b"{\"a\": }"),
            Err(BoundedJsonError::Syntax(_))
        ));
    }

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
