//! Daily records (登记疫情防控信息, R3): the enterprise-side writes, each
//! scoped to the calling enterprise. (Staff removal, R2.5, is
//! `staff::delete`.)
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

/// A daily record as the pages show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub id: String,
    pub address_id: String,
    pub address: String,
    pub day: String,
    pub fields: Value,
    /// R3.2's numbers, None until a comparison run has filled them.
    pub computed: Option<Value>,
    /// The run's instant the numbers are as of (R4.5).
    pub computed_at: Option<i64>,
    pub created_by: String,
}

fn record(r: &sqlx::any::AnyRow) -> Result<Record, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        id: String,
        address_id: String,
        address: String,
        day: String,
        fields: String,
        computed: Option<String>,
        computed_at: Option<i64>,
        created_by: String,
    }
    let r = <Stored as sqlx::FromRow<_>>::from_row(r)?;
    // Both columns are written as JSON here: text that does not parse is
    // a damaged row, reported with its column (not shown as empty).
    let json = |column: &str, text: &str| {
        serde_json::from_str::<Value>(text).map_err(|e| sqlx::Error::ColumnDecode {
            index: format!("daily_records.{column} of {}", r.id),
            source: Box::new(e),
        })
    };
    Ok(Record {
        fields: json("fields", &r.fields)?,
        computed: r
            .computed
            .as_deref()
            .map(|c| json("computed", c))
            .transpose()?,
        id: r.id,
        address_id: r.address_id,
        address: r.address,
        day: r.day,
        computed_at: r.computed_at,
        created_by: r.created_by,
    })
}

const RECORD_COLUMNS: &str =
    "r.id, r.address_id, a.address, r.day, r.fields, r.computed, r.computed_at, r.created_by";

/// The enterprise's records of one day, one per address that has one.
pub async fn of_day(pool: &AnyPool, enterprise_id: &str, day: &str) -> Result<Vec<Record>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM daily_records r JOIN addresses a ON a.id = r.address_id \
         WHERE r.enterprise_id = $1 AND r.day = $2 ORDER BY a.created_at, a.id"
    ))
    .bind(enterprise_id)
    .bind(day)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
}

/// One page of the enterprise's past records, newest first, and the total.
pub async fn history(
    pool: &AnyPool,
    enterprise_id: &str,
    before_day: &str,
    page: i64,
) -> Result<(Vec<Record>, i64), Error> {
    let size = crate::sites::PAGE_SIZE;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM daily_records r WHERE r.enterprise_id = $1 AND r.day < $2",
    )
    .bind(enterprise_id)
    .bind(before_day)
    .fetch_one(pool)
    .await?;
    let rows = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM daily_records r JOIN addresses a ON a.id = r.address_id \
         WHERE r.enterprise_id = $1 AND r.day < $2 ORDER BY r.day DESC, a.created_at LIMIT $3 OFFSET $4"
    ))
    .bind(enterprise_id)
    .bind(before_day)
    .bind(size)
    .bind((page.max(1) - 1) * size)
    .fetch_all(pool)
    .await?;
    Ok((rows.iter().map(record).collect::<Result<_, _>>()?, total))
}

/// One of the enterprise's records.
pub async fn get(pool: &AnyPool, enterprise_id: &str, id: &str) -> Result<Record, Error> {
    let r = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM daily_records r JOIN addresses a ON a.id = r.address_id \
         WHERE r.enterprise_id = $1 AND r.id = $2"
    ))
    .bind(enterprise_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound)?;
    Ok(record(&r)?)
}

/// Fill in or correct the enterprise's fields of today's record (the run
/// may have created it, R3.4). Past days are read-only.
pub async fn update(
    pool: &AnyPool,
    form: &FormSpec,
    enterprise_id: &str,
    id: &str,
    today: &str,
    fields: &Value,
    now_ms: i64,
) -> Result<(), Error> {
    let existing = get(pool, enterprise_id, id).await?;
    if existing.day != today {
        return Err(Error::NotFound);
    }
    let fields = form.validate(fields).map_err(Error::Invalid)?;
    sqlx::query("UPDATE daily_records SET fields = $1, updated_at = $2 WHERE id = $3 AND enterprise_id = $4")
        .bind(fields.to_string())
        .bind(now_ms)
        .bind(id)
        .bind(enterprise_id)
        .execute(pool)
        .await?;
    Ok(())
}
