//! The web forms for enterprises, districts, the city and operators
//! (DOMAIN.md R1–R7): server-rendered HTML (minijinja templates embedded in
//! the binary), sessions, CSRF, security headers and one authorization
//! layer.
//!
//! `app()` builds the router (tests drive it directly); `serve()` binds it
//! with the server's limits (`ServeLimits`: header-read and request
//! timeouts, a cap on open connections).
//! Handlers are thin: they extract, call the domain modules (`accounts`,
//! `sites`, `records`, `warnings`) with the caller's scope, and render.
//! Must not: run SQL of its own beyond what a handler needs to pick a scope,
//! or decide business rules (those are in the domain and `workflows/`).

mod admin;
pub mod api;
mod audit;
mod auth;
mod enterprise;
mod error;
mod explain;
mod forms;
mod instances;
mod metrics;
mod ops;
mod policy;
mod render;
mod review;
mod session;
mod versions;

pub use error::WebError;
pub use session::Ctx;

use crate::system::System;
use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tower_http::set_header::SetResponseHeaderLayer;

/// What every handler can reach.
pub struct AppState {
    pub sys: System,
    pub templates: render::Templates,
    pub options: Options,
    /// Sessions read recently (see `accounts::SessionCache`).
    pub sessions: crate::accounts::SessionCache,
    /// The bound on concurrent password hashing (`accounts::Hashing`).
    pub hashing: crate::accounts::Hashing,
}

pub type Shared = Arc<AppState>;

/// Largest request body accepted (CSV imports of a few thousand staff).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What the configuration says about serving pages.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Mark cookies `Secure` (HTTPS deployments).
    pub cookie_secure: bool,
    /// Take the client's address from `X-Forwarded-For` (behind a proxy).
    pub trust_forwarded_for: bool,
    /// The bearer token of `/metrics`; empty: not served (404).
    pub metrics_token: crate::config::Secret,
}

impl Options {
    pub fn of(config: &crate::config::Config) -> Options {
        Options {
            cookie_secure: config.cookie_secure,
            trust_forwarded_for: config.trust_forwarded_for,
            metrics_token: config.metrics_token.clone(),
        }
    }
}

/// The application's router, state attached; password hashing bounded by
/// the process's `Hashing::global()`.
pub fn app(sys: System, options: Options) -> Router {
    app_with_hashing(sys, options, crate::accounts::Hashing::global().clone())
}

/// The same with a bound of its own (tests observe its peak).
pub fn app_with_hashing(
    sys: System,
    options: Options,
    hashing: crate::accounts::Hashing,
) -> Router {
    let state = Arc::new(AppState {
        sys,
        templates: render::Templates::new(),
        options,
        sessions: Default::default(),
        hashing,
    });
    let pages = pages()
        .fallback(|| async { WebError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::layer,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // Every refusal a Chinese page (axum's rejections are English text).
        .layer(axum::middleware::from_fn(error::chinese_rejections));
    // The JSON API beside the pages: no session, CSRF or Chinese HTML
    // error pages (it answers JSON and authenticates by token).
    let router = Router::new().nest("/api/v1", api::router()).merge(pages);
    // Outermost, so error pages and refusals carry them too.
    security_headers(router)
        // Requests and latency by matched route, around everything else.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .with_state(state)
}

/// The server-rendered pages, area by area.
fn pages() -> Router<Shared> {
    Router::new()
        .merge(public_routes())
        .merge(enterprise_routes())
        .merge(review_routes())
        .merge(ops_routes())
        .merge(policy_routes())
        .merge(admin_routes())
}

/// Headers every answer carries unless its handler set them.
fn security_headers(mut router: Router<Shared>) -> Router<Shared> {
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}

/// Health, metrics, the stylesheet, and signing in, up and out.
fn public_routes() -> Router<Shared> {
    Router::new()
        .route("/", get(auth::root))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics::metrics))
        .route("/static/app.css", get(render::stylesheet))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/login/code", post(auth::send_code))
        .route("/login/sms", post(auth::login_sms))
        .route("/logout", post(auth::logout))
        .route("/register", get(auth::register_page).post(auth::register))
        .route(
            "/password",
            get(auth::password_page).post(auth::change_password),
        )
}

/// An enterprise's sites, staff and records.
fn enterprise_routes() -> Router<Shared> {
    Router::new()
        .route("/home", get(enterprise::home))
        .route("/sites", get(enterprise::sites))
        .route("/sites/addresses", post(enterprise::add_address))
        .route(
            "/sites/addresses/{id}/delete",
            post(enterprise::delete_address),
        )
        .route("/sites/liaison", post(enterprise::set_liaison))
        .route(
            "/staff",
            get(enterprise::staff).post(enterprise::add_person),
        )
        .route(
            "/staff/import",
            get(enterprise::import_page).post(enterprise::import),
        )
        .route(
            "/staff/{id}",
            get(enterprise::person_page).post(enterprise::update_person),
        )
        .route("/staff/{id}/delete", post(enterprise::delete_person))
        .route(
            "/records",
            get(enterprise::records).post(enterprise::create_record),
        )
        .route(
            "/records/{id}",
            get(enterprise::record_page).post(enterprise::update_record),
        )
}

/// Warnings, notices, the district's pages and the directory.
fn review_routes() -> Router<Shared> {
    Router::new()
        .route("/warnings", get(review::warnings))
        .route("/warnings/{id}", get(review::warning_page))
        .route("/warnings/{id}/dispose", post(review::dispose))
        .route("/warnings/{id}/review", post(review::review))
        .route("/notices", get(review::notices))
        .route("/notices/read", post(review::mark_read))
        .route("/district", get(review::district_home))
        .route("/directory", get(review::directory))
}

/// Operations: the ops page, explanations, instances and their repairs.
fn ops_routes() -> Router<Shared> {
    Router::new()
        .route("/ops", get(ops::page))
        .route("/explain", get(explain::page))
        .route("/ops/instances", get(instances::search))
        .route("/ops/instances/{id}", get(instances::instance))
        .route("/ops/instances/{id}/terminate", post(instances::terminate))
        .route("/ops/instances/{id}/retry", post(instances::retry_step))
        .route("/ops/instances/{id}/signal", post(instances::signal))
        .route("/ops/tasks/{key}/retry", post(instances::retry_task))
        .route("/ops/definitions/{hash}", get(instances::definition))
        .route("/ops/run-comparison", post(ops::run_comparison))
        .route("/ops/rerun-comparison", post(ops::rerun_comparison))
        .route("/ops/clock", post(ops::advance_clock))
}

/// The city's policy: validation, backtests, published versions.
fn policy_routes() -> Router<Shared> {
    Router::new()
        .route("/policy", get(policy::home))
        .route("/policy/validate", post(policy::validate))
        .route(
            "/policy/backtest",
            get(policy::backtest_page).post(policy::backtest),
        )
        .route("/policy/backtest.csv", post(policy::backtest_csv))
        .route("/policy/versions", get(versions::page))
        .route("/policy/versions/publish", post(versions::publish))
        .route("/policy/versions/rollback", post(versions::rollback))
}

/// Accounts, enterprise imports, the audit and the service window.
fn admin_routes() -> Router<Shared> {
    Router::new()
        .route("/admin", get(admin::page))
        .route("/admin/accounts", post(admin::create))
        .route("/admin/accounts/disable", post(admin::disable))
        .route("/admin/accounts/enable", post(admin::enable))
        .route("/admin/accounts/reset", post(admin::reset))
        .route(
            "/admin/enterprises",
            get(admin::import_page).post(admin::import),
        )
        .route("/admin/audit", get(audit::page))
        .route("/window", get(admin::window))
        .route("/window/switch", post(admin::switch))
}

/// What `serve` allows a client. A slow or idle client holds a connection
/// (and a file descriptor the database also needs) only so long, and never
/// more than `max_connections` are open at once: past it, new connections
/// wait in the kernel's backlog until one ends.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// The whole request head must arrive within this, counted from when
    /// the server starts waiting for it (so an idle keep-alive connection
    /// ends after it too).
    pub header_read: std::time::Duration,
    /// A request, its body included, must be answered within this; past
    /// it the answer is 408 and the connection closes.
    pub request: std::time::Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Defaults: 15 s for the head, 60 s for a request (a 4 MiB CSV over a
/// slow line), connections as `default_max_connections()`.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read: HEADER_READ_TIMEOUT,
            request: REQUEST_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

/// Half the process's open-file limit (the other half is left to the
/// database, its WAL and the logs), between 64 and 10,000; 512 when the
/// limit cannot be read.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        });
    soft.map_or(512, |n| (n / 2).clamp(64, 10_000))
}

/// Serve `app` on `listener` until the process ends, with the default
/// `ServeLimits`.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    serve_with(listener, app, ServeLimits::default()).await
}

/// Serve `app` on `listener` (HTTP/1.1) within `limits`. The client's
/// address reaches handlers as `ConnectInfo<SocketAddr>`, as with
/// `axum::serve`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let request_timeout = limits.request;
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(request_timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => timed_out(),
            }
        },
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = open
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, or a connection gone before it
                // was accepted: pause (not spin) and go on.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(app.clone(), req)
            });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// The answer to a request that took longer than `ServeLimits::request`.
fn timed_out() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        [
            (header::CONNECTION, "close"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "请求超时，请重试",
    )
        .into_response()
}
