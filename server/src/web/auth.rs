//! Login (password or SMS code), logout, registration as 疫情防控用户 and
//! the password change (R1).

use super::render::Templates;
use super::session::{cookie, SESSION_COOKIE};
use super::{Ctx, Shared, WebError};
use crate::accounts::{self, Role};
use axum::extract::{Form, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

/// Where each role lands.
fn home_of(role: &Role) -> &'static str {
    match role {
        Role::Enterprise { .. } => "/home",
        Role::District { .. } => "/district",
        Role::City | Role::Operator => "/ops",
        Role::Admin => "/admin",
    }
}

pub async fn root(ctx: Ctx) -> Redirect {
    match &ctx.account {
        Some(a) => Redirect::to(home_of(&a.role)),
        None => Redirect::to("/login"),
    }
}

fn login_form(
    app: &Shared,
    ctx: &Ctx,
    error: Option<String>,
    info: Option<String>,
    username: &str,
    tab: &str,
) -> Result<Response, WebError> {
    let status = if error.is_some() {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        axum::http::StatusCode::OK
    };
    let html = app.templates.page(
        app,
        ctx,
        "login.html",
        context! { error, info, username, tab },
    )?;
    Ok((status, html).into_response())
}

pub async fn login_page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    if let Some(a) = &ctx.account {
        return Ok(Redirect::to(home_of(&a.role)).into_response());
    }
    login_form(&app, &ctx, None, None, "", "password")
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
}

/// A new session for `account`: cookie set, to its home page.
async fn start_session(
    app: &Shared,
    ctx: &Ctx,
    account: &accounts::Account,
) -> Result<Response, WebError> {
    let now = app.sys.clock.now().timestamp_millis();
    if let Some(old) = &ctx.token {
        accounts::end_session(&app.sys.pool, &app.sessions, old).await?;
    }
    let token = accounts::create_session(&app.sys.pool, &account.username, now).await?;
    let to = if account.must_change_password {
        "/password"
    } else {
        home_of(&account.role)
    };
    let mut r = Redirect::to(to).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            SESSION_COOKIE,
            token,
            app.options.cookie_secure,
            accounts::SESSION_MAX_MS / 1000,
        ),
    );
    Ok(r)
}

pub async fn login(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = app.sys.clock.now().timestamp_millis();
    match accounts::login_password(&app.sys.pool, &f.username, &f.password, &ctx.client, now).await
    {
        Ok(a) => start_session(&app, &ctx, &a).await,
        Err(e @ (accounts::Error::BadCredentials | accounts::Error::Throttled(_))) => login_form(
            &app,
            &ctx,
            Some(e.to_string()),
            None,
            &f.username,
            "password",
        ),
        Err(e) => Err(e.into()),
    }
}

pub async fn send_code(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = app.sys.clock.now().timestamp_millis();
    if f.username.trim().is_empty() {
        return login_form(&app, &ctx, Some("请填写账号".into()), None, "", "sms");
    }
    match accounts::send_login_code(&app.sys.pool, &*app.sys.sms, &f.username, &ctx.client, now)
        .await
    {
        Ok(()) => login_form(
            &app,
            &ctx,
            None,
            Some("如账号存在，验证码已发送至绑定手机，5分钟内有效".into()),
            &f.username,
            "sms",
        ),
        Err(e @ (accounts::Error::Throttled(_) | accounts::Error::Sms(_))) => {
            login_form(&app, &ctx, Some(e.to_string()), None, &f.username, "sms")
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn login_sms(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = app.sys.clock.now().timestamp_millis();
    match accounts::login_code(&app.sys.pool, &f.username, &f.code, now).await {
        Ok(a) => start_session(&app, &ctx, &a).await,
        Err(e @ accounts::Error::BadCode) => {
            login_form(&app, &ctx, Some(e.to_string()), None, &f.username, "sms")
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn logout(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    if let Some(t) = &ctx.token {
        accounts::end_session(&app.sys.pool, &app.sessions, t).await?;
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie(SESSION_COOKIE, String::new(), app.options.cookie_secure, 0),
    );
    Ok(r)
}

fn register_form(
    t: &Templates,
    app: &Shared,
    ctx: &Ctx,
    form: &accounts::Registration,
    errors: &std::collections::BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let kinds: Vec<_> = crate::domain::EnterpriseType::ALL
        .iter()
        .map(|k| context! { code => k.code(), label => k.label() })
        .collect();
    let districts = super::render::district_options(&app.sys.districts);
    let status = if errors.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::BAD_REQUEST
    };
    let html = t.page(
        app,
        ctx,
        "register.html",
        context! { form, errors, kinds, districts },
    )?;
    Ok((status, html).into_response())
}

pub async fn register_page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    register_form(
        &app.templates,
        &app,
        &ctx,
        &accounts::Registration::default(),
        &Default::default(),
    )
}

pub async fn register(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<accounts::Registration>,
) -> Result<Response, WebError> {
    let now = app.sys.clock.now().timestamp_millis();
    match accounts::register(&app.sys.pool, &*app.sys.sms, &app.sys.districts, &f, now).await {
        Ok(r) => Ok(app
            .templates
            .page(
                &app,
                &ctx,
                "registered.html",
                context! { username => r.username, mobile => r.mobile_masked, sms_sent => r.sms_sent },
            )?
            .into_response()),
        Err(accounts::Error::Invalid(errors)) => {
            register_form(&app.templates, &app, &ctx, &f, &errors)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn password_page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    let a = ctx.account()?;
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "password.html",
            context! { forced => a.must_change_password, errors => context!{} },
        )?
        .into_response())
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
}

pub async fn change_password(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<PasswordForm>,
) -> Result<Response, WebError> {
    let a = ctx.account()?;
    let now = app.sys.clock.now().timestamp_millis();
    match accounts::change_password(
        &app.sys.pool,
        &app.sessions,
        &a.username,
        &f.current_password,
        &f.new_password,
        &f.confirm,
        ctx.token.as_deref().unwrap_or_default(),
        now,
    )
    .await
    {
        Ok(()) => Ok(Redirect::to(home_of(&a.role)).into_response()),
        Err(accounts::Error::Invalid(errors)) => {
            let html = app.templates.page(
                &app,
                &ctx,
                "password.html",
                context! { forced => a.must_change_password, errors },
            )?;
            Ok((axum::http::StatusCode::BAD_REQUEST, html).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
