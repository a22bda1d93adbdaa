//! What the activities work with: the store, the pools, the clock, the
//! adapters and the rules of the running definitions.

use crate::adapters::health::HealthCommission;
use crate::adapters::sms::SmsGateway;
use engine::clock::Clock;
use engine::rules::Rules;
use engine::runtime::{ActivityCall, ActivityError};
use sqlx::AnyPool;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) fn db(e: sqlx::Error) -> ActivityError {
    ActivityError::Retryable(format!("database: {e}"))
}

/// An error of the engine's SQL helpers (`insert_many`) as the database
/// error it is, for code that returns `sqlx::Error`.
pub(crate) fn sqlx_error(e: engine::store::Error) -> sqlx::Error {
    match e {
        engine::store::Error::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

pub(crate) fn store_err(e: engine::store::Error) -> ActivityError {
    ActivityError::Retryable(e.to_string())
}

/// What the activities work with.
pub struct Services {
    /// The engine's store (its API, for the instance a warning shows).
    pub store: engine::store::SqlStore,
    /// The writer (on a SQLite file, its one connection).
    pub pool: AnyPool,
    /// Reads that need not wait for the writer (`SqlStore::reader`; the
    /// same pool on PostgreSQL and in-memory SQLite).
    pub reader: AnyPool,
    pub clock: Arc<dyn Clock>,
    pub health: Arc<dyn HealthCommission>,
    pub sms: Arc<dyn SmsGateway>,
    /// The rules of the definitions this process started with: used only
    /// for a call whose instance is not stored (never in a running system).
    pub rules: Arc<Rules>,
    /// Rules by definition hash, compiled from the stored source once.
    pub rules_by_version: std::sync::Mutex<HashMap<String, Arc<Rules>>>,
}

impl Services {
    /// The rules of the definition version the calling instance runs: a
    /// comparison started after a publication judges by the published
    /// rules, one started before keeps its own (R8.3), without a restart.
    pub async fn rules_for(&self, call: &ActivityCall) -> Result<Arc<Rules>, ActivityError> {
        use engine::store::Store as _;
        let Some(row) = self
            .store
            .instance(&call.instance_id)
            .await
            .map_err(store_err)?
        else {
            return Ok(self.rules.clone());
        };
        let hash = row.definition_hash;
        if let Some(r) = self.rules_by_version.lock().expect("lock").get(&hash) {
            return Ok(r.clone());
        }
        let rules = compile_stored(&self.store, &hash).await?.rules.clone();
        self.rules_by_version
            .lock()
            .expect("lock")
            .insert(hash, rules.clone());
        Ok(rules)
    }
}

/// The program of a stored definition, compiled from its stored source
/// (activities have no runtime at hand).
pub async fn compile_stored(
    store: &engine::store::SqlStore,
    hash: &str,
) -> Result<Arc<engine::compile::program::Program>, ActivityError> {
    use engine::store::Store as _;
    let row = store
        .definition(hash)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ActivityError::Permanent(format!("definition {hash} is not stored")))?;
    let source =
        serde_json::from_str(&row.source).map_err(|e| ActivityError::Permanent(e.to_string()))?;
    engine::compile::compile_program(&source, &engine::Options::default())
        .map_err(|e| ActivityError::Permanent(e.to_string()))
}
