//! Enterprise registration as 疫情防控用户 (R1.1–R1.2) with generated
//! credentials sent by SMS, and accounts made directly (`upsert_account`).

use super::hashing::Hashing;
use super::passwords::{generate_password, hash_password};
use super::throttle::{take, Limit};
use super::{invalid, new_id, Error, Role};
use crate::adapters::sms::{Message, SmsGateway};
use crate::domain::{Address, CreditCode, EnterpriseName, EnterpriseType, Mobile, PersonName};
use rand::Rng;
use serde::Serialize;
use sqlx::AnyPool;
use std::collections::BTreeMap;

/// Registrations (each texts credentials): ten an hour per client, three a
/// day per contact mobile.
const REGISTER_WINDOW_CLIENT_MS: i64 = 3600 * 1000;
const REGISTER_MAX_PER_CLIENT: i64 = 10;
pub(super) const REGISTER_WINDOW_MOBILE_MS: i64 = 24 * 3600 * 1000;
const REGISTER_MAX_PER_MOBILE: i64 = 3;

/// R1.1's form, as typed.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct Registration {
    pub name: String,
    pub credit_code: String,
    pub kind: String,
    pub district: String,
    pub registered_address: String,
    pub contact_name: String,
    pub contact_mobile: String,
}

/// What registration gives back: the account name and where the SMS went.
#[derive(Debug, Clone)]
pub struct Registered {
    pub enterprise_id: String,
    pub username: String,
    pub mobile_masked: String,
    /// False when the SMS gateway refused: the person logs in by SMS code
    /// later, or asks the district.
    pub sms_sent: bool,
}

/// A registration form whose every field is well formed.
struct Valid {
    name: EnterpriseName,
    code: CreditCode,
    kind: EnterpriseType,
    district: crate::domain::District,
    address: Address,
    contact: PersonName,
    mobile: Mobile,
}

/// Register an enterprise (R1.1–R1.2): check every field, create the
/// enterprise, its first office address (the registered address) and its
/// account in one transaction, then text the credentials to the contact.
/// A well-formed registration is counted per client address and per
/// contact mobile before anything is written or sent, so a flood cannot
/// text credentials to one number again and again.
#[allow(clippy::too_many_arguments)]
pub async fn register(
    pool: &AnyPool,
    hashing: &Hashing,
    sms: &dyn SmsGateway,
    districts: &crate::domain::Districts,
    form: &Registration,
    client: &str,
    now_ms: i64,
) -> Result<Registered, Error> {
    let v = check(districts, form)?;
    count(pool, client, &v.mobile, now_ms).await?;
    // Zeroed when dropped; it leaves only in the SMS (whose log redacts it).
    let password = crate::secret::Secret::new(generate_password());
    let hash = hashing
        .run({
            let p = password.clone();
            move || hash_password(p.expose())
        })
        .await??;
    let (enterprise_id, username) = create(pool, &v, &hash, now_ms).await?;
    let sent = sms
        .send(Message {
            phone: v.mobile.as_str().to_string(),
            template: "account_created".into(),
            params: serde_json::json!({"username": username, "password": password.expose()}),
            idempotency_key: format!("register/{username}"),
            secret: vec!["password".into()],
        })
        .await;
    if let Err(e) = &sent {
        tracing::warn!(%username, error = %e, "registration SMS not sent");
    }
    Ok(Registered {
        enterprise_id,
        username,
        mobile_masked: v.mobile.masked(),
        sms_sent: sent.is_ok(),
    })
}

/// Every field checked; all problems at once, by field.
fn check(districts: &crate::domain::Districts, form: &Registration) -> Result<Valid, Error> {
    let mut errors = BTreeMap::new();
    let name = EnterpriseName::parse(&form.name)
        .map_err(|e| errors.insert("name".into(), format!("企业名称{e}")))
        .ok();
    let code = CreditCode::parse(&form.credit_code)
        .map_err(|e| errors.insert("credit_code".into(), e.to_string()))
        .ok();
    let kind = EnterpriseType::parse(&form.kind)
        .map_err(|_| errors.insert("kind".into(), "请选择企业类型".into()))
        .ok();
    let district = districts.find(form.district.trim()).cloned();
    if district.is_none() {
        errors.insert("district".into(), "请选择所属区（市）县".into());
    }
    let address = Address::parse(&form.registered_address)
        .map_err(|e| errors.insert("registered_address".into(), format!("注册地址{e}")))
        .ok();
    let contact = PersonName::parse(&form.contact_name)
        .map_err(|e| errors.insert("contact_name".into(), e.to_string()))
        .ok();
    let mobile = Mobile::parse(&form.contact_mobile)
        .map_err(|e| errors.insert("contact_mobile".into(), e.to_string()))
        .ok();
    match (name, code, kind, district, address, contact, mobile) {
        (
            Some(name),
            Some(code),
            Some(kind),
            Some(district),
            Some(address),
            Some(contact),
            Some(mobile),
        ) if errors.is_empty() => Ok(Valid {
            name,
            code,
            kind,
            district,
            address,
            contact,
            mobile,
        }),
        _ => Err(Error::Invalid(errors)),
    }
}

/// Count the registration per client address and per contact mobile.
async fn count(pool: &AnyPool, client: &str, mobile: &Mobile, now_ms: i64) -> Result<(), Error> {
    let checks = [
        (
            format!("register-client:{client}"),
            Limit::Count {
                max: REGISTER_MAX_PER_CLIENT,
                window_ms: REGISTER_WINDOW_CLIENT_MS,
            },
        ),
        (
            format!("register-mobile:{}", mobile.as_str()),
            Limit::Count {
                max: REGISTER_MAX_PER_MOBILE,
                window_ms: REGISTER_WINDOW_MOBILE_MS,
            },
        ),
    ];
    take(pool, &checks, None, now_ms).await
}

/// The enterprise, its registered address and its account, in one
/// transaction; (enterprise id, account name).
async fn create(
    pool: &AnyPool,
    v: &Valid,
    hash: &str,
    now_ms: i64,
) -> Result<(String, String), Error> {
    let enterprise_id = new_id();
    let mut tx = pool.begin().await?;
    let taken: Option<String> =
        sqlx::query_scalar("SELECT id FROM enterprises WHERE credit_code = $1")
            .bind(v.code.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    if taken.is_some() {
        return Err(invalid(
            "credit_code",
            "该统一社会信用代码已注册，请直接登录或使用短信验证码登录",
        ));
    }
    let username = free_username(&mut tx).await?;
    sqlx::query(
        "INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(&enterprise_id)
    .bind(v.code.as_str())
    .bind(v.name.as_str())
    .bind(v.kind.code())
    .bind(v.district.code.as_str())
    .bind(v.address.as_str())
    .bind(v.contact.as_str())
    .bind(v.mobile.as_str())
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new_id())
    .bind(&enterprise_id)
    .bind(v.address.as_str())
    .bind(v.district.code.as_str())
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO accounts (username, role, enterprise_id, district, mobile, password_hash, must_change_password, created_at, updated_at) \
         VALUES ($1, 'enterprise', $2, $3, $4, $5, 1, $6, $6)",
    )
    .bind(&username)
    .bind(&enterprise_id)
    .bind(v.district.code.as_str())
    .bind(v.mobile.as_str())
    .bind(hash)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((enterprise_id, username))
}

/// An account name not yet taken: "qy" and eight digits.
async fn free_username(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<String, Error> {
    for _ in 0..20 {
        let candidate = format!("qy{:08}", rand::thread_rng().gen_range(0..100_000_000u32));
        let exists: Option<String> =
            sqlx::query_scalar("SELECT username FROM accounts WHERE username = $1")
                .bind(&candidate)
                .fetch_optional(&mut **tx)
                .await?;
        if exists.is_none() {
            return Ok(candidate);
        }
    }
    Err(Error::Internal("no free account name".into()))
}

/// Create (or reset) an account directly: district, city and operator
/// accounts, and the demo's. Returns nothing; the caller knows the password.
#[allow(clippy::too_many_arguments)]
pub async fn upsert_account(
    pool: &AnyPool,
    username: &str,
    role: &Role,
    mobile: Option<&str>,
    password: &str,
    must_change: bool,
    now_ms: i64,
) -> Result<(), Error> {
    let hash = Hashing::global()
        .run({
            let p = password.to_string();
            move || hash_password(&p)
        })
        .await??;
    let (enterprise, district) = match role {
        Role::Enterprise { id, district } => (Some(id.clone()), Some(district.clone())),
        Role::District { code } => (None, Some(code.clone())),
        _ => (None, None),
    };
    sqlx::query(
        "INSERT INTO accounts (username, role, enterprise_id, district, mobile, password_hash, must_change_password, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         ON CONFLICT (username) DO UPDATE SET role = excluded.role, enterprise_id = excluded.enterprise_id, \
         district = excluded.district, mobile = excluded.mobile, password_hash = excluded.password_hash, \
         must_change_password = excluded.must_change_password, updated_at = excluded.updated_at",
    )
    .bind(username)
    .bind(role.name())
    .bind(enterprise)
    .bind(district)
    .bind(mobile)
    .bind(hash)
    .bind(i64::from(must_change))
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}
