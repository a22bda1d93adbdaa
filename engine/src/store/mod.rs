//! Durable storage of workflow state: definitions, instances, histories,
//! timers, activity tasks, an outbox, a signal inbox and schedule
//! bookkeeping, on SQLite (the embedded default: one file, WAL) or
//! PostgreSQL (production).
//!
//! The store knows rows, not workflows: snapshots, payloads and arguments
//! are opaque JSON text written by the runtime. It never reads the clock
//! (callers pass `now`) and never decides anything about a workflow. The one
//! write that matters, [`Store::commit`], applies a batch of steps in one
//! transaction, checking each instance's revision, so a step's new state,
//! its history and the timers, tasks and outbox rows it queues are saved
//! together or not at all.
//!
//! One implementation serves both databases through sqlx's `Any` driver:
//! the schema uses the same column types on both (times as unix
//! milliseconds, JSON as text), so the SQL is shared; only task claiming
//! differs (`FOR UPDATE SKIP LOCKED` on PostgreSQL).

pub mod sql;

pub use sql::SqlStore;

use chrono::{DateTime, TimeZone, Utc};
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("instance {id} changed concurrently (expected revision {expected}, found {found})")]
    Conflict {
        id: String,
        expected: i64,
        found: i64,
    },
    #[error("instance {0} already exists")]
    Duplicate(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A published definition version.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionRow {
    pub hash: String,
    pub kind: String,
    pub version: i64,
    /// JSON of `compile::program::DefinitionSource`.
    pub source: String,
    pub published_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub id: String,
    pub kind: String,
    pub definition_hash: String,
    pub definition_version: i64,
    pub state: String,
    /// `running`, `completed`, `failed`.
    pub status: String,
    pub status_label: Option<String>,
    pub enterprise_id: Option<String>,
    pub district: Option<String>,
    pub person: Option<String>,
    pub parent_id: Option<String>,
    /// JSON of `interpreter::Instance`.
    pub snapshot: String,
    /// Incremented by every committed step.
    pub revision: i64,
    pub history_len: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub instance_id: String,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerRow {
    pub due_at: DateTime<Utc>,
    pub instance_id: String,
    pub timer_id: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskStatus::Pending,
            "running" => TaskStatus::Running,
            "succeeded" => TaskStatus::Succeeded,
            "failed" => TaskStatus::Failed,
            _ => return None,
        })
    }
}

/// An activity task. `id` is the idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: String,
    pub instance_id: String,
    pub activity_id: String,
    pub name: String,
    pub args: String,
    /// JSON of the retry policy.
    pub retry: String,
    /// Attempts started so far.
    pub attempt: i64,
    pub max_attempts: i64,
    pub status: TaskStatus,
    pub next_run_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub result: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Unique; inserting an id twice keeps the first row.
    pub id: String,
    pub instance_id: String,
    pub kind: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignalRow {
    pub id: i64,
    pub instance_id: String,
    pub name: String,
    pub payload: String,
    pub actor: String,
    pub received_at: DateTime<Utc>,
}

/// How a task ends inside a step's transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDone {
    pub id: String,
    pub status: TaskStatus,
    pub result: Option<String>,
    pub error: Option<String>,
    /// With status `Pending`: the attempt failed and the next one runs then.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// Everything one step writes. Applied atomically with the others of its batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepCommit {
    /// The instance's new row; None for commits that only move bookkeeping
    /// (an outbox row delivered to an instance that already existed).
    pub instance: Option<InstanceRow>,
    /// None: insert a new instance. Some(r): update, the stored revision must be r.
    pub expected_revision: Option<i64>,
    /// Insert only if absent; when present, the rest of this commit except
    /// the bookkeeping below is skipped (idempotent child and schedule starts).
    pub insert_if_absent: bool,
    pub history: Vec<HistoryRow>,
    pub timers_delete: Vec<String>,
    pub timers_insert: Vec<TimerRow>,
    pub tasks_insert: Vec<TaskRow>,
    pub task_done: Option<TaskDone>,
    pub outbox_insert: Vec<OutboxRow>,
    // Bookkeeping, applied even when an `insert_if_absent` instance existed:
    pub outbox_delivered: Vec<String>,
    pub signal_consumed: Option<i64>,
    pub schedule_fired: Option<(String, DateTime<Utc>)>,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub kind: Option<String>,
    pub state: Option<String>,
    pub status: Option<String>,
    pub enterprise_id: Option<String>,
    pub district: Option<String>,
    pub person: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: 50,
            offset: 0,
        }
    }
}

/// The store. Methods return `Send` futures so runtimes can spawn them.
pub trait Store: Send + Sync + 'static {
    // Definitions.
    /// Save a version; publishing the same hash again is a no-op. Returns true if new.
    fn publish_definition(&self, d: &DefinitionRow) -> impl Future<Output = Result<bool>> + Send;
    fn definition(&self, hash: &str) -> impl Future<Output = Result<Option<DefinitionRow>>> + Send;
    fn definitions(&self, kind: &str) -> impl Future<Output = Result<Vec<DefinitionRow>>> + Send;

    // The one write of workflow state.
    /// Apply every commit in one transaction. A revision mismatch or a
    /// duplicate insert fails the whole batch and writes nothing. Returns,
    /// per commit, whether its instance part was applied.
    fn commit(&self, batch: &[StepCommit]) -> impl Future<Output = Result<Vec<bool>>> + Send;

    // Instances.
    fn instance(&self, id: &str) -> impl Future<Output = Result<Option<InstanceRow>>> + Send;
    /// The instances with these ids that exist, in no particular order.
    fn instances_by_id(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<InstanceRow>>> + Send;
    fn instances(
        &self,
        filter: &InstanceFilter,
        page: Page,
    ) -> impl Future<Output = Result<Vec<InstanceRow>>> + Send;
    fn count_instances(&self, filter: &InstanceFilter) -> impl Future<Output = Result<i64>> + Send;
    /// (kind, state, count) of running and ended instances, for metrics.
    fn count_by_state(&self) -> impl Future<Output = Result<Vec<(String, String, i64)>>> + Send;
    fn history(&self, id: &str) -> impl Future<Output = Result<Vec<HistoryRow>>> + Send;

    // Timers.
    /// Timers due at or before `now`, oldest first.
    fn due_timers(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<TimerRow>>> + Send;
    fn next_timer(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
    fn pending_timers(
        &self,
        instance_id: Option<&str>,
        page: Page,
    ) -> impl Future<Output = Result<Vec<TimerRow>>> + Send;
    fn count_timers(&self) -> impl Future<Output = Result<i64>> + Send;

    // Activity tasks.
    /// Claim runnable tasks (pending and due, or running with an expired
    /// lease), marking them running until `lease_until` for `owner` and
    /// counting the attempt.
    fn claim_tasks(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        lease_until: DateTime<Utc>,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<TaskRow>>> + Send;
    /// End at `now` the leases `owner` holds: its process is gone (a worker
    /// starting again under its name), so its running tasks are due at once.
    /// Returns how many.
    fn release_leases(
        &self,
        owner: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// An attempt failed and another will follow at `next_run_at`.
    fn retry_task(
        &self,
        id: &str,
        error: &str,
        next_run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn next_task(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
    fn task(&self, id: &str) -> impl Future<Output = Result<Option<TaskRow>>> + Send;
    fn failed_tasks(&self, page: Page) -> impl Future<Output = Result<Vec<TaskRow>>> + Send;
    /// Every activity task of one instance (attempts, last error, result),
    /// oldest first.
    fn tasks_of(&self, instance_id: &str) -> impl Future<Output = Result<Vec<TaskRow>>> + Send;

    // Outbox and inbox.
    fn pending_outbox(&self, limit: i64) -> impl Future<Output = Result<Vec<OutboxRow>>> + Send;
    fn enqueue_signal(&self, s: &SignalRow) -> impl Future<Output = Result<i64>> + Send;
    fn pending_signals(&self, limit: i64) -> impl Future<Output = Result<Vec<SignalRow>>> + Send;

    // Schedules.
    fn schedule_last_fired(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
}
