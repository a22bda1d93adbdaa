//! The health-commission (卫健委) adapter, per the contract in DOMAIN.md:
//! `POST {base}/v1/health/query` with a bearer token, at most 1000 id
//! numbers a request. Batches run with bounded concurrency; 429, 5xx,
//! timeouts and connection errors are retried with exponential backoff
//! (honouring `Retry-After`); ids absent from the answer are counted as
//! unknown, never flagged. A run that cannot get its data gets an error
//! naming the batch — never invented numbers.
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
    #[error("卫健委接口第{batch}批（共{of}批）失败，已尝试{attempts}次：{reason}")]
    Batch {
        batch: usize,
        of: usize,
        attempts: u32,
        reason: String,
    },
    #[error("卫健委接口第{batch}批返回的数据无法解析：{reason}")]
    Malformed { batch: usize, reason: String },
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
    pub token: crate::config::Secret,
    pub timeout: Duration,
    pub batch_size: usize,
    pub concurrency: usize,
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
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
}

impl HttpHealth {
    pub fn new(opts: HttpOptions) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(opts.timeout).build()?;
        Ok(HttpHealth { http, opts })
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
        let mut delay = self.opts.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .post(&url)
                .bearer_auth(self.opts.token.expose())
                .json(&body)
                .send()
                .await;
            let (reason, retry_after) = match sent {
                Ok(resp) if resp.status().is_success() => {
                    let body = resp.bytes().await.map_err(|e| Error::Malformed {
                        batch: n,
                        reason: e.to_string(),
                    })?;
                    let parsed: Response =
                        serde_json::from_slice(&body).map_err(|e| Error::Malformed {
                            batch: n,
                            reason: e.to_string(),
                        })?;
                    return Ok(parsed.results);
                }
                Ok(resp) if resp.status().as_u16() == 429 || resp.status().is_server_error() => {
                    let after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (format!("HTTP {}", resp.status().as_u16()), after)
                }
                Ok(resp) => {
                    // 4xx other than 429: our request is wrong; retrying will not help.
                    return Err(Error::Batch {
                        batch: n,
                        of,
                        attempts: attempt,
                        reason: format!("HTTP {}", resp.status().as_u16()),
                    });
                }
                Err(e) if e.is_timeout() => ("超时".to_string(), None),
                Err(e) => (format!("连接失败：{e}"), None),
            };
            if attempt >= self.opts.attempts {
                return Err(Error::Batch {
                    batch: n,
                    of,
                    attempts: attempt,
                    reason,
                });
            }
            tracing::warn!(batch = n, attempt, %reason, "health commission batch failed; retrying");
            tokio::time::sleep(retry_after.unwrap_or(delay).min(self.opts.max_backoff)).await;
            delay = (delay * 2).min(self.opts.max_backoff);
        }
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
                        let records = this.batch(i + 1, of, as_of, window_hours, batch).await?;
                        Ok(Part::align(range.start, batch, records))
                    }));
                    async move {
                        let mut task = task;
                        (&mut task.0).await.unwrap_or_else(|e| {
                            Err(Error::Batch {
                                batch: i + 1,
                                of,
                                attempts: 1,
                                reason: e.to_string(),
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
