//! The durable runtime: runs the interpreter against a [`Store`].
//!
//! Every step loads an instance, applies one input with
//! `interpreter::step`, and commits the new snapshot together with its
//! history row and the timers, tasks and outbox rows its effects queue, in
//! one transaction (batched with other steps, never split). After that
//! the loops here carry the effects out: due timers fire, activity workers
//! run tasks with their retry policy and an idempotency key that survives
//! retries and crashes, the outbox starts child workflows and reports their
//! completion to parents, and schedules start workflows at their wall-clock
//! times with catch-up. Time comes from a [`Clock`]: with a manual clock,
//! tests call [`Runtime::run_until_idle`] and nothing sleeps.
//!
//! The runtime is the only writer of workflow state.

pub mod activity;
mod control;
mod metrics;
pub mod plan;
mod publish;
pub mod row;

pub use control::{MigrationCheck, Repair, TERMINATED};
pub use publish::{Publication, VersionInfo, STARTUP};

pub use activity::{Activities, Activity, ActivityCall, ActivityError, Projection, ProjectionCall};
pub use metrics::Metrics;

use crate::clock::Clock;
use crate::compile::program::{Program, RetryPolicy};
use crate::compile::schedule::ScheduleSpec;
use crate::compile::{self, Bundle};
use crate::interpreter::{self, Actor, Input, Instance, Status, Transition};
use crate::store::{
    self, InstanceRow, OutboxRow, ParentRef, StepCommit, Store, TaskDone, TaskRow, TaskStatus,
    TimerRow,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use plan::Command;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Step(#[from] interpreter::Error),
    #[error("no workflow `{0}`")]
    UnknownWorkflow(String),
    #[error("no instance `{0}`")]
    UnknownInstance(String),
    #[error("activities declared in the catalog but not implemented: {}", .0.join(", "))]
    MissingActivities(Vec<String>),
    #[error("projections declared by workflows but not registered: {}", .0.join(", "))]
    MissingProjections(Vec<String>),
    #[error("stored definition {hash} does not compile: {error}")]
    Definition { hash: String, error: compile::Error },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// An operator's repair that does not apply (in words for the console).
    #[error("{0}")]
    Refused(String),
    #[error("实例 {0} 已由运维终止")]
    Terminated(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Options {
    /// Timers fired per transaction.
    pub timer_batch: i64,
    /// Tasks claimed per round.
    pub task_batch: i64,
    /// Activities running at once.
    pub concurrency: usize,
    /// How long a claimed task is reserved; after a crash it is retried then
    /// (or at once when a runtime of the same `worker` starts again).
    pub lease: Duration,
    /// The name this runtime's leases are held under. One per running
    /// process on a database: a runtime starting under a name takes back the
    /// leases held under it, as its previous process is gone.
    pub worker: String,
    pub outbox_batch: i64,
    /// Longest sleep of the background loop.
    pub max_idle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timer_batch: 2048,
            task_batch: 2048,
            concurrency: 512,
            lease: Duration::from_secs(300),
            worker: "embedded".into(),
            outbox_batch: 2048,
            max_idle: Duration::from_secs(1),
        }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub timers: usize,
    pub tasks: usize,
    pub outbox: usize,
    pub schedules: usize,
}

impl Progress {
    pub fn is_idle(&self) -> bool {
        *self == Progress::default()
    }
    fn add(&mut self, o: Progress) {
        self.timers += o.timers;
        self.tasks += o.tasks;
        self.outbox += o.outbox;
        self.schedules += o.schedules;
    }
}

pub struct Runtime<S: Store> {
    inner: Arc<Inner<S>>,
}

impl<S: Store> Clone for Runtime<S> {
    fn clone(&self) -> Self {
        Runtime {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    store: S,
    clock: Arc<dyn Clock>,
    activities: Activities,
    /// What new instances run: the programs of the latest publication
    /// (reloaded when another process publishes, see `follow_publications`).
    latest: RwLock<Latest>,
    by_hash: RwLock<HashMap<String, Arc<Program>>>,
    schedules: Vec<ScheduleSpec>,
    compile: compile::Options,
    opts: Options,
    metrics: Metrics,
    wake: tokio::sync::Notify,
    incidents: RwLock<Option<IncidentSink>>,
}

/// The latest publication's programs, by workflow.
#[derive(Default)]
struct Latest {
    seq: Option<i64>,
    programs: BTreeMap<String, Arc<Program>>,
}

/// Something an operator must look at (issue 12): a step whose rules
/// failed (the instance waits), or an activity that used up its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub instance_id: String,
    /// The workflow, when the runtime has it at hand (steps; not activities).
    pub workflow: Option<String>,
    /// `step_failed` or `activity_failed`.
    pub kind: &'static str,
    /// The activity, for `activity_failed`.
    pub activity: Option<String>,
    pub error: String,
}

/// Where incidents are told (the application's notices, say); called after
/// the transaction that recorded the failure committed.
pub type IncidentSink = Arc<dyn Fn(Incident) + Send + Sync>;

/// An instance as loaded for a step.
struct Loaded {
    row: InstanceRow,
    state: Instance,
    program: Arc<Program>,
}

impl<S: Store> Runtime<S> {
    /// Build a runtime on `store` and apply the start-up rule to the
    /// bundle (see [`Runtime::publish_at_startup`]): its workflows whose
    /// version is new are published (recorded as by [`STARTUP`]), a changed
    /// content under a version number already published is refused, and
    /// new instances run what the store's latest publication says (running
    /// ones keep theirs). Also checks that every catalogued activity has an
    /// implementation.
    pub async fn new(
        store: S,
        clock: Arc<dyn Clock>,
        bundle: &Bundle,
        activities: Activities,
        opts: Options,
    ) -> Result<Self> {
        let rt = Self::attach(store, clock, bundle, activities, opts).await?;
        rt.publish_at_startup(bundle).await?;
        Ok(rt)
    }

    /// A runtime on `store` that publishes nothing: new instances run the
    /// store's latest publication (none until [`Runtime::publish`]). For
    /// tools working on a database a server runs on (the `policy` and
    /// `instances` commands); `bundle` gives the schedules only.
    pub async fn attach(
        store: S,
        clock: Arc<dyn Clock>,
        bundle: &Bundle,
        activities: Activities,
        opts: Options,
    ) -> Result<Self> {
        let missing = activities.missing(bundle.activities.keys());
        if !missing.is_empty() {
            return Err(Error::MissingActivities(missing));
        }
        let mut missing: Vec<String> = bundle
            .workflows
            .values()
            .filter_map(|p| p.projection.clone())
            .filter(|name| activities.get_projection(name).is_none())
            .collect();
        missing.dedup();
        if !missing.is_empty() {
            return Err(Error::MissingProjections(missing));
        }
        let by_hash = bundle
            .workflows
            .values()
            .map(|p| (p.hash.clone(), p.clone()))
            .collect();
        let rt = Runtime {
            inner: Arc::new(Inner {
                store,
                clock,
                activities,
                latest: RwLock::new(Latest::default()),
                by_hash: RwLock::new(by_hash),
                schedules: bundle.schedules.clone(),
                compile: compile::Options::default(),
                opts,
                metrics: Metrics::new(),
                wake: tokio::sync::Notify::new(),
                incidents: RwLock::new(None),
            }),
        };
        rt.follow_publications().await?;
        Ok(rt)
    }

    /// A worker process starting: take back at once the tasks that its
    /// previous process (same `Options::worker`) had claimed and not
    /// finished, instead of waiting for their leases. Call once, before the
    /// first round, from the process that will run the rounds.
    pub async fn take_back_leases(&self) -> Result<u64> {
        let worker = &self.inner.opts.worker;
        let taken = self.inner.store.release_leases(worker, self.now()).await?;
        if taken > 0 {
            tracing::warn!(%worker, tasks = taken, "took back the activity tasks this worker's previous process had claimed");
        }
        Ok(taken)
    }

    /// Tell incidents to `sink` from now on.
    pub fn on_incident(&self, sink: IncidentSink) {
        *self.inner.incidents.write().expect("lock") = Some(sink);
    }

    fn tell(&self, incidents: Vec<Incident>) {
        if incidents.is_empty() {
            return;
        }
        if let Some(sink) = self.inner.incidents.read().expect("lock").clone() {
            for i in incidents {
                sink(i);
            }
        }
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Prometheus text exposition, with instance counts refreshed.
    pub async fn metrics_text(&self) -> Result<String> {
        let counts = self.inner.store.count_by_state().await?;
        self.inner.metrics.set_instances(&counts);
        self.inner
            .metrics
            .set_pending_timers(self.inner.store.count_timers().await?);
        Ok(self.inner.metrics.encode())
    }

    /// Wake the background loop (after the clock moved, or new work).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The program an instance runs: from this bundle or, for older
    /// versions, recompiled from the stored source.
    pub async fn program(&self, hash: &str) -> Result<Arc<Program>> {
        if let Some(p) = self.inner.by_hash.read().expect("lock").get(hash) {
            return Ok(p.clone());
        }
        let row = self
            .inner
            .store
            .definition(hash)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("definition {hash} is not stored")))?;
        let source =
            serde_json::from_str(&row.source).map_err(|e| Error::Corrupt(e.to_string()))?;
        let p = compile::compile_program(&source, &self.inner.compile).map_err(|error| {
            Error::Definition {
                hash: hash.to_string(),
                error,
            }
        })?;
        self.inner
            .by_hash
            .write()
            .expect("lock")
            .insert(hash.to_string(), p.clone());
        Ok(p)
    }

    async fn load(&self, id: &str) -> Result<Option<Loaded>> {
        let Some(row) = self.inner.store.instance(id).await? else {
            return Ok(None);
        };
        let program = self.program(&row.definition_hash).await?;
        let state = snapshot(&row)?;
        Ok(Some(Loaded {
            row,
            state,
            program,
        }))
    }

    /// Start `workflow` as instance `id`. Returns false if `id` already
    /// exists (starting is idempotent). Invalid input is refused.
    pub async fn start(&self, workflow: &str, id: &str, input: Value) -> Result<bool> {
        let program = self
            .latest_program(workflow)
            .ok_or_else(|| Error::UnknownWorkflow(workflow.to_string()))?;
        let now = self.now();
        let ev = Input::Started { at: now, input };
        let t = interpreter::step(&program, None, &ev)?;
        let mut c = self.commit_for(id, None, None, &program, &t, &ev, now);
        c.insert_if_absent = true;
        let applied = self.inner.store.commit(&[c]).await?;
        if applied[0] {
            self.inner.metrics.step(&program.name, "started");
            self.wake();
        }
        Ok(applied[0])
    }

    /// Start many instances in one transaction; ids that exist are skipped.
    /// Returns how many were created. Any invalid input refuses the batch.
    pub async fn start_many(&self, items: &[(&str, String, Value)]) -> Result<usize> {
        let now = self.now();
        let mut commits = Vec::with_capacity(items.len());
        for (workflow, id, input) in items {
            let program = self
                .latest_program(workflow)
                .ok_or_else(|| Error::UnknownWorkflow(workflow.to_string()))?;
            let ev = Input::Started {
                at: now,
                input: input.clone(),
            };
            let t = interpreter::step(&program, None, &ev)?;
            let mut c = self.commit_for(id, None, None, &program, &t, &ev, now);
            c.insert_if_absent = true;
            commits.push(c);
        }
        let applied = self.inner.store.commit(&commits).await?;
        let n = applied.iter().filter(|a| **a).count();
        self.wake();
        Ok(n)
    }

    /// Deliver a signal. A refused signal returns its error and changes nothing.
    pub async fn signal(&self, id: &str, name: &str, payload: Value, actor: Actor) -> Result<()> {
        self.signal_inner(id, name, payload, actor, None).await
    }

    /// Queue a signal in the durable inbox; the loop delivers it. For
    /// senders that must not wait (another workflow, an import job).
    pub async fn signal_later(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        actor: Actor,
    ) -> Result<i64> {
        let row = store::SignalRow {
            id: 0,
            instance_id: id.to_string(),
            name: name.to_string(),
            payload: payload.to_string(),
            actor: serde_json::to_string(&actor).expect("serialisable"),
            received_at: self.now(),
        };
        let n = self.inner.store.enqueue_signal(&row).await?;
        self.wake();
        Ok(n)
    }

    /// Deliver queued signals in order. A refused one is consumed and logged.
    pub async fn deliver_signals(&self) -> Result<usize> {
        let rows = self
            .inner
            .store
            .pending_signals(self.inner.opts.outbox_batch)
            .await?;
        for r in &rows {
            let payload = serde_json::from_str(&r.payload).map_err(|e| {
                Error::Corrupt(format!("signal {} ({}) payload: {e}", r.id, r.name))
            })?;
            let actor: Actor =
                serde_json::from_str(&r.actor).map_err(|e| Error::Corrupt(e.to_string()))?;
            match self
                .signal_inner(&r.instance_id, &r.name, payload, actor, Some(r.id))
                .await
            {
                Ok(()) => {}
                Err(e @ (Error::Step(_) | Error::UnknownInstance(_))) => {
                    tracing::warn!(instance = %r.instance_id, signal = %r.name, error = %e, "queued signal refused");
                    let consumed = StepCommit {
                        signal_consumed: Some(r.id),
                        ..Default::default()
                    };
                    self.inner.store.commit(&[consumed]).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(rows.len())
    }

    async fn signal_inner(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        actor: Actor,
        consumed: Option<i64>,
    ) -> Result<()> {
        for _ in 0..5 {
            let l = self
                .load(id)
                .await?
                .ok_or_else(|| Error::UnknownInstance(id.to_string()))?;
            if l.row.status == TERMINATED {
                return Err(Error::Terminated(id.to_string()));
            }
            let now = self.now();
            let ev = Input::Signal {
                at: now,
                name: name.to_string(),
                payload: payload.clone(),
                actor: actor.clone(),
            };
            let span = tracing::info_span!("step", instance = %id, workflow = %l.program.name, input = "signal", signal = %name);
            let t = span.in_scope(|| interpreter::step(&l.program, Some(&l.state), &ev))?;
            let mut c = self.commit_for(id, Some(&l.row), None, &l.program, &t, &ev, now);
            c.signal_consumed = consumed;
            match self.inner.store.commit(&[c]).await {
                Ok(_) => {
                    self.inner.metrics.step(&l.program.name, "signal");
                    self.wake();
                    return Ok(());
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Store(store::Error::Conflict {
            id: id.to_string(),
            expected: -1,
            found: -1,
        }))
    }

    /// Build the commit of one step: the instance's new row and history
    /// row, and the store rows of the step's commands ([`plan::plan`]).
    #[allow(clippy::too_many_arguments)]
    fn commit_for(
        &self,
        id: &str,
        prev: Option<&InstanceRow>,
        parent: Option<ParentRef>,
        program: &Program,
        t: &Transition,
        input: &Input,
        now: DateTime<Utc>,
    ) -> StepCommit {
        let s = &t.state;
        let seq = prev.map(|r| r.history_len).unwrap_or(0);
        let payload = json!({
            "input": input,
            "state": s.state,
            "decisions": t.decisions,
            "effects": t.effects,
            "ignored": t.ignored,
        });
        let completed = s.status == Status::Completed;
        // Chained to the instance's last row (its `history_hash`, loaded
        // with the row: no extra read).
        let history = store::HistoryRow::chained(
            id,
            seq,
            now,
            input_kind(input),
            payload.to_string(),
            prev.and_then(|r| r.history_hash.as_deref())
                .unwrap_or(store::GENESIS_HASH),
        );
        let row = InstanceRow {
            id: id.to_string(),
            kind: program.name.clone(),
            definition_hash: program.hash.clone(),
            definition_version: program.version.into(),
            state: s.state.clone(),
            status: if completed { "completed" } else { "running" }.into(),
            status_label: s.status_label.clone(),
            search: s.search.clone(),
            parent: prev.map(|p| p.parent.clone()).unwrap_or(parent),
            snapshot: serde_json::to_string(s).expect("serialisable"),
            revision: prev.map(|r| r.revision + 1).unwrap_or(1),
            history_len: seq + 1,
            history_hash: history.hash.clone(),
            created_at: prev.map(|r| r.created_at).unwrap_or(now),
            updated_at: now,
            closed_at: if completed {
                Some(prev.and_then(|r| r.closed_at).unwrap_or(now))
            } else {
                None
            },
        };
        let mut c = StepCommit {
            expected_revision: prev.map(|r| r.revision),
            history: vec![history],
            ..Default::default()
        };
        for cmd in plan::plan(id, row.parent.as_ref(), program, t) {
            add_command(&mut c, id, row.revision, cmd, now);
        }
        c.instance = Some(row);
        c
    }

    /// Tell the projection hooks of the instances in `rows` (outbox rows of
    /// kind `projection`), once per instance and projection, with the
    /// instance as it is now. Rows whose hook succeeded (or whose instance
    /// is gone) are marked delivered; the others stay for the next round.
    /// Returns how many were delivered.
    async fn project(&self, rows: Vec<(OutboxRow, String)>) -> Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids: Vec<String> = rows.iter().map(|r| r.0.instance_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let loaded: HashMap<String, InstanceRow> = self
            .inner
            .store
            .instances_by_id(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        // Per projection, pages of instances (each instance once, with the
        // outbox rows that told it), handed to the hook a page at a time.
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for (o, projection) in rows {
            groups
                .entry(projection)
                .or_default()
                .entry(o.instance_id)
                .or_default()
                .push(o.id);
        }
        let mut pages = Vec::new();
        for (projection, instances) in groups {
            let instances: Vec<(String, Vec<String>)> = instances.into_iter().collect();
            for page in instances.chunks(PROJECTION_PAGE) {
                pages.push((projection.clone(), page.to_vec()));
            }
        }
        let delivered: Vec<Vec<String>> = futures::stream::iter(pages)
            .map(|(projection, page)| self.project_page(projection, page, &loaded))
            .buffer_unordered(4)
            .filter_map(|d| async move { d })
            .collect()
            .await;
        let delivered: Vec<String> = delivered.into_iter().flatten().collect();
        let n = delivered.len();
        if n > 0 {
            let c = StepCommit {
                outbox_delivered: delivered,
                ..Default::default()
            };
            self.inner.store.commit(&[c]).await?;
        }
        Ok(n)
    }

    /// Tell `projection`'s hook a page of instances (each with the outbox
    /// rows that told it). Returns the rows to mark delivered, or None if
    /// the hook failed (they stay for the next round).
    async fn project_page(
        &self,
        projection: String,
        page: Vec<(String, Vec<String>)>,
        loaded: &HashMap<String, InstanceRow>,
    ) -> Option<Vec<String>> {
        let mut outbox = Vec::new();
        let Some(hook) = self.inner.activities.get_projection(&projection).cloned() else {
            tracing::error!(%projection, "no hook registered for the projection; skipped");
            return Some(page.into_iter().flat_map(|p| p.1).collect());
        };
        let mut calls = Vec::with_capacity(page.len());
        for (instance, rows) in page {
            outbox.extend(rows);
            // An instance that is gone: nothing to tell.
            let Some(row) = loaded.get(&instance).cloned() else {
                continue;
            };
            let program = match self.program(&row.definition_hash).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(%instance, %projection, error = %e, "projection: definition unreadable");
                    return None;
                }
            };
            calls.push(ProjectionCall {
                projection: projection.clone(),
                instance: row,
                program,
            });
        }
        match hook.project_many(calls).await {
            Ok(()) => Some(outbox),
            Err(e) => {
                tracing::warn!(%projection, error = %e, "projection failed; retried next round");
                None
            }
        }
    }

    /// Apply inputs to instances, several per instance in order, and commit
    /// them in one transaction. `extra(i)` adds bookkeeping to the commit of
    /// input `i`. Inputs for missing instances are reported as such.
    async fn apply_batch(&self, work: Vec<(String, Input, StepCommit)>) -> Result<()> {
        if work.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<String> = work.iter().map(|w| w.0.clone()).collect();
        ids.sort();
        ids.dedup();
        let mut loaded: HashMap<String, Loaded> = HashMap::with_capacity(ids.len());
        for row in self.inner.store.instances_by_id(&ids).await? {
            let program = self.program(&row.definition_hash).await?;
            let state = snapshot(&row)?;
            loaded.insert(
                row.id.clone(),
                Loaded {
                    row,
                    state,
                    program,
                },
            );
        }
        let mut commits: Vec<StepCommit> = Vec::with_capacity(work.len());
        let mut incidents = Vec::new();
        for (id, input, extra) in work {
            let Some(l) = loaded.get_mut(&id).filter(|l| l.row.status != TERMINATED) else {
                // The instance is gone (or never was), or an operator ended
                // it: keep only the bookkeeping.
                commits.push(StepCommit {
                    instance: None,
                    ..extra
                });
                continue;
            };
            let now = input.at();
            let span = tracing::info_span!("step", instance = %id, workflow = %l.program.name, input = input_kind(&input));
            let t = match span.in_scope(|| interpreter::step(&l.program, Some(&l.state), &input)) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(instance = %id, error = %e, "step failed");
                    self.inner.metrics.step_failed(&l.program.name);
                    incidents.push(Incident {
                        instance_id: id.clone(),
                        workflow: Some(l.program.name.clone()),
                        kind: "step_failed",
                        activity: None,
                        error: e.to_string(),
                    });
                    commits.push(failed_step(l, &input, &e, extra));
                    continue;
                }
            };
            self.inner.metrics.step(&l.program.name, input_kind(&input));
            let mut c = self.commit_for(&id, Some(&l.row), None, &l.program, &t, &input, now);
            c.task_done = extra.task_done;
            c.outbox_delivered = extra.outbox_delivered;
            c.signal_consumed = extra.signal_consumed;
            c.timers_delete.extend(extra.timers_delete);
            // Later inputs of the same instance in this batch build on this step.
            let row = c.instance.clone().expect("set");
            // Each commit checks the revision it read; chain them.
            l.row = row;
            l.state = t.state;
            commits.push(c);
        }
        match self.inner.store.commit(&commits).await {
            Ok(_) => {
                self.tell(incidents);
                Ok(())
            }
            Err(store::Error::Conflict { id, .. }) => {
                // Another writer touched an instance; nothing was written.
                // The work stays due and is picked up by the next round.
                tracing::warn!(instance = %id, "concurrent update; batch retried later");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fire timers due now.
    pub async fn fire_timers(&self) -> Result<usize> {
        let now = self.now();
        let due = self
            .inner
            .store
            .due_timers(now, self.inner.opts.timer_batch)
            .await?;
        let n = due.len();
        let work = due
            .into_iter()
            .map(|t| {
                self.inner.metrics.timer_lag(now - t.due_at);
                let input = Input::TimerFired {
                    at: now,
                    id: t.timer_id.clone(),
                };
                // The fired timer's row goes with the step, even if the
                // interpreter finds it stale.
                let extra = StepCommit {
                    timers_delete: vec![t.timer_id],
                    ..Default::default()
                };
                (t.instance_id, input, extra)
            })
            .collect();
        self.apply_batch(work).await?;
        Ok(n)
    }

    /// Claim and run due activity tasks, then record their outcomes.
    pub async fn run_tasks(&self) -> Result<usize> {
        let now = self.now();
        let lease_until = now + chrono::Duration::from_std(self.inner.opts.lease).expect("lease");
        let tasks = self
            .inner
            .store
            .claim_tasks(
                now,
                self.inner.opts.task_batch,
                lease_until,
                &self.inner.opts.worker,
            )
            .await?;
        let n = tasks.len();
        if n == 0 {
            return Ok(0);
        }
        let outcomes: Vec<(TaskRow, Result<Value, ActivityError>)> = futures::stream::iter(tasks)
            .map(|task| async move {
                let out = self.call(&task).await;
                (task, out)
            })
            .buffer_unordered(self.inner.opts.concurrency)
            .collect()
            .await;
        let now = self.now();
        let mut work = Vec::new();
        let mut retries = Vec::new();
        let mut spent = Vec::new();
        for (task, out) in outcomes {
            let (input, done) = match out {
                Ok(result) => succeeded(&task, result, now),
                Err(ActivityError::Retryable(e)) if task.attempt < task.max_attempts => {
                    self.inner.metrics.task_retry(&task.name);
                    // `call` read the policy before the attempt.
                    let retry = retry_of(&task)?;
                    let delay = retry.backoff(u32::try_from(task.attempt).unwrap_or(u32::MAX));
                    let next =
                        now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                    tracing::warn!(task = %task.id, attempt = task.attempt, error = %e, "activity attempt failed; retrying");
                    retries.push((task, e, next));
                    continue;
                }
                Err(e) => {
                    self.inner.metrics.task_failure(&task.name);
                    let (input, done, incident) = spent_task(&task, &e, now);
                    spent.push(incident);
                    (input, done)
                }
            };
            let extra = StepCommit {
                task_done: Some(done),
                ..Default::default()
            };
            work.push((task.instance_id.clone(), input, extra));
        }
        self.apply_batch(work).await?;
        self.tell(spent);
        self.record_attempts(retries).await?;
        Ok(n)
    }

    /// Failed attempts that will be retried: each goes into its instance's
    /// history (R8.4) with the task's new schedule, in one transaction.
    async fn record_attempts(&self, failed: Vec<(TaskRow, String, DateTime<Utc>)>) -> Result<()> {
        if failed.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let mut ids: Vec<String> = failed.iter().map(|f| f.0.instance_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let mut rows: HashMap<String, InstanceRow> = self
            .inner
            .store
            .instances_by_id(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut commits = Vec::with_capacity(failed.len());
        for (task, error, next) in &failed {
            let done = TaskDone {
                id: task.id.clone(),
                status: TaskStatus::Pending,
                result: None,
                error: Some(error.clone()),
                next_run_at: Some(*next),
            };
            let mut c = StepCommit {
                task_done: Some(done),
                ..Default::default()
            };
            if let Some(row) = rows.get_mut(&task.instance_id) {
                let mut new = row.clone();
                new.revision += 1;
                new.history_len += 1;
                new.updated_at = now;
                let payload = serde_json::to_value(crate::inspect::AttemptRecord {
                    activity_id: task.activity_id.clone(),
                    name: task.name.clone(),
                    attempt: task.attempt,
                    error: error.clone(),
                    next_attempt_at: *next,
                })
                .expect("serialisable");
                let h = store::HistoryRow::chained(
                    &row.id,
                    row.history_len,
                    now,
                    "activity_attempt_failed",
                    payload.to_string(),
                    row.history_hash.as_deref().unwrap_or(store::GENESIS_HASH),
                );
                new.history_hash = h.hash.clone();
                c.history.push(h);
                c.expected_revision = Some(row.revision);
                c.instance = Some(new.clone());
                *row = new;
            }
            commits.push(c);
        }
        match self.inner.store.commit(&commits).await {
            Ok(_) => Ok(()),
            Err(store::Error::Conflict { .. }) => {
                // The instance moved meanwhile: keep the retry, skip the history note.
                for (task, error, next) in &failed {
                    self.inner
                        .store
                        .retry_task(&task.id, error, *next, now)
                        .await?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn call(&self, task: &TaskRow) -> Result<Value, ActivityError> {
        let Some(a) = self.inner.activities.get(&task.name) else {
            return Err(ActivityError::Permanent(format!(
                "no implementation of activity `{}`",
                task.name
            )));
        };
        let args: Value = serde_json::from_str(&task.args).map_err(|e| {
            ActivityError::Permanent(format!("task {}: stored args do not read: {e}", task.id))
        })?;
        let retry = retry_of(task).map_err(|e| ActivityError::Permanent(e.to_string()))?;
        let call = ActivityCall {
            instance_id: task.instance_id.clone(),
            activity_id: task.activity_id.clone(),
            name: task.name.clone(),
            args,
            idempotency_key: task.id.clone(),
            attempt: u32::try_from(task.attempt).unwrap_or(u32::MAX),
        };
        let span = tracing::info_span!("activity", task = %task.id, name = %task.name, attempt = task.attempt);
        match tokio::time::timeout(retry.timeout, a.call(call))
            .instrument(span)
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ActivityError::Retryable(format!(
                "timed out after {:?}",
                retry.timeout
            ))),
        }
    }

    /// Start children and report completions queued in the outbox.
    pub async fn deliver_outbox(&self) -> Result<usize> {
        let rows = self
            .inner
            .store
            .pending_outbox(self.inner.opts.outbox_batch)
            .await?;
        let mut n = rows.len();
        let now = self.now();
        let mut starts = Vec::new();
        let mut work = Vec::new();
        let mut projections = Vec::new();
        for o in rows {
            let delivered = StepCommit {
                outbox_delivered: vec![o.id.clone()],
                ..Default::default()
            };
            match o.kind.as_str() {
                plan::START_CHILD => {
                    let s: plan::ChildStart = payload(&o)?;
                    match self.child_start(&o.instance_id, &s, now) {
                        Ok(mut c) => {
                            c.insert_if_absent = true;
                            c.outbox_delivered = delivered.outbox_delivered;
                            starts.push(c);
                        }
                        Err(error) => {
                            // The parent's call fails; its definition decides.
                            tracing::warn!(parent = %o.instance_id, child = %s.child_id(&o.instance_id), %error, "child refused its input");
                            let done = plan::ChildDone::refused(s.parent(&o.instance_id), error);
                            work.push((o.instance_id.clone(), done.input(now), delivered));
                        }
                    }
                }
                plan::CHILD_COMPLETED => {
                    let d: plan::ChildDone = payload(&o)?;
                    work.push((d.parent.instance_id.clone(), d.input(now), delivered));
                }
                plan::PROJECTION => {
                    let p: plan::ProjectionNote = payload(&o)?;
                    n -= 1;
                    projections.push((o, p.projection));
                }
                other => {
                    tracing::error!(row = %o.id, kind = other, "unknown outbox row; marked delivered");
                    starts.push(delivered);
                }
            }
        }
        if !starts.is_empty() {
            self.inner.store.commit(&starts).await?;
        }
        self.apply_batch(work).await?;
        // After the steps above, whose own projection rows come next round.
        n += self.project(projections).await?;
        Ok(n)
    }

    /// The commit that starts the child `s` of `parent`, or why it cannot
    /// start (its workflow is not defined, or refuses the input).
    fn child_start(
        &self,
        parent: &str,
        s: &plan::ChildStart,
        now: DateTime<Utc>,
    ) -> Result<StepCommit, String> {
        let program = self
            .latest_program(&s.workflow)
            .ok_or_else(|| format!("no workflow `{}`", s.workflow))?;
        let ev = Input::Started {
            at: now,
            input: s.input.clone(),
        };
        let t = interpreter::step(&program, None, &ev).map_err(|e| plan::refusal(&e))?;
        self.inner.metrics.step(&program.name, "started");
        let child = s.child_id(parent);
        Ok(self.commit_for(&child, None, Some(s.parent(parent)), &program, &t, &ev, now))
    }

    /// Start scheduled workflows that are due, with catch-up per schedule.
    pub async fn run_schedules(&self) -> Result<usize> {
        let now = self.now();
        let mut started = 0;
        for s in &self.inner.schedules {
            let last = self.inner.store.schedule_last_fired(&s.name).await?;
            let due = s.due(last, now);
            if due.is_empty() {
                if last.is_none() {
                    // First start ever: remember now, so downtime is measured from here.
                    let c = StepCommit {
                        schedule_fired: Some((s.name.clone(), now)),
                        ..Default::default()
                    };
                    self.inner.store.commit(&[c]).await?;
                }
                continue;
            }
            let Some(program) = self.latest_program(&s.workflow) else {
                continue;
            };
            for slot in due {
                let mut input = s.input.clone();
                if program.input.iter().any(|v| v.name == "slot") {
                    if let Value::Object(m) = &mut input {
                        m.insert("slot".into(), Value::String(slot.to_rfc3339()));
                    }
                }
                let id = format!(
                    "{}@{}",
                    s.name,
                    slot.with_timezone(&s.tz).format("%Y-%m-%dT%H:%M%:z")
                );
                let ev = Input::Started { at: now, input };
                let t = interpreter::step(&program, None, &ev)?;
                let mut c = self.commit_for(&id, None, None, &program, &t, &ev, now);
                c.insert_if_absent = true;
                c.schedule_fired = Some((s.name.clone(), slot));
                if self.inner.store.commit(&[c]).await?[0] {
                    tracing::info!(schedule = %s.name, %slot, instance = %id, "schedule started a workflow");
                    self.inner.metrics.step(&program.name, "started");
                    started += 1;
                }
            }
        }
        Ok(started)
    }

    /// One round of everything that is due.
    pub async fn run_once(&self) -> Result<Progress> {
        self.follow_publications().await?;
        Ok(Progress {
            schedules: self.run_schedules().await?,
            timers: self.fire_timers().await?,
            tasks: self.run_tasks().await?,
            outbox: self.deliver_outbox().await? + self.deliver_signals().await?,
        })
    }

    /// Rounds until nothing is due at the clock's current time. With a
    /// manual clock this is how tests advance: set the clock, run until idle.
    pub async fn run_until_idle(&self) -> Result<Progress> {
        let mut total = Progress::default();
        loop {
            let p = self.run_once().await?;
            if p.is_idle() {
                return Ok(total);
            }
            total.add(p);
        }
    }

    /// Run forever on the clock: rounds while there is work, otherwise sleep
    /// until the next timer or task is due, a wake-up, or `max_idle`. A
    /// failing round (the database unreachable, say) is logged and retried
    /// after `max_idle`; nothing is lost, the work stays due.
    pub async fn run(self) -> Result<()> {
        loop {
            let next = match self.round_and_next().await {
                Ok(None) => continue,
                Ok(Some(next)) => next,
                Err(e) => {
                    tracing::error!(error = %e, "runtime round failed; retrying");
                    tokio::time::sleep(self.inner.opts.max_idle).await;
                    continue;
                }
            };
            let mut wait = self.inner.opts.max_idle;
            if let Some(next) = next {
                wait = wait.min((next - self.now()).to_std().unwrap_or(Duration::ZERO));
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
            }
        }
    }

    /// One round; None if it did work (go again at once), else when the
    /// next timer or task falls due.
    async fn round_and_next(&self) -> Result<Option<Option<DateTime<Utc>>>> {
        if !self.run_once().await?.is_idle() {
            return Ok(None);
        }
        let timer = self.inner.store.next_timer().await?;
        let task = self.inner.store.next_task().await?;
        Ok(Some(timer.into_iter().chain(task).min()))
    }
}

/// Instances handed to a projection hook at once.
const PROJECTION_PAGE: usize = 500;

/// The store rows that carry out `cmd` of the step that makes revision
/// `revision` of `id`, added to its commit. Outbox rows are delivered
/// after the commit (`deliver_outbox`): a crash in between loses nothing.
fn add_command(c: &mut StepCommit, id: &str, revision: i64, cmd: Command, now: DateTime<Utc>) {
    let outbox = |row_id: String, kind: &str, payload: String| OutboxRow {
        id: row_id,
        instance_id: id.to_string(),
        kind: kind.into(),
        payload,
        created_at: now,
        delivered_at: None,
    };
    match cmd {
        Command::SetTimer {
            timer_id,
            name,
            due_at,
        } => c.timers_insert.push(TimerRow {
            due_at,
            instance_id: id.to_string(),
            timer_id,
            name,
        }),
        Command::CancelTimer { timer_id } => c.timers_delete.push(timer_id),
        Command::RunActivity(a) => c.tasks_insert.push(TaskRow {
            id: a.key,
            instance_id: id.to_string(),
            activity_id: a.activity_id,
            name: a.name,
            args: a.args.to_string(),
            retry: serde_json::to_string(&a.retry).expect("serialisable"),
            attempt: 0,
            max_attempts: a.retry.max_attempts.into(),
            status: TaskStatus::Pending,
            next_run_at: now,
            lease_until: None,
            last_error: None,
            result: None,
            created_at: now,
            updated_at: now,
        }),
        Command::StartChild(s) => c.outbox_insert.push(outbox(
            plan::outbox_id(id, &s.call),
            plan::START_CHILD,
            to_json(&s),
        )),
        Command::NotifyParent(d) => c.outbox_insert.push(outbox(
            format!("{id}/completed"),
            plan::CHILD_COMPLETED,
            to_json(&d),
        )),
        Command::Project(p) => c.outbox_insert.push(outbox(
            format!("{id}/projection/{revision}"),
            plan::PROJECTION,
            to_json(&p),
        )),
    }
}

/// An instance's stored snapshot, or the error naming it.
fn snapshot(row: &InstanceRow) -> Result<Instance> {
    crate::inspect::state_of(row).map_err(Error::Corrupt)
}

/// A rule failed inside a timer or activity handler: the step is recorded
/// in the history as `step_failed` (with `extra`'s bookkeeping) and the
/// instance, status `failed`, waits for an operator.
fn failed_step(
    l: &mut Loaded,
    input: &Input,
    e: &interpreter::Error,
    extra: StepCommit,
) -> StepCommit {
    let now = input.at();
    let mut c = extra;
    let mut row = l.row.clone();
    row.revision += 1;
    row.history_len += 1;
    row.status = "failed".into();
    row.updated_at = now;
    let h = store::HistoryRow::chained(
        &row.id,
        l.row.history_len,
        now,
        "step_failed",
        json!({ "input": input, "error": e.to_string() }).to_string(),
        l.row.history_hash.as_deref().unwrap_or(store::GENESIS_HASH),
    );
    row.history_hash = h.hash.clone();
    c.history.push(h);
    c.expected_revision = Some(l.row.revision);
    c.instance = Some(row.clone());
    l.row = row;
    c
}

/// A task whose activity succeeded: the workflow's input and the task's end.
fn succeeded(task: &TaskRow, result: Value, now: DateTime<Utc>) -> (Input, TaskDone) {
    let done = TaskDone {
        id: task.id.clone(),
        status: TaskStatus::Succeeded,
        result: Some(result.to_string()),
        error: None,
        next_run_at: None,
    };
    let input = Input::ActivityCompleted {
        at: now,
        id: task.activity_id.clone(),
        result,
    };
    (input, done)
}

/// A task that failed for good (a permanent error, or its attempts spent):
/// the workflow decides what follows (a comparison ends 比对失败); the
/// operator's log and incident name the cause.
fn spent_task(
    task: &TaskRow,
    e: &ActivityError,
    now: DateTime<Utc>,
) -> (Input, TaskDone, Incident) {
    let error = format!("{} (after {} attempt(s))", e, task.attempt);
    tracing::error!(task = %task.id, instance = %task.instance_id, activity = %task.name, %error, "activity failed");
    let incident = Incident {
        instance_id: task.instance_id.clone(),
        workflow: None,
        kind: "activity_failed",
        activity: Some(task.name.clone()),
        error: error.clone(),
    };
    let done = TaskDone {
        id: task.id.clone(),
        status: TaskStatus::Failed,
        result: None,
        error: Some(error.clone()),
        next_run_at: None,
    };
    let input = Input::ActivityFailed {
        at: now,
        id: task.activity_id.clone(),
        error,
    };
    (input, done, incident)
}

/// A task's stored retry policy.
fn retry_of(task: &TaskRow) -> Result<RetryPolicy> {
    serde_json::from_str(&task.retry)
        .map_err(|e| Error::Corrupt(format!("task {}: stored retry policy: {e}", task.id)))
}

/// The typed payload of an outbox row; one that does not read is corrupt.
fn payload<T: serde::de::DeserializeOwned>(o: &OutboxRow) -> Result<T> {
    serde_json::from_str(&o.payload)
        .map_err(|e| Error::Corrupt(format!("outbox row {} ({}): {e}", o.id, o.kind)))
}

/// The outbox row that tells the host's projection (if `program` declares
/// one) of revision `revision` of `id`, for commits that are not steps (an
/// operator's note).
fn projection_rows(
    program: &Program,
    id: &str,
    revision: i64,
    now: DateTime<Utc>,
) -> Vec<OutboxRow> {
    let mut c = StepCommit::default();
    if let Some(projection) = &program.projection {
        let note = plan::ProjectionNote {
            projection: projection.clone(),
        };
        add_command(&mut c, id, revision, Command::Project(note), now);
    }
    c.outbox_insert
}

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("serialisable")
}

fn input_kind(i: &Input) -> &'static str {
    match i {
        Input::Started { .. } => "started",
        Input::Signal { .. } => "signal",
        Input::TimerFired { .. } => "timer_fired",
        Input::ActivityCompleted { .. } => "activity_completed",
        Input::ActivityFailed { .. } => "activity_failed",
        Input::ChildCompleted { .. } => "child_completed",
    }
}

/// The inputs of a stored history, in order, for replay and audits.
pub fn inputs(history: &[store::HistoryRow]) -> Vec<Input> {
    history
        .iter()
        .filter_map(|h| serde_json::from_str::<Value>(&h.payload).ok())
        .filter_map(|v| serde_json::from_value(v["input"].clone()).ok())
        .collect()
}
