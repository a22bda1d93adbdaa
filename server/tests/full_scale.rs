//! The 05:00 run at full scale on the engine's own path (issue 10): a run
//! that opens 10,000 warnings — far more than one rhai value may hold —
//! starts 10,000 warning workflows, each of which hands its first reminder
//! to the SMS gateway, and tells the district once. The data set is small
//! (10,000 staff, every one with a red code) so it runs in CI; the
//! benchmark `scheduled_run` takes the same path over a million persons.

use chrono::{DateTime, Utc};
use engine::clock::ManualClock;
use server::adapters::health_sim::SimRates;
use server::config::Config;
use server::system::{ClockChoice, Paths, System};
use std::sync::Arc;

#[path = "support/bulk.rs"]
mod bulk;
#[path = "support/seed.rs"]
mod seed;
use seed::count;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_opening_ten_thousand_warnings_starts_ten_thousand_workflows() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        database_url: format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
        ..Config::default()
    };
    config.health.sim_rates = SimRates {
        positive: 0.0,
        red: 1.0,
        yellow: 0.0,
        missing_nat: 0.0,
        unvaccinated: 0.0,
        unknown: 0.0,
    };
    let due: DateTime<Utc> = "2026-12-01T05:00:00+08:00".parse().unwrap();
    let clock = Arc::new(ManualClock::new(due - chrono::Duration::minutes(1)));
    let sys = System::open(
        &config,
        &Paths::repository(),
        ClockChoice::Adjustable(clock.clone()),
        engine::runtime::Options::default(),
    )
    .await
    .unwrap();
    let n = 10_000;
    bulk::seed_city(&sys.pool, n).await;
    sys.runtime.run_until_idle().await.unwrap();
    clock.set(due);
    sys.runtime.run_until_idle().await.unwrap();

    let pool = &sys.pool;
    let (state, label): (String, Option<String>) =
        sqlx::query_as("SELECT state, status_label FROM instances WHERE kind = 'comparison'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), label.as_deref()),
        ("done", Some("比对完成"))
    );
    assert_eq!(count(pool, "SELECT COUNT(*) FROM warnings").await, 10_000);
    assert_eq!(
        count(
            pool,
            "SELECT COUNT(*) FROM instances WHERE kind = 'warning' AND state = 'awaiting_disposal'"
        )
        .await,
        10_000,
        "every warning has its workflow"
    );
    assert_eq!(
        count(
            pool,
            "SELECT COUNT(*) FROM warnings w JOIN instances i ON i.id = w.id WHERE w.state = 'awaiting_disposal'"
        )
        .await,
        10_000,
        "each under the warning's own id"
    );
    assert_eq!(
        count(pool, "SELECT COUNT(DISTINCT idempotency_key) FROM sms_log").await,
        10_000,
        "one first reminder each"
    );
    assert_eq!(
        count(pool, "SELECT COUNT(*) FROM timers").await,
        30_000,
        "second and third reminder and the 8 h deadline, each"
    );
    let digest: Vec<String> =
        sqlx::query_scalar("SELECT body FROM notices WHERE recipient_kind = 'district'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(digest.len(), 1, "{digest:?}");
    assert!(digest[0].contains("10000"), "{}", digest[0]);
    assert!(server::warnings::count_mismatches(pool)
        .await
        .unwrap()
        .is_empty());
}
