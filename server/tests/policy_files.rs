//! Policy is data (issue 11, "one source of truth"): a copy of `workflows/`
//! and `rules/` is changed the way a policy officer would change it — the
//! disposal deadline from 8 h to 4 h, a reminder at 2 h, and a "no NAT in
//! 48 h" anomaly rule with its look-back window declared 48 h — and, with
//! no Rust change, the enterprise's list and the warning page show the 4 h
//! deadline, the SMS and the notices say 4小时, the 处理记录 names the 2 h
//! reminder and the deadline by their labels in the definition, and the
//! comparison asks the health commission for 48 h (`window_hours`) and
//! warns exactly the persons the new rule finds.

#[path = "support/web.rs"]
mod web;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use server::adapters::health_sim::{SimRates, Simulator};
use server::system::Paths;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use web::World;

const START: &str = "2026-12-01T04:59:00+08:00";
const NO_NAT: &str = "48小时内无核酸检测";
const EARLY: &str = "2小时未处置提醒";
const DEADLINE: &str = "超时未处置，已通知区（市）县";

fn copy_dir(from: &Path, to: &Path) {
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

/// Replace `from` by `to` in a file, which must contain it.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{}: no {from:?}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

/// The repository's definitions, changed as a policy officer would.
fn changed_definitions(dir: &Path) -> Paths {
    let repo = Paths::repository();
    let paths = Paths {
        workflows: dir.join("workflows"),
        rules: dir.join("rules"),
    };
    copy_dir(&repo.workflows, &paths.workflows);
    copy_dir(&repo.rules, &paths.rules);
    let warning = paths.workflows.join("warning.yaml");
    edit(
        &warning,
        "      disposal_deadline:\n        label: 超时未处置，已通知区（市）县\n        after: 8h",
        "      disposal_deadline:\n        label: 超时未处置，已通知区（市）县\n        after: 4h",
    );
    edit(
        &warning,
        "      second_reminder:\n",
        &format!(
            "      early_reminder:\n        label: {EARLY}\n        after: 2h\n        from: start\n        do:\n          \
             - activity: notify_enterprise\n            args: *reminder\n          \
             - set: {{ reminders_sent: \"${{vars.reminders_sent + 1}}\" }}\n      second_reminder:\n"
        ),
    );
    edit(
        &paths.workflows.join("comparison.yaml"),
        "nat_window: 24h",
        "nat_window: 48h",
    );
    edit(
        &paths.rules.join("anomaly.rhai"),
        "    reasons\n}",
        &format!("    if (person.nat_reports ?? []).len() == 0 {{\n        reasons.push(\"{NO_NAT}\");\n    }}\n    reasons\n}}"),
    );
    paths
}

/// The simulated health commission over loopback HTTP, noting the
/// `window_hours` of every request.
#[derive(Clone)]
struct Commission {
    sim: Simulator,
    windows: Arc<Mutex<Vec<u32>>>,
}

#[derive(serde::Deserialize)]
struct Query {
    as_of: DateTime<Utc>,
    window_hours: u32,
    id_numbers: Vec<String>,
}

async fn answer(State(c): State<Commission>, Json(q): Json<Query>) -> Json<serde_json::Value> {
    c.windows.lock().unwrap().push(q.window_hours);
    let results = c.sim.answer(q.as_of, q.window_hours, &q.id_numbers);
    Json(serde_json::json!({ "results": results }))
}

async fn commission() -> (Commission, String) {
    let c = Commission {
        sim: Simulator::new(
            11,
            SimRates {
                missing_nat: 0.2,
                unknown: 0.0,
                ..SimRates::default()
            },
        ),
        windows: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/health/query", axum::routing::post(answer))
        .with_state(c.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (c, url)
}

async fn world(database_url: &str, dir: &Path, url: &str) -> World {
    World::open_with(
        database_url,
        START,
        |config| {
            config.health.mode = server::config::HealthMode::Http;
            config.health.base_url = url.to_string();
            config.health.token = server::config::Secret::new("tok");
        },
        changed_definitions(dir),
    )
    .await
}

#[tokio::test]
async fn a_changed_deadline_reminder_and_rule_take_effect_without_rust_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (c, url) = commission().await;
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
    let w = world(&db, dir.path(), &url).await;
    policy_follows_the_files(w, c).await;
}

#[tokio::test]
async fn a_changed_deadline_reminder_and_rule_take_effect_without_rust_on_postgres() {
    let Some(db) = engine::testing::fresh_postgres("policy_files").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (c, url) = commission().await;
    let w = world(&db, dir.path(), &url).await;
    policy_follows_the_files(w, c).await;
}

async fn policy_follows_the_files(w: World, c: Commission) {
    let as_of: DateTime<Utc> = "2026-12-01T05:00:00+08:00".parse().unwrap();
    w.clock.set(as_of);
    w.settle().await;

    // The comparison asked for the longer window and warned exactly the
    // persons the new rule finds in it.
    let windows = c.windows.lock().unwrap().clone();
    assert!(!windows.is_empty(), "the health commission was asked");
    assert!(windows.iter().all(|h| *h == 48), "{windows:?}");
    let staff: Vec<(String, String)> =
        sqlx::query_as("SELECT id, id_number FROM staff WHERE deleted_at IS NULL")
            .fetch_all(&w.sys.pool)
            .await
            .unwrap();
    let expected: BTreeSet<String> = staff
        .iter()
        .filter(|(_, n)| {
            c.sim
                .record(n, as_of, 48)
                .is_some_and(|r| r.nat_reports.is_empty())
        })
        .map(|(id, _)| id.clone())
        .collect();
    let warned: BTreeSet<String> =
        sqlx::query_scalar("SELECT staff_id FROM warnings WHERE reason = $1")
            .bind(NO_NAT)
            .fetch_all(&w.sys.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(
        !expected.is_empty(),
        "the simulator leaves some without NAT"
    );
    assert_eq!(warned, expected);
    let result: String = sqlx::query_scalar("SELECT result FROM comparison_runs")
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        [
            &result["window_hours"],
            &result["count_window_hours"],
            &result["nat_window_hours"]
        ],
        [48, 24, 48].map(serde_json::Value::from).each_ref(),
        "the run records the windows it used"
    );

    // The enterprise's warning: list and page show the 4 h deadline.
    let warning: String = sqlx::query_scalar(
        "SELECT id FROM warnings WHERE enterprise_id = $1 AND reason = $2 ORDER BY id LIMIT 1",
    )
    .bind(server::demo::ENTERPRISE_ID)
    .bind(NO_NAT)
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let list = e.get("/warnings").await;
    list.assert_ok();
    assert!(
        list.contains("<td class=\"due\">2026-12-01 09:00</td>"),
        "due 4 h after 05:00: {}",
        list.body
    );
    assert!(!list.contains("2026-12-01 13:00"));
    let page_of = format!("/warnings/{}", urlencoding::encode(&warning));
    let page = e.get(&page_of).await;
    page.assert_ok();
    assert!(page.contains("<dt>当前期限</dt><dd>2026-12-01 09:00</dd>"));
    assert!(page.contains("待处置"), "the state's label");

    // The SMS and the notice say 4小时, never 8.
    let sms: Vec<String> = sqlx::query_scalar(
        "SELECT params FROM sms_log WHERE template = 'warning_reminder' AND idempotency_key LIKE $1",
    )
    .bind(format!("{warning}/%"))
    .fetch_all(&w.sys.pool)
    .await
    .unwrap();
    assert_eq!(sms.len(), 1, "the first reminder");
    assert!(sms[0].contains("请在预警产生4小时内"), "{}", sms[0]);
    let notices: Vec<String> =
        sqlx::query_scalar("SELECT body FROM notices WHERE recipient_kind = 'enterprise'")
            .fetch_all(&w.sys.pool)
            .await
            .unwrap();
    assert!(!notices.is_empty());
    assert!(notices.iter().all(|b| b.contains("请在预警产生4小时内")));
    assert!(notices.iter().all(|b| !b.contains("产生8小时")));

    // 2 h on: the new reminder (SMS and notice), named by its label.
    w.clock.set("2026-12-01T07:01:00+08:00".parse().unwrap());
    w.settle().await;
    // (Sessions end after 30 idle minutes.)
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let page = e.get(&page_of).await;
    assert!(page.contains(EARLY), "{}", page.body);
    assert!(!page.contains(DEADLINE));
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sms_log WHERE template = 'warning_reminder' AND idempotency_key LIKE $1",
        )
        .bind(format!("{warning}/%"))
        .fetch_one(&w.sys.pool)
        .await
        .unwrap(),
        2
    );

    // 4 h on: the deadline passed; the district is told in 4小时 words.
    w.clock.set("2026-12-01T09:01:00+08:00".parse().unwrap());
    w.settle().await;
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let page = e.get(&page_of).await;
    assert!(
        page.contains(EARLY) && page.contains(DEADLINE),
        "{}",
        page.body
    );
    assert!(page.contains("超时未处置"));
    assert!(!page.contains("<dt>当前期限</dt>"), "no deadline pending");
    let overdue: Vec<String> = sqlx::query_scalar(
        "SELECT body FROM notices WHERE recipient_kind = 'district' AND link = $1",
    )
    .bind(&page_of)
    .fetch_all(&w.sys.pool)
    .await
    .unwrap();
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert!(overdue[0].contains("未在4小时内处置"), "{}", overdue[0]);
    assert!(server::warnings::count_mismatches(&w.sys.pool)
        .await
        .unwrap()
        .is_empty());
}

/// A text naming a timer that does not exist, or a window without its
/// unit, stops the server at start-up with the place of the mistake (and
/// `server validate` says the same): never a wrong SMS at 05:00.
#[tokio::test]
async fn a_misspelled_timer_window_or_retention_is_refused_at_start() {
    for (file, from, to, want) in [
        (
            "warning.yaml",
            "${timers.disposal_deadline.after}内按要求",
            "${timers.disposal_dedline.after}内按要求",
            "`timers.disposal_dedline` 不是本流程的计时器",
        ),
        (
            "retention.yaml",
            "comparison_persons: { days: 30, keep_last_runs: 9 }",
            "comparison_persons: { days: 0, keep_last_runs: 9 }",
            "`comparison_persons` 的保留天数应至少为 1",
        ),
        (
            "comparison.yaml",
            "nat_window: 48h",
            "nat_window: 48",
            "`nat_window`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let paths = changed_definitions(dir.path());
        edit(&paths.workflows.join(file), from, to);
        let config = server::config::Config {
            database_url: format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display()),
            ..Default::default()
        };
        let clock = Arc::new(engine::clock::ManualClock::new(START.parse().unwrap()));
        let Err(e) = server::system::System::open(
            &config,
            &paths,
            server::system::ClockChoice::Adjustable(clock),
            engine::runtime::Options::default(),
        )
        .await
        else {
            panic!("{file}: {to} accepted");
        };
        let e = e.to_string();
        assert!(e.contains(want), "{e}");
        assert!(e.contains(file), "{e}");
    }
}
