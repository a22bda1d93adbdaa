//! The application's tables migrate beside the engine's, on both databases,
//! and their key constraints hold.

use sqlx::Executor;

async fn check(url: &str) {
    let store = server::db::open(url).await.unwrap();
    let pool = store.pool();
    pool.execute("INSERT INTO districts (code, number, name, liaison_name, phone) VALUES ('jinjiang', 1, '锦江区住建交局', '黄波', '84527022')")
        .await
        .unwrap();
    pool.execute(
        "INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, created_at, updated_at) \
         VALUES ('e1', '91510100MA61234567', '企业', 'construction', 'jinjiang', '地址', '张三', '13800000000', 0, 0)",
    )
    .await
    .unwrap();
    pool.execute("INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ('a1', 'e1', '地址', 'jinjiang', 0)")
        .await
        .unwrap();
    let record = |id: &str| {
        format!(
            "INSERT INTO daily_records (id, enterprise_id, address_id, day, fields, created_by, created_at, updated_at) \
             VALUES ('{id}', 'e1', 'a1', '2026-12-01', '{{}}', 'enterprise', 0, 0)"
        )
    };
    pool.execute(record("r1").as_str()).await.unwrap();
    assert!(
        pool.execute(record("r2").as_str()).await.is_err(),
        "one record per address per day (R3.1)"
    );
    let staff = |id: &str, deleted: &str| {
        format!(
            "INSERT INTO staff (id, enterprise_id, address_id, name, id_number, created_at, updated_at, deleted_at) \
             VALUES ('{id}', 'e1', 'a1', '某人', '11010519491231002X', 0, 0, {deleted})"
        )
    };
    pool.execute(staff("s1", "5").as_str()).await.unwrap();
    pool.execute(staff("s2", "NULL").as_str()).await.unwrap();
    assert!(
        pool.execute(staff("s3", "NULL").as_str()).await.is_err(),
        "a person is in one enterprise at a time (R2.3)"
    );
    // Opening again is a no-op for both migration sets.
    server::db::open(url).await.unwrap();
}

#[tokio::test]
async fn domain_tables_migrate_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("server-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    check(&format!(
        "sqlite://{}?mode=rwc",
        dir.join("app.db").display()
    ))
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn domain_tables_migrate_on_postgres() {
    let Some(url) = engine::testing::postgres_url(module_path!()) else {
        return;
    };
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&url).await.unwrap();
    admin
        .execute("DROP DATABASE IF EXISTS server_db WITH (FORCE)")
        .await
        .unwrap();
    admin.execute("CREATE DATABASE server_db").await.unwrap();
    let base = url.rsplit_once('/').unwrap().0;
    check(&format!("{base}/server_db")).await;
}
