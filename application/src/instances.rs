//! What the operator's console shows of workflow instances, from either
//! engine (`backend::Workflows` fills these; `console` and the web render
//! them). Its own module so that the engine seam (`backend`) does not
//! depend on `console`, which depends on `system`.

/// One instance as the operator's search lists it, from either engine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceSummary {
    pub id: String,
    pub kind: String,
    /// The definition version (not in Temporal's visibility: None there).
    pub version: Option<i64>,
    pub state: String,
    /// `running`, `completed`, `failed`, `terminated` (and Temporal's others).
    pub status: String,
    pub status_label: Option<String>,
    /// Search fields by name (`enterprise_id`, `district`, `person`).
    pub search: std::collections::BTreeMap<String, String>,
    /// Unix ms.
    pub created: Option<i64>,
    pub updated: Option<i64>,
}

impl InstanceSummary {
    pub fn of_row(r: &engine::store::InstanceRow) -> Self {
        InstanceSummary {
            id: r.id.clone(),
            kind: r.kind.clone(),
            version: Some(r.definition_version),
            state: r.state.clone(),
            status: r.status.clone(),
            status_label: r.status_label.clone(),
            search: r.search.clone(),
            created: Some(r.created_at.timestamp_millis()),
            updated: Some(r.updated_at.timestamp_millis()),
        }
    }

    /// Whether repairs apply (the instance has not ended).
    pub fn repairable(&self) -> bool {
        matches!(self.status.as_str(), "running" | "failed")
    }
}

/// The console's words for an instance's status.
pub fn status_label(status: &str) -> &'static str {
    match status {
        "running" => "运行中",
        "completed" => "已结束",
        "failed" => "失败（待运维处理）",
        "terminated" => "已终止",
        "canceled" => "已取消",
        "timed_out" => "已超时",
        _ => "其他",
    }
}

/// A timer waiting to fire.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimerLine {
    pub id: String,
    pub name: String,
    pub due: i64,
}

/// An activity of the instance: the embedded runtime's task, or the
/// activity Temporal has pending.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskLine {
    /// The idempotency key.
    pub key: String,
    pub name: String,
    /// The embedded task's status code, or Temporal's state in words.
    pub status: String,
    pub attempt: i64,
    /// 0: no limit given.
    pub max_attempts: i64,
    pub next: Option<i64>,
    pub error: Option<String>,
    pub result: Option<String>,
    /// The operator may run it once more (an embedded task that used up
    /// its attempts).
    pub retry: bool,
}

/// One instance with all the console shows of it, from either engine.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub summary: InstanceSummary,
    pub hash: Option<String>,
    pub parent: Option<String>,
    pub vars: Vec<(String, String)>,
    pub timers: Vec<TimerLine>,
    pub tasks: Vec<TaskLine>,
    pub events: Vec<engine::inspect::Entry>,
    /// How the history is kept (the hash chain checked, or Temporal's).
    pub chain: String,
    /// The signals its definition version accepts: (name, roles).
    pub signals: Vec<(String, Vec<String>)>,
    /// "embedded" or "temporal".
    pub engine: &'static str,
}
