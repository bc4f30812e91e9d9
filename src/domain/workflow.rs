//! Workflows: Itential workflow documents, parsed once at the edge.
//!
//! The document is kept whole (fields the service does not model are stored and returned
//! unchanged); parsing checks the parts the service relies on and reads out the few it uses.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::error::{Error, FieldViolation, Problem, Violations};
use super::graph::{self, TaskGraph};
use super::ids::is_object_id;
use super::json::{index, join, reject_nul_in, type_name};

/// End states a transition can leave a task in.
pub const TRANSITION_STATES: [&str; 4] = ["success", "failure", "error", "loop"];
/// Kinds of transition.
pub const TRANSITION_TYPES: [&str; 2] = ["standard", "revert"];

/// A workflow document that passed [`WorkflowDocument::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowDocument {
    name: String,
    groups: Vec<String>,
    document: Map<String, Value>,
}

/// A stored workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub document: WorkflowDocument,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WorkflowDocument {
    /// Checks `value` as a workflow document; `path` names it in errors (`workflow`,
    /// `workflows[3]`).
    pub fn parse(value: Value, path: &str) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let Value::Object(document) = value else {
            return Err(Error::invalid(
                path,
                format!("must be a workflow object, not {}", type_name(&value)),
            ));
        };
        reject_nul_in(&document, path, &mut violations);

        let name = match document.get("name") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
            Some(Value::String(_)) => {
                violations.push(join(path, "name"), "must not be empty");
                String::new()
            }
            None => {
                violations.push(join(path, "name"), "is required");
                String::new()
            }
            Some(other) => {
                violations.push(
                    join(path, "name"),
                    format!("must be a string, not {}", type_name(other)),
                );
                String::new()
            }
        };
        for key in ["type", "description"] {
            expect_optional(&document, path, key, &mut violations, "a string", |v| {
                v.is_string()
            });
        }
        let groups = parse_groups(&document, path, &mut violations);
        check_tasks(&document, path, &mut violations);
        check_transitions(&document, path, &mut violations);
        for key in ["canvasVersion", "encodingVersion", "font_size"] {
            expect_optional(&document, path, key, &mut violations, "an integer", |v| {
                v.is_i64() || v.is_u64()
            });
        }
        for key in ["preAutomationTime", "sla"] {
            expect_optional(&document, path, key, &mut violations, "a number", |v| {
                v.is_number()
            });
        }
        check_decorators(&document, path, &mut violations);
        expect_optional(&document, path, "tags", &mut violations, "an array", |v| {
            v.is_array()
        });
        expect_optional(
            &document,
            path,
            "outputSchema",
            &mut violations,
            "an object",
            |v| v.is_object(),
        );
        if let Some(schema) = document.get("inputSchema").filter(|s| !s.is_null()) {
            if let Err(error) = compile_input_schema(schema) {
                violations.push(
                    join(path, "inputSchema"),
                    format!("is not a valid JSON Schema: {error}"),
                );
            }
        }
        violations.into_result(WorkflowDocument {
            name,
            groups,
            document,
        })
    }

    /// A document read back from storage, where it was checked when it was written.
    pub fn from_stored(document: Map<String, Value>) -> Self {
        let name = str_field(&document, "name").unwrap_or_default().to_owned();
        let groups = match document.get("groups") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        WorkflowDocument {
            name,
            groups,
            document,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    pub fn document(&self) -> &Map<String, Value> {
        &self.document
    }

    pub fn into_document(self) -> Map<String, Value> {
        self.document
    }

    /// `type`, `automation` when the document has none.
    pub fn workflow_type(&self) -> &str {
        str_field(&self.document, "type").unwrap_or("automation")
    }

    pub fn description(&self) -> &str {
        str_field(&self.document, "description").unwrap_or_default()
    }

    pub fn tasks(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match self.document.get("tasks") {
            Some(Value::Object(tasks)) => tasks,
            _ => EMPTY.get_or_init(Map::new),
        }
    }

    pub fn transitions(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match self.document.get("transitions") {
            Some(Value::Object(transitions)) => transitions,
            _ => EMPTY.get_or_init(Map::new),
        }
    }

    pub fn input_schema(&self) -> Option<&Value> {
        self.document.get("inputSchema").filter(|s| !s.is_null())
    }

    /// Everything that keeps the task graph from running, in a stable order. Empty when a job
    /// can start from it.
    pub fn graph_problems(&self) -> Vec<Problem> {
        graph::problems(self.tasks(), self.transitions())
    }
}

/// A workflow ready to start jobs from: its `inputSchema` compiled and its task graph checked
/// once, so that each start does neither again.
pub struct CompiledWorkflow {
    document: WorkflowDocument,
    /// `None`: no schema. `Err`: a schema that does not compile (checked when stored, so only
    /// a document written by another version can have one).
    input_schema: Result<Option<jsonschema::Validator>, String>,
    problems: Vec<Problem>,
    /// The task graph of every job started from this workflow: it depends on the workflow
    /// alone, so it is built once and shared.
    job_graph: TaskGraph,
}

impl std::fmt::Debug for CompiledWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledWorkflow")
            .field("name", &self.document.name())
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

impl CompiledWorkflow {
    pub fn compile(document: WorkflowDocument) -> Self {
        let input_schema = match document.input_schema() {
            None => Ok(None),
            Some(schema) => compile_input_schema(schema)
                .map(Some)
                .map_err(|error| error.to_string()),
        };
        let problems = document.graph_problems();
        CompiledWorkflow {
            job_graph: TaskGraph::build(document.tasks(), document.transitions()),
            document,
            input_schema,
            problems,
        }
    }

    /// An estimate of the memory this compiled workflow holds: its document, its job graph
    /// and its input schema; what the cache of compiled workflows weighs it by.
    pub fn weight(&self) -> usize {
        use super::json::{heap_size, map_heap_size};
        // A compiled schema holds about as much again as the schema's JSON.
        let schema = self.document.input_schema().map_or(0, |s| 2 * heap_size(s));
        map_heap_size(self.document.document()) + self.job_graph.heap_size() + schema
    }

    /// The task graph of every job started from this workflow.
    pub fn job_graph(&self) -> &TaskGraph {
        &self.job_graph
    }

    pub fn document(&self) -> &WorkflowDocument {
        &self.document
    }

    /// What keeps the task graph from running; empty when a job can start from it.
    pub fn graph_problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Checks job variables (a JSON object) against `inputSchema`, one violation per problem,
    /// each named by its path under `path` (`options.variables.deviceName`).
    pub fn check_variables(&self, variables: &Value, path: &str) -> Vec<FieldViolation> {
        let validator = match &self.input_schema {
            Ok(None) => return Vec::new(),
            Ok(Some(validator)) => validator,
            Err(error) => {
                return vec![FieldViolation::new(
                    path,
                    format!("the workflow's inputSchema is not a valid JSON Schema: {error}"),
                )]
            }
        };
        validator
            .iter_errors(variables)
            .map(|error| {
                let mut field = path.to_owned();
                for segment in error.instance_path().iter() {
                    match segment {
                        jsonschema::paths::LocationSegment::Property(key) => {
                            field = join(&field, &key)
                        }
                        jsonschema::paths::LocationSegment::Index(i) => field = index(&field, i),
                    }
                }
                if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind()
                {
                    if let Some(property) = property.as_str() {
                        field = join(&field, property);
                    }
                }
                FieldViolation::new(field, error.to_string())
            })
            .collect()
    }
}

/// Compiles an `inputSchema` the way Itential reads it: without `$schema`, as JSON Schema
/// draft-07 (real exports use draft-07 forms such as `items: [...]`), and with `format` as an
/// annotation, not an assertion (exports carry examples like `10%2E10%2E10%2E10` for `ipv4`).
fn compile_input_schema(
    schema: &Value,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    let mut options = jsonschema::options().should_validate_formats(false);
    if schema.get("$schema").is_none() {
        options = options.with_draft(jsonschema::Draft::Draft7);
    }
    options.build(schema)
}

fn str_field<'a>(document: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    document.get(key).and_then(Value::as_str)
}

/// Reports `key` when present, not null, and not of the expected kind.
fn expect_optional(
    document: &Map<String, Value>,
    path: &str,
    key: &str,
    violations: &mut Violations,
    expected: &str,
    ok: impl Fn(&Value) -> bool,
) {
    if let Some(value) = document.get(key).filter(|v| !v.is_null()) {
        if !ok(value) {
            violations.push(
                join(path, key),
                format!("must be {expected}, not {}", type_name(value)),
            );
        }
    }
}

fn parse_groups(
    document: &Map<String, Value>,
    path: &str,
    violations: &mut Violations,
) -> Vec<String> {
    let groups_path = join(path, "groups");
    match document.get("groups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut groups = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(id) if is_object_id(id) => groups.push(id.to_owned()),
                    _ => violations.push(
                        index(&groups_path, i),
                        "must be a group id of 24 lowercase hex characters",
                    ),
                }
            }
            groups
        }
        Some(other) => {
            violations.push(
                groups_path,
                format!("must be an array of group ids, not {}", type_name(other)),
            );
            Vec::new()
        }
    }
}

fn check_tasks(document: &Map<String, Value>, path: &str, violations: &mut Violations) {
    let tasks_path = join(path, "tasks");
    match document.get("tasks") {
        None => violations.push(tasks_path, "is required"),
        Some(Value::Object(tasks)) => {
            for (id, task) in tasks {
                if !task.is_object() {
                    violations.push(
                        join(&tasks_path, id),
                        format!("must be a task object, not {}", type_name(task)),
                    );
                }
            }
        }
        Some(other) => violations.push(
            tasks_path,
            format!("must be an object of tasks by id, not {}", type_name(other)),
        ),
    }
}

fn check_transitions(document: &Map<String, Value>, path: &str, violations: &mut Violations) {
    let transitions_path = join(path, "transitions");
    let transitions = match document.get("transitions") {
        None => return violations.push(transitions_path, "is required"),
        Some(Value::Object(transitions)) => transitions,
        Some(other) => {
            return violations.push(
                transitions_path,
                format!(
                    "must be an object of transitions by source task id, not {}",
                    type_name(other)
                ),
            )
        }
    };
    for (source, targets) in transitions {
        let source_path = join(&transitions_path, source);
        let Value::Object(targets) = targets else {
            violations.push(
                source_path,
                format!(
                    "must be an object of transitions by target task id, not {}",
                    type_name(targets)
                ),
            );
            continue;
        };
        for (target, transition) in targets {
            let target_path = join(&source_path, target);
            let Value::Object(transition) = transition else {
                violations.push(target_path, "must be an object with state and type");
                continue;
            };
            for (key, allowed) in [
                ("state", &TRANSITION_STATES[..]),
                ("type", &TRANSITION_TYPES[..]),
            ] {
                match transition.get(key).and_then(Value::as_str) {
                    Some(value) if allowed.contains(&value) => {}
                    _ => violations.push(
                        join(&target_path, key),
                        format!("must be one of {}", allowed.join(", ")),
                    ),
                }
            }
        }
    }
}

fn check_decorators(document: &Map<String, Value>, path: &str, violations: &mut Violations) {
    let decorators_path = join(path, "decorators");
    match document.get("decorators") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let is_decorator = item.as_object().is_some_and(|d| {
                    d.get("type").is_some_and(Value::is_string)
                        && d.get("pointer").is_some_and(Value::is_string)
                });
                if !is_decorator {
                    violations.push(
                        index(&decorators_path, i),
                        "must be an object with string fields type and pointer",
                    );
                }
            }
        }
        Some(other) => violations.push(
            decorators_path,
            format!("must be an array, not {}", type_name(other)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "name": "Minimal",
            "type": "automation",
            "tasks": {
                "workflow_start": {"name": "workflow_start", "groups": []},
                "a1": {"name": "query", "app": "WorkFlowEngine", "variables": {}},
                "workflow_end": {"name": "workflow_end", "groups": []}
            },
            "transitions": {
                "workflow_start": {"a1": {"state": "success", "type": "standard"}},
                "a1": {"workflow_end": {"state": "success", "type": "standard"}},
                "workflow_end": {}
            },
            "inputSchema": {
                "type": "object",
                "properties": {"device": {"type": "string"}},
                "required": ["device"]
            },
            "customField": {"kept": true}
        })
    }

    fn violations(err: Error) -> Vec<String> {
        match err {
            Error::InvalidArgument { violations } => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_workflow_parses_and_keeps_unknown_fields() {
        let parsed = WorkflowDocument::parse(minimal(), "workflow").unwrap();
        assert_eq!(parsed.name(), "Minimal");
        assert_eq!(parsed.document()["customField"], json!({"kept": true}));
        assert!(parsed.graph_problems().is_empty());
    }

    #[test]
    fn parse_names_every_bad_field() {
        let mut doc = minimal();
        doc["name"] = json!(7);
        doc["groups"] = json!(["nope"]);
        doc["font_size"] = json!("big");
        doc["transitions"]["a1"]["workflow_end"]["state"] = json!("sideways");
        let fields = violations(WorkflowDocument::parse(doc, "workflows[2]").unwrap_err());
        assert_eq!(
            fields,
            [
                "workflows[2].name",
                "workflows[2].groups[0]",
                "workflows[2].transitions.a1.workflow_end.state",
                "workflows[2].font_size",
            ]
        );
    }

    #[test]
    fn a_document_that_is_not_an_object_is_rejected() {
        assert_eq!(
            violations(WorkflowDocument::parse(json!([1]), "workflow").unwrap_err()),
            ["workflow"]
        );
    }

    #[test]
    fn an_invalid_input_schema_is_rejected() {
        let mut doc = minimal();
        doc["inputSchema"] = json!({"type": "no-such-type"});
        assert_eq!(
            violations(WorkflowDocument::parse(doc, "workflow").unwrap_err()),
            ["workflow.inputSchema"]
        );
    }

    #[test]
    fn variables_are_checked_against_the_input_schema_by_path() {
        let parsed =
            CompiledWorkflow::compile(WorkflowDocument::parse(minimal(), "workflow").unwrap());
        let missing = parsed.check_variables(&json!({}), "options.variables");
        assert_eq!(missing[0].field, "options.variables.device");
        let wrong = parsed.check_variables(&json!({"device": 5}), "options.variables");
        assert_eq!(wrong[0].field, "options.variables.device");
        assert!(parsed
            .check_variables(&json!({"device": "r1"}), "options.variables")
            .is_empty());
    }
}
