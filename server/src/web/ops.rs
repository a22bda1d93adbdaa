//! The operator's page for the embedded system and rehearsals: the time,
//! the latest comparison runs, the SMS log, "立即比对" (start a comparison
//! run now) and, in a rehearsal, moving the clock forward. Failed
//! instances come from the engine that runs them (`Workflows::instances`);
//! the comparison runs and the activities retrying are read from the
//! embedded store (on Temporal, the instance console and Temporal's own
//! UI show those). The console proper is `instances.rs`.

use super::{Ctx, Shared, WebError};
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use engine::store::{InstanceFilter, Page, Store};
use minijinja::context;
use serde::Deserialize;

pub async fn page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.operator()?;
    let store = &app.sys.store;
    let runs = comparison_runs(&app).await?;
    let (failed_instances, failed_count) = failed_instances(&app).await?;
    let (exhausted, retrying) = failed_tasks(store).await?;
    let sms = crate::ops::recent_sms(&app.sys.reader, 20).await?;
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

/// Comparison runs as their workflows see them (a run that failed has no
/// row of numbers), with the numbers of those that got that far.
async fn comparison_runs(app: &Shared) -> Result<Vec<minijinja::Value>, WebError> {
    let comparisons = app
        .sys
        .store
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
        let numbers = crate::ops::run_numbers(&app.sys.reader, &r.id).await?;
        runs.push(context! {
            id => r.id,
            slot => state.input.get("slot").and_then(|s| s.as_str()).map(str::to_string),
            started => r.created_at.timestamp_millis(),
            running => r.status == "running",
            failed => r.status == "failed",
            status => r.status_label.clone().unwrap_or_else(|| state.state.clone()),
            error => state.output.get("error").and_then(|e| e.as_str()).map(str::to_string),
            as_of => numbers.as_ref().map(|n| n.as_of),
            persons => numbers.as_ref().map(|n| n.persons),
            anomalies => numbers.as_ref().map(|n| n.anomalies),
            new_warnings => numbers.as_ref().map(|n| n.new_warnings),
        });
    }
    Ok(runs)
}

/// Instances whose step failed (waiting for an operator): the first 20,
/// and how many in all, from the engine that runs them (this database, or
/// Temporal's visibility by `EpiStatus`).
async fn failed_instances(app: &Shared) -> Result<(Vec<minijinja::Value>, i64), WebError> {
    let failed_filter = InstanceFilter {
        status: Some("failed".into()),
        ..Default::default()
    };
    let first = Page {
        limit: 20,
        offset: 0,
    };
    let (count, rows) = app
        .sys
        .workflows
        .instances(&failed_filter, first)
        .await
        .map_err(WebError::internal)?;
    let rows = rows
        .into_iter()
        .map(|r| context! { id => r.id, kind => r.kind, state => r.state, updated => r.updated })
        .collect();
    Ok((rows, count))
}

/// Activities that used up their attempts, and those retrying now.
async fn failed_tasks(
    store: &engine::store::SqlStore,
) -> Result<(Vec<minijinja::Value>, Vec<minijinja::Value>), WebError> {
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
    Ok((exhausted, retrying))
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
    // Sessions' deadlines move with the clock (see `ops::shift_sessions`).
    let ms = i64::try_from(minutes * 60_000).expect("at most 60 days");
    crate::ops::shift_sessions(&app.sys.pool, ms).await?;
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
