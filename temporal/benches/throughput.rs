//! Throughput of the warning-shaped workflow on a Temporal dev server
//! (issue 13): start N instances of `bench/temporal/fixtures/workflows/
//! bench.yaml` (an activity, a 1 s timer, an activity, complete) on this
//! crate's generic interpreter workflow, with a worker in this process, and
//! wait for every result. Prints the wall time and workflows/s, and a JSON
//! line that `scripts/bench-temporal` sets beside the same workflow on
//! Temporal's Python SDK (`bench/temporal_python`).
//!
//!   eval "$(scripts/temporal.sh start)"
//!   cargo bench -p engine-temporal --bench throughput -- [N]    # default 200

use engine::runtime::activity::{Activities, ActivityCall};
use engine_temporal::{Interpreter, Options, TemporalEngine, Worker, WorkerSetup};
use futures::StreamExt;
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use temporalio_client::WorkflowGetResultOptions;

fn main() {
    // `cargo bench` passes `--bench`; the first number is N.
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let Ok(address) = std::env::var("TEMPORAL_ADDRESS") else {
        eprintln!("TEMPORAL_ADDRESS is not set: eval \"$(scripts/temporal.sh start)\" first");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(address, n));
}

async fn run(address: String, n: usize) {
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
    let mut worker = Worker::new(
        &options,
        WorkerSetup {
            programs: programs.clone(),
            activities,
        },
    )
    .await
    .expect("worker");
    let stop = worker.shutdown_handle();
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
            .map(|id| {
                let h = engine
                    .client()
                    .get_workflow_handle::<Interpreter>(id.clone());
                async move { h.get_result(WorkflowGetResultOptions::default()).await }
            })
            .buffer_unordered(n.max(1))
            .collect()
            .await;
        let wall = t0.elapsed().as_secs_f64();
        for r in &results {
            let outcome = r.as_ref().expect("workflow result");
            assert_eq!(outcome.state, "closed", "{outcome:?}");
        }
        stop();
        wall
    };
    let (r, wall) = futures::future::join(worker.run(), driver).await;
    r.expect("worker");
    let per_s = n as f64 / wall;
    println!(
        "rust (engine-temporal, generic interpreter workflow): {n} workflows in {wall:.2} s = {per_s:.2} workflows/s"
    );
    println!(
        "{}",
        json!({"impl": "rust", "n": n, "wall_s": (wall * 1000.0).round() / 1000.0, "per_s": (per_s * 100.0).round() / 100.0})
    );
}
