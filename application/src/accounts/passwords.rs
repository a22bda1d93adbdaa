//! Passwords: argon2id hashes, generated and chosen passwords, the
//! password login (R1.3) with its throttles and known addresses, and the
//! password change (R1.2, R1.7).

use super::hashing::Hashing;
use super::sessions::SessionCache;
use super::throttle::{give_back, take, Limit, LOGIN_WINDOW_MS};
use super::{load_account, new_id, new_token, sha256_hex, Account, Error, MAX_USERNAME_CHARS};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rand::Rng;
use sqlx::AnyPool;
use std::collections::BTreeMap;

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
/// Wrong current passwords on the password form, per account.
const CHANGE_MAX_PER_ACCOUNT: i64 = 5;
/// Longer passwords are refused before any work.
const MAX_PASSWORD_BYTES: usize = 1024;

/// Hash a password with argon2id (default parameters, random salt). CPU
/// heavy by design: call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::Hash)
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
    let checks = login_checks(pool, username, client, now_ms).await?;
    let attempt = new_id();
    take(pool, &checks, Some(&attempt), now_ms).await?;
    let [pair, by_client, by_account] = checks.map(|(key, _)| key);
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

/// The keys a password login is counted on: this account from this client
/// address, this client, and this account from anywhere (in that order).
async fn login_checks(
    pool: &AnyPool,
    username: &str,
    client: &str,
    now_ms: i64,
) -> Result<[(String, Limit); 3], Error> {
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
    Ok([
        (
            format!("login-pair:{client}|{username}"),
            Limit::Count {
                max: LOGIN_MAX_PER_PAIR,
                window_ms: LOGIN_WINDOW_MS,
            },
        ),
        (
            format!("login-client:{client}"),
            Limit::Count {
                max: LOGIN_MAX_PER_CLIENT,
                window_ms: LOGIN_WINDOW_MS,
            },
        ),
        (format!("login:{username}"), account_limit),
    ])
}

/// An argon2id hash of a random string nobody knows, made once.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_token()).unwrap_or_default())
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
pub(super) async fn remember_address(
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
