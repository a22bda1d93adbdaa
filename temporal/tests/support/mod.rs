//! The conformance suite's scaffolding: one scenario runs against a
//! [`Backend`] — the embedded runtime ([`embedded::Embedded`]) or a real
//! Temporal dev server ([`temporal::OnTemporal`]) — and leaves a [`Trace`]:
//! the instances' snapshots at named checkpoints and the activity calls
//! the fakes received. The two traces must be equal.

#![allow(dead_code)]

pub mod defs;
pub mod embedded;
pub mod fakes;
pub mod temporal;

pub use defs::TestDefinitions;
pub use fakes::{Call, Fakes};

use engine::{Actor, Bundle, Instance};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a scenario drives: start, signal, let time pass, read an instance,
/// kill and restart the worker, publish a new version.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn fakes(&self) -> &Fakes;
    /// How long [`Checkpoints::reach`] waits for an instance to get where the
    /// scenario expects.
    fn patience(&self) -> Duration;
    async fn start(&self, workflow: &str, id: &str, input: Value);
    async fn signal(&self, id: &str, name: &str, payload: Value, actor: Actor);
    /// Let time pass until `t` after the scenario began: the embedded
    /// runtime moves its manual clock; on Temporal the test sleeps.
    async fn advance_to(&self, t: Duration);
    async fn instance(&self, id: &str) -> Option<Instance>;
    /// Give the worker a chance to carry out what is due now.
    async fn settle(&self);
    /// Stop the worker wherever it is (timers pending, an activity running).
    async fn kill_worker(&self);
    /// A new worker (as a restarted process), on the same store or server.
    async fn start_worker(&self);
    /// Make `bundle` what new instances start on; running ones keep theirs.
    async fn publish(&self, bundle: Bundle);
}

/// A scenario's record: checkpoints (label, instance id, normalised
/// snapshot) in order, and every distinct activity call.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Trace {
    pub checkpoints: Vec<(String, String, Value)>,
    /// (key, name, args), ordered by key; times masked.
    pub calls: Vec<(String, String, Value)>,
}

/// Collects a scenario's checkpoints.
pub struct Checkpoints<'a, B: Backend> {
    pub b: &'a B,
    pub trace: Trace,
}

impl<'a, B: Backend> Checkpoints<'a, B> {
    pub fn new(b: &'a B) -> Self {
        Checkpoints {
            b,
            trace: Trace::default(),
        }
    }

    /// Wait (up to the backend's patience) until instance `id` satisfies
    /// `want`, record its snapshot under `label` and return it.
    pub async fn reach(
        &mut self,
        label: &str,
        id: &str,
        want: impl Fn(&Instance) -> bool,
    ) -> Instance {
        let began = Instant::now();
        loop {
            self.b.settle().await;
            let current = self.b.instance(id).await;
            if let Some(i) = &current
                && want(i)
            {
                self.trace
                    .checkpoints
                    .push((label.to_string(), id.to_string(), normalise(i)));
                return i.clone();
            }
            if began.elapsed() > self.b.patience() {
                panic!(
                    "[{}] {label}: {id} did not get there within {:?}; it is {}",
                    self.b.name(),
                    self.b.patience(),
                    current
                        .map(|i| serde_json::to_string_pretty(&normalise(&i)).unwrap())
                        .unwrap_or_else(|| "not started".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the fakes have seen `n` calls whose key starts with
    /// `prefix` (each key once), then close the trace.
    pub async fn finish(mut self, prefix: &str, n: usize) -> Trace {
        let began = Instant::now();
        loop {
            self.b.settle().await;
            let calls = distinct_calls(&self.b.fakes().calls(), prefix);
            if calls.len() >= n || began.elapsed() > self.b.patience() {
                self.trace.calls = calls;
                return self.trace;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The calls whose key starts with `prefix`, one per key (a retried key
/// must carry the same name and args every time), ordered by key.
pub fn distinct_calls(calls: &[Call], prefix: &str) -> Vec<(String, String, Value)> {
    let mut by_key: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.key.starts_with(prefix)) {
        let args = mask_times(&c.args);
        if let Some((name, first)) = by_key.get(&c.key) {
            assert!(
                *name == c.name && *first == args,
                "key {} was called as {name} {first} and as {} {args}",
                c.key,
                c.name
            );
        }
        by_key.insert(c.key.clone(), (c.name.clone(), args));
    }
    by_key.into_iter().map(|(k, (n, a))| (k, n, a)).collect()
}

/// No key answered twice with different results.
pub fn assert_one_result_per_key(calls: &[Call]) {
    let mut results: BTreeMap<&str, &Value> = BTreeMap::new();
    for c in calls {
        if let Some(r) = &c.result
            && let Some(first) = results.insert(&c.key, r)
        {
            assert_eq!(first, r, "key {} answered twice, differently", c.key);
        }
    }
}

/// An instance as both backends must agree on it: everything but the
/// wall-clock instants (start, state entry, timer due times), which on
/// Temporal are the server's.
pub fn normalise(i: &Instance) -> Value {
    let mut v = serde_json::to_value(i).expect("instance as JSON");
    let o = v.as_object_mut().expect("object");
    o.remove("started_at");
    o.remove("entered_at");
    if let Some(Value::Object(timers)) = o.get_mut("timers") {
        for t in timers.values_mut() {
            if let Some(t) = t.as_object_mut() {
                t.remove("due_at");
            }
        }
    }
    mask_times(&v)
}

/// Every string that is an RFC 3339 instant becomes `<time>`.
pub fn mask_times(v: &Value) -> Value {
    match v {
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => json!("<time>"),
        Value::Array(a) => Value::Array(a.iter().map(mask_times).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), mask_times(v))).collect())
        }
        v => v.clone(),
    }
}

/// Ids unique to this test run (the dev server keeps what earlier runs
/// started), the same on both backends so their keys can be compared.
pub fn run_prefix(scenario: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{scenario}-{}-{:x}",
        std::process::id(),
        nanos % 0xffff_ffff
    )
}

/// Compare two traces field by field, with a readable message.
pub fn assert_same(embedded: &Trace, temporal: &Trace) {
    let n = embedded.checkpoints.len().max(temporal.checkpoints.len());
    for k in 0..n {
        let e = embedded.checkpoints.get(k);
        let t = temporal.checkpoints.get(k);
        assert_eq!(
            e, t,
            "checkpoint {k} differs between the embedded runtime (left) and Temporal (right)"
        );
    }
    assert_eq!(
        embedded.calls, temporal.calls,
        "activity calls differ between the embedded runtime (left) and Temporal (right)"
    );
}

pub fn enterprise(id: &str) -> Actor {
    Actor {
        role: "enterprise".into(),
        id: id.into(),
        name: None,
    }
}

pub fn district(id: &str) -> Actor {
    Actor {
        role: "district".into(),
        id: id.into(),
        name: None,
    }
}

/// A warning's input, as the comparison opens it.
pub fn warning_input(id: &str) -> Value {
    json!({
        "warning_id": id,
        "enterprise_id": "e1",
        "enterprise_name": "成都示例建设有限公司",
        "district": "jinjiang",
        "district_name": "锦江区住建交局",
        "person_id": "510104********1234",
        "person_name": "张三",
        "reason": "核酸阳性",
    })
}

pub fn disposal() -> Value {
    json!({
        "reported_to_community": true,
        "community": "书院街社区",
        "person_situation": "集中隔离",
        "measures": ["办公区域清洁消毒"],
    })
}

pub fn var<'a>(i: &'a Instance, name: &str) -> &'a Value {
    i.vars.get(name).unwrap_or(&Value::Null)
}
