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
    let mut reader = Reader::default();
    let mut out = Vec::new();
    for h in history {
        out.extend(reader.row(h).into_iter().map(|event| Entry {
            seq: h.seq,
            at: h.at,
            event,
        }));
    }
    out
}

/// What reading a history in order remembers: timer and activity names by
/// id (for later rows that name only the id) and the current state.
#[derive(Default)]
struct Reader {
    timers: HashMap<String, String>,
    activities: HashMap<String, String>,
    state: Option<String>,
}

fn unreadable(row_kind: impl Into<String>, e: impl ToString) -> Event {
    Event::Unreadable {
        row_kind: row_kind.into(),
        error: e.to_string(),
    }
}

impl Reader {
    /// The events of one history row.
    fn row(&mut self, h: &HistoryRow) -> Vec<Event> {
        let p: Value = match serde_json::from_str(&h.payload) {
            Ok(p) => p,
            Err(e) => return vec![unreadable(&h.kind, e)],
        };
        match h.kind.as_str() {
            "activity_attempt_failed" => vec![match serde_json::from_value::<AttemptRecord>(p) {
                Ok(a) => Event::AttemptFailed {
                    id: a.activity_id,
                    name: a.name,
                    attempt: a.attempt,
                    error: a.error,
                    next_attempt_at: Some(a.next_attempt_at.to_rfc3339()),
                },
                Err(e) => unreadable(&h.kind, e),
            }],
            "operator_action" => {
                let mut detail = p.clone();
                if let Some(m) = detail.as_object_mut() {
                    for k in ["action", "operator", "reason"] {
                        m.remove(k);
                    }
                }
                vec![Event::OperatorAction {
                    action: text(&p["action"]),
                    operator: text(&p["operator"]),
                    reason: text(&p["reason"]),
                    detail,
                }]
            }
            "step_failed" => {
                let mut out = Vec::new();
                if let Ok(input) = serde_json::from_value::<Input>(p["input"].clone()) {
                    out.push(input_event(&input, &self.timers, &self.activities));
                }
                out.push(Event::StepFailed {
                    error: text(&p["error"]),
                });
                out
            }
            _ => self.step(h, &p),
        }
    }

    /// The events of a step's row: its input, rule decisions, a no-op's
    /// note, the state change and the effects.
    fn step(&mut self, h: &HistoryRow, p: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        out.push(match serde_json::from_value::<Input>(p["input"].clone()) {
            Ok(input) => input_event(&input, &self.timers, &self.activities),
            Err(e) => unreadable(&h.kind, e),
        });
        if let Ok(decisions) = serde_json::from_value::<Vec<Decision>>(p["decisions"].clone()) {
            out.extend(decisions.into_iter().map(|d| Event::Decision {
                origin: d.origin.to_string(),
                expr: d.expr.to_string(),
                result: d.result,
            }));
        }
        if let Some(note) = p["ignored"].as_str() {
            out.push(Event::Ignored {
                note: note.to_string(),
            });
        }
        if let Some(to) = p["state"].as_str() {
            if self.state.as_deref() != Some(to) {
                out.push(Event::StateChanged {
                    from: self.state.clone(),
                    to: to.to_string(),
                });
                self.state = Some(to.to_string());
            }
        }
        match serde_json::from_value::<Vec<Effect>>(p["effects"].clone()) {
            Ok(effects) => {
                for e in effects {
                    out.push(self.effect(&h.instance_id, e));
                }
            }
            Err(e) => out.push(unreadable(format!("{} (effects)", h.kind), e)),
        }
        out
    }

    fn effect(&mut self, instance_id: &str, e: Effect) -> Event {
        match e {
            Effect::StartTimer { id, name, due_at } => {
                self.timers.insert(id.clone(), name.clone());
                Event::TimerSet { id, name, due_at }
            }
            Effect::CancelTimer { id } => Event::TimerCancelled {
                name: self.timers.get(&id).cloned(),
                id,
            },
            Effect::ScheduleActivity {
                id,
                name,
                args,
                retry,
            } => {
                self.activities.insert(id.clone(), name.clone());
                Event::ActivityScheduled {
                    idempotency_key: crate::store::idempotency_key(instance_id, &id),
                    id,
                    name,
                    args,
                    max_attempts: retry.max_attempts,
                }
            }
            Effect::StartChild {
                id, workflow, key, ..
            } => Event::ChildStarted { id, workflow, key },
            Effect::Complete { status, output, .. } => Event::Completed { status, output },
        }
    }
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
