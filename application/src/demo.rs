//! Demo data for the embedded default and the browser tests: one enterprise
//! in 锦江区 with two office addresses, a liaison officer and 60 staff, and
//! accounts for it, each of the 23 districts, the city and an operator.
//!
//! Seeding is idempotent (the data is added once); the accounts' passwords
//! are set afresh on every call and returned so they can be printed. Refuses
//! nothing itself: `main` only calls it on a non-production configuration.

use crate::accounts::{upsert_account, Role};
use crate::domain::{credit_code, id_number};
use sqlx::AnyPool;

pub const ENTERPRISE_ID: &str = "demo-enterprise";
pub const ENTERPRISE_USER: &str = "qy00000001";
pub const DISTRICT: &str = "jinjiang";
pub const STAFF: u32 = 60;

/// An account and the password just set.
#[derive(Debug, Clone)]
pub struct Credential {
    pub role: &'static str,
    pub label: String,
    pub username: String,
    pub password: String,
}

/// A valid credit code for a demo enterprise number.
pub fn credit_code(n: u32) -> String {
    let first17 = format!("91510104MA{n:07}");
    format!(
        "{first17}{}",
        credit_code::check_character(&first17).expect("17 valid characters")
    )
}

/// A valid resident ID number for a demo person number.
pub fn id_number(n: u32) -> String {
    let first17 = format!(
        "5101041985{:02}{:02}{:03}",
        1 + n % 12,
        1 + n % 28,
        n % 1000
    );
    format!(
        "{first17}{}",
        id_number::check_digit(&first17).expect("17 digits")
    )
}

const SURNAMES: [&str; 10] = ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周"];
const GIVEN: [&str; 12] = [
    "伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰",
];

/// The demo enterprise's office addresses (id, address).
const ADDRESSES: [(&str, &str); 2] = [
    ("demo-addr-1", "成都市锦江区红星路三段1号"),
    ("demo-addr-2", "成都市锦江区东大街100号"),
];

/// The name of demo person `n`.
fn staff_name(n: u32) -> String {
    format!(
        "{}{}{}",
        SURNAMES[(n % 10) as usize],
        GIVEN[(n % 12) as usize],
        GIVEN[((n / 12) % 12) as usize]
    )
}

/// The demo enterprise, its addresses and staff, in one transaction.
async fn seed_enterprise(pool: &AnyPool, now_ms: i64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, \
         liaison_name, liaison_mobile, created_at, updated_at) \
         VALUES ($1, $2, '成都示范建设工程有限公司', 'construction', $3, '成都市锦江区红星路三段1号', '李明', '13800000001', \
         '王芳', '13900000001', $4, $4)",
    )
    .bind(ENTERPRISE_ID)
    .bind(credit_code(1))
    .bind(DISTRICT)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    for (id, text) in ADDRESSES {
        sqlx::query("INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(ENTERPRISE_ID)
            .bind(text)
            .bind(DISTRICT)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
    }
    for n in 0..STAFF {
        sqlx::query(
            "INSERT INTO staff (id, enterprise_id, address_id, name, id_number, mobile, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(format!("demo-staff-{n}"))
        .bind(ENTERPRISE_ID)
        .bind(ADDRESSES[(n % 2) as usize].0)
        .bind(staff_name(n))
        .bind(id_number(n))
        .bind(format!("137{:08}", n))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The demo accounts (label, username, role): the enterprise, each
/// district, the city and an operator.
fn accounts(districts: &crate::domain::Districts) -> Vec<(String, String, Role)> {
    let enterprise = Role::Enterprise {
        id: ENTERPRISE_ID.into(),
        district: DISTRICT.into(),
    };
    let mut out = vec![(
        "企业：成都示范建设工程有限公司".to_string(),
        ENTERPRISE_USER.to_string(),
        enterprise,
    )];
    for d in districts.all() {
        let code = d.code.as_str().to_string();
        out.push((
            format!("区（市）县：{}", d.name),
            code.clone(),
            Role::District { code },
        ));
    }
    out.push(("市住建局（政策）".into(), "city".into(), Role::City));
    out.push(("运维".into(), "operator".into(), Role::Operator));
    out
}

/// Seed the demo data (once) and reset the demo accounts' passwords.
pub async fn seed(
    pool: &AnyPool,
    districts: &crate::domain::Districts,
    now_ms: i64,
) -> Result<Vec<Credential>, crate::accounts::Error> {
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM enterprises WHERE id = $1")
        .bind(ENTERPRISE_ID)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        seed_enterprise(pool, now_ms).await?;
    }
    let mut out = Vec::new();
    for (label, username, role) in accounts(districts) {
        let password = crate::accounts::generate_password();
        let mobile = matches!(role, Role::Enterprise { .. }).then_some("13800000001");
        upsert_account(pool, &username, &role, mobile, &password, false, now_ms).await?;
        out.push(Credential {
            role: role.name(),
            label,
            username,
            password,
        });
    }
    Ok(out)
}
