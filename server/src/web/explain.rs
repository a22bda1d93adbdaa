//! 为何预警 (issue 12, "Why was this person warned?"): an ID number and a
//! day in, the day's runs that judged the person out (`crate::explain`).
//! Operators see everyone; a district only its own enterprises' staff.

use super::{Ctx, Shared, WebError};
use crate::explain;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
pub struct Ask {
    #[serde(default)]
    id_number: String,
    #[serde(default)]
    day: String,
}

pub async fn page(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(ask): Query<Ask>,
) -> Result<Response, WebError> {
    let scope = ctx.explain_scope()?;
    let today = crate::domain::day_of(app.sys.clock.now());
    let asked = !ask.id_number.is_empty() || !ask.day.is_empty();
    let mut errors = BTreeMap::new();
    let id = crate::domain::IdNumber::parse(&ask.id_number);
    if asked {
        if let Err(e) = &id {
            errors.insert("id_number", e.to_string());
        }
    }
    let day = if ask.day.is_empty() {
        chrono::NaiveDate::parse_from_str(&today, "%Y-%m-%d").ok()
    } else {
        chrono::NaiveDate::parse_from_str(&ask.day, "%Y-%m-%d").ok()
    };
    if asked && day.is_none() {
        errors.insert("day", "日期格式应为 2026-12-01".to_string());
    }
    let mut persons = Vec::new();
    let mut not_found = None;
    if let (true, Ok(id), Some(day), true) = (asked, &id, day, errors.is_empty()) {
        crate::audit::view(
            &app.sys,
            ctx.who(),
            "explain",
            &crate::audit::explain_target(&ask.id_number, &day.to_string()),
        )
        .await?;
        match explain::explain(
            &app.sys.reader,
            &app.sys.workflows,
            &app.sys.disposal,
            &scope,
            id,
            day,
        )
        .await
        {
            Ok(p) => persons = p,
            Err(e @ explain::Error::NotFound) => not_found = Some(e.to_string()),
            Err(e) => return Err(WebError::internal(e)),
        }
    }
    let day_text = day.map(|d| d.to_string()).unwrap_or(ask.day.clone());
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "explain.html",
            context! {
                id_number => ask.id_number,
                day => day_text,
                errors => errors,
                persons => persons,
                not_found => not_found,
            },
        )?
        .into_response())
}
