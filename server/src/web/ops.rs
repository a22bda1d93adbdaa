//! The operator's page for the embedded system and rehearsals: the time,
//! the latest comparison runs, the SMS log, "立即比对" (start a comparison
//! run now) and, in a rehearsal, moving the clock forward. The operator
//! console proper (instances, histories, retries) is a later issue.

use super::{Ctx, Shared, WebError};
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use engine::store::{InstanceFilter, Page, Store};
use minijinja::context;
use serde::Deserialize;
use sqlx::Row;

pub async fn page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.operator()?;
    let store = &app.sys.store;
    // Comparison runs as their workflows see them (a run that failed has no
    // row of numbers), with the numbers of those that got that far.
    let comparisons = store
        .instances(
            &InstanceFilter {
                kind: Some("comparison".into()),
                ..Default::default()
            },
            Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .map_err(WebError::internal)?;
    let mut runs = Vec::new();
    for r in &comparisons {
        let state = engine::inspect::state_of(r).map_err(WebError::internal)?;
        let numbers = sqlx::query(
            "SELECT as_of, persons, anomalies, new_warnings FROM comparison_runs WHERE id LIKE $1",
        )
        .bind(format!("{}/%", r.id))
        .fetch_optional(&app.sys.reader)
        .await?;
        let n = |c: &str| -> Result<Option<i64>, sqlx::Error> {
            numbers.as_ref().map(|row| row.try_get(c)).transpose()
        };
        runs.push(context! {
            id => r.id,
            slot => state.input.get("slot").and_then(|s| s.as_str()).map(str::to_string),
            started => r.created_at.timestamp_millis(),
            running => r.status == "running",
            failed => r.status == "failed",
            status => r.status_label.clone().unwrap_or_else(|| state.state.clone()),
            error => state.output.get("error").and_then(|e| e.as_str()).map(str::to_string),
            as_of => n("as_of")?, persons => n("persons")?, anomalies => n("anomalies")?,
            new_warnings => n("new_warnings")?,
        });
    }
    // Incidents: instances whose step failed (waiting for an operator),
    // activities that used up their attempts, activities retrying now.
    let failed_filter = InstanceFilter {
        status: Some("failed".into()),
        ..Default::default()
    };
    let failed_instances = store
        .instances(
            &failed_filter,
            Page {
                limit: 20,
                offset: 0,
            },
        )
        .await
        .map_err(WebError::internal)?
        .into_iter()
        .map(|r| context! { id => r.id, kind => r.kind, state => r.state, updated => r.updated_at.timestamp_millis() })
        .collect::<Vec<_>>();
    let failed_count = store
        .count_instances(&failed_filter)
        .await
        .map_err(WebError::internal)?;
    let (mut exhausted, mut retrying) = (Vec::new(), Vec::new());
    for t in store
        .failed_tasks(Page {
            limit: 40,
            offset: 0,
        })
        .await
        .map_err(WebError::internal)?
    {
        let row = context! {
            instance => t.instance_id, name => t.name, attempt => t.attempt,
            max_attempts => t.max_attempts, error => t.last_error,
            next => t.next_run_at.timestamp_millis(),
        };
        if t.status == engine::store::TaskStatus::Failed {
            exhausted.push(row);
        } else {
            retrying.push(row);
        }
    }
    let sms = sqlx::query(
        "SELECT phone, template, params, created_at FROM sms_log ORDER BY created_at DESC LIMIT 20",
    )
    .fetch_all(&app.sys.reader)
    .await?
    .iter()
    .map(|r| {
        let phone: String = r.try_get("phone")?;
        let masked = crate::domain::Mobile::parse(&phone)
            .map(|m| m.masked())
            .unwrap_or(phone);
        let template: String = r.try_get("template")?;
        // Passwords and login codes were stored as ****** (adapters::sms).
        let params: String = r.try_get("params")?;
        Ok(context! { phone => masked, template, params, at => r.try_get::<i64, _>("created_at")? })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let counts = crate::warnings::counts(&app.sys.reader, &crate::warnings::Scope::City).await?;
    let timers = store.count_timers().await.map_err(WebError::internal)?;
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "ops.html",
            context! { runs, sms, counts, timers, failed_instances, failed_count, exhausted, retrying,
            sms_logged => app.sys.sms_logged },
        )?
        .into_response())
}

pub async fn run_comparison(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.operator()?;
    app.sys
        .run_comparison_now()
        .await
        .map_err(WebError::internal)?;
    Ok(Redirect::to("/ops").into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Rerun {
    instance: String,
}

/// Run a comparison again for an earlier run's slot (one that failed).
pub async fn rerun_comparison(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<Rerun>,
) -> Result<Response, WebError> {
    ctx.operator()?;
    match app.sys.rerun_comparison(&f.instance).await {
        Ok(_) => Ok(Redirect::to("/ops").into_response()),
        Err(crate::system::Error::Refused(m)) => Err(WebError::BadRequest(m)),
        Err(e) => Err(WebError::internal(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClockForm {
    minutes: String,
}

/// Rehearsal only: move the clock forward (at most 60 days at a time: 40
/// days show the retention policy at work).
pub async fn advance_clock(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<ClockForm>,
) -> Result<Response, WebError> {
    ctx.operator()?;
    let Some(clock) = &app.sys.adjustable else {
        return Err(WebError::BadRequest("仅演练模式可以调整时间".into()));
    };
    let minutes: u64 = f
        .minutes
        .trim()
        .parse()
        .ok()
        .filter(|m| (1..=60 * 24 * 60).contains(m))
        .ok_or_else(|| WebError::BadRequest("请填写1至86400之间的分钟数".into()))?;
    // Sessions' idle and absolute deadlines are on this clock: move them
    // with it, so a rehearsal's jump does not log everyone out (the time
    // people spend idle is what passes on the wall, not the jump). Before
    // the move, so no request sees the new time with the old deadlines.
    let ms = i64::try_from(minutes * 60_000).expect("at most 60 days");
    // (The SMS proof's 15 minutes too; NULL stays NULL.)
    sqlx::query(
        "UPDATE sessions SET last_seen = last_seen + $1, expires_at = expires_at + $2, \
         sms_proven_at = sms_proven_at + $3",
    )
    .bind(ms)
    .bind(ms)
    .bind(ms)
    .execute(&app.sys.pool)
    .await?;
    crate::audit::action(
        &app.sys,
        ctx.who(),
        "ops_advance_clock",
        &minutes.to_string(),
    )
    .await?;
    let now = clock.advance_by(std::time::Duration::from_secs(minutes * 60));
    tracing::info!(%now, minutes, "rehearsal clock moved forward; sessions kept");
    app.sys.runtime.wake();
    Ok(Redirect::to("/ops").into_response())
}
