//! The pure half of the backend: what travels through Temporal (workflow
//! input, signal, activity task, result) and how the interpreter's effects
//! become Temporal commands. No SDK calls here, so all of it is tested
//! without a server.

use chrono::{DateTime, Utc};
use engine::Program;
use engine::compile::program::{DefinitionSource, RetryPolicy};
use engine::compile::schedule::{CatchUp, ScheduleSpec};
use engine::interpreter::{Actor, Effect, Instance, Status};
use engine::runtime::activity::ActivityCall;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The Temporal workflow type every definition runs as.
pub const WORKFLOW_TYPE: &str = "epi";
/// The one signal that carries a definition's signals.
pub const SIGNAL: &str = "event";
/// The operator's signal that retries a failed step ([`RetryArgs`]).
pub const RETRY_SIGNAL: &str = "epi.retry";
/// The activity type that runs any activity of the registry.
pub const ACTIVITY_TYPE: &str = "epi.activity";
/// The local activity that tells a projection hook about a step.
pub const PROJECT_TYPE: &str = "epi.project";
/// The local activity that finds the latest definition of a workflow
/// (children and scheduled starts, which the client does not start).
pub const DEFINITION_TYPE: &str = "epi.definition";

/// Search attributes (Keyword), created on the namespace by the operator
/// (`scripts/temporal.sh` on the dev server).
pub const SA_WORKFLOW: &str = "EpiWorkflow";
pub const SA_ENTERPRISE: &str = "EpiEnterprise";
pub const SA_DISTRICT: &str = "EpiDistrict";
pub const SA_PERSON: &str = "EpiPerson";
pub const SA_STATE: &str = "EpiState";
/// The instance's status as the embedded runtime's instance row has it:
/// `running`, `completed`, or `failed` while a step has failed (waiting for
/// an operator's retry): `EpiStatus = 'failed'` lists those.
pub const SA_STATUS: &str = "EpiStatus";

/// A definition as it travels with an instance: the hash fixes the content,
/// the source is what `engine::compile_program` rebuilds it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub hash: String,
    pub source: DefinitionSource,
}

impl Definition {
    pub fn of(program: &Program) -> Self {
        Definition {
            hash: program.hash.clone(),
            source: program.source.clone(),
        }
    }
}

/// A scheduled start (Temporal Schedule action): the workflow computes the
/// slot from Temporal's scheduled time and starts the instance the embedded
/// runtime would have started, `{schedule}@{slot}`, as an abandoned child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub schedule: String,
    /// IANA name, e.g. `Asia/Shanghai`.
    pub timezone: String,
    /// The schedule's daily times (`HH:MM:SS`) in that zone.
    pub times: Vec<chrono::NaiveTime>,
    /// `none`, `once` or `all`, as in `schedules.yaml`.
    pub catch_up: String,
}

impl Launch {
    pub fn of(s: &ScheduleSpec) -> Self {
        Launch {
            schedule: s.name.clone(),
            timezone: s.tz.name().to_string(),
            times: s.times.clone(),
            catch_up: match s.catch_up {
                CatchUp::None => "none",
                CatchUp::Once => "once",
                CatchUp::All => "all",
            }
            .into(),
        }
    }

    /// Does the slot `slot`, handled at `now`, start its instance? The
    /// embedded runtime's rule ([`ScheduleSpec::due`]): `all` runs every
    /// missed slot, `once` only the newest one that has passed, `none`
    /// only a slot still within the on-time grace. A time that is not a
    /// slot of the schedule is a manual trigger and always runs.
    pub fn runs(
        &self,
        workflow: &str,
        slot: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        let tz: chrono_tz::Tz = self
            .timezone
            .parse()
            .map_err(|_| format!("未知时区 / unknown time zone {}", self.timezone))?;
        let catch_up = match self.catch_up.as_str() {
            "none" => CatchUp::None,
            "once" => CatchUp::Once,
            "all" => CatchUp::All,
            other => return Err(format!("unknown catch_up `{other}`")),
        };
        let spec = ScheduleSpec {
            name: self.schedule.clone(),
            workflow: workflow.to_string(),
            tz,
            times: self.times.clone(),
            catch_up,
            input: Value::Null,
        };
        // Not one of the schedule's times: an operator's "trigger now" in
        // Temporal, which runs.
        if spec.latest_at_or_before(slot) != Some(slot) {
            return Ok(true);
        }
        let now = now.max(slot);
        Ok(spec
            .due(Some(slot - chrono::Duration::seconds(1)), now)
            .contains(&slot))
    }
}

/// The input of the `epi` workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartArgs {
    /// The workflow's name in `workflows/`.
    pub workflow: String,
    /// None: the worker's latest definition of `workflow` (resolved once,
    /// through a local activity, so replay sees the same one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Definition>,
    /// The instance id (= the Temporal workflow id).
    pub id: String,
    pub input: Value,
    /// `{parent id}#{call id}` for a child, as the embedded runtime keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// The generic signal: a definition's signal with its payload and sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalArgs {
    pub name: String,
    pub payload: Value,
    pub actor: Actor,
}

/// An operator's retry of a failed step: who and why, and the program to
/// move the instance to (the workflow's latest published one, as the
/// embedded runtime takes it), carried in the signal so the workflow
/// moves to it deterministically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryArgs {
    pub operator: String,
    pub reason: String,
    pub definition: Definition,
}

/// A step that failed (a rule error while applying a timer, an activity
/// result or a child's completion): the input and the error, as the
/// embedded runtime records it in a `step_failed` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedStep {
    pub input: engine::Input,
    pub error: String,
}

/// What the `state` query answers: the instance, its status as the
/// embedded runtime's instance row has it (`running`, `completed` or
/// `failed`), and the failed step while it is failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub instance: Instance,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedStep>,
}

/// The input of the generic activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityTask {
    pub instance_id: String,
    pub activity_id: String,
    pub name: String,
    pub args: Value,
    /// `{instance}/{activity id}` ([`ActivityCall::key`]).
    pub key: String,
}

impl ActivityTask {
    pub fn call(&self, attempt: u32) -> ActivityCall {
        ActivityCall {
            instance_id: self.instance_id.clone(),
            activity_id: self.activity_id.clone(),
            name: self.name.clone(),
            args: self.args.clone(),
            idempotency_key: self.key.clone(),
            attempt,
        }
    }
}

/// The input of the projection local activity: the instance as the step
/// left it, from which the worker builds the engine's `InstanceRow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectTask {
    pub projection: String,
    pub id: String,
    pub parent: Option<String>,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub state: Instance,
}

/// The result of the `epi` workflow (what a parent receives as
/// `ChildCompleted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub state: String,
    pub status: Option<String>,
    pub output: Value,
}

/// One step of an instance as the operator view reads it: the same payload
/// the embedded runtime writes in its history rows (`input`, `state`,
/// `decisions`, `effects`, `ignored`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub payload: Value,
}

/// Temporal's retry policy for an activity, as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPlan {
    pub initial_interval: Duration,
    /// The engine doubles the delay after each failed attempt.
    pub backoff_coefficient: f64,
    pub maximum_interval: Duration,
    /// Attempts in all (the first included), as `max_attempts`.
    pub maximum_attempts: u32,
    /// Each attempt's limit (`timeout`): Temporal's start-to-close timeout.
    pub start_to_close: Duration,
}

/// The definition's retry policy in Temporal's terms.
pub fn retry_plan(r: &RetryPolicy) -> RetryPlan {
    RetryPlan {
        initial_interval: r.initial_backoff,
        backoff_coefficient: 2.0,
        maximum_interval: r.max_backoff.max(r.initial_backoff),
        // 0 means "unlimited" to Temporal; the engine always stops.
        maximum_attempts: r.max_attempts.max(1),
        start_to_close: r.timeout,
    }
}

/// What the workflow asks Temporal to do for one effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    StartTimer {
        id: String,
        after: Duration,
    },
    CancelTimer {
        id: String,
    },
    ScheduleActivity {
        id: String,
        task: ActivityTask,
        retry: RetryPlan,
    },
    StartChild {
        /// The call id in the parent.
        call: String,
        /// The child's workflow id: the key when given, else `{parent}/{call}`.
        workflow_id: String,
        start: StartArgs,
    },
    Complete(Outcome),
}

/// A timer's delay from the workflow's current time (0 when already due:
/// Temporal refuses zero timers, the caller fires those at once).
pub fn timer_delay(due_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (due_at - now).to_std().unwrap_or(Duration::ZERO)
}

/// Map the effects of one step of instance `id` onto Temporal commands.
pub fn commands(id: &str, effects: &[Effect], now: DateTime<Utc>) -> Vec<Command> {
    effects
        .iter()
        .map(|e| match e {
            Effect::StartTimer {
                id: tid, due_at, ..
            } => Command::StartTimer {
                id: tid.clone(),
                after: timer_delay(*due_at, now),
            },
            Effect::CancelTimer { id: tid } => Command::CancelTimer { id: tid.clone() },
            Effect::ScheduleActivity {
                id: aid,
                name,
                args,
                retry,
            } => Command::ScheduleActivity {
                id: aid.clone(),
                task: ActivityTask {
                    instance_id: id.to_string(),
                    activity_id: aid.clone(),
                    name: name.clone(),
                    args: args.clone(),
                    key: ActivityCall::key(id, aid),
                },
                retry: retry_plan(retry),
            },
            Effect::StartChild {
                id: cid,
                workflow,
                input,
                key,
            } => Command::StartChild {
                call: cid.clone(),
                workflow_id: child_id(id, cid, key.as_deref()),
                start: StartArgs {
                    workflow: workflow.clone(),
                    definition: None,
                    id: child_id(id, cid, key.as_deref()),
                    input: input.clone(),
                    parent: Some(format!("{id}#{cid}")),
                    launch: None,
                },
            },
            Effect::Complete {
                state,
                status,
                output,
            } => Command::Complete(Outcome {
                state: state.clone(),
                status: status.clone(),
                output: output.clone(),
            }),
        })
        .collect()
}

/// A child's instance id: the engine's one naming rule
/// (`runtime::plan::child_id`), shared with the embedded runtime.
pub use engine::runtime::plan::child_id;

/// The search attributes of an instance after a step (Keyword values;
/// None for a field the instance does not have); `failed` while a step
/// has failed.
pub fn search_attributes(s: &Instance, failed: bool) -> BTreeMap<&'static str, Option<String>> {
    BTreeMap::from([
        (SA_WORKFLOW, Some(s.workflow.to_string())),
        (SA_ENTERPRISE, s.search.get("enterprise_id").cloned()),
        (SA_DISTRICT, s.search.get("district").cloned()),
        (SA_PERSON, s.search.get("person").cloned()),
        (SA_STATE, Some(s.state.clone())),
        (SA_STATUS, Some(status(s, failed).to_string())),
    ])
}

/// The search attribute of a search field (`workflow`, `enterprise_id`,
/// `district`, `person`, `state`), as the operator's search names them.
pub fn search_attribute(field: &str) -> Option<&'static str> {
    Some(match field {
        "workflow" | "kind" => SA_WORKFLOW,
        "enterprise_id" | "enterprise" => SA_ENTERPRISE,
        "district" => SA_DISTRICT,
        "person" => SA_PERSON,
        "state" => SA_STATE,
        "status" => SA_STATUS,
        _ => return None,
    })
}

/// A visibility query `Attr = 'value'` with the value quoted safely.
pub fn visibility_query(attr: &str, value: &str) -> String {
    let v = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("{attr} = '{v}'")
}

/// The instance's id under a schedule slot, as the embedded runtime names it.
pub fn scheduled_id(schedule: &str, slot: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    format!(
        "{schedule}@{}",
        slot.with_timezone(&tz).format("%Y-%m-%dT%H:%M%:z")
    )
}

/// The kind of history row the embedded runtime writes for an input.
pub fn input_kind(i: &engine::Input) -> &'static str {
    use engine::Input;
    match i {
        Input::Started { .. } => "started",
        Input::Signal { .. } => "signal",
        Input::TimerFired { .. } => "timer_fired",
        Input::ActivityCompleted { .. } => "activity_completed",
        Input::ActivityFailed { .. } => "activity_failed",
        Input::ChildCompleted { .. } => "child_completed",
    }
}

/// Why a failed step of `state` cannot be retried on `latest`, in the
/// embedded runtime's words: the latest version must still have the
/// instance's current state.
pub fn retry_refusal(latest: &Program, state: &Instance) -> Option<String> {
    latest.state(&state.state).is_none().then(|| {
        format!(
            "最新版本（{}）没有实例所处的状态 {}，不能在其上重试",
            latest.version, state.state
        )
    })
}

/// `input` as of `at` (a retried step's input: its time moves with the
/// retry, as on the embedded runtime).
pub fn retimed(input: &engine::Input, at: DateTime<Utc>) -> engine::Input {
    let mut v = serde_json::to_value(input).expect("an input is JSON");
    v["at"] = serde_json::json!(at);
    serde_json::from_value(v).expect("the same input, at another time")
}

/// The instance's status as the embedded runtime names it.
pub fn status(s: &Instance, failed: bool) -> &'static str {
    if failed {
        "failed"
    } else if completed(s) {
        "completed"
    } else {
        "running"
    }
}

/// Is the instance finished?
pub fn completed(s: &Instance) -> bool {
    s.status == Status::Completed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_retried_input_moves_in_time_only() {
        let input = engine::Input::ActivityCompleted {
            at: t("2026-12-01T02:00:00Z"),
            id: "a1".into(),
            result: json!({"x": 1}),
        };
        let later = t("2026-12-02T02:00:00Z");
        assert_eq!(
            retimed(&input, later),
            engine::Input::ActivityCompleted {
                at: later,
                id: "a1".into(),
                result: json!({"x": 1}),
            }
        );
    }

    #[test]
    fn effects_become_commands() {
        let now = t("2026-12-01T02:00:00Z");
        let retry = RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(30),
        };
        let effects = vec![
            Effect::StartTimer {
                id: "t1".into(),
                name: "deadline".into(),
                due_at: t("2026-12-01T10:00:00Z"),
            },
            Effect::StartTimer {
                id: "t2".into(),
                name: "late".into(),
                due_at: t("2026-12-01T01:00:00Z"),
            },
            Effect::CancelTimer { id: "t0".into() },
            Effect::ScheduleActivity {
                id: "a3".into(),
                name: "notify".into(),
                args: json!({"x": 1}),
                retry,
            },
            Effect::StartChild {
                id: "c4".into(),
                workflow: "warning".into(),
                input: json!({"w": 1}),
                key: Some("warning-9".into()),
            },
            Effect::StartChild {
                id: "c5".into(),
                workflow: "warning".into(),
                input: json!({}),
                key: None,
            },
            Effect::Complete {
                state: "done".into(),
                status: Some("办结".into()),
                output: json!(1),
            },
        ];
        let c = commands("w-1", &effects, now);
        assert_eq!(
            c[0],
            Command::StartTimer {
                id: "t1".into(),
                after: Duration::from_secs(8 * 3600)
            }
        );
        // Already due: no negative delay.
        assert_eq!(
            c[1],
            Command::StartTimer {
                id: "t2".into(),
                after: Duration::ZERO
            }
        );
        assert_eq!(c[2], Command::CancelTimer { id: "t0".into() });
        let Command::ScheduleActivity {
            id,
            task,
            retry: plan,
        } = &c[3]
        else {
            panic!("{:?}", c[3]);
        };
        assert_eq!(id, "a3");
        assert_eq!(task.key, "w-1/a3");
        assert_eq!(task.key, ActivityCall::key("w-1", "a3"));
        assert_eq!(task.call(2).idempotency_key, "w-1/a3");
        assert_eq!(task.call(2).attempt, 2);
        assert_eq!(task.args, json!({"x": 1}));
        assert_eq!(plan.maximum_attempts, 8);
        let Command::StartChild {
            call,
            workflow_id,
            start,
        } = &c[4]
        else {
            panic!("{:?}", c[4]);
        };
        assert_eq!((call.as_str(), workflow_id.as_str()), ("c4", "warning-9"));
        assert_eq!(start.id, "warning-9");
        assert_eq!(start.parent.as_deref(), Some("w-1#c4"));
        assert_eq!(
            start.definition, None,
            "children start on the latest definition"
        );
        let Command::StartChild { workflow_id, .. } = &c[5] else {
            panic!("{:?}", c[5]);
        };
        assert_eq!(workflow_id, "w-1/c5");
        assert_eq!(
            c[6],
            Command::Complete(Outcome {
                state: "done".into(),
                status: Some("办结".into()),
                output: json!(1)
            })
        );
    }

    #[test]
    fn retry_policy_maps_onto_temporal() {
        let r = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
        };
        assert_eq!(
            retry_plan(&r),
            RetryPlan {
                initial_interval: Duration::from_secs(1),
                backoff_coefficient: 2.0,
                maximum_interval: Duration::from_secs(300),
                maximum_attempts: 5,
                start_to_close: Duration::from_secs(60),
            }
        );
        // The engine's delays are Temporal's: 1 s, 2 s, 4 s ... capped.
        for attempt in 1..12 {
            let temporal = r.initial_backoff.as_secs_f64() * 2f64.powi(attempt as i32 - 1);
            let temporal = temporal.min(r.max_backoff.as_secs_f64());
            assert_eq!(
                r.backoff(attempt).as_secs_f64(),
                temporal,
                "attempt {attempt}"
            );
        }
        // Zero attempts would mean "forever" to Temporal.
        let once = RetryPolicy {
            max_attempts: 0,
            ..r
        };
        assert_eq!(retry_plan(&once).maximum_attempts, 1);
    }

    #[test]
    fn inputs_travel_as_json() {
        let start = StartArgs {
            workflow: "warning".into(),
            definition: Some(Definition {
                hash: "abc".into(),
                source: DefinitionSource {
                    workflow: engine::compile::program::SourceFile {
                        path: "workflows/warning.yaml".into(),
                        text: "workflow: warning".into(),
                    },
                    forms: vec![],
                    rules: vec![],
                    activities: None,
                },
            }),
            id: "w-1".into(),
            input: json!({"a": [1, 2]}),
            parent: Some("p#c1".into()),
            launch: None,
        };
        let text = serde_json::to_string(&start).unwrap();
        assert!(!text.contains("launch"), "{text}");
        assert_eq!(serde_json::from_str::<StartArgs>(&text).unwrap(), start);
        // A child's start carries no definition and no parent key when absent.
        let minimal: StartArgs =
            serde_json::from_value(json!({"workflow": "w", "id": "i", "input": null})).unwrap();
        assert_eq!((minimal.definition, minimal.parent), (None, None));
        let signal = SignalArgs {
            name: "approve".into(),
            payload: json!({"comment": "好"}),
            actor: Actor {
                role: "district".into(),
                id: "d1".into(),
                name: None,
            },
        };
        let v = serde_json::to_value(&signal).unwrap();
        assert_eq!(v["actor"]["role"], "district");
        assert_eq!(serde_json::from_value::<SignalArgs>(v).unwrap(), signal);
    }

    #[test]
    fn search_fields_and_queries() {
        assert_eq!(search_attribute("district"), Some(SA_DISTRICT));
        assert_eq!(search_attribute("enterprise_id"), Some(SA_ENTERPRISE));
        assert_eq!(search_attribute("nope"), None);
        assert_eq!(
            visibility_query(SA_PERSON, "o'brien\\"),
            "EpiPerson = 'o\\'brien\\\\'"
        );
    }

    fn launch(catch_up: &str) -> Launch {
        Launch {
            schedule: "comparison".into(),
            timezone: "Asia/Shanghai".into(),
            times: vec!["05:00:00".parse().unwrap(), "10:00:00".parse().unwrap()],
            catch_up: catch_up.into(),
        }
    }

    #[test]
    fn scheduled_starts_follow_the_catch_up_rule() {
        // 05:00 and 10:00 Shanghai = 21:00 and 02:00 UTC.
        let s5 = t("2026-11-30T21:00:00Z");
        let s10 = t("2026-12-01T02:00:00Z");
        let on_time = s10 + chrono::Duration::seconds(5);
        let late = t("2026-12-01T03:00:00Z");
        // On time: every rule runs it.
        for c in ["none", "once", "all"] {
            assert!(launch(c).runs("comparison", s10, on_time).unwrap(), "{c}");
        }
        // Down over both slots, back at 11:00: once runs only the newest.
        assert!(!launch("once").runs("comparison", s5, late).unwrap());
        assert!(launch("once").runs("comparison", s10, late).unwrap());
        assert!(launch("all").runs("comparison", s5, late).unwrap());
        assert!(!launch("none").runs("comparison", s10, late).unwrap());
        assert_eq!(
            scheduled_id("comparison", s10, chrono_tz::Asia::Shanghai),
            "comparison@2026-12-01T10:00+08:00"
        );
        assert!(launch("sometimes").runs("comparison", s10, late).is_err());
        // Triggered by hand at 10:07: runs whatever the rule.
        let manual = t("2026-12-01T02:07:00Z");
        assert!(launch("none").runs("comparison", manual, late).unwrap());
    }
}
