//! StartJob requests: what either front door fills in, and the request that passed parsing,
//! which a job is started from.

use serde_json::{Map, Value};

use super::error::{Error, Violations};
use super::ids::is_object_id;
use super::json::{index, reject_nul_in};

/// Options of a new job, parsed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobOptions {
    pub description: Option<String>,
    pub job_type: Option<String>,
    pub variables: Map<String, Value>,
    /// `None`: the workflow's groups.
    pub groups: Option<Vec<String>>,
    /// Option names the service does not know, which the REST request schema allows: not
    /// stored, and reported in the job's `warnings`.
    pub ignored: Vec<String>,
}

/// A StartJob request as it arrives, before parsing: what either front door can fill.
#[derive(Debug, Clone, Default)]
pub struct RawStartJob {
    pub workflow: String,
    pub options: Option<RawJobOptions>,
}

#[derive(Debug, Clone, Default)]
pub struct RawJobOptions {
    pub description: Option<String>,
    pub job_type: Option<String>,
    pub variables: Option<Map<String, Value>>,
    pub groups: Option<Vec<String>>,
    /// Names of options the service does not know (the gateway accepts them).
    pub ignored: Vec<String>,
}

/// A StartJob request that passed parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct StartJob {
    pub workflow: String,
    pub options: JobOptions,
}

impl StartJob {
    pub fn parse(raw: RawStartJob) -> Result<Self, Error> {
        let mut violations = Violations::default();
        if raw.workflow.is_empty() {
            violations.push("workflow", "is required");
        } else if raw.workflow.contains('\0') {
            violations.push("workflow", "must not contain the character U+0000");
        }
        let Some(options) = raw.options else {
            violations.push("options", "is required");
            return Err(violations.into_result(()).unwrap_err());
        };
        for (field, value) in [
            ("options.description", &options.description),
            ("options.type", &options.job_type),
        ] {
            if value.as_deref().is_some_and(|s| s.contains('\0')) {
                violations.push(field, "must not contain the character U+0000");
            }
        }
        for key in &options.ignored {
            if key.contains('\0') {
                violations.push(
                    format!("options.{key}"),
                    "must not contain the character U+0000",
                );
            }
        }
        if options.job_type.as_deref() == Some("") {
            violations.push("options.type", "must not be empty when given");
        }
        let variables = options.variables.unwrap_or_default();
        reject_nul_in(&variables, "options.variables", &mut violations);
        if let Some(groups) = &options.groups {
            for (i, group) in groups.iter().enumerate() {
                if !is_object_id(group) {
                    violations.push(
                        index("options.groups", i),
                        "must be a group id of 24 lowercase hex characters",
                    );
                }
            }
        }
        violations.into_result(StartJob {
            workflow: raw.workflow,
            options: JobOptions {
                description: options.description,
                job_type: options.job_type,
                variables,
                groups: options.groups,
                ignored: options.ignored,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_job_parse_names_each_bad_field() {
        let err = StartJob::parse(RawStartJob {
            workflow: String::new(),
            options: Some(RawJobOptions {
                groups: Some(vec!["b0bc20ec3a3e5e90bac881e7".into(), "nope".into()]),
                job_type: Some(String::new()),
                ..RawJobOptions::default()
            }),
        })
        .unwrap_err();
        let Error::InvalidArgument { violations } = err else {
            panic!()
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["workflow", "options.type", "options.groups[1]"]);
    }

    #[test]
    fn missing_options_are_named() {
        let err = StartJob::parse(RawStartJob {
            workflow: "w".into(),
            options: None,
        })
        .unwrap_err();
        let Error::InvalidArgument { violations } = err else {
            panic!()
        };
        assert_eq!(violations[0].field, "options");
    }
}
