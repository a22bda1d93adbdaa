//! `/metrics` (Prometheus text) and the middleware counting every request
//! by its matched route.
//!
//! Access: `Authorization: Bearer <metrics_token>` (config
//! `metrics_token` / `EPI_METRICS_TOKEN`), compared in constant time; a
//! wrong or missing token gets 401. Without a configured token the route
//! answers 404, as for any unknown page, so nothing about the process leaks.
//!
//! The text is the application's metrics (`crate::metrics`, incidents read
//! from the store at scrape time) followed by the runtime's
//! (`Runtime::metrics_text`).

use super::Shared;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

/// Middleware: count the request and its latency under its route template
/// (`/warnings/:id`; `unmatched` for the fallback), never the raw path.
pub async fn record(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_label(p.as_str()));
    let method = method_label(req.method());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    app.sys.metrics.http_request(
        method,
        route.as_deref().unwrap_or("unmatched"),
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}

/// axum's `/warnings/{id}` as `/warnings/:id`: braces inside a label value
/// are valid Prometheus text but trip simple parsers.
fn route_label(template: &str) -> String {
    if template.contains('{') {
        template.replace('{', ":").replace('}', "")
    } else {
        template.to_string()
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// How long a scrape waits for the store's gauges.
const STORE_READ: std::time::Duration = std::time::Duration::from_secs(3);

/// GET /metrics.
pub async fn metrics(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let token = &app.options.metrics_token;
    if token.is_empty() {
        return super::WebError::NotFound.into_response();
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(given.trim(), token.expose()) {
        return unauthorized();
    }
    let sys = &app.sys;
    // The gauges read from the store (incidents, instances by state,
    // pending timers) wait for the database; a scrape during a long write
    // (the 05:00 run on SQLite's one writer) answers in time all the same,
    // with the counters current and those gauges from the last scrape.
    let read = async {
        sys.metrics
            .refresh_incidents(&sys.store)
            .await
            .map_err(|e| e.to_string())?;
        sys.runtime.metrics_text().await.map_err(|e| e.to_string())
    };
    let runtime = match tokio::time::timeout(STORE_READ, read).await {
        Ok(Ok(text)) => {
            sys.metrics.set_store_fresh(true);
            text
        }
        failed => {
            let cause = match failed {
                Ok(Err(e)) => e,
                _ => format!("no answer within {STORE_READ:?}"),
            };
            tracing::warn!(%cause, "metrics: store gauges not read, earlier values served");
            sys.metrics.set_store_fresh(false);
            sys.runtime.metrics().encode()
        }
    };
    let mut text = sys.metrics.encode();
    text.push_str(&runtime);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Equal secrets, in time independent of where they differ (and, through
/// the digests, of their lengths).
fn same_secret(given: &str, expected: &str) -> bool {
    crate::secret::same(given.as_bytes(), expected.as_bytes())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
        Html(
            "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>提示</title>\
             <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main class=\"narrow\">\
             <h1>提示</h1><p class=\"error\" role=\"alert\">监控指标需要运维令牌（Authorization: Bearer …）才能读取。</p>\
             <p><a href=\"/\">返回首页</a></p></main></body></html>",
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_templates_become_labels_without_braces() {
        assert_eq!(
            super::route_label("/warnings/{id}/dispose"),
            "/warnings/:id/dispose"
        );
        assert_eq!(super::route_label("/ops"), "/ops");
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(super::same_secret("abc", "abc"));
        assert!(!super::same_secret("abd", "abc"));
        assert!(!super::same_secret("", "abc"));
        assert!(!super::same_secret("abcd", "abc"));
    }
}
