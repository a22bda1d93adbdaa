//! Which engine carries out the workflows this process starts and signals:
//! the embedded runtime (the store in this process's database, the
//! default) or a Temporal cluster (`engine: temporal`, cargo feature
//! `temporal`). Web handlers and the operator's buttons start and signal
//! through [`Workflows`], never through one engine directly, so the same
//! pages run on either.
//!
//! On Temporal, a signal is first checked here against the instance's
//! state (queried from its workflow) with the same pure step the workflow
//! will apply, so a refused disposal comes back with the same typed
//! errors (field messages of the form) as on the embedded runtime.

use crate::instances::{InstanceSummary, InstanceView, TaskLine, TimerLine};
use engine::interpreter::Actor;
use engine::runtime::{Error, Repair, Runtime};
use engine::store::{InstanceFilter, Page, SqlStore};
use serde_json::Value;

/// The engine behind [`Workflows`].
#[derive(Clone, Default)]
pub enum Backend {
    /// The runtime of this process (its `runtime` loop carries effects out).
    #[default]
    Embedded,
    /// A Temporal cluster: workers (`server worker`) carry effects out.
    #[cfg(feature = "temporal")]
    Temporal(Box<engine_temporal::TemporalEngine>),
}

/// Starting and signalling workflows, on whichever engine runs them.
#[derive(Clone)]
pub struct Workflows {
    /// The embedded runtime (also the definitions' store on Temporal: the
    /// publications live in this database).
    pub runtime: Runtime<SqlStore>,
    pub backend: Backend,
}

impl Workflows {
    pub fn embedded(runtime: Runtime<SqlStore>) -> Workflows {
        Workflows {
            runtime,
            backend: Backend::Embedded,
        }
    }

    /// Whether the embedded runtime carries the workflows out (its
    /// histories, timers and repairs are in this database).
    pub fn is_embedded(&self) -> bool {
        matches!(self.backend, Backend::Embedded)
    }

    /// Start `workflow` as instance `id`; false when `id` exists.
    pub async fn start(&self, workflow: &str, id: &str, input: Value) -> Result<bool, Error> {
        match &self.backend {
            Backend::Embedded => self.runtime.start(workflow, id, input).await,
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => t.start(workflow, id, input).await.map_err(temporal_error),
        }
    }

    /// Send a signal. A refusal is `Error::Step` with the interpreter's
    /// reason on both engines; nothing is recorded for it.
    pub async fn signal(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        actor: Actor,
    ) -> Result<(), Error> {
        match &self.backend {
            Backend::Embedded => self.runtime.signal(id, name, payload, actor).await,
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => temporal_signal(t, id, name, payload, actor).await,
        }
    }
}

impl Workflows {
    /// An instance's state (its definition's hash among it) and its
    /// history (the rows `engine::inspect::events` reads), from the engine
    /// that runs it; None when there is no such instance.
    pub async fn history(
        &self,
        id: &str,
    ) -> Result<
        Option<(
            engine::interpreter::Instance,
            Vec<engine::store::HistoryRow>,
        )>,
        Error,
    > {
        use engine::store::Store as _;
        match &self.backend {
            Backend::Embedded => {
                let store = self.runtime.store();
                let Some(row) = store.instance(id).await? else {
                    return Ok(None);
                };
                let state = engine::inspect::state_of(&row).map_err(Error::Corrupt)?;
                Ok(Some((state, store.history(id).await?)))
            }
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => {
                let Some(state) = t.state(id).await.map_err(temporal_error)? else {
                    return Ok(None);
                };
                let rows = t.history_rows(id).await.map_err(temporal_error)?;
                Ok(Some((state, rows)))
            }
        }
    }
}

#[cfg(feature = "temporal")]
async fn temporal_signal(
    t: &engine_temporal::TemporalEngine,
    id: &str,
    name: &str,
    payload: Value,
    actor: Actor,
) -> Result<(), Error> {
    use engine::interpreter::{step, Input};
    let state = t
        .state(id)
        .await
        .map_err(temporal_error)?
        .ok_or_else(|| Error::UnknownInstance(id.to_string()))?;
    // The instance's own definition version (R8.3): compiled by this
    // process when it published or started it, else the workflow's own
    // check (a refusal in words) is what stands.
    if let Some(program) = engine_temporal::cache::get(&state.hash) {
        let input = Input::Signal {
            at: chrono::Utc::now(),
            name: name.to_string(),
            payload: payload.clone(),
            actor: actor.clone(),
        };
        step(&program, Some(&state), &input)?;
    }
    t.signal(id, name, payload, actor)
        .await
        .map_err(temporal_error)
}

/// Temporal's errors in the runtime's terms: refusals and unknown ids as
/// the embedded runtime reports them, the rest in words.
#[cfg(feature = "temporal")]
pub fn temporal_error(e: engine_temporal::Error) -> Error {
    use engine_temporal::Error as T;
    match e {
        T::Refused(e) => Error::Step(e),
        T::NotFound(id) => Error::UnknownInstance(id),
        T::UnknownWorkflow(w) => Error::UnknownWorkflow(w),
        T::SignalRefused(why) => Error::Refused(why),
        other => Error::Refused(other.to_string()),
    }
}

/// The Temporal client's options from the configuration's `temporal`
/// section (`EPI_TEMPORAL_*`).
#[cfg(feature = "temporal")]
pub fn temporal_options(c: &crate::config::TemporalConfig) -> engine_temporal::Options {
    engine_temporal::Options {
        address: c.address.clone(),
        namespace: c.namespace.clone(),
        task_queue: c.task_queue.clone(),
        tls: c.tls.enabled().then(|| engine_temporal::Tls {
            ca: c.tls.ca.clone(),
            cert: c.tls.cert.clone(),
            key: c.tls.key.clone(),
            domain: c.tls.domain.clone(),
        }),
        identity: None,
    }
}

/// Keep another engine's "latest programs" in step with this database's
/// publications (R8.3 on Temporal): every `every`, read whether another
/// process published (`Runtime::follow_publications`) and, when the
/// current publication changed (there or in this process), hand its
/// programs to `adopt` (a worker's `LatestPrograms::set`, the client's
/// `TemporalEngine::set_programs`). Runs until the task is dropped.
pub async fn follow_publications(
    runtime: Runtime<SqlStore>,
    every: std::time::Duration,
    adopt: impl Fn(Vec<std::sync::Arc<engine::Program>>),
) {
    let mut known = runtime.current().0;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = runtime.follow_publications().await {
            tracing::warn!(error = %e, "reading the latest publication failed; tried again");
            continue;
        }
        let (seq, programs) = runtime.current();
        if seq != known {
            tracing::info!(publication = ?seq, "new instances on Temporal take the new publication");
            adopt(programs.into_values().collect());
            known = seq;
        }
    }
}

/// The operator's console (issue 12) on the engine that runs the
/// instances: the search, one instance with its history, variables, timers
/// and activities, and the repairs. On the embedded runtime all of it is
/// this database's; on Temporal the search is Temporal's visibility, the
/// instance its description and its workflow's queries, and the repairs
/// Temporal's calls.
impl Workflows {
    /// One page of the instances `filter` selects, newest first, and how
    /// many it selects in all.
    pub async fn instances(
        &self,
        filter: &InstanceFilter,
        page: Page,
    ) -> Result<(i64, Vec<InstanceSummary>), Error> {
        use engine::store::Store as _;
        match &self.backend {
            Backend::Embedded => {
                let store = self.runtime.store();
                let total = store.count_instances(filter).await?;
                let rows = store.instances(filter, page).await?;
                Ok((total, rows.iter().map(InstanceSummary::of_row).collect()))
            }
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => on_temporal::instances(t, filter, page).await,
        }
    }

    /// One instance as the console shows it; None when there is none.
    pub async fn instance(&self, id: &str) -> Result<Option<InstanceView>, Error> {
        match &self.backend {
            Backend::Embedded => embedded_instance(&self.runtime, id).await,
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => on_temporal::instance(&self.runtime, t, id).await,
        }
    }

    /// End an instance where it stands, with the operator and the reason
    /// recorded (in its history; on Temporal with the termination, and the
    /// projection told, as the worker would after a step).
    pub async fn terminate(
        &self,
        id: &str,
        by: &Repair,
        hooks: &engine::runtime::Activities,
    ) -> Result<(), Error> {
        check(by)?;
        match &self.backend {
            Backend::Embedded => {
                let _ = hooks;
                self.runtime.terminate(id, by).await
            }
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => on_temporal::terminate(&self.runtime, t, id, by, hooks).await,
        }
    }

    /// Run an instance's failed step again (on the latest publication).
    pub async fn retry_failed_step(&self, id: &str, by: &Repair) -> Result<(), Error> {
        check(by)?;
        match &self.backend {
            Backend::Embedded => self.runtime.retry_failed_step(id, by).await,
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => t.retry_failed_step(id, by).await.map_err(temporal_error),
        }
    }

    /// Run an activity task that used up its attempts once more; the
    /// instance's id, None when there is no such task. On Temporal the
    /// activities' retries are Temporal's (the definition's retry policy):
    /// refused in words.
    pub async fn retry_task(&self, key: &str, by: &Repair) -> Result<Option<String>, Error> {
        use engine::store::Store as _;
        check(by)?;
        match &self.backend {
            Backend::Embedded => {
                let Some(task) = self.runtime.store().task(key).await? else {
                    return Ok(None);
                };
                self.runtime.retry_task(key, by).await?;
                Ok(Some(task.instance_id))
            }
            #[cfg(feature = "temporal")]
            Backend::Temporal(_) => Err(Error::Refused(TEMPORAL_RETRIES.into())),
        }
    }

    /// Send a signal on behalf of `actor`, the operator and the reason
    /// recorded with it; the definition's checks apply as to the actor's
    /// own signal. On Temporal it is the generic signal whose actor names
    /// the operator (Temporal's history keeps the signal as sent).
    pub async fn signal_as_operator(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        actor: Actor,
        by: &Repair,
    ) -> Result<(), Error> {
        check(by)?;
        match &self.backend {
            Backend::Embedded => {
                self.runtime
                    .signal_as_operator(id, name, payload, actor, by)
                    .await
            }
            #[cfg(feature = "temporal")]
            Backend::Temporal(_) => {
                let actor = operator_actor(actor, by);
                self.signal(id, name, payload, actor).await
            }
        }
    }
}

/// Why an activity task is not retried by hand on Temporal.
pub const TEMPORAL_RETRIES: &str = "在 Temporal 上，活动的重试由 Temporal 按定义中的重试策略执行，\
     不能在此手动再执行一次；重试用尽后失败的结果已交给流程处理";

/// A repair names its operator and reason (the same rule on both engines).
fn check(by: &Repair) -> Result<(), Error> {
    if by.operator.trim().is_empty() || by.reason.trim().is_empty() {
        return Err(Error::Refused("运维操作须写明操作人和原因".into()));
    }
    Ok(())
}

/// The actor of a signal an operator sends on someone's behalf: the role
/// and id the definition checks, the name saying who sent it and why.
pub fn operator_actor(actor: Actor, by: &Repair) -> Actor {
    Actor {
        name: Some(format!(
            "运维 {} 代为操作（原因：{}）",
            by.operator, by.reason
        )),
        ..actor
    }
}

/// An instance of the embedded runtime as the console shows it.
async fn embedded_instance(
    rt: &Runtime<SqlStore>,
    id: &str,
) -> Result<Option<InstanceView>, Error> {
    use engine::store::Store as _;
    let store = rt.store();
    let Some(r) = store.instance(id).await? else {
        return Ok(None);
    };
    let state = engine::inspect::state_of(&r).map_err(Error::Corrupt)?;
    let timers = store
        .pending_timers(
            Some(id),
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await?
        .into_iter()
        .map(|t| TimerLine {
            id: t.timer_id,
            name: t.name,
            due: t.due_at.timestamp_millis(),
        })
        .collect();
    let tasks = store
        .tasks_of(id)
        .await?
        .into_iter()
        .map(|t| TaskLine {
            retry: t.status == engine::store::TaskStatus::Failed,
            key: t.id,
            name: t.name,
            status: t.status.as_str().to_string(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            next: Some(t.next_run_at.timestamp_millis()),
            error: t.last_error,
            result: t.result,
        })
        .collect();
    let events = engine::inspect::events(&store.history(id).await?);
    let chain = match store.verify_history(id).await {
        Ok(c) => c.broken.map_or_else(
            || format!("完整（已校验 {} 条）", c.rows),
            |b| format!("在第 {} 条处断开：{b}", b.seq),
        ),
        Err(e) => format!("无法校验：{e}"),
    };
    let program = rt.program(&r.definition_hash).await?;
    Ok(Some(InstanceView {
        summary: InstanceSummary::of_row(&r),
        hash: Some(r.definition_hash.clone()),
        parent: r.parent.as_ref().map(|p| p.instance_id.clone()),
        vars: vars_of(&state),
        timers,
        tasks,
        events,
        chain,
        signals: signals_of(&program),
        engine: "embedded",
    }))
}

fn vars_of(state: &engine::interpreter::Instance) -> Vec<(String, String)> {
    state
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn signals_of(program: &engine::Program) -> Vec<(String, Vec<String>)> {
    program
        .signals
        .iter()
        .map(|(name, s)| (name.clone(), s.actors.clone()))
        .collect()
}

/// The console's reads and repairs on Temporal.
#[cfg(feature = "temporal")]
mod on_temporal {
    use super::{signals_of, temporal_error, vars_of};
    use crate::instances::{InstanceSummary, InstanceView, TaskLine, TimerLine};
    use engine::inspect::{Entry, Event};
    use engine::interpreter::Instance;
    use engine::runtime::{Error, Repair, Runtime};
    use engine::store::{InstanceFilter, Page, SqlStore};
    use engine_temporal::inspect::{Description, Summary, Termination};
    use engine_temporal::TemporalEngine;

    pub async fn instances(
        t: &TemporalEngine,
        filter: &InstanceFilter,
        page: Page,
    ) -> Result<(i64, Vec<InstanceSummary>), Error> {
        if filter.definition_version.is_some() {
            return Err(Error::Refused(
                "在 Temporal 上不能按定义版本查询（版本不在 Temporal 的可见性字段中）".into(),
            ));
        }
        let total = t.count_instances(filter).await.map_err(temporal_error)?;
        let rows = t
            .list_instances(filter, page)
            .await
            .map_err(temporal_error)?;
        Ok((total, rows.iter().map(summary).collect()))
    }

    fn summary(s: &Summary) -> InstanceSummary {
        InstanceSummary {
            id: s.id.clone(),
            kind: s.workflow.clone().unwrap_or_default(),
            version: None,
            state: s.state.clone().unwrap_or_default(),
            status: s.status.to_string(),
            status_label: None,
            search: s.search.clone(),
            created: s.started.map(|t| t.timestamp_millis()),
            updated: s.closed.map(|t| t.timestamp_millis()),
        }
    }

    /// The instance as Temporal describes it, with its state and steps
    /// from the workflow's queries (which need a worker: without one the
    /// page says so and shows what Temporal describes).
    pub async fn instance(
        rt: &Runtime<SqlStore>,
        t: &TemporalEngine,
        id: &str,
    ) -> Result<Option<InstanceView>, Error> {
        let Some(d) = t.describe(id).await.map_err(temporal_error)? else {
            return Ok(None);
        };
        let queried = match t.state(id).await {
            Ok(state) => t.history(id).await.map(|h| (state, h)),
            Err(e) => Err(e),
        };
        let (state, mut events, unanswered) = match queried {
            Ok((state, events)) => (state, events, None),
            Err(e) => (None, Vec::new(), Some(e.to_string())),
        };
        if let Some(end) = &d.terminated {
            let at = end.at.or(d.summary.closed).unwrap_or_else(chrono::Utc::now);
            events.push(termination_entry(events.len() as i64, at, end));
        }
        let program = match &state {
            Some(s) => Some(rt.program(&s.hash).await?),
            None => None,
        };
        let mut chain = format!(
            "由 Temporal 的事件历史保存（{} 个事件），不另做哈希链校验",
            d.history_length
        );
        if let Some(e) = unanswered {
            chain.push_str(&format!("；无法查询实例状态（需要运行中的 worker）：{e}"));
        }
        Ok(Some(InstanceView {
            summary: summary_with(&d, state.as_ref()),
            hash: state.as_ref().map(|s| s.hash.to_string()),
            parent: None,
            vars: state.as_ref().map(vars_of).unwrap_or_default(),
            timers: state.as_ref().map(timers_of).unwrap_or_default(),
            tasks: tasks_of(id, &d, state.as_ref(), program.as_deref()),
            events,
            chain,
            signals: program.as_deref().map(signals_of).unwrap_or_default(),
            engine: "temporal",
        }))
    }

    /// Visibility's summary, brought up to date by the queried state
    /// (visibility follows the workflow with a delay).
    fn summary_with(d: &Description, state: Option<&Instance>) -> InstanceSummary {
        let mut s = summary(&d.summary);
        if let Some(state) = state {
            s.kind = state.workflow.to_string();
            s.version = Some(state.version.into());
            s.state = state.state.clone();
            s.status_label = state.status_label.clone();
            s.search = state.search.clone();
        }
        if d.terminated.is_some() {
            s.status_label = Some(TERMINATED_LABEL.into());
        }
        s
    }

    const TERMINATED_LABEL: &str = "已由运维终止";

    fn timers_of(state: &Instance) -> Vec<TimerLine> {
        state
            .timers
            .iter()
            .map(|(id, t)| TimerLine {
                id: id.clone(),
                name: t.name.clone(),
                due: t.due_at.timestamp_millis(),
            })
            .collect()
    }

    /// The activities Temporal has pending, named by the definition.
    fn tasks_of(
        id: &str,
        d: &Description,
        state: Option<&Instance>,
        program: Option<&engine::Program>,
    ) -> Vec<TaskLine> {
        let name = |aid: &str| {
            let call = state?.activities.get(aid)?;
            Some(program?.activities.get(call.spec)?.name.clone())
        };
        d.activities
            .iter()
            .map(|a| TaskLine {
                key: engine::store::idempotency_key(id, &a.activity_id),
                name: name(&a.activity_id).unwrap_or_else(|| a.activity_id.clone()),
                status: a.state.to_string(),
                attempt: a.attempt.into(),
                max_attempts: a.maximum_attempts.into(),
                next: a.next_attempt.map(|t| t.timestamp_millis()),
                error: a.last_failure.clone(),
                result: None,
                retry: false,
            })
            .collect()
    }

    /// The reason Temporal keeps with a termination: operator and reason.
    fn termination_reason(by: &Repair) -> String {
        format!("运维 {}：{}", by.operator, by.reason)
    }

    /// A termination as the console's history shows an operator's repair
    /// (one asked elsewhere, in Temporal's UI say, names its client).
    fn termination_entry(seq: i64, at: chrono::DateTime<chrono::Utc>, t: &Termination) -> Entry {
        let (operator, reason) = t
            .reason
            .strip_prefix("运维 ")
            .and_then(|r| r.split_once('：'))
            .map(|(o, r)| (o.to_string(), r.to_string()))
            .unwrap_or_else(|| (t.identity.clone(), t.reason.clone()));
        Entry {
            seq,
            at,
            event: Event::OperatorAction {
                action: "terminate".into(),
                operator,
                reason,
                detail: serde_json::Value::Null,
            },
        }
    }

    /// Terminate on Temporal, then tell the instance's projection (the
    /// worker tells it after steps; a termination is none).
    pub async fn terminate(
        rt: &Runtime<SqlStore>,
        t: &TemporalEngine,
        id: &str,
        by: &Repair,
        hooks: &engine::runtime::Activities,
    ) -> Result<(), Error> {
        let d = t
            .describe(id)
            .await
            .map_err(temporal_error)?
            .ok_or_else(|| Error::UnknownInstance(id.to_string()))?;
        if !matches!(d.summary.status, "running" | "failed") {
            return Err(Error::Refused(format!("实例 {id} 已经结束")));
        }
        let state = t.state(id).await.map_err(temporal_error)?;
        let steps = t.history_rows(id).await.map_err(temporal_error)?.len() as i64;
        t.terminate(id, &termination_reason(by))
            .await
            .map_err(temporal_error)?;
        match state {
            Some(state) => project_termination(rt, hooks, id, &state, steps + 1).await,
            None => Ok(()),
        }
    }

    async fn project_termination(
        rt: &Runtime<SqlStore>,
        hooks: &engine::runtime::Activities,
        id: &str,
        state: &Instance,
        revision: i64,
    ) -> Result<(), Error> {
        let program = rt.program(&state.hash).await?;
        let Some(hook) = program
            .projection
            .as_deref()
            .and_then(|p| hooks.get_projection(p))
        else {
            return Ok(());
        };
        let now = chrono::Utc::now();
        let mut row = engine::runtime::row::instance_row(id, &program, state, None, revision, now);
        row.status = "terminated".into();
        row.status_label = Some(TERMINATED_LABEL.into());
        row.closed_at = Some(now);
        let call = engine::runtime::activity::ProjectionCall {
            projection: program.projection.clone().unwrap_or_default(),
            instance: row,
            program,
        };
        hook.project(call).await.map_err(Error::Refused)
    }
}
