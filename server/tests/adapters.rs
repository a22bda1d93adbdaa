//! The health-commission and SMS adapters against wiremock fakes, and the
//! simulator in process and over HTTP on 127.0.0.1.
//!
//! One attempt per call: the adapters classify a failure (retryable or
//! not) and the engine's retry policy (workflows/activities.yaml) repeats
//! the call, with the same idempotency key.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use server::adapters::health::{Error as HealthError, HealthCommission, HttpHealth, HttpOptions};
use server::adapters::health_sim::{SimRates, Simulator};
use server::adapters::sms::{Error as SmsError, HttpSms, Inbox, LogSms, Message, SmsGateway};
use server::config::Secret;
use std::time::Duration;
use tracing_subscriber::util::SubscriberInitExt;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn as_of() -> DateTime<Utc> {
    "2026-12-01T02:00:00Z".parse().unwrap()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("id{i:05}")).collect()
}

/// Answers every requested id except those ending in 7, plus one stranger.
struct Echo;

impl Respond for Echo {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let mut results: Vec<Value> = body["id_numbers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| !i.as_str().unwrap().ends_with('7'))
            .map(|i| json!({"id_number": i, "nat_reports": [{"sampled_at": "2026-12-01T01:00:00Z", "result": "negative"}], "vaccination": {"doses": 3, "completed": true}, "health_code": "green"}))
            .collect();
        results.push(json!({"id_number": "not-asked", "nat_reports": [], "vaccination": {"doses": 0, "completed": false}, "health_code": "red"}));
        ResponseTemplate::new(200).set_body_json(json!({ "results": results }))
    }
}

fn client(server: &MockServer, timeout_ms: u64) -> HttpHealth {
    HttpHealth::new(HttpOptions {
        base_url: server.uri(),
        token: Secret::new("t0ken"),
        timeout: Duration::from_millis(timeout_ms),
        batch_size: 1000,
        concurrency: 2,
    })
    .unwrap()
}

async fn health_server() -> MockServer {
    MockServer::start().await
}

#[tokio::test]
async fn health_success_batches_and_counts_unknown_ids() {
    let server = health_server().await;
    Mock::given(method("POST"))
        .and(path("/v1/health/query"))
        .and(header("authorization", "Bearer t0ken"))
        .respond_with(Echo)
        .mount(&server)
        .await;
    let answer = client(&server, 2000)
        .query(as_of(), 24, ids(2500))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["id_numbers"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["window_hours"], 24);
    assert_eq!(body["as_of"], "2026-12-01T02:00:00Z");
    assert_eq!(answer.unknown, 250, "ids ending in 7 are unknown: counted");
    assert_eq!(answer.records.len(), 2250);
    assert!(
        !answer.records.contains_key("not-asked"),
        "ids not asked for are ignored"
    );
}

#[tokio::test]
async fn health_429_fails_the_call_once_and_the_next_call_succeeds() {
    let server = health_server().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(Echo)
        .mount(&server)
        .await;
    let health = client(&server, 2000);
    // The first call makes one attempt and says it is worth retrying...
    let err = health.query(as_of(), 24, ids(10)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        matches!(&err, HealthError::Batch { batch: 1, of: 1, reason, .. } if reason == "HTTP 429"),
        "{err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    // ...and the engine's retry (the next call) gets the answer.
    let answer = health.query(as_of(), 24, ids(10)).await.unwrap();
    assert_eq!(answer.records.len(), 9);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn health_5xx_fails_the_call_naming_the_batch_one_attempt_per_batch() {
    let server = health_server().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = client(&server, 2000)
        .query(as_of(), 24, ids(1500))
        .await
        .unwrap_err();
    match &err {
        HealthError::Batch {
            batch: 1,
            of: 2,
            reason,
            retryable: true,
        } => assert_eq!(reason, "HTTP 503"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("共2批"), "{err}");
    // No batch was asked twice: retrying is the engine's.
    let mut firsts: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["id_numbers"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let asked = firsts.len();
    firsts.dedup();
    assert!(asked <= 2 && firsts.len() == asked, "{firsts:?}");
}

#[tokio::test]
async fn health_4xx_is_permanent() {
    let server = health_server().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    let err = client(&server, 2000)
        .query(as_of(), 24, ids(3))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn health_timeout_fails_the_call_as_retryable() {
    let server = health_server().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"results": []}))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&server)
        .await;
    let err = client(&server, 50)
        .query(as_of(), 24, ids(3))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HealthError::Batch { reason, retryable: true, .. } if reason == "超时"),
        "{err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn health_malformed_json_is_an_error() {
    let server = health_server().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"results\": [oops"))
        .mount(&server)
        .await;
    let err = client(&server, 2000)
        .query(as_of(), 24, ids(3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HealthError::Malformed { batch: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

fn sms_client(server: &MockServer, token: &str, timeout_ms: u64) -> HttpSms {
    HttpSms::new(
        server.uri(),
        Secret::new(token),
        Duration::from_millis(timeout_ms),
    )
    .unwrap()
}

fn keys(requests: &[Request]) -> Vec<Value> {
    requests
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["idempotency_key"].clone())
        .collect()
}

#[tokio::test]
async fn sms_makes_one_attempt_and_the_retry_reuses_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/sms/send"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/sms/send"))
        .and(header("authorization", "Bearer s3cret"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let sms = sms_client(&server, "s3cret", 2000);
    let m = Message::new(
        "13800000000",
        "warning_reminder",
        json!({"round": 1}),
        "w1/a1",
    );
    // 5xx: one attempt, worth retrying.
    assert_eq!(
        sms.send(m.clone()).await,
        Err(SmsError::Unavailable("HTTP 502".into()))
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    // The engine's retry: the same message, the same key.
    sms.send(m).await.unwrap();
    assert_eq!(
        keys(&server.received_requests().await.unwrap()),
        [json!("w1/a1"), json!("w1/a1")]
    );
}

#[tokio::test]
async fn sms_429_and_timeouts_are_retryable_other_4xx_are_refusals() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422))
        .mount(&server)
        .await;
    let sms = sms_client(&server, "s", 100);
    let m = Message::new("1", "t", Value::Null, "k");
    assert_eq!(
        sms.send(m.clone()).await,
        Err(SmsError::Unavailable("HTTP 429".into()))
    );
    assert_eq!(
        sms.send(m.clone()).await,
        Err(SmsError::Unavailable("超时".into()))
    );
    assert_eq!(
        sms.send(m).await,
        Err(SmsError::Rejected("HTTP 422".into()))
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

/// Everything the log SMS writes to the log, captured.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_sms_keeps_one_row_per_key_and_never_stores_or_logs_a_secret() {
    let logged = Captured::default();
    let writer = logged.clone();
    let _guard = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();
    let store = server::db::open("sqlite::memory:").await.unwrap();
    let clock = std::sync::Arc::new(engine::clock::ManualClock::new(as_of()));
    let inbox = Inbox::default();
    let sms = LogSms::new(store.pool().clone(), clock).with_console(inbox.clone());
    let m = Message::new(
        "13800000000",
        "account_created",
        json!({"username": "jj00000001", "password": "Pw-5ecret-x9"}),
        "register/jj00000001",
    )
    .secret(&["password"]);
    assert!(!format!("{m:?}").contains("Pw-5ecret-x9"), "{m:?}");
    sms.send(m.clone()).await.unwrap();
    sms.send(m).await.unwrap();
    // A login code not marked secret is still redacted (a safety net).
    let code = Message::new("13800000000", "login_code", json!({"code": "402917"}), "c1");
    sms.send(code).await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT template, params FROM sms_log ORDER BY template")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 2, "one row per key: {rows:?}");
    let stored: Value = serde_json::from_str(&rows[0].1).unwrap();
    assert_eq!(
        stored,
        json!({"username": "jj00000001", "password": "******"})
    );
    assert_eq!(rows[1].1, r#"{"code":"******"}"#);
    let log = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
    // The log line names the template and key, with the mobile masked and
    // no parameters (issue 15: no personal data in logs).
    assert!(
        log.contains("register/jj00000001") && log.contains("account_created"),
        "{log}"
    );
    assert!(!log.contains("13800000000"), "{log}");
    assert!(
        !log.contains("Pw-5ecret-x9") && !log.contains("402917"),
        "{log}"
    );
    // In a demo the phone (here the in-memory inbox) has it in clear.
    assert_eq!(
        inbox.last_param("account_created", "password").as_deref(),
        Some("Pw-5ecret-x9")
    );
}

#[tokio::test]
async fn the_http_gateway_gets_the_secret_it_must_deliver() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let m = Message::new("1", "login_code", json!({"code": "123456"}), "k").secret(&["code"]);
    sms_client(&server, "s", 2000).send(m).await.unwrap();
    let body: Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        body,
        json!({"phone": "1", "template": "login_code", "params": {"code": "123456"}, "idempotency_key": "k"})
    );
}

#[tokio::test]
async fn simulator_is_deterministic_and_honours_its_rates() {
    let rates = SimRates {
        positive: 0.05,
        red: 0.02,
        yellow: 0.03,
        missing_nat: 0.1,
        unvaccinated: 0.2,
        unknown: 0.01,
    };
    let a = Simulator::new(7, rates);
    let ids = ids(10_000);
    let one = a.query(as_of(), 24, ids.clone()).await.unwrap();
    let two = Simulator::new(7, rates)
        .query(as_of(), 24, ids.clone())
        .await
        .unwrap();
    assert_eq!(one, two, "same seed, same answers");
    assert_ne!(
        one,
        Simulator::new(8, rates)
            .query(as_of(), 24, ids.clone())
            .await
            .unwrap()
    );
    let near = |count: usize, rate: f64, of: usize| {
        (count as f64 / of as f64 - rate).abs() < rate * 0.3 + 0.002
    };
    assert!(near(one.unknown, 0.01, 10_000), "unknown {}", one.unknown);
    let recs: Vec<_> = one.records.values().collect();
    let n = recs.len();
    let positive = recs
        .iter()
        .filter(|r| {
            r.nat_reports
                .iter()
                .any(|x| x.result == server::comparison::NatResult::Positive)
        })
        .count();
    let red = recs
        .iter()
        .filter(|r| r.health_code == server::comparison::HealthCode::Red)
        .count();
    let missing = recs.iter().filter(|r| r.nat_reports.is_empty()).count();
    let unvaccinated = recs.iter().filter(|r| !r.vaccination.completed).count();
    assert!(near(positive, 0.05 * 0.9, n), "positive {positive}");
    assert!(near(red, 0.02, n), "red {red}");
    assert!(near(missing, 0.1, n), "missing {missing}");
    assert!(near(unvaccinated, 0.2, n), "unvaccinated {unvaccinated}");
    // Reports fall inside the 24 hours before the run.
    assert!(recs
        .iter()
        .flat_map(|r| &r.nat_reports)
        .all(|x| x.sampled_at <= as_of() && x.sampled_at > as_of() - chrono::Duration::hours(24)));
}

#[tokio::test]
async fn simulator_over_http_answers_the_real_client_and_enforces_the_contract() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sim = Simulator::new(3, SimRates::default());
    tokio::spawn(server::adapters::health_sim::serve(
        listener,
        sim.clone(),
        "tok".into(),
    ));
    let http = HttpHealth::new(HttpOptions {
        base_url: url.clone(),
        token: Secret::new("tok"),
        timeout: Duration::from_secs(5),
        batch_size: 1000,
        concurrency: 4,
    })
    .unwrap();
    let ids = ids(2300);
    assert_eq!(
        http.query(as_of(), 24, ids.clone()).await.unwrap(),
        sim.query(as_of(), 24, ids.clone()).await.unwrap()
    );
    let raw = reqwest::Client::new();
    let too_many = json!({"as_of": as_of(), "window_hours": 24, "id_numbers": (0..1001).map(|i| i.to_string()).collect::<Vec<_>>()});
    let r = raw
        .post(format!("{url}/v1/health/query"))
        .bearer_auth("tok")
        .json(&too_many)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = raw
        .post(format!("{url}/v1/health/query"))
        .bearer_auth("wrong")
        .json(&json!({"as_of": as_of(), "window_hours": 24, "id_numbers": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// The whole path: the 05:00 run opens warnings whose reminder SMS goes to
/// a gateway that always answers 503. Each message is attempted exactly as
/// many times as `notify_enterprise`'s retry policy in
/// workflows/activities.yaml says (8), always with its one key — not 8 × the
/// adapter's own retries as before.
#[tokio::test]
async fn the_engine_is_the_one_retry_owner_of_an_sms() {
    use engine::clock::{Clock, ManualClock};
    use server::system::{ClockChoice, Paths, System};
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/sms/send"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&gateway)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = server::config::Config {
        database_url: format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display()),
        ..Default::default()
    };
    config.sms.mode = server::config::SmsMode::Http;
    config.sms.base_url = gateway.uri();
    config.sms.token = Secret::new("t");
    config.sms.timeout_ms = 2000;
    config.health.sim_rates.positive = 0.05;
    config.health.sim_rates.red = 0.03;
    let clock = std::sync::Arc::new(ManualClock::new(
        "2026-12-01T04:59:00+08:00".parse().unwrap(),
    ));
    let sys = System::open(
        &config,
        &Paths::repository(),
        ClockChoice::Adjustable(clock.clone()),
        engine::runtime::Options::default(),
    )
    .await
    .unwrap();
    server::demo::seed(&sys.pool, &sys.districts, clock.now().timestamp_millis())
        .await
        .unwrap();
    sys.runtime.run_until_idle().await.unwrap();
    clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    sys.runtime.run_until_idle().await.unwrap();
    let warnings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM warnings")
        .fetch_one(&sys.pool)
        .await
        .unwrap();
    assert!(warnings > 0);
    // The policy's backoff adds up to about 36 minutes; an hour more on
    // the clock, well before the 6 h reminder.
    for _ in 0..30 {
        clock.advance(Duration::from_secs(120));
        sys.runtime.run_until_idle().await.unwrap();
    }
    let mut per_key = std::collections::BTreeMap::<String, usize>::new();
    for k in keys(&gateway.received_requests().await.unwrap()) {
        *per_key.entry(k.as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_key.len() as i64, warnings, "one message per warning");
    assert!(per_key.values().all(|&n| n == 8), "{per_key:?}");
    // Nothing went to the log instead.
    let logged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sms_log")
        .fetch_one(&sys.pool)
        .await
        .unwrap();
    assert_eq!(logged, 0);
}
