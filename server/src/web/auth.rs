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
        Role::City => "/policy",
        Role::Operator => "/ops",
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

/// A refused login form answers 429 (a throttle) or 503 (every hashing
/// slot busy) rather than 400, so clients and proxies can tell.
fn refused_status(
    r: Result<Response, WebError>,
    e: &accounts::Error,
) -> Result<Response, WebError> {
    let mut r = r?;
    match e {
        accounts::Error::Throttled(accounts::Refusal::Busy) => {
            *r.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE
        }
        accounts::Error::Throttled(_) => {
            *r.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS
        }
        _ => {}
    }
    Ok(r)
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
    /// "1": after an SMS-code login, go to the password form (forgotten
    /// password, R1.7).
    #[serde(default)]
    reset: String,
}

/// A new session for `account`: cookie set, to its home page.
/// `by_sms`: the user just proved their bound mobile by SMS code;
/// `reset`: and wants to set a new password (to /password).
async fn start_session(
    app: &Shared,
    ctx: &Ctx,
    account: &accounts::Account,
    by_sms: bool,
    reset: bool,
) -> Result<Response, WebError> {
    let now = app.sys.clock.now().timestamp_millis();
    if let Some(old) = &ctx.token {
        accounts::end_session(&app.sys.pool, &app.sessions, old).await?;
    }
    let token = if by_sms {
        accounts::create_sms_session(&app.sys.pool, &account.username, now).await?
    } else {
        accounts::create_session(&app.sys.pool, &account.username, now).await?
    };
    let to = if account.must_change_password || (by_sms && reset) {
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
    match accounts::login_password(
        &app.sys.pool,
        &app.hashing,
        &f.username,
        &f.password,
        &ctx.client,
        now,
    )
    .await
    {
        Ok(a) => start_session(&app, &ctx, &a, false, false).await,
        Err(e @ (accounts::Error::BadCredentials | accounts::Error::Throttled(_))) => {
            refused_status(
                login_form(
                    &app,
                    &ctx,
                    Some(e.to_string()),
                    None,
                    &f.username,
                    "password",
                ),
                &e,
            )
        }
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
        Err(e @ (accounts::Error::Throttled(_) | accounts::Error::Sms(_))) => refused_status(
            login_form(&app, &ctx, Some(e.to_string()), None, &f.username, "sms"),
            &e,
        ),
        Err(e) => Err(e.into()),
    }
}

pub async fn login_sms(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = app.sys.clock.now().timestamp_millis();
    match accounts::login_code(&app.sys.pool, &f.username, &f.code, &ctx.client, now).await {
        Ok(a) => start_session(&app, &ctx, &a, true, f.reset == "1").await,
        Err(e @ (accounts::Error::BadCode | accounts::Error::Throttled(_))) => refused_status(
            login_form(&app, &ctx, Some(e.to_string()), None, &f.username, "sms"),
            &e,
        ),
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
    refused: Option<&accounts::Error>,
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
        context! { form, errors, kinds, districts, refused => refused.map(|e| e.to_string()) },
    )?;
    match refused {
        Some(e) => refused_status(Ok(html.into_response()), e),
        None => Ok((status, html).into_response()),
    }
}

pub async fn register_page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    register_form(
        &app.templates,
        &app,
        &ctx,
        &accounts::Registration::default(),
        &Default::default(),
        None,
    )
}

pub async fn register(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<accounts::Registration>,
) -> Result<Response, WebError> {
    let now = app.sys.clock.now().timestamp_millis();
    match accounts::register(
        &app.sys.pool,
        &app.hashing,
        &*app.sys.sms,
        &app.sys.districts,
        &f,
        &ctx.client,
        now,
    )
    .await
    {
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
            register_form(&app.templates, &app, &ctx, &f, &errors, None)
        }
        Err(e @ accounts::Error::Throttled(_)) => register_form(
            &app.templates,
            &app,
            &ctx,
            &f,
            &Default::default(),
            Some(&e),
        ),
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
            context! { forced => a.must_change_password, sms_proven => ctx.sms_proven, errors => context!{} },
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
    // A session that proved the bound mobile by SMS code sets a new password
    // without the old one (R1.7); the form then has no such field.
    let current = (!ctx.sms_proven).then_some(f.current_password.as_str());
    match accounts::change_password(
        &app.sys.pool,
        &app.hashing,
        &app.sessions,
        &a.username,
        current,
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
                context! { forced => a.must_change_password, sms_proven => ctx.sms_proven, errors },
            )?;
            Ok((axum::http::StatusCode::BAD_REQUEST, html).into_response())
        }
        Err(e @ accounts::Error::Throttled(_)) => {
            let html = app.templates.page(
                &app,
                &ctx,
                "password.html",
                context! {
                    forced => a.must_change_password,
                    sms_proven => ctx.sms_proven,
                    refused => e.to_string(),
                    errors => context!{},
                },
            )?;
            Ok((axum::http::StatusCode::TOO_MANY_REQUESTS, html).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
