//! CSV staff import (R2.3): per-row errors, nothing half-imported, one
//! enterprise per person.

use sqlx::Executor;

/// A valid ID number for person `n` (< 9,000: born 1990-01-01 + n / 1000 days).
fn id_number(n: u32) -> String {
    let first17 = format!("51010419900{}{:03}", 101 + n / 1000, n % 1000);
    format!(
        "{first17}{}",
        server::domain::id_number::check_digit(&first17).unwrap()
    )
}

fn wrong_check_digit(n: u32) -> String {
    let good = id_number(n);
    let last = if good.ends_with('1') { '2' } else { '1' };
    format!("{}{last}", &good[..17])
}

/// Each test on SQLite and on PostgreSQL (a fresh database per test).
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::setup("sqlite::memory:").await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = concat!("staff_import_", stringify!($name));
                    if let Some(url) = engine::testing::fresh_postgres(db).await {
                        super::$name(super::setup(&url).await).await;
                    }
                }
            )*
        }
    };
}

on_both_databases!(
    a_bad_row_imports_nothing_and_every_problem_has_its_line,
    good_files_import_update_and_respect_one_enterprise_per_person,
    a_file_longer_than_one_statement_imports_whole_and_again_updates,
);

async fn setup(url: &str) -> sqlx::AnyPool {
    let store = server::db::open(url).await.unwrap();
    let pool = store.pool().clone();
    pool.execute("INSERT INTO districts (code, number, name, liaison_name, phone) VALUES ('jinjiang', 1, '锦江区住建交局', '黄波', '84527022')")
        .await
        .unwrap();
    for e in ["e1", "e2"] {
        pool.execute(
            format!(
                "INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, created_at, updated_at) \
                 VALUES ('{e}', 'c-{e}', '企业', 'construction', 'jinjiang', '地址', '张三', '13800000000', 0, 0)"
            )
            .as_str(),
        )
        .await
        .unwrap();
        pool.execute(format!("INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ('{e}-a', '{e}', '{e}办公楼', 'jinjiang', 0)").as_str())
            .await
            .unwrap();
    }
    // `store` must outlive the pool's users: leak it for the test's duration.
    std::mem::forget(store);
    pool
}

async fn staff(pool: &sqlx::AnyPool, e: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM staff WHERE enterprise_id = $1 AND deleted_at IS NULL")
        .bind(e)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn a_bad_row_imports_nothing_and_every_problem_has_its_line(pool: sqlx::AnyPool) {
    let csv = format!(
        "姓名,身份证号,手机号,办公地址\n张三,{},13912345678,e1办公楼\n,{},123,e1办公楼\n李四,{},,别处\n王五,{},,e1办公楼\n",
        id_number(1),
        id_number(2),
        wrong_check_digit(3),
        id_number(1)
    );
    let Err(server::staff::Error::Rows(errors)) =
        server::staff::import_csv(&pool, "e1", &csv, 0).await
    else {
        panic!("refused")
    };
    let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 3, 4, 4, 5], "{errors:#?}");
    assert!(errors.iter().any(|e| e.message.starts_with("身份证号：")));
    assert!(errors.iter().any(|e| e.message == "身份证号在文件中重复"));
    assert_eq!(staff(&pool, "e1").await, 0, "nothing half-imported");
}

async fn good_files_import_update_and_respect_one_enterprise_per_person(pool: sqlx::AnyPool) {
    let csv = format!(
        "姓名,身份证号,手机号,办公地址\n张三,{},13912345678,e1办公楼\n李四,{},,e1办公楼\n",
        id_number(1),
        id_number(2)
    );
    assert_eq!(
        server::staff::import_csv(&pool, "e1", &csv, 0)
            .await
            .unwrap(),
        2
    );
    // Importing again updates, not duplicates.
    assert_eq!(
        server::staff::import_csv(&pool, "e1", &csv, 1)
            .await
            .unwrap(),
        2
    );
    assert_eq!(staff(&pool, "e1").await, 2);
    // Another enterprise cannot take a person who is still in e1.
    let csv2 = format!(
        "姓名,身份证号,手机号,办公地址\n张三,{},,e2办公楼\n",
        id_number(1)
    );
    let Err(server::staff::Error::Rows(errors)) =
        server::staff::import_csv(&pool, "e2", &csv2, 2).await
    else {
        panic!("refused")
    };
    assert_eq!(
        errors[0].message,
        "该人员已在其他企业登记，需由原企业删除后再导入"
    );
    // Once e1 deletes them (R2.5), e2 can.
    let id: String =
        sqlx::query_scalar("SELECT id FROM staff WHERE enterprise_id = 'e1' AND name = '张三'")
            .fetch_one(&pool)
            .await
            .unwrap();
    server::staff::delete(&pool, "e1", &id, 3).await.unwrap();
    assert_eq!(
        server::staff::import_csv(&pool, "e2", &csv2, 4)
            .await
            .unwrap(),
        1
    );
    assert_eq!((staff(&pool, "e1").await, staff(&pool, "e2").await), (1, 1));
}

/// More rows than one multi-row insert holds (400) and than one owner
/// lookup asks for (500 ID numbers): all imported in the one transaction,
/// imported again they are updated (not added twice), and a person of
/// them in another enterprise's file is refused with its line.
async fn a_file_longer_than_one_statement_imports_whole_and_again_updates(pool: sqlx::AnyPool) {
    const ROWS: u32 = 1_234;
    let letters = |n: u32| -> String {
        format!(
            "{}{}",
            char::from(b'A' + (n / 26 % 26) as u8),
            char::from(b'A' + (n % 26) as u8)
        )
    };
    let file = |mobile: &str| {
        let mut csv = String::from("姓名,身份证号,手机号,办公地址\n");
        for n in 0..ROWS {
            csv.push_str(&format!(
                "人员{},{},{mobile},e1办公楼\n",
                letters(n),
                id_number(n)
            ));
        }
        csv
    };
    let imported = server::staff::import_csv(&pool, "e1", &file(""), 0)
        .await
        .unwrap();
    assert_eq!(imported, ROWS as usize);
    assert_eq!(staff(&pool, "e1").await, i64::from(ROWS));
    server::staff::import_csv(&pool, "e1", &file("13912345678"), 1)
        .await
        .unwrap();
    let with_mobile: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM staff WHERE enterprise_id = 'e1' AND mobile = '13912345678' AND updated_at = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (staff(&pool, "e1").await, with_mobile),
        (i64::from(ROWS), i64::from(ROWS))
    );
    let other = format!(
        "姓名,身份证号,手机号,办公地址\n新人,{},,e2办公楼\n人员ZZ,{},,e2办公楼\n",
        id_number(8_000),
        id_number(1_200)
    );
    let Err(server::staff::Error::Rows(errors)) =
        server::staff::import_csv(&pool, "e2", &other, 2).await
    else {
        panic!("a person of e1 imported into e2");
    };
    assert_eq!(
        errors,
        vec![server::staff::RowError {
            line: 3,
            message: "该人员已在其他企业登记，需由原企业删除后再导入".into()
        }]
    );
    assert_eq!(staff(&pool, "e2").await, 0);
}
