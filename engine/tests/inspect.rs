//! An instance's history read as typed events (issue 12): the warning's
//! timers by their names in the definition, its activities with the
//! idempotency key the gateway saw, failed attempts, state changes.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::inspect::{events, Event};
use engine::runtime::{Activities, ActivityCall, ActivityError, Options, Runtime};
use engine::store::{SqlStore, Store};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

#[tokio::test]
async fn a_warning_history_reads_as_named_events() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let t0: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    // The first SMS attempt fails (the gateway is down), later ones succeed.
    let sms_calls = Arc::new(AtomicU32::new(0));
    let mut acts = Activities::new()
        .projection("warning", |_c: engine::runtime::ProjectionCall| async {
            Ok(())
        });
    for name in bundle.activities.keys() {
        let sms_calls = sms_calls.clone();
        acts = acts.register(name, move |call: ActivityCall| {
            let n = if call.name == "notify_enterprise" {
                sms_calls.fetch_add(1, Ordering::SeqCst)
            } else {
                1
            };
            async move {
                if n == 0 {
                    Err(ActivityError::Retryable("HTTP 503".into()))
                } else {
                    Ok(Value::Null)
                }
            }
        });
    }
    let store = SqlStore::memory().await.unwrap();
    let rt = Runtime::new(
        store.clone(),
        clock.clone() as Arc<dyn Clock>,
        &bundle,
        acts,
        Options::default(),
    )
    .await
    .unwrap();
    let input = json!({
        "warning_id": "w1", "enterprise_id": "e1", "enterprise_name": "企业",
        "district": "jinjiang", "district_name": "锦江区", "person_id": "510104********1234",
        "person_name": "张三", "reason": "核酸阳性",
    });
    rt.start("warning", "w1", input).await.unwrap();
    for _ in 0..(6 * 60 + 1) {
        clock.advance(std::time::Duration::from_secs(60));
        rt.run_until_idle().await.unwrap();
    }
    let h = store.history("w1").await.unwrap();
    let ev = events(&h);
    let kinds: Vec<&Event> = ev.iter().map(|e| &e.event).collect();
    assert!(matches!(kinds[0], Event::Started { .. }));
    assert!(kinds
        .iter()
        .any(|e| matches!(e, Event::StateChanged { from: None, to } if to == "awaiting_disposal")));
    for timer in ["second_reminder", "third_reminder", "disposal_deadline"] {
        assert!(
            kinds
                .iter()
                .any(|e| matches!(e, Event::TimerSet { name, .. } if name == timer)),
            "{timer} set"
        );
    }
    assert!(kinds
        .iter()
        .any(|e| matches!(e, Event::TimerFired { name: Some(n), .. } if n == "second_reminder")));
    let key = kinds
        .iter()
        .find_map(|e| match e {
            Event::ActivityScheduled {
                name,
                idempotency_key,
                ..
            } if name == "notify_enterprise" => Some(idempotency_key.clone()),
            _ => None,
        })
        .unwrap();
    assert!(key.starts_with("w1/a"), "{key}");
    assert!(kinds.iter().any(|e| matches!(e,
        Event::AttemptFailed { name, attempt: 1, error, .. } if name == "notify_enterprise" && error.contains("503"))));
    assert!(kinds.iter().any(|e| matches!(e,
        Event::ActivityCompleted { name: Some(n), .. } if n == "notify_enterprise")));
    assert!(!kinds.iter().any(|e| matches!(e, Event::Unreadable { .. })));
    // Serialised for the console and the API: a `kind` per event.
    let v = serde_json::to_value(&ev[0]).unwrap();
    assert_eq!(v["kind"], "started");
    assert_eq!(v["seq"], 0);
}
