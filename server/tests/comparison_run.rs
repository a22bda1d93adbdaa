//! The comparison run's activity on SQLite and PostgreSQL: the health
//! commission's answer arrives in many small parts over HTTP (so addresses
//! straddle parts) and must give the same numbers as judging everyone at
//! once; the day's records are filled (R3.4), the per-person data reads
//! back, a retry returns the stored result, and a run whose data cannot be
//! fetched leaves nothing behind.

use chrono::{DateTime, Utc};
use engine::clock::{Clock, ManualClock};
use engine::runtime::{Activities, ActivityCall, ActivityError};
use server::activities::{registry, Services};
use server::adapters::health::{HealthCommission, HttpHealth, HttpOptions};
use server::adapters::health_sim::{SimRates, Simulator};
use server::adapters::sms::LogSms;
use server::comparison::{Counts, Judge, Person};
use sqlx::Executor;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn id_number(n: u32) -> String {
    let first17 = format!("51010419900101{n:03}");
    let c = server::domain::id_number::check_digit(&first17).unwrap();
    format!("{first17}{c}")
}

fn rates() -> SimRates {
    SimRates {
        positive: 0.1,
        red: 0.05,
        yellow: 0.05,
        missing_nat: 0.1,
        unvaccinated: 0.2,
        unknown: 0.05,
    }
}

fn as_of() -> DateTime<Utc> {
    "2026-12-01T10:00:00+08:00".parse().unwrap()
}

/// Two enterprises, three addresses, 60 persons (one of them deleted).
async fn seed(pool: &sqlx::AnyPool) -> Vec<Person> {
    for (code, n) in [("jinjiang", 1), ("qingyang", 2)] {
        pool.execute(
            format!("INSERT INTO districts (code, number, name, liaison_name, phone) VALUES ('{code}', {n}, '{code}', '某人', '84527022')")
                .as_str(),
        )
        .await
        .unwrap();
    }
    for (e, district) in [("e1", "jinjiang"), ("e2", "qingyang")] {
        pool.execute(
            format!(
                "INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, created_at, updated_at) \
                 VALUES ('{e}', 'code-{e}', '企业{e}', 'construction', '{district}', '地址', '张三', '13800000000', 0, 0)"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    let addresses = [("e1-a0", "e1"), ("e1-a1", "e1"), ("e2-a0", "e2")];
    for (a, e) in addresses {
        pool.execute(format!("INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ('{a}', '{e}', '地址', 'jinjiang', 0)").as_str())
            .await
            .unwrap();
    }
    let mut persons = Vec::new();
    for n in 0..60u32 {
        let (a, e) = addresses[(n % 3) as usize];
        let deleted = if n == 7 { "1" } else { "NULL" };
        pool.execute(
            format!(
                "INSERT INTO staff (id, enterprise_id, address_id, name, id_number, created_at, updated_at, deleted_at) \
                 VALUES ('s{n:02}', '{e}', '{a}', '人员{n}', '{}', 0, 0, {deleted})",
                id_number(n)
            )
            .as_str(),
        )
        .await
        .unwrap();
        if n != 7 {
            persons.push(Person {
                staff_id: format!("s{n:02}"),
                address_id: a.into(),
                id_number: id_number(n),
            });
        }
    }
    persons
}

fn bundle() -> engine::Bundle {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap()
}

fn activities(
    store: &engine::store::SqlStore,
    health: Arc<dyn HealthCommission>,
    rules: Arc<engine::rules::Rules>,
) -> Activities {
    let clock = Arc::new(ManualClock::new(as_of())) as Arc<dyn Clock>;
    registry(Arc::new(Services {
        store: store.clone(),
        pool: store.pool().clone(),
        reader: store.reader().clone(),
        clock: clock.clone(),
        health,
        sms: Arc::new(LogSms::new(store.pool().clone(), clock)),
        rules,
        rules_by_version: Default::default(),
    }))
}

async fn run(acts: &Activities, key: &str) -> Result<serde_json::Value, ActivityError> {
    let call = ActivityCall {
        instance_id: key.into(),
        activity_id: "a1".into(),
        name: "run_comparison".into(),
        args: serde_json::json!({"as_of": as_of().to_rfc3339(), "count_window": "24h", "nat_window": "24h"}),
        idempotency_key: format!("{key}/a1"),
        attempt: 1,
    };
    acts.get("run_comparison").unwrap().call(call).await
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The simulator over loopback HTTP, asked `batch` ids at a time.
async fn http_health(sim: Simulator, batch: usize, status_only: Option<u16>) -> HttpHealth {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    match status_only {
        None => {
            tokio::spawn(server::adapters::health_sim::serve(
                listener,
                sim,
                "tok".into(),
            ));
        }
        Some(code) => {
            // Every request fails with `code`.
            let app = axum::Router::new().route(
                "/v1/health/query",
                axum::routing::post(move || async move {
                    axum::http::StatusCode::from_u16(code).unwrap()
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    HttpHealth::new(HttpOptions {
        base_url: url,
        token: server::config::Secret::new("tok"),
        timeout: Duration::from_secs(5),
        batch_size: batch,
        concurrency: 3,
    })
    .unwrap()
}

async fn check(url: &str) {
    let store = server::db::open(url).await.unwrap();
    let pool = store.pool().clone();
    let persons = seed(&pool).await;
    let bundle = bundle();
    let sim = Simulator::new(5, rates());

    // What judging everyone at once gives.
    let ids: Vec<String> = persons.iter().map(|p| p.id_number.clone()).collect();
    let answer = sim.query(as_of(), 24, ids).await.unwrap();
    let expected = server::comparison::compare(
        &bundle.rules,
        &persons,
        &answer.records,
        as_of(),
        chrono::Duration::hours(24),
    )
    .unwrap();
    assert!(!expected.anomalies.is_empty(), "the rates give anomalies");

    // e1 filed its record for e1-a0 before the run (R3.4).
    let form = bundle.forms["daily_record"].clone();
    let fields = serde_json::json!({"on_duty": "12", "visitors_registered": 3, "disinfection_done": "on", "temperature_checked": true});
    let filed = server::records::create(&pool, &form, "e1", "e1-a0", "2026-12-01", &fields, 0)
        .await
        .unwrap();

    // A run whose data cannot be fetched: retried later, nothing written.
    let failing = activities(
        &store,
        Arc::new(http_health(sim.clone(), 7, Some(503)).await),
        bundle.rules.clone(),
    );
    match run(&failing, "down").await {
        Err(ActivityError::Retryable(e)) => assert!(e.contains("HTTP 503"), "{e}"),
        other => panic!("{other:?}"),
    }
    for table in [
        "comparison_runs",
        "comparison_persons",
        "warnings",
        "sms_log",
    ] {
        assert_eq!(
            count(&pool, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM daily_records WHERE computed IS NOT NULL"
        )
        .await,
        0
    );

    // Seven ids a request: 59 persons in 9 parts, addresses straddling parts.
    let acts = activities(
        &store,
        Arc::new(http_health(sim, 7, None).await),
        bundle.rules.clone(),
    );
    let result = run(&acts, "run1").await.unwrap();
    assert_eq!(result["summary"]["persons"], 59);
    assert_eq!(result["summary"]["addresses"], 3);
    assert_eq!(
        result["summary"]["anomalies"],
        expected.anomalies.len() as i64
    );
    assert_eq!(result["summary"]["unknown"], answer.unknown as i64);

    // The day's records carry the same numbers; e1's own record was filled.
    let judge = Judge::new(&bundle.rules, as_of(), chrono::Duration::hours(24));
    let records: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT id, address_id, created_by, computed FROM daily_records WHERE day = '2026-12-01' ORDER BY address_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(records.len(), 3);
    for (id, address, by, computed) in &records {
        let got: serde_json::Value = serde_json::from_str(computed).unwrap();
        let want: &Counts = &expected.per_address[address];
        let mut want_json = serde_json::to_value(want).unwrap();
        want_json["vaccination_permille"] =
            serde_json::json!(judge.vaccination_permille(want).unwrap());
        // The counts' look-back as the definition gave it.
        want_json["window_hours"] = serde_json::json!(24);
        assert_eq!(got, want_json, "{address}");
        if address == "e1-a0" {
            assert_eq!((id, by.as_str()), (&filed, "enterprise"));
        }
    }

    // Per-person data: one row per address, every person once, by staff id.
    let kept: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT address_id, persons, data FROM comparison_persons WHERE run_id = 'run1/a1' ORDER BY address_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kept.len(), 3);
    let mut reasons: HashMap<String, Vec<String>> = HashMap::new();
    for a in &expected.anomalies {
        reasons
            .entry(a.staff_id.clone())
            .or_default()
            .push(a.reason.clone());
    }
    for (address, n, data) in &kept {
        let judged = server::comparison::read_judged(data).unwrap();
        let mine: Vec<&Person> = persons
            .iter()
            .filter(|p| &p.address_id == address)
            .collect();
        assert_eq!(judged.len() as i64, *n);
        assert_eq!(judged.len(), mine.len());
        for (j, p) in judged.iter().zip(&mine) {
            assert_eq!((&j.staff_id, &j.id_number), (&p.staff_id, &p.id_number));
            assert_eq!(j.record.as_ref(), answer.records.get(&p.id_number));
            assert_eq!(
                &j.reasons,
                reasons.get(&p.staff_id).unwrap_or(&Vec::new()),
                "{}",
                p.staff_id
            );
        }
    }

    // One warning per anomaly, with who and where.
    let warnings = count(&pool, "SELECT COUNT(*) FROM warnings").await;
    assert_eq!(warnings, expected.anomalies.len() as i64);
    assert_eq!(
        result["summary"]["new_warnings"].as_i64().unwrap(),
        warnings
    );
    // Ids are the run's number, then the warning's within the run.
    let number = result["number"].as_i64().unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM warnings")
        .fetch_all(&pool)
        .await
        .unwrap();
    for k in 1..=warnings {
        assert!(ids.contains(&format!("{number}-{k}")), "{ids:?}");
    }
    let (name, masked, enterprise): (String, String, String) = sqlx::query_as(
        "SELECT person_name, person_masked, enterprise_id FROM warnings ORDER BY id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(name.starts_with("人员"), "{name}");
    assert!(masked.contains('*'), "{masked}");
    assert!(enterprise == "e1" || enterprise == "e2");

    // A retry returns the stored result and writes nothing.
    let again = run(&acts, "run1").await.unwrap();
    assert_eq!(again, result);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_runs").await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM comparison_persons").await,
        3
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM warnings").await,
        warnings
    );

    // A later run of the same day: same records updated, no second warning (R5.1).
    let later = run(&acts, "run2").await.unwrap();
    assert_eq!(later["summary"]["new_warnings"], 0);
    assert_eq!(later["number"].as_i64().unwrap(), number + 1);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM daily_records").await, 3);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM warnings").await,
        warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparison_run_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("server-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    check(&format!(
        "sqlite://{}?mode=rwc",
        dir.join("run.db").display()
    ))
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn comparison_run_on_an_in_memory_sqlite_and_a_current_thread_runtime() {
    check("sqlite::memory:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparison_run_on_postgres() {
    let Some(url) = engine::testing::postgres_url(module_path!()) else {
        return;
    };
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&url).await.unwrap();
    admin
        .execute("DROP DATABASE IF EXISTS server_comparison_run WITH (FORCE)")
        .await
        .unwrap();
    admin
        .execute("CREATE DATABASE server_comparison_run")
        .await
        .unwrap();
    let base = url.rsplit_once('/').unwrap().0;
    check(&format!("{base}/server_comparison_run")).await;
}
