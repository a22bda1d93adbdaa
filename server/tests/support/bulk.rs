//! A city-sized seed written in bulk (multi-row inserts in one
//! transaction): `persons` staff in `persons / 40` office addresses of
//! `addresses / 5` enterprises, all in 锦江区. Shared by the full-scale test
//! and the benchmarks (`#[path]`-included there).
#![allow(dead_code)]

use engine::store::sql::{insert_many, Arg};

/// A valid (GB 11643) and distinct id number for every `n` below 15 million.
pub fn id_number(n: u64) -> String {
    let birth = chrono::NaiveDate::from_ymd_opt(1960, 1, 1).unwrap()
        + chrono::Duration::days((n % 15_000) as i64);
    let first17 = format!("510104{}{:03}", birth.format("%Y%m%d"), n / 15_000 % 1000);
    format!(
        "{first17}{}",
        server::domain::id_number::check_digit(&first17).unwrap()
    )
}

/// What `seed_city` wrote.
pub struct City {
    pub persons: u64,
    pub addresses: u64,
    pub enterprises: u64,
}

/// Seed the district directory (from `workflows/districts.yaml`), then the
/// enterprises, addresses and staff. Staff `s{p}` has `id_number(p)`.
pub async fn seed_city(pool: &sqlx::AnyPool, persons: u64) -> City {
    seed_districts(pool).await;
    let addresses = (persons / 40).max(1);
    let enterprises = (addresses / 5).max(1);
    let mut tx = pool.begin().await.unwrap();
    insert_places(&mut tx, enterprises, addresses, |_| "jinjiang").await;
    let rows = (0..persons)
        .map(|p| {
            vec![
                Arg::T(Some(format!("s{p}"))),
                Arg::T(Some(format!("e{}", (p % addresses) % enterprises))),
                Arg::T(Some(format!("a{}", p % addresses))),
                Arg::T(Some("某人".into())),
                Arg::T(Some(id_number(p))),
                Arg::I(Some(0)),
                Arg::I(Some(0)),
            ]
        })
        .collect();
    insert_many(
        &mut tx,
        "staff",
        "id, enterprise_id, address_id, name, id_number, created_at, updated_at",
        rows,
        "",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    City {
        persons,
        addresses,
        enterprises,
    }
}

/// The district directory of `workflows/districts.yaml`.
pub async fn seed_districts(pool: &sqlx::AnyPool) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let districts = server::domain::Districts::load(root.join("workflows/districts.yaml")).unwrap();
    server::db::seed_districts(pool, &districts).await.unwrap();
}

/// Enterprises `e{e}` in `district(e)`, and office addresses `a{a}`, each of
/// enterprise `a % enterprises` and in its district.
pub async fn insert_places(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    enterprises: u64,
    addresses: u64,
    district: impl Fn(u64) -> &'static str,
) {
    let rows = (0..enterprises)
        .map(|e| {
            vec![
                Arg::T(Some(format!("e{e}"))),
                Arg::T(Some(format!("code{e}"))),
                Arg::T(Some(format!("企业{e}"))),
                Arg::T(Some("construction".into())),
                Arg::T(Some(district(e).into())),
                Arg::T(Some("地址".into())),
                Arg::T(Some("联系人".into())),
                Arg::T(Some("13800000000".into())),
                Arg::I(Some(0)),
                Arg::I(Some(0)),
            ]
        })
        .collect();
    insert_many(tx, "enterprises", "id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, created_at, updated_at", rows, "").await.unwrap();
    let rows = (0..addresses)
        .map(|a| {
            vec![
                Arg::T(Some(format!("a{a}"))),
                Arg::T(Some(format!("e{}", a % enterprises))),
                Arg::T(Some(format!("地址{a}"))),
                Arg::T(Some(district(a % enterprises).into())),
                Arg::I(Some(0)),
            ]
        })
        .collect();
    insert_many(
        tx,
        "addresses",
        "id, enterprise_id, address, district, created_at",
        rows,
        "",
    )
    .await
    .unwrap();
}
