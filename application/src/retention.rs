//! 个人信息到期清理 (issue 15): the activities of `workflows/retention.yaml`.
//! `purge_personal_data` removes one bounded batch of data past its keeping
//! period, in one short transaction, and `reclaim_storage` returns the
//! space afterwards (SQLite incremental vacuum, PostgreSQL plain VACUUM).
//!
//! The keeping periods are the workflow's arguments (the policy lives in
//! `workflows/retention.yaml`, never here); this module only knows where
//! each kind of data is and what must never go: open warnings and their
//! workflows, running or failed workflows, closed warnings that still block
//! a new one on the same evidence (R5.1), and the per-person data of the
//! last runs kept for back-tests.
//!
//! Exactly once: every batch writes its result under its call's
//! idempotency key (`retention_batches`) in the transaction that deletes,
//! so a batch repeated after a crash returns what it did rather than
//! purging and counting again. Workflows are removed through the engine's
//! store API (`Store::purge_instances`, its own transaction); such a batch
//! first fixes its ids under the key, then purges them, then removes the
//! application's rows and counts what is gone — a crash between the steps
//! resumes on the same ids. Must not: run SQL on the engine's tables.

use crate::services::{db, store_err, Services};
use engine::runtime::{ActivityCall, ActivityError};
use engine::store::sql::Backend;
use engine::store::Store as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The kinds of data the policy must name, in the order they are purged.
pub const KINDS: &[&str] = &[
    "comparison_persons",
    "comparison_runs",
    "closed_warnings",
    "notices",
    "sms_log",
    "login_records",
    "expired_sessions",
    "access_audit",
    "finished_workflows",
];

/// How long one kind is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Days before the run's scheduled time; older data goes.
    pub days: i64,
    /// Comparison runs only: the latest runs kept whatever their age.
    #[serde(default)]
    pub keep_last_runs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    as_of: String,
    #[serde(default)]
    totals: Option<BTreeMap<String, u64>>,
    batch: i64,
    policy: BTreeMap<String, Rule>,
}

/// The policy checked: every kind named, nothing unknown, sensible numbers.
fn checked(args: &Args) -> Result<(), String> {
    for k in KINDS {
        if !args.policy.contains_key(*k) {
            return Err(format!("保留期限缺少 `{k}`"));
        }
    }
    for (k, r) in &args.policy {
        if !KINDS.contains(&k.as_str()) {
            return Err(format!("保留期限中有未知的数据类别 `{k}`"));
        }
        if r.days < 1 {
            return Err(format!("`{k}` 的保留天数应至少为 1"));
        }
        if r.keep_last_runs.is_some_and(|n| n < 0) {
            return Err(format!("`{k}` 的 keep_last_runs 不能为负"));
        }
    }
    if args.policy["comparison_runs"].days < args.policy["comparison_persons"].days {
        return Err("比对记录（comparison_runs）的保留天数不能短于比对人员明细".into());
    }
    if !(1..=10_000).contains(&args.batch) {
        return Err("batch 应在 1 至 10000 之间".into());
    }
    Ok(())
}

/// Every `purge_personal_data` call of the definitions gives a readable
/// policy (checked at start-up, by `validate` and before a publication, so
/// a mistyped kind or a zero is found before the night's purge).
pub fn check_policy(bundle: &engine::Bundle) -> Result<(), String> {
    use engine::compile::program::Template;
    /// The value of a template without expressions.
    fn literal(t: &Template) -> Option<Value> {
        match t {
            Template::Literal(v) => Some(v.clone()),
            Template::Map(entries) => entries
                .iter()
                .map(|(k, t)| Some((k.clone(), literal(t)?)))
                .collect::<Option<serde_json::Map<_, _>>>()
                .map(Value::Object),
            Template::List(items) => items
                .iter()
                .map(literal)
                .collect::<Option<_>>()
                .map(Value::Array),
            _ => None,
        }
    }
    for p in bundle.workflows.values() {
        for a in p
            .activities
            .iter()
            .filter(|a| a.name == "purge_personal_data")
        {
            let Template::Map(entries) = &a.args else {
                continue;
            };
            let field = |name: &str| entries.iter().find(|(k, _)| k == name).map(|e| &e.1);
            let (Some(policy), Some(batch)) = (
                field("policy").and_then(literal),
                field("batch").and_then(literal),
            ) else {
                continue; // computed: checked when the purge reads it
            };
            let args = Args {
                as_of: String::new(),
                totals: None,
                batch: batch.as_i64().unwrap_or(0),
                policy: serde_json::from_value(policy)
                    .map_err(|e| format!("workflows/{}.yaml：保留期限 policy：{e}", p.name))?,
            };
            checked(&args).map_err(|e| format!("workflows/{}.yaml：{e}", p.name))?;
        }
    }
    Ok(())
}

/// What one call of `purge_personal_data` hands back to the workflow:
/// `totals` (rows removed so far in this run, by kind), `more` (a batch was
/// removed: come back for the next), and this batch's `kind` and `purged`.
fn outcome(totals: &BTreeMap<String, u64>, kind: Option<&str>, n: u64) -> Value {
    let mut totals = totals.clone();
    if let Some(k) = kind {
        *totals.entry(k.to_string()).or_default() += n;
    }
    json!({ "totals": totals, "more": kind.is_some(), "kind": kind, "purged": n })
}

/// One batch of the first kind that has anything past its keeping period.
pub async fn purge_personal_data(
    s: Arc<Services>,
    call: ActivityCall,
) -> Result<Value, ActivityError> {
    let key = call.idempotency_key.as_str();
    if let Some(done) = stored_result(&s, key).await? {
        // A repeat after a crash: what the batch did, counted once.
        let mut done = done;
        done["replayed"] = json!(true);
        return Ok(done);
    }
    let args: Args = serde_json::from_value(call.args.clone())
        .map_err(|e| ActivityError::Permanent(format!("purge_personal_data: {e}")))?;
    checked(&args).map_err(ActivityError::Permanent)?;
    let as_of = chrono::DateTime::parse_from_rfc3339(&args.as_of)
        .map_err(|e| ActivityError::Permanent(format!("as_of {:?}: {e}", args.as_of)))?
        .with_timezone(&chrono::Utc);
    let totals = args.totals.clone().unwrap_or_default();
    let b = Batch {
        s: &s,
        key,
        totals: &totals,
        limit: args.batch,
    };
    let started = std::time::Instant::now();
    // A two-step batch cut short by a crash finishes first, on its own ids,
    // whatever else has become due since.
    let resumed = match plan_of(&s, key).await? {
        Some(plan) => b.kind(&plan.kind, &args, as_of).await?,
        None => None,
    };
    let mut done = resumed;
    for kind in KINDS {
        if done.is_some() {
            break;
        }
        done = b.kind(kind, &args, as_of).await?;
    }
    // Nothing left: not stored, a repeat finds nothing either.
    let done = done.unwrap_or_else(|| outcome(&totals, None, 0));
    if let Some(kind) = done["kind"].as_str() {
        tracing::info!(target: "server::retention", kind, purged = done["purged"].as_u64().unwrap_or(0),
            took_ms = started.elapsed().as_millis() as u64, "retention batch");
    }
    Ok(done)
}

/// The workflows a two-step batch fixed before purging them.
#[derive(Debug, serde::Serialize, Deserialize)]
struct Plan {
    kind: String,
    ids: Vec<String>,
}

async fn plan_of(s: &Services, key: &str) -> Result<Option<Plan>, ActivityError> {
    batch_json(s, key, "planned", "planned ids of").await
}

async fn stored_result(s: &Services, key: &str) -> Result<Option<Value>, ActivityError> {
    batch_json(s, key, "result", "stored batch").await
}

/// The JSON kept in `column` of batch `key`, if any; one that does not
/// read is an error naming `what` and the key.
async fn batch_json<T: serde::de::DeserializeOwned>(
    s: &Services,
    key: &str,
    column: &'static str,
    what: &str,
) -> Result<Option<T>, ActivityError> {
    let t: Option<Option<String>> = sqlx::query_scalar(&format!(
        "SELECT {column} FROM retention_batches WHERE key = $1"
    ))
    .bind(key)
    .fetch_optional(&s.pool)
    .await
    .map_err(db)?;
    t.flatten()
        .map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| ActivityError::Permanent(format!("{what} {key}: {e}")))
        })
        .transpose()
}

/// One batch: the call it belongs to and its limits.
struct Batch<'a> {
    s: &'a Services,
    key: &'a str,
    totals: &'a BTreeMap<String, u64>,
    limit: i64,
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

impl Batch<'_> {
    fn backend(&self) -> Backend {
        self.s.store.backend()
    }

    /// Record the batch's outcome in its own transaction, commit, return it.
    async fn finish(&self, mut tx: Tx<'_>, kind: &str, n: u64) -> Result<Value, ActivityError> {
        let v = outcome(self.totals, Some(kind), n);
        sqlx::query(
            "INSERT INTO retention_batches (key, planned, result, at) VALUES ($1, NULL, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET result = excluded.result",
        )
        .bind(self.key)
        .bind(v.to_string())
        .bind(self.s.clock.now().timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(v)
    }

    /// The per-person data of runs before `cut`, except the latest `keep`
    /// runs: up to `limit` address rows of the oldest such run.
    async fn comparison_persons(
        &self,
        cut: i64,
        keep: i64,
    ) -> Result<Option<Value>, ActivityError> {
        let mut tx = self.s.pool.begin().await.map_err(db)?;
        let run: Option<String> = sqlx::query_scalar(
            "SELECT r.id FROM comparison_runs r WHERE r.as_of < $1 \
             AND COALESCE(r.number, 0) <= (SELECT COALESCE(MAX(number), 0) FROM comparison_runs) - $2 \
             AND EXISTS (SELECT 1 FROM comparison_persons p WHERE p.run_id = r.id) \
             ORDER BY r.as_of, r.id LIMIT 1",
        )
        .bind(cut)
        .bind(keep)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(run) = run else {
            return Ok(None);
        };
        let n = sqlx::query(
            "DELETE FROM comparison_persons WHERE run_id = $1 AND address_id IN \
             (SELECT address_id FROM comparison_persons WHERE run_id = $2 ORDER BY address_id LIMIT $3)",
        )
        .bind(&run)
        .bind(&run)
        .bind(self.limit)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(Some(self.finish(tx, "comparison_persons", n).await?))
    }

    /// Run rows (numbers only) before `cut` whose per-person data is gone,
    /// except the latest `keep`.
    async fn comparison_runs(&self, cut: i64, keep: i64) -> Result<Option<Value>, ActivityError> {
        let mut tx = self.s.pool.begin().await.map_err(db)?;
        let n = sqlx::query(
            "DELETE FROM comparison_runs WHERE id IN (SELECT r.id FROM comparison_runs r WHERE r.as_of < $1 \
             AND COALESCE(r.number, 0) <= (SELECT COALESCE(MAX(number), 0) FROM comparison_runs) - $2 \
             AND NOT EXISTS (SELECT 1 FROM comparison_persons p WHERE p.run_id = r.id) \
             ORDER BY r.as_of, r.id LIMIT $3)",
        )
        .bind(cut)
        .bind(keep)
        .bind(self.limit)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(self.finish(tx, "comparison_runs", n).await?))
    }

    /// One batch of `kind`, if it has anything past its keeping period.
    async fn kind(
        &self,
        kind: &str,
        args: &Args,
        as_of: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Value>, ActivityError> {
        let rule = args.policy.get(kind).ok_or_else(|| {
            ActivityError::Permanent(format!("purge_personal_data: 未知的数据类别 `{kind}`"))
        })?;
        let cut = (as_of - chrono::Duration::days(rule.days)).timestamp_millis();
        let keep = rule.keep_last_runs.unwrap_or(0);
        match kind {
            "comparison_persons" => self.comparison_persons(cut, keep).await,
            "comparison_runs" => self.comparison_runs(cut, keep).await,
            "closed_warnings" => self.closed_warnings(cut).await,
            "finished_workflows" => self.finished_workflows(cut).await,
            _ => self.first_of(kind, deletes(kind), cut).await,
        }
    }

    /// The first of `deletes` that removes anything, in one transaction
    /// with the batch's outcome.
    async fn first_of(
        &self,
        kind: &str,
        deletes: &[Delete],
        cut: i64,
    ) -> Result<Option<Value>, ActivityError> {
        let mut tx = self.s.pool.begin().await.map_err(db)?;
        for d in deletes {
            let n = self.delete(&mut tx, d, cut).await?;
            if n > 0 {
                return Ok(Some(self.finish(tx, kind, n).await?));
            }
        }
        Ok(None)
    }

    /// Up to `limit` rows of one table from before `cut`.
    async fn delete(&self, tx: &mut Tx<'_>, d: &Delete, cut: i64) -> Result<u64, ActivityError> {
        let (sql, second) = match d {
            Delete::Keyed { table, pk, time } => (
                format!(
                    "DELETE FROM {table} WHERE {pk} IN \
                     (SELECT {pk} FROM {table} WHERE {time} < $1 ORDER BY {time}, {pk} LIMIT $2)"
                ),
                self.limit,
            ),
            Delete::Sql(sql) => (sql.to_string(), self.limit),
            Delete::Instants { table, time } => {
                // No key: everything up to the batch's last instant (rows
                // of one same millisecond go together).
                let upto: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT {time} FROM {table} WHERE {time} < $1 ORDER BY {time} LIMIT 1 OFFSET $2"
                ))
                .bind(cut)
                .bind(self.limit - 1)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db)?;
                (
                    format!("DELETE FROM {table} WHERE {time} < $1 AND {time} <= $2"),
                    upto.unwrap_or(cut),
                )
            }
        };
        Ok(sqlx::query(&sql)
            .bind(cut)
            .bind(second)
            .execute(&mut **tx)
            .await
            .map_err(db)?
            .rows_affected())
    }

    /// The ids this batch fixed earlier (a repeat after a crash between its
    /// steps), or those `pick` gives now, fixed under the batch's key.
    async fn planned<F, Fut>(&self, kind: &str, pick: F) -> Result<Vec<String>, ActivityError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>, ActivityError>>,
    {
        if let Some(plan) = plan_of(self.s, self.key).await? {
            if plan.kind == kind {
                return Ok(plan.ids);
            }
        }
        let ids = pick().await?;
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO retention_batches (key, planned, result, at) VALUES ($1, $2, NULL, $3) \
                 ON CONFLICT (key) DO UPDATE SET planned = excluded.planned",
            )
            .bind(self.key)
            .bind(serde_json::to_string(&Plan { kind: kind.to_string(), ids: ids.clone() }).expect("serialisable"))
            .bind(self.s.clock.now().timestamp_millis())
            .execute(&self.s.pool)
            .await
            .map_err(db)?;
        }
        Ok(ids)
    }

    /// Of `ids`, those whose workflow instance no longer exists.
    async fn gone(&self, ids: &[String]) -> Result<Vec<String>, ActivityError> {
        let left: BTreeSet<String> = self
            .s
            .store
            .instances_by_id(ids)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|i| i.id)
            .collect();
        Ok(ids.iter().filter(|i| !left.contains(*i)).cloned().collect())
    }

    /// Warnings closed before `cut` that no longer block a new warning on
    /// the same evidence (R5.1): their workflows (instance, history, tasks)
    /// through the engine's API, then their projection rows and counts.
    async fn closed_warnings(&self, cut: i64) -> Result<Option<Value>, ActivityError> {
        let ids = self
            .planned("closed_warnings", || async {
                sqlx::query_scalar::<_, String>(
                    "SELECT id FROM warnings WHERE closed_at IS NOT NULL AND closed_at < $1 \
                     AND (evidence_gone = 1 OR evidence IS NULL) ORDER BY closed_at, id LIMIT $2",
                )
                .bind(cut)
                .bind(self.limit)
                .fetch_all(&self.s.pool)
                .await
                .map_err(db)
            })
            .await?;
        if ids.is_empty() {
            return Ok(None);
        }
        self.s
            .store
            .purge_instances(&ids)
            .await
            .map_err(store_err)?;
        let gone = self.gone(&ids).await?;
        let mut tx = self.s.pool.begin().await.map_err(db)?;
        let mut n = 0;
        for chunk in gone.chunks(400) {
            let list = marks(chunk.len(), self.backend());
            let select = format!(
                "SELECT enterprise_id, district, state, disposal_overdue, review_overdue, closed_at \
                 FROM warnings WHERE id IN ({list})"
            );
            let mut q = sqlx::query_as::<_, Closing>(&select);
            for id in chunk {
                q = q.bind(id);
            }
            let counted: Vec<_> = q
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?
                .into_iter()
                .map(|r| (r.counted(), -1))
                .collect();
            crate::warnings::add_to_counts(&mut tx, &counted)
                .await
                .map_err(db)?;
            let delete = format!("DELETE FROM warnings WHERE id IN ({list})");
            let mut q = sqlx::query(&delete);
            for id in chunk {
                q = q.bind(id);
            }
            n += q.execute(&mut *tx).await.map_err(db)?.rows_affected();
        }
        if n == 0 {
            // Their workflows are not finished (a projection behind its
            // workflow): left for a later run.
            tracing::warn!(target: "server::retention", planned = ids.len(), "closed warnings whose workflows are not finished were kept");
            return Ok(None);
        }
        Ok(Some(self.finish(tx, "closed_warnings", n).await?))
    }

    /// Finished comparison and retention workflows closed before `cut`
    /// (none with an unfinished child), and the purge's own batch records.
    async fn finished_workflows(&self, cut: i64) -> Result<Option<Value>, ActivityError> {
        let before = engine::store::from_millis("retention cut-off", cut).map_err(store_err)?;
        let ids = self
            .planned("finished_workflows", || async {
                let mut ids = Vec::new();
                for kind in ["comparison", "retention"] {
                    let room = self.limit - ids.len() as i64;
                    if room > 0 {
                        ids.extend(
                            self.s
                                .store
                                .finished_before(kind, before, room)
                                .await
                                .map_err(store_err)?,
                        );
                    }
                }
                Ok(ids)
            })
            .await?;
        if !ids.is_empty() {
            self.s
                .store
                .purge_instances(&ids)
                .await
                .map_err(store_err)?;
            let n = self.gone(&ids).await?.len() as u64;
            if n > 0 {
                let tx = self.s.pool.begin().await.map_err(db)?;
                return Ok(Some(self.finish(tx, "finished_workflows", n).await?));
            }
        }
        // The purge's own records of batches, once their runs are long over
        // (never today's: a run in progress needs its own).
        let day_ago = self.s.clock.now().timestamp_millis() - 86_400_000;
        let cut = cut.min(day_ago);
        let mut tx = self.s.pool.begin().await.map_err(db)?;
        let n = sqlx::query(
            "DELETE FROM retention_batches WHERE key IN \
             (SELECT key FROM retention_batches WHERE at < $1 ORDER BY at, key LIMIT $2)",
        )
        .bind(cut)
        .bind(self.limit)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(self.finish(tx, "finished_workflows", n).await?))
    }
}

/// What a closed warning being removed counted in, as stored.
#[derive(sqlx::FromRow)]
struct Closing {
    enterprise_id: String,
    district: String,
    state: String,
    disposal_overdue: i64,
    review_overdue: i64,
    closed_at: Option<i64>,
}

impl Closing {
    fn counted(self) -> crate::warnings::Counted {
        crate::warnings::Counted {
            enterprise_id: self.enterprise_id,
            district: self.district,
            state: self.state,
            disposal_overdue: self.disposal_overdue != 0,
            review_overdue: self.review_overdue != 0,
            open: self.closed_at.is_none(),
        }
    }
}

/// One way of removing a batch of a table's rows from before the cut-off
/// (`$1`) in the batch's transaction.
enum Delete {
    /// Up to the batch's size (`$2`), oldest `time` first, by primary key.
    Keyed {
        table: &'static str,
        pk: &'static str,
        time: &'static str,
    },
    /// A statement of its own, with the batch's size as `$2`.
    Sql(&'static str),
    /// A table without a key: about the batch's size, whole instants (the
    /// batch's last instant as `$2`).
    Instants {
        table: &'static str,
        time: &'static str,
    },
}

const fn keyed(table: &'static str, pk: &'static str, time: &'static str) -> Delete {
    Delete::Keyed { table, pk, time }
}

/// The kinds removed row by row, each with its tables tried in order: the
/// first with anything past the cut-off gives the batch.
const ROW_BY_ROW: &[(&str, &[Delete])] = &[
    ("notices", &[keyed("notices", "id", "created_at")]),
    (
        "sms_log",
        &[keyed("sms_log", "idempotency_key", "created_at")],
    ),
    // SMS codes, addresses logged in from, throttle events.
    (
        "login_records",
        &[
            keyed("sms_codes", "id", "expires_at"),
            Delete::Sql(
                "DELETE FROM login_addresses WHERE (username, client) IN \
                 (SELECT username, client FROM login_addresses WHERE last_success < $1 \
                  ORDER BY last_success LIMIT $2)",
            ),
            Delete::Instants {
                table: "throttle_events",
                time: "at",
            },
        ],
    ),
    (
        "expired_sessions",
        &[keyed("sessions", "token_hash", "expires_at")],
    ),
    // The access audit and the account administration log.
    (
        "access_audit",
        &[
            keyed("access_audit", "id", "at"),
            keyed("account_audit", "id", "at"),
        ],
    ),
];

/// The tables of a kind removed row by row (none for the others).
fn deletes(kind: &str) -> &'static [Delete] {
    ROW_BY_ROW
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, d)| d)
}

/// `$1, $2, …` (PostgreSQL) or `?, ?, …` (SQLite) for `n` values.
fn marks(n: usize, backend: Backend) -> String {
    (1..=n)
        .map(|k| match backend {
            Backend::Postgres => format!("${k}"),
            Backend::Sqlite => "?".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Return the space the purge freed. SQLite: a database in
/// `auto_vacuum=INCREMENTAL` (new files are, `SqlStore`) gives back its
/// free pages 2,000 at a time, each step a short write; an older file is
/// switched once with one VACUUM (it rewrites the file: the first night
/// after the upgrade takes longer). PostgreSQL: plain VACUUM (outside a
/// transaction; it does not lock out writers), so freed rows are reused.
pub async fn reclaim_storage(
    s: Arc<Services>,
    _call: ActivityCall,
) -> Result<Value, ActivityError> {
    match s.store.backend() {
        Backend::Postgres => {
            sqlx::raw_sql("VACUUM").execute(&s.pool).await.map_err(db)?;
            Ok(json!({ "vacuum": "postgres" }))
        }
        Backend::Sqlite => {
            let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
                .fetch_one(&s.pool)
                .await
                .map_err(db)?;
            let free = |pool| async move {
                sqlx::query_scalar::<_, i64>("PRAGMA freelist_count")
                    .fetch_one(pool)
                    .await
                    .map_err(db)
            };
            let before = free(&s.pool).await?;
            if mode != 2 {
                tracing::info!(target: "server::retention", "switching the database to incremental vacuum (one VACUUM)");
                sqlx::raw_sql("PRAGMA auto_vacuum=INCREMENTAL; VACUUM")
                    .execute(&s.pool)
                    .await
                    .map_err(db)?;
                return Ok(json!({ "vacuum": "full_once", "freed_pages": before }));
            }
            let mut left = before;
            while left > 0 {
                sqlx::raw_sql("PRAGMA incremental_vacuum(2000)")
                    .execute(&s.pool)
                    .await
                    .map_err(db)?;
                let now = free(&s.pool).await?;
                if now >= left {
                    break;
                }
                left = now;
            }
            Ok(json!({ "vacuum": "incremental", "freed_pages": before - left }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments `workflows/retention.yaml` gives the purge.
    fn repository_args() -> Value {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/retention.yaml");
        let y: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut args =
            serde_json::to_value(&y["states"]["purging"]["on_enter"][0]["args"]).unwrap();
        args["as_of"] = json!("2026-12-01T02:30:00+08:00");
        args["totals"] = Value::Null;
        args
    }

    #[test]
    fn the_repository_policy_names_every_kind_and_passes_its_checks() {
        let args: Args = serde_json::from_value(repository_args()).unwrap();
        assert_eq!(checked(&args), Ok(()));
        assert_eq!(args.policy["comparison_persons"].days, 30);
    }

    #[test]
    fn a_policy_missing_a_kind_or_naming_an_unknown_one_is_refused() {
        let mut a = repository_args();
        a["policy"].as_object_mut().unwrap().remove("sms_log");
        let args: Args = serde_json::from_value(a).unwrap();
        assert!(checked(&args).unwrap_err().contains("sms_log"));
        let mut a = repository_args();
        a["policy"]["photos"] = json!({ "days": 3 });
        let args: Args = serde_json::from_value(a).unwrap();
        assert!(checked(&args).unwrap_err().contains("photos"));
        let mut a = repository_args();
        a["policy"]["comparison_runs"]["days"] = json!(7);
        let args: Args = serde_json::from_value(a).unwrap();
        assert!(checked(&args).is_err());
    }
}
