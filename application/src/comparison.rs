//! The pure part of a comparison run (比对, DOMAIN.md R4): given the staff
//! and the health commission's answers for them, count per office address
//! the computed fields of the daily record (R3.2) by `rules/statistics.rhai`
//! and find the anomalous persons with `rules/anomaly.rhai` (R4.4); the
//! compact form in which a run keeps the data each person was judged on.
//!
//! Owns the meaning of the counts (what "tested", "negative", "vaccinated"
//! mean for the 24 hours before the run). Must not do I/O: fetching,
//! storing records and opening warnings belong to the run's activity.

use chrono::{DateTime, Duration, Utc};
use engine::rules::{rhai, Rules};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One NAT report as the health commission returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatReport {
    pub sampled_at: DateTime<Utc>,
    pub result: NatResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatResult {
    Negative,
    Positive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vaccination {
    pub doses: u32,
    pub completed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCode {
    Green,
    Yellow,
    Red,
}

/// The health commission's data for one person (the contract's `results[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub id_number: String,
    #[serde(default)]
    pub nat_reports: Vec<NatReport>,
    pub vaccination: Vaccination,
    pub health_code: HealthCode,
}

/// A person compared: who, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub staff_id: String,
    pub address_id: String,
    pub id_number: String,
}

/// The computed fields of one address's daily record (R3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// 该办公点下所有人数
    pub persons: u64,
    /// 完成疫苗人数
    pub vaccinated: u64,
    /// 核酸人数: at least one report sampled in the window
    pub nat_tested: u64,
    /// 阴性: tested, and no positive report in the window
    pub negative: u64,
    /// 阳性: a positive report in the window
    pub positive: u64,
    /// 红黄码
    pub red_yellow: u64,
    /// Not known to the health commission: counted, never flagged.
    pub unknown: u64,
}

impl Counts {
    fn add(&mut self, i: Increments) {
        self.vaccinated += u64::from(i.vaccinated);
        self.nat_tested += u64::from(i.nat_tested);
        self.negative += u64::from(i.negative);
        self.positive += u64::from(i.positive);
        self.red_yellow += u64::from(i.red_yellow);
    }

    fn to_rhai(&self) -> rhai::Dynamic {
        let mut m = rhai::Map::new();
        for (k, v) in [
            ("persons", self.persons),
            ("vaccinated", self.vaccinated),
            ("nat_tested", self.nat_tested),
            ("negative", self.negative),
            ("positive", self.positive),
            ("red_yellow", self.red_yellow),
            ("unknown", self.unknown),
        ] {
            m.insert(k.into(), rhai::Dynamic::from_int(v as i64));
        }
        m.into()
    }
}

/// The counters one known person adds one to, as `statistics::classify`
/// decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Increments {
    pub vaccinated: bool,
    pub nat_tested: bool,
    pub negative: bool,
    pub positive: bool,
    pub red_yellow: bool,
}

/// A person the anomaly rule flagged, with the reason it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub staff_id: String,
    pub address_id: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rule(#[from] engine::rules::Error),
    #[error("rule {0} must return {1}, got {2}")]
    RuleResult(&'static str, &'static str, String),
}

/// The outcome of comparing everyone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub per_address: BTreeMap<String, Counts>,
    pub anomalies: Vec<Anomaly>,
}

/// What `statistics::classify` sees of a person: it may depend on nothing
/// else (the sandbox gives it no clock, no randomness, no state), so its
/// answer is kept per distinct profile and a million persons cost a few
/// thousand rule calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Profile {
    doses: u32,
    completed: bool,
    code: HealthCode,
    n: u8,
    /// `hours_ago << 1 | positive` of the first `n` reports in the window.
    reports: [u32; Profile::MAX_REPORTS],
}

impl Profile {
    const MAX_REPORTS: usize = 4;
}

/// Strings the rules see on every call, made once.
struct Words {
    positive: rhai::Dynamic,
    negative: rhai::Dynamic,
    green: rhai::Dynamic,
    yellow: rhai::Dynamic,
    red: rhai::Dynamic,
}

impl Words {
    fn new() -> Self {
        Words {
            positive: "positive".into(),
            negative: "negative".into(),
            green: "green".into(),
            yellow: "yellow".into(),
            red: "red".into(),
        }
    }
    fn result(&self, r: NatResult) -> rhai::Dynamic {
        match r {
            NatResult::Positive => self.positive.clone(),
            NatResult::Negative => self.negative.clone(),
        }
    }
    fn code(&self, c: HealthCode) -> rhai::Dynamic {
        match c {
            HealthCode::Green => self.green.clone(),
            HealthCode::Yellow => self.yellow.clone(),
            HealthCode::Red => self.red.clone(),
        }
    }
}

/// Judges persons one at a time: what they add to their address's counts
/// (`rules/statistics.rhai`, R3.2) and the reasons they are anomalous
/// (`rules/anomaly.rhai`, R4.4). Only reports sampled in
/// `(as_of - window, as_of]` count (R4.2, R4.5): the rules see the person's
/// data with the reports outside the window removed. The anomaly rule sees
/// the reports of its own window (`with_nat_window`; the same by default),
/// as `workflows/comparison.yaml` declares them.
pub struct Judge<'r> {
    rules: &'r Rules,
    as_of: DateTime<Utc>,
    from: DateTime<Utc>,
    /// Start of the anomaly rule's window.
    nat_from: DateTime<Utc>,
    words: Words,
    memo: HashMap<Profile, Increments>,
    classify_calls: usize,
    /// `dedupe::evidence` of each reason found by the last `judge` call.
    evidence: Vec<String>,
}

impl<'r> Judge<'r> {
    pub fn new(rules: &'r Rules, as_of: DateTime<Utc>, window: Duration) -> Self {
        Judge {
            rules,
            as_of,
            from: as_of - window,
            nat_from: as_of - window,
            words: Words::new(),
            memo: HashMap::new(),
            classify_calls: 0,
            evidence: Vec::new(),
        }
    }

    /// The anomaly rule sees the reports sampled in `window` before the run
    /// (`nat_window` of workflows/comparison.yaml) instead of the counts'.
    pub fn with_nat_window(mut self, window: Duration) -> Self {
        self.nat_from = self.as_of - window;
        self
    }

    /// Count one person into `counts` (None: unknown to the health
    /// commission, counted and never flagged) and return the anomaly rule's
    /// reasons, appended to `reasons`.
    pub fn judge(
        &mut self,
        counts: &mut Counts,
        record: Option<&HealthRecord>,
        reasons: &mut Vec<String>,
    ) -> Result<(), Error> {
        counts.persons += 1;
        self.evidence.clear();
        let Some(r) = record else {
            counts.unknown += 1;
            return Ok(());
        };
        let increments = self.increments(r)?;
        counts.add(increments);
        self.anomalies(r, reasons)
    }

    /// What the person adds to the counts (`rules/statistics.rhai`),
    /// memoised by the profile of their reports in the window.
    fn increments(&mut self, r: &HealthRecord) -> Result<Increments, Error> {
        let (from, as_of) = (self.from, self.as_of);
        let in_window = || {
            r.nat_reports
                .iter()
                .filter(move |n| n.sampled_at > from && n.sampled_at <= as_of)
        };
        let mut profile = Profile {
            doses: r.vaccination.doses,
            completed: r.vaccination.completed,
            code: r.health_code,
            n: 0,
            reports: [0; Profile::MAX_REPORTS],
        };
        let mut memo = true;
        for n in in_window() {
            if usize::from(profile.n) == Profile::MAX_REPORTS {
                memo = false;
                break;
            }
            let hours = ((as_of - n.sampled_at).num_hours()).clamp(0, i64::from(u32::MAX >> 2));
            profile.reports[usize::from(profile.n)] =
                (hours as u32) << 1 | u32::from(n.result == NatResult::Positive);
            profile.n += 1;
        }
        Ok(match memo.then(|| self.memo.get(&profile)).flatten() {
            Some(i) => *i,
            None => {
                let i = self.classify(r, in_window())?;
                if memo {
                    self.memo.insert(profile, i);
                }
                i
            }
        })
    }

    /// The anomaly rule's reasons for the person, appended to `reasons`,
    /// and the evidence of each.
    fn anomalies(&mut self, r: &HealthRecord, reasons: &mut Vec<String>) -> Result<(), Error> {
        // The anomaly rule's argument, built for rhai directly: this runs
        // once per person (a million times a run), and going through JSON
        // costs more than the rule itself.
        let found =
            self.rules
                .call_dynamic("anomaly", "evaluate", vec![self.rule_person(r).into()])?;
        let found = found.into_array().map_err(|t| {
            Error::RuleResult("anomaly::evaluate", "a list of reasons (text)", t.into())
        })?;
        if found.is_empty() {
            return Ok(());
        }
        // Few persons get here: the argument is built again for the
        // evidence rule rather than copied for everyone.
        let person: rhai::Dynamic = self.rule_person(r).into();
        for reason in found {
            let reason = reason.into_immutable_string().map_err(|t| {
                Error::RuleResult("anomaly::evaluate", "a list of reasons (text)", t.into())
            })?;
            let evidence = self
                .rules
                .call_dynamic(
                    "dedupe",
                    "evidence",
                    vec![person.clone(), reason.clone().into()],
                )?
                .into_immutable_string()
                .map_err(|t| Error::RuleResult("dedupe::evidence", "text", t.into()))?;
            reasons.push(reason.to_string());
            self.evidence.push(evidence.to_string());
        }
        Ok(())
    }

    /// What the rules' evidence function said of each reason the last
    /// `judge` call appended, in the same order (empty when it found none).
    pub fn evidence(&self) -> &[String] {
        &self.evidence
    }

    /// The anomaly rule's argument: the person with the reports in the window.
    fn rule_person(&self, r: &HealthRecord) -> rhai::Map {
        let reports: rhai::Array = r
            .nat_reports
            .iter()
            .filter(|n| n.sampled_at > self.nat_from && n.sampled_at <= self.as_of)
            .map(|n| {
                let mut m = rhai::Map::new();
                m.insert("sampled_at".into(), n.sampled_at.to_rfc3339().into());
                m.insert("result".into(), self.words.result(n.result));
                rhai::Dynamic::from_map(m)
            })
            .collect();
        let mut person = self.person(r);
        person.insert("nat_reports".into(), reports.into());
        person
    }

    /// `vaccination` and `health_code` of the rules' person argument.
    fn person(&self, r: &HealthRecord) -> rhai::Map {
        let mut vaccination = rhai::Map::new();
        vaccination.insert(
            "doses".into(),
            rhai::Dynamic::from_int(i64::from(r.vaccination.doses)),
        );
        vaccination.insert("completed".into(), r.vaccination.completed.into());
        let mut person = rhai::Map::new();
        person.insert("vaccination".into(), vaccination.into());
        person.insert("health_code".into(), self.words.code(r.health_code));
        person
    }

    fn classify<'a>(
        &mut self,
        r: &HealthRecord,
        in_window: impl Iterator<Item = &'a NatReport>,
    ) -> Result<Increments, Error> {
        const WANT: &str = "a map of the counters true or false: vaccinated, nat_tested, negative, positive, red_yellow";
        let reports: rhai::Array = in_window
            .map(|n| {
                let mut m = rhai::Map::new();
                m.insert(
                    "hours_ago".into(),
                    rhai::Dynamic::from_int((self.as_of - n.sampled_at).num_hours()),
                );
                m.insert("result".into(), self.words.result(n.result));
                rhai::Dynamic::from_map(m)
            })
            .collect();
        let mut person = self.person(r);
        person.insert("nat_reports".into(), reports.into());
        let d = self
            .rules
            .call_dynamic("statistics", "classify", vec![person.into()])?;
        self.classify_calls += 1;
        let m = d.try_cast::<rhai::Map>().ok_or_else(|| {
            Error::RuleResult("statistics::classify", WANT, "another value".into())
        })?;
        let mut i = Increments::default();
        for (k, v) in m {
            let flag = v.as_bool().map_err(|t| {
                Error::RuleResult("statistics::classify", WANT, format!("{k}: {t}"))
            })?;
            match k.as_str() {
                "vaccinated" => i.vaccinated = flag,
                "nat_tested" => i.nat_tested = flag,
                "negative" => i.negative = flag,
                "positive" => i.positive = flag,
                "red_yellow" => i.red_yellow = flag,
                other => {
                    return Err(Error::RuleResult(
                        "statistics::classify",
                        WANT,
                        format!("unknown counter `{other}`"),
                    ))
                }
            }
        }
        Ok(i)
    }

    /// How many times `statistics::classify` was asked so far.
    pub fn classify_calls(&self) -> usize {
        self.classify_calls
    }

    /// 接种率 of an address in tenths of a percent (875 = 87.5%) by
    /// `statistics::vaccination_permille`; None when the rule gives `()`.
    pub fn vaccination_permille(&self, counts: &Counts) -> Result<Option<u64>, Error> {
        let d = self.rules.call_dynamic(
            "statistics",
            "vaccination_permille",
            vec![counts.to_rhai()],
        )?;
        if d.is_unit() {
            return Ok(None);
        }
        match d.as_int() {
            Ok(n) if n >= 0 => Ok(Some(n as u64)),
            _ => Err(Error::RuleResult(
                "statistics::vaccination_permille",
                "a whole number ≥ 0 or ()",
                d.type_name().into(),
            )),
        }
    }
}

/// The rule functions a comparison run calls: (module, function, arguments).
pub const RULES_USED: &[(&str, &str, usize)] = &[
    ("anomaly", "evaluate", 1),
    ("statistics", "classify", 1),
    ("statistics", "vaccination_permille", 1),
    ("dedupe", "warning_key", 2),
    ("dedupe", "evidence", 2),
];

/// Every function of [`RULES_USED`] is defined; otherwise what is missing,
/// e.g. `rules/statistics.rhai: fn classify(1 argument)`. A run checks this
/// before it fetches anything; start-up and `validate` can too.
pub fn check_rules(rules: &Rules) -> Result<(), String> {
    let missing: Vec<String> = RULES_USED
        .iter()
        .filter(|(m, f, n)| !rules.has_function(m, f, Some(*n)))
        .map(|(m, f, n)| format!("rules/{m}.rhai: fn {f}({n} argument(s))"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("比对所需的规则缺失：{}", missing.join("; ")))
    }
}

/// Count and evaluate everyone (the whole run's judging in one call; the
/// run itself feeds a [`Judge`] part by part).
pub fn compare(
    rules: &Rules,
    persons: &[Person],
    results: &HashMap<String, HealthRecord>,
    as_of: DateTime<Utc>,
    window: Duration,
) -> Result<Outcome, Error> {
    let mut out = Outcome::default();
    let mut judge = Judge::new(rules, as_of, window);
    let mut reasons = Vec::new();
    for p in persons {
        let counts = match out.per_address.get_mut(&p.address_id) {
            Some(c) => c,
            None => out.per_address.entry(p.address_id.clone()).or_default(),
        };
        judge.judge(counts, results.get(&p.id_number), &mut reasons)?;
        for reason in reasons.drain(..) {
            out.anomalies.push(Anomaly {
                staff_id: p.staff_id.clone(),
                address_id: p.address_id.clone(),
                reason,
            });
        }
    }
    Ok(out)
}

/// What a run keeps of one person (`comparison_persons.data`, R8.2): who,
/// the health commission's record (None: unknown) and the reasons found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub staff_id: String,
    pub id_number: String,
    pub record: Option<HealthRecord>,
    pub reasons: Vec<String>,
}

/// `[[sampled_at in unix ms, "negative" | "positive"], …]`
struct ReportsOut<'a>(&'a [NatReport]);

impl Serialize for ReportsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for n in self.0 {
            seq.serialize_element(&(n.sampled_at.timestamp_millis(), n.result))?;
        }
        seq.end()
    }
}

/// Append one person's entry to an address's `comparison_persons.data`, a
/// JSON array with one compact entry per person:
/// `[staff_id, id_number, [health_code, doses, completed, [[sampled_at_ms, result], …]] | null, [reason, …]]`.
/// Call [`close_judged`] when the address is complete.
pub fn write_judged(
    out: &mut Vec<u8>,
    staff_id: &str,
    id_number: &str,
    record: Option<&HealthRecord>,
    reasons: &[String],
) {
    out.push(if out.is_empty() { b'[' } else { b',' });
    let record = record.map(|r| {
        (
            r.health_code,
            r.vaccination.doses,
            r.vaccination.completed,
            ReportsOut(&r.nat_reports),
        )
    });
    serde_json::to_writer(&mut *out, &(staff_id, id_number, record, reasons))
        .expect("writing to memory");
}

/// Finish the array [`write_judged`] started (`[]` when empty).
pub fn close_judged(out: &mut Vec<u8>) {
    if out.is_empty() {
        out.push(b'[');
    }
    out.push(b']');
}

type JudgedTuple = (
    String,
    String,
    Option<(HealthCode, u32, bool, Vec<(i64, NatResult)>)>,
    Vec<String>,
);

/// Read back what [`write_judged`] wrote (audits, dry runs of changed rules).
pub fn read_judged(data: &str) -> Result<Vec<Judged>, serde_json::Error> {
    let rows: Vec<JudgedTuple> = serde_json::from_str(data)?;
    Ok(rows
        .into_iter()
        .map(|(staff_id, id_number, record, reasons)| Judged {
            record: record.map(|(health_code, doses, completed, reports)| HealthRecord {
                id_number: id_number.clone(),
                nat_reports: reports
                    .into_iter()
                    .map(|(ms, result)| NatReport {
                        sampled_at: DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                        result,
                    })
                    .collect(),
                vaccination: Vaccination { doses, completed },
                health_code,
            }),
            staff_id,
            id_number,
            reasons,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> std::sync::Arc<Rules> {
        rules_with(None)
    }

    /// The count window `workflows/comparison.yaml` declares (the run's
    /// `count_window`), read as the run reads it.
    fn count_window() -> Duration {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
        let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
        let windows = crate::activities::declared_windows(&bundle)
            .unwrap()
            .expect("comparison.yaml declares its windows");
        Duration::hours(windows.count.into())
    }

    /// The rules of `rules/`, with `statistics.rhai` replaced by `statistics` if given.
    fn rules_with(statistics: Option<&str>) -> std::sync::Arc<Rules> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (w, mut r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
        if let Some(text) = statistics {
            // A deliberately broken script: what the run does with it, not
            // what validation (its declared samples) says.
            r.retain(|f| f.path.ends_with(".rhai"));
            let f = r
                .iter_mut()
                .find(|f| f.path.ends_with("statistics.rhai"))
                .expect("rules/statistics.rhai");
            f.text = text.to_string();
        }
        engine::compile_bundle(&w, &r, &engine::Options::default())
            .unwrap()
            .rules
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn record(
        id: &str,
        reports: &[(&str, NatResult)],
        completed: bool,
        code: HealthCode,
    ) -> (String, HealthRecord) {
        let nat_reports = reports
            .iter()
            .map(|(t, r)| NatReport {
                sampled_at: at(t),
                result: *r,
            })
            .collect();
        let vaccination = Vaccination {
            doses: if completed { 3 } else { 1 },
            completed,
        };
        (
            id.to_string(),
            HealthRecord {
                id_number: id.into(),
                nat_reports,
                vaccination,
                health_code: code,
            },
        )
    }

    fn person(n: u32, address: &str) -> Person {
        Person {
            staff_id: format!("s{n}"),
            address_id: address.into(),
            id_number: format!("id{n}"),
        }
    }

    #[test]
    fn counts_only_the_24_hours_before_the_run_and_flags_by_rule() {
        use NatResult::*;
        let as_of = at("2026-12-01T10:00:00+08:00");
        let results: HashMap<_, _> = [
            record(
                "id1",
                &[("2026-12-01T08:00:00+08:00", Negative)],
                true,
                HealthCode::Green,
            ),
            // Positive, but sampled 25 h before: outside the window, not counted, not flagged.
            record(
                "id2",
                &[("2026-11-30T09:00:00+08:00", Positive)],
                true,
                HealthCode::Green,
            ),
            record(
                "id3",
                &[
                    ("2026-12-01T09:59:00+08:00", Positive),
                    ("2026-12-01T07:00:00+08:00", Negative),
                ],
                false,
                HealthCode::Red,
            ),
            record("id4", &[], false, HealthCode::Yellow),
        ]
        .into_iter()
        .collect();
        let persons = [
            person(1, "a1"),
            person(2, "a1"),
            person(3, "a1"),
            person(4, "a2"),
            person(5, "a2"),
        ];
        let rules = rules();
        let out = compare(&rules, &persons, &results, as_of, count_window()).unwrap();
        let a1 = &out.per_address["a1"];
        assert_eq!(
            (
                a1.persons,
                a1.vaccinated,
                a1.nat_tested,
                a1.negative,
                a1.positive,
                a1.red_yellow,
                a1.unknown
            ),
            (3, 2, 2, 1, 1, 1, 0)
        );
        let judge = Judge::new(&rules, as_of, count_window());
        assert_eq!(judge.vaccination_permille(a1).unwrap(), Some(666));
        assert_eq!(
            judge.vaccination_permille(&Counts::default()).unwrap(),
            None
        );
        let a2 = &out.per_address["a2"];
        assert_eq!(
            (a2.persons, a2.red_yellow, a2.unknown, a2.nat_tested),
            (2, 1, 1, 0),
            "id5 is unknown: counted, not flagged"
        );
        let flagged: Vec<_> = out
            .anomalies
            .iter()
            .map(|a| (a.staff_id.as_str(), a.reason.as_str()))
            .collect();
        assert_eq!(
            flagged,
            [("s3", "核酸阳性"), ("s3", "红码"), ("s4", "黄码")]
        );
    }

    fn sample() -> (Vec<Person>, HashMap<String, HealthRecord>) {
        use NatResult::*;
        let results: HashMap<_, _> = [
            // Tested 2 h before the run, 3 doses, completed.
            record(
                "id1",
                &[("2026-12-01T08:00:00+08:00", Negative)],
                true,
                HealthCode::Green,
            ),
            // Tested 20 h before the run.
            record(
                "id2",
                &[("2026-11-30T14:00:00+08:00", Negative)],
                true,
                HealthCode::Green,
            ),
            // One dose, not completed, yellow code.
            record("id3", &[], false, HealthCode::Yellow),
        ]
        .into_iter()
        .collect();
        let persons = vec![person(1, "a1"), person(2, "a1"), person(3, "a1")];
        (persons, results)
    }

    #[test]
    fn the_statistics_rule_decides_what_is_counted() {
        let as_of = at("2026-12-01T10:00:00+08:00");
        let (persons, results) = sample();
        let count = |rules: &Rules| {
            let out = compare(rules, &persons, &results, as_of, count_window()).unwrap();
            let c = out.per_address["a1"].clone();
            let permille = Judge::new(rules, as_of, count_window())
                .vaccination_permille(&c)
                .unwrap();
            (c, permille)
        };
        let (c, permille) = count(&rules());
        assert_eq!(
            (c.vaccinated, c.nat_tested, c.negative, c.red_yellow),
            (2, 2, 2, 1)
        );
        assert_eq!(permille, Some(666));

        // Policy staff change the rule: vaccinated means at least one dose,
        // tested means within 12 hours, only red counts, and the rate is in
        // whole percent of the known persons.
        let changed = rules_with(Some(
            r#"
            fn classify(person) {
                let recent = person.nat_reports.filter(|r| r.hours_ago < 12);
                let positive = recent.some(|r| r.result == "positive");
                #{
                    vaccinated: person.vaccination.doses >= 1,
                    nat_tested: recent.len() > 0,
                    negative: recent.len() > 0 && !positive,
                    positive: positive,
                    red_yellow: person.health_code == "red",
                }
            }
            fn vaccination_permille(counts) {
                let known = counts.persons - counts.unknown;
                if known == 0 { return (); }
                counts.vaccinated * 100 / known * 10
            }
            "#,
        ));
        let (c, permille) = count(&changed);
        assert_eq!(
            (
                c.persons,
                c.vaccinated,
                c.nat_tested,
                c.negative,
                c.red_yellow
            ),
            (3, 3, 1, 1, 0)
        );
        assert_eq!(permille, Some(1000));
    }

    #[test]
    fn the_statistics_rule_is_asked_once_per_distinct_profile() {
        let as_of = at("2026-12-01T10:00:00+08:00");
        let (_, results) = sample();
        let rules = rules();
        let mut judge = Judge::new(&rules, as_of, count_window());
        let mut counts = Counts::default();
        let mut reasons = Vec::new();
        for _ in 0..100 {
            for id in ["id1", "id2", "id3"] {
                judge
                    .judge(&mut counts, results.get(id), &mut reasons)
                    .unwrap();
            }
            judge.judge(&mut counts, None, &mut reasons).unwrap();
        }
        assert_eq!(judge.classify_calls(), 3);
        assert_eq!(
            (
                counts.persons,
                counts.unknown,
                counts.vaccinated,
                counts.nat_tested
            ),
            (400, 100, 200, 200)
        );
        assert_eq!(reasons.len(), 100, "id3's yellow code, each time");
    }

    #[test]
    fn a_statistics_rule_giving_something_else_is_an_error() {
        let as_of = at("2026-12-01T10:00:00+08:00");
        let (persons, results) = sample();
        for (script, wanted) in [
            (
                "fn classify(p) { 1 } fn vaccination_permille(c) { 0 }",
                "another value",
            ),
            (
                "fn classify(p) { #{ vacinated: true } } fn vaccination_permille(c) { 0 }",
                "unknown counter `vacinated`",
            ),
            (
                "fn classify(p) { #{ vaccinated: 1 } } fn vaccination_permille(c) { 0 }",
                "vaccinated: i64",
            ),
        ] {
            let rules = rules_with(Some(script));
            let e = compare(&rules, &persons, &results, as_of, count_window())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("statistics::classify") && e.contains(wanted),
                "{e}"
            );
        }
        let rules = rules_with(Some(
            "fn classify(p) { #{} } fn vaccination_permille(c) { \"high\" }",
        ));
        let e = Judge::new(&rules, as_of, count_window())
            .vaccination_permille(&Counts::default())
            .unwrap_err();
        assert!(e.to_string().contains("vaccination_permille"), "{e}");
    }

    #[test]
    fn the_rules_a_run_calls_are_checked() {
        assert_eq!(check_rules(&rules()), Ok(()));
        let e = check_rules(&rules_with(Some("fn classify(a, b) { #{} }"))).unwrap_err();
        assert!(
            e.contains("rules/statistics.rhai: fn classify(1 argument(s))")
                && e.contains("fn vaccination_permille"),
            "{e}"
        );
    }

    #[test]
    fn judged_persons_read_back_as_written() {
        let (persons, results) = sample();
        let mut data = Vec::new();
        close_judged(&mut data);
        assert_eq!(
            read_judged(std::str::from_utf8(&data).unwrap()).unwrap(),
            []
        );
        let mut data = Vec::new();
        let mut expected = Vec::new();
        for (k, p) in persons.iter().chain([&person(9, "a1")]).enumerate() {
            let record = results.get(&p.id_number);
            let reasons: Vec<String> = if k == 2 {
                vec!["黄码".into()]
            } else {
                vec![]
            };
            write_judged(&mut data, &p.staff_id, &p.id_number, record, &reasons);
            expected.push(Judged {
                staff_id: p.staff_id.clone(),
                id_number: p.id_number.clone(),
                record: record.cloned(),
                reasons,
            });
        }
        close_judged(&mut data);
        let text = String::from_utf8(data).unwrap();
        assert_eq!(read_judged(&text).unwrap(), expected);
        assert!(
            text.starts_with(r#"[["s1","id1",["green",3,true,[[1796083200000,"negative"]]],[]],"#),
            "{text}"
        );
        assert!(text.ends_with(r#"["s9","id9",null,[]]]"#), "{text}");
    }
}
