//! The pure, deterministic step function:
//! `step(program, state, input) -> Transition { state, effects }`.
//!
//! No clock, no randomness, no I/O: time arrives inside each [`Input`]
//! (`at`), ids are counters kept in the [`Instance`], maps are ordered. The
//! same inputs in the same order always give the same state, which is what
//! lets the embedded runtime replay a history and a Temporal worker run the
//! same definitions. Effects are data; the runtime executes them. Every
//! effect maps onto one Temporal command (timer, activity, child workflow,
//! complete); signals arrive as one generic input with a name and payload.

use crate::compile::form::FieldError;
use crate::compile::program::*;
use crate::rules::{self, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who sent a signal. `role` is checked against the signal's `actors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub role: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Something that happened to an instance. Histories are lists of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    Started {
        at: DateTime<Utc>,
        input: Value,
    },
    Signal {
        at: DateTime<Utc>,
        name: String,
        payload: Value,
        actor: Actor,
    },
    TimerFired {
        at: DateTime<Utc>,
        id: String,
    },
    ActivityCompleted {
        at: DateTime<Utc>,
        id: String,
        result: Value,
    },
    ActivityFailed {
        at: DateTime<Utc>,
        id: String,
        error: String,
    },
    /// The child started for the call `id` ended (its terminal state's
    /// `status` and `output`), or never started: then `error` says why
    /// (the runtime sends `status: refused`, see `runtime::plan`), and the
    /// call's `on_child_complete` handlers see it as `error` and
    /// `result.error`, as `on_failure` sees an activity's.
    ChildCompleted {
        at: DateTime<Utc>,
        id: String,
        status: Option<String>,
        output: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Input {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Input::Started { at, .. }
            | Input::Signal { at, .. }
            | Input::TimerFired { at, .. }
            | Input::ActivityCompleted { at, .. }
            | Input::ActivityFailed { at, .. }
            | Input::ChildCompleted { at, .. } => *at,
        }
    }
}

/// What the runtime must do after a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    StartTimer {
        id: String,
        name: String,
        due_at: DateTime<Utc>,
    },
    CancelTimer {
        id: String,
    },
    /// The runtime derives the idempotency key from the instance id and `id`.
    ScheduleActivity {
        id: String,
        name: String,
        args: Value,
        retry: RetryPolicy,
    },
    /// `key`: the child's stable identity when the definition gives one.
    StartChild {
        id: String,
        workflow: String,
        input: Value,
        key: Option<String>,
    },
    Complete {
        state: String,
        status: Option<String>,
        output: Value,
    },
}

/// A rule decision taken during the step, kept in the history (R8.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub origin: Arc<str>,
    pub expr: Arc<str>,
    pub result: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTimer {
    pub name: String,
    pub entry: u64,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCall {
    /// Index into `Program::activities` or `Program::children`.
    pub spec: usize,
    /// The state entry that started it; handlers only run while it lasts.
    pub entry: u64,
}

/// The state of one workflow instance. Serialisable: it is the snapshot the
/// store keeps, and replaying the history from scratch must rebuild it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub workflow: Arc<str>,
    pub version: u32,
    pub hash: Arc<str>,
    pub status: Status,
    pub state: String,
    pub status_label: Option<String>,
    /// Shared: the input never changes after start, so steps clone a pointer.
    pub input: Arc<Value>,
    /// Copy-on-write: steps that set nothing share the map with their predecessor.
    pub vars: Arc<BTreeMap<String, Value>>,
    pub search: BTreeMap<String, String>,
    pub started_at: DateTime<Utc>,
    pub entered_at: DateTime<Utc>,
    /// Count of state entries so far.
    pub entry: u64,
    /// Counter for timer, activity and child ids.
    pub next_id: u64,
    pub timers: BTreeMap<String, PendingTimer>,
    pub activities: BTreeMap<String, PendingCall>,
    pub children: BTreeMap<String, PendingCall>,
    /// The terminal state's output (null while running).
    pub output: Value,
    /// The input converted for rhai once per loaded instance (not persisted).
    #[serde(skip)]
    input_dynamic: DynamicCache,
    /// The variables converted for rhai; replaced whenever one is set.
    #[serde(skip)]
    vars_dynamic: DynamicCache,
}

/// A lazily filled, shared rhai copy of a value. Invisible to equality,
/// debugging and serialisation: it is derived data.
#[derive(Clone, Default)]
struct DynamicCache(Arc<std::sync::OnceLock<rhai::Dynamic>>);

impl PartialEq for DynamicCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for DynamicCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

impl DynamicCache {
    fn get(&self, v: &Value) -> rhai::Dynamic {
        self.0
            .get_or_init(|| rules::to_dynamic(v).into_shared())
            .clone()
    }

    fn get_with(&self, f: impl FnOnce() -> rhai::Dynamic) -> rhai::Dynamic {
        self.0.get_or_init(|| f().into_shared()).clone()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: Instance,
    pub effects: Vec<Effect>,
    pub decisions: Vec<Decision>,
    /// Why nothing happened, for inputs that were no-ops (a stale timer).
    pub ignored: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("the workflow was started with invalid input")]
    InvalidInput(Vec<FieldError>),
    #[error("the instance has not been started")]
    NotStarted,
    #[error("the instance was already started")]
    AlreadyStarted,
    #[error("the workflow has ended in state `{0}`")]
    Ended(String),
    #[error("`{0}` is not a signal of this workflow")]
    UnknownSignal(String),
    #[error("`{signal}` is not accepted in state `{state}`")]
    NotAccepted { signal: String, state: String },
    #[error("role `{role}` may not send `{signal}`")]
    ActorNotAllowed { signal: String, role: String },
    #[error("the signal's content was refused")]
    InvalidPayload(Vec<FieldError>),
    #[error(transparent)]
    Rule(#[from] rules::Error),
    #[error("definition mismatch: instance runs {instance}, program is {program}")]
    WrongProgram { instance: String, program: String },
}

/// Apply one input. `state` is None only for `Input::Started`.
pub fn step(
    program: &Program,
    state: Option<&Instance>,
    input: &Input,
) -> Result<Transition, Error> {
    let mut s = match (state, input) {
        (None, Input::Started { at, input }) => return start(program, *at, input),
        (Some(_), Input::Started { .. }) => return Err(Error::AlreadyStarted),
        (None, _) => return Err(Error::NotStarted),
        (Some(s), _) => s.clone(),
    };
    if *s.hash != *program.hash {
        return Err(Error::WrongProgram {
            instance: s.hash.to_string(),
            program: program.hash.clone(),
        });
    }
    let mut run = Run {
        program,
        effects: Vec::new(),
        decisions: Vec::new(),
        at: input.at(),
    };
    let ignored = match input {
        Input::Started { .. } => unreachable!("handled above"),
        Input::Signal {
            name,
            payload,
            actor,
            ..
        } => {
            if s.status == Status::Completed {
                return Err(Error::Ended(s.state.clone()));
            }
            run.signal(&mut s, name, payload, actor)?;
            None
        }
        Input::TimerFired { id, .. } => run.timer(&mut s, id)?,
        Input::ActivityCompleted { id, result, .. } => run.activity(&mut s, id, Ok(result))?,
        Input::ActivityFailed { id, error, .. } => run.activity(&mut s, id, Err(error))?,
        Input::ChildCompleted {
            id,
            status,
            output,
            error,
            ..
        } => run.child(&mut s, id, status, output, error.as_deref())?,
    };
    Ok(Transition {
        state: s,
        effects: run.effects,
        decisions: run.decisions,
        ignored,
    })
}

/// Replay a history from the beginning. Errors of refused signals are
/// skipped the same way the runtime skipped them when they happened.
pub fn replay<'a>(
    program: &Program,
    history: impl IntoIterator<Item = &'a Input>,
) -> Result<Option<Instance>, Error> {
    let mut state: Option<Instance> = None;
    for input in history {
        match step(program, state.as_ref(), input) {
            Ok(t) => state = Some(t.state),
            Err(
                Error::NotAccepted { .. }
                | Error::InvalidPayload(_)
                | Error::ActorNotAllowed { .. }
                | Error::Ended(_),
            ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(state)
}

fn start(program: &Program, at: DateTime<Utc>, input: &Value) -> Result<Transition, Error> {
    let input = check_input(program, input)?;
    let mut s = Instance {
        workflow: program.name.as_str().into(),
        version: program.version,
        hash: program.hash.as_str().into(),
        status: Status::Running,
        state: program.states[program.initial].name.clone(),
        status_label: None,
        input: Arc::new(input),
        vars: Arc::new(
            program
                .vars
                .iter()
                .map(|v| (v.name.clone(), v.default.clone()))
                .collect(),
        ),
        search: BTreeMap::new(),
        started_at: at,
        entered_at: at,
        entry: 0,
        next_id: 0,
        timers: BTreeMap::new(),
        activities: BTreeMap::new(),
        children: BTreeMap::new(),
        output: Value::Null,
        input_dynamic: DynamicCache::default(),
        vars_dynamic: DynamicCache::default(),
    };
    let mut run = Run {
        program,
        effects: Vec::new(),
        decisions: Vec::new(),
        at,
    };
    let mut cx = Cx::default();
    for (k, t) in &program.search {
        let v = run.render(t, &mut cx, &s)?;
        let text = match v {
            Value::String(x) => x,
            Value::Null => continue,
            other => other.to_string(),
        };
        s.search.insert(k.clone(), text);
    }
    run.enter(&mut s, program.initial)?;
    Ok(Transition {
        state: s,
        effects: run.effects,
        decisions: run.decisions,
        ignored: None,
    })
}

fn check_input(program: &Program, input: &Value) -> Result<Value, Error> {
    let empty = Map::new();
    let obj = match input {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => {
            return Err(Error::InvalidInput(vec![FieldError {
                field: String::new(),
                message: "input must be a map".into(),
            }]))
        }
    };
    let mut errors = Vec::new();
    let mut out = Map::new();
    for v in &program.input {
        match obj.get(&v.name) {
            None | Some(Value::Null) => {
                if v.required {
                    errors.push(FieldError {
                        field: v.name.clone(),
                        message: format!("`{}` is required", v.name),
                    });
                } else if !v.default.is_null() {
                    out.insert(v.name.clone(), v.default.clone());
                }
            }
            Some(x) if !v.ty.accepts(x) => errors.push(FieldError {
                field: v.name.clone(),
                message: format!("`{}` has the wrong type", v.name),
            }),
            Some(x) => {
                out.insert(v.name.clone(), x.clone());
            }
        }
    }
    for k in obj.keys() {
        if !program.input.iter().any(|v| &v.name == k) {
            errors.push(FieldError {
                field: k.clone(),
                message: format!("`{k}` is not an input of this workflow"),
            });
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(Error::InvalidInput(errors))
    }
}

/// Extra names bound while a handler runs.
#[derive(Default, Clone, Copy)]
struct Extra<'a> {
    signal: Option<(&'a Value, &'a Actor)>,
    result: Option<&'a Value>,
    error: Option<&'a str>,
}

const VARS_BIT: u16 = 1 << 1;
const ITEM_BIT: u16 = 1 << 6;
const TIMERS_BIT: u16 = 1 << 8;

/// The expression context of one handler, built on first use (most steps
/// evaluate nothing) and kept up to date as actions set variables.
#[derive(Default)]
struct Cx<'a> {
    built: Option<Context>,
    /// Which context names are bound in `built` (bits as in `rules::CONTEXT_NAMES`).
    bound: u16,
    extra: Extra<'a>,
    /// The current `for_each` item.
    item: Option<Value>,
}

impl<'a> Cx<'a> {
    fn with(extra: Extra<'a>) -> Self {
        Cx {
            built: None,
            bound: 0,
            extra,
            item: None,
        }
    }

    /// Read a plain path (`input.x`, `vars.y.z`, `signal`) from the JSON.
    /// None: not readable that way (the caller asks rhai, which also gives
    /// the error for a path through something that is not a map).
    fn read(&self, s: &Instance, path: &[String]) -> Option<Value> {
        let (root, rest) = path.split_first()?;
        let (mut v, rest): (&Value, &[String]) = match root.as_str() {
            "input" => (&*s.input, rest),
            "vars" => {
                let (first, more) = rest.split_first()?;
                (s.vars.get(first).unwrap_or(&Value::Null), more)
            }
            "signal" => (self.extra.signal?.0, rest),
            "result" => (self.extra.result?, rest),
            "item" => (self.item.as_ref()?, rest),
            _ => return None,
        };
        for field in rest {
            match v {
                Value::Object(m) => v = m.get(field).unwrap_or(&Value::Null),
                Value::Null => return Some(Value::Null),
                _ => return None,
            }
        }
        Some(v.clone())
    }

    /// The rhai context with at least the names in `need` bound.
    fn get(&mut self, at: DateTime<Utc>, s: &Instance, need: u16) -> &mut Context {
        let cx = self.built.get_or_insert_with(Context::new);
        let missing = need & !self.bound;
        if missing != 0 {
            let has = |name: &str| {
                let i = rules::CONTEXT_NAMES
                    .iter()
                    .position(|n| *n == name)
                    .expect("context name");
                missing & (1 << i) != 0
            };
            if has("input") {
                cx.set_dynamic("input", s.input_dynamic.get(&s.input));
            }
            if has("vars") {
                cx.set_dynamic("vars", s.vars_dynamic.get_with(|| vars_dynamic(&s.vars)));
            }
            if has("now") {
                cx.set_dynamic("now", at.to_rfc3339().into());
            }
            if let Some((payload, actor)) = self.extra.signal {
                if has("signal") {
                    cx.set("signal", payload);
                }
                if has("actor") {
                    let mut a = rhai::Map::new();
                    a.insert("role".into(), actor.role.as_str().into());
                    a.insert("id".into(), actor.id.as_str().into());
                    let name = actor
                        .name
                        .as_deref()
                        .map(Into::into)
                        .unwrap_or(rhai::Dynamic::UNIT);
                    a.insert("name".into(), name);
                    cx.set_dynamic("actor", a.into());
                }
            }
            if let (Some(r), true) = (self.extra.result, has("result")) {
                cx.set("result", r);
            }
            if let (Some(e), true) = (self.extra.error, has("error")) {
                cx.set_dynamic("error", e.into());
            }
            if let (Some(item), true) = (&self.item, has("item")) {
                cx.set("item", item);
            }
            self.bound |= missing;
        }
        cx
    }

    fn var_changed(&mut self, name: &str, value: &Value) {
        if let (Some(c), true) = (&mut self.built, self.bound & VARS_BIT != 0) {
            c.set_field("vars", name, value);
        }
    }
}

struct Run<'p> {
    program: &'p Program,
    effects: Vec<Effect>,
    decisions: Vec<Decision>,
    at: DateTime<Utc>,
}

impl Run<'_> {
    fn rules(&self) -> &rules::Rules {
        &self.program.rules
    }

    fn guard(&mut self, e: &rules::Expr, cx: &mut Cx, s: &Instance) -> Result<bool, Error> {
        let fast = e
            .path
            .as_deref()
            .and_then(|p| cx.read(s, p))
            .and_then(|v| v.as_bool());
        let result = match fast {
            Some(b) => b,
            None => self
                .program
                .rules
                .eval_bool(e, self.context(cx, s, e.roots))?,
        };
        self.decisions.push(Decision {
            origin: e.origin.clone(),
            expr: e.source.clone(),
            result,
        });
        Ok(result)
    }

    fn eval(&self, e: &rules::Expr, cx: &mut Cx, s: &Instance) -> Result<Value, Error> {
        if let Some(v) = e.path.as_deref().and_then(|p| cx.read(s, p)) {
            return Ok(v);
        }
        Ok(self.rules().eval(e, self.context(cx, s, e.roots))?)
    }

    /// The rhai context with the names in `roots` bound, `timers` (the
    /// program's timer durations and labels) among them.
    fn context<'c>(&self, cx: &'c mut Cx, s: &Instance, roots: u16) -> &'c mut Context {
        let timers = roots & TIMERS_BIT != 0 && cx.bound & TIMERS_BIT == 0;
        let c = cx.get(self.at, s, roots);
        if timers {
            c.set("timers", &self.program.timer_values);
        }
        c
    }

    fn render(&self, t: &Template, cx: &mut Cx, s: &Instance) -> Result<Value, Error> {
        Ok(match t {
            Template::Literal(v) => v.clone(),
            Template::Expr(e) => self.eval(e, cx, s)?,
            Template::Interpolate(pieces) => {
                let mut out = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => out.push_str(t),
                        Piece::Expr(e) => match self.eval(e, cx, s)? {
                            Value::String(x) => out.push_str(&x),
                            Value::Null => {}
                            other => out.push_str(&other.to_string()),
                        },
                    }
                }
                Value::String(out)
            }
            Template::List(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render(i, cx, s))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.clone(), self.render(v, cx, s)?);
                }
                Value::Object(m)
            }
        })
    }

    fn next_id(s: &mut Instance, prefix: char) -> String {
        s.next_id += 1;
        format!("{prefix}{}", s.next_id)
    }

    fn signal(
        &mut self,
        s: &mut Instance,
        name: &str,
        payload: &Value,
        actor: &Actor,
    ) -> Result<(), Error> {
        let p = self.program;
        let spec = p
            .signals
            .get(name)
            .ok_or_else(|| Error::UnknownSignal(name.to_string()))?;
        let state = p
            .state(&s.state)
            .expect("instance state exists in its program");
        let handlers = state.on.get(name).ok_or_else(|| Error::NotAccepted {
            signal: name.to_string(),
            state: s.state.clone(),
        })?;
        if !spec.actors.is_empty() && !spec.actors.contains(&actor.role) {
            return Err(Error::ActorNotAllowed {
                signal: name.to_string(),
                role: actor.role.clone(),
            });
        }
        let payload = match &spec.form {
            Some(form) => form.validate(payload).map_err(Error::InvalidPayload)?,
            None => payload.clone(),
        };
        let mut cx = Cx::with(Extra {
            signal: Some((&payload, actor)),
            ..Default::default()
        });
        for h in handlers {
            if let Some(g) = &h.guard {
                if !self.guard(g, &mut cx, s)? {
                    continue;
                }
            }
            let mut refused = Vec::new();
            for c in &h.checks {
                if !self.guard(&c.expr, &mut cx, s)? {
                    refused.push(FieldError {
                        field: c.field.clone().unwrap_or_default(),
                        message: c.message.clone(),
                    });
                }
            }
            if !refused.is_empty() {
                return Err(Error::InvalidPayload(refused));
            }
            return self.handle(s, h, &mut cx);
        }
        Err(Error::NotAccepted {
            signal: name.to_string(),
            state: s.state.clone(),
        })
    }

    fn timer(&mut self, s: &mut Instance, id: &str) -> Result<Option<String>, Error> {
        let Some(t) = s.timers.remove(id) else {
            return Ok(Some(format!("timer {id} is not pending")));
        };
        let state = self.program.state(&s.state).expect("state exists");
        let Some(spec) = state.timers.iter().find(|x| x.name == t.name) else {
            return Ok(Some(format!(
                "timer {id} belongs to no timer of `{}`",
                s.state
            )));
        };
        let mut cx = Cx::default();
        if let Some(g) = &spec.guard {
            if !self.guard(g, &mut cx, s)? {
                return Ok(None);
            }
        }
        self.run_actions(s, &spec.actions, &mut cx)?;
        if let Some(to) = spec.goto {
            self.goto(s, to)?;
        }
        Ok(None)
    }

    fn activity(
        &mut self,
        s: &mut Instance,
        id: &str,
        outcome: Result<&Value, &String>,
    ) -> Result<Option<String>, Error> {
        let Some(call) = s.activities.remove(id) else {
            return Ok(Some(format!("activity {id} is not pending")));
        };
        if s.status == Status::Completed || call.entry != s.entry {
            return Ok(Some(format!(
                "activity {id} finished after its state was left"
            )));
        }
        let spec = &self.program.activities[call.spec];
        match outcome {
            Ok(result) => {
                if let Some(var) = &spec.result {
                    Arc::make_mut(&mut s.vars).insert(var.clone(), result.clone());
                    s.vars_dynamic = DynamicCache::default();
                }
                let mut cx = Cx::with(Extra {
                    result: Some(result),
                    ..Default::default()
                });
                self.handle_first(s, &spec.on_success, &mut cx)?;
                Ok(None)
            }
            Err(error) => match spec.on_failure.as_slice() {
                [] => Ok(Some(format!(
                    "activity {} failed and has no on_failure: {error}",
                    spec.name
                ))),
                handlers => {
                    let mut cx = Cx::with(Extra {
                        error: Some(error),
                        ..Default::default()
                    });
                    self.handle_first(s, handlers, &mut cx)?;
                    Ok(None)
                }
            },
        }
    }

    fn child(
        &mut self,
        s: &mut Instance,
        id: &str,
        status: &Option<String>,
        output: &Value,
        error: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let Some(call) = s.children.remove(id) else {
            return Ok(Some(format!("child {id} is not pending")));
        };
        if s.status == Status::Completed || call.entry != s.entry {
            return Ok(Some(format!(
                "child {id} finished after its state was left"
            )));
        }
        let result = match error {
            None => serde_json::json!({ "status": status, "output": output }),
            Some(e) => serde_json::json!({ "status": status, "output": output, "error": e }),
        };
        let mut cx = Cx::with(Extra {
            result: Some(&result),
            error,
            ..Default::default()
        });
        let program = self.program;
        self.handle_first(s, &program.children[call.spec].on_complete, &mut cx)?;
        Ok(None)
    }

    /// Run the first handler whose guard holds (none may).
    fn handle_first(
        &mut self,
        s: &mut Instance,
        handlers: &[Handler],
        cx: &mut Cx,
    ) -> Result<(), Error> {
        for h in handlers {
            if let Some(g) = &h.guard {
                if !self.guard(g, cx, s)? {
                    continue;
                }
            }
            return self.handle(s, h, cx);
        }
        Ok(())
    }

    fn handle(&mut self, s: &mut Instance, h: &Handler, cx: &mut Cx) -> Result<(), Error> {
        self.run_actions(s, &h.actions, cx)?;
        if let Some(to) = h.goto {
            self.goto(s, to)?;
        }
        Ok(())
    }

    fn run_actions(
        &mut self,
        s: &mut Instance,
        actions: &[Action],
        cx: &mut Cx,
    ) -> Result<(), Error> {
        for a in actions {
            if let Some(g) = &a.guard {
                if !self.guard(g, cx, s)? {
                    continue;
                }
            }
            match &a.kind {
                ActionKind::Set(assignments) => {
                    for (var, t) in assignments {
                        let v = self.render(t, cx, s)?;
                        // Later expressions see the new value.
                        cx.var_changed(var, &v);
                        Arc::make_mut(&mut s.vars).insert(var.clone(), v);
                        s.vars_dynamic = DynamicCache::default();
                    }
                }
                ActionKind::Activity(i) => {
                    let spec = &self.program.activities[*i];
                    let args = self.render(&spec.args, cx, s)?;
                    let id = Self::next_id(s, 'a');
                    s.activities.insert(
                        id.clone(),
                        PendingCall {
                            spec: *i,
                            entry: s.entry,
                        },
                    );
                    self.effects.push(Effect::ScheduleActivity {
                        id,
                        name: spec.name.clone(),
                        args,
                        retry: spec.retry,
                    });
                }
                ActionKind::StartChild(i) => self.start_children(s, *i, cx)?,
            }
        }
        Ok(())
    }

    /// Start the children of `start_child` action `i`: one, or one per item
    /// of its `for_each` list.
    fn start_children(&mut self, s: &mut Instance, i: usize, cx: &mut Cx) -> Result<(), Error> {
        let spec = &self.program.children[i];
        let items = match &spec.for_each {
            None => vec![None],
            Some(e) => match self.eval(e, cx, s)? {
                Value::Array(items) => items.into_iter().map(Some).collect(),
                Value::Null => vec![],
                other => {
                    return Err(Error::Rule(rules::Error::Conversion {
                        origin: e.origin.to_string(),
                        message: format!("for_each gave {other}, expected a list"),
                    }))
                }
            },
        };
        for item in items {
            cx.item = item;
            // A new item: rebind it on next use.
            cx.bound &= !ITEM_BIT;
            let input = self.render(&spec.input, cx, s)?;
            let key = match &spec.key {
                Some(k) => match self.eval(k, cx, s)? {
                    Value::String(x) => Some(x),
                    Value::Null => None,
                    other => Some(other.to_string()),
                },
                None => None,
            };
            let id = Self::next_id(s, 'c');
            if !spec.on_complete.is_empty() {
                s.children.insert(
                    id.clone(),
                    PendingCall {
                        spec: i,
                        entry: s.entry,
                    },
                );
            }
            self.effects.push(Effect::StartChild {
                id,
                workflow: spec.workflow.clone(),
                input,
                key,
            });
        }
        Ok(())
    }

    fn goto(&mut self, s: &mut Instance, to: StateId) -> Result<(), Error> {
        // Leaving: the state's timers are cancelled.
        for id in std::mem::take(&mut s.timers).into_keys() {
            self.effects.push(Effect::CancelTimer { id });
        }
        self.enter(s, to)
    }

    fn enter(&mut self, s: &mut Instance, to: StateId) -> Result<(), Error> {
        let spec = &self.program.states[to];
        s.state = spec.name.clone();
        s.entry += 1;
        s.entered_at = self.at;
        let mut cx = Cx::default();
        self.run_actions(s, &spec.on_enter, &mut cx)?;
        if let Some(term) = &spec.terminal {
            for id in std::mem::take(&mut s.timers).into_keys() {
                self.effects.push(Effect::CancelTimer { id });
            }
            let output = match &term.output {
                Some(t) => self.render(t, &mut cx, s)?,
                None => Value::Null,
            };
            s.status = Status::Completed;
            s.status_label = term.status.clone();
            s.output = output.clone();
            self.effects.push(Effect::Complete {
                state: spec.name.clone(),
                status: term.status.clone(),
                output,
            });
            return Ok(());
        }
        for t in &spec.timers {
            let base = if t.from_start {
                s.started_at
            } else {
                s.entered_at
            };
            let due_at =
                base + chrono::Duration::from_std(t.after).unwrap_or(chrono::Duration::MAX);
            let id = Self::next_id(s, 't');
            s.timers.insert(
                id.clone(),
                PendingTimer {
                    name: t.name.clone(),
                    entry: s.entry,
                    due_at,
                },
            );
            self.effects.push(Effect::StartTimer {
                id,
                name: t.name.clone(),
                due_at,
            });
        }
        Ok(())
    }
}

fn vars_dynamic(vars: &BTreeMap<String, Value>) -> rhai::Dynamic {
    let mut m = rhai::Map::new();
    for (k, v) in vars {
        m.insert(k.as_str().into(), rules::to_dynamic(v));
    }
    m.into()
}
