//! [`Store`] on SQLite or PostgreSQL through sqlx's `Any` driver. The SQL is
//! shared (`$n` placeholders work on both); task claiming differs.

use super::*;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    /// Read-only connections for pages and consoles. On a SQLite file this
    /// is a separate pool (WAL lets readers run beside the one writer and
    /// each other); elsewhere it is `pool` itself.
    reader: AnyPool,
    backend: Backend,
}

const INSTANCE_COLUMNS: &str = "id, kind, definition_hash, definition_version, state, status, status_label, \
     enterprise_id, district, person, parent_id, snapshot, revision, history_len, created_at, updated_at, closed_at, history_hash";
const TASK_COLUMNS: &str =
    "id, instance_id, activity_id, name, args, retry, attempt, max_attempts, status, \
     next_run_at, lease_until, last_error, result, created_at, updated_at";

impl SqlStore {
    /// Open a SQLite file (created if absent), in WAL mode, and migrate it.
    pub async fn open_sqlite(path: &std::path::Path) -> Result<Self> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect(&url).await
    }

    /// A private in-memory SQLite database, for tests.
    pub async fn memory() -> Result<Self> {
        Self::connect("sqlite::memory:").await
    }

    /// Connect by URL (`sqlite://…` or `postgres://…`) and migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let opts = AnyConnectOptions::from_str(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                // One writer at a time is SQLite's rule; a single connection
                // also keeps an in-memory database alive and shared.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    // No ping before each statement: a local file does
                    // not drop connections.
                    .test_before_acquire(false)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            // A 64 MiB page cache (SQLite's default is
                            // 2 MiB) and a checkpoint every ~40 MiB of WAL
                            // (default ~4 MiB): a comparison's transaction
                            // and the burst of warning workflows after it
                            // otherwise spill and re-read pages and
                            // checkpoint every few hundred commits.
                            // auto_vacuum=INCREMENTAL takes effect on a
                            // database that has no tables yet (a new file):
                            // space freed by the retention purge can then be
                            // returned a bounded step at a time
                            // (`PRAGMA incremental_vacuum`). Older files
                            // keep their mode until one VACUUM (the
                            // application's retention does it once).
                            conn.execute(
                                "PRAGMA auto_vacuum=INCREMENTAL; \
                                 PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                                 PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; \
                                 PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=10000;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts.clone())
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .connect_with(opts.clone())
                    .await?
            }
        };
        let mut migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        // The application keeps its own tables in the same database with its
        // own migrations (versions 1001 and up).
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        let reader = match backend {
            Backend::Sqlite if !is_memory(url) => read_pool(opts),
            _ => pool.clone(),
        };
        Ok(SqlStore {
            pool,
            reader,
            backend,
        })
    }

    /// The pool for reads that need not see the caller's own uncommitted
    /// writes: a page, a list, a count. Never write through it (on SQLite
    /// files its connections are `query_only`).
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Which instances [`SqlStore::verify_chains`] reads.
enum ChainScope<'a> {
    One(&'a str),
    Page { after: Option<&'a str>, limit: i64 },
}

impl SqlStore {
    /// Read instances and their histories in one snapshot (a read
    /// transaction; REPEATABLE READ on PostgreSQL, so a step committed
    /// between the two reads cannot look like a broken chain) and check
    /// each chain. On the reader pool: it never waits for the writer.
    async fn verify_chains(&self, scope: ChainScope<'_>) -> Result<Vec<ChainCheck>> {
        let mut tx = self.reader.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let instances = match scope {
            ChainScope::One(id) => {
                let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = $1");
                sqlx::query(&sql).bind(id).fetch_all(&mut *tx).await?
            }
            ChainScope::Page { after, limit } => {
                let sql = format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances WHERE id > $1 ORDER BY id LIMIT $2"
                );
                sqlx::query(&sql)
                    .bind(after.unwrap_or_default())
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let instances: Vec<InstanceRow> =
            instances.iter().map(instance_row).collect::<Result<_>>()?;
        let mut rows: std::collections::HashMap<String, Vec<HistoryRow>> =
            std::collections::HashMap::with_capacity(instances.len());
        let ids: Vec<Vec<Arg>> = instances
            .iter()
            .map(|i| vec![Arg::T(Some(i.id.clone()))])
            .collect();
        for chunk in ids.chunks(ROWS) {
            let list = placeholders(chunk, self.backend).replace(['(', ')'], "");
            let sql = format!(
                "SELECT {HISTORY_COLUMNS} FROM history WHERE instance_id IN ({list}) ORDER BY instance_id, seq"
            );
            for r in bind_all(sqlx::query(&sql), chunk.to_vec())
                .fetch_all(&mut *tx)
                .await?
            {
                let h = history_row(&r)?;
                rows.entry(h.instance_id.clone()).or_default().push(h);
            }
        }
        tx.commit().await?;
        Ok(instances
            .iter()
            .map(|i| verify_chain(i, rows.get(&i.id).map_or(&[][..], Vec::as_slice)))
            .collect())
    }
}

/// The backend of a connection (for `placeholders` and `insert_many`).
pub fn backend_of(conn: &sqlx::AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("postgresql") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Read-only connections to a SQLite file, opened lazily, `query_only` so a
/// mistaken write fails loudly. Three per core (at least four): a request
/// holds its connection while its rows travel to the async side, so
/// connections idle between statements; measured with the web benchmark
/// on 2 cores, 2 readers gave 1,800 warning-list pages/s, 4–6 gave 3,300–3,600.
fn read_pool(opts: AnyConnectOptions) -> AnyPool {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_mul(3)
        .clamp(4, 16) as u32;
    AnyPoolOptions::new()
        .max_connections(n)
        .min_connections(0)
        // A local file does not drop connections; a ping per statement
        // would double its round trips.
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute(
                    "PRAGMA busy_timeout=5000; PRAGMA query_only=ON; PRAGMA cache_size=-16384;",
                )
                .await?;
                Ok(())
            })
        })
        .connect_lazy_with(opts)
}

/// An instance (`i`) that is over: completed or terminated (a failed one
/// waits for an operator), with no child still running or failed. A
/// child's `parent_id` is `{parent id}#{call}`: on SQLite (binary
/// collation) the prefix is an index range; PostgreSQL's collation may not
/// order bytes, so there it is a `LIKE` (a `%` or `_` in an id can only
/// make it find a child that is not one, keeping the parent: never the
/// other way).
fn finished(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "i.status IN ('completed', 'terminated') AND NOT EXISTS \
             (SELECT 1 FROM instances c WHERE c.parent_id >= i.id || '#' AND c.parent_id < i.id || '$' \
              AND c.status NOT IN ('completed', 'terminated'))"
        }
        Backend::Postgres => {
            "i.status IN ('completed', 'terminated') AND NOT EXISTS \
             (SELECT 1 FROM instances c WHERE c.parent_id LIKE i.id || '#%' \
              AND c.status NOT IN ('completed', 'terminated'))"
        }
    }
}

/// Rows per multi-row statement (SQLite allows 32,766 parameters).
const ROWS: usize = 400;

/// A bound value of a multi-row statement.
#[derive(Clone, Debug)]
pub enum Arg {
    T(Option<String>),
    I(Option<i64>),
}

/// `($1, $2), ($3, $4)` for `rows` on PostgreSQL; `(?, ?), (?, ?)` on
/// SQLite, whose lookup of numbered parameters is linear per parameter and
/// makes large statements quadratic.
pub fn placeholders(rows: &[Vec<Arg>], backend: Backend) -> String {
    let mut n = 0;
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for j in 0..r.len() {
            n += 1;
            if j > 0 {
                out.push_str(", ");
            }
            match backend {
                Backend::Sqlite => out.push('?'),
                Backend::Postgres => {
                    out.push('$');
                    out.push_str(&n.to_string());
                }
            }
        }
        out.push(')');
    }
    out
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    rows: Vec<Vec<Arg>>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for r in rows {
        for a in r {
            q = match a {
                Arg::T(v) => q.bind(v),
                Arg::I(v) => q.bind(v),
            };
        }
    }
    q
}

pub async fn execute(conn: &mut sqlx::AnyConnection, sql: &str, rows: Vec<Vec<Arg>>) -> Result<()> {
    bind_all(sqlx::query(sql), rows).execute(conn).await?;
    Ok(())
}

/// `INSERT INTO {table} ({columns}) VALUES (…), (…) {suffix}` in chunks, for
/// the application's bulk writes (a comparison run writes a row per person).
/// Pass a transaction (`&mut tx`) to make the chunks one write.
pub async fn insert_many(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    columns: &str,
    rows: Vec<Vec<Arg>>,
    suffix: &str,
) -> Result<()> {
    let backend = backend_of(conn);
    let mut rows = rows;
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(ROWS));
        let sql = format!(
            "INSERT INTO {table} ({columns}) VALUES {} {suffix}",
            placeholders(&rows, backend)
        );
        execute(conn, &sql, rows).await?;
        rows = rest;
    }
    Ok(())
}

async fn fetch_ids(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sql: &str,
    rows: Vec<Vec<Arg>>,
) -> Result<Vec<String>> {
    let found = bind_all(sqlx::query(sql), rows)
        .fetch_all(&mut **tx)
        .await?;
    found
        .iter()
        .map(|r| Ok(r.try_get::<String, _>(0)?))
        .collect()
}

fn instance_args(i: &InstanceRow) -> Vec<Arg> {
    vec![
        Arg::T(Some(i.id.clone())),
        Arg::T(Some(i.kind.clone())),
        Arg::T(Some(i.definition_hash.clone())),
        Arg::I(Some(i.definition_version)),
        Arg::T(Some(i.state.clone())),
        Arg::T(Some(i.status.clone())),
        Arg::T(i.status_label.clone()),
        Arg::T(i.enterprise_id.clone()),
        Arg::T(i.district.clone()),
        Arg::T(i.person.clone()),
        Arg::T(i.parent_id.clone()),
        Arg::T(Some(i.snapshot.clone())),
        Arg::I(Some(i.revision)),
        Arg::I(Some(i.history_len)),
        Arg::I(Some(millis(i.created_at))),
        Arg::I(Some(millis(i.updated_at))),
        Arg::I(opt_ms(i.closed_at)),
        Arg::T(i.history_hash.clone()),
    ]
}

/// Which commits insert and which update, with updates of the same
/// instance split into rounds so each statement touches an id once.
struct Plan {
    inserts: Vec<usize>,
    update_rounds: Vec<Vec<usize>>,
}

impl Plan {
    fn new(batch: &[StepCommit]) -> Plan {
        let mut inserts = Vec::new();
        let mut update_rounds: Vec<Vec<usize>> = Vec::new();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (k, c) in batch.iter().enumerate() {
            let Some(i) = &c.instance else { continue };
            if c.expected_revision.is_none() {
                inserts.push(k);
                continue;
            }
            let round = seen.entry(i.id.as_str()).or_insert(0);
            if update_rounds.len() <= *round {
                update_rounds.push(Vec::new());
            }
            update_rounds[*round].push(k);
            *round += 1;
        }
        Plan {
            inserts,
            update_rounds,
        }
    }
}

fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(millis)
}

fn instance_row(r: &AnyRow) -> Result<InstanceRow> {
    Ok(InstanceRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        definition_hash: r.try_get("definition_hash")?,
        definition_version: r.try_get("definition_version")?,
        state: r.try_get("state")?,
        status: r.try_get("status")?,
        status_label: r.try_get("status_label")?,
        enterprise_id: r.try_get("enterprise_id")?,
        district: r.try_get("district")?,
        person: r.try_get("person")?,
        parent_id: r.try_get("parent_id")?,
        snapshot: r.try_get("snapshot")?,
        revision: r.try_get("revision")?,
        history_len: r.try_get("history_len")?,
        created_at: from_millis(r.try_get("created_at")?),
        updated_at: from_millis(r.try_get("updated_at")?),
        closed_at: r.try_get::<Option<i64>, _>("closed_at")?.map(from_millis),
        history_hash: r.try_get("history_hash")?,
    })
}

const HISTORY_COLUMNS: &str = "instance_id, seq, at, kind, payload, prev_hash, hash";

fn history_row(r: &AnyRow) -> Result<HistoryRow> {
    Ok(HistoryRow {
        instance_id: r.try_get("instance_id")?,
        seq: r.try_get("seq")?,
        at: from_millis(r.try_get("at")?),
        kind: r.try_get("kind")?,
        payload: r.try_get("payload")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

fn task_row(r: &AnyRow) -> Result<TaskRow> {
    let status: String = r.try_get("status")?;
    Ok(TaskRow {
        id: r.try_get("id")?,
        instance_id: r.try_get("instance_id")?,
        activity_id: r.try_get("activity_id")?,
        name: r.try_get("name")?,
        args: r.try_get("args")?,
        retry: r.try_get("retry")?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        status: TaskStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("task status {status}")))?,
        next_run_at: from_millis(r.try_get("next_run_at")?),
        lease_until: r.try_get::<Option<i64>, _>("lease_until")?.map(from_millis),
        last_error: r.try_get("last_error")?,
        result: r.try_get("result")?,
        created_at: from_millis(r.try_get("created_at")?),
        updated_at: from_millis(r.try_get("updated_at")?),
    })
}

fn timer_row(r: &AnyRow) -> Result<TimerRow> {
    Ok(TimerRow {
        due_at: from_millis(r.try_get("due_at")?),
        instance_id: r.try_get("instance_id")?,
        timer_id: r.try_get("timer_id")?,
        name: r.try_get("name")?,
    })
}

fn definition_row(r: &AnyRow) -> Result<DefinitionRow> {
    Ok(DefinitionRow {
        hash: r.try_get("hash")?,
        kind: r.try_get("kind")?,
        version: r.try_get("version")?,
        source: r.try_get("source")?,
        published_at: from_millis(r.try_get("published_at")?),
    })
}

const PUBLICATION_COLUMNS: &str =
    "seq, kind, published_by, reason, published_at, clock_at, rollback_of, definitions";

fn publication_row(r: &AnyRow) -> Result<PublicationRow> {
    let definitions: String = r.try_get("definitions")?;
    Ok(PublicationRow {
        seq: r.try_get("seq")?,
        kind: r.try_get("kind")?,
        published_by: r.try_get("published_by")?,
        reason: r.try_get("reason")?,
        published_at: from_millis(r.try_get("published_at")?),
        clock_at: from_millis(r.try_get("clock_at")?),
        rollback_of: r.try_get("rollback_of")?,
        definitions: serde_json::from_str(&definitions)
            .map_err(|e| Error::Corrupt(format!("publication definitions: {e}")))?,
    })
}

/// WHERE clause and its text arguments for an instance filter.
fn filter_sql(f: &InstanceFilter) -> (String, Vec<String>, Vec<i64>) {
    let mut clauses = Vec::new();
    let mut texts = Vec::new();
    let mut n = 0;
    for (col, v) in [
        ("kind", &f.kind),
        ("state", &f.state),
        ("status", &f.status),
        ("enterprise_id", &f.enterprise_id),
        ("district", &f.district),
        ("person", &f.person),
    ] {
        if let Some(v) = v {
            n += 1;
            clauses.push(format!("{col} = ${n}"));
            texts.push(v.clone());
        }
    }
    let mut ints = Vec::new();
    if let Some(v) = f.definition_version {
        n += 1;
        clauses.push(format!("definition_version = ${n}"));
        ints.push(v);
    }
    if let Some(t) = f.created_from {
        n += 1;
        clauses.push(format!("created_at >= ${n}"));
        ints.push(millis(t));
    }
    if let Some(t) = f.created_to {
        n += 1;
        clauses.push(format!("created_at < ${n}"));
        ints.push(millis(t));
    }
    let w = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (w, texts, ints)
}

impl Store for SqlStore {
    async fn publish_definition(&self, d: &DefinitionRow) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO definitions (hash, kind, version, source, published_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(&d.hash)
        .bind(&d.kind)
        .bind(d.version)
        .bind(&d.source)
        .bind(millis(d.published_at))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn definition(&self, hash: &str) -> Result<Option<DefinitionRow>> {
        let r = sqlx::query(
            "SELECT hash, kind, version, source, published_at FROM definitions WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(definition_row).transpose()
    }

    async fn definitions(&self, kind: &str) -> Result<Vec<DefinitionRow>> {
        let rows = sqlx::query(
            "SELECT hash, kind, version, source, published_at FROM definitions WHERE kind = $1 \
             ORDER BY version, published_at",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(definition_row).collect()
    }

    async fn all_definitions(&self) -> Result<Vec<DefinitionRow>> {
        let rows = sqlx::query(
            "SELECT hash, kind, version, source, published_at FROM definitions \
             ORDER BY kind, version, published_at",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(definition_row).collect()
    }

    async fn publish(
        &self,
        new_definitions: &[DefinitionRow],
        p: &PublicationRow,
    ) -> Result<PublicationRow> {
        let definitions = serde_json::to_string(&p.definitions).expect("serialisable");
        // Two publishers on PostgreSQL may take the same number: the second
        // one's insert fails on the key and goes again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.pool.begin().await?;
            for d in new_definitions {
                sqlx::query(
                    "INSERT INTO definitions (hash, kind, version, source, published_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING",
                )
                .bind(&d.hash)
                .bind(&d.kind)
                .bind(d.version)
                .bind(&d.source)
                .bind(millis(d.published_at))
                .execute(&mut *tx)
                .await?;
            }
            let r = sqlx::query_scalar::<_, i64>(
                "INSERT INTO publications (seq, kind, published_by, reason, published_at, clock_at, rollback_of, definitions) \
                 SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6, $7 FROM publications RETURNING seq",
            )
            .bind(&p.kind)
            .bind(&p.published_by)
            .bind(&p.reason)
            .bind(millis(p.published_at))
            .bind(millis(p.clock_at))
            .bind(p.rollback_of)
            .bind(&definitions)
            .fetch_one(&mut *tx)
            .await;
            match r {
                Ok(seq) => {
                    tx.commit().await?;
                    return Ok(PublicationRow { seq, ..p.clone() });
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempt < 5 => {
                    tx.rollback().await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn current_publication(&self) -> Result<Option<PublicationRow>> {
        let sql =
            format!("SELECT {PUBLICATION_COLUMNS} FROM publications ORDER BY seq DESC LIMIT 1");
        let r = sqlx::query(&sql).fetch_optional(&self.pool).await?;
        r.as_ref().map(publication_row).transpose()
    }

    async fn publication_seq(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MAX(seq) FROM publications")
            .fetch_one(&self.reader)
            .await?)
    }

    async fn publication(&self, seq: i64) -> Result<Option<PublicationRow>> {
        let sql = format!("SELECT {PUBLICATION_COLUMNS} FROM publications WHERE seq = $1");
        let r = sqlx::query(&sql)
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(publication_row).transpose()
    }

    async fn publications(&self, limit: i64) -> Result<Vec<PublicationRow>> {
        let sql =
            format!("SELECT {PUBLICATION_COLUMNS} FROM publications ORDER BY seq DESC LIMIT $1");
        let rows = sqlx::query(&sql)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(publication_row).collect()
    }

    async fn count_by_definition(&self) -> Result<Vec<DefinitionCount>> {
        let rows = sqlx::query(
            "SELECT definition_hash, \
                    SUM(CASE WHEN status IN ('completed', 'terminated') THEN 0 ELSE 1 END) AS open, \
                    COUNT(*) AS total \
             FROM instances GROUP BY definition_hash",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DefinitionCount {
                    hash: r.try_get("definition_hash")?,
                    open: r.try_get("open")?,
                    total: r.try_get("total")?,
                })
            })
            .collect()
    }

    async fn commit(&self, batch: &[StepCommit]) -> Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let plan = Plan::new(batch);

        // 1. New instances; `RETURNING` tells which ids were free.
        let mut inserted = std::collections::HashSet::new();
        for chunk in plan.inserts.chunks(ROWS) {
            let rows: Vec<Vec<Arg>> = chunk
                .iter()
                .map(|&k| instance_args(batch[k].instance.as_ref().expect("insert")))
                .collect();
            let sql = format!(
                "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                placeholders(&rows, self.backend)
            );
            for id in fetch_ids(&mut tx, &sql, rows).await? {
                inserted.insert(id);
            }
        }
        let mut applied = vec![true; batch.len()];
        for &k in &plan.inserts {
            let id = &batch[k].instance.as_ref().expect("insert").id;
            if !inserted.contains(id) {
                if batch[k].insert_if_absent {
                    applied[k] = false;
                } else {
                    return Err(Error::Duplicate(id.clone()));
                }
            } else {
                // An id inserted twice in one batch: only the first counts.
                inserted.remove(id);
            }
        }

        // 2. Updates, one round per position in a chain of steps of the same instance.
        for round in &plan.update_rounds {
            for chunk in round.chunks(ROWS) {
                let rows: Vec<Vec<Arg>> = chunk
                    .iter()
                    .map(|&k| {
                        let c = &batch[k];
                        let i = c.instance.as_ref().expect("update");
                        vec![
                            Arg::T(Some(i.id.clone())),
                            Arg::T(Some(i.definition_hash.clone())),
                            Arg::I(Some(i.definition_version)),
                            Arg::T(Some(i.state.clone())),
                            Arg::T(Some(i.status.clone())),
                            Arg::T(i.status_label.clone()),
                            Arg::T(Some(i.snapshot.clone())),
                            Arg::I(Some(i.revision)),
                            Arg::I(Some(i.history_len)),
                            Arg::I(Some(millis(i.updated_at))),
                            Arg::I(opt_ms(i.closed_at)),
                            Arg::T(i.history_hash.clone()),
                            Arg::I(c.expected_revision),
                        ]
                    })
                    .collect();
                let sql = format!(
                    "WITH v (id, definition_hash, definition_version, state, status, status_label, snapshot, revision, history_len, updated_at, closed_at, history_hash, expected) \
                     AS (VALUES {}) \
                     UPDATE instances SET definition_hash = v.definition_hash, definition_version = v.definition_version, \
                     state = v.state, status = v.status, status_label = v.status_label, \
                     snapshot = v.snapshot, revision = v.revision, history_len = v.history_len, \
                     updated_at = v.updated_at, closed_at = v.closed_at, history_hash = v.history_hash \
                     FROM v WHERE instances.id = v.id AND instances.revision = v.expected RETURNING instances.id",
                    placeholders(&rows, self.backend)
                );
                let done: std::collections::HashSet<String> =
                    fetch_ids(&mut tx, &sql, rows).await?.into_iter().collect();
                for &k in chunk {
                    let c = &batch[k];
                    let i = c.instance.as_ref().expect("update");
                    if !done.contains(&i.id) {
                        let expected = c.expected_revision.unwrap_or_default();
                        let found: Option<i64> =
                            sqlx::query_scalar("SELECT revision FROM instances WHERE id = $1")
                                .bind(&i.id)
                                .fetch_optional(&mut *tx)
                                .await?;
                        return Err(match found {
                            Some(found) => Error::Conflict {
                                id: i.id.clone(),
                                expected,
                                found,
                            },
                            None => Error::NotFound(format!("instance {}", i.id)),
                        });
                    }
                }
            }
        }

        // 3. Rows that go with applied steps.
        let live = |k: usize| applied[k];
        let mut history = Vec::new();
        let mut tasks = Vec::new();
        let mut outbox = Vec::new();
        let mut done_tasks = Vec::new();
        // Net effect on timers, in order: a timer started and cancelled within the batch never lands.
        let mut timer_inserts: Vec<(usize, &TimerRow)> = Vec::new();
        let mut timer_deletes: Vec<(String, String)> = Vec::new();
        for (k, c) in batch.iter().enumerate() {
            if !live(k) {
                continue;
            }
            history.extend(c.history.iter().map(|h| {
                vec![
                    Arg::T(Some(h.instance_id.clone())),
                    Arg::I(Some(h.seq)),
                    Arg::I(Some(millis(h.at))),
                    Arg::T(Some(h.kind.clone())),
                    Arg::T(Some(h.payload.clone())),
                    Arg::T(h.prev_hash.clone()),
                    Arg::T(h.hash.clone()),
                ]
            }));
            let iid = c
                .instance
                .as_ref()
                .map(|i| i.id.as_str())
                .unwrap_or_default();
            for t in &c.timers_delete {
                if let Some(pos) = timer_inserts
                    .iter()
                    .position(|(_, x)| x.instance_id == iid && &x.timer_id == t)
                {
                    timer_inserts.remove(pos);
                } else {
                    timer_deletes.push((iid.to_string(), t.clone()));
                }
            }
            timer_inserts.extend(c.timers_insert.iter().map(|t| (k, t)));
            tasks.extend(c.tasks_insert.iter().map(|t| {
                vec![
                    Arg::T(Some(t.id.clone())),
                    Arg::T(Some(t.instance_id.clone())),
                    Arg::T(Some(t.activity_id.clone())),
                    Arg::T(Some(t.name.clone())),
                    Arg::T(Some(t.args.clone())),
                    Arg::T(Some(t.retry.clone())),
                    Arg::I(Some(t.attempt)),
                    Arg::I(Some(t.max_attempts)),
                    Arg::T(Some(t.status.as_str().to_string())),
                    Arg::I(Some(millis(t.next_run_at))),
                    Arg::I(opt_ms(t.lease_until)),
                    Arg::T(t.last_error.clone()),
                    Arg::T(t.result.clone()),
                    Arg::I(Some(millis(t.created_at))),
                    Arg::I(Some(millis(t.updated_at))),
                ]
            }));
            if let Some(d) = &c.task_done {
                let now = c
                    .instance
                    .as_ref()
                    .map(|i| millis(i.updated_at))
                    .unwrap_or_default();
                done_tasks.push(vec![
                    Arg::T(Some(d.id.clone())),
                    Arg::T(Some(d.status.as_str().to_string())),
                    Arg::T(d.result.clone()),
                    Arg::T(d.error.clone()),
                    Arg::I(Some(now)),
                    Arg::I(opt_ms(d.next_run_at)),
                ]);
            }
            outbox.extend(c.outbox_insert.iter().map(|o| {
                vec![
                    Arg::T(Some(o.id.clone())),
                    Arg::T(Some(o.instance_id.clone())),
                    Arg::T(Some(o.kind.clone())),
                    Arg::T(Some(o.payload.clone())),
                    Arg::I(Some(millis(o.created_at))),
                    Arg::I(opt_ms(o.delivered_at)),
                ]
            }));
        }
        for chunk in history.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO history ({HISTORY_COLUMNS}) VALUES {}",
                placeholders(chunk, self.backend)
            );
            execute(&mut tx, &sql, chunk.to_vec()).await?;
        }
        for chunk in timer_deletes.chunks(ROWS) {
            let rows: Vec<Vec<Arg>> = chunk
                .iter()
                .map(|(i, t)| vec![Arg::T(Some(i.clone())), Arg::T(Some(t.clone()))])
                .collect();
            let sql = format!(
                "DELETE FROM timers WHERE (instance_id, timer_id) IN (VALUES {})",
                placeholders(&rows, self.backend)
            );
            execute(&mut tx, &sql, rows).await?;
        }
        let timer_rows: Vec<Vec<Arg>> = timer_inserts
            .iter()
            .map(|(_, t)| {
                vec![
                    Arg::T(Some(t.instance_id.clone())),
                    Arg::T(Some(t.timer_id.clone())),
                    Arg::T(Some(t.name.clone())),
                    Arg::I(Some(millis(t.due_at))),
                ]
            })
            .collect();
        for chunk in timer_rows.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO timers (instance_id, timer_id, name, due_at) VALUES {}",
                placeholders(chunk, self.backend)
            );
            execute(&mut tx, &sql, chunk.to_vec()).await?;
        }
        for chunk in tasks.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO tasks ({TASK_COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING",
                placeholders(chunk, self.backend)
            );
            execute(&mut tx, &sql, chunk.to_vec()).await?;
        }
        for chunk in done_tasks.chunks(ROWS) {
            let sql = format!(
                "WITH v (id, status, result, error, now, next) AS (VALUES {}) \
                 UPDATE tasks SET status = v.status, result = v.result, last_error = COALESCE(v.error, tasks.last_error), \
                 lease_until = NULL, updated_at = v.now, next_run_at = COALESCE(v.next, tasks.next_run_at) FROM v WHERE tasks.id = v.id",
                placeholders(chunk, self.backend)
            );
            execute(&mut tx, &sql, chunk.to_vec()).await?;
        }
        for chunk in outbox.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO outbox (id, instance_id, kind, payload, created_at, delivered_at) VALUES {} ON CONFLICT (id) DO NOTHING",
                placeholders(chunk, self.backend)
            );
            execute(&mut tx, &sql, chunk.to_vec()).await?;
        }

        // 4. Bookkeeping, applied whether or not the instance part was.
        let delivered: Vec<Vec<Arg>> = batch
            .iter()
            .flat_map(|c| {
                let now = c
                    .instance
                    .as_ref()
                    .map(|i| millis(i.updated_at))
                    .unwrap_or_default();
                c.outbox_delivered
                    .iter()
                    .map(move |id| vec![Arg::T(Some(id.clone())), Arg::I(Some(now))])
            })
            .collect();
        for chunk in delivered.chunks(ROWS) {
            let sql = format!(
                "WITH v (id, now) AS (VALUES {}) UPDATE outbox SET delivered_at = v.now FROM v WHERE outbox.id = v.id",
                placeholders(chunk, self.backend)
            );
            execute(&mut tx, &sql, chunk.to_vec()).await?;
        }
        for c in batch {
            if let Some(id) = c.signal_consumed {
                sqlx::query("DELETE FROM signals WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some((name, at)) = &c.schedule_fired {
                sqlx::query(
                    "INSERT INTO schedules (name, last_fired_at) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET last_fired_at = excluded.last_fired_at",
                )
                .bind(name)
                .bind(millis(*at))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn instances_by_id(&self, ids: &[String]) -> Result<Vec<InstanceRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS) {
            let rows: Vec<Vec<Arg>> = chunk
                .iter()
                .map(|id| vec![Arg::T(Some(id.clone()))])
                .collect();
            let list = placeholders(&rows, self.backend).replace(['(', ')'], "");
            let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id IN ({list})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(instance_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn instance(&self, id: &str) -> Result<Option<InstanceRow>> {
        // Through the readers: what is committed, without waiting for the
        // writer (consoles and projections read here while runs write).
        let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = $1");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        r.as_ref().map(instance_row).transpose()
    }

    async fn instances(&self, filter: &InstanceFilter, page: Page) -> Result<Vec<InstanceRow>> {
        let (w, texts, ints) = filter_sql(filter);
        let n = texts.len() + ints.len();
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances {w} ORDER BY created_at DESC, id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let mut q = sqlx::query(&sql);
        for t in &texts {
            q = q.bind(t);
        }
        for i in &ints {
            q = q.bind(*i);
        }
        let rows = q
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(instance_row).collect()
    }

    async fn count_instances(&self, filter: &InstanceFilter) -> Result<i64> {
        let (w, texts, ints) = filter_sql(filter);
        let sql = format!("SELECT COUNT(*) FROM instances {w}");
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        for t in &texts {
            q = q.bind(t);
        }
        for i in &ints {
            q = q.bind(*i);
        }
        Ok(q.fetch_one(&self.pool).await?)
    }

    async fn count_by_state(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT kind, state, COUNT(*) AS n FROM instances GROUP BY kind, state ORDER BY kind, state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryRow>> {
        let sql =
            format!("SELECT {HISTORY_COLUMNS} FROM history WHERE instance_id = $1 ORDER BY seq");
        let rows = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
        rows.iter().map(history_row).collect()
    }

    async fn verify_history(&self, id: &str) -> Result<ChainCheck> {
        let mut checks = self.verify_chains(ChainScope::One(id)).await?;
        checks
            .pop()
            .ok_or_else(|| Error::NotFound(format!("instance {id}")))
    }

    async fn verify_histories(&self, after: Option<&str>, limit: i64) -> Result<Vec<ChainCheck>> {
        self.verify_chains(ChainScope::Page { after, limit }).await
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<TimerRow>> {
        let rows = sqlx::query(
            "SELECT instance_id, timer_id, name, due_at FROM timers WHERE due_at <= $1 \
             ORDER BY due_at, instance_id, timer_id LIMIT $2",
        )
        .bind(millis(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(timer_row).collect()
    }

    async fn next_timer(&self) -> Result<Option<DateTime<Utc>>> {
        let t: Option<i64> = sqlx::query_scalar("SELECT MIN(due_at) FROM timers")
            .fetch_one(&self.pool)
            .await?;
        Ok(t.map(from_millis))
    }

    async fn pending_timers(&self, instance_id: Option<&str>, page: Page) -> Result<Vec<TimerRow>> {
        let rows = match instance_id {
            Some(id) => sqlx::query(
                "SELECT instance_id, timer_id, name, due_at FROM timers WHERE instance_id = $1 \
                     ORDER BY due_at, timer_id LIMIT $2 OFFSET $3",
            )
            .bind(id)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&self.pool)
            .await?,
            None => {
                sqlx::query(
                    "SELECT instance_id, timer_id, name, due_at FROM timers \
                     ORDER BY due_at, instance_id, timer_id LIMIT $1 OFFSET $2",
                )
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(timer_row).collect()
    }

    async fn finished_before(
        &self,
        kind: &str,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>> {
        let ids = sqlx::query_scalar::<_, String>(&format!(
            "SELECT i.id FROM instances i WHERE i.kind = $1 AND i.closed_at < $2 AND {} \
             ORDER BY i.closed_at, i.id LIMIT $3",
            finished(self.backend)
        ))
        .bind(kind)
        .bind(millis(before))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn purge_instances(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let mut purged = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS) {
            let rows: Vec<Vec<Arg>> = chunk
                .iter()
                .map(|id| vec![Arg::T(Some(id.clone()))])
                .collect();
            let list = placeholders(&rows, self.backend).replace(['(', ')'], "");
            let found = fetch_ids(
                &mut tx,
                &format!(
                    "SELECT i.id FROM instances i WHERE i.id IN ({list}) AND {}",
                    finished(self.backend)
                ),
                rows,
            )
            .await?;
            if found.is_empty() {
                continue;
            }
            let rows: Vec<Vec<Arg>> = found
                .iter()
                .map(|id| vec![Arg::T(Some(id.clone()))])
                .collect();
            let list = placeholders(&rows, self.backend).replace(['(', ')'], "");
            for (table, column) in [
                ("history", "instance_id"),
                ("timers", "instance_id"),
                ("tasks", "instance_id"),
                ("outbox", "instance_id"),
                ("signals", "instance_id"),
                ("instances", "id"),
            ] {
                bind_all(
                    sqlx::query(&format!("DELETE FROM {table} WHERE {column} IN ({list})")),
                    rows.clone(),
                )
                .execute(&mut *tx)
                .await?;
            }
            purged.extend(found);
        }
        tx.commit().await?;
        Ok(purged)
    }

    async fn count_timers(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM timers")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn claim_tasks(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        lease_until: DateTime<Utc>,
        owner: &str,
    ) -> Result<Vec<TaskRow>> {
        let pick = match self.backend {
            Backend::Sqlite => {
                "SELECT id FROM tasks WHERE (status = 'pending' AND next_run_at <= $3) \
                 OR (status = 'running' AND lease_until <= $3) ORDER BY next_run_at LIMIT $4"
            }
            Backend::Postgres => {
                "SELECT id FROM tasks WHERE (status = 'pending' AND next_run_at <= $3) \
                 OR (status = 'running' AND lease_until <= $3) ORDER BY next_run_at LIMIT $4 \
                 FOR UPDATE SKIP LOCKED"
            }
        };
        let sql = format!(
            "UPDATE tasks SET status = 'running', lease_until = $1, attempt = attempt + 1, updated_at = $2, \
             lease_owner = $5 WHERE id IN ({pick}) RETURNING {TASK_COLUMNS}"
        );
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&sql)
            .bind(millis(lease_until))
            .bind(millis(now))
            .bind(millis(now))
            .bind(limit)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut tasks: Vec<TaskRow> = rows.iter().map(task_row).collect::<Result<_>>()?;
        tasks.sort_by(|a, b| a.next_run_at.cmp(&b.next_run_at).then(a.id.cmp(&b.id)));
        Ok(tasks)
    }

    async fn release_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE tasks SET lease_until = $1 WHERE status = 'running' AND lease_owner = $2 AND lease_until > $1",
        )
        .bind(millis(now))
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn retry_task(
        &self,
        id: &str,
        error: &str,
        next_run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET status = 'pending', last_error = $1, next_run_at = $2, lease_until = NULL, \
             updated_at = $3 WHERE id = $4",
        )
        .bind(error)
        .bind(millis(next_run_at))
        .bind(millis(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn next_task(&self) -> Result<Option<DateTime<Utc>>> {
        let t: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN status = 'pending' THEN next_run_at ELSE lease_until END) FROM tasks \
             WHERE status IN ('pending', 'running')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(t.map(from_millis))
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(task_row).transpose()
    }

    async fn failed_tasks(&self, page: Page) -> Result<Vec<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'failed' OR (status = 'pending' AND last_error IS NOT NULL) \
             ORDER BY updated_at DESC, id LIMIT $1 OFFSET $2"
        );
        let rows = sqlx::query(&sql)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_row).collect()
    }

    async fn tasks_of(&self, instance_id: &str) -> Result<Vec<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE instance_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(instance_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(task_row).collect()
    }

    async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, instance_id, kind, payload, created_at, delivered_at FROM outbox \
             WHERE delivered_at IS NULL ORDER BY created_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get("id")?,
                    instance_id: r.try_get("instance_id")?,
                    kind: r.try_get("kind")?,
                    payload: r.try_get("payload")?,
                    created_at: from_millis(r.try_get("created_at")?),
                    delivered_at: r
                        .try_get::<Option<i64>, _>("delivered_at")?
                        .map(from_millis),
                })
            })
            .collect()
    }

    async fn enqueue_signal(&self, s: &SignalRow) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO signals (instance_id, name, payload, actor, received_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&s.instance_id)
        .bind(&s.name)
        .bind(&s.payload)
        .bind(&s.actor)
        .bind(millis(s.received_at))
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn pending_signals(&self, limit: i64) -> Result<Vec<SignalRow>> {
        let rows = sqlx::query("SELECT id, instance_id, name, payload, actor, received_at FROM signals ORDER BY id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SignalRow {
                    id: r.try_get("id")?,
                    instance_id: r.try_get("instance_id")?,
                    name: r.try_get("name")?,
                    payload: r.try_get("payload")?,
                    actor: r.try_get("actor")?,
                    received_at: from_millis(r.try_get("received_at")?),
                })
            })
            .collect()
    }

    async fn latest_recorded(&self) -> Result<Option<DateTime<Utc>>> {
        let a: Option<i64> = sqlx::query_scalar("SELECT MAX(updated_at) FROM instances")
            .fetch_one(&self.reader)
            .await?;
        let b: Option<i64> = sqlx::query_scalar("SELECT MAX(last_fired_at) FROM schedules")
            .fetch_one(&self.reader)
            .await?;
        Ok(a.max(b).map(from_millis))
    }

    async fn schedule_last_fired(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
        let t: Option<i64> =
            sqlx::query_scalar("SELECT last_fired_at FROM schedules WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(t.map(from_millis))
    }
}
