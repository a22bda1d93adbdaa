//! What was written: a serde mirror of the YAML files in `workflows/`.
//!
//! These types are deliberately dumb. They accept exactly the keys the
//! language defines (`deny_unknown_fields`), hold strings where the author
//! wrote strings (durations, expressions, state names) and never resolve a
//! name. `compile` turns them into a checked `Program`; nothing else should
//! consume them. Positions of values come from [`source::SourceMap`], built
//! beside serde_yaml from the same text.

pub mod source;

use serde::{de, Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// One YAML file of `workflows/`, recognised by its top-level key.
#[derive(Debug, Clone)]
pub enum File {
    Workflow(Box<WorkflowDef>),
    Form(FormDef),
    Schedules(SchedulesDef),
    Activities(ActivitiesDef),
    Data(DataDef),
}

/// `data:` at the top (`workflows/data.yaml`): the files beside it that are
/// reference data the host reads and checks itself, by path relative to
/// this file's directory. The compiler skips them; a file that is neither a
/// definition nor declared here is an error naming it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataDef {
    pub data: Vec<String>,
}

/// `activities:` at the top of `workflows/activities.yaml`: the catalog of
/// activities the host application implements, with default retry policies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivitiesDef {
    pub activities: BTreeMap<String, ActivityDeclDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityDeclDef {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub retry: Option<RetryDef>,
}

/// A workflow definition (`workflow: name` at the top).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    pub workflow: String,
    pub version: u32,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Typed input the workflow is started with.
    #[serde(default)]
    pub input: BTreeMap<String, VarDef>,
    /// Workflow variables with their initial values.
    #[serde(default)]
    pub variables: BTreeMap<String, VarDef>,
    /// Search attributes (any lower-case name → template), stored with the
    /// instance (`instance_search`) and searched by (name, value).
    #[serde(default)]
    pub search: BTreeMap<String, serde_yaml::Value>,
    /// Signals this workflow accepts, with their payload forms.
    #[serde(default)]
    pub signals: BTreeMap<String, SignalDef>,
    pub initial: String,
    pub states: BTreeMap<String, StateDef>,
    /// A projection the host keeps of this workflow's instances (the
    /// warnings list, say): after every committed step the runtime tells
    /// the host's hook of that name, durably (an outbox row written in the
    /// step's own transaction).
    #[serde(default)]
    pub projection: Option<String>,
}

/// A typed input field or variable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VarDef {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<serde_yaml::Value>,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignalDef {
    #[serde(default)]
    pub label: Option<String>,
    /// Roles allowed to send it (`enterprise`, `district`, ...). Empty: any.
    #[serde(default)]
    pub actors: Vec<String>,
    /// A form defined in `workflows/forms/` validating the payload.
    #[serde(default)]
    pub form: Option<String>,
    /// Or fields given inline.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateDef {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub terminal: bool,
    /// Status label of a terminal state, e.g. `销号办结`.
    #[serde(default)]
    pub status: Option<String>,
    /// Output of the workflow when this terminal state is reached.
    #[serde(default)]
    pub output: Option<serde_yaml::Value>,
    #[serde(default)]
    pub on_enter: Vec<ActionDef>,
    #[serde(default)]
    pub timers: BTreeMap<String, TimerDef>,
    /// Transitions by signal name; each is one handler or a list tried in order.
    #[serde(default)]
    pub on: BTreeMap<String, OneOrMany<HandlerDef>>,
}

/// Where a timer's duration is counted from.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimerAnchor {
    /// Entry into the state that declares the timer (the default).
    #[default]
    State,
    /// The start of the workflow.
    Start,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimerDef {
    /// What the timer's firing means, as histories and pages show it.
    #[serde(default)]
    pub label: Option<String>,
    pub after: String,
    #[serde(default)]
    pub from: TimerAnchor,
    /// A deadline: while it is pending its due time is what pages show as
    /// the current deadline (处置期限).
    #[serde(default)]
    pub deadline: bool,
    /// Guard evaluated when the timer fires; false means it does nothing.
    #[serde(default, rename = "if")]
    pub guard: Option<String>,
    #[serde(default, rename = "do")]
    pub actions: Vec<ActionDef>,
    #[serde(default)]
    pub goto: Option<String>,
}

/// What to do on a signal, an activity's result or failure, or a child's end.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HandlerDef {
    #[serde(default, rename = "if")]
    pub guard: Option<String>,
    /// Checks on the signal; a failing check refuses the signal with its message.
    #[serde(default)]
    pub validate: Vec<CheckDef>,
    #[serde(default, rename = "do")]
    pub actions: Vec<ActionDef>,
    #[serde(default)]
    pub goto: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDef {
    pub check: String,
    pub message: String,
    #[serde(default)]
    pub field: Option<String>,
}

/// One action. Exactly one of `set`, `activity`, `start_child` is given.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionDef {
    /// Assign variables. Values are YAML literals or `${expression}`.
    #[serde(default)]
    pub set: Option<BTreeMap<String, serde_yaml::Value>>,
    /// Schedule an activity by name.
    #[serde(default)]
    pub activity: Option<String>,
    #[serde(default)]
    pub args: Option<serde_yaml::Value>,
    #[serde(default)]
    pub retry: Option<RetryDef>,
    /// Variable receiving the activity's result.
    #[serde(default)]
    pub result: Option<String>,
    /// One handler or a list tried in order (the first whose `if` holds).
    #[serde(default)]
    pub on_success: Option<OneOrMany<HandlerDef>>,
    #[serde(default)]
    pub on_failure: Option<OneOrMany<HandlerDef>>,
    /// Start a child workflow by name.
    #[serde(default)]
    pub start_child: Option<String>,
    #[serde(default)]
    pub input: Option<serde_yaml::Value>,
    /// Expression yielding a list: one child per item, bound to `item`.
    #[serde(default)]
    pub for_each: Option<String>,
    /// Expression giving each child a stable key (de-duplication, idempotency).
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub on_child_complete: Option<OneOrMany<HandlerDef>>,
    /// Guard for this single action.
    #[serde(default, rename = "if")]
    pub guard: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryDef {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub backoff: Option<String>,
    #[serde(default)]
    pub max_backoff: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A form (`form: name` at the top of `workflows/forms/*.yaml`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FormDef {
    pub form: String,
    #[serde(default)]
    pub title: Option<String>,
    /// Text shown above the fields (for example Attachment 1).
    #[serde(default)]
    pub notice: Option<String>,
    pub fields: Vec<FieldDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub min_length: Option<usize>,
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub help: Option<String>,
    #[serde(default)]
    pub default: Option<serde_yaml::Value>,
}

/// `schedules:` at the top of `workflows/schedules.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulesDef {
    pub schedules: Vec<ScheduleDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    pub name: String,
    pub workflow: String,
    pub timezone: String,
    /// Wall-clock times `HH:MM` in `timezone`.
    pub at: Vec<String>,
    /// `none`, `once` (default) or `all`: what to do about slots missed while down.
    #[serde(default)]
    pub catch_up: Option<String>,
    #[serde(default)]
    pub input: Option<serde_yaml::Value>,
}

/// One item or a list of them; errors inside keep their positions.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a handler (a map) or a list of handlers")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(a)).map(OneOrMany::One)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(a)).map(OneOrMany::Many)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A syntax or shape error of one file, with serde_yaml's position.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parse one file's text, recognising its kind by its top-level key.
pub fn parse(text: &str) -> Result<File, ParseError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(yaml_error)?;
    let map = value.as_mapping().ok_or_else(|| ParseError {
        line: 1,
        col: 1,
        message: format!("expected a mapping with {KINDS} at the top"),
    })?;
    let has = |k: &str| map.contains_key(serde_yaml::Value::String(k.into()));
    // Deserialize from the text again (not from `value`) so errors keep positions.
    fn of<T: de::DeserializeOwned>(text: &str) -> Result<T, ParseError> {
        serde_yaml::from_str(text).map_err(yaml_error)
    }
    if has("workflow") {
        of(text).map(|w| File::Workflow(Box::new(w)))
    } else if has("form") {
        of(text).map(File::Form)
    } else if has("schedules") {
        of(text).map(File::Schedules)
    } else if has("activities") {
        of(text).map(File::Activities)
    } else if has("data") {
        of(text).map(File::Data)
    } else {
        Err(ParseError {
            line: 1,
            col: 1,
            message: format!("unrecognised file: expected {KINDS} at the top"),
        })
    }
}

const KINDS: &str = "`workflow:`, `form:`, `schedules:`, `activities:` or `data:`";

fn yaml_error(e: serde_yaml::Error) -> ParseError {
    let (line, col) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let mut message = e.to_string();
    // serde_yaml appends " at line L column C"; the diagnostic prints the position itself.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    ParseError { line, col, message }
}
