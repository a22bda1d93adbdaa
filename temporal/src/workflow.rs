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
use engine::interpreter::{self as interp, Input, Instance, Transition};
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
        let (run, first) = Run::start(ctx, start).await?;
        run.drive(first).await
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
        Some(InstanceView {
            status: codec::status(&instance, self.failed.is_some()).into(),
            instance,
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

/// One instance's run: the program it is on, the calls it waits for, the
/// search attributes it has, and its outcome once it has ended.
struct Run<'c> {
    ctx: &'c mut WorkflowContext<Interpreter>,
    program: Arc<engine::Program>,
    id: String,
    parent: Option<String>,
    pending: BTreeMap<String, Pending>,
    /// The search attributes the instance has (those the start set, then
    /// those upserted); after each step only the ones that differ are sent.
    attrs: BTreeMap<&'static str, Option<String>>,
    /// Whether the instance keeps `EpiStatus` up to date: not one a client
    /// started before the attribute existed (its start set the others
    /// only), whose history has no upsert for it, until a step fails.
    track_status: bool,
    /// The instance's revision as the embedded runtime counts it (one per
    /// step, failed step and operator action), told to the projection.
    revision: i64,
    created_at: DateTime<Utc>,
    /// Set when the instance has ended: the workflow then only waits for
    /// the activities still running and the children not yet started (the
    /// embedded runtime runs those too), and returns this.
    finished: Option<Outcome>,
}

impl<'c> Run<'c> {
    /// The run of `start`, on its definition (the worker's latest one if
    /// the start carries none), and its first input.
    async fn start(
        ctx: &'c mut WorkflowContext<Interpreter>,
        start: StartArgs,
    ) -> WorkflowResult<(Run<'c>, Input)> {
        let def = match start.definition {
            Some(d) => d,
            None => latest_definition(ctx, &start.workflow).await?,
        };
        let program = cache::program(&def).map_err(fail)?;
        let attrs = present_attributes(ctx);
        let track_status =
            attrs.contains_key(codec::SA_STATUS) || !attrs.contains_key(codec::SA_WORKFLOW);
        let created_at = now_of(ctx.workflow_time());
        let first = Input::Started {
            at: created_at,
            input: start.input,
        };
        let run = Run {
            ctx,
            program,
            id: start.id,
            parent: start.parent,
            pending: BTreeMap::new(),
            attrs,
            track_status,
            revision: 0,
            created_at,
            finished: None,
        };
        Ok((run, first))
    }

    /// Apply `first`, then each next input, until the instance has ended
    /// and nothing holds its end; a failed step waits for a retry.
    async fn drive(mut self, first: Input) -> WorkflowResult<Outcome> {
        let mut input = first;
        loop {
            if let Some(failed) = self.apply(input).await? {
                input = self.await_retry(failed).await?;
                continue;
            }
            match self.next_input().await? {
                Some(i) => input = i,
                None => return Ok(self.finished.expect("only when finishing")),
            }
        }
    }

    /// The instance as the last step left it.
    fn instance(&self) -> Instance {
        self.ctx
            .state(|s| s.instance.clone())
            .expect("after the first step")
    }

    /// One step: the input applied with the pure step function, recorded,
    /// the search attributes and the projection brought up to date, the
    /// effects issued as commands. A step that failed comes back (nothing
    /// of it is applied).
    async fn apply(&mut self, input: Input) -> WorkflowResult<Option<FailedStep>> {
        let prev = self.ctx.state(|s| s.instance.clone());
        let t = match interp::step(&self.program, prev.as_ref(), &input) {
            Ok(t) => t,
            Err(e) => return self.refused(input, e),
        };
        let at = input.at();
        self.record(&input, &t);
        let done = codec::completed(&t.state);
        self.upsert_attributes(&t.state, false);
        self.project(&t.state, at, done).await?;
        let outcome = self.issue(codec::commands(&self.id, &t.effects, at));
        if done && self.finished.is_none() {
            self.finish(outcome, &t.state);
        }
        Ok(None)
    }

    /// An input the step refused. A refused signal changes nothing, nor
    /// does a late result after the end; a refused start fails the
    /// workflow; anything else (a rule error in a timer, activity or child
    /// handler) is a failed step.
    fn refused(&self, input: Input, e: interp::Error) -> WorkflowResult<Option<FailedStep>> {
        match &input {
            Input::Signal { name, .. } => {
                tracing::info!(instance = %self.id, signal = %name, error = %e, "signal refused");
                Ok(None)
            }
            _ if self.finished.is_some() => {
                tracing::info!(instance = %self.id, error = %e, "input after the end ignored");
                Ok(None)
            }
            Input::Started { .. } => Err(fail(format!("启动被拒绝 / start refused: {e}"))),
            _ => Ok(Some(FailedStep {
                input,
                error: e.to_string(),
            })),
        }
    }

    /// Keep a step: the instance, its program and the step's record as the
    /// embedded runtime writes it in its history.
    fn record(&mut self, input: &Input, t: &Transition) {
        self.revision += 1;
        let record = StepRecord {
            at: input.at(),
            kind: codec::input_kind(input).to_string(),
            payload: json!({
                "input": input,
                "state": t.state.state,
                "decisions": t.decisions,
                "effects": t.effects,
                "ignored": t.ignored,
            }),
        };
        let hash = self.program.hash.clone();
        self.ctx.state_mut(|s| {
            s.instance = Some(t.state.clone());
            s.hash = Some(hash);
            s.log.push(record);
        });
    }

    /// Upsert the search attributes of `state` that changed. A field that
    /// disappears from the instance keeps its last value in visibility:
    /// the SDK's `value_unset` sends an empty payload, which the server
    /// refuses (`BadSearchAttributes`), and that would stop the workflow.
    fn upsert_attributes(&mut self, state: &Instance, failed: bool) {
        let mut now = codec::search_attributes(state, failed);
        self.track_status |= failed;
        if !self.track_status {
            now.remove(codec::SA_STATUS);
        }
        let changed: Vec<_> = now
            .iter()
            .filter(|(k, v)| self.attrs.get(*k) != Some(v))
            .filter_map(|(k, v)| {
                let v = v.as_ref()?;
                Some(SearchAttributeKey::<String>::keyword(k).value_set(v.clone()))
            })
            .collect();
        if !changed.is_empty() {
            self.ctx.upsert_search_attributes(changed);
        }
        for (k, v) in now {
            if v.is_some() || !self.attrs.contains_key(&k) {
                self.attrs.insert(k, v);
            }
        }
    }

    /// Tell the definition's projection hook (if it has one) about the
    /// instance as it is at `at`.
    async fn project(
        &mut self,
        state: &Instance,
        at: DateTime<Utc>,
        done: bool,
    ) -> WorkflowResult<()> {
        let Some(projection) = &self.program.projection else {
            return Ok(());
        };
        let task = ProjectTask {
            projection: projection.clone(),
            id: self.id.clone(),
            parent: self.parent.clone(),
            revision: self.revision,
            created_at: self.created_at,
            updated_at: at,
            closed_at: done.then_some(at),
            state: state.clone(),
        };
        self.ctx
            .execute_local_activity(
                EpiActivities::project,
                task,
                LocalActivityOptions::builder()
                    .start_to_close_timeout(Duration::from_secs(60))
                    .build(),
            )
            .await
            .map_err(|e| fail(format!("投影失败 / projection failed: {e}")))
    }

    /// Issue a step's commands; the instance's outcome if one completes it.
    fn issue(&mut self, commands: Vec<Command>) -> Option<Outcome> {
        let mut outcome = None;
        for c in commands {
            match c {
                Command::StartTimer { id, after } => self.start_timer(id, after),
                Command::CancelTimer { id } => {
                    if let Some(Pending::Timer(_, token, cancelled)) = self.pending.get_mut(&id) {
                        token.cancel();
                        *cancelled = true;
                    }
                }
                Command::ScheduleActivity { id, task, retry } => {
                    self.schedule_activity(id, task, retry)
                }
                Command::StartChild {
                    call,
                    workflow_id,
                    start,
                } => self.start_child(call, workflow_id, start),
                Command::Complete(o) => outcome = Some(o),
            }
        }
        outcome
    }

    fn start_timer(&mut self, id: String, after: Duration) {
        let token = self.ctx.cancellation_token().child_token();
        // Temporal refuses a zero timer: one millisecond is "at once".
        let opts = TimerOptions::builder(after.max(Duration::from_millis(1)))
            .cancellation_token(token.clone())
            .build();
        let c = self.ctx.clone();
        let f = async move { c.timer(opts).await };
        self.pending
            .insert(id, Pending::Timer(Box::pin(f), token, false));
    }

    fn schedule_activity(&mut self, id: String, task: ActivityTask, retry: codec::RetryPlan) {
        let opts = ActivityOptions::with_start_to_close_timeout(retry.start_to_close)
            .activity_id(id.clone())
            .retry_policy(
                temporalio_common::RetryPolicy::builder()
                    .initial_interval(retry.initial_interval)
                    .backoff_coefficient(retry.backoff_coefficient)
                    .maximum_interval(retry.maximum_interval)
                    .maximum_attempts(retry.maximum_attempts)
                    .build(),
            )
            .build();
        let c = self.ctx.clone();
        let f = async move {
            c.execute_activity(EpiActivities::run, task, opts)
                .await
                .map_err(|e| match e.failure() {
                    Some(f) => failure_message(f),
                    None => e.to_string(),
                })
        };
        self.pending.insert(id, Pending::Activity(Box::pin(f)));
    }

    fn start_child(&mut self, call: String, workflow_id: String, start: StartArgs) {
        let c = self.ctx.clone();
        let started = Rc::new(Cell::new(false));
        let flag = started.clone();
        // Children outlive an ended parent, as in the embedded runtime.
        let mut opts = ChildWorkflowOptions::workflow_id(workflow_id.clone());
        opts.parent_close_policy = ParentClosePolicy::Abandon;
        // An id that ever ran is not started again (the embedded runtime
        // inserts a child only if absent).
        opts.id_reuse_policy = WorkflowIdReusePolicy::RejectDuplicate;
        let f = async move {
            let r = c.start_child_workflow(Interpreter::run, start, opts).await;
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
        };
        self.pending
            .insert(call, Pending::Child(Box::pin(f), started));
    }

    /// The instance has ended: its timers are cancelled and the run
    /// returns `outcome` (or the terminal state's) once nothing holds it.
    fn finish(&mut self, outcome: Option<Outcome>, state: &Instance) {
        self.pending.retain(|_, p| match p {
            Pending::Timer(_, token, _) => {
                token.cancel();
                false
            }
            _ => true,
        });
        self.finished = Some(outcome.unwrap_or_else(|| Outcome {
            state: state.state.clone(),
            status: state.status_label.clone(),
            output: state.output.clone(),
        }));
    }

    /// A failed step: recorded as the embedded runtime records it (a
    /// `step_failed` row with the input and the error; status `failed`,
    /// also in `EpiStatus`), then the instance waits for an operator's
    /// retry (signals and results wait meanwhile). Returns the input to
    /// apply again, on the program the retry moved the instance to.
    async fn await_retry(&mut self, failed: FailedStep) -> WorkflowResult<Input> {
        tracing::error!(instance = %self.id, error = %failed.error, "step failed");
        self.revision += 1;
        let record = StepRecord {
            at: failed.input.at(),
            kind: "step_failed".into(),
            payload: json!({ "input": failed.input, "error": failed.error }),
        };
        self.ctx.state_mut(|s| {
            s.log.push(record);
            s.failed = Some(failed.clone());
            // A retry sent before this failure is not one for it.
            s.retries.clear();
        });
        self.upsert_attributes(&self.instance(), true);
        loop {
            self.ctx.wait_condition(|s| !s.retries.is_empty()).await?;
            let retry = self.ctx.state_mut(|s| s.retries.pop_front());
            if let Some(input) = self.move_to(&retry.expect("waited for"), &failed).await? {
                return Ok(input);
            }
        }
    }

    /// Move the failed instance to the retry's program, recorded as the
    /// operator's action, and return the failed input as of now. Refused
    /// (None: the instance stays failed) when that program does not have
    /// the instance's current state, as on the embedded runtime.
    async fn move_to(
        &mut self,
        retry: &RetryArgs,
        failed: &FailedStep,
    ) -> WorkflowResult<Option<Input>> {
        let program = match cache::program(&retry.definition) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(instance = %self.id, error = %e, "retry refused");
                return Ok(None);
            }
        };
        let mut state = self.instance();
        if let Some(why) = codec::retry_refusal(&program, &state) {
            tracing::warn!(instance = %self.id, error = %why, "retry refused");
            return Ok(None);
        }
        let now = now_of(self.ctx.workflow_time());
        let record = StepRecord {
            at: now,
            kind: "operator_action".into(),
            payload: json!({"action": "retry_step", "operator": retry.operator,
                "reason": retry.reason, "input": failed.input,
                "from_version": state.version, "from_hash": state.hash,
                "to_version": program.version, "to_hash": program.hash}),
        };
        state.hash = program.hash.as_str().into();
        state.version = program.version;
        self.revision += 1;
        self.ctx.state_mut(|s| {
            s.instance = Some(state.clone());
            s.hash = Some(program.hash.clone());
            s.failed = None;
            s.log.push(record);
        });
        self.program = program;
        self.project(&state, now, false).await?;
        Ok(Some(codec::retimed(&failed.input, now)))
    }

    /// Wait for the next input: a signal in the inbox, else the first
    /// pending timer, activity or child (by id) that has finished. An ended
    /// instance takes no signals and gets None once nothing holds its end.
    async fn next_input(&mut self) -> WorkflowResult<Option<Input>> {
        let ended = self.finished.is_some();
        loop {
            let next = {
                let cond = self
                    .ctx
                    .wait_condition(move |s| !ended && !s.inbox.is_empty());
                next_ready(cond, &mut self.pending, ended).await
            };
            let at = now_of(self.ctx.workflow_time());
            let input = match next {
                Next::Idle => return Ok(None),
                Next::Signal => {
                    self.ctx
                        .state_mut(|s| s.inbox.pop_front())
                        .map(|s| Input::Signal {
                            at,
                            name: s.name,
                            payload: s.payload,
                            actor: s.actor,
                        })
                }
                Next::Timer(id, r) => {
                    self.pending.remove(&id);
                    (r == TimerResult::Fired).then_some(Input::TimerFired { at, id })
                }
                Next::Activity(id, r) => {
                    self.pending.remove(&id);
                    Some(match r {
                        Ok(result) => Input::ActivityCompleted { at, id, result },
                        Err(error) => Input::ActivityFailed { at, id, error },
                    })
                }
                Next::Child(id, r) => {
                    self.pending.remove(&id);
                    r.map(|r| child_input(at, id, r))
                }
            };
            if let Some(i) = input {
                return Ok(Some(i));
            }
        }
    }
}

/// A child's end as the parent's input. A child that failed completes the
/// parent's call with its reason, as on the embedded runtime (the
/// definition handles `error`), so the parent does not wait forever.
fn child_input(at: DateTime<Utc>, id: String, r: Result<Outcome, String>) -> Input {
    match r {
        Ok(o) => Input::ChildCompleted {
            at,
            id,
            status: o.status,
            output: o.output,
            error: None,
        },
        Err(e) => {
            tracing::warn!(call = %id, error = %e, "child workflow failed");
            Input::ChildCompleted {
                at,
                id,
                status: Some("failed".into()),
                output: Value::Null,
                error: Some(e),
            }
        }
    }
}

/// The first of: the inbox condition `cond`, then the pending calls by id;
/// Idle when the instance has ended and nothing holds its end.
async fn next_ready(
    cond: impl Future<Output = Result<(), temporalio_sdk::WorkflowCancellationError>>,
    pending: &mut BTreeMap<String, Pending>,
    ended: bool,
) -> Next {
    let mut cond = std::pin::pin!(cond);
    std::future::poll_fn(|cx| {
        if cond.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Next::Signal);
        }
        for (id, p) in pending.iter_mut() {
            let next = match p {
                Pending::Timer(f, _, cancelled) => f.as_mut().poll(cx).map(|r| {
                    let r = if *cancelled {
                        TimerResult::Cancelled
                    } else {
                        r
                    };
                    Next::Timer(id.clone(), r)
                }),
                Pending::Activity(f) => f.as_mut().poll(cx).map(|r| Next::Activity(id.clone(), r)),
                Pending::Child(f, _) => f.as_mut().poll(cx).map(|r| Next::Child(id.clone(), r)),
            };
            if next.is_ready() {
                return next;
            }
        }
        if ended && !pending.values().any(Pending::holds_the_end) {
            return Poll::Ready(Next::Idle);
        }
        Poll::Pending
    })
    .await
}

/// The worker's latest definition of `workflow` (children and scheduled
/// starts, which carry none), through a local activity so a replay sees
/// the same one.
async fn latest_definition(
    ctx: &mut WorkflowContext<Interpreter>,
    workflow: &str,
) -> WorkflowResult<Definition> {
    let found: Option<Definition> = ctx
        .execute_local_activity(
            EpiActivities::definition,
            workflow.to_string(),
            LocalActivityOptions::builder()
                .start_to_close_timeout(Duration::from_secs(30))
                .build(),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    found.ok_or_else(|| {
        fail(format!(
            "工作流 `{workflow}` 未定义 / workflow `{workflow}` is not defined"
        ))
    })
}

/// The engine's search attributes the instance has now (those its start set).
fn present_attributes(
    ctx: &WorkflowContext<Interpreter>,
) -> BTreeMap<&'static str, Option<String>> {
    let have = ctx.search_attributes();
    [
        codec::SA_WORKFLOW,
        codec::SA_ENTERPRISE,
        codec::SA_DISTRICT,
        codec::SA_PERSON,
        codec::SA_STATE,
        codec::SA_STATUS,
    ]
    .into_iter()
    .filter_map(|k| {
        Some((
            k,
            Some(have.get(&SearchAttributeKey::<String>::keyword(k))?),
        ))
    })
    .collect()
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
    let def = latest_definition(ctx, &start.workflow).await?;
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
