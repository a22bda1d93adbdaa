//! District, city, operator and administrator accounts (R1.7): create with a
//! generated password (forced change at first login), list, disable and
//! enable (a disabled account cannot log in and its sessions end), reset
//! (a new generated password shown once or sent to the bound mobile), and
//! the bulk import of such accounts from CSV for the command line.

use super::{audit, hash, hash_all, invalid, Columns, Error, RowErrors};
use crate::accounts::{generate_password, SessionCache};
use crate::adapters::sms::{Message, SmsGateway};
use crate::domain::{Districts, Mobile};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use std::collections::{BTreeMap, HashSet};

/// The roles administrators manage, as stored.
pub const MANAGED_ROLES: [(&str, &str); 4] = [
    ("district", "区（市）县住建主管部门"),
    ("city", "市住建局"),
    ("operator", "运维"),
    ("admin", "系统管理员"),
];

/// The Chinese label of a stored role.
pub fn role_label(role: &str) -> &'static str {
    match role {
        "enterprise" => "企业用户",
        "district" => "区（市）县住建主管部门",
        "city" => "市住建局",
        "operator" => "运维",
        "admin" => "系统管理员",
        _ => "未知",
    }
}

/// A role as typed: the stored code or a Chinese name.
fn parse_role(s: &str) -> Option<&'static str> {
    let t = s.trim();
    MANAGED_ROLES
        .iter()
        .find(|(code, label)| code.eq_ignore_ascii_case(t) || *label == t)
        .map(|(code, _)| *code)
        .or(match t {
            "区（市）县" | "区(市)县" | "区县" | "区县住建" => Some("district"),
            "市住建局窗口" | "市级" => Some("city"),
            "管理员" => Some("admin"),
            _ => None,
        })
}

/// A district as typed: its code (`jinjiang`), area (锦江区) or unit name.
pub fn find_district<'d>(districts: &'d Districts, s: &str) -> Option<&'d crate::domain::District> {
    let t = s.trim();
    districts.find(t).or_else(|| {
        districts
            .all()
            .iter()
            .find(|d| d.area.as_str() == t || d.name.as_str() == t)
    })
}

/// Names of accounts made here: 3 to 32 letters, digits, `_`, `.` or `-`,
/// starting with a letter or digit.
pub fn check_username(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("请填写账号".into());
    }
    let n = t.chars().count();
    if !(3..=32).contains(&n) {
        return Err("账号须为3至32位".into());
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        || !t.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("账号只能包含字母、数字、下划线、点和连字符，并以字母或数字开头".into());
    }
    Ok(t.to_string())
}

/// The administrator's form for a new account, as typed.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct NewAccount {
    pub username: String,
    pub role: String,
    pub district: String,
    pub mobile: String,
}

struct Checked {
    username: String,
    role: &'static str,
    district: Option<String>,
    mobile: Option<Mobile>,
}

fn check(form: &NewAccount, districts: &Districts) -> Result<Checked, BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let username = check_username(&form.username)
        .map_err(|m| errors.insert("username".into(), m))
        .ok();
    let role = parse_role(&form.role);
    if role.is_none() {
        errors.insert(
            "role".into(),
            "请选择角色（区（市）县、市住建局、运维或系统管理员）".into(),
        );
    }
    let mut district = None;
    if role == Some("district") {
        match find_district(districts, &form.district) {
            Some(d) => district = Some(d.code.as_str().to_string()),
            None => {
                errors.insert("district".into(), "请选择所属区（市）县".into());
            }
        }
    }
    let mobile = match form.mobile.trim() {
        "" => None,
        m => Mobile::parse(m)
            .map_err(|e| errors.insert("mobile".into(), e.to_string()))
            .ok(),
    };
    match (username, role, errors.is_empty()) {
        (Some(username), Some(role), true) => Ok(Checked {
            username,
            role,
            district,
            mobile,
        }),
        _ => Err(errors),
    }
}

async fn exists(pool: &AnyPool, username: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT role FROM accounts WHERE username = $1")
        .bind(username)
        .fetch_optional(pool)
        .await
}

/// Create a district, city, operator or administrator account with a
/// generated password that must be changed at first login. Returns the
/// password, for the caller to show once.
pub async fn create_account(
    pool: &AnyPool,
    districts: &Districts,
    form: &NewAccount,
    actor: &str,
    now_ms: i64,
) -> Result<String, Error> {
    let c = check(form, districts).map_err(Error::Invalid)?;
    if exists(pool, &c.username).await?.is_some() {
        return Err(invalid("username", "该账号已存在"));
    }
    let password = generate_password();
    let h = hash(password.clone()).await?;
    let mut tx = pool.begin().await?;
    match insert_accounts(
        &mut tx,
        std::slice::from_ref(&c),
        &[h],
        actor,
        "create",
        now_ms,
    )
    .await
    {
        Ok(()) => {}
        // Created by someone else since the check above.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(invalid("username", "该账号已存在"))
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok(password)
}

/// One account in the administrator's list.
#[derive(Debug, Clone, Serialize)]
pub struct AccountRow {
    pub username: String,
    pub role: String,
    pub role_label: &'static str,
    pub district_name: Option<String>,
    pub mobile: Option<String>,
    pub disabled: bool,
    pub must_change_password: bool,
    pub created_at: i64,
}

/// An account of the list, as stored.
#[derive(sqlx::FromRow)]
struct Listed {
    username: String,
    role: String,
    district_name: Option<String>,
    mobile: Option<String>,
    disabled_at: Option<i64>,
    must_change_password: i64,
    created_at: i64,
}

/// Every account but the enterprises' (there are thousands of those; they
/// are found by the window page), by role and name; and the number of
/// enterprise accounts.
pub async fn list_accounts(pool: &AnyPool) -> Result<(Vec<AccountRow>, i64), Error> {
    let rows: Vec<Listed> = sqlx::query_as(
        "SELECT a.username, a.role, d.name AS district_name, a.mobile, a.disabled_at, a.must_change_password, a.created_at \
         FROM accounts a LEFT JOIN districts d ON d.code = a.district \
         WHERE a.role <> 'enterprise' ORDER BY a.role, a.username",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(AccountRow {
            username: r.username,
            role_label: role_label(&r.role),
            role: r.role,
            district_name: r.district_name,
            mobile: r
                .mobile
                .map(|m| Mobile::parse(&m).map(|m| m.masked()).unwrap_or(m)),
            disabled: r.disabled_at.is_some(),
            must_change_password: r.must_change_password != 0,
            created_at: r.created_at,
        });
    }
    let enterprises: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE role = 'enterprise'")
            .fetch_one(pool)
            .await?;
    Ok((out, enterprises))
}

/// End every session of `username`, here and (within the cache's few
/// seconds) on other servers of the same database.
pub(crate) async fn end_sessions<'c, E>(
    db: E,
    cache: Option<&SessionCache>,
    username: &str,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query("DELETE FROM sessions WHERE username = $1")
        .bind(username)
        .execute(db)
        .await?;
    if let Some(c) = cache {
        c.forget_user(username);
    }
    Ok(())
}

/// Disable (or enable again) an account. A disabled account cannot log in
/// by password or SMS code, and its sessions end at once. Administrators
/// cannot disable themselves.
pub async fn set_disabled(
    pool: &AnyPool,
    cache: Option<&SessionCache>,
    username: &str,
    disabled: bool,
    actor: &str,
    now_ms: i64,
) -> Result<(), Error> {
    if disabled && username == actor {
        return Err(Error::Refused("不能停用自己的账号".into()));
    }
    let mut tx = pool.begin().await?;
    let r =
        sqlx::query("UPDATE accounts SET disabled_at = $1, updated_at = $2 WHERE username = $3")
            .bind(disabled.then_some(now_ms))
            .bind(now_ms)
            .bind(username)
            .execute(&mut *tx)
            .await?;
    if r.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    let action = if disabled { "disable" } else { "enable" };
    audit(&mut *tx, actor, action, username, None, now_ms).await?;
    if disabled {
        end_sessions(&mut *tx, None, username).await?;
    }
    tx.commit().await?;
    if let Some(c) = cache {
        c.forget_user(username);
    }
    Ok(())
}

/// How a reset password reaches its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Shown once to the administrator, who hands it over.
    Show,
    /// Sent by SMS to the account's bound mobile.
    Sms,
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reset {
    Shown(String),
    Sent { mobile_masked: String },
}

/// Give an account a new generated password (changed at next login) and
/// end its sessions.
pub async fn reset_password(
    pool: &AnyPool,
    cache: Option<&SessionCache>,
    sms: &dyn SmsGateway,
    username: &str,
    delivery: Delivery,
    actor: &str,
    now_ms: i64,
) -> Result<Reset, Error> {
    if username == actor {
        return Err(Error::Refused(
            "不能重置自己的密码，请在“修改密码”中修改".into(),
        ));
    }
    let mobile: Option<String> =
        sqlx::query_scalar("SELECT mobile FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(pool)
            .await?
            .ok_or(Error::NotFound)?;
    if delivery == Delivery::Sms && mobile.is_none() {
        return Err(Error::Refused(
            "该账号未绑定手机，无法短信发送新密码，请选择“页面显示”".into(),
        ));
    }
    let password = generate_password();
    let h = hash(password.clone()).await?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE accounts SET password_hash = $1, must_change_password = 1, updated_at = $2 WHERE username = $3",
    )
    .bind(&h)
    .bind(now_ms)
    .bind(username)
    .execute(&mut *tx)
    .await?;
    let how = match delivery {
        Delivery::Show => "页面显示",
        Delivery::Sms => "短信发送",
    };
    audit(&mut *tx, actor, "reset", username, Some(how), now_ms).await?;
    end_sessions(&mut *tx, None, username).await?;
    tx.commit().await?;
    if let Some(c) = cache {
        c.forget_user(username);
    }
    match (delivery, mobile) {
        (Delivery::Sms, Some(mobile)) => {
            sms.send(Message {
                phone: mobile.clone(),
                template: "password_reset".into(),
                params: serde_json::json!({"username": username, "password": password}),
                idempotency_key: format!("reset/{username}/{}", crate::accounts::new_id()),
                secret: vec!["password".into()],
            })
            .await
            .map_err(|e| {
                tracing::warn!(%username, error = %e, "password reset SMS not sent");
                Error::Refused(format!(
                    "密码已重置，但短信发送失败（{e}），请改为“页面显示”再重置一次"
                ))
            })?;
            Ok(Reset::Sent {
                mobile_masked: Mobile::parse(&mobile)
                    .map(|m| m.masked())
                    .unwrap_or_default(),
            })
        }
        _ => Ok(Reset::Shown(password)),
    }
}

/// What an accounts import did.
#[derive(Debug, Clone, Default)]
pub struct AccountsImport {
    /// (account, role label, generated password) of each new account.
    pub created: Vec<(String, &'static str, String)>,
    /// Accounts already there with the same role: left as they are.
    pub skipped: Vec<String>,
}

/// Import district, city, operator and administrator accounts from CSV
/// with a header row: `账号,角色,区（市）县,手机号` (or `username, role,
/// district, mobile`). Each new account gets a generated password, returned
/// for the command line to print once, changed at first login. An account
/// already there with the same role is skipped, so importing the same file
/// again changes nothing; any bad row and nothing is imported.
pub async fn import_accounts(
    pool: &AnyPool,
    districts: &Districts,
    csv: &str,
    actor: &str,
    now_ms: i64,
) -> Result<AccountsImport, Error> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv.as_bytes());
    let cols = ImportColumns::of(&mut reader)?;
    let mut read = ImportRead::default();
    for (i, record) in reader.records().enumerate() {
        read.record(pool, districts, &cols, i as u64 + 2, record)
            .await?;
    }
    if !read.errors.is_empty() {
        return Err(Error::Rows(read.errors));
    }
    let passwords: Vec<String> = read.new.iter().map(|_| generate_password()).collect();
    let hashes = hash_all(passwords.clone()).await?;
    let mut tx = pool.begin().await?;
    insert_accounts(&mut tx, &read.new, &hashes, actor, "import", now_ms).await?;
    tx.commit().await?;
    Ok(AccountsImport {
        created: read
            .new
            .into_iter()
            .zip(passwords)
            .map(|(c, p)| (c.username, role_label(c.role), p))
            .collect(),
        skipped: read.skipped,
    })
}

/// Where the columns of an accounts import are.
struct ImportColumns {
    username: usize,
    role: usize,
    district: Option<usize>,
    mobile: Option<usize>,
}

impl ImportColumns {
    fn of(reader: &mut csv::Reader<&[u8]>) -> Result<ImportColumns, Error> {
        let header = reader
            .headers()
            .map_err(|e| Error::Refused(format!("无法读取表头：{e}")))?;
        let cols = Columns::new(header);
        let username = cols.find(&["账号", "用户名", "username", "account"]);
        let role = cols.find(&["角色", "role"]);
        let (Some(username), Some(role)) = (username, role) else {
            let mut errors = RowErrors::default();
            errors.push(1, "表头须包含“账号”和“角色”列（可选“区（市）县”“手机号”）");
            return Err(Error::Rows(errors));
        };
        Ok(ImportColumns {
            username,
            role,
            district: cols.find(&["区（市）县", "区(市)县", "所属区（市）县", "district"]),
            mobile: cols.find(&["手机号", "手机", "绑定手机", "mobile"]),
        })
    }

    fn form(&self, record: &csv::StringRecord) -> NewAccount {
        let get = |c: Option<usize>| c.and_then(|c| record.get(c)).unwrap_or("").to_string();
        NewAccount {
            username: get(Some(self.username)),
            role: get(Some(self.role)),
            district: get(self.district),
            mobile: get(self.mobile),
        }
    }
}

/// The rows of an accounts import read so far, in file order.
#[derive(Default)]
struct ImportRead {
    errors: RowErrors,
    seen: HashSet<String>,
    new: Vec<Checked>,
    skipped: Vec<String>,
}

impl ImportRead {
    /// One line of the file: a new account, one already there (skipped) or
    /// the problems found on it.
    async fn record(
        &mut self,
        pool: &AnyPool,
        districts: &Districts,
        cols: &ImportColumns,
        line: u64,
        record: Result<csv::StringRecord, csv::Error>,
    ) -> Result<(), Error> {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                self.errors.push(line, format!("无法读取：{e}"));
                return Ok(());
            }
        };
        if record.iter().all(str::is_empty) {
            return Ok(());
        }
        let c = match check(&cols.form(&record), districts) {
            Ok(c) => c,
            Err(m) => {
                for (field, message) in m {
                    let label = match field.as_str() {
                        "username" => "账号",
                        "role" => "角色",
                        "district" => "区（市）县",
                        _ => "手机号",
                    };
                    self.errors.push(line, format!("{label}：{message}"));
                }
                return Ok(());
            }
        };
        if !self.seen.insert(c.username.clone()) {
            self.errors
                .push(line, format!("账号“{}”在文件中重复", c.username));
            return Ok(());
        }
        match exists(pool, &c.username).await? {
            Some(role) if role == c.role => self.skipped.push(c.username),
            Some(role) => self.errors.push(
                line,
                format!(
                    "账号“{}”已存在，角色为{}，与文件不一致",
                    c.username,
                    role_label(&role)
                ),
            ),
            None => self.new.push(c),
        }
        Ok(())
    }
}

/// New accounts (must change the generated password of `hashes` at first
/// login) and their audit rows, a few hundred to a statement, in the
/// caller's transaction. (Through the engine's `insert_many`:
/// `QueryBuilder::push_values` writes `?`, which PostgreSQL refuses through
/// the `Any` driver, sqlx issue 3000.)
async fn insert_accounts(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    new: &[Checked],
    hashes: &[String],
    actor: &str,
    action: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    use engine::store::sql::{insert_many, Arg};
    let text = |s: &str| Arg::T(Some(s.to_string()));
    let now = Arg::I(Some(now_ms));
    let accounts = new
        .iter()
        .zip(hashes)
        .map(|(c, h)| {
            vec![
                text(&c.username),
                text(c.role),
                Arg::T(c.district.clone()),
                Arg::T(c.mobile.as_ref().map(|m| m.as_str().to_string())),
                text(h),
                Arg::I(Some(1)),
                now.clone(),
                now.clone(),
            ]
        })
        .collect();
    let audits = new
        .iter()
        .map(|c| {
            vec![
                text(&crate::accounts::new_id()),
                now.clone(),
                text(actor),
                text(action),
                text(&c.username),
                text(c.role),
            ]
        })
        .collect();
    let sql_error = |e| match e {
        engine::store::Error::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    };
    insert_many(
        tx,
        "accounts",
        "username, role, district, mobile, password_hash, must_change_password, created_at, updated_at",
        accounts,
        "",
    )
    .await
    .map_err(sql_error)?;
    insert_many(
        tx,
        "account_audit",
        "id, at, actor, action, username, detail",
        audits,
        "",
    )
    .await
    .map_err(sql_error)
}
