//! `/admin/audit` (issue 15): the access audit for administrators only,
//! newest first, filtered by account and day, a page at a time
//! (`crate::audit`). Every other role is refused.

use super::{Ctx, Shared, WebError};
use crate::audit::{self, Filter};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use minijinja::context;

pub async fn page(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(f): Query<Filter>,
) -> Result<Response, WebError> {
    ctx.admin()?;
    let (list, total, error) = match audit::list(&app.sys.reader, &f).await {
        Ok((list, total)) => (list, total, None),
        Err(e @ audit::ListError::Day) => (Vec::new(), 0, Some(e.to_string())),
        Err(audit::ListError::Database(e)) => return Err(e.into()),
    };
    let (_, pages) = super::render::pages_of(total, f.page, audit::PAGE_SIZE);
    let base = format!(
        "/admin/audit?account={}&day={}&",
        urlencoding::encode(f.account.trim()),
        urlencoding::encode(f.day.trim())
    );
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let html = app.templates.page(
        &app,
        &ctx,
        "admin_audit.html",
        context! { list, pages, filter => f, base, error },
    )?;
    Ok((status, html).into_response())
}
