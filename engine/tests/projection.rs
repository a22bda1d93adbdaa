//! Issue 11, one source of truth, the engine's side: a workflow declares a
//! projection (`projection: NAME`) that the host registers as a hook; the
//! runtime tells the hook after every committed step from an outbox row
//! written in the step's own transaction, retries it until it succeeds,
//! and refuses to start without it. Expressions read the timers of the
//! definition (`timers.NAME.after` → `4小时`), checked by compile.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::compile::program::SourceFile;
use engine::runtime::{Activities, ActivityCall, Options, ProjectionCall, Runtime};
use engine::store::{SqlStore, Store};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const FLOW: &str = r#"
workflow: flow
version: 1
projection: seen
variables:
  text: { type: string }
initial: waiting
states:
  waiting:
    label: 等待中
    on_enter:
      - activity: say
        args: { text: "请在${timers.deadline.after}内处置（${timers.deadline.label}，${timers.deadline.minutes}分钟）" }
    timers:
      deadline:
        label: 处置期限
        after: 4h
        deadline: true
        goto: done
  done:
    label: 已结束
    terminal: true
"#;

/// What the hook saw: the state's label and the pending deadline (ms).
type Seen = (String, Option<i64>);

const CATALOG: &str = "activities:\n  say: {}\n";

fn t0() -> DateTime<Utc> {
    "2026-12-01T02:00:00Z".parse().unwrap()
}

fn files(flow: &str) -> Vec<SourceFile> {
    vec![
        SourceFile {
            path: "flow.yaml".into(),
            text: flow.into(),
        },
        SourceFile {
            path: "activities.yaml".into(),
            text: CATALOG.into(),
        },
    ]
}

#[test]
fn a_misspelled_timer_or_field_is_a_compile_error() {
    for (wrong, want) in [
        (
            "timers.deadlne.after",
            "`timers.deadlne` 不是本流程的计时器",
        ),
        ("timers.deadline.aftr", "`timers.deadline.aftr` 未知"),
    ] {
        let flow = FLOW.replace("timers.deadline.after", wrong);
        let Err(e) = engine::compile_bundle(&files(&flow), &[], &engine::Options::default()) else {
            panic!("{wrong} accepted");
        };
        let text =
            e.0.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
        assert!(text.contains(want), "{text}");
        assert!(text.contains("flow.yaml:"), "{text}");
    }
}

#[tokio::test]
async fn projections_follow_every_step_durably_on_sqlite() {
    projections_follow_every_step(SqlStore::memory().await.unwrap()).await;
}

#[tokio::test]
async fn projections_follow_every_step_durably_on_postgres() {
    if let Some(url) = engine::testing::fresh_postgres("engine_projection").await {
        projections_follow_every_step(SqlStore::connect(&url).await.unwrap()).await;
    }
}

async fn projections_follow_every_step(store: SqlStore) {
    let bundle = engine::compile_bundle(&files(FLOW), &[], &engine::Options::default()).unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let said: Arc<Mutex<Vec<Value>>> = Arc::default();
    let acts = || {
        let said = said.clone();
        Activities::new().register("say", move |c: ActivityCall| {
            said.lock().unwrap().push(c.args["text"].clone());
            async { Ok(Value::Null) }
        })
    };

    // Without the hook the runtime does not start.
    let refused = Runtime::new(
        store.clone(),
        clock.clone() as Arc<dyn Clock>,
        &bundle,
        acts(),
        Options::default(),
    )
    .await;
    assert!(
        matches!(refused, Err(engine::runtime::Error::MissingProjections(ref p)) if p == &["seen".to_string()])
    );

    // The hook fails its first call (the host's database away, say): the
    // outbox row stays and the next round tells it again.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let hook = {
        let seen = seen.clone();
        let calls = calls.clone();
        move |c: ProjectionCall| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let state = engine::inspect::state_of(&c.instance).unwrap();
            let due = state
                .timers
                .values()
                .filter(|t| c.program.timer(&t.name).is_some_and(|s| s.deadline))
                .map(|t| t.due_at.timestamp_millis())
                .min();
            let label = c.program.state_label(&c.instance.state).to_string();
            let seen = seen.clone();
            async move {
                if first {
                    return Err("host database unavailable".to_string());
                }
                seen.lock().unwrap().push((label, due));
                Ok(())
            }
        }
    };
    let rt = Runtime::new(
        store.clone(),
        clock.clone() as Arc<dyn Clock>,
        &bundle,
        acts().projection("seen", hook),
        Options::default(),
    )
    .await
    .unwrap();
    rt.start("flow", "f1", json!({})).await.unwrap();
    // The start's commit holds its projection row.
    let pending = store.pending_outbox(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, "projection");
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        said.lock().unwrap().clone(),
        [json!("请在4小时内处置（处置期限，240分钟）")]
    );
    let due = (t0() + chrono::Duration::hours(4)).timestamp_millis();
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "retried after the failure"
    );
    assert_eq!(
        seen.lock().unwrap().last().cloned(),
        Some(("等待中".to_string(), Some(due)))
    );
    assert!(store.pending_outbox(10).await.unwrap().is_empty());

    clock.set(t0() + chrono::Duration::hours(4));
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        seen.lock().unwrap().last().cloned(),
        Some(("已结束".to_string(), None)),
        "the step the timer made is projected too"
    );
    assert!(store.pending_outbox(10).await.unwrap().is_empty());
}
