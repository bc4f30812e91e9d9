//! Searches in the style of the Itential REST routes: `equals[field]`, `in[field]`,
//! `starts-with[field]`, `gt[field]`, `lt[field]`, `limit`, `skip`, `sort`, `order` for jobs;
//! `equals[name]`, `starts-with[name]`, `limit`, `skip` for workflows.
//!
//! Parameters are parsed once here; an unknown parameter or a bad value is INVALID_ARGUMENT
//! naming the parameter, never ignored.

use chrono::{DateTime, Utc};

use super::error::{Error, Violations};
use super::graph::TaskStatus;
use super::ids::is_object_id;
use super::job::JobStatus;
use super::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use super::storable;
use super::task::{TaskKind, TaskRef};

/// Fields of a job a search can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobField {
    Id,
    Name,
    Status,
    Type,
    Description,
    CreatedBy,
    Created,
    LastUpdated,
}

impl JobField {
    const ALL: [(&'static str, JobField); 8] = [
        ("_id", JobField::Id),
        ("name", JobField::Name),
        ("status", JobField::Status),
        ("type", JobField::Type),
        ("description", JobField::Description),
        ("created_by", JobField::CreatedBy),
        ("created", JobField::Created),
        ("last_updated", JobField::LastUpdated),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn is_time(self) -> bool {
        matches!(self, JobField::Created | JobField::LastUpdated)
    }

    fn names(time: bool) -> String {
        Self::ALL
            .iter()
            .filter(|(_, f)| f.is_time() == time)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Equals(JobField, String),
    In(JobField, Vec<String>),
    StartsWith(JobField, String),
    After(JobField, DateTime<Utc>),
    Before(JobField, DateTime<Utc>),
}

/// A search of jobs: `equals[field]`, `in[field]`, `starts-with[field]`, `gt[time]`,
/// `lt[time]`, `limit`, `skip`, `sort`, `order`.
pub type JobSearch = Search<JobField, Condition>;

impl Searched for JobField {
    type Condition = Condition;
    const DEFAULT_SORT: JobField = JobField::Created;

    fn sort_key(value: &str) -> Result<Self, String> {
        JobField::parse(value).ok_or_else(|| {
            format!(
                "must be one of {}, {}",
                JobField::names(false),
                JobField::names(true)
            )
        })
    }

    fn condition(name: &str, value: &str) -> Result<Condition, String> {
        parse_condition(name, value)
    }
}

/// A REST list's query: conditions on its fields, a sort and a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Search<F, C> {
    pub conditions: Vec<C>,
    pub sort: F,
    pub descending: bool,
    pub limit: i64,
    pub skip: i64,
}

/// The fields a list route searches by: what sorts and what conditions they take.
pub trait Searched: Sized {
    type Condition;
    const DEFAULT_SORT: Self;
    /// The field `sort` names, or what `sort` must be.
    fn sort_key(value: &str) -> Result<Self, String>;
    /// The condition a parameter such as `equals[name]` gives, or what is wrong with it.
    fn condition(name: &str, value: &str) -> Result<Self::Condition, String>;
}

impl<F: Searched> Default for Search<F, F::Condition> {
    fn default() -> Self {
        Search {
            conditions: Vec::new(),
            sort: F::DEFAULT_SORT,
            descending: true,
            limit: DEFAULT_PAGE_SIZE,
            skip: 0,
        }
    }
}

impl<F: Searched> Search<F, F::Condition> {
    /// Parses query parameters (name, value), in order.
    pub fn parse(params: &[(String, String)]) -> Result<Self, Error> {
        let mut search = Self::default();
        let mut paging = Paging::default();
        let mut violations = Violations::default();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in params {
            if matches!(name.as_str(), "sort" | "order") && !seen.insert(name.as_str()) {
                violations.push(name, "is given more than once");
                continue;
            }
            if paging.take(name, value, &mut violations) {
                continue;
            }
            match name.as_str() {
                "sort" => match F::sort_key(value) {
                    Ok(field) => search.sort = field,
                    Err(description) => violations.push(name, description),
                },
                "order" => match value.as_str() {
                    "asc" | "1" => search.descending = false,
                    "desc" | "-1" => search.descending = true,
                    _ => violations.push(name, "must be asc, desc, 1 or -1"),
                },
                _ => match F::condition(name, value) {
                    Ok(condition) => search.conditions.push(condition),
                    Err(description) => violations.push(name, description),
                },
            }
        }
        (search.limit, search.skip) = (paging.limit, paging.skip);
        violations.into_result(search)
    }
}

/// A search of workflows by name: `equals[name]`, `starts-with[name]`, `limit`, `skip`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSearch {
    pub name_equals: Option<String>,
    pub name_prefix: Option<String>,
    pub limit: i64,
    pub skip: i64,
}

impl WorkflowSearch {
    /// Parses query parameters (name, value), in order.
    pub fn parse(params: &[(String, String)]) -> Result<Self, Error> {
        let (mut name_equals, mut name_prefix) = (None, None);
        let mut paging = Paging::default();
        let mut violations = Violations::default();
        for (name, value) in params {
            if paging.take(name, value, &mut violations) {
                continue;
            }
            match name.as_str() {
                "equals[name]" | "starts-with[name]" => match storable::check_text(value) {
                    Err(description) => violations.push(name, description),
                    Ok(()) if name == "equals[name]" => name_equals = Some(value.clone()),
                    Ok(()) => name_prefix = Some(value.clone()),
                },
                _ => violations.push(
                    name,
                    "is not a parameter here: use equals[name], starts-with[name], limit or skip",
                ),
            }
        }
        violations.into_result(WorkflowSearch {
            name_equals,
            name_prefix,
            limit: paging.limit,
            skip: paging.skip,
        })
    }
}

/// Fields of a task a search can name (`GET /operations-manager/tasks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskField {
    /// `<jobId>:<taskId>`.
    Id,
    /// The job's id.
    Job,
    Status,
    /// Who runs it: `manual`, `automatic`, `operation`.
    Type,
    /// The owner's account id; an empty value matches tasks without an owner.
    Owner,
    /// The task's method (`ViewData`, `getDevice`).
    Name,
    App,
    StartTime,
}

impl TaskField {
    const ALL: [(&'static str, TaskField); 8] = [
        ("_id", TaskField::Id),
        ("job", TaskField::Job),
        ("status", TaskField::Status),
        ("type", TaskField::Type),
        ("owner", TaskField::Owner),
        ("name", TaskField::Name),
        ("app", TaskField::App),
        ("start_time", TaskField::StartTime),
    ];

    /// Fields a task search can sort by.
    pub const SORTABLE: [&'static str; 5] = ["start_time", "_id", "status", "name", "app"];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    fn names() -> String {
        Self::ALL
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One condition of a task search, its values parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCondition {
    Ids(Vec<TaskRef>),
    Jobs(Vec<String>),
    Statuses(Vec<TaskStatus>),
    Kinds(Vec<TaskKind>),
    /// Owners' account ids; `""` stands for no owner.
    Owners(Vec<String>),
    /// `name` or `app` is one of these.
    Text(TaskField, Vec<String>),
    /// `name`, `app` or `owner` starts with this.
    Prefix(TaskField, String),
    StartedAfter(DateTime<Utc>),
    StartedBefore(DateTime<Utc>),
}

/// A search of tasks across the jobs the caller sees: `equals[field]`, `in[field]`,
/// `starts-with[field]`, `gt[start_time]`, `lt[start_time]`, `limit`, `skip`, `sort`, `order`.
pub type TaskSearch = Search<TaskField, TaskCondition>;

impl Searched for TaskField {
    type Condition = TaskCondition;
    const DEFAULT_SORT: TaskField = TaskField::StartTime;

    fn sort_key(value: &str) -> Result<Self, String> {
        TaskField::parse(value)
            .filter(|_| TaskField::SORTABLE.contains(&value))
            .ok_or_else(|| format!("must be one of {}", TaskField::SORTABLE.join(", ")))
    }

    fn condition(name: &str, value: &str) -> Result<TaskCondition, String> {
        parse_task_condition(name, value)
    }
}

fn parse_task_condition(name: &str, value: &str) -> Result<TaskCondition, String> {
    let Some((operator, field_name)) = name.strip_suffix(']').and_then(|n| n.split_once('['))
    else {
        return Err(
            "is not a search parameter: use equals[field], in[field], starts-with[field], \
             gt[start_time], lt[start_time], limit, skip, sort or order"
                .to_owned(),
        );
    };
    let Some(field) = TaskField::parse(field_name) else {
        return Err(format!(
            "{field_name} is not a field tasks can be searched by: use {}",
            TaskField::names()
        ));
    };
    storable::check_text(value)?;
    match operator {
        "equals" | "in" => {
            let values: Vec<&str> = match operator {
                "equals" => vec![value],
                _ => value.split(',').collect(),
            };
            task_values(field, &values)
        }
        "starts-with" => match field {
            TaskField::Name | TaskField::App | TaskField::Owner => {
                Ok(TaskCondition::Prefix(field, value.to_owned()))
            }
            _ => Err("starts-with applies to name, app and owner".to_owned()),
        },
        "gt" | "lt" => {
            if field != TaskField::StartTime {
                return Err(format!("{operator} applies to start_time only"));
            }
            let time = parse_time(value)?;
            Ok(match operator {
                "gt" => TaskCondition::StartedAfter(time),
                _ => TaskCondition::StartedBefore(time),
            })
        }
        other => Err(format!(
            "{other} is not a search operator: use equals, in, starts-with, gt or lt"
        )),
    }
}

/// The values of an `equals` or `in` condition on `field`, each checked.
fn task_values(field: TaskField, values: &[&str]) -> Result<TaskCondition, String> {
    let owned = || values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    Ok(match field {
        TaskField::Id => {
            let mut violations = Violations::default();
            let ids = values
                .iter()
                .filter_map(|v| TaskRef::parse_into(v, "", &mut violations))
                .collect();
            if !violations.is_empty() {
                return Err(
                    "must be task ids: <jobId>:<taskId>, a job id of 24 lowercase hex \
                     characters, a colon and the task's key"
                        .to_owned(),
                );
            }
            TaskCondition::Ids(ids)
        }
        TaskField::Job => {
            if let Some(bad) = values.iter().find(|v| !is_object_id(v)) {
                return Err(format!(
                    "{bad:?} is not a job id: job ids are 24 lowercase hex characters"
                ));
            }
            TaskCondition::Jobs(owned())
        }
        TaskField::Status => {
            let mut statuses = Vec::with_capacity(values.len());
            for value in values {
                match serde_json::from_value::<TaskStatus>(serde_json::Value::String(
                    (*value).to_owned(),
                )) {
                    Ok(status) => statuses.push(status),
                    Err(_) => {
                        return Err(format!(
                            "{value} is not a task status: use incomplete, scheduled, running, \
                             complete, error or canceled"
                        ))
                    }
                }
            }
            TaskCondition::Statuses(statuses)
        }
        TaskField::Type => {
            let mut kinds = Vec::with_capacity(values.len());
            for value in values {
                match TaskKind::parse(value) {
                    Some(kind) => kinds.push(kind),
                    None => {
                        return Err(format!(
                            "{value} is not a task type: use {}",
                            TaskKind::NAMES.join(", ")
                        ))
                    }
                }
            }
            TaskCondition::Kinds(kinds)
        }
        TaskField::Owner => TaskCondition::Owners(owned()),
        TaskField::Name | TaskField::App => TaskCondition::Text(field, owned()),
        TaskField::StartTime => {
            return Err("equals and in do not apply to start_time: use gt or lt".to_owned())
        }
    })
}

/// `limit` and `skip` of a REST page, read the same way by every list route.
struct Paging {
    limit: i64,
    skip: i64,
    seen_limit: bool,
    seen_skip: bool,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            limit: DEFAULT_PAGE_SIZE,
            skip: 0,
            seen_limit: false,
            seen_skip: false,
        }
    }
}

impl Paging {
    /// Takes the parameter if it is `limit` or `skip` (each at most once), recording a bad
    /// value; false for any other parameter.
    fn take(&mut self, name: &str, value: &str, violations: &mut Violations) -> bool {
        let seen = match name {
            "limit" => &mut self.seen_limit,
            "skip" => &mut self.seen_skip,
            _ => return false,
        };
        if std::mem::replace(seen, true) {
            violations.push(name, "is given more than once");
            return true;
        }
        match (name, value.parse::<i64>()) {
            ("limit", Ok(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => self.limit = n,
            ("limit", _) => violations.push(
                name,
                format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
            ),
            (_, Ok(n)) if n >= 0 => self.skip = n,
            _ => violations.push(name, "must be a whole number, 0 or more"),
        }
        true
    }
}

fn parse_condition(name: &str, value: &str) -> Result<Condition, String> {
    let Some((operator, field)) = name.strip_suffix(']').and_then(|n| n.split_once('[')) else {
        return Err(
            "is not a search parameter: use equals[field], in[field], starts-with[field], gt[field], \
             lt[field], limit, skip, sort or order"
                .to_owned(),
        );
    };
    let Some(field) = JobField::parse(field) else {
        return Err(format!(
            "{field} is not a field jobs can be searched by: use {}, {}",
            JobField::names(false),
            JobField::names(true)
        ));
    };
    let text_only = || -> Result<(), String> {
        if field.is_time() {
            Err(format!(
                "{operator} applies to {}; use gt or lt for times",
                JobField::names(false)
            ))
        } else {
            Ok(())
        }
    };
    let condition = match operator {
        "equals" => {
            text_only()?;
            storable::check_text(value)?;
            check_status(field, value)?;
            Condition::Equals(field, value.to_owned())
        }
        "in" => {
            text_only()?;
            storable::check_text(value)?;
            let values: Vec<String> = value.split(',').map(str::to_owned).collect();
            for value in &values {
                check_status(field, value)?;
            }
            Condition::In(field, values)
        }
        "starts-with" => {
            text_only()?;
            storable::check_text(value)?;
            Condition::StartsWith(field, value.to_owned())
        }
        "gt" | "lt" => {
            if !field.is_time() {
                return Err(format!("{operator} applies to {}", JobField::names(true)));
            }
            let time = parse_time(value)?;
            if operator == "gt" {
                Condition::After(field, time)
            } else {
                Condition::Before(field, time)
            }
        }
        other => {
            return Err(format!(
                "{other} is not a search operator: use equals, in, starts-with, gt or lt"
            ))
        }
    };
    Ok(condition)
}

fn check_status(field: JobField, value: &str) -> Result<(), String> {
    if field == JobField::Status
        && serde_json::from_value::<JobStatus>(serde_json::Value::String(value.to_owned())).is_err()
    {
        return Err(format!(
            "{value} is not a job status: use running, complete, error, canceled, paused or incomplete"
        ));
    }
    Ok(())
}

/// An RFC 3339 time or epoch milliseconds, within the times the service stores.
fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    let time = match value.parse::<i64>() {
        Ok(millis) => DateTime::from_timestamp_millis(millis),
        Err(_) => Some(
            DateTime::parse_from_rfc3339(value)
                .map_err(|_| "must be an RFC 3339 time or epoch milliseconds".to_owned())?
                .with_timezone(&Utc),
        ),
    };
    time.ok_or(storable::TIME_RANGE_DESCRIPTION)
        .and_then(storable::check_time)
        .map_err(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::InvalidArgument { violations } => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn itential_parameters_parse() {
        let search = JobSearch::parse(&params(&[
            ("equals[status]", "running"),
            ("in[name]", "A,B"),
            ("starts-with[description]", "nightly"),
            ("gt[created]", "2026-01-01T00:00:00Z"),
            ("lt[last_updated]", "1767225600000"),
            ("limit", "10"),
            ("skip", "20"),
            ("sort", "name"),
            ("order", "asc"),
        ]))
        .unwrap();
        assert_eq!(search.conditions.len(), 5);
        assert_eq!(
            search.conditions[1],
            Condition::In(JobField::Name, vec!["A".into(), "B".into()])
        );
        assert_eq!(
            (search.limit, search.skip, search.sort, search.descending),
            (10, 20, JobField::Name, false)
        );
    }

    #[test]
    fn unknown_parameters_and_bad_values_are_named() {
        let err = JobSearch::parse(&params(&[
            ("colour", "red"),
            ("equals[colour]", "red"),
            ("equals[status]", "runing"),
            ("gt[name]", "x"),
            ("lt[created]", "yesterday"),
            ("limit", "0"),
            ("skip", "-1"),
            ("order", "sideways"),
            ("sort", "colour"),
        ]))
        .unwrap_err();
        assert_eq!(
            fields(err),
            [
                "colour",
                "equals[colour]",
                "equals[status]",
                "gt[name]",
                "lt[created]",
                "limit",
                "skip",
                "order",
                "sort"
            ]
        );
    }

    #[test]
    fn values_the_database_cannot_take_are_named() {
        let err = JobSearch::parse(&params(&[
            ("equals[name]", "a\0b"),
            ("in[_id]", "x,\0"),
            ("starts-with[description]", "\0"),
            ("gt[created]", "-99999999999999999"),
            ("lt[created]", "-62135596800001"),
            ("gt[last_updated]", "253402300800000"),
            ("lt[last_updated]", "0000-12-31T23:59:59Z"),
        ]))
        .unwrap_err();
        assert_eq!(
            fields(err),
            [
                "equals[name]",
                "in[_id]",
                "starts-with[description]",
                "gt[created]",
                "lt[created]",
                "gt[last_updated]",
                "lt[last_updated]"
            ]
        );
        let edges = JobSearch::parse(&params(&[
            ("gt[created]", "-62135596800000"),
            ("lt[created]", "9999-12-31T23:59:59.999999Z"),
        ]))
        .unwrap();
        assert_eq!(edges.conditions.len(), 2);
    }

    #[test]
    fn single_parameters_may_not_repeat() {
        let err = JobSearch::parse(&params(&[("limit", "5"), ("limit", "6")])).unwrap_err();
        assert_eq!(fields(err), ["limit"]);
        let err = JobSearch::parse(&params(&[("order", "asc"), ("order", "asc")])).unwrap_err();
        assert_eq!(fields(err), ["order"]);
        let err = WorkflowSearch::parse(&params(&[("skip", "1"), ("skip", "2")])).unwrap_err();
        assert_eq!(fields(err), ["skip"]);
    }

    #[test]
    fn workflow_searches_take_a_name_and_a_page() {
        let search = WorkflowSearch::parse(&params(&[
            ("starts-with[name]", "Port"),
            ("limit", "5"),
            ("skip", "10"),
        ]))
        .unwrap();
        assert_eq!(search.name_prefix.as_deref(), Some("Port"));
        assert_eq!(
            (search.name_equals, search.limit, search.skip),
            (None, 5, 10)
        );
        let err = WorkflowSearch::parse(&params(&[
            ("equals[status]", "running"),
            ("equals[name]", "a\0b"),
            ("limit", "1001"),
            ("skip", "x"),
        ]))
        .unwrap_err();
        assert_eq!(
            fields(err),
            ["equals[status]", "equals[name]", "limit", "skip"]
        );
    }

    #[test]
    fn task_searches_take_typed_values() {
        let search = TaskSearch::parse(&params(&[
            ("equals[status]", "scheduled"),
            ("equals[type]", "manual"),
            (
                "in[job]",
                "0123456789abcdef01234567,aaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            ("equals[owner]", ""),
            ("equals[_id]", "0123456789abcdef01234567:6fa"),
            ("starts-with[name]", "View"),
            ("gt[start_time]", "2026-01-01T00:00:00Z"),
            ("sort", "name"),
            ("order", "asc"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(
            search.conditions,
            [
                TaskCondition::Statuses(vec![TaskStatus::Scheduled]),
                TaskCondition::Kinds(vec![TaskKind::Manual]),
                TaskCondition::Jobs(vec![
                    "0123456789abcdef01234567".into(),
                    "aaaaaaaaaaaaaaaaaaaaaaaa".into()
                ]),
                TaskCondition::Owners(vec![String::new()]),
                TaskCondition::Ids(vec![TaskRef::new("0123456789abcdef01234567", "6fa")]),
                TaskCondition::Prefix(TaskField::Name, "View".into()),
                TaskCondition::StartedAfter("2026-01-01T00:00:00Z".parse().unwrap()),
            ]
        );
        assert_eq!(
            (search.sort, search.descending, search.limit),
            (TaskField::Name, false, 5)
        );
    }

    #[test]
    fn bad_task_search_parameters_are_named() {
        let err = TaskSearch::parse(&params(&[
            ("equals[status]", "waiting"),
            ("equals[type]", "human"),
            ("equals[job]", "nope"),
            ("equals[_id]", "6fa"),
            ("equals[colour]", "red"),
            ("starts-with[status]", "sch"),
            ("gt[name]", "a"),
            ("equals[start_time]", "0"),
            ("equals[owner]", "a\0"),
            ("sort", "owner"),
            ("limit", "1001"),
            ("page", "2"),
        ]))
        .unwrap_err();
        assert_eq!(
            fields(err),
            [
                "equals[status]",
                "equals[type]",
                "equals[job]",
                "equals[_id]",
                "equals[colour]",
                "starts-with[status]",
                "gt[name]",
                "equals[start_time]",
                "equals[owner]",
                "sort",
                "limit",
                "page"
            ]
        );
    }
}
