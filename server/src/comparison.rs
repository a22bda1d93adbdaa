//! The pure part of a comparison run (比对, DOMAIN.md R4): given the staff
//! and the health commission's answers for them, count per office address
//! the computed fields of the daily record (R3.2) and find the anomalous
//! persons with the rules of `rules/anomaly.rhai` (R4.4).
//!
//! Owns the meaning of the counts (what "tested", "negative", "vaccinated"
//! mean for the 24 hours before the run). Must not do I/O: fetching,
//! storing records and opening warnings belong to the run's activity.

use chrono::{DateTime, Duration, Utc};
use engine::rules::Rules;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// 接种率 in tenths of a percent (e.g. 875 = 87.5%), None without persons.
    pub fn vaccination_permille(&self) -> Option<u64> {
        (self.persons > 0).then(|| self.vaccinated * 1000 / self.persons)
    }
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
    #[error("rule {0} must return a list of reasons (text), got {1}")]
    RuleResult(&'static str, String),
}

/// The outcome of comparing everyone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub per_address: BTreeMap<String, Counts>,
    pub anomalies: Vec<Anomaly>,
}

/// Count and evaluate. Only reports sampled in `(as_of - window, as_of]`
/// count (R4.2, R4.5); the rule sees the person's data with the reports
/// outside the window removed.
pub fn compare(
    rules: &Rules,
    persons: &[Person],
    results: &HashMap<String, HealthRecord>,
    as_of: DateTime<Utc>,
    window: Duration,
) -> Result<Outcome, Error> {
    let mut out = Outcome::default();
    let from = as_of - window;
    for p in persons {
        let counts = out.per_address.entry(p.address_id.clone()).or_default();
        counts.persons += 1;
        let Some(r) = results.get(&p.id_number) else {
            counts.unknown += 1;
            continue;
        };
        let in_window: Vec<&NatReport> = r
            .nat_reports
            .iter()
            .filter(|n| n.sampled_at > from && n.sampled_at <= as_of)
            .collect();
        let positive = in_window.iter().any(|n| n.result == NatResult::Positive);
        if r.vaccination.completed {
            counts.vaccinated += 1;
        }
        if !in_window.is_empty() {
            counts.nat_tested += 1;
            if positive {
                counts.positive += 1;
            } else {
                counts.negative += 1;
            }
        }
        if matches!(r.health_code, HealthCode::Red | HealthCode::Yellow) {
            counts.red_yellow += 1;
        }
        // The rule's argument, built for rhai directly: this runs once per
        // person (a million times a run), and going through JSON costs more
        // than the rule itself.
        let reports: engine::rules::rhai::Array = in_window
            .iter()
            .map(|n| {
                let mut m = engine::rules::rhai::Map::new();
                m.insert("sampled_at".into(), n.sampled_at.to_rfc3339().into());
                m.insert(
                    "result".into(),
                    (if n.result == NatResult::Positive {
                        "positive"
                    } else {
                        "negative"
                    })
                    .into(),
                );
                engine::rules::rhai::Dynamic::from_map(m)
            })
            .collect();
        let mut vaccination = engine::rules::rhai::Map::new();
        vaccination.insert(
            "doses".into(),
            engine::rules::rhai::Dynamic::from_int(i64::from(r.vaccination.doses)),
        );
        vaccination.insert("completed".into(), r.vaccination.completed.into());
        let mut person = engine::rules::rhai::Map::new();
        person.insert("nat_reports".into(), reports.into());
        person.insert("vaccination".into(), vaccination.into());
        let code = match r.health_code {
            HealthCode::Green => "green",
            HealthCode::Yellow => "yellow",
            HealthCode::Red => "red",
        };
        person.insert("health_code".into(), code.into());
        let reasons = rules.call_dynamic("anomaly", "evaluate", vec![person.into()])?;
        let reasons = reasons
            .into_array()
            .map_err(|t| Error::RuleResult("anomaly::evaluate", t.to_string()))?;
        for reason in reasons {
            let reason = reason
                .into_immutable_string()
                .map_err(|t| Error::RuleResult("anomaly::evaluate", t.to_string()))?;
            out.anomalies.push(Anomaly {
                staff_id: p.staff_id.clone(),
                address_id: p.address_id.clone(),
                reason: reason.to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> std::sync::Arc<Rules> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
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
        let out = compare(&rules(), &persons, &results, as_of, Duration::hours(24)).unwrap();
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
        assert_eq!(a1.vaccination_permille(), Some(666));
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
}
