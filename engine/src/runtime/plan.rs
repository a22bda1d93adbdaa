//! What a step's effects require of a backend, described once.
//!
//! The interpreter's [`Effect`]s say what a workflow wants; [`plan`] turns
//! one step's transition into the [`Command`]s a backend carries out, with
//! every identity decided here and nowhere else: the activity's
//! idempotency key (`{instance}/{activity id}`), a child's id (its `key`,
//! or `{parent}/{call}`), the parent told when an instance completes (with
//! the call id it waits on), and the host's projection. The embedded
//! runtime turns the commands into store rows in the step's transaction
//! (`Runtime::commit_for`), the in-memory [`crate::testing::TestRuntime`]
//! executes them at once, and a Temporal worker maps each onto one
//! Temporal command (timer, activity, child workflow, completion).
//!
//! The payloads of the outbox rows are the typed structs below
//! ([`ChildStart`], [`ChildDone`], [`ProjectionNote`]), serialised as the
//! JSON the runtime always wrote, so rows queued by an older build still
//! read.

use crate::compile::program::{Program, RetryPolicy};
use crate::interpreter::{self, Effect, Input, Transition};
use crate::store::ParentRef;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Outbox kinds, one per outbox command.
pub const START_CHILD: &str = "start_child";
pub const CHILD_COMPLETED: &str = "child_completed";
pub const PROJECTION: &str = "projection";

/// The `status` of the [`Input::ChildCompleted`] a parent receives when
/// its child could not start (the child's workflow refused the input, or
/// is not defined); `error` says why.
pub const CHILD_REFUSED: &str = "refused";

/// One thing a backend must do after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetTimer {
        timer_id: String,
        name: String,
        due_at: DateTime<Utc>,
    },
    CancelTimer {
        timer_id: String,
    },
    RunActivity(ActivityTask),
    StartChild(ChildStart),
    /// The instance completed and has a parent waiting on the call.
    NotifyParent(ChildDone),
    /// Tell the host's projection the instance changed.
    Project(ProjectionNote),
}

/// An activity to run under its idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityTask {
    /// `{instance}/{activity id}`: the same for every attempt.
    pub key: String,
    pub activity_id: String,
    pub name: String,
    pub args: Value,
    pub retry: RetryPolicy,
}

/// The payload of a `start_child` outbox row: a child workflow to start
/// for the call `call` of its parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildStart {
    pub workflow: String,
    pub input: Value,
    /// The child's stable identity when the definition gives one.
    #[serde(default)]
    pub key: Option<String>,
    /// The parent's call id (`c3`).
    pub call: String,
}

impl ChildStart {
    /// The child's instance id: its key, or `{parent}/{call}`.
    pub fn child_id(&self, parent: &str) -> String {
        match &self.key {
            Some(k) => k.clone(),
            None => outbox_id(parent, &self.call),
        }
    }

    /// The parent reference the child keeps.
    pub fn parent(&self, parent: &str) -> ParentRef {
        ParentRef {
            instance_id: parent.to_string(),
            call: self.call.clone(),
        }
    }
}

/// The payload of a `child_completed` outbox row: what the parent's call
/// `parent.call` receives as [`Input::ChildCompleted`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildDone {
    #[serde(flatten)]
    pub parent: ParentRef,
    pub status: Option<String>,
    pub output: Value,
    /// Why the child never ran (see [`CHILD_REFUSED`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ChildDone {
    /// The parent's call fails: the child could not start.
    pub fn refused(parent: ParentRef, error: String) -> ChildDone {
        ChildDone {
            parent,
            status: Some(CHILD_REFUSED.into()),
            output: Value::Null,
            error: Some(error),
        }
    }

    /// The input the parent receives.
    pub fn input(&self, at: DateTime<Utc>) -> Input {
        Input::ChildCompleted {
            at,
            id: self.parent.call.clone(),
            status: self.status.clone(),
            output: self.output.clone(),
            error: self.error.clone(),
        }
    }
}

/// The payload of a `projection` outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionNote {
    pub projection: String,
}

/// The id of a parent's outbox row for its call `call` (and the id of the
/// child when the definition gives no key).
pub fn outbox_id(instance_id: &str, call: &str) -> String {
    format!("{instance_id}/{call}")
}

/// The commands of one step of `instance_id` (whose parent, if any, is
/// `parent`) on `program`, in the order of the transition's effects, the
/// projection last.
pub fn plan(
    instance_id: &str,
    parent: Option<&ParentRef>,
    program: &Program,
    t: &Transition,
) -> Vec<Command> {
    let mut out = Vec::with_capacity(t.effects.len() + 1);
    for e in &t.effects {
        out.push(match e {
            Effect::StartTimer { id, name, due_at } => Command::SetTimer {
                timer_id: id.clone(),
                name: name.clone(),
                due_at: *due_at,
            },
            Effect::CancelTimer { id } => Command::CancelTimer {
                timer_id: id.clone(),
            },
            Effect::ScheduleActivity {
                id,
                name,
                args,
                retry,
            } => Command::RunActivity(ActivityTask {
                key: crate::store::idempotency_key(instance_id, id),
                activity_id: id.clone(),
                name: name.clone(),
                args: args.clone(),
                retry: *retry,
            }),
            Effect::StartChild {
                id,
                workflow,
                input,
                key,
            } => Command::StartChild(ChildStart {
                workflow: workflow.clone(),
                input: input.clone(),
                key: key.clone(),
                call: id.clone(),
            }),
            Effect::Complete { status, output, .. } => match parent {
                Some(p) => Command::NotifyParent(ChildDone {
                    parent: p.clone(),
                    status: status.clone(),
                    output: output.clone(),
                    error: None,
                }),
                None => continue,
            },
        });
    }
    if let Some(projection) = &program.projection {
        out.push(Command::Project(ProjectionNote {
            projection: projection.clone(),
        }));
    }
    out
}

/// Why a child could not start, in words naming the refused fields.
pub fn refusal(e: &interpreter::Error) -> String {
    match e {
        interpreter::Error::InvalidInput(fields) | interpreter::Error::InvalidPayload(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect();
            format!("{e}: {}", fields.join("; "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_and_payloads_keep_their_json() {
        let s = ChildStart {
            workflow: "w".into(),
            input: Value::Null,
            key: None,
            call: "c3".into(),
        };
        assert_eq!(s.child_id("run-1"), "run-1/c3");
        let keyed = ChildStart {
            key: Some("W-1".into()),
            ..s.clone()
        };
        assert_eq!(keyed.child_id("run-1"), "W-1");
        // The JSON an older build wrote reads as the typed payloads.
        let old: ChildStart =
            serde_json::from_str(r#"{"workflow":"w","input":null,"key":null,"call":"c3"}"#)
                .unwrap();
        assert_eq!(old, s);
        let done: ChildDone = serde_json::from_str(
            r#"{"parent":"run-1","call":"c3","status":"ok","output":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(done.parent.instance_id, "run-1");
        assert_eq!(done.error, None);
        assert_eq!(
            serde_json::to_value(&done).unwrap(),
            serde_json::json!({"parent":"run-1","call":"c3","status":"ok","output":{"a":1}})
        );
        // A payload missing what it must carry is an error, not a default.
        assert!(
            serde_json::from_str::<ChildDone>(r#"{"call":"c3","status":null,"output":null}"#)
                .is_err()
        );
    }
}
