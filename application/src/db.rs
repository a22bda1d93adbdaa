//! The application's database: the engine's store plus the domain tables of
//! `application/migrations` (enterprises, accounts, districts, addresses, staff,
//! daily records, comparison runs, the warnings projection, notices, the SMS
//! log), in one SQLite file or one PostgreSQL database.
//!
//! Owns opening and migrating. Must not hold business rules: those live in
//! the domain modules and in `workflows/` and `rules/`.

use engine::store::{SqlStore, Store as _};
use sqlx::{Connection, Executor};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be opened or written, with the cause (checked
    /// on one connection before the pools are built, whose own failure is
    /// only "pool timed out").
    #[error("{0}")]
    Open(String),
    #[error(transparent)]
    Store(#[from] engine::store::Error),
    #[error("migrating the application tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How long the first connection may take (a PostgreSQL server that does
/// not answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Open (creating if needed) and migrate both the engine's and the
/// application's tables. `url`: `sqlite://path?mode=rwc`, `sqlite::memory:`
/// or `postgres://…`. A database that cannot be opened or written fails
/// at once with its cause (`Error::Open`).
pub async fn open(url: &str) -> Result<SqlStore, Error> {
    check(url).await?;
    let store = SqlStore::connect(url).await?;
    let mut migrator = sqlx::migrate!("./migrations");
    // The engine's migrations (0001…) share the bookkeeping table.
    migrator.set_ignore_missing(true);
    migrator.run(store.pool()).await?;
    // Touch the store so a broken engine schema shows here, not later.
    store.next_timer().await?;
    Ok(store)
}

/// Open one connection as the store will and make one write (rolled back):
/// what stops it is reported in Chinese with sqlx's and the system's own
/// words, instead of the pool's "timed out" after 30 s of retrying.
pub async fn check(url: &str) -> Result<(), Error> {
    sqlx::any::install_default_drivers();
    if url.starts_with("postgres") {
        return match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::AnyConnection::connect(url)).await
        {
            Err(_) => Err(Error::Open(format!(
                "无法连接 PostgreSQL 数据库：{}秒内没有应答",
                CONNECT_TIMEOUT.as_secs()
            ))),
            // sqlx's message names the host and user, never the password.
            Ok(Err(e)) => Err(Error::Open(format!("无法连接 PostgreSQL 数据库：{e}"))),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
        };
    }
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(());
    }
    let path = sqlite_path(url);
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|e| sqlite_error(&path, url, &e))?;
    let tried = async {
        // A new file is made with incremental vacuum (the retention purge
        // returns space a bounded step at a time); it must come before WAL
        // mode and any table. No effect on an existing file.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL").await?;
        conn.execute("PRAGMA journal_mode=WAL").await?;
        conn.execute("BEGIN IMMEDIATE").await?;
        let wrote = conn
            .execute("CREATE TABLE epi_write_check (x INTEGER)")
            .await;
        conn.execute("ROLLBACK").await?;
        wrote.map(|_| ())
    }
    .await;
    let _ = conn.close().await;
    match tried {
        Ok(()) => Ok(()),
        // Busy or locked past sqlx's busy timeout: another process is
        // writing, which says nothing against this one; the store waits its turn.
        Err(e) if matches!(primary_code(&e), Some(5 | 6)) => Ok(()),
        Err(e) => Err(sqlite_error(&path, url, &e)),
    }
}

/// SQLite's primary result code of an error (the low byte of an extended one).
fn primary_code(e: &sqlx::Error) -> Option<i64> {
    match e {
        sqlx::Error::Database(d) => d.code()?.parse::<i64>().ok().map(|c| c & 0xff),
        _ => None,
    }
}

/// The file of a `sqlite://path?…` or `sqlite:path` URL.
fn sqlite_path(url: &str) -> String {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split('?').next().unwrap_or(rest).to_string()
}

/// Why SQLite refused, in words an operator can act on.
fn sqlite_error(path: &str, url: &str, e: &sqlx::Error) -> Error {
    let primary = primary_code(e);
    let file = std::path::Path::new(path);
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    // What the operating system says about writing the file.
    let os = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .err();
    if !file.exists() {
        return Error::Open(format!(
            "无法建立数据库文件 {path}：请检查目录 {} 是否存在且可写：{e}",
            dir.display()
        ));
    }
    let message = match (primary, os) {
        (Some(8), _) if url.contains("mode=ro") => {
            format!("数据库只读：{path} 以只读方式打开（mode=ro），系统需要写入数据库")
        }
        (Some(8), Some(io)) => format!("数据库只读：无法写入数据库文件 {path}：{io}"),
        (Some(8), None) => format!(
            "数据库只读：{path} 不能写入（请检查文件及所在目录 {} 的写权限、磁盘是否只读）：{e}",
            dir.display()
        ),
        (Some(14), Some(io)) => format!("无法打开数据库文件 {path}：{io}"),
        (Some(14), None) => format!(
            "无法打开数据库文件 {path}：请检查所在目录 {} 是否存在且可写（SQLite 需要在其中建立日志文件）：{e}",
            dir.display()
        ),
        (_, _) => format!("无法打开数据库 {path}：{e}"),
    };
    Error::Open(message)
}

/// Write the district directory (R7.2) into the database: new districts are
/// added, changed names, liaison officers and phones are updated.
pub async fn seed_districts(
    pool: &sqlx::AnyPool,
    districts: &crate::domain::Districts,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for d in districts.all() {
        sqlx::query(
            "INSERT INTO districts (code, number, name, liaison_name, phone) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (code) DO UPDATE SET number = excluded.number, name = excluded.name, \
             liaison_name = excluded.liaison_name, phone = excluded.phone",
        )
        .bind(d.code.as_str())
        .bind(i64::from(d.number))
        .bind(d.name.as_str())
        .bind(d.liaison.as_str())
        .bind(d.phone.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
