//! An instance's stored history as typed events, in order, for operators
//! (issue 12, R8.4): start, each signal with its actor and payload, each
//! timer set, cancelled and fired by its name in the definition, each
//! activity scheduled, attempted, completed or failed (with the idempotency
//! key the gateway saw), each rule decision with its `file:line:col`, state
//! changes, children, completion and failed steps. Pure: it reads only the
//! rows it is given, so the console, the CLI and tests read the same thing.

use crate::interpreter::{Actor, Decision, Effect, Input};
use crate::store::HistoryRow;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// One thing that happened, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Started {
        input: Value,
    },
    Signal {
        name: String,
        actor: Actor,
        payload: Value,
    },
    TimerSet {
        id: String,
        name: String,
        due_at: DateTime<Utc>,
    },
    TimerCancelled {
        id: String,
        name: Option<String>,
    },
    TimerFired {
        id: String,
        name: Option<String>,
    },
    ActivityScheduled {
        id: String,
        name: String,
        idempotency_key: String,
        args: Value,
        max_attempts: u32,
    },
    /// An attempt that failed and will be tried again.
    AttemptFailed {
        id: String,
        name: String,
        attempt: i64,
        error: String,
        next_attempt_at: Option<String>,
    },
    ActivityCompleted {
        id: String,
        name: Option<String>,
        result: Value,
    },
    ActivityFailed {
        id: String,
        name: Option<String>,
        error: String,
    },
    ChildStarted {
        id: String,
        workflow: String,
        key: Option<String>,
    },
    ChildCompleted {
        id: String,
        status: Option<String>,
        output: Value,
        /// Why the child never started (its workflow refused the input).
        error: Option<String>,
    },
    Decision {
        origin: String,
        expr: String,
        result: bool,
    },
    StateChanged {
        from: Option<String>,
        to: String,
    },
    Completed {
        status: Option<String>,
        output: Value,
    },
    /// A rule failed inside a timer or activity handler: the instance
    /// waits for an operator.
    StepFailed {
        error: String,
    },
    /// The step recorded an input it had no use for (a late completion, a
    /// timer of a state already left).
    Ignored {
        note: String,
    },
    /// An operator's repair (`runtime::Repair`): retry_step,
    /// retry_activity, terminate or signal, with who and why.
    OperatorAction {
        action: String,
        operator: String,
        reason: String,
        detail: Value,
    },
    /// A row this version cannot read (kept, not hidden).
    Unreadable {
        row_kind: String,
        error: String,
    },
}

/// The payload of an `activity_attempt_failed` history row: a failed
/// attempt that will be retried (written by the runtime, read here).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    pub activity_id: String,
    pub name: String,
    pub attempt: i64,
    pub error: String,
    pub next_attempt_at: DateTime<Utc>,
}

/// The typed state of a stored instance (its input, variables, output,
/// pending timers and calls): what consoles read instead of the raw
/// snapshot JSON.
pub fn state_of(row: &crate::store::InstanceRow) -> Result<crate::interpreter::Instance, String> {
    serde_json::from_str(&row.snapshot).map_err(|e| {
        format!(
            "instance {}: its stored snapshot does not read: {e}",
            row.id
        )
    })
}

/// An event with the history row it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: Event,
}

/// The events of an instance's history rows (in `seq` order).
pub fn events(history: &[HistoryRow]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut timers: HashMap<String, String> = HashMap::new();
    let mut activities: HashMap<String, String> = HashMap::new();
    let mut state: Option<String> = None;
    for h in history {
        let mut push = |event: Event| {
            out.push(Entry {
                seq: h.seq,
                at: h.at,
                event,
            })
        };
        let p: Value = match serde_json::from_str(&h.payload) {
            Ok(p) => p,
            Err(e) => {
                push(Event::Unreadable {
                    row_kind: h.kind.clone(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        match h.kind.as_str() {
            "activity_attempt_failed" => {
                push(match serde_json::from_value::<AttemptRecord>(p) {
                    Ok(a) => Event::AttemptFailed {
                        id: a.activity_id,
                        name: a.name,
                        attempt: a.attempt,
                        error: a.error,
                        next_attempt_at: Some(a.next_attempt_at.to_rfc3339()),
                    },
                    Err(e) => Event::Unreadable {
                        row_kind: h.kind.clone(),
                        error: e.to_string(),
                    },
                });
                continue;
            }
            "operator_action" => {
                let mut detail = p.clone();
                if let Some(m) = detail.as_object_mut() {
                    for k in ["action", "operator", "reason"] {
                        m.remove(k);
                    }
                }
                push(Event::OperatorAction {
                    action: text(&p["action"]),
                    operator: text(&p["operator"]),
                    reason: text(&p["reason"]),
                    detail,
                });
                continue;
            }
            "step_failed" => {
                if let Ok(input) = serde_json::from_value::<Input>(p["input"].clone()) {
                    push(input_event(&input, &timers, &activities));
                }
                push(Event::StepFailed {
                    error: text(&p["error"]),
                });
                continue;
            }
            _ => {}
        }
        match serde_json::from_value::<Input>(p["input"].clone()) {
            Ok(input) => push(input_event(&input, &timers, &activities)),
            Err(e) => push(Event::Unreadable {
                row_kind: h.kind.clone(),
                error: e.to_string(),
            }),
        }
        if let Ok(decisions) = serde_json::from_value::<Vec<Decision>>(p["decisions"].clone()) {
            for d in decisions {
                push(Event::Decision {
                    origin: d.origin.to_string(),
                    expr: d.expr.to_string(),
                    result: d.result,
                });
            }
        }
        if let Some(note) = p["ignored"].as_str() {
            push(Event::Ignored {
                note: note.to_string(),
            });
        }
        if let Some(to) = p["state"].as_str() {
            if state.as_deref() != Some(to) {
                push(Event::StateChanged {
                    from: state.clone(),
                    to: to.to_string(),
                });
                state = Some(to.to_string());
            }
        }
        let effects: Vec<Effect> = match serde_json::from_value(p["effects"].clone()) {
            Ok(effects) => effects,
            Err(e) => {
                push(Event::Unreadable {
                    row_kind: format!("{} (effects)", h.kind),
                    error: e.to_string(),
                });
                Vec::new()
            }
        };
        for e in effects {
            match e {
                Effect::StartTimer { id, name, due_at } => {
                    timers.insert(id.clone(), name.clone());
                    push(Event::TimerSet { id, name, due_at });
                }
                Effect::CancelTimer { id } => push(Event::TimerCancelled {
                    name: timers.get(&id).cloned(),
                    id,
                }),
                Effect::ScheduleActivity {
                    id,
                    name,
                    args,
                    retry,
                } => {
                    activities.insert(id.clone(), name.clone());
                    push(Event::ActivityScheduled {
                        idempotency_key: crate::store::idempotency_key(&h.instance_id, &id),
                        id,
                        name,
                        args,
                        max_attempts: retry.max_attempts,
                    });
                }
                Effect::StartChild {
                    id, workflow, key, ..
                } => push(Event::ChildStarted { id, workflow, key }),
                Effect::Complete { status, output, .. } => {
                    push(Event::Completed { status, output })
                }
            }
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn input_event(
    input: &Input,
    timers: &HashMap<String, String>,
    activities: &HashMap<String, String>,
) -> Event {
    match input {
        Input::Started { input, .. } => Event::Started {
            input: input.clone(),
        },
        Input::Signal {
            name,
            payload,
            actor,
            ..
        } => Event::Signal {
            name: name.clone(),
            actor: actor.clone(),
            payload: payload.clone(),
        },
        Input::TimerFired { id, .. } => Event::TimerFired {
            name: timers.get(id).cloned(),
            id: id.clone(),
        },
        Input::ActivityCompleted { id, result, .. } => Event::ActivityCompleted {
            name: activities.get(id).cloned(),
            id: id.clone(),
            result: result.clone(),
        },
        Input::ActivityFailed { id, error, .. } => Event::ActivityFailed {
            name: activities.get(id).cloned(),
            id: id.clone(),
            error: error.clone(),
        },
        Input::ChildCompleted {
            id,
            status,
            output,
            error,
            ..
        } => Event::ChildCompleted {
            id: id.clone(),
            status: status.clone(),
            output: output.clone(),
            error: error.clone(),
        },
    }
}
