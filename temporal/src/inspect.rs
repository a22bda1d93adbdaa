//! The operator's console on Temporal: instances searched in Temporal's
//! visibility by the search attributes the workflow upserts (`EpiWorkflow`,
//! `EpiEnterprise`, `EpiDistrict`, `EpiPerson`, `EpiState`) and the
//! execution status, and one instance as `DescribeWorkflowExecution` gives
//! it (status, times, pending activities with their attempts and last
//! failure) with the termination Temporal recorded.

use crate::client::{Error, Result, TemporalEngine};
use crate::codec::{self, WORKFLOW_TYPE};
use crate::workflow::Interpreter;
use chrono::{DateTime, SecondsFormat, Utc};
use engine::store::{InstanceFilter, Page};
use futures::StreamExt;
use std::collections::BTreeMap;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{
    HistoryEventFilterType, WorkflowCountOptions, WorkflowFetchHistoryOptions, WorkflowListOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::{
    PendingActivityState, WorkflowExecutionStatus,
};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_common::search_attributes::{SearchAttributeKey, SearchAttributes};

/// One instance as Temporal's visibility lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub id: String,
    /// `EpiWorkflow` (None before the instance's first step).
    pub workflow: Option<String>,
    /// `EpiState`.
    pub state: Option<String>,
    /// The execution status in the console's words: `running`,
    /// `completed`, `failed`, `terminated`, `canceled`, `timed_out`, …
    pub status: &'static str,
    /// The search fields by the engine's names (`enterprise_id`,
    /// `district`, `person`).
    pub search: BTreeMap<String, String>,
    pub started: Option<DateTime<Utc>>,
    pub closed: Option<DateTime<Utc>>,
}

/// An activity Temporal has scheduled and not yet finished.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingActivity {
    /// The engine's activity id (the idempotency key is `{instance}/{id}`).
    pub activity_id: String,
    /// 已调度 / 执行中 / …
    pub state: &'static str,
    pub attempt: i32,
    /// 0: Temporal's "unlimited" (the engine always sets a limit).
    pub maximum_attempts: i32,
    pub next_attempt: Option<DateTime<Utc>>,
    pub last_failure: Option<String>,
}

/// How Temporal recorded an instance's termination.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    pub at: Option<DateTime<Utc>>,
    pub reason: String,
    /// The client that asked (its connection identity).
    pub identity: String,
}

/// One instance as `DescribeWorkflowExecution` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub summary: Summary,
    pub history_length: i64,
    pub activities: Vec<PendingActivity>,
    /// Child instances started and not yet ended.
    pub children: Vec<String>,
    pub terminated: Option<Termination>,
}

impl TemporalEngine {
    /// The instances `filter` selects, newest first, one page of them.
    /// Temporal's list has no offset: the pages before are read and skipped.
    pub async fn list_instances(
        &self,
        filter: &InstanceFilter,
        page: Page,
    ) -> Result<Vec<Summary>> {
        let query = visibility_filter(filter)?;
        let (skip, take) = (page.offset.max(0) as usize, page.limit.max(0) as usize);
        let opts = WorkflowListOptions::builder().limit(skip + take).build();
        let mut s = self.client().list_workflows(query, opts);
        let mut out = Vec::new();
        while let Some(w) = s.next().await {
            let w = w.map_err(|e| Error::Temporal(e.to_string()))?;
            out.push(summary(w.id(), w.raw()));
        }
        Ok(out.into_iter().skip(skip).take(take).collect())
    }

    /// How many instances `filter` selects.
    pub async fn count_instances(&self, filter: &InstanceFilter) -> Result<i64> {
        let query = visibility_filter(filter)?;
        let n = self
            .client()
            .count_workflows(query, WorkflowCountOptions::default())
            .await
            .map_err(|e| Error::Temporal(e.to_string()))?;
        Ok(n.count() as i64)
    }

    /// One instance as Temporal describes it (None: no such workflow).
    pub async fn describe(&self, id: &str) -> Result<Option<Description>> {
        let h = self
            .client()
            .get_workflow_handle::<Interpreter>(id.to_string());
        let d = match h.describe(Default::default()).await {
            Ok(d) => d.raw_description,
            Err(WorkflowInteractionError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(Error::Temporal(e.to_string())),
        };
        let info = d.workflow_execution_info.unwrap_or_default();
        let summary = summary(id, &info);
        let terminated = if summary.status == "terminated" {
            self.termination(id).await?
        } else {
            None
        };
        Ok(Some(Description {
            summary,
            history_length: info.history_length,
            activities: d.pending_activities.iter().map(pending_activity).collect(),
            children: d
                .pending_children
                .iter()
                .map(|c| c.workflow_id.clone())
                .collect(),
            terminated,
        }))
    }

    /// The reason and asker Temporal recorded with a termination (its
    /// history's close event).
    async fn termination(&self, id: &str) -> Result<Option<Termination>> {
        let h = self
            .client()
            .get_workflow_handle::<Interpreter>(id.to_string());
        let opts = WorkflowFetchHistoryOptions::builder()
            .event_filter_type(HistoryEventFilterType::CloseEvent)
            .build();
        let events = h
            .fetch_history(opts)
            .into_events()
            .await
            .map_err(|e| Error::Temporal(e.to_string()))?;
        Ok(events.into_iter().find_map(|e| match e.attributes {
            Some(Attributes::WorkflowExecutionTerminatedEventAttributes(a)) => Some(Termination {
                at: e.event_time.and_then(|t| time(t.seconds, t.nanos)),
                reason: a.reason,
                identity: a.identity,
            }),
            _ => None,
        }))
    }
}

/// A protobuf timestamp's seconds and nanoseconds as a time.
fn time(seconds: i64, nanos: i32) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, nanos.max(0) as u32)
}

fn summary(
    id: &str,
    info: &temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo,
) -> Summary {
    let attrs = info
        .search_attributes
        .as_ref()
        .map(SearchAttributes::from_proto)
        .unwrap_or_default();
    let get = |k: &'static str| attrs.get(&SearchAttributeKey::<String>::keyword(k));
    let search = [
        ("enterprise_id", codec::SA_ENTERPRISE),
        ("district", codec::SA_DISTRICT),
        ("person", codec::SA_PERSON),
    ]
    .into_iter()
    .filter_map(|(name, attr)| Some((name.to_string(), get(attr)?)))
    .collect();
    let status = match status_code(info.status) {
        "running" if get(codec::SA_STATUS).as_deref() == Some("failed") => "failed",
        other => other,
    };
    Summary {
        id: id.to_string(),
        workflow: get(codec::SA_WORKFLOW),
        state: get(codec::SA_STATE),
        status,
        search,
        started: info.start_time.and_then(|t| time(t.seconds, t.nanos)),
        closed: info.close_time.and_then(|t| time(t.seconds, t.nanos)),
    }
}

fn pending_activity(
    a: &temporalio_common::protos::temporal::api::workflow::v1::PendingActivityInfo,
) -> PendingActivity {
    PendingActivity {
        activity_id: a.activity_id.clone(),
        state: match PendingActivityState::try_from(a.state) {
            Ok(PendingActivityState::Scheduled) => "已调度，等待执行",
            Ok(PendingActivityState::Started) => "执行中",
            Ok(PendingActivityState::CancelRequested) => "已请求取消",
            Ok(PendingActivityState::Paused | PendingActivityState::PauseRequested) => "已暂停",
            _ => "未知",
        },
        attempt: a.attempt,
        maximum_attempts: a.maximum_attempts,
        next_attempt: a
            .next_attempt_schedule_time
            .and_then(|t| time(t.seconds, t.nanos)),
        last_failure: a.last_failure.as_ref().map(|f| f.message.clone()),
    }
}

/// Temporal's execution status in the console's words (the embedded
/// runtime's `running`, `completed`, `failed`, `terminated`, and
/// Temporal's own others).
pub fn status_code(status: i32) -> &'static str {
    match WorkflowExecutionStatus::try_from(status) {
        Ok(WorkflowExecutionStatus::Running) => "running",
        Ok(WorkflowExecutionStatus::Completed) => "completed",
        Ok(WorkflowExecutionStatus::Failed) => "failed",
        Ok(WorkflowExecutionStatus::Terminated) => "terminated",
        Ok(WorkflowExecutionStatus::Canceled) => "canceled",
        Ok(WorkflowExecutionStatus::TimedOut) => "timed_out",
        Ok(WorkflowExecutionStatus::ContinuedAsNew) => "continued_as_new",
        Ok(WorkflowExecutionStatus::Paused) => "paused",
        _ => "unknown",
    }
}

/// The visibility query of an operator's search: the `epi` workflows with
/// the search attributes, execution status and start times asked for.
/// The definition version is not in Temporal's visibility: asking for it
/// is refused in words.
pub fn visibility_filter(f: &InstanceFilter) -> Result<String> {
    if f.definition_version.is_some() {
        return Err(Error::Config(
            "在 Temporal 上不能按定义版本查询（版本不在 Temporal 的可见性字段中）".into(),
        ));
    }
    let mut parts = vec![format!("WorkflowType = '{WORKFLOW_TYPE}'")];
    let fields = [("workflow", &f.kind), ("state", &f.state)];
    for (field, value) in fields {
        if let Some(v) = value {
            let attr = codec::search_attribute(field).expect("a search field");
            parts.push(codec::visibility_query(attr, v));
        }
    }
    for (field, v) in &f.search {
        let attr = codec::search_attribute(field)
            .ok_or_else(|| Error::Config(format!("Temporal 上没有查询字段 `{field}`")))?;
        parts.push(codec::visibility_query(attr, v));
    }
    if let Some(s) = &f.status {
        // A failed step keeps the workflow running, `EpiStatus = 'failed'`.
        if s == "failed" {
            parts.push(codec::visibility_query(codec::SA_STATUS, s));
        }
        let status = match s.as_str() {
            "running" | "failed" => "Running",
            "completed" => "Completed",
            "terminated" => "Terminated",
            other => return Err(Error::Config(format!("未知的运行状态 `{other}`"))),
        };
        parts.push(format!("ExecutionStatus = '{status}'"));
    }
    let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if let Some(t) = &f.created_from {
        parts.push(format!("StartTime >= '{}'", at(t)));
    }
    if let Some(t) = &f.created_to {
        parts.push(format!("StartTime < '{}'", at(t)));
    }
    Ok(parts.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_become_visibility_queries() {
        let f = InstanceFilter {
            kind: Some("warning".into()),
            state: Some("awaiting_disposal".into()),
            status: Some("running".into()),
            created_from: Some("2026-11-30T16:00:00Z".parse().unwrap()),
            ..Default::default()
        }
        .search("enterprise_id", Some("ent-1".into()))
        .search("person", Some("o'brien".into()));
        assert_eq!(
            visibility_filter(&f).unwrap(),
            "WorkflowType = 'epi' AND EpiWorkflow = 'warning' AND EpiState = 'awaiting_disposal' \
             AND EpiEnterprise = 'ent-1' AND EpiPerson = 'o\\'brien' \
             AND ExecutionStatus = 'Running' AND StartTime >= '2026-11-30T16:00:00Z'"
        );
        assert_eq!(
            visibility_filter(&InstanceFilter::default()).unwrap(),
            "WorkflowType = 'epi'"
        );
        let version = InstanceFilter {
            definition_version: Some(2),
            ..Default::default()
        };
        assert!(
            visibility_filter(&version)
                .unwrap_err()
                .to_string()
                .contains("定义版本")
        );
        let failed = InstanceFilter {
            status: Some("failed".into()),
            ..Default::default()
        };
        assert_eq!(
            visibility_filter(&failed).unwrap(),
            "WorkflowType = 'epi' AND EpiStatus = 'failed' AND ExecutionStatus = 'Running'"
        );
        let status = InstanceFilter {
            status: Some("nope".into()),
            ..Default::default()
        };
        assert!(visibility_filter(&status).is_err());
    }

    #[test]
    fn execution_statuses_in_the_consoles_words() {
        assert_eq!(
            status_code(WorkflowExecutionStatus::Running as i32),
            "running"
        );
        assert_eq!(
            status_code(WorkflowExecutionStatus::Terminated as i32),
            "terminated"
        );
        assert_eq!(
            status_code(WorkflowExecutionStatus::Failed as i32),
            "failed"
        );
        assert_eq!(status_code(99), "unknown");
    }
}
