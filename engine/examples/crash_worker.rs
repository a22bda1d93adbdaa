//! Support process of engine/tests/crash.rs: runs warning workflows on a
//! SQLite file until idle at a given (manual) time, sending reminder SMS to
//! a fake gateway over HTTP. The test kills it with SIGKILL at random
//! moments and starts it again on the same database.
//!
//!   crash_worker <db> <sms-url> <now RFC 3339> <instances>

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::{Activities, ActivityCall, ActivityError, Options, Runtime};
use engine::store::{SqlStore, Store};
use engine::Actor;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

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
        eprintln!("usage: crash_worker <db> <sms-url> <now> <instances>");
        return;
    }
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
        acts = acts.register(name, |_c: ActivityCall| async { Ok(Value::Null) });
    }
    acts = acts.register("notify_enterprise", move |c: ActivityCall| {
        let http = http.clone();
        let url = sms.clone();
        async move {
            let body = json!({"phone": "13800000000", "template": c.args["template"], "params": c.args, "idempotency_key": c.idempotency_key});
            let resp = http.post(&url).json(&body).send().await.map_err(|e| ActivityError::Retryable(e.to_string()))?;
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
