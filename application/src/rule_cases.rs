//! Rule tests without Rust: the cases of `rules/tests/*.yaml`, run by
//! `server rules test` and by `cargo test` (`server/tests/rule_cases.rs`).
//!
//! Two kinds of case (see `engine::rules::cases` for the file format):
//!
//! - `call: module::function` with `args` and the value `expect`ed back;
//! - `judge:` one person through a comparison's judging, as the 05:00 run
//!   does it (reports outside the window dropped, `statistics::classify`,
//!   `anomaly::evaluate`, `dedupe::evidence`):
//!
//! ```yaml
//!   - name: 红码
//!     judge:
//!       as_of: "2026-11-30T05:00:00+08:00"   # the run's time
//!       window_hours: 24                     # the NAT look-back
//!       person: { nat_reports: [], vaccination: { doses: 3, completed: true }, health_code: red }
//!                                            # null: unknown to the health commission
//!     expect:                                # any of these keys; only those given are compared
//!       reasons: [红码]
//!       evidence: [健康码 red]
//!       counts: { persons: 1, vaccinated: 1, red_yellow: 1 }   # counters left out: 0
//!       vaccination_permille: 1000           # of an address of this one person; null: ()
//! ```

use crate::comparison::{Counts, HealthRecord, Judge};
use chrono::{DateTime, Utc};
use engine::rules::cases::{self, Case, Outcome};
use engine::rules::Rules;
use serde_json::{json, Map, Value};
use std::path::Path;

/// A case and what became of it.
#[derive(Debug, Clone)]
pub struct Ran {
    pub case: Case,
    pub outcome: Outcome,
}

/// Run every case of `rules_dir/tests` against the scripts of `rules_dir`.
pub fn run_dir(rules_dir: &Path) -> Result<Vec<Ran>, String> {
    let rules = cases::rules_in(rules_dir)?;
    let list = cases::load_dir(&rules_dir.join("tests"))?;
    if list.is_empty() {
        return Err(format!("{} 中没有用例", rules_dir.join("tests").display()));
    }
    Ok(list
        .into_iter()
        .map(|case| {
            let outcome = run(&rules, &case);
            Ran { case, outcome }
        })
        .collect())
}

/// Run one case.
pub fn run(rules: &Rules, case: &Case) -> Outcome {
    match case.kind.as_str() {
        "call" => cases::run_call(rules, case),
        "judge" => judge(rules, case).unwrap_or_else(Outcome::Error),
        other => Outcome::Error(format!(
            "未知的用例类型 `{other}`：请写 `call:`（规则函数）或 `judge:`（一个人的比对）"
        )),
    }
}

const COUNTERS: [&str; 7] = [
    "persons",
    "vaccinated",
    "nat_tested",
    "negative",
    "positive",
    "red_yellow",
    "unknown",
];

fn judge(rules: &Rules, case: &Case) -> Result<Outcome, String> {
    let s = &case.subject;
    let as_of: DateTime<Utc> = s
        .get("as_of")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or("`judge` 需要 `as_of`：比对时间，如 \"2026-11-30T05:00:00+08:00\"")?;
    let hours = s
        .get("window_hours")
        .and_then(Value::as_i64)
        .filter(|h| *h > 0)
        .ok_or("`judge` 需要 `window_hours`：核酸回看的小时数，如 24")?;
    let record: Option<HealthRecord> = match s.get("person") {
        None => return Err("`judge` 需要 `person`（卫健委不认识此人时写 null）".into()),
        Some(Value::Null) => None,
        Some(p) => {
            let mut p = p.clone();
            if let Some(m) = p.as_object_mut() {
                m.entry("id_number")
                    .or_insert_with(|| json!("510100000000000000"));
            }
            Some(serde_json::from_value(p).map_err(|e| format!("`person` 写法有误：{e}"))?)
        }
    };
    let Some(expect) = case.expect.as_object() else {
        return Err(
            "`judge` 用例的 `expect` 应是映射：reasons、evidence、counts、vaccination_permille"
                .into(),
        );
    };
    let mut j = Judge::new(rules, as_of, chrono::Duration::hours(hours));
    let mut counts = Counts::default();
    let mut reasons = Vec::new();
    j.judge(&mut counts, record.as_ref(), &mut reasons)
        .map_err(|e| e.to_string())?;
    let counts_json = serde_json::to_value(&counts).map_err(|e| e.to_string())?;
    let (mut want, mut got) = (Map::new(), Map::new());
    for (k, v) in expect {
        let actual = match k.as_str() {
            "reasons" => json!(reasons),
            "evidence" => json!(j.evidence()),
            "counts" => {
                // Counters left out are expected to be 0.
                let mut full = Map::new();
                for c in COUNTERS {
                    full.insert(c.into(), v.get(c).cloned().unwrap_or(json!(0)));
                }
                if let Some(extra) = v
                    .as_object()
                    .and_then(|m| m.keys().find(|k| !COUNTERS.contains(&k.as_str())))
                {
                    return Err(format!(
                        "未知的计数 `{extra}`；可用：{}",
                        COUNTERS.join("、")
                    ));
                }
                want.insert(k.clone(), Value::Object(full));
                got.insert(k.clone(), counts_json.clone());
                continue;
            }
            "vaccination_permille" => {
                json!(j.vaccination_permille(&counts).map_err(|e| e.to_string())?)
            }
            other => {
                return Err(format!(
                    "未知的期望 `{other}`；可用：reasons、evidence、counts、vaccination_permille"
                ))
            }
        };
        want.insert(k.clone(), v.clone());
        got.insert(k.clone(), actual);
    }
    Ok(cases::compare(&Value::Object(want), &Value::Object(got)))
}

/// What `server rules test` prints: one line per case (通过 / 失败 / 出错)
/// with the diff or error under a failure, then a summary. True when all passed.
pub fn report(ran: &[Ran]) -> (String, bool) {
    let mut out = String::new();
    let (mut passed, mut failed) = (0, 0);
    for r in ran {
        match &r.outcome {
            Outcome::Pass => {
                passed += 1;
                out.push_str(&format!("通过  {}\n", r.case.title()));
            }
            Outcome::Fail(diff) => {
                failed += 1;
                out.push_str(&format!("失败  {}\n", r.case.title()));
                for l in diff.lines() {
                    out.push_str(&format!("      {l}\n"));
                }
            }
            Outcome::Error(e) => {
                failed += 1;
                out.push_str(&format!("出错  {}\n      {e}\n", r.case.title()));
            }
        }
    }
    out.push_str(&format!(
        "{} 个用例：{passed} 个通过，{failed} 个未通过\n",
        ran.len()
    ));
    (out, failed == 0)
}
