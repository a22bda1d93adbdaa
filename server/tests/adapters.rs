//! The health-commission and SMS adapters against wiremock fakes, and the
//! simulator in process and over HTTP on 127.0.0.1.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use server::adapters::health::{Error as HealthError, HealthCommission, HttpHealth, HttpOptions};
use server::adapters::health_sim::{SimRates, Simulator};
use server::adapters::sms::{Error as SmsError, HttpSms, LogSms, Message, SmsGateway};
use server::config::Secret;
use std::time::Duration;
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
        attempts: 3,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
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
async fn health_429_then_success() {
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
    let answer = client(&server, 2000)
        .query(as_of(), 24, ids(10))
        .await
        .unwrap();
    assert_eq!(answer.records.len(), 9);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn health_5xx_exhausting_retries_names_the_batch_and_invents_nothing() {
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
            of: 2,
            attempts: 3,
            reason,
            ..
        } => assert_eq!(reason, "HTTP 503"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("共2批"), "{err}");
}

#[tokio::test]
async fn health_timeout_is_retried_then_reported() {
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
        matches!(&err, HealthError::Batch { reason, attempts: 3, .. } if reason == "超时"),
        "{err:?}"
    );
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
}

#[tokio::test]
async fn sms_sends_with_token_and_retries_with_the_same_key() {
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
    let sms = HttpSms::new(
        server.uri(),
        Secret::new("s3cret"),
        Duration::from_secs(2),
        3,
        Duration::from_millis(5),
    )
    .unwrap();
    let m = Message {
        phone: "13800000000".into(),
        template: "warning_reminder".into(),
        params: json!({"round": 1}),
        idempotency_key: "w1/a1".into(),
    };
    sms.send(m).await.unwrap();
    let keys: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["idempotency_key"].clone())
        .collect();
    assert_eq!(keys, [json!("w1/a1"), json!("w1/a1")]);
    // A 4xx is a refusal, not retried.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422))
        .mount(&server)
        .await;
    let sms = HttpSms::new(
        server.uri(),
        Secret::new("s"),
        Duration::from_secs(2),
        3,
        Duration::from_millis(5),
    )
    .unwrap();
    let m = Message {
        phone: "1".into(),
        template: "t".into(),
        params: Value::Null,
        idempotency_key: "k".into(),
    };
    assert_eq!(
        sms.send(m).await,
        Err(SmsError::Rejected("HTTP 422".into()))
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn log_sms_keeps_one_row_per_key() {
    let store = server::db::open("sqlite::memory:").await.unwrap();
    let clock = std::sync::Arc::new(engine::clock::ManualClock::new(as_of()));
    let sms = LogSms::new(store.pool().clone(), clock);
    let m = Message {
        phone: "13800000000".into(),
        template: "t".into(),
        params: json!({}),
        idempotency_key: "w1/a1".into(),
    };
    sms.send(m.clone()).await.unwrap();
    sms.send(m).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sms_log")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
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
        attempts: 2,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
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
