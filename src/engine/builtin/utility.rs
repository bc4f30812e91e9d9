//! WorkFlowEngine utility tasks: small array, string, number, object and JSON operations
//! (`push`, `arrayPush`, `arrayLength`, `arrayIncludes`, `arrayIndexOf`, `join`,
//! `setObjectKey`, `modify`, `stringConcat`, `stringLength`, `substring`, `split`,
//! `numberToString`, `parse`).
//!
//! Incoming and outgoing names are those of the exported workflows in
//! `tests/data/itential-assets`, and the behaviour is that of Itential's task reference
//! (docs.itential.com, Studio > Tasks > Reference, one page per task). Most of these tasks
//! are a JavaScript method under another name; where the reference does not say, the task does
//! what that method does, and the item says so. An optional incoming value left empty (`""`,
//! as the exported workflows leave unused ones) or null counts as not given.
//!
//! Work is bounded: arrays these tasks build hold at most [`MAX_ARRAY_ITEMS`] items, texts
//! they build at most [`MAX_MAKE_DATA_OUTPUT`] bytes, `parse` reads at most
//! [`MAX_MAKE_DATA_OUTPUT`] bytes and `setObjectKey` paths have at most [`MAX_QUERY_STEPS`]
//! keys.

use serde_json::{Map, Value};

use super::variables::Scope;
use super::{js, one, parse_json, Outcome, MAX_MAKE_DATA_OUTPUT, MAX_QUERY_STEPS};
use crate::domain::json::type_name;

/// Most items an array built by `push`, `arrayPush` or `split` may hold, and the highest
/// array index `setObjectKey` may set.
pub const MAX_ARRAY_ITEMS: usize = 100_000;

// --- incoming values ------------------------------------------------------------------------

fn required<'a>(incoming: &'a Map<String, Value>, key: &str) -> Result<&'a Value, String> {
    incoming.get(key).ok_or_else(|| format!("{key} is missing"))
}

fn array<'a>(incoming: &'a Map<String, Value>, key: &str) -> Result<&'a Vec<Value>, String> {
    match required(incoming, key)? {
        Value::Array(items) => Ok(items),
        other => Err(format!("{key} must be an array, not {}", type_name(other))),
    }
}

fn string<'a>(incoming: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match required(incoming, key)? {
        Value::String(text) => Ok(text),
        other => Err(format!("{key} must be a string, not {}", type_name(other))),
    }
}

/// An optional incoming value: None when missing, null or `""`.
fn optional<'a>(incoming: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match incoming.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(value) => Some(value),
    }
}

/// An optional whole number (an index, a limit, a radix): a number or its text, its fraction
/// dropped as JavaScript's ToIntegerOrInfinity does.
fn optional_integer(incoming: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    let Some(value) = optional(incoming, key) else {
        return Ok(None);
    };
    let number = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => js::parse_number(text),
        _ => None,
    };
    match number {
        Some(number) if number.is_finite() => Ok(Some(number.trunc())),
        _ => Err(format!(
            "{key} must be a number, not {}",
            super::describe(value)
        )),
    }
}

/// Where a search from `from_index` starts in `len` items, as `Array.prototype.indexOf` and
/// `includes` take it: a negative index counts from the end.
fn search_start(from_index: Option<f64>, len: usize) -> usize {
    match from_index {
        None => 0,
        Some(index) if index < 0.0 => (len as f64 + index).max(0.0) as usize,
        Some(index) => index.min(len as f64) as usize,
    }
}

fn text_within_bound(text: String, key: &str) -> Result<String, String> {
    if text.len() > MAX_MAKE_DATA_OUTPUT {
        return Err(format!(
            "{key} would be longer than {MAX_MAKE_DATA_OUTPUT} bytes"
        ));
    }
    Ok(text)
}

fn array_within_bound(items: &[Value], key: &str) -> Result<(), String> {
    if items.len() >= MAX_ARRAY_ITEMS {
        return Err(format!(
            "{key} already holds {} items, the most an array may hold here is {MAX_ARRAY_ITEMS}",
            items.len()
        ));
    }
    Ok(())
}

/// JavaScript's `String(value)`: null as `null`, arrays joined by commas, objects as
/// `[object Object]`, the rest as [`js::text`].
fn js_string(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        other => js::primitive_text(other),
    }
}

// --- arrays ---------------------------------------------------------------------------------

/// `push` (type operation; the reference's pushToArray): appends incoming `item_to_push` to
/// the array in job variable `job_variable` (a name), which becomes the longer array; outgoing
/// `job_variable_value` is that array. As on Platform 6, the job variable must already hold
/// an array (the reference: "Arrays must be created before using pushToArray"; Platform
/// 2023.2 created it); the corpus's workflows create it with newVariable first.
pub(super) fn push(incoming: &Map<String, Value>, scope: &Scope) -> Result<Outcome, String> {
    let name = match required(incoming, "job_variable")? {
        Value::String(name) if !name.is_empty() => name,
        Value::String(_) => return Err("job_variable is empty".to_owned()),
        other => {
            return Err(format!(
                "job_variable must be the name of a job variable, not {}",
                type_name(other)
            ))
        }
    };
    let item = required(incoming, "item_to_push")?;
    let mut items = match scope.job.get(name) {
        Some(Value::Array(items)) => items.clone(),
        None => {
            return Err(format!(
                "job variable {name:?} does not exist; create it as an array first"
            ))
        }
        Some(other) => {
            return Err(format!(
                "job variable {name:?} must be an array, not {}",
                type_name(other)
            ))
        }
    };
    array_within_bound(&items, &format!("job variable {name:?}"))?;
    items.push(item.clone());
    let value = Value::Array(items);
    Ok(Outcome::Finished {
        finish_state: crate::domain::run::FinishState::Success,
        outgoing: one("job_variable_value", value.clone()),
        job_writes: vec![(name.clone(), value)],
        error: None,
    })
}

/// `arrayPush` (the reference's push (array)): incoming `arr` with incoming `elementN`
/// appended, as outgoing `pushedArray`. `elementN` is appended as one item even when it is an
/// array (as `arr.push(elementN)`). The reference's remark that an empty `arr` returns an
/// error is not followed: every `arrayPush` in the corpus pushes onto a static `[]`, which
/// `Array.prototype.push` accepts.
pub(super) fn array_push(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let arr = array(incoming, "arr")?;
    let element = required(incoming, "elementN")?;
    array_within_bound(arr, "arr")?;
    let mut items = arr.clone();
    items.push(element.clone());
    Ok(Outcome::success(one("pushedArray", Value::Array(items))))
}

/// `arrayLength`: the number of items in incoming `arr`, as outgoing `length`.
pub(super) fn array_length(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let arr = array(incoming, "arr")?;
    Ok(Outcome::success(one("length", Value::from(arr.len()))))
}

/// The index of the first item of `arr` at or after `fromIndex` equal to `searchElement`.
/// JavaScript compares strictly (no conversion: `"2"` is not `2`); values arriving here are
/// copies without identity, so arrays and objects are equal when their content is (where
/// JavaScript would compare references).
fn find(incoming: &Map<String, Value>) -> Result<Option<usize>, String> {
    let arr = array(incoming, "arr")?;
    let wanted = required(incoming, "searchElement")?;
    let start = search_start(optional_integer(incoming, "fromIndex")?, arr.len());
    Ok(arr[start..]
        .iter()
        .position(|item| js::same(item, wanted))
        .map(|at| start + at))
}

/// `arrayIncludes`: outgoing `result` is true when incoming `arr` holds `searchElement` at
/// or after `fromIndex` (default 0; negative counts from the end), as
/// `Array.prototype.includes`.
pub(super) fn array_includes(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let found = find(incoming)?;
    Ok(Outcome::success(one(
        "result",
        Value::Bool(found.is_some()),
    )))
}

/// `arrayIndexOf`: outgoing `index` is the first position of `searchElement` in incoming
/// `arr` at or after `fromIndex`, or -1, as `Array.prototype.indexOf`.
pub(super) fn array_index_of(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let index = find(incoming)?.map_or(Value::from(-1), Value::from);
    Ok(Outcome::success(one("index", index)))
}

/// `join`: the items of incoming `arr` as text, separated by `separator` (default `,`), as
/// outgoing `joinedElements`, as `Array.prototype.join`: null items are empty, arrays are
/// joined by commas, objects are `[object Object]`.
pub(super) fn join(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let arr = array(incoming, "arr")?;
    let separator = match incoming.get("separator") {
        None | Some(Value::Null) => ",".to_owned(),
        Some(value) => js_string(value),
    };
    let mut joined = String::new();
    for (at, item) in arr.iter().enumerate() {
        if at > 0 {
            joined.push_str(&separator);
        }
        joined.push_str(&js::primitive_text(item));
        if joined.len() > MAX_MAKE_DATA_OUTPUT {
            break;
        }
    }
    let joined = text_within_bound(joined, "joinedElements")?;
    Ok(Outcome::success(one(
        "joinedElements",
        Value::String(joined),
    )))
}

// --- objects --------------------------------------------------------------------------------

/// One key of a `setObjectKey` path: a property name, or an array index.
enum Key<'a> {
    Name(&'a str),
    Index(usize),
}

impl Key<'_> {
    fn text(&self) -> String {
        match self {
            Key::Name(name) => (*name).to_owned(),
            Key::Index(index) => index.to_string(),
        }
    }
}

fn path_key(value: &Value) -> Result<Key<'_>, String> {
    match value {
        Value::String(name) => Ok(match name.parse::<usize>() {
            Ok(index) if index.to_string() == *name => Key::Index(index),
            _ => Key::Name(name),
        }),
        Value::Number(number) => number
            .as_u64()
            .map(|index| Key::Index(index as usize))
            .ok_or_else(|| format!("path keys must be texts or array indexes, not {number}")),
        other => Err(format!(
            "path keys must be texts or array indexes, not {}",
            type_name(other)
        )),
    }
}

/// `setObjectKey`: incoming `obj` with the property at `path` (an array of keys) set to
/// `value`, as outgoing `object`; the reference: "If the property does not exist
/// (is undefined), a path to it will be created". Where the path is missing or reaches a
/// value that is neither an object nor an array, a new container takes its place: an array
/// when the next key is an index, else an object (as lodash's `_.set`, which the reference's
/// description matches); an array met where the next key is a name also gives way to an
/// object (JSON arrays hold no named properties). An index into an array beyond its end fills
/// the gap with nulls. `obj` itself must be an object, as the reference's type says.
pub(super) fn set_object_key(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let mut object = match required(incoming, "obj")? {
        Value::Object(object) => Value::Object(object.clone()),
        other => return Err(format!("obj must be an object, not {}", type_name(other))),
    };
    let path = array(incoming, "path")?;
    if path.is_empty() {
        return Err("path must name at least one key".to_owned());
    }
    if path.len() > MAX_QUERY_STEPS {
        return Err(format!(
            "path has {} keys, at most {MAX_QUERY_STEPS} are allowed",
            path.len()
        ));
    }
    let keys = path.iter().map(path_key).collect::<Result<Vec<_>, _>>()?;
    if let Some(Key::Index(index)) = keys
        .iter()
        .find(|key| matches!(key, Key::Index(i) if *i >= MAX_ARRAY_ITEMS))
    {
        return Err(format!(
            "path index {index} is beyond the most an array may hold here ({MAX_ARRAY_ITEMS})"
        ));
    }
    let value = incoming.get("value").cloned().unwrap_or(Value::Null);
    let mut at = &mut object;
    for (step, key) in keys.iter().enumerate() {
        let last = step + 1 == keys.len();
        let next_is_index = keys
            .get(step + 1)
            .is_some_and(|key| matches!(key, Key::Index(_)));
        let fresh = || {
            if next_is_index {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            }
        };
        let slot = match (at, key) {
            (Value::Array(items), Key::Index(index)) => {
                if items.len() <= *index {
                    items.resize(index + 1, Value::Null);
                }
                &mut items[*index]
            }
            (Value::Object(map), key) => map.entry(key.text()).or_insert(Value::Null),
            // Never met: each container on the path is an object, or an array when its key is
            // an index (the step before makes it so).
            (_, key) => return Err(format!("path key {:?} cannot be set", key.text())),
        };
        if last {
            *slot = value;
            break;
        }
        if !matches!(slot, Value::Object(_) | Value::Array(_))
            || (matches!(slot, Value::Array(_)) && !next_is_index)
        {
            *slot = fresh();
        }
        at = slot;
    }
    Ok(Outcome::success(one("object", object)))
}

// --- strings --------------------------------------------------------------------------------

/// `stringConcat`: incoming `str` followed by `stringN` (taken as one value and written as
/// JavaScript's `String()` writes it), as outgoing `combinedStrings`, as
/// `String.prototype.concat`.
pub(super) fn string_concat(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let first = string(incoming, "str")?;
    let second = js_string(required(incoming, "stringN")?);
    if first.len() + second.len() > MAX_MAKE_DATA_OUTPUT {
        return Err(format!(
            "combinedStrings would be longer than {MAX_MAKE_DATA_OUTPUT} bytes"
        ));
    }
    Ok(Outcome::success(one(
        "combinedStrings",
        Value::String(format!("{first}{second}")),
    )))
}

/// `stringLength` (the reference's length (string)): the length of incoming `str` in UTF-16
/// code units, as JavaScript counts it, as outgoing `length`.
pub(super) fn string_length(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let text = string(incoming, "str")?;
    Ok(Outcome::success(one(
        "length",
        Value::from(text.encode_utf16().count()),
    )))
}

/// `substring`: the part of incoming `str` from `indexStart` up to, not including,
/// `indexEnd` (default: the end), as outgoing `substring`, as `String.prototype.substring`:
/// indexes count UTF-16 code units, negative ones are 0, ones past the end are the end, and
/// a start after the end swaps the two. A cut through a character's surrogate pair leaves
/// U+FFFD in its place.
pub(super) fn substring(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let text = string(incoming, "str")?;
    let units: Vec<u16> = text.encode_utf16().collect();
    let clamp = |index: Option<f64>, default: usize| {
        index.map_or(default, |index| {
            index.clamp(0.0, units.len() as f64) as usize
        })
    };
    let start = clamp(optional_integer(incoming, "indexStart")?, 0);
    let end = clamp(optional_integer(incoming, "indexEnd")?, units.len());
    let (start, end) = (start.min(end), start.max(end));
    Ok(Outcome::success(one(
        "substring",
        Value::String(String::from_utf16_lossy(&units[start..end])),
    )))
}

/// `split`: incoming `str` cut at each `separator`, as outgoing `splitArray`, at most
/// `limit` pieces, as `String.prototype.split`: without a separator the array holds `str`
/// alone; an empty separator cuts between characters (JavaScript cuts between UTF-16 code
/// units, which differs only for characters outside the Basic Multilingual Plane).
pub(super) fn split(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let text = string(incoming, "str")?;
    let limit = match optional_integer(incoming, "limit")? {
        // ToUint32: negative limits wrap to large ones.
        Some(limit) => limit.rem_euclid(4_294_967_296.0) as usize,
        None => usize::MAX,
    };
    let separator = match incoming.get("separator") {
        None | Some(Value::Null) => None,
        Some(value) => Some(js_string(value)),
    };
    let pieces: Vec<&str> = match separator.as_deref() {
        _ if limit == 0 => Vec::new(),
        None => vec![text],
        Some("") => text
            .char_indices()
            .map(|(at, c)| &text[at..at + c.len_utf8()])
            .take(limit.min(MAX_ARRAY_ITEMS + 1))
            .collect(),
        Some(separator) => text
            .split(separator)
            .take(limit.min(MAX_ARRAY_ITEMS + 1))
            .collect(),
    };
    if pieces.len() > MAX_ARRAY_ITEMS {
        return Err(format!(
            "splitArray would hold more than {MAX_ARRAY_ITEMS} items"
        ));
    }
    let pieces = pieces
        .into_iter()
        .map(|piece| Value::String(piece.to_owned()))
        .collect();
    Ok(Outcome::success(one("splitArray", Value::Array(pieces))))
}

// --- numbers and JSON -----------------------------------------------------------------------

/// Digits of `number` (a whole number) in `radix`, as `Number.prototype.toString(radix)`.
fn radix_text(number: f64, radix: u32) -> String {
    let mut magnitude = number.abs() as u128;
    let mut digits = Vec::new();
    loop {
        let digit = (magnitude % u128::from(radix)) as u32;
        digits.push(char::from_digit(digit, radix).unwrap_or('?'));
        magnitude /= u128::from(radix);
        if magnitude == 0 {
            break;
        }
    }
    if number < 0.0 {
        digits.push('-');
    }
    digits.iter().rev().collect()
}

/// `numberToString`: incoming `num` as text in `radix` (2 to 36, default 10), as outgoing
/// `numToString`, as `Number.prototype.toString(radix)`. Fractions are written in radix 10
/// only (JavaScript writes them in any radix; this refuses them).
pub(super) fn number_to_string(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let number = match required(incoming, "num")? {
        Value::Number(number) => number,
        other => return Err(format!("num must be a number, not {}", type_name(other))),
    };
    let radix = optional_integer(incoming, "radix")?.unwrap_or(10.0);
    if !(2.0..=36.0).contains(&radix) {
        return Err(format!("radix must be from 2 to 36, not {radix}"));
    }
    let radix = radix as u32;
    let text = if radix == 10 {
        js::number_text(number)
    } else {
        let value = number.as_f64().unwrap_or(0.0);
        if value.fract() != 0.0 || value.abs() >= 1e21 {
            return Err(format!(
                "num {value} has a fraction or is too large to write in radix {radix}"
            ));
        }
        radix_text(value, radix)
    };
    Ok(Outcome::success(one("numToString", Value::String(text))))
}

/// `modify`: outgoing `updated_object` is `new_value`, or, when `object_to_update` is an
/// object and `query` names one of its fields (keys separated by dots, `a.b.description`), a
/// copy of the object with that field set to `new_value` (missing levels created). As
/// Itential's reference says, the query is not used for a boolean, number or string, and
/// `modify` does not change arrays: a query through an array, or into an array, is an error.
pub(super) fn modify(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let target = required(incoming, "object_to_update")?;
    let new_value = required(incoming, "new_value")?.clone();
    let query = match optional(incoming, "query") {
        None => None,
        Some(Value::String(query)) => Some(query.as_str()),
        Some(other) => return Err(format!("query must be a string, not {}", type_name(other))),
    };
    let (Some(query), Value::Object(_) | Value::Array(_)) = (query, target) else {
        return Ok(Outcome::success(one("updated_object", new_value)));
    };
    if matches!(target, Value::Array(_)) {
        return Err("object_to_update is an array, which modify does not change".to_owned());
    }
    let keys: Vec<&str> = query.split('.').collect();
    if keys.len() > MAX_QUERY_STEPS {
        return Err(format!(
            "query has {} keys, at most {MAX_QUERY_STEPS} are allowed",
            keys.len()
        ));
    }
    if keys.iter().any(|key| key.is_empty()) {
        return Err(format!("query {query:?} has an empty key"));
    }
    let mut updated = target.clone();
    let mut at = &mut updated;
    for (step, key) in keys.iter().enumerate() {
        let Value::Object(map) = at else {
            return Err(format!(
                "query {query:?} goes through {}, which modify does not change",
                keys[..step].join(".")
            ));
        };
        let slot = map.entry(key.to_string()).or_insert(Value::Null);
        if step + 1 == keys.len() {
            if matches!(slot, Value::Array(_)) {
                return Err(format!(
                    "query {query:?} names an array, which modify does not change"
                ));
            }
            *slot = new_value;
            break;
        }
        if matches!(slot, Value::Null) {
            *slot = Value::Object(Map::new());
        }
        at = slot;
    }
    Ok(Outcome::success(one("updated_object", updated)))
}

/// `parse`: incoming `text` read as JSON, as outgoing `textObject`, as `JSON.parse`; within
/// [`MAX_MAKE_DATA_OUTPUT`] bytes and the nesting and size bounds of what the service stores.
pub(super) fn parse(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let text = string(incoming, "text")?;
    if text.len() > MAX_MAKE_DATA_OUTPUT {
        return Err(format!("text is longer than {MAX_MAKE_DATA_OUTPUT} bytes"));
    }
    let value = parse_json(text).map_err(|why| format!("text: {why}"))?;
    Ok(Outcome::success(one("textObject", value)))
}

#[cfg(test)]
mod tests {
    use super::super::{run, Builtin};
    use super::*;
    use crate::domain::json::object;
    use crate::domain::run::FinishState;
    use serde_json::json;

    /// Runs `builtin` with job variables `job` and no earlier tasks.
    fn run_with_job(builtin: Builtin, job: Value, incoming: Value) -> Outcome {
        let job = object(job);
        let no_task = |_: &str| None;
        let scope = Scope {
            job: &job,
            tasks: &no_task,
        };
        run(
            builtin,
            &object(incoming),
            &scope,
            chrono::DateTime::UNIX_EPOCH,
        )
    }

    fn run_alone(builtin: Builtin, incoming: Value) -> Outcome {
        run_with_job(builtin, json!({}), incoming)
    }

    /// The outgoing values of a task that succeeded, with no job writes.
    fn succeeded(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Finished {
                finish_state: FinishState::Success,
                outgoing,
                job_writes,
                error: None,
            } if job_writes.is_empty() => Value::Object(outgoing),
            other => panic!("expected a plain success, got {other:?}"),
        }
    }

    fn error_message(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Finished {
                finish_state: FinishState::Error,
                error: Some(error),
                outgoing,
                job_writes,
            } if outgoing.is_empty() && job_writes.is_empty() => {
                error["message"].as_str().unwrap_or_default().to_owned()
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    // --- push ---

    #[test]
    fn push_appends_to_the_named_job_variable_and_writes_it_back() {
        // itential-platform-workflow-utilities/archive-jobs-and-tasks-collections.json: a
        // newVariable makes `message` [], then pushes add static texts to it.
        let outcome = run_with_job(
            Builtin::Push,
            json!({"message": ["Successfully backed up matching items from the IAP Jobs collection"]}),
            json!({
                "item_to_push": "Successfully deleted matching items from the IAP Jobs collection",
                "job_variable": "message"
            }),
        );
        let expected = json!([
            "Successfully backed up matching items from the IAP Jobs collection",
            "Successfully deleted matching items from the IAP Jobs collection"
        ]);
        assert_eq!(
            outcome,
            Outcome::Finished {
                finish_state: FinishState::Success,
                outgoing: object(json!({ "job_variable_value": expected.clone() })),
                job_writes: vec![("message".to_owned(), expected)],
                error: None,
            }
        );
        // gitlab/get-diff-for-merge.json pushes an earlier task's object onto `result`: it
        // stays one item.
        let outcome = run_with_job(
            Builtin::Push,
            json!({"result": []}),
            json!({"item_to_push": {"diff": "+a"}, "job_variable": "result"}),
        );
        assert_eq!(
            outcome.finish_state(),
            Some(FinishState::Success),
            "{outcome:?}"
        );
        let Outcome::Finished { job_writes, .. } = outcome else {
            unreachable!()
        };
        assert_eq!(
            job_writes,
            vec![("result".to_owned(), json!([{"diff": "+a"}]))]
        );
    }

    #[test]
    fn push_needs_an_existing_array_variable_and_an_item() {
        for (job, incoming, message) in [
            (
                json!({}),
                json!({"item_to_push": "x", "job_variable": "message"}),
                "push: job variable \"message\" does not exist; create it as an array first",
            ),
            (
                json!({"message": "text"}),
                json!({"item_to_push": "x", "job_variable": "message"}),
                "push: job variable \"message\" must be an array, not a string",
            ),
            (
                json!({"message": []}),
                json!({"job_variable": "message"}),
                "push: item_to_push is missing",
            ),
            (
                json!({}),
                json!({"item_to_push": "x", "job_variable": ["message"]}),
                "push: job_variable must be the name of a job variable, not an array",
            ),
        ] {
            assert_eq!(
                error_message(&run_with_job(Builtin::Push, job, incoming)),
                message
            );
        }
    }

    #[test]
    fn push_refuses_to_grow_an_array_past_the_bound() {
        let full = Value::Array(vec![Value::Null; MAX_ARRAY_ITEMS]);
        let outcome = run_with_job(
            Builtin::Push,
            json!({ "list": full }),
            json!({"item_to_push": 1, "job_variable": "list"}),
        );
        assert!(error_message(&outcome).contains("the most an array may hold"));
    }

    // --- arrays ---

    #[test]
    fn array_push_appends_one_element_to_a_copy() {
        // cisco-ios/command-template-runner.json: arr [] (static), elementN a device name.
        assert_eq!(
            succeeded(run_alone(
                Builtin::ArrayPush,
                json!({"arr": [], "elementN": "router-1"})
            )),
            json!({"pushedArray": ["router-1"]})
        );
        // aws-ec2/delete-subnets-by-vpc.json pushes an object; an array element stays one item.
        assert_eq!(
            succeeded(run_alone(
                Builtin::ArrayPush,
                json!({"arr": [{"a": 1}], "elementN": [2, 3]})
            )),
            json!({"pushedArray": [{"a": 1}, [2, 3]]})
        );
        assert_eq!(
            error_message(&run_alone(
                Builtin::ArrayPush,
                json!({"arr": "x", "elementN": 1})
            )),
            "arrayPush: arr must be an array, not a string"
        );
        assert_eq!(
            error_message(&run_alone(Builtin::ArrayPush, json!({"arr": []}))),
            "arrayPush: elementN is missing"
        );
    }

    #[test]
    fn array_length_counts_items() {
        // aws-ec2/create-route.json: the length of an adapter's return_data.
        assert_eq!(
            succeeded(run_alone(
                Builtin::ArrayLength,
                json!({"arr": [{"RouteTableId": "rtb-1"}, {"RouteTableId": "rtb-2"}]})
            )),
            json!({"length": 2})
        );
        assert_eq!(
            succeeded(run_alone(Builtin::ArrayLength, json!({"arr": []}))),
            json!({"length": 0})
        );
        assert_eq!(
            error_message(&run_alone(
                Builtin::ArrayLength,
                json!({"arr": {"items": []}})
            )),
            "arrayLength: arr must be an array, not an object"
        );
        assert_eq!(
            error_message(&run_alone(Builtin::ArrayLength, json!({}))),
            "arrayLength: arr is missing"
        );
    }

    #[test]
    fn array_includes_and_index_of_search_strictly_from_from_index() {
        // versa-director/create-device-group.json and gitlab/create-templated-project.json:
        // a name searched in a list of names, fromIndex left "".
        let names = json!(["branch-a", "branch-b", "branch-a"]);
        for (search, from, includes, index) in [
            (json!("branch-b"), json!(""), true, 1),
            (json!("branch-c"), json!(""), false, -1),
            (json!("branch-a"), json!(1), true, 2),
            (json!("branch-a"), json!(-1), true, 2),
            (json!("branch-b"), json!(-1), false, -1),
            (json!("branch-a"), json!(-10), true, 0),
            (json!("branch-a"), json!("3"), false, -1),
            (json!("branch-a"), json!(1.7), true, 2),
        ] {
            let incoming = json!({"arr": names, "searchElement": search, "fromIndex": from});
            assert_eq!(
                succeeded(run_alone(Builtin::ArrayIncludes, incoming.clone())),
                json!({ "result": includes }),
                "{incoming}"
            );
            assert_eq!(
                succeeded(run_alone(Builtin::ArrayIndexOf, incoming.clone())),
                json!({ "index": index }),
                "{incoming}"
            );
        }
        // Strict: the text "2" is not the number 2; objects compare by content.
        let incoming = json!({"arr": ["1", "2", {"id": 3}], "searchElement": 2});
        assert_eq!(
            succeeded(run_alone(Builtin::ArrayIncludes, incoming)),
            json!({"result": false})
        );
        let incoming = json!({"arr": ["1", "2", {"id": 3}], "searchElement": {"id": 3}});
        assert_eq!(
            succeeded(run_alone(Builtin::ArrayIndexOf, incoming)),
            json!({"index": 2})
        );
    }

    #[test]
    fn array_includes_and_index_of_need_an_array_a_search_element_and_a_numeric_index() {
        for builtin in [Builtin::ArrayIncludes, Builtin::ArrayIndexOf] {
            let name = builtin.name();
            for (incoming, why) in [
                (
                    json!({"arr": null, "searchElement": "a"}),
                    "arr must be an array, not null",
                ),
                (json!({"arr": ["a"]}), "searchElement is missing"),
                (
                    json!({"arr": ["a"], "searchElement": "a", "fromIndex": "first"}),
                    "fromIndex must be a number, not \"first\"",
                ),
            ] {
                assert_eq!(
                    error_message(&run_alone(builtin, incoming)),
                    format!("{name}: {why}")
                );
            }
        }
    }

    #[test]
    fn join_writes_items_as_javascript_does() {
        // itential-platform-workflow-utilities/archive-jobs-and-tasks-collections.json joins
        // the `message` texts with "<br>".
        assert_eq!(
            succeeded(run_alone(
                Builtin::Join,
                json!({"arr": ["Backed up", "Deleted"], "separator": "<br>"})
            )),
            json!({"joinedElements": "Backed up<br>Deleted"})
        );
        assert_eq!(
            succeeded(run_alone(
                Builtin::Join,
                json!({"arr": [1, null, true, [2, 3], {"a": 1}, 1.5]})
            )),
            json!({"joinedElements": "1,,true,2,3,[object Object],1.5"})
        );
        assert_eq!(
            succeeded(run_alone(
                Builtin::Join,
                json!({"arr": ["a", "b"], "separator": ""})
            )),
            json!({"joinedElements": "ab"})
        );
        assert_eq!(
            error_message(&run_alone(
                Builtin::Join,
                json!({"arr": "a,b", "separator": ","})
            )),
            "join: arr must be an array, not a string"
        );
    }

    #[test]
    fn join_refuses_a_result_past_the_bound() {
        let big = "x".repeat(MAX_MAKE_DATA_OUTPUT / 2 + 1);
        let outcome = run_alone(Builtin::Join, json!({"arr": [big, big]}));
        assert!(error_message(&outcome).starts_with("join: joinedElements would be longer"));
    }

    // --- objects ---

    #[test]
    fn set_object_key_sets_and_creates_properties_along_the_path() {
        // gitlab/create-templated-project.json: ReturnStatus (as its newVariable makes it)
        // gets `project_id`.
        assert_eq!(
            succeeded(run_alone(
                Builtin::SetObjectKey,
                json!({
                    "obj": {"errors": [], "message": "", "response": {}, "status": ""},
                    "path": ["project_id"],
                    "value": 42
                })
            )),
            json!({"object": {
                "errors": [], "message": "", "response": {}, "status": "", "project_id": 42
            }})
        );
        // cisco-meraki/claim-network-devices.json: a static {} gets `serials`.
        assert_eq!(
            succeeded(run_alone(
                Builtin::SetObjectKey,
                json!({"obj": {}, "path": ["serials"], "value": ["Q2XX-1"]})
            )),
            json!({"object": {"serials": ["Q2XX-1"]}})
        );
        // gitlab/create-templated-project.json sets a nested `properties.<name>.enum`; the
        // missing levels are created, an existing value is replaced.
        assert_eq!(
            succeeded(run_alone(
                Builtin::SetObjectKey,
                json!({
                    "obj": {"properties": {"other": 1}},
                    "path": ["properties", "chooseOneOfTheseAvailableTemplates", "enum"],
                    "value": ["t1", "t2"]
                })
            )),
            json!({"object": {"properties": {
                "other": 1,
                "chooseOneOfTheseAvailableTemplates": {"enum": ["t1", "t2"]}
            }}})
        );
        // Indexes: into an existing array, and a new array where the next key is an index.
        assert_eq!(
            succeeded(run_alone(
                Builtin::SetObjectKey,
                json!({
                    "obj": {"list": ["a", "b"], "name": "x"},
                    "path": ["list", 1],
                    "value": "c"
                })
            )),
            json!({"object": {"list": ["a", "c"], "name": "x"}})
        );
        assert_eq!(
            succeeded(run_alone(
                Builtin::SetObjectKey,
                json!({"obj": {"name": "x"}, "path": ["name", "2", "id"], "value": 7})
            )),
            json!({"object": {"name": [null, null, {"id": 7}]}})
        );
    }

    #[test]
    fn set_object_key_refuses_what_is_not_an_object_and_a_path() {
        for (incoming, message) in [
            (
                json!({"obj": "ReturnStatus", "path": ["a"], "value": 1}),
                "setObjectKey: obj must be an object, not a string",
            ),
            (
                json!({"obj": {}, "path": "a.b", "value": 1}),
                "setObjectKey: path must be an array, not a string",
            ),
            (
                json!({"obj": {}, "path": [], "value": 1}),
                "setObjectKey: path must name at least one key",
            ),
            (
                json!({"obj": {}, "path": [{"a": 1}], "value": 1}),
                "setObjectKey: path keys must be texts or array indexes, not an object",
            ),
            (
                json!({"obj": {}, "path": ["list", 100_000_000], "value": 1}),
                "setObjectKey: path index 100000000 is beyond the most an array may hold here (100000)",
            ),
        ] {
            assert_eq!(
                error_message(&run_alone(Builtin::SetObjectKey, incoming)),
                message
            );
        }
    }

    // --- strings ---

    #[test]
    fn string_concat_appends_the_second_value_as_text() {
        // itential-platform-workflow-utilities/as-built-documentation.json: "# " + a name.
        assert_eq!(
            succeeded(run_alone(
                Builtin::StringConcat,
                json!({"str": "# ", "stringN": "Bundle A"})
            )),
            json!({"combinedStrings": "# Bundle A"})
        );
        assert_eq!(
            succeeded(run_alone(
                Builtin::StringConcat,
                json!({"str": "n=", "stringN": 3})
            )),
            json!({"combinedStrings": "n=3"})
        );
        assert_eq!(
            error_message(&run_alone(
                Builtin::StringConcat,
                json!({"str": 1, "stringN": "a"})
            )),
            "stringConcat: str must be a string, not a number"
        );
        assert_eq!(
            error_message(&run_alone(Builtin::StringConcat, json!({"str": "a"}))),
            "stringConcat: stringN is missing"
        );
    }

    #[test]
    fn string_length_counts_utf16_code_units() {
        // gitlab/get-file.json: the length of a file path.
        assert_eq!(
            succeeded(run_alone(
                Builtin::StringLength,
                json!({"str": "configs/router.cfg"})
            )),
            json!({"length": 18})
        );
        assert_eq!(
            succeeded(run_alone(Builtin::StringLength, json!({"str": "é😀"}))),
            json!({"length": 3})
        );
        assert_eq!(
            error_message(&run_alone(Builtin::StringLength, json!({"str": null}))),
            "stringLength: str must be a string, not null"
        );
    }

    #[test]
    fn substring_takes_the_part_between_two_indexes_as_javascript_does() {
        // infoblox-ddi/delete-network-container.json: indexStart 17 drops the
        // "networkcontainer/" prefix of an Infoblox reference, indexEnd left "".
        let reference = "networkcontainer/ZG5zLm5ldHdvcmtfY29udGFpbmVy:10.0.0.0/8/default";
        assert_eq!(
            succeeded(run_alone(
                Builtin::Substring,
                json!({"str": reference, "indexStart": 17, "indexEnd": ""})
            )),
            json!({"substring": "ZG5zLm5ldHdvcmtfY29udGFpbmVy:10.0.0.0/8/default"})
        );
        for (start, end, part) in [
            (json!(1), json!(3), "bc"),
            (json!(3), json!(1), "bc"),
            (json!(-2), json!(2), "ab"),
            (json!(2), json!(100), "cde"),
            (json!("1"), json!(null), "bcde"),
        ] {
            assert_eq!(
                succeeded(run_alone(
                    Builtin::Substring,
                    json!({"str": "abcde", "indexStart": start, "indexEnd": end})
                )),
                json!({ "substring": part })
            );
        }
        assert_eq!(
            error_message(&run_alone(
                Builtin::Substring,
                json!({"str": "abc", "indexStart": [1]})
            )),
            "substring: indexStart must be a number, not an array"
        );
    }

    #[test]
    fn split_cuts_at_the_separator_up_to_the_limit() {
        // versa-director/check-director-version.json: a version split at ".", limit "".
        assert_eq!(
            succeeded(run_alone(
                Builtin::Split,
                json!({"str": "21.2.3", "separator": ".", "limit": ""})
            )),
            json!({"splitArray": ["21", "2", "3"]})
        );
        for (separator, limit, pieces) in [
            (json!("."), json!(2), json!(["21", "2"])),
            (json!("."), json!(0), json!([])),
            (json!(null), json!(""), json!(["21.2.3"])),
            (json!(""), json!(3), json!(["2", "1", "."])),
            (json!("-"), json!(""), json!(["21.2.3"])),
        ] {
            assert_eq!(
                succeeded(run_alone(
                    Builtin::Split,
                    json!({"str": "21.2.3", "separator": separator, "limit": limit})
                )),
                json!({ "splitArray": pieces })
            );
        }
        assert_eq!(
            error_message(&run_alone(
                Builtin::Split,
                json!({"str": 21.2, "separator": "."})
            )),
            "split: str must be a string, not a number"
        );
    }

    #[test]
    fn split_refuses_more_pieces_than_the_bound() {
        let text = ",".repeat(MAX_ARRAY_ITEMS);
        let outcome = run_alone(Builtin::Split, json!({"str": text, "separator": ","}));
        assert!(error_message(&outcome).starts_with("split: splitArray would hold more than"));
    }

    // --- numbers and JSON ---

    #[test]
    fn number_to_string_writes_the_number_in_its_radix() {
        // netbox/delete-prefix.json: prefixId (124 in its schema's examples), radix 10.
        assert_eq!(
            succeeded(run_alone(
                Builtin::NumberToString,
                json!({"num": 124, "radix": 10})
            )),
            json!({"numToString": "124"})
        );
        for (num, radix, text) in [
            (json!(255), json!(16), "ff"),
            (json!(-5), json!("2"), "-101"),
            (json!(1.5), json!(""), "1.5"),
            (json!(0), json!(36), "0"),
        ] {
            assert_eq!(
                succeeded(run_alone(
                    Builtin::NumberToString,
                    json!({"num": num, "radix": radix})
                )),
                json!({ "numToString": text })
            );
        }
        for (incoming, message) in [
            (
                json!({"num": "124", "radix": 10}),
                "numberToString: num must be a number, not a string",
            ),
            (
                json!({"num": 124, "radix": 37}),
                "numberToString: radix must be from 2 to 36, not 37",
            ),
        ] {
            assert_eq!(
                error_message(&run_alone(Builtin::NumberToString, incoming)),
                message
            );
        }
    }

    #[test]
    fn parse_reads_json_text() {
        // cisco-nso/provision-service.json parses an adapter's JSON text.
        assert_eq!(
            succeeded(run_alone(
                Builtin::Parse,
                json!({"text": "{\"tailf-ncs:services\": {\"status\": \"ok\"}, \"n\": [1, 2]}"})
            )),
            json!({"textObject": {"tailf-ncs:services": {"status": "ok"}, "n": [1, 2]}})
        );
        assert_eq!(
            succeeded(run_alone(Builtin::Parse, json!({"text": "42"}))),
            json!({"textObject": 42})
        );
        assert!(
            error_message(&run_alone(Builtin::Parse, json!({"text": "{oops"})))
                .starts_with("parse: text: the input is not JSON")
        );
        assert_eq!(
            error_message(&run_alone(Builtin::Parse, json!({"text": {"a": 1}}))),
            "parse: text must be a string, not an object"
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            error_message(&run_alone(Builtin::Parse, json!({ "text": deep })))
                .starts_with("parse: text: the input")
        );
    }
}
