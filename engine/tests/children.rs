//! Child workflows on both runtimes, carried out from the one description
//! of a step's commands (`runtime::plan`): a child's completion reaches the
//! call of its parent that waits on it (`on_child_complete`), and a child
//! whose workflow refuses the input fails that call instead of leaving the
//! parent waiting forever. Also: search attributes a definition declares
//! (any name) are stored and searched by (name, value), and a corrupt
//! snapshot is an error naming it.

use chrono::{DateTime, TimeZone, Utc};
use engine::clock::ManualClock;
use engine::compile::program::SourceFile;
use engine::runtime::{Activities, Options, Runtime};
use engine::store::{InstanceFilter, ParentRef, SqlStore, Store};
use engine::testing::TestRuntime;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const PARENT: &str = r#"
workflow: parent
version: 1
input:
  n: { type: any, required: true }
variables:
  got: { type: int, default: 0 }
  failure: { type: string }
search:
  batch: "${input.n}"
initial: waiting
states:
  waiting:
    on_enter:
      - start_child: child
        input: { n: "${input.n}" }
        on_child_complete:
          - if: "result.status == \"refused\""
            do:
              - set: { failure: "${error}" }
            goto: failed
          - do:
              - set: { got: "${result.output.doubled}" }
            goto: done
  done:
    terminal: true
    status: 完成
    output: { got: "${vars.got}" }
  failed:
    terminal: true
    status: 子流程未能启动
    output: { error: "${vars.failure}" }
"#;

const CHILD: &str = r#"
workflow: child
version: 1
input:
  n: { type: int, required: true }
search:
  size: "${input.n}"
initial: working
states:
  working:
    timers:
      finish:
        after: 1h
        goto: finished
  finished:
    terminal: true
    status: 完成
    output: { doubled: "${input.n * 2}" }
"#;

fn bundle() -> engine::Bundle {
    let files = [
        SourceFile {
            path: "parent.yaml".into(),
            text: PARENT.into(),
        },
        SourceFile {
            path: "child.yaml".into(),
            text: CHILD.into(),
        },
    ];
    engine::compile_bundle(&files, &[], &engine::Options::default()).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 1, 0, 0).unwrap()
}

fn test_runtime() -> TestRuntime {
    TestRuntime::new(bundle().workflows.into_values(), t0())
}

#[test]
fn test_runtime_delivers_a_childs_completion_to_its_parent() {
    let mut rt = test_runtime();
    rt.start("parent", "p1", json!({"n": 21})).unwrap();
    // The child runs under `{parent}/{call}`, knowing its parent's call.
    let child = &rt.instances["p1/c1"];
    assert_eq!(
        child.parent,
        Some(ParentRef {
            instance_id: "p1".into(),
            call: "c1".into()
        })
    );
    assert_eq!(rt.state("p1").state, "waiting");
    rt.advance(Duration::from_secs(3600)).unwrap();
    assert_eq!(rt.state("p1/c1").state, "finished");
    // The parent's on_child_complete saw the child's output.
    assert_eq!(rt.state("p1").state, "done");
    assert_eq!(rt.state("p1").output, json!({"got": 42}));
    assert!(matches!(
        rt.history("p1").last(),
        Some(engine::Input::ChildCompleted { id, error: None, .. }) if id == "c1"
    ));
}

#[test]
fn test_runtime_fails_the_parents_call_when_the_child_refuses_its_input() {
    let mut rt = test_runtime();
    // The child takes a whole number only.
    rt.start("parent", "p2", json!({"n": "many"})).unwrap();
    assert!(!rt.instances.contains_key("p2/c1"), "no child instance");
    let s = rt.state("p2");
    assert_eq!(s.state, "failed");
    let error = s.output["error"].as_str().unwrap();
    assert!(
        error.contains("invalid input") && error.contains("`n` has the wrong type"),
        "{error}"
    );
}

async fn runtime(store: SqlStore, clock: &Arc<ManualClock>) -> Runtime<SqlStore> {
    Runtime::new(
        store,
        clock.clone(),
        &bundle(),
        Activities::new(),
        Options::default(),
    )
    .await
    .unwrap()
}

/// The durable runtime: the same child id and parent reference, the
/// completion delivered through the outbox.
async fn a_childs_completion_reaches_its_parent(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let rt = runtime(store.clone(), &clock).await;
    rt.start("parent", "p1", json!({"n": 21})).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let child = store.instance("p1/c1").await.unwrap().unwrap();
    assert_eq!(
        child.parent,
        Some(ParentRef {
            instance_id: "p1".into(),
            call: "c1".into()
        })
    );
    clock.advance(Duration::from_secs(3600));
    rt.run_until_idle().await.unwrap();
    let p = store.instance("p1").await.unwrap().unwrap();
    assert_eq!((p.state.as_str(), p.status.as_str()), ("done", "completed"));
    let state = engine::inspect::state_of(&p).unwrap();
    assert_eq!(state.output, json!({"got": 42}));
}

/// A child whose workflow refuses its input: the parent's call fails with
/// the reason, which its definition handles (here: state `failed`); the
/// parent does not wait forever and no child instance exists.
async fn a_child_refusing_its_input_fails_the_parents_call(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let rt = runtime(store.clone(), &clock).await;
    rt.start("parent", "p2", json!({"n": "many"}))
        .await
        .unwrap();
    rt.run_until_idle().await.unwrap();
    assert!(store.instance("p2/c1").await.unwrap().is_none());
    let p = store.instance("p2").await.unwrap().unwrap();
    assert_eq!(
        (p.state.as_str(), p.status.as_str()),
        ("failed", "completed")
    );
    let state = engine::inspect::state_of(&p).unwrap();
    let error = state.output["error"].as_str().unwrap();
    assert!(error.contains("`n` has the wrong type"), "{error}");
    // The operator's history shows why.
    let events = engine::inspect::events(&store.history("p2").await.unwrap());
    assert!(events.iter().any(|e| matches!(
        &e.event,
        engine::inspect::Event::ChildCompleted { status: Some(s), error: Some(_), .. } if s == "refused"
    )));
}

/// Search attributes are whatever the definitions declare: stored with
/// the first step and searched by (name, value).
async fn instances_are_searched_by_declared_attributes(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let rt = runtime(store.clone(), &clock).await;
    rt.start("parent", "p1", json!({"n": 21})).await.unwrap();
    rt.start("parent", "p3", json!({"n": 3})).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let by = |name: &str, value: &str| InstanceFilter::default().search(name, Some(value.into()));
    let ids = |rows: Vec<engine::store::InstanceRow>| {
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.id).collect();
        ids.sort();
        ids
    };
    let page = engine::store::Page::default();
    assert_eq!(
        ids(store.instances(&by("batch", "21"), page).await.unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(store.instances(&by("size", "3"), page).await.unwrap()),
        ["p3/c1"]
    );
    assert_eq!(store.count_instances(&by("size", "21")).await.unwrap(), 1);
    assert_eq!(store.count_instances(&by("batch", "22")).await.unwrap(), 0);
    // Two conditions: both must hold.
    let both = by("size", "21").search("batch", Some("21".into()));
    assert_eq!(store.count_instances(&both).await.unwrap(), 0);
    let row = store.instance("p1/c1").await.unwrap().unwrap();
    assert_eq!(row.search.get("size").map(String::as_str), Some("21"));
}

/// A snapshot that does not read stops the step with an error naming the
/// instance and its snapshot (never a default state).
async fn a_corrupt_snapshot_is_an_error_naming_it(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let rt = runtime(store.clone(), &clock).await;
    rt.start("parent", "p1", json!({"n": 21})).await.unwrap();
    rt.run_until_idle().await.unwrap();
    sqlx::query("UPDATE instances SET snapshot = '{\"not\": 1}' WHERE id = 'p1/c1'")
        .execute(store.pool())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    let e = rt.run_until_idle().await.unwrap_err().to_string();
    assert!(e.contains("p1/c1") && e.contains("snapshot"), "{e}");
    let row = store.instance("p1/c1").await.unwrap().unwrap();
    let e = engine::inspect::state_of(&row).unwrap_err();
    assert!(e.contains("p1/c1") && e.contains("snapshot"), "{e}");
}

mod support;

on_every_store!("children":
    a_childs_completion_reaches_its_parent,
    a_child_refusing_its_input_fails_the_parents_call,
    instances_are_searched_by_declared_attributes,
    a_corrupt_snapshot_is_an_error_naming_it,
);
