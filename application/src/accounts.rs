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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lives without a request, and at most.
pub const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
pub const SESSION_MAX_MS: i64 = 12 * 3600 * 1000;
/// SMS codes: 6 digits, valid 5 minutes, 5 guesses.
pub const CODE_VALID_MS: i64 = 5 * 60 * 1000;
const CODE_MAX_ATTEMPTS: i64 = 5;
/// Throttles. Every attempt is counted before the password or code is
/// checked (see `take`); a successful login takes its own attempt back.
const LOGIN_WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failed password logins of one account from one client address.
const LOGIN_MAX_PER_PAIR: i64 = 5;
/// Failed password logins from one client address, whatever the accounts.
const LOGIN_MAX_PER_CLIENT: i64 = 20;
/// Failed password logins of one account from anywhere: this many are free
/// in the window, then each further one waits 2^k seconds after the latest
/// (k = failures beyond the free ones), at most `LOGIN_BACKOFF_CAP_MS`.
/// Never a hard lock, and the SMS-code login stays open meanwhile.
/// The back-off does not hold back an address the account logged in from
/// within `KNOWN_ADDRESS_MS` (`login_addresses`).
const LOGIN_FREE_PER_ACCOUNT: i64 = 10;
const LOGIN_BACKOFF_CAP_MS: i64 = LOGIN_WINDOW_MS;
const KNOWN_ADDRESS_MS: i64 = 30 * 24 * 3600 * 1000;
/// Wrong SMS codes from one client address (each code also allows only
/// `CODE_MAX_ATTEMPTS` guesses in all).
const CODE_GUESS_MAX_PER_CLIENT: i64 = 10;
/// Login codes: one a minute and ten an hour per mobile, twenty an hour
/// per client.
const CODE_GAP_MS: i64 = 60 * 1000;
const CODE_WINDOW_MS: i64 = 3600 * 1000;
const CODE_MAX_PER_MOBILE: i64 = 10;
const CODE_MAX_PER_CLIENT: i64 = 20;
/// Registrations (each texts credentials): ten an hour per client, three a
/// day per contact mobile.
const REGISTER_WINDOW_CLIENT_MS: i64 = 3600 * 1000;
const REGISTER_MAX_PER_CLIENT: i64 = 10;
const REGISTER_WINDOW_MOBILE_MS: i64 = 24 * 3600 * 1000;
const REGISTER_MAX_PER_MOBILE: i64 = 3;
/// Wrong current passwords on the password form, per account.
const CHANGE_MAX_PER_ACCOUNT: i64 = 5;
/// For this long after an SMS-code login, the session may set a new
/// password without the old one (DOMAIN.md R1.7).
pub const SMS_PROOF_MS: i64 = 15 * 60 * 1000;
/// Longer account names and passwords are refused before any work.
const MAX_USERNAME_CHARS: usize = 64;
const MAX_PASSWORD_BYTES: usize = 1024;

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

fn account_from_row(r: &sqlx::any::AnyRow) -> Result<Account, sqlx::Error> {
    let role: String = r.try_get("role")?;
    let enterprise: Option<String> = r.try_get("enterprise_id")?;
    let district: Option<String> = r.try_get("district")?;
    let username: String = r.try_get("username")?;
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

/// The bound on concurrent argon2 work. Each hash or verification takes
/// about 19 MiB and a core for tens of milliseconds; without a bound, a
/// burst of anonymous logins grows memory without limit. `slots` run at
/// once on the blocking threads; a caller waits at most `wait` for a slot,
/// then is refused with `Refusal::Busy` ("系统繁忙，请稍后再试"), so waiting
/// requests hold no argon2 memory and their number is bounded by the
/// server's connection limit. A slot is held by the blocking work itself:
/// a request that goes away mid-hash does not free it early.
///
/// The web application and `upsert_account` share `Hashing::global()`
/// (slots = available cores, wait `HASH_WAIT`); tests build their own with
/// `Hashing::new` to observe `peak()` and `runs()`.
#[derive(Debug, Clone)]
pub struct Hashing {
    inner: std::sync::Arc<HashingInner>,
}

#[derive(Debug)]
struct HashingInner {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    size: usize,
    wait: Duration,
    running: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicU64,
}

static GLOBAL_HASHING: std::sync::OnceLock<Hashing> = std::sync::OnceLock::new();

/// How long a login waits for a hashing slot before it is refused.
pub const HASH_WAIT: Duration = Duration::from_secs(5);

impl Hashing {
    pub fn new(slots: usize, wait: Duration) -> Hashing {
        let size = slots.max(1);
        Hashing {
            inner: std::sync::Arc::new(HashingInner {
                slots: std::sync::Arc::new(tokio::sync::Semaphore::new(size)),
                size,
                wait,
                running: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                runs: AtomicU64::new(0),
            }),
        }
    }

    /// The process's one bound: a slot per available core, unless
    /// `set_global` chose otherwise before first use.
    pub fn global() -> &'static Hashing {
        GLOBAL_HASHING.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Hashing::new(cores, HASH_WAIT)
        })
    }

    /// Make `hashing` the process's bound (e.g. from configuration, at
    /// start-up). Refused (returned) once `global()` has been used.
    pub fn set_global(hashing: Hashing) -> Result<(), Hashing> {
        GLOBAL_HASHING.set(hashing)
    }

    /// Slots, i.e. the most hashes that ever run at once.
    pub fn slots(&self) -> usize {
        self.inner.size
    }

    /// The most hashes that ran at once so far.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }

    /// Hashes and verifications run so far.
    pub fn runs(&self) -> u64 {
        self.inner.runs.load(Ordering::SeqCst)
    }

    /// Run `f` (argon2 work) on a blocking thread once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let slots = self.inner.slots.clone();
        let permit = match tokio::time::timeout(self.inner.wait, slots.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(Error::Throttled(Refusal::Busy)),
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let now = inner.running.fetch_add(1, Ordering::SeqCst) + 1;
            inner.peak.fetch_max(now, Ordering::SeqCst);
            let out = f();
            inner.running.fetch_sub(1, Ordering::SeqCst);
            inner.runs.fetch_add(1, Ordering::SeqCst);
            out
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
    }
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
/// A well-formed registration is counted per client address and per
/// contact mobile before anything is written or sent, so a flood cannot
/// text credentials to one number again and again.
#[allow(clippy::too_many_arguments)]
pub async fn register(
    pool: &AnyPool,
    hashing: &Hashing,
    sms: &dyn SmsGateway,
    districts: &crate::domain::Districts,
    form: &Registration,
    client: &str,
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
    take(
        pool,
        &[
            (
                format!("register-client:{client}"),
                Limit::Count {
                    max: REGISTER_MAX_PER_CLIENT,
                    window_ms: REGISTER_WINDOW_CLIENT_MS,
                },
            ),
            (
                format!("register-mobile:{}", mobile.as_str()),
                Limit::Count {
                    max: REGISTER_MAX_PER_MOBILE,
                    window_ms: REGISTER_WINDOW_MOBILE_MS,
                },
            ),
        ],
        None,
        now_ms,
    )
    .await?;
    let password = generate_password();
    let hash = hashing
        .run({
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
    let hash = Hashing::global()
        .run({
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

/// A limit on one throttle key.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// At most `max` events in `window_ms`.
    Count { max: i64, window_ms: i64 },
    /// `free` events in `window_ms`; after them each further event waits
    /// 2^k seconds after the latest (k = events beyond `free`), at most
    /// `cap_ms`.
    Backoff {
        free: i64,
        window_ms: i64,
        cap_ms: i64,
    },
}

impl Limit {
    fn window_ms(&self) -> i64 {
        match *self {
            Limit::Count { window_ms, .. } | Limit::Backoff { window_ms, .. } => window_ms,
        }
    }

    /// How long (ms) until one more event is allowed, given the `n` events
    /// in the window, the first and the latest; 0 when it is allowed now.
    fn wait_ms(&self, n: i64, first: i64, last: i64, now_ms: i64) -> i64 {
        match *self {
            Limit::Count { max, window_ms } if n >= max => first + window_ms - now_ms,
            Limit::Backoff { free, cap_ms, .. } if n >= free => {
                let delay = (1000i64 << (n - free).min(40)).min(cap_ms);
                last + delay - now_ms
            }
            _ => 0,
        }
        .max(0)
    }
}

/// Count one event on every key of `checks` if none is over its limit: all
/// or nothing, before the work it guards, so concurrent attempts cannot all
/// pass one check. One transaction holds every key while it counts and
/// inserts: on PostgreSQL an advisory transaction lock per key, taken in
/// key order (no deadlock); on SQLite the database's write lock, which its
/// first statement (the pruning `DELETE`) takes. A refused attempt counts
/// nothing, so hammering does not extend a wait. Events carry `attempt`
/// (when given) so `give_back` can take them back.
async fn take(
    pool: &AnyPool,
    checks: &[(String, Limit)],
    attempt: Option<&str>,
    now_ms: i64,
) -> Result<(), Error> {
    let mut keys: Vec<&str> = checks.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut tx = pool.begin().await?;
    let postgres = tx.backend_name().eq_ignore_ascii_case("postgresql");
    for key in &keys {
        if postgres {
            let lock = i64::from_be_bytes(
                Sha256::digest(key.as_bytes())[..8]
                    .try_into()
                    .expect("8 bytes"),
            );
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) AS l",
            )
            .bind(lock)
            .fetch_one(&mut *tx)
            .await?;
        }
        // Old events go as new ones come, so the table stays small.
        let longest = checks
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, l)| l.window_ms())
            .max()
            .unwrap_or(0);
        sqlx::query("DELETE FROM throttle_events WHERE key = $1 AND at <= $2")
            .bind(*key)
            .bind(now_ms - longest)
            .execute(&mut *tx)
            .await?;
    }
    let mut wait = 0;
    for (key, limit) in checks {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last FROM throttle_events \
             WHERE key = $1 AND at > $2",
        )
        .bind(key)
        .bind(now_ms - limit.window_ms())
        .fetch_one(&mut *tx)
        .await?;
        let n: i64 = row.try_get("n")?;
        let first: Option<i64> = row.try_get("first")?;
        let last: Option<i64> = row.try_get("last")?;
        wait = wait.max(limit.wait_ms(n, first.unwrap_or(now_ms), last.unwrap_or(now_ms), now_ms));
    }
    if wait > 0 {
        tx.rollback().await?;
        return Err(Error::Throttled(Refusal::Minutes(
            ((wait + 59_999) / 60_000).max(1),
        )));
    }
    for key in &keys {
        sqlx::query("INSERT INTO throttle_events (key, at, attempt) VALUES ($1, $2, $3)")
            .bind(*key)
            .bind(now_ms)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    // Now and then, the events of keys never seen again (names tried
    // once) go too. Best effort: a conflict with a concurrent prune is
    // harmless.
    if rand::thread_rng().gen_ratio(1, 64) {
        if let Err(e) = sqlx::query("DELETE FROM throttle_events WHERE at <= $1")
            .bind(now_ms - REGISTER_WINDOW_MOBILE_MS)
            .execute(pool)
            .await
        {
            tracing::debug!(error = %e, "throttle events not pruned");
        }
    }
    Ok(())
}

/// Take back the events `attempt` counted on `keys` (the attempt
/// succeeded), and forget every event of the keys in `clear`.
async fn give_back(
    pool: &AnyPool,
    keys: &[&str],
    attempt: &str,
    clear: &[&str],
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    for key in keys {
        sqlx::query("DELETE FROM throttle_events WHERE key = $1 AND attempt = $2")
            .bind(*key)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
    }
    for key in clear {
        sqlx::query("DELETE FROM throttle_events WHERE key = $1")
            .bind(*key)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn load_account(pool: &AnyPool, username: &str) -> Result<Option<(Account, String)>, Error> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a \
         LEFT JOIN enterprises e ON e.id = a.enterprise_id WHERE a.username = $1 \
         AND a.disabled_at IS NULL"
    ))
    .bind(username)
    .fetch_optional(pool)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((account_from_row(&r)?, r.try_get("password_hash")?))),
    }
}

/// Log in by account and password (R1.3). A wrong account and a wrong
/// password look the same.
///
/// The attempt is counted before the password is checked (`take`) on three
/// keys: this account from this client address (5 in 15 minutes, then
/// refused), this client (20), and this account from anywhere (10 free,
/// then exponential back-off capped at 15 minutes: never a hard lock; not
/// applied at an address the account logged in from within 30 days). A
/// stranger's guesses therefore do not stop the real user logging in from
/// their own address, and the SMS-code login is counted apart. A success
/// takes its attempt back, clears this account's failures from this
/// address and remembers the address. The check runs under `hashing`.
pub async fn login_password(
    pool: &AnyPool,
    hashing: &Hashing,
    username: &str,
    password: &str,
    client: &str,
    now_ms: i64,
) -> Result<Account, Error> {
    let username = username.trim();
    if username.is_empty()
        || username.chars().count() > MAX_USERNAME_CHARS
        || password.len() > MAX_PASSWORD_BYTES
    {
        return Err(Error::BadCredentials);
    }
    let pair = format!("login-pair:{client}|{username}");
    let by_client = format!("login-client:{client}");
    let by_account = format!("login:{username}");
    let attempt = new_id();
    // From a known address the attempt still counts on the account, but
    // the account's back-off does not hold it back.
    let account_limit = if known_address(pool, username, client, now_ms).await? {
        Limit::Count {
            max: i64::MAX,
            window_ms: LOGIN_WINDOW_MS,
        }
    } else {
        Limit::Backoff {
            free: LOGIN_FREE_PER_ACCOUNT,
            window_ms: LOGIN_WINDOW_MS,
            cap_ms: LOGIN_BACKOFF_CAP_MS,
        }
    };
    take(
        pool,
        &[
            (
                pair.clone(),
                Limit::Count {
                    max: LOGIN_MAX_PER_PAIR,
                    window_ms: LOGIN_WINDOW_MS,
                },
            ),
            (
                by_client.clone(),
                Limit::Count {
                    max: LOGIN_MAX_PER_CLIENT,
                    window_ms: LOGIN_WINDOW_MS,
                },
            ),
            (by_account.clone(), account_limit),
        ],
        Some(&attempt),
        now_ms,
    )
    .await?;
    let keys = [pair.as_str(), by_client.as_str(), by_account.as_str()];
    let found = load_account(pool, username).await?;
    // Verify against a fixed hash when the account does not exist, so the
    // time taken does not tell which accounts exist.
    let hash = found.as_ref().map(|(_, h)| h.clone());
    let pw = password.to_string();
    let ok = match hashing
        .run(move || verify_password(&pw, hash.as_deref().unwrap_or_else(|| dummy_hash())))
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            // Not checked: not counted.
            give_back(pool, &keys, &attempt, &[]).await?;
            return Err(e);
        }
    };
    match found {
        Some((account, _)) if ok => {
            give_back(pool, &keys, &attempt, &[&pair]).await?;
            remember_address(pool, &account.username, client, now_ms).await?;
            Ok(account)
        }
        _ => Err(Error::BadCredentials),
    }
}

/// An argon2id hash of a random string nobody knows, made once.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_token()).unwrap_or_default())
}

/// Send a login code to the account's bound mobile (R1.3). Counted per
/// client and per mobile (one a minute, ten an hour) before the code is
/// made, atomically. Answers the same whether or not the account exists,
/// so it cannot be used to discover accounts.
pub async fn send_login_code(
    pool: &AnyPool,
    sms: &dyn SmsGateway,
    username: &str,
    client: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let username = username.trim();
    let found = if username.chars().count() > MAX_USERNAME_CHARS {
        None
    } else {
        load_account(pool, username).await?
    };
    let mut checks = vec![(
        format!("code-client:{client}"),
        Limit::Count {
            max: CODE_MAX_PER_CLIENT,
            window_ms: CODE_WINDOW_MS,
        },
    )];
    let target = found.and_then(|(a, _)| Some((a.username, a.mobile?)));
    if let Some((_, mobile)) = &target {
        let key = format!("code-mobile:{mobile}");
        checks.push((
            key.clone(),
            Limit::Count {
                max: 1,
                window_ms: CODE_GAP_MS,
            },
        ));
        checks.push((
            key,
            Limit::Count {
                max: CODE_MAX_PER_MOBILE,
                window_ms: CODE_WINDOW_MS,
            },
        ));
    }
    take(pool, &checks, None, now_ms).await?;
    let Some((username, mobile)) = target else {
        return Ok(());
    };
    let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000u32));
    let id = new_id();
    sqlx::query(
        "INSERT INTO sms_codes (id, username, code_hash, created_at, expires_at, attempts) VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(&id)
    .bind(&username)
    .bind(sha256_hex(&format!("{id}:{code}")))
    .bind(now_ms)
    .bind(now_ms + CODE_VALID_MS)
    .execute(pool)
    .await?;
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
/// once, five guesses in all. Each guess is counted before it is compared:
/// on the code (one atomic `UPDATE`, so concurrent guesses cannot exceed
/// five) and per client address (a stranger spoils at most a few codes).
/// Independent of the password throttles: a user whose password login is
/// held back by someone else's guesses logs in here.
pub async fn login_code(
    pool: &AnyPool,
    username: &str,
    code: &str,
    client: &str,
    now_ms: i64,
) -> Result<Account, Error> {
    let username = username.trim();
    if username.is_empty() || username.chars().count() > MAX_USERNAME_CHARS {
        return Err(Error::BadCode);
    }
    let by_client = format!("code-guess-client:{client}");
    let attempt = new_id();
    take(
        pool,
        &[(
            by_client.clone(),
            Limit::Count {
                max: CODE_GUESS_MAX_PER_CLIENT,
                window_ms: LOGIN_WINDOW_MS,
            },
        )],
        Some(&attempt),
        now_ms,
    )
    .await?;
    let row = sqlx::query(
        "SELECT id, code_hash FROM sms_codes WHERE username = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Err(Error::BadCode);
    };
    let id: String = row.try_get("id")?;
    // The guess is counted first; only a code still usable takes it.
    let counted = sqlx::query(
        "UPDATE sms_codes SET attempts = attempts + 1 \
         WHERE id = $1 AND attempts < $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(&id)
    .bind(CODE_MAX_ATTEMPTS)
    .bind(now_ms)
    .execute(pool)
    .await?;
    if counted.rows_affected() != 1
        || sha256_hex(&format!("{id}:{}", code.trim())) != row.try_get::<String, _>("code_hash")?
    {
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
    give_back(pool, &[&by_client], &attempt, &[]).await?;
    let account = load_account(pool, username)
        .await?
        .map(|(a, _)| a)
        .ok_or(Error::BadCode)?;
    remember_address(pool, &account.username, client, now_ms).await?;
    Ok(account)
}

/// Whether `username` logged in successfully from `client` lately.
async fn known_address(
    pool: &AnyPool,
    username: &str,
    client: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT last_success FROM login_addresses WHERE username = $1 AND client = $2",
    )
    .bind(username)
    .bind(client)
    .fetch_optional(pool)
    .await?;
    Ok(last.is_some_and(|t| t > now_ms - KNOWN_ADDRESS_MS))
}

/// Note a successful login of `username` from `client`; forget the
/// account's addresses not used for `KNOWN_ADDRESS_MS`.
async fn remember_address(
    pool: &AnyPool,
    username: &str,
    client: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO login_addresses (username, client, last_success) VALUES ($1, $2, $3) \
         ON CONFLICT (username, client) DO UPDATE SET last_success = excluded.last_success",
    )
    .bind(username)
    .bind(client)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM login_addresses WHERE username = $1 AND last_success <= $2")
        .bind(username)
        .bind(now_ms - KNOWN_ADDRESS_MS)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Change a password (forced at first login, R1.2): the current one must be
/// right and the new one must follow the rules. `current` is None for a
/// session that proved the bound mobile by SMS code (R1.7: such a user may
/// set a new password without knowing the old one). Wrong current
/// passwords are counted per account before they are checked. Other
/// sessions of the account end.
#[allow(clippy::too_many_arguments)]
pub async fn change_password(
    pool: &AnyPool,
    hashing: &Hashing,
    cache: &SessionCache,
    username: &str,
    current: Option<&str>,
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
    } else if current == Some(new) {
        errors.insert(
            "new_password".to_string(),
            "新密码不能与原密码相同".to_string(),
        );
    }
    let Some((_, hash)) = load_account(pool, username).await? else {
        return Err(Error::BadCredentials);
    };
    if let Some(current) = current {
        let key = format!("password-check:{username}");
        let attempt = new_id();
        take(
            pool,
            &[(
                key.clone(),
                Limit::Count {
                    max: CHANGE_MAX_PER_ACCOUNT,
                    window_ms: LOGIN_WINDOW_MS,
                },
            )],
            Some(&attempt),
            now_ms,
        )
        .await?;
        let cur = current.to_string();
        match hashing.run(move || verify_password(&cur, &hash)).await {
            Ok(true) => give_back(pool, &[&key], &attempt, &[]).await?,
            Ok(false) => {
                errors.insert("current_password".to_string(), "原密码不正确".to_string());
            }
            Err(e) => {
                give_back(pool, &[&key], &attempt, &[]).await?;
                return Err(e);
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let new = new.to_string();
    let hash = hashing.run(move || hash_password(&new)).await??;
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
    /// When the session was started by a proven SMS code, then.
    pub sms_proven_at: Option<i64>,
}

impl Session {
    /// Started by an SMS code less than `SMS_PROOF_MS` ago: may set a new
    /// password without the old one.
    pub fn sms_proven(&self, now_ms: i64) -> bool {
        self.sms_proven_at
            .is_some_and(|at| now_ms >= at && now_ms - at < SMS_PROOF_MS)
    }
}

/// Start a session; returns the cookie token (only its hash is stored).
pub async fn create_session(pool: &AnyPool, username: &str, now_ms: i64) -> Result<String, Error> {
    start_session(pool, username, now_ms, None).await
}

/// Start a session for a user who just proved their bound mobile by SMS
/// code (`login_code`): marked so, see `Session::sms_proven`.
pub async fn create_sms_session(
    pool: &AnyPool,
    username: &str,
    now_ms: i64,
) -> Result<String, Error> {
    start_session(pool, username, now_ms, Some(now_ms)).await
}

async fn start_session(
    pool: &AnyPool,
    username: &str,
    now_ms: i64,
    sms_proven_at: Option<i64>,
) -> Result<String, Error> {
    let token = new_token();
    sqlx::query(
        "INSERT INTO sessions (token_hash, username, csrf, created_at, last_seen, expires_at, sms_proven_at) VALUES ($1, $2, $3, $4, $4, $5, $6)",
    )
    .bind(sha256_hex(&token))
    .bind(username)
    .bind(new_token())
    .bind(now_ms)
    .bind(now_ms + SESSION_MAX_MS)
    .bind(sms_proven_at)
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

    /// Drop every cached session of `username` (password change, account
    /// disabled or reset by an administrator).
    pub fn forget_user(&self, username: &str) {
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
        "SELECT {ACCOUNT_COLUMNS}, s.csrf, s.last_seen, s.expires_at, s.sms_proven_at FROM sessions s \
         JOIN accounts a ON a.username = s.username LEFT JOIN enterprises e ON e.id = a.enterprise_id \
         WHERE s.token_hash = $1 AND a.disabled_at IS NULL"
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
        sms_proven_at: r.try_get("sms_proven_at")?,
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

#[cfg(test)]
mod tests {
    use super::{Limit, Refusal};

    #[test]
    fn a_count_limit_waits_until_its_first_event_leaves_the_window() {
        let l = Limit::Count {
            max: 5,
            window_ms: 900_000,
        };
        assert_eq!(l.wait_ms(4, 0, 0, 1_000), 0);
        assert_eq!(l.wait_ms(5, 1_000, 5_000, 10_000), 891_000);
        assert_eq!(l.wait_ms(5, 1_000, 5_000, 901_000), 0);
    }

    #[test]
    fn back_off_doubles_after_the_free_events_and_is_capped() {
        let l = Limit::Backoff {
            free: 10,
            window_ms: 900_000,
            cap_ms: 900_000,
        };
        assert_eq!(l.wait_ms(9, 0, 0, 0), 0);
        assert_eq!(l.wait_ms(10, 0, 0, 0), 1_000);
        assert_eq!(l.wait_ms(13, 0, 0, 0), 8_000);
        assert_eq!(l.wait_ms(13, 0, 0, 8_000), 0);
        // Capped, never a hard lock, even far beyond.
        assert_eq!(l.wait_ms(500, 0, 0, 0), 900_000);
    }

    #[test]
    fn refusals_speak_chinese() {
        assert_eq!(
            Refusal::Minutes(15).to_string(),
            "尝试次数过多，请15分钟后再试"
        );
        assert_eq!(Refusal::Busy.to_string(), "系统繁忙，请稍后再试");
    }
}
