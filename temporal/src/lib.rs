//! The Temporal backend of the engine (issue 13): the same compiled YAML
//! definitions, run by one generic Temporal workflow instead of the
//! embedded runtime.
//!
//! - [`Interpreter`] (Temporal type `epi`) runs a [`engine::Program`] with
//!   the pure [`engine::interpreter::step`] on each start, signal, timer,
//!   activity result and child completion, and turns each effect into one
//!   Temporal command ([`codec::commands`]).
//! - The definition travels with the instance ([`codec::Definition`]: hash
//!   and source); workers compile it once per hash ([`cache`]), so running
//!   instances keep their version and new ones take the latest (R8.3).
//! - Activities run in the worker through the same
//!   [`engine::runtime::activity::Activities`] registry as the embedded
//!   runtime, with the same idempotency keys; projection hooks are told
//!   after each step (a local activity).
//! - [`TemporalEngine`] is the client side (start, signal, state, history,
//!   search, schedules); [`run_worker`] the worker side.

pub mod cache;
mod client;
pub mod codec;
pub mod inspect;
mod row;
mod worker;
mod workflow;

pub use client::{
    Error, TemporalEngine, history_rows, schedule_id, schedule_policy, schedule_spec,
};
pub use codec::{Definition, Outcome, SignalArgs, StartArgs};
pub use worker::{LatestPrograms, Worker, WorkerSetup, run_worker};
pub use workflow::{EpiActivities, Interpreter};

use std::path::PathBuf;

/// Where Temporal is and which task queue the engine uses. The server's
/// configuration maps `EPI_TEMPORAL_*` onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// e.g. `http://127.0.0.1:7233` (`https://` with TLS).
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
    pub tls: Option<Tls>,
    /// Sent to Temporal as the client's identity (host and process by default).
    pub identity: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            address: "http://127.0.0.1:7233".into(),
            namespace: "default".into(),
            task_queue: "epi".into(),
            tls: None,
            identity: None,
        }
    }
}

/// TLS to Temporal: the server's CA, the client's certificate and key for
/// mutual TLS, and the name to check the server's certificate against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub domain: Option<String>,
}
