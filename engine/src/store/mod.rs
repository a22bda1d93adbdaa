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
use std::collections::BTreeMap;
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

/// The idempotency key of an activity call (`{instance}/{activity id}`): the
/// task's id in the store, and what an activity hands to the outside world
/// so a retry is recognised there.
pub fn idempotency_key(instance_id: &str, activity_id: &str) -> String {
    format!("{instance_id}/{activity_id}")
}

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored time (unix milliseconds) back as an instant; one out of
/// range is corrupt data, named by `what` (table and column).
pub fn from_millis(what: &str, ms: i64) -> Result<DateTime<Utc>> {
    sql::time(ms).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// Where a child workflow reports its completion: its parent instance and
/// the parent's call id (`c3`) that waits on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ParentRef {
    /// The parent's instance id.
    #[serde(rename = "parent")]
    pub instance_id: String,
    pub call: String,
}

/// A published definition version.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DefinitionRow {
    pub hash: String,
    pub kind: String,
    pub version: i64,
    /// JSON of `compile::program::DefinitionSource`.
    pub source: String,
    #[sqlx(try_from = "sql::Millis")]
    pub published_at: DateTime<Utc>,
}

/// One publication (issue 11): the step that made a set of definition
/// versions current for new instances, with who, when and why. Numbered in
/// order; the highest `seq` is what new instances run.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PublicationRow {
    /// Assigned by [`Store::publish`]: 1, 2, 3, … in order.
    pub seq: i64,
    /// `publish`, `startup` (the files published when the server started)
    /// or `rollback`.
    pub kind: String,
    pub published_by: String,
    pub reason: String,
    /// Wall time of the publication.
    #[sqlx(try_from = "sql::Millis")]
    pub published_at: DateTime<Utc>,
    /// The runtime's clock then (a rehearsal's simulated time; the same as
    /// `published_at` in production).
    #[sqlx(try_from = "sql::Millis")]
    pub clock_at: DateTime<Utc>,
    /// For a rollback: the publication whose definitions became current again.
    pub rollback_of: Option<i64>,
    /// Every workflow current after this publication → its definition hash.
    #[sqlx(try_from = "sql::JsonMap")]
    pub definitions: std::collections::BTreeMap<String, String>,
}

/// Instances on one definition version.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DefinitionCount {
    #[sqlx(rename = "definition_hash")]
    pub hash: String,
    /// Not ended: running, or failed and waiting for an operator.
    pub open: i64,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: String,
    pub kind: String,
    pub definition_hash: String,
    pub definition_version: i64,
    pub state: String,
    /// `running`, `completed`, `failed`.
    pub status: String,
    pub status_label: Option<String>,
    /// The search attributes the definition declares (`search:`), name →
    /// value, fixed when the instance starts; stored in `instance_search`
    /// (migration 0005) with the instance's first step.
    #[sqlx(skip)]
    pub search: BTreeMap<String, String>,
    /// The parent and its call, for a child workflow.
    #[sqlx(flatten, try_from = "sql::ParentColumns")]
    pub parent: Option<ParentRef>,
    /// JSON of `interpreter::Instance`.
    pub snapshot: String,
    /// Incremented by every committed step.
    pub revision: i64,
    pub history_len: i64,
    /// The `hash` of the instance's last history row: the head of its chain,
    /// from which the next step's row is chained without reading history.
    /// None until a row is written after migration 0003.
    pub history_hash: Option<String>,
    #[sqlx(try_from = "sql::Millis")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "sql::Millis")]
    pub updated_at: DateTime<Utc>,
    #[sqlx(try_from = "sql::MaybeMillis")]
    pub closed_at: Option<DateTime<Utc>>,
}

/// One entry of an instance's history. Rows are chained: each carries the
/// hash of the row before it in its instance, and its own hash covers that
/// link, so an altered, removed or reordered row shows (see [`verify_chain`]).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HistoryRow {
    pub instance_id: String,
    pub seq: i64,
    #[sqlx(try_from = "sql::Millis")]
    pub at: DateTime<Utc>,
    pub kind: String,
    pub payload: String,
    /// The previous row's `hash` ([`GENESIS_HASH`] for an instance's first
    /// chained row). None on rows written before migration 0003.
    pub prev_hash: Option<String>,
    /// [`history_hash`] of this row's fields and `prev_hash`. None on rows
    /// written before migration 0003.
    pub hash: Option<String>,
}

impl HistoryRow {
    /// A row chained to `prev_hash` (the instance's `history_hash`, or
    /// [`GENESIS_HASH`] when it has none), with its hash computed.
    pub fn chained(
        instance_id: &str,
        seq: i64,
        at: DateTime<Utc>,
        kind: &str,
        payload: String,
        prev_hash: &str,
    ) -> HistoryRow {
        let hash = history_hash(instance_id, seq, millis(at), kind, &payload, prev_hash);
        HistoryRow {
            instance_id: instance_id.to_string(),
            seq,
            at,
            kind: kind.to_string(),
            payload,
            prev_hash: Some(prev_hash.to_string()),
            hash: Some(hash),
        }
    }

    /// The hash this row's stored fields give (None if it has no `prev_hash`).
    pub fn computed_hash(&self) -> Option<String> {
        let prev = self.prev_hash.as_deref()?;
        Some(history_hash(
            &self.instance_id,
            self.seq,
            millis(self.at),
            &self.kind,
            &self.payload,
            prev,
        ))
    }
}

/// The `prev_hash` of an instance's first chained history row.
pub const GENESIS_HASH: &str = "";

/// Hex sha256 of a history row: a domain tag, then each field in order —
/// text as its byte length (u64, big-endian) and bytes, integers as i64
/// big-endian — so no two different rows encode alike. `at` is in unix
/// milliseconds, as stored.
pub fn history_hash(
    instance_id: &str,
    seq: i64,
    at_ms: i64,
    kind: &str,
    payload: &str,
    prev_hash: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"engine.history.v1\0");
    let text = |h: &mut Sha256, s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    text(&mut h, instance_id);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    text(&mut h, kind);
    text(&mut h, payload);
    text(&mut h, prev_hash);
    hex::encode(h.finalize())
}

/// The outcome of checking one instance's history chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainCheck {
    pub instance_id: String,
    /// History rows read.
    pub rows: i64,
    /// Rows at the start of the history that have no hash: written before
    /// migration 0003, not chained, not checked.
    pub unchained: i64,
    /// The first problem, in seq order; None if the chain holds.
    pub broken: Option<ChainBreak>,
}

impl ChainCheck {
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Where a chain breaks and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainBreak {
    pub seq: i64,
    pub problem: ChainProblem,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChainProblem {
    /// The row's stored hash is not the hash of its fields: the row was altered.
    HashMismatch { stored: String, computed: String },
    /// The row's `prev_hash` is not the previous row's hash: a row before it
    /// was removed, or rows were reordered or inserted.
    PrevHashMismatch { expected: String, found: String },
    /// Rows from `seq` up to (not including) `next` are missing: `next` is
    /// the seq found where `seq` was expected.
    Gap { next: i64 },
    /// Rows from `seq` on are missing: the instance says it has `history_len`.
    Truncated { history_len: i64 },
    /// A row without a hash after chained rows (only rows written before
    /// migration 0003, at the start, may lack one).
    MissingHash,
    /// Rows at and after `seq` exist beyond the instance's `history_len`.
    Extra { history_len: i64 },
    /// The last row's hash is not the instance's `history_hash`: the last
    /// row was replaced (with a recomputed hash) or the instance row altered.
    HeadMismatch {
        instance: Option<String>,
        last_row: Option<String>,
    },
}

fn short(h: &str) -> &str {
    if h.is_empty() {
        "(genesis)"
    } else {
        h.get(..12).unwrap_or(h)
    }
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProblem::HashMismatch { stored, computed } => write!(
                f,
                "row altered (stored hash {}…, its content hashes to {}…)",
                short(stored),
                short(computed)
            ),
            ChainProblem::PrevHashMismatch { expected, found } => write!(
                f,
                "link broken: prev_hash {}… is not the previous row's hash {}… (a row removed, inserted or reordered)",
                short(found),
                short(expected)
            ),
            ChainProblem::Gap { next } => {
                write!(f, "row(s) missing (the next row found is seq {next})")
            }
            ChainProblem::Truncated { history_len } => write!(
                f,
                "row(s) missing at the end (the instance has {history_len} rows)"
            ),
            ChainProblem::MissingHash => write!(f, "row has no hash after chained rows"),
            ChainProblem::Extra { history_len } => write!(
                f,
                "rows beyond the instance's history length {history_len}"
            ),
            ChainProblem::HeadMismatch { instance, last_row } => write!(
                f,
                "last row's hash {} is not the instance's history hash {}",
                last_row.as_deref().map_or("(none)", short),
                instance.as_deref().map_or("(none)", short)
            ),
        }
    }
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {}: {}", self.seq, self.problem)
    }
}

/// Check an instance's history against its chain: `rows` in seq order, and
/// the instance's `history_len` and `history_hash` (the chain's head).
///
/// Rows without a hash at the start were written before migration 0003 and
/// are only counted; the first chained row after them must link to
/// [`GENESIS_HASH`]. From there every row must hash to its stored hash,
/// link to the previous row's hash, and follow it in seq without a gap; the
/// last row must be the instance's head. The first failure is reported.
pub fn verify_chain(instance: &InstanceRow, rows: &[HistoryRow]) -> ChainCheck {
    let mut check = ChainCheck {
        instance_id: instance.id.clone(),
        rows: rows.len() as i64,
        unchained: 0,
        broken: None,
    };
    let mut expected_seq = 0;
    // The previous chained row's hash; None while in the unchained prefix.
    let mut prev: Option<&str> = None;
    for r in rows {
        match check_chain_row(instance, r, expected_seq, prev) {
            Ok(Some(hash)) => prev = Some(hash),
            Ok(None) => check.unchained += 1,
            Err(broken) => {
                check.broken = Some(broken);
                return check;
            }
        }
        expected_seq += 1;
    }
    check.broken = check_chain_head(instance, expected_seq, prev);
    check
}

/// One row of [`verify_chain`], expected at `expected_seq` after the
/// chained row with hash `prev` (None while in the unchained prefix): its
/// hash if it is chained, None if it is in the unchained prefix.
fn check_chain_row<'a>(
    instance: &InstanceRow,
    r: &'a HistoryRow,
    expected_seq: i64,
    prev: Option<&str>,
) -> Result<Option<&'a str>, ChainBreak> {
    let brk = |seq, problem| Err(ChainBreak { seq, problem });
    if r.seq != expected_seq {
        return if r.seq > expected_seq {
            brk(expected_seq, ChainProblem::Gap { next: r.seq })
        } else {
            // A seq repeated or going back: rows out of order.
            brk(
                r.seq,
                ChainProblem::PrevHashMismatch {
                    expected: prev.unwrap_or(GENESIS_HASH).to_string(),
                    found: r.prev_hash.clone().unwrap_or_default(),
                },
            )
        };
    }
    if r.seq >= instance.history_len {
        return brk(
            r.seq,
            ChainProblem::Extra {
                history_len: instance.history_len,
            },
        );
    }
    let (Some(hash), Some(found_prev)) = (r.hash.as_deref(), r.prev_hash.as_deref()) else {
        if prev.is_none() {
            return Ok(None);
        }
        return brk(r.seq, ChainProblem::MissingHash);
    };
    let expected_prev = prev.unwrap_or(GENESIS_HASH);
    if found_prev != expected_prev {
        return brk(
            r.seq,
            ChainProblem::PrevHashMismatch {
                expected: expected_prev.to_string(),
                found: found_prev.to_string(),
            },
        );
    }
    let computed = r.computed_hash().unwrap_or_default();
    if computed != hash {
        return brk(
            r.seq,
            ChainProblem::HashMismatch {
                stored: hash.to_string(),
                computed,
            },
        );
    }
    Ok(Some(hash))
}

/// After the rows of [`verify_chain`] (`rows` of them, the last chained
/// one with hash `last`): are they all, and is the last the instance's head?
fn check_chain_head(instance: &InstanceRow, rows: i64, last: Option<&str>) -> Option<ChainBreak> {
    if rows < instance.history_len {
        return Some(ChainBreak {
            seq: rows,
            problem: ChainProblem::Truncated {
                history_len: instance.history_len,
            },
        });
    }
    if last != instance.history_hash.as_deref() {
        return Some(ChainBreak {
            seq: (rows - 1).max(0),
            problem: ChainProblem::HeadMismatch {
                instance: instance.history_hash.clone(),
                last_row: last.map(str::to_string),
            },
        });
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub struct TimerRow {
    #[sqlx(try_from = "sql::Millis")]
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
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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
    #[sqlx(try_from = "sql::Millis")]
    pub next_run_at: DateTime<Utc>,
    #[sqlx(try_from = "sql::MaybeMillis")]
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub result: Option<String>,
    #[sqlx(try_from = "sql::Millis")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "sql::Millis")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OutboxRow {
    /// Unique; inserting an id twice keeps the first row.
    pub id: String,
    pub instance_id: String,
    pub kind: String,
    pub payload: String,
    #[sqlx(try_from = "sql::Millis")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "sql::MaybeMillis")]
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SignalRow {
    pub id: i64,
    pub instance_id: String,
    pub name: String,
    pub payload: String,
    pub actor: String,
    #[sqlx(try_from = "sql::Millis")]
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
    /// Search attributes (name, value) the instance must have, all of them.
    pub search: Vec<(String, String)>,
    pub definition_version: Option<i64>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
}

impl InstanceFilter {
    /// Add the condition `name = value` on a search attribute, if `value`
    /// is given.
    pub fn search(mut self, name: &str, value: Option<String>) -> Self {
        if let Some(v) = value {
            self.search.push((name.to_string(), v));
        }
        self
    }
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
    /// Every stored definition version, by kind and version.
    fn all_definitions(&self) -> impl Future<Output = Result<Vec<DefinitionRow>>> + Send;

    // Publications.
    /// Save the definitions that are new (same hash again: no-op) and the
    /// publication, in one transaction; `p.seq` is ignored and the next
    /// number assigned. Returns the publication as stored.
    fn publish(
        &self,
        new_definitions: &[DefinitionRow],
        p: &PublicationRow,
    ) -> impl Future<Output = Result<PublicationRow>> + Send;
    /// The latest publication (what new instances run), if any.
    fn current_publication(&self) -> impl Future<Output = Result<Option<PublicationRow>>> + Send;
    /// The latest publication's number only: what a runtime polls to notice
    /// a publication made by another process.
    fn publication_seq(&self) -> impl Future<Output = Result<Option<i64>>> + Send;
    fn publication(&self, seq: i64) -> impl Future<Output = Result<Option<PublicationRow>>> + Send;
    /// Publications, newest first.
    fn publications(&self, limit: i64) -> impl Future<Output = Result<Vec<PublicationRow>>> + Send;
    /// Instances per definition hash (open and total).
    fn count_by_definition(&self) -> impl Future<Output = Result<Vec<DefinitionCount>>> + Send;

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
    /// Check an instance's history chain ([`verify_chain`]) on one
    /// consistent read of the instance and its rows. NotFound if no such
    /// instance.
    fn verify_history(&self, id: &str) -> impl Future<Output = Result<ChainCheck>> + Send;
    /// Check the chains of up to `limit` instances in id order after
    /// `after` (keyset paging: pass the last id of a page for the next).
    fn verify_histories(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ChainCheck>>> + Send;

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

    // Retention (purging finished workflows' personal data).
    /// Ids of up to `limit` finished instances (status `completed` or
    /// `terminated`) of `kind` closed before `before`, oldest first, that
    /// have no unfinished child: what [`Store::purge_instances`] may remove.
    fn finished_before(
        &self,
        kind: &str,
        before: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Remove, in one transaction, those of `ids` that are finished
    /// (`completed` or `terminated`) and have no unfinished child, with
    /// their history, timers, tasks, outbox rows and inbox signals. Running
    /// and failed instances (an operator's case) are never touched; ids
    /// that do not exist (purged before) are skipped, so a repeat is
    /// harmless. Returns the ids removed.
    fn purge_instances(&self, ids: &[String]) -> impl Future<Output = Result<Vec<String>>> + Send;

    // Schedules.
    /// The latest instant the store has recorded (an instance's update or
    /// a schedule's slot): a clock must not start before it.
    fn latest_recorded(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
    fn schedule_last_fired(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
}
