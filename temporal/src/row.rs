//! The engine's `InstanceRow` of a step, for projection hooks.

use crate::codec::ProjectTask;
use engine::Program;
use engine::store::InstanceRow;

pub fn instance_row(task: &ProjectTask, program: &Program) -> InstanceRow {
    let mut row = engine::runtime::row::instance_row(
        &task.id,
        program,
        &task.state,
        task.parent.clone(),
        task.revision,
        task.updated_at,
    );
    row.created_at = task.created_at;
    row.closed_at = task.closed_at;
    row
}
