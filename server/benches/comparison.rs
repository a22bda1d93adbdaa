//! One comparison run over N persons in N/40 addresses on SQLite, with the
//! health-commission simulator served over loopback HTTP and the real HTTP
//! client, rules in rhai, records upserted, per-person data kept, warnings
//! opened. Prints the time of each phase (the run logs its own: load,
//! fetch + judge, write), persons/s and the run's peak memory.
//!
//!   cargo bench -p server --bench comparison -- [N]     (default 1,000,000)
//!
//! Target (issue 4): the whole run under 20 s and under 2 GiB.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::ActivityCall;
use server::adapters::health::{HealthCommission, HttpHealth, HttpOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/bulk.rs"]
mod bulk;
use bulk::id_number;
mod support;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Reset the peak (VmHWM) to the current RSS, so the run's peak is not the setup's.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The run logs its phases (load, fetch + judge, write).
    tracing_subscriber::fmt()
        .with_env_filter("server::comparison=info")
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .init();
    let n = support::size_arg(1_000_000);
    let (dir, url) = support::scratch("epi-bench");
    let store = server::db::open(&url).await.unwrap();
    let pool = store.pool().clone();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "SQLite {}: journal_mode={journal}, synchronous={}",
        sqlx::query_scalar::<_, String>("SELECT sqlite_version()")
            .fetch_one(&pool)
            .await
            .unwrap(),
        match synchronous {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            _ => "EXTRA",
        }
    );

    let t = Instant::now();
    let bulk::City {
        addresses,
        enterprises,
        ..
    } = bulk::seed_city(&pool, n).await;
    println!(
        "setup: {n} persons in {addresses} addresses of {enterprises} enterprises ({:.1} s)",
        t.elapsed().as_secs_f64()
    );

    let url = support::serve_simulator().await;
    let health = HttpHealth::new(HttpOptions {
        base_url: url,
        token: server::config::Secret::new("bench"),
        timeout: Duration::from_secs(30),
        batch_size: 1000,
        concurrency: 4,
    })
    .unwrap();
    let as_of: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
    let bundle = support::bundle();
    let clock = Arc::new(ManualClock::new(as_of));
    let acts = support::activities(
        &store,
        pool.clone(),
        clock as Arc<dyn Clock>,
        Arc::new(health.clone()),
        &bundle,
    );
    let call = ActivityCall {
        instance_id: "bench".into(),
        activity_id: "a1".into(),
        name: "run_comparison".into(),
        args: serde_json::json!({"as_of": as_of.to_rfc3339(), "count_window": "24h", "nat_window": "24h"}),
        idempotency_key: "bench/a1".into(),
        attempt: 1,
    };
    println!(
        "peak memory of the setup (VmHWM): {:.0} MiB",
        peak_rss_mib()
    );
    let reset = reset_peak();
    let t = Instant::now();
    let result = acts
        .get("run_comparison")
        .unwrap()
        .call(call)
        .await
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "whole run (load staff, fetch, count, rules, upsert {} records, keep {n} persons' data, open {} warnings): {secs:.2} s = {:.0} persons/s",
        addresses,
        result["summary"]["new_warnings"],
        n as f64 / secs
    );
    println!(
        "peak memory of the run (VmHWM{}): {:.0} MiB",
        if reset {
            ", reset after the setup"
        } else {
            ", including the setup: reset not permitted"
        },
        peak_rss_mib()
    );

    // Phases measured on their own, after the run (so they do not raise its peak).
    let ids: Vec<String> = (0..n).map(id_number).collect();
    let t = Instant::now();
    let answer = health.query(as_of, 24, ids).await.unwrap();
    println!(
        "phase fetch over loopback HTTP: {:.2} s ({} known, {} unknown)",
        t.elapsed().as_secs_f64(),
        answer.records.len(),
        answer.unknown
    );
    let persons: Vec<server::comparison::Person> = (0..n)
        .map(|p| server::comparison::Person {
            staff_id: format!("s{p}"),
            address_id: format!("a{}", p % addresses),
            id_number: id_number(p),
        })
        .collect();
    let t = Instant::now();
    let outcome = server::comparison::compare(
        &bundle.rules,
        &persons,
        &answer.records,
        as_of,
        chrono::Duration::hours(24),
    )
    .unwrap();
    println!(
        "phase counts (statistics rule) + rhai anomaly rule: {:.2} s ({} anomalies)",
        t.elapsed().as_secs_f64(),
        outcome.anomalies.len()
    );
    drop((answer, persons, outcome));

    let _ = std::fs::remove_dir_all(&dir);
}
