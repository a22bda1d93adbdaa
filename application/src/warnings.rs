//! 预警处置 and 审核 as the pages see them (DOMAIN.md R5, R6): lists of the
//! warnings projection scoped to one enterprise or one district, counts per
//! state, one warning with its timeline read from its workflow's history,
//! and the enterprise's disposal and the district's review, which are
//! signals to the warning's workflow.
//!
//! Every read and write takes a `Scope`; a warning outside it is "not
//! found", whatever id is asked for. Must not change a warning's state
//! itself: only the workflow does, through the runtime.
//!
//! Vocabulary (one word per thing):
//! - the *projection* is the `warnings` table (with `warning_counts`): the
//!   read model the pages list, written only here and by the comparison
//!   that opens warnings;
//! - to *project* is to write what a warning's workflow instance shows
//!   (state, label, overdue flags, due time) into its projection row, only
//!   if that is newer than what the row shows: [`project`] (one instance in
//!   hand), [`project_many`] (a page of them, one transaction: the engine's
//!   `Projection::project_many`), [`project_by_id`] (read the instance
//!   first: after a signal, and the console's operator actions);
//! - `record_warning_event` is not a second concept but the activity name
//!   definitions from before `projection: warning` call; it projects too
//!   (`activities::legacy_projection`) and keeps its name because stored
//!   definitions name it.

use crate::sites::PAGE_SIZE;
use engine::interpreter::Actor;
use engine::store::sql::{insert_many, Arg};
use serde::Serialize;
use serde_json::Value;
use sqlx::{AnyPool, FromRow};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("未找到该预警或无权操作")]
    NotFound,
    #[error("填写内容有误")]
    Invalid(Vec<engine::compile::form::FieldError>),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Runtime(#[from] engine::runtime::Error),
    #[error(transparent)]
    Store(#[from] engine::store::Error),
}

/// The signal of workflows/warning.yaml an enterprise's disposal is.
pub const DISPOSE: &str = "dispose";

/// Whose warnings.
#[derive(Debug, Clone)]
pub enum Scope {
    Enterprise(String),
    District(String),
    /// Policy staff and operators: every district.
    City,
}

impl Scope {
    fn clause(&self) -> (&'static str, &str) {
        match self {
            Scope::Enterprise(id) => ("w.enterprise_id = $1", id),
            Scope::District(code) => ("w.district = $1", code),
            Scope::City => ("$1 = ''", ""),
        }
    }
}

/// Filters of the lists (all optional; empty means any).
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct Filter {
    /// A workflow state (`awaiting_disposal`, …) or `open` for all not closed.
    pub state: String,
    /// `disposal`, `review` or empty.
    pub overdue: String,
    /// Part of the enterprise's name.
    pub enterprise: String,
    pub page: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WarningRow {
    pub id: String,
    pub enterprise_id: String,
    pub enterprise_name: String,
    pub district: String,
    pub district_name: String,
    pub person_name: String,
    pub person_masked: String,
    pub reason: String,
    pub state: String,
    pub state_label: String,
    pub disposal_overdue: bool,
    pub review_overdue: bool,
    pub opened_at: i64,
    /// The due time of the workflow's pending deadline timer (`deadline:
    /// true` in its definition, R5.3 / R6.2), None when none is pending.
    pub due_at: Option<i64>,
    pub closed_at: Option<i64>,
}

/// The states of a workflow with the labels its definition gives them, in
/// the order written (the filters' options).
pub fn state_options(program: &engine::compile::program::Program) -> Vec<(String, String)> {
    program
        .states
        .iter()
        .map(|s| (s.name.clone(), program.state_label(&s.name).to_string()))
        .collect()
}

/// Rows the projection has not labelled yet (opened by a comparison an
/// instant before their workflow's first step) get the label `program`
/// (the current definition) gives their state.
pub fn label_rows(rows: &mut [WarningRow], program: Option<&engine::compile::program::Program>) {
    for r in rows.iter_mut().filter(|r| r.state_label.is_empty()) {
        r.state_label = match program {
            Some(p) => p.state_label(&r.state).to_string(),
            None => r.state.clone(),
        };
    }
}

/// A row of [`COLUMNS`] as the database returns it (flags as integers,
/// a label not yet written as NULL).
#[derive(sqlx::FromRow)]
struct Stored {
    id: String,
    enterprise_id: String,
    enterprise_name: String,
    district: String,
    district_name: String,
    person_name: String,
    person_masked: String,
    reason: String,
    state: String,
    state_label: Option<String>,
    disposal_overdue: i64,
    review_overdue: i64,
    opened_at: i64,
    due_at: Option<i64>,
    closed_at: Option<i64>,
}

impl From<Stored> for WarningRow {
    fn from(r: Stored) -> WarningRow {
        WarningRow {
            id: r.id,
            enterprise_id: r.enterprise_id,
            enterprise_name: r.enterprise_name,
            district: r.district,
            district_name: r.district_name,
            person_name: r.person_name,
            person_masked: r.person_masked,
            reason: r.reason,
            state: r.state,
            state_label: r.state_label.unwrap_or_default(),
            disposal_overdue: r.disposal_overdue != 0,
            review_overdue: r.review_overdue != 0,
            opened_at: r.opened_at,
            due_at: r.due_at,
            closed_at: r.closed_at,
        }
    }
}

fn row(r: &sqlx::any::AnyRow) -> Result<WarningRow, sqlx::Error> {
    Stored::from_row(r).map(WarningRow::from)
}

const COLUMNS: &str = "w.id, w.enterprise_id, e.name AS enterprise_name, w.district, d.name AS district_name, \
    w.person_name, w.person_masked, w.reason, w.state, w.state_label, w.disposal_overdue, w.review_overdue, w.opened_at, w.due_at, w.closed_at";
const FROM: &str = "FROM warnings w JOIN enterprises e ON e.id = w.enterprise_id JOIN districts d ON d.code = w.district";

/// One page of a warnings list with its counts.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub rows: Vec<WarningRow>,
    /// Warnings matching the filter, on all pages.
    pub total: i64,
    /// Counts per state in scope, whatever the filter.
    pub counts: Counts,
}

/// One page of warnings in scope, newest first, the number matching and
/// the counts per state. Only the filters given become conditions, so an
/// unfiltered page is an index range (`warnings_*_opened`, migration 1003),
/// its total is the sum of the counts, and the joins run for its rows only.
pub async fn list(pool: &AnyPool, scope: &Scope, f: &Filter) -> Result<Page, Error> {
    let counts = counts(pool, scope).await?;
    let (clause, who) = scope.clause();
    let mut conds = vec![clause.to_string()];
    let mut args = vec![who.to_string()];
    match f.state.trim() {
        "" => {}
        "open" => conds.push("w.closed_at IS NULL".into()),
        state => {
            args.push(state.to_string());
            conds.push(format!("w.state = ${}", args.len()));
        }
    }
    match f.overdue.trim() {
        "disposal" => conds.push("w.disposal_overdue = 1".into()),
        "review" => conds.push("w.review_overdue = 1".into()),
        _ => {}
    }
    let ent = f.enterprise.trim().replace(['%', '_'], "");
    if !ent.is_empty() {
        args.push(format!("%{ent}%"));
        conds.push(format!(
            "w.enterprise_id IN (SELECT id FROM enterprises WHERE name LIKE ${})",
            args.len()
        ));
    }
    let total = if conds.len() == 1 {
        counts.total()
    } else {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM warnings w WHERE {}",
            conds.join(" AND ")
        );
        args.iter()
            .fold(sqlx::query_scalar(&sql), |q, a| q.bind(a.as_str()))
            .fetch_one(pool)
            .await?
    };
    let where_ = conds.join(" AND ");
    // The page's ids from the index, then their rows and names.
    let rows_sql = format!(
        "SELECT {COLUMNS} FROM (SELECT w.id FROM warnings w WHERE {where_} \
         ORDER BY w.opened_at DESC, w.id DESC LIMIT ${} OFFSET ${}) p \
         JOIN warnings w ON w.id = p.id \
         JOIN enterprises e ON e.id = w.enterprise_id JOIN districts d ON d.code = w.district \
         ORDER BY w.opened_at DESC, w.id DESC",
        args.len() + 1,
        args.len() + 2
    );
    let rows = bind_all(&rows_sql, &args)
        .bind(PAGE_SIZE)
        .bind((f.page.max(1) - 1) * PAGE_SIZE)
        .fetch_all(pool)
        .await?;
    Ok(Page {
        rows: rows.iter().map(row).collect::<Result<_, _>>()?,
        total,
        counts,
    })
}

fn bind_all<'q>(
    sql: &'q str,
    args: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    args.iter()
        .fold(sqlx::query(sql), |q, a| q.bind(a.as_str()))
}

/// Counts per state in scope, and of overdue ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub awaiting_disposal: i64,
    pub under_review: i64,
    pub rectifying: i64,
    pub closed: i64,
    /// In a state the pages have no column for (a state policy staff added).
    pub other: i64,
    pub disposal_overdue: i64,
    pub review_overdue: i64,
}

impl Counts {
    /// Warnings in every state.
    pub fn total(&self) -> i64 {
        self.awaiting_disposal + self.under_review + self.rectifying + self.closed + self.other
    }
}

/// Counts per state in scope, read from `warning_counts` (migration 1004):
/// a few rows per enterprise, whatever the length of its history.
pub async fn counts(pool: &AnyPool, scope: &Scope) -> Result<Counts, Error> {
    let (clause, who) = scope.clause();
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT w.state, CAST(SUM(w.n) AS BIGINT) AS n, CAST(SUM(w.disposal_overdue) AS BIGINT) AS d, \
         CAST(SUM(w.review_overdue) AS BIGINT) AS r FROM warning_counts w WHERE {clause} GROUP BY w.state"
    ))
    .bind(who)
    .fetch_all(pool)
    .await?;
    let mut c = Counts::default();
    for (state, n, d, r) in rows {
        match state.as_str() {
            "awaiting_disposal" => c.awaiting_disposal += n,
            "under_review" => c.under_review += n,
            "rectifying" => c.rectifying += n,
            "closed" => c.closed += n,
            _ => c.other += n,
        }
        c.disposal_overdue += d;
        c.review_overdue += r;
    }
    Ok(c)
}

/// What one projection row adds to `warning_counts`: its bucket
/// (enterprise, district, state) and 1 warning, plus its overdue flags
/// while it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub enterprise_id: String,
    pub district: String,
    pub state: String,
    pub disposal_overdue: bool,
    pub review_overdue: bool,
    pub open: bool,
}

/// Add `sign` × each row to `warning_counts`, in the caller's transaction.
/// Every write of the `warnings` projection calls this in the same
/// transaction (the comparison's insert, [`project_many`]),
/// so the counts never disagree with the rows.
pub async fn add_to_counts(
    conn: &mut sqlx::AnyConnection,
    rows: &[(Counted, i64)],
) -> Result<(), sqlx::Error> {
    let mut sums: BTreeMap<(&str, &str, &str), (i64, i64, i64)> = BTreeMap::new();
    for (c, sign) in rows {
        let e = sums
            .entry((&c.enterprise_id, &c.district, &c.state))
            .or_default();
        e.0 += sign;
        e.1 += sign * i64::from(c.open && c.disposal_overdue);
        e.2 += sign * i64::from(c.open && c.review_overdue);
    }
    let rows: Vec<Vec<Arg>> = sums
        .into_iter()
        .filter(|(_, v)| *v != (0, 0, 0))
        .map(|((enterprise, district, state), (n, d, r))| {
            let t = |s: &str| Arg::T(Some(s.to_string()));
            vec![
                t(enterprise),
                t(district),
                t(state),
                Arg::I(Some(n)),
                Arg::I(Some(d)),
                Arg::I(Some(r)),
            ]
        })
        .collect();
    // One statement per few hundred buckets; each bucket once per
    // statement, as PostgreSQL's ON CONFLICT requires.
    insert_many(
        conn,
        "warning_counts",
        "enterprise_id, district, state, n, disposal_overdue, review_overdue",
        rows,
        "ON CONFLICT (enterprise_id, district, state) DO UPDATE SET \
         n = warning_counts.n + excluded.n, \
         disposal_overdue = warning_counts.disposal_overdue + excluded.disposal_overdue, \
         review_overdue = warning_counts.review_overdue + excluded.review_overdue",
    )
    .await
    .map_err(crate::services::sqlx_error)?;
    Ok(())
}

/// Recompute `warning_counts` from the rows, for data written around the
/// projection's functions (bulk loads, benchmarks); run it while nothing
/// else writes warnings.
pub async fn rebuild_counts(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM warning_counts")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO warning_counts (enterprise_id, district, state, n, disposal_overdue, review_overdue) {COUNTS_OF_ROWS}"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The counts of the rows, as migration 1004 first wrote them.
const COUNTS_OF_ROWS: &str = "SELECT enterprise_id, district, state, COUNT(*) AS n, \
     CAST(SUM(CASE WHEN closed_at IS NULL AND disposal_overdue = 1 THEN 1 ELSE 0 END) AS BIGINT) AS d, \
     CAST(SUM(CASE WHEN closed_at IS NULL AND review_overdue = 1 THEN 1 ELSE 0 END) AS BIGINT) AS r \
     FROM warnings GROUP BY enterprise_id, district, state";

/// Where `warning_counts` disagrees with the rows, one line per bucket
/// (empty when they agree): for tests and for an operator checking drift.
pub async fn count_mismatches(pool: &AnyPool) -> Result<Vec<String>, sqlx::Error> {
    type Buckets = BTreeMap<(String, String, String), (i64, i64, i64)>;
    async fn read(pool: &AnyPool, sql: &str) -> Result<Buckets, sqlx::Error> {
        let mut out = Buckets::new();
        let rows: Vec<(String, String, String, i64, i64, i64)> =
            sqlx::query_as(sql).fetch_all(pool).await?;
        for (enterprise_id, district, state, n, d, r) in rows {
            if (n, d, r) != (0, 0, 0) {
                out.insert((enterprise_id, district, state), (n, d, r));
            }
        }
        Ok(out)
    }
    let rows = read(pool, COUNTS_OF_ROWS).await?;
    let kept = read(
        pool,
        "SELECT enterprise_id, district, state, n, disposal_overdue AS d, review_overdue AS r FROM warning_counts",
    )
    .await?;
    let keys: std::collections::BTreeSet<_> = rows.keys().chain(kept.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| rows.get(*k) != kept.get(*k))
        .map(|k| format!("{k:?}: rows {:?}, counts {:?}", rows.get(k), kept.get(k)))
        .collect())
}

pub async fn get(pool: &AnyPool, scope: &Scope, id: &str) -> Result<WarningRow, Error> {
    let (clause, who) = scope.clause();
    let r = sqlx::query(&format!(
        "SELECT {COLUMNS} {FROM} WHERE {clause} AND w.id = $2"
    ))
    .bind(who)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound)?;
    Ok(row(&r)?)
}

/// One entry of a warning's timeline (R6.3: who, when, what).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: i64,
    pub what: String,
    pub who: Option<String>,
    pub detail: Vec<(String, String)>,
}

/// The warning's history, in words: opening, reminders, submissions with
/// what was submitted, returns with the comment, deadlines passed, closing.
/// Signals and timers are named by the labels the instance's own
/// definition version gives them; the current deadline is the due time of
/// its pending `deadline: true` timer.
pub async fn timeline(
    wf: &crate::backend::Workflows,
    disposal_form: &engine::compile::form::FormSpec,
    id: &str,
) -> Result<(Vec<Event>, Option<i64>), Error> {
    use engine::inspect::Event as E;
    // From the engine that runs it (the store's history, or Temporal's);
    // the definition by its hash from this database's publications.
    let (state, history) = wf.history(id).await?.ok_or(Error::NotFound)?;
    let program = wf.runtime.program(&state.hash).await?;
    let mut events = Vec::new();
    for e in engine::inspect::events(&history) {
        let at = e.at.timestamp_millis();
        let ev = |what: &str| Event {
            at,
            what: what.to_string(),
            who: None,
            detail: Vec::new(),
        };
        match e.event {
            E::Started { .. } => events.push(ev("预警生成")),
            E::Signal {
                name,
                actor,
                payload,
            } => {
                let spec = program.signals.get(&name);
                let what = spec
                    .and_then(|s| s.label.clone())
                    .unwrap_or_else(|| name.clone());
                // What was submitted, by the signal's form in this version
                // (the disposal form, the return's comment field).
                let detail = describe(
                    spec.and_then(|s| s.form.as_deref())
                        .unwrap_or(disposal_form),
                    &payload,
                );
                events.push(Event {
                    at,
                    what,
                    who: actor.name.clone().or(Some(actor.id.clone())),
                    detail,
                });
            }
            // Named as the instance's own definition version names it.
            E::TimerFired {
                name: Some(name), ..
            } => {
                if let Some(label) = program.timer_label(&name) {
                    events.push(ev(label));
                }
            }
            E::Completed {
                status: Some(status),
                ..
            } => events.push(ev(&status)),
            _ => {}
        }
    }
    let next_deadline = due_at(&state, &program);
    Ok((events, next_deadline))
}

fn describe(form: &engine::compile::form::FormSpec, payload: &Value) -> Vec<(String, String)> {
    form.fields
        .iter()
        .filter_map(|f| {
            let v = payload.get(&f.name)?;
            let text = match v {
                Value::Bool(true) => "是".to_string(),
                Value::Bool(false) => "否".to_string(),
                Value::String(s) if s.is_empty() => return None,
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join("、"),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((f.label.clone(), text))
        })
        .collect()
}

fn map_signal_error(e: engine::runtime::Error) -> Error {
    use engine::interpreter::Error as S;
    match e {
        engine::runtime::Error::Step(S::InvalidPayload(errors)) => Error::Invalid(errors),
        engine::runtime::Error::Step(S::NotAccepted { .. } | S::Ended(_)) => {
            Error::Refused("该预警当前状态不能进行此操作，请刷新页面".into())
        }
        engine::runtime::Error::Step(S::ActorNotAllowed { .. }) => Error::NotFound,
        other => Error::Runtime(other),
    }
}

/// The enterprise submits its disposal (R5.3), validated by the disposal form.
pub async fn dispose(
    wf: &crate::backend::Workflows,
    pool: &AnyPool,
    enterprise: &str,
    actor_name: &str,
    id: &str,
    payload: Value,
) -> Result<(), Error> {
    get(pool, &Scope::Enterprise(enterprise.to_string()), id).await?;
    let actor = Actor {
        role: "enterprise".into(),
        id: enterprise.to_string(),
        name: Some(actor_name.to_string()),
    };
    wf.signal(id, DISPOSE, payload, actor)
        .await
        .map_err(map_signal_error)?;
    project_after_signal(wf, id).await
}

/// The pages read the projection: on the embedded runtime bring it up to
/// date now rather than at the runtime's next round (on Temporal the
/// worker's projection hook writes it when the workflow has applied the
/// signal).
async fn project_after_signal(wf: &crate::backend::Workflows, id: &str) -> Result<(), Error> {
    if wf.is_embedded() {
        project_by_id(&wf.runtime, id).await?;
    }
    Ok(())
}

/// The district's review (R6.2): `approve` closes, `return` needs a comment.
pub async fn review(
    wf: &crate::backend::Workflows,
    pool: &AnyPool,
    district: &str,
    actor_name: &str,
    id: &str,
    approve: bool,
    comment: &str,
) -> Result<(), Error> {
    get(pool, &Scope::District(district.to_string()), id).await?;
    let actor = Actor {
        role: "district".into(),
        id: district.to_string(),
        name: Some(actor_name.to_string()),
    };
    let (name, payload) = if approve {
        ("approve", serde_json::json!({}))
    } else {
        ("return", serde_json::json!({ "comment": comment }))
    };
    wf.signal(id, name, payload, actor)
        .await
        .map_err(map_signal_error)?;
    project_after_signal(wf, id).await
}

/// A notice of an inbox (R5.2, R6.1, R6.3).
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub id: String,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub created_at: i64,
    pub read: bool,
}

#[derive(sqlx::FromRow)]
struct StoredNotice {
    id: String,
    title: String,
    body: String,
    link: Option<String>,
    created_at: i64,
    read_at: Option<i64>,
}

impl From<StoredNotice> for Notice {
    fn from(r: StoredNotice) -> Notice {
        Notice {
            id: r.id,
            title: r.title,
            body: r.body,
            link: r.link,
            created_at: r.created_at,
            read: r.read_at.is_some(),
        }
    }
}

/// The number of unread notices in an inbox.
pub async fn unread(pool: &AnyPool, kind: &str, recipient: &str) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM notices WHERE recipient_kind = $1 AND recipient_id = $2 AND read_at IS NULL",
    )
    .bind(kind)
    .bind(recipient)
    .fetch_one(pool)
    .await?)
}

/// One page of an inbox, newest first, and the number unread.
pub async fn notices(
    pool: &AnyPool,
    kind: &str,
    recipient: &str,
    page: i64,
) -> Result<(Vec<Notice>, i64, i64), Error> {
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM notices WHERE recipient_kind = $1 AND recipient_id = $2",
    )
    .bind(kind)
    .bind(recipient)
    .fetch_one(pool)
    .await?;
    let unread = unread(pool, kind, recipient).await?;
    let rows = sqlx::query(
        "SELECT id, title, body, link, created_at, read_at FROM notices WHERE recipient_kind = $1 AND recipient_id = $2 \
         ORDER BY created_at DESC, id LIMIT $3 OFFSET $4",
    )
    .bind(kind)
    .bind(recipient)
    .bind(PAGE_SIZE)
    .bind((page.max(1) - 1) * PAGE_SIZE)
    .fetch_all(pool)
    .await?;
    let list = rows
        .iter()
        .map(|r| StoredNotice::from_row(r).map(Notice::from))
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((list, total, unread))
}

/// Mark every notice of an inbox read.
pub async fn mark_read(
    pool: &AnyPool,
    kind: &str,
    recipient: &str,
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE notices SET read_at = $1 WHERE recipient_kind = $2 AND recipient_id = $3 AND read_at IS NULL",
    )
    .bind(now_ms)
    .bind(kind)
    .bind(recipient)
    .execute(pool)
    .await?;
    Ok(())
}

/// [`project`] the warning `id`, reading its committed instance and its
/// program from the runtime. Idempotent; also called right after a signal
/// so the next page shows the new state (the runtime's own call follows
/// and finds the row current). False if there is no such workflow.
pub async fn project_by_id(
    rt: &engine::runtime::Runtime<engine::store::SqlStore>,
    id: &str,
) -> Result<bool, engine::runtime::Error> {
    use engine::store::Store as _;
    let Some(instance) = rt.store().instance(id).await? else {
        return Ok(false);
    };
    let program = rt.program(&instance.definition_hash).await?;
    project(rt.store(), &instance, &program).await?;
    Ok(true)
}

/// The due time the pages show: the earliest pending timer the definition
/// marks `deadline: true` (unix ms).
pub fn due_at(
    state: &engine::interpreter::Instance,
    program: &engine::compile::program::Program,
) -> Option<i64> {
    state
        .timers
        .values()
        .filter(|t| program.timer(&t.name).is_some_and(|spec| spec.deadline))
        .map(|t| t.due_at.timestamp_millis())
        .min()
}

/// Write what `instance` shows into its projection row, unless the row
/// already shows it or a newer revision.
pub async fn project(
    store: &engine::store::SqlStore,
    instance: &engine::store::InstanceRow,
    program: &engine::compile::program::Program,
) -> Result<(), engine::store::Error> {
    project_many(store, &[(instance, program)]).await
}

/// What an instance shows in its projection row.
#[derive(Debug, PartialEq)]
struct Shown {
    state: String,
    status_label: Option<String>,
    closed_at: Option<i64>,
    due_at: Option<i64>,
    label: String,
    disposal_overdue: bool,
    review_overdue: bool,
}

impl Shown {
    fn of(
        instance: &engine::store::InstanceRow,
        program: &engine::compile::program::Program,
    ) -> Result<Shown, engine::store::Error> {
        let state = engine::inspect::state_of(instance)
            .map_err(|e| engine::store::Error::Database(sqlx::Error::Decode(e.into())))?;
        let flag = |name: &str| {
            state
                .vars
                .get(name)
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        Ok(Shown {
            state: instance.state.clone(),
            status_label: instance.status_label.clone(),
            closed_at: instance.closed_at.map(|t| t.timestamp_millis()),
            due_at: due_at(&state, program),
            label: program.state_label(&instance.state).to_string(),
            disposal_overdue: flag("disposal_overdue"),
            review_overdue: flag("review_overdue"),
        })
    }
}

/// A stored projection row, as [`PROJECTED`] reads it.
#[derive(sqlx::FromRow)]
struct StoredProjection {
    id: String,
    enterprise_id: String,
    district: String,
    state: String,
    status_label: Option<String>,
    disposal_overdue: i64,
    review_overdue: i64,
    closed_at: Option<i64>,
    due_at: Option<i64>,
    state_label: Option<String>,
    instance_revision: i64,
}

impl StoredProjection {
    /// What the row shows now.
    fn shown(&self) -> Shown {
        Shown {
            state: self.state.clone(),
            status_label: self.status_label.clone(),
            closed_at: self.closed_at,
            due_at: self.due_at,
            label: self.state_label.clone().unwrap_or_default(),
            disposal_overdue: self.disposal_overdue != 0,
            review_overdue: self.review_overdue != 0,
        }
    }

    /// What the row counts in `warning_counts`.
    fn counted(&self) -> Counted {
        Counted {
            enterprise_id: self.enterprise_id.clone(),
            district: self.district.clone(),
            state: self.state.clone(),
            disposal_overdue: self.disposal_overdue != 0,
            review_overdue: self.review_overdue != 0,
            open: self.closed_at.is_none(),
        }
    }
}

const PROJECTED: &str = "id, enterprise_id, district, state, status_label, disposal_overdue, \
     review_overdue, closed_at, due_at, state_label, instance_revision";

/// The projection rows of `ids`, by id.
async fn projected_rows<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    conn: E,
    ids: &[&str],
) -> Result<HashMap<String, StoredProjection>, sqlx::Error> {
    let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT {PROJECTED} FROM warnings WHERE id IN ({})",
        marks.join(", ")
    );
    let rows: Vec<StoredProjection> = ids
        .iter()
        .fold(sqlx::query_as(&sql), |q, id| q.bind(*id))
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
}

/// [`project`] for many instances in one write transaction (the runtime
/// tells a page of them at once: one transaction instead of one per
/// warning keeps the 05:00 run's writer free).
pub async fn project_many(
    store: &engine::store::SqlStore,
    items: &[(
        &engine::store::InstanceRow,
        &engine::compile::program::Program,
    )],
) -> Result<(), engine::store::Error> {
    let mut wanted = Vec::with_capacity(items.len());
    for (instance, program) in items {
        wanted.push((*instance, Shown::of(instance, program)?));
    }
    let stale = stale_rows(store, &wanted).await?;
    if stale.is_empty() {
        return Ok(());
    }
    let mut tx = store.pool().begin().await?;
    let mut counted = Vec::new();
    for chunk in stale.chunks(500) {
        counted.extend(write_chunk(&mut tx, chunk).await?);
    }
    if !counted.is_empty() {
        add_to_counts(&mut tx, &counted).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The instances whose projection row shows something else than `wanted`
/// (most projections find their rows already current: reads only). A
/// workflow whose row is not there (yet) has nothing to project into.
async fn stale_rows<'a>(
    store: &engine::store::SqlStore,
    wanted: &'a [(&'a engine::store::InstanceRow, Shown)],
) -> Result<Vec<(&'a engine::store::InstanceRow, &'a Shown)>, engine::store::Error> {
    let mut stale = Vec::new();
    for chunk in wanted.chunks(500) {
        let ids: Vec<&str> = chunk.iter().map(|(i, _)| i.id.as_str()).collect();
        let rows = projected_rows(store.reader(), &ids).await?;
        for (instance, shown) in chunk {
            if let Some(r) = rows.get(&instance.id) {
                if r.shown() != *shown {
                    stale.push((*instance, shown));
                }
            }
        }
    }
    Ok(stale)
}

/// Write one chunk of stale rows in `tx`: lock the rows (PostgreSQL's row
/// locks, SQLite's write lock), then write only a newer revision than each
/// shows, so projections racing never put an older state back. Returns
/// what the writes move in `warning_counts`.
async fn write_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    chunk: &[(&engine::store::InstanceRow, &Shown)],
) -> Result<Vec<(Counted, i64)>, engine::store::Error> {
    let ids: Vec<&str> = chunk.iter().map(|(i, _)| i.id.as_str()).collect();
    let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let lock = format!(
        "UPDATE warnings SET updated_at = updated_at WHERE id IN ({})",
        marks.join(", ")
    );
    ids.iter()
        .fold(sqlx::query(&lock), |q, id| q.bind(*id))
        .execute(&mut **tx)
        .await?;
    let rows = projected_rows(&mut **tx, &ids).await?;
    let mut counted = Vec::new();
    for (instance, shown) in chunk {
        let Some(old) = rows.get(&instance.id) else {
            continue;
        };
        if old.instance_revision >= instance.revision || old.shown() == **shown {
            continue;
        }
        let before = old.counted();
        let after = Counted {
            state: shown.state.clone(),
            disposal_overdue: shown.disposal_overdue,
            review_overdue: shown.review_overdue,
            open: shown.closed_at.is_none(),
            ..before.clone()
        };
        write_row(tx, instance, shown).await?;
        if before != after {
            counted.push((before, -1));
            counted.push((after, 1));
        }
    }
    Ok(counted)
}

/// Write what `instance` shows into its projection row.
async fn write_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    instance: &engine::store::InstanceRow,
    shown: &Shown,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE warnings SET state = $1, status_label = $2, disposal_overdue = $3, review_overdue = $4, \
         closed_at = $5, updated_at = $6, instance_revision = $7, due_at = $8, state_label = $9 WHERE id = $10",
    )
    .bind(&shown.state)
    .bind(&shown.status_label)
    .bind(i64::from(shown.disposal_overdue))
    .bind(i64::from(shown.review_overdue))
    .bind(shown.closed_at)
    .bind(instance.updated_at.timestamp_millis())
    .bind(instance.revision)
    .bind(shown.due_at)
    .bind(&shown.label)
    .bind(&instance.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
