//! The application's Prometheus metrics: HTTP requests and latency by
//! matched route, comparison runs (duration, persons, new warnings),
//! health-commission batches (latency, errors) and SMS (sent, failed), and
//! the incidents gauges read from the store at scrape time. `/metrics`
//! (`web::metrics`) serves `AppMetrics::encode` followed by the runtime's
//! own (`Runtime::metrics_text`: steps, step failures, instances by state,
//! timer lag, pending timers, task retries and failures).
//!
//! Labels are bounded sets only: route templates (`/warnings/:id`, never
//! the raw path), methods, status codes, activity outcomes, SMS templates
//! and error kinds. No id, phone or person ever becomes a label.

use engine::runtime::{Activities, ActivityCall, ActivityError};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use serde::Deserialize as _;
use serde_json::Value;
use std::time::Duration;

/// Latency buckets of web requests and gateway calls (seconds).
const LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Comparison runs take seconds (a demo) to minutes (a million persons).
const RUN: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// The counts of a comparison run's result (`summary`) the metrics add.
#[derive(serde::Deserialize)]
struct RunSummary {
    persons: u64,
    unknown: u64,
    new_warnings: u64,
}

/// The metrics of this process. Cheap to clone (shared counters).
#[derive(Clone)]
pub struct AppMetrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    comparison_runs: IntCounterVec,
    comparison_duration: HistogramVec,
    comparison_persons: IntGauge,
    comparison_persons_total: IntCounter,
    comparison_unknown: IntGauge,
    comparison_new_warnings: IntCounter,
    health_duration: Histogram,
    health_errors: IntCounterVec,
    sms_sent: IntCounterVec,
    sms_failed: IntCounterVec,
    failed_instances: IntGauge,
    failed_tasks: IntGauge,
    retrying_tasks: IntGauge,
    store_fresh: IntGauge,
    retention_purged: IntCounterVec,
    retention_batch: Histogram,
}

impl Default for AppMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One metric's name, help text, labels and (for histograms) buckets.
struct Desc {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
}

impl Desc {
    const fn new(name: &'static str, help: &'static str) -> Desc {
        Desc {
            name,
            help,
            labels: &[],
            buckets: &[],
        }
    }

    const fn labels(self, labels: &'static [&'static str]) -> Desc {
        Desc { labels, ..self }
    }

    const fn buckets(self, buckets: &'static [f64]) -> Desc {
        Desc { buckets, ..self }
    }

    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }

    fn histogram_opts(&self) -> HistogramOpts {
        HistogramOpts::new(self.name, self.help).buckets(self.buckets.to_vec())
    }
}

const HTTP_REQUESTS: Desc = Desc::new(
    "http_requests_total",
    "Web requests answered, by method, matched route and status",
)
.labels(&["method", "route", "status"]);
const HTTP_DURATION: Desc = Desc::new(
    "http_request_duration_seconds",
    "Time to answer a web request, by method and matched route",
)
.labels(&["method", "route"])
.buckets(LATENCY);
const COMPARISON_RUNS: Desc = Desc::new(
    "comparison_runs_total",
    "Comparison run attempts by outcome (done, retryable, failed)",
)
.labels(&["outcome"]);
const COMPARISON_DURATION: Desc = Desc::new(
    "comparison_run_duration_seconds",
    "Duration of a comparison run attempt, by outcome",
)
.labels(&["outcome"])
.buckets(RUN);
const COMPARISON_PERSONS: Desc = Desc::new(
    "comparison_last_run_persons",
    "Persons compared by the last comparison run done",
);
const COMPARISON_PERSONS_TOTAL: Desc = Desc::new(
    "comparison_persons_total",
    "Persons compared by the comparison runs done",
);
const COMPARISON_UNKNOWN: Desc = Desc::new(
    "comparison_last_run_unknown_persons",
    "Persons of the last run the health commission did not know",
);
const COMPARISON_NEW_WARNINGS: Desc = Desc::new(
    "comparison_new_warnings_total",
    "Warnings opened by the comparison runs done",
);
const HEALTH_DURATION: Desc = Desc::new(
    "health_gateway_request_duration_seconds",
    "Time of one request (batch) to the health commission, answered or not",
)
.buckets(LATENCY);
const HEALTH_ERRORS: Desc = Desc::new(
    "health_gateway_errors_total",
    "Failed health-commission requests by kind (timeout, connect, http_429, http_4xx, http_5xx, malformed)",
)
.labels(&["kind"]);
const SMS_SENT: Desc = Desc::new(
    "sms_sent_total",
    "SMS accepted by the gateway (or logged, in log mode), by template",
)
.labels(&["template"]);
const SMS_FAILED: Desc = Desc::new(
    "sms_failed_total",
    "SMS the gateway did not accept, by template and kind (rejected, unavailable)",
)
.labels(&["template", "kind"]);
const FAILED_INSTANCES: Desc = Desc::new(
    "incidents_failed_instances",
    "Workflow instances in status failed (read at scrape time)",
);
const FAILED_TASKS: Desc = Desc::new(
    "incidents_failed_tasks",
    "Activity tasks that exhausted their retries (read at scrape time, at most 1000 counted)",
);
const RETRYING_TASKS: Desc = Desc::new(
    "incidents_retrying_tasks",
    "Activity tasks waiting for a retry after a failed attempt (read at scrape time, at most 1000 counted)",
);
const STORE_FRESH: Desc = Desc::new(
    "metrics_store_gauges_fresh",
    "1 when this scrape read the store's gauges (incidents, instances, pending timers); 0 when they are from an earlier scrape (the store did not answer in time)",
);
const RETENTION_PURGED: Desc = Desc::new(
    "retention_purged_total",
    "Rows removed by the retention purge (workflows/retention.yaml), by kind of data",
)
.labels(&["kind"]);
const RETENTION_BATCH: Desc = Desc::new(
    "retention_batch_duration_seconds",
    "Time of one retention purge batch (one transaction, or two for workflows)",
)
.buckets(LATENCY);

/// Makes each metric from its description and registers it.
struct Make<'r>(&'r Registry);

impl Make<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0.register(Box::new(c.clone())).expect("unique metric");
        c
    }

    fn counters(&self, d: &Desc) -> IntCounterVec {
        self.register(IntCounterVec::new(d.opts(), d.labels).expect("metric"))
    }

    fn histograms(&self, d: &Desc) -> HistogramVec {
        self.register(HistogramVec::new(d.histogram_opts(), d.labels).expect("metric"))
    }

    fn counter(&self, d: &Desc) -> IntCounter {
        self.register(IntCounter::with_opts(d.opts()).expect("metric"))
    }

    fn gauge(&self, d: &Desc) -> IntGauge {
        self.register(IntGauge::with_opts(d.opts()).expect("metric"))
    }

    fn histogram(&self, d: &Desc) -> Histogram {
        self.register(Histogram::with_opts(d.histogram_opts()).expect("metric"))
    }
}

impl AppMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let make = Make(&registry);
        AppMetrics {
            http_requests: make.counters(&HTTP_REQUESTS),
            http_duration: make.histograms(&HTTP_DURATION),
            comparison_runs: make.counters(&COMPARISON_RUNS),
            comparison_duration: make.histograms(&COMPARISON_DURATION),
            comparison_persons: make.gauge(&COMPARISON_PERSONS),
            comparison_persons_total: make.counter(&COMPARISON_PERSONS_TOTAL),
            comparison_unknown: make.gauge(&COMPARISON_UNKNOWN),
            comparison_new_warnings: make.counter(&COMPARISON_NEW_WARNINGS),
            health_duration: make.histogram(&HEALTH_DURATION),
            health_errors: make.counters(&HEALTH_ERRORS),
            sms_sent: make.counters(&SMS_SENT),
            sms_failed: make.counters(&SMS_FAILED),
            failed_instances: make.gauge(&FAILED_INSTANCES),
            failed_tasks: make.gauge(&FAILED_TASKS),
            retrying_tasks: make.gauge(&RETRYING_TASKS),
            store_fresh: make.gauge(&STORE_FRESH),
            retention_purged: make.counters(&RETENTION_PURGED),
            retention_batch: make.histogram(&RETENTION_BATCH),
            registry,
        }
    }

    /// One web request answered. `route` is the matched route template
    /// (or `unmatched`), never the raw path.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http_requests
            .with_label_values(&[method, route, status_label(status)])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }

    /// One request to the health commission; `error`: its kind when it failed.
    pub fn health_request(&self, took: Duration, error: Option<&str>) {
        self.health_duration.observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.health_errors.with_label_values(&[kind]).inc();
        }
    }

    /// One SMS handed to the gateway; `error`: why it was not accepted.
    pub fn sms(&self, template: &str, error: Option<&str>) {
        match error {
            None => self.sms_sent.with_label_values(&[template]).inc(),
            Some(kind) => self.sms_failed.with_label_values(&[template, kind]).inc(),
        }
    }

    /// One attempt of `run_comparison` and what it returned. An attempt
    /// that finds its run already stored (a retry after a crash between
    /// the run's commit and the step's) counts its persons again: rare,
    /// and after a crash the process's counters start from zero anyway.
    pub fn comparison_run(&self, took: Duration, result: &Result<Value, ActivityError>) {
        let outcome = match result {
            Ok(_) => "done",
            Err(ActivityError::Retryable(_)) => "retryable",
            Err(ActivityError::Permanent(_)) => "failed",
        };
        self.comparison_runs.with_label_values(&[outcome]).inc();
        self.comparison_duration
            .with_label_values(&[outcome])
            .observe(took.as_secs_f64());
        let Ok(v) = result else {
            return;
        };
        match RunSummary::deserialize(&v["summary"]) {
            Ok(s) => {
                self.comparison_persons.set(s.persons as i64);
                self.comparison_persons_total.inc_by(s.persons);
                self.comparison_unknown.set(s.unknown as i64);
                self.comparison_new_warnings.inc_by(s.new_warnings);
            }
            // Not counted as zero: said, and left out of the counters.
            Err(e) => tracing::error!(
                error = %e,
                "run_comparison's result has no summary of persons, unknown and new_warnings; not counted"
            ),
        }
    }

    /// The incidents as the store has them now (see `AppMetrics::encode`).
    pub fn set_incidents(&self, failed_instances: i64, failed_tasks: i64, retrying_tasks: i64) {
        self.failed_instances.set(failed_instances);
        self.failed_tasks.set(failed_tasks);
        self.retrying_tasks.set(retrying_tasks);
    }

    /// Whether this scrape's store gauges are current.
    pub fn set_store_fresh(&self, fresh: bool) {
        self.store_fresh.set(i64::from(fresh));
    }

    /// Read the incident gauges from `store`: one indexed count of failed
    /// instances and one bounded page of failed or retrying tasks.
    pub async fn refresh_incidents<S: engine::store::Store>(
        &self,
        store: &S,
    ) -> engine::store::Result<()> {
        use engine::store::{InstanceFilter, Page, TaskStatus};
        let failed = store
            .count_instances(&InstanceFilter {
                status: Some("failed".into()),
                ..Default::default()
            })
            .await?;
        let tasks = store
            .failed_tasks(Page {
                limit: 1000,
                offset: 0,
            })
            .await?;
        let exhausted = tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Failed)
            .count() as i64;
        self.set_incidents(failed, exhausted, tasks.len() as i64 - exhausted);
        Ok(())
    }

    /// The text exposition of these metrics.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode");
        String::from_utf8(buf).expect("utf-8")
    }

    /// One batch of the retention purge and what it returned; a batch
    /// repeated after a crash (`replayed`) was counted when it ran.
    pub fn retention_batch(&self, took: Duration, result: &Result<Value, ActivityError>) {
        if let Ok(v) = result {
            if v["replayed"].as_bool() == Some(true) {
                return;
            }
            if let (Some(kind), Some(n)) = (v["kind"].as_str(), v["purged"].as_u64()) {
                self.retention_batch.observe(took.as_secs_f64());
                self.retention_purged.with_label_values(&[kind]).inc_by(n);
            }
        }
    }

    /// `activities` with `run_comparison` timed and its result counted,
    /// and the retention purge's batches counted.
    pub fn meter_activities(&self, activities: Activities) -> Activities {
        let activities = match activities.get("purge_personal_data").cloned() {
            Some(inner) => {
                let m = self.clone();
                activities.register("purge_personal_data", move |call: ActivityCall| {
                    let inner = inner.clone();
                    let m = m.clone();
                    async move {
                        let started = std::time::Instant::now();
                        let r = inner.call(call).await;
                        m.retention_batch(started.elapsed(), &r);
                        r
                    }
                })
            }
            None => activities,
        };
        let Some(inner) = activities.get("run_comparison").cloned() else {
            return activities;
        };
        let m = self.clone();
        activities.register("run_comparison", move |call: ActivityCall| {
            let inner = inner.clone();
            let m = m.clone();
            async move {
                let started = std::time::Instant::now();
                let r = inner.call(call).await;
                m.comparison_run(started.elapsed(), &r);
                r
            }
        })
    }
}

/// Status codes as labels: exact for the few the application answers.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        204 => "204",
        301 => "301",
        302 => "302",
        303 => "303",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        s if s < 200 => "1xx",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
