//! A health-commission simulator speaking the same contract, for the
//! embedded default (in process), tests and demos (over HTTP on 127.0.0.1).
//! Each person's data is derived from a hash of the seed and the id number,
//! so the same seed always gives the same answers; rates of positives,
//! red/yellow codes, missing NAT, unvaccinated and unknown persons are
//! configurable.

use super::health::{Answer, Error, HealthCommission, MAX_BATCH};
use super::BoxFuture;
use crate::comparison::{HealthCode, HealthRecord, NatReport, NatResult, Vaccination};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimRates {
    pub positive: f64,
    pub red: f64,
    pub yellow: f64,
    pub missing_nat: f64,
    pub unvaccinated: f64,
    pub unknown: f64,
}

impl Default for SimRates {
    fn default() -> Self {
        SimRates {
            positive: 0.002,
            red: 0.001,
            yellow: 0.003,
            missing_nat: 0.05,
            unvaccinated: 0.08,
            unknown: 0.001,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Simulator {
    pub seed: u64,
    pub rates: SimRates,
}

fn splitmix(x: &mut u64) -> f64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Simulator {
    pub fn new(seed: u64, rates: SimRates) -> Self {
        Simulator { seed, rates }
    }

    /// The person's data as of `as_of`, or None if unknown to the commission.
    pub fn record(
        &self,
        id: &str,
        as_of: DateTime<Utc>,
        window_hours: u32,
    ) -> Option<HealthRecord> {
        let mut state = id.bytes().fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut draw = || splitmix(&mut state);
        let r = &self.rates;
        if draw() < r.unknown {
            return None;
        }
        let (missing, when, positive) = (draw() < r.missing_nat, draw(), draw() < r.positive);
        let nat_reports = if missing {
            vec![]
        } else {
            let back = Duration::seconds((when * f64::from(window_hours) * 3600.0) as i64);
            let result = if positive {
                NatResult::Positive
            } else {
                NatResult::Negative
            };
            vec![NatReport {
                sampled_at: as_of - back,
                result,
            }]
        };
        let completed = draw() >= r.unvaccinated;
        let code = draw();
        let health_code = if code < r.red {
            HealthCode::Red
        } else if code < r.red + r.yellow {
            HealthCode::Yellow
        } else {
            HealthCode::Green
        };
        Some(HealthRecord {
            id_number: id.to_string(),
            nat_reports,
            vaccination: Vaccination {
                doses: if completed { 3 } else { 1 },
                completed,
            },
            health_code,
        })
    }

    pub fn answer(
        &self,
        as_of: DateTime<Utc>,
        window_hours: u32,
        ids: &[String],
    ) -> Vec<HealthRecord> {
        ids.iter()
            .filter_map(|id| self.record(id, as_of, window_hours))
            .collect()
    }
}

impl HealthCommission for Simulator {
    fn query(
        &self,
        as_of: DateTime<Utc>,
        window_hours: u32,
        ids: Vec<String>,
    ) -> BoxFuture<Result<Answer, Error>> {
        let records: std::collections::HashMap<_, _> = self
            .answer(as_of, window_hours, &ids)
            .into_iter()
            .map(|r| (r.id_number.clone(), r))
            .collect();
        let unknown = ids.len() - records.len();
        Box::pin(async move { Ok(Answer { records, unknown }) })
    }
}

#[derive(Deserialize)]
struct Query {
    as_of: DateTime<Utc>,
    window_hours: u32,
    id_numbers: Vec<String>,
}

struct Served {
    sim: Simulator,
    token: String,
}

/// The simulator as an HTTP server on `listener` (bind it to 127.0.0.1).
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Simulator,
    token: String,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/v1/health/query", axum::routing::post(query))
        .with_state(Arc::new(Served { sim, token }));
    axum::serve(listener, app).await
}

#[derive(serde::Serialize)]
struct Answered {
    results: Vec<HealthRecord>,
}

async fn query(
    State(s): State<Arc<Served>>,
    headers: HeaderMap,
    body: Json<Query>,
) -> (StatusCode, Response) {
    let expected = format!("Bearer {}", s.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid bearer token"})).into_response(),
        );
    }
    if body.id_numbers.len() > MAX_BATCH {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("at most {MAX_BATCH} id numbers per request")}))
                .into_response(),
        );
    }
    let results = s
        .sim
        .answer(body.as_of, body.window_hours, &body.id_numbers);
    // Serialised from the records directly, not through a `Value`.
    (StatusCode::OK, Json(Answered { results }).into_response())
}
