//! Interpreter steps per second on workflows/warning.yaml, rhai expressions,
//! checks and payload validation included. Target: 200,000 steps/s on one core.
//!
//! Each iteration runs one warning through its longest ordinary path:
//! start, reminder completion, +6 h and +8 h timers with their activities,
//! the overdue notice, a disposal, a return with a comment, a second
//! disposal, the 12 h review timer and its escalation, and the approval.

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::interpreter::{step, Actor, Effect, Input, Instance};
use serde_json::{json, Value};
use std::hint::black_box;
use std::path::Path;

fn program() -> std::sync::Arc<engine::Program> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let b = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    b.workflows["warning"].clone()
}

/// Drive one instance; returns the number of steps taken.
fn run(p: &engine::Program, t0: DateTime<Utc>) -> usize {
    let mut steps = 0;
    let mut state: Option<Instance> = None;
    let mut timers: Vec<(DateTime<Utc>, String)> = Vec::new();
    let mut activities: Vec<String> = Vec::new();
    let mut apply = |state: &mut Option<Instance>, input: Input, timers: &mut Vec<(DateTime<Utc>, String)>, activities: &mut Vec<String>| {
        let t = step(p, state.as_ref(), &input).expect("step");
        steps += 1;
        for e in t.effects {
            match e {
                Effect::StartTimer { id, due_at, .. } => timers.push((due_at, id)),
                Effect::CancelTimer { id } => timers.retain(|x| x.1 != id),
                Effect::ScheduleActivity { id, .. } => activities.push(id),
                _ => {}
            }
        }
        *state = Some(t.state);
    };
    let input = json!({
        "warning_id": "w1", "enterprise_id": "e1", "enterprise_name": "成都示例建设有限公司",
        "district": "jinjiang", "district_name": "锦江区住建交局", "person_id": "510104********1234",
        "person_name": "张三", "reason": "核酸阳性",
    });
    let ent = Actor { role: "enterprise".into(), id: "e1".into(), name: None };
    let dis = Actor { role: "district".into(), id: "jinjiang".into(), name: None };
    let disposal = json!({"reported_to_community": true, "community": "书院街社区", "person_situation": "集中隔离", "measures": ["办公区域清洁消毒"]});
    let complete_all = |state: &mut Option<Instance>, at, timers: &mut Vec<_>, activities: &mut Vec<String>, apply: &mut dyn FnMut(&mut Option<Instance>, Input, &mut Vec<(DateTime<Utc>, String)>, &mut Vec<String>)| {
        while let Some(id) = activities.pop() {
            apply(state, Input::ActivityCompleted { at, id, result: Value::Null }, timers, activities);
        }
    };
    apply(&mut state, Input::Started { at: t0, input }, &mut timers, &mut activities);
    complete_all(&mut state, t0, &mut timers, &mut activities, &mut apply);
    // Fire the three timers of awaiting_disposal.
    timers.sort();
    for (due, id) in std::mem::take(&mut timers) {
        apply(&mut state, Input::TimerFired { at: due, id }, &mut timers, &mut activities);
        complete_all(&mut state, due, &mut timers, &mut activities, &mut apply);
    }
    let at = t0 + Duration::hours(9);
    apply(&mut state, Input::Signal { at, name: "dispose".into(), payload: disposal.clone(), actor: ent.clone() }, &mut timers, &mut activities);
    apply(&mut state, Input::Signal { at, name: "return".into(), payload: json!({"comment": "请补充报备社区情况"}), actor: dis.clone() }, &mut timers, &mut activities);
    complete_all(&mut state, at, &mut timers, &mut activities, &mut apply);
    apply(&mut state, Input::Signal { at, name: "dispose".into(), payload: disposal, actor: ent }, &mut timers, &mut activities);
    for (due, id) in std::mem::take(&mut timers) {
        apply(&mut state, Input::TimerFired { at: due, id }, &mut timers, &mut activities);
        complete_all(&mut state, due, &mut timers, &mut activities, &mut apply);
    }
    apply(&mut state, Input::Signal { at: at + Duration::hours(13), name: "approve".into(), payload: Value::Null, actor: dis }, &mut timers, &mut activities);
    assert_eq!(state.as_ref().unwrap().status_label.as_deref(), Some("销号办结"));
    black_box(state);
    steps
}

fn bench(c: &mut Criterion) {
    let p = program();
    let t0: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
    let n = run(&p, t0);
    let mut g = c.benchmark_group("interpreter");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("warning_lifecycle_{n}_steps"), |b| b.iter(|| run(&p, t0)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
