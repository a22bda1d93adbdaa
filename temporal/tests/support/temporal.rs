//! The Temporal backend of the conformance suite: this crate's client
//! ([`TemporalEngine`]) and a worker ([`Worker`]) in this process, on a
//! task queue of the test's own, against the dev server at
//! `TEMPORAL_ADDRESS`. The worker runs on a thread with its own Tokio
//! runtime (its run loop is not `Send`); killing it asks it to stop, and
//! if it has not within a second (an activity hangs) drops it with its
//! runtime, so whatever it was running dies with it, as in a killed
//! process. Time is real: the test copy's timers are seconds.

use super::{Backend, Fakes};
use engine::{Actor, Bundle, Instance};
use engine_temporal::{Options, TemporalEngine, Worker, WorkerSetup};
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// `TEMPORAL_ADDRESS`, or None (said on stderr) when it is not set —
/// unless `EPI_TEMPORAL_TESTS=1`, where a missing server fails the test.
pub fn address(what: &str) -> Option<String> {
    match std::env::var("TEMPORAL_ADDRESS") {
        Ok(a) if !a.is_empty() => Some(a),
        _ if std::env::var("EPI_TEMPORAL_TESTS").as_deref() == Ok("1") => panic!(
            "EPI_TEMPORAL_TESTS=1 but TEMPORAL_ADDRESS is not set: the Temporal half of {what} \
             cannot run (eval \"$(scripts/temporal.sh start)\")"
        ),
        _ => {
            eprintln!(
                "TEMPORAL_ADDRESS not set: the Temporal half of {what} skipped \
                 (eval \"$(scripts/temporal.sh start)\")"
            );
            None
        }
    }
}

/// A worker on its own thread and runtime.
pub struct WorkerThread {
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerThread {
    /// Start a worker with `setup` and wait until it is registered.
    pub fn start(options: Options, setup: WorkerSetup) -> Self {
        let (kill, killed) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("worker runtime");
            rt.block_on(async move {
                let mut worker = match Worker::new(&options, setup).await {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let stop = worker.shutdown_handle();
                let run = worker.run();
                tokio::pin!(run);
                tokio::select! {
                    r = &mut run => r.expect("worker run"),
                    _ = killed => {
                        stop();
                        let _ = tokio::time::timeout(Duration::from_secs(1), &mut run).await;
                    }
                }
            });
            // Dropping the runtime cancels every task the worker left
            // (an activity still running dies with it).
            rt.shutdown_background();
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the Temporal worker did not start: {e}"),
            Err(_) => panic!("the Temporal worker thread died"),
        }
        WorkerThread {
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    /// Stop it; drop it if it has not stopped within a second.
    pub async fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

pub struct OnTemporal {
    options: Options,
    engine: TemporalEngine,
    fakes: Fakes,
    bundle: Mutex<Bundle>,
    worker: Mutex<Option<WorkerThread>>,
    began: Mutex<Option<Instant>>,
}

impl OnTemporal {
    /// A client and a worker on a task queue of their own, or None (the
    /// Temporal half skipped) when there is no server configured.
    pub async fn connect(bundle: Bundle, fakes: Fakes, prefix: &str) -> Option<Self> {
        let address = address(prefix)?;
        let options = Options {
            address,
            task_queue: format!("conformance-{prefix}"),
            ..Options::default()
        };
        let engine = TemporalEngine::connect(options.clone())
            .await
            .expect("Temporal reachable at TEMPORAL_ADDRESS");
        engine.set_programs(bundle.workflows.values().cloned());
        let t = OnTemporal {
            options,
            engine,
            fakes,
            bundle: Mutex::new(bundle),
            worker: Mutex::new(None),
            began: Mutex::new(None),
        };
        t.start_worker().await;
        Some(t)
    }

    /// Stop the worker (instances left running stay on the server, on a
    /// task queue nobody polls).
    pub async fn shutdown(self) {
        let w = self.worker.lock().unwrap().take();
        if let Some(w) = w {
            w.kill().await;
        }
    }

    fn setup(&self) -> WorkerSetup {
        let bundle = self.bundle.lock().unwrap();
        WorkerSetup {
            programs: bundle.workflows.values().cloned().collect(),
            activities: self.fakes.activities(&bundle),
        }
    }
}

impl Backend for OnTemporal {
    fn name(&self) -> &'static str {
        "temporal"
    }

    fn fakes(&self) -> &Fakes {
        &self.fakes
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn start(&self, workflow: &str, id: &str, input: Value) {
        self.began.lock().unwrap().get_or_insert_with(Instant::now);
        assert!(
            self.engine
                .start(workflow, id, input)
                .await
                .unwrap_or_else(|e| panic!("start {id}: {e}")),
            "{id} started twice"
        );
    }

    async fn signal(&self, id: &str, name: &str, payload: Value, actor: Actor) {
        self.engine
            .signal(id, name, payload, actor)
            .await
            .unwrap_or_else(|e| panic!("signal {name} to {id}: {e}"));
    }

    async fn advance_to(&self, t: Duration) {
        let began = self.began.lock().unwrap().unwrap_or_else(Instant::now);
        let at = began + t;
        let now = Instant::now();
        if at > now {
            tokio::time::sleep(at - now).await;
        }
    }

    async fn instance(&self, id: &str) -> Option<Instance> {
        // Not found yet (a child not started), or no step taken: None.
        self.engine.state(id).await.ok().flatten()
    }

    async fn settle(&self) {}

    async fn kill_worker(&self) {
        let w = self.worker.lock().unwrap().take().expect("a worker runs");
        w.kill().await;
    }

    async fn start_worker(&self) {
        let w = WorkerThread::start(self.options.clone(), self.setup());
        *self.worker.lock().unwrap() = Some(w);
    }

    /// The client starts new instances on `bundle`; the worker (whose
    /// latest programs are those children start on) is restarted with it,
    /// as a deployment does. Running instances carry their own definition.
    async fn publish(&self, bundle: Bundle) {
        self.engine.set_programs(bundle.workflows.values().cloned());
        *self.bundle.lock().unwrap() = bundle;
        self.kill_worker().await;
        self.start_worker().await;
    }
}
