//! The application's database: the engine's store plus the domain tables of
//! `server/migrations` (enterprises, accounts, districts, addresses, staff,
//! daily records, comparison runs, the warnings projection, notices, the SMS
//! log), in one SQLite file or one PostgreSQL database.
//!
//! Owns opening and migrating. Must not hold business rules: those live in
//! the domain modules and in `workflows/` and `rules/`.

use engine::store::{SqlStore, Store as _};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] engine::store::Error),
    #[error("migrating the application tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Open (creating if needed) and migrate both the engine's and the
/// application's tables. `url`: `sqlite://path?mode=rwc`, `sqlite::memory:`
/// or `postgres://…`.
pub async fn open(url: &str) -> Result<SqlStore, Error> {
    let store = SqlStore::connect(url).await?;
    let mut migrator = sqlx::migrate!("./migrations");
    // The engine's migrations (0001…) share the bookkeeping table.
    migrator.set_ignore_missing(true);
    migrator.run(store.pool()).await?;
    // Touch the store so a broken engine schema shows here, not later.
    store.next_timer().await?;
    Ok(store)
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
