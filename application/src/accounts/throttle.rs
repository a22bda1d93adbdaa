//! Throttles: every attempt is counted before the password or code is
//! checked (`take`), atomically, per key (account, client address, mobile);
//! a successful attempt takes its own count back (`give_back`).

use super::{Error, Refusal};
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;

/// The window of the password and code-guess throttles.
pub(super) const LOGIN_WINDOW_MS: i64 = 15 * 60 * 1000;
/// The longest window of any limit (registrations per mobile): events
/// older than this count for nothing.
const LONGEST_WINDOW_MS: i64 = super::registration::REGISTER_WINDOW_MOBILE_MS;

/// A limit on one throttle key.
#[derive(Debug, Clone, Copy)]
pub(super) enum Limit {
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
pub(super) async fn take(
    pool: &AnyPool,
    checks: &[(String, Limit)],
    attempt: Option<&str>,
    now_ms: i64,
) -> Result<(), Error> {
    let mut keys: Vec<&str> = checks.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut tx = pool.begin().await?;
    hold_and_prune(&mut tx, checks, &keys, now_ms).await?;
    let mut wait = 0;
    for (key, limit) in checks {
        let (n, first, last): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last FROM throttle_events \
             WHERE key = $1 AND at > $2",
        )
        .bind(key)
        .bind(now_ms - limit.window_ms())
        .fetch_one(&mut *tx)
        .await?;
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
            .bind(now_ms - LONGEST_WINDOW_MS)
            .execute(pool)
            .await
        {
            tracing::debug!(error = %e, "throttle events not pruned");
        }
    }
    Ok(())
}

/// Hold every key for the rest of `tx` (PostgreSQL: an advisory lock per
/// key, in key order; SQLite: the write lock the first `DELETE` takes) and
/// drop the keys' events older than their longest window.
async fn hold_and_prune(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    checks: &[(String, Limit)],
    keys: &[&str],
    now_ms: i64,
) -> Result<(), Error> {
    let postgres = tx.backend_name().eq_ignore_ascii_case("postgresql");
    for key in keys {
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
            .fetch_one(&mut **tx)
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
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Take back the events `attempt` counted on `keys` (the attempt
/// succeeded), and forget every event of the keys in `clear`.
pub(super) async fn give_back(
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
