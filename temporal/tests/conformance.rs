//! Conformance: the same scenarios on the embedded runtime (SQLite, manual
//! clock) and on a real Temporal dev server through this crate, reaching
//! the same states, the same activity calls under the same idempotency
//! keys and the same notices (the notify activities' title and text).
//!
//! The definitions are a test copy of `workflows/` and `rules/` whose
//! timers are seconds instead of hours (`support::defs`), since the dev
//! server cannot skip time. The Temporal half needs `TEMPORAL_ADDRESS`
//! (`eval "$(scripts/temporal.sh start)"`); without it that half is skipped
//! with a message, unless `EPI_TEMPORAL_TESTS=1` (set by `scripts/test`),
//! where it fails.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::embedded::Embedded;
use support::temporal::OnTemporal;
use support::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn reminders(i: &engine::Instance) -> i64 {
    var(i, "reminders_sent").as_i64().unwrap_or(-1)
}

fn calls_named<'a>(t: &'a Trace, name: &str) -> Vec<&'a (String, String, Value)> {
    t.calls.iter().filter(|c| c.1 == name).collect()
}

fn report<B: Backend>(b: &B, t: &Trace, began: std::time::Instant) {
    eprintln!(
        "[{}] {} checkpoints, {} activity keys, {} attempts, {:.1} s",
        b.name(),
        t.checkpoints.len(),
        t.calls.len(),
        b.fakes().calls().len(),
        began.elapsed().as_secs_f64()
    );
}

/// Run `scenario` on the embedded runtime, check it with `check`, then on
/// Temporal (when there is a server) and compare.
macro_rules! conformance {
    ($prefix:literal, $scenario:ident, $defs:expr, $fakes:expr, $check:expr) => {{
        let prefix = run_prefix($prefix);
        let defs = $defs;
        let fakes: fn(&str) -> Fakes = $fakes;
        let embedded = Embedded::new(defs.bundle(), fakes(&prefix)).await;
        let began = std::time::Instant::now();
        let on_embedded = $scenario(&embedded, &defs, &prefix).await;
        report(&embedded, &on_embedded, began);
        let check: fn(&Trace, &str) = $check;
        check(&on_embedded, &prefix);
        assert_one_result_per_key(&embedded.fakes().calls());
        drop(embedded);
        let defs = $defs;
        if let Some(temporal) = OnTemporal::connect(defs.bundle(), fakes(&prefix), &prefix).await {
            let began = std::time::Instant::now();
            let on_temporal = $scenario(&temporal, &defs, &prefix).await;
            report(&temporal, &on_temporal, began);
            assert_one_result_per_key(&temporal.fakes().calls());
            temporal.shutdown().await;
            assert_same(&on_embedded, &on_temporal);
        }
    }};
}

// (a) The warning lifecycle: three reminders, the disposal deadline telling
// the district, the review loop (dispose, return, dispose, approve) ending
// in 销号办结; beside it a warning whose review is overdue (escalated to the
// city by rules/escalation.rhai).
async fn lifecycle<B: Backend>(b: &B, _defs: &TestDefinitions, p: &str) -> Trace {
    let w = format!("{p}-w");
    let late = format!("{p}-late");
    b.start("warning", &w, warning_input(&w)).await;
    b.start("warning", &late, warning_input(&late)).await;
    let mut cp = Checkpoints::new(b);
    cp.reach("created", &w, |i| {
        i.state == "awaiting_disposal" && reminders(i) == 1 && i.activities.is_empty()
    })
    .await;
    b.advance_to(secs(1.0)).await;
    b.signal(&late, "dispose", disposal(), enterprise("e1"))
        .await;
    cp.reach("late disposed", &late, |i| {
        i.state == "under_review" && i.activities.is_empty()
    })
    .await;
    b.advance_to(secs(6.5)).await;
    cp.reach("second reminder", &w, |i| {
        reminders(i) == 2 && i.activities.is_empty()
    })
    .await;
    b.advance_to(secs(9.0)).await;
    cp.reach("overdue", &w, |i| {
        reminders(i) == 3 && var(i, "disposal_overdue") == true && i.activities.is_empty()
    })
    .await;
    b.signal(&w, "dispose", disposal(), enterprise("e1")).await;
    cp.reach("disposed", &w, |i| i.state == "under_review")
        .await;
    b.signal(
        &w,
        "return",
        json!({"comment": "未报备社区，请补充"}),
        district("jinjiang"),
    )
    .await;
    cp.reach("returned", &w, |i| {
        i.state == "rectifying" && i.activities.is_empty()
    })
    .await;
    b.signal(&w, "dispose", disposal(), enterprise("e1")).await;
    cp.reach("disposed again", &w, |i| {
        i.state == "under_review" && var(i, "submissions") == 2
    })
    .await;
    b.signal(&w, "approve", Value::Null, district("jinjiang"))
        .await;
    cp.reach("closed", &w, |i| i.state == "closed").await;
    b.advance_to(secs(13.5)).await;
    cp.reach("review overdue", &late, |i| {
        var(i, "review_overdue") == true && i.activities.is_empty()
    })
    .await;
    cp.finish(p, 7).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_lifecycle_with_reminders_overdue_and_the_review_loop() {
    conformance!(
        "a",
        lifecycle,
        TestDefinitions::new(),
        |_| Fakes::new(),
        |t, p| {
            let closed = &t.checkpoints.iter().find(|c| c.0 == "closed").unwrap().2;
            assert_eq!(closed["status"], "completed");
            assert_eq!(closed["status_label"], "销号办结");
            assert_eq!(closed["vars"]["returns"], 1);
            let w = format!("{p}-w/");
            let reminders: Vec<_> = calls_named(t, "notify_enterprise")
                .into_iter()
                .filter(|c| c.0.starts_with(&w) && c.2["template"] == "warning_reminder")
                .collect();
            assert_eq!(reminders.len(), 3, "{reminders:?}");
            assert_eq!(reminders[0].2["title"], "疫情预警提醒（第1次）");
            assert!(
                reminders[0].2["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("贵单位人员张三存在异常（核酸阳性）"),
                "{reminders:?}"
            );
            let returned = calls_named(t, "notify_enterprise")
                .into_iter()
                .find(|c| c.2["template"] == "warning_returned")
                .expect("the return tells the enterprise");
            assert_eq!(returned.2["comment"], "未报备社区，请补充");
            let district = calls_named(t, "notify_district");
            assert_eq!(district.len(), 1);
            assert_eq!(district[0].2["title"], "预警超时未处置");
            let city = calls_named(t, "notify_city");
            assert_eq!(city.len(), 1);
            assert_eq!(city[0].2["target"], "city");
            assert!(city[0].0.starts_with(&format!("{p}-late/")));
            assert_eq!(t.calls.len(), 7);
        }
    );
}

// (b) A comparison run opening warnings (children keyed by warning id, a
// page at a time) and the digest to the districts.
fn comparison_fixture(p: &str) -> Value {
    let warning = |n: u32, district: &str| {
        json!({
            "warning_id": format!("{p}-w{n}"), "enterprise_id": "e1", "enterprise_name": "企业甲",
            "district": district, "district_name": "某区", "person_id": format!("510104********000{n}"),
            "person_name": format!("某人{n}"), "reason": "红码",
        })
    };
    json!({
        "run_id": format!("{p}-run"),
        "as_of": "2026-12-01T10:00:00+08:00",
        "new_warnings": [warning(1, "jinjiang"), warning(2, "jinjiang"), warning(3, "qingyang")],
        "per_district": {"jinjiang": 2, "qingyang": 1},
        "summary": {"persons": 10, "anomalies": 3},
    })
}

async fn comparison<B: Backend>(b: &B, _defs: &TestDefinitions, p: &str) -> Trace {
    let run = format!("{p}-c");
    b.start(
        "comparison",
        &run,
        json!({"slot": "2026-12-01T10:00:00+08:00"}),
    )
    .await;
    let mut cp = Checkpoints::new(b);
    cp.reach("run done", &run, |i| i.state == "done").await;
    for n in 1..=3 {
        cp.reach(&format!("warning {n} opened"), &format!("{p}-w{n}"), |i| {
            i.state == "awaiting_disposal" && reminders(i) == 1 && i.activities.is_empty()
        })
        .await;
    }
    cp.finish(p, 7).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comparison_opens_warnings_and_sends_the_digest() {
    conformance!(
        "b",
        comparison,
        TestDefinitions::new(),
        |p| Fakes::new().with_comparison(comparison_fixture(p)),
        |t, p| {
            let done = &t.checkpoints[0].2;
            assert_eq!(
                done["output"],
                json!({"persons": 10, "anomalies": 3, "new_warnings": 3})
            );
            assert_eq!(calls_named(t, "warnings_to_open").len(), 2);
            let digest = calls_named(t, "notify_district_digest");
            assert_eq!(digest.len(), 1);
            assert_eq!(
                digest[0].2["per_district"],
                json!({"jinjiang": 2, "qingyang": 1})
            );
            assert_eq!(digest[0].2["title"], "新增疫情预警");
            let reminders = calls_named(t, "notify_enterprise");
            assert_eq!(reminders.len(), 3);
            for n in 1..=3 {
                assert!(
                    reminders
                        .iter()
                        .any(|c| c.0.starts_with(&format!("{p}-w{n}/")))
                );
            }
        }
    );
}

// (c) A worker killed mid-flight and restarted: first while a timer is
// pending, then while an activity runs (its first attempt hangs). The
// instance completes; the hung call is retried under its key, which
// answers once.
async fn killed_worker<B: Backend>(b: &B, _defs: &TestDefinitions, p: &str) -> Trace {
    let w = format!("{p}-w");
    b.fakes()
        .hang_first_attempt(|name, args| name == "notify_enterprise" && args["round"] == 2);
    b.start("warning", &w, warning_input(&w)).await;
    let mut cp = Checkpoints::new(b);
    cp.reach("created", &w, |i| {
        reminders(i) == 1 && i.activities.is_empty()
    })
    .await;
    // Killed with the reminder and deadline timers pending.
    b.kill_worker().await;
    b.advance_to(secs(2.0)).await;
    b.start_worker().await;
    b.advance_to(secs(6.5)).await;
    // Killed while the second reminder's first attempt runs.
    let began = std::time::Instant::now();
    while b.fakes().hung().is_empty() {
        assert!(
            began.elapsed() < b.patience(),
            "[{}] the second reminder never started",
            b.name()
        );
        b.settle().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.kill_worker().await;
    b.start_worker().await;
    b.advance_to(secs(9.0)).await;
    cp.reach("after restarts", &w, |i| {
        reminders(i) == 3 && var(i, "disposal_overdue") == true && i.activities.is_empty()
    })
    .await;
    b.signal(&w, "dispose", disposal(), enterprise("e1")).await;
    cp.reach("disposed", &w, |i| i.state == "under_review")
        .await;
    b.signal(&w, "approve", Value::Null, district("jinjiang"))
        .await;
    cp.reach("closed", &w, |i| i.state == "closed").await;
    let trace = cp.finish(p, 4).await;
    // The hung attempt died with its worker; the key ran again and answered once.
    let calls = b.fakes().calls();
    let hung = b.fakes().hung();
    assert_eq!(hung.len(), 1, "[{}] {hung:?}", b.name());
    let key = hung.first().unwrap();
    let attempts: Vec<_> = calls.iter().filter(|c| &c.key == key).collect();
    assert!(attempts.len() >= 2, "[{}] {attempts:?}", b.name());
    assert_eq!(
        attempts.iter().filter(|c| c.result.is_some()).count(),
        1,
        "[{}] {attempts:?}",
        b.name()
    );
    trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_flight_and_restarted_finishes_the_instance() {
    conformance!(
        "c",
        killed_worker,
        TestDefinitions::new(),
        |_| Fakes::new(),
        |t, _p| {
            assert_eq!(t.checkpoints.last().unwrap().2["status_label"], "销号办结");
            let rounds: Vec<_> = calls_named(t, "notify_enterprise")
                .iter()
                .map(|c| c.2["round"].clone())
                .collect();
            assert_eq!(rounds, vec![json!(1), json!(2), json!(3)]);
            assert_eq!(calls_named(t, "notify_district").len(), 1);
        }
    );
}

// (d) A new version published while an instance of the old one runs: the
// old instance finishes on its version (its later reminders keep the old
// title), new instances start on the new one.
async fn new_version<B: Backend>(b: &B, defs: &TestDefinitions, p: &str) -> Trace {
    let old = format!("{p}-old");
    let new = format!("{p}-new");
    b.start("warning", &old, warning_input(&old)).await;
    let mut cp = Checkpoints::new(b);
    let o = cp
        .reach("old created", &old, |i| {
            reminders(i) == 1 && i.activities.is_empty()
        })
        .await;
    let version = o.version;
    defs.edit("warning.yaml", |text| {
        text.replacen(
            &format!("version: {version}"),
            &format!("version: {}", version + 1),
            1,
        )
        .replace(
            "title: \"疫情预警提醒（第",
            "title: \"疫情预警提醒·新版（第",
        )
    });
    b.publish(defs.bundle()).await;
    b.start("warning", &new, warning_input(&new)).await;
    cp.reach("new created", &new, |i| {
        i.version == version + 1 && reminders(i) == 1 && i.activities.is_empty()
    })
    .await;
    b.advance_to(secs(6.5)).await;
    for id in [&old, &new] {
        cp.reach("second reminders", id, |i| {
            reminders(i) == 2 && i.activities.is_empty()
        })
        .await;
    }
    cp.finish(p, 4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_while_old_instances_run() {
    conformance!(
        "d",
        new_version,
        TestDefinitions::new(),
        |_| Fakes::new(),
        |t, p| {
            let titles = |who: &str| -> Vec<String> {
                calls_named(t, "notify_enterprise")
                    .iter()
                    .filter(|c| c.0.starts_with(&format!("{p}-{who}/")))
                    .map(|c| c.2["title"].as_str().unwrap().to_string())
                    .collect()
            };
            assert_eq!(
                titles("old"),
                vec!["疫情预警提醒（第1次）", "疫情预警提醒（第2次）"]
            );
            assert_eq!(
                titles("new"),
                vec!["疫情预警提醒·新版（第1次）", "疫情预警提醒·新版（第2次）"]
            );
            let old = &t.checkpoints[0].2;
            let new = &t.checkpoints[1].2;
            assert_eq!(new["version"], old["version"].as_u64().unwrap() + 1);
            assert_ne!(new["hash"], old["hash"]);
        }
    );
}
