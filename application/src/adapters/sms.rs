//! The SMS gateway adapter, per the contract in DOMAIN.md: `POST
//! {base}/v1/sms/send` with a bearer token and `{phone, template, params,
//! idempotency_key}`; 200 means accepted. One attempt per call: retrying
//! is the engine's (the activity's retry policy in
//! `workflows/activities.yaml`), and every retry reuses the call's key, so a
//! resend after a crash or a lost answer is harmless. Failures are
//! classified: 429, 5xx, timeouts and connection errors are `Unavailable`
//! (retry later), any other 4xx is `Rejected` (do not).
//!
//! Some messages carry secrets (a generated password, a login code): the
//! parameters named in `Message::secret` go to the phone and nowhere else.
//! The embedded default (`LogSms`) writes messages to the `sms_log` table
//! and the log with those parameters as `******`; only in a demo or
//! rehearsal may it show them in clear on the console (stdout, not the
//! log) so a newcomer can log in, and nothing persists them.

use super::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a redacted secret is replaced by.
pub const REDACTED: &str = "******";

/// Parameter names that are secrets in any message, marked or not: a
/// safety net for a message built without `secret`.
const ALWAYS_SECRET: &[&str] = &["password", "code", "new_password", "token"];

#[derive(Clone, PartialEq, Serialize)]
pub struct Message {
    pub phone: String,
    pub template: String,
    pub params: Value,
    pub idempotency_key: String,
    /// Names of `params` that are secrets: sent to the gateway, never
    /// stored or logged in clear.
    #[serde(skip)]
    pub secret: Vec<String>,
}

impl Message {
    /// A message without secrets (mark them with `secret`).
    pub fn new(
        phone: impl Into<String>,
        template: impl Into<String>,
        params: Value,
        idempotency_key: impl Into<String>,
    ) -> Message {
        Message {
            phone: phone.into(),
            template: template.into(),
            params,
            idempotency_key: idempotency_key.into(),
            secret: Vec::new(),
        }
    }

    /// Mark `names` of the parameters as secrets.
    pub fn secret(mut self, names: &[&str]) -> Message {
        self.secret.extend(names.iter().map(|n| n.to_string()));
        self
    }

    fn is_secret(&self, name: &str) -> bool {
        ALWAYS_SECRET.contains(&name) || self.secret.iter().any(|s| s == name)
    }

    /// The parameters as they may be stored or logged: secrets `******`.
    pub fn redacted_params(&self) -> Value {
        match &self.params {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = if self.is_secret(k) {
                            Value::String(REDACTED.into())
                        } else {
                            v.clone()
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Debug shows the redacted form, so `{:?}` in a log line leaks nothing.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("phone", &self.phone)
            .field("template", &self.template)
            .field("params", &self.redacted_params())
            .field("idempotency_key", &self.idempotency_key)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The gateway refused the message (4xx): retrying will not help.
    #[error("短信网关拒绝发送：{0}")]
    Rejected(String),
    /// Worth retrying later with the same key.
    #[error("短信网关暂不可用：{0}")]
    Unavailable(String),
}

pub trait SmsGateway: Send + Sync + 'static {
    fn send(&self, m: Message) -> BoxFuture<Result<(), Error>>;
}

#[derive(Clone)]
pub struct HttpSms {
    http: reqwest::Client,
    base_url: String,
    token: crate::secret::Secret,
}

impl HttpSms {
    pub fn new(
        base_url: String,
        token: crate::secret::Secret,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(HttpSms {
            http,
            base_url,
            token,
        })
    }
}

impl SmsGateway for HttpSms {
    fn send(&self, m: Message) -> BoxFuture<Result<(), Error>> {
        let this = self.clone();
        Box::pin(async move {
            let url = format!("{}/v1/sms/send", this.base_url.trim_end_matches('/'));
            match this
                .http
                .post(&url)
                .bearer_auth(this.token.expose())
                .json(&m)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    Err(Error::Unavailable(format!("HTTP {}", r.status().as_u16())))
                }
                Ok(r) => Err(Error::Rejected(format!("HTTP {}", r.status().as_u16()))),
                Err(e) if e.is_timeout() => Err(Error::Unavailable("超时".into())),
                // reqwest's message names the URL, never the body.
                Err(e) => Err(Error::Unavailable(format!("连接失败：{e}"))),
            }
        })
    }
}

/// A gateway whose sends are counted (`sms_sent_total`,
/// `sms_failed_total` by template): wraps whichever gateway the
/// configuration chose.
pub struct MeteredSms {
    inner: Arc<dyn SmsGateway>,
    metrics: crate::metrics::AppMetrics,
}

impl MeteredSms {
    pub fn new(inner: Arc<dyn SmsGateway>, metrics: crate::metrics::AppMetrics) -> Self {
        MeteredSms { inner, metrics }
    }
}

impl SmsGateway for MeteredSms {
    fn send(&self, m: Message) -> BoxFuture<Result<(), Error>> {
        let template = m.template.clone();
        let sent = self.inner.send(m);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let r = sent.await;
            let kind = match &r {
                Ok(()) => None,
                Err(Error::Rejected(_)) => Some("rejected"),
                Err(Error::Unavailable(_)) => Some("unavailable"),
            };
            metrics.sms(&template, kind);
            r
        })
    }
}

/// Messages shown in clear where nothing persists them (a demo's or
/// rehearsal's console, and the last few kept in memory so tests can read
/// a generated password or code the way a phone would). Bounded.
#[derive(Clone, Default)]
pub struct Inbox {
    kept: Arc<Mutex<VecDeque<Message>>>,
}

impl Inbox {
    const MAX: usize = 200;

    fn push(&self, m: Message) {
        let mut kept = self.kept.lock().expect("sms inbox");
        if kept.len() >= Self::MAX {
            kept.pop_front();
        }
        kept.push_back(m);
    }

    /// The latest message of `template` (to any phone).
    pub fn last(&self, template: &str) -> Option<Message> {
        let kept = self.kept.lock().expect("sms inbox");
        kept.iter().rev().find(|m| m.template == template).cloned()
    }

    /// Parameter `name` of the latest message of `template`, in clear.
    pub fn last_param(&self, template: &str, name: &str) -> Option<String> {
        self.last(template)
            .and_then(|m| m.params[name].as_str().map(str::to_string))
    }
}

/// The embedded default: messages go to the `sms_log` table, once per key,
/// secrets redacted.
#[derive(Clone)]
pub struct LogSms {
    pool: sqlx::AnyPool,
    clock: std::sync::Arc<dyn engine::clock::Clock>,
    /// Demo and rehearsal only: where messages are shown in clear.
    console: Option<Inbox>,
}

impl LogSms {
    /// `clock`: the system's (a rehearsal's simulated clock stamps the log too).
    pub fn new(pool: sqlx::AnyPool, clock: std::sync::Arc<dyn engine::clock::Clock>) -> Self {
        LogSms {
            pool,
            clock,
            console: None,
        }
    }

    /// Demo and rehearsal: also print each new message in clear on stdout
    /// (not through the log, which may go to files) and keep it in `inbox`.
    pub fn with_console(mut self, inbox: Inbox) -> Self {
        self.console = Some(inbox);
        self
    }
}

impl SmsGateway for LogSms {
    fn send(&self, m: Message) -> BoxFuture<Result<(), Error>> {
        let pool = self.pool.clone();
        let now = self.clock.now().timestamp_millis();
        let console = self.console.clone();
        Box::pin(async move {
            let params = m.redacted_params();
            let r = sqlx::query(
                "INSERT INTO sms_log (idempotency_key, phone, template, params, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&m.idempotency_key)
            .bind(&m.phone)
            .bind(&m.template)
            .bind(params.to_string())
            .bind(now)
            .execute(&pool)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
            if r.rows_affected() > 0 {
                // The log keeps no personal data (issue 15): the mobile
                // masked, no parameters (names, reasons are in sms_log).
                let to = crate::domain::Mobile::parse(&m.phone)
                    .map(|p| p.masked())
                    .unwrap_or_else(|_| "***".into());
                tracing::info!(target: "sms", to = %to, template = %m.template, key = %m.idempotency_key, "SMS (logged, not sent)");
                if let Some(inbox) = console {
                    println!("【短信·演示】{} {} {}", m.phone, m.template, m.params);
                    inbox.push(m);
                }
            }
            Ok(())
        })
    }
}
