//! The application on Temporal (issue 13), end to end with the real
//! definitions, the real activities and the web's own calls: the demo
//! system is switched to `engine: temporal` (`System::on_temporal`), a
//! `server worker`'s setup (the system's activity registry on the latest
//! publication) runs in this test on a task queue of its own, and the
//! operator's "立即比对" opens warnings through Temporal: the comparison
//! writes its run, each anomaly's warning workflow starts as a keyed
//! child, the first reminder goes out by SMS and notice, and the warnings
//! projection (the worker's hook) fills the pages' table. The enterprise's
//! disposal then goes to Temporal through the same `warnings::dispose` the
//! form calls and moves the warning to review; a disposal with a missing
//! field is refused with the form's own field errors, as on the embedded
//! runtime, and the warning's 处理记录 is read from Temporal's history.
//! The operator's console then works on Temporal: the search finds the
//! warning in Temporal's visibility by enterprise and by state, its page
//! shows its steps and variables from the workflow, a signal sent on the
//! district's behalf names the operator, a termination ends it in Temporal
//! and in the warnings table, and a task retry is refused in words.
//!
//! Needs the dev server (`scripts/temporal.sh start`, `TEMPORAL_ADDRESS`);
//! skipped without it unless `EPI_TEMPORAL_TESTS=1` (set by `scripts/test`).
//! Built only with the `temporal` feature (`scripts/test` enables it).
#![cfg(feature = "temporal")]

#[path = "support/web.rs"]
mod web;

use std::time::{Duration, Instant};
use web::World;

fn temporal_address() -> Option<String> {
    match std::env::var("TEMPORAL_ADDRESS") {
        Ok(a) => Some(a),
        Err(_) if std::env::var("EPI_TEMPORAL_TESTS").as_deref() == Ok("1") => {
            panic!("EPI_TEMPORAL_TESTS=1 but TEMPORAL_ADDRESS is not set")
        }
        Err(_) => {
            eprintln!("TEMPORAL_ADDRESS not set: the application on Temporal skipped");
            None
        }
    }
}

/// Poll `count` until `done` holds (the dev server runs in real time);
/// at most 60 s.
async fn wait_for(w: &World, sql: &str, done: impl Fn(i64) -> bool) -> i64 {
    let start = Instant::now();
    loop {
        let n = w.count(sql).await;
        if done(n) {
            return n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{sql}: still {n} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_comparison_opens_warnings_on_temporal_and_the_disposal_goes_there() {
    let Some(address) = temporal_address() else {
        return;
    };
    let w = World::new("2026-12-01T09:00:00+08:00").await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Workflow ids come from the clock ("立即比对" at a minute): a
    // dev server kept between runs remembers the ids of earlier ones.
    w.clock
        .advance(Duration::from_millis((nanos % 3_600_000_000) as u64));
    // Warning ids are `{run number}-{n}`, numbered per database: start
    // this database's numbering past the earlier runs' too.
    sqlx::query(
        "INSERT INTO comparison_runs (id, as_of, started_at, status, persons, unknown, anomalies, new_warnings, number) \
         VALUES ('earlier', 0, 0, 'failed', 0, 0, 0, 0, $1)",
    )
    .bind((nanos % 1_000_000_000) as i64)
    .execute(&w.sys.pool)
    .await
    .unwrap();
    let config = server::config::TemporalConfig {
        address,
        task_queue: format!("app-{}-{nanos}", std::process::id()),
        ..Default::default()
    };
    let options = server::backend::temporal_options(&config);
    let engine = engine_temporal::TemporalEngine::connect(options.clone())
        .await
        .expect("the dev server answers");
    let sys = w.sys.clone().on_temporal(engine).await.unwrap();
    assert!(!sys.workflows.is_embedded());
    // What `server worker` runs.
    let setup = engine_temporal::WorkerSetup {
        programs: sys.runtime.current().1.into_values().collect(),
        activities: sys.activities.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = engine_temporal::run_worker(&options, setup, async {
        let _ = stopped.await;
    });
    let test = async {
        let run = sys.run_comparison_now().await.unwrap();
        // The run's numbers, written by the activity in the worker.
        wait_for(
            &w,
            &format!("SELECT COUNT(*) FROM comparison_runs WHERE id LIKE '{run}/%'"),
            |n| n == 1,
        )
        .await;
        let anomalies: i64 =
            sqlx::query_scalar("SELECT anomalies FROM comparison_runs WHERE id LIKE $1")
                .bind(format!("{run}/%"))
                .fetch_one(&w.sys.pool)
                .await
                .unwrap();
        assert!(anomalies > 0, "the demo's rates give anomalies");
        // Every anomaly's warning, projected by the worker's hook, waiting
        // for its disposal; each with its first reminder sent.
        let open = "SELECT COUNT(*) FROM warnings WHERE state = 'awaiting_disposal'";
        let warnings = wait_for(&w, open, |n| n > 0).await;
        let sms = wait_for(&w, "SELECT COUNT(*) FROM sms_log", |n| n >= warnings).await;
        assert!(sms >= warnings);
        let id: String = sqlx::query_scalar(
            "SELECT id FROM warnings WHERE state = 'awaiting_disposal' ORDER BY id LIMIT 1",
        )
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
        let enterprise: String =
            sqlx::query_scalar("SELECT enterprise_id FROM warnings WHERE id = $1")
                .bind(&id)
                .fetch_one(&w.sys.pool)
                .await
                .unwrap();
        // A disposal without its required fields: refused with the form's
        // messages, nothing sent.
        let refused = server::warnings::dispose(
            &sys.workflows,
            &sys.pool,
            &enterprise,
            "联络员",
            &id,
            serde_json::json!({ "remarks": "" }),
        )
        .await;
        assert!(
            matches!(refused, Err(server::warnings::Error::Invalid(ref e)) if e.iter().any(|f| f.field == "community")),
            "{refused:?}"
        );
        // The complete disposal moves the warning to the district's review (under_review).
        server::warnings::dispose(
            &sys.workflows,
            &sys.pool,
            &enterprise,
            "联络员",
            &id,
            serde_json::json!({
                "reported_to_community": true,
                "community": "某某社区",
                "person_situation": "居家隔离",
                "measures": ["通风换气"],
                "remarks": "",
            }),
        )
        .await
        .unwrap();
        wait_for(
            &w,
            &format!("SELECT COUNT(*) FROM warnings WHERE id = '{id}' AND state = 'under_review'"),
            |n| n == 1,
        )
        .await;
        // The 处理记录 of the warning page, read from Temporal's history:
        // opened, then the enterprise's disposal with its author.
        let (events, _) = server::warnings::timeline(&sys.workflows, &sys.disposal, &id)
            .await
            .unwrap();
        assert_eq!(events.first().map(|e| e.what.as_str()), Some("预警生成"));
        assert!(
            events.iter().any(|e| e.who.as_deref() == Some("联络员")
                && e.detail.iter().any(|(_, v)| v.contains("某某社区"))),
            "{events:?}"
        );
        operators_console_on_temporal(&w, &sys, &id, &enterprise).await;
        let _ = stop.send(());
    };
    let (r, ()) = tokio::join!(worker, test);
    r.unwrap();
}

/// GET `path` until the page contains `want` (Temporal's visibility
/// follows the workflows with a delay); at most 60 s.
async fn page_with(op: &mut web::Client, path: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let page = op.get(path).await;
        page.assert_ok();
        if page.contains(want) {
            return page.body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{path}: no `{want}` after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The operator's console on Temporal, on the warning `id` (under review).
async fn operators_console_on_temporal(
    w: &World,
    sys: &server::system::System,
    id: &str,
    enterprise: &str,
) {
    use axum::http::StatusCode;
    let mut op = web::Client::new(server::web::app(sys.clone(), Default::default()));
    op.login("operator", &w.passwords["operator"], "/ops").await;
    let link = urlencoding::encode(id).into_owned();
    let href = format!("/ops/instances/{link}");
    // The search, on Temporal's visibility: by enterprise, by state.
    let by_enterprise = format!("/ops/instances?enterprise={enterprise}");
    page_with(&mut op, &by_enterprise, &href).await;
    let by_state = "/ops/instances?kind=warning&state=under_review&status=running";
    let listed = page_with(&mut op, by_state, &href).await;
    assert!(
        listed.contains("Temporal 可见性"),
        "the page says where it searches"
    );
    let versions = op.get("/ops/instances?version=2").await;
    assert_eq!(versions.status, StatusCode::BAD_REQUEST);
    assert!(versions.contains("不能按定义版本查询"));

    // The instance: its steps, variables and pending timers from the workflow.
    let page = op.get(&href).await;
    page.assert_ok();
    for want in [
        "运行在 Temporal",
        "调度活动 notify_enterprise",
        "信号 dispose",
        "under_review",
        "reminders_sent",
        "review_deadline",
        "id=\"temporal-retries\"",
    ] {
        assert!(page.contains(want), "{want} missing from the instance page");
    }

    // On the district's behalf: the return, with the operator named.
    let district: String = sqlx::query_scalar("SELECT district FROM warnings WHERE id = $1")
        .bind(id)
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    op.post(
        &format!("{href}/signal"),
        &[
            ("signal", "return"),
            ("role", "district"),
            ("actor", &district),
            ("payload", r#"{"comment": "材料不全"}"#),
            ("reason", "区县系统故障，电话退回"),
        ],
    )
    .await
    .assert_redirect(&href);
    let returned = page_with(&mut op, &href, "信号 return").await;
    assert!(
        returned.contains("运维 operator 代为操作（原因：区县系统故障，电话退回）"),
        "the operator is recorded with the signal"
    );

    // An activity's retries are Temporal's: refused in words.
    let retry = op
        .post(
            &format!(
                "/ops/tasks/{}/retry",
                urlencoding::encode(&format!("{id}/a1"))
            ),
            &[("reason", "再试一次")],
        )
        .await;
    assert_eq!(retry.status, StatusCode::BAD_REQUEST);
    assert!(retry.contains("由 Temporal 按定义中的重试策略执行"));

    // Terminated in Temporal, with the operator and the reason.
    op.post(
        &format!("{href}/terminate"),
        &[("reason", "重复预警，已与企业核实")],
    )
    .await
    .assert_redirect(&href);
    let ended = op.get(&href).await;
    for want in [
        "已终止",
        "运维操作：终止实例",
        "operator；原因：重复预警，已与企业核实",
    ] {
        assert!(ended.contains(want), "{want} missing after the termination");
    }
    assert!(
        !ended.contains("id=\"terminate\""),
        "no repair on an ended instance"
    );
    assert_eq!(
        w.count(&format!(
            "SELECT COUNT(*) FROM warnings WHERE id = '{id}' AND closed_at IS NOT NULL"
        ))
        .await,
        1,
        "the projection shows it ended"
    );
    let again = op
        .post(&format!("{href}/terminate"), &[("reason", "再终止一次")])
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    page_with(&mut op, "/ops/instances?status=terminated", &href).await;
}
