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
use sqlx::AnyPool;
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

/// A stored mobile, masked for the page; `whose` names the row when the
/// column does not hold a mobile number.
fn masked(m: &str, whose: impl FnOnce() -> String) -> Result<String, Error> {
    Mobile::parse(m)
        .map(|m| m.masked())
        .map_err(|e| Error::Internal(format!("{}: mobile column: {e}", whose())))
}

/// The login methods an account has: as imported or switched, or for an
/// account made here, password (and SMS when a mobile is bound). A stored
/// code this version does not know is an error naming the account.
fn methods_of(
    account: &str,
    stored: Option<&str>,
    has_mobile: bool,
) -> Result<Vec<LoginMethod>, Error> {
    Ok(match stored {
        Some(s) => LoginMethod::split(s)
            .map_err(|e| Error::Internal(format!("{account}: login_methods: {e}")))?,
        None if has_mobile => vec![LoginMethod::Password, LoginMethod::Sms],
        None => vec![LoginMethod::Password],
    })
}

const SWITCH_COLUMNS: &str =
    "s.id, e.name AS enterprise, s.username, s.mobile, s.documents, s.agent_name, \
     s.previous_methods, s.handled_by, s.handled_at";

/// A row of `login_method_switches` (with its enterprise's name) as stored.
#[derive(sqlx::FromRow)]
struct StoredSwitch {
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

impl StoredSwitch {
    /// A damaged column of this row, said as such.
    fn damaged(&self, column: &str, what: impl std::fmt::Display) -> Error {
        Error::Internal(format!(
            "login-method switch {}: {column} column {what}",
            self.id
        ))
    }

    /// Written by `switch_to_sms` as a JSON list of document codes:
    /// anything else is a damaged row (not shown as "no documents").
    fn documents(&self) -> Result<Vec<&'static str>, Error> {
        let codes: Vec<String> = serde_json::from_str(&self.documents)
            .map_err(|e| self.damaged("documents", format!("is not a JSON list of codes: {e}")))?;
        codes
            .iter()
            .map(|c| {
                Document::parse(c)
                    .map(Document::label)
                    .ok_or_else(|| self.damaged("documents", format!("has unknown code `{c}`")))
            })
            .collect()
    }

    fn into_switch(self) -> Result<Switch, Error> {
        let documents = self.documents()?;
        let previous = self
            .previous_methods
            .as_deref()
            .ok_or_else(|| self.damaged("previous_methods", "is empty"))
            .and_then(|p| LoginMethod::split(p).map_err(|e| self.damaged("previous_methods", e)))?;
        let id = self.id;
        Ok(Switch {
            mobile: masked(&self.mobile, || format!("login-method switch {id}"))?,
            documents,
            previous_methods: LoginMethod::labels(&previous),
            id,
            enterprise: self.enterprise,
            username: self.username,
            agent_name: self.agent_name,
            handled_by: self.handled_by,
            handled_at: self.handled_at,
            sms_sent: None,
        })
    }
}

/// The latest switches, newest first.
pub async fn recent_switches(pool: &AnyPool, limit: i64) -> Result<Vec<Switch>, Error> {
    let rows: Vec<StoredSwitch> = sqlx::query_as(&format!(
        "SELECT {SWITCH_COLUMNS} FROM login_method_switches s JOIN enterprises e ON e.id = s.enterprise_id \
         ORDER BY s.handled_at DESC, s.id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(StoredSwitch::into_switch).collect()
}

/// An enterprise with its account (if it has one), as the window finds it.
#[derive(sqlx::FromRow)]
struct Found {
    id: String,
    name: String,
    credit_code: String,
    district_name: String,
    username: Option<String>,
    login_methods: Option<String>,
    mobile: Option<String>,
    disabled_at: Option<i64>,
}

/// Find an enterprise by its credit code or its account name.
pub async fn find_enterprise(pool: &AnyPool, q: &str) -> Result<Option<WindowEnterprise>, Error> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(None);
    }
    let code = CreditCode::parse(q).map(|c| c.as_str().to_string()).ok();
    let found: Option<Found> = sqlx::query_as(
        "SELECT e.id, e.name, e.credit_code, d.name AS district_name, a.username, a.login_methods, a.mobile, a.disabled_at \
         FROM enterprises e JOIN districts d ON d.code = e.district \
         LEFT JOIN accounts a ON a.enterprise_id = e.id AND a.role = 'enterprise' \
         WHERE e.credit_code = $1 OR a.username = $2 ORDER BY a.username LIMIT 1",
    )
    .bind(code.as_deref().unwrap_or(""))
    .bind(q)
    .fetch_optional(pool)
    .await?;
    let Some(f) = found else {
        return Ok(None);
    };
    let rows: Vec<StoredSwitch> = sqlx::query_as(&format!(
        "SELECT {SWITCH_COLUMNS} FROM login_method_switches s JOIN enterprises e ON e.id = s.enterprise_id \
         WHERE s.enterprise_id = $1 ORDER BY s.handled_at DESC, s.id"
    ))
    .bind(&f.id)
    .fetch_all(pool)
    .await?;
    let switches = rows
        .into_iter()
        .map(StoredSwitch::into_switch)
        .collect::<Result<_, _>>()?;
    let account = format!("account of enterprise {}", f.id);
    let methods = methods_of(&account, f.login_methods.as_deref(), f.mobile.is_some())?;
    let mobile = f
        .mobile
        .as_deref()
        .map(|m| masked(m, || account.clone()))
        .transpose()?;
    Ok(Some(WindowEnterprise {
        name: f.name,
        credit_code: f.credit_code,
        district_name: f.district_name,
        username: f.username,
        methods: LoginMethod::labels(&methods),
        mobile,
        disabled: f.disabled_at.is_some(),
        switches,
        id: f.id,
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

/// The enterprise's account the switch is for.
struct Target {
    enterprise_id: String,
    enterprise: String,
    username: String,
    /// The login methods it has now.
    previous: Vec<LoginMethod>,
}

/// The enterprise with credit code `code` and its account: refused when
/// there is no such enterprise or it has no account yet.
async fn target(pool: &AnyPool, code: &CreditCode) -> Result<Target, Error> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        enterprise_id: String,
        enterprise: String,
        username: Option<String>,
        login_methods: Option<String>,
        mobile: Option<String>,
    }
    let row: Stored = sqlx::query_as(
        "SELECT e.id AS enterprise_id, e.name AS enterprise, a.username, a.login_methods, a.mobile \
         FROM enterprises e LEFT JOIN accounts a ON a.enterprise_id = e.id AND a.role = 'enterprise' \
         WHERE e.credit_code = $1 ORDER BY a.username LIMIT 1",
    )
    .bind(code.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::Refused("未找到该统一社会信用代码的企业".into()))?;
    let username = row
        .username
        .ok_or_else(|| Error::Refused("该企业尚无账号，请先导入或注册".into()))?;
    let previous = methods_of(
        &format!("account {username}"),
        row.login_methods.as_deref(),
        row.mobile.is_some(),
    )?;
    Ok(Target {
        enterprise_id: row.enterprise_id,
        enterprise: row.enterprise,
        username,
        previous,
    })
}

/// The form as checked: all three documents ticked, a mobile, and the
/// agent's name when given.
struct Checked {
    /// As ticked on the form.
    ticked: Vec<Document>,
    mobile: Mobile,
    agent: Option<PersonName>,
}

/// Check the form, every field's problem at once.
fn check(form: &SwitchForm) -> Result<Checked, Error> {
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
    match mobile.filter(|_| errors.is_empty()) {
        Some(mobile) => Ok(Checked {
            ticked,
            mobile,
            agent,
        }),
        None => Err(Error::Invalid(errors)),
    }
}

/// In one transaction: bind the mobile and set the methods (password kept
/// if the account had it, SMS), spoil the codes sent before, end the
/// sessions, record the switch `id` and audit it.
async fn record_switch(
    pool: &AnyPool,
    id: &str,
    target: &Target,
    checked: &Checked,
    actor: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let username = &target.username;
    let mut methods: Vec<LoginMethod> = target
        .previous
        .iter()
        .copied()
        .filter(|m| *m == LoginMethod::Password)
        .collect();
    methods.push(LoginMethod::Sms);
    let documents: Vec<&str> = Document::ALL
        .into_iter()
        .filter(|d| checked.ticked.contains(d))
        .map(Document::code)
        .collect();
    let mobile = &checked.mobile;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE accounts SET mobile = $1, login_methods = $2, updated_at = $3 WHERE username = $4",
    )
    .bind(mobile.as_str())
    .bind(LoginMethod::join(&methods))
    .bind(now_ms)
    .bind(username)
    .execute(&mut *tx)
    .await?;
    // Codes sent to the old mobile no longer log in.
    sqlx::query("UPDATE sms_codes SET used_at = $1 WHERE username = $2 AND used_at IS NULL")
        .bind(now_ms)
        .bind(username)
        .execute(&mut *tx)
        .await?;
    super::accounts::end_sessions(&mut *tx, None, username).await?;
    sqlx::query(
        "INSERT INTO login_method_switches (id, enterprise_id, username, mobile, documents, agent_name, previous_methods, handled_by, handled_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(&target.enterprise_id)
    .bind(username)
    .bind(mobile.as_str())
    .bind(serde_json::to_string(&documents).expect("strings"))
    .bind(checked.agent.as_ref().map(|a| a.as_str()))
    .bind(LoginMethod::join(&target.previous))
    .bind(actor)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    let detail = mobile.masked();
    audit(
        &mut *tx,
        actor,
        "switch_to_sms",
        username,
        Some(&detail),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Tell the enterprise on the newly bound mobile. Whether it went out.
async fn notify(sms: &dyn SmsGateway, id: &str, target: &Target, mobile: &Mobile) -> bool {
    let username = &target.username;
    let sent = sms
        .send(Message {
            phone: mobile.as_str().to_string(),
            template: "login_method_switched".into(),
            params: serde_json::json!({"username": username, "enterprise": target.enterprise}),
            idempotency_key: format!("switch/{id}"),
            secret: Vec::new(),
        })
        .await;
    if let Err(e) = &sent {
        tracing::warn!(%username, error = %e, "login switch SMS not sent");
    }
    sent.is_ok()
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
    let target = target(pool, &code).await?;
    let checked = check(form)?;
    let id = new_id();
    record_switch(pool, &id, &target, &checked, actor, now_ms).await?;
    if let Some(c) = cache {
        c.forget_user(&target.username);
    }
    let sent = notify(sms, &id, &target, &checked.mobile).await;
    Ok(Switch {
        id,
        enterprise: target.enterprise,
        username: target.username,
        mobile: checked.mobile.masked(),
        documents: checked.ticked.iter().map(|d| d.label()).collect(),
        agent_name: checked.agent.map(|a| a.as_str().to_string()),
        previous_methods: LoginMethod::labels(&target.previous),
        handled_by: actor.to_string(),
        handled_at: now_ms,
        sms_sent: Some(sent),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> StoredSwitch {
        StoredSwitch {
            id: "sw-1".into(),
            enterprise: "成都示范建设工程有限公司".into(),
            username: "qy00000001".into(),
            mobile: "13800000001".into(),
            documents: r#"["licence","id_card","statement"]"#.into(),
            agent_name: None,
            previous_methods: Some("usb_key,ca".into()),
            handled_by: "city".into(),
            handled_at: 0,
        }
    }

    #[test]
    fn a_stored_switch_reads_back() {
        let s = stored().into_switch().unwrap();
        assert_eq!(s.documents, Document::ALL.map(Document::label));
        assert_eq!(s.previous_methods, "密码锁、CA证书");
        assert_eq!(s.mobile, Mobile::parse("13800000001").unwrap().masked());
    }

    #[test]
    fn a_damaged_switch_is_an_error_naming_the_row_and_column() {
        let damaged = |f: fn(&mut StoredSwitch)| {
            let mut s = stored();
            f(&mut s);
            s.into_switch().unwrap_err().to_string()
        };
        let e = damaged(|s| s.documents = r#"["licence","fax"]"#.into());
        assert!(
            e.contains("sw-1") && e.contains("documents") && e.contains("fax"),
            "{e}"
        );
        let e = damaged(|s| s.previous_methods = None);
        assert!(e.contains("sw-1") && e.contains("previous_methods"), "{e}");
        let e = damaged(|s| s.previous_methods = Some("fingerprint".into()));
        assert!(
            e.contains("previous_methods") && e.contains("fingerprint"),
            "{e}"
        );
        let e = damaged(|s| s.mobile = "12345".into());
        assert!(e.contains("sw-1") && e.contains("mobile"), "{e}");
    }
}
