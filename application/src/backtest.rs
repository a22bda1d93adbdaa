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
use sqlx::AnyPool;
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

const RUN_COLUMNS: &str = "id, number, as_of, persons, anomalies, result, status";

/// A row of `comparison_runs` as stored.
#[derive(sqlx::FromRow)]
struct StoredRun {
    id: String,
    number: Option<i64>,
    as_of: i64,
    persons: i64,
    anomalies: i64,
    result: Option<String>,
    status: String,
}

impl StoredRun {
    /// A column of this row that does not hold what it must.
    fn damaged(&self, column: &str, e: Box<dyn std::error::Error + Send + Sync>) -> sqlx::Error {
        sqlx::Error::ColumnDecode {
            index: format!("comparison_runs.{column} of {}", self.id),
            source: e,
        }
    }

    /// The NAT look-back the run kept reports for (`nat_window_hours`, or
    /// `window_hours`: what was asked of the health commission, before
    /// windows were split); runs from before it was recorded did not say
    /// (24 h then). A recorded value that is not a number of hours is an
    /// error.
    fn window_hours(&self) -> Result<u32, sqlx::Error> {
        let Some(text) = self.result.as_deref() else {
            return Ok(DEFAULT_WINDOW_HOURS);
        };
        let result: serde_json::Value =
            serde_json::from_str(text).map_err(|e| self.damaged("result", Box::new(e)))?;
        let recorded = ["nat_window_hours", "window_hours"]
            .iter()
            .find_map(|k| result.get(*k).map(|h| (*k, h)));
        match recorded {
            None => Ok(DEFAULT_WINDOW_HOURS),
            Some((key, h)) => h
                .as_u64()
                .and_then(|h| u32::try_from(h).ok())
                .ok_or_else(|| {
                    let e = format!("{key} {h} is not a number of hours");
                    self.damaged("result", e.into())
                }),
        }
    }

    fn into_run(self) -> Result<Run, sqlx::Error> {
        let window_hours = self.window_hours()?;
        let as_of = DateTime::from_timestamp_millis(self.as_of).ok_or_else(|| {
            self.damaged("as_of", format!("{} ms is not a time", self.as_of).into())
        })?;
        Ok(Run {
            id: self.id,
            number: self.number,
            as_of,
            persons: self.persons,
            anomalies: self.anomalies,
            window_hours,
        })
    }
}

/// Finished runs, newest first.
pub async fn runs(pool: &AnyPool, limit: i64) -> Result<Vec<Run>, Error> {
    let rows: Vec<StoredRun> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM comparison_runs WHERE status = 'done' \
         ORDER BY as_of DESC, number DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(StoredRun::into_run)
        .collect::<Result<_, _>>()?)
}

/// The run `id`, or the latest finished one.
pub async fn run(pool: &AnyPool, id: Option<&str>) -> Result<Run, Error> {
    match id {
        Some(id) => {
            let row: StoredRun = sqlx::query_as(&format!(
                "SELECT {RUN_COLUMNS} FROM comparison_runs WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| Error::NoRun(format!("比对 {id} 不存在")))?;
            if row.status != "done" {
                return Err(Error::NoRun(format!("比对 {id} 尚未完成")));
            }
            Ok(row.into_run()?)
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
#[derive(sqlx::FromRow)]
struct Site {
    address: String,
    enterprise: String,
    district: String,
    data: String,
}

/// How a person's finding changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Newly,
    NoLonger,
    /// Flagged before and after, for other reasons.
    Changed,
}

impl Kind {
    /// How the reasons found `after` differ from those `before`, if they do
    /// (in any order).
    fn of(before: &[String], after: &[String]) -> Option<Kind> {
        match (before.is_empty(), after.is_empty()) {
            (true, true) => None,
            (true, false) => Some(Kind::Newly),
            (false, true) => Some(Kind::NoLonger),
            (false, false) => {
                let (mut a, mut b) = (before.to_vec(), after.to_vec());
                a.sort();
                b.sort();
                (a != b).then_some(Kind::Changed)
            }
        }
    }
}

/// The persons whose finding changed, by kind.
#[derive(Default)]
struct Changes {
    newly: Vec<Change>,
    no_longer: Vec<Change>,
    changed: Vec<Change>,
}

impl Changes {
    fn push(&mut self, kind: Kind, change: Change) {
        match kind {
            Kind::Newly => self.newly.push(change),
            Kind::NoLonger => self.no_longer.push(change),
            Kind::Changed => self.changed.push(change),
        }
    }

    fn append(&mut self, other: Changes) {
        self.newly.extend(other.newly);
        self.no_longer.extend(other.no_longer);
        self.changed.extend(other.changed);
    }

    /// District names instead of codes (where known), each list sorted by
    /// district, enterprise and staff id.
    fn name_and_sort(&mut self, names: &HashMap<String, String>) {
        for list in [&mut self.newly, &mut self.no_longer, &mut self.changed] {
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
    }
}

impl DistrictCounts {
    /// One person the run found `before` and the candidate `after`.
    fn count(&mut self, before: &[String], after: &[String], kind: Option<Kind>) {
        self.persons += 1;
        self.flagged_before += u64::from(!before.is_empty());
        self.flagged_after += u64::from(!after.is_empty());
        self.reasons_before += before.len() as u64;
        self.reasons_after += after.len() as u64;
        match kind {
            Some(Kind::Newly) => self.newly += 1,
            Some(Kind::NoLonger) => self.no_longer += 1,
            Some(Kind::Changed) => self.changed += 1,
            None => {}
        }
    }

    fn add(&mut self, d: &DistrictCounts) {
        self.persons += d.persons;
        self.flagged_before += d.flagged_before;
        self.flagged_after += d.flagged_after;
        self.reasons_before += d.reasons_before;
        self.reasons_after += d.reasons_after;
        self.newly += d.newly;
        self.no_longer += d.no_longer;
        self.changed += d.changed;
    }

    /// The candidate's statistics: vaccinated, NAT tested, positive, red
    /// or yellow code.
    fn statistics(&self) -> [u64; 4] {
        [
            self.vaccinated_after,
            self.nat_tested_after,
            self.positive_after,
            self.red_yellow_after,
        ]
    }

    /// Add the candidate's statistics over more of the district's persons
    /// (in the order of `statistics`).
    fn add_statistics(&mut self, s: [u64; 4]) {
        let mine = [
            &mut self.vaccinated_after,
            &mut self.nat_tested_after,
            &mut self.positive_after,
            &mut self.red_yellow_after,
        ];
        for (t, v) in mine.into_iter().zip(s) {
            *t += v;
        }
    }
}

/// What one worker found over its share of the sites.
#[derive(Default)]
struct Part {
    /// By district code: the comparison of each person, and the candidate's
    /// statistics.
    districts: HashMap<String, (DistrictCounts, Counts)>,
    /// Reason → (found before, found after).
    reasons: BTreeMap<String, (u64, u64)>,
    unknown: u64,
    changes: Changes,
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
    let mut after = Vec::new();
    for site in sites {
        let persons = comparison::read_judged(&site.data).map_err(|e| Error::Data {
            run: run.id.clone(),
            address: site.address.clone(),
            error: e.to_string(),
        })?;
        let (d, counts) = part.districts.entry(site.district.clone()).or_default();
        for p in persons {
            judge.judge(counts, p.record.as_ref(), &mut after)?;
            part.unknown += u64::from(p.record.is_none());
            for r in &p.reasons {
                part.reasons.entry(r.clone()).or_default().0 += 1;
            }
            for r in &after {
                part.reasons.entry(r.clone()).or_default().1 += 1;
            }
            let kind = Kind::of(&p.reasons, &after);
            d.count(&p.reasons, &after, kind);
            if let Some(kind) = kind {
                let change = Change {
                    masked: mask(&p.id_number),
                    staff_id: p.staff_id,
                    enterprise: site.enterprise.clone(),
                    district: site.district.clone(),
                    before: p.reasons,
                    after: std::mem::take(&mut after),
                };
                part.changes.push(kind, change);
            }
            after.clear();
        }
    }
    Ok(())
}

/// A judging thread's inbox and its result.
type Worker = (
    tokio::sync::mpsc::Sender<Vec<Site>>,
    tokio::task::JoinHandle<Result<Part, Error>>,
);

/// A thread off the async threads judging the batches of sites it is sent
/// with its own `Judge`, as of the run's time.
fn spawn_judge(candidate: &Compiled, run: &Run) -> Worker {
    let count_window = chrono::Duration::hours(i64::from(candidate.count_window_hours));
    let nat_window = chrono::Duration::hours(i64::from(candidate.window_hours));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Site>>(4);
    let rules = candidate.rules.clone();
    let run = run.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let mut judge = Judge::new(&rules, run.as_of, count_window).with_nat_window(nat_window);
        let mut part = Part::default();
        while let Some(batch) = rx.blocking_recv() {
            judge_sites(&mut judge, &mut part, &run, &batch)?;
        }
        Ok(part)
    });
    (tx, worker)
}

/// Read the run's stored sites and send them, in batches, to the judging
/// threads in turn. Returns when all are read (or a thread stopped on an
/// error, which its result reports).
async fn feed(
    pool: &AnyPool,
    run: &Run,
    senders: Vec<tokio::sync::mpsc::Sender<Vec<Site>>>,
) -> Result<(), Error> {
    use futures::TryStreamExt as _;
    const BATCH: usize = 32;
    // The enterprise's district, as the run counted it.
    let mut rows = sqlx::query_as::<_, Site>(
        "SELECT p.address_id AS address, COALESCE(e.name, '') AS enterprise, COALESCE(e.district, '') AS district, p.data \
         FROM comparison_persons p LEFT JOIN addresses a ON a.id = p.address_id \
         LEFT JOIN enterprises e ON e.id = a.enterprise_id WHERE p.run_id = $1",
    )
    .bind(&run.id)
    .fetch(pool);
    let mut batch = Vec::with_capacity(BATCH);
    let mut k = 0;
    while let Some(site) = rows.try_next().await? {
        batch.push(site);
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if senders[k % senders.len()].send(full).await.is_err() {
                return Ok(()); // that worker stopped on an error, reported by it
            }
            k += 1;
        }
    }
    if !batch.is_empty() {
        let _ = senders[k % senders.len()].send(batch).await;
    }
    Ok(())
}

/// What the judging threads found, and when reading and judging ended (ms
/// from the start).
struct Judged {
    parts: Vec<Part>,
    read_ms: u64,
    judge_ms: u64,
}

/// Judging is CPU work: one thread per core off the async threads, each
/// with its own Judge, fed batches of addresses while later rows are still
/// being read (one row per address: 25,000 for a million persons).
async fn judge_run(
    pool: &AnyPool,
    run: &Run,
    candidate: &Compiled,
    started: std::time::Instant,
) -> Result<Judged, Error> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (senders, workers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| spawn_judge(candidate, run)).unzip();
    feed(pool, run, senders).await?;
    let read_ms = started.elapsed().as_millis() as u64;
    let mut parts = Vec::with_capacity(threads);
    for w in workers {
        parts.push(
            w.await
                .map_err(|e| Error::Read(format!("judging: {e}")))??,
        );
    }
    let judge_ms = started.elapsed().as_millis() as u64;
    Ok(Judged {
        parts,
        read_ms,
        judge_ms,
    })
}

/// The workers' parts together.
#[derive(Default)]
struct Merged {
    /// By district code.
    districts: BTreeMap<String, DistrictCounts>,
    reasons: BTreeMap<String, (u64, u64)>,
    unknown: u64,
    changes: Changes,
}

impl Merged {
    fn of(parts: Vec<Part>) -> Merged {
        let mut m = Merged::default();
        for part in parts {
            m.unknown += part.unknown;
            for (code, (d, c)) in part.districts {
                let t = m.districts.entry(code.clone()).or_default();
                t.code = code;
                t.add(&d);
                t.add_statistics([c.vaccinated, c.nat_tested, c.positive, c.red_yellow]);
            }
            for (r, (b, a)) in part.reasons {
                let e = m.reasons.entry(r).or_default();
                e.0 += b;
                e.1 += a;
            }
            m.changes.append(part.changes);
        }
        m
    }
}

/// District names by code.
async fn district_names(pool: &AnyPool) -> Result<HashMap<String, String>, Error> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT code, name FROM districts")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().collect())
}

/// The districts (by code) with their names, and the city's total.
fn name_districts(
    districts: BTreeMap<String, DistrictCounts>,
    names: &HashMap<String, String>,
) -> (Vec<DistrictCounts>, DistrictCounts) {
    let mut total = DistrictCounts {
        name: "全市".into(),
        ..Default::default()
    };
    let districts = districts
        .into_values()
        .map(|mut d| {
            d.name = names.get(&d.code).cloned().unwrap_or_else(|| {
                if d.code.is_empty() {
                    "（未知）".into()
                } else {
                    d.code.clone()
                }
            });
            total.add(&d);
            total.add_statistics(d.statistics());
            d
        })
        .collect();
    (districts, total)
}

/// What a candidate look-back other than the run's means for the result.
fn window_note(candidate_hours: u32, run_hours: u32) -> Option<String> {
    (candidate_hours != run_hours).then(|| {
        let mut note = format!(
            "候选定义的核酸回溯时长为{candidate_hours}小时，而该次比对按{run_hours}小时向卫健委取数并保存"
        );
        if candidate_hours > run_hours {
            note.push_str(&format!(
                "：早于{run_hours}小时的核酸报告没有保存，回测只能按已保存的数据判定，结果可能与按{candidate_hours}小时实际比对不同"
            ));
        } else {
            note.push_str(&format!("：回测只计入{candidate_hours}小时内的核酸报告"));
        }
        note
    })
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
    let names = district_names(pool).await?;
    let judged = judge_run(pool, &run, candidate, started).await?;
    let mut merged = Merged::of(judged.parts);
    let (districts, total) = name_districts(merged.districts, &names);
    merged.changes.name_and_sort(&names);
    let window_hours = candidate.window_hours;
    Ok(Report {
        window_hours,
        window_note: window_note(window_hours, run.window_hours),
        persons: total.persons,
        unknown: merged.unknown,
        districts,
        total,
        reasons: merged
            .reasons
            .into_iter()
            .map(|(reason, (before, after))| ReasonCounts {
                reason,
                before,
                after,
            })
            .collect(),
        newly: merged.changes.newly,
        no_longer: merged.changes.no_longer,
        changed: merged.changes.changed,
        run,
        elapsed_ms: started.elapsed().as_millis() as u64,
        read_ms: judged.read_ms,
        judge_ms: judged.judge_ms,
    })
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

    fn reasons(r: &[&str]) -> Vec<String> {
        r.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_change_is_new_gone_or_other_reasons_in_any_order() {
        let (none, a, ab, ba) = (
            reasons(&[]),
            reasons(&["a"]),
            reasons(&["a", "b"]),
            reasons(&["b", "a"]),
        );
        assert_eq!(Kind::of(&none, &none), None);
        assert_eq!(Kind::of(&none, &a), Some(Kind::Newly));
        assert_eq!(Kind::of(&a, &none), Some(Kind::NoLonger));
        assert_eq!(Kind::of(&a, &ab), Some(Kind::Changed));
        assert_eq!(Kind::of(&ab, &ba), None);
    }

    fn stored(result: Option<&str>) -> StoredRun {
        StoredRun {
            id: "run-1".into(),
            number: Some(1),
            as_of: 0,
            persons: 0,
            anomalies: 0,
            result: result.map(str::to_string),
            status: "done".into(),
        }
    }

    #[test]
    fn the_run_window_is_recorded_defaulted_for_old_runs_or_an_error() {
        assert_eq!(stored(None).window_hours().unwrap(), DEFAULT_WINDOW_HOURS);
        assert_eq!(
            stored(Some("{}")).window_hours().unwrap(),
            DEFAULT_WINDOW_HOURS
        );
        let both = r#"{"window_hours": 48, "nat_window_hours": 72}"#;
        assert_eq!(stored(Some(both)).window_hours().unwrap(), 72);
        assert_eq!(
            stored(Some(r#"{"window_hours": 48}"#))
                .window_hours()
                .unwrap(),
            48
        );
        let bad = stored(Some(r#"{"nat_window_hours": "two days"}"#)).window_hours();
        let e = bad.unwrap_err().to_string();
        assert!(e.contains("run-1") && e.contains("nat_window_hours"), "{e}");
        assert!(stored(Some("not json")).window_hours().is_err());
    }

    #[test]
    fn parts_merge_by_district_and_the_city_total_adds_every_count() {
        let part = |district: &str, flagged: u64, vaccinated: u64| {
            let mut p = Part::default();
            let d = DistrictCounts {
                persons: 2,
                flagged_after: flagged,
                newly: flagged,
                ..Default::default()
            };
            let c = Counts {
                vaccinated,
                nat_tested: 1,
                positive: 1,
                red_yellow: 1,
                ..Default::default()
            };
            p.districts.insert(district.into(), (d, c));
            p.reasons.insert("r".into(), (0, flagged));
            p
        };
        let m = Merged::of(vec![part("a", 1, 2), part("a", 1, 1), part("b", 0, 5)]);
        assert_eq!(m.reasons["r"], (0, 2));
        let names = HashMap::from([("a".to_string(), "甲区".to_string())]);
        let (districts, total) = name_districts(m.districts, &names);
        let named: Vec<_> = districts.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(named, ["甲区", "b"]);
        assert_eq!((districts[0].persons, districts[0].newly), (4, 2));
        assert_eq!(districts[0].statistics(), [3, 2, 2, 2]);
        assert_eq!((total.name.as_str(), total.persons), ("全市", 6));
        assert_eq!((total.flagged_after, total.newly), (2, 2));
        assert_eq!(total.statistics(), [8, 3, 3, 3]);
    }

    #[test]
    fn a_longer_candidate_window_says_the_older_reports_were_not_kept() {
        assert_eq!(window_note(24, 24), None);
        assert!(window_note(48, 24)
            .unwrap()
            .contains("早于24小时的核酸报告没有保存"));
        assert!(window_note(12, 24).unwrap().contains("回测只计入12小时内"));
    }
}
