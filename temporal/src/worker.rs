//! The worker side: the `epi` workflow and the generic activities on the
//! task queue, with the application's activity registry and projections.

use crate::client::{Error, Result, connection_options};
use crate::workflow::{EpiActivities, Interpreter};
use crate::{Options, cache};
use engine::Program;
use engine::runtime::activity::Activities;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use temporalio_client::{Client, ClientOptions, GrpcCompression};
use temporalio_sdk::{Runtime, WorkerOptions};

/// What a worker runs: the current programs (new children and scheduled
/// starts take these; running instances bring their own) and the
/// application's activities and projection hooks, the registry the
/// embedded runtime uses.
#[derive(Clone, Default)]
pub struct WorkerSetup {
    pub programs: Vec<Arc<Program>>,
    pub activities: Activities,
}

/// The programs new children and scheduled starts of a worker take.
#[derive(Clone)]
pub struct LatestPrograms(Arc<RwLock<BTreeMap<String, Arc<Program>>>>);

impl LatestPrograms {
    /// Make these programs the latest; others stay as they are.
    pub fn set(&self, programs: impl IntoIterator<Item = Arc<Program>>) {
        let mut l = self.0.write().expect("lock");
        for p in programs {
            cache::insert(p.clone());
            l.insert(p.name.clone(), p);
        }
    }

    pub fn get(&self, workflow: &str) -> Option<Arc<Program>> {
        self.0.read().expect("lock").get(workflow).cloned()
    }
}

/// A connected Temporal worker. [`Worker::run`] is not `Send`: drive it
/// on the current task (`tokio::join!`, `LocalSet`), not `tokio::spawn`.
pub struct Worker {
    inner: temporalio_sdk::Worker,
    latest: Arc<RwLock<BTreeMap<String, Arc<Program>>>>,
    // The SDK's runtime must outlive the worker.
    _runtime: Runtime,
}

impl Worker {
    /// Connect and register; fails with [`Error::Unreachable`] when
    /// Temporal cannot be reached.
    pub async fn new(options: &Options, setup: WorkerSetup) -> Result<Worker> {
        let client = connect_worker(options).await?;
        let runtime = Runtime::from_current_tokio(Default::default())
            .map_err(|e| Error::Temporal(e.to_string()))?;
        let latest: Arc<RwLock<BTreeMap<String, Arc<Program>>>> = Default::default();
        {
            let mut l = latest.write().expect("lock");
            for p in setup.programs {
                cache::insert(p.clone());
                l.insert(p.name.clone(), p);
            }
        }
        let acts = EpiActivities {
            registry: setup.activities,
            latest: latest.clone(),
        };
        let opts = WorkerOptions::new(options.task_queue.clone())
            .register_workflow::<Interpreter>()
            .map_err(|e| Error::Temporal(e.to_string()))?
            .register_activities(acts)
            .build();
        let inner = temporalio_sdk::Worker::new(&runtime, client, opts)
            .map_err(|e| Error::Temporal(e.to_string()))?;
        Ok(Worker {
            inner,
            latest,
            _runtime: runtime,
        })
    }

    /// Make these programs the latest (after a publication).
    pub fn set_programs(&self, programs: impl IntoIterator<Item = Arc<Program>>) {
        self.programs().set(programs);
    }

    /// A handle to the worker's latest programs that stays usable while
    /// [`Worker::run`] holds the worker (a publication follower sets them).
    pub fn programs(&self) -> LatestPrograms {
        LatestPrograms(self.latest.clone())
    }

    /// A handle that stops [`Worker::run`] (it finishes the tasks in hand).
    pub fn shutdown_handle(&self) -> impl Fn() + use<> {
        self.inner.shutdown_handle()
    }

    /// Poll the task queue until shut down.
    pub async fn run(&mut self) -> Result<()> {
        self.inner
            .run()
            .await
            .map_err(|e| Error::Temporal(e.to_string()))
    }
}

/// The worker's connection: the client's options, but uncompressed. The
/// SDK gzips every call by default; on the warning-shaped benchmark
/// workflow that is ~3 of the worker's ~8 ms CPU per workflow (deflate of
/// each request, inflate of each task), for messages of a few KB that
/// travel to a Temporal cluster beside the workers (bench/README.md).
async fn connect_worker(options: &Options) -> Result<Client> {
    let mut conn = connection_options(options)?;
    conn.grpc_compression = GrpcCompression::None;
    Client::connect(conn, ClientOptions::new(options.namespace.clone()).build())
        .await
        .map_err(|e| Error::Unreachable {
            address: options.address.clone(),
            detail: e.to_string(),
        })
}

/// Run a worker until `shutdown` resolves (then it stops polling and
/// finishes the tasks in hand).
pub async fn run_worker(
    options: &Options,
    setup: WorkerSetup,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut worker = Worker::new(options, setup).await?;
    let stop = worker.shutdown_handle();
    let (r, ()) = futures::future::join(worker.run(), async move {
        shutdown.await;
        stop();
    })
    .await;
    r
}
