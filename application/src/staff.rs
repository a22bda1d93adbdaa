//! Staff import from CSV (R2.3): every row is checked (name, ID number with
//! its check digit, mobile, office address of this enterprise, a person in
//! one enterprise at a time) and every problem is reported with its line;
//! if there is any, nothing is saved.
//!
//! Columns, with a header row: 姓名,身份证号,手机号,办公地址 — the address is
//! the text of one of the enterprise's 在蓉办公地址.
//!
//! The file may be UTF-8 (with or without BOM), UTF-16 with BOM, or GBK —
//! what Excel saves as CSV on Chinese Windows (`decode_csv`).

use crate::domain::{IdNumber, Mobile, PersonName};
use sqlx::{AnyPool, Row};
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("导入失败，共{}处问题，未导入任何人员", .0.len())]
    Rows(Vec<RowError>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A problem on one line of the file (line 1 is the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

struct Checked {
    name: PersonName,
    id_number: IdNumber,
    mobile: Option<Mobile>,
    address_id: String,
}

/// Import `csv` for `enterprise_id`. Persons already in this enterprise are
/// updated (name, mobile, address); new ones are added. Returns the count.
pub async fn import_csv(
    pool: &AnyPool,
    enterprise_id: &str,
    csv: &str,
    now_ms: i64,
) -> Result<usize, Error> {
    let addresses = addresses_of(pool, enterprise_id).await?;
    let (rows, mut errors) = check_rows(csv, &addresses);
    let mut tx = pool.begin().await?;
    let existing = owners(&mut tx, enterprise_id, &rows, &mut errors).await?;
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(Error::Rows(errors));
    }
    for (_, r) in &rows {
        save(
            &mut tx,
            enterprise_id,
            r,
            existing.get(r.id_number.as_str()),
            now_ms,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// The enterprise's office addresses: text -> id.
async fn addresses_of(
    pool: &AnyPool,
    enterprise_id: &str,
) -> Result<HashMap<String, String>, Error> {
    Ok(sqlx::query(
        "SELECT id, address FROM addresses WHERE enterprise_id = $1 AND deleted_at IS NULL",
    )
    .bind(enterprise_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get::<String, _>("address")?,
            r.try_get::<String, _>("id")?,
        ))
    })
    .collect::<Result<_, sqlx::Error>>()?)
}

/// Every row of the file checked on its own: the good ones with their
/// line, and every problem of the others.
fn check_rows(
    csv: &str,
    addresses: &HashMap<String, String>,
) -> (Vec<(u64, Checked)>, Vec<RowError>) {
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv.as_bytes());
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(RowError {
                    line,
                    message: format!("无法读取：{e}"),
                });
                continue;
            }
        };
        match check_row(&record, addresses, &mut seen) {
            Ok(row) => rows.push((line, row)),
            Err(row_errors) => errors.extend(
                row_errors
                    .into_iter()
                    .map(|message| RowError { line, message }),
            ),
        }
    }
    (rows, errors)
}

/// One row: name, ID number (not twice in the file), mobile (optional),
/// an address of the enterprise.
fn check_row(
    record: &csv::StringRecord,
    addresses: &HashMap<String, String>,
    seen: &mut HashSet<String>,
) -> Result<Checked, Vec<String>> {
    let field = |k: usize| record.get(k).unwrap_or("").to_string();
    let mut row_errors = Vec::new();
    let name = PersonName::parse(&field(0))
        .map_err(|e| row_errors.push(format!("姓名：{e}")))
        .ok();
    let id_number = IdNumber::parse(&field(1))
        .map_err(|e| row_errors.push(format!("身份证号：{e}")))
        .ok();
    let mobile = match field(2).as_str() {
        "" => None,
        m => Mobile::parse(m)
            .map_err(|e| row_errors.push(format!("手机号：{e}")))
            .ok(),
    };
    let address_id = addresses.get(&field(3)).cloned();
    if address_id.is_none() {
        row_errors.push(format!("办公地址“{}”不是本企业的在蓉办公地址", field(3)));
    }
    if let Some(n) = &id_number {
        if !seen.insert(n.as_str().to_string()) {
            row_errors.push("身份证号在文件中重复".to_string());
        }
    }
    match (name, id_number, address_id, row_errors.is_empty()) {
        (Some(name), Some(id_number), Some(address_id), true) => Ok(Checked {
            name,
            id_number,
            mobile,
            address_id,
        }),
        _ => Err(row_errors),
    }
}

/// The staff ids of rows already in this enterprise, by ID number; a row
/// whose person is in another enterprise is an error.
async fn owners(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    enterprise_id: &str,
    rows: &[(u64, Checked)],
    errors: &mut Vec<RowError>,
) -> Result<HashMap<String, String>, Error> {
    let mut existing = HashMap::new();
    for (line, r) in rows {
        let other = sqlx::query(
            "SELECT id, enterprise_id FROM staff WHERE id_number = $1 AND deleted_at IS NULL",
        )
        .bind(r.id_number.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(o) = other {
            let owner: String = o.try_get("enterprise_id")?;
            if owner != enterprise_id {
                errors.push(RowError {
                    line: *line,
                    message: "该人员已在其他企业登记，需由原企业删除后再导入".into(),
                });
            } else {
                existing.insert(
                    r.id_number.as_str().to_string(),
                    o.try_get::<String, _>("id")?,
                );
            }
        }
    }
    Ok(existing)
}

/// Update the person `existing` names, or add a new one.
async fn save(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    enterprise_id: &str,
    r: &Checked,
    existing: Option<&String>,
    now_ms: i64,
) -> Result<(), Error> {
    let mobile = r.mobile.as_ref().map(|m| m.as_str().to_string());
    match existing {
        Some(id) => {
            sqlx::query("UPDATE staff SET name = $1, mobile = $2, address_id = $3, updated_at = $4 WHERE id = $5")
                .bind(r.name.as_str())
                .bind(mobile)
                .bind(&r.address_id)
                .bind(now_ms)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO staff (id, enterprise_id, address_id, name, id_number, mobile, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(crate::accounts::new_id())
            .bind(enterprise_id)
            .bind(&r.address_id)
            .bind(r.name.as_str())
            .bind(r.id_number.as_str())
            .bind(mobile)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// A file that is neither UTF-8 (or UTF-16 with BOM) nor GBK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("无法识别文件的编码：请在 Excel 中“另存为”CSV（UTF-8 或 GBK 编码均可）后重新上传")]
pub struct Undecodable;

/// The text of an uploaded CSV file: a BOM decides (UTF-8, UTF-16); else
/// valid UTF-8 is UTF-8 and anything else is read as GBK (GB 18030, which
/// contains it), refused if it is not that either.
pub fn decode_csv(bytes: &[u8]) -> Result<String, Undecodable> {
    if let Some((encoding, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom..]);
        return if had_errors {
            Err(Undecodable)
        } else {
            Ok(text.into_owned())
        };
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(text.to_string());
    }
    let (text, had_errors) = encoding_rs::GBK.decode_without_bom_handling(bytes);
    if had_errors {
        Err(Undecodable)
    } else {
        Ok(text.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "姓名,身份证号,手机号,办公地址\n张三,510104199001010011,13800000000,锦江区红星路1号\n";

    #[test]
    fn utf8_with_and_without_bom_gbk_and_utf16_are_read() {
        assert_eq!(decode_csv(TEXT.as_bytes()).unwrap(), TEXT);
        let bom = [b"\xef\xbb\xbf".as_slice(), TEXT.as_bytes()].concat();
        assert_eq!(decode_csv(&bom).unwrap(), TEXT);
        let (gbk, _, unmappable) = encoding_rs::GBK.encode(TEXT);
        assert!(!unmappable && std::str::from_utf8(&gbk).is_err());
        assert_eq!(decode_csv(&gbk).unwrap(), TEXT);
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(TEXT.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode_csv(&utf16).unwrap(), TEXT);
    }

    #[test]
    fn bytes_of_no_known_encoding_are_refused() {
        // 0x81 0x20: a GBK lead byte followed by a byte that cannot trail it.
        assert_eq!(decode_csv(b"\x81\x20abc"), Err(Undecodable));
        assert!(Undecodable.to_string().contains("GBK"));
    }
}
