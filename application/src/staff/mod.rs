//! 人员 (DOMAIN.md R2.3, R2.5): an enterprise's staff. The one module that
//! checks and writes `staff` rows and reads them for the pages: list and
//! search, one person, add, edit or move, delete, and the CSV import
//! ([`import_csv`], in `import.rs`). Adding by form and by file share the
//! checks ([`check_fields`]), the "one enterprise at a time" rule
//! ([`owners`]) and the writes ([`insert`], [`update_row`]).
//!
//! Every function takes the calling enterprise's id and touches only that
//! enterprise's rows: an id from a URL or form that belongs to another
//! enterprise is "not found". Must not know about HTTP. (The comparison
//! run's roster, `explain` and the demo's seed read `staff` on their own:
//! read-only, for their own purposes.)

mod import;

pub use import::{decode_csv, import_csv, RowError, Undecodable};

use crate::domain::{IdNumber, Mobile, PersonName};
use crate::sites::PAGE_SIZE;
use engine::store::sql::{insert_many, Arg};
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, FromRow};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A form's problems, by field.
    #[error("填写内容有误")]
    Invalid(BTreeMap<String, String>),
    /// An import's problems, by line: nothing was saved.
    #[error("导入失败，共{}处问题，未导入任何人员", .0.len())]
    Rows(Vec<RowError>),
    #[error("未找到该记录或无权操作")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn one(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(BTreeMap::from([(field.to_string(), message.into())]))
}

/// A staff member as the pages show them: `staff_id` is the row's id,
/// `masked_id` the ID number masked (the full one is never shown).
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    pub staff_id: String,
    pub name: String,
    pub masked_id: String,
    pub mobile: Option<String>,
    pub address_id: String,
    pub address: String,
}

fn person(r: &sqlx::any::AnyRow) -> Result<Person, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        id: String,
        name: String,
        id_number: String,
        mobile: Option<String>,
        address_id: String,
        address: String,
    }
    let r = Stored::from_row(r)?;
    Ok(Person {
        staff_id: r.id,
        name: r.name,
        masked_id: IdNumber::parse(&r.id_number)
            .map(|n| n.masked())
            .unwrap_or_else(|_| "****".into()),
        mobile: r.mobile,
        address_id: r.address_id,
        address: r.address,
    })
}

/// One page of staff, searchable by name or ID number (exact or the last
/// digits) and filterable by address. Returns the rows and the total.
pub async fn page(
    pool: &AnyPool,
    enterprise: &str,
    q: &str,
    address: &str,
    page: i64,
) -> Result<(Vec<Person>, i64), Error> {
    let q = q.trim();
    let like = format!("%{}%", q.replace(['%', '_'], ""));
    let tail = format!("%{}", q.replace(['%', '_'], ""));
    let filter = "s.enterprise_id = $1 AND s.deleted_at IS NULL \
                  AND ($2 = '' OR s.name LIKE $3 OR s.id_number LIKE $4) AND ($5 = '' OR s.address_id = $5)";
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM staff s WHERE {filter}"))
        .bind(enterprise)
        .bind(q)
        .bind(&like)
        .bind(&tail)
        .bind(address)
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query(&format!(
        "SELECT s.id, s.name, s.id_number, s.mobile, s.address_id, a.address FROM staff s \
         JOIN addresses a ON a.id = s.address_id WHERE {filter} ORDER BY s.name, s.id LIMIT $6 OFFSET $7"
    ))
    .bind(enterprise)
    .bind(q)
    .bind(&like)
    .bind(&tail)
    .bind(address)
    .bind(PAGE_SIZE)
    .bind((page.max(1) - 1) * PAGE_SIZE)
    .fetch_all(pool)
    .await?;
    Ok((rows.iter().map(person).collect::<Result<_, _>>()?, total))
}

/// One current staff member of the enterprise.
pub async fn get(pool: &AnyPool, enterprise: &str, staff_id: &str) -> Result<Person, Error> {
    let r = sqlx::query(
        "SELECT s.id, s.name, s.id_number, s.mobile, s.address_id, a.address FROM staff s \
         JOIN addresses a ON a.id = s.address_id WHERE s.id = $1 AND s.enterprise_id = $2 AND s.deleted_at IS NULL",
    )
    .bind(staff_id)
    .bind(enterprise)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound)?;
    Ok(person(&r)?)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct PersonForm {
    pub name: String,
    pub id_number: String,
    pub mobile: String,
    pub address_id: String,
}

/// A person's fields as typed, checked: the values that parse and each
/// problem with the form field it is about, in field order.
struct Fields {
    name: Option<PersonName>,
    id_number: Option<IdNumber>,
    mobile: Option<Mobile>,
    errors: Vec<(&'static str, String)>,
}

/// Check name, ID number (when given: it is not edited) and mobile (may be
/// empty): the checks adding by form and by file share.
fn check_fields(name: &str, id_number: Option<&str>, mobile: &str) -> Fields {
    let mut errors = Vec::new();
    let name = PersonName::parse(name)
        .map_err(|e| errors.push(("name", e.to_string())))
        .ok();
    let id_number = id_number.and_then(|n| {
        IdNumber::parse(n)
            .map_err(|e| errors.push(("id_number", e.to_string())))
            .ok()
    });
    let mobile = match mobile.trim() {
        "" => None,
        m => Mobile::parse(m)
            .map_err(|e| errors.push(("mobile", e.to_string())))
            .ok(),
    };
    Fields {
        name,
        id_number,
        mobile,
        errors,
    }
}

/// A person checked and ready to write.
struct Checked {
    name: PersonName,
    id_number: Option<IdNumber>,
    mobile: Option<Mobile>,
    address_id: String,
}

async fn check_form(
    pool: &AnyPool,
    enterprise: &str,
    form: &PersonForm,
    with_id: bool,
) -> Result<Checked, Error> {
    let f = check_fields(
        &form.name,
        with_id.then_some(form.id_number.as_str()),
        &form.mobile,
    );
    let mut errors: BTreeMap<String, String> = f
        .errors
        .into_iter()
        .map(|(field, message)| (field.to_string(), message))
        .collect();
    // The address must be one of this enterprise's own (R2.3).
    let owned: Option<String> = sqlx::query_scalar(
        "SELECT id FROM addresses WHERE id = $1 AND enterprise_id = $2 AND deleted_at IS NULL",
    )
    .bind(form.address_id.trim())
    .bind(enterprise)
    .fetch_optional(pool)
    .await?;
    if owned.is_none() {
        errors.insert("address_id".into(), "请选择本企业的办公地址".into());
    }
    match f.name {
        Some(name) if errors.is_empty() => Ok(Checked {
            name,
            id_number: f.id_number,
            mobile: f.mobile,
            address_id: form.address_id.trim().to_string(),
        }),
        _ => Err(Error::Invalid(errors)),
    }
}

/// Add a person (R2.3). A person belongs to one enterprise at a time.
pub async fn add(
    pool: &AnyPool,
    enterprise: &str,
    form: &PersonForm,
    now_ms: i64,
) -> Result<String, Error> {
    let p = check_form(pool, enterprise, form, true).await?;
    let id_number = p.id_number.as_ref().expect("checked with id").as_str();
    let mut tx = pool.begin().await?;
    match owners(&mut tx, &[id_number]).await?.remove(id_number) {
        Some(o) if o.enterprise_id == enterprise => {
            return Err(one("id_number", "该人员已在本企业登记"))
        }
        Some(_) => {
            return Err(one(
                "id_number",
                "该人员已在其他企业登记，需由原企业删除后再添加",
            ))
        }
        None => {}
    }
    let mut ids = insert(&mut tx, enterprise, &[&p], now_ms).await?;
    tx.commit().await?;
    Ok(ids.remove(0))
}

/// Edit a person's name and mobile, or move them to another of the
/// enterprise's addresses. The ID number identifies the person and is not
/// edited: a wrong one is deleted and added again.
pub async fn update(
    pool: &AnyPool,
    enterprise: &str,
    staff_id: &str,
    form: &PersonForm,
    now_ms: i64,
) -> Result<(), Error> {
    get(pool, enterprise, staff_id).await?;
    let p = check_form(pool, enterprise, form, false).await?;
    let mut tx = pool.begin().await?;
    if update_row(&mut tx, enterprise, staff_id, &p, now_ms).await? != 1 {
        return Err(Error::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// Delete a person who left (R2.5): future comparisons skip them; an open
/// warning for them stays open for disposal ("人员已离职") and review.
pub async fn delete(
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

/// Where a current person works.
struct Owner {
    staff_id: String,
    enterprise_id: String,
}

/// The current staff rows of these ID numbers, by ID number, in any
/// enterprise (a person is in one at a time).
async fn owners(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id_numbers: &[&str],
) -> Result<HashMap<String, Owner>, sqlx::Error> {
    let mut out = HashMap::new();
    for chunk in id_numbers.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, enterprise_id, id_number FROM staff WHERE deleted_at IS NULL AND id_number IN ({})",
            marks.join(", ")
        );
        let rows: Vec<(String, String, String)> = chunk
            .iter()
            .fold(sqlx::query_as(&sql), |q, n| q.bind(*n))
            .fetch_all(&mut **tx)
            .await?;
        for (staff_id, enterprise_id, id_number) in rows {
            let owner = Owner {
                staff_id,
                enterprise_id,
            };
            out.insert(id_number, owner);
        }
    }
    Ok(out)
}

/// Add `rows` (checked with their ID number) to the enterprise's staff,
/// a few hundred per statement, in the caller's transaction. Returns
/// their new staff ids in order.
async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    enterprise: &str,
    rows: &[&Checked],
    now_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let t = |s: &str| Arg::T(Some(s.to_string()));
    let ids: Vec<String> = rows.iter().map(|_| crate::accounts::new_id()).collect();
    let values = rows
        .iter()
        .zip(&ids)
        .map(|(r, id)| {
            let id_number = r.id_number.as_ref().expect("checked with id");
            vec![
                t(id),
                t(enterprise),
                t(&r.address_id),
                t(r.name.as_str()),
                t(id_number.as_str()),
                Arg::T(r.mobile.as_ref().map(|m| m.as_str().to_string())),
                Arg::I(Some(now_ms)),
                Arg::I(Some(now_ms)),
            ]
        })
        .collect();
    insert_many(
        tx,
        "staff",
        "id, enterprise_id, address_id, name, id_number, mobile, created_at, updated_at",
        values,
        "",
    )
    .await
    .map_err(crate::services::sqlx_error)?;
    Ok(ids)
}

/// Write a current person's name, mobile and address. Returns the rows
/// written (0 when the person is not, or no longer, the enterprise's).
async fn update_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    enterprise: &str,
    staff_id: &str,
    p: &Checked,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE staff SET name = $1, mobile = $2, address_id = $3, updated_at = $4 \
         WHERE id = $5 AND enterprise_id = $6 AND deleted_at IS NULL",
    )
    .bind(p.name.as_str())
    .bind(p.mobile.as_ref().map(|m| m.as_str().to_string()))
    .bind(&p.address_id)
    .bind(now_ms)
    .bind(staff_id)
    .bind(enterprise)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}
