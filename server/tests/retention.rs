//! Personal data kept only as long as `workflows/retention.yaml` says
//! (issue 15), on SQLite and PostgreSQL:
//!
//! - the operator moves the rehearsal clock 40 days on /ops and the nightly
//!   purge runs as scheduled: it removes exactly what is past its keeping
//!   period (old per-person run data, closed warnings with their workflow
//!   histories, old notices, SMS records, login records, expired sessions
//!   and audit rows) and keeps open warnings with their histories, a closed
//!   warning that still blocks a new one on the same evidence, and the
//!   per-person data of the last runs kept for back-tests; the run's output
//!   and the metrics count what went;
//! - a purge killed part-way (the runtime dropped mid-batch, after the
//!   batch committed and before the workflow heard of it) resumes on a
//!   system reopened on the same database and ends with every row counted
//!   once: nothing lost, nothing counted twice.

#[path = "support/web.rs"]
mod web;

use chrono::{DateTime, Duration, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::Runtime;
use engine::store::{InstanceFilter, Page, SqlStore, Store};
use serde_json::{json, Value};
use server::system::{ClockChoice, Paths, System};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use web::World;

const START: &str = "2026-12-01T08:00:00+08:00";

/// A SQLite file in a temporary directory, or (when DATABASE_URL_PG is set)
/// a fresh PostgreSQL database.
async fn database(pg: Option<&str>) -> Option<(String, Option<tempfile::TempDir>)> {
    match pg {
        None => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
            Some((url, Some(dir)))
        }
        Some(name) => engine::testing::fresh_postgres(name)
            .await
            .map(|u| (u, None)),
    }
}

#[tokio::test]
async fn the_rehearsal_purge_removes_exactly_what_is_past_retention_on_sqlite() {
    let (url, _dir) = database(None).await.unwrap();
    rehearsal_purge(&url).await;
}

#[tokio::test]
async fn the_rehearsal_purge_removes_exactly_what_is_past_retention_on_postgres() {
    if let Some((url, _)) = database(Some("retention_rehearsal")).await {
        rehearsal_purge(&url).await;
    }
}

#[tokio::test]
async fn an_interrupted_purge_resumes_without_loss_or_double_counting_on_sqlite() {
    let (url, _dir) = database(None).await.unwrap();
    interrupted_purge(&url).await;
}

#[tokio::test]
async fn an_interrupted_purge_resumes_without_loss_or_double_counting_on_postgres() {
    if let Some((url, _)) = database(Some("retention_interrupted")).await {
        interrupted_purge(&url).await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The repository's definitions with a policy officer's edits: closed
/// warnings kept 30 days instead of 180, and (so the rehearsal is exact)
/// only the retention schedule — comparisons are started by hand.
fn edited_policy(dir: &Path) -> Paths {
    let repo = Paths::repository();
    let paths = Paths {
        workflows: dir.join("workflows"),
        rules: dir.join("rules"),
    };
    copy_dir(&repo.workflows, &paths.workflows);
    copy_dir(&repo.rules, &paths.rules);
    let policy = paths.workflows.join("retention.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(text.contains("closed_warnings: { days: 180 }"));
    std::fs::write(
        &policy,
        text.replace(
            "closed_warnings: { days: 180 }",
            "closed_warnings: { days: 30 }",
        ),
    )
    .unwrap();
    let schedules = std::fs::read_to_string(paths.workflows.join("schedules.yaml")).unwrap();
    let retention = &schedules[schedules.find("  - name: retention").unwrap()..];
    std::fs::write(
        paths.workflows.join("schedules.yaml"),
        format!("schedules:\n{retention}"),
    )
    .unwrap();
    paths
}

async fn exec(pool: &sqlx::AnyPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// `n` comparison runs numbered from 1, as of `as_of`, each with
/// `addresses` rows of per-person data (written in bulk, as the benchmark does).
async fn old_runs(pool: &sqlx::AnyPool, n: i64, addresses: i64, as_of: i64) {
    for k in 1..=n {
        exec(pool, &format!(
            "INSERT INTO comparison_runs (id, slot, as_of, started_at, finished_at, status, persons, unknown, anomalies, new_warnings, number) \
             VALUES ('old-run-{k}', NULL, {as_of}, {as_of}, {as_of}, 'done', {addresses}, 0, 0, 0, {k})"
        )).await;
        for a in 0..addresses {
            exec(
                pool,
                &format!(
                    "INSERT INTO comparison_persons (run_id, address_id, persons, data) \
                 VALUES ('old-run-{k}', 'addr-{a}', 1, '[[\"s\",\"510104196001010011\",null,[]]]')"
                ),
            )
            .await;
        }
    }
}

/// Rows of every other kind, `age_days` old.
async fn old_rows(pool: &sqlx::AnyPool, tag: &str, n: usize, now: DateTime<Utc>, age_days: i64) {
    let at = (now - Duration::days(age_days)).timestamp_millis();
    for i in 0..n {
        exec(
            pool,
            &format!(
            "INSERT INTO notices (id, recipient_kind, recipient_id, title, body, link, created_at) \
             VALUES ('old-{tag}-{i}', 'city', 'city', '旧通知', '旧', NULL, {at})"
        ),
        )
        .await;
    }
    let _ = tag;
}

async fn close_warnings(sys: &System, keep_open: usize) -> Vec<String> {
    let open: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, enterprise_id, district FROM warnings WHERE closed_at IS NULL ORDER BY id",
    )
    .fetch_all(&sys.pool)
    .await
    .unwrap();
    assert!(open.len() > keep_open + 2, "too few warnings: {open:?}");
    let actor = |role: &str, id: &str| engine::Actor {
        role: role.into(),
        id: id.into(),
        name: None,
    };
    let mut closed = Vec::new();
    for (id, enterprise, district) in &open[keep_open..] {
        let disposal = json!({"reported_to_community": true, "community": "书院街社区", "person_situation": "人员已离职"});
        sys.runtime
            .signal(id, "dispose", disposal, actor("enterprise", enterprise))
            .await
            .unwrap();
        sys.runtime
            .signal(id, "approve", Value::Null, actor("district", district))
            .await
            .unwrap();
        closed.push(id.clone());
    }
    sys.runtime.run_until_idle().await.unwrap();
    assert_eq!(
        count(
            &sys.pool,
            "SELECT COUNT(*) FROM warnings WHERE closed_at IS NOT NULL"
        )
        .await,
        closed.len() as i64
    );
    closed
}

async fn retention_instances(store: &SqlStore) -> Vec<engine::store::InstanceRow> {
    store
        .instances(
            &InstanceFilter {
                kind: Some("retention".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap()
}

fn totals(row: &engine::store::InstanceRow) -> BTreeMap<String, i64> {
    let state = engine::inspect::state_of(row).unwrap();
    serde_json::from_value((*state.vars).get("totals").cloned().unwrap_or(Value::Null))
        .unwrap_or_default()
}

async fn rehearsal_purge(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let paths = edited_policy(dir.path());
    let w = World::open_with(url, START, |_| {}, paths).await;
    let pool = w.sys.pool.clone();
    let start: DateTime<Utc> = START.parse().unwrap();
    // 12 runs two months old, written in bulk, three addresses each; then
    // today's real run (number 13).
    old_runs(
        &pool,
        12,
        3,
        (start - Duration::days(60)).timestamp_millis(),
    )
    .await;
    w.sys.run_comparison_now().await.unwrap();
    w.settle().await;
    // Keep one warning open; close the rest; all but one of the closed no
    // longer block (a later run found the person without that evidence).
    let closed = close_warnings(&w.sys, 1).await;
    let open: String =
        sqlx::query_scalar("SELECT id FROM warnings WHERE closed_at IS NULL ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let blocking = closed[0].clone();
    let purged: Vec<String> = closed[1..].to_vec();
    exec(
        &pool,
        &format!("UPDATE warnings SET evidence_gone = 1 WHERE closed_at IS NOT NULL AND id <> '{blocking}'"),
    )
    .await;
    // Rows of the other kinds past their keeping periods, and recent ones.
    old_rows(&pool, "n", 5, start, 200).await;
    let ms = |days: i64| (start - Duration::days(days)).timestamp_millis();
    for i in 0..3 {
        exec(&pool, &format!("INSERT INTO sms_log (idempotency_key, phone, template, params, created_at) VALUES ('old-sms-{i}', '13800000001', 'warning_reminder', '{{}}', {})", ms(100))).await;
    }
    for i in 0..2 {
        exec(
            &pool,
            &format!(
                "INSERT INTO access_audit (id, at, username, role, action, target, client) \
             VALUES ('old-audit-{i}', {}, 'jinjiang', 'district', 'view_warning', 'x', '10.0.0.1')",
                ms(400)
            ),
        )
        .await;
    }
    let before = |sql: &'static str| {
        let pool = pool.clone();
        async move { count(&pool, sql).await }
    };
    let notices = before("SELECT COUNT(*) FROM notices").await;
    let runs_before = before("SELECT COUNT(*) FROM comparison_runs").await;
    let persons_kept = before(
        "SELECT COUNT(*) FROM comparison_persons p JOIN comparison_runs r ON r.id = p.run_id WHERE r.number > 4",
    )
    .await;
    let real_run_rows = before(
        "SELECT COUNT(*) FROM comparison_persons p JOIN comparison_runs r ON r.id = p.run_id WHERE r.number = 13",
    )
    .await;
    assert!(real_run_rows > 0);
    assert_eq!(runs_before, 13);

    // The operator moves the rehearsal clock 40 days: the nightly purge of
    // the latest 02:30 runs as scheduled.
    let mut op = w.logged_in("operator", "/ops").await;
    let page = op.get("/ops").await;
    assert!(page.contains("40天"));
    // Old throttle events (a login prunes old ones at random, 1 in 64, so
    // after it).
    for i in 0..4 {
        exec(
            &pool,
            &format!(
                "INSERT INTO throttle_events (key, at) VALUES ('login:x{i}', {})",
                ms(60)
            ),
        )
        .await;
    }
    // Sessions that ended long ago (a login prunes older ones, so after it).
    for i in 0..2 {
        exec(
            &pool,
            &format!(
            "INSERT INTO sessions (token_hash, username, csrf, created_at, last_seen, expires_at) \
             VALUES ('old-session-{i}', 'operator', 'x', {}, {}, {})", ms(11), ms(11), ms(10)),
        )
        .await;
    }
    // Login records as they are now (the operator's login is one of them).
    let slot: DateTime<Utc> = "2027-01-10T02:30:00+08:00".parse().unwrap();
    let cut = |days: i64| (slot - Duration::days(days)).timestamp_millis();
    let login_records = count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM login_addresses WHERE last_success < {}",
            cut(30)
        ),
    )
    .await
        + count(
            &pool,
            &format!(
                "SELECT COUNT(*) FROM throttle_events WHERE at < {}",
                cut(30)
            ),
        )
        .await
        + count(
            &pool,
            &format!(
                "SELECT COUNT(*) FROM sms_codes WHERE expires_at < {}",
                cut(30)
            ),
        )
        .await;
    assert!(login_records >= 5, "{login_records}");
    op.post("/ops/clock", &[("minutes", "57600")])
        .await
        .assert_redirect("/ops");
    w.settle().await;

    let runs = retention_instances(&w.sys.store).await;
    assert_eq!(
        runs.len(),
        1,
        "one run for the missed slots (catch-up once)"
    );
    let run = &runs[0];
    assert_eq!(run.status, "completed", "{run:?}");
    assert_eq!(run.state, "done");
    let state = engine::inspect::state_of(run).unwrap();
    assert_eq!(
        state.input["slot"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(slot)
    );
    let want: BTreeMap<String, i64> = [
        ("comparison_persons", 12),
        ("closed_warnings", purged.len() as i64),
        ("notices", 5),
        ("sms_log", 3),
        ("login_records", login_records),
        ("expired_sessions", 2),
        ("access_audit", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(totals(run), want);
    // The space was returned (SQLite: incremental vacuum of a new file;
    // PostgreSQL: plain VACUUM outside a transaction).
    let reclaim = w
        .sys
        .store
        .tasks_of(&run.id)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "reclaim_storage")
        .unwrap();
    assert_eq!(
        reclaim.status,
        engine::store::TaskStatus::Succeeded,
        "{reclaim:?}"
    );
    let how: Value = serde_json::from_str(reclaim.result.as_deref().unwrap()).unwrap();
    assert!(
        matches!(how["vacuum"].as_str(), Some("incremental" | "postgres")),
        "{how}"
    );
    assert_eq!(state.output, serde_json::to_value(&want).unwrap());

    // Per-person data: the four oldest runs' is gone; the last nine runs'
    // is kept for back-tests although older than 30 days; every run's
    // numbers are kept (400 days).
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_persons p JOIN comparison_runs r ON r.id = p.run_id WHERE r.number <= 4").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_persons").await,
        persons_kept
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_runs").await,
        13
    );
    // Warnings: the closed ones no longer blocking are gone with their
    // workflows and histories; the open one and the blocking one are kept,
    // their histories whole.
    for id in &purged {
        assert_eq!(
            count(
                &pool,
                &format!("SELECT COUNT(*) FROM warnings WHERE id = '{id}'")
            )
            .await,
            0
        );
        assert!(w.sys.store.instance(id).await.unwrap().is_none());
        assert!(w.sys.store.history(id).await.unwrap().is_empty());
    }
    for id in [&open, &blocking] {
        assert_eq!(
            count(
                &pool,
                &format!("SELECT COUNT(*) FROM warnings WHERE id = '{id}'")
            )
            .await,
            1
        );
        assert!(w.sys.store.instance(id).await.unwrap().is_some());
        assert!(w.sys.store.verify_history(id).await.unwrap().is_ok());
    }
    assert!(server::warnings::count_mismatches(&pool)
        .await
        .unwrap()
        .is_empty());
    // Other kinds: exactly the old rows went (notices written before the
    // move are all there but the five old ones).
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT COUNT(*) FROM notices WHERE created_at <= {}",
                start.timestamp_millis()
            )
        )
        .await,
        notices - 5
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM notices WHERE id LIKE 'old-%'").await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM sms_log WHERE idempotency_key LIKE 'old-%'"
        )
        .await,
        0
    );
    assert!(
        count(&pool, "SELECT COUNT(*) FROM sms_log").await > 0,
        "this month's SMS are kept"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM sessions WHERE token_hash LIKE 'old-%'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM access_audit WHERE id LIKE 'old-%'"
        )
        .await,
        0
    );
    assert!(
        count(
            &pool,
            "SELECT COUNT(*) FROM access_audit WHERE action = 'ops_advance_clock'"
        )
        .await
            == 1,
        "the clock move itself is audited and kept"
    );
    // The operator is still logged in (sessions moved with the clock).
    op.get("/ops").await.assert_ok();
    // Counted in the metrics too.
    let metrics = w.sys.metrics.encode();
    for (kind, n) in &want {
        assert!(
            metrics.contains(&format!("retention_purged_total{{kind=\"{kind}\"}} {n}")),
            "{kind} {n}: {metrics}"
        );
    }
    // A second run finds nothing more to remove.
    w.sys
        .runtime
        .start(
            "retention",
            "retention/again",
            json!({ "slot": slot.to_rfc3339() }),
        )
        .await
        .unwrap();
    w.settle().await;
    let again = w
        .sys
        .store
        .instance("retention/again")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.status, "completed");
    assert!(totals(&again).is_empty(), "{:?}", totals(&again));
}

/// The system on `url` at `clock`, as `serve` builds it.
async fn open(url: &str, clock: Arc<ManualClock>) -> System {
    let mut config = server::config::Config {
        database_url: url.into(),
        ..Default::default()
    };
    config.health.sim_rates.positive = 0.05;
    config.health.sim_rates.red = 0.03;
    config.health.sim_rates.yellow = 0.03;
    System::open(
        &config,
        &Paths::repository(),
        ClockChoice::Adjustable(clock),
        engine::runtime::Options::default(),
    )
    .await
    .unwrap()
}

async fn interrupted_purge(url: &str) {
    let start: DateTime<Utc> = START.parse().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let sys = open(url, clock.clone()).await;
    let pool = sys.pool.clone();
    server::demo::seed(&pool, &sys.districts, clock.now().timestamp_millis())
        .await
        .unwrap();
    sys.runtime.run_until_idle().await.unwrap();
    sys.run_comparison_now().await.unwrap();
    sys.runtime.run_until_idle().await.unwrap();
    let closed = close_warnings(&sys, 0).await;
    exec(
        &pool,
        "UPDATE warnings SET evidence_gone = 1 WHERE closed_at IS NOT NULL",
    )
    .await;
    // Several batches of 500: 2,300 old notices, then the warnings.
    let mut tx = pool.begin().await.unwrap();
    let at = (start - Duration::days(200)).timestamp_millis();
    let rows = (0..2300)
        .map(|i| {
            use engine::store::sql::Arg;
            vec![
                Arg::T(Some(format!("old-{i:05}"))),
                Arg::T(Some("city".into())),
                Arg::T(Some("city".into())),
                Arg::T(Some("旧通知".into())),
                Arg::T(Some("旧".into())),
                Arg::I(Some(at)),
            ]
        })
        .collect();
    engine::store::sql::insert_many(
        &mut tx,
        "notices",
        "id, recipient_kind, recipient_id, title, body, created_at",
        rows,
        "",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // A purge as of 200 days on (the clock does not move: no schedule
    // fires), so closed warnings (180 days) go too.
    let slot = (start + Duration::days(200)).to_rfc3339();
    // Every notice is past 180 days by then (today's too).
    let notices = count(&pool, "SELECT COUNT(*) FROM notices").await;
    assert!(notices > 2300);

    // A runtime whose fourth batch commits and is then killed before the
    // workflow hears of it (as kill -9 would).
    let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
    let crash = Arc::new(Mutex::new((0usize, Some(crash_tx))));
    let services = Arc::new(server::activities::Services {
        store: sys.store.clone(),
        pool: pool.clone(),
        reader: sys.reader.clone(),
        clock: clock.clone() as Arc<dyn Clock>,
        health: Arc::new(server::adapters::health_sim::Simulator::new(
            2022,
            Default::default(),
        )),
        sms: sys.sms.clone(),
        rules: sys.bundle.rules.clone(),
        rules_by_version: Default::default(),
    });
    let activities = server::activities::registry(services);
    let inner = activities.get("purge_personal_data").cloned().unwrap();
    let activities = activities.register(
        "purge_personal_data",
        move |call: engine::runtime::ActivityCall| {
            let (inner, crash) = (inner.clone(), crash.clone());
            async move {
                let r = inner.call(call).await;
                let kill = {
                    let mut c = crash.lock().unwrap();
                    c.0 += 1;
                    if c.0 == 4 {
                        c.1.take()
                    } else {
                        None
                    }
                };
                if let Some(k) = kill {
                    let _ = k.send(());
                    futures::future::pending::<()>().await;
                }
                r
            }
        },
    );
    let doomed = Runtime::new(
        sys.store.clone(),
        clock.clone() as Arc<dyn Clock>,
        &sys.bundle,
        activities,
        engine::runtime::Options::default(),
    )
    .await
    .unwrap();
    doomed
        .start(
            "retention",
            "retention/interrupted",
            json!({ "slot": slot }),
        )
        .await
        .unwrap();
    tokio::select! {
        r = doomed.run_until_idle() => panic!("the purge ended before the crash: {r:?}"),
        _ = crash_rx => {}
    }
    drop(doomed);
    let batches = count(
        &pool,
        "SELECT COUNT(*) FROM retention_batches WHERE result IS NOT NULL",
    )
    .await;
    assert_eq!(batches, 4, "four batches committed before the crash");
    // One batch of closed warnings, then three of notices (oldest first).
    let left = count(&pool, "SELECT COUNT(*) FROM notices WHERE id LIKE 'old-%'").await;
    assert_eq!(left, 2300 - 3 * 500);
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM warnings WHERE closed_at IS NOT NULL"
        )
        .await,
        0
    );
    let row = sys
        .store
        .instance("retention/interrupted")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "running");
    assert_eq!(
        totals(&row),
        BTreeMap::from([
            ("closed_warnings".to_string(), closed.len() as i64),
            ("notices".to_string(), 1000)
        ]),
        "the workflow heard of three batches"
    );
    pool.close().await;
    drop(sys);

    // Restart on the same database: the dead worker's lease is taken back,
    // the fourth batch is answered from its record, the rest purged.
    let sys = open(url, clock.clone()).await;
    let pool = sys.pool.clone();
    sys.runtime.take_back_leases().await.unwrap();
    sys.runtime.run_until_idle().await.unwrap();
    let row = sys
        .store
        .instance("retention/interrupted")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "completed", "{row:?}");
    let got = totals(&row);
    assert_eq!(got.get("notices").copied(), Some(notices), "{got:?}");
    assert_eq!(
        got.get("closed_warnings").copied(),
        Some(closed.len() as i64),
        "{got:?}"
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM notices").await, 0);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM sms_log").await, 0);
    // The comparison, all its warnings closed and purged, went too.
    assert_eq!(got.get("finished_workflows").copied(), Some(1), "{got:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM warnings WHERE closed_at IS NOT NULL"
        )
        .await,
        0
    );
    for id in &closed {
        assert!(sys.store.instance(id).await.unwrap().is_none());
    }
    // The new process counted only what it removed itself: the replayed
    // batch is not counted again.
    let metrics = sys.metrics.encode();
    assert!(
        metrics.contains(&format!(
            "retention_purged_total{{kind=\"notices\"}} {}",
            notices - 1500
        )),
        "{metrics}"
    );
}
