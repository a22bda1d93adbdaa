//! Daily records (登记疫情防控信息, R3) and staff removal (R2.5): the
//! enterprise-side writes, each scoped to the calling enterprise.
//!
//! Must not compute the health numbers: those come from comparison runs.

use engine::compile::form::{FieldError, FormSpec};
use serde_json::Value;
use sqlx::AnyPool;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// R3.1: a second record for the same address and day.
    #[error("同一个企业每天只能填报一次信息")]
    AlreadyFiled { existing: String },
    #[error("填报内容有误")]
    Invalid(Vec<FieldError>),
    #[error("未找到该记录或无权操作")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Create today's record for one of the enterprise's addresses, with the
/// fields of the daily-record form. If the comparison run already created
/// it, the enterprise edits that one instead (the error names it).
pub async fn create(
    pool: &AnyPool,
    form: &FormSpec,
    enterprise_id: &str,
    address_id: &str,
    day: &str,
    fields: &Value,
    now_ms: i64,
) -> Result<String, Error> {
    let fields = form.validate(fields).map_err(Error::Invalid)?;
    let mut tx = pool.begin().await?;
    let owned: Option<String> = sqlx::query_scalar(
        "SELECT id FROM addresses WHERE id = $1 AND enterprise_id = $2 AND deleted_at IS NULL",
    )
    .bind(address_id)
    .bind(enterprise_id)
    .fetch_optional(&mut *tx)
    .await?;
    if owned.is_none() {
        return Err(Error::NotFound);
    }
    if let Some(existing) = sqlx::query_scalar::<_, String>(
        "SELECT id FROM daily_records WHERE address_id = $1 AND day = $2",
    )
    .bind(address_id)
    .bind(day)
    .fetch_optional(&mut *tx)
    .await?
    {
        return Err(Error::AlreadyFiled { existing });
    }
    let id = format!("{address_id}/{day}");
    sqlx::query(
        "INSERT INTO daily_records (id, enterprise_id, address_id, day, fields, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'enterprise', $6, $6)",
    )
    .bind(&id)
    .bind(enterprise_id)
    .bind(address_id)
    .bind(day)
    .bind(fields.to_string())
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Delete a person who left (R2.5): future comparisons skip them; an open
/// warning for them stays open for disposal ("人员已离职") and review.
pub async fn delete_person(
    pool: &AnyPool,
    enterprise_id: &str,
    staff_id: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let r = sqlx::query("UPDATE staff SET deleted_at = $1, updated_at = $1 WHERE id = $2 AND enterprise_id = $3 AND deleted_at IS NULL")
        .bind(now_ms)
        .bind(staff_id)
        .bind(enterprise_id)
        .execute(pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}
