//! Sessions: started at login, read on every request (through
//! `SessionCache`), ended at logout or by a password change.

use super::{
    account_from_row, new_token, sha256_hex, Account, Error, StoredAccount, ACCOUNT_COLUMNS,
};
use sqlx::AnyPool;
use std::time::Duration;

/// How long a session lives without a request, and at most.
pub const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
pub const SESSION_MAX_MS: i64 = 12 * 3600 * 1000;
/// For this long after an SMS-code login, the session may set a new
/// password without the old one (DOMAIN.md R1.7).
pub const SMS_PROOF_MS: i64 = 15 * 60 * 1000;

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
/// statement: a `moka` cache bounded in entries, each trusted for
/// `SessionCache::TTL` of wall time after it was read. Ending a session or
/// changing a password through this process drops its entries at once
/// (`end_session` and `change_password` take the cache); a change made by
/// another process on the same database (several servers on one
/// PostgreSQL) shows within the TTL. Expiry is checked against the
/// application clock on every request, cached or not.
#[derive(Debug)]
pub struct SessionCache {
    entries: moka::sync::Cache<String, Cached>,
}

/// A session and its account, as stored.
#[derive(sqlx::FromRow)]
struct StoredSession {
    #[sqlx(flatten)]
    account: StoredAccount,
    csrf: String,
    last_seen: i64,
    expires_at: i64,
    sms_proven_at: Option<i64>,
}

#[derive(Debug, Clone)]
struct Cached {
    session: Session,
    last_seen: i64,
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(Self::MAX)
                .time_to_live(Self::TTL)
                .build(),
        }
    }
}

impl SessionCache {
    pub const TTL: Duration = Duration::from_secs(5);
    /// Entries kept at most (about 5 MB); the least used go first past it.
    const MAX: u64 = 20_000;

    fn get(&self, hash: &str) -> Option<(Session, i64)> {
        self.entries.get(hash).map(|c| (c.session, c.last_seen))
    }

    fn put(&self, hash: String, session: Session, last_seen: i64) {
        self.entries.insert(hash, Cached { session, last_seen });
    }

    fn forget(&self, hash: &str) {
        self.entries.invalidate(hash);
    }

    /// Drop every cached session of `username` (password change, account
    /// disabled or reset by an administrator).
    pub fn forget_user(&self, username: &str) {
        for (hash, c) in self.entries.iter() {
            if c.session.account.username == username {
                self.entries.invalidate(hash.as_str());
            }
        }
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
    let row: Option<StoredSession> = sqlx::query_as(&format!(
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
    let mut last_seen = r.last_seen;
    let expires_at = r.expires_at;
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
        account: account_from_row(r.account)?,
        csrf: r.csrf,
        expires_at,
        sms_proven_at: r.sms_proven_at,
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
    use super::{Session, SessionCache};
    use crate::accounts::{Account, Role};

    fn session(username: &str) -> Session {
        Session {
            account: Account {
                username: username.into(),
                role: Role::Operator,
                mobile: None,
                must_change_password: false,
            },
            csrf: "c".into(),
            expires_at: 1_000,
            sms_proven_at: None,
        }
    }

    #[test]
    fn the_cache_forgets_one_session_or_every_session_of_a_user() {
        let cache = SessionCache::default();
        cache.put("h1".into(), session("a"), 10);
        cache.put("h2".into(), session("a"), 20);
        cache.put("h3".into(), session("b"), 30);
        assert_eq!(
            cache.get("h2").map(|(s, seen)| (s.account.username, seen)),
            Some(("a".into(), 20))
        );
        cache.forget_user("a");
        assert!(cache.get("h1").is_none() && cache.get("h2").is_none());
        assert_eq!(cache.get("h3").map(|(_, seen)| seen), Some(30));
        cache.forget("h3");
        assert!(cache.get("h3").is_none());
    }
}
