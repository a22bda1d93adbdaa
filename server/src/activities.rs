//! The activities of `workflows/activities.yaml`, implemented on the
//! application's database and adapters: notices and SMS (R5.2, R5.4, R6.1,
//! R6.3) and the comparison run (R3.4, R4, R5.1).
//!
//! Every write is keyed by the call's idempotency key, so an activity the
//! runtime repeats after a crash changes nothing the second time. Business
//! decisions stay in `workflows/` and `rules/`; this module only carries
//! them out.

use crate::adapters::health::HealthCommission;
use crate::adapters::sms::{Message, SmsGateway};
use crate::comparison::{self, Person};
use chrono::{DateTime, Utc};
use engine::clock::Clock;
use engine::rules::Rules;
use engine::runtime::{Activities, ActivityCall, ActivityError};
use engine::store::sql::{insert_many, Arg};
use serde_json::{json, Value};
use sqlx::{AnyPool, Row};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// What the activities work with.
pub struct Services {
    pub pool: AnyPool,
    pub backend: engine::store::sql::Backend,
    pub clock: Arc<dyn Clock>,
    pub health: Arc<dyn HealthCommission>,
    pub sms: Arc<dyn SmsGateway>,
    pub rules: Arc<Rules>,
}

fn db(e: sqlx::Error) -> ActivityError {
    ActivityError::Retryable(format!("database: {e}"))
}

fn store_err(e: engine::store::Error) -> ActivityError {
    ActivityError::Retryable(e.to_string())
}

fn arg<'a>(call: &'a ActivityCall, name: &str) -> &'a str {
    call.args[name].as_str().unwrap_or_default()
}

/// The registry for the runtime.
pub fn registry(s: Arc<Services>) -> Activities {
    let a = s.clone();
    let b = s.clone();
    let c = s.clone();
    let d = s.clone();
    let e = s.clone();
    let f = s;
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
        .register("record_warning_event", move |call| {
            project_warning(f.clone(), call)
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
    let enterprise = arg(&call, "enterprise_id");
    let row =
        sqlx::query("SELECT name, contact_mobile, liaison_mobile FROM enterprises WHERE id = $1")
            .bind(enterprise)
            .fetch_optional(&s.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| ActivityError::Permanent(format!("no enterprise {enterprise}")))?;
    let liaison: Option<String> = row.try_get("liaison_mobile").map_err(db)?;
    let phone = liaison.unwrap_or(row.try_get("contact_mobile").map_err(db)?);
    let template = arg(&call, "template");
    let (title, body) = match template {
        "warning_returned" => (
            "预警处置被退回整改".to_string(),
            format!("{}的预警处置情况被退回整改，处理意见：{}", arg(&call, "person_name"), arg(&call, "comment")),
        ),
        _ => (
            format!("疫情预警提醒（第{}次）", call.args["round"]),
            format!(
                "贵单位人员{}存在异常（{}），请在预警产生8小时内按要求完成处置并在【预警处置】中填报。",
                arg(&call, "person_name"),
                arg(&call, "reason")
            ),
        ),
    };
    let link = format!("/warnings/{}", arg(&call, "warning_id"));
    insert_notice(
        &s,
        &call.idempotency_key,
        "enterprise",
        enterprise,
        &title,
        &body,
        Some(&link),
    )
    .await?;
    let m = Message {
        phone,
        template: template.to_string(),
        params: call.args.clone(),
        idempotency_key: call.idempotency_key.clone(),
    };
    s.sms.send(m).await.map_err(|e| match e {
        crate::adapters::sms::Error::Rejected(r) => ActivityError::Permanent(r),
        crate::adapters::sms::Error::Unavailable(r) => ActivityError::Retryable(r),
    })?;
    Ok(json!({"sent_to": "liaison"}))
}

async fn notice(s: Arc<Services>, call: ActivityCall, kind: &str) -> Result<Value, ActivityError> {
    let recipient = if kind == "city" {
        arg(&call, "target").to_string()
    } else {
        arg(&call, "district").to_string()
    };
    let title = match arg(&call, "template") {
        "disposal_overdue" => "预警超时未处置",
        "review_overdue" => "预警审核超时上报",
        other => other,
    };
    let link = format!("/warnings/{}", arg(&call, "warning_id"));
    insert_notice(
        &s,
        &call.idempotency_key,
        kind,
        &recipient,
        title,
        arg(&call, "text"),
        Some(&link),
    )
    .await?;
    Ok(Value::Null)
}

/// One notice per affected district per run, with its count (R6.1).
async fn digest(s: Arc<Services>, call: ActivityCall) -> Result<Value, ActivityError> {
    let Some(per) = call.args["per_district"].as_object() else {
        return Ok(Value::Null);
    };
    for (district, n) in per {
        let id = format!("{}/{district}", call.idempotency_key);
        let body = format!("本轮比对辖区内新增预警{n}条，请督促企业及时处置。");
        insert_notice(
            &s,
            &id,
            "district",
            district,
            "新增疫情预警",
            &body,
            Some("/district/warnings"),
        )
        .await?;
    }
    Ok(Value::Null)
}

/// Bring a warning's row in the `warnings` projection up to its workflow's
/// committed state. Reads the instance rather than trusting arguments, so
/// calls that run late or out of order still converge on the latest state.
async fn project_warning(s: Arc<Services>, call: ActivityCall) -> Result<Value, ActivityError> {
    let id = arg(&call, "warning_id");
    match refresh_warning(&s.pool, id).await.map_err(db)? {
        true => Ok(Value::Null),
        false => Err(ActivityError::Permanent(format!(
            "no workflow for warning {id}"
        ))),
    }
}

/// Bring one warning's projection row up to its workflow's committed
/// state. Idempotent; also called by the web layer right after a signal so
/// the next page shows the new state. False if there is no such workflow.
pub async fn refresh_warning(pool: &AnyPool, id: &str) -> Result<bool, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT state, status_label, snapshot, closed_at, updated_at FROM instances WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(false);
    };
    let snapshot: Value =
        serde_json::from_str(&row.try_get::<String, _>("snapshot")?).unwrap_or(Value::Null);
    let flag = |name: &str| i64::from(snapshot["vars"][name].as_bool().unwrap_or(false));
    sqlx::query(
        "UPDATE warnings SET state = $1, status_label = $2, disposal_overdue = $3, review_overdue = $4, \
         closed_at = $5, updated_at = $6 WHERE id = $7",
    )
    .bind(row.try_get::<String, _>("state")?)
    .bind(row.try_get::<Option<String>, _>("status_label")?)
    .bind(flag("disposal_overdue"))
    .bind(flag("review_overdue"))
    .bind(row.try_get::<Option<i64>, _>("closed_at")?)
    .bind(row.try_get::<i64, _>("updated_at")?)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(true)
}

/// Local day in Chengdu of an instant.
pub fn day_of(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d")
        .to_string()
}

/// The comparison run: fetch, count per address, fill the day's records,
/// evaluate anomalies, open warnings not already open (R5.1). Returns what
/// workflows/comparison.yaml expects. Repeated with the same key, it returns
/// the stored result.
async fn run_comparison(s: Arc<Services>, call: ActivityCall) -> Result<Value, ActivityError> {
    let run_id = call.idempotency_key.clone();
    if let Some(r) =
        sqlx::query("SELECT result FROM comparison_runs WHERE id = $1 AND result IS NOT NULL")
            .bind(&run_id)
            .fetch_optional(&s.pool)
            .await
            .map_err(db)?
    {
        let text: String = r.try_get("result").map_err(db)?;
        return serde_json::from_str(&text).map_err(|e| ActivityError::Permanent(e.to_string()));
    }
    let as_of: DateTime<Utc> = call.args["as_of"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| s.clock.now());
    let rows = sqlx::query(
        "SELECT s.id, s.address_id, s.id_number, s.name, a.enterprise_id, e.name AS enterprise_name, e.district \
         FROM staff s JOIN addresses a ON a.id = s.address_id JOIN enterprises e ON e.id = a.enterprise_id \
         WHERE s.deleted_at IS NULL ORDER BY s.id",
    )
    .fetch_all(&s.pool)
    .await
    .map_err(db)?;
    // Who each person is, read from their row only for the few anomalous ones.
    struct Who {
        name: String,
        masked: String,
        enterprise: String,
        enterprise_name: String,
        district: String,
    }
    let who_of = |k: usize| -> Result<Who, ActivityError> {
        let r = &rows[k];
        let id_number: String = r.try_get("id_number").map_err(db)?;
        Ok(Who {
            name: r.try_get("name").map_err(db)?,
            masked: crate::domain::IdNumber::parse(&id_number)
                .map(|n| n.masked())
                .unwrap_or_else(|_| "***".into()),
            enterprise: r.try_get("enterprise_id").map_err(db)?,
            enterprise_name: r.try_get("enterprise_name").map_err(db)?,
            district: r.try_get("district").map_err(db)?,
        })
    };
    let mut persons = Vec::with_capacity(rows.len());
    let mut enterprise_of: std::collections::HashMap<String, String> =
        std::collections::HashMap::new();
    for r in &rows {
        let address_id: String = r.try_get("address_id").map_err(db)?;
        if !enterprise_of.contains_key(&address_id) {
            enterprise_of.insert(address_id.clone(), r.try_get("enterprise_id").map_err(db)?);
        }
        persons.push(Person {
            staff_id: r.try_get("id").map_err(db)?,
            address_id,
            id_number: r.try_get("id_number").map_err(db)?,
        });
    }
    let ids: Vec<String> = persons.iter().map(|p| p.id_number.clone()).collect();
    // No data, no numbers: the failure goes back to the workflow (retried, then 比对失败).
    let answer = s
        .health
        .query(as_of, 24, ids)
        .await
        .map_err(|e| ActivityError::Retryable(e.to_string()))?;
    let outcome = comparison::compare(
        &s.rules,
        &persons,
        &answer.records,
        as_of,
        chrono::Duration::hours(24),
    )
    .map_err(|e| ActivityError::Permanent(e.to_string()))?;

    let now = s.clock.now().timestamp_millis();
    let day = day_of(as_of);
    let mut tx = s.pool.begin().await.map_err(db)?;
    let mut records = Vec::with_capacity(outcome.per_address.len());
    for (address, counts) in &outcome.per_address {
        let mut computed = serde_json::to_value(counts).expect("serialisable");
        computed["vaccination_permille"] = json!(counts.vaccination_permille());
        records.push(vec![
            Arg::T(Some(format!("{address}/{day}"))),
            Arg::T(Some(enterprise_of[address.as_str()].clone())),
            Arg::T(Some(address.clone())),
            Arg::T(Some(day.clone())),
            Arg::T(Some("{}".into())),
            Arg::T(Some(computed.to_string())),
            Arg::I(Some(as_of.timestamp_millis())),
            Arg::T(Some(run_id.clone())),
            Arg::T(Some("comparison".into())),
            Arg::I(Some(now)),
            Arg::I(Some(now)),
        ]);
    }
    // R3.4: the first run of the day creates the record; if the enterprise
    // created it earlier, the same record gets the numbers.
    insert_many(
        &mut tx,
        s.backend,
        "daily_records",
        "id, enterprise_id, address_id, day, fields, computed, computed_at, run_id, created_by, created_at, updated_at",
        records,
        "ON CONFLICT (address_id, day) DO UPDATE SET computed = excluded.computed, computed_at = excluded.computed_at, \
         run_id = excluded.run_id, updated_at = excluded.updated_at",
    )
    .await
    .map_err(store_err)?;
    // The run row first: the per-person data below refers to it.
    sqlx::query(
        "INSERT INTO comparison_runs (id, slot, as_of, started_at, status, persons, unknown, anomalies, new_warnings) \
         VALUES ($1, NULL, $2, $3, 'running', $4, $5, $6, 0)",
    )
    .bind(&run_id)
    .bind(as_of.timestamp_millis())
    .bind(now)
    .bind(persons.len() as i64)
    .bind(answer.unknown as i64)
    .bind(outcome.anomalies.len() as i64)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    // The data each person was judged on, for audits and dry runs of changed rules (R8.2).
    let mut reasons: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
    for a in &outcome.anomalies {
        reasons
            .entry(a.staff_id.as_str())
            .or_default()
            .push(a.reason.as_str());
    }
    // In slices, so a million persons never sit in memory twice.
    for slice in persons.chunks(10_000) {
        let rows = slice
            .iter()
            .map(|p| {
                let data = answer
                    .records
                    .get(&p.id_number)
                    .map(|r| serde_json::to_string(r).expect("serialisable"));
                let why =
                    serde_json::to_string(reasons.get(p.staff_id.as_str()).unwrap_or(&Vec::new()))
                        .expect("serialisable");
                vec![
                    Arg::T(Some(run_id.clone())),
                    Arg::T(Some(p.staff_id.clone())),
                    Arg::T(Some(p.address_id.clone())),
                    Arg::T(data),
                    Arg::T(Some(why)),
                ]
            })
            .collect();
        insert_many(
            &mut tx,
            s.backend,
            "comparison_persons",
            "run_id, staff_id, address_id, data, reasons",
            rows,
            "",
        )
        .await
        .map_err(store_err)?;
    }
    let open: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT dedupe_key FROM warnings WHERE closed_at IS NULL")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .into_iter()
            .collect();
    let index: std::collections::HashMap<&str, usize> = if outcome.anomalies.is_empty() {
        Default::default()
    } else {
        persons
            .iter()
            .enumerate()
            .map(|(k, p)| (p.staff_id.as_str(), k))
            .collect()
    };
    let mut new_warnings = Vec::new();
    let mut warning_rows = Vec::new();
    let mut per_district: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (n, a) in outcome.anomalies.iter().enumerate() {
        let key = s
            .rules
            .call(
                "dedupe",
                "warning_key",
                &[json!(a.staff_id), json!(a.reason)],
            )
            .map_err(|e| ActivityError::Permanent(e.to_string()))?;
        let key = key.as_str().unwrap_or_default().to_string();
        if open.contains(&key) || !seen.insert(key.clone()) {
            continue;
        }
        let w = &who_of(index[a.staff_id.as_str()])?;
        let warning_id = format!("{}-{}", short_hash(&run_id), n + 1);
        warning_rows.push(vec![
            Arg::T(Some(warning_id.clone())),
            Arg::T(Some(w.enterprise.clone())),
            Arg::T(Some(w.district.clone())),
            Arg::T(Some(a.address_id.clone())),
            Arg::T(Some(a.staff_id.clone())),
            Arg::T(Some(w.name.clone())),
            Arg::T(Some(w.masked.clone())),
            Arg::T(Some(a.reason.clone())),
            Arg::T(Some(key.clone())),
            Arg::T(Some(run_id.clone())),
            Arg::T(Some("awaiting_disposal".into())),
            Arg::I(Some(0)),
            Arg::I(Some(0)),
            Arg::I(Some(now)),
            Arg::I(Some(now)),
        ]);
        *per_district.entry(w.district.clone()).or_default() += 1;
        new_warnings.push(json!({
            "warning_id": warning_id, "enterprise_id": w.enterprise, "enterprise_name": w.enterprise_name,
            "district": w.district, "district_name": w.district, "person_id": w.masked,
            "person_name": w.name, "reason": a.reason,
        }));
    }
    insert_many(
        &mut tx,
        s.backend,
        "warnings",
        "id, enterprise_id, district, address_id, staff_id, person_name, person_masked, reason, dedupe_key, run_id, \
         state, disposal_overdue, review_overdue, opened_at, updated_at",
        warning_rows,
        "",
    )
    .await
    .map_err(store_err)?;
    let summary = json!({
        "persons": persons.len(), "unknown": answer.unknown, "anomalies": outcome.anomalies.len(),
        "new_warnings": new_warnings.len(), "addresses": outcome.per_address.len(),
    });
    let result = json!({
        "run_id": run_id, "as_of": as_of.to_rfc3339(), "new_warnings": new_warnings,
        "per_district": per_district, "summary": summary,
    });
    sqlx::query("UPDATE comparison_runs SET finished_at = $1, status = 'done', new_warnings = $2, result = $3 WHERE id = $4")
        .bind(now)
        .bind(summary["new_warnings"].as_i64().unwrap_or_default())
        .bind(result.to_string())
        .bind(&run_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(result)
}

fn short_hash(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{:08x}", h as u32)
}
