//! `/policy/versions` (issue 11, R8.3): the city's list of published
//! definition versions (hash, who, when, why, instances on each), the
//! publications in order, publishing the current files of `workflows/` and
//! `rules/` or a pasted candidate (one file replaced) with a reason, and
//! rolling back. City accounts only; CSRF by the session middleware.
//! Publishing goes through `Runtime::publish` (validated, a changed
//! content under an unchanged version refused), so it takes effect for new
//! instances at once, without a restart.

use super::{Ctx, Shared, WebError};
use crate::accounts::{Account, Role};
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Response};
use engine::runtime::Publication;
use engine::store::Store;
use minijinja::context;
use serde::Deserialize;

/// City (policy) accounts only.
fn city(ctx: &Ctx) -> Result<&Account, WebError> {
    let a = ctx.account()?;
    match a.role {
        Role::City => Ok(a),
        _ => Err(WebError::Forbidden),
    }
}

/// The page, with the outcome of an action (`notice` done, `error` refused).
async fn render(
    app: &Shared,
    ctx: &Ctx,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, WebError> {
    let rt = &app.sys.runtime;
    let versions = rt
        .versions()
        .await
        .map_err(WebError::internal)?
        .into_iter()
        .map(|v| {
            let pubs: Vec<_> = v
                .publications
                .iter()
                .map(|p| {
                    context! { seq => p.seq, kind => crate::policy_cli::kind_label(&p.kind),
                    by => p.published_by, at => p.published_at.timestamp_millis(), reason => p.reason }
                })
                .collect();
            context! {
                workflow => v.workflow, version => v.version, hash => v.hash,
                short => v.hash.get(..12).unwrap_or(&v.hash).to_string(),
                current => v.current, open => v.open, total => v.total,
                stored => v.stored_at.timestamp_millis(), publications => pubs,
            }
        })
        .collect::<Vec<_>>();
    let publications = app
        .sys
        .store
        .publications(30)
        .await
        .map_err(WebError::internal)?
        .into_iter()
        .map(|p| {
            let defs: Vec<String> = p
                .definitions
                .iter()
                .map(|(w, h)| format!("{w} {}", h.get(..12).unwrap_or(h)))
                .collect();
            context! { seq => p.seq, kind => crate::policy_cli::kind_label(&p.kind),
            by => p.published_by, at => p.published_at.timestamp_millis(),
            clock => p.clock_at.timestamp_millis(), reason => p.reason,
            rollback_of => p.rollback_of, definitions => defs }
        })
        .collect::<Vec<_>>();
    // Whether the files as they are now compile (what 发布当前文件 would take).
    let files_error = crate::system::compile(&app.sys.paths)
        .err()
        .map(|e| e.to_string());
    Ok(app
        .templates
        .page(
            app,
            ctx,
            "policy_versions.html",
            context! { versions, publications, files_error, notice, error,
            workflows_dir => app.sys.paths.workflows.display().to_string(),
            rules_dir => app.sys.paths.rules.display().to_string() },
        )?
        .into_response())
}

pub async fn page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    city(&ctx)?;
    render(&app, &ctx, None, None).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishForm {
    reason: String,
    /// A candidate: this file (by name) replaced by `text`. Empty: the
    /// current files.
    file: String,
    text: String,
}

pub async fn publish(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<PublishForm>,
) -> Result<Response, WebError> {
    let me = city(&ctx)?.username.clone();
    let bundle = if f.text.trim().is_empty() {
        crate::system::compile(&app.sys.paths)
    } else {
        crate::system::compile_candidate(&app.sys.paths, &f.file, &f.text)
    };
    let bundle = match bundle {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("未发布：定义或规则有错误\n{e}");
            return render(&app, &ctx, None, Some(msg)).await;
        }
    };
    let by = Publication {
        by: me,
        reason: f.reason,
    };
    match app.sys.runtime.publish(&bundle, &by).await {
        Ok(p) => {
            let msg = format!(
                "已发布（第 {} 次发布）：新建的实例即按新版本运行，进行中的实例保持原版本",
                p.seq
            );
            render(&app, &ctx, Some(msg), None).await
        }
        Err(engine::runtime::Error::Refused(m)) => {
            render(&app, &ctx, None, Some(format!("未发布：{m}"))).await
        }
        Err(e) => Err(WebError::internal(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RollbackForm {
    target: String,
    reason: String,
}

pub async fn rollback(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<RollbackForm>,
) -> Result<Response, WebError> {
    let me = city(&ctx)?.username.clone();
    let by = Publication {
        by: me,
        reason: f.reason,
    };
    match app.sys.runtime.rollback(&f.target, &by).await {
        Ok(p) => {
            let msg = format!("已回滚（第 {} 次发布）：新建的实例按所选版本运行", p.seq);
            render(&app, &ctx, Some(msg), None).await
        }
        Err(engine::runtime::Error::Refused(m)) => {
            render(&app, &ctx, None, Some(format!("未回滚：{m}"))).await
        }
        Err(e) => Err(WebError::internal(e)),
    }
}
