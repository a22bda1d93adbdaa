//! Migration 0005 on a database written before it: the search columns
//! `enterprise_id`, `district`, `person` become rows of `instance_search`,
//! and `parent_id` `{parent}#{call}` becomes a typed parent reference; the
//! store reads and searches them as it does new ones.

use engine::store::{InstanceFilter, ParentRef, SqlStore, Store};
use sqlx::Executor;
use std::path::PathBuf;

/// A directory with the engine's migrations of `backend` numbered below 5.
fn migrations_before_0005(backend: &str) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let dir = std::env::temp_dir().join(format!(
        "engine-migrations-{backend}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.as_str() < "0005" {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
    }
    dir
}

async fn old_rows_move_to_the_new_shape(url: &str, backend: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let old = sqlx::migrate::Migrator::new(migrations_before_0005(backend))
        .await
        .unwrap();
    old.run(&pool).await.unwrap();
    pool.execute(
        "INSERT INTO definitions (hash, kind, version, source, published_at) VALUES ('h1', 'warning', 1, '{}', 0)",
    )
    .await
    .unwrap();
    let columns = "id, kind, definition_hash, definition_version, state, status, snapshot, \
                   revision, history_len, created_at, updated_at, enterprise_id, district, person, parent_id";
    for (id, parent) in [("run-1", "NULL"), ("w1", "'run-1#c3'")] {
        pool.execute(
            format!(
                "INSERT INTO instances ({columns}) VALUES ('{id}', 'warning', 'h1', 1, 's', 'running', '{{}}', \
                 1, 1, 0, 0, 'e1', 'jinjiang', NULL, {parent})"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    pool.close().await;

    let store = SqlStore::connect(url).await.unwrap();
    let w1 = store.instance("w1").await.unwrap().unwrap();
    assert_eq!(
        w1.parent,
        Some(ParentRef {
            instance_id: "run-1".into(),
            call: "c3".into()
        })
    );
    let search: Vec<(&str, &str)> = w1
        .search
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(search, [("district", "jinjiang"), ("enterprise_id", "e1")]);
    assert_eq!(store.instance("run-1").await.unwrap().unwrap().parent, None);
    let f = InstanceFilter::default().search("district", Some("jinjiang".into()));
    assert_eq!(store.count_instances(&f).await.unwrap(), 2);
}

#[tokio::test]
async fn migration_0005_on_sqlite() {
    let path = std::env::temp_dir().join(format!("engine-0005-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    old_rows_move_to_the_new_shape(&format!("sqlite://{}?mode=rwc", path.display()), "sqlite")
        .await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn migration_0005_on_postgres() {
    if let Some(url) = engine::testing::fresh_postgres("engine_migration_0005").await {
        old_rows_move_to_the_new_shape(&url, "postgres").await;
    }
}
