//! The operators' JSON API (issue 12): what `/ops/instances` and the
//! `server instances` commands do — search, one instance with its whole
//! history, repairs with a reason — for scripts and other consoles.
//! Authenticated by `Authorization: Bearer <token>`, a token made with
//! `server admin create-api-token` and stored only as its SHA-256; no
//! cookies, so no CSRF. Described by OpenAPI generated from this code
//! (`GET /api/v1/openapi.json`, utoipa).

use super::Shared;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::store::{InstanceFilter, InstanceRow, Page, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "成都市建筑业企业疫情防控模块 · 运维接口",
        version = "1",
        description = "Workflow instances: search, whole histories, repairs with a reason."
    ),
    paths(list, show, terminate, retry, retry_task, signal),
    components(schemas(
        InstanceOut, InstanceDetail, TimerOut, TaskOut, ChainOut, RepairIn, SignalIn, Problem
    )),
    modifiers(&Bearer),
    security(("token" = []))
)]
pub struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "token",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// The API's routes (under `/api/v1`), outside the pages' session layer.
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/instances", get(list))
        .route("/instances/{id}", get(show))
        .route("/instances/{id}/terminate", post(terminate))
        .route("/instances/{id}/retry", post(retry))
        .route("/instances/{id}/signal", post(signal))
        .route("/tasks/{key}/retry", post(retry_task))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A refusal, in words.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    error: String,
}

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(Problem { error: self.1 })).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "api");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "内部错误，已记录".into())
}

fn refused(e: engine::runtime::Error) -> ApiError {
    use engine::runtime::Error as E;
    match e {
        E::Refused(_) | E::Terminated(_) | E::Step(_) => {
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        E::UnknownInstance(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        other => internal(other),
    }
}

/// The operator a valid token names.
pub struct Operator(String, String);

impl FromRequestParts<Shared> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "需要运维接口令牌".into()))?;
        let name = crate::api_tokens::name_of(&app.sys.reader, token)
            .await
            .map_err(internal)?;
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let client =
            super::session::client_address(&parts.headers, peer, app.options.trust_forwarded_for);
        name.map(|n| Operator(n, client))
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "令牌无效或已撤销".into()))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceOut {
    id: String,
    kind: String,
    definition_version: i64,
    definition_hash: String,
    state: String,
    /// running, completed, failed or terminated.
    status: String,
    status_label: Option<String>,
    enterprise_id: Option<String>,
    district: Option<String>,
    person: Option<String>,
    parent_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<InstanceRow> for InstanceOut {
    fn from(r: InstanceRow) -> Self {
        InstanceOut {
            id: r.id,
            kind: r.kind,
            definition_version: r.definition_version,
            definition_hash: r.definition_hash,
            state: r.state,
            status: r.status,
            status_label: r.status_label,
            enterprise_id: r.search.get("enterprise_id").cloned(),
            district: r.search.get("district").cloned(),
            person: r.search.get("person").cloned(),
            parent_id: r.parent.map(|p| p.instance_id),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct Search {
    kind: Option<String>,
    status: Option<String>,
    state: Option<String>,
    enterprise: Option<String>,
    district: Option<String>,
    person: Option<String>,
    /// Definition version.
    version: Option<i64>,
    /// Started on or after this Chengdu day (YYYY-MM-DD) …
    from: Option<String>,
    /// … and on or before this one.
    to: Option<String>,
    /// At most 500.
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Search instances, newest first.
#[utoipa::path(get, path = "/api/v1/instances", params(Search),
    responses((status = 200, body = [InstanceOut]), (status = 401, body = Problem)))]
async fn list(
    State(app): State<Shared>,
    op: Operator,
    Query(q): Query<Search>,
) -> Result<Json<Vec<InstanceOut>>, ApiError> {
    let asked = format!("{q:?}");
    crate::audit::api(&app.sys, &op.0, &op.1, "api_search_instances", &asked)
        .await
        .map_err(internal)?;
    let filter = InstanceFilter {
        kind: q.kind,
        status: q.status,
        state: q.state,
        search: Vec::new(),
        definition_version: q.version,
        created_from: q
            .from
            .as_deref()
            .and_then(|d| crate::console::chengdu_day(d, 0)),
        created_to: q
            .to
            .as_deref()
            .and_then(|d| crate::console::chengdu_day(d, 1)),
    }
    .search("enterprise_id", q.enterprise)
    .search("district", q.district)
    .search("person", q.person);
    let page = Page {
        limit: q.limit.unwrap_or(50).clamp(1, 500),
        offset: q.offset.unwrap_or(0).max(0),
    };
    let rows = app
        .sys
        .store
        .instances(&filter, page)
        .await
        .map_err(internal)?;
    Ok(Json(rows.into_iter().map(InstanceOut::from).collect()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimerOut {
    id: String,
    name: String,
    due_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskOut {
    /// The idempotency key.
    key: String,
    name: String,
    status: String,
    attempt: i64,
    max_attempts: i64,
    last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainOut {
    rows: i64,
    /// Where the history's hash chain breaks, if it does.
    broken: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceDetail {
    instance: InstanceOut,
    #[schema(value_type = Object)]
    vars: Value,
    timers: Vec<TimerOut>,
    tasks: Vec<TaskOut>,
    /// `engine::inspect` events, each with `seq`, `at` and `kind`.
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
    chain: ChainOut,
}

/// One instance: variables, pending timers, tasks, whole history.
#[utoipa::path(get, path = "/api/v1/instances/{id}", params(("id" = String, Path)),
    responses((status = 200, body = InstanceDetail), (status = 404, body = Problem)))]
async fn show(
    State(app): State<Shared>,
    op: Operator,
    Path(id): Path<String>,
) -> Result<Json<InstanceDetail>, ApiError> {
    crate::audit::api(&app.sys, &op.0, &op.1, "api_show_instance", &id)
        .await
        .map_err(internal)?;
    let store = &app.sys.store;
    let row = store
        .instance(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("没有实例 {id}")))?;
    let state = engine::inspect::state_of(&row).map_err(internal)?;
    let timers = store
        .pending_timers(
            Some(&id),
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .map_err(internal)?
        .into_iter()
        .map(|t| TimerOut {
            id: t.timer_id,
            name: t.name,
            due_at: t.due_at,
        })
        .collect();
    let tasks = store
        .tasks_of(&id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|t| TaskOut {
            key: t.id,
            name: t.name,
            status: t.status.as_str().into(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            last_error: t.last_error,
        })
        .collect();
    let history = store.history(&id).await.map_err(internal)?;
    let events = engine::inspect::events(&history)
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    let chain = store.verify_history(&id).await.map_err(internal)?;
    Ok(Json(InstanceDetail {
        vars: serde_json::to_value(&*state.vars).unwrap_or(Value::Null),
        instance: row.into(),
        timers,
        tasks,
        events,
        chain: ChainOut {
            rows: chain.rows,
            broken: chain.broken.map(|b| b.to_string()),
        },
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RepairIn {
    /// Why (recorded in the instance's history with the token's name).
    reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignalIn {
    name: String,
    /// The role acted for (the definition must allow it).
    role: String,
    /// The account id acted for.
    actor: String,
    #[schema(value_type = Object)]
    #[serde(default)]
    payload: Value,
    reason: String,
}

fn repair(op: &Operator, reason: &str) -> Result<engine::runtime::Repair, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "请填写原因（不超过500字）".into(),
        ));
    }
    Ok(engine::runtime::Repair {
        operator: format!("接口 {}", op.0),
        reason: reason.into(),
    })
}

/// Carry out a repair and answer with the instance as it is now.
async fn carry_out(
    app: &Shared,
    op: &Operator,
    reason: &str,
    action: crate::console::RepairAction,
) -> Result<Json<InstanceOut>, ApiError> {
    let by = repair(op, reason)?;
    let (what, target) = crate::audit::repair(&action);
    crate::audit::api(&app.sys, &op.0, &op.1, what, &target)
        .await
        .map_err(internal)?;
    let id = match crate::console::repair(&app.sys, action, &by).await {
        Ok(id) => id,
        Err(crate::console::RepairError::Runtime(e)) => return Err(refused(e)),
        Err(e @ crate::console::RepairError::NoTask(_)) => {
            return Err(ApiError(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e) => return Err(internal(e)),
    };
    let row = app
        .sys
        .store
        .instance(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("没有实例 {id}")))?;
    Ok(Json(row.into()))
}

/// End an instance.
#[utoipa::path(post, path = "/api/v1/instances/{id}/terminate", params(("id" = String, Path)),
    request_body = RepairIn,
    responses((status = 200, body = InstanceOut), (status = 422, body = Problem)))]
async fn terminate(
    State(app): State<Shared>,
    op: Operator,
    Path(id): Path<String>,
    Json(r): Json<RepairIn>,
) -> Result<Json<InstanceOut>, ApiError> {
    carry_out(
        &app,
        &op,
        &r.reason,
        crate::console::RepairAction::Terminate { id },
    )
    .await
}

/// Apply the failed step's input again, on the latest definition.
#[utoipa::path(post, path = "/api/v1/instances/{id}/retry", params(("id" = String, Path)),
    request_body = RepairIn,
    responses((status = 200, body = InstanceOut), (status = 422, body = Problem)))]
async fn retry(
    State(app): State<Shared>,
    op: Operator,
    Path(id): Path<String>,
    Json(r): Json<RepairIn>,
) -> Result<Json<InstanceOut>, ApiError> {
    carry_out(
        &app,
        &op,
        &r.reason,
        crate::console::RepairAction::RetryStep { id },
    )
    .await
}

/// Send a signal on someone's behalf.
#[utoipa::path(post, path = "/api/v1/instances/{id}/signal", params(("id" = String, Path)),
    request_body = SignalIn,
    responses((status = 200, body = InstanceOut), (status = 422, body = Problem)))]
async fn signal(
    State(app): State<Shared>,
    op: Operator,
    Path(id): Path<String>,
    Json(s): Json<SignalIn>,
) -> Result<Json<InstanceOut>, ApiError> {
    let action = crate::console::RepairAction::Signal {
        id,
        name: s.name,
        payload: s.payload,
        actor: engine::Actor {
            role: s.role,
            id: s.actor,
            name: None,
        },
    };
    carry_out(&app, &op, &s.reason, action).await
}

/// Run once more an activity task that used up its attempts.
#[utoipa::path(post, path = "/api/v1/tasks/{key}/retry", params(("key" = String, Path)),
    request_body = RepairIn,
    responses((status = 200, body = InstanceOut), (status = 422, body = Problem)))]
async fn retry_task(
    State(app): State<Shared>,
    op: Operator,
    Path(key): Path<String>,
    Json(r): Json<RepairIn>,
) -> Result<Json<InstanceOut>, ApiError> {
    carry_out(
        &app,
        &op,
        &r.reason,
        crate::console::RepairAction::RetryTask { key },
    )
    .await
}
