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
    let mut migrator = match store.backend() {
        engine::store::sql::Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        engine::store::sql::Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    // The engine's migrations (0001…) share the bookkeeping table.
    migrator.set_ignore_missing(true);
    migrator.run(store.pool()).await?;
    // Touch the store so a broken engine schema shows here, not later.
    store.next_timer().await?;
    Ok(store)
}
