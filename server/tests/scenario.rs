//! R3–R6 through the real definitions, activities, database and the
//! in-process simulator, with a manual clock: the 05:00 run fills the day's
//! records and opens one warning per anomaly with one digest notice per
//! district; the 10:00 run opens no duplicate; never-disposed warnings get
//! three SMS and tell the district at 8 h.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::{Options, Runtime};
use engine::store::{InstanceFilter, SqlStore, Store};
use server::activities::{registry, Services};
use server::adapters::health_sim::{SimRates, Simulator};
use server::adapters::sms::LogSms;
use std::path::Path;
use std::sync::Arc;

#[path = "support/seed.rs"]
mod seed;
use seed::count;

#[tokio::test]
async fn scheduled_runs_fill_records_open_warnings_once_and_remind() {
    let store: SqlStore = server::db::open("sqlite::memory:").await.unwrap();
    let pool = store.pool().clone();
    seed::seed(&pool, 80).await;
    let start: DateTime<Utc> = "2026-12-01T04:59:00+08:00".parse().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let rates = SimRates {
        positive: 0.1,
        red: 0.05,
        yellow: 0.05,
        missing_nat: 0.05,
        unvaccinated: 0.1,
        unknown: 0.02,
    };
    let services = Arc::new(Services {
        store: store.clone(),
        pool: pool.clone(),
        reader: pool.clone(),
        clock: clock.clone() as Arc<dyn Clock>,
        health: Arc::new(Simulator::new(11, rates)),
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
    rt.run_until_idle().await.unwrap();
    // Before the first run, e1 files its record for one address (R3.4).
    let form = bundle.forms["daily_record"].clone();
    let fields = serde_json::json!({"on_duty": "12", "visitors_registered": 3, "disinfection_done": "on", "temperature_checked": true});
    let now = clock.now().timestamp_millis();
    let filed = server::records::create(&pool, &form, "e1", "e1-a0", "2026-12-01", &fields, now)
        .await
        .unwrap();
    match server::records::create(&pool, &form, "e1", "e1-a0", "2026-12-01", &fields, now).await {
        Err(e @ server::records::Error::AlreadyFiled { .. }) => {
            assert_eq!(e.to_string(), "同一个企业每天只能填报一次信息")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(
            server::records::create(&pool, &form, "e2", "e1-a0", "2026-12-02", &fields, now).await,
            Err(server::records::Error::NotFound)
        ),
        "another enterprise cannot file for e1's address"
    );
    match server::records::create(
        &pool,
        &form,
        "e1",
        "e1-a1",
        "2026-12-01",
        &serde_json::json!({"on_duty": -1}),
        now,
    )
    .await
    {
        Err(server::records::Error::Invalid(errors)) => assert_eq!(errors.len(), 4, "{errors:?}"),
        other => panic!("{other:?}"),
    }
    clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    rt.run_until_idle().await.unwrap();
    let (by, computed): (String, Option<String>) =
        sqlx::query_as("SELECT created_by, computed FROM daily_records WHERE id = $1")
            .bind(&filed)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        by, "enterprise",
        "the run filled the enterprise's own record, no second one"
    );
    assert!(computed.unwrap().contains("\"persons\":20"));

    // The run fills one record per address for the day (R3.4, R4.3).
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM daily_records WHERE day = '2026-12-01' AND computed IS NOT NULL"
        )
        .await,
        4
    );
    let persons: i64 = count(&pool, "SELECT COUNT(*) FROM comparison_runs").await;
    assert_eq!(persons, 1);
    let warnings = count(&pool, "SELECT COUNT(*) FROM warnings").await;
    assert!(warnings > 0, "the simulator's rates give anomalies");
    let wf = InstanceFilter {
        kind: Some("warning".into()),
        ..Default::default()
    };
    assert_eq!(
        store.count_instances(&wf).await.unwrap(),
        warnings,
        "one workflow per warning"
    );
    // One digest per affected district per run, with the right count (R6.1).
    let digests: Vec<(String, String)> = sqlx::query_as(
        "SELECT recipient_id, body FROM notices WHERE title = '新增疫情预警' ORDER BY recipient_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let per_district = |d: &str| {
        let pool = pool.clone();
        let d = d.to_string();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM warnings WHERE district = $1")
                .bind(d)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    for (district, body) in &digests {
        let n = per_district(district).await;
        assert!(
            body.contains(&format!("新增预警{n}条")),
            "{district}: {body}"
        );
    }
    assert_eq!(
        digests.len() as i64,
        count(&pool, "SELECT COUNT(DISTINCT district) FROM warnings").await
    );
    // The first reminder went out by SMS (logged) and as a notice.
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM sms_log").await, warnings);

    // A person with an open warning leaves (R2.5): the warning stays, later runs skip them.
    let (gone,): (String,) = sqlx::query_as("SELECT staff_id FROM warnings ORDER BY id LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let owner: String = sqlx::query_scalar("SELECT enterprise_id FROM staff WHERE id = $1")
        .bind(&gone)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(matches!(
        server::staff::delete(&pool, "nobody", &gone, 0).await,
        Err(server::staff::Error::NotFound)
    ));
    server::staff::delete(&pool, &owner, &gone, 0)
        .await
        .unwrap();
    // 10:00: the same anomalies are still there; no second warning (R5.1), no digest.
    clock.set("2026-12-01T10:00:00+08:00".parse().unwrap());
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_runs").await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT MIN(persons) FROM comparison_runs").await,
        79,
        "the deleted person is not compared"
    );
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT COUNT(*) FROM warnings WHERE staff_id = '{gone}' AND closed_at IS NULL"
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM warnings").await,
        warnings
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM notices WHERE title = '新增疫情预警'"
        )
        .await,
        digests.len() as i64
    );
    // +6 h after creation (11:00) the second reminder; at 13:00 the third and the overdue notice.
    clock.set("2026-12-01T13:00:00+08:00".parse().unwrap());
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM sms_log").await,
        3 * warnings,
        "three SMS per never-disposed warning"
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM notices WHERE recipient_kind = 'district' AND title = '预警超时未处置'").await, warnings);
    // The projection follows the workflows: every warning is overdue now.
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM warnings WHERE disposal_overdue = 1 AND state = 'awaiting_disposal'").await, warnings);

    assert_eq!(
        count(
            &pool,
            "SELECT CAST(SUM(persons) AS BIGINT) FROM comparison_persons"
        )
        .await,
        80 + 79,
        "each run keeps the data every person was judged on"
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_persons").await,
        4 + 4,
        "one row per run and address"
    );
    // What was kept reads back: every person once, the known ones with their
    // record, the reasons those of the anomalies found.
    let kept: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT run_id, persons, data FROM comparison_persons")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut judged = Vec::new();
    for (_, persons, data) in &kept {
        let people = server::comparison::read_judged(data).unwrap();
        assert_eq!(people.len() as i64, *persons);
        judged.extend(people);
    }
    assert_eq!(judged.len(), 159);
    assert!(judged.iter().any(|p| p.record.is_some()));
    let reasons: i64 = judged.iter().map(|p| p.reasons.len() as i64).sum();
    assert_eq!(
        reasons,
        count(
            &pool,
            "SELECT CAST(SUM(anomalies) AS BIGINT) FROM comparison_runs"
        )
        .await
    );

    // One warning through the review loop (R6.2): return needs a comment,
    // the enterprise disposes again, the district closes it: 销号办结.
    let (wid, ent, dis): (String, String, String) =
        sqlx::query_as("SELECT id, enterprise_id, district FROM warnings ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let enterprise = engine::Actor {
        role: "enterprise".into(),
        id: ent,
        name: None,
    };
    let district = engine::Actor {
        role: "district".into(),
        id: dis.clone(),
        name: None,
    };
    let disposal = serde_json::json!({"reported_to_community": true, "community": "书院街社区", "person_situation": "人员已离职"});
    rt.signal(&wid, "dispose", disposal.clone(), enterprise.clone())
        .await
        .unwrap();
    assert!(rt
        .signal(&wid, "return", serde_json::json!({}), district.clone())
        .await
        .is_err());
    rt.signal(
        &wid,
        "return",
        serde_json::json!({"comment": "请补充社区回执"}),
        district.clone(),
    )
    .await
    .unwrap();
    rt.run_until_idle().await.unwrap();
    let returned: String =
        sqlx::query_scalar("SELECT body FROM notices WHERE title = '预警处置被退回整改'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(returned.contains("请补充社区回执"));
    rt.signal(&wid, "dispose", disposal, enterprise)
        .await
        .unwrap();
    rt.signal(&wid, "approve", serde_json::Value::Null, district)
        .await
        .unwrap();
    rt.run_until_idle().await.unwrap();
    let (state, label): (String, Option<String>) =
        sqlx::query_as("SELECT state, status_label FROM warnings WHERE id = $1")
            .bind(&wid)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), label.as_deref()),
        ("closed", Some("销号办结"))
    );

    // A second warning is disposed and never reviewed: 12 h later the city is told (R6.3).
    let (w2, ent2): (String, String) = sqlx::query_as(
        "SELECT id, enterprise_id FROM warnings WHERE closed_at IS NULL ORDER BY id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let disposal = serde_json::json!({"reported_to_community": true, "community": "社区", "person_situation": "居家隔离"});
    rt.signal(
        &w2,
        "dispose",
        disposal,
        engine::Actor {
            role: "enterprise".into(),
            id: ent2.clone(),
            name: None,
        },
    )
    .await
    .unwrap();
    clock.set("2026-12-02T01:00:00+08:00".parse().unwrap());
    rt.run_until_idle().await.unwrap();
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM notices WHERE recipient_kind = 'city' AND title = '预警审核超时上报'").await, 1);
    // It names the district (青羊区住建交局…), not its code.
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT COUNT(*) FROM notices n, enterprises e JOIN districts d ON d.code = e.district \
                 WHERE n.recipient_kind = 'city' AND e.id = '{ent2}' AND n.body LIKE d.name || '未在12小时内%'"
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            &format!("SELECT review_overdue FROM warnings WHERE id = '{w2}'")
        )
        .await,
        1
    );

    // The rest of the week: three runs a day, no new anomalies among the same persons.
    let runs_before = count(&pool, "SELECT COUNT(*) FROM comparison_runs").await;
    for day in 2..=7 {
        for hour in ["05:00", "10:00", "15:00"] {
            clock.set(format!("2026-12-0{day}T{hour}:00+08:00").parse().unwrap());
            rt.run_until_idle().await.unwrap();
        }
    }
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_runs").await,
        runs_before + 18
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM daily_records").await,
        4 * 7,
        "one record per address per day"
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM warnings").await,
        warnings,
        "the same persons open no new warnings"
    );
    // Counts were kept with every projection write, overdue flags included.
    assert_eq!(
        server::warnings::count_mismatches(&pool).await.unwrap(),
        Vec::<String>::new()
    );
}
