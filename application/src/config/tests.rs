use super::*;
use std::collections::BTreeSet;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn environment_overrides_file_overrides_defaults_and_secrets_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "c.yaml",
        "health:\n  mode: http\n  base_url: http://gw.example\n  token: from-file\n  batch_size: 500\n",
    );
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
    assert!(!serde_json::to_string(&c).unwrap().contains("from-env"));
}

#[test]
fn adapter_retry_settings_are_refused_with_where_retries_are_declared() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "c.yaml",
        "health:\n  attempts: 5\n  backoff_ms: 500\nsms:\n  attempts: 3\n",
    );
    let Err(Error::Invalid(p)) = Config::load(Some(&file), |_| None) else {
        panic!("refused")
    };
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p.iter().all(|m| m.contains("workflows/activities.yaml")),
        "{p:?}"
    );
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
    let Err(Error::Env { name, message }) =
        Config::load(None, |k| (k == "EPI_HEALTH_MODE").then(|| "ftp".into()))
    else {
        panic!("refused")
    };
    assert_eq!(name, "EPI_HEALTH_MODE");
    assert!(
        message.contains("ftp") && message.contains("sim"),
        "{message}"
    );
    let Err(Error::Env { name, .. }) =
        Config::load_vars(None, vars(&[("EPI_COOKIE_SECURE", "yes")]))
    else {
        panic!("refused")
    };
    assert_eq!(name, "EPI_COOKIE_SECURE");
}

#[test]
fn an_unknown_epi_variable_is_refused_naming_it() {
    let e = Config::load_vars(
        None,
        vars(&[
            ("EPI_HEALTH_TOKN", "x"),
            ("EPI_NOT_A_SETTING", "1"),
            ("EPI_PG_TESTS", "1"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap_err();
    let Error::UnknownEnv(names) = &e else {
        panic!("{e}")
    };
    assert_eq!(names.len(), 2, "{names:?}");
    let text = e.to_string();
    assert!(text.contains("未知的环境变量"), "{text}");
    assert!(
        text.contains("EPI_HEALTH_TOKN（是不是 EPI_HEALTH_TOKEN？）"),
        "{text}"
    );
    assert!(text.contains("EPI_NOT_A_SETTING"), "{text}");
    // The tools' own variables are not settings, and not typos.
    Config::load_vars(
        None,
        vars(&[("EPI_PG_TESTS", "1"), ("EPI_BENCH_SECS", "3")]),
    )
    .unwrap();
}

#[test]
fn an_unknown_key_in_the_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("databse_url: sqlite://x\n", "`databse_url`"),
        ("health:\n  tokn: x\n", "`health.tokn`"),
        (
            "temporal:\n  tls:\n    certificate: a.pem\n",
            "`temporal.tls.certificate`",
        ),
    ] {
        let file = write(&dir, "c.yaml", text);
        let e = Config::load_vars(Some(&file), vec![]).unwrap_err();
        let Error::File { problems, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("未知的设置") && problems[0].contains(key),
            "{e}"
        );
        assert!(e.to_string().contains("c.yaml"), "{e}");
    }
    let file = write(&dir, "c.yaml", "health:\n  mode: ftp\n");
    let e = Config::load_vars(Some(&file), vec![]).unwrap_err();
    assert!(
        e.to_string().contains("`health.mode` 的值 `ftp` 无效"),
        "{e}"
    );
}

/// A value for each variable, other than the default.
fn sample(v: &EnvVar) -> &'static str {
    match (v.kind, v.name) {
        (EnvKind::Bool, _) => "true",
        (EnvKind::Float, _) => "0.25",
        (EnvKind::Uint, "EPI_HEALTH_BATCH_SIZE") => "7",
        (EnvKind::Uint, _) => "9",
        (EnvKind::Choice(words), _) => words[1],
        (EnvKind::Text | EnvKind::Secret | EnvKind::Optional, _) => "sample-value",
    }
}

/// `key: value` nested as the key path says, as YAML.
fn yaml_at(key: &str, value: &str, kind: EnvKind) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut text = String::new();
    for (depth, part) in parts.iter().enumerate() {
        text.push_str(&"  ".repeat(depth));
        text.push_str(part);
        text.push(':');
        if depth + 1 < parts.len() {
            text.push('\n');
        }
    }
    match kind {
        EnvKind::Bool | EnvKind::Uint | EnvKind::Float => text.push_str(&format!(" {value}\n")),
        _ => text.push_str(&format!(" \"{value}\"\n")),
    }
    text
}

/// Everything a configuration says, secrets included (for comparison).
fn everything(c: &Config) -> String {
    format!(
        "{} {} {} {}",
        serde_json::to_string(c).unwrap(),
        c.metrics_token.expose(),
        c.health.token.expose(),
        c.sms.token.expose()
    )
}

#[test]
fn every_variable_overrides_its_own_setting() {
    let dir = tempfile::tempdir().unwrap();
    let default = everything(&Config::default());
    for v in ENV {
        let value = sample(v);
        let from_env = Config::layered(None, vars(&[(v.name, value)]))
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        let file = write(&dir, "c.yaml", &yaml_at(v.key, value, v.kind));
        let from_file = Config::layered(Some(&file), vec![]).unwrap();
        assert_ne!(everything(&from_env), default, "{} changes nothing", v.name);
        assert_eq!(
            everything(&from_env),
            everything(&from_file),
            "{} does not set {}",
            v.name,
            v.key
        );
        // The environment wins over the file.
        let file = write(&dir, "c.yaml", &yaml_at(v.key, "", EnvKind::Text));
        let both = Config::layered(Some(&file), vars(&[(v.name, value)]));
        if let Ok(both) = both {
            assert_eq!(everything(&both), everything(&from_env), "{}", v.name);
        }
    }
}

/// The key paths of every leaf of a serialized configuration.
fn leaves(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn every_setting_has_a_variable_named_after_its_key() {
    let mut keys = BTreeSet::new();
    leaves(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut keys,
    );
    let vars: BTreeSet<String> = ENV.iter().map(|v| v.key.to_string()).collect();
    assert_eq!(keys, vars);
    for v in ENV {
        assert_eq!(
            v.name,
            format!("EPI_{}", v.key.replace('.', "_").to_uppercase())
        );
    }
    assert_eq!(env_vars().len(), ENV.len());
    assert!(env_vars().contains(&"EPI_TEMPORAL_TLS_DOMAIN"));
}

#[test]
fn the_engine_and_temporal_sections_are_read_and_checked() {
    let c = Config::load_vars(None, vec![]).unwrap();
    assert_eq!(c.engine, EngineKind::Embedded);
    assert_eq!(c.temporal, TemporalConfig::default());
    assert_eq!(c.temporal.address, "http://127.0.0.1:7233");
    assert_eq!(
        (
            c.temporal.namespace.as_str(),
            c.temporal.task_queue.as_str()
        ),
        ("default", "epi")
    );
    assert!(!c.temporal.tls.enabled());

    let dir = tempfile::tempdir().unwrap();
    let ca = write(&dir, "ca.pem", "ca");
    let cert = write(&dir, "cert.pem", "cert");
    let key = write(&dir, "key.pem", "key");
    let file = write(
        &dir,
        "c.yaml",
        &format!(
            "engine: temporal\ntemporal:\n  address: https://temporal.example:7233\n  \
             namespace: epi-prod\n  task_queue: q\n  tls:\n    ca: {}\n    cert: {}\n    \
             key: {}\n    domain: temporal.example\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    let c = Config::load_vars(Some(&file), vars(&[("EPI_TEMPORAL_NAMESPACE", "other")])).unwrap();
    assert_eq!(c.engine, EngineKind::Temporal);
    assert_eq!(c.temporal.address, "https://temporal.example:7233");
    assert_eq!(c.temporal.namespace, "other");
    assert_eq!(c.temporal.task_queue, "q");
    assert_eq!(c.temporal.tls.ca.as_deref(), Some(ca.as_path()));
    assert_eq!(c.temporal.tls.key.as_deref(), Some(key.as_path()));
    assert_eq!(c.temporal.tls.domain.as_deref(), Some("temporal.example"));
    assert!(c.temporal.tls.enabled());

    let env = Config::load_vars(
        None,
        vars(&[("EPI_ENGINE", "Temporal"), ("EPI_TEMPORAL_TLS_CA", "")]),
    )
    .unwrap();
    assert_eq!(env.engine, EngineKind::Temporal);
    assert_eq!(env.temporal.tls.ca, None, "empty is unset");
    assert!(matches!(
        Config::load_vars(None, vars(&[("EPI_ENGINE", "cadence")])),
        Err(Error::Env { .. })
    ));

    let bad = vars(&[
        ("EPI_TEMPORAL_ADDRESS", "127.0.0.1:7233"),
        ("EPI_TEMPORAL_TASK_QUEUE", " "),
        ("EPI_TEMPORAL_TLS_CERT", &cert.display().to_string()),
        ("EPI_TEMPORAL_TLS_CA", "/no/such/ca.pem"),
    ]);
    let Err(Error::Invalid(p)) = Config::load_vars(None, bad) else {
        panic!("refused")
    };
    assert_eq!(p.len(), 4, "{p:?}");
    for (i, key) in [
        "temporal.address",
        "temporal.task_queue",
        "temporal.tls.key",
        "/no/such/ca.pem",
    ]
    .iter()
    .enumerate()
    {
        assert!(p[i].contains(key), "{p:?}");
    }
}

#[test]
fn a_file_of_comments_only_leaves_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "# everything from the environment\n"] {
        let file = write(&dir, "c.yaml", text);
        let c = Config::load_vars(Some(&file), vars(&[("EPI_LISTEN", "0.0.0.0:8080")]))
            .unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(c.listen, "0.0.0.0:8080");
        assert_eq!(c.worker, "embedded");
    }
    let file = write(&dir, "c.yaml", "- a list\n");
    assert!(matches!(
        Config::load_vars(Some(&file), vec![]),
        Err(Error::File { .. })
    ));
}
