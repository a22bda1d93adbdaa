//! Crash test: a child process running many warning workflows dies at
//! points the test chooses (the K-th activity call of a run, before it or
//! after its effect, aborting with no clean-up as SIGKILL would) and is
//! restarted on the same database, repeatedly, while virtual time moves
//! through a whole warning lifecycle. Nothing here depends on wall-clock
//! timing.
//! Afterwards every instance is in the state its signals and timers call
//! for, no timer was lost, and the fake SMS gateway never saw one key with
//! two different outcomes nor one reminder under two keys.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use engine::store::{SqlStore, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::{Arc, Mutex};

#[path = "../examples/crash_worker.rs"]
#[allow(dead_code)]
mod worker;

/// key -> outcomes returned, in order; the gateway fails a key's first call
/// one time in four, and answers a key it accepted with the same acceptance.
type Log = Arc<Mutex<BTreeMap<String, Vec<u16>>>>;

async fn sms(State(log): State<Log>, Json(body): Json<Value>) -> StatusCode {
    let key = body["idempotency_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut log = log.lock().unwrap();
    let seen = log.entry(key.clone()).or_default();
    let status = match seen.last() {
        Some(200) => 200,
        None if key.bytes().map(u32::from).sum::<u32>() % 4 == 0 => 503,
        _ => 200,
    };
    seen.push(status);
    StatusCode::from_u16(status).unwrap()
}

/// The worker binary `cargo build --example crash_worker` makes, beside
/// this test's directory (`target/<profile>/examples/crash_worker`).
fn worker_exe() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    dir.join("crash_worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_workers_lose_nothing_and_send_nothing_twice() {
    // Built here every time (a no-op when fresh): a filtered run (`--test
    // crash`) does not build examples, and an old binary would test old code.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "-p", "engine", "--example", "crash_worker"])
        .status()
        .unwrap();
    let exe = worker_exe();
    assert!(
        ok.success() && exe.exists(),
        "could not build {}",
        exe.display()
    );
    let log: Log = Log::default();
    let app = axum::Router::new()
        .route("/v1/sms/send", axum::routing::post(sms))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/sms/send", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("engine-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("crash.db");
    let n = 150;
    let t0: chrono::DateTime<chrono::Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
    // A small deterministic generator for kill points.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    let mut kills = 0;
    let mut kinds = std::collections::BTreeSet::<&str>::new();
    // Every 30 virtual minutes for 22 hours: runs that die at chosen
    // activity calls, then a clean run.
    for step in 0..=44 {
        let now = t0 + chrono::Duration::minutes(30 * step);
        let args = [
            db.to_str().unwrap().to_string(),
            url.clone(),
            now.to_rfc3339(),
            n.to_string(),
        ];
        let exe = exe.clone();
        let run = move |kill_at: Option<String>| {
            let mut cmd = Command::new(&exe);
            cmd.args(&args).args(kill_at);
            cmd.status().unwrap()
        };
        // Up to three runs that die at a chosen call, while each does die
        // (a run that finishes before its K-th call ends the series).
        for attempt in 0..3i64 {
            let when = if (step + attempt) % 2 == 0 {
                "before"
            } else {
                "after"
            };
            let kill_at = format!("{}:{when}", 1 + rand(12));
            let status = tokio::task::spawn_blocking({
                let run = run.clone();
                move || run(Some(kill_at))
            })
            .await
            .unwrap();
            match status.signal() {
                Some(6) => {
                    // SIGABRT: died where told
                    kills += 1;
                    kinds.insert(when);
                }
                None if status.success() => break, // finished before the K-th call
                _ => panic!("worker at {now} ended with {status}"),
            }
        }
        let status = tokio::task::spawn_blocking(move || run(None))
            .await
            .unwrap();
        assert!(status.success(), "clean run at {now} failed");
    }
    // Deterministic for given definitions (the kill points are the test's);
    // the bound only guards against a change that stops the kills.
    assert!(kills >= 15, "only {kills} kills happened");
    assert_eq!(kinds.len(), 2, "died both before and after effects");

    let store = SqlStore::open_sqlite(&db).await.unwrap();
    let end = t0 + chrono::Duration::hours(22);
    assert!(
        store.due_timers(end, 10).await.unwrap().is_empty(),
        "a timer due before the end never fired"
    );
    let log = log.lock().unwrap().clone();
    for (key, outcomes) in &log {
        // After the first acceptance, every answer for the key is the same.
        let first_ok = outcomes
            .iter()
            .position(|s| *s == 200)
            .unwrap_or_else(|| panic!("{key} never accepted: {outcomes:?}"));
        assert!(
            outcomes[first_ok..].iter().all(|s| *s == 200),
            "{key}: {outcomes:?}"
        );
    }
    for i in 0..n {
        let id = format!("w{i}");
        let row = store.instance(&id).await.unwrap().unwrap();
        let snap: Value = serde_json::from_str(&row.snapshot).unwrap();
        let keys: Vec<&String> = log
            .keys()
            .filter(|k| k.starts_with(&format!("{id}/")))
            .collect();
        let reminders = snap["vars"]["reminders_sent"].as_u64().unwrap() as usize;
        match worker::plan(i) {
            (Some(d), Some(_)) => {
                assert_eq!(row.status_label.as_deref(), Some("销号办结"), "{id}");
                let expected = if d < 6 { 1 } else { 2 };
                assert_eq!(reminders, expected, "{id}");
            }
            (Some(_), None) => {
                assert_eq!(row.state, "under_review", "{id}");
                assert_eq!(
                    snap["vars"]["review_overdue"], true,
                    "{id}: 12 h review deadline fired"
                );
                assert_eq!(
                    reminders, 2,
                    "{id}: disposed at 7 h, after the +6 h reminder and before the +8 h one"
                );
            }
            (None, _) => {
                assert_eq!(row.state, "awaiting_disposal", "{id}");
                assert_eq!(snap["vars"]["disposal_overdue"], true, "{id}");
                assert_eq!(reminders, 3, "{id}");
            }
        }
        // One key per reminder sent: nothing went out twice under different keys.
        assert_eq!(keys.len(), reminders, "{id}: {keys:?}");
    }
    println!(
        "crash test: {kills} kills, {} SMS keys, {} gateway calls",
        log.len(),
        log.values().map(Vec::len).sum::<usize>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
