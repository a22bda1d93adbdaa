//! Restarts and reminders through the real definitions, activities and a
//! SQLite file, with a manual clock (never a wall-clock sleep):
//! - R4.1: the service is down over 10:00 and 15:00; a new runtime started
//!   at 16:00 on the same database runs exactly one catch-up comparison.
//! - R5.2, R8.5: a warning disposed within 6 hours gets exactly one SMS (the
//!   one at creation), across the same restart; one never disposed gets three.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::{Options, Runtime};
use engine::store::{InstanceFilter, Page, SqlStore, Store};
use server::activities::{registry, Services};
use server::adapters::health_sim::{SimRates, Simulator};
use server::adapters::sms::LogSms;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[path = "support/seed.rs"]
mod seed;
use seed::count;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A runtime on the database at `path`, as the service builds one on start-up.
async fn start(path: &Path, clock: &Arc<ManualClock>) -> (SqlStore, Runtime<SqlStore>) {
    let store = server::db::open(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let rates = SimRates {
        positive: 0.1,
        red: 0.05,
        yellow: 0.05,
        missing_nat: 0.05,
        unvaccinated: 0.1,
        unknown: 0.02,
    };
    let pool = store.pool().clone();
    let services = Arc::new(Services {
        store: store.clone(),
        pool: pool.clone(),
        reader: pool.clone(),
        clock: clock.clone() as Arc<dyn Clock>,
        health: Arc::new(Simulator::new(11, rates)),
        sms: Arc::new(LogSms::new(pool, clock.clone() as Arc<dyn Clock>)),
        rules: bundle.rules.clone(),
        rules_by_version: Default::default(),
    });
    let rt = Runtime::new(
        store.clone(),
        clock.clone() as Arc<dyn Clock>,
        &bundle,
        registry(services),
        Options::default(),
    )
    .await
    .unwrap();
    (store, rt)
}

async fn comparison_instances(store: &SqlStore) -> Vec<String> {
    let f = InstanceFilter {
        kind: Some("comparison".into()),
        ..Default::default()
    };
    let mut ids: Vec<String> = store
        .instances(&f, Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

/// SMS logged for one warning (its workflow's idempotency keys).
async fn sms_of(pool: &sqlx::AnyPool, warning: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM sms_log WHERE idempotency_key LIKE $1")
        .bind(format!("{warning}/%"))
        .fetch_one(pool)
        .await
        .unwrap()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn downtime_over_two_slots_catches_up_once_and_disposed_warnings_get_one_sms() {
    let dir = TempDir(std::env::temp_dir().join(format!("server-catchup-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = dir.0.join("app.db");
    let clock = Arc::new(ManualClock::new(at("2026-12-01T04:59:00+08:00")));

    // First life of the service: 04:59 to 09:00.
    let (store, rt) = start(&db, &clock).await;
    let pool = store.pool().clone();
    seed::seed(&pool, 40).await;
    rt.run_until_idle().await.unwrap();
    assert!(comparison_instances(&store).await.is_empty());
    clock.set(at("2026-12-01T05:00:00+08:00"));
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        comparison_instances(&store).await,
        ["comparison@2026-12-01T05:00+08:00"]
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_runs").await,
        1
    );
    let warnings: Vec<(String, String)> =
        sqlx::query_as("SELECT id, enterprise_id FROM warnings ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        warnings.len() >= 2,
        "the simulator's rates give anomalies: {warnings:?}"
    );
    for (w, _) in &warnings {
        assert_eq!(sms_of(&pool, w).await, 1, "{w}: the push at creation");
    }

    // 08:00, three hours in: the enterprise disposes of the first warning.
    clock.set(at("2026-12-01T08:00:00+08:00"));
    rt.run_until_idle().await.unwrap();
    let (disposed, enterprise) = warnings[0].clone();
    rt.signal(
        &disposed,
        "dispose",
        serde_json::json!({"reported_to_community": true, "community": "书院街社区", "person_situation": "居家隔离"}),
        engine::Actor {
            role: "enterprise".into(),
            id: enterprise,
            name: None,
        },
    )
    .await
    .unwrap();
    clock.set(at("2026-12-01T09:00:00+08:00"));
    rt.run_until_idle().await.unwrap();

    // Down from 09:00 to 16:00: 10:00 and 15:00 are missed.
    drop(rt);
    pool.close().await;
    drop(store);
    clock.set(at("2026-12-01T16:00:00+08:00"));

    // Second life: a new runtime on the same database.
    let (store, rt) = start(&db, &clock).await;
    let pool = store.pool().clone();
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        comparison_instances(&store).await,
        [
            "comparison@2026-12-01T05:00+08:00",
            "comparison@2026-12-01T15:00+08:00"
        ],
        "one catch-up run for the newest missed slot, not one per slot"
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_runs").await,
        2,
        "exactly one catch-up comparison run"
    );
    let as_of: i64 = sqlx::query_scalar("SELECT MAX(as_of) FROM comparison_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        as_of,
        at("2026-12-01T16:00:00+08:00").timestamp_millis(),
        "the catch-up run's numbers are those of the 24 h before it ran (R4.5)"
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM warnings").await,
        warnings.len() as i64,
        "the same anomalies open no second warning (R5.1)"
    );

    // Running on, and later in the day, starts nothing more.
    rt.run_until_idle().await.unwrap();
    clock.set(at("2026-12-01T23:00:00+08:00"));
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_runs").await,
        2
    );

    // The disposed warning got its one SMS; the others all three (R5.2),
    // the reminders due during the downtime sent once after it (R8.5).
    assert_eq!(sms_of(&pool, &disposed).await, 1, "disposed within 6 h");
    for (w, _) in &warnings[1..] {
        assert_eq!(sms_of(&pool, w).await, 3, "{w}: never disposed");
    }
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT COUNT(*) FROM notices WHERE title = '预警超时未处置' AND link = '/warnings/{disposed}'"
            )
        )
        .await,
        0,
        "a disposed warning is not overdue"
    );

    // The next morning the schedule goes on as usual.
    clock.set(at("2026-12-02T05:00:00+08:00"));
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_runs").await,
        3
    );
    assert_eq!(sms_of(&pool, &disposed).await, 1);
}
