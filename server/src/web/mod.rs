//! The web forms for enterprises, districts, the city and operators
//! (DOMAIN.md R1–R7): server-rendered HTML (minijinja templates embedded in
//! the binary), sessions, CSRF, security headers and one authorization
//! layer.
//!
//! `app()` builds the router (tests drive it directly); `serve()` binds it.
//! Handlers are thin: they extract, call the domain modules (`accounts`,
//! `sites`, `records`, `warnings`) with the caller's scope, and render.
//! Must not: run SQL of its own beyond what a handler needs to pick a scope,
//! or decide business rules (those are in the domain and `workflows/`).

mod auth;
mod enterprise;
mod error;
mod ops;
mod render;
mod review;
mod session;

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
}

pub type Shared = Arc<AppState>;

/// Largest request body accepted (CSV imports of a few thousand staff).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What the configuration says about serving pages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Mark cookies `Secure` (HTTPS deployments).
    pub cookie_secure: bool,
    /// Take the client's address from `X-Forwarded-For` (behind a proxy).
    pub trust_forwarded_for: bool,
}

impl Options {
    pub fn of(config: &crate::config::Config) -> Options {
        Options {
            cookie_secure: config.cookie_secure,
            trust_forwarded_for: config.trust_forwarded_for,
        }
    }
}

/// The application's router, state attached.
pub fn app(sys: System, options: Options) -> Router {
    let state = Arc::new(AppState {
        sys,
        templates: render::Templates::new(),
        options,
        sessions: Default::default(),
    });
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
    let router = Router::new()
        .route("/", get(auth::root))
        .route("/healthz", get(|| async { "ok" }))
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
        .route("/warnings", get(review::warnings))
        .route("/warnings/{id}", get(review::warning_page))
        .route("/warnings/{id}/dispose", post(review::dispose))
        .route("/warnings/{id}/review", post(review::review))
        .route("/notices", get(review::notices))
        .route("/notices/read", post(review::mark_read))
        .route("/district", get(review::district_home))
        .route("/directory", get(review::directory))
        .route("/ops", get(ops::page))
        .route("/ops/run-comparison", post(ops::run_comparison))
        .route("/ops/clock", post(ops::advance_clock));
    let mut router = router
        .fallback(|| async { WebError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::layer,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // Every refusal a Chinese page (axum's rejections are English text).
        .layer(axum::middleware::from_fn(error::chinese_rejections));
    // Outermost, so error pages and refusals carry them too.
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router.with_state(state)
}

/// Serve `app` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
}
