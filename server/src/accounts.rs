//! Accounts and authentication (DOMAIN.md R1): enterprise registration as
//! 疫情防控用户 with generated credentials sent by SMS, password login with
//! argon2 hashes, the forced password change at first login, one-time SMS
//! login codes, sessions, and the throttling of failed logins and code
//! requests.
//!
//! Owns the `accounts`, `sessions`, `sms_codes` and `throttle_events` rows
//! and the enterprise row created at registration. Must not know about HTTP:
//! the web layer passes the client's address in as a plain string.

use crate::adapters::sms::{Message, SmsGateway};
use crate::domain::{Address, CreditCode, EnterpriseName, EnterpriseType, Mobile, PersonName};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lives without a request, and at most.
pub const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
pub const SESSION_MAX_MS: i64 = 12 * 3600 * 1000;
/// SMS codes: 6 digits, valid 5 minutes, 5 guesses.
pub const CODE_VALID_MS: i64 = 5 * 60 * 1000;
const CODE_MAX_ATTEMPTS: i64 = 5;
/// Throttles: failed logins per account and per client in 15 minutes; codes
/// per mobile (one a minute, ten an hour) and per client (twenty an hour).
const LOGIN_WINDOW_MS: i64 = 15 * 60 * 1000;
const LOGIN_MAX_PER_ACCOUNT: i64 = 5;
const LOGIN_MAX_PER_CLIENT: i64 = 20;
const CODE_GAP_MS: i64 = 60 * 1000;
const CODE_WINDOW_MS: i64 = 3600 * 1000;
const CODE_MAX_PER_MOBILE: i64 = 10;
const CODE_MAX_PER_CLIENT: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Field name → message, for the form.
    #[error("填写内容有误")]
    Invalid(BTreeMap<String, String>),
    #[error("账号或密码错误")]
    BadCredentials,
    #[error("验证码错误或已过期")]
    BadCode,
    #[error("尝试次数过多，请{0}分钟后再试")]
    Throttled(i64),
    #[error("短信发送失败，请稍后再试")]
    Sms(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(BTreeMap::from([(field.to_string(), message.into())]))
}

/// A random identifier for new rows (hex of 16 random bytes): safe in URLs,
/// reveals nothing.
pub fn new_id() -> String {
    hex::encode(rand::thread_rng().gen::<[u8; 16]>())
}

/// A random token for cookies and CSRF (hex of 32 random bytes).
pub fn new_token() -> String {
    hex::encode(rand::thread_rng().gen::<[u8; 32]>())
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Who is logged in, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Role {
    Enterprise { id: String, district: String },
    District { code: String },
    City,
    Operator,
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Enterprise { .. } => "enterprise",
            Role::District { .. } => "district",
            Role::City => "city",
            Role::Operator => "operator",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub role: Role,
    pub mobile: Option<String>,
    pub must_change_password: bool,
}

fn account_from_row(r: &sqlx::any::AnyRow) -> Result<Account, sqlx::Error> {
    let role: String = r.try_get("role")?;
    let enterprise: Option<String> = r.try_get("enterprise_id")?;
    let district: Option<String> = r.try_get("district")?;
    let role = match role.as_str() {
        "enterprise" => Role::Enterprise {
            id: enterprise.unwrap_or_default(),
            district: district.unwrap_or_default(),
        },
        "district" => Role::District {
            code: district.unwrap_or_default(),
        },
        "city" => Role::City,
        _ => Role::Operator,
    };
    Ok(Account {
        username: r.try_get("username")?,
        role,
        mobile: r.try_get("mobile")?,
        must_change_password: r.try_get::<i64, _>("must_change_password")? != 0,
    })
}

const ACCOUNT_COLUMNS: &str =
    "a.username, a.role, a.enterprise_id, a.mobile, a.must_change_password, \
     COALESCE(a.district, e.district) AS district";

/// Hash a password with argon2id (default parameters, random salt). CPU
/// heavy by design: call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(e.to_string()))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

/// A generated password: 12 characters from letters and digits without the
/// easily confused ones, with at least one of each kind.
pub fn generate_password() -> String {
    const LETTERS: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGITS: &[u8] = b"23456789";
    let mut rng = rand::thread_rng();
    let mut p: Vec<u8> = (0..12)
        .map(|i| {
            if i % 4 == 3 {
                DIGITS[rng.gen_range(0..DIGITS.len())]
            } else {
                LETTERS[rng.gen_range(0..LETTERS.len())]
            }
        })
        .collect();
    // Shuffle so digits are not always in the same places.
    for i in (1..p.len()).rev() {
        p.swap(i, rng.gen_range(0..=i));
    }
    String::from_utf8(p).expect("ascii")
}

/// The password rules for a chosen password, in words.
pub fn check_new_password(p: &str) -> Result<(), String> {
    let n = p.chars().count();
    if n < 8 {
        return Err("密码至少8位".into());
    }
    if n > 64 {
        return Err("密码不能超过64位".into());
    }
    if !p.chars().any(|c| c.is_ascii_alphabetic()) || !p.chars().any(|c| c.is_ascii_digit()) {
        return Err("密码须同时包含字母和数字".into());
    }
    Ok(())
}

/// R1.1's form, as typed.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct Registration {
    pub name: String,
    pub credit_code: String,
    pub kind: String,
    pub district: String,
    pub registered_address: String,
    pub contact_name: String,
    pub contact_mobile: String,
}

/// What registration gives back: the account name and where the SMS went.
#[derive(Debug, Clone)]
pub struct Registered {
    pub enterprise_id: String,
    pub username: String,
    pub mobile_masked: String,
    /// False when the SMS gateway refused: the person logs in by SMS code
    /// later, or asks the district.
    pub sms_sent: bool,
}

/// Register an enterprise (R1.1–R1.2): check every field, create the
/// enterprise, its first office address (the registered address) and its
/// account in one transaction, then text the credentials to the contact.
pub async fn register(
    pool: &AnyPool,
    sms: &dyn SmsGateway,
    districts: &crate::domain::Districts,
    form: &Registration,
    now_ms: i64,
) -> Result<Registered, Error> {
    let mut errors = BTreeMap::new();
    let name = EnterpriseName::parse(&form.name)
        .map_err(|e| errors.insert("name".into(), format!("企业名称{e}")))
        .ok();
    let code = CreditCode::parse(&form.credit_code)
        .map_err(|e| errors.insert("credit_code".into(), e.to_string()))
        .ok();
    let kind = EnterpriseType::parse(&form.kind)
        .map_err(|_| errors.insert("kind".into(), "请选择企业类型".into()))
        .ok();
    let district = districts.find(form.district.trim()).cloned();
    if district.is_none() {
        errors.insert("district".into(), "请选择所属区（市）县".into());
    }
    let address = Address::parse(&form.registered_address)
        .map_err(|e| errors.insert("registered_address".into(), format!("注册地址{e}")))
        .ok();
    let contact = PersonName::parse(&form.contact_name)
        .map_err(|e| errors.insert("contact_name".into(), e.to_string()))
        .ok();
    let mobile = Mobile::parse(&form.contact_mobile)
        .map_err(|e| errors.insert("contact_mobile".into(), e.to_string()))
        .ok();
    let (
        Some(name),
        Some(code),
        Some(kind),
        Some(district),
        Some(address),
        Some(contact),
        Some(mobile),
        true,
    ) = (
        name,
        code,
        kind,
        district,
        address,
        contact,
        mobile,
        errors.is_empty(),
    )
    else {
        return Err(Error::Invalid(errors));
    };
    let password = generate_password();
    let hash = blocking({
        let p = password.clone();
        move || hash_password(&p)
    })
    .await??;
    let enterprise_id = new_id();
    let mut tx = pool.begin().await?;
    let taken: Option<String> =
        sqlx::query_scalar("SELECT id FROM enterprises WHERE credit_code = $1")
            .bind(code.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    if taken.is_some() {
        return Err(invalid(
            "credit_code",
            "该统一社会信用代码已注册，请直接登录或使用短信验证码登录",
        ));
    }
    // Account names: "qy" and eight digits, unique.
    let mut username = String::new();
    for _ in 0..20 {
        let candidate = format!("qy{:08}", rand::thread_rng().gen_range(0..100_000_000u32));
        let exists: Option<String> =
            sqlx::query_scalar("SELECT username FROM accounts WHERE username = $1")
                .bind(&candidate)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            username = candidate;
            break;
        }
    }
    if username.is_empty() {
        return Err(Error::Internal("no free account name".into()));
    }
    sqlx::query(
        "INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(&enterprise_id)
    .bind(code.as_str())
    .bind(name.as_str())
    .bind(kind.code())
    .bind(district.code.as_str())
    .bind(address.as_str())
    .bind(contact.as_str())
    .bind(mobile.as_str())
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new_id())
    .bind(&enterprise_id)
    .bind(address.as_str())
    .bind(district.code.as_str())
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO accounts (username, role, enterprise_id, district, mobile, password_hash, must_change_password, created_at, updated_at) \
         VALUES ($1, 'enterprise', $2, $3, $4, $5, 1, $6, $6)",
    )
    .bind(&username)
    .bind(&enterprise_id)
    .bind(district.code.as_str())
    .bind(mobile.as_str())
    .bind(&hash)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let sent = sms
        .send(Message {
            phone: mobile.as_str().to_string(),
            template: "account_created".into(),
            params: serde_json::json!({"username": username, "password": password}),
            idempotency_key: format!("register/{username}"),
            secret: vec!["password".into()],
        })
        .await;
    if let Err(e) = &sent {
        tracing::warn!(%username, error = %e, "registration SMS not sent");
    }
    Ok(Registered {
        enterprise_id,
        username,
        mobile_masked: mobile.masked(),
        sms_sent: sent.is_ok(),
    })
}

/// Create (or reset) an account directly: district, city and operator
/// accounts, and the demo's. Returns nothing; the caller knows the password.
#[allow(clippy::too_many_arguments)]
pub async fn upsert_account(
    pool: &AnyPool,
    username: &str,
    role: &Role,
    mobile: Option<&str>,
    password: &str,
    must_change: bool,
    now_ms: i64,
) -> Result<(), Error> {
    let hash = blocking({
        let p = password.to_string();
        move || hash_password(&p)
    })
    .await??;
    let (enterprise, district) = match role {
        Role::Enterprise { id, district } => (Some(id.clone()), Some(district.clone())),
        Role::District { code } => (None, Some(code.clone())),
        _ => (None, None),
    };
    sqlx::query(
        "INSERT INTO accounts (username, role, enterprise_id, district, mobile, password_hash, must_change_password, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         ON CONFLICT (username) DO UPDATE SET role = excluded.role, enterprise_id = excluded.enterprise_id, \
         district = excluded.district, mobile = excluded.mobile, password_hash = excluded.password_hash, \
         must_change_password = excluded.must_change_password, updated_at = excluded.updated_at",
    )
    .bind(username)
    .bind(role.name())
    .bind(enterprise)
    .bind(district)
    .bind(mobile)
    .bind(hash)
    .bind(i64::from(must_change))
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Count a throttled event and tell whether `key` is over `max` in `window_ms`.
async fn throttle_count(
    pool: &AnyPool,
    key: &str,
    window_ms: i64,
    now_ms: i64,
) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM throttle_events WHERE key = $1 AND at > $2")
            .bind(key)
            .bind(now_ms - window_ms)
            .fetch_one(pool)
            .await?,
    )
}

async fn throttle_hit(pool: &AnyPool, keys: &[String], now_ms: i64) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    for k in keys {
        sqlx::query("INSERT INTO throttle_events (key, at) VALUES ($1, $2)")
            .bind(k)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        // Old events are pruned as new ones come, so the table stays small.
        sqlx::query("DELETE FROM throttle_events WHERE key = $1 AND at <= $2")
            .bind(k)
            .bind(now_ms - CODE_WINDOW_MS.max(LOGIN_WINDOW_MS))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn load_account(pool: &AnyPool, username: &str) -> Result<Option<(Account, String)>, Error> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a \
         LEFT JOIN enterprises e ON e.id = a.enterprise_id WHERE a.username = $1"
    ))
    .bind(username)
    .fetch_optional(pool)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((account_from_row(&r)?, r.try_get("password_hash")?))),
    }
}

/// Log in by account and password (R1.3), throttled per account and per
/// client. A wrong account and a wrong password look the same.
pub async fn login_password(
    pool: &AnyPool,
    username: &str,
    password: &str,
    client: &str,
    now_ms: i64,
) -> Result<Account, Error> {
    let username = username.trim();
    let keys = [
        format!("login:{username}"),
        format!("login-client:{client}"),
    ];
    if throttle_count(pool, &keys[0], LOGIN_WINDOW_MS, now_ms).await? >= LOGIN_MAX_PER_ACCOUNT
        || throttle_count(pool, &keys[1], LOGIN_WINDOW_MS, now_ms).await? >= LOGIN_MAX_PER_CLIENT
    {
        return Err(Error::Throttled(LOGIN_WINDOW_MS / 60_000));
    }
    let found = load_account(pool, username).await?;
    // Verify against a fixed hash when the account does not exist, so the
    // time taken does not tell which accounts exist.
    let hash = found.as_ref().map(|(_, h)| h.clone());
    let pw = password.to_string();
    let ok =
        blocking(move || verify_password(&pw, hash.as_deref().unwrap_or_else(|| dummy_hash())))
            .await?;
    match found {
        Some((account, _)) if ok => Ok(account),
        _ => {
            throttle_hit(pool, &keys, now_ms).await?;
            Err(Error::BadCredentials)
        }
    }
}

/// An argon2id hash of a random string nobody knows, made once.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_token()).unwrap_or_default())
}

/// Send a login code to the account's bound mobile (R1.3). Throttled per
/// mobile and per client. Answers the same whether or not the account
/// exists, so it cannot be used to discover accounts.
pub async fn send_login_code(
    pool: &AnyPool,
    sms: &dyn SmsGateway,
    username: &str,
    client: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let username = username.trim();
    let client_key = format!("code-client:{client}");
    if throttle_count(pool, &client_key, CODE_WINDOW_MS, now_ms).await? >= CODE_MAX_PER_CLIENT {
        return Err(Error::Throttled(CODE_WINDOW_MS / 60_000));
    }
    let Some((account, _)) = load_account(pool, username).await? else {
        throttle_hit(pool, &[client_key], now_ms).await?;
        return Ok(());
    };
    let Some(mobile) = account.mobile.clone() else {
        throttle_hit(pool, &[client_key], now_ms).await?;
        return Ok(());
    };
    let mobile_key = format!("code-mobile:{mobile}");
    if throttle_count(pool, &mobile_key, CODE_GAP_MS, now_ms).await? > 0 {
        return Err(Error::Throttled(1));
    }
    if throttle_count(pool, &mobile_key, CODE_WINDOW_MS, now_ms).await? >= CODE_MAX_PER_MOBILE {
        return Err(Error::Throttled(CODE_WINDOW_MS / 60_000));
    }
    let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000u32));
    let id = new_id();
    sqlx::query(
        "INSERT INTO sms_codes (id, username, code_hash, created_at, expires_at, attempts) VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(&id)
    .bind(&account.username)
    .bind(sha256_hex(&format!("{id}:{code}")))
    .bind(now_ms)
    .bind(now_ms + CODE_VALID_MS)
    .execute(pool)
    .await?;
    throttle_hit(pool, &[client_key, mobile_key], now_ms).await?;
    sms.send(Message {
        phone: mobile,
        template: "login_code".into(),
        params: serde_json::json!({"code": code, "minutes": CODE_VALID_MS / 60_000}),
        idempotency_key: format!("login-code/{id}"),
        secret: vec!["code".into()],
    })
    .await
    .map_err(|e| Error::Sms(e.to_string()))
}

/// Log in with the latest code sent to the account: valid 5 minutes, used
/// once, five wrong guesses spoil it.
pub async fn login_code(
    pool: &AnyPool,
    username: &str,
    code: &str,
    now_ms: i64,
) -> Result<Account, Error> {
    let username = username.trim();
    let row = sqlx::query(
        "SELECT id, code_hash, expires_at, attempts, used_at FROM sms_codes WHERE username = $1 \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Err(Error::BadCode);
    };
    let id: String = row.try_get("id")?;
    let usable = row.try_get::<i64, _>("expires_at")? > now_ms
        && row.try_get::<i64, _>("attempts")? < CODE_MAX_ATTEMPTS
        && row.try_get::<Option<i64>, _>("used_at")?.is_none();
    let matches =
        sha256_hex(&format!("{id}:{}", code.trim())) == row.try_get::<String, _>("code_hash")?;
    if !(usable && matches) {
        sqlx::query("UPDATE sms_codes SET attempts = attempts + 1 WHERE id = $1")
            .bind(&id)
            .execute(pool)
            .await?;
        return Err(Error::BadCode);
    }
    // Used once: the update only succeeds for the first of two racing logins.
    let r = sqlx::query("UPDATE sms_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
        .bind(now_ms)
        .bind(&id)
        .execute(pool)
        .await?;
    if r.rows_affected() != 1 {
        return Err(Error::BadCode);
    }
    load_account(pool, username)
        .await?
        .map(|(a, _)| a)
        .ok_or(Error::BadCode)
}

/// Change a password (forced at first login, R1.2): the current one must be
/// right and the new one must follow the rules. Other sessions of the
/// account end.
#[allow(clippy::too_many_arguments)]
pub async fn change_password(
    pool: &AnyPool,
    cache: &SessionCache,
    username: &str,
    current: &str,
    new: &str,
    confirm: &str,
    keep_session: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let mut errors = BTreeMap::new();
    if let Err(m) = check_new_password(new) {
        errors.insert("new_password".to_string(), m);
    } else if new != confirm {
        errors.insert("confirm".to_string(), "两次输入的新密码不一致".to_string());
    } else if new == current {
        errors.insert(
            "new_password".to_string(),
            "新密码不能与原密码相同".to_string(),
        );
    }
    let Some((_, hash)) = load_account(pool, username).await? else {
        return Err(Error::BadCredentials);
    };
    let cur = current.to_string();
    if !blocking(move || verify_password(&cur, &hash)).await? {
        errors.insert("current_password".to_string(), "原密码不正确".to_string());
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let new = new.to_string();
    let hash = blocking(move || hash_password(&new)).await??;
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE accounts SET password_hash = $1, must_change_password = 0, updated_at = $2 WHERE username = $3")
        .bind(hash)
        .bind(now_ms)
        .bind(username)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE username = $1 AND token_hash <> $2")
        .bind(username)
        .bind(sha256_hex(keep_session))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    cache.forget_user(username);
    Ok(())
}

/// A live session, as the web layer sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: Account,
    pub csrf: String,
    pub expires_at: i64,
}

/// Start a session; returns the cookie token (only its hash is stored).
pub async fn create_session(pool: &AnyPool, username: &str, now_ms: i64) -> Result<String, Error> {
    let token = new_token();
    sqlx::query(
        "INSERT INTO sessions (token_hash, username, csrf, created_at, last_seen, expires_at) VALUES ($1, $2, $3, $4, $4, $5)",
    )
    .bind(sha256_hex(&token))
    .bind(username)
    .bind(new_token())
    .bind(now_ms)
    .bind(now_ms + SESSION_MAX_MS)
    .execute(pool)
    .await?;
    // Sessions that ended long ago are removed as new ones start.
    sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR last_seen < $2")
        .bind(now_ms)
        .bind(now_ms - SESSION_IDLE_MS)
        .execute(pool)
        .await?;
    Ok(token)
}

/// Sessions read recently, by token hash, so most requests need no
/// statement. An entry is trusted for `SessionCache::TTL` of wall time:
/// ending a session or changing a password through this process drops its
/// entries at once (`end_session` and `change_password` take the cache);
/// a change made by another process on the same database (several servers
/// on one PostgreSQL) shows within the TTL. Expiry is checked against the
/// application clock on every request, cached or not.
#[derive(Debug, Default)]
pub struct SessionCache {
    entries: Mutex<HashMap<String, Cached>>,
}

#[derive(Debug)]
struct Cached {
    session: Session,
    last_seen: i64,
    read_at: Instant,
}

impl SessionCache {
    pub const TTL: Duration = Duration::from_secs(5);
    /// Entries kept at most (about 5 MB); the cache starts over past it.
    const MAX: usize = 20_000;

    fn get(&self, hash: &str) -> Option<(Session, i64)> {
        let entries = self.entries.lock().expect("session cache");
        entries
            .get(hash)
            .filter(|c| c.read_at.elapsed() < Self::TTL)
            .map(|c| (c.session.clone(), c.last_seen))
    }

    fn put(&self, hash: String, session: Session, last_seen: i64) {
        let mut entries = self.entries.lock().expect("session cache");
        if entries.len() >= Self::MAX {
            entries.clear();
        }
        entries.insert(
            hash,
            Cached {
                session,
                last_seen,
                read_at: Instant::now(),
            },
        );
    }

    fn forget(&self, hash: &str) {
        self.entries.lock().expect("session cache").remove(hash);
    }

    fn forget_user(&self, username: &str) {
        self.entries
            .lock()
            .expect("session cache")
            .retain(|_, c| c.session.account.username != username);
    }
}

/// Live at `now_ms`: neither past its end nor idle too long.
fn live(expires_at: i64, last_seen: i64, now_ms: i64) -> bool {
    expires_at > now_ms && last_seen + SESSION_IDLE_MS > now_ms
}

/// How long a session's `last_seen` may lag: it is written at most once a
/// minute, so most requests only read.
const TOUCH_MS: i64 = 60_000;

/// The session for a cookie token, if it is live, from the cache when it
/// can; refreshes its idle deadline at most once a minute.
pub async fn session(
    reader: &AnyPool,
    writer: &AnyPool,
    cache: &SessionCache,
    token: &str,
    now_ms: i64,
) -> Result<Option<Session>, Error> {
    let hash = sha256_hex(token);
    if let Some((s, last_seen)) = cache.get(&hash) {
        if live(s.expires_at, last_seen, now_ms) && now_ms - last_seen <= TOUCH_MS {
            return Ok(Some(s));
        }
    }
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS}, s.csrf, s.last_seen, s.expires_at FROM sessions s \
         JOIN accounts a ON a.username = s.username LEFT JOIN enterprises e ON e.id = a.enterprise_id \
         WHERE s.token_hash = $1"
    ))
    .bind(&hash)
    .fetch_optional(reader)
    .await?;
    let Some(r) = row else {
        cache.forget(&hash);
        return Ok(None);
    };
    let mut last_seen: i64 = r.try_get("last_seen")?;
    let expires_at: i64 = r.try_get("expires_at")?;
    if !live(expires_at, last_seen, now_ms) {
        cache.forget(&hash);
        return Ok(None);
    }
    if now_ms - last_seen > TOUCH_MS {
        sqlx::query("UPDATE sessions SET last_seen = $1 WHERE token_hash = $2")
            .bind(now_ms)
            .bind(&hash)
            .execute(writer)
            .await?;
        last_seen = now_ms;
    }
    let session = Session {
        account: account_from_row(&r)?,
        csrf: r.try_get("csrf")?,
        expires_at,
    };
    cache.put(hash, session.clone(), last_seen);
    Ok(Some(session))
}

pub async fn end_session(pool: &AnyPool, cache: &SessionCache, token: &str) -> Result<(), Error> {
    let hash = sha256_hex(token);
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(&hash)
        .execute(pool)
        .await?;
    cache.forget(&hash);
    Ok(())
}
