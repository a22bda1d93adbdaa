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
use sqlx::AnyPool;

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

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Warning {
    pub id: String,
    pub reason: String,
    pub evidence: Option<String>,
    pub state: String,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    #[sqlx(skip)]
    pub events: Vec<Event>,
    /// (template, handed over at) of the SMS logged for it.
    #[sqlx(skip)]
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
fn day_bounds(day: NaiveDate) -> Result<(i64, i64), Error> {
    let text = day.to_string();
    let at = |days| {
        crate::console::chengdu_day(&text, days)
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| Error::Corrupt(format!("日期 {text} 无法换算为成都时间")))
    };
    Ok((at(0)?, at(1)?))
}

/// A staff record with the ID number, as stored.
#[derive(sqlx::FromRow)]
struct StaffRow {
    id: String,
    name: String,
    address_id: Option<String>,
    enterprise_name: String,
    district: String,
    address: Option<String>,
}

/// A run of the day with its stored per-person data of one address.
#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    as_of: i64,
    result: Option<String>,
    data: String,
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
    let day = day_bounds(day)?;
    let district = match scope {
        Scope::All => None,
        Scope::District(d) => Some(d.as_str()),
    };
    let staff: Vec<StaffRow> = sqlx::query_as(
        "SELECT s.id, s.name, s.address_id, e.name AS enterprise_name, e.district, a.address \
         FROM staff s JOIN enterprises e ON e.id = s.enterprise_id \
         LEFT JOIN addresses a ON a.id = s.address_id \
         WHERE s.id_number = $1 AND ($2 IS NULL OR e.district = $2) ORDER BY s.id",
    )
    .bind(id_number.as_str())
    .bind(district)
    .fetch_all(pool)
    .await?;
    let looked = Looked {
        pool,
        wf,
        disposal_form,
        day,
    };
    let mut persons = Vec::new();
    for s in staff {
        persons.push(Person {
            runs: looked.runs_of(&s).await?,
            staff_id: s.id,
            name: s.name,
            masked: id_number.masked(),
            enterprise_name: s.enterprise_name,
            district: s.district,
            address: s.address,
        });
    }
    if persons.iter().all(|p| p.runs.is_empty()) {
        return Err(Error::NotFound);
    }
    Ok(persons)
}

/// Where one question is answered from, and the day's [from, to).
struct Looked<'a> {
    pool: &'a AnyPool,
    wf: &'a crate::backend::Workflows,
    disposal_form: &'a engine::compile::form::FormSpec,
    day: (i64, i64),
}

impl Looked<'_> {
    /// The day's runs that judged the staff member.
    async fn runs_of(&self, s: &StaffRow) -> Result<Vec<Run>, Error> {
        let rows: Vec<RunRow> = sqlx::query_as(
            "SELECT r.id, r.as_of, r.result, p.data FROM comparison_runs r \
             JOIN comparison_persons p ON p.run_id = r.id AND p.address_id = $1 \
             WHERE r.as_of >= $2 AND r.as_of < $3 ORDER BY r.as_of",
        )
        .bind(&s.address_id)
        .bind(self.day.0)
        .bind(self.day.1)
        .fetch_all(self.pool)
        .await?;
        let mut runs = Vec::new();
        for r in rows {
            if let Some(run) = self.run(&s.id, r).await? {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    /// What one run found for the staff member (None: it did not judge
    /// them).
    async fn run(&self, staff_id: &str, r: RunRow) -> Result<Option<Run>, Error> {
        let judged = read_judged(&r.data).map_err(|e| Error::Corrupt(e.to_string()))?;
        let Some(j) = judged.into_iter().find(|j| j.staff_id == staff_id) else {
            return Ok(None);
        };
        // The run's id is its activity's key: `{instance}/{activity}`.
        let instance_id =
            r.id.rsplit_once('/')
                .map_or(r.id.as_str(), |(i, _)| i)
                .to_string();
        let instance = self.wf.runtime.store().instance(&instance_id).await?;
        Ok(Some(Run {
            warnings: self.warnings_of(staff_id, &r.id).await?,
            as_of: r.as_of,
            window_hours: window_hours(&r.id, r.result.as_deref())?,
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
            run_id: r.id,
            instance_id,
        }))
    }

    /// The warnings `run_id` opened for the staff member, with their
    /// timelines and SMS.
    async fn warnings_of(&self, staff_id: &str, run_id: &str) -> Result<Vec<Warning>, Error> {
        let mut rows: Vec<Warning> = sqlx::query_as(
            "SELECT id, reason, evidence, COALESCE(state_label, state) AS state, opened_at, closed_at FROM warnings \
             WHERE staff_id = $1 AND run_id = $2 ORDER BY id",
        )
        .bind(staff_id)
        .bind(run_id)
        .fetch_all(self.pool)
        .await?;
        for w in &mut rows {
            (w.events, _) = crate::warnings::timeline(self.wf, self.disposal_form, &w.id).await?;
            w.sms = sqlx::query_as(
                "SELECT template, created_at FROM sms_log WHERE idempotency_key LIKE $1 ORDER BY created_at",
            )
            .bind(format!("{}/%", w.id))
            .fetch_all(self.pool)
            .await?;
        }
        Ok(rows)
    }
}

/// The hours of health data a run asked for, from its stored result (None:
/// not finished, or from before it was recorded).
fn window_hours(run_id: &str, result: Option<&str>) -> Result<Option<i64>, Error> {
    result
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(t)
                .map(|v| v["window_hours"].as_i64())
                .map_err(|e| Error::Corrupt(format!("比对 {run_id} 的结果：{e}")))
        })
        .transpose()
        .map(Option::flatten)
}
