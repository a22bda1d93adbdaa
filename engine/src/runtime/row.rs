//! The store's row of an instance, filled from its state: what a
//! projection hook receives. The embedded runtime fills it in `commit_for`
//! with its own revision and history chain; other hosts (the Temporal
//! worker) build it here from the interpreter's state alone.

use crate::compile::program::Program;
use crate::interpreter::{Instance, Status};
use crate::store::{InstanceRow, ParentRef};
use chrono::{DateTime, Utc};

/// The row of instance `id` after a step at `updated_at`: `revision`
/// counts the steps so far (also its history length); `parent` is the
/// parent's call for a child. No history chain (`history_hash` None).
pub fn instance_row(
    id: &str,
    program: &Program,
    s: &Instance,
    parent: Option<ParentRef>,
    revision: i64,
    updated_at: DateTime<Utc>,
) -> InstanceRow {
    let completed = s.status == Status::Completed;
    InstanceRow {
        id: id.to_string(),
        kind: program.name.clone(),
        definition_hash: program.hash.clone(),
        definition_version: program.version.into(),
        state: s.state.clone(),
        status: if completed { "completed" } else { "running" }.into(),
        status_label: s.status_label.clone(),
        search: s.search.clone(),
        parent,
        snapshot: serde_json::to_string(s).expect("serialisable"),
        revision,
        history_len: revision,
        history_hash: None,
        created_at: s.started_at,
        updated_at,
        closed_at: completed.then_some(updated_at),
    }
}
