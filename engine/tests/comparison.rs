//! workflows/comparison.yaml through the in-memory runtime: a run opens one
//! child warning per new anomaly (fan-out, keyed so a repeat never opens a
//! second), sends one digest, and a run without data invents nothing.

use engine::testing::TestRuntime;
use serde_json::{json, Value};
use std::path::Path;

mod support;

fn runtime(responder: engine::testing::Responder) -> TestRuntime {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    TestRuntime::new(
        bundle.workflows.values().cloned(),
        "2026-12-01T02:00:00Z".parse().unwrap(),
    )
    .with_responder(responder)
}

fn warning(id: &str, district: &str) -> Value {
    json!({
        "warning_id": id, "enterprise_id": "e1", "enterprise_name": "企业甲", "district": district,
        "district_name": "某区", "person_id": format!("p-{id}"), "person_name": "某人", "reason": "红码",
    })
}

#[test]
fn a_run_opens_one_warning_per_new_anomaly_and_one_digest() {
    let run = json!({
        "run_id": "r1", "as_of": "2026-12-01T10:00:00+08:00",
        "new_warnings": [warning("w1", "jinjiang"), warning("w2", "jinjiang"), warning("w3", "qingyang")],
        "per_district": {"jinjiang": 2, "qingyang": 1},
        "summary": {"persons": 10, "anomalies": 3},
    });
    let mut rt = runtime(Box::new(move |name, args| {
        Ok(support::comparison_fake(&run, name, args).unwrap_or(Value::Null))
    }));
    rt.start(
        "comparison",
        "run-1",
        json!({"slot": "2026-12-01T10:00:00+08:00"}),
    )
    .unwrap();
    let s = rt.state("run-1");
    assert_eq!(s.state, "done");
    assert_eq!(
        s.output,
        json!({"persons": 10, "anomalies": 3, "new_warnings": 3})
    );
    for w in ["w1", "w2", "w3"] {
        assert_eq!(
            rt.state(w).state,
            "awaiting_disposal",
            "{w} opened under its own key"
        );
    }
    let digests = rt.calls_named("notify_district_digest");
    assert_eq!(digests.len(), 1);
    assert_eq!(
        digests[0].args["per_district"],
        json!({"jinjiang": 2, "qingyang": 1})
    );
    // Each new warning sent its first reminder.
    assert_eq!(rt.calls_named("notify_enterprise").len(), 3);
}

#[test]
fn a_run_with_nothing_new_sends_no_digest() {
    let run = json!({"run_id": "r2", "as_of": "x", "new_warnings": [], "per_district": {}, "summary": {}});
    let mut rt = runtime(Box::new(move |name, args| {
        Ok(support::comparison_fake(&run, name, args).unwrap_or(Value::Null))
    }));
    rt.start("comparison", "run-2", json!({})).unwrap();
    assert_eq!(rt.state("run-2").state, "done");
    assert!(rt.calls_named("notify_district_digest").is_empty());
    assert_eq!(rt.instances.len(), 1);
}

#[test]
fn a_run_that_cannot_get_data_fails_and_invents_nothing() {
    let mut rt = runtime(Box::new(|name, _| match name {
        "run_comparison" => {
            Err("health commission: batch 3 of 12 failed after 5 attempts: HTTP 503".into())
        }
        _ => Ok(Value::Null),
    }));
    rt.start("comparison", "run-3", json!({})).unwrap();
    let s = rt.state("run-3");
    assert_eq!(s.state, "failed");
    assert!(s.status_label.as_deref().unwrap().starts_with("比对失败"));
    assert!(s.output["error"].as_str().unwrap().contains("HTTP 503"));
    assert_eq!(rt.instances.len(), 1, "no warnings opened");
    assert!(rt.calls_named("notify_district_digest").is_empty());
}

#[test]
fn a_run_opens_any_number_of_warnings_a_page_at_a_time() {
    // More warnings than one rhai value may hold (the sandbox's 10,000 map
    // entries: about 1,100 warnings): each page is its own step.
    let n = 2_345;
    let list: Vec<Value> = (0..n)
        .map(|k| {
            warning(
                &format!("w{k:05}"),
                if k % 3 == 0 { "qingyang" } else { "jinjiang" },
            )
        })
        .collect();
    let run = json!({
        "run_id": "r4", "as_of": "2026-12-01T10:00:00+08:00", "new_warnings": list,
        "per_district": {"jinjiang": 1563, "qingyang": 782}, "summary": {"persons": 9000},
    });
    let mut rt = runtime(Box::new(move |name, args| {
        Ok(support::comparison_fake(&run, name, args).unwrap_or(Value::Null))
    }));
    rt.start("comparison", "run-4", json!({})).unwrap();
    assert_eq!(rt.state("run-4").state, "done");
    assert_eq!(rt.instances.len(), 1 + n, "every warning started once");
    let pages = rt.calls_named("warnings_to_open");
    assert_eq!(
        pages.len(),
        n.div_ceil(500) + 1,
        "full pages, then an empty one"
    );
    assert_eq!(pages[1].args["after"], "w00499");
    assert_eq!(rt.calls_named("notify_enterprise").len(), n);
    assert_eq!(rt.calls_named("notify_district_digest").len(), 1);
}
