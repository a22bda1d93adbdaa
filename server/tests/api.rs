//! The operators' JSON API (issue 12): refused without a valid token; with
//! one, search, one instance with its history and chain, a repair with a
//! reason recorded under the token's name; the OpenAPI document served and
//! describing every path.

#[path = "support/web.rs"]
mod web;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use web::World;

async fn call(
    w: &World,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = w.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_api_needs_a_token_lists_shows_and_repairs_and_is_described() {
    let w = World::new("2026-12-01T04:59:00+08:00").await;
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    let (status, _) = call(&w, "GET", "/api/v1/instances", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&w, "GET", "/api/v1/instances", Some("nonsense"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("令牌"));
    let token = server::api_tokens::create(&w.sys.pool, "监控脚本", 0)
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT token_sha256 FROM api_tokens")
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    assert_ne!(stored, token, "only the hash is stored");

    let (status, list) = call(
        &w,
        "GET",
        "/api/v1/instances?kind=warning&status=running",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert!(!list.is_empty());
    let id = list[0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/instances/{}", urlencoding::encode(&id));
    let (status, one) = call(&w, "GET", &path, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["instance"]["state"], "awaiting_disposal");
    assert!(one["timers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "disposal_deadline"));
    assert!(one["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "activity_scheduled"));
    assert!(one["chain"]["broken"].is_null());

    let (status, body) = call(
        &w,
        "POST",
        &format!("{path}/terminate"),
        Some(&token),
        Some(json!({"reason": ""})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = call(
        &w,
        "POST",
        &format!("{path}/terminate"),
        Some(&token),
        Some(json!({"reason": "重复预警"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "terminated");
    let (_, one) = call(&w, "GET", &path, Some(&token), None).await;
    assert!(one["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "operator_action"
            && e["operator"] == "接口 监控脚本"
            && e["reason"] == "重复预警"));
    let (status, _) = call(
        &w,
        "POST",
        &format!("{path}/terminate"),
        Some(&token),
        Some(json!({"reason": "again"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = call(&w, "GET", "/api/v1/instances/nothing", Some(&token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, doc) = call(&w, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/instances",
        "/api/v1/instances/{id}",
        "/api/v1/instances/{id}/terminate",
        "/api/v1/instances/{id}/retry",
        "/api/v1/instances/{id}/signal",
        "/api/v1/tasks/{key}/retry",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} described");
    }
    assert!(doc["components"]["securitySchemes"]["token"].is_object());
    assert!(doc["components"]["schemas"]["InstanceDetail"].is_object());
}
