//! Accounts administration and production bootstrap (DOMAIN.md R1.5–R1.7):
//! the first administrator (command line), district / city / operator /
//! administrator accounts (create, disable, enable, reset; bulk import),
//! the bulk import of enterprises that already have credit-system accounts
//! (已有账号的企业), and the city window's switch of an enterprise to SMS
//! login (市住建局窗口).
//!
//! The web pages (`web/admin.rs`) and the `server admin …` commands call the
//! same functions here. Owns the `disabled_at` and `login_methods` columns
//! of `accounts` and the `account_audit` and `login_method_switches` tables;
//! creates enterprise, address and account rows on import. Must not know
//! about HTTP. Generated passwords are returned to the caller (shown once)
//! or sent by SMS; they are never stored or logged in clear.

pub mod accounts;
pub mod enterprises;
pub mod window;

pub use accounts::{
    create_account, import_accounts, list_accounts, reset_password, set_disabled, AccountRow,
    AccountsImport, Delivery, NewAccount, Reset,
};
pub use enterprises::{import_enterprises, EnterpriseImport, ImportedAccount};
pub use window::{
    find_enterprise, recent_switches, switch_to_sms, Document, Switch, SwitchForm, WindowEnterprise,
};

use std::collections::BTreeMap;

/// At most this many row problems are listed; the rest are counted.
pub const MAX_ROW_ERRORS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Field name → message, for the form.
    #[error("填写内容有误")]
    Invalid(BTreeMap<String, String>),
    /// A file with bad rows: nothing was saved.
    #[error("{}", .0.summary())]
    Rows(RowErrors),
    #[error("账号不存在")]
    NotFound,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<crate::accounts::Error> for Error {
    fn from(e: crate::accounts::Error) -> Self {
        match e {
            crate::accounts::Error::Database(e) => Error::Database(e),
            crate::accounts::Error::Invalid(m) => Error::Invalid(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(BTreeMap::from([(field.to_string(), message.into())]))
}

/// A problem on one line of an imported file (line 1 is the header).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// The problems of a file: the first `MAX_ROW_ERRORS` listed, all counted,
/// so a 100,000-line bad file gives a short answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowErrors {
    pub shown: Vec<RowError>,
    pub total: usize,
}

impl RowErrors {
    pub fn push(&mut self, line: u64, message: impl Into<String>) {
        self.total += 1;
        if self.shown.len() < MAX_ROW_ERRORS {
            self.shown.push(RowError {
                line,
                message: message.into(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many are not listed.
    pub fn more(&self) -> usize {
        self.total - self.shown.len()
    }

    pub fn summary(&self) -> String {
        format!("导入失败，共{}处问题，未导入任何内容", self.total)
    }

    /// Every listed problem on its own line, then how many more.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .shown
            .iter()
            .map(|e| format!("第{}行：{}", e.line, e.message))
            .collect();
        if self.more() > 0 {
            out.push(format!("……另有{}处问题未列出", self.more()));
        }
        out
    }
}

/// The text of an uploaded or read CSV file: UTF-8, with or without a byte
/// order mark.
pub fn csv_text(bytes: &[u8]) -> Result<String, Error> {
    let s = std::str::from_utf8(bytes).map_err(|_| {
        Error::Refused("文件须为UTF-8编码的CSV（在表格软件中另存为“CSV UTF-8”）".into())
    })?;
    Ok(s.trim_start_matches('\u{feff}').to_string())
}

/// The columns of a CSV header, found by any of their names (Chinese or
/// English, case and surrounding spaces ignored).
pub(crate) struct Columns {
    names: Vec<String>,
}

impl Columns {
    pub(crate) fn new(header: &csv::StringRecord) -> Columns {
        Columns {
            names: header
                .iter()
                .map(|h| h.trim().trim_start_matches('\u{feff}').to_lowercase())
                .collect(),
        }
    }

    pub(crate) fn find(&self, aliases: &[&str]) -> Option<usize> {
        self.names
            .iter()
            .position(|n| aliases.iter().any(|a| a.to_lowercase() == *n))
    }
}

/// An audit row: who did what to which account. Never a password.
pub(crate) async fn audit<'c, E>(
    db: E,
    actor: &str,
    action: &str,
    username: &str,
    detail: Option<&str>,
    now_ms: i64,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO account_audit (id, at, actor, action, username, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(crate::accounts::new_id())
    .bind(now_ms)
    .bind(actor)
    .bind(action)
    .bind(username)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(())
}

/// argon2 off the async threads.
pub(crate) async fn hash(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || crate::accounts::hash_password(&password))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(Error::from)
}

/// Hash many passwords, as many at once as there are cores.
pub(crate) async fn hash_all(passwords: Vec<String>) -> Result<Vec<String>, Error> {
    use futures::StreamExt as _;
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    futures::stream::iter(passwords.into_iter().map(hash))
        .buffered(n)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// What is stored as the password hash of an account without a password
/// here (imported for USB key or CA login only): no password verifies
/// against it, so only the SMS login a window switch enables opens it.
pub(crate) const NO_PASSWORD: &str = "!no-password";

/// The login methods of the credit system (R1.5, R1.6), in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum LoginMethod {
    Password,
    Sms,
    UsbKey,
    Ca,
}

impl LoginMethod {
    pub const ALL: [LoginMethod; 4] = [Self::Password, Self::Sms, Self::UsbKey, Self::Ca];

    pub fn code(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Sms => "sms",
            Self::UsbKey => "usb_key",
            Self::Ca => "ca",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Password => "账号密码",
            Self::Sms => "短信验证码",
            Self::UsbKey => "密码锁",
            Self::Ca => "CA证书",
        }
    }

    pub fn parse(s: &str) -> Option<LoginMethod> {
        let t = s.trim();
        Self::ALL.into_iter().find(|m| {
            m.code().eq_ignore_ascii_case(t)
                || m.label() == t
                || match m {
                    Self::Password => matches!(t, "密码"),
                    Self::Sms => matches!(t, "短信" | "短信验证" | "短信验证登录"),
                    Self::UsbKey => {
                        t.eq_ignore_ascii_case("usb") || t.eq_ignore_ascii_case("usbkey")
                    }
                    Self::Ca => matches!(t, "CA登录" | "ca登录" | "CA"),
                }
        })
    }

    /// A list as typed: separated by commas, semicolons, 、, | or /.
    pub fn parse_list(s: &str) -> Result<Vec<LoginMethod>, String> {
        let mut out = Vec::new();
        for part in s
            .split([',', ';', '，', '；', '、', '|', '/'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match LoginMethod::parse(part) {
                Some(m) if !out.contains(&m) => out.push(m),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "登录方式“{part}”无法识别（可填 password、sms、usb_key、ca）"
                    ))
                }
            }
        }
        if out.is_empty() {
            return Err("请填写登录方式（password、sms、usb_key、ca）".into());
        }
        out.sort();
        Ok(out)
    }

    /// The stored form: codes joined by commas.
    pub fn join(methods: &[LoginMethod]) -> String {
        methods
            .iter()
            .map(|m| m.code())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The stored form read back. A code this version does not know is an
    /// error naming it (not a method silently dropped).
    pub fn split(stored: &str) -> Result<Vec<LoginMethod>, String> {
        stored
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| LoginMethod::parse(c).ok_or_else(|| format!("unknown login method `{c}`")))
            .collect()
    }

    /// Labels for the pages: 账号密码、短信验证码.
    pub fn labels(methods: &[LoginMethod]) -> String {
        methods
            .iter()
            .map(|m| m.label())
            .collect::<Vec<_>>()
            .join("、")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_methods_parse_codes_and_chinese_labels() {
        assert_eq!(
            LoginMethod::parse_list("sms; Password、密码锁|CA").unwrap(),
            vec![
                LoginMethod::Password,
                LoginMethod::Sms,
                LoginMethod::UsbKey,
                LoginMethod::Ca
            ]
        );
        assert!(LoginMethod::parse_list("").is_err());
        assert!(LoginMethod::parse_list("fingerprint")
            .unwrap_err()
            .contains("fingerprint"));
        let all = LoginMethod::ALL.to_vec();
        assert_eq!(LoginMethod::split(&LoginMethod::join(&all)), Ok(all));
        assert_eq!(LoginMethod::split(""), Ok(vec![]));
        assert!(LoginMethod::split("password,fingerprint")
            .unwrap_err()
            .contains("fingerprint"));
    }

    #[test]
    fn row_errors_are_bounded_but_counted() {
        let mut e = RowErrors::default();
        for i in 0..250 {
            e.push(i + 2, "x");
        }
        assert_eq!(
            (e.shown.len(), e.total, e.more()),
            (MAX_ROW_ERRORS, 250, 150)
        );
        assert_eq!(e.lines().last().unwrap(), "……另有150处问题未列出");
    }
}
