//! The activities of `workflows/activities.yaml`, implemented on the
//! application's database and adapters: notices and SMS (R5.2, R5.4, R6.1,
//! R6.3) and the comparison run (R3.4, R4, R5.1).
//!
//! Every write is keyed by the call's idempotency key, so an activity the
//! runtime repeats after a crash changes nothing the second time. Business
//! decisions stay in `workflows/` and `rules/`; this module only carries
//! them out.

use crate::adapters::health::Part;
use crate::adapters::sms::Message;
use crate::comparison::{self, Counts, Judge};
use crate::domain::day_of;
pub use crate::services::Services;
use crate::services::{db, store_err};
use chrono::{DateTime, Utc};
use engine::rules::Rules;
use engine::runtime::{Activities, ActivityCall, ActivityError};
use engine::store::sql::{insert_many, Arg};
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::AnyPool;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// A text argument the workflow must give; its absence is an error naming
/// the activity and the argument (not an empty text).
fn arg<'a>(call: &'a ActivityCall, name: &str) -> Result<&'a str, ActivityError> {
    call.text_arg(name)
}

/// A text the workflow must give (a message's title or body): its absence
/// is a definition's mistake, not worth retrying.
fn required<'a>(call: &'a ActivityCall, name: &str) -> Result<&'a str, ActivityError> {
    match call.args[name].as_str() {
        Some(t) if !t.trim().is_empty() => Ok(t),
        _ => Err(ActivityError::Permanent(format!(
            "{}：流程定义未给出参数 `{name}`（消息的标题与正文写在 workflows/ 中）",
            call.name
        ))),
    }
}

/// The registry for the runtime.
pub fn registry(s: Arc<Services>) -> Activities {
    let a = s.clone();
    let legacy = s.clone();
    let b = s.clone();
    let c = s.clone();
    let d = s.clone();
    let e = s.clone();
    let f = s.clone();
    let g = s.clone();
    let (h, i) = (s.clone(), s);
    Activities::new()
        .register("notify_enterprise", move |call| {
            notify_enterprise(a.clone(), call)
        })
        .register("notify_district", move |call| {
            notice(b.clone(), call, "district")
        })
        .register("notify_city", move |call| notice(c.clone(), call, "city"))
        .register("notify_district_digest", move |call| {
            digest(d.clone(), call)
        })
        .register("run_comparison", move |call| {
            run_comparison(e.clone(), call)
        })
        .projection("warning", WarningProjection(f))
        // Warnings started on a definition from before the projection was
        // the runtime's still call this activity; it does the same.
        .register("record_warning_event", move |call| {
            legacy_projection(legacy.clone(), call)
        })
        .register("warnings_to_open", move |call| {
            warnings_to_open(g.clone(), call)
        })
        .register("purge_personal_data", move |call| {
            crate::retention::purge_personal_data(h.clone(), call)
        })
        .register("reclaim_storage", move |call| {
            crate::retention::reclaim_storage(i.clone(), call)
        })
}

async fn insert_notice(
    s: &Services,
    id: &str,
    kind: &str,
    recipient: &str,
    title: &str,
    body: &str,
    link: Option<&str>,
) -> Result<(), ActivityError> {
    sqlx::query(
        "INSERT INTO notices (id, recipient_kind, recipient_id, title, body, link, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(recipient)
    .bind(title)
    .bind(body)
    .bind(link)
    .bind(s.clock.now().timestamp_millis())
    .execute(&s.pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// SMS to the enterprise's liaison officer (or its contact) and a notice.
async fn notify_enterprise(s: Arc<Services>, call: ActivityCall) -> Result<Value, ActivityError> {
    let enterprise = arg(&call, "enterprise_id")?;
    let (contact, liaison): (String, Option<String>) =
        sqlx::query_as("SELECT contact_mobile, liaison_mobile FROM enterprises WHERE id = $1")
            .bind(enterprise)
            .fetch_optional(&s.reader)
            .await
            .map_err(db)?
            .ok_or_else(|| ActivityError::Permanent(format!("no enterprise {enterprise}")))?;
    let phone = liaison.unwrap_or(contact);
    let template = arg(&call, "template")?;
    // The texts are the workflow's (workflows/warning.yaml), the same for
    // the notice and the SMS.
    let (title, body) = (required(&call, "title")?, required(&call, "text")?);
    let link = format!("/warnings/{}", arg(&call, "warning_id")?);
    insert_notice(
        &s,
        &call.idempotency_key,
        "enterprise",
        enterprise,
        title,
        body,
        Some(&link),
    )
    .await?;
    let to = crate::domain::Mobile::parse(&phone)
        .map(|m| m.masked())
        .unwrap_or_else(|_| "***".into());
    let m = Message {
        phone,
        template: template.to_string(),
        params: call.args.clone(),
        idempotency_key: call.idempotency_key.clone(),
        secret: Vec::new(),
    };
    s.sms.send(m).await.map_err(|e| match e {
        crate::adapters::sms::Error::Rejected(r) => ActivityError::Permanent(r),
        crate::adapters::sms::Error::Unavailable(r) => ActivityError::Retryable(r),
    })?;
    // What the history keeps of the hand-over (the operator's console shows
    // it): to whom (masked), under which key, and the gateway's answer — a
    // refusal is the attempt's error instead.
    Ok(json!({"to": to, "idempotency_key": call.idempotency_key, "gateway": "accepted"}))
}

async fn notice(s: Arc<Services>, call: ActivityCall, kind: &str) -> Result<Value, ActivityError> {
    let recipient = if kind == "city" {
        arg(&call, "target")?.to_string()
    } else {
        arg(&call, "district")?.to_string()
    };
    let link = format!("/warnings/{}", arg(&call, "warning_id")?);
    insert_notice(
        &s,
        &call.idempotency_key,
        kind,
        &recipient,
        required(&call, "title")?,
        required(&call, "text")?,
        Some(&link),
    )
    .await?;
    Ok(Value::Null)
}

/// One notice per affected district per run, with its count (R6.1): the
/// workflow's `text` with `{count}` replaced.
async fn digest(s: Arc<Services>, call: ActivityCall) -> Result<Value, ActivityError> {
    let Some(per) = call.args["per_district"].as_object() else {
        return Ok(Value::Null);
    };
    let (title, text) = (required(&call, "title")?, required(&call, "text")?);
    for (district, n) in per {
        let id = format!("{}/{district}", call.idempotency_key);
        let body = text.replace("{count}", &n.to_string());
        insert_notice(
            &s,
            &id,
            "district",
            district,
            title,
            &body,
            Some("/district"),
        )
        .await?;
    }
    Ok(Value::Null)
}

/// The projection `warning` (workflows/warning.yaml `projection: warning`):
/// the runtime tells it after every committed step of a warning's
/// workflow, from an outbox row written in that step's transaction, a page
/// of warnings at a time (one write transaction per page).
struct WarningProjection(Arc<Services>);

impl engine::runtime::Projection for WarningProjection {
    fn project(
        &self,
        call: engine::runtime::ProjectionCall,
    ) -> engine::runtime::activity::BoxFuture<Result<(), String>> {
        self.project_many(vec![call])
    }

    fn project_many(
        &self,
        calls: Vec<engine::runtime::ProjectionCall>,
    ) -> engine::runtime::activity::BoxFuture<Result<(), String>> {
        let s = self.0.clone();
        Box::pin(async move {
            let items: Vec<_> = calls
                .iter()
                .map(|c| (&c.instance, c.program.as_ref()))
                .collect();
            crate::warnings::project_many(&s.store, &items)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// `record_warning_event` of definitions from before `projection:`.
async fn legacy_projection(s: Arc<Services>, call: ActivityCall) -> Result<Value, ActivityError> {
    use engine::store::Store as _;
    let id = arg(&call, "warning_id")?;
    let instance = s
        .store
        .instance(id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ActivityError::Permanent(format!("no workflow for warning {id}")))?;
    let program = crate::services::compile_stored(&s.store, &instance.definition_hash).await?;
    crate::warnings::project(&s.store, &instance, &program)
        .await
        .map_err(store_err)?;
    Ok(Value::Null)
}

/// The staff of a run, office address by office address.
struct Roster {
    sites: Vec<Site>,
    /// Staff ids in run order: address by address, by id within one.
    staff: Vec<String>,
    /// Their id numbers in the same order: what the health commission is asked.
    ids: Arc<Vec<String>>,
}

/// One office address with staff.
struct Site {
    id: String,
    enterprise_id: String,
    district: String,
    /// Index in `Roster::staff` of its first person; its persons end where
    /// the next site's begin.
    first: usize,
}

impl Roster {
    /// Index of the site of person `i`.
    fn site_of(&self, i: usize) -> usize {
        self.sites.partition_point(|s| s.first <= i) - 1
    }
}

/// Separators of the staff list aggregated per address: control characters,
/// which neither generated staff ids nor checked id numbers contain.
const FIELD_SEP: &str = "\u{1f}";
const PERSON_SEP: &str = "\u{1e}";

/// An address of the roster with its staff (`id FIELD_SEP id_number`,
/// joined by `PERSON_SEP`).
#[derive(sqlx::FromRow)]
struct RosterRow {
    address_id: String,
    enterprise_id: String,
    district: String,
    staff: String,
}

/// Everyone to compare (R2.5: deleted persons are not), read as one row per
/// address with its staff aggregated: a million rows through sqlx's worker
/// thread cost several seconds, 25,000 cost a fraction of one. Staff are
/// grouped before the joins, so those run once per address, not per person.
/// `string_agg(… ORDER BY …)` is the same in PostgreSQL and SQLite ≥ 3.44.
async fn load_roster(pool: &AnyPool) -> Result<Roster, ActivityError> {
    let rows: Vec<RosterRow> = sqlx::query_as(
        "SELECT g.address_id, a.enterprise_id, e.district, g.staff \
         FROM (SELECT address_id, string_agg(id || $1 || id_number, $2 ORDER BY id) AS staff \
               FROM staff WHERE deleted_at IS NULL GROUP BY address_id) g \
         JOIN addresses a ON a.id = g.address_id JOIN enterprises e ON e.id = a.enterprise_id \
         ORDER BY g.address_id",
    )
    .bind(FIELD_SEP)
    .bind(PERSON_SEP)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut roster = Roster {
        sites: Vec::with_capacity(rows.len()),
        staff: Vec::new(),
        ids: Arc::default(),
    };
    let mut ids = Vec::new();
    for r in rows {
        roster.sites.push(Site {
            enterprise_id: r.enterprise_id,
            district: r.district,
            first: roster.staff.len(),
            id: r.address_id,
        });
        for person in r.staff.split(PERSON_SEP) {
            let (staff_id, id_number) = person.split_once(FIELD_SEP).ok_or_else(|| {
                ActivityError::Permanent(format!("unreadable staff entry {person:?}"))
            })?;
            roster.staff.push(staff_id.to_string());
            ids.push(id_number.to_string());
        }
    }
    roster.ids = Arc::new(ids);
    Ok(roster)
}

/// What judging everyone gives, per site of the roster.
struct Tally {
    counts: Vec<Counts>,
    permille: Vec<Option<u64>>,
    /// `comparison_persons.data` of each site.
    data: Vec<String>,
    /// (person index, reason, evidence) in run order.
    anomalies: Vec<(usize, String, String)>,
    unknown: usize,
    /// How many persons were judged (all of them unless the answer stopped short).
    judged: usize,
    /// Calls of `statistics::classify` (once per distinct profile).
    classify_calls: usize,
}

/// Judge the parts of the health commission's answer as they arrive (on a
/// thread of its own while later parts are still being fetched).
fn judge_parts(
    rules: &engine::rules::Rules,
    roster: &Roster,
    as_of: DateTime<Utc>,
    windows: Windows,
    mut parts: tokio::sync::mpsc::Receiver<Part>,
) -> Result<Tally, comparison::Error> {
    let n = roster.sites.len();
    let mut judge = Judge::new(rules, as_of, chrono::Duration::hours(windows.count.into()))
        .with_nat_window(chrono::Duration::hours(windows.nat.into()));
    let mut counts = vec![Counts::default(); n];
    let mut data: Vec<Vec<u8>> = vec![Vec::new(); n];
    let mut anomalies = Vec::new();
    let mut unknown = 0;
    let mut judged = 0;
    let mut reasons = Vec::new();
    let mut site = 0;
    while let Some(part) = parts.blocking_recv() {
        if part.start != judged {
            // An adapter answering out of order: stop, the run will fail.
            break;
        }
        for (k, record) in part.records.iter().enumerate() {
            let i = part.start + k;
            let Some(staff_id) = roster.staff.get(i) else {
                break;
            };
            while site + 1 < n && roster.sites[site + 1].first <= i {
                site += 1;
            }
            judge.judge(&mut counts[site], record.as_ref(), &mut reasons)?;
            comparison::write_judged(
                &mut data[site],
                staff_id,
                &roster.ids[i],
                record.as_ref(),
                &reasons,
            );
            unknown += usize::from(record.is_none());
            anomalies.extend(
                reasons
                    .drain(..)
                    .zip(judge.evidence())
                    .map(|(r, e)| (i, r, e.clone())),
            );
            judged += 1;
        }
    }
    let permille = counts
        .iter()
        .map(|c| judge.vaccination_permille(c))
        .collect::<Result<_, _>>()?;
    let data = data
        .into_iter()
        .map(|mut d| {
            comparison::close_judged(&mut d);
            String::from_utf8(d).expect("serde_json writes UTF-8")
        })
        .collect();
    let classify_calls = judge.classify_calls();
    Ok(Tally {
        counts,
        permille,
        data,
        anomalies,
        unknown,
        judged,
        classify_calls,
    })
}

/// The look-back windows of a run, in hours, as `workflows/comparison.yaml`
/// gives them to `run_comparison` (`count_window`, `nat_window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// The counts of the daily record (R4.2, R4.5).
    pub count: u32,
    /// The reports rules/anomaly.rhai sees.
    pub nat: u32,
}

impl Windows {
    /// From the call's arguments; a missing or unreadable one is the
    /// definition's mistake (permanent).
    pub fn of(call: &ActivityCall) -> Result<Windows, ActivityError> {
        let get = |name: &str| {
            hours(&call.args[name]).map_err(|e| {
                ActivityError::Permanent(format!("run_comparison 的参数 `{name}`：{e}"))
            })
        };
        Ok(Windows {
            count: get("count_window")?,
            nat: get("nat_window")?,
        })
    }

    /// What the health commission is asked for (`window_hours`): the longer.
    pub fn asked_hours(&self) -> u32 {
        self.count.max(self.nat)
    }
}

/// Every `run_comparison` call of the definitions gives readable windows
/// (checked at start-up and by `validate`, so a mistyped `nat_window` is
/// found before the 05:00 run). Windows computed by an expression are
/// checked when the run reads them.
pub fn check_windows(bundle: &engine::Bundle) -> Result<(), String> {
    declared_windows(bundle).map(drop)
}

/// The windows the definitions give `run_comparison` (the first call with
/// literal windows; None when every call computes them), each call checked.
/// The back-test reads a candidate's windows here, as the run would.
pub fn declared_windows(bundle: &engine::Bundle) -> Result<Option<Windows>, String> {
    use engine::compile::program::Template;
    let mut found = None;
    for p in bundle.workflows.values() {
        for a in p.activities.iter().filter(|a| a.name == "run_comparison") {
            let Template::Map(entries) = &a.args else {
                continue;
            };
            let mut literal = Vec::new();
            for name in ["count_window", "nat_window"] {
                match entries.iter().find(|(k, _)| k == name) {
                    None => {
                        return Err(format!(
                            "workflows/{}.yaml：run_comparison 缺少参数 `{name}`（如 24h）",
                            p.name
                        ))
                    }
                    Some((_, Template::Literal(v))) => literal.push(hours(v).map_err(|e| {
                        format!(
                            "workflows/{}.yaml：run_comparison 的参数 `{name}`：{e}",
                            p.name
                        )
                    })?),
                    Some(_) => {}
                }
            }
            if let (&[count, nat], None) = (&literal[..], found) {
                found = Some(Windows { count, nat });
            }
        }
    }
    Ok(found)
}

/// Whole hours of a window written `24h` or `2d` (at most 30 days).
pub fn hours(v: &Value) -> Result<u32, String> {
    let text = v.as_str().map(str::trim).unwrap_or_default();
    let parsed = if let Some(h) = text.strip_suffix('h') {
        h.trim().parse::<u32>().ok()
    } else if let Some(d) = text.strip_suffix('d') {
        d.trim().parse::<u32>().ok().and_then(|d| d.checked_mul(24))
    } else {
        None
    };
    match parsed {
        Some(h) if (1..=720).contains(&h) => Ok(h),
        _ => Err(format!(
            "应写作整小时或整天数（1h 至 30d），如 24h 或 2d，而不是 {v}"
        )),
    }
}

/// The comparison run: fetch, count per address, fill the day's records,
/// evaluate anomalies, open warnings not already open (R5.1). Returns what
/// workflows/comparison.yaml expects. Repeated with the same key, it returns
/// the stored result. Everything is written in one transaction at the end:
/// a run that fails leaves nothing behind.
async fn run_comparison(s: Arc<Services>, call: ActivityCall) -> Result<Value, ActivityError> {
    let run_id = call.idempotency_key.clone();
    if let Some(result) = stored_result(&s.pool, &run_id).await? {
        return Ok(result);
    }
    let rules = s.rules_for(&call).await?;
    comparison::check_rules(&rules).map_err(ActivityError::Permanent)?;
    let as_of: DateTime<Utc> = call.args["as_of"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| s.clock.now());
    let windows = Windows::of(&call)?;
    let started = std::time::Instant::now();
    let roster = Arc::new(load_roster(&s.pool).await?);
    let loaded = started.elapsed();
    let mut tally = fetch_and_judge(&s, &rules, &roster, as_of, windows).await?;
    let fetched = started.elapsed();

    let run = Run {
        id: &run_id,
        as_of,
        now: s.clock.now().timestamp_millis(),
        windows,
        roster: &roster,
    };
    let mut tx = s.pool.begin().await.map_err(db)?;
    run.fill_records(&mut tx, &tally).await?;
    let number = run.insert_run(&mut tx, &tally).await?;
    run.keep_persons(&mut tx, std::mem::take(&mut tally.data))
        .await?;
    let opened = run.open_warnings(&mut tx, &rules, &tally, number).await?;
    let result = run.finish(&mut tx, &tally, number, opened).await?;
    tx.commit().await.map_err(db)?;
    tracing::info!(
        target: "server::comparison",
        run = %run_id,
        persons = roster.staff.len(),
        load_s = loaded.as_secs_f64(),
        fetch_and_judge_s = (fetched - loaded).as_secs_f64(),
        classify_calls = tally.classify_calls,
        write_s = (started.elapsed() - fetched).as_secs_f64(),
        "comparison run done"
    );
    Ok(result)
}

/// The result a finished run with this key stored, if any.
async fn stored_result(pool: &AnyPool, run_id: &str) -> Result<Option<Value>, ActivityError> {
    let Some(text) = sqlx::query_scalar::<_, String>(
        "SELECT result FROM comparison_runs WHERE id = $1 AND result IS NOT NULL",
    )
    .bind(run_id)
    .fetch_optional(pool)
    .await
    .map_err(db)?
    else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ActivityError::Permanent(e.to_string()))
}

/// Fetch and judge in a pipeline: part k is judged while later parts are
/// on their way. Everyone must be judged: no data, no numbers (the failure
/// goes back to the workflow, retried, then 比对失败).
async fn fetch_and_judge(
    s: &Services,
    rules: &Arc<Rules>,
    roster: &Arc<Roster>,
    as_of: DateTime<Utc>,
    windows: Windows,
) -> Result<Tally, ActivityError> {
    let mut parts = s
        .health
        .query_parts(as_of, windows.asked_hours(), roster.ids.clone());
    let (to_judge, judging) = tokio::sync::mpsc::channel::<Part>(4);
    let judged = {
        let rules = rules.clone();
        let roster = roster.clone();
        tokio::task::spawn_blocking(move || judge_parts(&rules, &roster, as_of, windows, judging))
    };
    let mut fetch_error = None;
    while let Some(part) = parts.next().await {
        match part {
            Ok(p) => {
                if to_judge.send(p).await.is_err() {
                    break; // judging stopped on an error, reported below
                }
            }
            Err(e) => {
                fetch_error = Some(e);
                break;
            }
        }
    }
    drop((to_judge, parts));
    let tally = judged
        .await
        .map_err(|e| ActivityError::Permanent(format!("judging: {e}")))?;
    if let Some(e) = fetch_error {
        return Err(match e.is_retryable() {
            true => ActivityError::Retryable(e.to_string()),
            false => ActivityError::Permanent(e.to_string()),
        });
    }
    let tally = tally.map_err(|e| ActivityError::Permanent(e.to_string()))?;
    if tally.judged != roster.staff.len() {
        return Err(ActivityError::Retryable(format!(
            "卫健委接口只返回了{}人中{}人的结果",
            roster.staff.len(),
            tally.judged
        )));
    }
    Ok(tally)
}

/// One run being written: its key, time, windows and staff.
struct Run<'a> {
    id: &'a str,
    as_of: DateTime<Utc>,
    /// When it is written (ms).
    now: i64,
    windows: Windows,
    roster: &'a Roster,
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

impl Run<'_> {
    /// R3.4: the first run of the day creates each address's record; if the
    /// enterprise created it earlier, the same record gets the numbers.
    async fn fill_records(&self, tx: &mut Tx, tally: &Tally) -> Result<(), ActivityError> {
        let (run_id, now) = (self.id, self.now);
        let day = day_of(self.as_of);
        let mut records = Vec::with_capacity(self.roster.sites.len());
        let sites = self
            .roster
            .sites
            .iter()
            .zip(&tally.counts)
            .zip(&tally.permille);
        for ((site, counts), permille) in sites {
            let mut computed = serde_json::to_value(counts).expect("serialisable");
            computed["vaccination_permille"] = json!(permille);
            // The counts' look-back, as the definition gave it (the page says it).
            computed["window_hours"] = json!(self.windows.count);
            records.push(vec![
                Arg::T(Some(format!("{}/{day}", site.id))),
                Arg::T(Some(site.enterprise_id.clone())),
                Arg::T(Some(site.id.clone())),
                Arg::T(Some(day.clone())),
                Arg::T(Some("{}".into())),
                Arg::T(Some(computed.to_string())),
                Arg::I(Some(self.as_of.timestamp_millis())),
                Arg::T(Some(run_id.to_string())),
                Arg::T(Some("comparison".into())),
                Arg::I(Some(now)),
                Arg::I(Some(now)),
            ]);
        }
        insert_many(
            tx,
            "daily_records",
            "id, enterprise_id, address_id, day, fields, computed, computed_at, run_id, created_by, created_at, updated_at",
            records,
            "ON CONFLICT (address_id, day) DO UPDATE SET computed = excluded.computed, computed_at = excluded.computed_at, \
             run_id = excluded.run_id, updated_at = excluded.updated_at",
        )
        .await
        .map_err(store_err)
    }

    /// The run row, first: the per-person data refers to it. Runs are
    /// numbered in the order they are written (a unique column: two runs
    /// racing for one number on PostgreSQL make one fail and retry), and the
    /// run's warnings are numbered within it, so warning ids never collide.
    async fn insert_run(&self, tx: &mut Tx, tally: &Tally) -> Result<i64, ActivityError> {
        sqlx::query_scalar(
            "INSERT INTO comparison_runs (id, slot, as_of, started_at, status, persons, unknown, anomalies, new_warnings, number) \
             VALUES ($1, NULL, $2, $3, 'running', $4, $5, $6, 0, \
                     (SELECT COALESCE(MAX(number), 0) + 1 FROM comparison_runs)) RETURNING number",
        )
        .bind(self.id)
        .bind(self.as_of.timestamp_millis())
        .bind(self.now)
        .bind(self.roster.staff.len() as i64)
        .bind(tally.unknown as i64)
        .bind(tally.anomalies.len() as i64)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)
    }

    /// The data each person was judged on, for audits and dry runs of
    /// changed rules (R8.2): one row per address (comparison::read_judged).
    async fn keep_persons(&self, tx: &mut Tx, data: Vec<String>) -> Result<(), ActivityError> {
        let roster = self.roster;
        let rows = roster
            .sites
            .iter()
            .zip(data)
            .enumerate()
            .map(|(k, (site, data))| {
                let persons = roster
                    .sites
                    .get(k + 1)
                    .map_or(roster.staff.len(), |n| n.first)
                    - site.first;
                (site.id.clone(), persons as i64, data)
            });
        insert_comparison_persons(tx, self.id, rows)
            .await
            .map_err(store_err)
    }

    /// Open a warning for each anomaly whose key has no open warning and
    /// no closed one on the same evidence (R5.1), once per key. Returns the
    /// new warnings per district.
    async fn open_warnings(
        &self,
        tx: &mut Tx,
        rules: &Rules,
        tally: &Tally,
        number: i64,
    ) -> Result<BTreeMap<String, u64>, ActivityError> {
        let open: HashSet<String> = sqlx::query_scalar::<_, String>(
            "SELECT dedupe_key FROM warnings WHERE closed_at IS NULL",
        )
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?
        .into_iter()
        .collect();
        let closed = closed_with_evidence(tx).await?;
        let keyed = warning_keys(rules, self.roster, &tally.anomalies)?;
        mark_evidence_gone(tx, &closed, &keyed, self.now).await?;
        let names = self.names(tx, &tally.anomalies).await?;
        let mut new = NewWarnings::default();
        for (i, reason, evidence, key) in &keyed {
            let same_evidence = closed.get(key).is_some_and(|list| {
                list.iter()
                    .any(|(_, e)| e.as_deref() == Some(evidence.as_str()))
            });
            if open.contains(key) || same_evidence || !new.keys.insert(key.clone()) {
                continue;
            }
            self.new_warning(&mut new, number, *i, reason, evidence, key, &names);
        }
        crate::warnings::add_to_counts(tx, &new.counted)
            .await
            .map_err(db)?;
        insert_many(
            tx,
            "warnings",
            "id, enterprise_id, district, address_id, staff_id, person_name, person_masked, reason, dedupe_key, evidence, run_id, \
             state, disposal_overdue, review_overdue, opened_at, updated_at",
            new.rows,
            "",
        )
        .await
        .map_err(store_err)?;
        Ok(new.per_district)
    }

    /// Names only of the anomalous persons, by staff id.
    async fn names(
        &self,
        tx: &mut Tx,
        anomalies: &[(usize, String, String)],
    ) -> Result<HashMap<String, String>, ActivityError> {
        let mut names: HashMap<String, String> = HashMap::new();
        let mut flagged: Vec<&str> = anomalies
            .iter()
            .map(|(i, _, _)| self.roster.staff[*i].as_str())
            .collect();
        flagged.dedup();
        for chunk in flagged.chunks(500) {
            let marks = (1..=chunk.len())
                .map(|k| format!("${k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT id, name FROM staff WHERE id IN ({marks})");
            let mut q = sqlx::query_as::<_, (String, String)>(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            names.extend(q.fetch_all(&mut **tx).await.map_err(db)?);
        }
        Ok(names)
    }

    /// One new warning: its row (numbered within the run), its district's
    /// count, and its place in the warning counts.
    #[allow(clippy::too_many_arguments)]
    fn new_warning(
        &self,
        new: &mut NewWarnings,
        number: i64,
        i: usize,
        reason: &str,
        evidence: &str,
        key: &str,
        names: &HashMap<String, String>,
    ) {
        let roster = self.roster;
        let staff_id = &roster.staff[i];
        let site = &roster.sites[roster.site_of(i)];
        let name = names.get(staff_id).cloned().unwrap_or_default();
        let masked = crate::domain::IdNumber::parse(&roster.ids[i])
            .map(|n| n.masked())
            .unwrap_or_else(|_| "***".into());
        let warning_id = format!("{number}-{}", new.rows.len() + 1);
        new.rows.push(vec![
            Arg::T(Some(warning_id)),
            Arg::T(Some(site.enterprise_id.clone())),
            Arg::T(Some(site.district.clone())),
            Arg::T(Some(site.id.clone())),
            Arg::T(Some(staff_id.clone())),
            Arg::T(Some(name)),
            Arg::T(Some(masked)),
            Arg::T(Some(reason.to_string())),
            Arg::T(Some(key.to_string())),
            Arg::T(Some(evidence.to_string())),
            Arg::T(Some(self.id.to_string())),
            Arg::T(Some("awaiting_disposal".into())),
            Arg::I(Some(0)),
            Arg::I(Some(0)),
            Arg::I(Some(self.now)),
            Arg::I(Some(self.now)),
        ]);
        *new.per_district.entry(site.district.clone()).or_default() += 1;
        new.counted.push((
            crate::warnings::Counted {
                enterprise_id: site.enterprise_id.clone(),
                district: site.district.clone(),
                state: "awaiting_disposal".into(),
                disposal_overdue: false,
                review_overdue: false,
                open: true,
            },
            1,
        ));
    }

    /// The run's result (what the workflow reads), stored with the run row.
    async fn finish(
        &self,
        tx: &mut Tx,
        tally: &Tally,
        number: i64,
        per_district: BTreeMap<String, u64>,
    ) -> Result<Value, ActivityError> {
        let new_warnings: u64 = per_district.values().sum();
        let summary = json!({
            "persons": self.roster.staff.len(), "unknown": tally.unknown, "anomalies": tally.anomalies.len(),
            "new_warnings": new_warnings, "addresses": self.roster.sites.len(),
        });
        let result = json!({
            "run_id": self.id, "number": number, "as_of": self.as_of.to_rfc3339(),
            "window_hours": self.windows.asked_hours(), "count_window_hours": self.windows.count,
            "nat_window_hours": self.windows.nat,
            "per_district": per_district, "summary": summary,
        });
        sqlx::query("UPDATE comparison_runs SET finished_at = $1, status = 'done', new_warnings = $2, result = $3 WHERE id = $4")
            .bind(self.now)
            .bind(new_warnings as i64)
            .bind(result.to_string())
            .bind(self.id)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(result)
    }
}

/// The warnings a run opens, as they are found.
#[derive(Default)]
struct NewWarnings {
    rows: Vec<Vec<Arg>>,
    per_district: BTreeMap<String, u64>,
    counted: Vec<(crate::warnings::Counted, i64)>,
    /// Dedupe keys already opened by this run.
    keys: HashSet<String>,
}

/// Warnings closed by review whose evidence may still be seen (R5.1), by
/// dedupe key: (id, evidence). Few, since each stops counting once a run no
/// longer finds it.
type ClosedEvidence = HashMap<String, Vec<(String, Option<String>)>>;

async fn closed_with_evidence(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<ClosedEvidence, ActivityError> {
    let mut closed = ClosedEvidence::new();
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, dedupe_key, evidence FROM warnings WHERE closed_at IS NOT NULL AND evidence_gone = 0",
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    for (id, dedupe_key, evidence) in rows {
        closed.entry(dedupe_key).or_default().push((id, evidence));
    }
    Ok(closed)
}

/// Each anomaly with its key from `rules/dedupe.rhai` `warning_key`:
/// (person index, reason, evidence, key).
fn warning_keys<'a>(
    rules: &Rules,
    roster: &Roster,
    anomalies: &'a [(usize, String, String)],
) -> Result<Vec<(usize, &'a String, &'a String, String)>, ActivityError> {
    anomalies
        .iter()
        .map(|(i, reason, evidence)| {
            let key = rules
                .call(
                    "dedupe",
                    "warning_key",
                    &[json!(roster.staff[*i]), json!(reason)],
                )
                .map_err(|e| ActivityError::Permanent(e.to_string()))?;
            let key = key.as_str().map(str::to_string).ok_or_else(|| {
                ActivityError::Permanent(format!(
                    "rules/dedupe.rhai: warning_key gave {key}, expected text"
                ))
            })?;
            Ok((*i, reason, evidence, key))
        })
        .collect()
}

/// A closed warning's evidence is gone once this run finds its person
/// without it (not found at all, or on other evidence): from then on a
/// finding of that reason is new evidence.
async fn mark_evidence_gone(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    closed: &ClosedEvidence,
    keyed: &[(usize, &String, &String, String)],
    now: i64,
) -> Result<(), ActivityError> {
    let still: HashSet<(&str, &str)> = keyed
        .iter()
        .map(|(_, _, evidence, key)| (key.as_str(), evidence.as_str()))
        .collect();
    let gone: Vec<&str> = closed
        .iter()
        .flat_map(|(key, list)| {
            list.iter()
                .filter(|(_, evidence)| {
                    !still.contains(&(key.as_str(), evidence.as_deref().unwrap_or_default()))
                })
                .map(|(id, _)| id.as_str())
        })
        .collect();
    for chunk in gone.chunks(500) {
        let marks = (2..chunk.len() + 2)
            .map(|k| format!("${k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("UPDATE warnings SET evidence_gone = 1, updated_at = $1 WHERE id IN ({marks})");
        let mut q = sqlx::query(&sql).bind(now);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut **tx).await.map_err(db)?;
    }
    Ok(())
}

/// Largest page `warnings_to_open` serves: a page becomes one rhai value
/// in the workflow, which the sandbox bounds (10,000 map entries in all).
const MAX_PAGE: i64 = 1000;

/// A page of a run's new warnings, in id order after `after` (the last one
/// already started; "" for the first page): what `workflows/comparison.yaml`
/// starts a warning workflow for. `last` is the page's last id (null when
/// the page is empty). Reads only, so a repeat gives the same page.
async fn warnings_to_open(s: Arc<Services>, call: ActivityCall) -> Result<Value, ActivityError> {
    let run_id = arg(&call, "run_id")?;
    let limit = call.args["limit"]
        .as_i64()
        .filter(|l| (1..=MAX_PAGE).contains(l))
        .ok_or_else(|| {
            ActivityError::Permanent(format!(
                "warnings_to_open: `limit` must be a whole number from 1 to {MAX_PAGE}, got {}",
                call.args["limit"]
            ))
        })?;
    let rows: Vec<ToOpen> = sqlx::query_as(
        "SELECT w.id AS warning_id, w.enterprise_id, e.name AS enterprise_name, w.district, d.name AS district_name, \
                w.person_masked AS person_id, w.person_name, w.reason \
         FROM warnings w JOIN enterprises e ON e.id = w.enterprise_id JOIN districts d ON d.code = w.district \
         WHERE w.run_id = $1 AND w.id > $2 ORDER BY w.id LIMIT $3",
    )
    .bind(run_id)
    .bind(arg(&call, "after")?)
    .bind(limit)
    .fetch_all(&s.pool)
    .await
    .map_err(db)?;
    let last = rows.last().map(|w| w.warning_id.clone());
    Ok(json!({ "items": rows, "last": last }))
}

/// A warning of the run to open, as the workflow's page items.
#[derive(sqlx::FromRow, serde::Serialize)]
struct ToOpen {
    warning_id: String,
    enterprise_id: String,
    enterprise_name: String,
    district: String,
    district_name: String,
    person_id: String,
    person_name: String,
    reason: String,
}

/// Write a run's `comparison_persons`: one row per (address id, persons
/// judged there, the data they were judged on), in the caller's
/// transaction.
pub async fn insert_comparison_persons(
    tx: &mut sqlx::AnyConnection,
    run_id: &str,
    rows: impl Iterator<Item = (String, i64, String)>,
) -> engine::store::Result<()> {
    let rows = rows
        .map(|(address, persons, data)| {
            vec![
                Arg::T(Some(run_id.to_string())),
                Arg::T(Some(address)),
                Arg::I(Some(persons)),
                Arg::T(Some(data)),
            ]
        })
        .collect();
    insert_many(
        tx,
        "comparison_persons",
        "run_id, address_id, persons, data",
        rows,
        "",
    )
    .await
}
