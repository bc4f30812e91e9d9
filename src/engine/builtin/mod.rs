//! The WorkFlowEngine tasks the service runs itself: `stub`, `newVariable`, `delay`,
//! `evaluation`, `query`, `merge` and `makeData`, and the utility tasks in [`utility`]:
//! `push`, `setObjectKey`, `arrayLength`, `arrayPush`, `arrayIncludes`, `arrayIndexOf`,
//! `join`, `stringConcat`, `stringLength`, `substring`, `split`, `numberToString`, `parse`
//! and `modify`; and the time tasks in [`time`]: `getTime` and `calculateTimeDiff`. Pure: they
//! read the task's incoming values (already resolved by [`variables::resolve_incoming`]) and,
//! for evaluation and merge operands and `push`'s array, the job's variables and earlier
//! tasks' results through a [`Scope`]; they touch no database, and the only time they read is
//! the step's `now`, passed in. `childJob` and `forEach` are the engine's own (they start
//! jobs and run loops); every other WorkFlowEngine task (`transformation`, ...) is offered to
//! task workers.
//!
//! Behaviour follows Itential's task reference (docs.itential.com, Studio > Tasks >
//! Reference: stub, newVariable, delay, evaluation, query, merge, makeData, and one page per
//! utility task), the notes Itential publishes for building workflows
//! (github.com/itential/builder-skills, `builder-agent/SKILL.md`, "Utility Tasks") and what
//! the exported workflows in `tests/data/itential-assets` do. Where neither says, the choice
//! is stated on the item.
//!
//! A task that cannot do its work ends in `error` with `{"message": "<task>: <why>"}`; nothing
//! here panics on what a workflow holds. The work a workflow can make is bounded: queries by
//! [`MAX_QUERY_LEN`] and [`MAX_QUERY_STEPS`], patterns by [`MAX_PATTERN_LEN`] and
//! [`MAX_PATTERN_WORK`], evaluations by [`MAX_EVALUATIONS`], merges by [`MAX_MERGE_ENTRIES`],
//! makeData by [`MAX_TEMPLATE_LEN`] and [`MAX_MAKE_DATA_OUTPUT`], waits by [`MAX_DELAY`],
//! the utility tasks by [`MAX_ARRAY_ITEMS`] and [`MAX_MAKE_DATA_OUTPUT`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

mod js;
mod path;
mod pattern;
mod time;
mod utility;

pub use utility::MAX_ARRAY_ITEMS;

use super::variables::{self, Scope};
use crate::domain::json::type_name;
use crate::domain::run::FinishState;

/// Longest wait a `delay` (or a `stub`'s `delay`) may ask for. Itential sets none; a job
/// parked for longer is more likely a unit mistake (milliseconds for seconds) than a plan.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Longest query (`query` task, evaluation `query`/`rightQuery`), in bytes. The longest in
/// the corpus is 127.
pub const MAX_QUERY_LEN: usize = 1024;

/// Most steps (`.key`, `[...]`, `:helper`) one query may take; each step costs at most one
/// pass over the queried value.
pub const MAX_QUERY_STEPS: usize = 64;

/// Longest regular expression (`contains`, a query's `~`), in characters.
pub const MAX_PATTERN_LEN: usize = 1024;

/// Most matching steps one regular expression may take on one text: enough for a pattern of
/// dozens of items over megabytes of device output. Matching takes time linear in the text
/// (no backtracking), so this bounds patterns and texts together.
pub const MAX_PATTERN_WORK: usize = 50_000_000;

/// Most evaluations one evaluation task may hold (the corpus's largest has 4).
pub const MAX_EVALUATIONS: usize = 1000;

/// Most entries one merge task may hold (the corpus's largest has 7).
pub const MAX_MERGE_ENTRIES: usize = 1000;

/// Longest makeData `input`, in bytes, before its placeholders are filled.
pub const MAX_TEMPLATE_LEN: usize = 1 << 20;

/// Longest makeData text once its placeholders are filled, in bytes: a template repeating a
/// large variable could otherwise grow without end.
pub const MAX_MAKE_DATA_OUTPUT: usize = 4 << 20;

/// A WorkFlowEngine task the service runs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Stub,
    NewVariable,
    Delay,
    Evaluation,
    Query,
    Merge,
    MakeData,
    Push,
    SetObjectKey,
    ArrayLength,
    ArrayPush,
    ArrayIncludes,
    ArrayIndexOf,
    Join,
    StringConcat,
    StringLength,
    Substring,
    Split,
    NumberToString,
    Parse,
    Modify,
    GetTime,
    CalculateTimeDiff,
}

impl Builtin {
    /// Every builtin.
    pub const ALL: [Builtin; 23] = [
        Builtin::Stub,
        Builtin::NewVariable,
        Builtin::Delay,
        Builtin::Evaluation,
        Builtin::Query,
        Builtin::Merge,
        Builtin::MakeData,
        Builtin::Push,
        Builtin::SetObjectKey,
        Builtin::ArrayLength,
        Builtin::ArrayPush,
        Builtin::ArrayIncludes,
        Builtin::ArrayIndexOf,
        Builtin::Join,
        Builtin::StringConcat,
        Builtin::StringLength,
        Builtin::Substring,
        Builtin::Split,
        Builtin::NumberToString,
        Builtin::Parse,
        Builtin::Modify,
        Builtin::GetTime,
        Builtin::CalculateTimeDiff,
    ];

    /// The builtin a workflow task is: its `app` is `WorkFlowEngine`, its `type` is not
    /// `manual`, and its `name` is one of the builtins' (exactly as Itential spells them).
    /// None for every other task, which workers or people carry out.
    pub fn of(task: &Map<String, Value>) -> Option<Builtin> {
        if task.get("app").and_then(Value::as_str) != Some("WorkFlowEngine") {
            return None;
        }
        if task.get("type").and_then(Value::as_str) == Some("manual") {
            return None;
        }
        let name = task.get("name").and_then(Value::as_str)?;
        Builtin::ALL
            .into_iter()
            .find(|builtin| builtin.name() == name)
    }

    /// The task `name` Itential gives it.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Stub => "stub",
            Builtin::NewVariable => "newVariable",
            Builtin::Delay => "delay",
            Builtin::Evaluation => "evaluation",
            Builtin::Query => "query",
            Builtin::Merge => "merge",
            Builtin::MakeData => "makeData",
            Builtin::Push => "push",
            Builtin::SetObjectKey => "setObjectKey",
            Builtin::ArrayLength => "arrayLength",
            Builtin::ArrayPush => "arrayPush",
            Builtin::ArrayIncludes => "arrayIncludes",
            Builtin::ArrayIndexOf => "arrayIndexOf",
            Builtin::Join => "join",
            Builtin::StringConcat => "stringConcat",
            Builtin::StringLength => "stringLength",
            Builtin::Substring => "substring",
            Builtin::Split => "split",
            Builtin::NumberToString => "numberToString",
            Builtin::Parse => "parse",
            Builtin::Modify => "modify",
            Builtin::GetTime => "getTime",
            Builtin::CalculateTimeDiff => "calculateTimeDiff",
        }
    }
}

/// What running a builtin came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task finished.
    Finished {
        finish_state: FinishState,
        /// The task's outgoing values (its result).
        outgoing: Map<String, Value>,
        /// Job variables the task itself sets (newVariable), in order. The engine applies
        /// these first, then [`variables::job_writes`] of the workflow's outgoing mapping.
        job_writes: Vec<(String, Value)>,
        /// Why, when it ended in error: `{"message": ...}`.
        error: Option<Value>,
    },
    /// The task waits: the engine sets a timer `delay` from now and, when it is due, calls
    /// [`finish_wait`] with the same incoming values.
    Wait { delay: Duration },
}

impl Outcome {
    fn finished(finish_state: FinishState, outgoing: Map<String, Value>) -> Outcome {
        Outcome::Finished {
            finish_state,
            outgoing,
            job_writes: Vec::new(),
            error: None,
        }
    }

    fn success(outgoing: Map<String, Value>) -> Outcome {
        Outcome::finished(FinishState::Success, outgoing)
    }

    fn error(builtin: Builtin, message: &str) -> Outcome {
        Outcome::Finished {
            finish_state: FinishState::Error,
            outgoing: Map::new(),
            job_writes: Vec::new(),
            error: Some(json!({ "message": format!("{}: {message}", builtin.name()) })),
        }
    }

    /// The finish state, when the task finished.
    pub fn finish_state(&self) -> Option<FinishState> {
        match self {
            Outcome::Finished { finish_state, .. } => Some(*finish_state),
            Outcome::Wait { .. } => None,
        }
    }
}

/// One outgoing value.
fn one(key: &str, value: Value) -> Map<String, Value> {
    Map::from_iter([(key.to_owned(), value)])
}

/// Runs `builtin` on its resolved `incoming` values; `scope` serves the operands of
/// evaluation and merge tasks, and `now` is the time of the step that runs it (what
/// `getTime` reads: the clock is never read here, so a step gives every task one time). A
/// `delay`, or a `stub` with a `delay`, answers [`Outcome::Wait`]; the engine finishes it
/// with [`finish_wait`].
pub fn run(
    builtin: Builtin,
    incoming: &Map<String, Value>,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Outcome {
    let result = match builtin {
        Builtin::Stub => stub(incoming),
        Builtin::NewVariable => new_variable(incoming),
        Builtin::Delay => delay(incoming),
        Builtin::Evaluation => evaluation(incoming, scope),
        Builtin::Query => query_task(incoming),
        Builtin::Merge => merge(incoming, scope),
        Builtin::MakeData => make_data(incoming),
        Builtin::Push => utility::push(incoming, scope),
        Builtin::SetObjectKey => utility::set_object_key(incoming),
        Builtin::ArrayLength => utility::array_length(incoming),
        Builtin::ArrayPush => utility::array_push(incoming),
        Builtin::ArrayIncludes => utility::array_includes(incoming),
        Builtin::ArrayIndexOf => utility::array_index_of(incoming),
        Builtin::Join => utility::join(incoming),
        Builtin::StringConcat => utility::string_concat(incoming),
        Builtin::StringLength => utility::string_length(incoming),
        Builtin::Substring => utility::substring(incoming),
        Builtin::Split => utility::split(incoming),
        Builtin::NumberToString => utility::number_to_string(incoming),
        Builtin::Parse => utility::parse(incoming),
        Builtin::Modify => utility::modify(incoming),
        Builtin::GetTime => time::get_time(incoming, now),
        Builtin::CalculateTimeDiff => time::calculate_time_diff(incoming),
    };
    result.unwrap_or_else(|message| Outcome::error(builtin, &message))
}

/// Finishes a builtin whose wait is over: a `delay` succeeds with `time_in_milliseconds`, a
/// `stub` ends as its `type` says. Any other builtin never waits, so this is an error for it.
pub fn finish_wait(builtin: Builtin, incoming: &Map<String, Value>) -> Outcome {
    let result = match builtin {
        Builtin::Delay => finish_delay(incoming),
        Builtin::Stub => finish_stub(incoming),
        _ => Err("the task does not wait".to_owned()),
    };
    result.unwrap_or_else(|message| Outcome::error(builtin, &message))
}

// --- stub -------------------------------------------------------------------------------

/// `stub`: a stand-in. Incoming `type` is the finish state to emulate (Itential documents
/// `success` and `error`; `failure` is taken too, as a manual task's path can be; missing or
/// empty is `success`), `delay` seconds to wait first (empty or 0: none) and `response` the
/// value passed through as outgoing `response`. Ending in `error`, the error carries the
/// response.
fn stub(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    stub_state(incoming)?;
    match incoming.get("delay") {
        None | Some(Value::Null) => finish_stub(incoming),
        Some(Value::String(text)) if text.trim().is_empty() => finish_stub(incoming),
        Some(value) => {
            let wait = seconds(value).map_err(|why| format!("delay {why}"))?;
            if wait.is_zero() {
                finish_stub(incoming)
            } else {
                Ok(Outcome::Wait { delay: wait })
            }
        }
    }
}

fn stub_state(incoming: &Map<String, Value>) -> Result<FinishState, String> {
    match incoming.get("type") {
        None | Some(Value::Null) => Ok(FinishState::Success),
        Some(Value::String(text)) if text.is_empty() => Ok(FinishState::Success),
        Some(Value::String(text)) => FinishState::parse(text)
            .ok_or_else(|| format!("type must be success, failure or error, not {text:?}")),
        Some(other) => Err(format!(
            "type must be success, failure or error, not {}",
            type_name(other)
        )),
    }
}

fn finish_stub(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let state = stub_state(incoming)?;
    let response = incoming.get("response").cloned().unwrap_or(Value::Null);
    let outgoing = one("response", response.clone());
    Ok(match state {
        FinishState::Error => Outcome::Finished {
            finish_state: FinishState::Error,
            outgoing,
            job_writes: Vec::new(),
            error: Some(
                json!({"message": "stub: ended in error as its type says", "response": response}),
            ),
        },
        state => Outcome::finished(state, outgoing),
    })
}

// --- newVariable --------------------------------------------------------------------------

/// `newVariable`: job variable `name` becomes `value`; outgoing `value`.
fn new_variable(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let name = match incoming.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(Value::String(_)) => return Err("name is empty".to_owned()),
        None => return Err("name is missing".to_owned()),
        Some(other) => return Err(format!("name must be a string, not {}", type_name(other))),
    };
    let value = incoming.get("value").cloned().unwrap_or(Value::Null);
    Ok(Outcome::Finished {
        finish_state: FinishState::Success,
        outgoing: one("value", value.clone()),
        job_writes: vec![(name, value)],
        error: None,
    })
}

// --- delay ----------------------------------------------------------------------------------

/// `delay`: waits incoming `time` seconds (a number, or a numeric string as a `$var` may
/// give), then succeeds with outgoing `time_in_milliseconds`.
fn delay(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let wait = delay_time(incoming)?;
    Ok(Outcome::Wait { delay: wait })
}

fn delay_time(incoming: &Map<String, Value>) -> Result<Duration, String> {
    let time = incoming.get("time").unwrap_or(&Value::Null);
    seconds(time).map_err(|why| format!("time {why}"))
}

fn finish_delay(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let wait = delay_time(incoming)?;
    let millis = wait.as_secs_f64() * 1000.0;
    Ok(Outcome::success(one(
        "time_in_milliseconds",
        js::number_value(millis.round()),
    )))
}

/// A wait given in seconds, within [`MAX_DELAY`]; the error says why not, after the field's
/// name.
fn seconds(value: &Value) -> Result<Duration, String> {
    let number = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => js::parse_number(text),
        _ => None,
    };
    let Some(number) = number else {
        return Err(format!(
            "must be a number of seconds, not {}",
            describe(value)
        ));
    };
    if number < 0.0 {
        return Err(format!("must not be negative, not {number}"));
    }
    match Duration::try_from_secs_f64(number) {
        Ok(wait) if wait <= MAX_DELAY => Ok(wait),
        _ => Err(format!(
            "must be at most {} seconds (30 days), not {number}",
            MAX_DELAY.as_secs()
        )),
    }
}

/// A value as an error message shows it: short texts and numbers as written, the rest by type.
fn describe(value: &Value) -> String {
    match value {
        Value::String(text) if text.chars().count() <= 40 => format!("{text:?}"),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => type_name(other).to_owned(),
    }
}

/// A flag such as `all_true_flag` or `pass_on_null`: a boolean, or its text; missing or
/// null is false.
fn flag(incoming: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match incoming.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(Value::String(text)) if text == "true" => Ok(true),
        Some(Value::String(text)) if text == "false" || text.is_empty() => Ok(false),
        Some(other) => Err(format!(
            "{key} must be true or false, not {}",
            describe(other)
        )),
    }
}

// --- evaluation -----------------------------------------------------------------------------

/// `evaluation`: `evaluation_groups`, each `{"all_true_flag", "evaluations": [...]}`, and the
/// task's own `all_true_flag`: true, every group must hold; false, one is enough (a group
/// likewise over its evaluations; as JavaScript's `every`/`some`, none of none holds and all
/// of none does). Each evaluation compares `operand_1` (after its `query`) with `operand_2`
/// (after its `rightQuery`) by `operator`, see [`compare`]. True: `success` with outgoing
/// `return_value: true`; false: `failure` with no outgoing values (Itential 2023.1 and later:
/// "the task outputs undefined").
fn evaluation(incoming: &Map<String, Value>, scope: &Scope) -> Result<Outcome, String> {
    let all = flag(incoming, "all_true_flag")?;
    let groups = match incoming.get("evaluation_groups") {
        Some(Value::Array(groups)) => groups,
        other => {
            return Err(format!(
                "evaluation_groups must be an array, not {}",
                type_name(other.unwrap_or(&Value::Null))
            ))
        }
    };
    let mut count = 0;
    let mut parsed = Vec::with_capacity(groups.len());
    for group in groups {
        let Value::Object(group) = group else {
            return Err(format!(
                "each evaluation group must be an object, not {}",
                type_name(group)
            ));
        };
        let group_all = flag(group, "all_true_flag")?;
        let evaluations = match group.get("evaluations") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(evaluations)) => evaluations.as_slice(),
            Some(other) => {
                return Err(format!(
                    "evaluations must be an array, not {}",
                    type_name(other)
                ))
            }
        };
        count += evaluations.len();
        if count > MAX_EVALUATIONS {
            return Err(format!("holds more than {MAX_EVALUATIONS} evaluations"));
        }
        parsed.push((group_all, evaluations));
    }
    let holds = decide(all, &parsed, |(group_all, evaluations)| {
        decide(*group_all, evaluations, |evaluation| {
            evaluate(evaluation, scope)
        })
    })?;
    Ok(if holds {
        Outcome::success(one("return_value", Value::Bool(true)))
    } else {
        Outcome::finished(FinishState::Failure, Map::new())
    })
}

/// Whether all (or, not `all`, any) of `items` hold, stopping at the first that decides.
fn decide<T>(
    all: bool,
    items: &[T],
    mut holds: impl FnMut(&T) -> Result<bool, String>,
) -> Result<bool, String> {
    for item in items {
        if holds(item)? != all {
            return Ok(!all);
        }
    }
    Ok(all)
}

fn evaluate(evaluation: &Value, scope: &Scope) -> Result<bool, String> {
    let Value::Object(evaluation) = evaluation else {
        return Err(format!(
            "each evaluation must be an object, not {}",
            type_name(evaluation)
        ));
    };
    let operator = match evaluation.get("operator") {
        Some(Value::String(operator)) => operator.as_str(),
        other => {
            return Err(format!(
                "an evaluation's operator must be a string, not {}",
                type_name(other.unwrap_or(&Value::Null))
            ))
        }
    };
    let side = |operand_key: &str, query_key: &str| -> Result<Value, String> {
        let operand =
            variables::operand(evaluation.get(operand_key).unwrap_or(&Value::Null), scope);
        match evaluation.get(query_key) {
            None | Some(Value::Null) => Ok(operand),
            Some(Value::String(path)) if path.is_empty() => Ok(operand),
            Some(Value::String(path)) => {
                query(&operand, path).map_err(|why| format!("{query_key} {why}"))
            }
            Some(other) => Err(format!(
                "{query_key} must be a string, not {}",
                type_name(other)
            )),
        }
    };
    let left = side("operand_1", "query")?;
    let right = side("operand_2", "rightQuery")?;
    compare(operator, &left, &right)
}

/// One evaluation: `left operator right`. The operators are Itential's closed set (`==`,
/// `!=`, `<`, `<=`, `>`, `>=`, `contains`, `!contains`; the corpus uses all but `<=`);
/// another operator is false, as Itential's is ("an invalid operator silently returns
/// false", builder-skills). An error only for a `contains` pattern that is not a regular
/// expression this service can run, or too costly.
///
/// Types, after Itential's "type inference and coercion": a `left` that is a string holding
/// JSON (`"500"`, `"true"`, `"[1]"`) is taken as that value; `right` is then converted to
/// `left`'s type (a number from a numeric string; a string from a number or boolean; a
/// boolean from `"true"`/`"false"`; an array or object from its JSON text) and, where it
/// cannot be, the comparison is false (`!=`: true). Null is never converted: null `==` null
/// only. Choices beyond the documentation:
/// - `==`/`!=` compare arrays and objects by content, and numbers by value (`1 == 1.0`).
/// - `<`, `<=`, `>`, `>=` order numbers by value, strings by UTF-16 code units (as
///   JavaScript), `false` before `true`; arrays and objects are not ordered (false) except
///   that an array against a number counts as its length, which is what JavaScript's
///   coercion gives for the corpus's `loop[*returnStatus=FAILED] < 1` ("no child job
///   failed": true for `[]`, false otherwise).
/// - `contains` takes `left` as it is (a string stays text): a string (or a number or
///   boolean, as its text) contains `right` when `right`'s text, as a JavaScript regular
///   expression, matches somewhere in it ("contains is regex-based, not substring",
///   builder-skills; `9.2(4)` is a pattern); an array contains `right` when an element `==`
///   it; an object when it has `right` as a key ("contains also works for object-key
///   presence"); null contains nothing. `!contains` is its negation.
pub fn compare(operator: &str, left: &Value, right: &Value) -> Result<bool, String> {
    Ok(match operator {
        "==" => equals(left, right),
        "!=" => !equals(left, right),
        "<" => order(left, right).is_some_and(Ordering::is_lt),
        "<=" => order(left, right).is_some_and(Ordering::is_le),
        ">" => order(left, right).is_some_and(Ordering::is_gt),
        ">=" => order(left, right).is_some_and(Ordering::is_ge),
        "contains" => contains(left, right)?,
        "!contains" => !contains(left, right)?,
        _ => false,
    })
}

/// `left` as the evaluation reads a first operand: a string holding JSON is that value.
fn infer(left: &Value) -> Cow<'_, Value> {
    if let Value::String(text) = left {
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            return Cow::Owned(value);
        }
    }
    Cow::Borrowed(left)
}

/// `right` converted to the type of `like`, or None where it cannot be.
fn coerce<'r>(right: &'r Value, like: &Value) -> Option<Cow<'r, Value>> {
    let same_type = std::mem::discriminant(right) == std::mem::discriminant(like);
    if same_type {
        return Some(Cow::Borrowed(right));
    }
    match (like, right) {
        (Value::Number(_), Value::String(text)) => {
            js::parse_number(text).map(|number| Cow::Owned(js::number_value(number)))
        }
        (Value::String(_), Value::Number(_) | Value::Bool(_)) => {
            Some(Cow::Owned(Value::String(js::text(right))))
        }
        (Value::Bool(_), Value::String(text)) => match text.trim() {
            "true" => Some(Cow::Owned(Value::Bool(true))),
            "false" => Some(Cow::Owned(Value::Bool(false))),
            _ => None,
        },
        (Value::Array(_) | Value::Object(_), Value::String(text)) => {
            serde_json::from_str::<Value>(text)
                .ok()
                .filter(|value| std::mem::discriminant(value) == std::mem::discriminant(like))
                .map(Cow::Owned)
        }
        _ => None,
    }
}

fn equals(left: &Value, right: &Value) -> bool {
    let left = infer(left);
    if left.is_null() || right.is_null() {
        return left.is_null() && right.is_null();
    }
    coerce(right, &left).is_some_and(|right| js::same(&left, &right))
}

fn order(left: &Value, right: &Value) -> Option<Ordering> {
    let left = infer(left);
    if left.is_null() || right.is_null() {
        return None;
    }
    let count = |items: &[Value]| items.len() as f64;
    match (&*left, right) {
        (Value::Array(items), Value::Number(_) | Value::String(_)) => {
            let number = match right {
                Value::Number(number) => number.as_f64(),
                Value::String(text) => js::parse_number(text),
                _ => None,
            }?;
            return count(items).partial_cmp(&number);
        }
        (Value::Number(number), Value::Array(items)) => {
            return number.as_f64()?.partial_cmp(&count(items));
        }
        _ => {}
    }
    let right = coerce(right, &left)?;
    match (&*left, &*right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(js::compare_text(a, b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn contains(left: &Value, right: &Value) -> Result<bool, String> {
    match left {
        Value::Null => Ok(false),
        Value::Array(items) => Ok(items.iter().any(|item| equals(item, right))),
        Value::Object(map) => Ok(match right {
            Value::String(key) => map.contains_key(key),
            Value::Number(_) | Value::Bool(_) => map.contains_key(&js::text(right)),
            _ => false,
        }),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            let source = match right {
                Value::String(source) => source.clone(),
                Value::Number(_) | Value::Bool(_) => js::text(right),
                _ => return Ok(false),
            };
            let pattern = pattern::Pattern::new(&source, "")
                .map_err(|why| format!("contains: the pattern {} has {why}", describe(right)))?;
            pattern
                .is_match(&js::text(left))
                .map_err(|why| format!("contains: the pattern {} {why}", describe(right)))
        }
    }
}

// --- query -----------------------------------------------------------------------------------

/// `query`: the part of `obj` that `query` names (see [`query`]), as outgoing `return_data`.
/// When the query finds nothing (null): `failure` with `return_data` null, unless
/// `pass_on_null`, then `success` with null ("When a query has no matching data and
/// pass_on_null is true, the workflow will complete successfully").
fn query_task(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let obj = incoming.get("obj").unwrap_or(&Value::Null);
    let path = match incoming.get("query") {
        Some(Value::String(path)) => path.as_str(),
        other => {
            return Err(format!(
                "query must be a string, not {}",
                type_name(other.unwrap_or(&Value::Null))
            ))
        }
    };
    let pass_on_null = flag(incoming, "pass_on_null")?;
    let found = query(obj, path).map_err(|why| format!("query {why}"))?;
    let state = if !found.is_null() || pass_on_null {
        FinishState::Success
    } else {
        FinishState::Failure
    };
    Ok(Outcome::finished(state, one("return_data", found)))
}

/// What `path` names in `value`, null when nothing. Itential's query syntax is the npm
/// package json-query's (its README: github.com/mmckegg/json-query), with Itential's `:get`
/// helper; this is the part of it workflows use:
/// - `a.b`, `a[b]`, `a[0]`, `a.0`, `[key.with.dots]`; a key that is not an index, taken of an
///   array, is taken of each element ("pluck": `items.name` lists the names, flattened one
///   level); `length` of a string or array is its length. Anything taken of null, `false`,
///   `0` or `""` is null.
/// - `[key=value]` the first element of an array whose `key` is `value` (`true`/`false`
///   match booleans, numbers match by value), `[*key=value]` all of them; also `!=`, `<`,
///   `<=`, `>`, `>=`, `~` (the value's text occurs in it, or matches `/pattern/flags`), `!~`,
///   and several joined by `&` or `|`, read left to right.
/// - `[*]` the values of an object or array, `[**]` the same with arrays flattened one level,
///   `[]` the first value of which the rest of the query finds something.
/// - `a|b`: `b` when `a` finds nothing (null, false, 0 or "").
/// - `:get(key)` the value of `key` (for keys holding `:` or other syntax).
///
/// Inner queries (`{...}`), parameters (`?`), `..` and other helpers are an error, as is a
/// path longer than [`MAX_QUERY_LEN`] or of more than [`MAX_QUERY_STEPS`] steps.
pub fn query(value: &Value, path: &str) -> Result<Value, String> {
    path::query(value, path)
}

// --- merge ------------------------------------------------------------------------------------

/// `merge`: `data_to_merge: [{"key", "value": {"task", "variable"}}]` becomes outgoing
/// `merged_object` `{key: value}`, each value resolved by [`variables::operand`]. A key given
/// twice collects its values in an array, first to last ("Duplicate keys produce arrays",
/// builder-skills). A single entry makes a one-key object, as the corpus's one-entry merges
/// (ServiceNow change numbers, file names) need.
fn merge(incoming: &Map<String, Value>, scope: &Scope) -> Result<Outcome, String> {
    let entries = match incoming.get("data_to_merge") {
        Some(Value::Array(entries)) => entries,
        other => {
            return Err(format!(
                "data_to_merge must be an array, not {}",
                type_name(other.unwrap_or(&Value::Null))
            ))
        }
    };
    if entries.len() > MAX_MERGE_ENTRIES {
        return Err(format!(
            "data_to_merge holds more than {MAX_MERGE_ENTRIES} entries"
        ));
    }
    let mut merged = Map::new();
    let mut repeated = std::collections::HashSet::new();
    for entry in entries {
        let key = match entry.get("key") {
            Some(Value::String(key)) => key,
            _ => return Err("each entry of data_to_merge must have a string key".to_owned()),
        };
        let value = variables::operand(entry.get("value").unwrap_or(&Value::Null), scope);
        match merged.get_mut(key) {
            None => {
                merged.insert(key.clone(), value);
            }
            Some(existing) => {
                if repeated.insert(key.clone()) {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, value]);
                } else if let Value::Array(values) = existing {
                    values.push(value);
                }
            }
        }
    }
    Ok(Outcome::success(one(
        "merged_object",
        Value::Object(merged),
    )))
}

// --- makeData ---------------------------------------------------------------------------------

/// `makeData`: `input` with each `<!name!>` replaced by the text of `variables.name`
/// (strings as they are, numbers and booleans as JavaScript writes them, null as `null`,
/// arrays and objects as JSON), then read as `outputType`: `string`; `number` (decimal
/// notation); `boolean` (`true` or `false`); `json` (any JSON); `array` (JSON that is an
/// array). Outgoing `output`. `variables` is an object, or `""`/null for none; a placeholder
/// it does not name stays as written. An `input` that is not a string (a `$var` to a number,
/// say) is read as its text. What cannot be read as `outputType` is an error saying why.
fn make_data(incoming: &Map<String, Value>) -> Result<Outcome, String> {
    let input = match incoming.get("input") {
        None | Some(Value::Null) => return Err("input is missing".to_owned()),
        Some(Value::String(text)) => Cow::Borrowed(text.as_str()),
        Some(other) => Cow::Owned(js::text(other)),
    };
    if input.len() > MAX_TEMPLATE_LEN {
        return Err(format!("input is longer than {MAX_TEMPLATE_LEN} bytes"));
    }
    let variables = match incoming.get("variables") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::Object(variables)) => Some(variables),
        Some(other) => {
            return Err(format!(
                "variables must be an object (or \"\" for none), not {}",
                type_name(other)
            ))
        }
    };
    let output_type = match incoming.get("outputType") {
        Some(Value::String(output_type)) => output_type.as_str(),
        other => {
            return Err(format!(
                "outputType must be one of string, number, boolean, json, array, not {}",
                describe(other.unwrap_or(&Value::Null))
            ))
        }
    };
    let text = fill(&input, variables)?;
    let output = match output_type {
        "string" => Value::String(text),
        "number" => match js::parse_number(&text) {
            Some(number) => js::number_value(number),
            None => {
                return Err(format!(
                    "{} is not a number",
                    describe(&Value::String(text))
                ))
            }
        },
        "boolean" => match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => {
                return Err(format!(
                    "{} is not true or false",
                    describe(&Value::String(text.clone()))
                ))
            }
        },
        "json" | "array" => {
            let value = parse_json(&text)?;
            if output_type == "array" && !value.is_array() {
                return Err(format!("the input is {}, not an array", type_name(&value)));
            }
            value
        }
        other => {
            return Err(format!(
                "outputType must be one of string, number, boolean, json, array, not {other:?}"
            ))
        }
    };
    if holds_nul(&output) {
        return Err("the output holds the character U+0000, which cannot be stored".to_owned());
    }
    Ok(Outcome::success(one("output", output)))
}

/// Whether a text of `value` (a string or a key) holds U+0000, which PostgreSQL cannot store.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// Longest placeholder name makeData looks up, in bytes; a longer `<!...!>` stays as written.
/// Without it, a template of many `<!` and one distant `!>` would cost time quadratic in its
/// length.
pub const MAX_PLACEHOLDER_NAME: usize = 256;

/// `template` with its `<!name!>` placeholders filled from `variables`.
fn fill(template: &str, variables: Option<&Map<String, Value>>) -> Result<String, String> {
    let Some(variables) = variables else {
        return Ok(template.to_owned());
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("<!") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let window = &after.as_bytes()[..after.len().min(MAX_PLACEHOLDER_NAME + 2)];
        let filled = window
            .windows(2)
            .position(|pair| pair == b"!>")
            .and_then(|end| {
                let name = &after[..end];
                variables.get(name).map(|value| (js::text(value), end + 2))
            });
        match filled {
            Some((text, used)) => {
                out.push_str(&text);
                rest = &after[used..];
            }
            None => {
                out.push_str("<!");
                rest = after;
            }
        }
        if out.len() > MAX_MAKE_DATA_OUTPUT {
            break;
        }
    }
    out.push_str(rest);
    if out.len() > MAX_MAKE_DATA_OUTPUT {
        return Err(format!(
            "the filled input is longer than {MAX_MAKE_DATA_OUTPUT} bytes"
        ));
    }
    Ok(out)
}

/// `text` as JSON, within the bounds of what the service stores.
fn parse_json(text: &str) -> Result<Value, String> {
    use crate::domain::json::{parse_bounded, BoundedJsonError};
    parse_bounded(text.as_bytes()).map_err(|error| match error {
        BoundedJsonError::Syntax(error) => format!("the input is not JSON: {error}"),
        BoundedJsonError::Bounds(violation) => format!("the input {violation}"),
    })
}

// --- JavaScript's ways with values ----------------------------------------------------------

// --- queries ----------------------------------------------------------------------------------

// --- regular expressions -----------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::json::object;
    use serde_json::json;
    use std::collections::HashMap;

    /// Runs `check` with a scope of job variables `job` and the outgoing values of `tasks`
    /// (`{task_id: {name: value}}`).
    fn with_scope<R>(job: Value, tasks: Value, check: impl FnOnce(&Scope) -> R) -> R {
        let job = object(job);
        let outgoing: HashMap<String, Map<String, Value>> = object(tasks)
            .into_iter()
            .map(|(id, values)| (id, object(values)))
            .collect();
        let lookup = |id: &str| outgoing.get(id);
        let scope = Scope {
            job: &job,
            tasks: &lookup,
        };
        check(&scope)
    }

    fn run_alone(builtin: Builtin, incoming: Value) -> Outcome {
        with_scope(json!({}), json!({}), |scope| {
            run(builtin, &object(incoming), scope, DateTime::UNIX_EPOCH)
        })
    }

    fn finished(finish_state: FinishState, outgoing: Value) -> Outcome {
        Outcome::finished(finish_state, object(outgoing))
    }

    /// The message of an outcome that ended in error.
    fn error_message(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Finished {
                finish_state: FinishState::Error,
                error: Some(error),
                ..
            } => error["message"].as_str().unwrap_or_default().to_owned(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn task(app: &str, kind: &str, name: &str) -> Map<String, Value> {
        object(json!({"app": app, "type": kind, "name": name, "variables": {}}))
    }

    #[test]
    fn builtins_are_recognised_by_app_type_and_name() {
        // The `type` each has in the exported workflows (tests/data/itential-assets): `push`
        // and `modify` are operations there, the other utility tasks automatic.
        for builtin in Builtin::ALL {
            let kind = match builtin {
                Builtin::Stub
                | Builtin::SetObjectKey
                | Builtin::ArrayLength
                | Builtin::ArrayPush
                | Builtin::ArrayIncludes
                | Builtin::ArrayIndexOf
                | Builtin::Join
                | Builtin::StringConcat
                | Builtin::StringLength
                | Builtin::Substring
                | Builtin::Split
                | Builtin::NumberToString
                | Builtin::Parse => "automatic",
                _ => "operation",
            };
            assert_eq!(
                Builtin::of(&task("WorkFlowEngine", kind, builtin.name())),
                Some(builtin)
            );
        }
        for (name, builtin) in [
            ("push", Builtin::Push),
            ("setObjectKey", Builtin::SetObjectKey),
            ("arrayLength", Builtin::ArrayLength),
            ("arrayPush", Builtin::ArrayPush),
            ("arrayIncludes", Builtin::ArrayIncludes),
            ("arrayIndexOf", Builtin::ArrayIndexOf),
            ("join", Builtin::Join),
            ("stringConcat", Builtin::StringConcat),
            ("stringLength", Builtin::StringLength),
            ("substring", Builtin::Substring),
            ("split", Builtin::Split),
            ("numberToString", Builtin::NumberToString),
            ("parse", Builtin::Parse),
        ] {
            assert_eq!(
                Builtin::of(&task("WorkFlowEngine", "automatic", name)),
                Some(builtin)
            );
        }
    }

    #[test]
    fn other_workflow_engine_tasks_manual_tasks_and_adapter_tasks_are_not_builtins() {
        for name in ["childJob", "transformation", "forEach", "Stub", "ArrayPush"] {
            assert_eq!(
                Builtin::of(&task("WorkFlowEngine", "operation", name)),
                None
            );
        }
        assert_eq!(Builtin::of(&task("WorkFlowEngine", "manual", "stub")), None);
        assert_eq!(Builtin::of(&task("WorkFlowEngine", "manual", "push")), None);
        assert_eq!(Builtin::of(&task("ServiceNow", "automatic", "query")), None);
        assert_eq!(Builtin::of(&task("GitLab", "automatic", "split")), None);
        assert_eq!(Builtin::of(&object(json!({"name": "query"}))), None);
    }

    // --- stub, newVariable, delay ---

    #[test]
    fn a_stub_passes_its_response_through_and_ends_as_its_type_says() {
        assert_eq!(
            run_alone(
                Builtin::Stub,
                json!({"delay": "", "response": "SUCCESS", "type": "success"})
            ),
            finished(FinishState::Success, json!({"response": "SUCCESS"}))
        );
        assert_eq!(
            run_alone(Builtin::Stub, json!({"response": {"a": 1}})),
            finished(FinishState::Success, json!({"response": {"a": 1}}))
        );
        assert_eq!(
            run_alone(
                Builtin::Stub,
                json!({"delay": 0, "response": "no", "type": "failure"})
            ),
            finished(FinishState::Failure, json!({"response": "no"}))
        );
        let outcome = run_alone(
            Builtin::Stub,
            json!({"delay": "", "response": "", "type": "error"}),
        );
        assert_eq!(outcome.finish_state(), Some(FinishState::Error));
        assert!(error_message(&outcome).starts_with("stub: "));
    }

    #[test]
    fn a_stub_with_a_delay_waits_then_ends_as_its_type_says() {
        let incoming = json!({"delay": "12", "response": "awesome", "type": "success"});
        assert_eq!(
            run_alone(Builtin::Stub, incoming.clone()),
            Outcome::Wait {
                delay: Duration::from_secs(12)
            }
        );
        assert_eq!(
            finish_wait(Builtin::Stub, &object(incoming)),
            finished(FinishState::Success, json!({"response": "awesome"}))
        );
    }

    #[test]
    fn a_stub_with_an_unknown_type_or_a_bad_delay_ends_in_error() {
        let outcome = run_alone(Builtin::Stub, json!({"type": "maybe"}));
        assert_eq!(
            error_message(&outcome),
            "stub: type must be success, failure or error, not \"maybe\""
        );
        let outcome = run_alone(Builtin::Stub, json!({"type": "success", "delay": "soon"}));
        assert_eq!(
            error_message(&outcome),
            "stub: delay must be a number of seconds, not \"soon\""
        );
    }

    #[test]
    fn new_variable_sets_the_job_variable_and_outputs_the_value() {
        assert_eq!(
            run_alone(
                Builtin::NewVariable,
                json!({"name": "status", "value": ["a"]})
            ),
            Outcome::Finished {
                finish_state: FinishState::Success,
                outgoing: object(json!({"value": ["a"]})),
                job_writes: vec![("status".to_owned(), json!(["a"]))],
                error: None,
            }
        );
    }

    #[test]
    fn new_variable_without_a_name_ends_in_error() {
        for (incoming, message) in [
            (json!({"value": 1}), "newVariable: name is missing"),
            (
                json!({"name": "", "value": 1}),
                "newVariable: name is empty",
            ),
            (
                json!({"name": null}),
                "newVariable: name must be a string, not null",
            ),
        ] {
            assert_eq!(
                error_message(&run_alone(Builtin::NewVariable, incoming)),
                message
            );
        }
    }

    #[test]
    fn delay_waits_its_time_in_seconds_then_reports_milliseconds() {
        for (time, wait, millis) in [
            (json!(60), Duration::from_secs(60), json!(60000)),
            (json!("2.5"), Duration::from_millis(2500), json!(2500)),
            (json!(0), Duration::ZERO, json!(0)),
        ] {
            let incoming = json!({ "time": time });
            assert_eq!(
                run_alone(Builtin::Delay, incoming.clone()),
                Outcome::Wait { delay: wait }
            );
            assert_eq!(
                finish_wait(Builtin::Delay, &object(incoming)),
                finished(
                    FinishState::Success,
                    json!({ "time_in_milliseconds": millis })
                )
            );
        }
    }

    #[test]
    fn delay_refuses_negative_overlong_and_non_numeric_times() {
        for (time, message) in [
            (json!(-1), "delay: time must not be negative, not -1"),
            (
                json!(2_592_001),
                "delay: time must be at most 2592000 seconds (30 days), not 2592001",
            ),
            (
                json!("a minute"),
                "delay: time must be a number of seconds, not \"a minute\"",
            ),
            (
                json!(null),
                "delay: time must be a number of seconds, not null",
            ),
            (
                json!({}),
                "delay: time must be a number of seconds, not an object",
            ),
        ] {
            assert_eq!(
                error_message(&run_alone(Builtin::Delay, json!({ "time": time }))),
                message
            );
        }
        assert_eq!(
            error_message(&finish_wait(Builtin::Query, &Map::new())),
            "query: the task does not wait"
        );
    }

    // --- evaluation operators ---

    fn holds(left: Value, operator: &str, right: Value) -> bool {
        compare(operator, &left, &right).unwrap_or_else(|why| panic!("{why}"))
    }

    #[test]
    fn equality_infers_the_first_operand_and_converts_the_second_to_its_type() {
        let equal = [
            (json!("500"), json!(500)),
            (json!(500), json!("500")),
            (json!("1.0"), json!(1)),
            (json!(1), json!(1.0)),
            (json!("true"), json!(true)),
            (json!(true), json!("true")),
            (json!("SUCCESS"), json!("SUCCESS")),
            (json!("abc"), json!("abc")),
            (json!(""), json!("")),
            (json!([1, {"a": 2}]), json!("[1, {\"a\": 2.0}]")),
            (json!({"a": [1]}), json!({"a": [1.0]})),
            (json!("5"), json!(" 5 ")),
        ];
        for (left, right) in equal {
            assert!(
                holds(left.clone(), "==", right.clone()),
                "{left} == {right}"
            );
            assert!(
                !holds(left.clone(), "!=", right.clone()),
                "{left} != {right}"
            );
        }
        let unequal = [
            (json!("abc"), json!(5)),
            (json!(5), json!("abc")),
            (json!(true), json!(1)),
            (json!("SUCCESS"), json!("success")),
            (json!([1, 2]), json!([2, 1])),
            (json!({"a": 1}), json!({"a": 1, "b": 2})),
            (json!([]), json!(0)),
            (json!("abc"), json!(["abc"])),
        ];
        for (left, right) in unequal {
            assert!(
                !holds(left.clone(), "==", right.clone()),
                "{left} == {right}"
            );
            assert!(
                holds(left.clone(), "!=", right.clone()),
                "{left} != {right}"
            );
        }
    }

    #[test]
    fn null_equals_only_null() {
        assert!(holds(json!(null), "==", json!(null)));
        assert!(holds(json!("null"), "==", json!(null)));
        assert!(!holds(json!(null), "==", json!("null")));
        assert!(!holds(json!(null), "==", json!("")));
        assert!(!holds(json!(""), "==", json!(null)));
        assert!(holds(json!({"error": 1}), "!=", json!(null)));
        assert!(holds(json!(null), "!=", json!(0)));
        assert!(!holds(json!(null), "!=", json!(null)));
    }

    #[test]
    fn ordering_compares_numbers_texts_and_booleans() {
        let less = [
            (json!(1), json!(2)),
            (json!("9"), json!(10)),
            (json!(9), json!("10")),
            (json!("1.5"), json!("2")),
            (json!(-2), json!(0)),
            (json!("abc"), json!("abd")),
            (json!("B"), json!("a")),
            (json!(false), json!(true)),
        ];
        for (left, right) in less {
            assert!(holds(left.clone(), "<", right.clone()), "{left} < {right}");
            assert!(
                holds(left.clone(), "<=", right.clone()),
                "{left} <= {right}"
            );
            assert!(!holds(left.clone(), ">", right.clone()), "{left} > {right}");
            assert!(
                !holds(left.clone(), ">=", right.clone()),
                "{left} >= {right}"
            );
            assert!(holds(right.clone(), ">", left.clone()), "{right} > {left}");
        }
        assert!(holds(json!(0), ">=", json!(0)));
        assert!(holds(json!("0"), "<=", json!(0)));
        // The second operand takes the first's type: text, here, compared as text; a number
        // first, the text cannot become one.
        assert!(holds(json!("10.0.1"), "<", json!(2)));
        assert!(!holds(json!(2), ">", json!("10.0.1")));
        for (left, right) in [
            (json!(null), json!(1)),
            (json!(1), json!(null)),
            (json!(5), json!("five")),
            (json!({"a": 1}), json!(1)),
            (json!(true), json!(1)),
        ] {
            for operator in ["<", "<=", ">", ">="] {
                assert!(
                    !holds(left.clone(), operator, right.clone()),
                    "{left} {operator} {right}"
                );
            }
        }
    }

    #[test]
    fn ordering_counts_an_array_against_a_number() {
        assert!(holds(json!([]), "<", json!(1)));
        assert!(!holds(json!([{"returnStatus": "FAILED"}]), "<", json!(1)));
        assert!(holds(json!([1, 2, 3]), ">", json!("2")));
        assert!(holds(json!(2), "<", json!([1, 2, 3])));
        assert!(holds(json!("[]"), "<", json!(1)));
        assert!(!holds(json!([1]), "<", json!([1, 2])));
    }

    #[test]
    fn contains_matches_a_pattern_in_text() {
        assert!(holds(
            json!("Object Not Present in pool"),
            "contains",
            json!("Not Present")
        ));
        assert!(holds(json!("CHG0030001"), "contains", json!("CHG")));
        assert!(holds(json!("CHG0030001"), "contains", json!("^CHG\\d+$")));
        assert!(!holds(json!("RITM0001"), "contains", json!("^CHG")));
        assert!(!holds(json!("version 9.2(4)"), "contains", json!("9.2(4)")));
        assert!(holds(
            json!("version 9.2(4)"),
            "contains",
            json!("9\\.2\\(4\\)")
        ));
        assert!(holds(json!("status: true"), "contains", json!(true)));
        assert!(holds(json!(12345), "contains", json!(234)));
        assert!(holds(json!(true), "contains", json!(true)));
        assert!(holds(json!("{\"a\": 1}"), "contains", json!("\"a\"")));
        assert!(!holds(json!("abc"), "contains", json!(null)));
        assert!(!holds(json!("abc"), "contains", json!(["abc"])));
        assert!(holds(json!("abc"), "contains", json!("")));
    }

    #[test]
    fn contains_looks_for_an_element_in_an_array_and_a_key_in_an_object() {
        assert!(holds(
            json!(["10.10.10.10"]),
            "contains",
            json!("10.10.10.10")
        ));
        assert!(!holds(
            json!(["10.10.10.10"]),
            "contains",
            json!("10.10.10.1")
        ));
        assert!(holds(json!([200, 404]), "contains", json!("404")));
        assert!(holds(
            json!(["SUCCESS", "FAILURE"]),
            "contains",
            json!("FAILURE")
        ));
        assert!(holds(json!({"id": 1}), "contains", json!("id")));
        assert!(holds(json!({"1": "x"}), "contains", json!(1)));
        assert!(!holds(json!({"id": 1}), "contains", json!("name")));
        assert!(!holds(json!(null), "contains", json!("x")));
    }

    #[test]
    fn not_contains_is_the_negation_of_contains() {
        for (left, right) in [
            (json!("Not all devices available"), json!("Not all devices")),
            (json!("all good"), json!("FAILURE")),
            (json!(["SUCCESS"]), json!("FAILURE")),
            (json!({"a": 1}), json!("a")),
            (json!(null), json!("x")),
        ] {
            assert_eq!(
                holds(left.clone(), "!contains", right.clone()),
                !holds(left, "contains", right)
            );
        }
        assert!(holds(json!(null), "!contains", json!("x")));
    }

    #[test]
    fn an_unknown_operator_is_false() {
        for operator in ["regex", "in", "startsWith", "===", ""] {
            assert!(!holds(json!("a"), operator, json!("a")), "{operator}");
        }
    }

    #[test]
    fn a_contains_pattern_that_cannot_run_is_an_error() {
        assert_eq!(
            compare("contains", &json!("a(b"), &json!("a(")),
            Err("contains: the pattern \"a(\" has an unterminated group".to_owned())
        );
        assert_eq!(
            compare("!contains", &json!("aa"), &json!("(a)\\1")),
            Err(
                "contains: the pattern \"(a)\\\\1\" has a backreference or octal escape, which is not supported"
                    .to_owned()
            )
        );
    }

    // --- evaluation tasks ---

    fn evaluation_of(all: bool, groups: Value) -> Value {
        json!({"all_true_flag": all, "evaluation_groups": groups})
    }

    fn static_check(left: Value, operator: &str, right: Value) -> Value {
        json!({
            "operand_1": {"task": "static", "variable": left},
            "operator": operator,
            "operand_2": {"task": "static", "variable": right},
            "query": "",
        })
    }

    #[test]
    fn evaluation_groups_combine_by_their_all_true_flags() {
        let yes = static_check(json!(1), "==", json!(1));
        let no = static_check(json!(1), "==", json!(2));
        let success = finished(FinishState::Success, json!({"return_value": true}));
        let failure = finished(FinishState::Failure, json!({}));
        let mixed = json!([
            {"all_true_flag": true, "evaluations": [yes, no]},
            {"all_true_flag": false, "evaluations": [no, yes]},
        ]);
        assert_eq!(
            run_alone(Builtin::Evaluation, evaluation_of(false, mixed.clone())),
            success
        );
        assert_eq!(
            run_alone(Builtin::Evaluation, evaluation_of(true, mixed)),
            failure
        );
        let both = json!([{"all_true_flag": true, "evaluations": [yes, yes]}]);
        assert_eq!(
            run_alone(Builtin::Evaluation, evaluation_of(true, both)),
            success
        );
        assert_eq!(
            run_alone(Builtin::Evaluation, evaluation_of(true, json!([]))),
            success
        );
        assert_eq!(
            run_alone(Builtin::Evaluation, evaluation_of(false, json!([]))),
            failure
        );
    }

    #[test]
    fn evaluation_reads_operands_from_the_job_and_earlier_tasks_through_their_queries() {
        let incoming = evaluation_of(
            false,
            json!([{"all_true_flag": true, "evaluations": [
                {
                    "operand_1": {"task": "job", "variable": "device"},
                    "operator": "==",
                    "operand_2": {"task": "1a2b", "variable": "result", "editable": true},
                    "query": "name",
                    "rightQuery": "response.hostname",
                },
                {
                    "operand_1": {"task": "1a2b", "variable": "result"},
                    "operator": ">",
                    "operand_2": {"task": "static", "variable": 1},
                    "query": "response.interfaces",
                },
            ]}]),
        );
        let outcome = with_scope(
            json!({"device": {"name": "ios-1"}}),
            json!({"1a2b": {"result": {"response": {"hostname": "ios-1", "interfaces": ["g0", "g1"]}}}}),
            |scope| {
                run(
                    Builtin::Evaluation,
                    &object(incoming),
                    scope,
                    DateTime::UNIX_EPOCH,
                )
            },
        );
        assert_eq!(outcome.finish_state(), Some(FinishState::Success));
    }

    #[test]
    fn a_malformed_evaluation_ends_in_error() {
        for (incoming, message) in [
            (
                json!({}),
                "evaluation: evaluation_groups must be an array, not null",
            ),
            (
                json!({"evaluation_groups": [1]}),
                "evaluation: each evaluation group must be an object, not a number",
            ),
            (
                json!({"evaluation_groups": [{"evaluations": [{"operand_1": 1}]}]}),
                "evaluation: an evaluation's operator must be a string, not null",
            ),
            (
                json!({"evaluation_groups": [{"evaluations": [
                    {"operand_1": 1, "operator": "==", "operand_2": 1, "query": "a{b}"}
                ]}]}),
                "evaluation: query uses an inner query `{...}`, which is not supported",
            ),
            (
                json!({"all_true_flag": "yes", "evaluation_groups": []}),
                "evaluation: all_true_flag must be true or false, not \"yes\"",
            ),
        ] {
            assert_eq!(
                error_message(&run_alone(Builtin::Evaluation, incoming)),
                message
            );
        }
        let many = vec![static_check(json!(1), "==", json!(1)); MAX_EVALUATIONS + 1];
        let incoming = evaluation_of(true, json!([{"all_true_flag": true, "evaluations": many}]));
        assert_eq!(
            error_message(&run_alone(Builtin::Evaluation, incoming)),
            format!("evaluation: holds more than {MAX_EVALUATIONS} evaluations")
        );
    }

    // --- queries ---

    fn sample() -> Value {
        json!({
            "response": {
                "id": 7,
                "text": "hello",
                "items": [
                    {"name": "a", "status": "added", "n": 1, "up": true},
                    {"name": "b", "status": "removed", "n": 2, "up": false},
                    {"name": "c", "status": "added", "n": 3, "up": true},
                ],
                "versa-tasks.task": {"versa-tasks.task-status": "COMPLETED"},
                "a:b": 5,
                "groups": {"x": [1, 2], "y": [3]},
                "entry": [{"@name": ""}, {"@name": "rule-1"}, {"@name": "rule-2"}],
            }
        })
    }

    fn found(path: &str) -> Value {
        query(&sample(), path).unwrap_or_else(|why| panic!("{path}: {why}"))
    }

    #[test]
    fn query_paths_take_keys_indexes_and_plucks() {
        assert_eq!(found(""), sample());
        assert_eq!(found("response.id"), json!(7));
        assert_eq!(found(".response.id"), json!(7));
        assert_eq!(found("response.items[0].name"), json!("a"));
        assert_eq!(found("response.items.0.name"), json!("a"));
        assert_eq!(found("response.items[2].name"), json!("c"));
        assert_eq!(found("response.items[3].name"), json!(null));
        assert_eq!(found("response.items.name"), json!(["a", "b", "c"]));
        assert_eq!(found("response.items[name]"), json!(["a", "b", "c"]));
        assert_eq!(found("response.items[*name]"), json!(["a", "b", "c"]));
        assert_eq!(
            found("response[versa-tasks.task][versa-tasks.task-status]"),
            json!("COMPLETED")
        );
        assert_eq!(found("response.text.length"), json!(5));
        assert_eq!(found("response.text[1]"), json!("e"));
        assert_eq!(found("response.items.length"), json!([]));
        assert_eq!(found("response.missing.deeper"), json!(null));
        assert_eq!(found("response.id.deeper"), json!(null));
        assert_eq!(found("response.items[0].up.deeper"), json!(null));
    }

    #[test]
    fn query_filters_select_the_first_or_every_matching_element() {
        assert_eq!(found("response.items[status=removed].name"), json!("b"));
        assert_eq!(found("response.items[status=none]"), json!(null));
        assert_eq!(
            found("response.items[*status=added].name"),
            json!(["a", "c"])
        );
        assert_eq!(found("response.items[*status=none]"), json!([]));
        assert_eq!(found("response.items[*status!=added].name"), json!(["b"]));
        assert_eq!(found("response.items[*n>=2].name"), json!(["b", "c"]));
        assert_eq!(found("response.items[*n<2].name"), json!(["a"]));
        assert_eq!(found("response.items[*n=2.0].name"), json!(["b"]));
        assert_eq!(found("response.items[*up=true].name"), json!(["a", "c"]));
        assert_eq!(
            found("response.items[*name~/^[ab]$/].name"),
            json!(["a", "b"])
        );
        assert_eq!(
            found("response.items[*name!~/^A$/i].name"),
            json!(["b", "c"])
        );
        assert_eq!(found("response.items[*status~move].name"), json!(["b"]));
        assert_eq!(
            found("response.items[*status=added & n>1].name"),
            json!(["c"])
        );
        assert_eq!(found("response.items[*n=1 | n=2].name"), json!(["a", "b"]));
        assert_eq!(found("response[status=added]"), json!(null));
    }

    #[test]
    fn query_values_deep_lookups_alternatives_and_get() {
        assert_eq!(found("response.groups[*]"), json!([[1, 2], [3]]));
        assert_eq!(found("response.groups[**]"), json!([1, 2, 3]));
        assert_eq!(found("response.items[*].n"), json!([1, 2, 3]));
        assert_eq!(found("response.entry[].@name"), json!("rule-1"));
        assert_eq!(found("response.entry[]"), found("response.entry"));
        assert_eq!(found("response.missing|response.id"), json!(7));
        assert_eq!(found("response.id|response.text"), json!(7));
        assert_eq!(found("response.missing|response.other"), json!(null));
        assert_eq!(found("response:get(a:b)"), json!(5));
        assert_eq!(
            found("response:get(versa-tasks.task).versa-tasks"),
            json!(null)
        );
    }

    #[test]
    fn query_refuses_syntax_it_does_not_support_and_overlong_paths() {
        for (path, message) in [
            (
                "a{b}",
                "uses an inner query `{...}`, which is not supported",
            ),
            ("a[{b}]", "uses `[{b}]`, which is not supported"),
            (
                "a[x={b}]",
                "uses `{b}` in a condition: inner queries and parameters are not supported",
            ),
            ("a[?]", "uses `[?]`, which is not supported"),
            ("..a", "uses `..`, which is not supported"),
            (
                "a:select(x)",
                "uses the helper `:select`, which is not supported (only `:get`)",
            ),
            ("a[b", "has an unclosed `[`"),
            ("a]", "has an unmatched `]`"),
            ("a(b)", "has arguments `(...)` that follow no helper"),
            (
                "a[x~/a{2,1}/]",
                "has a regular expression /a{2,1}/ with a {n,m} quantifier with its numbers out of order",
            ),
        ] {
            assert_eq!(query(&sample(), path), Err(message.to_owned()), "{path}");
        }
        let long = "a".repeat(MAX_QUERY_LEN + 1);
        assert_eq!(
            query(&sample(), &long),
            Err(format!("is longer than {MAX_QUERY_LEN} bytes"))
        );
        let steps = vec!["a"; MAX_QUERY_STEPS + 1].join(".");
        assert_eq!(
            query(&sample(), &steps),
            Err(format!("takes more than {MAX_QUERY_STEPS} steps"))
        );
    }

    #[test]
    fn the_query_task_fails_on_nothing_unless_told_to_pass_on_null() {
        let obj = sample();
        assert_eq!(
            run_alone(
                Builtin::Query,
                json!({"obj": obj, "query": "response.id", "pass_on_null": false})
            ),
            finished(FinishState::Success, json!({"return_data": 7}))
        );
        assert_eq!(
            run_alone(
                Builtin::Query,
                json!({"obj": obj, "query": "response.none", "pass_on_null": false})
            ),
            finished(FinishState::Failure, json!({"return_data": null}))
        );
        assert_eq!(
            run_alone(
                Builtin::Query,
                json!({"obj": obj, "query": "response.none", "pass_on_null": true})
            ),
            finished(FinishState::Success, json!({"return_data": null}))
        );
        assert_eq!(
            run_alone(Builtin::Query, json!({"obj": {"n": 0}, "query": "n"})),
            finished(FinishState::Success, json!({"return_data": 0}))
        );
        assert_eq!(
            error_message(&run_alone(
                Builtin::Query,
                json!({"obj": obj, "query": null})
            )),
            "query: query must be a string, not null"
        );
        assert_eq!(
            error_message(&run_alone(
                Builtin::Query,
                json!({"obj": obj, "query": "a:b"})
            )),
            "query: query uses the helper `:b`, which is not supported (only `:get`)"
        );
    }

    // --- merge, makeData ---

    #[test]
    fn merge_builds_an_object_from_its_operands() {
        let incoming = json!({"data_to_merge": [
            {"key": "filePath", "value": {"editable": true, "task": "job", "variable": "filePath"}},
            {"key": "content", "value": {"task": "3ea5", "variable": "return_data"}},
            {"key": "branch", "value": {"task": "static", "variable": "main"}},
            {"key": "missing", "value": {"task": "job", "variable": "nothing"}},
        ]});
        let outcome = with_scope(
            json!({"filePath": "dir/a.txt"}),
            json!({"3ea5": {"return_data": {"text": "x"}}}),
            |scope| {
                run(
                    Builtin::Merge,
                    &object(incoming),
                    scope,
                    DateTime::UNIX_EPOCH,
                )
            },
        );
        assert_eq!(
            outcome,
            finished(
                FinishState::Success,
                json!({"merged_object": {
                    "filePath": "dir/a.txt",
                    "content": {"text": "x"},
                    "branch": "main",
                    "missing": null,
                }})
            )
        );
    }

    #[test]
    fn merge_collects_a_repeated_key_into_an_array() {
        let entry =
            |value: i64| json!({"key": "ip", "value": {"task": "static", "variable": value}});
        let incoming = json!({"data_to_merge": [entry(1), entry(2), entry(3)]});
        assert_eq!(
            run_alone(Builtin::Merge, incoming),
            finished(
                FinishState::Success,
                json!({"merged_object": {"ip": [1, 2, 3]}})
            )
        );
    }

    #[test]
    fn a_malformed_merge_ends_in_error() {
        assert_eq!(
            error_message(&run_alone(Builtin::Merge, json!({"data_to_merge": "x"}))),
            "merge: data_to_merge must be an array, not a string"
        );
        assert_eq!(
            error_message(&run_alone(
                Builtin::Merge,
                json!({"data_to_merge": [{"value": 1}]})
            )),
            "merge: each entry of data_to_merge must have a string key"
        );
    }

    fn made(input: Value, output_type: &str, variables: Value) -> Outcome {
        run_alone(
            Builtin::MakeData,
            json!({"input": input, "outputType": output_type, "variables": variables}),
        )
    }

    fn output(value: Value) -> Outcome {
        finished(FinishState::Success, json!({ "output": value }))
    }

    #[test]
    fn make_data_fills_placeholders_and_reads_the_output_type() {
        assert_eq!(
            made(
                json!("Who are you <!var1!>"),
                "string",
                json!({"var1": "I'm Batman"})
            ),
            output(json!("Who are you I'm Batman"))
        );
        assert_eq!(
            made(
                json!("{\"name\":\"<!var1!>\",\"last\":\"Wayne\"}"),
                "json",
                json!({"var1": "Bruce"})
            ),
            output(json!({"name": "Bruce", "last": "Wayne"}))
        );
        assert_eq!(
            made(
                json!("<!a!>/<!b!>/<!c!>/<!d!>/<!e!>"),
                "string",
                json!({"a": 1.5, "b": true, "c": null, "d": [1], "e": {"k": "v"}})
            ),
            output(json!("1.5/true/null/[1]/{\"k\":\"v\"}"))
        );
        assert_eq!(
            made(json!("<!unknown!> and <!a"), "string", json!({"a": 1})),
            output(json!("<!unknown!> and <!a"))
        );
        assert_eq!(made(json!("0"), "number", json!("")), output(json!(0)));
        assert_eq!(
            made(json!(" 2.50 "), "number", json!(null)),
            output(json!(2.5))
        );
        assert_eq!(made(json!(42), "number", json!("")), output(json!(42)));
        assert_eq!(
            made(json!("true"), "boolean", json!("")),
            output(json!(true))
        );
        assert_eq!(
            made(json!("[\"/a\"\n]"), "array", json!("")),
            output(json!(["/a"]))
        );
        assert_eq!(
            made(json!({"a": 1}), "json", json!("")),
            output(json!({"a": 1}))
        );
    }

    #[test]
    fn make_data_says_why_its_input_cannot_be_read() {
        for (outcome, message) in [
            (made(json!("abc"), "number", json!("")), "makeData: \"abc\" is not a number"),
            (made(json!("yes"), "boolean", json!("")), "makeData: \"yes\" is not true or false"),
            (
                made(json!("{\"a\":"), "json", json!("")),
                "makeData: the input is not JSON: EOF while parsing a value at line 1 column 5",
            ),
            (made(json!("{}"), "array", json!("")), "makeData: the input is an object, not an array"),
            (
                made(json!("x"), "xml", json!("")),
                "makeData: outputType must be one of string, number, boolean, json, array, not \"xml\"",
            ),
            (
                made(json!("x"), "string", json!("$var.688.fullPrebuiltName")),
                "makeData: variables must be an object (or \"\" for none), not a string",
            ),
            (made(json!(null), "string", json!("")), "makeData: input is missing"),
            (
                made(json!("\"\\u0000\""), "json", json!("")),
                "makeData: the output holds the character U+0000, which cannot be stored",
            ),
        ] {
            assert_eq!(error_message(&outcome), message);
        }
    }

    #[test]
    fn make_data_bounds_the_filled_text() {
        let long_name = "n".repeat(MAX_PLACEHOLDER_NAME + 1);
        let template = format!("<!{long_name}!>");
        let variables = Value::Object(Map::from_iter([(long_name, json!(1))]));
        assert_eq!(
            made(json!(template), "string", variables),
            output(json!(template))
        );
        let unclosed = format!("{}!>", "<!".repeat(200_000));
        assert_eq!(
            made(json!(unclosed), "string", json!({"a": 1})),
            output(json!(unclosed))
        );
        let big = "x".repeat(1 << 20);
        let template = "<!v!>".repeat(5);
        assert_eq!(
            error_message(&made(json!(template), "string", json!({ "v": big }))),
            format!("makeData: the filled input is longer than {MAX_MAKE_DATA_OUTPUT} bytes")
        );
        assert_eq!(
            error_message(&made(
                json!("x".repeat(MAX_TEMPLATE_LEN + 1)),
                "string",
                json!("")
            )),
            format!("makeData: input is longer than {MAX_TEMPLATE_LEN} bytes")
        );
    }

    // --- patterns ---

    fn matches(source: &str, flags: &str, text: &str) -> bool {
        pattern::Pattern::new(source, flags)
            .and_then(|pattern| pattern.is_match(text))
            .unwrap_or_else(|why| panic!("/{source}/{flags}: {why}"))
    }

    #[test]
    fn patterns_follow_javascript_regular_expressions() {
        let cases = [
            ("a.c", "", "xabcx", true),
            ("a.c", "", "a\nc", false),
            ("a.c", "s", "a\nc", true),
            ("^abc$", "", "abc", true),
            ("^abc$", "", "xabc", false),
            ("^b", "", "a\nb", false),
            ("^b", "m", "a\nb", true),
            ("9.2(4)", "", "9.2(4)", false),
            ("9.2(4)", "", "9x24", true),
            ("[a-c]+x", "", "zzbbx", true),
            ("[^0-9]", "", "123", false),
            ("[^]", "", "a", true),
            ("[]", "", "a", false),
            ("\\d{3}-\\d{4}", "", "call 555-1234", true),
            ("\\bcat\\b", "", "a cat here", true),
            ("\\bcat\\b", "", "concat", false),
            ("\\Bcat", "", "concat", true),
            ("SUCCESS|COMPLETED", "", "job COMPLETED", true),
            ("(?:ab)+$", "", "xababab", true),
            ("abc", "i", "xABCx", true),
            ("[a-z]+", "i", "ABC", true),
            ("^a{2,3}$", "", "aaa", true),
            ("^a{2,3}$", "", "aaaa", false),
            ("^a{2}$", "", "aa", true),
            ("^a{2,}$", "", "aaaaa", true),
            ("a{b", "", "a{b", true),
            ("a+?b", "", "aaab", true),
            ("colou?r", "", "color", true),
            ("\\s+\\S", "", "  x", true),
            ("\\w+@\\w+\\.com", "", "mail me@example.com", true),
            ("[\\d.]+", "", "v1.2", true),
            ("[a\\-z]", "", "-", true),
            ("\\x41\\u0042", "", "AB", true),
            ("", "", "", true),
            ("^$", "", "", true),
            ("(a|)+b", "", "b", true),
        ];
        for (source, flags, text, expected) in cases {
            assert_eq!(
                matches(source, flags, text),
                expected,
                "/{source}/{flags} on {text:?}"
            );
        }
    }

    #[test]
    fn patterns_take_time_linear_in_the_text() {
        let text = "a".repeat(20_000);
        assert!(!matches("(a*)*b", "", &text));
        assert!(!matches("^(a|aa)+$", "", &format!("{text}b")));
        let pattern =
            pattern::Pattern::new("(?:a*){50}z", "").unwrap_or_else(|why| panic!("{why}"));
        assert_eq!(
            pattern.is_match_within(&"a".repeat(1000), 10_000),
            Err("takes more than 10000 steps to match this text".to_owned())
        );
    }

    #[test]
    fn patterns_this_service_cannot_run_are_refused_with_a_reason() {
        for (source, flags, message) in [
            ("a(", "", "an unterminated group"),
            ("a)", "", "an unmatched `)`"),
            (
                "(?=a)",
                "",
                "lookaround or a named group, which is not supported",
            ),
            (
                "(a)\\1",
                "",
                "a backreference or octal escape, which is not supported",
            ),
            ("*a", "", "a quantifier with nothing to repeat"),
            ("a**", "", "a quantifier with nothing to repeat"),
            ("^*", "", "a quantifier with nothing to repeat"),
            (
                "a{3,2}",
                "",
                "a {n,m} quantifier with its numbers out of order",
            ),
            ("a{1001}", "", "a repetition count above 1000"),
            ("[b-a]", "", "a range out of order in a character class"),
            ("[ab", "", "an unterminated character class"),
            ("a\\", "", "a `\\` at the end"),
            ("a", "x", "an unknown flag `x`"),
        ] {
            assert_eq!(
                pattern::Pattern::new(source, flags).err(),
                Some(message.to_owned()),
                "/{source}/{flags}"
            );
        }
        assert_eq!(
            pattern::Pattern::new(&"a".repeat(MAX_PATTERN_LEN + 1), "").err(),
            Some(format!("more than {MAX_PATTERN_LEN} characters"))
        );
        assert!(pattern::Pattern::new("(a{1000}){1000}", "")
            .err()
            .is_some_and(|why| why.ends_with("instructions once compiled")));
    }

    // --- the corpus ---

    /// Every workflow of the corpus: (file name, workflow document).
    fn corpus() -> &'static [(String, Map<String, Value>)] {
        crate::domain::corpus::workflows()
    }

    fn corpus_task(file: &str, task_id: &str) -> Map<String, Value> {
        let (_, workflow) = corpus()
            .iter()
            .find(|(path, _)| path.ends_with(file))
            .unwrap_or_else(|| panic!("{file} is not in the corpus"));
        object(workflow["tasks"][task_id].clone())
    }

    #[test]
    fn every_builtin_task_of_the_corpus_runs_to_a_finish_state() {
        let mut seen: HashMap<Builtin, usize> = HashMap::new();
        for (file, workflow) in corpus() {
            let Some(Value::Object(tasks)) = workflow.get("tasks") else {
                panic!("{file} has no tasks");
            };
            for (task_id, task) in tasks {
                let Value::Object(task) = task else { continue };
                let Some(builtin) = Builtin::of(task) else {
                    continue;
                };
                *seen.entry(builtin).or_default() += 1;
                let incoming = task["variables"]["incoming"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let outcome = with_scope(json!({}), json!({}), |scope| {
                    let resolved = variables::resolve_incoming(&incoming, scope);
                    match run(builtin, &resolved, scope, DateTime::UNIX_EPOCH) {
                        Outcome::Wait { .. } => finish_wait(builtin, &resolved),
                        finished => finished,
                    }
                });
                let context = format!("{file} task {task_id} ({}): {outcome:?}", builtin.name());
                assert!(outcome.finish_state().is_some(), "{context}");
                // Every evaluation and query path of the corpus is one this service reads.
                if builtin == Builtin::Evaluation {
                    assert_ne!(
                        outcome.finish_state(),
                        Some(FinishState::Error),
                        "{context}"
                    );
                }
                if builtin == Builtin::Query
                    && incoming["query"]
                        .as_str()
                        .is_some_and(|path| !path.starts_with("$var."))
                {
                    assert_ne!(
                        outcome.finish_state(),
                        Some(FinishState::Error),
                        "{context}"
                    );
                }
            }
        }
        let expected = HashMap::from([
            (Builtin::Stub, 76),
            (Builtin::NewVariable, 54),
            (Builtin::Delay, 9),
            (Builtin::Evaluation, 274),
            (Builtin::Query, 151),
            (Builtin::Merge, 59),
            (Builtin::MakeData, 13),
            (Builtin::Push, 11),
            (Builtin::SetObjectKey, 10),
            (Builtin::ArrayLength, 8),
            (Builtin::ArrayPush, 6),
            (Builtin::ArrayIncludes, 3),
            (Builtin::ArrayIndexOf, 1),
            (Builtin::Join, 1),
            (Builtin::StringConcat, 2),
            (Builtin::StringLength, 1),
            (Builtin::Substring, 1),
            (Builtin::Split, 1),
            (Builtin::NumberToString, 1),
            (Builtin::Parse, 1),
            (Builtin::Modify, 1),
            (Builtin::GetTime, 2),
            (Builtin::CalculateTimeDiff, 1),
        ]);
        assert_eq!(seen, expected);
    }

    /// Runs corpus task `task_id` of `file` with the given job variables and earlier results,
    /// and the job variables its outgoing mapping writes.
    fn run_corpus_task(
        file: &str,
        task_id: &str,
        job: Value,
        tasks: Value,
    ) -> (Outcome, Vec<(String, Value)>) {
        run_corpus_task_at(file, task_id, job, tasks, DateTime::UNIX_EPOCH)
    }

    /// [`run_corpus_task`] in a step at `now`.
    fn run_corpus_task_at(
        file: &str,
        task_id: &str,
        job: Value,
        tasks: Value,
        now: DateTime<Utc>,
    ) -> (Outcome, Vec<(String, Value)>) {
        let task = corpus_task(file, task_id);
        let builtin =
            Builtin::of(&task).unwrap_or_else(|| panic!("{file} {task_id} is not a builtin"));
        let incoming = task["variables"]["incoming"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let spec = task["variables"]["outgoing"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let outcome = with_scope(job, tasks, |scope| {
            run(
                builtin,
                &variables::resolve_incoming(&incoming, scope),
                scope,
                now,
            )
        });
        let writes = match &outcome {
            Outcome::Finished { outgoing, .. } => variables::job_writes(&spec, outgoing),
            Outcome::Wait { .. } => Vec::new(),
        };
        (outcome, writes)
    }

    #[test]
    fn corpus_examples_give_the_results_their_workflows_expect() {
        // A stub standing for a failed check records the result in a job variable.
        let (outcome, writes) = run_corpus_task(
            "f5-big-iq/check-big-ip-current-software-version.json",
            "551e",
            json!({}),
            json!({}),
        );
        assert_eq!(
            outcome,
            finished(FinishState::Success, json!({"response": "FAILED"}))
        );
        assert_eq!(writes, vec![("result".to_owned(), json!("FAILED"))]);

        // makeData joins a merged path and file name.
        let (merged, _) = run_corpus_task(
            "gitlab/get-file.json",
            "ef6e",
            json!({"filePath": "configs", "fileName": "r1.cfg"}),
            json!({}),
        );
        let Outcome::Finished { outgoing, .. } = merged else {
            panic!("{merged:?}")
        };
        let (outcome, writes) = run_corpus_task(
            "gitlab/get-file.json",
            "193",
            json!({}),
            json!({ "ef6e": outgoing }),
        );
        assert_eq!(outcome, output(json!("configs/r1.cfg")));
        assert_eq!(
            writes,
            vec![("fullPath".to_owned(), json!("configs/r1.cfg"))]
        );

        // makeData turning "0" into a number for a counter.
        let (outcome, writes) = run_corpus_task(
            "itential-platform-workflow-utilities/archive-jobs-and-tasks-collections.json",
            "8536",
            json!({}),
            json!({}),
        );
        assert_eq!(outcome, output(json!(0)));
        assert_eq!(writes, vec![("totalJobs".to_owned(), json!(0))]);

        // A GitHub error code of 404 takes the success path.
        let github = |code: Value| {
            run_corpus_task(
                "github/commit-file.json",
                "1425",
                json!({"githubError": {"IAPerror": {"code": code}}}),
                json!({}),
            )
            .0
            .finish_state()
        };
        assert_eq!(github(json!(404)), Some(FinishState::Success));
        assert_eq!(github(json!("404")), Some(FinishState::Success));
        assert_eq!(github(json!(500)), Some(FinishState::Failure));

        // "No child job failed": success only when no looped child job returned FAILED.
        let children = |statuses: Value| {
            let loop_results: Vec<Value> = statuses
                .as_array()
                .into_iter()
                .flatten()
                .map(|status| json!({"returnStatus": status}))
                .collect();
            run_corpus_task(
                "f5-big-iq/rollback-big-ip-device.json",
                "04c8",
                json!({}),
                json!({"3646": {"job_details": {"loop": loop_results}}}),
            )
            .0
            .finish_state()
        };
        assert_eq!(
            children(json!(["SUCCESS", "SUCCESS"])),
            Some(FinishState::Success)
        );
        assert_eq!(
            children(json!(["SUCCESS", "FAILED"])),
            Some(FinishState::Failure)
        );

        // An allowed source address is found in the job's list.
        let allowed = |address: &str| {
            run_corpus_task(
                "kentik/aws-blocked-traffic-event.json",
                "2a1a",
                json!({"allowedIPList": ["10.10.10.10"]}),
                json!({"5847": {"sourceIP": address}}),
            )
            .0
            .finish_state()
        };
        assert_eq!(allowed("10.10.10.10"), Some(FinishState::Success));
        assert_eq!(allowed("10.10.10.11"), Some(FinishState::Failure));

        // A Versa task status under keys holding dots.
        let (outcome, _) = run_corpus_task(
            "versa-director/deploy-device.json",
            "84b5",
            json!({}),
            json!({"ed0e": {"result": {"response": {"versa-tasks.task": {"versa-tasks.task-status": "COMPLETED"}}}}}),
        );
        assert_eq!(outcome.finish_state(), Some(FinishState::Success));

        // The first named Panorama rule is compared with the requested name.
        let (outcome, _) = run_corpus_task(
            "palo-alto-panorama/create-security-post-rule.json",
            "160c",
            json!({}),
            json!({
                "9355": {"result": {"response": {"result": {"entry": [{"@name": "allow-web"}]}}}},
                "e5e": {"name": "allow-web"},
            }),
        );
        assert_eq!(outcome.finish_state(), Some(FinishState::Success));

        // The devices NSO reports out of sync.
        let (outcome, _) = run_corpus_task(
            "cisco-nso/sync-from-devices.json",
            "c79c",
            json!({}),
            json!({"82b": {"sync_statuses": {"value": [
                {"devicename": "r1", "syncstatus": "in-sync"},
                {"devicename": "r2", "syncstatus": "out-of-sync"},
            ]}}}),
        );
        assert_eq!(
            outcome,
            finished(FinishState::Success, json!({"return_data": ["r2"]}))
        );

        // Compliance reports below a perfect score.
        let (outcome, _) = run_corpus_task(
            "itential-platform-configuration-management/golden-configuration-tree.json",
            "324b",
            json!({}),
            json!({"bc61": {"runComplianceBatchResult": {"reports": [{"id": 1, "score": 100}, {"id": 2, "score": 99.5}]}}}),
        );
        assert_eq!(
            outcome,
            finished(
                FinishState::Success,
                json!({"return_data": [{"id": 2, "score": 99.5}]})
            )
        );
    }

    #[test]
    fn corpus_utility_tasks_update_the_job_variables_their_workflows_name() {
        // gitlab/get-diff-for-merge.json fe3d: setObjectKey on job variable ReturnStatus,
        // whose outgoing `object` the workflow maps back onto ReturnStatus.
        let (outcome, writes) = run_corpus_task(
            "gitlab/get-diff-for-merge.json",
            "fe3d",
            json!({
                "ReturnStatus": {"errors": [], "message": "", "response": {}, "status": ""},
                "mergeRequestIid": 17
            }),
            json!({}),
        );
        let status = json!({"errors": [], "message": "", "response": {}, "status": "", "mergeRequestId": 17});
        assert_eq!(
            outcome,
            finished(FinishState::Success, json!({ "object": status.clone() }))
        );
        assert_eq!(writes, vec![("ReturnStatus".to_owned(), status)]);

        // 83a6: push an earlier task's diff onto job variable `result` (made [] by afc5).
        let (outcome, _) = run_corpus_task(
            "gitlab/get-diff-for-merge.json",
            "83a6",
            json!({"result": [{"old_path": "a"}]}),
            json!({"61db": {"return_data": {"old_path": "b"}}}),
        );
        let result = json!([{"old_path": "a"}, {"old_path": "b"}]);
        assert_eq!(
            outcome,
            Outcome::Finished {
                finish_state: FinishState::Success,
                outgoing: object(json!({ "job_variable_value": result.clone() })),
                job_writes: vec![("result".to_owned(), result)],
                error: None,
            }
        );
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|why| panic!("{why}"))
            .with_timezone(&Utc)
    }

    fn outgoing_of(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Finished {
                finish_state: FinishState::Success,
                outgoing,
                ..
            } => Value::Object(outgoing),
            other => panic!("expected success, got {other:?}"),
        }
    }

    #[test]
    fn get_time_gives_the_steps_time_at_the_tasks_utc_offset() {
        // kentik/device-onboarding-flow-test.json: `timezone` -11:00, no format, no offset;
        // the child job gets the result as its `startTime`. The reference page's example.
        let (outcome, _) = run_corpus_task_at(
            "kentik/device-onboarding-flow-test.json",
            "07ef",
            json!({}),
            json!({}),
            at("2023-04-28T12:21:14.052Z"),
        );
        assert_eq!(
            outgoing_of(outcome),
            json!({"time": {
                "time": "2023-04-28T01:21:14.052000-1100",
                "formatString": "YYYY-MM-DDTHH:mm:ss.SSSSSSZZ"
            }})
        );
    }

    #[test]
    fn get_time_moves_the_time_by_its_offset_duration() {
        // itential-platform-workflow-utilities/archive-jobs-and-tasks-collections.json: the
        // date `copyMoveDataOlderThanDays` ago, at -04:00, as the transformation 91ea gives
        // the offset; 3e8 reads it as `lessThanDate`.
        let (outcome, _) = run_corpus_task_at(
            "itential-platform-workflow-utilities/archive-jobs-and-tasks-collections.json",
            "9fb8",
            json!({}),
            json!({"91ea": {"offsetDuration": {"days": -30}}}),
            at("2026-03-31T02:00:00.5Z"),
        );
        assert_eq!(
            outgoing_of(outcome)["time"]["time"],
            json!("2026-02-28T22:00:00.500000-0400")
        );
        // Months move on the calendar (31 March less a month is the last of February);
        // a number is milliseconds; a JSON text is taken as its object.
        let get_time = |offset: Value| {
            let incoming =
                json!({"timezone": "", "format": "YYYY-MM-DD HH:mm", "offsetDuration": offset});
            with_scope(json!({}), json!({}), |scope| {
                outgoing_of(run(
                    Builtin::GetTime,
                    &object(incoming),
                    scope,
                    at("2026-03-31T10:00:00Z"),
                ))["time"]["time"]
                    .clone()
            })
        };
        assert_eq!(get_time(json!({"months": -1})), json!("2026-02-28 10:00"));
        assert_eq!(
            get_time(json!({"years": 1, "hours": 4})),
            json!("2027-03-31 14:00")
        );
        assert_eq!(get_time(json!(3_600_000)), json!("2026-03-31 11:00"));
        assert_eq!(get_time(json!("{\"weeks\": 1}")), json!("2026-04-07 10:00"));
        assert_eq!(get_time(json!("")), json!("2026-03-31 10:00"));
    }

    #[test]
    fn get_time_says_what_is_wrong_with_its_incoming_values() {
        let error = |incoming: Value| {
            error_message(&with_scope(json!({}), json!({}), |scope| {
                run(
                    Builtin::GetTime,
                    &object(incoming),
                    scope,
                    DateTime::UNIX_EPOCH,
                )
            }))
        };
        let message = error(json!({"timezone": "Mars/Olympus"}));
        assert!(
            message.starts_with("getTime: timezone must be a UTC offset"),
            "{message}"
        );
        let message = error(json!({"format": "LLLL"}));
        assert!(message.contains("\"LLLL\""), "{message}");
        let message = error(json!({"offsetDuration": {"fortnights": 1}}));
        assert!(
            message.contains("offsetDuration.fortnights is not a unit"),
            "{message}"
        );
        let message = error(json!({"offsetDuration": {"years": 1e12}}));
        assert!(message.contains("out of range"), "{message}");
    }

    #[test]
    fn calculate_time_diff_subtracts_the_second_time_from_the_first_in_every_unit() {
        // kentik/device-flow-test.json: the time of a flow (merged with its format) less
        // the job's `startTime` (a getTime result); the evaluation after it checks
        // `milliseconds` >= 0.
        let (outcome, _) = run_corpus_task(
            "kentik/device-flow-test.json",
            "6f53",
            json!({"startTime": {
                "time": "2023-04-28T01:21:14.052000-1100",
                "formatString": "YYYY-MM-DDTHH:mm:ss.SSSSSSZZ"
            }}),
            json!({"35e4": {"merged_object": {
                "time": "2023-04-28T12:22:14.152Z",
                "formatString": "YYYY-MM-DDTHH:mm:ss.SSSZ"
            }}}),
        );
        assert_eq!(
            outgoing_of(outcome)["timeDiff"]["milliseconds"],
            json!(60_100)
        );
        // The reference page's units for 30 days back.
        let diff = with_scope(json!({}), json!({}), |scope| {
            outgoing_of(run(
                Builtin::CalculateTimeDiff,
                &object(json!({
                    "firstTime": {"time": "2023-05-01", "formatString": "YYYY-MM-DD"},
                    "secondTime": {"time": "31 May 2023", "formatString": "D MMM YYYY"}
                })),
                scope,
                DateTime::UNIX_EPOCH,
            ))
        });
        assert_eq!(
            diff["timeDiff"],
            json!({
                "milliseconds": -2_592_000_000_i64,
                "seconds": -2_592_000,
                "minutes": -43_200,
                "hours": -720,
                "days": -30,
                "months": -0.9856465225158627,
                "years": -0.08213721020965523
            })
        );
    }

    #[test]
    fn calculate_time_diff_says_which_time_it_cannot_read() {
        let message = error_message(&with_scope(json!({}), json!({}), |scope| {
            run(
                Builtin::CalculateTimeDiff,
                &object(json!({
                    "firstTime": {"time": "yesterday", "formatString": "YYYY-MM-DD"},
                    "secondTime": "2023-05-01T00:00:00Z"
                })),
                scope,
                DateTime::UNIX_EPOCH,
            )
        }));
        assert!(
            message.starts_with("calculateTimeDiff: firstTime.time \"yesterday\" does not match"),
            "{message}"
        );
    }

    #[test]
    fn modify_replaces_the_value_or_the_field_its_query_names() {
        // gitlab/create-templated-project.json: the template name chosen in the form
        // replaces `template_name`, written to job variable `templateName`.
        let (outcome, writes) = run_corpus_task(
            "gitlab/create-templated-project.json",
            "8215",
            json!({"template_name": "old"}),
            json!({"bf60": {"return_data": "rails"}}),
        );
        assert_eq!(outgoing_of(outcome), json!({"updated_object": "rails"}));
        assert_eq!(writes, vec![("templateName".to_owned(), json!("rails"))]);
        let modify = |incoming: Value| {
            with_scope(json!({}), json!({}), |scope| {
                run(
                    Builtin::Modify,
                    &object(incoming),
                    scope,
                    DateTime::UNIX_EPOCH,
                )
            })
        };
        assert_eq!(
            outgoing_of(modify(json!({
                "object_to_update": {"device": {"sync-status": true, "name": "r1"}},
                "query": "device.sync-status",
                "new_value": false
            }))),
            json!({"updated_object": {"device": {"sync-status": false, "name": "r1"}}})
        );
        // The query is not used for a boolean, number or string.
        assert_eq!(
            outgoing_of(modify(
                json!({"object_to_update": false, "query": "a", "new_value": true})
            )),
            json!({"updated_object": true})
        );
        let message = error_message(&modify(json!({
            "object_to_update": {"list": [1, 2]},
            "query": "list.0",
            "new_value": 3
        })));
        assert!(message.contains("modify does not change"), "{message}");
    }
}
