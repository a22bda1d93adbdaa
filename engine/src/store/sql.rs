//! [`Store`] on SQLite or PostgreSQL through sqlx's `Any` driver. The SQL is
//! shared (`$n` placeholders work on both); task claiming differs.

use super::*;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, FromRow, Row};
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
     parent_id, parent_call, snapshot, revision, history_len, created_at, updated_at, closed_at, history_hash";
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
        let instances: Vec<InstanceRow> = instances
            .iter()
            .map(read("instances"))
            .collect::<Result<_>>()?;
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
                let h: HistoryRow = read("history")(&r)?;
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

impl SqlStore {
    /// Fill the `search` of `rows` from `instance_search`.
    async fn attach_search(&self, pool: &AnyPool, rows: &mut [InstanceRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let at: std::collections::HashMap<String, usize> = rows
            .iter()
            .enumerate()
            .map(|(k, r)| (r.id.clone(), k))
            .collect();
        let ids: Vec<Vec<Arg>> = rows
            .iter()
            .map(|r| vec![Arg::T(Some(r.id.clone()))])
            .collect();
        for chunk in ids.chunks(ROWS) {
            let list = placeholders(chunk, self.backend).replace(['(', ')'], "");
            let sql = format!(
                "SELECT instance_id, name, value FROM instance_search WHERE instance_id IN ({list})"
            );
            let found: Vec<(String, String, String)> =
                bind_all_as(sqlx::query_as(&sql), chunk.to_vec())
                    .fetch_all(pool)
                    .await?;
            for (id, name, value) in found {
                if let Some(&k) = at.get(&id) {
                    rows[k].search.insert(name, value);
                }
            }
        }
        Ok(())
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
/// waits for an operator), with no child still running or failed.
const FINISHED: &str = "i.status IN ('completed', 'terminated') AND NOT EXISTS \
     (SELECT 1 FROM instances c WHERE c.parent_id = i.id \
      AND c.status NOT IN ('completed', 'terminated'))";

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

fn bind_all_as<'q, O>(
    mut q: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    rows: Vec<Vec<Arg>>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
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
        Arg::T(i.parent.as_ref().map(|p| p.instance_id.clone())),
        Arg::T(i.parent.as_ref().map(|p| p.call.clone())),
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

const HISTORY_COLUMNS: &str = "instance_id, seq, at, kind, payload, prev_hash, hash";

const PUBLICATION_COLUMNS: &str =
    "seq, kind, published_by, reason, published_at, clock_at, rollback_of, definitions";

/// The reader of every table: a row as its public type (`FromRow` derived
/// on it in [`super`]); a value that does not decode is corrupt data, named
/// by table and column.
fn read<T: for<'r> FromRow<'r, AnyRow>>(table: &'static str) -> impl Fn(&AnyRow) -> Result<T> {
    move |r| {
        T::from_row(r).map_err(|e| match e {
            sqlx::Error::ColumnDecode { index, source } => {
                // sqlx quotes a column named by string (`"at"`).
                Error::Corrupt(format!("{table}.{}: {source}", index.trim_matches('"')))
            }
            e => e.into(),
        })
    }
}

/// `Type` and `Decode` on `Any` for a field type stored as `$raw` and
/// checked by `$check` on the way in: its error names what was wrong, and
/// [`read`] adds the table and column.
macro_rules! stored_as {
    ($t:ty, $raw:ty, $check:expr) => {
        impl sqlx::Type<sqlx::Any> for $t {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <$raw as sqlx::Type<sqlx::Any>>::type_info()
            }
            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <$raw as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Any> for $t {
            fn decode(
                v: sqlx::any::AnyValueRef<'r>,
            ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
                let raw = <$raw as sqlx::Decode<'r, sqlx::Any>>::decode(v)?;
                let check: fn($raw) -> std::result::Result<$t, String> = $check;
                Ok(check(raw)?)
            }
        }
    };
}

pub(super) fn time(ms: i64) -> std::result::Result<DateTime<Utc>, String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| format!("{ms} is not a time (unix milliseconds)"))
}

/// A stored time (unix milliseconds), read into a `DateTime<Utc>` field.
pub struct Millis(pub(super) DateTime<Utc>);
stored_as!(Millis, i64, |ms| time(ms).map(Millis));

impl From<Millis> for DateTime<Utc> {
    fn from(m: Millis) -> Self {
        m.0
    }
}

/// A nullable stored time, read into an `Option<DateTime<Utc>>` field.
pub struct MaybeMillis(Option<DateTime<Utc>>);
stored_as!(MaybeMillis, Option<i64>, |ms| ms
    .map(time)
    .transpose()
    .map(MaybeMillis));

impl From<MaybeMillis> for Option<DateTime<Utc>> {
    fn from(m: MaybeMillis) -> Self {
        m.0
    }
}

/// A map stored as JSON text (`publications.definitions`).
pub struct JsonMap(BTreeMap<String, String>);
stored_as!(JsonMap, String, |text| serde_json::from_str(&text)
    .map(JsonMap)
    .map_err(|e| e.to_string()));

impl From<JsonMap> for BTreeMap<String, String> {
    fn from(m: JsonMap) -> Self {
        m.0
    }
}

stored_as!(TaskStatus, String, |s| TaskStatus::parse(&s)
    .ok_or_else(|| format!("{s:?} is not a task status")));

/// `instances.parent_id` and `parent_call`: both or neither.
pub struct ParentColumns(Option<ParentRef>);

impl FromRow<'_, AnyRow> for ParentColumns {
    fn from_row(r: &AnyRow) -> sqlx::Result<Self> {
        let id: Option<String> = r.try_get("parent_id")?;
        let call: Option<String> = r.try_get("parent_call")?;
        match (id, call) {
            (Some(instance_id), Some(call)) => {
                Ok(ParentColumns(Some(ParentRef { instance_id, call })))
            }
            (None, None) => Ok(ParentColumns(None)),
            (p, c) => Err(sqlx::Error::ColumnDecode {
                index: "parent_id/parent_call".into(),
                source: format!("{p:?} / {c:?} (one without the other)").into(),
            }),
        }
    }
}

impl From<ParentColumns> for Option<ParentRef> {
    fn from(c: ParentColumns) -> Self {
        c.0
    }
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
    ] {
        if let Some(v) = v {
            n += 1;
            clauses.push(format!("{col} = ${n}"));
            texts.push(v.clone());
        }
    }
    for (name, value) in &f.search {
        clauses.push(format!(
            "id IN (SELECT instance_id FROM instance_search WHERE name = ${} AND value = ${})",
            n + 1,
            n + 2
        ));
        n += 2;
        texts.push(name.clone());
        texts.push(value.clone());
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

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// Commit, step 1: new instances with their search attributes; returns,
/// per commit, whether its instance part applies (false for an
/// `insert_if_absent` start whose id exists). `RETURNING` tells which ids
/// were free.
async fn insert_instances(tx: &mut Tx<'_>, batch: &[StepCommit], plan: &Plan) -> Result<Vec<bool>> {
    let backend = backend_of(tx);
    let mut inserted = std::collections::HashSet::new();
    for chunk in plan.inserts.chunks(ROWS) {
        let rows: Vec<Vec<Arg>> = chunk
            .iter()
            .map(|&k| instance_args(batch[k].instance.as_ref().expect("insert")))
            .collect();
        let sql = format!(
            "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
            placeholders(&rows, backend)
        );
        inserted.extend(fetch_ids(tx, &sql, rows).await?);
    }
    let mut applied = vec![true; batch.len()];
    let mut search = Vec::new();
    for &k in &plan.inserts {
        let i = batch[k].instance.as_ref().expect("insert");
        // An id inserted twice in one batch: only the first counts.
        if inserted.remove(&i.id) {
            search.extend(i.search.iter().map(|(name, value)| {
                vec![
                    Arg::T(Some(i.id.clone())),
                    Arg::T(Some(name.clone())),
                    Arg::T(Some(value.clone())),
                ]
            }));
        } else if batch[k].insert_if_absent {
            applied[k] = false;
        } else {
            return Err(Error::Duplicate(i.id.clone()));
        }
    }
    insert_many(
        tx,
        "instance_search",
        "instance_id, name, value",
        search,
        "ON CONFLICT (instance_id, name) DO NOTHING",
    )
    .await?;
    Ok(applied)
}

/// The bound values of an instance update: the new row and the revision
/// the step read.
fn update_args(c: &StepCommit) -> Vec<Arg> {
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
}

/// Commit, step 2: one round of updates (each instance at most once),
/// each only over the revision its step read; a mismatch fails the batch.
async fn update_instances(tx: &mut Tx<'_>, batch: &[StepCommit], round: &[usize]) -> Result<()> {
    let backend = backend_of(tx);
    for chunk in round.chunks(ROWS) {
        let rows: Vec<Vec<Arg>> = chunk.iter().map(|&k| update_args(&batch[k])).collect();
        let sql = format!(
            "WITH v (id, definition_hash, definition_version, state, status, status_label, snapshot, revision, history_len, updated_at, closed_at, history_hash, expected) \
             AS (VALUES {}) \
             UPDATE instances SET definition_hash = v.definition_hash, definition_version = v.definition_version, \
             state = v.state, status = v.status, status_label = v.status_label, \
             snapshot = v.snapshot, revision = v.revision, history_len = v.history_len, \
             updated_at = v.updated_at, closed_at = v.closed_at, history_hash = v.history_hash \
             FROM v WHERE instances.id = v.id AND instances.revision = v.expected RETURNING instances.id",
            placeholders(&rows, backend)
        );
        let done: std::collections::HashSet<String> =
            fetch_ids(tx, &sql, rows).await?.into_iter().collect();
        for &k in chunk {
            let c = &batch[k];
            let i = c.instance.as_ref().expect("update");
            if !done.contains(&i.id) {
                return Err(conflict(tx, &i.id, c.expected_revision.unwrap_or_default()).await);
            }
        }
    }
    Ok(())
}

/// Why an update found no row at the revision it expected.
async fn conflict(tx: &mut Tx<'_>, id: &str, expected: i64) -> Error {
    let found: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT revision FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await;
    match found {
        Ok(Some(found)) => Error::Conflict {
            id: id.to_string(),
            expected,
            found,
        },
        Ok(None) => Error::NotFound(format!("instance {id}")),
        Err(e) => e.into(),
    }
}

/// The rows that go with the applied steps of a batch.
#[derive(Default)]
struct StepRows {
    history: Vec<Vec<Arg>>,
    /// Net effect on timers, in order: a timer started and cancelled
    /// within the batch never lands.
    timer_inserts: Vec<Vec<Arg>>,
    timer_deletes: Vec<Vec<Arg>>,
    tasks: Vec<Vec<Arg>>,
    done_tasks: Vec<Vec<Arg>>,
    outbox: Vec<Vec<Arg>>,
}

impl StepRows {
    fn of(batch: &[StepCommit], applied: &[bool]) -> StepRows {
        let mut rows = StepRows::default();
        let mut timers: Vec<&TimerRow> = Vec::new();
        let mut deletes: Vec<(&str, &str)> = Vec::new();
        for (c, _) in batch.iter().zip(applied).filter(|(_, a)| **a) {
            rows.history.extend(c.history.iter().map(history_args));
            let iid = c.instance.as_ref().map_or("", |i| i.id.as_str());
            for t in &c.timers_delete {
                match timers
                    .iter()
                    .position(|x| x.instance_id == iid && &x.timer_id == t)
                {
                    Some(pos) => {
                        timers.remove(pos);
                    }
                    None => deletes.push((iid, t)),
                }
            }
            timers.extend(&c.timers_insert);
            rows.tasks.extend(c.tasks_insert.iter().map(task_args));
            if let Some(d) = &c.task_done {
                let now = c.instance.as_ref().map(|i| millis(i.updated_at));
                rows.done_tasks.push(vec![
                    Arg::T(Some(d.id.clone())),
                    Arg::T(Some(d.status.as_str().to_string())),
                    Arg::T(d.result.clone()),
                    Arg::T(d.error.clone()),
                    Arg::I(Some(now.unwrap_or_default())),
                    Arg::I(opt_ms(d.next_run_at)),
                ]);
            }
            rows.outbox.extend(c.outbox_insert.iter().map(outbox_args));
        }
        rows.timer_deletes = deletes
            .into_iter()
            .map(|(i, t)| vec![Arg::T(Some(i.to_string())), Arg::T(Some(t.to_string()))])
            .collect();
        rows.timer_inserts = timers.into_iter().map(timer_args).collect();
        rows
    }
}

fn history_args(h: &HistoryRow) -> Vec<Arg> {
    vec![
        Arg::T(Some(h.instance_id.clone())),
        Arg::I(Some(h.seq)),
        Arg::I(Some(millis(h.at))),
        Arg::T(Some(h.kind.clone())),
        Arg::T(Some(h.payload.clone())),
        Arg::T(h.prev_hash.clone()),
        Arg::T(h.hash.clone()),
    ]
}

fn task_args(t: &TaskRow) -> Vec<Arg> {
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
}

fn outbox_args(o: &OutboxRow) -> Vec<Arg> {
    vec![
        Arg::T(Some(o.id.clone())),
        Arg::T(Some(o.instance_id.clone())),
        Arg::T(Some(o.kind.clone())),
        Arg::T(Some(o.payload.clone())),
        Arg::I(Some(millis(o.created_at))),
        Arg::I(opt_ms(o.delivered_at)),
    ]
}

fn timer_args(t: &TimerRow) -> Vec<Arg> {
    vec![
        Arg::T(Some(t.instance_id.clone())),
        Arg::T(Some(t.timer_id.clone())),
        Arg::T(Some(t.name.clone())),
        Arg::I(Some(millis(t.due_at))),
    ]
}

/// `sql(values)` for each chunk of `rows`, `values` being its placeholders.
async fn each_chunk(
    tx: &mut Tx<'_>,
    rows: Vec<Vec<Arg>>,
    sql: impl Fn(&str) -> String,
) -> Result<()> {
    let backend = backend_of(tx);
    for chunk in rows.chunks(ROWS) {
        execute(tx, &sql(&placeholders(chunk, backend)), chunk.to_vec()).await?;
    }
    Ok(())
}

/// Commit, step 3: history, timers, tasks and outbox rows of the applied steps.
async fn write_step_rows(tx: &mut Tx<'_>, rows: StepRows) -> Result<()> {
    insert_many(tx, "history", HISTORY_COLUMNS, rows.history, "").await?;
    each_chunk(tx, rows.timer_deletes, |v| {
        format!("DELETE FROM timers WHERE (instance_id, timer_id) IN (VALUES {v})")
    })
    .await?;
    let timer_columns = "instance_id, timer_id, name, due_at";
    insert_many(tx, "timers", timer_columns, rows.timer_inserts, "").await?;
    let conflict = "ON CONFLICT (id) DO NOTHING";
    insert_many(tx, "tasks", TASK_COLUMNS, rows.tasks, conflict).await?;
    each_chunk(tx, rows.done_tasks, |v| {
        format!(
            "WITH v (id, status, result, error, now, next) AS (VALUES {v}) \
             UPDATE tasks SET status = v.status, result = v.result, last_error = COALESCE(v.error, tasks.last_error), \
             lease_until = NULL, updated_at = v.now, next_run_at = COALESCE(v.next, tasks.next_run_at) FROM v WHERE tasks.id = v.id"
        )
    })
    .await?;
    let outbox_columns = "id, instance_id, kind, payload, created_at, delivered_at";
    insert_many(tx, "outbox", outbox_columns, rows.outbox, conflict).await?;
    Ok(())
}

/// Commit, step 4: bookkeeping, applied whether or not the instance part
/// of its commit was (outbox rows delivered, inbox signals consumed,
/// schedule slots fired).
async fn write_bookkeeping(tx: &mut Tx<'_>, batch: &[StepCommit]) -> Result<()> {
    let delivered: Vec<Vec<Arg>> = batch
        .iter()
        .flat_map(|c| {
            let now = c.instance.as_ref().map(|i| millis(i.updated_at));
            c.outbox_delivered.iter().map(move |id| {
                vec![
                    Arg::T(Some(id.clone())),
                    Arg::I(Some(now.unwrap_or_default())),
                ]
            })
        })
        .collect();
    each_chunk(tx, delivered, |v| {
        format!("WITH v (id, now) AS (VALUES {v}) UPDATE outbox SET delivered_at = v.now FROM v WHERE outbox.id = v.id")
    })
    .await?;
    for c in batch {
        if let Some(id) = c.signal_consumed {
            sqlx::query("DELETE FROM signals WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        if let Some((name, at)) = &c.schedule_fired {
            sqlx::query(
                "INSERT INTO schedules (name, last_fired_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET last_fired_at = excluded.last_fired_at",
            )
            .bind(name)
            .bind(millis(*at))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
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
        r.as_ref().map(read("definitions")).transpose()
    }

    async fn definitions(&self, kind: &str) -> Result<Vec<DefinitionRow>> {
        let rows = sqlx::query(
            "SELECT hash, kind, version, source, published_at FROM definitions WHERE kind = $1 \
             ORDER BY version, published_at",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read("definitions")).collect()
    }

    async fn all_definitions(&self) -> Result<Vec<DefinitionRow>> {
        let rows = sqlx::query(
            "SELECT hash, kind, version, source, published_at FROM definitions \
             ORDER BY kind, version, published_at",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(read("definitions")).collect()
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
        r.as_ref().map(read("publications")).transpose()
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
        r.as_ref().map(read("publications")).transpose()
    }

    async fn publications(&self, limit: i64) -> Result<Vec<PublicationRow>> {
        let sql =
            format!("SELECT {PUBLICATION_COLUMNS} FROM publications ORDER BY seq DESC LIMIT $1");
        let rows = sqlx::query(&sql)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(read("publications")).collect()
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
        rows.iter().map(read("instances")).collect()
    }

    async fn commit(&self, batch: &[StepCommit]) -> Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let plan = Plan::new(batch);
        let applied = insert_instances(&mut tx, batch, &plan).await?;
        for round in &plan.update_rounds {
            update_instances(&mut tx, batch, round).await?;
        }
        write_step_rows(&mut tx, StepRows::of(batch, &applied)).await?;
        write_bookkeeping(&mut tx, batch).await?;
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
                out.push(read("instances")(&r)?);
            }
        }
        self.attach_search(&self.pool, &mut out).await?;
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
        let mut row: Vec<InstanceRow> = r
            .as_ref()
            .map(read("instances"))
            .transpose()?
            .into_iter()
            .collect();
        self.attach_search(&self.reader, &mut row).await?;
        Ok(row.pop())
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
        let mut rows: Vec<InstanceRow> =
            rows.iter().map(read("instances")).collect::<Result<_>>()?;
        self.attach_search(&self.pool, &mut rows).await?;
        Ok(rows)
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
        Ok(sqlx::query_as(
            "SELECT kind, state, COUNT(*) AS n FROM instances GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryRow>> {
        let sql =
            format!("SELECT {HISTORY_COLUMNS} FROM history WHERE instance_id = $1 ORDER BY seq");
        let rows = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
        rows.iter().map(read("history")).collect()
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
        rows.iter().map(read("timers")).collect()
    }

    async fn next_timer(&self) -> Result<Option<DateTime<Utc>>> {
        let t: Option<i64> = sqlx::query_scalar("SELECT MIN(due_at) FROM timers")
            .fetch_one(&self.pool)
            .await?;
        t.map(|t| from_millis("timers.due_at", t)).transpose()
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
        rows.iter().map(read("timers")).collect()
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
            FINISHED
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
                    FINISHED
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
                ("instance_search", "instance_id"),
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
        let mut tasks: Vec<TaskRow> = rows.iter().map(read("tasks")).collect::<Result<_>>()?;
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
        t.map(|t| from_millis("tasks.next_run_at", t)).transpose()
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(read("tasks")).transpose()
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
        rows.iter().map(read("tasks")).collect()
    }

    async fn tasks_of(&self, instance_id: &str) -> Result<Vec<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE instance_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(instance_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(read("tasks")).collect()
    }

    async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, instance_id, kind, payload, created_at, delivered_at FROM outbox \
             WHERE delivered_at IS NULL ORDER BY created_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read("outbox")).collect()
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
        rows.iter().map(read("signals")).collect()
    }

    async fn latest_recorded(&self) -> Result<Option<DateTime<Utc>>> {
        let a: Option<i64> = sqlx::query_scalar("SELECT MAX(updated_at) FROM instances")
            .fetch_one(&self.reader)
            .await?;
        let b: Option<i64> = sqlx::query_scalar("SELECT MAX(last_fired_at) FROM schedules")
            .fetch_one(&self.reader)
            .await?;
        a.max(b)
            .map(|t| from_millis("instances.updated_at/schedules.last_fired_at", t))
            .transpose()
    }

    async fn schedule_last_fired(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
        let t: Option<i64> =
            sqlx::query_scalar("SELECT last_fired_at FROM schedules WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        t.map(|t| from_millis("schedules.last_fired_at", t))
            .transpose()
    }
}
