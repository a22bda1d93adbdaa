//! What the benchmarks share (`mod support;` in each): their size argument,
//! a scratch SQLite file, the health-commission simulator over loopback
//! HTTP, the application's activities as the runtime gets them, and a
//! finished comparison run's rows. The city itself is seeded by
//! `tests/support/bulk.rs` (shared with the full-scale test).
#![allow(dead_code)]

use engine::clock::Clock;
use std::path::PathBuf;
use std::sync::Arc;

/// The first numeric argument, else `full` under `cargo bench` and 2,000
/// (a smoke size) when run by `cargo test`.
pub fn size_arg(full: u64) -> u64 {
    let bench = std::env::args().any(|a| a == "--bench");
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(if bench { full } else { 2_000 })
}

/// A fresh directory of this process under the system's temp dir, and the
/// URL of a SQLite file `bench.db` in it.
pub fn scratch(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    (dir, url)
}

/// The health-commission simulator (seed 2022, default rates) served on a
/// loopback port with the token `bench`; its base URL.
pub async fn serve_simulator() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sim = server::adapters::health_sim::Simulator::new(2022, Default::default());
    tokio::spawn(server::adapters::health_sim::serve(
        listener,
        sim,
        "bench".into(),
    ));
    url
}

/// The repository's definitions and rules, compiled.
pub fn bundle() -> engine::Bundle {
    let paths = server::system::Paths::repository();
    let (w, r) = engine::load_dirs(&paths.workflows, &paths.rules).unwrap();
    engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap()
}

/// The application's activities on `store`, as the runtime registers them
/// (SMS to the embedded log gateway).
pub fn activities(
    store: &engine::store::SqlStore,
    reader: sqlx::AnyPool,
    clock: Arc<dyn Clock>,
    health: Arc<dyn server::adapters::health::HealthCommission>,
    bundle: &engine::Bundle,
) -> engine::runtime::Activities {
    let pool = store.pool().clone();
    let services = Arc::new(server::activities::Services {
        store: store.clone(),
        pool: pool.clone(),
        reader,
        clock: clock.clone(),
        health,
        sms: Arc::new(server::adapters::sms::LogSms::new(pool, clock)),
        rules: bundle.rules.clone(),
        rules_by_version: Default::default(),
    });
    server::activities::registry(services)
}

/// What a finished comparison run records of itself.
pub struct Run<'a> {
    pub id: &'a str,
    pub as_of: i64,
    pub number: i64,
    pub persons: i64,
    pub unknown: i64,
    pub anomalies: i64,
    /// The run's `result` (JSON), or none.
    pub result: Option<&'a str>,
}

/// Write a finished run and its per-person data: one `comparison_persons`
/// row per (address id, persons, data).
pub async fn store_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    run: &Run<'_>,
    rows: impl Iterator<Item = (String, i64, String)>,
) {
    sqlx::query(
        "INSERT INTO comparison_runs (id, slot, as_of, started_at, finished_at, status, persons, unknown, anomalies, new_warnings, number, result) \
         VALUES ($1, NULL, $2, $3, $4, 'done', $5, $6, $7, 0, $8, $9)",
    )
    .bind(run.id)
    .bind(run.as_of)
    .bind(run.as_of)
    .bind(run.as_of)
    .bind(run.persons)
    .bind(run.unknown)
    .bind(run.anomalies)
    .bind(run.number)
    .bind(run.result)
    .execute(&mut **tx)
    .await
    .unwrap();
    server::activities::insert_comparison_persons(tx, run.id, rows)
        .await
        .unwrap();
}
