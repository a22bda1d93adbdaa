//! The operator console's read side (issue 12, R8.4): search workflow
//! instances, one instance with its whole history as events
//! (`engine::inspect`), its variables, pending timers by name, activity
//! tasks with attempts and last errors, and the definition version it runs
//! (linked to its text). Everything through the engine's store API; no SQL
//! on engine tables here.

use super::{Ctx, Shared, WebError};
use crate::backend;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use engine::inspect;
use engine::store::{InstanceFilter, Page, Store};
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

fn row(r: &crate::instances::InstanceSummary) -> minijinja::Value {
    context! {
        id => r.id, kind => r.kind, version => r.version,
        state => r.state, status => crate::instances::status_label(&r.status), status_code => r.status,
        status_label => r.status_label, enterprise => r.search.get("enterprise_id"),
        district => r.search.get("district"), person => r.search.get("person"),
        created => r.created, updated => r.updated, repairable => r.repairable(),
    }
}

impl Search {
    fn filter(&self) -> InstanceFilter {
        InstanceFilter {
            kind: some(&self.kind),
            state: some(&self.state),
            status: some(&self.status),
            definition_version: self.version.trim().parse().ok(),
            created_from: crate::console::chengdu_day(&self.from, 0),
            created_to: crate::console::chengdu_day(&self.to, 1),
            ..Default::default()
        }
        .search("enterprise_id", some(&self.enterprise))
        .search("district", some(&self.district))
        .search("person", some(&self.person))
    }

    /// The search as the pager's links repeat it.
    fn query(&self) -> String {
        serde_urlencoded::to_string([
            ("kind", self.kind.as_str()),
            ("state", self.state.as_str()),
            ("status", self.status.as_str()),
            ("enterprise", self.enterprise.as_str()),
            ("district", self.district.as_str()),
            ("person", self.person.as_str()),
            ("version", self.version.as_str()),
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
        ])
        .unwrap_or_default()
    }
}

/// The operator's search, on the engine that runs the instances (this
/// database, or Temporal's visibility).
pub async fn search(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(q): Query<Search>,
) -> Result<Response, WebError> {
    ctx.console()?;
    let filter = q.filter();
    let workflows = &app.sys.workflows;
    let page = q.page.unwrap_or(1).max(1);
    let at = Page {
        limit: PAGE_SIZE,
        offset: (page - 1) * PAGE_SIZE,
    };
    let (total, rows) = workflows.instances(&filter, at).await.map_err(refused)?;
    let (_, pages) = super::render::pages_of(total, page, PAGE_SIZE);
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "ops_instances.html",
            context! {
                rows => rows.iter().map(row).collect::<Vec<_>>(),
                pages => pages, query => q.query(),
                on_temporal => !workflows.is_embedded(),
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

/// One instance: its history, variables, timers and activities, from the
/// engine that runs it.
pub async fn instance(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    ctx.console()?;
    crate::audit::view(&app.sys, ctx.who(), "view_instance", &id).await?;
    let v = app
        .sys
        .workflows
        .instance(&id)
        .await
        .map_err(WebError::internal)?
        .ok_or(WebError::NotFound)?;
    let events = v.events.iter().map(event).collect::<Vec<_>>();
    let signals = v
        .signals
        .iter()
        .map(|(name, actors)| context! { name => name, actors => actors })
        .collect::<Vec<_>>();
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "ops_instance.html",
            context! {
                i => row(&v.summary), hash => v.hash, parent => v.parent,
                vars => v.vars, timers => v.timers, tasks => v.tasks, events => events,
                signals => signals, chain => v.chain, on_temporal => v.engine == "temporal",
                retries => backend::TEMPORAL_RETRIES,
            },
        )?
        .into_response())
}

/// A history entry as the page lists it.
fn event(e: &inspect::Entry) -> minijinja::Value {
    let (what, detail) = crate::console::describe(&e.event);
    let kind = serde_json::to_value(&e.event)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_string));
    context! { seq => e.seq, at => e.at.timestamp_millis(), kind => kind, what => what, detail => detail }
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
