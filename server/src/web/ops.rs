//! The operator's page for the embedded system and rehearsals: the time,
//! the latest comparison runs, the SMS log, "立即比对" (start a comparison
//! run now) and, in a rehearsal, moving the clock forward. The operator
//! console proper (instances, histories, retries) is a later issue.

use super::{Ctx, Shared, WebError};
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use sqlx::Row;

pub async fn page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.operator()?;
    let runs = sqlx::query(
        "SELECT id, status, as_of, persons, anomalies, new_warnings, error FROM comparison_runs ORDER BY started_at DESC LIMIT 10",
    )
    .fetch_all(&app.sys.reader)
    .await?
    .iter()
    .map(|r| {
        Ok(context! {
            id => r.try_get::<String, _>("id")?,
            status => r.try_get::<String, _>("status")?,
            as_of => r.try_get::<i64, _>("as_of")?,
            persons => r.try_get::<i64, _>("persons")?,
            anomalies => r.try_get::<i64, _>("anomalies")?,
            new_warnings => r.try_get::<i64, _>("new_warnings")?,
            error => r.try_get::<Option<String>, _>("error")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
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
    let timers = {
        use engine::store::Store;
        app.sys
            .store
            .count_timers()
            .await
            .map_err(WebError::internal)?
    };
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "ops.html",
            context! { runs, sms, counts, timers },
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
pub struct ClockForm {
    minutes: String,
}

/// Rehearsal only: move the clock forward (at most 7 days at a time).
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
        .filter(|m| (1..=7 * 24 * 60).contains(m))
        .ok_or_else(|| WebError::BadRequest("请填写1至10080之间的分钟数".into()))?;
    // Sessions' idle and absolute deadlines are on this clock: move them
    // with it, so a rehearsal's jump does not log everyone out (the time
    // people spend idle is what passes on the wall, not the jump). Before
    // the move, so no request sees the new time with the old deadlines.
    let ms = i64::try_from(minutes * 60_000).expect("at most 7 days");
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
    let now = clock.advance_by(std::time::Duration::from_secs(minutes * 60));
    tracing::info!(%now, minutes, "rehearsal clock moved forward; sessions kept");
    app.sys.runtime.wake();
    Ok(Redirect::to("/ops").into_response())
}
