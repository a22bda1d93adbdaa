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

// The allocator the server binary uses; the interpreter allocates on every step.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::Path;

fn program() -> std::sync::Arc<engine::Program> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let b = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    b.workflows["warning"].clone()
}

/// Feeds one instance its inputs and keeps its pending timers and activities.
struct Driver<'p> {
    program: &'p engine::Program,
    state: Option<Instance>,
    timers: Vec<(DateTime<Utc>, String)>,
    activities: Vec<String>,
    steps: usize,
}

impl Driver<'_> {
    fn apply(&mut self, input: Input) {
        let t = step(self.program, self.state.as_ref(), &input).expect("step");
        self.steps += 1;
        for e in t.effects {
            match e {
                Effect::StartTimer { id, due_at, .. } => self.timers.push((due_at, id)),
                Effect::CancelTimer { id } => self.timers.retain(|x| x.1 != id),
                Effect::ScheduleActivity { id, .. } => self.activities.push(id),
                _ => {}
            }
        }
        self.state = Some(t.state);
    }

    fn complete_activities(&mut self, at: DateTime<Utc>) {
        while let Some(id) = self.activities.pop() {
            self.apply(Input::ActivityCompleted {
                at,
                id,
                result: Value::Null,
            });
        }
    }

    fn fire_timers(&mut self) {
        let mut due = std::mem::take(&mut self.timers);
        due.sort();
        for (at, id) in due {
            self.apply(Input::TimerFired { at, id });
            self.complete_activities(at);
        }
    }

    fn signal(&mut self, at: DateTime<Utc>, name: &str, payload: Value, actor: &Actor) {
        self.apply(Input::Signal {
            at,
            name: name.into(),
            payload,
            actor: actor.clone(),
        });
        self.complete_activities(at);
    }
}

/// Drive one instance through its longest ordinary path; returns the steps taken.
fn run(p: &engine::Program, t0: DateTime<Utc>) -> usize {
    let mut d = Driver {
        program: p,
        state: None,
        timers: Vec::new(),
        activities: Vec::new(),
        steps: 0,
    };
    let input = json!({
        "warning_id": "w1", "enterprise_id": "e1", "enterprise_name": "成都示例建设有限公司",
        "district": "jinjiang", "district_name": "锦江区住建交局", "person_id": "510104********1234",
        "person_name": "张三", "reason": "核酸阳性",
    });
    let ent = Actor {
        role: "enterprise".into(),
        id: "e1".into(),
        name: None,
    };
    let dis = Actor {
        role: "district".into(),
        id: "jinjiang".into(),
        name: None,
    };
    let disposal = json!({"reported_to_community": true, "community": "书院街社区", "person_situation": "集中隔离", "measures": ["办公区域清洁消毒"]});
    d.apply(Input::Started { at: t0, input });
    d.complete_activities(t0);
    d.fire_timers(); // +6 h reminder, +8 h reminder, 8 h deadline
    let at = t0 + Duration::hours(9);
    d.signal(at, "dispose", disposal.clone(), &ent);
    d.signal(at, "return", json!({"comment": "请补充报备社区情况"}), &dis);
    d.signal(at, "dispose", disposal, &ent);
    d.fire_timers(); // 12 h review deadline and its escalation
    d.signal(at + Duration::hours(13), "approve", Value::Null, &dis);
    assert_eq!(
        d.state.as_ref().unwrap().status_label.as_deref(),
        Some("销号办结")
    );
    black_box(d.state);
    d.steps
}

fn bench(c: &mut Criterion) {
    let p = program();
    let t0: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
    let n = run(&p, t0);
    let mut g = c.benchmark_group("interpreter");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("warning_lifecycle_{n}_steps"), |b| {
        b.iter(|| run(&p, t0))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
