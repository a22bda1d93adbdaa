//! Accounts and authentication (DOMAIN.md R1): enterprise registration as
//! 疫情防控用户 with generated credentials sent by SMS, password login with
//! argon2 hashes, the forced password change at first login, one-time SMS
//! login codes, sessions, and abuse resistance: a bound on concurrent
//! argon2 work (`Hashing`), and throttles that count an attempt before the
//! password or code is checked, atomically (`take`), per account and client
//! address so a stranger cannot lock a real user out.
//!
//! Owns the `accounts`, `sessions`, `sms_codes`, `throttle_events` and
//! `login_addresses` rows
//! and the enterprise row created at registration. Must not know about HTTP:
//! the web layer passes the client's address in as a plain string.
//!
//! Its parts: `registration`, `passwords` (hashes, password login and
//! change), `hashing` (the bound on argon2 work), `codes` (SMS login
//! codes), `sessions` (and their cache) and `throttle` (the attempt
//! counters every part counts on).

mod codes;
mod hashing;
mod passwords;
mod registration;
mod sessions;
mod throttle;

pub use codes::{login_code, send_login_code, CODE_VALID_MS};
pub use hashing::{Hashing, HASH_WAIT};
pub use passwords::{
    change_password, check_new_password, generate_password, hash_password, login_password,
};
pub use registration::{register, upsert_account, Registered, Registration};
pub use sessions::{
    create_session, create_sms_session, end_session, session, Session, SessionCache,
    SESSION_IDLE_MS, SESSION_MAX_MS, SMS_PROOF_MS,
};

use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use std::collections::BTreeMap;

/// Longer account names are refused before any work.
const MAX_USERNAME_CHARS: usize = 64;

/// Why an attempt was refused before it was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A throttle: try again in this many minutes.
    Minutes(i64),
    /// Every password-hashing slot is busy (see `Hashing`).
    Busy,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Minutes(m) => write!(f, "尝试次数过多，请{m}分钟后再试"),
            Refusal::Busy => write!(f, "系统繁忙，请稍后再试"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Field name → message, for the form.
    #[error("填写内容有误")]
    Invalid(BTreeMap<String, String>),
    #[error("账号或密码错误")]
    BadCredentials,
    #[error("验证码错误或已过期")]
    BadCode,
    #[error("{0}")]
    Throttled(Refusal),
    #[error("短信发送失败，请稍后再试")]
    Sms(#[source] crate::adapters::sms::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// argon2 refused to hash (never with its default parameters).
    #[error("internal: password hashing: {0}")]
    Hash(#[source] argon2::password_hash::Error),
    /// The hashing task panicked or was cancelled.
    #[error("internal: password hashing task: {0}")]
    Join(#[from] tokio::task::JoinError),
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

/// Who is logged in, as stored. `Admin`: system administrators (R1.7:
/// accounts, enterprise imports; see `crate::admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Role {
    Enterprise { id: String, district: String },
    District { code: String },
    City,
    Operator,
    Admin,
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Enterprise { .. } => "enterprise",
            Role::District { .. } => "district",
            Role::City => "city",
            Role::Operator => "operator",
            Role::Admin => "admin",
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

/// An account as stored (the columns of `ACCOUNT_COLUMNS`).
#[derive(sqlx::FromRow)]
struct StoredAccount {
    username: String,
    role: String,
    enterprise_id: Option<String>,
    mobile: Option<String>,
    must_change_password: i64,
    district: Option<String>,
}

/// An account and its password hash, as stored.
#[derive(sqlx::FromRow)]
struct StoredWithHash {
    #[sqlx(flatten)]
    account: StoredAccount,
    password_hash: String,
}

fn account_from_row(r: StoredAccount) -> Result<Account, sqlx::Error> {
    let StoredAccount {
        username,
        role,
        enterprise_id: enterprise,
        mobile,
        must_change_password,
        district,
    } = r;
    // A row this code does not understand is refused, never guessed at: an
    // unknown role must not become some role with other people's rights.
    let corrupt = |what: &str| sqlx::Error::Decode(format!("account `{username}`: {what}").into());
    let role = match role.as_str() {
        "enterprise" => Role::Enterprise {
            id: enterprise.ok_or_else(|| corrupt("enterprise account without enterprise_id"))?,
            district: district.ok_or_else(|| corrupt("enterprise without a district"))?,
        },
        "district" => Role::District {
            code: district.ok_or_else(|| corrupt("district account without a district"))?,
        },
        "city" => Role::City,
        "operator" => Role::Operator,
        "admin" => Role::Admin,
        other => return Err(corrupt(&format!("unknown role `{other}`"))),
    };
    Ok(Account {
        username,
        role,
        mobile,
        must_change_password: must_change_password != 0,
    })
}

const ACCOUNT_COLUMNS: &str =
    "a.username, a.role, a.enterprise_id, a.mobile, a.must_change_password, \
     COALESCE(a.district, e.district) AS district";

/// The account and its password hash, unless it is unknown or disabled.
async fn load_account(pool: &AnyPool, username: &str) -> Result<Option<(Account, String)>, Error> {
    let row: Option<StoredWithHash> = sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a \
         LEFT JOIN enterprises e ON e.id = a.enterprise_id WHERE a.username = $1 \
         AND a.disabled_at IS NULL"
    ))
    .bind(username)
    .fetch_optional(pool)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((account_from_row(r.account)?, r.password_hash))),
    }
}
