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

/// The comparison activities as `workflows/comparison.yaml` calls them,
/// answered from a fixture `{run_id, as_of, new_warnings: [...],
/// per_district, summary}`: `run_comparison` returns the run without the
/// list (its number in `summary.new_warnings`), `warnings_to_open` pages
/// through the list after `args.after`, `args.limit` at a time. None for
/// other activities.
#[allow(dead_code)]
pub fn comparison_fake(
    fixture: &serde_json::Value,
    name: &str,
    args: &serde_json::Value,
) -> Option<serde_json::Value> {
    let list = fixture["new_warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match name {
        "run_comparison" => {
            let mut run = fixture.clone();
            run.as_object_mut()?.remove("new_warnings");
            run["summary"]["new_warnings"] = list.len().into();
            Some(run)
        }
        "warnings_to_open" => {
            let after = args["after"].as_str().unwrap_or_default();
            let limit = args["limit"].as_u64().unwrap_or(1) as usize;
            let items: Vec<_> = list
                .into_iter()
                .filter(|w| w["warning_id"].as_str().unwrap_or_default() > after)
                .take(limit)
                .collect();
            let last = items.last().map(|w| w["warning_id"].clone());
            Some(serde_json::json!({ "items": items, "last": last }))
        }
        _ => None,
    }
}
