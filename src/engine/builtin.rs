//! The WorkFlowEngine tasks the service runs itself.

use std::time::Duration;

use serde_json::{Map, Value};

use super::variables::Scope;
use crate::domain::run::FinishState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Stub,
    NewVariable,
    Delay,
}

pub enum Outcome {
    Finished {
        finish_state: FinishState,
        outgoing: Map<String, Value>,
        job_writes: Vec<(String, Value)>,
        error: Option<Value>,
    },
    Wait {
        for_: Duration,
    },
}

impl Builtin {
    pub fn of(task: &Map<String, Value>) -> Option<Builtin> {
        if task.get("app").and_then(Value::as_str) != Some("WorkFlowEngine")
            || task.get("type").and_then(Value::as_str) == Some("manual")
        {
            return None;
        }
        match task.get("name").and_then(Value::as_str)? {
            "stub" => Some(Builtin::Stub),
            "newVariable" => Some(Builtin::NewVariable),
            "delay" => Some(Builtin::Delay),
            _ => None,
        }
    }
}

pub fn run(builtin: Builtin, incoming: &Map<String, Value>, _scope: &Scope) -> Outcome {
    match builtin {
        Builtin::Stub => Outcome::Finished {
            finish_state: FinishState::Success,
            outgoing: Map::new(),
            job_writes: Vec::new(),
            error: None,
        },
        Builtin::NewVariable => {
            let name = incoming
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let value = incoming.get("value").cloned().unwrap_or(Value::Null);
            let mut outgoing = Map::new();
            outgoing.insert("value".into(), value.clone());
            Outcome::Finished {
                finish_state: FinishState::Success,
                outgoing,
                job_writes: vec![(name.to_owned(), value)],
                error: None,
            }
        }
        Builtin::Delay => Outcome::Wait {
            for_: Duration::from_secs(incoming.get("time").and_then(Value::as_u64).unwrap_or(0)),
        },
    }
}

pub fn finish_delay(incoming: &Map<String, Value>) -> Outcome {
    let mut outgoing = Map::new();
    let ms = incoming.get("time").and_then(Value::as_u64).unwrap_or(0) * 1000;
    outgoing.insert("time_in_milliseconds".into(), ms.into());
    Outcome::Finished {
        finish_state: FinishState::Success,
        outgoing,
        job_writes: Vec::new(),
        error: None,
    }
}
