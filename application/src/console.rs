//! What operators read of an instance, in words (issue 12): the console's
//! page and `server instances show` describe events the same way.

use engine::inspect::Event;
use serde_json::Value;

/// Midnight in Chengdu of a `YYYY-MM-DD` day, `days` later.
pub fn chengdu_day(day: &str, days: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    let d = chrono::NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d").ok()?
        + chrono::Duration::days(days);
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
        .single()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Local time in Chengdu of unix milliseconds, as pages and the CLI show it.
pub fn local_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono_tz::Asia::Shanghai)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn json(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// An event in words for the console and the CLI: (what, details).
pub fn describe(e: &Event) -> (String, String) {
    match e {
        Event::Started { input } => ("启动".into(), json(input)),
        Event::Signal {
            name,
            actor,
            payload,
        } => (
            format!("信号 {name}"),
            format!(
                "{}：{} {}",
                actor.role,
                actor.name.as_deref().unwrap_or(&actor.id),
                json(payload)
            ),
        ),
        Event::TimerSet { .. } | Event::TimerCancelled { .. } | Event::TimerFired { .. } => {
            describe_timer(e)
        }
        Event::ActivityScheduled { .. }
        | Event::AttemptFailed { .. }
        | Event::ActivityCompleted { .. }
        | Event::ActivityFailed { .. } => describe_activity(e),
        Event::ChildStarted { .. } | Event::ChildCompleted { .. } => describe_child(e),
        _ => describe_step(e),
    }
}

fn describe_timer(e: &Event) -> (String, String) {
    match e {
        Event::TimerSet { name, due_at, id } => (
            format!("设置定时器 {name}"),
            format!("{id}，到期 {}", local_time(due_at.timestamp_millis())),
        ),
        Event::TimerCancelled { id, name } => (
            format!("取消定时器 {}", name.as_deref().unwrap_or(id)),
            id.clone(),
        ),
        Event::TimerFired { id, name } => (
            format!("定时器到期 {}", name.as_deref().unwrap_or(id)),
            id.clone(),
        ),
        _ => describe_step(e),
    }
}

fn describe_activity(e: &Event) -> (String, String) {
    match e {
        Event::ActivityScheduled {
            name,
            idempotency_key,
            args,
            max_attempts,
            ..
        } => (
            format!("调度活动 {name}"),
            format!(
                "幂等键 {idempotency_key}，最多 {max_attempts} 次；参数 {}",
                json(args)
            ),
        ),
        Event::AttemptFailed {
            name,
            attempt,
            error,
            next_attempt_at,
            ..
        } => (
            format!("活动 {name} 第{attempt}次尝试失败"),
            format!(
                "{error}{}",
                next_attempt_at
                    .as_deref()
                    .map(|t| format!("；下次重试 {t}"))
                    .unwrap_or_default()
            ),
        ),
        Event::ActivityCompleted { id, name, result } => (
            format!("活动完成 {}", name.as_deref().unwrap_or(id)),
            json(result),
        ),
        Event::ActivityFailed { id, name, error } => (
            format!("活动失败 {}", name.as_deref().unwrap_or(id)),
            error.clone(),
        ),
        _ => describe_step(e),
    }
}

fn describe_child(e: &Event) -> (String, String) {
    match e {
        Event::ChildStarted { workflow, key, id } => (
            format!("启动子流程 {workflow}"),
            key.clone().unwrap_or_else(|| id.clone()),
        ),
        Event::ChildCompleted {
            id, error: Some(e), ..
        } => (format!("子流程未能启动 {id}"), e.clone()),
        Event::ChildCompleted {
            id, status, output, ..
        } => (
            format!("子流程结束 {id}"),
            format!("{} {}", status.as_deref().unwrap_or(""), json(output)),
        ),
        _ => describe_step(e),
    }
}

/// What an operator's repair is called on the console.
fn repair_name(action: &str) -> &str {
    match action {
        "retry_step" => "重试失败的步骤",
        "retry_activity" => "重试活动",
        "terminate" => "终止实例",
        "signal" => "代为发送信号",
        "migrate" => "迁移到新版本",
        other => other,
    }
}

fn describe_step(e: &Event) -> (String, String) {
    match e {
        Event::Decision {
            origin,
            expr,
            result,
        } => (
            format!("规则判断 {}", if *result { "成立" } else { "不成立" }),
            format!("{origin}：{expr}"),
        ),
        Event::StateChanged { from, to } => (
            "状态变更".into(),
            format!("{} → {to}", from.as_deref().unwrap_or("（开始）")),
        ),
        Event::Completed { status, output } => (
            "流程结束".into(),
            format!("{} {}", status.as_deref().unwrap_or(""), json(output)),
        ),
        Event::StepFailed { error } => ("步骤失败（待运维处理）".into(), error.clone()),
        Event::Ignored { note } => ("已记录未处理".into(), note.clone()),
        Event::OperatorAction {
            action,
            operator,
            reason,
            detail,
        } => (
            format!("运维操作：{}", repair_name(action)),
            format!("{operator}；原因：{reason} {}", json(detail)),
        ),
        Event::Unreadable { row_kind, error } => {
            (format!("无法读取的记录 {row_kind}"), error.clone())
        }
        other => (format!("{other:?}"), String::new()),
    }
}

/// One repair an operator asks for (page, API or CLI alike).
#[derive(Debug, Clone)]
pub enum RepairAction {
    Terminate {
        id: String,
    },
    RetryStep {
        id: String,
    },
    RetryTask {
        key: String,
    },
    Signal {
        id: String,
        name: String,
        payload: Value,
        actor: engine::Actor,
    },
}

/// Why a repair was not made.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Runtime(#[from] engine::runtime::Error),
    #[error(transparent)]
    Store(#[from] engine::store::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("没有活动任务 {0}")]
    NoTask(String),
}

/// Carry out a repair with its reason, on the engine that runs the
/// instance ([`crate::backend::Workflows`]), then bring the warnings
/// projection up to date when the instance is a warning (the embedded
/// runtime's; on Temporal the worker's hook, or the termination's own).
/// Returns the instance's id.
pub async fn repair(
    sys: &crate::system::System,
    action: RepairAction,
    by: &engine::runtime::Repair,
) -> Result<String, RepairError> {
    let w = &sys.workflows;
    let id = match action {
        RepairAction::Terminate { id } => {
            w.terminate(&id, by, &sys.activities).await?;
            id
        }
        RepairAction::RetryStep { id } => {
            w.retry_failed_step(&id, by).await?;
            id
        }
        RepairAction::RetryTask { key } => w
            .retry_task(&key, by)
            .await?
            .ok_or(RepairError::NoTask(key))?,
        RepairAction::Signal {
            id,
            name,
            payload,
            actor,
        } => {
            w.signal_as_operator(&id, &name, payload, actor, by).await?;
            id
        }
    };
    if w.is_embedded() {
        crate::warnings::project_by_id(&sys.runtime, &id).await?;
    }
    Ok(id)
}
