//! The command line: `validate` (exit status and file:line:col output) and
//! `serve` (the embedded demo starts; demo and rehearsal refuse production).

use std::process::Command;

fn validate(workflows: &str, rules: &str) -> (i32, String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .current_dir(root)
        .args(["validate", workflows, rules])
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn validate_accepts_the_shipped_definitions() {
    let (code, out) = validate("workflows", "rules");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
}

#[test]
fn validate_lists_every_problem_and_fails() {
    let (code, out) = validate(
        "engine/tests/fixtures/broken/workflows",
        "engine/tests/fixtures/broken/rules",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("engine/tests/fixtures/broken/workflows/bad.yaml:28:15: 未知的状态 `nowhere`"),
        "{out}"
    );
    assert!(
        out.contains("engine/tests/fixtures/broken/rules/helpers.rhai:6:13:"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("共发现 23 处问题"), "{out}");
}

#[test]
fn validate_names_a_rule_function_the_comparison_needs_but_lacks() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(format!("{root}/rules")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    // statistics.rhai without `classify`.
    let path = dir.path().join("statistics.rhai");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("fn classify(", "fn classified(")).unwrap();
    let (code, out) = validate("workflows", dir.path().to_str().unwrap());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rules/statistics.rhai: fn classify(1 argument(s))"),
        "{out}"
    );
}

#[test]
fn demo_and_rehearsal_are_refused_on_a_production_configuration() {
    for args in [
        vec!["serve", "--demo"],
        vec!["serve", "--simulated-clock", "2026-12-01T04:55+08:00"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(&args)
            .env("EPI_HEALTH_MODE", "http")
            .env("EPI_HEALTH_BASE_URL", "https://health.example.cn")
            .env("EPI_HEALTH_TOKEN", "t")
            .env("EPI_LISTEN", "127.0.0.1:0")
            .env("EPI_DATABASE_URL", "sqlite::memory:")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refused on a production configuration"),
            "{err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["serve", "--simulated-clock", "tomorrow"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2026-12-01T04:55+08:00"));
}

/// The embedded default as a newcomer starts it (the README's run command
/// runs the same binary without arguments): it prints the demo accounts and
/// its address, serves the login page, and the operator can log in.
#[test]
fn the_embedded_demo_starts_prints_credentials_and_serves() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("epi-cli-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .current_dir(&dir)
        .env("EPI_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut operator_password = None;
    let mut url = None;
    while url.is_none() {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the server printed its address within two minutes");
        if line.contains("账号 operator") {
            operator_password = line.split_whitespace().last().map(str::to_string);
        }
        if let Some(rest) = line.split("已启动: ").nth(1) {
            url = rest.split_whitespace().next().map(str::to_string);
        }
    }
    let url = url.unwrap();
    let result = std::panic::catch_unwind(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let login = http.get(format!("{url}/login")).send().await.unwrap();
            assert_eq!(login.status(), 200);
            let cookie = login.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
            let page = login.text().await.unwrap();
            assert!(page.contains("演练模式"), "rehearsal clock by default");
            let token = cookie.split('=').nth(1).unwrap().to_string();
            let r = http
                .post(format!("{url}/login"))
                .header("cookie", &cookie)
                .form(&[
                    ("_csrf", token.as_str()),
                    ("username", "operator"),
                    ("password", operator_password.as_deref().unwrap()),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                303,
                "operator logs in with the printed password"
            );
            assert_eq!(r.headers()["location"], "/ops");
        });
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(dir.join("data/epi.db").exists(), "SQLite file under ./data");
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn serve_on_a_read_only_database_names_the_cause_and_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("epi.db");
    std::fs::write(&db, b"").unwrap();
    let serve = |url: String| {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_server"))
            .arg("serve")
            .env("EPI_DATABASE_URL", url)
            .env("EPI_LISTEN", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        // Not the pool's 30 s of retrying that ends in "pool timed out".
        assert!(started.elapsed() < std::time::Duration::from_secs(15));
        assert!(!err.contains("timed out"), "{err}");
        err
    };
    // Opened read-only.
    let err = serve(format!("sqlite://{}?mode=ro", db.display()));
    assert!(
        err.contains("数据库只读") && err.contains("epi.db"),
        "{err}"
    );
    // A file the server may not write (unless the tests run as root, whom
    // the permissions do not stop).
    let mut perms = std::fs::metadata(&db).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&db, perms).unwrap();
    if std::fs::OpenOptions::new().write(true).open(&db).is_err() {
        let err = serve(format!("sqlite://{}?mode=rwc", db.display()));
        assert!(
            err.contains("数据库只读") && err.contains("ermission denied"),
            "{err}"
        );
    }
    // A directory that cannot be made.
    let err = serve(format!(
        "sqlite://{}/epi.db?mode=rwc",
        db.join("below-a-file").display()
    ));
    assert!(err.contains("无法建立数据库所在目录"), "{err}");
}

/// `instances verify`: each instance's history chain checked on the
/// configured database; a row edited by SQL is named with its seq and the
/// command fails, as it does for an unknown id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_verify_names_a_tampered_history_row() {
    use engine::store::Store as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
    let store = server::db::open(&url).await.unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    // Every activity fails: each failure is recorded in the history.
    let mut acts = engine::runtime::Activities::new()
        .projection("warning", |_c: engine::runtime::ProjectionCall| async {
            Ok(())
        });
    for name in bundle.activities.keys() {
        acts = acts.register(name, |_c: engine::runtime::ActivityCall| async {
            Err(engine::runtime::ActivityError::Permanent("down".into()))
        });
    }
    let rt = engine::runtime::Runtime::new(
        store.clone(),
        std::sync::Arc::new(engine::clock::SystemClock),
        &bundle,
        acts,
        engine::runtime::Options::default(),
    )
    .await
    .unwrap();
    for id in ["w1", "w2"] {
        let input = serde_json::json!({
            "warning_id": id, "enterprise_id": "e1", "enterprise_name": "成都示例建设有限公司",
            "district": "jinjiang", "person_id": "510104********1234",
            "person_name": "张三", "reason": "核酸阳性",
        });
        assert!(rt.start("warning", id, input).await.unwrap());
    }
    rt.run_until_idle().await.unwrap();
    let rows = store.history("w1").await.unwrap().len();
    assert!(rows >= 2, "{rows}");

    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("database_url: \"{url}\"\n")).unwrap();
    let verify = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["instances", "verify"])
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("EPI_DATABASE_URL")
            .env_remove("RUST_LOG")
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, out) = verify(&["w1", "w2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("w1: ok ({rows} rows)")), "{out}");
    assert!(out.contains("w2: ok ("), "{out}");

    sqlx::query("UPDATE history SET payload = replace(payload, '张三', '李四') WHERE instance_id = 'w1' AND seq = 0")
        .execute(store.pool())
        .await
        .unwrap();
    let (code, out) = verify(&["--all"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("w1: broken at seq 0: row altered"), "{out}");
    assert!(out.contains("w2: ok ("), "{out}");
    assert!(out.contains("2 instance(s) checked, 1 broken"), "{out}");

    let (code, out) = verify(&["w2", "nobody"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nobody: not found"), "{out}");
}

/// `instances list | show | terminate | signal` on the configured
/// database: what the console's pages do, from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_list_show_and_repair_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
    {
        let store = server::db::open(&url).await.unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
        let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
        let mut acts = engine::runtime::Activities::new()
            .projection("warning", |_c: engine::runtime::ProjectionCall| async {
                Ok(())
            });
        for name in bundle.activities.keys() {
            acts = acts.register(name, |_c: engine::runtime::ActivityCall| async {
                Ok(serde_json::Value::Null)
            });
        }
        let rt = engine::runtime::Runtime::new(
            store.clone(),
            std::sync::Arc::new(engine::clock::SystemClock),
            &bundle,
            acts,
            engine::runtime::Options::default(),
        )
        .await
        .unwrap();
        for id in ["w1", "w2"] {
            let input = serde_json::json!({
                "warning_id": id, "enterprise_id": "e1", "enterprise_name": "成都示例建设有限公司",
                "district": "jinjiang", "person_id": "510104********1234",
                "person_name": "张三", "reason": "核酸阳性",
            });
            assert!(rt.start("warning", id, input).await.unwrap());
        }
        rt.run_until_idle().await.unwrap();
    }
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("database_url: \"{url}\"\n")).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_server"))
            .arg("instances")
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("EPI_DATABASE_URL")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string()
                + String::from_utf8_lossy(&out.stderr).as_ref(),
        )
    };
    let (code, out) = run(&["list", "--kind", "warning"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("w1\twarning v2\tawaiting_disposal"), "{out}");
    assert!(out.contains("2 instance(s)"), "{out}");
    let (code, out) = run(&["show", "w1"]);
    assert_eq!(code, 0, "{out}");
    for want in [
        "second_reminder",
        "调度活动 notify_enterprise",
        "w1/a",
        "状态变更",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // A repair needs a reason.
    let (code, _) = run(&["terminate", "w1"]);
    assert_eq!(code, 2);
    let (code, out) = run(&["terminate", "w1", "--reason", "重复预警"]);
    assert_eq!(code, 0, "{out}");
    let (_, out) = run(&["list", "--status", "terminated"]);
    assert!(out.contains("w1") && out.contains("1 instance(s)"), "{out}");
    let payload = r#"{"reported_to_community": true, "community": "书院街社区", "person_situation": "人员已离职"}"#;
    let (code, out) = run(&[
        "signal",
        "w2",
        "dispose",
        "--role",
        "enterprise",
        "--actor",
        "e1",
        "--payload",
        payload,
        "--reason",
        "企业电话报告",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("now under_review"), "{out}");
    let (_, out) = run(&["show", "w2"]);
    assert!(out.contains("运维操作：代为发送信号"), "{out}");
    let (code, out) = run(&["verify", "w1", "w2"]);
    assert_eq!(code, 0, "{out}");
}
