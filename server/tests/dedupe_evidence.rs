//! R5.1 through the real definitions, activities and runtime: a warning
//! closed by review (销号办结) is not opened again by the evidence it was
//! about — the same positive NAT report, a code colour that has not changed
//! since — only by new evidence: a later positive report, or a code that
//! turned red again after a run found it green. What counts as the same
//! evidence is `rules/dedupe.rhai` `evidence`.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::{Options, Runtime};
use engine::store::SqlStore;
use server::activities::{registry, Services};
use server::adapters::health::{Answer, HealthCommission};
use server::adapters::sms::LogSms;
use server::adapters::BoxFuture;
use server::comparison::{HealthCode, HealthRecord, NatReport, NatResult, Vaccination};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[path = "support/seed.rs"]
mod seed;
use seed::{count, id_number};

/// The health commission's data, set by the test between runs.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<HashMap<String, HealthRecord>>>);

impl Fake {
    fn set(&self, n: u32, code: HealthCode, positive_at: Option<DateTime<Utc>>) {
        let id = id_number(n);
        self.0.lock().unwrap().insert(
            id.clone(),
            HealthRecord {
                id_number: id,
                nat_reports: positive_at
                    .map(|at| NatReport {
                        sampled_at: at,
                        result: NatResult::Positive,
                    })
                    .into_iter()
                    .collect(),
                vaccination: Vaccination {
                    doses: 3,
                    completed: true,
                },
                health_code: code,
            },
        );
    }
}

impl HealthCommission for Fake {
    fn query(
        &self,
        _as_of: DateTime<Utc>,
        _window_hours: u32,
        ids: Vec<String>,
    ) -> BoxFuture<Result<Answer, server::adapters::health::Error>> {
        let known = self.0.lock().unwrap().clone();
        Box::pin(async move {
            let records: HashMap<_, _> = ids
                .iter()
                .filter_map(|id| known.get(id).map(|r| (id.clone(), r.clone())))
                .collect();
            let unknown = ids.len() - records.len();
            Ok(Answer { records, unknown })
        })
    }
}

#[tokio::test]
async fn a_closed_warning_is_opened_again_only_by_new_evidence_on_sqlite() {
    closed_warnings_reopen_only_on_new_evidence(server::db::open("sqlite::memory:").await.unwrap())
        .await;
}

#[tokio::test]
async fn a_closed_warning_is_opened_again_only_by_new_evidence_on_postgres() {
    if let Some(url) = engine::testing::fresh_postgres("dedupe_evidence").await {
        closed_warnings_reopen_only_on_new_evidence(server::db::open(&url).await.unwrap()).await;
    }
}

async fn closed_warnings_reopen_only_on_new_evidence(store: SqlStore) {
    let pool = store.pool().clone();
    seed::seed(&pool, 4).await;
    let start: DateTime<Utc> = "2026-12-01T08:00:00+08:00".parse().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let health = Fake::default();
    for n in 0..4 {
        health.set(n, HealthCode::Green, None);
    }
    // s0: a positive report sampled at 07:00; s1: a red code.
    let report = start - chrono::Duration::hours(1);
    health.set(0, HealthCode::Green, Some(report));
    health.set(1, HealthCode::Red, None);
    let services = Arc::new(Services {
        store: store.clone(),
        pool: pool.clone(),
        reader: pool.clone(),
        clock: clock.clone() as Arc<dyn Clock>,
        health: Arc::new(health.clone()),
        sms: Arc::new(LogSms::new(pool.clone(), clock.clone() as Arc<dyn Clock>)),
        rules: bundle.rules.clone(),
        rules_by_version: Default::default(),
    });
    let rt = Runtime::new(
        store.clone(),
        clock.clone() as Arc<dyn Clock>,
        &bundle,
        registry(services),
        Options::default(),
    )
    .await
    .unwrap();
    let mut runs = 0;
    let mut run = || {
        runs += 1;
        let (rt, clock) = (rt.clone(), clock.clone());
        async move {
            clock.advance(std::time::Duration::from_secs(30 * 60));
            rt.start("comparison", &format!("run-{runs}"), serde_json::json!({}))
                .await
                .unwrap();
            rt.run_until_idle().await.unwrap();
        }
    };
    let open_reasons = |pool: sqlx::AnyPool| async move {
        sqlx::query_as::<_, (String, String, Option<String>)>(
            "SELECT staff_id, reason, evidence FROM warnings WHERE closed_at IS NULL ORDER BY staff_id, reason",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let close_all = |pool: sqlx::AnyPool, rt: Runtime<SqlStore>| async move {
        let open: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, enterprise_id, district FROM warnings WHERE closed_at IS NULL",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for (id, enterprise, district) in open {
            let actor = |role: &str, id: &str| engine::Actor {
                role: role.into(),
                id: id.into(),
                name: None,
            };
            let disposal = serde_json::json!({"reported_to_community": true, "community": "书院街社区", "person_situation": "人员已离职"});
            rt.signal(&id, "dispose", disposal, actor("enterprise", &enterprise))
                .await
                .unwrap();
            rt.signal(
                &id,
                "approve",
                serde_json::Value::Null,
                actor("district", &district),
            )
            .await
            .unwrap();
        }
        rt.run_until_idle().await.unwrap();
    };

    run().await;
    let first = open_reasons(pool.clone()).await;
    assert_eq!(
        first
            .iter()
            .map(|w| (w.0.as_str(), w.1.as_str()))
            .collect::<Vec<_>>(),
        [("s0", "核酸阳性"), ("s1", "红码")]
    );
    assert!(
        first[0]
            .2
            .as_deref()
            .unwrap()
            .contains(&report.to_rfc3339()),
        "{first:?}"
    );
    close_all(pool.clone(), rt.clone()).await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM warnings WHERE closed_at IS NULL"
        )
        .await,
        0
    );

    // The same report and the same red code: nothing opened again.
    run().await;
    assert!(open_reasons(pool.clone()).await.is_empty());
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM warnings").await, 2);

    // A later positive report is new evidence; s1's code turns green.
    let later = clock.now() - chrono::Duration::minutes(10);
    health.set(0, HealthCode::Green, Some(later));
    health.set(1, HealthCode::Green, None);
    run().await;
    let second = open_reasons(pool.clone()).await;
    assert_eq!(
        second
            .iter()
            .map(|w| (w.0.as_str(), w.1.as_str()))
            .collect::<Vec<_>>(),
        [("s0", "核酸阳性")]
    );
    assert!(second[0]
        .2
        .as_deref()
        .unwrap()
        .contains(&later.to_rfc3339()));

    // Red again after a run saw it green: a new warning.
    health.set(1, HealthCode::Red, None);
    run().await;
    let third = open_reasons(pool.clone()).await;
    assert_eq!(
        third
            .iter()
            .map(|w| (w.0.as_str(), w.1.as_str()))
            .collect::<Vec<_>>(),
        [("s0", "核酸阳性"), ("s1", "红码")]
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM warnings").await, 4);
    assert!(server::warnings::count_mismatches(&pool)
        .await
        .unwrap()
        .is_empty());
}
