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

use super::{check_fields, insert, owners, update_row, Checked, Error};
use sqlx::AnyPool;
use std::collections::{HashMap, HashSet};

/// A problem on one line of the file (line 1 is the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
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
    let existing = existing(&mut tx, enterprise_id, &rows, &mut errors).await?;
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(Error::Rows(errors));
    }
    let mut new = Vec::new();
    for (_, r) in &rows {
        match existing.get(id_number_of(r)) {
            Some(staff_id) => {
                update_row(&mut tx, enterprise_id, staff_id, r, now_ms).await?;
            }
            None => new.push(r),
        }
    }
    insert(&mut tx, enterprise_id, &new, now_ms).await?;
    tx.commit().await?;
    Ok(rows.len())
}

fn id_number_of(r: &Checked) -> &str {
    r.id_number.as_ref().expect("checked with id").as_str()
}

/// The enterprise's office addresses: text -> id.
async fn addresses_of(
    pool: &AnyPool,
    enterprise_id: &str,
) -> Result<HashMap<String, String>, Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT address, id FROM addresses WHERE enterprise_id = $1 AND deleted_at IS NULL",
    )
    .bind(enterprise_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
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
    let field = |k: usize| record.get(k).unwrap_or("");
    let f = check_fields(field(0), Some(field(1)), field(2));
    // The columns' headers name the problems.
    let column = |name: &str| match name {
        "name" => "姓名",
        "id_number" => "身份证号",
        _ => "手机号",
    };
    let mut row_errors: Vec<String> = f
        .errors
        .iter()
        .map(|(name, e)| format!("{}：{e}", column(name)))
        .collect();
    let address_id = addresses.get(field(3)).cloned();
    if address_id.is_none() {
        row_errors.push(format!("办公地址“{}”不是本企业的在蓉办公地址", field(3)));
    }
    if let Some(n) = &f.id_number {
        if !seen.insert(n.as_str().to_string()) {
            row_errors.push("身份证号在文件中重复".to_string());
        }
    }
    match (f.name, f.id_number, address_id, row_errors.is_empty()) {
        (Some(name), Some(id_number), Some(address_id), true) => Ok(Checked {
            name,
            id_number: Some(id_number),
            mobile: f.mobile,
            address_id,
        }),
        _ => Err(row_errors),
    }
}

/// The staff ids of rows already in this enterprise, by ID number; a row
/// whose person is in another enterprise is an error.
async fn existing(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    enterprise_id: &str,
    rows: &[(u64, Checked)],
    errors: &mut Vec<RowError>,
) -> Result<HashMap<String, String>, Error> {
    let id_numbers: Vec<&str> = rows.iter().map(|(_, r)| id_number_of(r)).collect();
    let mut owners = owners(tx, &id_numbers).await?;
    let mut existing = HashMap::new();
    for (line, r) in rows {
        let Some(o) = owners.remove(id_number_of(r)) else {
            continue;
        };
        if o.enterprise_id != enterprise_id {
            errors.push(RowError {
                line: *line,
                message: "该人员已在其他企业登记，需由原企业删除后再导入".into(),
            });
        } else {
            existing.insert(id_number_of(r).to_string(), o.staff_id);
        }
    }
    Ok(existing)
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
