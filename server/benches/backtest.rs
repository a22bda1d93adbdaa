//! Back-test of a changed rule over a run's stored per-person data (R8.2).
//!
//!   cargo bench -p server --bench backtest -- [N]
//!
//! N persons (default 1,000,000; 2,000 when not run by `cargo bench`) in
//! N / 40 office addresses of N / 200 enterprises, stored for one finished
//! comparison run in `comparison_persons` on a SQLite file exactly as
//! `run_comparison` writes it (`comparison::write_judged`, reasons found by
//! the rules in force: about 3 % red, 3 % yellow, 1 % positive). Then the
//! candidate "a yellow code is no longer flagged" is back-tested three times
//! (`backtest::backtest`: read, judge on every core, compare). Target
//! (issue 11): under 5 s on SQLite.

use chrono::{DateTime, Utc};
use server::backtest::{self, Candidate};
use server::comparison::{
    self, Counts, HealthCode, HealthRecord, Judge, NatReport, NatResult, Vaccination,
};
use std::time::Instant;

#[path = "../tests/support/bulk.rs"]
mod bulk;
mod support;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A deterministic health record for person `p`.
fn record(p: u64, as_of: DateTime<Utc>) -> Option<HealthRecord> {
    let h = p.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    let roll = |shift: u32, m: u64| (h >> shift) % m;
    if roll(0, 1000) < 2 {
        return None; // unknown to the health commission
    }
    let health_code = match roll(10, 100) {
        0..=2 => HealthCode::Red,
        3..=5 => HealthCode::Yellow,
        _ => HealthCode::Green,
    };
    let reports = (0..roll(20, 3))
        .map(|k| NatReport {
            sampled_at: as_of
                - chrono::Duration::minutes((roll(24 + k as u32 * 4, 40) * 37) as i64),
            result: if roll(40, 100) == 0 {
                NatResult::Positive
            } else {
                NatResult::Negative
            },
        })
        .collect();
    let doses = roll(50, 4) as u32;
    Some(HealthRecord {
        id_number: String::new(),
        nat_reports: reports,
        vaccination: Vaccination {
            doses,
            completed: doses >= 2,
        },
        health_code,
    })
}

/// CPU time of this process so far (user + system, from /proc; 0 elsewhere):
/// on a shared machine it tells waiting from working.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = support::size_arg(1_000_000);
    let (dir, url) = support::scratch("epi-bench-backtest");
    let store = server::db::open(&url).await.unwrap();
    let pool = store.pool().clone();

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    bulk::seed_districts(&pool).await;
    let current = {
        let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
        Candidate {
            workflows: w,
            rules: r,
        }
    };
    let rules = current.compile().unwrap().rules;

    let t = Instant::now();
    let addresses = (n / 40).max(1);
    let enterprises = (addresses / 5).max(1);
    let codes = ["jinjiang", "qingyang", "jinniu", "wuhou", "chenghua"];
    let as_of: DateTime<Utc> = "2026-12-01T05:00:00+08:00".parse().unwrap();
    let mut tx = pool.begin().await.unwrap();
    bulk::insert_places(&mut tx, enterprises, addresses, |e| codes[(e % 5) as usize]).await;
    // The stored data, judged by the rules in force as the run does.
    let run_id = "bench-run";
    let mut judge = Judge::new(&rules, as_of, chrono::Duration::hours(24));
    let mut counts = Counts::default();
    let (mut reasons, mut anomalies, mut unknown) = (Vec::new(), 0i64, 0i64);
    let mut data: Vec<Vec<u8>> = vec![Vec::new(); addresses as usize];
    let mut persons = vec![0i64; addresses as usize];
    for p in 0..n {
        let a = (p % addresses) as usize;
        let id = bulk::id_number(p);
        let r = record(p, as_of).map(|mut r| {
            r.id_number = id.clone();
            r
        });
        judge.judge(&mut counts, r.as_ref(), &mut reasons).unwrap();
        comparison::write_judged(&mut data[a], &format!("s{p}"), &id, r.as_ref(), &reasons);
        anomalies += reasons.len() as i64;
        unknown += i64::from(r.is_none());
        persons[a] += 1;
        reasons.clear();
    }
    let run = support::Run {
        id: run_id,
        as_of: as_of.timestamp_millis(),
        number: 1,
        persons: n as i64,
        unknown,
        anomalies,
        result: Some("{}"),
    };
    let rows = data
        .into_iter()
        .zip(persons)
        .enumerate()
        .map(|(a, (mut d, count))| {
            comparison::close_judged(&mut d);
            (format!("a{a}"), count, String::from_utf8(d).unwrap())
        });
    support::store_run(&mut tx, &run, rows).await;
    tx.commit().await.unwrap();
    println!(
        "stored: {n} persons in {addresses} addresses, {anomalies} reasons, {unknown} unknown ({:.1} s)",
        t.elapsed().as_secs_f64()
    );

    // The candidate: a yellow code is no longer flagged.
    let mut candidate = current.clone();
    let anomaly = candidate
        .rules
        .iter_mut()
        .find(|f| f.path.ends_with("anomaly.rhai"))
        .unwrap();
    anomaly.text = anomaly
        .text
        .replace("\"yellow\" => reasons.push(\"黄码\"),", "");
    let candidate = candidate.compile().unwrap();
    let mut best = f64::MAX;
    for round in 1..=3 {
        let t = Instant::now();
        let cpu = cpu_seconds();
        let r = backtest::backtest(store.reader(), None, &candidate)
            .await
            .unwrap();
        let s = t.elapsed().as_secs_f64();
        best = best.min(s);
        println!(
            "back-test {round}: {:.2} s (read {:.2} s, judge {:.2} s; process CPU {:.2} s) — {} persons, flagged {} → {}, newly {}, no longer {}, changed {}",
            s,
            r.read_ms as f64 / 1000.0,
            r.judge_ms as f64 / 1000.0,
            cpu_seconds() - cpu,
            r.persons,
            r.total.flagged_before,
            r.total.flagged_after,
            r.newly.len(),
            r.no_longer.len(),
            r.changed.len()
        );
        assert_eq!(r.persons, n);
        assert!(r.newly.is_empty() && !r.no_longer.is_empty());
    }
    println!(
        "best {best:.2} s for {n} persons (target < 5 s on SQLite: {})",
        if best < 5.0 { "met" } else { "NOT met" }
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
