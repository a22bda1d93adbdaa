//! Test support, behind the `testing` feature (enabled by the
//! dev-dependencies of this crate and of the server; not in a release
//! build).
//!
//! [`TestRuntime`] is an in-memory runtime for tests and dry runs: it drives
//! the interpreter with a [`ManualClock`], keeps histories, fires timers in
//! due order and completes activities through a responder, so a scenario
//! spanning days runs in milliseconds. It carries out the same commands as
//! the durable runtime ([`crate::runtime::plan`]): the same activity keys
//! and child ids, child completions (and refusals) delivered to the
//! parent's call. It is not durable and not concurrent, and has no host
//! projections; the real runtime lives in `runtime`.

pub mod fakes;

use crate::clock::{Clock, ManualClock};
use crate::compile::program::Program;
use crate::interpreter::{self, Actor, Input, Instance, Transition};
use crate::runtime::plan::{self, ChildDone, ChildStart, Command};
use crate::store::ParentRef;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Answers activity calls: `Ok(result)` or `Err(error)` after retries.
pub type Responder = Box<dyn FnMut(&str, &Value) -> Result<Value, String> + Send>;

/// One activity call the runtime made.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub instance: String,
    pub id: String,
    pub name: String,
    pub args: Value,
    /// `{instance}/{id}`, as the durable runtime hands it to the activity.
    pub idempotency_key: String,
    pub at: DateTime<Utc>,
}

pub struct TestInstance {
    pub program: Arc<Program>,
    pub state: Instance,
    pub history: Vec<Input>,
    /// The parent and its call, for a child workflow.
    pub parent: Option<ParentRef>,
}

/// Work queued by a step, done after it (as the durable runtime does it
/// after the step's commit).
enum Work {
    Activity(String, plan::ActivityTask),
    /// An input for an instance (a child's completion for its parent).
    Deliver(String, Input),
}

pub struct TestRuntime {
    pub programs: BTreeMap<String, Arc<Program>>,
    pub clock: ManualClock,
    pub instances: BTreeMap<String, TestInstance>,
    /// Every activity call, in order.
    pub calls: Vec<Call>,
    timers: BTreeSet<(DateTime<Utc>, String, String)>,
    queue: VecDeque<Work>,
    responder: Responder,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no workflow `{0}`")]
    UnknownWorkflow(String),
    #[error("no instance `{0}`")]
    UnknownInstance(String),
    #[error("instance `{0}` exists")]
    Duplicate(String),
    #[error(transparent)]
    Step(#[from] interpreter::Error),
}

impl TestRuntime {
    /// Activities succeed with `null` unless a responder says otherwise.
    pub fn new(programs: impl IntoIterator<Item = Arc<Program>>, start: DateTime<Utc>) -> Self {
        TestRuntime {
            programs: programs.into_iter().map(|p| (p.name.clone(), p)).collect(),
            clock: ManualClock::new(start),
            instances: BTreeMap::new(),
            calls: Vec::new(),
            timers: BTreeSet::new(),
            queue: VecDeque::new(),
            responder: Box::new(|_, _| Ok(Value::Null)),
        }
    }

    pub fn with_responder(mut self, r: Responder) -> Self {
        self.responder = r;
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn state(&self, id: &str) -> &Instance {
        &self.instances[id].state
    }

    pub fn history(&self, id: &str) -> &[Input] {
        &self.instances[id].history
    }

    /// Calls of activity `name`, in order.
    pub fn calls_named(&self, name: &str) -> Vec<&Call> {
        self.calls.iter().filter(|c| c.name == name).collect()
    }

    pub fn start(&mut self, workflow: &str, id: &str, input: Value) -> Result<(), Error> {
        if self.instances.contains_key(id) {
            return Err(Error::Duplicate(id.to_string()));
        }
        let program = self
            .programs
            .get(workflow)
            .cloned()
            .ok_or_else(|| Error::UnknownWorkflow(workflow.to_string()))?;
        self.create(id, program, input, None)?;
        self.drain()
    }

    /// Start instance `id` on `program` and carry out its first step.
    fn create(
        &mut self,
        id: &str,
        program: Arc<Program>,
        input: Value,
        parent: Option<ParentRef>,
    ) -> Result<(), Error> {
        let ev = Input::Started {
            at: self.now(),
            input,
        };
        let t = interpreter::step(&program, None, &ev)?;
        let commands = plan::plan(id, parent.as_ref(), &program, &t);
        self.instances.insert(
            id.to_string(),
            TestInstance {
                program,
                state: t.state,
                history: vec![ev],
                parent,
            },
        );
        self.carry_out(id, commands)
    }

    /// Send a signal; a refused signal changes nothing and is not recorded.
    pub fn signal(
        &mut self,
        id: &str,
        name: &str,
        payload: Value,
        actor: Actor,
    ) -> Result<(), Error> {
        let ev = Input::Signal {
            at: self.now(),
            name: name.to_string(),
            payload,
            actor,
        };
        self.deliver(id, ev)?;
        self.drain()
    }

    /// Move the clock forward, firing every timer that falls due on the way, in order.
    pub fn advance(&mut self, d: Duration) -> Result<(), Error> {
        let end = self.now() + chrono::Duration::from_std(d).expect("duration in range");
        while let Some(first) = self.timers.first().cloned() {
            if first.0 > end {
                break;
            }
            self.timers.remove(&first);
            if first.0 > self.now() {
                self.clock.set(first.0);
            }
            let (_, inst, timer) = first;
            self.deliver(
                &inst,
                Input::TimerFired {
                    at: self.now(),
                    id: timer,
                },
            )?;
            self.drain()?;
        }
        self.clock.set(end);
        Ok(())
    }

    fn deliver(&mut self, id: &str, ev: Input) -> Result<(), Error> {
        let inst = self
            .instances
            .get(id)
            .ok_or_else(|| Error::UnknownInstance(id.to_string()))?;
        let t: Transition = interpreter::step(&inst.program, Some(&inst.state), &ev)?;
        let commands = plan::plan(id, inst.parent.as_ref(), &inst.program, &t);
        let inst = self.instances.get_mut(id).expect("present");
        inst.state = t.state;
        inst.history.push(ev);
        self.carry_out(id, commands)
    }

    /// Carry out one step's commands: timers at once, activities and
    /// deliveries queued for [`TestRuntime::drain`], children started now
    /// (a child that exists is left alone; one that cannot start fails
    /// the parent's call).
    fn carry_out(&mut self, id: &str, commands: Vec<Command>) -> Result<(), Error> {
        for c in commands {
            match c {
                Command::SetTimer {
                    timer_id, due_at, ..
                } => {
                    self.timers.insert((due_at, id.to_string(), timer_id));
                }
                Command::CancelTimer { timer_id } => {
                    self.timers.retain(|t| !(t.1 == id && t.2 == timer_id));
                }
                Command::RunActivity(task) => {
                    self.queue.push_back(Work::Activity(id.to_string(), task));
                }
                Command::StartChild(s) => self.start_child(id, s)?,
                Command::NotifyParent(done) => {
                    let input = done.input(self.now());
                    self.queue
                        .push_back(Work::Deliver(done.parent.instance_id, input));
                }
                // No host in memory.
                Command::Project(_) => {}
            }
        }
        Ok(())
    }

    fn start_child(&mut self, parent: &str, s: ChildStart) -> Result<(), Error> {
        let child = s.child_id(parent);
        if self.instances.contains_key(&child) {
            return Ok(());
        }
        let refused = match self.programs.get(&s.workflow).cloned() {
            None => format!("no workflow `{}`", s.workflow),
            Some(program) => {
                match self.create(&child, program, s.input.clone(), Some(s.parent(parent))) {
                    Ok(()) => return Ok(()),
                    Err(Error::Step(e)) => plan::refusal(&e),
                    Err(e) => return Err(e),
                }
            }
        };
        let done = ChildDone::refused(s.parent(parent), refused);
        let input = done.input(self.now());
        self.queue
            .push_back(Work::Deliver(parent.to_string(), input));
        Ok(())
    }

    /// Complete queued activities and deliveries (and what they cause)
    /// until none are left.
    fn drain(&mut self) -> Result<(), Error> {
        while let Some(work) = self.queue.pop_front() {
            match work {
                Work::Deliver(inst, input) => self.deliver(&inst, input)?,
                Work::Activity(inst, task) => {
                    let at = self.now();
                    self.calls.push(Call {
                        instance: inst.clone(),
                        id: task.activity_id.clone(),
                        name: task.name.clone(),
                        args: task.args.clone(),
                        idempotency_key: task.key.clone(),
                        at,
                    });
                    let id = task.activity_id;
                    let ev = match (self.responder)(&task.name, &task.args) {
                        Ok(result) => Input::ActivityCompleted { at, id, result },
                        Err(error) => Input::ActivityFailed { at, id, error },
                    };
                    self.deliver(&inst, ev)?;
                }
            }
        }
        Ok(())
    }

    /// Timers still pending, in due order: (due, instance, timer id).
    pub fn pending_timers(&self) -> Vec<(DateTime<Utc>, String, String)> {
        self.timers.iter().cloned().collect()
    }
}

/// `DATABASE_URL_PG`, the PostgreSQL server of the tests' PostgreSQL
/// variants; None, said on stderr, when it is not set — unless
/// `EPI_PG_TESTS=1` (set by `scripts/test`), where a missing database fails
/// the test instead of letting the variant pass without running.
pub fn postgres_url(what: &str) -> Option<String> {
    match std::env::var("DATABASE_URL_PG") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("EPI_PG_TESTS").as_deref() == Ok("1") => {
            panic!("EPI_PG_TESTS=1 but DATABASE_URL_PG is not set: the PostgreSQL variant of {what} cannot run")
        }
        Err(_) => {
            eprintln!("DATABASE_URL_PG not set: PostgreSQL variant of {what} skipped");
            None
        }
    }
}

/// The URL of a fresh (dropped and re-created) PostgreSQL database named
/// `db` on the server of `DATABASE_URL_PG`, for the PostgreSQL variants of
/// tests; see [`postgres_url`] for when that is not set.
pub async fn fresh_postgres(db: &str) -> Option<String> {
    use sqlx::Executor;
    let url = postgres_url(db)?;
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&url)
        .await
        .expect("PostgreSQL reachable at DATABASE_URL_PG");
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin
            .execute(sql.as_str())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    admin.close().await;
    let base = url.rsplit_once('/').map(|x| x.0).unwrap_or(&url);
    Some(format!("{base}/{db}"))
}
