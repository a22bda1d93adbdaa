//! Activities: the host application's side effects (SMS, notices, the
//! comparison run), called by the runtime's workers. Each call carries an
//! idempotency key that stays the same across retries and crashes: the
//! instance id and the activity id the interpreter assigned.

use crate::compile::program::Program;
use crate::store::InstanceRow;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One call of an activity.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityCall {
    pub instance_id: String,
    pub activity_id: String,
    pub name: String,
    pub args: Value,
    /// `{instance_id}/{activity_id}`: the same for every attempt.
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl ActivityCall {
    pub fn key(instance_id: &str, activity_id: &str) -> String {
        crate::store::idempotency_key(instance_id, activity_id)
    }

    /// The text argument `name`; one missing (or not a text) is a
    /// permanent error naming the activity and the argument, since the
    /// definition that calls it must be fixed (a retry gives the same).
    pub fn text_arg(&self, name: &str) -> Result<&str, ActivityError> {
        self.args[name].as_str().ok_or_else(|| {
            ActivityError::Permanent(format!(
                "activity `{}`: argument `{name}` is {} (a text is required)",
                self.name,
                match &self.args[name] {
                    Value::Null => "missing".to_string(),
                    other => format!("not a text: {other}"),
                }
            ))
        })
    }

    /// The arguments as the activity's own typed struct; ones that do not
    /// fit are a permanent error naming the activity and what is wrong.
    pub fn args_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ActivityError> {
        T::deserialize(&self.args).map_err(|e| {
            ActivityError::Permanent(format!("activity `{}`: arguments: {e}", self.name))
        })
    }
}

/// Why an attempt failed. `Permanent` errors are not retried.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActivityError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

/// An activity implementation.
pub trait Activity: Send + Sync + 'static {
    fn call(&self, call: ActivityCall) -> BoxFuture<Result<Value, ActivityError>>;
}

impl<F, Fut> Activity for F
where
    F: Fn(ActivityCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ActivityError>> + Send + 'static,
{
    fn call(&self, call: ActivityCall) -> BoxFuture<Result<Value, ActivityError>> {
        Box::pin(self(call))
    }
}

/// What a projection hook is told after a step of an instance whose
/// workflow declares `projection:` committed: the instance as it is now
/// (it may have moved on since that step: the hook writes what it shows,
/// and only over an older revision) and the program it runs.
#[derive(Debug, Clone)]
pub struct ProjectionCall {
    pub projection: String,
    pub instance: InstanceRow,
    pub program: Arc<Program>,
}

/// The host's side of a projection a workflow declares (`projection:`):
/// called by the runtime's outbox loop after each committed step, until it
/// succeeds (an error leaves the outbox row for the next round), so it must
/// be idempotent.
pub trait Projection: Send + Sync + 'static {
    fn project(&self, call: ProjectionCall) -> BoxFuture<Result<(), String>>;

    /// A page of instances at once; all succeed or the page is told again.
    /// A host that can write them in one transaction says so here; by
    /// default, one `project` after the other.
    fn project_many(&self, calls: Vec<ProjectionCall>) -> BoxFuture<Result<(), String>> {
        let each: Vec<_> = calls.into_iter().map(|c| self.project(c)).collect();
        Box::pin(async move {
            for f in each {
                f.await?;
            }
            Ok(())
        })
    }
}

impl<F, Fut> Projection for F
where
    F: Fn(ProjectionCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn project(&self, call: ProjectionCall) -> BoxFuture<Result<(), String>> {
        Box::pin(self(call))
    }
}

/// The activities a runtime can run, by name, and the projections it keeps.
#[derive(Clone, Default)]
pub struct Activities {
    map: BTreeMap<String, Arc<dyn Activity>>,
    projections: BTreeMap<String, Arc<dyn Projection>>,
}

impl Activities {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(mut self, name: &str, a: impl Activity) -> Self {
        self.map.insert(name.to_string(), Arc::new(a));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Activity>> {
        self.map.get(name)
    }

    /// The hook of the projection `name` that workflows declare.
    pub fn projection(mut self, name: &str, p: impl Projection) -> Self {
        self.projections.insert(name.to_string(), Arc::new(p));
        self
    }

    pub fn get_projection(&self, name: &str) -> Option<&Arc<dyn Projection>> {
        self.projections.get(name)
    }

    /// Names declared in the catalog that have no implementation here.
    pub fn missing<'a>(&self, catalog: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        catalog
            .into_iter()
            .filter(|n| !self.map.contains_key(*n))
            .cloned()
            .collect()
    }
}
