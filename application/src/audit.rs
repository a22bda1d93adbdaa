//! 访问审计 (issue 15): who looked at whom. Every view of a person's health
//! data or a warning by a district, city or operator account, every export
//! and every administrative action is one `access_audit` row: who (account
//! and role), when (the system clock), what (an action name and its target:
//! a warning id, an instance id, a masked ID number and day) and from where
//! (the client address the session layer determined). Handlers record with
//! one line (`audit::view` / `audit::action`); administrators list the rows
//! on `/admin/audit`. Rows are kept and purged by the retention policy
//! (`workflows/retention.yaml`, `access_audit`).
//!
//! A record that cannot be written fails the request: a view that cannot be
//! accounted for is not shown. Must not: store full ID numbers, mobiles,
//! passwords or tokens in a target.

use crate::accounts::{Account, Role};
use crate::system::System;
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;

/// Who asked: the logged-in account (if any) and the client address the
/// session layer determined (`web::Ctx::who`).
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub account: Option<&'a Account>,
    pub client: &'a str,
}

/// Write one row.
pub async fn write(
    pool: &AnyPool,
    at: i64,
    username: &str,
    role: &str,
    action: &str,
    target: &str,
    client: &str,
) -> Result<(), sqlx::Error> {
    // Ordered by time, then (within one millisecond of one process) by
    // order of writing; the random part keeps processes apart.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{at:014}-{seq:012}-{:08x}", rand::random::<u32>());
    sqlx::query(
        "INSERT INTO access_audit (id, at, username, role, action, target, client) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(at)
    .bind(username)
    .bind(role)
    .bind(action)
    .bind(target)
    .bind(client)
    .execute(pool)
    .await?;
    Ok(())
}

/// A view of personal data (`action`: `view_warning`, `explain`,
/// `view_instance`, …) by a district, city or operator account. An
/// enterprise looking at its own staff is not recorded (it keeps them).
pub async fn view(
    sys: &System,
    who: Who<'_>,
    action: &str,
    target: &str,
) -> Result<(), sqlx::Error> {
    match who.account {
        Some(a) if matches!(a.role, Role::District { .. } | Role::City | Role::Operator) => {
            self::action(sys, who, action, target).await
        }
        _ => Ok(()),
    }
}

/// An administrative action or an export, by whoever is logged in.
pub async fn action(
    sys: &System,
    who: Who<'_>,
    action: &str,
    target: &str,
) -> Result<(), sqlx::Error> {
    let Some(a) = who.account else {
        return Ok(());
    };
    let now = sys.clock.now().timestamp_millis();
    write(
        &sys.pool,
        now,
        &a.username,
        a.role.name(),
        action,
        target,
        who.client,
    )
    .await
}

/// A read or repair through the operators' JSON API (`api:{token name}`).
pub async fn api(
    sys: &System,
    token: &str,
    client: &str,
    action: &str,
    target: &str,
) -> Result<(), sqlx::Error> {
    let now = sys.clock.now().timestamp_millis();
    write(
        &sys.pool,
        now,
        &format!("api:{token}"),
        "api",
        action,
        target,
        client,
    )
    .await
}

/// What `/admin/audit` asks for.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Filter {
    /// An account name (exact).
    pub account: String,
    /// A day in Chengdu, `2026-12-01`.
    pub day: String,
    pub page: i64,
}

/// One row as the page shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub at: i64,
    pub username: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub client: String,
}

pub const PAGE_SIZE: i64 = 50;

/// A page of rows, newest first, and how many match. An unreadable day is
/// `Err` with the message to show.
pub async fn list(reader: &AnyPool, f: &Filter) -> Result<(Vec<Entry>, i64), ListError> {
    let (from, to) = if f.day.trim().is_empty() {
        (i64::MIN, i64::MAX)
    } else {
        let day = chrono::NaiveDate::parse_from_str(f.day.trim(), "%Y-%m-%d")
            .map_err(|_| ListError::Day)?;
        let start = |d: chrono::NaiveDate| {
            use chrono::TimeZone;
            chrono_tz::Asia::Shanghai
                .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
                .single()
                .map(|t| t.timestamp_millis())
                .ok_or(ListError::Day)
        };
        (start(day)?, start(day.succ_opt().ok_or(ListError::Day)?)?)
    };
    let account = f.account.trim();
    let cond = "WHERE at >= $1 AND at < $2 AND ($3 = '' OR username = $4)";
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM access_audit {cond}"))
        .bind(from)
        .bind(to)
        .bind(account)
        .bind(account)
        .fetch_one(reader)
        .await?;
    let last = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let page = f.page.clamp(1, last);
    let rows = sqlx::query(&format!(
        "SELECT at, username, role, action, target, client FROM access_audit {cond} \
         ORDER BY at DESC, id DESC LIMIT $5 OFFSET $6"
    ))
    .bind(from)
    .bind(to)
    .bind(account)
    .bind(account)
    .bind(PAGE_SIZE)
    .bind((page - 1) * PAGE_SIZE)
    .fetch_all(reader)
    .await?;
    let entries = rows
        .iter()
        .map(<Entry as sqlx::FromRow<_>>::from_row)
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((entries, total))
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("日期格式应为 2026-12-01")]
    Day,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What an operator's repair is recorded as: (action, target). A signal's
/// payload is not copied (it is in the instance's history).
pub fn repair(a: &crate::console::RepairAction) -> (&'static str, String) {
    use crate::console::RepairAction as R;
    match a {
        R::Terminate { id } => ("repair_terminate", id.clone()),
        R::RetryStep { id } => ("repair_retry_step", id.clone()),
        R::RetryTask { key } => ("repair_retry_task", key.clone()),
        R::Signal { id, name, .. } => ("repair_signal", format!("{id} {name}")),
    }
}

/// The target of an `/explain` question: the ID number masked, and the day.
pub fn explain_target(id_number: &str, day: &str) -> String {
    let masked = crate::domain::IdNumber::parse(id_number)
        .map(|n| n.masked())
        .unwrap_or_else(|_| "（无效证件号）".into());
    format!("{masked} {day}")
}
