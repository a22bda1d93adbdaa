//! Crash test: a child process running many warning workflows is killed
//! with SIGKILL at random moments and restarted on the same database,
//! repeatedly, while virtual time moves through a whole warning lifecycle.
//! Afterwards every instance is in the state its signals and timers call
//! for, no timer was lost, and the fake SMS gateway never saw one key with
//! two different outcomes nor one reminder under two keys.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use engine::store::{SqlStore, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The worker binary: `cargo test` builds the example as
/// `target/<profile>/examples/crash_worker-<hash>`, `cargo build --example`
/// as `…/examples/crash_worker`.
fn worker_exe() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let plain = dir.join("crash_worker");
    let mut built: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("crash_worker-") && p.extension().is_none()
        })
        .collect();
    built.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    built.pop().unwrap_or(plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_workers_lose_nothing_and_send_nothing_twice() {
    let exe = worker_exe();
    if !exe.exists() {
        // `cargo test` builds examples; a filtered run (`--test crash`) may not have.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "engine", "--example", "crash_worker"])
            .status()
            .unwrap();
        assert!(
            ok.success() && exe.exists(),
            "could not build {}",
            exe.display()
        );
    }
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
    // A small deterministic generator for kill delays.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    let mut kills = 0;
    let started = Instant::now();
    // Every 30 virtual minutes for 22 hours; at each, up to two kills, then a clean run.
    for step in 0..=44 {
        let now = t0 + chrono::Duration::minutes(30 * step);
        let args = [
            db.to_str().unwrap().to_string(),
            url.clone(),
            now.to_rfc3339(),
            n.to_string(),
        ];
        let exe2 = exe.clone();
        let run = move || Command::new(&exe2).args(&args).spawn().unwrap();
        for _ in 0..2 {
            let mut child = run();
            // Bounded: a random moment within the first 60 ms of its work.
            tokio::time::sleep(Duration::from_millis(rand(60))).await;
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
            child.wait().unwrap();
        }
        let status = tokio::task::spawn_blocking(move || run().wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "clean run at {now} failed");
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash test exceeded its time bound"
        );
    }
    assert!(kills > 20, "only {kills} kills happened");

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
            .expect("every key accepted in the end");
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
        "crash test: {kills} SIGKILLs, {} SMS keys, {} gateway calls",
        log.len(),
        log.values().map(Vec::len).sum::<usize>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
