//! Configuration: defaults < YAML file < environment variables, then
//! `validate()` before anything starts. Chooses and configures the adapters
//! (simulated or real health commission, SMS to the log or to a gateway) so
//! a deployment points them at real gateways without rebuilding. Secrets
//! never print. See deploy/config.example.yaml.

use serde::Deserialize;
use std::time::Duration;

pub use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthMode {
    Sim,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsMode {
    Log,
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    pub mode: HealthMode,
    pub base_url: String,
    pub token: Secret,
    pub timeout_ms: u64,
    pub batch_size: usize,
    pub concurrency: usize,
    /// No longer used (refused with a pointer to the retry policies): the
    /// adapter makes one attempt per batch and the engine retries.
    pub attempts: Option<u32>,
    /// No longer used, as `attempts`.
    pub backoff_ms: Option<u64>,
    pub sim_seed: u64,
    pub sim_rates: crate::adapters::health_sim::SimRates,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            mode: HealthMode::Sim,
            base_url: String::new(),
            token: Secret::default(),
            timeout_ms: 10_000,
            batch_size: 1000,
            concurrency: 4,
            attempts: None,
            backoff_ms: None,
            sim_seed: 2022,
            sim_rates: Default::default(),
        }
    }
}

impl HealthConfig {
    pub fn http_options(&self) -> crate::adapters::health::HttpOptions {
        crate::adapters::health::HttpOptions {
            base_url: self.base_url.clone(),
            token: self.token.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            batch_size: self.batch_size,
            concurrency: self.concurrency,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub mode: SmsMode,
    pub base_url: String,
    pub token: Secret,
    pub timeout_ms: u64,
    /// No longer used, as `HealthConfig::attempts`.
    pub attempts: Option<u32>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            mode: SmsMode::Log,
            base_url: String::new(),
            token: Secret::default(),
            timeout_ms: 10_000,
            attempts: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://data/epi.db?mode=rwc` (default) or `postgres://…`.
    pub database_url: String,
    /// Where the web server listens (loopback by default).
    pub listen: String,
    /// Mark cookies `Secure` (set it when served over HTTPS, as in production).
    pub cookie_secure: bool,
    /// Behind a reverse proxy that appends the client's address to
    /// `X-Forwarded-For`: take the address throttling counts by from the
    /// header's last entry. Leave off when clients reach the server
    /// directly, or they could name any address they like.
    pub trust_forwarded_for: bool,
    /// The name this server's activity leases are held under: one per
    /// server process on a database. Restarted under the same name, a
    /// server takes back at once the tasks its previous process held.
    pub worker: String,
    /// The bearer token `/metrics` asks for (`Authorization: Bearer …`);
    /// empty (the default): `/metrics` is not served (404). At least 16
    /// characters; set it through `EPI_METRICS_TOKEN`.
    pub metrics_token: Secret,
    pub health: HealthConfig,
    pub sms: SmsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://data/epi.db?mode=rwc".into(),
            listen: "127.0.0.1:8080".into(),
            cookie_secure: false,
            trust_forwarded_for: false,
            worker: "embedded".into(),
            metrics_token: Secret::default(),
            health: Default::default(),
            sms: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Defaults, then `file` if given, then the environment (`env` looks a name up).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let mut c = match file {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                serde_yaml::from_str(&text).map_err(|source| Error::Parse {
                    path: p.display().to_string(),
                    source,
                })?
            }
        };
        fn parse<T: std::str::FromStr>(name: &str, v: String) -> Result<T, Error> {
            v.trim().parse().map_err(|_| Error::Env {
                name: name.into(),
                message: format!("`{v}` is not a valid value"),
            })
        }
        let mode = |name: &str, v: String| -> Result<String, Error> {
            let v = v.trim().to_lowercase();
            Ok(v).and_then(|v| {
                if v.is_empty() {
                    Err(Error::Env {
                        name: name.into(),
                        message: "empty".into(),
                    })
                } else {
                    Ok(v)
                }
            })
        };
        if let Some(v) = env("EPI_DATABASE_URL") {
            c.database_url = v;
        }
        if let Some(v) = env("EPI_LISTEN") {
            c.listen = v;
        }
        if let Some(v) = env("EPI_COOKIE_SECURE") {
            c.cookie_secure = parse("EPI_COOKIE_SECURE", v)?;
        }
        if let Some(v) = env("EPI_TRUST_FORWARDED_FOR") {
            c.trust_forwarded_for = parse("EPI_TRUST_FORWARDED_FOR", v)?;
        }
        if let Some(v) = env("EPI_WORKER") {
            c.worker = v;
        }
        if let Some(v) = env("EPI_METRICS_TOKEN") {
            c.metrics_token = Secret::new(v.trim());
        }
        if let Some(v) = env("EPI_HEALTH_MODE") {
            c.health.mode = match mode("EPI_HEALTH_MODE", v)?.as_str() {
                "sim" => HealthMode::Sim,
                "http" => HealthMode::Http,
                other => {
                    return Err(Error::Env {
                        name: "EPI_HEALTH_MODE".into(),
                        message: format!("`{other}`: use sim or http"),
                    })
                }
            };
        }
        if let Some(v) = env("EPI_HEALTH_BASE_URL") {
            c.health.base_url = v;
        }
        if let Some(v) = env("EPI_HEALTH_TOKEN") {
            c.health.token = Secret::new(v);
        }
        if let Some(v) = env("EPI_HEALTH_TIMEOUT_MS") {
            c.health.timeout_ms = parse("EPI_HEALTH_TIMEOUT_MS", v)?;
        }
        if let Some(v) = env("EPI_HEALTH_BATCH_SIZE") {
            c.health.batch_size = parse("EPI_HEALTH_BATCH_SIZE", v)?;
        }
        if let Some(v) = env("EPI_HEALTH_CONCURRENCY") {
            c.health.concurrency = parse("EPI_HEALTH_CONCURRENCY", v)?;
        }
        if let Some(v) = env("EPI_SMS_MODE") {
            c.sms.mode = match mode("EPI_SMS_MODE", v)?.as_str() {
                "log" => SmsMode::Log,
                "http" => SmsMode::Http,
                other => {
                    return Err(Error::Env {
                        name: "EPI_SMS_MODE".into(),
                        message: format!("`{other}`: use log or http"),
                    })
                }
            };
        }
        if let Some(v) = env("EPI_SMS_BASE_URL") {
            c.sms.base_url = v;
        }
        if let Some(v) = env("EPI_SMS_TOKEN") {
            c.sms.token = Secret::new(v);
        }
        c.validate()?;
        Ok(c)
    }

    /// Real gateways or a shared database: a deployment, not a demo or
    /// rehearsal (which refuse to run on one).
    pub fn is_production(&self) -> bool {
        self.health.mode == HealthMode::Http
            || self.sms.mode == SmsMode::Http
            || self.database_url.starts_with("postgres")
    }

    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut p = Vec::new();
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            p.push("database_url must start with sqlite: or postgres://".to_string());
        }
        if self.worker.trim().is_empty() {
            p.push("worker must name this server process (e.g. web-1)".to_string());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "listen `{}` must be an address:port such as 127.0.0.1:8080",
                self.listen
            ));
        }
        if !self.metrics_token.is_empty() && self.metrics_token.expose().chars().count() < 16 {
            p.push("metrics_token must be at least 16 characters (or empty: no /metrics)".into());
        }
        let h = &self.health;
        if h.mode == HealthMode::Http {
            if !(h.base_url.starts_with("http://") || h.base_url.starts_with("https://")) {
                p.push("health.base_url must be an http(s) URL when health.mode is http".into());
            }
            if h.token.is_empty() {
                p.push("health.token is required when health.mode is http".into());
            }
        }
        if h.batch_size == 0 || h.batch_size > crate::adapters::health::MAX_BATCH {
            p.push(format!(
                "health.batch_size must be 1..={}",
                crate::adapters::health::MAX_BATCH
            ));
        }
        if h.concurrency == 0 || h.concurrency > 64 {
            p.push("health.concurrency must be 1..=64".into());
        }
        let retries = "is no longer used: each call makes one attempt and the retry policies \
             of workflows/activities.yaml (run_comparison, notify_enterprise) do the retrying";
        if h.attempts.is_some() {
            p.push(format!("health.attempts {retries}"));
        }
        if h.backoff_ms.is_some() {
            p.push(format!("health.backoff_ms {retries}"));
        }
        if h.timeout_ms == 0 {
            p.push("health.timeout_ms must be more than 0".into());
        }
        let s = &self.sms;
        if s.attempts.is_some() {
            p.push(format!("sms.attempts {retries}"));
        }
        if s.timeout_ms == 0 {
            p.push("sms.timeout_ms must be more than 0".into());
        }
        if s.mode == SmsMode::Http {
            if !(s.base_url.starts_with("http://") || s.base_url.starts_with("https://")) {
                p.push("sms.base_url must be an http(s) URL when sms.mode is http".into());
            }
            if s.token.is_empty() {
                p.push("sms.token is required when sms.mode is http".into());
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file_overrides_defaults_and_secrets_never_print() {
        let dir = std::env::temp_dir().join(format!("epi-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.yaml");
        std::fs::write(&file, "health:\n  mode: http\n  base_url: http://gw.example\n  token: from-file\n  batch_size: 500\n").unwrap();
        let env = |k: &str| match k {
            "EPI_HEALTH_TOKEN" => Some("from-env".to_string()),
            "EPI_SMS_MODE" => Some("log".to_string()),
            _ => None,
        };
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(
            (c.health.mode, c.health.batch_size, c.health.token.expose()),
            (HealthMode::Http, 500, "from-env")
        );
        assert!(!format!("{c:?}").contains("from-env"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn adapter_retry_settings_are_refused_with_where_retries_are_declared() {
        let dir = tempfile_dir("retries");
        let file = dir.join("c.yaml");
        std::fs::write(
            &file,
            "health:\n  attempts: 5\n  backoff_ms: 500\nsms:\n  attempts: 3\n",
        )
        .unwrap();
        let Err(Error::Invalid(p)) = Config::load(Some(&file), |_| None) else {
            panic!("refused")
        };
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter().all(|m| m.contains("workflows/activities.yaml")),
            "{p:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("epi-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_metrics_token_comes_from_the_environment_and_must_not_be_short() {
        let c = Config::load(None, |k| {
            (k == "EPI_METRICS_TOKEN").then(|| "0123456789abcdef-long".to_string())
        })
        .unwrap();
        assert_eq!(c.metrics_token.expose(), "0123456789abcdef-long");
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        let Err(Error::Invalid(p)) =
            Config::load(None, |k| (k == "EPI_METRICS_TOKEN").then(|| "short".into()))
        else {
            panic!("refused")
        };
        assert!(p[0].contains("metrics_token"), "{p:?}");
    }

    #[test]
    fn invalid_configuration_lists_every_problem() {
        let env = |k: &str| match k {
            "EPI_HEALTH_MODE" => Some("http".to_string()),
            "EPI_SMS_MODE" => Some("http".to_string()),
            "EPI_HEALTH_BATCH_SIZE" => Some("5000".to_string()),
            _ => None,
        };
        let Err(Error::Invalid(p)) = Config::load(None, env) else {
            panic!("refused")
        };
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(matches!(
            Config::load(None, |k| (k == "EPI_HEALTH_MODE").then(|| "ftp".into())),
            Err(Error::Env { .. })
        ));
    }
}
