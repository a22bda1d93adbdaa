//! Configuration: defaults < YAML file (`--config`) < `EPI_*` environment,
//! layered by `figment`, then `validate()` before anything starts. Chooses
//! and configures the adapters (simulated or real health commission, SMS to
//! the log or to a gateway) and the workflow engine (embedded or Temporal)
//! so a deployment points them elsewhere without rebuilding. Secrets never
//! print. See deploy/config.example.yaml.
//!
//! Every setting has an environment variable: its key path in capitals with
//! `_` for the dots (`health.base_url` → `EPI_HEALTH_BASE_URL`), listed in
//! `ENV` and by `env_vars()`. A key the file does not know and an `EPI_*`
//! variable the server does not read are errors that name them: a typo
//! never falls back to a default silently.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthMode {
    Sim,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsMode {
    Log,
    Http,
}

/// Which engine runs the workflows: the one inside this process (SQLite or
/// PostgreSQL, the default) or a Temporal cluster (`temporal` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    #[default]
    Embedded,
    Temporal,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(skip_serializing)]
    pub attempts: Option<u32>,
    /// No longer used, as `attempts`.
    #[serde(skip_serializing)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub mode: SmsMode,
    pub base_url: String,
    pub token: Secret,
    pub timeout_ms: u64,
    /// No longer used, as `HealthConfig::attempts`.
    #[serde(skip_serializing)]
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

/// Where the Temporal cluster is (`engine: temporal`). Plain values: the
/// engine-temporal crate builds its client from them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemporalConfig {
    /// The frontend's gRPC address, `http://host:7233` (`https://` with TLS).
    pub address: String,
    pub namespace: String,
    /// The task queue the workers poll and the web server starts workflows on.
    pub task_queue: String,
    pub tls: TemporalTls,
}

impl Default for TemporalConfig {
    fn default() -> Self {
        TemporalConfig {
            address: "http://127.0.0.1:7233".into(),
            namespace: "default".into(),
            task_queue: "epi".into(),
            tls: TemporalTls::default(),
        }
    }
}

/// TLS to the Temporal frontend: `ca` alone checks the server against a
/// private CA; `cert` and `key` (together) add a client certificate
/// (mutual TLS, as Temporal Cloud asks); `domain` overrides the name the
/// server's certificate is checked against. All PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemporalTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub domain: Option<String>,
}

impl TemporalTls {
    /// Any TLS setting given: connect with TLS.
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.domain.is_some()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Which engine runs the workflows.
    pub engine: EngineKind,
    pub temporal: TemporalConfig,
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
            engine: EngineKind::Embedded,
            temporal: TemporalConfig::default(),
            health: Default::default(),
            sms: Default::default(),
        }
    }
}

/// How an environment variable's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Text, trimmed.
    Text,
    /// A secret: text, trimmed.
    Secret,
    /// A path or text that may be absent: empty means not set.
    Optional,
    /// `true` or `false`.
    Bool,
    /// A whole number, 0 or more.
    Uint,
    /// A decimal number.
    Float,
    /// One of these words (any case).
    Choice(&'static [&'static str]),
}

/// One setting's environment variable.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    pub name: &'static str,
    /// The key path in the file, dot-separated.
    pub key: &'static str,
    pub kind: EnvKind,
}

const fn var(name: &'static str, key: &'static str, kind: EnvKind) -> EnvVar {
    EnvVar { name, key, kind }
}

/// Every variable the configuration reads, one per setting (a test checks
/// that every setting of `Config` has one and that each sets its own).
pub const ENV: &[EnvVar] = &[
    var("EPI_DATABASE_URL", "database_url", EnvKind::Text),
    var("EPI_LISTEN", "listen", EnvKind::Text),
    var("EPI_COOKIE_SECURE", "cookie_secure", EnvKind::Bool),
    var(
        "EPI_TRUST_FORWARDED_FOR",
        "trust_forwarded_for",
        EnvKind::Bool,
    ),
    var("EPI_WORKER", "worker", EnvKind::Text),
    var("EPI_METRICS_TOKEN", "metrics_token", EnvKind::Secret),
    var(
        "EPI_ENGINE",
        "engine",
        EnvKind::Choice(&["embedded", "temporal"]),
    ),
    var("EPI_TEMPORAL_ADDRESS", "temporal.address", EnvKind::Text),
    var(
        "EPI_TEMPORAL_NAMESPACE",
        "temporal.namespace",
        EnvKind::Text,
    ),
    var(
        "EPI_TEMPORAL_TASK_QUEUE",
        "temporal.task_queue",
        EnvKind::Text,
    ),
    var("EPI_TEMPORAL_TLS_CA", "temporal.tls.ca", EnvKind::Optional),
    var(
        "EPI_TEMPORAL_TLS_CERT",
        "temporal.tls.cert",
        EnvKind::Optional,
    ),
    var(
        "EPI_TEMPORAL_TLS_KEY",
        "temporal.tls.key",
        EnvKind::Optional,
    ),
    var(
        "EPI_TEMPORAL_TLS_DOMAIN",
        "temporal.tls.domain",
        EnvKind::Optional,
    ),
    var(
        "EPI_HEALTH_MODE",
        "health.mode",
        EnvKind::Choice(&["sim", "http"]),
    ),
    var("EPI_HEALTH_BASE_URL", "health.base_url", EnvKind::Text),
    var("EPI_HEALTH_TOKEN", "health.token", EnvKind::Secret),
    var("EPI_HEALTH_TIMEOUT_MS", "health.timeout_ms", EnvKind::Uint),
    var("EPI_HEALTH_BATCH_SIZE", "health.batch_size", EnvKind::Uint),
    var(
        "EPI_HEALTH_CONCURRENCY",
        "health.concurrency",
        EnvKind::Uint,
    ),
    var("EPI_HEALTH_SIM_SEED", "health.sim_seed", EnvKind::Uint),
    var(
        "EPI_HEALTH_SIM_RATES_POSITIVE",
        "health.sim_rates.positive",
        EnvKind::Float,
    ),
    var(
        "EPI_HEALTH_SIM_RATES_RED",
        "health.sim_rates.red",
        EnvKind::Float,
    ),
    var(
        "EPI_HEALTH_SIM_RATES_YELLOW",
        "health.sim_rates.yellow",
        EnvKind::Float,
    ),
    var(
        "EPI_HEALTH_SIM_RATES_MISSING_NAT",
        "health.sim_rates.missing_nat",
        EnvKind::Float,
    ),
    var(
        "EPI_HEALTH_SIM_RATES_UNVACCINATED",
        "health.sim_rates.unvaccinated",
        EnvKind::Float,
    ),
    var(
        "EPI_HEALTH_SIM_RATES_UNKNOWN",
        "health.sim_rates.unknown",
        EnvKind::Float,
    ),
    var(
        "EPI_SMS_MODE",
        "sms.mode",
        EnvKind::Choice(&["log", "http"]),
    ),
    var("EPI_SMS_BASE_URL", "sms.base_url", EnvKind::Text),
    var("EPI_SMS_TOKEN", "sms.token", EnvKind::Secret),
    var("EPI_SMS_TIMEOUT_MS", "sms.timeout_ms", EnvKind::Uint),
];

/// `EPI_*` variables that are not settings of the server but of the
/// project's test and benchmark tools: present in a test's environment,
/// they are not a typo.
pub const TOOL_VARS: &[&str] = &[
    "EPI_PG_TESTS",
    "EPI_BROWSER_TESTS",
    "EPI_TEMPORAL_TESTS",
    "EPI_BENCH_SECS",
    "EPI_BENCH_ONLY",
    "EPI_BENCH_KEEP",
];

/// The name of every environment variable the configuration reads.
pub fn env_vars() -> Vec<&'static str> {
    ENV.iter().map(|v| v.name).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("无法读取配置文件 {path}：{source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("配置文件 {path} 有误：\n  {}", .problems.join("\n  "))]
    File {
        path: String,
        problems: Vec<String>,
        #[source]
        source: Box<figment::Error>,
    },
    #[error("环境变量 {name}：{message}")]
    Env { name: String, message: String },
    #[error("未知的环境变量（服务器不读取，可能拼错了）：\n  {}", .0.join("\n  "))]
    UnknownEnv(Vec<String>),
    #[error("配置有误：\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Defaults, then `file` if given, then the variables of `ENV` that
    /// `env` finds. Does not look for unknown `EPI_*` variables (it cannot
    /// list them): start-up uses `from_process`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let vars = ENV
            .iter()
            .filter_map(|v| env(v.name).map(|value| (v.name.to_string(), value)));
        Config::load_vars(file, vars)
    }

    /// `load_vars` with this process's environment.
    pub fn from_process(file: Option<&Path>) -> Result<Config, Error> {
        let mut vars = Vec::new();
        for (k, v) in std::env::vars_os() {
            let Some(k) = k.to_str().filter(|k| k.starts_with("EPI_")) else {
                continue;
            };
            let v = v.into_string().map_err(|_| Error::Env {
                name: k.to_string(),
                message: "值不是有效的 UTF-8 文本".into(),
            })?;
            vars.push((k.to_string(), v));
        }
        Config::load_vars(file, vars)
    }

    /// Defaults, then `file` if given, then `vars` (name, value): every
    /// `EPI_*` name among them must be one of `ENV` (or `TOOL_VARS`).
    pub fn load_vars(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let c = Config::layered(file, vars)?;
        c.validate()?;
        Ok(c)
    }

    /// The layers merged and typed, not yet validated.
    fn layered(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        use figment::providers::{Format, Serialized, Yaml};
        let mut figment = figment::Figment::new();
        let mut path = String::from("（无）");
        if let Some(p) = file {
            path = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            figment = figment.merge(Yaml::string(&text));
        }
        for (var, value) in env_values(vars)? {
            figment = figment.merge(Serialized::default(var.key, value));
        }
        figment.extract().map_err(|source| Error::File {
            path,
            problems: source.clone().into_iter().map(|e| explain(&e)).collect(),
            source: Box::new(source),
        })
    }
}

/// The settings `vars` give, typed; unknown `EPI_*` names refused.
fn env_values(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(&'static EnvVar, figment::value::Value)>, Error> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for (name, value) in vars {
        if let Some(v) = ENV.iter().find(|v| v.name == name) {
            if let Some(value) = env_value(v, &value)? {
                out.push((v, value));
            }
        } else if name.starts_with("EPI_") && !TOOL_VARS.contains(&name.as_str()) {
            unknown.push(match closest(&name) {
                Some(near) => format!("{name}（是不是 {near}？）"),
                None => name,
            });
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(Error::UnknownEnv(unknown));
    }
    Ok(out)
}

/// One variable's value as its setting's type (None: empty optional).
fn env_value(v: &EnvVar, text: &str) -> Result<Option<figment::value::Value>, Error> {
    use figment::value::Value;
    let t = text.trim();
    let bad = |message: String| Error::Env {
        name: v.name.to_string(),
        message,
    };
    Ok(Some(match v.kind {
        EnvKind::Text | EnvKind::Secret => Value::from(t.to_string()),
        EnvKind::Optional if t.is_empty() => return Ok(None),
        EnvKind::Optional => Value::from(t.to_string()),
        EnvKind::Bool => match t.to_ascii_lowercase().as_str() {
            "true" => Value::from(true),
            "false" => Value::from(false),
            _ => return Err(bad(format!("`{t}` 应为 true 或 false"))),
        },
        EnvKind::Uint => Value::from(
            t.parse::<u64>()
                .map_err(|_| bad(format!("`{t}` 应为不小于 0 的整数")))?,
        ),
        EnvKind::Float => Value::from(
            t.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad(format!("`{t}` 应为数字")))?,
        ),
        EnvKind::Choice(words) => {
            let w = t.to_ascii_lowercase();
            if !words.contains(&w.as_str()) {
                return Err(bad(format!("`{t}` 无效，可选：{}", words.join("、"))));
            }
            Value::from(w)
        }
    }))
}

/// The variable of `ENV` nearest to a misspelt `name`, if one is close.
fn closest(name: &str) -> Option<&'static str> {
    ENV.iter()
        .map(|v| (distance(name, v.name), v.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

/// Edit distance (Levenshtein) of two short names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// One problem of the file, in words, with the key it is about.
fn explain(e: &figment::Error) -> String {
    use figment::error::Kind;
    let key = e.path.join(".");
    match &e.kind {
        Kind::UnknownField(field, expected) => {
            // figment's path already ends with the field; be sure it does.
            let full = if e.path.last() == Some(field) {
                key
            } else if key.is_empty() {
                field.clone()
            } else {
                format!("{key}.{field}")
            };
            format!(
                "未知的设置 `{full}`（可能拼错了；此处可用：{}）",
                expected.join("、")
            )
        }
        Kind::UnknownVariant(value, expected) => {
            format!("`{key}` 的值 `{value}` 无效，可选：{}", expected.join("、"))
        }
        Kind::InvalidType(actual, expected) => {
            format!("`{key}` 的类型不对：应为 {expected}，实为 {actual}")
        }
        Kind::InvalidValue(actual, expected) => {
            format!("`{key}` 的值不对：应为 {expected}，实为 {actual}")
        }
        Kind::Message(m) if key.is_empty() => format!("无法解析：{m}"),
        _ => format!("`{key}`：{e}"),
    }
}

impl Config {
    /// Real gateways or a shared database: a deployment, not a demo or
    /// rehearsal (which refuse to run on one).
    pub fn is_production(&self) -> bool {
        self.health.mode == HealthMode::Http
            || self.sms.mode == SmsMode::Http
            || self.database_url.starts_with("postgres")
    }

    /// Every problem at once, each naming its key.
    pub fn validate(&self) -> Result<(), Error> {
        let mut p = Vec::new();
        self.check_server(&mut p);
        self.health.check(&mut p);
        self.sms.check(&mut p);
        self.temporal.check(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(p))
        }
    }

    fn check_server(&self, p: &mut Vec<String>) {
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            p.push("database_url 须以 sqlite: 或 postgres:// 开头".to_string());
        }
        if self.worker.trim().is_empty() {
            p.push("worker 须为本服务进程命名（如 web-1）".to_string());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "listen `{}` 须为“地址:端口”，如 127.0.0.1:8080",
                self.listen
            ));
        }
        if !self.metrics_token.is_empty() && self.metrics_token.expose().chars().count() < 16 {
            p.push("metrics_token 至少 16 个字符（留空则不提供 /metrics）".into());
        }
    }
}

/// Retry settings of the adapters are gone: say where retries are declared.
const RETRIES: &str = "已不再使用：每次调用只尝试一次，重试由 workflows/activities.yaml \
     的重试策略（run_comparison、notify_enterprise）负责";

fn is_http_url(s: &str) -> bool {
    reqwest::Url::parse(s)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

impl HealthConfig {
    fn check(&self, p: &mut Vec<String>) {
        if self.mode == HealthMode::Http {
            if !is_http_url(&self.base_url) {
                p.push("health.mode 为 http 时，health.base_url 须为 http(s) 网址".into());
            }
            if self.token.is_empty() {
                p.push("health.mode 为 http 时须设置 health.token（EPI_HEALTH_TOKEN）".into());
            }
        }
        let max = crate::adapters::health::MAX_BATCH;
        if self.batch_size == 0 || self.batch_size > max {
            p.push(format!("health.batch_size 须在 1 到 {max} 之间"));
        }
        if self.concurrency == 0 || self.concurrency > 64 {
            p.push("health.concurrency 须在 1 到 64 之间".into());
        }
        if self.attempts.is_some() {
            p.push(format!("health.attempts {RETRIES}"));
        }
        if self.backoff_ms.is_some() {
            p.push(format!("health.backoff_ms {RETRIES}"));
        }
        if self.timeout_ms == 0 {
            p.push("health.timeout_ms 须大于 0".into());
        }
    }
}

impl SmsConfig {
    fn check(&self, p: &mut Vec<String>) {
        if self.attempts.is_some() {
            p.push(format!("sms.attempts {RETRIES}"));
        }
        if self.timeout_ms == 0 {
            p.push("sms.timeout_ms 须大于 0".into());
        }
        if self.mode == SmsMode::Http {
            if !is_http_url(&self.base_url) {
                p.push("sms.mode 为 http 时，sms.base_url 须为 http(s) 网址".into());
            }
            if self.token.is_empty() {
                p.push("sms.mode 为 http 时须设置 sms.token（EPI_SMS_TOKEN）".into());
            }
        }
    }
}

impl TemporalConfig {
    fn check(&self, p: &mut Vec<String>) {
        if !is_http_url(&self.address) {
            p.push(format!(
                "temporal.address `{}` 须为 http(s) 网址，如 http://127.0.0.1:7233",
                self.address
            ));
        }
        if self.namespace.trim().is_empty() {
            p.push("temporal.namespace 不能为空".into());
        }
        if self.task_queue.trim().is_empty() {
            p.push("temporal.task_queue 不能为空".into());
        }
        let tls = &self.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            p.push("temporal.tls.cert 与 temporal.tls.key 须同时设置（客户端证书及其私钥）".into());
        }
        for (key, file) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
            if let Some(f) = file.as_deref().filter(|f| !f.is_file()) {
                p.push(format!("temporal.tls.{key}：找不到文件 {}", f.display()));
            }
        }
        if tls.domain.as_deref().is_some_and(|d| d.trim().is_empty()) {
            p.push("temporal.tls.domain 不能为空（不需要时删去此项）".into());
        }
    }
}

#[cfg(test)]
mod tests;
