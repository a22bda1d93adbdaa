//! The operator console's read side (issue 12): search instances by kind,
//! status and district; one warning's page lists its reminders and
//! deadlines by their names in the definition, its activity tasks with
//! idempotency keys and attempts, and links its definition's text; other
//! roles are refused.

#[path = "support/web.rs"]
mod web;

use axum::http::StatusCode;
use engine::clock::Clock;
use web::World;

const START: &str = "2026-12-01T04:59:00+08:00";

on_both_databases!("console":
    operators_search_instances_and_read_whole_histories,
    operators_repair_from_the_instance_page_with_a_reason
);

async fn operators_repair_from_the_instance_page_with_a_reason(w: World) {
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    let ids: Vec<(String, String)> =
        sqlx::query_as("SELECT id, enterprise_id FROM warnings ORDER BY id LIMIT 2")
            .fetch_all(&w.sys.pool)
            .await
            .unwrap();
    let [(first, _), (second, enterprise)] = [ids[0].clone(), ids[1].clone()];
    let page = |id: &str| format!("/ops/instances/{}", urlencoding::encode(id));
    let mut op = w.logged_in("operator", "/ops").await;
    let before = op.get(&page(&first)).await;
    assert!(before.contains("id=\"terminate\""));
    assert!(
        before.contains("完整（已校验"),
        "the history chain is checked on the page"
    );

    // A reason is required.
    let no_reason = op
        .post(&format!("{}/terminate", page(&first)), &[("reason", " ")])
        .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    op.post(
        &format!("{}/terminate", page(&first)),
        &[("reason", "重复预警，已与企业核实")],
    )
    .await
    .assert_redirect(&page(&first));
    let after = op.get(&page(&first)).await;
    assert!(after.contains("运维操作：终止实例"));
    assert!(after.contains("重复预警，已与企业核实"));
    assert!(
        !after.contains("id=\"terminate\""),
        "no repair on an ended instance"
    );
    assert_eq!(
        w.count(&format!(
            "SELECT COUNT(*) FROM warnings WHERE id = '{first}' AND closed_at IS NOT NULL"
        ))
        .await,
        1,
        "the projection shows it ended"
    );

    // On the enterprise's behalf: bad JSON and a wrong role are refused.
    let signal = format!("{}/signal", page(&second));
    let payload = r#"{"reported_to_community": true, "community": "书院街社区", "person_situation": "人员已离职"}"#;
    let bad_json = op
        .post(
            &signal,
            &[
                ("signal", "dispose"),
                ("role", "enterprise"),
                ("actor", &enterprise),
                ("payload", "{"),
                ("reason", "电话报告"),
            ],
        )
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    let wrong_role = op
        .post(
            &signal,
            &[
                ("signal", "dispose"),
                ("role", "district"),
                ("actor", "jinjiang"),
                ("payload", payload),
                ("reason", "电话报告"),
            ],
        )
        .await;
    assert_eq!(wrong_role.status, StatusCode::BAD_REQUEST);
    op.post(
        &signal,
        &[
            ("signal", "dispose"),
            ("role", "enterprise"),
            ("actor", &enterprise),
            ("payload", payload),
            ("reason", "企业系统故障，电话报告处置情况"),
        ],
    )
    .await
    .assert_redirect(&page(&second));
    let moved = op.get(&page(&second)).await;
    assert!(moved.contains("运维操作：代为发送信号"));
    assert!(moved.contains("under_review"));
    assert_eq!(
        w.count(&format!(
            "SELECT COUNT(*) FROM warnings WHERE id = '{second}' AND state = 'under_review'"
        ))
        .await,
        1
    );
}

async fn operators_search_instances_and_read_whole_histories(w: World) {
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    // Six hours on: the second reminder fired.
    w.clock.set("2026-12-01T11:01:00+08:00".parse().unwrap());
    w.settle().await;
    let warning: String = sqlx::query_scalar("SELECT id FROM warnings ORDER BY id LIMIT 1")
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    let warnings = w.count("SELECT COUNT(*) FROM warnings").await;

    let mut op = w.logged_in("operator", "/ops").await;
    let all = op.get("/ops/instances").await;
    all.assert_ok();
    assert!(all.contains("comparison@2026-12-01T05:00+08:00"));
    let list = op
        .get("/ops/instances?kind=warning&status=running&district=jinjiang")
        .await;
    list.assert_ok();
    assert_eq!(
        list.body.matches("class=\"instance-running\"").count() as i64,
        warnings.min(50)
    );
    assert!(!list.contains("comparison@"));
    // By definition version (workflows/warning.yaml's) and start day (Chengdu).
    let v1 = op
        .get("/ops/instances?kind=warning&version=2&from=2026-12-01&to=2026-12-01")
        .await;
    assert_eq!(
        v1.body.matches("class=\"instance-").count() as i64,
        warnings.min(50)
    );
    for none in [
        "/ops/instances?kind=warning&version=3",
        "/ops/instances?kind=warning&from=2026-12-02",
        "/ops/instances?kind=warning&to=2026-11-30",
    ] {
        assert!(
            op.get(none).await.contains("没有符合条件的流程实例"),
            "{none}"
        );
    }

    let page = op
        .get(&format!("/ops/instances/{}", urlencoding::encode(&warning)))
        .await;
    page.assert_ok();
    for want in [
        "设置定时器 second_reminder",
        "定时器到期 second_reminder",
        "third_reminder",
        "disposal_deadline",
        "调度活动 notify_enterprise",
        // The idempotency key `{warning}/a…` (auto-escaped `/`).
        &format!("{warning}&#x2f;a"),
        "状态变更",
        "awaiting_disposal",
        "reminders_sent",
        // The SMS hand-over: masked number, key and the gateway's answer.
        "活动完成 notify_enterprise",
        "accepted",
    ] {
        assert!(page.contains(want), "{want} missing from the instance page");
    }
    let hash: String = sqlx::query_scalar("SELECT definition_hash FROM instances WHERE id = $1")
        .bind(&warning)
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    let def = op.get(&format!("/ops/definitions/{hash}")).await;
    def.assert_ok();
    assert!(
        def.contains("warning.yaml"),
        "{}",
        &def.body[..def.body.len().min(3000)]
    );
    assert!(def.contains("second_reminder:"));
    assert_eq!(
        op.get("/ops/instances/no-such-instance").await.status,
        StatusCode::NOT_FOUND
    );

    // The enterprise's own page names the reminder that fired by the
    // label its definition gives it (it showed none before: timer ids are
    // `t3`, not names).
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let mine = e
        .get(&format!("/warnings/{}", urlencoding::encode(&warning)))
        .await;
    mine.assert_ok();
    assert!(
        mine.contains("第2次提醒"),
        "the fired reminder in the timeline"
    );
    assert!(!mine.contains("第3次提醒"), "not yet");

    let mut d = w.logged_in("jinjiang", "/district").await;
    assert_eq!(d.get("/ops/instances").await.status, StatusCode::FORBIDDEN);
    let mut city = w.logged_in("city", "/policy").await;
    assert_eq!(
        city.get(&format!("/ops/instances/{}", urlencoding::encode(&warning)))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

/// The health gateway is down: the run fails after its retries; /ops lists
/// it with its cause among the incidents' neighbours, and the slot can be
/// run again.
#[tokio::test]
async fn a_failed_comparison_is_listed_with_its_cause_and_its_slot_can_run_again() {
    let w = World::with_config(START, |c| {
        c.health.mode = server::config::HealthMode::Http;
        // Nothing listens on the discard port of loopback.
        c.health.base_url = "http://127.0.0.1:9".into();
        c.health.token = server::config::Secret::new("t");
    })
    .await;
    let mut op = w.logged_in("operator", "/ops").await;
    op.post("/ops/run-comparison", &[])
        .await
        .assert_redirect("/ops");
    w.settle().await;
    let during = op.get("/ops").await;
    during.assert_ok();
    assert!(
        during.contains("正在重试的活动"),
        "retrying now, with its error"
    );
    assert!(during.contains("run_comparison"));
    // The retries of workflows/activities.yaml run out within the hour.
    for _ in 0..60 {
        w.clock.advance(std::time::Duration::from_secs(60));
        w.settle().await;
    }
    // (The hour passed outside the rehearsal form: the session idled out.)
    let mut op = w.logged_in("operator", "/ops").await;
    let page = op.get("/ops").await;
    page.assert_ok();
    assert!(page.contains("比对失败"), "the failed run is listed");
    assert!(page.contains("class=\"run-error\""), "with its cause");
    assert!(page.contains("已用尽重试的活动"));
    // Operators are told in their inbox, with a link to the instance.
    let inbox = op.get("/notices").await;
    inbox.assert_ok();
    assert!(inbox.contains("故障：活动重试已用尽"), "{}", inbox.body);
    assert!(inbox.contains("活动 run_comparison"));
    let failed: String = sqlx::query_scalar(
        "SELECT id FROM instances WHERE kind = 'comparison' AND id LIKE 'comparison/manual/%'",
    )
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    op.post("/ops/rerun-comparison", &[("instance", &failed)])
        .await
        .assert_redirect("/ops");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM instances WHERE kind = 'comparison' AND id LIKE '%#rerun-%'")
            .await,
        1
    );
    let slot = |id: &str| {
        let pool = w.sys.pool.clone();
        let id = id.to_string();
        async move {
            let snapshot: String =
                sqlx::query_scalar("SELECT snapshot FROM instances WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            serde_json::from_str::<serde_json::Value>(&snapshot).unwrap()["input"]["slot"].clone()
        }
    };
    let rerun: String = sqlx::query_scalar("SELECT id FROM instances WHERE id LIKE '%#rerun-%'")
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    assert_eq!(slot(&failed).await, slot(&rerun).await, "the same slot");
    assert_eq!(
        op.post("/ops/rerun-comparison", &[("instance", "nothing")])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A rule that throws inside the comparison: the run fails with the rule's
/// position as its cause on /ops, nothing is opened, and operators are told.
#[tokio::test]
async fn a_rule_error_in_the_comparison_is_shown_with_its_position() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let defs = tempfile::tempdir().unwrap();
    copy_dir(&root.join("workflows"), &defs.path().join("workflows"));
    copy_dir(&root.join("rules"), &defs.path().join("rules"));
    // Without the declared samples, which would refuse the broken rule at start.
    std::fs::remove_dir_all(defs.path().join("rules/inputs")).unwrap();
    let anomaly = defs.path().join("rules/anomaly.rhai");
    let text = std::fs::read_to_string(&anomaly).unwrap();
    let text = text.replace(
        "fn evaluate(person) {\n",
        "fn evaluate(person) {\n    let broken = person.vaccination.doses / 0;\n",
    );
    let broken_line = 1 + text.lines().position(|l| l.contains("let broken")).unwrap();
    std::fs::write(&anomaly, text).unwrap();
    let w = World::with_paths(
        START,
        server::system::Paths {
            workflows: defs.path().join("workflows"),
            rules: defs.path().join("rules"),
        },
    )
    .await;
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    for _ in 0..30 {
        w.clock.advance(std::time::Duration::from_secs(60));
        w.settle().await;
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM warnings").await, 0);
    let mut op = w.logged_in("operator", "/ops").await;
    let page = op.get("/ops").await;
    page.assert_ok();
    assert!(page.contains("比对失败"), "{}", page.body);
    let error = page
        .body
        .split("class=\"run-error\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("anomaly"), "the rule named: {error}");
    assert!(
        error.contains("除数为零") && error.contains(&format!("第 {broken_line} 行")),
        "with its position: {error}"
    );
    assert!(op.get("/notices").await.contains("run_comparison"));
}

/// A rule that throws in the 12 h review timer: the warning fails and
/// waits (an incident on /ops); once the rule is fixed and the system runs
/// the fixed definitions, the operator's retry from the instance page
/// completes the step on them.
#[tokio::test]
async fn a_rule_error_in_a_timer_is_retried_to_completion_after_the_fix() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (broken, fixed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&broken, &fixed] {
        copy_dir(&root.join("workflows"), &d.path().join("workflows"));
        copy_dir(&root.join("rules"), &d.path().join("rules"));
    }
    // Without the declared samples, which would refuse the broken rule at start.
    std::fs::remove_dir_all(broken.path().join("rules/inputs")).unwrap();
    let escalation = broken.path().join("rules/escalation.rhai");
    let text = std::fs::read_to_string(&escalation).unwrap();
    std::fs::write(
        &escalation,
        text.replace(
            "fn review_overdue_target(district) {\n",
            "fn review_overdue_target(district) {\n    let broken = 1 / 0;\n",
        ),
    )
    .unwrap();
    // The fix is a new version (the rules are part of every workflow's
    // content; a changed content under the same number is refused).
    for f in ["warning.yaml", "comparison.yaml", "retention.yaml"] {
        let path = fixed.path().join("workflows").join(f);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, next_version(&text)).unwrap();
    }
    let paths = |d: &tempfile::TempDir| server::system::Paths {
        workflows: d.path().join("workflows"),
        rules: d.path().join("rules"),
    };
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", db.path().join("epi.db").display());
    let w = World::open_with(&url, START, |_| {}, paths(&broken)).await;
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    let (id, enterprise): (String, String) =
        sqlx::query_as("SELECT id, enterprise_id FROM warnings ORDER BY id LIMIT 1")
            .fetch_one(&w.sys.pool)
            .await
            .unwrap();
    let disposal = serde_json::json!({"reported_to_community": true, "community": "书院街社区", "person_situation": "人员已离职"});
    let actor = engine::Actor {
        role: "enterprise".into(),
        id: enterprise,
        name: None,
    };
    w.sys
        .runtime
        .signal(&id, "dispose", disposal, actor)
        .await
        .unwrap();
    w.settle().await;
    for _ in 0..13 {
        w.clock.advance(std::time::Duration::from_secs(3600));
        w.settle().await;
    }
    let status = |pool: sqlx::AnyPool, id: String| async move {
        sqlx::query_scalar::<_, String>("SELECT status FROM instances WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(status(w.sys.pool.clone(), id.clone()).await, "failed");
    let mut op = w.logged_in("operator", "/ops").await;
    assert!(op
        .get("/ops")
        .await
        .contains("失败待处理的流程实例 <strong>1</strong>"));
    let page = format!("/ops/instances/{}", urlencoding::encode(&id));
    let failed = op.get(&page).await;
    assert!(failed.contains("步骤失败（待运维处理）"));
    assert!(failed.contains("id=\"retry-step\""));

    // The same system restarted on the fixed rules (a new definition hash).
    let now = w.clock.now().to_rfc3339();
    drop(op);
    let w2 = World::open_with(&url, &now, |_| {}, paths(&fixed)).await;
    let mut op = w2.logged_in("operator", "/ops").await;
    op.post(&format!("{page}/retry"), &[("reason", "规则已修正：除零")])
        .await
        .assert_redirect(&page);
    assert_eq!(status(w2.sys.pool.clone(), id.clone()).await, "running");
    let after = op.get(&page).await;
    assert!(after.contains("运维操作：重试失败的步骤"));
    assert!(after.contains("规则已修正：除零"));
    w2.settle().await;
    let notices: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM notices WHERE recipient_kind = 'city' AND title = '预警审核超时上报'",
    )
    .fetch_one(&w2.sys.pool)
    .await
    .unwrap();
    assert_eq!(notices, 1, "the retried review timer told the city");
    let chain: String = sqlx::query_scalar("SELECT definition_hash FROM instances WHERE id = $1")
        .bind(&id)
        .fetch_one(&w2.sys.pool)
        .await
        .unwrap();
    assert_eq!(
        chain, w2.sys.bundle.workflows["warning"].hash,
        "the instance moved to the fixed definition"
    );
}

/// The definition with its `version:` one higher.
fn next_version(text: &str) -> String {
    let v: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("version: "))
        .expect("a version line")
        .trim()
        .parse()
        .unwrap();
    text.replacen(
        &format!("\nversion: {v}\n"),
        &format!("\nversion: {}\n", v + 1),
        1,
    )
}
