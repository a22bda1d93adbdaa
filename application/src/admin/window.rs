//! 市住建局窗口 (R1.6): an enterprise that logs in by USB key (密码锁) or CA
//! brings a copy of its business licence with the company seal, the agent's
//! ID card and a statement; city staff find the enterprise, tick the
//! documents they checked, bind a mobile and switch the account to SMS login.
//! Each switch is recorded (who, when, which documents, which mobile) and
//! the enterprise is told by SMS on the newly bound mobile.
//!
//! The switch keeps password login if the account had it, drops USB key and
//! CA, binds the mobile, spoils login codes sent before and ends the
//! account's sessions.

use super::{audit, invalid, Error, LoginMethod};
use crate::accounts::{new_id, SessionCache};
use crate::adapters::sms::{Message, SmsGateway};
use crate::domain::{CreditCode, Mobile, PersonName};
use serde::Serialize;
use sqlx::{AnyPool, FromRow, Row};
use std::collections::BTreeMap;

/// The documents the window checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Document {
    Licence,
    IdCard,
    Statement,
}

impl Document {
    pub const ALL: [Document; 3] = [Self::Licence, Self::IdCard, Self::Statement];

    pub fn code(self) -> &'static str {
        match self {
            Self::Licence => "licence",
            Self::IdCard => "id_card",
            Self::Statement => "statement",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Licence => "加盖单位公章的企业营业执照复印件",
            Self::IdCard => "经办人身份证原件和复印件",
            Self::Statement => "办理事项情况说明（含办理事项、理由、账号信息）",
        }
    }

    pub fn parse(code: &str) -> Option<Document> {
        Self::ALL.into_iter().find(|d| d.code() == code.trim())
    }
}

/// One recorded switch, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Switch {
    pub id: String,
    pub enterprise: String,
    pub username: String,
    pub mobile: String,
    pub documents: Vec<&'static str>,
    pub agent_name: Option<String>,
    pub previous_methods: String,
    pub handled_by: String,
    pub handled_at: i64,
    /// Only for the switch just made: whether the SMS went out.
    pub sms_sent: Option<bool>,
}

/// The enterprise the window works on.
#[derive(Debug, Clone, Serialize)]
pub struct WindowEnterprise {
    pub id: String,
    pub name: String,
    pub credit_code: String,
    pub district_name: String,
    pub username: Option<String>,
    pub methods: String,
    pub mobile: Option<String>,
    pub disabled: bool,
    pub switches: Vec<Switch>,
}

fn masked(m: &str) -> String {
    Mobile::parse(m).map(|m| m.masked()).unwrap_or_default()
}

/// The login methods an account has: as imported or switched, or for an
/// account made here, password (and SMS when a mobile is bound).
fn methods_of(stored: Option<&str>, has_mobile: bool) -> Vec<LoginMethod> {
    match stored {
        Some(s) => LoginMethod::split(s),
        None if has_mobile => vec![LoginMethod::Password, LoginMethod::Sms],
        None => vec![LoginMethod::Password],
    }
}

const SWITCH_COLUMNS: &str =
    "s.id, e.name AS enterprise, s.username, s.mobile, s.documents, s.agent_name, \
     s.previous_methods, s.handled_by, s.handled_at";

fn switch_from_row(r: &sqlx::any::AnyRow) -> Result<Switch, Error> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        id: String,
        enterprise: String,
        username: String,
        mobile: String,
        documents: String,
        agent_name: Option<String>,
        previous_methods: Option<String>,
        handled_by: String,
        handled_at: i64,
    }
    let r = Stored::from_row(r)?;
    // Written by `switch` as a JSON list of document codes: anything else
    // is a damaged row, said as such (not shown as "no documents").
    let codes: Vec<String> = serde_json::from_str(&r.documents).map_err(|e| {
        Error::Internal(format!(
            "login-method switch {}: documents column is not a JSON list of codes: {e}",
            r.id
        ))
    })?;
    Ok(Switch {
        mobile: masked(&r.mobile),
        documents: codes
            .iter()
            .filter_map(|c| Document::parse(c))
            .map(Document::label)
            .collect(),
        previous_methods: LoginMethod::labels(&LoginMethod::split(
            r.previous_methods.as_deref().unwrap_or_default(),
        )),
        id: r.id,
        enterprise: r.enterprise,
        username: r.username,
        agent_name: r.agent_name,
        handled_by: r.handled_by,
        handled_at: r.handled_at,
        sms_sent: None,
    })
}

/// The latest switches, newest first.
pub async fn recent_switches(pool: &AnyPool, limit: i64) -> Result<Vec<Switch>, Error> {
    sqlx::query(&format!(
        "SELECT {SWITCH_COLUMNS} FROM login_method_switches s JOIN enterprises e ON e.id = s.enterprise_id \
         ORDER BY s.handled_at DESC, s.id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(switch_from_row)
    .collect()
}

/// Find an enterprise by its credit code or its account name.
pub async fn find_enterprise(pool: &AnyPool, q: &str) -> Result<Option<WindowEnterprise>, Error> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(None);
    }
    let code = CreditCode::parse(q).map(|c| c.as_str().to_string()).ok();
    let row = sqlx::query(
        "SELECT e.id, e.name, e.credit_code, d.name AS district_name, a.username, a.login_methods, a.mobile, a.disabled_at \
         FROM enterprises e JOIN districts d ON d.code = e.district \
         LEFT JOIN accounts a ON a.enterprise_id = e.id AND a.role = 'enterprise' \
         WHERE e.credit_code = $1 OR a.username = $2 ORDER BY a.username LIMIT 1",
    )
    .bind(code.as_deref().unwrap_or(""))
    .bind(q)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let id: String = r.try_get("id")?;
    let mobile: Option<String> = r.try_get("mobile")?;
    let stored: Option<String> = r.try_get("login_methods")?;
    let switches = sqlx::query(&format!(
        "SELECT {SWITCH_COLUMNS} FROM login_method_switches s JOIN enterprises e ON e.id = s.enterprise_id \
         WHERE s.enterprise_id = $1 ORDER BY s.handled_at DESC, s.id"
    ))
    .bind(&id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(switch_from_row)
    .collect::<Result<_, _>>()?;
    Ok(Some(WindowEnterprise {
        name: r.try_get("name")?,
        credit_code: r.try_get("credit_code")?,
        district_name: r.try_get("district_name")?,
        username: r.try_get("username")?,
        methods: LoginMethod::labels(&methods_of(stored.as_deref(), mobile.is_some())),
        mobile: mobile.as_deref().map(masked),
        disabled: r.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
        switches,
        id,
    }))
}

/// The window's form, as typed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SwitchForm {
    pub credit_code: String,
    /// Document codes ticked.
    pub documents: Vec<String>,
    pub mobile: String,
    pub agent_name: String,
}

/// Switch the enterprise's account to SMS login on `form.mobile` after the
/// window checked all three documents; record it and text the enterprise.
pub async fn switch_to_sms(
    pool: &AnyPool,
    cache: Option<&SessionCache>,
    sms: &dyn SmsGateway,
    form: &SwitchForm,
    actor: &str,
    now_ms: i64,
) -> Result<Switch, Error> {
    let code =
        CreditCode::parse(&form.credit_code).map_err(|e| invalid("credit_code", e.to_string()))?;
    let row = sqlx::query(
        "SELECT e.id, e.name, a.username, a.login_methods, a.mobile FROM enterprises e \
         LEFT JOIN accounts a ON a.enterprise_id = e.id AND a.role = 'enterprise' \
         WHERE e.credit_code = $1 ORDER BY a.username LIMIT 1",
    )
    .bind(code.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::Refused("未找到该统一社会信用代码的企业".into()))?;
    let enterprise_id: String = row.try_get("id")?;
    let enterprise: String = row.try_get("name")?;
    let username: String = row
        .try_get::<Option<String>, _>("username")?
        .ok_or_else(|| Error::Refused("该企业尚无账号，请先导入或注册".into()))?;
    let old_mobile: Option<String> = row.try_get("mobile")?;
    let stored: Option<String> = row.try_get("login_methods")?;
    let previous = methods_of(stored.as_deref(), old_mobile.is_some());

    let mut errors = BTreeMap::new();
    let ticked: Vec<Document> = form
        .documents
        .iter()
        .filter_map(|c| Document::parse(c))
        .collect();
    let missing: Vec<&str> = Document::ALL
        .into_iter()
        .filter(|d| !ticked.contains(d))
        .map(Document::label)
        .collect();
    if !missing.is_empty() {
        errors.insert(
            "documents".to_string(),
            format!("三项材料须全部核验，未勾选：{}", missing.join("；")),
        );
    }
    let mobile = Mobile::parse(&form.mobile)
        .map_err(|e| errors.insert("mobile".into(), e.to_string()))
        .ok();
    let agent = match form.agent_name.trim() {
        "" => None,
        n => PersonName::parse(n)
            .map_err(|e| errors.insert("agent_name".into(), e.to_string()))
            .ok(),
    };
    let Some(mobile) = mobile.filter(|_| errors.is_empty()) else {
        return Err(Error::Invalid(errors));
    };

    let mut methods: Vec<LoginMethod> = previous
        .iter()
        .copied()
        .filter(|m| *m == LoginMethod::Password)
        .collect();
    methods.push(LoginMethod::Sms);
    let documents: Vec<&str> = Document::ALL
        .into_iter()
        .filter(|d| ticked.contains(d))
        .map(Document::code)
        .collect();
    let id = new_id();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE accounts SET mobile = $1, login_methods = $2, updated_at = $3 WHERE username = $4",
    )
    .bind(mobile.as_str())
    .bind(LoginMethod::join(&methods))
    .bind(now_ms)
    .bind(&username)
    .execute(&mut *tx)
    .await?;
    // Codes sent to the old mobile no longer log in.
    sqlx::query("UPDATE sms_codes SET used_at = $1 WHERE username = $2 AND used_at IS NULL")
        .bind(now_ms)
        .bind(&username)
        .execute(&mut *tx)
        .await?;
    super::accounts::end_sessions(&mut *tx, None, &username).await?;
    sqlx::query(
        "INSERT INTO login_method_switches (id, enterprise_id, username, mobile, documents, agent_name, previous_methods, handled_by, handled_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(&enterprise_id)
    .bind(&username)
    .bind(mobile.as_str())
    .bind(serde_json::to_string(&documents).expect("strings"))
    .bind(agent.as_ref().map(|a| a.as_str()))
    .bind(LoginMethod::join(&previous))
    .bind(actor)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut *tx,
        actor,
        "switch_to_sms",
        &username,
        Some(&mobile.masked()),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    if let Some(c) = cache {
        c.forget_user(&username);
    }
    let sent = sms
        .send(Message {
            phone: mobile.as_str().to_string(),
            template: "login_method_switched".into(),
            params: serde_json::json!({"username": username, "enterprise": enterprise}),
            idempotency_key: format!("switch/{id}"),
            secret: Vec::new(),
        })
        .await;
    if let Err(e) = &sent {
        tracing::warn!(%username, error = %e, "login switch SMS not sent");
    }
    Ok(Switch {
        id,
        enterprise,
        username,
        mobile: mobile.masked(),
        documents: ticked.iter().map(|d| d.label()).collect(),
        agent_name: agent.map(|a| a.as_str().to_string()),
        previous_methods: LoginMethod::labels(&previous),
        handled_by: actor.to_string(),
        handled_at: now_ms,
        sms_sent: Some(sent.is_ok()),
    })
}
