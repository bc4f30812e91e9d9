//! The json-query subset [`query`] documents.

use std::borrow::Cow;

use serde_json::Value;

use super::{js, pattern::Pattern, MAX_QUERY_LEN, MAX_QUERY_STEPS};

enum Step {
    /// `.key`, `key`, `[key]`
    Get(String),
    /// `[*]`, `[**]`
    Values { flatten: bool },
    /// `[cond]`, `[*cond]`
    Filter {
        all: bool,
        conditions: Vec<Condition>,
    },
    /// `[]` and the steps after it
    Deep(Vec<Step>),
    /// `:name(args)`
    Helper { name: String, args: Vec<String> },
}

struct Condition {
    join: Join,
    key: String,
    negate: bool,
    test: Test,
}

#[derive(Clone, Copy)]
enum Join {
    First,
    And,
    Or,
}

enum Test {
    Equals(String),
    Includes(String),
    Matches(Pattern),
    Order(Relation, String),
}

#[derive(Clone, Copy)]
enum Relation {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

pub fn query(root: &Value, path: &str) -> Result<Value, String> {
    let alternatives = parse(path)?;
    let mut found = Value::Null;
    for steps in &alternatives {
        found = run(steps, Cow::Borrowed(root))?.into_owned();
        if js::truthy(&found) {
            break;
        }
    }
    Ok(found)
}

/// The steps of each `|` alternative of `path`.
fn parse(path: &str) -> Result<Vec<Vec<Step>>, String> {
    if path.len() > MAX_QUERY_LEN {
        return Err(format!("is longer than {MAX_QUERY_LEN} bytes"));
    }
    let chars: Vec<char> = path.chars().collect();
    let mut parser = Parser {
        at_start: true,
        ..Parser::default()
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '.' => {
                if parser.at_start && chars.get(i + 1) == Some(&'.') {
                    return Err("uses `..`, which is not supported".to_owned());
                }
                parser.flush()?;
            }
            ':' => {
                parser.flush()?;
                parser.helper = true;
            }
            '|' => {
                parser.flush()?;
                parser.alternatives.push(std::mem::take(&mut parser.steps));
                parser.deep_open = false;
                parser.at_start = true;
                i += 1;
                continue;
            }
            '[' => {
                parser.flush()?;
                let close = closing(&chars, i)?;
                let content: String = chars[i + 1..close].iter().collect();
                if content.is_empty() {
                    parser.steps.push(Step::Deep(Vec::new()));
                    parser.deep_open = true;
                    parser.count()?;
                } else {
                    parser.push(select(&content)?)?;
                }
                i = close;
            }
            '(' => {
                parser.flush()?;
                let close = closing(&chars, i)?;
                let content: String = chars[i + 1..close].iter().collect();
                let args = content
                    .split(',')
                    .map(|arg| arg.trim().to_owned())
                    .collect();
                match parser.last() {
                    Some(Step::Helper { args: slot, .. }) => *slot = args,
                    _ => return Err("has arguments `(...)` that follow no helper".to_owned()),
                }
                i = close;
            }
            '{' => return Err("uses an inner query `{...}`, which is not supported".to_owned()),
            ']' | ')' | '}' => return Err(format!("has an unmatched `{c}`")),
            _ => parser.buffer.push(c),
        }
        parser.at_start = false;
        i += 1;
    }
    parser.flush()?;
    parser.alternatives.push(parser.steps);
    Ok(parser.alternatives)
}

#[derive(Default)]
struct Parser {
    alternatives: Vec<Vec<Step>>,
    steps: Vec<Step>,
    /// Text of the key or helper name being read.
    buffer: String,
    /// The buffer names a helper (it followed `:`).
    helper: bool,
    /// Steps go into the last `[]` (json-query runs what follows `[]` on each value).
    deep_open: bool,
    at_start: bool,
    count: usize,
}

impl Parser {
    fn count(&mut self) -> Result<(), String> {
        self.count += 1;
        if self.count > MAX_QUERY_STEPS {
            return Err(format!("takes more than {MAX_QUERY_STEPS} steps"));
        }
        Ok(())
    }

    fn push(&mut self, step: Step) -> Result<(), String> {
        self.count()?;
        match self.steps.last_mut() {
            Some(Step::Deep(inner)) if self.deep_open => inner.push(step),
            _ => self.steps.push(step),
        }
        Ok(())
    }

    fn last(&mut self) -> Option<&mut Step> {
        let into_deep = self.deep_open && matches!(self.steps.last(), Some(Step::Deep(_)));
        if !into_deep {
            return self.steps.last_mut();
        }
        match self.steps.last_mut() {
            Some(Step::Deep(inner)) => inner.last_mut(),
            _ => None,
        }
    }

    /// Ends the key or helper name being read.
    fn flush(&mut self) -> Result<(), String> {
        let text = std::mem::take(&mut self.buffer);
        let text = text.trim();
        let helper = std::mem::replace(&mut self.helper, false);
        if text.is_empty() {
            return Ok(());
        }
        if text.contains('?') {
            return Err("uses a parameter `?`, which is not supported".to_owned());
        }
        let step = if helper {
            Step::Helper {
                name: text.to_owned(),
                args: Vec::new(),
            }
        } else {
            Step::Get(text.to_owned())
        };
        self.push(step)
    }
}

/// The index of the bracket closing the one at `open`, counting `[]`, `()` and `{}`.
fn closing(chars: &[char], open: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    for (i, &c) in chars.iter().enumerate().skip(open) {
        match c {
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err(format!("has an unclosed `{}`", chars[open]))
}

/// The step `[content]` is (content not empty).
fn select(content: &str) -> Result<Step, String> {
    match content {
        "*" => return Ok(Step::Values { flatten: false }),
        "**" => return Ok(Step::Values { flatten: true }),
        _ => {}
    }
    let (all, rest) = match content.strip_prefix('*') {
        Some(rest) => (true, rest),
        None => (false, content),
    };
    let parts = split_boolean(rest);
    let mut conditions = Vec::with_capacity(parts.len());
    for (join, part) in &parts {
        match condition(*join, part.trim())? {
            Some(condition) => conditions.push(condition),
            // json-query reads `[key]` and `[*key]` alike: a key.
            None if parts.len() == 1 => {
                let key = rest.trim();
                if key.contains('?') || key.starts_with('{') {
                    return Err(format!("uses `[{content}]`, which is not supported"));
                }
                return Ok(Step::Get(key.to_owned()));
            }
            None => {
                return Err(format!(
                    "has a condition without an operator in `[{content}]`"
                ))
            }
        }
    }
    Ok(Step::Filter { all, conditions })
}

/// `text` split at `&` and `|` outside brackets, each part with how it joins the previous.
fn split_boolean(text: &str) -> Vec<(Join, String)> {
    let mut parts = Vec::new();
    let mut join = Join::First;
    let mut part = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => depth = depth.saturating_sub(1),
            '&' | '|' if depth == 0 => {
                parts.push((join, std::mem::take(&mut part)));
                join = if c == '&' { Join::And } else { Join::Or };
                continue;
            }
            _ => {}
        }
        part.push(c);
    }
    parts.push((join, part));
    parts
}

/// The condition `text` states, or None when it has no operator. The operator is the
/// first of `=`, `~`, `:`, `<=`, `>=`, `<`, `>` outside brackets, `!` before it negating.
fn condition(join: Join, text: &str) -> Result<Option<Condition>, String> {
    let chars: Vec<char> = text.chars().collect();
    let operator_at = |at: usize| -> Option<(&'static str, usize)> {
        match (chars.get(at)?, chars.get(at + 1)) {
            ('=', _) => Some(("=", 1)),
            ('~', _) => Some(("~", 1)),
            (':', _) => Some((":", 1)),
            ('<', Some('=')) => Some(("<=", 2)),
            ('>', Some('=')) => Some((">=", 2)),
            ('<', _) => Some(("<", 1)),
            ('>', _) => Some((">", 1)),
            _ => None,
        }
    };
    let mut depth = 0usize;
    for at in 0..chars.len() {
        match chars[at] {
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 0 {
            continue;
        }
        let (negate, start) = if chars[at] == '!' && operator_at(at + 1).is_some() {
            (true, at + 1)
        } else {
            (false, at)
        };
        let Some((operator, length)) = operator_at(start) else {
            continue;
        };
        let key: String = chars[..at].iter().collect::<String>().trim().to_owned();
        let value: String = chars[start + length..]
            .iter()
            .collect::<String>()
            .trim()
            .to_owned();
        for part in [&key, &value] {
            if part.starts_with('{') || part.starts_with('?') {
                return Err(format!(
                    "uses `{part}` in a condition: inner queries and parameters are not supported"
                ));
            }
        }
        let test = match operator {
            "=" => Test::Equals(value),
            "~" => match regex_literal(&value) {
                Some((source, flags)) => Test::Matches(
                    Pattern::new(source, flags)
                        .map_err(|why| format!("has a regular expression /{source}/ with {why}"))?,
                ),
                None => Test::Includes(value),
            },
            "<" => Test::Order(Relation::Less, value),
            "<=" => Test::Order(Relation::LessOrEqual, value),
            ">" => Test::Order(Relation::Greater, value),
            ">=" => Test::Order(Relation::GreaterOrEqual, value),
            _ => return Err("uses a helper `:` in a condition, which is not supported".to_owned()),
        };
        return Ok(Some(Condition {
            join,
            key,
            negate,
            test,
        }));
    }
    Ok(None)
}

/// `/source/flags` (at most one flag, as json-query reads it).
fn regex_literal(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix('/')?;
    let (source, flags) = inner.rsplit_once('/')?;
    (flags.len() <= 1 && flags.bytes().all(|b| b.is_ascii_lowercase())).then_some((source, flags))
}

fn run<'v>(steps: &[Step], mut current: Cow<'v, Value>) -> Result<Cow<'v, Value>, String> {
    for step in steps {
        current = match step {
            Step::Get(key) => get(current, key),
            Step::Helper { name, args } => {
                if name != "get" {
                    return Err(format!(
                        "uses the helper `:{name}`, which is not supported (only `:get`)"
                    ));
                }
                match args.first() {
                    Some(key) if js::truthy(&current) => child(current, key),
                    Some(_) => Cow::Owned(Value::Null),
                    None => return Err("uses `:get` without a key".to_owned()),
                }
            }
            Step::Values { flatten } => Cow::Owned(values(&current, *flatten)),
            Step::Filter { all, conditions } => filter(&current, *all, conditions)?,
            Step::Deep(rest) => deep(&current, rest)?,
        };
    }
    Ok(current)
}

/// `value[key]` as JavaScript reads it, None for undefined.
fn property<'v>(value: &'v Value, key: &str) -> Option<Cow<'v, Value>> {
    match value {
        Value::Object(map) => map.get(key).map(Cow::Borrowed),
        Value::Array(items) if key == "length" => Some(Cow::Owned(Value::from(items.len()))),
        Value::Array(items) => items.get(index(key)?).map(Cow::Borrowed),
        Value::String(text) if key == "length" => {
            Some(Cow::Owned(Value::from(text.encode_utf16().count())))
        }
        Value::String(text) => {
            let unit = *text.encode_utf16().collect::<Vec<u16>>().get(index(key)?)?;
            Some(Cow::Owned(Value::String(String::from_utf16_lossy(&[unit]))))
        }
        _ => None,
    }
}

/// `key` as an array index: a canonical non-negative integer.
fn index(key: &str) -> Option<usize> {
    let canonical =
        key == "0" || (!key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
    if !canonical || key.is_empty() {
        return None;
    }
    key.parse().ok()
}

/// `current[key]`, null when undefined.
fn child<'v>(current: Cow<'v, Value>, key: &str) -> Cow<'v, Value> {
    let found = match current {
        Cow::Borrowed(value) => property(value, key),
        Cow::Owned(value) => property(&value, key).map(|found| Cow::Owned(found.into_owned())),
    };
    found.unwrap_or(Cow::Owned(Value::Null))
}

/// json-query's `get`: nothing of a falsy value; of an array, by a key that is not an
/// index, each element's value (pluck, flattened one level).
fn get<'v>(current: Cow<'v, Value>, key: &str) -> Cow<'v, Value> {
    if !js::truthy(&current) {
        return Cow::Owned(Value::Null);
    }
    if let Value::Array(items) = &*current {
        let numeric =
            matches!((js::parse_int(key), js::parse_number(key)), (Some(a), Some(b)) if a == b);
        if !numeric {
            let mut plucked = Vec::new();
            for item in items {
                match property(item, key).map(Cow::into_owned) {
                    Some(Value::Array(values)) => plucked.extend(values),
                    Some(value) => plucked.push(value),
                    None => {}
                }
            }
            return Cow::Owned(Value::Array(plucked));
        }
    }
    child(current, key)
}

/// The values of an object, array or string (`[*]`); `flatten`: arrays among them spread.
fn values(current: &Value, flatten: bool) -> Value {
    if !js::truthy(current) {
        return Value::Array(Vec::new());
    }
    let mut found = Vec::new();
    for value in children(current) {
        match value.into_owned() {
            Value::Array(items) if flatten => found.extend(items),
            value => found.push(value),
        }
    }
    Value::Array(found)
}

fn children(value: &Value) -> Vec<Cow<'_, Value>> {
    match value {
        Value::Object(map) => map.values().map(Cow::Borrowed).collect(),
        Value::Array(items) => items.iter().map(Cow::Borrowed).collect(),
        Value::String(text) => text
            .encode_utf16()
            .map(|unit| Cow::Owned(Value::String(String::from_utf16_lossy(&[unit]))))
            .collect(),
        _ => Vec::new(),
    }
}

fn filter<'v>(
    current: &Value,
    all: bool,
    conditions: &[Condition],
) -> Result<Cow<'v, Value>, String> {
    let Value::Array(items) = current else {
        return Ok(Cow::Owned(Value::Null));
    };
    let mut found = Vec::new();
    for item in items {
        if matches(item, conditions)? {
            if !all {
                return Ok(Cow::Owned(item.clone()));
            }
            found.push(item.clone());
        }
    }
    Ok(Cow::Owned(if all {
        Value::Array(found)
    } else {
        Value::Null
    }))
}

fn deep<'v>(current: &Value, rest: &[Step]) -> Result<Cow<'v, Value>, String> {
    if !js::truthy(current) {
        return Ok(Cow::Owned(Value::Null));
    }
    if rest.is_empty() {
        return Ok(Cow::Owned(current.clone()));
    }
    for value in children(current) {
        let found = run(rest, value)?;
        if js::truthy(&found) {
            return Ok(Cow::Owned(found.into_owned()));
        }
    }
    Ok(Cow::Owned(Value::Null))
}

fn matches(item: &Value, conditions: &[Condition]) -> Result<bool, String> {
    let mut result = false;
    for condition in conditions {
        let value = property(item, &condition.key);
        let value = value.as_deref();
        let holds = match &condition.test {
            Test::Equals(text) => equals_text(value, text),
            Test::Includes(text) => match value {
                Some(Value::String(found)) => found.contains(text.as_str()),
                Some(Value::Array(items)) => items
                    .iter()
                    .any(|item| item.as_str() == Some(text.as_str())),
                _ => false,
            },
            Test::Matches(pattern) => match value {
                Some(Value::String(found)) => pattern
                    .is_match(found)
                    .map_err(|why| format!("has a regular expression that {why}"))?,
                _ => false,
            },
            Test::Order(relation, text) => {
                order_text(value, text).is_some_and(|ordering| match relation {
                    Relation::Less => ordering.is_lt(),
                    Relation::LessOrEqual => ordering.is_le(),
                    Relation::Greater => ordering.is_gt(),
                    Relation::GreaterOrEqual => ordering.is_ge(),
                })
            }
        };
        let holds = holds != condition.negate;
        result = match condition.join {
            Join::First => holds,
            Join::And => result && holds,
            Join::Or => result || holds,
        };
    }
    Ok(result)
}

/// json-query's `=`: booleans match `true`/`false`; otherwise JavaScript's `value == text`.
fn equals_text(value: Option<&Value>, text: &str) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => {
            text == if *flag { "true" } else { "false" }
                || js::parse_number(text) == Some(if *flag { 1.0 } else { 0.0 })
        }
        Some(Value::Number(number)) => js::parse_number(text) == number.as_f64(),
        Some(Value::String(found)) => found == text,
        Some(other) => js::primitive_text(other) == text,
    }
}

/// JavaScript's `value < text` and kin, as an ordering.
fn order_text(value: Option<&Value>, text: &str) -> Option<std::cmp::Ordering> {
    match value? {
        Value::Null => None,
        Value::Number(number) => number.as_f64()?.partial_cmp(&js::parse_number(text)?),
        Value::Bool(flag) => (if *flag { 1.0 } else { 0.0 }).partial_cmp(&js::parse_number(text)?),
        Value::String(found) => Some(js::compare_text(found, text)),
        other => Some(js::compare_text(&js::primitive_text(other), text)),
    }
}
