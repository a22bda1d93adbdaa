//! Repairs an operator makes (issue 12, R8.4), each with a reason and
//! recorded in the instance's history (chained like every other row) with
//! who and when: retry the step that failed, run an activity that used up
//! its attempts once more, terminate an instance, send a signal on
//! someone's behalf. Comparable to `temporal workflow reset | terminate |
//! signal`, for our definitions. And the one way a running instance moves
//! to a newer published version (issue 11): `migrate`, checked first.

use super::{Error, Result, Runtime};
use crate::compile::program::Program;
use crate::interpreter::{Actor, Input, Instance};
use crate::store::{self, InstanceRow, StepCommit, Store, TaskStatus};
use serde_json::{json, Value};

/// The status of an instance an operator ended.
pub const TERMINATED: &str = "terminated";

/// Who repairs, and why (both required).
#[derive(Debug, Clone)]
pub struct Repair {
    pub operator: String,
    pub reason: String,
}

impl Repair {
    fn check(&self) -> Result<()> {
        if self.operator.trim().is_empty() || self.reason.trim().is_empty() {
            return Err(Error::Refused("运维操作须注明操作人和原因".into()));
        }
        Ok(())
    }
}

impl<S: Store> Runtime<S> {
    /// A history row of an operator's action on `row`, as the commit that
    /// writes it (the instance's revision moves on, the chain goes on), with
    /// the row that tells the host's projection, if its workflow has one.
    async fn operator_note(&self, row: &InstanceRow, payload: Value) -> Result<StepCommit> {
        let now = self.now();
        let h = store::HistoryRow::chained(
            &row.id,
            row.history_len,
            now,
            "operator_action",
            payload.to_string(),
            row.history_hash.as_deref().unwrap_or(store::GENESIS_HASH),
        );
        let mut new = row.clone();
        new.revision += 1;
        new.history_len += 1;
        new.updated_at = now;
        new.history_hash = h.hash.clone();
        let program = self.program(&row.definition_hash).await?;
        Ok(StepCommit {
            expected_revision: Some(row.revision),
            outbox_insert: super::projection_rows(&program, &row.id, new.revision, now),
            instance: Some(new),
            history: vec![h],
            ..Default::default()
        })
    }

    async fn row(&self, id: &str) -> Result<InstanceRow> {
        self.inner
            .store
            .instance(id)
            .await?
            .ok_or_else(|| Error::UnknownInstance(id.to_string()))
    }

    /// Apply again the input whose step failed (a rule error in a timer or
    /// activity handler) after the definition was fixed. The interpreter is
    /// deterministic, so the same version would fail the same way: the
    /// instance moves to the latest published version of its workflow
    /// (which must still have its current state) and the input is applied
    /// there. If it fails again the instance stays failed with a new
    /// `step_failed` row.
    pub async fn retry_failed_step(&self, id: &str, by: &Repair) -> Result<()> {
        by.check()?;
        let row = self.row(id).await?;
        if row.status != "failed" {
            return Err(Error::Refused(format!(
                "实例 {id} 没有失败的步骤（状态：{}）",
                row.status
            )));
        }
        let history = self.inner.store.history(id).await?;
        let input: Input = history
            .iter()
            .rev()
            .find(|h| h.kind == "step_failed")
            .and_then(|h| serde_json::from_str::<Value>(&h.payload).ok())
            .and_then(|p| serde_json::from_value(p["input"].clone()).ok())
            .ok_or_else(|| Error::Corrupt(format!("{id}: no failed step in the history")))?;
        let latest = self
            .latest_program(&row.kind)
            .ok_or_else(|| Error::UnknownWorkflow(row.kind.clone()))?;
        let mut state = crate::inspect::state_of(&row).map_err(Error::Corrupt)?;
        if latest.state(&state.state).is_none() {
            return Err(Error::Refused(format!(
                "最新版本（{}）没有实例所处的状态 {}，不能在其上重试",
                latest.version, state.state
            )));
        }
        let from = (row.definition_version, row.definition_hash.clone());
        state.hash = latest.hash.as_str().into();
        state.version = latest.version;
        let mut note = self.operator_note(
            &row,
            json!({"action": "retry_step", "operator": by.operator, "reason": by.reason, "input": input,
                   "from_version": from.0, "from_hash": from.1,
                   "to_version": latest.version, "to_hash": latest.hash}),
        ).await?;
        if let Some(r) = note.instance.as_mut() {
            r.definition_hash = latest.hash.clone();
            r.definition_version = latest.version.into();
            r.snapshot = serde_json::to_string(&state).expect("serialisable");
        }
        self.inner.store.commit(&[note]).await?;
        // The same input, as of now (its time moves with the retry).
        let input = match input {
            Input::TimerFired { id, .. } => Input::TimerFired { at: self.now(), id },
            Input::ActivityCompleted { id, result, .. } => Input::ActivityCompleted {
                at: self.now(),
                id,
                result,
            },
            Input::ActivityFailed { id, error, .. } => Input::ActivityFailed {
                at: self.now(),
                id,
                error,
            },
            Input::ChildCompleted {
                id,
                status,
                output,
                error,
                ..
            } => Input::ChildCompleted {
                at: self.now(),
                id,
                status,
                output,
                error,
            },
            other => other,
        };
        self.apply_batch(vec![(id.to_string(), input, StepCommit::default())])
            .await?;
        self.wake();
        Ok(())
    }

    /// Run once more an activity task that used up its attempts (after the
    /// gateway or the data was fixed), under the same idempotency key. The
    /// workflow already went on from its failure; the new outcome is
    /// recorded in the history.
    pub async fn retry_task(&self, task_id: &str, by: &Repair) -> Result<()> {
        by.check()?;
        let task = self
            .inner
            .store
            .task(task_id)
            .await?
            .ok_or_else(|| Error::Refused(format!("没有活动任务 {task_id}")))?;
        if task.status != TaskStatus::Failed {
            return Err(Error::Refused(format!(
                "活动任务 {task_id} 未失败（状态：{}）",
                task.status.as_str()
            )));
        }
        let row = self.row(&task.instance_id).await?;
        let note = self
            .operator_note(
                &row,
                json!({"action": "retry_activity", "operator": by.operator, "reason": by.reason,
                   "activity_id": task.activity_id, "name": task.name}),
            )
            .await?;
        self.inner.store.commit(&[note]).await?;
        let now = self.now();
        self.inner
            .store
            .retry_task(
                task_id,
                &format!("运维重试（{}）：{}", by.operator, by.reason),
                now,
                now,
            )
            .await?;
        self.wake();
        Ok(())
    }

    /// End an instance: its timers are deleted, later inputs are recorded
    /// and ignored, signals are refused.
    pub async fn terminate(&self, id: &str, by: &Repair) -> Result<()> {
        by.check()?;
        for _ in 0..5 {
            let row = self.row(id).await?;
            if row.status == "completed" || row.status == TERMINATED {
                return Err(Error::Refused(format!("实例 {id} 已经结束")));
            }
            let state = crate::inspect::state_of(&row).map_err(Error::Corrupt)?;
            let mut c = self
                .operator_note(
                    &row,
                    json!({"action": "terminate", "operator": by.operator, "reason": by.reason}),
                )
                .await?;
            if let Some(r) = c.instance.as_mut() {
                r.status = TERMINATED.into();
                r.status_label = Some("已由运维终止".into());
                r.closed_at = Some(self.now());
            }
            c.timers_delete = state.timers.keys().cloned().collect();
            match self.inner.store.commit(&[c]).await {
                Ok(_) => return Ok(()),
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Refused(format!("实例 {id} 正在变化，请稍后重试")))
    }

    /// Send a signal on behalf of `actor` (whose role the definition
    /// allows), noting the operator and the reason first. The definition's
    /// checks apply as to the actor's own signal.
    pub async fn signal_as_operator(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        actor: Actor,
        by: &Repair,
    ) -> Result<()> {
        by.check()?;
        let on_behalf = actor.clone();
        let actor = Actor {
            name: Some(format!("运维 {} 代 {}", by.operator, actor.id)),
            ..actor
        };
        // A refused signal writes nothing, so the note follows a signal
        // that was taken.
        self.signal(id, name, payload, actor).await?;
        for _ in 0..5 {
            let row = self.row(id).await?;
            let note = self
                .operator_note(
                    &row,
                    json!({"action": "signal", "operator": by.operator, "reason": by.reason,
                       "signal": name, "on_behalf_of": on_behalf}),
                )
                .await?;
            match self.inner.store.commit(&[note]).await {
                Ok(_) => return Ok(()),
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Refused(format!("实例 {id} 正在变化，请稍后重试")))
    }
}

/// Whether one instance can move to a target version, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationCheck {
    pub instance_id: String,
    pub state: String,
    pub from_version: i64,
    pub to_version: i64,
    /// Empty: it can move. Otherwise what is missing in the target, in words.
    pub problems: Vec<String>,
}

/// What stops `state` (running on `from`) from going on on `to`: the
/// current state, its pending timers (by name) and the variables must
/// exist in the target, and activities or children still pending must be
/// the same calls there (they are referred to by position).
pub fn migration_problems(state: &Instance, from: &Program, to: &Program) -> Vec<String> {
    let mut out = Vec::new();
    if to.name != from.name {
        out.push(format!(
            "目标是另一个工作流 {}（实例属于 {}）",
            to.name, from.name
        ));
        return out;
    }
    if to.version <= from.version {
        out.push(format!(
            "只能迁移到更高的版本（实例在版本 {}，目标是版本 {}）",
            from.version, to.version
        ));
    }
    match to.state(&state.state) {
        None => out.push(format!(
            "目标版本 {} 没有实例所处的状态 `{}`",
            to.version, state.state
        )),
        Some(target) => {
            for t in state.timers.values() {
                if !target.timers.iter().any(|x| x.name == t.name) {
                    out.push(format!(
                        "目标版本 {} 的状态 `{}` 没有待触发的定时器 `{}`",
                        to.version, state.state, t.name
                    ));
                }
            }
        }
    }
    for name in state.vars.keys() {
        if !to.vars.iter().any(|v| &v.name == name) {
            out.push(format!("目标版本 {} 没有变量 `{name}`", to.version));
        }
    }
    for call in state.activities.values() {
        let here = from.activities.get(call.spec).map(|a| a.name.as_str());
        let there = to.activities.get(call.spec).map(|a| a.name.as_str());
        if here != there {
            out.push(format!(
                "进行中的活动 `{}` 在目标版本中对应不上，请待其完成后再迁移",
                here.unwrap_or("?")
            ));
        }
    }
    for call in state.children.values() {
        let here = from.children.get(call.spec).map(|c| c.workflow.as_str());
        let there = to.children.get(call.spec).map(|c| c.workflow.as_str());
        if here != there {
            out.push(format!(
                "进行中的子流程 `{}` 在目标版本中对应不上，请待其完成后再迁移",
                here.unwrap_or("?")
            ));
        }
    }
    out
}

impl<S: Store> Runtime<S> {
    /// Check whether instance `id` can move to the definition `to_hash`
    /// (nothing is written).
    pub async fn check_migration(&self, id: &str, to_hash: &str) -> Result<MigrationCheck> {
        let row = self.row(id).await?;
        let to = self.program(to_hash).await?;
        self.check_row(&row, &to).await
    }

    async fn check_row(&self, row: &InstanceRow, to: &Program) -> Result<MigrationCheck> {
        let from = self.program(&row.definition_hash).await?;
        let state = crate::inspect::state_of(row).map_err(Error::Corrupt)?;
        let mut problems = Vec::new();
        if row.status != "running" {
            problems.push(format!(
                "实例状态为 {}，只有运行中的实例可以迁移",
                row.status
            ));
        }
        problems.extend(migration_problems(&state, &from, to));
        Ok(MigrationCheck {
            instance_id: row.id.clone(),
            state: row.state.clone(),
            from_version: row.definition_version,
            to_version: to.version.into(),
            problems,
        })
    }

    /// The dry run of a bulk migration: every running instance of
    /// `workflow` on version `from_version`, each with what stops it from
    /// moving to `to_hash` (empty: it can).
    pub async fn plan_migration(
        &self,
        workflow: &str,
        from_version: i64,
        to_hash: &str,
    ) -> Result<Vec<MigrationCheck>> {
        let to = self.program(to_hash).await?;
        let filter = store::InstanceFilter {
            kind: Some(workflow.to_string()),
            status: Some("running".into()),
            definition_version: Some(from_version),
            ..Default::default()
        };
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page = store::Page { limit: 500, offset };
            let rows = self.inner.store.instances(&filter, page).await?;
            if rows.is_empty() {
                break;
            }
            offset += rows.len() as i64;
            for r in &rows {
                out.push(self.check_row(r, &to).await?);
            }
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }

    /// Move a running instance to the definition `to_hash` (a newer
    /// version of its workflow), after checking it can go on there (see
    /// [`migration_problems`]); refused with what is missing otherwise.
    /// Variables the target declares and the instance lacks get their
    /// defaults. Pending timers keep their due times; when they fire, and
    /// for every later input, the target's definition applies. Recorded in
    /// the instance's history as an `operator_action` (`migrate`).
    pub async fn migrate(&self, id: &str, to_hash: &str, by: &Repair) -> Result<()> {
        by.check()?;
        let to = self.program(to_hash).await?;
        for _ in 0..5 {
            let row = self.row(id).await?;
            let check = self.check_row(&row, &to).await?;
            if !check.problems.is_empty() {
                return Err(Error::Refused(format!(
                    "实例 {id} 不能迁移到版本 {}：{}",
                    to.version,
                    check.problems.join("；")
                )));
            }
            let mut state = crate::inspect::state_of(&row).map_err(Error::Corrupt)?;
            let mut added = Vec::new();
            let mut vars = (*state.vars).clone();
            for v in &to.vars {
                if !vars.contains_key(&v.name) {
                    vars.insert(v.name.clone(), v.default.clone());
                    added.push(v.name.clone());
                }
            }
            state.vars = std::sync::Arc::new(vars);
            state.hash = to.hash.as_str().into();
            state.version = to.version;
            let mut c = self
                .operator_note(
                    &row,
                    json!({"action": "migrate", "operator": by.operator, "reason": by.reason,
                       "state": row.state,
                       "from_version": row.definition_version, "from_hash": row.definition_hash,
                       "to_version": to.version, "to_hash": to.hash, "added_vars": added}),
                )
                .await?;
            if let Some(r) = c.instance.as_mut() {
                r.definition_hash = to.hash.clone();
                r.definition_version = to.version.into();
                r.snapshot = serde_json::to_string(&state).expect("serialisable");
            }
            match self.inner.store.commit(&[c]).await {
                Ok(_) => {
                    tracing::info!(instance = %id, to_version = to.version, operator = %by.operator, "instance migrated");
                    self.wake();
                    return Ok(());
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Refused(format!("实例 {id} 正在变化，请稍后重试")))
    }

    /// The stored definition of `workflow` numbered `version` (the latest
    /// stored, should an old database hold several).
    pub async fn definition_hash(&self, workflow: &str, version: i64) -> Result<String> {
        self.inner
            .store
            .definitions(workflow)
            .await?
            .into_iter()
            .filter(|d| d.version == version)
            .max_by_key(|d| d.published_at)
            .map(|d| d.hash)
            .ok_or_else(|| Error::Refused(format!("工作流 {workflow} 没有已发布的版本 {version}")))
    }
}
