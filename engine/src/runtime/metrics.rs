//! Prometheus metrics of the runtime: steps, instances by state, timer
//! lag, task retries and failures. Text exposition via [`Metrics::encode`].

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    steps: IntCounterVec,
    step_failures: IntCounterVec,
    instances: IntGaugeVec,
    timer_lag: Histogram,
    pending_timers: IntGauge,
    task_retries: IntCounterVec,
    task_failures: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let steps = IntCounterVec::new(
            Opts::new("workflow_steps_total", "Interpreter steps committed"),
            &["workflow", "input"],
        )
        .expect("metric");
        let step_failures = IntCounterVec::new(
            Opts::new("workflow_step_failures_total", "Steps whose rules failed"),
            &["workflow"],
        )
        .expect("metric");
        let instances = IntGaugeVec::new(
            Opts::new("workflow_instances", "Instances by workflow and state"),
            &["workflow", "state"],
        )
        .expect("metric");
        let timer_lag = Histogram::with_opts(
            HistogramOpts::new(
                "workflow_timer_lag_seconds",
                "Delay between a timer's due time and its firing",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
            ]),
        )
        .expect("metric");
        let pending_timers =
            IntGauge::new("workflow_pending_timers", "Timers not yet fired").expect("metric");
        let task_retries = IntCounterVec::new(
            Opts::new(
                "workflow_task_retries_total",
                "Activity attempts that failed and will be retried",
            ),
            &["activity"],
        )
        .expect("metric");
        let task_failures = IntCounterVec::new(
            Opts::new(
                "workflow_task_failures_total",
                "Activities that failed for good",
            ),
            &["activity"],
        )
        .expect("metric");
        for m in [
            Box::new(steps.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(step_failures.clone()),
            Box::new(instances.clone()),
            Box::new(timer_lag.clone()),
            Box::new(pending_timers.clone()),
            Box::new(task_retries.clone()),
            Box::new(task_failures.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Metrics {
            registry,
            steps,
            step_failures,
            instances,
            timer_lag,
            pending_timers,
            task_retries,
            task_failures,
        }
    }

    pub(crate) fn step(&self, workflow: &str, input: &str) {
        self.steps.with_label_values(&[workflow, input]).inc();
    }
    pub(crate) fn step_failed(&self, workflow: &str) {
        self.step_failures.with_label_values(&[workflow]).inc();
    }
    pub(crate) fn timer_lag(&self, lag: chrono::Duration) {
        self.timer_lag
            .observe(lag.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6);
    }
    pub(crate) fn task_retry(&self, activity: &str) {
        self.task_retries.with_label_values(&[activity]).inc();
    }
    pub(crate) fn task_failure(&self, activity: &str) {
        self.task_failures.with_label_values(&[activity]).inc();
    }
    pub(crate) fn set_instances(&self, counts: &[(String, String, i64)]) {
        self.instances.reset();
        for (w, s, n) in counts {
            self.instances.with_label_values(&[w, s]).set(*n);
        }
    }
    pub(crate) fn set_pending_timers(&self, n: i64) {
        self.pending_timers.set(n);
    }

    /// Steps committed so far for `workflow` (all inputs).
    pub fn steps_of(&self, workflow: &str) -> u64 {
        [
            "started",
            "signal",
            "timer_fired",
            "activity_completed",
            "activity_failed",
            "child_completed",
        ]
        .iter()
        .map(|i| self.steps.with_label_values(&[workflow, i]).get())
        .sum()
    }

    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode");
        String::from_utf8(buf).expect("utf-8")
    }
}
