//! Scenario cases as data (DESIGN.md convention 5): each
//! `tests/scenarios/*.yaml` starts one workflow of the real `workflows/`
//! (with the real `rules/`) on the in-memory `TestRuntime`, answers its
//! activities as the case says, sends signals and moves the clock. The
//! trace — after each step: every instance's state, the variables it set,
//! its pending timers, and every activity call with its arguments — is an
//! `insta` snapshot in `tests/scenarios/snapshots/`, so a policy change (a
//! duration, a text, a transition) shows as a readable diff of it.
//!
//! A step may also say which state it must end in (`expect:`), and a signal
//! the definition must refuse says `refused: true`; anything else refused,
//! or an error, fails the case.
//!
//! New or changed case: `INSTA_UPDATE=always cargo test -p engine --test
//! scenarios`, then read the `.snap` diff before committing it.

use chrono::{DateTime, Utc};
use engine::testing::{Call, TestRuntime};
use engine::Actor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One case, as written in its YAML file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// What the case shows (kept at the top of the snapshot).
    description: String,
    workflow: String,
    /// When the instance starts (the clock's time).
    start: DateTime<Utc>,
    input: Value,
    /// Activity answers by activity name, used in order; the last one
    /// repeats. An activity with none answers `null`.
    #[serde(default)]
    answers: BTreeMap<String, Vec<Answer>>,
    #[serde(default)]
    steps: Vec<Step>,
    /// The state the instance is in right after it started.
    #[serde(default)]
    expect: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum Answer {
    Ok { ok: Value },
    Failed { error: String },
}

/// Either a signal or a clock move.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// Move the clock by this long (`6h`, `30m`), firing what falls due.
    advance: Option<String>,
    signal: Option<String>,
    actor: Option<Actor>,
    #[serde(default)]
    payload: Value,
    /// The definition must refuse this signal.
    #[serde(default)]
    refused: bool,
    /// The state the started instance must be in after the step.
    expect: Option<String>,
}

/// What the snapshot shows after one step.
#[derive(Serialize)]
struct Record {
    step: String,
    /// Time since the start.
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    calls: Vec<CallView>,
    instances: BTreeMap<String, InstanceView>,
}

#[derive(Serialize)]
struct CallView {
    instance: String,
    id: String,
    name: String,
    args: Value,
}

#[derive(Serialize)]
struct InstanceView {
    /// The input, in the step that started the instance.
    #[serde(skip_serializing_if = "Value::is_null")]
    input: Value,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// Variables whose value changed in this step.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    set: BTreeMap<String, Value>,
    /// Pending timers: name -> due, as time since the start.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    timers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    output: Value,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn runtime(s: &Scenario) -> TestRuntime {
    let (w, r) = engine::load_dirs(&root().join("workflows"), &root().join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let mut answers = s.answers.clone();
    TestRuntime::new(bundle.workflows.values().cloned(), s.start).with_responder(Box::new(
        move |name, _args| {
            let answer = match answers.get_mut(name) {
                None => return Ok(Value::Null),
                Some(list) if list.len() > 1 => list.remove(0),
                Some(list) => list[0].clone(),
            };
            match answer {
                Answer::Ok { ok } => Ok(ok),
                Answer::Failed { error } => Err(error),
            }
        },
    ))
}

/// `+6h`, `+1d 2h` (humantime), `+0s` at the start.
fn since(start: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let d = (t - start).to_std().unwrap_or_default();
    format!("+{}", humantime::format_duration(d))
}

/// Runs one case and returns its trace; panics on what the case forbids.
fn run(name: &str, s: &Scenario) -> Vec<Record> {
    let mut rt = runtime(s);
    let mut seen: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    rt.start(&s.workflow, "main", s.input.clone())
        .unwrap_or_else(|e| panic!("{name}: start: {e}"));
    check_state(name, "start", &rt, s.expect.as_deref());
    let mut trace = vec![record(&rt, s.start, "start".into(), None, 0, &mut seen)];
    for (i, step) in s.steps.iter().enumerate() {
        let calls_before = rt.calls.len();
        let (label, refused) = take_step(&mut rt, step);
        let label = format!("{}. {label}", i + 1);
        match (&refused, step.refused) {
            (Some(e), false) => panic!("{name}: step {label}: {e}"),
            (None, true) => panic!("{name}: step {label} was not refused"),
            _ => {}
        }
        check_state(name, &label, &rt, step.expect.as_deref());
        trace.push(record(
            &rt,
            s.start,
            label,
            refused,
            calls_before,
            &mut seen,
        ));
    }
    trace
}

/// Does one step; returns its label and, when refused, why.
fn take_step(rt: &mut TestRuntime, step: &Step) -> (String, Option<String>) {
    match (&step.advance, &step.signal) {
        (Some(d), None) => {
            let d = humantime::parse_duration(d).expect("advance: a duration such as 6h");
            let r = rt.advance(d).err().map(why);
            (format!("advance {}", humantime::format_duration(d)), r)
        }
        (None, Some(sig)) => {
            let actor = step.actor.clone().expect("a signal needs an actor");
            let label = format!("signal {sig} by {} {}", actor.role, actor.id);
            let r = rt.signal("main", sig, step.payload.clone(), actor);
            (label, r.err().map(why))
        }
        _ => panic!("a step is either `advance` or `signal`"),
    }
}

/// Why a step was refused, with the messages of refused fields.
fn why(e: engine::testing::Error) -> String {
    use engine::interpreter::Error::{InvalidInput, InvalidPayload};
    match &e {
        engine::testing::Error::Step(InvalidPayload(fields) | InvalidInput(fields)) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| match f.field.as_str() {
                    "" => f.message.clone(),
                    field => format!("{field}: {}", f.message),
                })
                .collect();
            format!("{e} ({})", fields.join("; "))
        }
        _ => e.to_string(),
    }
}

fn check_state(name: &str, step: &str, rt: &TestRuntime, expect: Option<&str>) {
    if let Some(want) = expect {
        assert_eq!(rt.state("main").state, want, "{name}: after {step}");
    }
}

fn record(
    rt: &TestRuntime,
    start: DateTime<Utc>,
    step: String,
    refused: Option<String>,
    calls_before: usize,
    seen: &mut BTreeMap<String, BTreeMap<String, Value>>,
) -> Record {
    let calls = rt.calls[calls_before..]
        .iter()
        .map(|c: &Call| CallView {
            instance: c.instance.clone(),
            id: c.id.clone(),
            name: c.name.clone(),
            args: c.args.clone(),
        })
        .collect();
    let instances = rt
        .instances
        .iter()
        .map(|(id, inst)| {
            let s = &inst.state;
            let input = match seen.contains_key(id) {
                true => Value::Null,
                false => (*s.input).clone(),
            };
            let before = seen.entry(id.clone()).or_default();
            let set = s
                .vars
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            *before = (*s.vars).clone();
            let timers = s
                .timers
                .values()
                .map(|t| (t.name.clone(), since(start, t.due_at)))
                .collect();
            let view = InstanceView {
                input,
                state: s.state.clone(),
                status: s.status_label.clone(),
                set,
                timers,
                output: s.output.clone(),
            };
            (id.clone(), view)
        })
        .collect();
    Record {
        step,
        at: since(start, rt.now()),
        refused,
        calls,
        instances,
    }
}

#[test]
fn scenarios_match_their_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the cases are in {}", dir.display());
    for path in files {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let s: Scenario =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let trace = run(&name, &s);
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(dir.join("snapshots"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_description(s.description.trim());
        settings.set_omit_expression(true);
        settings.bind(|| insta::assert_yaml_snapshot!(name, trace));
    }
}
