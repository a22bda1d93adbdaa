//! What the operator's page (`/ops`) reads and writes beside the engine:
//! the figures of a comparison run, the latest SMS (masked), and, in a
//! rehearsal, moving the sessions' deadlines with the clock. The web
//! handler only renders; the SQL lives here.

use serde::Serialize;
use sqlx::{AnyPool, FromRow};

/// The figures a comparison run wrote (`comparison_runs`), None for a run
/// that did not get that far.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct RunNumbers {
    pub as_of: i64,
    pub persons: i64,
    pub anomalies: i64,
    pub new_warnings: i64,
}

/// The figures of the run of comparison instance `instance` (its
/// `run_comparison` activity's key starts with the instance's id).
pub async fn run_numbers(
    reader: &AnyPool,
    instance: &str,
) -> Result<Option<RunNumbers>, sqlx::Error> {
    sqlx::query_as(
        "SELECT as_of, persons, anomalies, new_warnings FROM comparison_runs WHERE id LIKE $1",
    )
    .bind(format!("{instance}/%"))
    .fetch_optional(reader)
    .await
}

/// One SMS of the log as the operator sees it: the mobile masked, the
/// parameters as stored (passwords and login codes already `******`).
#[derive(Debug, Clone, Serialize)]
pub struct SmsLine {
    pub phone: String,
    pub template: String,
    pub params: String,
    pub at: i64,
}

/// The latest `limit` SMS of the log, newest first.
pub async fn recent_sms(reader: &AnyPool, limit: i64) -> Result<Vec<SmsLine>, sqlx::Error> {
    #[derive(FromRow)]
    struct Stored {
        phone: String,
        template: String,
        params: String,
        created_at: i64,
    }
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT phone, template, params, created_at FROM sms_log ORDER BY created_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(reader)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SmsLine {
            phone: crate::domain::Mobile::parse(&r.phone)
                .map(|m| m.masked())
                .unwrap_or(r.phone),
            template: r.template,
            params: r.params,
            at: r.created_at,
        })
        .collect())
}

/// A rehearsal's clock jumps `ms` forward: sessions' idle and absolute
/// deadlines (and the SMS proof's time; NULL stays NULL) move with it, so
/// the jump does not log everyone out. Call before moving the clock, so no
/// request sees the new time with the old deadlines.
pub async fn shift_sessions(pool: &AnyPool, ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET last_seen = last_seen + $1, expires_at = expires_at + $2, \
         sms_proven_at = sms_proven_at + $3",
    )
    .bind(ms)
    .bind(ms)
    .bind(ms)
    .execute(pool)
    .await?;
    Ok(())
}
