//! Support process of engine/tests/crash.rs: runs warning workflows on a
//! SQLite file until idle at a given (manual) time, sending reminder SMS to
//! a fake gateway over HTTP. The test chooses where it dies: with
//! `<kill-at>` = `K:before` or `K:after` the process aborts (no unwinding,
//! no clean-up: what SIGKILL leaves) at the K-th activity call of this run,
//! before it does anything or after the SMS gateway accepted it (so the
//! effect happened and its completion was never committed). The test then
//! starts it again on the same database.
//!
//!   crash_worker <db> <sms-url> <now RFC 3339> <instances> [<kill-at>]

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::{Activities, ActivityCall, ActivityError, Options, Runtime};
use engine::store::{SqlStore, Store};
use engine::Actor;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Where this run dies, if anywhere: the K-th activity call (counting from
/// 1), before it starts or after its effect.
#[derive(Clone, Copy)]
struct KillAt {
    call: usize,
    after_effect: bool,
}

impl KillAt {
    fn parse(s: &str) -> Option<KillAt> {
        let (k, when) = s.split_once(':')?;
        Some(KillAt {
            call: k.parse().ok()?,
            after_effect: when == "after",
        })
    }
}

/// Counts activity calls and aborts the process at the chosen one.
#[derive(Clone)]
struct Killer {
    at: Option<KillAt>,
    calls: Arc<AtomicUsize>,
}

impl Killer {
    /// Called on entry of every activity; true when this call is the one to
    /// die after its effect.
    fn enter(&self) -> bool {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match self.at {
            Some(k) if k.call == n && !k.after_effect => std::process::abort(),
            Some(k) => k.call == n,
            None => false,
        }
    }
}

/// Hours after creation at which instance `i` is disposed / approved, if ever.
pub fn plan(i: usize) -> (Option<i64>, Option<i64>) {
    match i % 3 {
        0 => (Some((i % 5) as i64), Some((i % 5) as i64 + 2)),
        1 => (Some(7), None),
        _ => (None, None),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        // `cargo test` runs examples without arguments: nothing to do.
        eprintln!("usage: crash_worker <db> <sms-url> <now> <instances> [<K:before|K:after>]");
        return;
    }
    let killer = Killer {
        at: args.get(5).and_then(|s| KillAt::parse(s)),
        calls: Arc::default(),
    };
    let (db, sms, now, n) = (
        &args[1],
        args[2].clone(),
        &args[3],
        args[4].parse::<usize>().unwrap(),
    );
    let now: DateTime<Utc> = now.parse().unwrap();
    let t0: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let http = reqwest::Client::new();
    let mut acts = Activities::new()
        .projection("warning", |_c: engine::runtime::ProjectionCall| async {
            Ok(())
        });
    for name in bundle.activities.keys() {
        let killer = killer.clone();
        acts = acts.register(name, move |_c: ActivityCall| {
            if killer.enter() {
                std::process::abort();
            }
            async { Ok(Value::Null) }
        });
    }
    acts = acts.register("notify_enterprise", move |c: ActivityCall| {
        let http = http.clone();
        let url = sms.clone();
        let die_after = killer.enter();
        async move {
            let body = json!({"phone": "13800000000", "template": c.args["template"], "params": c.args, "idempotency_key": c.idempotency_key});
            let resp = http.post(&url).json(&body).send().await.map_err(|e| ActivityError::Retryable(e.to_string()))?;
            if die_after {
                std::process::abort();
            }
            if resp.status().is_success() {
                Ok(json!({"accepted": true}))
            } else {
                Err(ActivityError::Retryable(format!("HTTP {}", resp.status())))
            }
        }
    });
    let store = SqlStore::open_sqlite(Path::new(db)).await.unwrap();
    let rt = Runtime::new(
        store,
        clock.clone() as Arc<dyn Clock>,
        &bundle,
        acts,
        Options::default(),
    )
    .await
    .unwrap();
    // As `server serve` does: the previous process of this worker is gone.
    rt.take_back_leases().await.unwrap();
    // Start every warning (idempotent), then the signals the plan calls for by now.
    let items: Vec<_> = (0..n)
        .map(|i| {
            let input = json!({
                "warning_id": format!("w{i}"), "enterprise_id": "e1", "enterprise_name": "企业", "district": "d1",
                "person_id": format!("p{i}"), "person_name": "某人", "reason": "红码",
            });
            ("warning", format!("w{i}"), input)
        })
        .collect();
    if clock.now() == t0 {
        rt.start_many(&items).await.unwrap();
    }
    rt.run_until_idle().await.unwrap();
    let hours = (clock.now() - t0).num_hours();
    for i in 0..n {
        let id = format!("w{i}");
        let (dispose, approve) = plan(i);
        let state = rt
            .store()
            .instance(&id)
            .await
            .unwrap()
            .map(|r| r.state)
            .unwrap_or_default();
        if dispose.is_some_and(|h| h <= hours) && matches!(state.as_str(), "awaiting_disposal") {
            let payload = json!({"reported_to_community": true, "community": "社区", "person_situation": "其他"});
            rt.signal(
                &id,
                "dispose",
                payload,
                Actor {
                    role: "enterprise".into(),
                    id: "e1".into(),
                    name: None,
                },
            )
            .await
            .unwrap();
        }
        let state = rt
            .store()
            .instance(&id)
            .await
            .unwrap()
            .map(|r| r.state)
            .unwrap_or_default();
        if approve.is_some_and(|h| h <= hours) && state == "under_review" {
            rt.signal(
                &id,
                "approve",
                Value::Null,
                Actor {
                    role: "district".into(),
                    id: "d1".into(),
                    name: None,
                },
            )
            .await
            .unwrap();
        }
    }
    rt.run_until_idle().await.unwrap();
}
