//! The health-commission (卫健委) adapter, per the contract in DOMAIN.md:
//! `POST {base}/v1/health/query` with a bearer token, at most 1000 id
//! numbers a request. Batches run with bounded concurrency, one attempt
//! each: retrying is the engine's (the `run_comparison` retry policy in
//! `workflows/activities.yaml` repeats the whole, idempotent run), so a
//! failure is only classified — 429, 5xx, timeouts, connection errors and
//! unreadable answers are worth retrying, other 4xx are not. Ids absent
//! from the answer are counted as unknown, never flagged. A run that cannot
//! get its data gets an error naming the batch — never invented numbers.
//!
//! Must not interpret the data (that is `comparison`) or store anything.

use super::BoxFuture;
use crate::comparison::HealthRecord;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// The contract's limit on ids per request.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("卫健委接口第{batch}批（共{of}批）失败：{reason}")]
    Batch {
        batch: usize,
        of: usize,
        reason: String,
        /// 429, 5xx, timeouts, connection errors: a later attempt may succeed.
        retryable: bool,
    },
    #[error("卫健委接口第{batch}批返回的数据无法解析：{reason}")]
    Malformed { batch: usize, reason: String },
}

impl Error {
    /// Whether the engine should try the run again (with its backoff). An
    /// unreadable answer counts as transient (a cut-off body); a refusal of
    /// the request (4xx other than 429) does not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Batch { retryable, .. } => *retryable,
            Error::Malformed { .. } => true,
        }
    }
}

/// What a query returns: records by id number, and how many were unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub records: HashMap<String, HealthRecord>,
    pub unknown: usize,
}

/// One part of an answer: `records[i]` answers `ids[start + i]` of the
/// query (None: unknown to the commission).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    pub start: usize,
    pub records: Vec<Option<HealthRecord>>,
}

impl Part {
    /// Line `records` up with `ids` (those of this part); records for ids
    /// not asked are dropped, an id asked twice gets its record twice.
    pub fn align(start: usize, ids: &[String], records: Vec<HealthRecord>) -> Part {
        let mut at: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
        for (k, id) in ids.iter().enumerate() {
            at.entry(id.as_str()).or_insert(k);
        }
        let mut out = vec![None; ids.len()];
        for r in records {
            if let Some(&k) = at.get(r.id_number.as_str()) {
                out[k] = Some(r);
            }
        }
        if at.len() < ids.len() {
            for (k, id) in ids.iter().enumerate() {
                let first = at[id.as_str()];
                if first != k {
                    out[k] = out[first].clone();
                }
            }
        }
        Part {
            start,
            records: out,
        }
    }
}

/// The parts of an answer, in the order of the ids asked.
pub type Parts = futures::stream::BoxStream<'static, Result<Part, Error>>;

/// Anything that answers the contract: the HTTP client or the simulator.
pub trait HealthCommission: Send + Sync + 'static {
    fn query(
        &self,
        as_of: DateTime<Utc>,
        window_hours: u32,
        ids: Vec<String>,
    ) -> BoxFuture<Result<Answer, Error>>;

    /// The same answer in parts, in order, so a caller can work on one part
    /// while the next are still being fetched (the comparison run does, and
    /// never holds a million answers at once). The default answers in one part.
    fn query_parts(
        &self,
        as_of: DateTime<Utc>,
        window_hours: u32,
        ids: std::sync::Arc<Vec<String>>,
    ) -> Parts {
        let answer = self.query(as_of, window_hours, ids.to_vec());
        Box::pin(futures::stream::once(async move {
            let mut answer = answer.await?;
            let records = ids.iter().map(|id| answer.records.remove(id)).collect();
            Ok(Part { start: 0, records })
        }))
    }
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub base_url: String,
    pub token: crate::secret::Secret,
    pub timeout: Duration,
    pub batch_size: usize,
    pub concurrency: usize,
}

#[derive(Serialize)]
struct Request<'a> {
    as_of: DateTime<Utc>,
    window_hours: u32,
    id_numbers: &'a [String],
}

#[derive(Deserialize)]
struct Response {
    results: Vec<HealthRecord>,
}

/// A spawned batch, cancelled if the caller stops reading the parts.
struct Abort<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Abort<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The HTTP client of the contract.
#[derive(Clone)]
pub struct HttpHealth {
    http: reqwest::Client,
    opts: HttpOptions,
    /// Where each request's latency and failure are counted.
    metrics: Option<crate::metrics::AppMetrics>,
}

impl HttpHealth {
    pub fn new(opts: HttpOptions) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(opts.timeout).build()?;
        Ok(HttpHealth {
            http,
            opts,
            metrics: None,
        })
    }

    /// Count each request's latency and failure in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::AppMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// `batch`, timed and its failure counted by kind.
    async fn metered_batch(
        &self,
        n: usize,
        of: usize,
        as_of: DateTime<Utc>,
        window_hours: u32,
        ids: &[String],
    ) -> Result<Vec<HealthRecord>, Error> {
        let started = std::time::Instant::now();
        let r = self.batch(n, of, as_of, window_hours, ids).await;
        if let Some(m) = &self.metrics {
            let kind = match &r {
                Ok(_) => None,
                Err(Error::Malformed { .. }) => Some("malformed"),
                Err(Error::Batch { reason, .. }) if reason == "超时" => Some("timeout"),
                Err(Error::Batch { reason, .. }) if reason == "HTTP 429" => Some("http_429"),
                Err(Error::Batch { reason, .. }) if reason.starts_with("HTTP 5") => {
                    Some("http_5xx")
                }
                Err(Error::Batch { reason, .. }) if reason.starts_with("HTTP ") => Some("http_4xx"),
                Err(Error::Batch { .. }) => Some("connect"),
            };
            m.health_request(started.elapsed(), kind);
        }
        r
    }

    async fn batch(
        &self,
        n: usize,
        of: usize,
        as_of: DateTime<Utc>,
        window_hours: u32,
        ids: &[String],
    ) -> Result<Vec<HealthRecord>, Error> {
        let url = format!(
            "{}/v1/health/query",
            self.opts.base_url.trim_end_matches('/')
        );
        let body = Request {
            as_of,
            window_hours,
            id_numbers: ids,
        };
        let failed = |reason: String, retryable: bool| Error::Batch {
            batch: n,
            of,
            reason,
            retryable,
        };
        let resp = match self
            .http
            .post(&url)
            .bearer_auth(self.opts.token.expose())
            .json(&body)
            .send()
            .await
        {
            Ok(resp) => resp,
            Err(e) if e.is_timeout() => return Err(failed("超时".into(), true)),
            Err(e) => return Err(failed(format!("连接失败：{e}"), true)),
        };
        let status = resp.status();
        if !status.is_success() {
            // 429 and 5xx may pass; any other 4xx means our request is wrong.
            let retryable = status.as_u16() == 429 || status.is_server_error();
            return Err(failed(format!("HTTP {}", status.as_u16()), retryable));
        }
        let body = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                failed("超时".into(), true)
            } else {
                Error::Malformed {
                    batch: n,
                    reason: e.to_string(),
                }
            }
        })?;
        let parsed: Response = serde_json::from_slice(&body).map_err(|e| Error::Malformed {
            batch: n,
            reason: e.to_string(),
        })?;
        Ok(parsed.results)
    }
}

impl HealthCommission for HttpHealth {
    fn query(
        &self,
        as_of: DateTime<Utc>,
        window_hours: u32,
        ids: Vec<String>,
    ) -> BoxFuture<Result<Answer, Error>> {
        let mut parts = self.query_parts(as_of, window_hours, std::sync::Arc::new(ids));
        Box::pin(async move {
            let mut answer = Answer::default();
            while let Some(part) = parts.next().await {
                for r in part?.records {
                    match r {
                        Some(r) => {
                            answer.records.insert(r.id_number.clone(), r);
                        }
                        None => answer.unknown += 1,
                    }
                }
            }
            Ok(answer)
        })
    }

    /// One part per batch. Each batch is fetched and parsed on a task of its
    /// own (at most `concurrency` at a time), so parsing overlaps with the
    /// caller's work on earlier parts.
    fn query_parts(
        &self,
        as_of: DateTime<Utc>,
        window_hours: u32,
        ids: std::sync::Arc<Vec<String>>,
    ) -> Parts {
        let size = self.opts.batch_size.clamp(1, MAX_BATCH);
        let of = ids.len().div_ceil(size);
        let concurrency = self.opts.concurrency.max(1);
        let this = self.clone();
        Box::pin(
            futures::stream::iter(0..of)
                .map(move |i| {
                    let this = this.clone();
                    let ids = ids.clone();
                    let task = Abort(tokio::spawn(async move {
                        let range = i * size..((i + 1) * size).min(ids.len());
                        let batch = &ids[range.clone()];
                        let records = this
                            .metered_batch(i + 1, of, as_of, window_hours, batch)
                            .await?;
                        Ok(Part::align(range.start, batch, records))
                    }));
                    async move {
                        let mut task = task;
                        (&mut task.0).await.unwrap_or_else(|e| {
                            Err(Error::Batch {
                                batch: i + 1,
                                of,
                                reason: e.to_string(),
                                retryable: true,
                            })
                        })
                    }
                })
                .buffered(concurrency),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comparison::{HealthCode, Vaccination};

    fn rec(id: &str) -> HealthRecord {
        HealthRecord {
            id_number: id.into(),
            nat_reports: vec![],
            vaccination: Vaccination {
                doses: 3,
                completed: true,
            },
            health_code: HealthCode::Green,
        }
    }

    #[test]
    fn parts_line_records_up_with_the_ids_asked() {
        let ids: Vec<String> = ["a", "b", "c", "a"].map(String::from).into();
        let part = Part::align(1000, &ids, vec![rec("c"), rec("stranger"), rec("a")]);
        assert_eq!(part.start, 1000);
        let got: Vec<Option<&str>> = part
            .records
            .iter()
            .map(|r| r.as_ref().map(|r| r.id_number.as_str()))
            .collect();
        assert_eq!(got, [Some("a"), None, Some("c"), Some("a")]);
    }
}
