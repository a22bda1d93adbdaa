//! The administrator's pages (R1.7, R1.5) and the city window (R1.6):
//! `/admin` (accounts: list, create, disable, enable, reset),
//! `/admin/enterprises` (bulk import of 已有账号的企业) for administrators
//! only; `/window` (find an enterprise, switch it to SMS login) for city
//! staff and administrators. Generated passwords are shown once on the
//! answer to the POST that made them (pages are never cached).

use super::{Ctx, Shared, WebError};
use crate::admin::{self, Delivery, NewAccount, Reset, SwitchForm};
use axum::extract::{Form, Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use std::collections::BTreeMap;

impl From<admin::Error> for WebError {
    fn from(e: admin::Error) -> Self {
        use admin::Error as E;
        match e {
            E::NotFound => WebError::NotFound,
            E::Refused(m) => WebError::BadRequest(m),
            E::Invalid(_) | E::Rows(_) => WebError::BadRequest(e.to_string()),
            E::Database(e) => WebError::internal(e),
            E::Internal(e) => WebError::Internal(e),
        }
    }
}

fn now_ms(app: &Shared) -> i64 {
    app.sys.clock.now().timestamp_millis()
}

fn role_options() -> Vec<minijinja::Value> {
    admin::accounts::MANAGED_ROLES
        .iter()
        .map(|(code, label)| context! { code => code, label => label })
        .collect()
}

async fn accounts_page(
    app: &Shared,
    ctx: &Ctx,
    form: &NewAccount,
    errors: &BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let (accounts, enterprise_accounts) = admin::list_accounts(&app.sys.reader).await?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let html = app.templates.page(
        app,
        ctx,
        "admin.html",
        context! { accounts, enterprise_accounts, form, errors,
        roles => role_options(), districts => super::render::district_options(&app.sys.districts) },
    )?;
    Ok((status, html).into_response())
}

pub async fn page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.admin()?;
    accounts_page(&app, &ctx, &NewAccount::default(), &BTreeMap::new()).await
}

/// A one-time answer: a password shown once, or where it was sent.
fn done(
    app: &Shared,
    ctx: &Ctx,
    title: &str,
    username: &str,
    password: Option<&str>,
    sent_to: Option<&str>,
) -> Result<Response, WebError> {
    Ok(app
        .templates
        .page(
            app,
            ctx,
            "admin_done.html",
            context! { title, username, password, sent_to },
        )?
        .into_response())
}

pub async fn create(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(form): Form<NewAccount>,
) -> Result<Response, WebError> {
    let me = ctx.admin()?.username.clone();
    crate::audit::action(
        &app.sys,
        ctx.who(),
        "admin_create_account",
        form.username.trim(),
    )
    .await?;
    match admin::create_account(&app.sys.pool, &app.sys.districts, &form, &me, now_ms(&app)).await {
        Ok(password) => done(
            &app,
            &ctx,
            "账号已创建",
            form.username.trim(),
            Some(&password),
            None,
        ),
        Err(admin::Error::Invalid(errors)) => accounts_page(&app, &ctx, &form, &errors).await,
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct Target {
    #[serde(default)]
    username: String,
    #[serde(default)]
    delivery: String,
}

pub async fn disable(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(t): Form<Target>,
) -> Result<Response, WebError> {
    let me = ctx.admin()?.username.clone();
    crate::audit::action(&app.sys, ctx.who(), "admin_disable_account", &t.username).await?;
    admin::set_disabled(
        &app.sys.pool,
        Some(&app.sessions),
        &t.username,
        true,
        &me,
        now_ms(&app),
    )
    .await?;
    Ok(Redirect::to("/admin").into_response())
}

pub async fn enable(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(t): Form<Target>,
) -> Result<Response, WebError> {
    let me = ctx.admin()?.username.clone();
    crate::audit::action(&app.sys, ctx.who(), "admin_enable_account", &t.username).await?;
    admin::set_disabled(
        &app.sys.pool,
        Some(&app.sessions),
        &t.username,
        false,
        &me,
        now_ms(&app),
    )
    .await?;
    Ok(Redirect::to("/admin").into_response())
}

pub async fn reset(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(t): Form<Target>,
) -> Result<Response, WebError> {
    let me = ctx.admin()?.username.clone();
    crate::audit::action(&app.sys, ctx.who(), "admin_reset_password", &t.username).await?;
    let delivery = match t.delivery.as_str() {
        "sms" => Delivery::Sms,
        _ => Delivery::Show,
    };
    match admin::reset_password(
        &app.sys.pool,
        Some(&app.sessions),
        &*app.sys.sms,
        &t.username,
        delivery,
        &me,
        now_ms(&app),
    )
    .await?
    {
        Reset::Shown(p) => done(&app, &ctx, "密码已重置", &t.username, Some(&p), None),
        Reset::Sent { mobile_masked } => done(
            &app,
            &ctx,
            "密码已重置",
            &t.username,
            None,
            Some(&mobile_masked),
        ),
    }
}

pub async fn import_page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.admin()?;
    Ok(app
        .templates
        .page(&app, &ctx, "admin_import.html", context! {})?
        .into_response())
}

/// The uploaded file's bytes.
async fn uploaded(multipart: &mut Multipart) -> Result<Option<Vec<u8>>, WebError> {
    let mut out = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| WebError::BadRequest(format!("上传失败：{e}")))?
    {
        if field.name() == Some("file") {
            let bytes = field
                .bytes()
                .await
                .map_err(|e| WebError::BadRequest(format!("上传失败：{e}")))?;
            out = Some(bytes.to_vec());
        }
    }
    Ok(out)
}

pub async fn import(
    State(app): State<Shared>,
    ctx: Ctx,
    mut multipart: Multipart,
) -> Result<Response, WebError> {
    let me = ctx.admin()?.username.clone();
    crate::audit::action(&app.sys, ctx.who(), "admin_import_enterprises", "").await?;
    let bytes = uploaded(&mut multipart).await?;
    let text = match bytes.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) {
        None => Err(admin::Error::Refused("请选择要导入的CSV文件".into())),
        Some(b) => admin::csv_text(&b),
    };
    let result = match text {
        Ok(t) => {
            admin::import_enterprises(
                &app.sys.pool,
                &*app.sys.sms,
                &app.sys.districts,
                &t,
                &me,
                now_ms(&app),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let (status, extra) = match result {
        Ok(report) => (StatusCode::OK, context! { report }),
        Err(admin::Error::Rows(rows)) => (
            StatusCode::BAD_REQUEST,
            context! { summary => rows.summary(), errors => rows.shown, more => rows.more() },
        ),
        Err(admin::Error::Refused(m)) => (StatusCode::BAD_REQUEST, context! { refused => m }),
        Err(e) => return Err(e.into()),
    };
    let html = app.templates.page(&app, &ctx, "admin_import.html", extra)?;
    Ok((status, html).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Find {
    q: String,
}

async fn window_page(
    app: &Shared,
    ctx: &Ctx,
    q: &str,
    form: Option<&SwitchForm>,
    errors: &BTreeMap<String, String>,
    done: Option<admin::Switch>,
) -> Result<Response, WebError> {
    let enterprise = admin::find_enterprise(&app.sys.reader, q).await?;
    let recent = admin::recent_switches(&app.sys.reader, 20).await?;
    let documents: Vec<_> = admin::Document::ALL
        .iter()
        .map(|d| {
            let checked = form.is_some_and(|f| f.documents.iter().any(|c| c == d.code()));
            context! { code => d.code(), label => d.label(), checked }
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let html = app.templates.page(
        app,
        ctx,
        "admin_window.html",
        context! { q, enterprise, searched => !q.trim().is_empty(), form, errors, done, recent, documents },
    )?;
    Ok((status, html).into_response())
}

pub async fn window(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(f): Query<Find>,
) -> Result<Response, WebError> {
    ctx.window()?;
    window_page(&app, &ctx, &f.q, None, &BTreeMap::new(), None).await
}

pub async fn switch(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let me = ctx.window()?.username.clone();
    let value = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let form = SwitchForm {
        credit_code: value("credit_code"),
        documents: pairs
            .iter()
            .filter(|(k, _)| k == "documents")
            .map(|(_, v)| v.clone())
            .collect(),
        mobile: value("mobile"),
        agent_name: value("agent_name"),
    };
    crate::audit::action(
        &app.sys,
        ctx.who(),
        "window_switch_to_sms",
        &form.credit_code,
    )
    .await?;
    match admin::switch_to_sms(
        &app.sys.pool,
        Some(&app.sessions),
        &*app.sys.sms,
        &form,
        &me,
        now_ms(&app),
    )
    .await
    {
        Ok(s) => {
            window_page(
                &app,
                &ctx,
                &form.credit_code,
                None,
                &BTreeMap::new(),
                Some(s),
            )
            .await
        }
        Err(admin::Error::Invalid(errors)) => {
            window_page(&app, &ctx, &form.credit_code, Some(&form), &errors, None).await
        }
        Err(e) => Err(e.into()),
    }
}
