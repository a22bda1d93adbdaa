//! Bulk import of enterprises that already have credit-system accounts
//! (已有账号的企业, R1.5), for the administrator's page and `server admin
//! import-enterprises`.
//!
//! CSV with a header row; columns are found by name, in any order:
//!
//! | column | required | |
//! |---|---|---|
//! | 统一社会信用代码 (`credit_code`) | yes | GB 32100 check character |
//! | 企业名称 (`name`) | yes | |
//! | 企业类型 (`type`) | yes | code or label, e.g. `施工企业` |
//! | 所属区（市）县 (`district`) | yes | code (`jinjiang`), area (锦江区) or unit |
//! | 注册地址 (`registered_address`) | yes | |
//! | 在蓉办公地址 (`office_addresses`) | no | several separated by `；` (or `;`, or a vertical bar); in the enterprise's district; none: the registered address |
//! | 联系人 (`contact_name`) | no | |
//! | 联系人手机 (`contact_mobile`) | yes | |
//! | 登录方式 (`login_methods`) | yes | `password`, `sms`, `usb_key`, `ca` (or 密码, 短信, 密码锁, CA), several separated by `、` or `;` |
//! | 账号 (`account`) | no | the existing credit-system account name; none: generated (`qy` and 8 digits) |
//!
//! Every row is checked and every problem reported with its line (the
//! first `MAX_ROW_ERRORS`, and how many more); with any problem nothing is
//! saved. Otherwise everything is written in one transaction.
//!
//! Re-importing: a credit code already in the database is **updated**
//! (name, type, district, registered address, contact, and office addresses
//! not yet known are added); its account is left as it is (name, password,
//! bound mobile and login methods change only through the administrator's
//! and the window's pages), so importing the same file twice creates
//! nothing the second time and sends no SMS. An account name in the file
//! that differs from the enterprise's existing account, or that another
//! user already has, is a row error.
//!
//! The account of a new enterprise, by login method:
//! - `password`: a generated password, texted to the contact mobile with
//!   the account name, changed at first login;
//! - `sms`: the contact mobile is bound, so the enterprise logs in by SMS
//!   code (and never meets a forced change of a password it never had);
//! - `usb_key` / `ca` only: neither works here (those methods are not built,
//!   DOMAIN.md R1.3); the enterprise switches to SMS at the city window.

use super::accounts::find_district;
use super::{audit, hash_all, Columns, Error, LoginMethod, RowErrors, NO_PASSWORD};
use crate::accounts::{generate_password, new_id};
use crate::adapters::sms::{Message, SmsGateway};
use crate::domain::{
    Address, CreditCode, Districts, EnterpriseName, EnterpriseType, Mobile, PersonName,
};
use rand::Rng;
use serde::Serialize;
use sqlx::AnyPool;
use std::collections::{HashMap, HashSet};

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnterpriseImport {
    pub created: usize,
    pub updated: usize,
    /// The accounts made for new enterprises.
    pub accounts: Vec<ImportedAccount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportedAccount {
    pub username: String,
    pub enterprise: String,
    pub methods: String,
    /// Whether the SMS to the contact mobile was handed to the gateway.
    pub sms_sent: bool,
}

struct Line {
    line: u64,
    code: CreditCode,
    name: EnterpriseName,
    kind: EnterpriseType,
    district: String,
    registered: Address,
    offices: Vec<Address>,
    contact_name: Option<PersonName>,
    mobile: Mobile,
    methods: Vec<LoginMethod>,
    account: Option<String>,
}

/// Existing credit-system account names: 2 to 64 characters, no spaces or
/// control characters.
fn check_account_name(s: &str) -> Result<String, String> {
    let n = s.chars().count();
    if !(2..=64).contains(&n) {
        return Err("账号须为2至64个字符".into());
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\u{3000}')
    {
        return Err("账号不能包含空格或控制字符".into());
    }
    Ok(s.to_string())
}

/// Where the columns are: the required ones in the order of `REQUIRED`.
struct Layout {
    required: [usize; 7],
    offices: Option<usize>,
    contact: Option<usize>,
    account: Option<usize>,
}

/// The required columns: label, and the header names that mean it.
const REQUIRED: [(&str, &[&str]); 7] = [
    (
        "统一社会信用代码",
        &["统一社会信用代码", "信用代码", "credit_code"],
    ),
    ("企业名称", &["企业名称", "名称", "name"]),
    ("企业类型", &["企业类型", "类型", "type", "kind"]),
    (
        "所属区（市）县",
        &[
            "所属区（市）县",
            "区（市）县",
            "区(市)县",
            "所属区(市)县",
            "district",
        ],
    ),
    ("注册地址", &["注册地址", "registered_address"]),
    (
        "联系人手机",
        &[
            "联系人手机",
            "联系手机",
            "手机号",
            "contact_mobile",
            "mobile",
        ],
    ),
    ("登录方式", &["登录方式", "login_methods"]),
];

/// The columns of the header; None (with the error on line 1) when a
/// required one is missing.
fn layout(header: &csv::StringRecord, errors: &mut RowErrors) -> Option<Layout> {
    let cols = Columns::new(header);
    let mut idx = Vec::new();
    let mut missing = Vec::new();
    for (label, aliases) in REQUIRED {
        match cols.find(aliases) {
            Some(i) => idx.push(i),
            None => missing.push(label),
        }
    }
    if !missing.is_empty() {
        errors.push(1, format!("表头缺少列：{}", missing.join("、")));
        return None;
    }
    Some(Layout {
        required: idx.try_into().expect("one per required column"),
        offices: cols.find(&["在蓉办公地址", "办公地址", "office_addresses"]),
        contact: cols.find(&["联系人", "联系人姓名", "contact_name"]),
        account: cols.find(&["账号", "信用账号", "account", "username"]),
    })
}

/// Credit codes and account names met so far in the file.
#[derive(Default)]
struct Seen {
    codes: HashSet<String>,
    accounts: HashSet<String>,
}

fn parse_rows(
    csv: &str,
    districts: &Districts,
    errors: &mut RowErrors,
) -> Result<Vec<Line>, Error> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| Error::Refused(format!("无法读取表头：{e}")))?
        .clone();
    let Some(layout) = layout(&header, errors) else {
        return Ok(Vec::new());
    };
    let mut rows = Vec::new();
    let mut seen = Seen::default();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(line, format!("无法读取：{e}"));
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        let before = errors.total;
        let row = parse_line(&record, line, &layout, districts, &mut seen, errors);
        if errors.total == before {
            rows.extend(row);
        }
    }
    Ok(rows)
}

/// One enterprise's line; every problem is pushed to `errors`.
fn parse_line(
    record: &csv::StringRecord,
    line: u64,
    layout: &Layout,
    districts: &Districts,
    seen: &mut Seen,
    errors: &mut RowErrors,
) -> Option<Line> {
    let get = |c: usize| record.get(c).unwrap_or("").trim().to_string();
    let opt = |c: Option<usize>| c.map(get).unwrap_or_default();
    let idx = &layout.required;
    let code = CreditCode::parse(&get(idx[0]))
        .map_err(|e| errors.push(line, format!("统一社会信用代码：{e}")))
        .ok();
    if let Some(c) = &code {
        if !seen.codes.insert(c.as_str().to_string()) {
            errors.push(line, "统一社会信用代码在文件中重复");
        }
    }
    let name = EnterpriseName::parse(&get(idx[1]))
        .map_err(|e| errors.push(line, format!("企业名称：{e}")))
        .ok();
    let kind = EnterpriseType::parse(&get(idx[2]))
        .map_err(|e| errors.push(line, format!("企业类型：{e}")))
        .ok();
    let district = find_district(districts, &get(idx[3])).map(|d| d.code.as_str().to_string());
    if district.is_none() {
        errors.push(
            line,
            format!(
                "所属区（市）县“{}”不是成都市的23个区（市）县之一",
                get(idx[3])
            ),
        );
    }
    let registered = Address::parse(&get(idx[4]))
        .map_err(|e| errors.push(line, format!("注册地址：{e}")))
        .ok();
    let offices = parse_offices(&opt(layout.offices), line, errors);
    let contact_name = match opt(layout.contact).as_str() {
        "" => None,
        n => PersonName::parse(n)
            .map_err(|e| errors.push(line, format!("联系人：{e}")))
            .ok(),
    };
    let mobile = Mobile::parse(&get(idx[5]))
        .map_err(|e| errors.push(line, format!("联系人手机：{e}")))
        .ok();
    let methods = LoginMethod::parse_list(&get(idx[6]))
        .map_err(|e| errors.push(line, e))
        .ok();
    let account = parse_account(&opt(layout.account), line, &mut seen.accounts, errors);
    Some(Line {
        line,
        code: code?,
        name: name?,
        kind: kind?,
        district: district?,
        registered: registered?,
        offices,
        contact_name,
        mobile: mobile?,
        methods: methods?,
        account,
    })
}

/// The office addresses of a line, each once.
fn parse_offices(text: &str, line: u64, errors: &mut RowErrors) -> Vec<Address> {
    let mut offices = Vec::new();
    for part in text
        .split(['；', ';', '|', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match Address::parse(part) {
            Ok(a) if !offices.contains(&a) => offices.push(a),
            Ok(_) => {}
            Err(e) => errors.push(line, format!("在蓉办公地址“{part}”：{e}")),
        }
    }
    offices
}

/// The account name of a line, if it gives one: well-formed and not twice
/// in the file.
fn parse_account(
    text: &str,
    line: u64,
    accounts: &mut HashSet<String>,
    errors: &mut RowErrors,
) -> Option<String> {
    match text {
        "" => None,
        a => match check_account_name(a) {
            Ok(a) => {
                if !accounts.insert(a.clone()) {
                    errors.push(line, format!("账号“{a}”在文件中重复"));
                }
                Some(a)
            }
            Err(m) => {
                errors.push(line, format!("账号：{m}"));
                None
            }
        },
    }
}

/// An enterprise already in the database, and its account if it has one.
#[derive(sqlx::FromRow)]
struct Existing {
    id: String,
    username: Option<String>,
}

/// Import enterprises from `csv` (see the module's documentation). `sms`
/// texts new accounts' credentials after the transaction commits.
pub async fn import_enterprises(
    pool: &AnyPool,
    sms: &dyn SmsGateway,
    districts: &Districts,
    csv: &str,
    actor: &str,
    now_ms: i64,
) -> Result<EnterpriseImport, Error> {
    let mut errors = RowErrors::default();
    let rows = parse_rows(csv, districts, &mut errors)?;
    if !errors.is_empty() {
        return Err(Error::Rows(errors));
    }
    if rows.is_empty() {
        return Err(Error::Refused("文件中没有企业".into()));
    }
    let existing = find_existing(pool, &rows, &mut errors).await?;
    if !errors.is_empty() {
        return Err(Error::Rows(errors));
    }
    // Passwords for the new accounts that log in by password, hashed before
    // the transaction so it stays short.
    let passwords: Vec<Option<String>> = rows
        .iter()
        .map(|r| {
            (new_account(&existing, r) && r.methods.contains(&LoginMethod::Password))
                .then(generate_password)
        })
        .collect();
    let hashes = hash_all(passwords.iter().flatten().cloned().collect()).await?;
    let written = Writer {
        existing: &existing,
        file_names: rows.iter().filter_map(|r| r.account.as_deref()).collect(),
        actor,
        now_ms,
    }
    .write(pool, &rows, &passwords, hashes)
    .await;
    let (mut report, texts) = match written {
        // Registered or imported by someone else since the checks above.
        Err(Error::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            return Err(Error::Refused(
                "导入期间有企业或账号被同时登记，未导入任何内容，请重新导入".into(),
            ))
        }
        other => other?,
    };
    send_texts(sms, texts, &mut report).await;
    Ok(report)
}

/// Does the line's enterprise get a new account (it is new, or has none)?
fn new_account(existing: &HashMap<String, Existing>, r: &Line) -> bool {
    existing
        .get(r.code.as_str())
        .is_none_or(|e| e.username.is_none())
}

/// What is there already, by credit code; an account name in the file
/// that differs from the enterprise's, or that someone else has, is a row
/// error.
async fn find_existing(
    pool: &AnyPool,
    rows: &[Line],
    errors: &mut RowErrors,
) -> Result<HashMap<String, Existing>, Error> {
    let mut existing: HashMap<String, Existing> = HashMap::new();
    for r in rows {
        let found: Option<Existing> = sqlx::query_as(
            "SELECT e.id, (SELECT MIN(a.username) FROM accounts a WHERE a.enterprise_id = e.id AND a.role = 'enterprise') AS username \
             FROM enterprises e WHERE e.credit_code = $1",
        )
        .bind(r.code.as_str())
        .fetch_optional(pool)
        .await?;
        let needs_account = found.as_ref().is_none_or(|f| f.username.is_none());
        match (&found, &r.account) {
            (
                Some(Existing {
                    username: Some(u), ..
                }),
                Some(a),
            ) if u != a => errors.push(
                r.line,
                format!("该企业已有账号“{u}”，与文件中的账号“{a}”不一致"),
            ),
            (_, Some(a)) if needs_account => {
                let taken: Option<String> =
                    sqlx::query_scalar("SELECT username FROM accounts WHERE username = $1")
                        .bind(a)
                        .fetch_optional(pool)
                        .await?;
                if taken.is_some() {
                    errors.push(r.line, format!("账号“{a}”已被其他用户使用"));
                }
            }
            _ => {}
        }
        if let Some(f) = found {
            existing.insert(r.code.as_str().to_string(), f);
        }
    }
    Ok(existing)
}

/// Writes a checked file in one transaction.
struct Writer<'a> {
    existing: &'a HashMap<String, Existing>,
    /// Account names the file gives (a generated one must differ).
    file_names: HashSet<&'a str>,
    actor: &'a str,
    now_ms: i64,
}

/// A text to send once the transaction committed: the index of its
/// account in the report, and the message.
type Text = (usize, Message);

impl Writer<'_> {
    /// Every line: the enterprise, its new office addresses, its account
    /// when it has none. Returns the report and the texts to send.
    async fn write(
        &self,
        pool: &AnyPool,
        rows: &[Line],
        passwords: &[Option<String>],
        hashes: Vec<String>,
    ) -> Result<(EnterpriseImport, Vec<Text>), Error> {
        let mut hashes = hashes.into_iter();
        let mut report = EnterpriseImport::default();
        let mut texts = Vec::new();
        let mut tx = pool.begin().await?;
        for (r, password) in rows.iter().zip(passwords) {
            let id = self.upsert_enterprise(&mut tx, r, &mut report).await?;
            self.add_offices(&mut tx, &id, r).await?;
            if !new_account(self.existing, r) {
                continue;
            }
            let hash = match password {
                Some(_) => hashes
                    .next()
                    .ok_or_else(|| Error::Internal("hash missing".into()))?,
                None => NO_PASSWORD.to_string(),
            };
            let (account, message) = self
                .create_account(&mut tx, r, &id, password.as_deref(), &hash)
                .await?;
            texts.push((report.accounts.len(), message));
            report.accounts.push(account);
        }
        tx.commit().await?;
        Ok((report, texts))
    }

    /// Update the enterprise the credit code names (and its account's
    /// district), or add it. Returns its id.
    async fn upsert_enterprise(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        r: &Line,
        report: &mut EnterpriseImport,
    ) -> Result<String, Error> {
        let now_ms = self.now_ms;
        if let Some(e) = self.existing.get(r.code.as_str()) {
            sqlx::query(
                "UPDATE enterprises SET name = $1, kind = $2, district = $3, registered_address = $4, \
                 contact_name = COALESCE($5, contact_name), contact_mobile = $6, updated_at = $7 WHERE id = $8",
            )
            .bind(r.name.as_str())
            .bind(r.kind.code())
            .bind(&r.district)
            .bind(r.registered.as_str())
            .bind(r.contact_name.as_ref().map(|n| n.as_str()))
            .bind(r.mobile.as_str())
            .bind(now_ms)
            .bind(&e.id)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE accounts SET district = $1 WHERE enterprise_id = $2 AND role = 'enterprise'",
            )
            .bind(&r.district)
            .bind(&e.id)
            .execute(&mut **tx)
            .await?;
            report.updated += 1;
            return Ok(e.id.clone());
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&id)
        .bind(r.code.as_str())
        .bind(r.name.as_str())
        .bind(r.kind.code())
        .bind(&r.district)
        .bind(r.registered.as_str())
        .bind(r.contact_name.as_ref().map_or("", |n| n.as_str()))
        .bind(r.mobile.as_str())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        report.created += 1;
        Ok(id)
    }

    /// Office addresses not yet known (the registered address when the
    /// file names none).
    async fn add_offices(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: &str,
        r: &Line,
    ) -> Result<(), Error> {
        let known: HashSet<String> = sqlx::query_scalar(
            "SELECT address FROM addresses WHERE enterprise_id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        let offices = if r.offices.is_empty() {
            std::slice::from_ref(&r.registered)
        } else {
            &r.offices[..]
        };
        for a in offices.iter().filter(|a| !known.contains(a.as_str())) {
            sqlx::query(
                "INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(new_id())
            .bind(id)
            .bind(a.as_str())
            .bind(&r.district)
            .bind(self.now_ms)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// The enterprise's account (the file's name or a generated one), its
    /// audit entry, and the text telling the contact how to log in.
    async fn create_account(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        r: &Line,
        id: &str,
        password: Option<&str>,
        hash: &str,
    ) -> Result<(ImportedAccount, Message), Error> {
        let username = match &r.account {
            Some(a) => a.clone(),
            None => free_username(tx, &self.file_names).await?,
        };
        let sms_login = r.methods.contains(&LoginMethod::Sms);
        sqlx::query(
            "INSERT INTO accounts (username, role, enterprise_id, district, mobile, password_hash, must_change_password, \
             created_at, updated_at, login_methods) VALUES ($1, 'enterprise', $2, $3, $4, $5, $6, $7, $7, $8)",
        )
        .bind(&username)
        .bind(id)
        .bind(&r.district)
        .bind(sms_login.then(|| r.mobile.as_str()))
        .bind(hash)
        .bind(i64::from(password.is_some()))
        .bind(self.now_ms)
        .bind(LoginMethod::join(&r.methods))
        .execute(&mut **tx)
        .await?;
        let methods = LoginMethod::labels(&r.methods);
        audit(
            &mut **tx,
            self.actor,
            "import",
            &username,
            Some(&methods),
            self.now_ms,
        )
        .await?;
        let message = Message {
            phone: r.mobile.as_str().to_string(),
            template: "account_imported".into(),
            params: match password {
                Some(p) => {
                    serde_json::json!({"username": username, "password": p, "methods": methods})
                }
                None => serde_json::json!({"username": username, "methods": methods}),
            },
            idempotency_key: format!("import/{username}"),
            secret: vec!["password".into()],
        };
        let account = ImportedAccount {
            username,
            enterprise: r.name.as_str().to_string(),
            methods,
            sms_sent: false,
        };
        Ok((account, message))
    }
}

/// Send the texts, a few at a time: a gateway answering in 100 ms still
/// texts thousands of accounts in a minute or two. A text not sent is
/// logged and shown in the report.
async fn send_texts(sms: &dyn SmsGateway, texts: Vec<Text>, report: &mut EnterpriseImport) {
    use futures::StreamExt as _;
    let results: Vec<(usize, Result<(), _>)> = futures::stream::iter(texts)
        .map(|(i, m)| async move { (i, sms.send(m).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    for (i, r) in results {
        match r {
            Ok(()) => report.accounts[i].sms_sent = true,
            Err(e) => {
                tracing::warn!(username = %report.accounts[i].username, error = %e, "import SMS not sent")
            }
        }
    }
}

/// A generated account name (`qy` and eight digits) nobody has, in the
/// database or in the file.
async fn free_username(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    file_names: &HashSet<&str>,
) -> Result<String, Error> {
    for _ in 0..50 {
        let candidate = format!("qy{:08}", rand::thread_rng().gen_range(0..100_000_000u32));
        if file_names.contains(candidate.as_str()) {
            continue;
        }
        let taken: Option<String> =
            sqlx::query_scalar("SELECT username FROM accounts WHERE username = $1")
                .bind(&candidate)
                .fetch_optional(&mut **tx)
                .await?;
        if taken.is_none() {
            return Ok(candidate);
        }
    }
    Err(Error::Internal("no free account name".into()))
}
