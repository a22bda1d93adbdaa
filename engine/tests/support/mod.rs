//! Shared by the integration tests: a fresh database per test on each store.

use engine::store::SqlStore;

/// A fresh PostgreSQL database named `db` on the server of `DATABASE_URL_PG`,
/// or None when that variable is not set.
pub async fn fresh_pg(db: &str) -> Option<SqlStore> {
    use sqlx::Executor;
    let Ok(url) = std::env::var("DATABASE_URL_PG") else {
        eprintln!("DATABASE_URL_PG not set: PostgreSQL variant of {db} skipped");
        return None;
    };
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&url)
        .await
        .expect("PostgreSQL reachable");
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {db}").as_str())
        .await
        .unwrap();
    let base = url.rsplit_once('/').map(|x| x.0).unwrap_or(&url);
    Some(SqlStore::connect(&format!("{base}/{db}")).await.unwrap())
}

/// Run each named `async fn(SqlStore)` on in-memory SQLite and, when
/// configured, on PostgreSQL.
#[macro_export]
macro_rules! on_every_store {
    ($prefix:literal: $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(engine::store::SqlStore::memory().await.unwrap()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(s) = super::support::fresh_pg(concat!($prefix, "_", stringify!($name))).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
    };
}
