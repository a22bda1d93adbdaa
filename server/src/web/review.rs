//! 预警处置 and 审核 (R5, R6): warning lists (the enterprise's; the
//! district's with filters and counts per state), one warning with its
//! timeline and either the disposal form (enterprise, with Attachment 1) or
//! the review form (district), notices inboxes, and the directory of
//! Attachment 2.

use super::forms::{field_errors, form_values};
use super::render::pages;
use super::{Ctx, Shared, WebError};
use crate::accounts::Role;
use crate::warnings::{self, Filter};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The warning workflow's current definition (the latest publication, so
/// a published change shows without a restart): its states and labels.
fn warning_program(app: &Shared) -> Option<std::sync::Arc<engine::compile::program::Program>> {
    app.sys.runtime.latest_program("warning")
}

/// The filter's options and each state's label (the counts' captions),
/// as workflows/warning.yaml names them.
fn state_options(app: &Shared) -> (Vec<minijinja::Value>, BTreeMap<String, String>) {
    let options = warning_program(app)
        .map(|p| warnings::state_options(&p))
        .unwrap_or_default();
    let labels = options.iter().cloned().collect();
    let options = options
        .into_iter()
        .map(|(code, label)| context! { code, label })
        .collect();
    (options, labels)
}

/// The enterprise's warnings; other roles go to their own list.
pub async fn warnings(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(f): Query<Filter>,
) -> Result<Response, WebError> {
    match &ctx.account()?.role {
        Role::Enterprise { .. } => {}
        _ => return Ok(Redirect::to("/district").into_response()),
    }
    let scope = ctx.warning_scope()?;
    let warnings::Page {
        rows: mut list,
        total,
        counts,
    } = warnings::list(&app.sys.reader, &scope, &f).await?;
    warnings::label_rows(&mut list, warning_program(&app).as_deref());
    let (states, labels) = state_options(&app);
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "warnings.html",
            context! { list, counts, filter => f, pages => pages(total, f.page), states, labels },
        )?
        .into_response())
}

/// The district's warnings (city and operators see every district's).
pub async fn district_home(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(f): Query<Filter>,
) -> Result<Response, WebError> {
    let scope = match &ctx.account()?.role {
        Role::Enterprise { .. } => return Err(WebError::Forbidden),
        _ => ctx.warning_scope()?,
    };
    let warnings::Page {
        rows: mut list,
        total,
        counts,
    } = warnings::list(&app.sys.reader, &scope, &f).await?;
    // A list names persons and their reasons: the page of warnings seen.
    let seen: Vec<&str> = list.iter().map(|w| w.id.as_str()).collect();
    crate::audit::view(&app.sys, ctx.who(), "view_warning_list", &seen.join(",")).await?;
    warnings::label_rows(&mut list, warning_program(&app).as_deref());
    let (states, labels) = state_options(&app);
    let (kind, id) = ctx.inbox()?;
    let unread = warnings::unread(&app.sys.reader, kind, &id).await?;
    let district = match &ctx.account()?.role {
        Role::District { code } => app
            .sys
            .districts
            .find(code)
            .map(|d| d.name.as_str().to_string()),
        _ => Some("全市".to_string()),
    };
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "district.html",
            context! { list, counts, filter => f, pages => pages(total, f.page),
            states, labels, unread, district },
        )?
        .into_response())
}

/// The disposal form of warning `id`'s own definition version, so a
/// published change of the form reaches the warnings started on it (the
/// files' form when the instance is not stored).
async fn disposal_form(
    app: &Shared,
    id: &str,
) -> Result<std::sync::Arc<engine::compile::form::FormSpec>, WebError> {
    use engine::store::Store as _;
    let Some(row) = app
        .sys
        .store
        .instance(id)
        .await
        .map_err(WebError::internal)?
    else {
        return Ok(app.sys.disposal.clone());
    };
    let program = app
        .sys
        .runtime
        .program(&row.definition_hash)
        .await
        .map_err(WebError::internal)?;
    Ok(program
        .signals
        .get(warnings::DISPOSE)
        .and_then(|s| s.form.clone())
        .unwrap_or_else(|| app.sys.disposal.clone()))
}

async fn warning_view(
    app: &Shared,
    ctx: &Ctx,
    id: &str,
    values: &Value,
    errors: &BTreeMap<String, String>,
    message: Option<String>,
) -> Result<Response, WebError> {
    let mut w = warnings::get(&app.sys.reader, &ctx.warning_scope()?, id).await?;
    warnings::label_rows(
        std::slice::from_mut(&mut w),
        warning_program(app).as_deref(),
    );
    let form = disposal_form(app, id).await?;
    let (timeline, next_deadline) = warnings::timeline(&app.sys.workflows, &form, id).await?;
    let role = ctx.account()?.role.name();
    let can_dispose =
        role == "enterprise" && matches!(w.state.as_str(), "awaiting_disposal" | "rectifying");
    let can_review = role == "district" && w.state == "under_review";
    let html = app.templates.page(
        app,
        ctx,
        "warning.html",
        context! { w, timeline, next_deadline, can_dispose, can_review,
        form => &*form, values, errors, message },
    )?;
    let status = if errors.is_empty() && message.is_none() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((status, html).into_response())
}

pub async fn warning_page(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    crate::audit::view(&app.sys, ctx.who(), "view_warning", &id).await?;
    warning_view(&app, &ctx, &id, &Value::Null, &BTreeMap::new(), None).await
}

fn actor_name(ctx: &Ctx) -> String {
    ctx.account
        .as_ref()
        .map(|a| a.username.clone())
        .unwrap_or_default()
}

pub async fn dispose(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let (enterprise, _) = ctx.enterprise()?;
    let values = form_values(&*disposal_form(&app, &id).await?, &pairs);
    match warnings::dispose(
        &app.sys.workflows,
        &app.sys.pool,
        enterprise,
        &actor_name(&ctx),
        &id,
        values.clone(),
    )
    .await
    {
        Ok(()) => {
            Ok(Redirect::to(&format!("/warnings/{}", urlencoding::encode(&id))).into_response())
        }
        Err(warnings::Error::Invalid(e)) => {
            warning_view(&app, &ctx, &id, &values, &field_errors(&e), None).await
        }
        Err(warnings::Error::Refused(m)) => {
            warning_view(&app, &ctx, &id, &values, &BTreeMap::new(), Some(m)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReviewForm {
    decision: String,
    comment: String,
}

pub async fn review(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<ReviewForm>,
) -> Result<Response, WebError> {
    let district = ctx.district()?;
    let approve = match f.decision.as_str() {
        "approve" => true,
        "return" => false,
        _ => {
            let mut errors = BTreeMap::new();
            errors.insert("decision".to_string(), "请选择审核结果".to_string());
            let values = serde_json::json!({ "comment": f.comment });
            return warning_view(&app, &ctx, &id, &values, &errors, None).await;
        }
    };
    match warnings::review(
        &app.sys.workflows,
        &app.sys.pool,
        district,
        &actor_name(&ctx),
        &id,
        approve,
        &f.comment,
    )
    .await
    {
        Ok(()) => {
            Ok(Redirect::to(&format!("/warnings/{}", urlencoding::encode(&id))).into_response())
        }
        Err(warnings::Error::Invalid(e)) => {
            let values = serde_json::json!({ "comment": f.comment });
            let errors = field_errors(&e);
            warning_view(&app, &ctx, &id, &values, &errors, None).await
        }
        Err(warnings::Error::Refused(m)) => {
            warning_view(&app, &ctx, &id, &Value::Null, &BTreeMap::new(), Some(m)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    page: i64,
}

pub async fn notices(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    let (kind, id) = ctx.inbox()?;
    let (list, total, unread) = warnings::notices(&app.sys.reader, kind, &id, q.page).await?;
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "notices.html",
            context! { list, unread, pages => pages(total, q.page) },
        )?
        .into_response())
}

pub async fn mark_read(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    let (kind, id) = ctx.inbox()?;
    warnings::mark_read(
        &app.sys.pool,
        kind,
        &id,
        app.sys.clock.now().timestamp_millis(),
    )
    .await?;
    Ok(Redirect::to("/notices").into_response())
}

/// Attachment 2 (R7.2): the 23 districts and their liaison officers.
pub async fn directory(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.account()?;
    let list: Vec<_> = app
        .sys
        .districts
        .all()
        .iter()
        .map(|d| {
            context! { number => d.number, area => d.area.as_str(), name => d.name.as_str(),
            liaison => d.liaison.as_str(), phone => d.phone.as_str() }
        })
        .collect();
    Ok(app
        .templates
        .page(&app, &ctx, "directory.html", context! { list })?
        .into_response())
}
