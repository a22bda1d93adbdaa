//! Shared by the integration tests: a fresh database per test on each store.

use engine::store::SqlStore;

/// A fresh PostgreSQL database named `db` on the server of `DATABASE_URL_PG`,
/// or None when that variable is not set.
#[allow(dead_code)]
pub async fn fresh_pg(db: &str) -> Option<SqlStore> {
    let url = engine::testing::fresh_postgres(db).await?;
    Some(SqlStore::connect(&url).await.unwrap())
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

/// The comparison activities answered from a fixture (shared with the
/// Temporal backend's tests).
#[allow(unused_imports)]
pub use engine::testing::fakes::comparison_answer as comparison_fake;
