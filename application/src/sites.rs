//! 维护站点及人员信息 (DOMAIN.md R2): an enterprise's office addresses and
//! its health liaison officer, and whether the base data is complete
//! enough for daily records (R2.4). Its staff are `crate::staff`'s.
//!
//! Every function takes the calling enterprise's id and touches only that
//! enterprise's rows: an id from a URL or form that belongs to another
//! enterprise is "not found". Must not know about HTTP.

use crate::accounts::new_id;
use crate::domain::{Address, Mobile, PersonName};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("填写内容有误")]
    Invalid(BTreeMap<String, String>),
    #[error("未找到该记录或无权操作")]
    NotFound,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn one(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(BTreeMap::from([(field.to_string(), message.into())]))
}

/// Rows per page in every list.
pub const PAGE_SIZE: i64 = 20;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AddressRow {
    pub id: String,
    pub address: String,
    pub district: String,
    pub district_name: String,
    pub staff: i64,
}

pub async fn addresses(pool: &AnyPool, enterprise: &str) -> Result<Vec<AddressRow>, Error> {
    let rows = sqlx::query(
        "SELECT a.id, a.address, a.district, d.name AS district_name, \
         (SELECT COUNT(*) FROM staff s WHERE s.address_id = a.id AND s.deleted_at IS NULL) AS staff \
         FROM addresses a JOIN districts d ON d.code = a.district \
         WHERE a.enterprise_id = $1 AND a.deleted_at IS NULL ORDER BY a.created_at, a.id",
    )
    .bind(enterprise)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(AddressRow::from_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::from)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AddressForm {
    pub address: String,
    pub district: String,
}

/// Add an office address in one of the 23 districts (R2.1).
pub async fn add_address(
    pool: &AnyPool,
    districts: &crate::domain::Districts,
    enterprise: &str,
    form: &AddressForm,
    now_ms: i64,
) -> Result<String, Error> {
    let mut errors = BTreeMap::new();
    let address = Address::parse(&form.address)
        .map_err(|e| errors.insert("address".into(), format!("办公地址{e}")))
        .ok();
    if districts.find(form.district.trim()).is_none() {
        errors.insert("district".into(), "请选择所在区（市）县".into());
    }
    let Some(address) = address.filter(|_| errors.is_empty()) else {
        return Err(Error::Invalid(errors));
    };
    let mut tx = pool.begin().await?;
    let dup: Option<String> = sqlx::query_scalar(
        "SELECT id FROM addresses WHERE enterprise_id = $1 AND address = $2 AND deleted_at IS NULL",
    )
    .bind(enterprise)
    .bind(address.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    if dup.is_some() {
        return Err(one("address", "该办公地址已存在"));
    }
    let id = new_id();
    sqlx::query("INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(enterprise)
        .bind(address.as_str())
        .bind(form.district.trim())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

/// Remove an office address that no current staff member works at.
pub async fn delete_address(
    pool: &AnyPool,
    enterprise: &str,
    address_id: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    let staff: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM staff WHERE address_id = $1 AND enterprise_id = $2 AND deleted_at IS NULL",
    )
    .bind(address_id)
    .bind(enterprise)
    .fetch_one(&mut *tx)
    .await?;
    if staff > 0 {
        return Err(Error::Refused(format!(
            "该地址还有{staff}名人员，请先将人员调整到其他地址"
        )));
    }
    let r = sqlx::query("UPDATE addresses SET deleted_at = $1 WHERE id = $2 AND enterprise_id = $3 AND deleted_at IS NULL")
        .bind(now_ms)
        .bind(address_id)
        .bind(enterprise)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() != 1 {
        return Err(Error::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct LiaisonForm {
    pub liaison_name: String,
    pub liaison_mobile: String,
}

/// The enterprise's profile as the pages show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub credit_code: String,
    pub kind: String,
    pub district: String,
    pub district_name: String,
    pub contact_name: String,
    pub contact_mobile: String,
    pub liaison_name: Option<String>,
    pub liaison_mobile: Option<String>,
}

const PROFILE_FROM: &str =
    "e.id, e.name, e.credit_code, e.kind, e.district, d.name AS district_name, \
     e.contact_name, e.contact_mobile, e.liaison_name, e.liaison_mobile \
     FROM enterprises e JOIN districts d ON d.code = e.district";

/// Columns of `base_data`, on a row of `enterprises e`. Their cost does not
/// grow with the number of staff.
const BASE_COLUMNS: &str = "e.liaison_name AS base_liaison, \
     (SELECT COUNT(*) FROM addresses a WHERE a.enterprise_id = e.id AND a.deleted_at IS NULL) AS base_addresses, \
     CAST(CASE WHEN EXISTS (SELECT 1 FROM staff s WHERE s.enterprise_id = e.id AND s.deleted_at IS NULL) \
     THEN 1 ELSE 0 END AS BIGINT) AS base_staffed";

fn profile_of(r: &AnyRow) -> Result<Profile, sqlx::Error> {
    let mut p = Profile::from_row(r)?;
    // The stored code shown by its label (an unknown code as it is).
    if let Ok(k) = crate::domain::EnterpriseType::parse(&p.kind) {
        p.kind = k.label().to_string();
    }
    Ok(p)
}

/// The base-data columns of [`BASE_COLUMNS`].
#[derive(sqlx::FromRow)]
struct BaseRow {
    base_addresses: i64,
    base_liaison: Option<String>,
    base_staffed: i64,
}

fn base_data_of(r: &AnyRow) -> Result<BaseData, sqlx::Error> {
    let b = BaseRow::from_row(r)?;
    let mut missing = Vec::new();
    if b.base_addresses == 0 {
        missing.push("至少一个在蓉办公地址".to_string());
    }
    if b.base_liaison.is_none() {
        missing.push("卫生联络官".to_string());
    }
    // Live staff always sit at a live address: an address with staff
    // cannot be deleted.
    if b.base_staffed == 0 {
        missing.push("企业人员（已分配到办公地址）".to_string());
    }
    Ok(BaseData {
        addresses: b.base_addresses,
        missing,
    })
}

pub async fn profile(pool: &AnyPool, enterprise: &str) -> Result<Profile, Error> {
    let r = sqlx::query(&format!("SELECT {PROFILE_FROM} WHERE e.id = $1"))
        .bind(enterprise)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(profile_of(&r)?)
}

/// What the enterprise's home page shows besides its warnings, in one
/// statement.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub profile: Profile,
    pub base: BaseData,
    /// Daily records filed for `day`.
    pub records: i64,
    /// Unread notices in the enterprise's inbox.
    pub unread: i64,
}

pub async fn overview(pool: &AnyPool, enterprise: &str, day: &str) -> Result<Overview, Error> {
    let r = sqlx::query(&format!(
        "SELECT {BASE_COLUMNS}, \
         (SELECT COUNT(*) FROM daily_records r WHERE r.enterprise_id = e.id AND r.day = $2) AS records_of_day, \
         (SELECT COUNT(*) FROM notices n WHERE n.recipient_kind = 'enterprise' AND n.recipient_id = e.id \
         AND n.read_at IS NULL) AS unread, {PROFILE_FROM} WHERE e.id = $1"
    ))
    .bind(enterprise)
    .bind(day)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound)?;
    #[derive(sqlx::FromRow)]
    struct Counts {
        records_of_day: i64,
        unread: i64,
    }
    let counts = Counts::from_row(&r)?;
    Ok(Overview {
        profile: profile_of(&r)?,
        base: base_data_of(&r)?,
        records: counts.records_of_day,
        unread: counts.unread,
    })
}

/// Set the 卫生联络官 (R2.2).
pub async fn set_liaison(
    pool: &AnyPool,
    enterprise: &str,
    form: &LiaisonForm,
    now_ms: i64,
) -> Result<(), Error> {
    let mut errors = BTreeMap::new();
    let name = PersonName::parse(&form.liaison_name)
        .map_err(|e| errors.insert("liaison_name".into(), e.to_string()))
        .ok();
    let mobile = Mobile::parse(&form.liaison_mobile)
        .map_err(|e| errors.insert("liaison_mobile".into(), e.to_string()))
        .ok();
    let (Some(name), Some(mobile)) = (name, mobile) else {
        return Err(Error::Invalid(errors));
    };
    sqlx::query("UPDATE enterprises SET liaison_name = $1, liaison_mobile = $2, updated_at = $3 WHERE id = $4")
        .bind(name.as_str())
        .bind(mobile.as_str())
        .bind(now_ms)
        .bind(enterprise)
        .execute(pool)
        .await?;
    Ok(())
}

/// The base data an enterprise must have before its first daily record.
#[derive(Debug, Clone, Serialize)]
pub struct BaseData {
    /// Live office addresses.
    pub addresses: i64,
    /// R2.4: what is still missing, as labels for the page.
    pub missing: Vec<String>,
}

/// R2.4: how many addresses there are and what is still missing.
pub async fn base_data(pool: &AnyPool, enterprise: &str) -> Result<BaseData, Error> {
    let r = sqlx::query(&format!(
        "SELECT {BASE_COLUMNS} FROM enterprises e WHERE e.id = $1"
    ))
    .bind(enterprise)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound)?;
    Ok(base_data_of(&r)?)
}
