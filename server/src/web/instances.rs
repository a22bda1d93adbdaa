//! The operator console's read side (issue 12, R8.4): search workflow
//! instances, one instance with its whole history as events
//! (`engine::inspect`), its variables, pending timers by name, activity
//! tasks with attempts and last errors, and the definition version it runs
//! (linked to its text). Everything through the engine's store API; no SQL
//! on engine tables here.

use super::{Ctx, Shared, WebError};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use engine::inspect;
use engine::store::{InstanceFilter, InstanceRow, Page, Store};
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

const PAGE_SIZE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    enterprise: String,
    #[serde(default)]
    district: String,
    #[serde(default)]
    person: String,
    /// Definition version.
    #[serde(default)]
    version: String,
    /// Started on or after this day, and before the day after `to`
    /// (Chengdu days, YYYY-MM-DD).
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: Option<i64>,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn status_label(status: &str) -> &'static str {
    match status {
        "running" => "运行中",
        "completed" => "已结束",
        "failed" => "失败（待运维处理）",
        _ => "其他",
    }
}

fn row(r: &InstanceRow) -> minijinja::Value {
    context! {
        id => r.id, kind => r.kind, version => r.definition_version,
        state => r.state, status => status_label(&r.status), status_code => r.status,
        status_label => r.status_label, enterprise => r.search.get("enterprise_id"),
        district => r.search.get("district"), person => r.search.get("person"),
        created => r.created_at.timestamp_millis(), updated => r.updated_at.timestamp_millis(),
    }
}

pub async fn search(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(q): Query<Search>,
) -> Result<Response, WebError> {
    ctx.console()?;
    let filter = InstanceFilter {
        kind: some(&q.kind),
        state: some(&q.state),
        status: some(&q.status),
        definition_version: q.version.trim().parse().ok(),
        created_from: crate::console::chengdu_day(&q.from, 0),
        created_to: crate::console::chengdu_day(&q.to, 1),
        ..Default::default()
    }
    .search("enterprise_id", some(&q.enterprise))
    .search("district", some(&q.district))
    .search("person", some(&q.person));
    let store = &app.sys.store;
    let total = store
        .count_instances(&filter)
        .await
        .map_err(WebError::internal)?;
    let (page, pages) = super::render::pages_of(total, q.page.unwrap_or(1), PAGE_SIZE);
    let rows = store
        .instances(
            &filter,
            Page {
                limit: PAGE_SIZE,
                offset: (page - 1) * PAGE_SIZE,
            },
        )
        .await
        .map_err(WebError::internal)?;
    let query = serde_urlencoded::to_string([
        ("kind", q.kind.as_str()),
        ("state", q.state.as_str()),
        ("status", q.status.as_str()),
        ("enterprise", q.enterprise.as_str()),
        ("district", q.district.as_str()),
        ("person", q.person.as_str()),
        ("version", q.version.as_str()),
        ("from", q.from.as_str()),
        ("to", q.to.as_str()),
    ])
    .unwrap_or_default();
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "ops_instances.html",
            context! {
                rows => rows.iter().map(row).collect::<Vec<_>>(),
                pages => pages, query => query,
                kinds => app.sys.bundle.workflows.keys().cloned().collect::<Vec<_>>(),
                q => context! {
                    kind => q.kind, state => q.state, status => q.status,
                    enterprise => q.enterprise, district => q.district, person => q.person,
                    version => q.version, from => q.from, to => q.to,
                },
            },
        )?
        .into_response())
}

pub async fn instance(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    ctx.console()?;
    crate::audit::view(&app.sys, ctx.who(), "view_instance", &id).await?;
    let store = &app.sys.store;
    let r = store
        .instance(&id)
        .await
        .map_err(WebError::internal)?
        .ok_or(WebError::NotFound)?;
    let state = inspect::state_of(&r).map_err(WebError::internal)?;
    let vars: Vec<(String, String)> = state
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let timers = store
        .pending_timers(
            Some(&id),
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .map_err(WebError::internal)?
        .into_iter()
        .map(|t| context! { id => t.timer_id, name => t.name, due => t.due_at.timestamp_millis() })
        .collect::<Vec<_>>();
    let tasks = store
        .tasks_of(&id)
        .await
        .map_err(WebError::internal)?
        .into_iter()
        .map(|t| {
            context! {
                key => t.id, name => t.name, status => t.status.as_str(),
                attempt => t.attempt, max_attempts => t.max_attempts,
                next => t.next_run_at.timestamp_millis(), error => t.last_error, result => t.result,
            }
        })
        .collect::<Vec<_>>();
    let history = store.history(&id).await.map_err(WebError::internal)?;
    // The signals its definition version accepts, for the repair form.
    let program = app
        .sys
        .runtime
        .program(&r.definition_hash)
        .await
        .map_err(WebError::internal)?;
    let signals = program
        .signals
        .iter()
        .map(|(name, s)| context! { name => name, actors => s.actors })
        .collect::<Vec<_>>();
    let chain = match store.verify_history(&id).await {
        Ok(c) => c.broken.map_or_else(
            || format!("完整（已校验 {} 条）", c.rows),
            |b| format!("在第 {} 条处断开：{b}", b.seq),
        ),
        Err(e) => format!("无法校验：{e}"),
    };
    let events = inspect::events(&history)
        .iter()
        .map(|e| {
            let (what, detail) = crate::console::describe(&e.event);
            context! { seq => e.seq, at => e.at.timestamp_millis(), kind => serde_json::to_value(&e.event).ok().and_then(|v| v["kind"].as_str().map(str::to_string)), what => what, detail => detail }
        })
        .collect::<Vec<_>>();
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "ops_instance.html",
            context! {
                i => row(&r), hash => r.definition_hash, parent => r.parent.as_ref().map(|p| &p.instance_id),
                vars => vars, timers => timers, tasks => tasks, events => events,
                signals => signals, chain => chain,
            },
        )?
        .into_response())
}

/// A definition version's texts (workflow, forms, rules, catalog), as the
/// instances that run it were compiled from.
pub async fn definition(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(hash): Path<String>,
) -> Result<Response, WebError> {
    ctx.console()?;
    let d = app
        .sys
        .store
        .definition(&hash)
        .await
        .map_err(WebError::internal)?
        .ok_or(WebError::NotFound)?;
    let source: engine::compile::program::DefinitionSource =
        serde_json::from_str(&d.source).map_err(WebError::internal)?;
    let files = std::iter::once(&source.workflow)
        .chain(&source.forms)
        .chain(&source.rules)
        .chain(source.activities.as_ref())
        .map(|f| context! { path => f.path, text => f.text })
        .collect::<Vec<_>>();
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "ops_definition.html",
            context! {
                kind => d.kind, version => d.version, hash => d.hash,
                published => d.published_at.timestamp_millis(), files => files,
            },
        )?
        .into_response())
}

/// What an operator's repair form sends.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RepairForm {
    reason: String,
    /// Signal: its name, on whose behalf (role and id) and its payload.
    signal: String,
    role: String,
    actor: String,
    payload: String,
}

fn repair_of(ctx: &Ctx, f: &RepairForm) -> Result<engine::runtime::Repair, WebError> {
    let reason = f.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(WebError::BadRequest(
            "请填写操作原因（不超过500字），它将记入实例历史".into(),
        ));
    }
    Ok(engine::runtime::Repair {
        operator: ctx.account()?.username.clone(),
        reason: reason.to_string(),
    })
}

/// The engine's refusals in words; anything else is an internal error.
fn refused(e: engine::runtime::Error) -> WebError {
    use engine::interpreter::Error as S;
    use engine::runtime::Error as E;
    match e {
        E::Refused(_) | E::Terminated(_) | E::UnknownInstance(_) => {
            WebError::BadRequest(e.to_string())
        }
        E::Step(S::InvalidPayload(errors)) => WebError::BadRequest(format!(
            "信号内容不符合定义：{}",
            errors
                .iter()
                .map(|f| format!("{} {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("；")
        )),
        E::Step(
            s @ (S::NotAccepted { .. }
            | S::ActorNotAllowed { .. }
            | S::UnknownSignal(_)
            | S::Ended(_)),
        ) => WebError::BadRequest(format!("该实例当前不接受此信号：{s}")),
        other => WebError::internal(other),
    }
}

fn back_to(id: &str) -> Response {
    axum::response::Redirect::to(&format!("/ops/instances/{}", urlencoding::encode(id)))
        .into_response()
}

async fn carry_out(
    app: &Shared,
    ctx: &Ctx,
    f: &RepairForm,
    action: crate::console::RepairAction,
) -> Result<Response, WebError> {
    ctx.console()?;
    let by = repair_of(ctx, f)?;
    let (what, target) = crate::audit::repair(&action);
    crate::audit::action(&app.sys, ctx.who(), what, &target).await?;
    match crate::console::repair(&app.sys, action, &by).await {
        Ok(id) => Ok(back_to(&id)),
        Err(crate::console::RepairError::Runtime(e)) => Err(refused(e)),
        Err(crate::console::RepairError::NoTask(_)) => Err(WebError::NotFound),
        Err(e) => Err(WebError::internal(e)),
    }
}

type RepairPost = axum::extract::Form<RepairForm>;

pub async fn terminate(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    axum::extract::Form(f): RepairPost,
) -> Result<Response, WebError> {
    carry_out(
        &app,
        &ctx,
        &f,
        crate::console::RepairAction::Terminate { id },
    )
    .await
}

pub async fn retry_step(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    axum::extract::Form(f): RepairPost,
) -> Result<Response, WebError> {
    carry_out(
        &app,
        &ctx,
        &f,
        crate::console::RepairAction::RetryStep { id },
    )
    .await
}

pub async fn retry_task(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(key): Path<String>,
    axum::extract::Form(f): RepairPost,
) -> Result<Response, WebError> {
    carry_out(
        &app,
        &ctx,
        &f,
        crate::console::RepairAction::RetryTask { key },
    )
    .await
}

pub async fn signal(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    axum::extract::Form(f): RepairPost,
) -> Result<Response, WebError> {
    let payload: Value = if f.payload.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&f.payload)
            .map_err(|e| WebError::BadRequest(format!("信号内容须为 JSON：{e}")))?
    };
    if f.signal.trim().is_empty() || f.role.trim().is_empty() || f.actor.trim().is_empty() {
        return Err(WebError::BadRequest(
            "请填写信号名称、代为操作的角色和账号编号".into(),
        ));
    }
    let action = crate::console::RepairAction::Signal {
        id,
        name: f.signal.trim().to_string(),
        payload,
        actor: engine::Actor {
            role: f.role.trim().to_string(),
            id: f.actor.trim().to_string(),
            name: None,
        },
    };
    carry_out(&app, &ctx, &f, action).await
}
