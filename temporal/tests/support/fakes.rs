//! Fake activities, registered in the engine's `Activities` registry under
//! every name the catalog declares, so both backends run exactly the same
//! implementations. Each call is recorded (name, idempotency key, args,
//! attempt and what it answered); the comparison's activities answer from
//! a fixture; a chosen call can be made to hang on its first attempt (a
//! worker is then killed under it).

use engine::runtime::{Activities, ActivityCall, ActivityError, ProjectionCall};
use engine::testing::fakes::comparison_answer;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One call an activity received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub key: String,
    pub args: Value,
    pub attempt: u32,
    /// What it answered; None while it runs (or if it never returned).
    pub result: Option<Value>,
}

type Pick = Box<dyn Fn(&str, &Value) -> bool + Send>;

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Calls (by name and args) whose first attempt hangs.
    hang: Vec<Pick>,
    hung: BTreeSet<String>,
}

/// The recording fakes of one backend's run.
#[derive(Clone, Default)]
pub struct Fakes {
    inner: Arc<Mutex<Inner>>,
    fixture: Arc<Mutex<Value>>,
}

impl Fakes {
    pub fn new() -> Self {
        Self::default()
    }

    /// What `run_comparison` and `warnings_to_open` answer (see
    /// [`comparison_answer`]).
    pub fn with_comparison(self, fixture: Value) -> Self {
        *self.fixture.lock().unwrap() = fixture;
        self
    }

    /// The first attempt of each call `pick(name, args)` chooses never
    /// returns (the worker running it is to be killed); later attempts
    /// under the same key answer as usual.
    pub fn hang_first_attempt(&self, pick: impl Fn(&str, &Value) -> bool + Send + 'static) {
        self.inner.lock().unwrap().hang.push(Box::new(pick));
    }

    /// Every call so far, in the order they began.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Keys of the calls that were made to hang.
    pub fn hung(&self) -> BTreeSet<String> {
        self.inner.lock().unwrap().hung.clone()
    }

    /// The registry: every catalogued activity (and the warning
    /// projection the embedded runtime insists on) as a recording fake.
    pub fn activities(&self, bundle: &engine::Bundle) -> Activities {
        let mut a = Activities::new().projection("warning", |_c: ProjectionCall| async { Ok(()) });
        for name in bundle.activities.keys() {
            let me = self.clone();
            a = a.register(name, move |call: ActivityCall| me.clone().call(call));
        }
        a
    }

    async fn call(self, call: ActivityCall) -> Result<Value, ActivityError> {
        let (index, hang) = {
            let mut inner = self.inner.lock().unwrap();
            let hang = !inner.hung.contains(&call.idempotency_key)
                && inner.hang.iter().any(|pick| pick(&call.name, &call.args));
            if hang {
                inner.hung.insert(call.idempotency_key.clone());
            }
            inner.calls.push(Call {
                name: call.name.clone(),
                key: call.idempotency_key.clone(),
                args: call.args.clone(),
                attempt: call.attempt,
                result: None,
            });
            (inner.calls.len() - 1, hang)
        };
        if hang {
            // Until the worker running it is killed (the future dropped).
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        let fixture = self.fixture.lock().unwrap().clone();
        let answer = comparison_answer(&fixture, &call.name, &call.args)
            .unwrap_or_else(|| json!({ "ok": true, "key": call.idempotency_key }));
        self.inner.lock().unwrap().calls[index].result = Some(answer.clone());
        Ok(answer)
    }
}
