//! Scenario seed shared by the scenario tests: two enterprises in two
//! districts (锦江, 青羊), two addresses each, and `persons` staff spread
//! over them.
#![allow(dead_code)]

use sqlx::Executor;
use std::path::Path;

pub fn id_number(n: u32) -> String {
    let first17 = format!("51010419900101{n:03}");
    let c = server::domain::id_number::check_digit(&first17).unwrap();
    format!("{first17}{c}")
}

pub async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Seed the districts, two enterprises, their addresses and `persons` staff.
pub async fn seed(pool: &sqlx::AnyPool, persons: u32) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let districts = server::domain::Districts::load(root.join("workflows/districts.yaml")).unwrap();
    server::db::seed_districts(pool, &districts).await.unwrap();
    assert_eq!(count(pool, "SELECT COUNT(*) FROM districts").await, 23);
    for (e, district) in [("e1", "jinjiang"), ("e2", "qingyang")] {
        pool.execute(
            format!(
                "INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, liaison_mobile, created_at, updated_at) \
                 VALUES ('{e}', 'code-{e}', '企业{e}', 'construction', '{district}', '地址', '张三', '13800000000', '13900000000', 0, 0)"
            )
            .as_str(),
        )
        .await
        .unwrap();
        for a in 0..2 {
            pool.execute(format!("INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ('{e}-a{a}', '{e}', '地址{a}', '{district}', 0)").as_str())
                .await
                .unwrap();
        }
    }
    for n in 0..persons {
        let e = if n % 2 == 0 { "e1" } else { "e2" };
        let a = format!("{e}-a{}", n % 4 / 2);
        pool.execute(
            format!(
                "INSERT INTO staff (id, enterprise_id, address_id, name, id_number, created_at, updated_at) \
                 VALUES ('s{n}', '{e}', '{a}', '人员{n}', '{}', 0, 0)",
                id_number(n)
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
}
