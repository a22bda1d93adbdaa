//! Throughput of the warning-shaped workflow on a Temporal dev server
//! (issue 13): start N instances of `bench/temporal/fixtures/workflows/
//! bench.yaml` (an activity, a 1 s timer, an activity, complete) on this
//! crate's generic interpreter workflow, with a worker in this process, and
//! wait for every result. Prints the wall time and workflows/s, and a JSON
//! line that `scripts/bench-temporal` sets beside the same workflow on
//! Temporal's Python SDK (`bench/temporal_python`).
//!
//!   eval "$(scripts/temporal.sh start)"
//!   cargo bench -p engine-temporal --bench throughput -- [N] [--workers K]
//!
//! N defaults to 200. K workers (default 1) poll the task queue from this
//! process, as K `server worker` processes would: the SDK's default is 5
//! workflow-task polls per worker of which one polls the normal queue, and
//! every new instance's first task comes from there, so with one worker
//! that single poll's round trip bounds how fast instances get going.

use engine::runtime::activity::{Activities, ActivityCall};
use engine_temporal::{Options, TemporalEngine, Worker, WorkerSetup};
use futures::StreamExt;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

fn main() {
    // `cargo bench` passes `--bench`; the first bare number is N.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workers: usize = args
        .iter()
        .position(|a| a == "--workers")
        .and_then(|i| args.get(i + 1))
        .map(|k| k.parse().expect("--workers K"))
        .unwrap_or(1);
    let n: usize = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || args[i - 1] != "--workers")
        .find_map(|(_, a)| a.parse().ok())
        .unwrap_or(200);
    let Ok(address) = std::env::var("TEMPORAL_ADDRESS") else {
        eprintln!("TEMPORAL_ADDRESS is not set: eval \"$(scripts/temporal.sh start)\" first");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(address, n, workers.max(1)));
}

async fn run(address: String, n: usize, workers: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/temporal/fixtures");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).expect("fixtures");
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default())
        .unwrap_or_else(|e| panic!("bench fixtures do not compile: {e:?}"));
    let programs: Vec<_> = bundle.workflows.values().cloned().collect();
    let activities = Activities::new().register("notify", |c: ActivityCall| async move {
        Ok(json!({"ok": true, "key": c.idempotency_key, "round": c.args["round"]}))
    });
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let options = Options {
        address,
        task_queue: format!("bench-rust-{tag}"),
        ..Options::default()
    };
    let mut pool = Vec::new();
    for _ in 0..workers {
        let w = Worker::new(
            &options,
            WorkerSetup {
                programs: programs.clone(),
                activities: activities.clone(),
            },
        )
        .await
        .expect("worker");
        pool.push(w);
    }
    let stops: Vec<_> = pool.iter().map(|w| w.shutdown_handle()).collect();
    let engine = TemporalEngine::connect(options.clone())
        .await
        .expect("client");
    engine.set_programs(programs);
    let driver = async {
        let ids: Vec<String> = (0..n)
            .map(|i| format!("{}-w{i}", options.task_queue))
            .collect();
        let t0 = Instant::now();
        let started: Vec<bool> = futures::stream::iter(ids.iter())
            .map(|id| {
                let engine = engine.clone();
                async move {
                    engine
                        .start("bench", id, json!({"warning_id": id}))
                        .await
                        .expect("start")
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        assert!(started.iter().all(|s| *s), "every id new");
        let results: Vec<_> = futures::stream::iter(ids.iter())
            .map(|id| engine.result(id))
            .buffer_unordered(n.max(1))
            .collect()
            .await;
        let wall = t0.elapsed().as_secs_f64();
        for r in &results {
            let outcome = r.as_ref().expect("workflow result");
            assert_eq!(outcome.state, "closed", "{outcome:?}");
        }
        for stop in &stops {
            stop();
        }
        wall
    };
    let runs = futures::future::join_all(pool.iter_mut().map(|w| w.run()));
    let (r, wall) = futures::future::join(runs, driver).await;
    for r in r {
        r.expect("worker");
    }
    let per_s = n as f64 / wall;
    let cpu_ms = process_cpu_secs().map(|c| c * 1000.0 / n as f64);
    println!(
        "rust (engine-temporal, generic interpreter workflow, {workers} worker(s)): \
         {n} workflows in {wall:.2} s = {per_s:.2} workflows/s; this process's CPU {} ms per workflow",
        cpu_ms
            .map(|c| format!("{c:.1}"))
            .unwrap_or_else(|| "?".into())
    );
    println!(
        "{}",
        json!({"impl": "rust", "workers": workers, "n": n, "wall_s": (wall * 1000.0).round() / 1000.0,
               "per_s": (per_s * 100.0).round() / 100.0,
               "cpu_ms_per_workflow": cpu_ms.map(|c| (c * 10.0).round() / 10.0)})
    );
}

/// User and system CPU of this process so far (worker, client and the
/// connection set-up), from /proc; None elsewhere.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which ends with ')'): utime, stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}
