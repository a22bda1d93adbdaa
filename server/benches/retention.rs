//! Retention at scale (issue 15): a simulated stretch of days, three
//! comparison runs a day, per-person data generated in bulk (one
//! `comparison_persons` row per run and office address of 40 persons, each
//! entry shaped as `comparison::write_judged` writes it) instead of real
//! runs. Twice on a SQLite file: without retention, and with the nightly
//! purge of `workflows/retention.yaml` (its policy and batch size read from
//! the file) after each day's runs, then the storage returned. Reports the
//! database size of each, and the purge's batches: how many, and the
//! longest — one batch is one transaction, so its time bounds how long it
//! holds the writer (target: under 100 ms).
//!
//!   cargo bench -p server --bench retention -- [PERSONS] [DAYS]
//!
//! PERSONS defaults to 1,000,000 and DAYS to 90; a smaller PERSONS keeps
//! the run honest on a small disk (rows are per address, so a batch's cost
//! does not depend on PERSONS; sizes scale linearly with it).

use chrono::{DateTime, Duration, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::ActivityCall;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

mod support;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The policy and batch size as `workflows/retention.yaml` gives them to
/// `purge_personal_data`.
fn policy() -> (Value, i64) {
    let path = server::system::Paths::repository()
        .workflows
        .join("retention.yaml");
    let y: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let args = &y["states"]["purging"]["on_enter"][0]["args"];
    let policy: Value = serde_json::to_value(&args["policy"]).unwrap();
    (policy, args["batch"].as_i64().unwrap())
}

/// One address's per-person data of a run: 40 entries like a real run's.
fn address_data(run: i64, address: i64, as_of: i64) -> String {
    let mut out = String::from("[");
    for p in 0..40 {
        if p > 0 {
            out.push(',');
        }
        let n = address * 40 + p;
        out.push_str(&format!(
            "[\"s{n}\",\"51010419{:02}0101{:03}{}\",[\"green\",3,true,[[{},\"negative\"]]],[]]",
            60 + n % 40,
            n % 1000,
            (run + n) % 10,
            as_of - 3_600_000 * (1 + n % 20)
        ));
    }
    out.push(']');
    out
}

fn size_of(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

struct Outcome {
    bytes: u64,
    persons_rows: i64,
    batches: usize,
    longest_ms: f64,
    p99_ms: f64,
    purged_rows: u64,
    purge_s: f64,
    write_s: f64,
    vacuum: String,
}

async fn simulate(persons: i64, days: i64, retention: bool) -> Outcome {
    let (dir, url) = support::scratch(&format!("epi-bench-retention-{retention}"));
    let store = server::db::open(&url).await.unwrap();
    let pool = store.pool().clone();
    let start: DateTime<Utc> = "2026-12-01T05:00:00+08:00".parse().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let activities = support::activities(
        &store,
        store.reader().clone(),
        clock.clone() as Arc<dyn Clock>,
        Arc::new(server::adapters::health_sim::Simulator::new(
            1,
            Default::default(),
        )),
        &support::bundle(),
    );
    let purge = activities.get("purge_personal_data").cloned().unwrap();
    let reclaim = activities.get("reclaim_storage").cloned().unwrap();
    let (policy, batch) = policy();
    let addresses = (persons / 40).max(1);
    let mut number = 0;
    let mut times = Vec::new();
    let mut purged_rows = 0;
    let mut purge_s = 0.0;
    let mut write_s = 0.0;
    let mut call_no = 0;
    let mut vacuum = String::new();
    for day in 0..days {
        let t0 = Instant::now();
        for slot in [0, 5, 10] {
            number += 1;
            let as_of = (start + Duration::days(day) + Duration::hours(slot)).timestamp_millis();
            let run = format!("run-{number}");
            let mut tx = pool.begin().await.unwrap();
            let finished = support::Run {
                id: &run,
                as_of,
                number,
                persons,
                unknown: 0,
                anomalies: 0,
                result: None,
            };
            let rows =
                (0..addresses).map(|a| (format!("a{a}"), 40, address_data(number, a, as_of)));
            support::store_run(&mut tx, &finished, rows).await;
            tx.commit().await.unwrap();
        }
        write_s += t0.elapsed().as_secs_f64();
        if !retention {
            continue;
        }
        // The night after: 02:30, as the schedule starts it.
        let slot = start + Duration::days(day + 1) - Duration::minutes(150);
        clock.set(slot);
        let t0 = Instant::now();
        let mut totals = Value::Null;
        loop {
            call_no += 1;
            let call = ActivityCall {
                instance_id: format!("retention@{day}"),
                activity_id: format!("a{call_no}"),
                name: "purge_personal_data".into(),
                args: json!({ "as_of": slot.to_rfc3339(), "totals": totals, "batch": batch, "policy": policy }),
                idempotency_key: format!("retention@{day}/a{call_no}"),
                attempt: 1,
            };
            let t = Instant::now();
            let r = purge.call(call).await.unwrap();
            let took = t.elapsed().as_secs_f64() * 1000.0;
            if !r["more"].as_bool().unwrap() {
                break;
            }
            times.push(took);
            purged_rows += r["purged"].as_u64().unwrap();
            totals = r["totals"].clone();
        }
        vacuum = reclaim
            .call(ActivityCall {
                instance_id: format!("retention@{day}"),
                activity_id: "reclaim".into(),
                name: "reclaim_storage".into(),
                args: json!({}),
                idempotency_key: format!("retention@{day}/reclaim"),
                attempt: 1,
            })
            .await
            .unwrap()["vacuum"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        purge_s += t0.elapsed().as_secs_f64();
        if day % 10 == 9 {
            eprintln!(
                "  day {}: {:.0} MB, {} batches so far",
                day + 1,
                size_of(&dir) as f64 / 1e6,
                times.len()
            );
        }
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    let persons_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM comparison_persons")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    store.reader().close().await;
    let bytes = size_of(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99 = sorted
        .get((sorted.len() as f64 * 0.99) as usize)
        .or(sorted.last())
        .copied()
        .unwrap_or(0.0);
    Outcome {
        bytes,
        persons_rows,
        batches: times.len(),
        longest_ms: sorted.last().copied().unwrap_or(0.0),
        p99_ms: p99,
        purged_rows,
        purge_s,
        write_s,
        vacuum,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let nums: Vec<i64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let persons = nums
        .first()
        .copied()
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let days = nums.get(1).copied().unwrap_or(if full { 90 } else { 40 });
    let (policy, batch) = policy();
    println!(
        "{persons} persons ({} office addresses), {days} days x 3 runs; policy: per-person data {} days, last {} runs kept; batch {batch}",
        persons / 40,
        policy["comparison_persons"]["days"],
        policy["comparison_persons"]["keep_last_runs"]
    );
    let without = simulate(persons, days, false).await;
    println!(
        "without retention: {:.1} MB, {} per-person rows (writing {:.1} s)",
        without.bytes as f64 / 1e6,
        without.persons_rows,
        without.write_s
    );
    let with = simulate(persons, days, true).await;
    println!(
        "with retention:    {:.1} MB, {} per-person rows (writing {:.1} s, purging and vacuuming {:.1} s in all; vacuum: {})",
        with.bytes as f64 / 1e6,
        with.persons_rows,
        with.write_s,
        with.purge_s,
        with.vacuum
    );
    println!(
        "purge batches: {} ({} rows), longest {:.1} ms, p99 {:.1} ms (target < 100 ms)",
        with.batches, with.purged_rows, with.longest_ms, with.p99_ms
    );
    let scale = 1_000_000.0 / persons as f64;
    if persons < 1_000_000 {
        println!(
            "EXTRAPOLATED to 1,000,000 persons (sizes x {scale:.0}; batches hold the same rows, so their time is unchanged): \
             without {:.1} GB, with {:.1} GB, {:.0} batches a night (3 runs x 25,000 address rows / {batch})",
            without.bytes as f64 * scale / 1e9,
            with.bytes as f64 * scale / 1e9,
            (3.0 * 25_000.0 / batch as f64).ceil()
        );
    }
}
