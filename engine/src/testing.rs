//! An in-memory runtime for tests and dry runs: it drives the interpreter
//! with a [`ManualClock`], keeps histories, fires timers in due order and
//! completes activities through a responder, so a scenario spanning days
//! runs in milliseconds. It is not durable and not concurrent; the real
//! runtime lives in `runtime`.

use crate::clock::{Clock, ManualClock};
use crate::compile::program::Program;
use crate::interpreter::{self, Actor, Effect, Input, Instance};
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
    pub at: DateTime<Utc>,
}

pub struct TestInstance {
    pub program: Arc<Program>,
    pub state: Instance,
    pub history: Vec<Input>,
}

pub struct TestRuntime {
    pub programs: BTreeMap<String, Arc<Program>>,
    pub clock: ManualClock,
    pub instances: BTreeMap<String, TestInstance>,
    /// Every activity call, in order.
    pub calls: Vec<Call>,
    timers: BTreeSet<(DateTime<Utc>, String, String)>,
    queue: VecDeque<(String, String, String, Value)>,
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
        let ev = Input::Started {
            at: self.now(),
            input,
        };
        let t = interpreter::step(&program, None, &ev)?;
        self.instances.insert(
            id.to_string(),
            TestInstance {
                program,
                state: t.state,
                history: vec![ev],
            },
        );
        self.apply(id, t.effects)?;
        self.drain()
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
        let t = interpreter::step(&inst.program, Some(&inst.state), &ev)?;
        let inst = self.instances.get_mut(id).expect("present");
        inst.state = t.state;
        inst.history.push(ev);
        self.apply(id, t.effects)
    }

    fn apply(&mut self, id: &str, effects: Vec<Effect>) -> Result<(), Error> {
        for e in effects {
            match e {
                Effect::StartTimer {
                    id: tid, due_at, ..
                } => {
                    self.timers.insert((due_at, id.to_string(), tid));
                }
                Effect::CancelTimer { id: tid } => {
                    self.timers.retain(|t| !(t.1 == id && t.2 == tid));
                }
                Effect::ScheduleActivity {
                    id: aid,
                    name,
                    args,
                    ..
                } => {
                    self.queue.push_back((id.to_string(), aid, name, args));
                }
                Effect::StartChild {
                    id: cid,
                    workflow,
                    input,
                    key,
                } => {
                    let child = key.unwrap_or_else(|| format!("{id}/{cid}"));
                    if !self.instances.contains_key(&child) {
                        let program = self
                            .programs
                            .get(&workflow)
                            .cloned()
                            .ok_or(Error::UnknownWorkflow(workflow))?;
                        let ev = Input::Started {
                            at: self.now(),
                            input,
                        };
                        let t = interpreter::step(&program, None, &ev)?;
                        self.instances.insert(
                            child.clone(),
                            TestInstance {
                                program,
                                state: t.state,
                                history: vec![ev],
                            },
                        );
                        self.apply(&child, t.effects)?;
                    }
                }
                Effect::Complete { .. } => {}
            }
        }
        Ok(())
    }

    /// Complete queued activities (and what they cause) until none are left.
    fn drain(&mut self) -> Result<(), Error> {
        while let Some((inst, aid, name, args)) = self.queue.pop_front() {
            self.calls.push(Call {
                instance: inst.clone(),
                id: aid.clone(),
                name: name.clone(),
                args: args.clone(),
                at: self.now(),
            });
            let at = self.now();
            let ev = match (self.responder)(&name, &args) {
                Ok(result) => Input::ActivityCompleted {
                    at,
                    id: aid,
                    result,
                },
                Err(error) => Input::ActivityFailed { at, id: aid, error },
            };
            self.deliver(&inst, ev)?;
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
