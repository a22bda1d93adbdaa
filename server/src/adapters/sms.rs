//! The SMS gateway adapter, per the contract in DOMAIN.md: `POST
//! {base}/v1/sms/send` with a bearer token and `{phone, template, params,
//! idempotency_key}`; 200 means accepted. The key makes a resend after a
//! crash harmless, so every retry reuses it. The embedded default writes
//! messages to the `sms_log` table (and the log) instead of sending.

use super::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub phone: String,
    pub template: String,
    pub params: Value,
    pub idempotency_key: String,
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
    token: crate::config::Secret,
    attempts: u32,
    backoff: Duration,
}

impl HttpSms {
    pub fn new(
        base_url: String,
        token: crate::config::Secret,
        timeout: Duration,
        attempts: u32,
        backoff: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(HttpSms {
            http,
            base_url,
            token,
            attempts: attempts.max(1),
            backoff,
        })
    }
}

impl SmsGateway for HttpSms {
    fn send(&self, m: Message) -> BoxFuture<Result<(), Error>> {
        let this = self.clone();
        Box::pin(async move {
            let url = format!("{}/v1/sms/send", this.base_url.trim_end_matches('/'));
            let mut delay = this.backoff;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let reason = match this
                    .http
                    .post(&url)
                    .bearer_auth(this.token.expose())
                    .json(&m)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                        format!("HTTP {}", r.status().as_u16())
                    }
                    Ok(r) => return Err(Error::Rejected(format!("HTTP {}", r.status().as_u16()))),
                    Err(e) => e.to_string(),
                };
                if attempt >= this.attempts {
                    return Err(Error::Unavailable(reason));
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        })
    }
}

/// The embedded default: messages go to the `sms_log` table, once per key.
#[derive(Clone)]
pub struct LogSms {
    pool: sqlx::AnyPool,
    clock: std::sync::Arc<dyn engine::clock::Clock>,
}

impl LogSms {
    /// `clock`: the system's (a rehearsal's simulated clock stamps the log too).
    pub fn new(pool: sqlx::AnyPool, clock: std::sync::Arc<dyn engine::clock::Clock>) -> Self {
        LogSms { pool, clock }
    }
}

impl SmsGateway for LogSms {
    fn send(&self, m: Message) -> BoxFuture<Result<(), Error>> {
        let pool = self.pool.clone();
        let now = self.clock.now().timestamp_millis();
        Box::pin(async move {
            let r = sqlx::query(
                "INSERT INTO sms_log (idempotency_key, phone, template, params, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&m.idempotency_key)
            .bind(&m.phone)
            .bind(&m.template)
            .bind(m.params.to_string())
            .bind(now)
            .execute(&pool)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
            if r.rows_affected() > 0 {
                tracing::info!(target: "sms", phone = %m.phone, template = %m.template, key = %m.idempotency_key, params = %m.params, "SMS (logged, not sent)");
            }
            Ok(())
        })
    }
}
