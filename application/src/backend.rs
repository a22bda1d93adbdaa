//! Which engine carries out the workflows this process starts and signals:
//! the embedded runtime (the store in this process's database, the
//! default) or a Temporal cluster (`engine: temporal`, cargo feature
//! `temporal`). Web handlers and the operator's buttons start and signal
//! through [`Workflows`], never through one engine directly, so the same
//! pages run on either.
//!
//! On Temporal, a signal is first checked here against the instance's
//! state (queried from its workflow) with the same pure step the workflow
//! will apply, so a refused disposal comes back with the same typed
//! errors (field messages of the form) as on the embedded runtime.

use engine::interpreter::Actor;
use engine::runtime::{Error, Runtime};
use engine::store::SqlStore;
use serde_json::Value;

/// The engine behind [`Workflows`].
#[derive(Clone, Default)]
pub enum Backend {
    /// The runtime of this process (its `runtime` loop carries effects out).
    #[default]
    Embedded,
    /// A Temporal cluster: workers (`server worker`) carry effects out.
    #[cfg(feature = "temporal")]
    Temporal(Box<engine_temporal::TemporalEngine>),
}

/// Starting and signalling workflows, on whichever engine runs them.
#[derive(Clone)]
pub struct Workflows {
    /// The embedded runtime (also the definitions' store on Temporal: the
    /// publications live in this database).
    pub runtime: Runtime<SqlStore>,
    pub backend: Backend,
}

impl Workflows {
    pub fn embedded(runtime: Runtime<SqlStore>) -> Workflows {
        Workflows {
            runtime,
            backend: Backend::Embedded,
        }
    }

    /// Whether the embedded runtime carries the workflows out (its
    /// histories, timers and repairs are in this database).
    pub fn is_embedded(&self) -> bool {
        matches!(self.backend, Backend::Embedded)
    }

    /// Start `workflow` as instance `id`; false when `id` exists.
    pub async fn start(&self, workflow: &str, id: &str, input: Value) -> Result<bool, Error> {
        match &self.backend {
            Backend::Embedded => self.runtime.start(workflow, id, input).await,
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => t.start(workflow, id, input).await.map_err(temporal_error),
        }
    }

    /// Send a signal. A refusal is `Error::Step` with the interpreter's
    /// reason on both engines; nothing is recorded for it.
    pub async fn signal(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        actor: Actor,
    ) -> Result<(), Error> {
        match &self.backend {
            Backend::Embedded => self.runtime.signal(id, name, payload, actor).await,
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => temporal_signal(t, id, name, payload, actor).await,
        }
    }
}

impl Workflows {
    /// An instance's state (its definition's hash among it) and its
    /// history (the rows `engine::inspect::events` reads), from the engine
    /// that runs it; None when there is no such instance.
    pub async fn history(
        &self,
        id: &str,
    ) -> Result<
        Option<(
            engine::interpreter::Instance,
            Vec<engine::store::HistoryRow>,
        )>,
        Error,
    > {
        use engine::store::Store as _;
        match &self.backend {
            Backend::Embedded => {
                let store = self.runtime.store();
                let Some(row) = store.instance(id).await? else {
                    return Ok(None);
                };
                let state = engine::inspect::state_of(&row).map_err(Error::Corrupt)?;
                Ok(Some((state, store.history(id).await?)))
            }
            #[cfg(feature = "temporal")]
            Backend::Temporal(t) => {
                let Some(state) = t.state(id).await.map_err(temporal_error)? else {
                    return Ok(None);
                };
                let rows = t.history_rows(id).await.map_err(temporal_error)?;
                Ok(Some((state, rows)))
            }
        }
    }
}

#[cfg(feature = "temporal")]
async fn temporal_signal(
    t: &engine_temporal::TemporalEngine,
    id: &str,
    name: &str,
    payload: Value,
    actor: Actor,
) -> Result<(), Error> {
    use engine::interpreter::{step, Input};
    let state = t
        .state(id)
        .await
        .map_err(temporal_error)?
        .ok_or_else(|| Error::UnknownInstance(id.to_string()))?;
    // The instance's own definition version (R8.3): compiled by this
    // process when it published or started it, else the workflow's own
    // check (a refusal in words) is what stands.
    if let Some(program) = engine_temporal::cache::get(&state.hash) {
        let input = Input::Signal {
            at: chrono::Utc::now(),
            name: name.to_string(),
            payload: payload.clone(),
            actor: actor.clone(),
        };
        step(&program, Some(&state), &input)?;
    }
    t.signal(id, name, payload, actor)
        .await
        .map_err(temporal_error)
}

/// Temporal's errors in the runtime's terms: refusals and unknown ids as
/// the embedded runtime reports them, the rest in words.
#[cfg(feature = "temporal")]
pub fn temporal_error(e: engine_temporal::Error) -> Error {
    use engine_temporal::Error as T;
    match e {
        T::Refused(e) => Error::Step(e),
        T::NotFound(id) => Error::UnknownInstance(id),
        T::UnknownWorkflow(w) => Error::UnknownWorkflow(w),
        T::SignalRefused(why) => Error::Refused(why),
        other => Error::Refused(other.to_string()),
    }
}

/// The Temporal client's options from the configuration's `temporal`
/// section (`EPI_TEMPORAL_*`).
#[cfg(feature = "temporal")]
pub fn temporal_options(c: &crate::config::TemporalConfig) -> engine_temporal::Options {
    engine_temporal::Options {
        address: c.address.clone(),
        namespace: c.namespace.clone(),
        task_queue: c.task_queue.clone(),
        tls: c.tls.enabled().then(|| engine_temporal::Tls {
            ca: c.tls.ca.clone(),
            cert: c.tls.cert.clone(),
            key: c.tls.key.clone(),
            domain: c.tls.domain.clone(),
        }),
        identity: None,
    }
}

/// Keep another engine's "latest programs" in step with this database's
/// publications (R8.3 on Temporal): every `every`, read whether another
/// process published (`Runtime::follow_publications`) and, when the
/// current publication changed (there or in this process), hand its
/// programs to `adopt` (a worker's `LatestPrograms::set`, the client's
/// `TemporalEngine::set_programs`). Runs until the task is dropped.
pub async fn follow_publications(
    runtime: Runtime<SqlStore>,
    every: std::time::Duration,
    adopt: impl Fn(Vec<std::sync::Arc<engine::Program>>),
) {
    let mut known = runtime.current().0;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = runtime.follow_publications().await {
            tracing::warn!(error = %e, "reading the latest publication failed; tried again");
            continue;
        }
        let (seq, programs) = runtime.current();
        if seq != known {
            tracing::info!(publication = ?seq, "new instances on Temporal take the new publication");
            adopt(programs.into_values().collect());
            known = seq;
        }
    }
}
