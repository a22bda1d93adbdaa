//! `/metrics` scraped and parsed as Prometheus would (`prometheus-parse`):
//! refused without the operator token (404 when none is configured), and
//! with it the families of the application (HTTP by matched route,
//! comparison runs, health-commission requests, SMS, incidents) and of the
//! runtime (steps, timers) with the values a comparison run leaves.

#[path = "support/web.rs"]
mod web;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use engine::clock::{Clock, ManualClock};
use prometheus_parse::{Scrape, Value};
use server::adapters::health::{HealthCommission, HttpHealth, HttpOptions};
use server::adapters::health_sim::{SimRates, Simulator};
use server::adapters::sms::{HttpSms, Message, MeteredSms, SmsGateway};
use server::config::{Config, HealthMode, Secret};
use server::metrics::AppMetrics;
use server::system::{ClockChoice, Paths, System};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use web::Client;

const START: &str = "2026-12-01T04:59:00+08:00";
const TOKEN: &str = "metrics-token-0123456789";

/// The demo system with the health commission reached over HTTP (the
/// simulator on loopback), SMS to the log, a manual clock; and its app
/// with `token` for `/metrics`.
async fn system(token: &str) -> (System, Router, Vec<(String, String)>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rates = SimRates {
        positive: 0.05,
        red: 0.03,
        yellow: 0.03,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::adapters::health_sim::serve(
        listener,
        Simulator::new(2022, rates),
        "health-token".into(),
    ));
    let mut config = Config {
        database_url: format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display()),
        ..Default::default()
    };
    config.health.mode = HealthMode::Http;
    config.health.base_url = health_url;
    config.health.token = Secret::new("health-token");
    config.health.batch_size = 7; // several requests for the demo's staff
    config.metrics_token = Secret::new(token);
    let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
    let sys = System::open(
        &config,
        &Paths::repository(),
        ClockChoice::Adjustable(clock.clone()),
        engine::runtime::Options::default(),
    )
    .await
    .unwrap();
    let creds = server::demo::seed(&sys.pool, &sys.districts, clock.now().timestamp_millis())
        .await
        .unwrap();
    sys.runtime.run_until_idle().await.unwrap();
    let app = server::web::app(sys.clone(), server::web::Options::of(&config));
    let creds = creds
        .into_iter()
        .map(|c| (c.username, c.password))
        .collect();
    (sys, app, creds, dir)
}

async fn scrape(app: &Router, authorization: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::get("/metrics");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// The sum of `metric`'s samples whose labels include `labels`; None when
/// there is no such sample.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
        .collect();
    (!found.is_empty()).then(|| found.iter().sum())
}

#[tokio::test]
async fn metrics_are_refused_without_the_token_and_parse_with_it() {
    let (sys, app, creds, _dir) = system(TOKEN).await;
    let password = |u: &str| creds.iter().find(|(n, _)| n == u).unwrap().1.clone();

    // Refused: no token, another token, a token not as a bearer.
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some(TOKEN),
        Some("Basic bWV0cmljczp4"),
    ] {
        let (status, body) = scrape(&app, auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(body.contains("运维令牌"), "{body}");
        assert!(!body.contains("http_requests_total"));
    }

    // Some traffic: the operator runs a comparison; a warning page (an id
    // in the path); a page that does not exist.
    let mut op = Client::new(app.clone());
    op.login("operator", &password("operator"), "/ops").await;
    op.post("/ops/run-comparison", &[])
        .await
        .assert_redirect("/ops");
    sys.runtime.run_until_idle().await.unwrap();
    let warning: String = sqlx::query_scalar("SELECT id FROM warnings ORDER BY id LIMIT 1")
        .fetch_one(&sys.pool)
        .await
        .expect("the run opened warnings");
    let mut e = Client::new(app.clone());
    e.login(
        server::demo::ENTERPRISE_USER,
        &password(server::demo::ENTERPRISE_USER),
        "/home",
    )
    .await;
    e.get(&format!("/warnings/{warning}")).await;
    assert_eq!(
        e.get("/no/such/page/4711").await.status,
        StatusCode::NOT_FOUND
    );

    let (status, text) = scrape(&app, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let s = parse(&text);

    // HTTP by matched route: templates, never ids.
    assert!(
        value(
            &s,
            "http_requests_total",
            &[("method", "POST"), ("route", "/ops/run-comparison")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        value(
            &s,
            "http_requests_total",
            &[("method", "POST"), ("route", "/login"), ("status", "303")]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        value(&s, "http_requests_total", &[("route", "/warnings/:id")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &s,
            "http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        )
        .unwrap()
            >= 1.0
    );
    for x in s
        .samples
        .iter()
        .filter(|x| x.metric == "http_requests_total")
    {
        let route = x.labels.get("route").unwrap();
        assert!(
            route == "unmatched" || !route.chars().any(|c| c.is_ascii_digit()),
            "a raw path as a label: {route}"
        );
    }
    assert!(
        value(
            &s,
            "http_request_duration_seconds_count",
            &[("route", "/ops/run-comparison")]
        )
        .unwrap()
            >= 1.0
    );

    // The comparison run: one done, its persons as the run row says.
    let persons: i64 = sqlx::query_scalar("SELECT persons FROM comparison_runs")
        .fetch_one(&sys.pool)
        .await
        .unwrap();
    let new_warnings: i64 = sqlx::query_scalar("SELECT new_warnings FROM comparison_runs")
        .fetch_one(&sys.pool)
        .await
        .unwrap();
    assert!(persons > 0);
    assert_eq!(
        value(&s, "comparison_runs_total", &[("outcome", "done")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "comparison_last_run_persons", &[]),
        Some(persons as f64)
    );
    assert_eq!(
        value(&s, "comparison_persons_total", &[]),
        Some(persons as f64)
    );
    assert_eq!(
        value(&s, "comparison_new_warnings_total", &[]),
        Some(new_warnings as f64)
    );
    assert_eq!(
        value(
            &s,
            "comparison_run_duration_seconds_count",
            &[("outcome", "done")]
        ),
        Some(1.0)
    );

    // The health commission: one request per batch of 7, none failed.
    let staff: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM staff")
        .fetch_one(&sys.pool)
        .await
        .unwrap();
    assert_eq!(
        value(&s, "health_gateway_request_duration_seconds_count", &[]),
        Some(((staff + 6) / 7) as f64)
    );
    assert_eq!(value(&s, "health_gateway_errors_total", &[]), None);

    // SMS: the warnings' notices to enterprises, as the log has them.
    let logged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sms_log")
        .fetch_one(&sys.pool)
        .await
        .unwrap();
    assert!(logged > 0);
    assert_eq!(value(&s, "sms_sent_total", &[]), Some(logged as f64));

    // Incidents: none; read from the store on this scrape.
    assert_eq!(value(&s, "metrics_store_gauges_fresh", &[]), Some(1.0));
    for g in [
        "incidents_failed_instances",
        "incidents_failed_tasks",
        "incidents_retrying_tasks",
    ] {
        assert_eq!(value(&s, g, &[]), Some(0.0), "{g}");
    }

    // The runtime's part: steps of the comparison and the warnings, timers.
    assert!(
        value(&s, "workflow_steps_total", &[("workflow", "comparison")]).unwrap() >= 2.0,
        "{text}"
    );
    assert!(value(&s, "workflow_steps_total", &[("workflow", "warning")]).unwrap() >= 1.0);
    assert!(value(&s, "workflow_pending_timers", &[]).unwrap() >= 1.0);
    assert!(s.docs.contains_key("workflow_timer_lag_seconds"));
    assert!(value(&s, "workflow_instances", &[("workflow", "warning")]).unwrap() >= 1.0);
}

#[tokio::test]
async fn without_a_configured_token_metrics_is_not_there() {
    let (_sys, app, _, _dir) = system("").await;
    for auth in [None, Some("Bearer "), Some("Bearer x")] {
        let (status, body) = scrape(&app, auth).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{auth:?}");
        assert!(!body.contains("http_requests_total"));
    }
}

/// An axum server on loopback answering every POST with `code`.
async fn failing(path: &'static str, code: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move || async move { StatusCode::from_u16(code).unwrap() }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn gateway_failures_are_counted_by_kind() {
    let m = AppMetrics::new();
    let health = HttpHealth::new(HttpOptions {
        base_url: failing("/v1/health/query", 503).await,
        token: Secret::new("t"),
        timeout: Duration::from_secs(5),
        batch_size: 10,
        concurrency: 1,
    })
    .unwrap()
    .with_metrics(m.clone());
    let ids = (0..5).map(|i| format!("id{i}")).collect();
    assert!(health
        .query(chrono::Utc::now(), 24, ids)
        .await
        .unwrap_err()
        .is_retryable());

    let refusing = HttpSms::new(
        failing("/v1/sms/send", 400).await,
        Secret::new("t"),
        Duration::from_secs(5),
    )
    .unwrap();
    let sms = MeteredSms::new(Arc::new(refusing), m.clone());
    let msg = Message::new(
        "13800000000",
        "warning_opened",
        serde_json::json!({}),
        "k/1",
    );
    assert!(sms.send(msg).await.is_err());

    let s = parse(&m.encode());
    assert_eq!(
        value(&s, "health_gateway_errors_total", &[("kind", "http_5xx")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "health_gateway_request_duration_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "sms_failed_total",
            &[("template", "warning_opened"), ("kind", "rejected")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "sms_sent_total", &[]), None);
}

/// deploy/grafana-dashboard.json is valid JSON and every metric its
/// queries name is one the server or the runtime defines.
#[test]
fn the_dashboard_queries_only_metrics_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("../deploy/grafana-dashboard.json")).unwrap();
    let defined =
        read("../application/src/metrics.rs") + read("../engine/src/runtime/metrics.rs").as_str();
    let mut exprs = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 20, "{}", exprs.len());
    let prefixes = [
        "http_",
        "workflow_",
        "comparison_",
        "health_gateway_",
        "sms_",
        "incidents_",
    ];
    let mut named = 0;
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !prefixes.iter().any(|p| word.starts_with(p)) {
                continue;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            assert!(
                defined.contains(&format!("\"{family}\"")),
                "{family} in `{e}` is not a metric"
            );
            named += 1;
        }
    }
    assert!(named >= exprs.len());
}
