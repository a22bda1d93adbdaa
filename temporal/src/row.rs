//! The engine's `InstanceRow` of a step, for projection hooks.

use crate::codec::ProjectTask;
use engine::Program;
use engine::store::{InstanceRow, ParentRef};

pub fn instance_row(task: &ProjectTask, program: &Program) -> InstanceRow {
    let mut row = engine::runtime::row::instance_row(
        &task.id,
        program,
        &task.state,
        // `{parent}#{call}` on the wire (codec::StartArgs).
        task.parent
            .as_deref()
            .and_then(|p| p.split_once('#'))
            .map(|(instance_id, call)| ParentRef {
                instance_id: instance_id.to_string(),
                call: call.to_string(),
            }),
        task.revision,
        task.updated_at,
    );
    row.created_at = task.created_at;
    row.closed_at = task.closed_at;
    row
}
