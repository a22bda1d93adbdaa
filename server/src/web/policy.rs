//! The city's (市住建局, policy staff) home: the definitions and rules the
//! system runs, readable; a candidate's validation; back-tests of a
//! candidate over a finished comparison run's stored data (R8.2, module
//! `backtest`), with the changed persons as CSV. City accounts only
//! (`Ctx::policy`). A back-test writes nothing.

use super::{Ctx, Shared, WebError};
use crate::backtest::{self, Candidate};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use minijinja::context;

/// Persons of each list shown on the result page (the CSV has them all).
const SHOWN: usize = 200;

/// One back-test at a time in this process: each reads a whole run.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// `/policy`: the definitions in force, every text readable.
pub async fn home(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.policy()?;
    let bundle = &app.sys.bundle;
    let workflows = bundle
        .workflows
        .values()
        .map(
            |p| context! { name => p.name, title => p.title, version => p.version, hash => p.hash },
        )
        .collect::<Vec<_>>();
    let files = Candidate::current(bundle)
        .files()
        .map(|f| context! { path => f.path, text => f.text })
        .collect::<Vec<_>>();
    Ok(app
        .templates
        .page(&app, &ctx, "policy.html", context! { workflows, files })?
        .into_response())
}

/// What a candidate form sends: the run, and the texts of the files
/// (`file:rules/anomaly.rhai` = …); files not sent stay as they are.
struct Submitted {
    run: Option<String>,
    part: String,
    candidate: Candidate,
    /// The files whose text differs from the current one.
    changed: Vec<(String, String)>,
}

fn submitted(app: &Shared, body: &[u8]) -> Result<Submitted, WebError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| WebError::BadRequest("提交的内容无法读取，请返回刷新后重试".into()))?;
    let current = Candidate::current(&app.sys.bundle);
    let mut candidate = current.clone();
    let (mut run, mut part) = (None, String::new());
    for (k, v) in pairs {
        if let Some(path) = k.strip_prefix("file:") {
            if !candidate.set(path, &v) {
                return Err(WebError::BadRequest(format!(
                    "“{path}”不是现行定义中的文件"
                )));
            }
        } else if k == "run" && !v.trim().is_empty() {
            run = Some(v.trim().to_string());
        } else if k == "part" {
            part = v;
        }
    }
    let changed = candidate
        .files()
        .zip(current.files())
        .filter(|(c, o)| c.text != o.text)
        .map(|(c, _)| (c.path.clone(), c.text.clone()))
        .collect();
    Ok(Submitted {
        run,
        part,
        candidate,
        changed,
    })
}

/// The form: finished runs to choose from, every current file editable
/// (`rules/anomaly.rhai` open), `problems` of a validation.
async fn form_page(
    app: &Shared,
    ctx: &Ctx,
    s: Option<&Submitted>,
    validation: Option<minijinja::Value>,
) -> Result<Response, WebError> {
    let runs = backtest::runs(&app.sys.reader, 30)
        .await
        .map_err(WebError::internal)?
        .into_iter()
        .map(|r| {
            context! { id => r.id, number => r.number, as_of => r.as_of.timestamp_millis(),
            persons => r.persons, anomalies => r.anomalies }
        })
        .collect::<Vec<_>>();
    let current = Candidate::current(&app.sys.bundle);
    let candidate = s.map_or(&current, |s| &s.candidate);
    let files = candidate
        .files()
        .map(|f| {
            let changed = s.is_some_and(|s| s.changed.iter().any(|(p, _)| *p == f.path));
            context! { path => f.path, text => f.text, changed,
            open => changed || f.path.ends_with("anomaly.rhai") }
        })
        .collect::<Vec<_>>();
    Ok(app
        .templates
        .page(
            app,
            ctx,
            "policy_backtest.html",
            context! { runs, files, validation, run => s.and_then(|s| s.run.clone()) },
        )?
        .into_response())
}

/// `GET /policy/backtest`: the form with the current files.
pub async fn backtest_page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.policy()?;
    form_page(&app, &ctx, None, None).await
}

/// `POST /policy/validate`: compile the candidate, say what is wrong.
pub async fn validate(
    State(app): State<Shared>,
    ctx: Ctx,
    body: Bytes,
) -> Result<Response, WebError> {
    ctx.policy()?;
    let s = submitted(&app, &body)?;
    let validation = match s.candidate.compile() {
        Ok(c) => context! { ok => true, window_hours => c.window_hours,
        window_declared => c.window_declared, changed => s.changed.len() },
        Err(backtest::Error::Candidate(problems)) => context! { ok => false, problems },
        Err(e) => return Err(WebError::internal(e)),
    };
    form_page(&app, &ctx, Some(&s), Some(validation)).await
}

async fn run_backtest(
    app: &Shared,
    s: &Submitted,
) -> Result<Result<backtest::Report, Vec<String>>, WebError> {
    let compiled = match s.candidate.compile() {
        Ok(c) => c,
        Err(backtest::Error::Candidate(problems)) => return Ok(Err(problems)),
        Err(e) => return Err(WebError::internal(e)),
    };
    let _one = RUNNING
        .try_acquire()
        .map_err(|_| WebError::BadRequest("另一项回测正在进行，请稍后再试".into()))?;
    match backtest::backtest(&app.sys.reader, s.run.as_deref(), &compiled).await {
        Ok(r) => Ok(Ok(r)),
        Err(e @ backtest::Error::NoRun(_)) => Err(WebError::BadRequest(e.to_string())),
        Err(e @ backtest::Error::Judge(_)) => Ok(Err(vec![e.to_string()])),
        Err(e) => Err(WebError::internal(e)),
    }
}

/// `POST /policy/backtest`: run it and show the result.
pub async fn backtest(
    State(app): State<Shared>,
    ctx: Ctx,
    body: Bytes,
) -> Result<Response, WebError> {
    ctx.policy()?;
    let s = submitted(&app, &body)?;
    let mut report = match run_backtest(&app, &s).await? {
        Ok(r) => r,
        Err(problems) => {
            let validation = context! { ok => false, problems };
            return form_page(&app, &ctx, Some(&s), Some(validation)).await;
        }
    };
    crate::audit::view(&app.sys, ctx.who(), "view_backtest", &report.run.id).await?;
    // The lists go to the page cut to their first SHOWN persons.
    let list = |mut l: Vec<backtest::Change>| {
        let total = l.len();
        l.truncate(SHOWN);
        context! { total, shown => l }
    };
    let (newly, no_longer, changed) = (
        list(std::mem::take(&mut report.newly)),
        list(std::mem::take(&mut report.no_longer)),
        list(std::mem::take(&mut report.changed)),
    );
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "policy_result.html",
            context! {
                report => report,
                as_of => report.run.as_of.timestamp_millis(),
                newly,
                no_longer,
                changed_persons => changed,
                changed_files => s.changed.iter().map(|(path, text)| context! { path, text }).collect::<Vec<_>>(),
                run_id => report.run.id,
            },
        )?
        .into_response())
}

/// `POST /policy/backtest.csv`: the same back-test as a CSV download
/// (`part=districts`: the counts per district; otherwise the persons).
pub async fn backtest_csv(
    State(app): State<Shared>,
    ctx: Ctx,
    body: Bytes,
) -> Result<Response, WebError> {
    ctx.policy()?;
    let s = submitted(&app, &body)?;
    let report = run_backtest(&app, &s)
        .await?
        .map_err(|p| WebError::BadRequest(p.join("\n")))?;
    let (text, name) = if s.part == "districts" {
        (report.districts_csv(), "districts")
    } else {
        (report.persons_csv(), "persons")
    };
    crate::audit::action(
        &app.sys,
        ctx.who(),
        "export_backtest_csv",
        &format!("{}:{name}", report.run.id),
    )
    .await?;
    let file = format!(
        "backtest-{}-{name}.csv",
        report
            .run
            .number
            .map_or_else(|| "run".into(), |n| n.to_string())
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        text,
    )
        .into_response())
}
