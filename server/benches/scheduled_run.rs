//! The 05:00 run at full scale, on the path production takes: the schedule
//! starts `workflows/comparison.yaml` in the durable runtime, its
//! `run_comparison` activity asks the health-commission simulator over
//! loopback HTTP (the real client) and writes records, per-person data and
//! warnings, `warnings_to_open` pages the new warnings back, each page
//! starts one `warning.yaml` workflow per warning, and each of those hands
//! its first reminder to the SMS gateway (the embedded log gateway) and
//! projects itself; then the district digest. Measured from the schedule's
//! due time until every warning workflow has started and its first SMS is
//! handed over, and until the runtime is idle.
//!
//!   cargo bench -p server --bench scheduled_run -- [N] [--pg]
//!
//! N persons (default 1,000,000; ~0.6 % of them anomalous with the
//! simulator's default rates: about 6,000 warnings). `--pg` runs on the
//! PostgreSQL of DATABASE_URL_PG (`eval "$(scripts/pg.sh start)"`) instead
//! of a SQLite file. Target (issue 10): under 10 s on SQLite.

use chrono::{DateTime, Utc};
use engine::clock::ManualClock;
use server::config::{Config, HealthMode, Secret};
use server::system::{ClockChoice, Paths, System};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/bulk.rs"]
mod bulk;
mod support;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter("server::comparison=info,engine=warn")
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .init();
    let pg = std::env::args().any(|a| a == "--pg");
    let n = support::size_arg(1_000_000);
    let (dir, sqlite_url) = support::scratch("epi-bench-run");
    let database_url = if pg {
        engine::testing::fresh_postgres("bench_scheduled_run")
            .await
            .expect("--pg needs DATABASE_URL_PG (eval \"$(scripts/pg.sh start)\")")
    } else {
        sqlite_url
    };

    // The health commission: the simulator over loopback HTTP.
    let url = support::serve_simulator().await;
    let mut config = Config {
        database_url,
        ..Config::default()
    };
    config.health.mode = HealthMode::Http;
    config.health.base_url = url;
    config.health.token = Secret::new("bench");

    let due: DateTime<Utc> = "2026-12-01T05:00:00+08:00".parse().unwrap();
    let clock = Arc::new(ManualClock::new(due - chrono::Duration::seconds(30)));
    let sys = System::open(
        &config,
        &Paths::repository(),
        ClockChoice::Adjustable(clock.clone()),
        engine::runtime::Options::default(),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let city = bulk::seed_city(&sys.pool, n).await;
    println!(
        "{}: {n} persons in {} addresses of {} enterprises (seeded in {:.1} s)",
        if pg { "PostgreSQL" } else { "SQLite file" },
        city.addresses,
        city.enterprises,
        t.elapsed().as_secs_f64()
    );
    // 04:59:30: the schedule notes its first start; nothing is due.
    sys.runtime.run_until_idle().await.unwrap();

    // Watch from the side, as an operator would: when did every warning
    // have its workflow and its first SMS?
    clock.set(due);
    let started = Instant::now();
    let watch = {
        let reader = sys.reader.clone();
        tokio::spawn(async move {
            let (mut written, mut all_started, mut all_sms) = (None, None, None);
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let warnings = count(&reader, "SELECT COUNT(*) FROM warnings").await;
                if warnings == 0 {
                    continue;
                }
                written.get_or_insert_with(|| started.elapsed());
                let workflows = count(
                    &reader,
                    "SELECT COUNT(*) FROM instances WHERE kind = 'warning'",
                )
                .await;
                let sms = count(&reader, "SELECT COUNT(*) FROM sms_log").await;
                if all_started.is_none() && workflows >= warnings {
                    all_started = Some(started.elapsed());
                }
                if all_sms.is_none() && sms >= warnings {
                    all_sms = Some(started.elapsed());
                }
                if let (Some(w), Some(a), Some(b)) = (written, all_started, all_sms) {
                    return (w, a, b);
                }
            }
        })
    };
    sys.runtime.run_until_idle().await.unwrap();
    let idle = started.elapsed();
    let (written, all_started, all_sms) = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("every warning started and texted by the time the runtime is idle")
        .unwrap();

    let pool = &sys.pool;
    let warnings = count(pool, "SELECT COUNT(*) FROM warnings").await;
    let workflows = count(
        pool,
        "SELECT COUNT(*) FROM instances WHERE kind = 'warning'",
    )
    .await;
    let sms = count(pool, "SELECT COUNT(*) FROM sms_log").await;
    let run: (String, Option<String>) =
        sqlx::query_as("SELECT state, status_label FROM instances WHERE kind = 'comparison'")
            .fetch_one(pool)
            .await
            .unwrap();
    println!(
        "comparison instance: {} ({})",
        run.0,
        run.1.unwrap_or_default()
    );
    println!("warnings: {warnings}, warning workflows: {workflows}, first SMS handed over: {sms}");
    assert_eq!(run.0, "done");
    assert_eq!(workflows, warnings);
    assert_eq!(sms, warnings);
    println!(
        "05:00 due -> comparison written (records, per-person data, warnings): {:.2} s",
        written.as_secs_f64()
    );
    println!(
        "05:00 due -> every warning workflow started: {:.2} s",
        all_started.as_secs_f64()
    );
    println!(
        "05:00 due -> every first SMS handed to the gateway: {:.2} s (target < 10 s on SQLite)",
        all_sms.as_secs_f64()
    );
    println!(
        "05:00 due -> runtime idle (digest sent, projections done): {:.2} s",
        idle.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
