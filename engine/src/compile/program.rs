//! The checked, compiled form of a workflow: names resolved to indices,
//! durations parsed, expressions compiled. This is all the interpreter sees.

use super::form::FormSpec;
use crate::rules::{Expr, Rules};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub type StateId = usize;

/// The texts a program was compiled from. Stored with every published
/// version so that replaying an instance never re-reads a changed file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DefinitionSource {
    pub workflow: SourceFile,
    pub forms: Vec<SourceFile>,
    pub rules: Vec<SourceFile>,
    pub activities: Option<SourceFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceFile {
    /// Path as shown in diagnostics, e.g. `workflows/warning.yaml`.
    pub path: String,
    pub text: String,
}

#[derive(Debug)]
pub struct Program {
    pub name: String,
    pub version: u32,
    pub title: Option<String>,
    /// sha256 of the source texts: identifies this exact definition.
    pub hash: String,
    pub input: Vec<VarSpec>,
    pub vars: Vec<VarSpec>,
    pub search: Vec<(String, Template)>,
    pub signals: BTreeMap<String, SignalSpec>,
    pub states: Vec<StateSpec>,
    pub state_index: BTreeMap<String, StateId>,
    pub initial: StateId,
    /// Every activity call of the definition; pending activities refer to these by index.
    pub activities: Vec<ActivitySpec>,
    /// Every child-start of the definition, by index.
    pub children: Vec<ChildSpec>,
    pub rules: Arc<Rules>,
    pub source: DefinitionSource,
    /// The host's projection of this workflow's instances (`projection:`),
    /// kept by the runtime after every committed step.
    pub projection: Option<String>,
    /// What expressions read as `timers`: each timer's duration in words
    /// (`after`), `hours`, `minutes` and `label`, so a message can name a
    /// duration it cannot contradict.
    pub timer_values: Value,
}

impl Program {
    pub fn state(&self, name: &str) -> Option<&StateSpec> {
        self.state_index.get(name).map(|&i| &self.states[i])
    }

    /// The label the definition gives a state (its name when it has none).
    pub fn state_label<'a>(&'a self, name: &'a str) -> &'a str {
        self.state(name)
            .and_then(|s| s.label.as_deref())
            .unwrap_or(name)
    }

    /// A timer by its name in any state.
    pub fn timer(&self, name: &str) -> Option<&TimerSpec> {
        self.states
            .iter()
            .flat_map(|s| &s.timers)
            .find(|t| t.name == name)
    }
}

/// A duration in Chinese words as messages write it: `8小时`, `30分钟`,
/// `1小时30分钟`, `45秒`.
pub fn duration_zh(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}小时"));
    }
    if m > 0 {
        out.push_str(&format!("{m}分钟"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}秒"));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    String,
    Text,
    Int,
    Number,
    Bool,
    Date,
    Datetime,
    List,
    Map,
    Any,
}

impl ValueType {
    pub fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "string" => ValueType::String,
            "text" => ValueType::Text,
            "int" => ValueType::Int,
            "number" => ValueType::Number,
            "bool" => ValueType::Bool,
            "date" => ValueType::Date,
            "datetime" => ValueType::Datetime,
            "list" => ValueType::List,
            "map" => ValueType::Map,
            "any" => ValueType::Any,
            _ => return None,
        })
    }
    pub const NAMES: &'static str =
        "string, text, int, number, bool, date, datetime, list, map, any";

    /// Does `v` have this type (null never does)?
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            ValueType::String | ValueType::Text | ValueType::Date | ValueType::Datetime => {
                v.is_string()
            }
            ValueType::Int => v.is_i64() || v.is_u64(),
            ValueType::Number => v.is_number(),
            ValueType::Bool => v.is_boolean(),
            ValueType::List => v.is_array(),
            ValueType::Map => v.is_object(),
            ValueType::Any => !v.is_null(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VarSpec {
    pub name: String,
    pub ty: ValueType,
    pub required: bool,
    pub default: Value,
}

#[derive(Debug, Clone)]
pub struct SignalSpec {
    pub name: String,
    pub label: Option<String>,
    pub actors: Vec<String>,
    pub form: Option<Arc<FormSpec>>,
}

#[derive(Debug)]
pub struct StateSpec {
    pub name: String,
    pub label: Option<String>,
    /// Some for terminal states: the status label (e.g. `销号办结`).
    pub terminal: Option<Terminal>,
    pub on_enter: Vec<Action>,
    pub timers: Vec<TimerSpec>,
    pub on: BTreeMap<String, Vec<Handler>>,
}

#[derive(Debug)]
pub struct Terminal {
    pub status: Option<String>,
    pub output: Option<Template>,
}

#[derive(Debug)]
pub struct TimerSpec {
    pub name: String,
    pub label: Option<String>,
    pub after: Duration,
    /// Shown as the current deadline while pending (`deadline: true`).
    pub deadline: bool,
    pub from_start: bool,
    pub guard: Option<Expr>,
    pub actions: Vec<Action>,
    pub goto: Option<StateId>,
}

impl Program {
    /// The label the definition gives a timer (by its name in any state).
    pub fn timer_label(&self, name: &str) -> Option<&str> {
        self.timer(name).and_then(|t| t.label.as_deref())
    }
}

#[derive(Debug, Default)]
pub struct Handler {
    pub guard: Option<Expr>,
    pub checks: Vec<Check>,
    pub actions: Vec<Action>,
    pub goto: Option<StateId>,
}

#[derive(Debug)]
pub struct Check {
    pub expr: Expr,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct Action {
    pub guard: Option<Expr>,
    pub kind: ActionKind,
}

#[derive(Debug)]
pub enum ActionKind {
    Set(Vec<(String, Template)>),
    /// Index into `Program::activities`.
    Activity(usize),
    /// Index into `Program::children`.
    StartChild(usize),
}

#[derive(Debug)]
pub struct ActivitySpec {
    pub name: String,
    pub args: Template,
    pub retry: RetryPolicy,
    pub result: Option<String>,
    /// Tried in order; the first whose guard holds runs. Empty: none given.
    pub on_success: Vec<Handler>,
    pub on_failure: Vec<Handler>,
}

#[derive(Debug)]
pub struct ChildSpec {
    pub workflow: String,
    pub input: Template,
    pub for_each: Option<Expr>,
    pub key: Option<Expr>,
    pub on_complete: Vec<Handler>,
}

/// How the runtime retries an activity. Maps onto a Temporal RetryPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(with = "millis")]
    pub initial_backoff: Duration,
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    #[serde(with = "millis")]
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1` after `attempt` failed (1-based), doubling.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A value written in YAML: literals, `${expression}` and `text ${expr} text`.
#[derive(Debug, Clone)]
pub enum Template {
    Literal(Value),
    Expr(Expr),
    Interpolate(Vec<Piece>),
    List(Vec<Template>),
    Map(Vec<(String, Template)>),
}

#[derive(Debug, Clone)]
pub enum Piece {
    Text(String),
    Expr(Expr),
}
