//! End-to-end throughput of the durable runtime on SQLite (a file, WAL),
//! with the system clock: N warning-shaped workflows (start, activity,
//! timer, activity, complete), with P other timers pending far in the
//! future. Prints workflows/s and timer-fire lag p50/p99.
//!
//!   cargo bench -p engine --bench runtime -- [N] [P]
//!
//! Targets (issue 3): at least 2,000 workflows/s; timer lag p99 under
//! 100 ms with 100,000 timers pending.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, SystemClock};
use engine::compile::program::SourceFile;
use engine::runtime::{Activities, ActivityCall, Options, Runtime};
use engine::store::{InstanceFilter, SqlStore, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKFLOW: &str = r#"
workflow: bench
version: 1
input:
  n: { type: int }
variables:
  sent: { type: int }
signals:
  dispose: {}
initial: waiting
states:
  waiting:
    on_enter:
      - activity: notify
        args: { n: "${input.n}", round: 1 }
        on_success:
          do: [set: { sent: "${vars.sent + 1}" }]
    timers:
      reminder:
        after: 20ms
        from: start
        do:
          - activity: notify
            args: { n: "${input.n}", round: 2 }
            on_success:
              goto: done
    on:
      dispose: { goto: done }
  done:
    terminal: true
    status: done
"#;

const SLEEPER: &str = r#"
workflow: sleeper
version: 1
signals:
  wake: {}
initial: asleep
states:
  asleep:
    timers:
      far:
        after: 30d
        goto: awake
    on:
      wake: { goto: awake }
  awake:
    terminal: true
"#;

const CATALOG: &str = "activities:\n  notify:\n    retry: { attempts: 3, backoff: 10ms }\n";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn completed(store: &SqlStore, kind: &str) -> i64 {
    let f = InstanceFilter {
        kind: Some(kind.into()),
        status: Some("completed".into()),
        ..Default::default()
    };
    store.count_instances(&f).await.unwrap()
}

/// Lags (ms) between each bench instance's reminder due time and its firing.
async fn lags(store: &SqlStore, ids: &[String]) -> Vec<f64> {
    let mut out = Vec::new();
    for id in ids {
        let h = store.history(id).await.unwrap();
        let started = h[0].at;
        if let Some(fired) = h.iter().find(|r| r.kind == "timer_fired") {
            let due: DateTime<Utc> = started + chrono::Duration::milliseconds(20);
            out.push((fired.at - due).num_microseconds().unwrap() as f64 / 1000.0);
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(if full { 20_000 } else { 200 });
    let pending: usize =
        args.get(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(if full { 100_000 } else { 1_000 });

    let dir = std::env::temp_dir().join(format!("engine-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqlStore::open_sqlite(&dir.join("bench.db")).await.unwrap();
    let files = [
        ("bench.yaml", WORKFLOW),
        ("sleeper.yaml", SLEEPER),
        ("activities.yaml", CATALOG),
    ]
    .map(|(p, t)| SourceFile {
        path: p.into(),
        text: t.into(),
    });
    let bundle = engine::compile_bundle(&files, &[], &engine::Options::default()).unwrap();
    let activities =
        Activities::new().register("notify", |_c: ActivityCall| async { Ok(Value::Null) });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let rt = Runtime::new(
        store.clone(),
        clock,
        &bundle,
        activities,
        Options::default(),
    )
    .await
    .unwrap();

    // P timers pending far in the future.
    let t = Instant::now();
    for chunk in (0..pending).collect::<Vec<_>>().chunks(5_000) {
        let items: Vec<_> = chunk
            .iter()
            .map(|i| ("sleeper", format!("s{i}"), json!({})))
            .collect();
        rt.start_many(&items).await.unwrap();
    }
    println!(
        "setup: {pending} timers pending ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(store.count_timers().await.unwrap() as usize, pending);

    // Phase 1: throughput. Start all N, run until all have completed.
    let ids: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    let runner = tokio::spawn(rt.clone().run());
    let t = Instant::now();
    for chunk in ids.chunks(1_000) {
        let items: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| ("bench", id.clone(), json!({"n": i})))
            .collect();
        rt.start_many(&items).await.unwrap();
        tokio::task::yield_now().await;
    }
    while (completed(&store, "bench").await as usize) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let l = lags(&store, &ids).await;
    println!(
        "throughput: {n} workflows (start, activity, timer, activity, complete) in {secs:.2} s = {:.0} workflows/s",
        n as f64 / secs
    );
    println!(
        "  timer lag under full load: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );

    // Phase 2: steady load at a quarter of the measured rate, lag measured there.
    let rate = ((n as f64 / secs) / 4.0).max(100.0);
    let steady_n = (rate * if full { 5.0 } else { 1.0 }) as usize;
    let steady: Vec<String> = (0..steady_n).map(|i| format!("q{i}")).collect();
    let per_tick = (rate / 100.0).ceil() as usize; // every 10 ms
    let t = Instant::now();
    for (k, chunk) in steady.chunks(per_tick).enumerate() {
        let items: Vec<_> = chunk
            .iter()
            .map(|id| ("bench", id.clone(), json!({"n": 0})))
            .collect();
        rt.start_many(&items).await.unwrap();
        let next = Duration::from_millis(10 * (k as u64 + 1));
        if let Some(wait) = next.checked_sub(t.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    while (completed(&store, "bench").await as usize) < n + steady_n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let l = lags(&store, &steady).await;
    println!(
        "steady load: {steady_n} workflows at {rate:.0}/s with {} timers pending: timer lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        store.count_timers().await.unwrap(),
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
    runner.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
