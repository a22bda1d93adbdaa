//! "Why was this person warned?" (issue 12): given an ID number and a day,
//! each comparison run of that day that judged the person — the health data
//! it used (the run's stored per-person data, not a new query), the
//! definition version and hash the run executed (its rules included), the
//! reasons the anomaly rule returned — and each warning that run opened for
//! the person with its evidence, everything that happened to it and the SMS
//! handed over for it.
//!
//! Scoped: operators see everyone, a district only persons of enterprises
//! in its district (anyone else is "not found"). Reads only.

use crate::comparison::{read_judged, HealthCode, NatResult};
use crate::warnings::Event;
use chrono::NaiveDate;
use engine::store::Store;
use serde::Serialize;
use sqlx::{AnyPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("该日期没有此人的比对记录，或无权查看")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] engine::store::Error),
    #[error(transparent)]
    Warnings(#[from] crate::warnings::Error),
    #[error("比对数据无法读取：{0}")]
    Corrupt(String),
}

/// Who may ask.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    District(String),
}

/// One staff record with that ID number (a person may work for several
/// enterprises) and what the day's runs found.
#[derive(Debug, Serialize)]
pub struct Person {
    pub staff_id: String,
    pub name: String,
    pub masked: String,
    pub enterprise_name: String,
    pub district: String,
    pub address: Option<String>,
    pub runs: Vec<Run>,
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub run_id: String,
    pub instance_id: String,
    pub as_of: i64,
    /// The hours of health data the run asked for (its `window_hours`;
    /// None for runs from before it was recorded, which asked for 24).
    pub window_hours: Option<i64>,
    pub definition_version: Option<i64>,
    pub definition_hash: Option<String>,
    /// None: unknown to the health commission at the time.
    pub health: Option<Health>,
    pub reasons: Vec<String>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub health_code: &'static str,
    pub doses: u32,
    pub completed: bool,
    /// (sampled at, result) of the reports in the run's window.
    pub reports: Vec<(i64, &'static str)>,
}

#[derive(Debug, Serialize)]
pub struct Warning {
    pub id: String,
    pub reason: String,
    pub evidence: Option<String>,
    pub state: String,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    pub events: Vec<Event>,
    /// (template, handed over at) of the SMS logged for it.
    pub sms: Vec<(String, i64)>,
}

fn code_label(c: HealthCode) -> &'static str {
    match c {
        HealthCode::Green => "绿码",
        HealthCode::Yellow => "黄码",
        HealthCode::Red => "红码",
    }
}

fn result_label(r: NatResult) -> &'static str {
    match r {
        NatResult::Positive => "阳性",
        NatResult::Negative => "阴性",
    }
}

/// The day (Chengdu) as unix milliseconds [from, to).
fn day_bounds(day: NaiveDate) -> (i64, i64) {
    let text = day.to_string();
    let at = |days| {
        crate::console::chengdu_day(&text, days)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    };
    (at(0), at(1))
}

/// What the day's runs found for the person with `id_number`.
pub async fn explain(
    pool: &AnyPool,
    wf: &crate::backend::Workflows,
    disposal_form: &engine::compile::form::FormSpec,
    scope: &Scope,
    id_number: &crate::domain::IdNumber,
    day: NaiveDate,
) -> Result<Vec<Person>, Error> {
    let (from, to) = day_bounds(day);
    let district = match scope {
        Scope::All => None,
        Scope::District(d) => Some(d.as_str()),
    };
    let staff = sqlx::query(
        "SELECT s.id, s.name, s.address_id, e.name AS enterprise_name, e.district, a.address \
         FROM staff s JOIN enterprises e ON e.id = s.enterprise_id \
         LEFT JOIN addresses a ON a.id = s.address_id \
         WHERE s.id_number = $1 AND ($2 IS NULL OR e.district = $2) ORDER BY s.id",
    )
    .bind(id_number.as_str())
    .bind(district)
    .fetch_all(pool)
    .await?;
    let mut persons = Vec::new();
    for s in &staff {
        let staff_id: String = s.try_get("id")?;
        let address_id: Option<String> = s.try_get("address_id")?;
        let rows = sqlx::query(
            "SELECT r.id, r.as_of, r.result, p.data FROM comparison_runs r \
             JOIN comparison_persons p ON p.run_id = r.id AND p.address_id = $1 \
             WHERE r.as_of >= $2 AND r.as_of < $3 ORDER BY r.as_of",
        )
        .bind(&address_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
        let mut runs = Vec::new();
        for r in &rows {
            let run_id: String = r.try_get("id")?;
            let data: String = r.try_get("data")?;
            let judged = read_judged(&data).map_err(|e| Error::Corrupt(e.to_string()))?;
            let Some(j) = judged.into_iter().find(|j| j.staff_id == staff_id) else {
                continue;
            };
            // The run's id is its activity's key: `{instance}/{activity}`.
            let instance_id = run_id
                .rsplit_once('/')
                .map_or(run_id.as_str(), |(i, _)| i)
                .to_string();
            let instance = wf.runtime.store().instance(&instance_id).await?;
            runs.push(Run {
                warnings: warnings_of(pool, wf, disposal_form, &staff_id, &run_id).await?,
                as_of: r.try_get("as_of")?,
                window_hours: r
                    .try_get::<Option<String>, _>("result")?
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|v| v["window_hours"].as_i64()),
                definition_version: instance.as_ref().map(|i| i.definition_version),
                definition_hash: instance.map(|i| i.definition_hash),
                health: j.record.map(|h| Health {
                    health_code: code_label(h.health_code),
                    doses: h.vaccination.doses,
                    completed: h.vaccination.completed,
                    reports: h
                        .nat_reports
                        .iter()
                        .map(|n| (n.sampled_at.timestamp_millis(), result_label(n.result)))
                        .collect(),
                }),
                reasons: j.reasons,
                run_id,
                instance_id,
            });
        }
        persons.push(Person {
            name: s.try_get("name")?,
            masked: id_number.masked(),
            enterprise_name: s.try_get("enterprise_name")?,
            district: s.try_get("district")?,
            address: s.try_get("address")?,
            staff_id,
            runs,
        });
    }
    if persons.iter().all(|p| p.runs.is_empty()) {
        return Err(Error::NotFound);
    }
    Ok(persons)
}

/// The warnings `run_id` opened for the staff member, with their timelines
/// and SMS.
async fn warnings_of(
    pool: &AnyPool,
    wf: &crate::backend::Workflows,
    disposal_form: &engine::compile::form::FormSpec,
    staff_id: &str,
    run_id: &str,
) -> Result<Vec<Warning>, Error> {
    let rows = sqlx::query(
        "SELECT id, reason, evidence, COALESCE(state_label, state) AS state, opened_at, closed_at FROM warnings \
         WHERE staff_id = $1 AND run_id = $2 ORDER BY id",
    )
    .bind(staff_id)
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for w in &rows {
        let id: String = w.try_get("id")?;
        let (events, _) = crate::warnings::timeline(wf, disposal_form, &id).await?;
        let sms = sqlx::query(
            "SELECT template, created_at FROM sms_log WHERE idempotency_key LIKE $1 ORDER BY created_at",
        )
        .bind(format!("{id}/%"))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("template")?, r.try_get("created_at")?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let state: String = w.try_get("state")?;
        out.push(Warning {
            reason: w.try_get("reason")?,
            evidence: w.try_get("evidence")?,
            state,
            opened_at: w.try_get("opened_at")?,
            closed_at: w.try_get("closed_at")?,
            events,
            sms,
            id,
        });
    }
    Ok(out)
}
