//! The durable runtime on SQLite with a manual clock: warning lifecycles,
//! retries with stable idempotency keys, restarts, definition versions,
//! schedules with catch-up, child workflows and the query API.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::{Activities, ActivityCall, ActivityError, Options, Runtime};
use engine::store::{InstanceFilter, Page, SqlStore, Store};
use engine::Actor;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Calls = Arc<Mutex<Vec<ActivityCall>>>;

fn bundle() -> engine::Bundle {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap()
}

/// Every catalogued activity records its call; `run_comparison` answers `comparison`.
fn activities(calls: &Calls, comparison: Value) -> Activities {
    let mut a = Activities::new()
        .projection("warning", |_c: engine::runtime::ProjectionCall| async {
            Ok(())
        });
    for name in bundle().activities.keys() {
        let calls = calls.clone();
        let comparison = comparison.clone();
        a = a.register(name, move |call: ActivityCall| {
            let answer = support::comparison_fake(&comparison, &call.name, &call.args)
                .unwrap_or(Value::Null);
            calls.lock().unwrap().push(call);
            async move { Ok(answer) }
        });
    }
    a
}

fn t0() -> DateTime<Utc> {
    "2026-12-01T02:00:00Z".parse().unwrap() // 10:00 in Chengdu
}

async fn runtime_with(
    store: SqlStore,
    clock: &Arc<ManualClock>,
    bundle: &engine::Bundle,
    acts: Activities,
) -> Runtime<SqlStore> {
    Runtime::new(
        store,
        clock.clone() as Arc<dyn Clock>,
        bundle,
        acts,
        Options::default(),
    )
    .await
    .unwrap()
}

async fn runtime(store: SqlStore, clock: &Arc<ManualClock>, calls: &Calls) -> Runtime<SqlStore> {
    Runtime::new(
        store,
        clock.clone() as Arc<dyn Clock>,
        &bundle(),
        activities(calls, json!({})),
        Options::default(),
    )
    .await
    .unwrap()
}

fn warning_input(id: &str) -> Value {
    json!({
        "warning_id": id, "enterprise_id": "e1", "enterprise_name": "成都示例建设有限公司",
        "district": "jinjiang", "district_name": "锦江区住建交局", "person_id": "510104********1234",
        "person_name": "张三", "reason": "核酸阳性",
    })
}

fn reminders(calls: &Calls, instance: &str) -> Vec<ActivityCall> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| {
            c.instance_id == instance
                && c.name == "notify_enterprise"
                && c.args["template"] == "warning_reminder"
        })
        .cloned()
        .collect()
}

async fn advance(rt: &Runtime<SqlStore>, clock: &ManualClock, d: Duration) {
    // Move in steps so timers fire at their due times, as a live clock would.
    let end = clock.now() + chrono::Duration::from_std(d).unwrap();
    loop {
        rt.run_until_idle().await.unwrap();
        let next = rt.store().next_timer().await.unwrap();
        match next {
            Some(n) if n <= end => clock.set(n.max(clock.now())),
            _ => break,
        }
    }
    clock.set(end);
    rt.run_until_idle().await.unwrap();
}

fn ent() -> Actor {
    Actor {
        role: "enterprise".into(),
        id: "e1".into(),
        name: None,
    }
}
fn dis() -> Actor {
    Actor {
        role: "district".into(),
        id: "jinjiang".into(),
        name: None,
    }
}
fn disposal() -> Value {
    json!({"reported_to_community": true, "community": "书院街社区", "person_situation": "集中隔离"})
}

async fn never_disposed_warning_sends_three_reminders_then_overdue(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let calls = Calls::default();
    let rt = runtime(store, &clock, &calls).await;
    assert!(rt
        .start("warning", "w1", warning_input("w1"))
        .await
        .unwrap());
    assert!(
        !rt.start("warning", "w1", warning_input("w1"))
            .await
            .unwrap(),
        "starting is idempotent"
    );
    rt.run_until_idle().await.unwrap();
    assert_eq!(reminders(&calls, "w1").len(), 1);
    advance(&rt, &clock, Duration::from_secs(8 * 3600)).await;
    let r = reminders(&calls, "w1");
    assert_eq!(r.len(), 3);
    let keys: Vec<_> = r.iter().map(|c| c.idempotency_key.as_str()).collect();
    assert_eq!(
        keys,
        ["w1/a1", "w1/a5", "w1/a7"],
        "keys are instance/activity ids"
    );
    let row = rt.store().instance("w1").await.unwrap().unwrap();
    let snap: engine::Instance = serde_json::from_str(&row.snapshot).unwrap();
    assert_eq!(snap.vars["disposal_overdue"], true);
    assert_eq!(
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.name == "notify_district")
            .count(),
        1
    );
    // The full history replays to the stored snapshot.
    let history = rt.store().history("w1").await.unwrap();
    let program = rt.program(&row.definition_hash).await.unwrap();
    let replayed = engine::interpreter::replay(&program, &engine::runtime::inputs(&history))
        .unwrap()
        .unwrap();
    assert_eq!(replayed, snap);
}

async fn refused_signal_changes_nothing_and_the_loop_closes_with_xiaohao_banjie(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let calls = Calls::default();
    let rt = runtime(store, &clock, &calls).await;
    rt.start("warning", "w1", warning_input("w1"))
        .await
        .unwrap();
    rt.run_until_idle().await.unwrap();
    rt.signal("w1", "dispose", disposal(), ent()).await.unwrap();
    let before = rt.store().instance("w1").await.unwrap().unwrap();
    let history = rt.store().history("w1").await.unwrap().len();
    let err = rt
        .signal("w1", "return", json!({}), dis())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(rt.store().instance("w1").await.unwrap().unwrap(), before);
    assert_eq!(rt.store().history("w1").await.unwrap().len(), history);
    rt.signal("w1", "return", json!({"comment": "请补充"}), dis())
        .await
        .unwrap();
    rt.run_until_idle().await.unwrap();
    rt.signal("w1", "dispose", disposal(), ent()).await.unwrap();
    rt.signal("w1", "approve", Value::Null, dis())
        .await
        .unwrap();
    let row = rt.store().instance("w1").await.unwrap().unwrap();
    assert_eq!(
        (
            row.state.as_str(),
            row.status.as_str(),
            row.status_label.as_deref()
        ),
        ("closed", "completed", Some("销号办结"))
    );
    assert!(row.closed_at.is_some());
    assert!(rt
        .store()
        .pending_timers(Some("w1"), Page::default())
        .await
        .unwrap()
        .is_empty());
}

async fn activity_retries_keep_the_idempotency_key_and_back_off(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let seen: Calls = Calls::default();
    let mut acts = activities(&Calls::default(), json!({}));
    let s2 = seen.clone();
    acts = acts.register("notify_enterprise", move |call: ActivityCall| {
        s2.lock().unwrap().push(call.clone());
        async move {
            if call.attempt < 3 {
                Err(ActivityError::Retryable(format!(
                    "HTTP 503 on attempt {}",
                    call.attempt
                )))
            } else {
                Ok(json!({"accepted": true}))
            }
        }
    });
    let rt = runtime_with(store, &clock, &bundle(), acts).await;
    rt.start("warning", "w1", warning_input("w1"))
        .await
        .unwrap();
    rt.run_until_idle().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    let task = rt.store().task("w1/a1").await.unwrap().unwrap();
    assert_eq!(task.last_error.as_deref(), Some("HTTP 503 on attempt 1"));
    // notify_enterprise backs off 30 s, then 60 s.
    clock.set(t0() + chrono::Duration::seconds(29));
    rt.run_until_idle().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1, "not before the backoff");
    clock.set(t0() + chrono::Duration::seconds(30));
    rt.run_until_idle().await.unwrap();
    clock.set(t0() + chrono::Duration::seconds(90));
    rt.run_until_idle().await.unwrap();
    let attempts: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.idempotency_key.clone(), c.attempt))
        .collect();
    assert_eq!(
        attempts,
        [
            ("w1/a1".to_string(), 1),
            ("w1/a1".to_string(), 2),
            ("w1/a1".to_string(), 3)
        ]
    );
    let task = rt.store().task("w1/a1").await.unwrap().unwrap();
    assert_eq!(task.status, engine::store::TaskStatus::Succeeded);
    // Each failed attempt is in the history (R8.4), then the completion.
    let kinds: Vec<_> = rt
        .store()
        .history("w1")
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "activity_attempt_failed",
            "activity_attempt_failed",
            "activity_completed"
        ]
    );
    // Replay ignores the notes: they are not inputs.
    let row = rt.store().instance("w1").await.unwrap().unwrap();
    let program = rt.program(&row.definition_hash).await.unwrap();
    let inputs = engine::runtime::inputs(&rt.store().history("w1").await.unwrap());
    assert_eq!(inputs.len(), 2);
    let replayed = engine::interpreter::replay(&program, &inputs)
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::to_string(&replayed).unwrap(), row.snapshot);
    assert!(rt
        .metrics_text()
        .await
        .unwrap()
        .contains("workflow_task_retries_total{activity=\"notify_enterprise\"} 2"));
}

#[tokio::test]
async fn timers_survive_a_restart_on_the_same_database() {
    let dir = std::env::temp_dir().join(format!("engine-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("state.db");
    let _ = std::fs::remove_file(&db);
    let clock = Arc::new(ManualClock::new(t0()));
    let calls = Calls::default();
    {
        let rt = runtime(SqlStore::open_sqlite(&db).await.unwrap(), &clock, &calls).await;
        rt.start("warning", "w1", warning_input("w1"))
            .await
            .unwrap();
        rt.run_until_idle().await.unwrap();
    } // "crash": the runtime and its pool are dropped.
    clock.set(t0() + chrono::Duration::hours(9));
    let rt = runtime(SqlStore::open_sqlite(&db).await.unwrap(), &clock, &calls).await;
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        reminders(&calls, "w1").len(),
        3,
        "the +6h and +8h reminders fired after the restart"
    );
    let row = rt.store().instance("w1").await.unwrap().unwrap();
    assert!(row.snapshot.contains("\"disposal_overdue\":true"));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn running_instances_finish_on_the_version_they_started_with(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let calls = Calls::default();
    let rt1 = runtime(store.clone(), &clock, &calls).await;
    rt1.start("warning", "old", warning_input("old"))
        .await
        .unwrap();
    rt1.run_until_idle().await.unwrap();
    // Policy staff publish version 2: the review deadline becomes 2 h.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (mut w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let f = w
        .iter_mut()
        .find(|f| f.path.ends_with("warning.yaml"))
        .unwrap();
    let v: u32 = f
        .text
        .lines()
        .find_map(|l| l.strip_prefix("version: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    f.text = f
        .text
        .replacen(&format!("version: {v}"), &format!("version: {}", v + 1), 1)
        .replace("after: 12h", "after: 2h");
    let v2 = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let rt2 = Runtime::new(
        store,
        clock.clone() as Arc<dyn Clock>,
        &v2,
        activities(&calls, json!({})),
        Options::default(),
    )
    .await
    .unwrap();
    rt2.start("warning", "new", warning_input("new"))
        .await
        .unwrap();
    rt2.run_until_idle().await.unwrap();
    let versions = rt2.store().definitions("warning").await.unwrap();
    assert_eq!(
        versions.iter().map(|d| d.version).collect::<Vec<_>>(),
        [i64::from(v), i64::from(v) + 1]
    );
    rt2.signal("old", "dispose", disposal(), ent())
        .await
        .unwrap();
    rt2.signal("new", "dispose", disposal(), ent())
        .await
        .unwrap();
    advance(&rt2, &clock, Duration::from_secs(3 * 3600)).await;
    let escalated = |id: &str| {
        calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.instance_id == id && c.name == "notify_city")
    };
    assert!(escalated("new"), "the new version escalates after 2 h");
    assert!(!escalated("old"), "the old version still waits 12 h");
    assert_eq!(
        rt2.store()
            .instance("old")
            .await
            .unwrap()
            .unwrap()
            .definition_version,
        i64::from(v)
    );
    advance(&rt2, &clock, Duration::from_secs(10 * 3600)).await;
    assert!(escalated("old"));
}

async fn schedules_run_at_their_times_and_catch_up_once(store: SqlStore) {
    let start: DateTime<Utc> = "2026-12-01T04:59:00+08:00".parse().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let calls = Calls::default();
    let comparison =
        json!({"run_id": "r", "as_of": "x", "new_warnings": [], "per_district": {}, "summary": {}});
    let rt = Runtime::new(
        store,
        clock.clone() as Arc<dyn Clock>,
        &bundle(),
        activities(&calls, comparison),
        Options::default(),
    )
    .await
    .unwrap();
    rt.run_until_idle().await.unwrap();
    let runs = |rt: &Runtime<SqlStore>| {
        let rt = rt.clone();
        async move {
            let f = InstanceFilter {
                kind: Some("comparison".into()),
                ..Default::default()
            };
            let mut ids: Vec<String> = rt
                .store()
                .instances(&f, Page::default())
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert!(
        runs(&rt).await.is_empty(),
        "first start at 04:59: nothing due"
    );
    clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    rt.run_until_idle().await.unwrap();
    assert_eq!(runs(&rt).await, ["comparison@2026-12-01T05:00+08:00"]);
    // Down from 09:00 to 16:30: 10:00 and 15:00 missed, one catch-up run.
    clock.set("2026-12-01T16:30:00+08:00".parse().unwrap());
    rt.run_until_idle().await.unwrap();
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        runs(&rt).await,
        [
            "comparison@2026-12-01T05:00+08:00",
            "comparison@2026-12-01T15:00+08:00"
        ]
    );
    let slot = calls
        .lock()
        .unwrap()
        .iter()
        .rfind(|c| c.name == "run_comparison")
        .unwrap()
        .args["slot"]
        .clone();
    assert_eq!(slot, "2026-12-01T07:00:00+00:00");
}

async fn a_comparison_run_starts_each_warning_once(store: SqlStore) {
    // 11:00 in Chengdu: no scheduled run is due.
    let clock = Arc::new(ManualClock::new(t0() + chrono::Duration::hours(1)));
    let calls = Calls::default();
    let w = |id: &str| json!({"warning_id": id, "enterprise_id": "e1", "enterprise_name": "企业", "district": "jinjiang", "district_name": "锦江区", "person_id": id, "person_name": "某人", "reason": "红码"});
    let comparison = json!({"run_id": "r1", "as_of": "2026-12-01T10:00:00+08:00", "new_warnings": [w("w1"), w("w2")], "per_district": {"jinjiang": 2}, "summary": {"persons": 2}});
    let rt = Runtime::new(
        store,
        clock.clone() as Arc<dyn Clock>,
        &bundle(),
        activities(&calls, comparison),
        Options::default(),
    )
    .await
    .unwrap();
    rt.start("comparison", "run-1", json!({})).await.unwrap();
    rt.run_until_idle().await.unwrap();
    // A second run finding the same anomalies keys its children the same way.
    rt.start("comparison", "run-2", json!({})).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let f = InstanceFilter {
        kind: Some("warning".into()),
        ..Default::default()
    }
    .search("district", Some("jinjiang".into()));
    assert_eq!(rt.store().count_instances(&f).await.unwrap(), 2);
    let w1 = rt.store().instance("w1").await.unwrap().unwrap();
    assert_eq!(
        w1.parent,
        Some(engine::store::ParentRef {
            instance_id: "run-1".into(),
            call: "c3".into()
        })
    );
    assert_eq!(w1.search["district"], "jinjiang");
    assert_eq!(
        rt.store()
            .instance("run-1")
            .await
            .unwrap()
            .unwrap()
            .status_label
            .as_deref(),
        Some("比对完成")
    );
    assert_eq!(reminders(&calls, "w1").len(), 1);
    assert_eq!(
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.name == "notify_district_digest")
            .count(),
        2
    );
}

async fn query_api_lists_histories_timers_and_failed_tasks(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut acts = activities(&Calls::default(), json!({}));
    acts = acts.register("notify_enterprise", |_c: ActivityCall| async {
        Err(ActivityError::Permanent("号码无效".into()))
    });
    let rt = runtime_with(store, &clock, &bundle(), acts).await;
    for i in 0..3 {
        rt.start("warning", &format!("w{i}"), warning_input(&format!("w{i}")))
            .await
            .unwrap();
    }
    rt.run_until_idle().await.unwrap();
    let failed = rt.store().failed_tasks(Page::default()).await.unwrap();
    assert_eq!(failed.len(), 3);
    assert!(failed[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("号码无效"));
    let timers = rt
        .store()
        .pending_timers(
            None,
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(timers.len(), 9, "three timers per open warning");
    let h = rt.store().history("w0").await.unwrap();
    let kinds: Vec<_> = h.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, ["started", "activity_failed"]);
    assert!(h[1].payload.contains("号码无效"));
    let f = InstanceFilter::default().search("person", Some("510104********1234".into()));
    assert_eq!(rt.store().count_instances(&f).await.unwrap(), 3);
    let text = rt.metrics_text().await.unwrap();
    assert!(
        text.contains("workflow_instances{state=\"awaiting_disposal\",workflow=\"warning\"} 3"),
        "{text}"
    );
    assert!(text.contains("workflow_pending_timers 9"));
}

async fn a_restarted_worker_takes_back_its_tasks_at_once(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let calls = Calls::default();
    let rt = runtime(store.clone(), &clock, &calls).await;
    rt.start("warning", "w1", warning_input("w1"))
        .await
        .unwrap();
    // The previous process claimed the warning's tasks and was killed.
    let lease = t0() + chrono::Duration::minutes(5);
    let claimed = store
        .claim_tasks(t0(), 10, lease, &Options::default().worker)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    rt.run_until_idle().await.unwrap();
    assert!(reminders(&calls, "w1").is_empty(), "leased: not yet");
    // The same worker starting again takes them back: the first reminder
    // goes out now, not when the lease runs out, under the same key.
    assert_eq!(rt.take_back_leases().await.unwrap(), 1);
    rt.run_until_idle().await.unwrap();
    let sent = reminders(&calls, "w1");
    assert_eq!(sent.len(), 1);
    assert!(claimed.iter().any(|t| t.id == sent[0].idempotency_key));
    assert_eq!(clock.now(), t0());
}

/// Every history row the runtime writes is chained: starts, signals,
/// timers, activity completions (two of an instance in one batch), failed
/// attempts; a row edited or removed afterwards is found.
async fn every_history_row_is_chained_and_tampering_shows(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut acts = activities(&Calls::default(), json!({}));
    acts = acts.register("notify_enterprise", |call: ActivityCall| async move {
        if call.attempt < 2 {
            Err(ActivityError::Retryable("HTTP 503".into()))
        } else {
            Ok(json!({"accepted": true}))
        }
    });
    let rt = runtime_with(store.clone(), &clock, &bundle(), acts).await;
    for id in ["w1", "w2"] {
        rt.start("warning", id, warning_input(id)).await.unwrap();
    }
    rt.signal("w2", "dispose", disposal(), ent()).await.unwrap();
    advance(&rt, &clock, Duration::from_secs(13 * 3600)).await;
    for id in ["w1", "w2"] {
        let row = store.instance(id).await.unwrap().unwrap();
        let c = store.verify_history(id).await.unwrap();
        assert!(c.is_ok(), "{id}: {c:?}");
        assert_eq!((c.rows, c.unchained), (row.history_len, 0));
        let h = store.history(id).await.unwrap();
        assert_eq!(row.history_hash, h.last().unwrap().hash);
        assert!(h.iter().any(|r| r.kind == "activity_attempt_failed"));
        assert!(h.iter().any(|r| r.kind == "timer_fired"));
    }
    assert!(store
        .verify_histories(None, 100)
        .await
        .unwrap()
        .iter()
        .all(|c| c.is_ok()));

    sqlx::query("UPDATE history SET payload = payload || ' ' WHERE instance_id = 'w1' AND seq = 2")
        .execute(store.pool())
        .await
        .unwrap();
    let b = store.verify_history("w1").await.unwrap().broken.unwrap();
    assert_eq!(b.seq, 2);
    assert!(
        matches!(b.problem, engine::store::ChainProblem::HashMismatch { .. }),
        "{b}"
    );
    sqlx::query("DELETE FROM history WHERE instance_id = 'w2' AND seq = 3")
        .execute(store.pool())
        .await
        .unwrap();
    let b = store.verify_history("w2").await.unwrap().broken.unwrap();
    assert_eq!(
        (b.seq, b.problem),
        (3, engine::store::ChainProblem::Gap { next: 4 })
    );
}

/// An instance whose history was written before migration 0003 (NULL
/// hashes, as `ALTER TABLE … ADD COLUMN` leaves them) goes on: its next step
/// chains from the genesis, and verification checks from there.
async fn a_history_from_before_the_chain_goes_on_chained(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let rt = runtime(store.clone(), &clock, &Calls::default()).await;
    rt.start("warning", "w1", warning_input("w1"))
        .await
        .unwrap();
    rt.run_until_idle().await.unwrap();
    for sql in [
        "UPDATE history SET hash = NULL, prev_hash = NULL",
        "UPDATE instances SET history_hash = NULL",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let before = store.history("w1").await.unwrap().len() as i64;
    let c = store.verify_history("w1").await.unwrap();
    assert!(c.is_ok(), "{c:?}");
    assert_eq!(c.unchained, before);
    rt.signal("w1", "dispose", disposal(), ent()).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let h = store.history("w1").await.unwrap();
    assert!(h.len() as i64 > before);
    assert_eq!(
        h[before as usize].prev_hash.as_deref(),
        Some(engine::store::GENESIS_HASH)
    );
    let c = store.verify_history("w1").await.unwrap();
    assert!(c.is_ok(), "{c:?}");
    assert_eq!((c.rows, c.unchained), (h.len() as i64, before));
    // The chained part is checked.
    let seq = before;
    sqlx::query(&format!(
        "UPDATE history SET at = at + 1 WHERE instance_id = 'w1' AND seq = {seq}"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(
        store
            .verify_history("w1")
            .await
            .unwrap()
            .broken
            .unwrap()
            .seq,
        seq
    );
}

const FRAGILE: &str = r#"
workflow: fragile
version: 1
variables:
  zero: { type: int, default: 0 }
  x: { type: int, default: 0 }
initial: waiting
states:
  waiting:
    timers:
      tick:
        after: 1m
        do:
          - set: { x: "${10 / vars.zero}" }
        goto: done
  done:
    terminal: true
"#;

/// A runtime on `fragile.yaml` with the text given (`FRAGILE` or a fix of
/// it), its projection doing nothing.
async fn fragile_runtime(
    store: &SqlStore,
    clock: &Arc<ManualClock>,
    text: String,
) -> Runtime<SqlStore> {
    let files = [engine::compile::program::SourceFile {
        path: "fragile.yaml".into(),
        text,
    }];
    let bundle = engine::compile_bundle(&files, &[], &engine::Options::default()).unwrap();
    runtime_with(
        store.clone(),
        clock,
        &bundle,
        Activities::new().projection("warning", |_c: engine::runtime::ProjectionCall| async {
            Ok(())
        }),
    )
    .await
}

/// A step whose rule fails inside a timer handler is recorded as a chained
/// `step_failed` row.
async fn a_failed_step_is_chained_too(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let rt = fragile_runtime(&store, &clock, FRAGILE.into()).await;
    rt.start("fragile", "f1", json!({})).await.unwrap();
    advance(&rt, &clock, Duration::from_secs(120)).await;
    let row = store.instance("f1").await.unwrap().unwrap();
    assert_eq!(row.status, "failed");
    let h = store.history("f1").await.unwrap();
    let kinds: Vec<_> = h.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["started", "step_failed"]);
    assert_eq!(h[1].prev_hash, h[0].hash);
    let c = store.verify_history("f1").await.unwrap();
    assert!(c.is_ok(), "{c:?}");
    assert_eq!(c.rows, 2);
}

fn repair(reason: &str) -> engine::runtime::Repair {
    engine::runtime::Repair {
        operator: "运维甲".into(),
        reason: reason.into(),
    }
}

fn kinds_of_notes(h: &[engine::store::HistoryRow]) -> Vec<String> {
    h.iter()
        .filter(|r| r.kind == "operator_action")
        .map(|r| {
            serde_json::from_str::<Value>(&r.payload).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Repairs need a reason, are recorded in the (chained) history with who,
/// and do what they say: terminate ends an instance for good, a signal on
/// someone's behalf moves it, a spent activity runs once more under its key,
/// a failed step runs again on the fixed definition.
async fn operators_repair_with_a_reason_in_the_history(store: SqlStore) {
    let clock = Arc::new(ManualClock::new(t0()));
    let calls = Calls::default();
    let sms_failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut acts = activities(&calls, json!({}));
    {
        let sms_failures = sms_failures.clone();
        acts = acts.register("notify_enterprise", move |call: ActivityCall| {
            let failing = call.instance_id == "w3"
                && sms_failures.load(std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                if failing {
                    Err(ActivityError::Permanent("号码已停机".into()))
                } else {
                    Ok(json!({"accepted": true}))
                }
            }
        });
    }
    let rt = runtime_with(store.clone(), &clock, &bundle(), acts).await;
    for id in ["w1", "w2", "w3"] {
        rt.start("warning", id, warning_input(id)).await.unwrap();
    }
    rt.run_until_idle().await.unwrap();

    // Terminate: a reason is required; timers go; signals are refused;
    // nothing fires later.
    assert!(rt.terminate("w1", &repair(" ")).await.is_err());
    rt.terminate("w1", &repair("重复预警")).await.unwrap();
    let row = store.instance("w1").await.unwrap().unwrap();
    assert_eq!(row.status, engine::runtime::TERMINATED);
    assert!(store
        .pending_timers(Some("w1"), Page::default())
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        rt.signal("w1", "dispose", disposal(), ent()).await,
        Err(engine::runtime::Error::Terminated(_))
    ));
    assert!(rt.terminate("w1", &repair("再次")).await.is_err());

    // On the enterprise's behalf: the definition's role and checks apply.
    assert!(rt
        .signal_as_operator(
            "w2",
            "dispose",
            disposal(),
            Actor {
                id: "e2".into(),
                ..ent()
            },
            &repair("企业电话报告")
        )
        .await
        .is_err());
    rt.signal_as_operator(
        "w2",
        "dispose",
        disposal(),
        ent(),
        &repair("企业电话报告，系统故障无法提交"),
    )
    .await
    .unwrap();
    assert_eq!(
        store.instance("w2").await.unwrap().unwrap().state,
        "under_review"
    );

    // A spent activity runs once more under the same key.
    let failed = store.tasks_of("w3").await.unwrap();
    let spent = failed
        .iter()
        .find(|t| t.status == engine::store::TaskStatus::Failed)
        .unwrap()
        .clone();
    sms_failures.store(1, std::sync::atomic::Ordering::SeqCst);
    rt.retry_task(&spent.id, &repair("已更换联络官手机"))
        .await
        .unwrap();
    rt.run_until_idle().await.unwrap();
    let again = store.task(&spent.id).await.unwrap().unwrap();
    assert_eq!(again.status, engine::store::TaskStatus::Succeeded);
    assert!(
        rt.retry_task(&spent.id, &repair("再试")).await.is_err(),
        "only spent tasks"
    );

    advance(&rt, &clock, Duration::from_secs(9 * 3600)).await;
    assert!(
        calls.lock().unwrap().iter().all(|c| c.instance_id != "w1"),
        "nothing ran for the terminated warning"
    );
    for (id, want) in [
        ("w1", vec!["terminate"]),
        ("w2", vec!["signal"]),
        ("w3", vec!["retry_activity"]),
    ] {
        let h = store.history(id).await.unwrap();
        assert_eq!(kinds_of_notes(&h), want, "{id}");
        let note = h.iter().find(|r| r.kind == "operator_action").unwrap();
        assert!(note.payload.contains("运维甲"));
        let c = store.verify_history(id).await.unwrap();
        assert!(c.is_ok(), "{id}: {c:?}");
    }
    let w2 = store.history("w2").await.unwrap();
    assert!(w2
        .iter()
        .any(|r| r.kind == "signal" && r.payload.contains("运维 运维甲 代 e1")));

    // A failed step, retried on the fixed definition.
    let rt1 = fragile_runtime(&store, &clock, FRAGILE.into()).await;
    rt1.start("fragile", "f1", json!({})).await.unwrap();
    advance(&rt1, &clock, Duration::from_secs(120)).await;
    assert_eq!(
        store.instance("f1").await.unwrap().unwrap().status,
        "failed"
    );
    let fixed = FRAGILE
        .replace("version: 1", "version: 2")
        .replace("${10 / vars.zero}", "${10}");
    let rt2 = fragile_runtime(&store, &clock, fixed).await;
    assert!(rt2
        .retry_failed_step("w2", &repair("无失败"))
        .await
        .is_err());
    rt2.retry_failed_step("f1", &repair("规则已修正（除零）"))
        .await
        .unwrap();
    let f1 = store.instance("f1").await.unwrap().unwrap();
    assert_eq!(
        (f1.state.as_str(), f1.status.as_str(), f1.definition_version),
        ("done", "completed", 2)
    );
    let h = store.history("f1").await.unwrap();
    assert_eq!(kinds_of_notes(&h), ["retry_step"]);
    assert!(store.verify_history("f1").await.unwrap().is_ok());
}

mod support;

on_every_store!("runtime":
    never_disposed_warning_sends_three_reminders_then_overdue,
    refused_signal_changes_nothing_and_the_loop_closes_with_xiaohao_banjie,
    activity_retries_keep_the_idempotency_key_and_back_off,
    running_instances_finish_on_the_version_they_started_with,
    schedules_run_at_their_times_and_catch_up_once,
    a_comparison_run_starts_each_warning_once,
    query_api_lists_histories_timers_and_failed_tasks,
    a_restarted_worker_takes_back_its_tasks_at_once,
    every_history_row_is_chained_and_tampering_shows,
    a_failed_step_is_chained_too,
    a_history_from_before_the_chain_goes_on_chained,
    operators_repair_with_a_reason_in_the_history,
);
