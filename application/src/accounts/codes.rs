//! One-time SMS login codes (R1.3): sent to the bound mobile, valid a few
//! minutes, used once, a few guesses each.

use super::passwords::remember_address;
use super::throttle::{give_back, take, Limit, LOGIN_WINDOW_MS};
use super::{load_account, new_id, sha256_hex, Account, Error, MAX_USERNAME_CHARS};
use crate::adapters::sms::{Message, SmsGateway};
use rand::Rng;
use sqlx::AnyPool;
use subtle::ConstantTimeEq;

/// SMS codes: 6 digits, valid 5 minutes, 5 guesses.
pub const CODE_VALID_MS: i64 = 5 * 60 * 1000;
const CODE_MAX_ATTEMPTS: i64 = 5;
/// Wrong SMS codes from one client address (each code also allows only
/// `CODE_MAX_ATTEMPTS` guesses in all).
const CODE_GUESS_MAX_PER_CLIENT: i64 = 10;
/// Login codes: one a minute and ten an hour per mobile, twenty an hour
/// per client.
const CODE_GAP_MS: i64 = 60 * 1000;
const CODE_WINDOW_MS: i64 = 3600 * 1000;
const CODE_MAX_PER_MOBILE: i64 = 10;
const CODE_MAX_PER_CLIENT: i64 = 20;

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
    .map_err(Error::Sms)
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
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT id, code_hash FROM sms_codes WHERE username = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?;
    let Some((id, code_hash)) = row else {
        return Err(Error::BadCode);
    };
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
        || !bool::from(
            sha256_hex(&format!("{id}:{}", code.trim()))
                .as_bytes()
                .ct_eq(code_hash.as_bytes()),
        )
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
