//! The embedded backend: the engine's durable `Runtime` on a SQLite file
//! with a `ManualClock`. Its "worker" is a task running the runtime's
//! rounds (timers, activities, outbox) whenever it is kicked; killing it
//! aborts that task wherever it is (an activity hanging, say) and drops the
//! runtime, and a new one is built on the same database file, as a
//! restarted process would.

use super::{Backend, Fakes};
use engine::clock::{Clock, ManualClock};
use engine::runtime::{Options, Publication, Runtime};
use engine::store::{SqlStore, Store};
use engine::{Actor, Bundle, Instance};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

struct Worker {
    rt: Runtime<SqlStore>,
    task: tokio::task::JoinHandle<()>,
    kick: Arc<Notify>,
    kicks: Arc<AtomicU64>,
    idle: watch::Receiver<u64>,
}

pub struct Embedded {
    _dir: tempfile::TempDir,
    store: SqlStore,
    clock: Arc<ManualClock>,
    t0: chrono::DateTime<chrono::Utc>,
    bundle: Mutex<Arc<Bundle>>,
    fakes: Fakes,
    worker: Mutex<Option<Worker>>,
    /// The runtime the client calls go through while the worker is down.
    client: Mutex<Option<Runtime<SqlStore>>>,
}

impl Embedded {
    pub async fn new(bundle: Bundle, fakes: Fakes) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqlStore::open_sqlite(&dir.path().join("engine.db"))
            .await
            .expect("SQLite store");
        let t0 = "2026-12-01T02:00:00Z".parse().expect("t0"); // 10:00 in Chengdu
        let b = Embedded {
            _dir: dir,
            store,
            clock: Arc::new(ManualClock::new(t0)),
            t0,
            bundle: Mutex::new(Arc::new(bundle)),
            fakes,
            worker: Mutex::new(None),
            client: Mutex::new(None),
        };
        b.start_worker().await;
        b
    }

    async fn runtime(&self) -> Runtime<SqlStore> {
        let bundle = self.bundle.lock().unwrap().clone();
        Runtime::new(
            self.store.clone(),
            self.clock.clone() as Arc<dyn Clock>,
            &bundle,
            self.fakes.activities(&bundle),
            Options::default(),
        )
        .await
        .expect("embedded runtime")
    }

    /// The runtime clients use: the worker's, or a separate one while the
    /// worker is down (the web server keeps taking signals).
    async fn client(&self) -> Runtime<SqlStore> {
        if let Some(w) = self.worker.lock().unwrap().as_ref() {
            return w.rt.clone();
        }
        if let Some(c) = self.client.lock().unwrap().clone() {
            return c;
        }
        let rt = self.runtime().await;
        *self.client.lock().unwrap() = Some(rt.clone());
        rt
    }
}

impl Backend for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn fakes(&self) -> &Fakes {
        &self.fakes
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(5)
    }

    async fn start(&self, workflow: &str, id: &str, input: Value) {
        let rt = self.client().await;
        assert!(
            rt.start(workflow, id, input).await.expect("start"),
            "{id} started twice"
        );
        self.settle().await;
    }

    async fn signal(&self, id: &str, name: &str, payload: Value, actor: Actor) {
        let rt = self.client().await;
        rt.signal(id, name, payload, actor).await.expect("signal");
        self.settle().await;
    }

    async fn advance_to(&self, t: Duration) {
        let at = self.t0 + chrono::Duration::from_std(t).expect("duration");
        if at > self.clock.now() {
            self.clock.set(at);
        }
        self.settle().await;
    }

    async fn instance(&self, id: &str) -> Option<Instance> {
        let row = self.store.instance(id).await.expect("store")?;
        Some(serde_json::from_str(&row.snapshot).expect("snapshot"))
    }

    async fn settle(&self) {
        let waiting = {
            let guard = self.worker.lock().unwrap();
            guard.as_ref().map(|w| {
                let generation = w.kicks.fetch_add(1, Ordering::SeqCst) + 1;
                w.kick.notify_one();
                (generation, w.idle.clone())
            })
        };
        if let Some((generation, mut idle)) = waiting {
            // A round that hangs in an activity never reports idle: the
            // scenario goes on (and kills the worker).
            let _ =
                tokio::time::timeout(Duration::from_secs(2), idle.wait_for(|g| *g >= generation))
                    .await;
        }
    }

    async fn kill_worker(&self) {
        let w = self.worker.lock().unwrap().take().expect("a worker runs");
        w.task.abort();
        let _ = w.task.await;
        drop(w.rt);
    }

    async fn start_worker(&self) {
        let rt = self.runtime().await;
        // As a restarted process does: take back its predecessor's tasks.
        rt.take_back_leases().await.expect("take back leases");
        let kick = Arc::new(Notify::new());
        let kicks = Arc::new(AtomicU64::new(0));
        let (tx, idle) = watch::channel(0u64);
        let task = tokio::spawn({
            let rt = rt.clone();
            let kick = kick.clone();
            let kicks = kicks.clone();
            async move {
                loop {
                    let generation = kicks.load(Ordering::SeqCst);
                    rt.run_until_idle().await.expect("embedded round");
                    let _ = tx.send(generation);
                    kick.notified().await;
                }
            }
        });
        *self.client.lock().unwrap() = None;
        *self.worker.lock().unwrap() = Some(Worker {
            rt,
            task,
            kick,
            kicks,
            idle,
        });
        self.settle().await;
    }

    async fn publish(&self, bundle: Bundle) {
        let rt = self.client().await;
        rt.publish(
            &bundle,
            &Publication {
                by: "测试".into(),
                reason: "一致性测试：新版本".into(),
            },
        )
        .await
        .expect("publish");
        *self.bundle.lock().unwrap() = Arc::new(bundle);
    }
}
