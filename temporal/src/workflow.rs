//! The one generic workflow (`epi`) and the generic activities.
//!
//! The workflow keeps the interpreter's [`Instance`] and feeds it one
//! [`Input`] at a time: the start, each signal of the inbox, each fired
//! timer, each activity result and each child's completion. After a step
//! it turns the effects into commands ([`codec::commands`]): timers,
//! activities, child workflows and the result. What it waits for is a
//! dynamic set (the pending timers, activities and children, plus the
//! signal inbox); it polls them in a fixed order (inbox first, then the
//! pending calls by id), all with the SDK's own waker, so a replay picks
//! the same next input.

use crate::cache;
use crate::codec::{
    self, ActivityTask, Command, Definition, FailedStep, InstanceView, Outcome, ProjectTask,
    RetryArgs, SignalArgs, StartArgs, StepRecord,
};
use chrono::{DateTime, Utc};
use engine::interpreter::{self as interp, Input, Instance};
use engine::runtime::activity::{Activities, ActivityError as EngineActivityError};
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};
use temporalio_common::search_attributes::{SearchAttributeKey, Timestamp};
use temporalio_sdk::activities::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, ChildWorkflowOptions, LocalActivityOptions,
    ParentClosePolicy, SyncWorkflowContext, TimerOptions, TimerResult, WorkflowCancellationToken,
    WorkflowContext, WorkflowContextView, WorkflowIdReusePolicy, WorkflowResult,
    WorkflowTermination,
};

/// The generic workflow: its state is the instance, the signals not yet
/// applied, and the step records the operator view reads.
#[workflow]
#[derive(Default)]
pub struct Interpreter {
    instance: Option<Instance>,
    /// Where the instance's definition lives (for refusing signals in a query).
    hash: Option<String>,
    inbox: VecDeque<SignalArgs>,
    log: Vec<StepRecord>,
    /// The step that failed, while the instance waits for a retry.
    failed: Option<FailedStep>,
    /// Operators' retries not yet applied.
    retries: VecDeque<RetryArgs>,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T>>>;

enum Pending {
    /// A timer, the token that cancels it, and whether it was cancelled
    /// (its future then runs out without an input).
    Timer(Boxed<TimerResult>, WorkflowCancellationToken, bool),
    Activity(Boxed<Result<Value, String>>),
    /// A child's start and result; the flag is set once the start is
    /// answered (an ended parent waits for that, not for the result).
    Child(Boxed<Option<Result<Outcome, String>>>, Rc<Cell<bool>>),
}

impl Pending {
    /// Must an ended instance still wait for it?
    fn holds_the_end(&self) -> bool {
        match self {
            Pending::Timer(..) => false,
            Pending::Activity(_) => true,
            Pending::Child(_, started) => !started.get(),
        }
    }
}

enum Next {
    /// Ended and nothing left to wait for.
    Idle,
    Signal,
    Timer(String, TimerResult),
    Activity(String, Result<Value, String>),
    Child(String, Option<Result<Outcome, String>>),
}

fn now_of(t: Option<SystemTime>) -> DateTime<Utc> {
    t.map(DateTime::<Utc>::from).unwrap_or_default()
}

fn fail(msg: impl Into<String>) -> WorkflowTermination {
    WorkflowTermination::failed_application(ApplicationFailure::non_retryable(msg.into()))
}

/// The message at the bottom of a Temporal failure (the activity's own).
fn failure_message(f: &temporalio_common::protos::temporal::api::failure::v1::Failure) -> String {
    let mut f = f;
    while let Some(c) = f.cause.as_deref() {
        f = c;
    }
    f.message.clone()
}

#[workflow_methods]
impl Interpreter {
    #[run(name = "epi")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, start: StartArgs) -> WorkflowResult<Outcome> {
        if let Some(launch) = &start.launch {
            return launch_scheduled(ctx, &start, launch).await;
        }
        let def = match start.definition.clone() {
            Some(d) => d,
            None => {
                let found: Option<Definition> = ctx
                    .execute_local_activity(
                        EpiActivities::definition,
                        start.workflow.clone(),
                        LocalActivityOptions::builder()
                            .start_to_close_timeout(Duration::from_secs(30))
                            .build(),
                    )
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                found.ok_or_else(|| {
                    fail(format!(
                        "工作流 `{}` 未定义 / workflow `{}` is not defined",
                        start.workflow, start.workflow
                    ))
                })?
            }
        };
        let program = cache::program(&def).map_err(fail)?;
        let id = start.id.clone();
        let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
        // The search attributes the instance has (those the start set);
        // after each step only the ones that differ are upserted.
        let mut attrs: BTreeMap<&'static str, Option<String>> = {
            let have = ctx.search_attributes();
            [
                codec::SA_WORKFLOW,
                codec::SA_ENTERPRISE,
                codec::SA_DISTRICT,
                codec::SA_PERSON,
                codec::SA_STATE,
            ]
            .into_iter()
            .filter_map(|k| {
                Some((
                    k,
                    Some(have.get(&SearchAttributeKey::<String>::keyword(k))?),
                ))
            })
            .collect()
        };
        let mut revision = 0i64;
        let created_at = now_of(ctx.workflow_time());
        let mut input = Input::Started {
            at: created_at,
            input: start.input.clone(),
        };
        // Set when the instance has ended: the workflow then only waits for
        // the activities still running and the children not yet started
        // (the embedded runtime runs those too), and returns this.
        let mut finished: Option<Outcome> = None;
        loop {
            let at = input.at();
            let prev = ctx.state(|s| s.instance.clone());
            let t = match interp::step(&program, prev.as_ref(), &input) {
                Ok(t) => t,
                Err(e) => match &input {
                    // A refused signal changes nothing.
                    Input::Signal { name, .. } => {
                        tracing::info!(instance = %id, signal = %name, error = %e, "signal refused");
                        match next_input(ctx, &mut pending, finished.is_some()).await? {
                            Some(i) => input = i,
                            None => return Ok(finished.expect("only when finishing")),
                        }
                        continue;
                    }
                    // A late result after the end has nothing to change.
                    _ if finished.is_some() => {
                        tracing::info!(instance = %id, error = %e, "input after the end ignored");
                        match next_input(ctx, &mut pending, true).await? {
                            Some(i) => input = i,
                            None => return Ok(finished.expect("only when finishing")),
                        }
                        continue;
                    }
                    Input::Started { .. } => {
                        return Err(fail(format!("启动被拒绝 / start refused: {e}")));
                    }
                    _ => return Err(fail(format!("步骤失败 / step failed: {e}"))),
                },
            };
            revision += 1;
            let record = StepRecord {
                at,
                kind: codec::input_kind(&input).to_string(),
                payload: json!({
                    "input": input,
                    "state": t.state.state,
                    "decisions": t.decisions,
                    "effects": t.effects,
                    "ignored": t.ignored,
                }),
            };
            let done = codec::completed(&t.state);
            ctx.state_mut(|s| {
                s.instance = Some(t.state.clone());
                s.hash = Some(program.hash.clone());
                s.log.push(record);
            });
            // Search attributes: only those that changed.
            let now_attrs = codec::search_attributes(&t.state, false);
            let changed: Vec<_> = now_attrs
                .iter()
                .filter(|(k, v)| attrs.get(*k) != Some(v))
                .filter_map(|(k, v)| {
                    let key = SearchAttributeKey::<String>::keyword(k);
                    Some(match v {
                        Some(v) => key.value_set(v.clone()),
                        None if attrs.contains_key(k) => key.value_unset(),
                        None => return None,
                    })
                })
                .collect();
            if !changed.is_empty() {
                ctx.upsert_search_attributes(changed);
            }
            attrs = now_attrs;
            if let Some(projection) = &program.projection {
                let task = ProjectTask {
                    projection: projection.clone(),
                    id: id.clone(),
                    parent: start.parent.clone(),
                    revision,
                    created_at,
                    updated_at: at,
                    closed_at: done.then_some(at),
                    state: t.state.clone(),
                };
                ctx.execute_local_activity(
                    EpiActivities::project,
                    task,
                    LocalActivityOptions::builder()
                        .start_to_close_timeout(Duration::from_secs(60))
                        .build(),
                )
                .await
                .map_err(|e| fail(format!("投影失败 / projection failed: {e}")))?;
            }
            let mut outcome = None;
            for c in codec::commands(&id, &t.effects, at) {
                match c {
                    Command::StartTimer { id: tid, after } => {
                        let token = ctx.cancellation_token().child_token();
                        // Temporal refuses a zero timer: one millisecond is "at once".
                        let opts = TimerOptions::builder(after.max(Duration::from_millis(1)))
                            .cancellation_token(token.clone())
                            .build();
                        let c = ctx.clone();
                        let f = async move { c.timer(opts).await };
                        pending.insert(tid, Pending::Timer(Box::pin(f), token, false));
                    }
                    Command::CancelTimer { id: tid } => {
                        if let Some(Pending::Timer(_, token, cancelled)) = pending.get_mut(&tid) {
                            token.cancel();
                            *cancelled = true;
                        }
                    }
                    Command::ScheduleActivity {
                        id: aid,
                        task,
                        retry,
                    } => {
                        let opts =
                            ActivityOptions::with_start_to_close_timeout(retry.start_to_close)
                                .activity_id(aid.clone())
                                .retry_policy(
                                    temporalio_common::RetryPolicy::builder()
                                        .initial_interval(retry.initial_interval)
                                        .backoff_coefficient(retry.backoff_coefficient)
                                        .maximum_interval(retry.maximum_interval)
                                        .maximum_attempts(retry.maximum_attempts)
                                        .build(),
                                )
                                .build();
                        let c = ctx.clone();
                        pending.insert(
                            aid,
                            Pending::Activity(Box::pin(async move {
                                c.execute_activity(EpiActivities::run, task, opts)
                                    .await
                                    .map_err(|e| match e.failure() {
                                        Some(f) => failure_message(f),
                                        None => e.to_string(),
                                    })
                            })),
                        );
                    }
                    Command::StartChild {
                        call,
                        workflow_id,
                        start,
                    } => {
                        let c = ctx.clone();
                        let started = Rc::new(Cell::new(false));
                        let flag = started.clone();
                        // Children outlive an ended parent, as in the embedded runtime.
                        let mut opts = ChildWorkflowOptions::workflow_id(workflow_id.clone());
                        opts.parent_close_policy = ParentClosePolicy::Abandon;
                        // A slot's instance starts once, even if it has ended since.
                        opts.id_reuse_policy = WorkflowIdReusePolicy::RejectDuplicate;
                        // An id that ever ran is not started again (the
                        // embedded runtime inserts a child only if absent).
                        opts.id_reuse_policy = WorkflowIdReusePolicy::RejectDuplicate;
                        pending.insert(
                            call,
                            Pending::Child(Box::pin(async move {
                                let f = c.start_child_workflow(Interpreter::run, start, opts);
                                let r = f.await;
                                flag.set(true);
                                match r {
                                    Ok(started) => Some(started.result().await.map_err(|e| e.to_string())),
                                    // Already there (a key another parent used): as the
                                    // embedded runtime, this parent does not hear of it.
                                    Err(e) => {
                                        tracing::warn!(child = %workflow_id, error = %e, "child not started");
                                        None
                                    }
                                }
                            }), started),
                        );
                    }
                    Command::Complete(o) => outcome = Some(o),
                }
            }
            if done && finished.is_none() {
                pending.retain(|_, p| match p {
                    Pending::Timer(_, token, _) => {
                        token.cancel();
                        false
                    }
                    _ => true,
                });
                finished = Some(outcome.unwrap_or_else(|| {
                    let s = &t.state;
                    Outcome {
                        state: s.state.clone(),
                        status: s.status_label.clone(),
                        output: s.output.clone(),
                    }
                }));
            }
            match next_input(ctx, &mut pending, finished.is_some()).await? {
                Some(i) => input = i,
                None => return Ok(finished.expect("only when finishing")),
            }
        }
    }

    /// A definition's signal, with its payload and sender.
    #[signal(name = "event")]
    pub fn event(&mut self, _ctx: &mut SyncWorkflowContext<Self>, signal: SignalArgs) {
        self.inbox.push_back(signal);
    }

    /// An operator's retry of the failed step ([`codec::RETRY_SIGNAL`]).
    #[signal(name = "epi.retry")]
    pub fn retry(&mut self, _ctx: &mut SyncWorkflowContext<Self>, retry: RetryArgs) {
        self.retries.push_back(retry);
    }

    /// The instance as it is now, with its status and failed step (None
    /// before the first step).
    #[query(name = "state")]
    pub fn state(&self, _ctx: &WorkflowContextView) -> Option<InstanceView> {
        let instance = self.instance.clone()?;
        let status = if self.failed.is_some() {
            "failed"
        } else if codec::completed(&instance) {
            "completed"
        } else {
            "running"
        };
        Some(InstanceView {
            instance,
            status: status.into(),
            failed: self.failed.clone(),
        })
    }

    /// The steps so far, as the operator view reads them.
    #[query(name = "steps")]
    pub fn steps(&self, _ctx: &WorkflowContextView) -> Vec<StepRecord> {
        self.log.clone()
    }

    /// Would this signal be accepted now? The refusal in words, or None
    /// (also before the first step: the signal then waits in the inbox).
    /// Read-only: the sender asks before it signals.
    #[query(name = "check")]
    /// (The time is the worker's clock: a query leaves no history.)
    pub fn check(&self, _ctx: &WorkflowContextView, signal: SignalArgs) -> Option<String> {
        // Not started yet: the signal waits in the inbox for the start.
        let s = self.instance.as_ref()?;
        // The program is cached in the worker that runs the instance.
        let program = self.hash.as_deref().and_then(cache::get)?;
        let input = Input::Signal {
            at: Utc::now(),
            name: signal.name,
            payload: signal.payload,
            actor: signal.actor,
        };
        interp::step(&program, Some(s), &input)
            .err()
            .map(|e| e.to_string())
    }
}

/// Wait for the next input: a signal in the inbox, else the first pending
/// timer, activity or child (by id) that has finished. An ended instance
/// (`ended`) takes no signals and gets None once nothing holds its end.
async fn next_input(
    ctx: &mut WorkflowContext<Interpreter>,
    pending: &mut BTreeMap<String, Pending>,
    ended: bool,
) -> WorkflowResult<Option<Input>> {
    loop {
        let next = {
            let mut cond =
                std::pin::pin!(ctx.wait_condition(move |s| !ended && !s.inbox.is_empty()));
            std::future::poll_fn(|cx| {
                if cond.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Next::Signal);
                }
                for (id, p) in pending.iter_mut() {
                    match p {
                        Pending::Timer(f, _, cancelled) => {
                            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                                let r = if *cancelled {
                                    TimerResult::Cancelled
                                } else {
                                    r
                                };
                                return Poll::Ready(Next::Timer(id.clone(), r));
                            }
                        }
                        Pending::Activity(f) => {
                            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                                return Poll::Ready(Next::Activity(id.clone(), r));
                            }
                        }
                        Pending::Child(f, _) => {
                            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                                return Poll::Ready(Next::Child(id.clone(), r));
                            }
                        }
                    }
                }
                if ended && !pending.values().any(Pending::holds_the_end) {
                    return Poll::Ready(Next::Idle);
                }
                Poll::Pending
            })
            .await
        };
        let at = now_of(ctx.workflow_time());
        match next {
            Next::Idle => return Ok(None),
            Next::Signal => {
                if let Some(s) = ctx.state_mut(|s| s.inbox.pop_front()) {
                    return Ok(Some(Input::Signal {
                        at,
                        name: s.name,
                        payload: s.payload,
                        actor: s.actor,
                    }));
                }
            }
            Next::Timer(id, r) => {
                pending.remove(&id);
                if r == TimerResult::Fired {
                    return Ok(Some(Input::TimerFired { at, id }));
                }
            }
            Next::Activity(id, r) => {
                pending.remove(&id);
                return Ok(Some(match r {
                    Ok(result) => Input::ActivityCompleted { at, id, result },
                    Err(error) => Input::ActivityFailed { at, id, error },
                }));
            }
            Next::Child(id, r) => {
                pending.remove(&id);
                match r {
                    Some(Ok(o)) => {
                        return Ok(Some(Input::ChildCompleted {
                            at,
                            id,
                            status: o.status,
                            output: o.output,
                            error: None,
                        }));
                    }
                    // The parent's call fails with the child's reason, as
                    // on the embedded runtime (its definition handles
                    // `error`); it does not wait forever.
                    Some(Err(e)) => {
                        tracing::warn!(call = %id, error = %e, "child workflow failed");
                        return Ok(Some(Input::ChildCompleted {
                            at,
                            id,
                            status: Some("failed".into()),
                            output: serde_json::Value::Null,
                            error: Some(e.to_string()),
                        }));
                    }
                    None => {}
                }
            }
        }
    }
}

/// A Temporal Schedule's start: the instance the embedded runtime would
/// start for this slot (`{schedule}@{slot}`, with `slot` in the input when
/// the workflow declares it), started as an abandoned child on the latest
/// definition; this run ends once it has started.
async fn launch_scheduled(
    ctx: &mut WorkflowContext<Interpreter>,
    start: &StartArgs,
    launch: &codec::Launch,
) -> WorkflowResult<Outcome> {
    let tz: chrono_tz::Tz = launch
        .timezone
        .parse()
        .map_err(|_| fail(format!("未知时区 / unknown time zone {}", launch.timezone)))?;
    let now = now_of(ctx.workflow_time());
    let scheduled = SearchAttributeKey::<Timestamp>::datetime("TemporalScheduledStartTime");
    let slot = ctx
        .search_attributes()
        .get(&scheduled)
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds(), t.nanos().max(0) as u32))
        .unwrap_or(now);
    if !launch.runs(&start.workflow, slot, now).map_err(fail)? {
        return Ok(Outcome {
            state: "skipped".into(),
            status: None,
            output: json!({ "slot": slot.to_rfc3339() }),
        });
    }
    let def: Option<Definition> = ctx
        .execute_local_activity(
            EpiActivities::definition,
            start.workflow.clone(),
            LocalActivityOptions::builder()
                .start_to_close_timeout(Duration::from_secs(30))
                .build(),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    let def = def.ok_or_else(|| {
        fail(format!(
            "工作流 `{}` 未定义 / workflow `{}` is not defined",
            start.workflow, start.workflow
        ))
    })?;
    let program = cache::program(&def).map_err(fail)?;
    let mut input = start.input.clone();
    if program.input.iter().any(|v| v.name == "slot")
        && let Value::Object(m) = &mut input
    {
        m.insert("slot".into(), Value::String(slot.to_rfc3339()));
    }
    let id = codec::scheduled_id(&launch.schedule, slot, tz);
    let child = StartArgs {
        workflow: start.workflow.clone(),
        definition: Some(def),
        id: id.clone(),
        input,
        parent: None,
        launch: None,
    };
    let mut opts = ChildWorkflowOptions::workflow_id(id.clone());
    opts.parent_close_policy = ParentClosePolicy::Abandon;
    // A slot's instance starts once, even if it has ended since.
    opts.id_reuse_policy = WorkflowIdReusePolicy::RejectDuplicate;
    match ctx
        .start_child_workflow(Interpreter::run, child, opts)
        .await
    {
        Ok(_) => {}
        // The slot already has its instance: starting is idempotent.
        Err(e) => tracing::info!(instance = %id, error = %e, "scheduled instance not started"),
    }
    Ok(Outcome {
        state: "launched".into(),
        status: None,
        output: json!({ "instance": id }),
    })
}

/// The generic activities: any activity of the registry, the projection
/// hooks, and the lookup of a workflow's latest definition.
pub struct EpiActivities {
    pub(crate) registry: Activities,
    pub(crate) latest: Arc<RwLock<BTreeMap<String, Arc<engine::Program>>>>,
}

#[activities]
impl EpiActivities {
    /// One call of a registry activity, with the embedded runtime's
    /// idempotency key; `Permanent` errors are not retried.
    #[activity(name = "epi.activity")]
    pub async fn run(
        self: Arc<Self>,
        ctx: ActivityContext,
        task: ActivityTask,
    ) -> Result<Value, ActivityError> {
        let Some(a) = self.registry.get(&task.name) else {
            return Err(ActivityError::application(
                ApplicationFailure::non_retryable(format!(
                    "no implementation of activity `{}`",
                    task.name
                )),
            ));
        };
        match a.call(task.call(ctx.info().attempt)).await {
            Ok(v) => Ok(v),
            Err(EngineActivityError::Permanent(e)) => Err(ActivityError::application(
                ApplicationFailure::non_retryable(e),
            )),
            Err(EngineActivityError::Retryable(e)) => {
                Err(ActivityError::application(ApplicationFailure::new(e)))
            }
        }
    }

    /// Tell the definition's projection hook about a step.
    #[activity(name = "epi.project")]
    pub async fn project(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: ProjectTask,
    ) -> Result<(), ActivityError> {
        let Some(hook) = self.registry.get_projection(&task.projection).cloned() else {
            return Err(ActivityError::application(
                ApplicationFailure::non_retryable(format!(
                    "no implementation of projection `{}`",
                    task.projection
                )),
            ));
        };
        let Some(program) = cache::get(&task.state.hash) else {
            return Err(ActivityError::application(ApplicationFailure::new(
                format!("definition {} not loaded", task.state.hash),
            )));
        };
        let call = engine::runtime::activity::ProjectionCall {
            projection: task.projection.clone(),
            instance: crate::row::instance_row(&task, &program),
            program,
        };
        hook.project_many(vec![call])
            .await
            .map_err(|e| ActivityError::application(ApplicationFailure::new(e)))
    }

    /// The worker's latest definition of a workflow.
    #[activity(name = "epi.definition")]
    pub async fn definition(
        self: Arc<Self>,
        _ctx: ActivityContext,
        workflow: String,
    ) -> Result<Option<Definition>, ActivityError> {
        let latest = self.latest.read().expect("lock");
        Ok(latest.get(&workflow).map(|p| Definition::of(p)))
    }
}
