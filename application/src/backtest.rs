//! Back-test (回测, DOMAIN.md R8.2): judge again the per-person data a
//! finished comparison run stored (`comparison_persons`) with candidate
//! definitions and rules, and compare with what the run found: counts per
//! district before (as stored) and after, the persons newly flagged, no
//! longer flagged and flagged for other reasons. Nothing is written.
//!
//! Judging goes through `comparison::Judge`, the same code the run used,
//! with the run's `as_of`, so a back-test of unchanged rules finds exactly
//! what the run found. Used by `server policy backtest` and the city's
//! `/policy` pages.

use crate::comparison::{self, Counts, Judge};
use chrono::{DateTime, Utc};
use engine::compile::program::SourceFile;
use engine::rules::Rules;
use serde::Serialize;
use sqlx::{AnyPool, Row};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The NAT look-back a run used when nothing declares another (R4.2).
pub const DEFAULT_WINDOW_HOURS: u32 = 24;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("没有可回测的比对：{0}")]
    NoRun(String),
    #[error("候选定义或规则有误：\n{}", .0.join("\n"))]
    Candidate(Vec<String>),
    #[error("读取候选定义：{0}")]
    Read(String),
    #[error("比对 {run} 办公点 {address} 保存的人员数据无法读取：{error}")]
    Data {
        run: String,
        address: String,
        error: String,
    },
    #[error("按候选规则判定出错：{0}")]
    Judge(#[from] comparison::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Candidate definitions: every file of `workflows/` and `rules/`.
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    pub workflows: Vec<SourceFile>,
    pub rules: Vec<SourceFile>,
}

impl Candidate {
    /// `DIR/workflows` and `DIR/rules`, read as `validate` and `serve` read them.
    pub fn from_dir(dir: &std::path::Path) -> Result<Candidate, Error> {
        let (workflows, rules) = engine::load_dirs(&dir.join("workflows"), &dir.join("rules"))
            .map_err(|e| Error::Read(format!("{}：{e}", dir.display())))?;
        Ok(Candidate { workflows, rules })
    }

    /// The texts the running system was compiled from: every program's
    /// workflow, forms, rules and activity catalog, once each.
    pub fn current(bundle: &engine::Bundle) -> Candidate {
        let mut workflows = BTreeMap::new();
        let mut rules = BTreeMap::new();
        for p in bundle.workflows.values() {
            let s = &p.source;
            for f in std::iter::once(&s.workflow)
                .chain(&s.forms)
                .chain(s.activities.as_ref())
            {
                workflows.insert(f.path.clone(), f.clone());
            }
            for f in &s.rules {
                rules.insert(f.path.clone(), f.clone());
            }
        }
        Candidate {
            workflows: workflows.into_values().collect(),
            rules: rules.into_values().collect(),
        }
    }

    /// Every file, workflows first.
    pub fn files(&self) -> impl Iterator<Item = &SourceFile> {
        self.workflows.iter().chain(&self.rules)
    }

    /// Replace the text of the file at `path` (one of this candidate's).
    /// False when there is no such file.
    pub fn set(&mut self, path: &str, text: &str) -> bool {
        match self
            .workflows
            .iter_mut()
            .chain(self.rules.iter_mut())
            .find(|f| f.path == path)
        {
            Some(f) => {
                f.text = text.replace("\r\n", "\n");
                true
            }
            None => false,
        }
    }

    /// Compile as the server does (`engine::compile_bundle`), check that
    /// the rule functions a comparison calls exist, and take the NAT
    /// look-back the definitions declare (24 h when none does).
    pub fn compile(&self) -> Result<Compiled, Error> {
        let bundle =
            engine::compile_bundle(&self.workflows, &self.rules, &engine::Options::default())
                .map_err(|e| Error::Candidate(e.0.iter().map(ToString::to_string).collect()))?;
        comparison::check_rules(&bundle.rules).map_err(|e| Error::Candidate(vec![e]))?;
        let declared =
            crate::activities::declared_windows(&bundle).map_err(|e| Error::Candidate(vec![e]))?;
        let default = DEFAULT_WINDOW_HOURS;
        Ok(Compiled {
            rules: bundle.rules.clone(),
            count_window_hours: declared.map_or(default, |w| w.count),
            window_hours: declared.map_or(default, |w| w.nat),
            window_declared: declared.is_some(),
        })
    }
}

/// A candidate ready to judge with.
#[derive(Clone)]
pub struct Compiled {
    pub rules: Arc<Rules>,
    /// The daily record's counts window (`count_window`): the run's
    /// counting, which the back-test repeats as it was.
    pub count_window_hours: u32,
    /// The NAT look-back the anomaly rule sees (`nat_window`).
    pub window_hours: u32,
    /// The definitions declare the look-back (otherwise the default).
    pub window_declared: bool,
}

/// A finished comparison run that can be back-tested.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: String,
    pub number: Option<i64>,
    pub as_of: DateTime<Utc>,
    pub persons: i64,
    pub anomalies: i64,
    /// The NAT look-back the run asked the health commission for (its
    /// result's `window_hours`; 24 h for runs that did not record one).
    pub window_hours: u32,
}

const RUN_COLUMNS: &str = "id, number, as_of, persons, anomalies, result";

fn run_of(r: &sqlx::any::AnyRow) -> Result<Run, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        id: String,
        number: Option<i64>,
        as_of: i64,
        persons: i64,
        anomalies: i64,
        result: Option<String>,
    }
    let r = <Stored as sqlx::FromRow<_>>::from_row(r)?;
    let damaged =
        |column: &str, e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::ColumnDecode {
            index: format!("comparison_runs.{column} of {}", r.id),
            source: e,
        };
    let result = r
        .result
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .map_err(|e| damaged("result", Box::new(e)))?;
    // The NAT look-back the run kept reports for (`window_hours`: what was
    // asked of the health commission, before windows were split); runs
    // from before it was recorded did not say.
    let window_hours = result
        .and_then(|v| {
            ["nat_window_hours", "window_hours"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|h| h.as_u64()))
        })
        .and_then(|h| u32::try_from(h).ok())
        .unwrap_or(DEFAULT_WINDOW_HOURS);
    let as_of = DateTime::from_timestamp_millis(r.as_of)
        .ok_or_else(|| damaged("as_of", format!("{} ms is not a time", r.as_of).into()))?;
    Ok(Run {
        id: r.id,
        number: r.number,
        as_of,
        persons: r.persons,
        anomalies: r.anomalies,
        window_hours,
    })
}

/// Finished runs, newest first.
pub async fn runs(pool: &AnyPool, limit: i64) -> Result<Vec<Run>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM comparison_runs WHERE status = 'done' \
         ORDER BY as_of DESC, number DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(run_of).collect::<Result<_, _>>()?)
}

/// The run `id`, or the latest finished one.
pub async fn run(pool: &AnyPool, id: Option<&str>) -> Result<Run, Error> {
    match id {
        Some(id) => {
            let row = sqlx::query(&format!(
                "SELECT {RUN_COLUMNS}, status FROM comparison_runs WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| Error::NoRun(format!("比对 {id} 不存在")))?;
            let status: String = row.try_get("status")?;
            if status != "done" {
                return Err(Error::NoRun(format!("比对 {id} 尚未完成")));
            }
            Ok(run_of(&row)?)
        }
        None => runs(pool, 1)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoRun("还没有完成的比对".into())),
    }
}

/// One person whose finding changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub staff_id: String,
    /// The id number masked (`5101**********123X`).
    pub masked: String,
    pub enterprise: String,
    pub district: String,
    /// The reasons the run found (as stored) and the candidate finds.
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// Counts of one district, before (as stored) and after.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DistrictCounts {
    pub code: String,
    pub name: String,
    pub persons: u64,
    /// Persons with at least one reason.
    pub flagged_before: u64,
    pub flagged_after: u64,
    /// Reasons found (one warning each).
    pub reasons_before: u64,
    pub reasons_after: u64,
    pub newly: u64,
    pub no_longer: u64,
    pub changed: u64,
    /// The candidate's statistics (`rules/statistics.rhai`) over the
    /// district's persons.
    pub vaccinated_after: u64,
    pub nat_tested_after: u64,
    pub positive_after: u64,
    pub red_yellow_after: u64,
}

/// How often one reason was found, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCounts {
    pub reason: String,
    pub before: u64,
    pub after: u64,
}

/// What a back-test found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: Run,
    /// The look-back the candidate judged with.
    pub window_hours: u32,
    /// Said when it differs from the run's (what that means for the result).
    pub window_note: Option<String>,
    pub persons: u64,
    pub unknown: u64,
    /// Per district (by code), and the city's total last.
    pub districts: Vec<DistrictCounts>,
    pub total: DistrictCounts,
    pub reasons: Vec<ReasonCounts>,
    pub newly: Vec<Change>,
    pub no_longer: Vec<Change>,
    pub changed: Vec<Change>,
    pub elapsed_ms: u64,
    /// When the last row of the run was read, and when the last person
    /// was judged (ms from the start; judging overlaps reading).
    pub read_ms: u64,
    pub judge_ms: u64,
}

/// One address's stored data with where it belongs.
struct Site {
    address: String,
    enterprise: String,
    district: String,
    data: String,
}

/// What one worker found over its share of the sites.
#[derive(Default)]
struct Part {
    districts: HashMap<String, (DistrictCounts, Counts)>,
    reasons: BTreeMap<String, (u64, u64)>,
    unknown: u64,
    /// (kind: 0 newly, 1 no longer, 2 changed, change)
    changes: Vec<(u8, Change)>,
}

fn mask(id: &str) -> String {
    match crate::domain::IdNumber::parse(id) {
        Ok(n) => n.masked(),
        Err(_) if id.is_char_boundary(4) && id.len() > 8 => {
            format!("{}**********{}", &id[..4], &id[id.len() - 4..])
        }
        Err(_) => "***".into(),
    }
}

fn judge_sites(
    judge: &mut Judge<'_>,
    part: &mut Part,
    run: &Run,
    sites: &[Site],
) -> Result<(), Error> {
    let mut reasons = Vec::new();
    for site in sites {
        let persons = comparison::read_judged(&site.data).map_err(|e| Error::Data {
            run: run.id.clone(),
            address: site.address.clone(),
            error: e.to_string(),
        })?;
        let (d, counts) = part.districts.entry(site.district.clone()).or_default();
        for p in persons {
            judge.judge(counts, p.record.as_ref(), &mut reasons)?;
            part.unknown += u64::from(p.record.is_none());
            d.persons += 1;
            d.flagged_before += u64::from(!p.reasons.is_empty());
            d.flagged_after += u64::from(!reasons.is_empty());
            d.reasons_before += p.reasons.len() as u64;
            d.reasons_after += reasons.len() as u64;
            for r in &p.reasons {
                part.reasons.entry(r.clone()).or_default().0 += 1;
            }
            for r in &reasons {
                part.reasons.entry(r.clone()).or_default().1 += 1;
            }
            let kind = match (p.reasons.is_empty(), reasons.is_empty()) {
                (true, true) => None,
                (true, false) => Some(0),
                (false, true) => Some(1),
                (false, false) => {
                    let (mut a, mut b) = (p.reasons.clone(), reasons.clone());
                    a.sort();
                    b.sort();
                    (a != b).then_some(2)
                }
            };
            if let Some(kind) = kind {
                match kind {
                    0 => d.newly += 1,
                    1 => d.no_longer += 1,
                    _ => d.changed += 1,
                }
                part.changes.push((
                    kind,
                    Change {
                        masked: mask(&p.id_number),
                        staff_id: p.staff_id,
                        enterprise: site.enterprise.clone(),
                        district: site.district.clone(),
                        before: p.reasons,
                        after: std::mem::take(&mut reasons),
                    },
                ));
            }
            reasons.clear();
        }
    }
    Ok(())
}

/// Judge the stored data of `run` (the latest finished run when None) with
/// `candidate` and compare with what the run found. Reads only.
pub async fn backtest(
    pool: &AnyPool,
    run: Option<&str>,
    candidate: &Compiled,
) -> Result<Report, Error> {
    let started = std::time::Instant::now();
    let run = self::run(pool, run).await?;
    let names: HashMap<String, String> = sqlx::query("SELECT code, name FROM districts")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("code")?, r.try_get("name")?)))
        .collect::<Result<_, sqlx::Error>>()?;

    // Judging is CPU work: one thread per core off the async threads, each
    // with its own Judge, fed batches of addresses while later rows are
    // still being read (one row per address: 25,000 for a million persons).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count_window = chrono::Duration::hours(i64::from(candidate.count_window_hours));
    let nat_window = chrono::Duration::hours(i64::from(candidate.window_hours));
    let (mut senders, mut workers) = (Vec::new(), Vec::new());
    for _ in 0..threads {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Site>>(4);
        let rules = candidate.rules.clone();
        let run = run.clone();
        workers.push(tokio::task::spawn_blocking(move || {
            let mut judge = Judge::new(&rules, run.as_of, count_window).with_nat_window(nat_window);
            let mut part = Part::default();
            while let Some(batch) = rx.blocking_recv() {
                judge_sites(&mut judge, &mut part, &run, &batch)?;
            }
            Ok::<_, Error>(part)
        }));
        senders.push(tx);
    }
    {
        use futures::TryStreamExt as _;
        // The enterprise's district, as the run counted it.
        let mut rows = sqlx::query(
            "SELECT p.address_id, COALESCE(e.name, '') AS enterprise, COALESCE(e.district, '') AS district, p.data \
             FROM comparison_persons p LEFT JOIN addresses a ON a.id = p.address_id \
             LEFT JOIN enterprises e ON e.id = a.enterprise_id WHERE p.run_id = $1",
        )
        .bind(&run.id)
        .fetch(pool);
        const BATCH: usize = 32;
        let mut batch = Vec::with_capacity(BATCH);
        let mut k = 0;
        while let Some(r) = rows.try_next().await? {
            batch.push(Site {
                address: r.try_get("address_id")?,
                enterprise: r.try_get("enterprise")?,
                district: r.try_get("district")?,
                data: r.try_get("data")?,
            });
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if senders[k % threads].send(full).await.is_err() {
                    break; // that worker stopped on an error, reported below
                }
                k += 1;
            }
        }
        if !batch.is_empty() {
            let _ = senders[k % threads].send(batch).await;
        }
    }
    drop(senders);
    let read_ms = started.elapsed().as_millis() as u64;
    let mut parts = Vec::with_capacity(threads);
    for w in workers {
        parts.push(
            w.await
                .map_err(|e| Error::Read(format!("judging: {e}")))??,
        );
    }
    let judge_ms = started.elapsed().as_millis() as u64;
    let window_hours = candidate.window_hours;

    let mut districts: BTreeMap<String, DistrictCounts> = BTreeMap::new();
    let mut reasons: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let (mut newly, mut no_longer, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    let mut unknown = 0;
    for part in parts {
        unknown += part.unknown;
        for (code, (d, c)) in part.districts {
            let t = districts.entry(code.clone()).or_default();
            t.code = code;
            add(t, &d);
            t.vaccinated_after += c.vaccinated;
            t.nat_tested_after += c.nat_tested;
            t.positive_after += c.positive;
            t.red_yellow_after += c.red_yellow;
        }
        for (r, (b, a)) in part.reasons {
            let e = reasons.entry(r).or_default();
            e.0 += b;
            e.1 += a;
        }
        for (kind, change) in part.changes {
            match kind {
                0 => newly.push(change),
                1 => no_longer.push(change),
                _ => changed.push(change),
            }
        }
    }
    let mut total = DistrictCounts {
        name: "全市".into(),
        ..Default::default()
    };
    let districts: Vec<DistrictCounts> = districts
        .into_values()
        .map(|mut d| {
            d.name = names.get(&d.code).cloned().unwrap_or_else(|| {
                if d.code.is_empty() {
                    "（未知）".into()
                } else {
                    d.code.clone()
                }
            });
            add(&mut total, &d);
            total.vaccinated_after += d.vaccinated_after;
            total.nat_tested_after += d.nat_tested_after;
            total.positive_after += d.positive_after;
            total.red_yellow_after += d.red_yellow_after;
            d
        })
        .collect();
    for list in [&mut newly, &mut no_longer, &mut changed] {
        for c in list.iter_mut() {
            if let Some(n) = names.get(&c.district) {
                c.district = n.clone();
            }
        }
        list.sort_by(|a, b| {
            (&a.district, &a.enterprise, &a.staff_id).cmp(&(
                &b.district,
                &b.enterprise,
                &b.staff_id,
            ))
        });
    }
    let window_note = (window_hours != run.window_hours).then(|| {
        let mut note = format!(
            "候选定义的核酸回溯时长为{window_hours}小时，而该次比对按{}小时向卫健委取数并保存",
            run.window_hours
        );
        if window_hours > run.window_hours {
            note.push_str(&format!(
                "：早于{}小时的核酸报告没有保存，回测只能按已保存的数据判定，结果可能与按{window_hours}小时实际比对不同",
                run.window_hours
            ));
        } else {
            note.push_str(&format!(
                "：回测只计入{window_hours}小时内的核酸报告"
            ));
        }
        note
    });
    Ok(Report {
        window_hours,
        window_note,
        persons: total.persons,
        unknown,
        districts,
        total,
        reasons: reasons
            .into_iter()
            .map(|(reason, (before, after))| ReasonCounts {
                reason,
                before,
                after,
            })
            .collect(),
        newly,
        no_longer,
        changed,
        run,
        elapsed_ms: started.elapsed().as_millis() as u64,
        read_ms,
        judge_ms,
    })
}

fn add(t: &mut DistrictCounts, d: &DistrictCounts) {
    t.persons += d.persons;
    t.flagged_before += d.flagged_before;
    t.flagged_after += d.flagged_after;
    t.reasons_before += d.reasons_before;
    t.reasons_after += d.reasons_after;
    t.newly += d.newly;
    t.no_longer += d.no_longer;
    t.changed += d.changed;
}

impl Report {
    /// The report as the command line prints it, at most `show` persons of
    /// each list.
    pub fn text(&self, show: usize) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let r = &self.run;
        let _ = writeln!(
            s,
            "回测比对 {}（第{}次，比对时间 {}）：{} 人，卫健委无记录 {} 人；核酸回溯 {} 小时；用时 {} ms",
            r.id,
            r.number.map_or("-".into(), |n| n.to_string()),
            crate::console::local_time(r.as_of.timestamp_millis()),
            self.persons,
            self.unknown,
            self.window_hours,
            self.elapsed_ms
        );
        if let Some(note) = &self.window_note {
            let _ = writeln!(s, "注意：{note}");
        }
        let _ = writeln!(
            s,
            "\n区（市）县\t人数\t预警人数(比对→回测)\t预警条数(比对→回测)\t新增\t不再\t原因变化"
        );
        for d in self.districts.iter().chain([&self.total]) {
            let _ = writeln!(
                s,
                "{}\t{}\t{} → {}\t{} → {}\t{}\t{}\t{}",
                d.name,
                d.persons,
                d.flagged_before,
                d.flagged_after,
                d.reasons_before,
                d.reasons_after,
                d.newly,
                d.no_longer,
                d.changed
            );
        }
        let _ = writeln!(s, "\n预警原因（比对 → 回测）");
        for c in &self.reasons {
            let _ = writeln!(s, "  {}: {} → {}", c.reason, c.before, c.after);
        }
        for (title, list) in [
            ("新增预警", &self.newly),
            ("不再预警", &self.no_longer),
            ("原因变化", &self.changed),
        ] {
            let _ = writeln!(s, "\n{title}：{} 人", list.len());
            for c in list.iter().take(show) {
                let _ = writeln!(
                    s,
                    "  {}\t{}\t{}\t[{}] → [{}]",
                    c.masked,
                    c.enterprise,
                    c.district,
                    c.before.join("、"),
                    c.after.join("、")
                );
            }
            if list.len() > show {
                let _ = writeln!(s, "  …… 另有 {} 人（见 CSV）", list.len() - show);
            }
        }
        s
    }

    /// The changed persons as CSV (UTF-8 with a BOM, which Excel on
    /// Chinese Windows needs to read it): one line per person.
    pub fn persons_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let write = |w: &mut csv::Writer<Vec<u8>>, rec: &[&str]| {
            w.write_record(rec).expect("writing to memory");
        };
        write(
            &mut w,
            &[
                "类别",
                "区（市）县",
                "企业",
                "身份证号",
                "比对时的预警原因",
                "回测的预警原因",
            ],
        );
        for (kind, list) in [
            ("新增预警", &self.newly),
            ("不再预警", &self.no_longer),
            ("原因变化", &self.changed),
        ] {
            for c in list {
                write(
                    &mut w,
                    &[
                        kind,
                        &c.district,
                        &c.enterprise,
                        &c.masked,
                        &c.before.join("、"),
                        &c.after.join("、"),
                    ],
                );
            }
        }
        let bytes = w.into_inner().expect("writing to memory");
        format!(
            "\u{feff}{}",
            String::from_utf8(bytes).expect("UTF-8 in, UTF-8 out")
        )
    }

    /// The counts per district (and the city's total) as CSV.
    pub fn districts_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "区（市）县",
            "人数",
            "比对时预警人数",
            "回测预警人数",
            "比对时预警条数",
            "回测预警条数",
            "新增预警人数",
            "不再预警人数",
            "原因变化人数",
        ])
        .expect("writing to memory");
        for d in self.districts.iter().chain([&self.total]) {
            let n = [
                d.persons,
                d.flagged_before,
                d.flagged_after,
                d.reasons_before,
                d.reasons_after,
                d.newly,
                d.no_longer,
                d.changed,
            ]
            .map(|n| n.to_string());
            let mut rec = vec![d.name.as_str()];
            rec.extend(n.iter().map(String::as_str));
            w.write_record(rec).expect("writing to memory");
        }
        let bytes = w.into_inner().expect("writing to memory");
        format!(
            "\u{feff}{}",
            String::from_utf8(bytes).expect("UTF-8 in, UTF-8 out")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_masked() {
        assert_eq!(mask("51010419900101123X"), "5101**********123X");
        assert_eq!(mask("x"), "***");
    }
}
