//! Transitions and actions: a handler's guard, `validate` checks, actions
//! and goto; an action is exactly one of `set`, `activity` or
//! `start_child`, with only the keys its kind takes.

use super::expressions::Scope;
use super::form::{FieldKind, FieldSpec, FormSpec};
use super::program::*;
use super::workflow::WorkflowCx;
use crate::definition::source::Path;
use crate::definition::{self, ActionDef, HandlerDef};
use serde_json::Value;
use std::sync::Arc;

/// The keys only an `activity` action takes.
fn activity_only(a: &ActionDef) -> [(&'static str, bool); 5] {
    [
        ("args", a.args.is_some()),
        ("retry", a.retry.is_some()),
        ("result", a.result.is_some()),
        ("on_success", a.on_success.is_some()),
        ("on_failure", a.on_failure.is_some()),
    ]
}

/// The keys only a `start_child` action takes.
fn child_only(a: &ActionDef) -> [(&'static str, bool); 4] {
    [
        ("input", a.input.is_some()),
        ("for_each", a.for_each.is_some()),
        ("key", a.key.is_some()),
        ("on_child_complete", a.on_child_complete.is_some()),
    ]
}

/// The keys of `list` that were written.
fn misplaced(list: &[(&'static str, bool)]) -> Vec<&'static str> {
    list.iter().filter(|x| x.1).map(|x| x.0).collect()
}

impl WorkflowCx<'_> {
    /// One handler or a list of them, in order.
    pub(super) fn handlers(
        &mut self,
        hs: &definition::OneOrMany<HandlerDef>,
        path: &Path,
        scope: Scope,
        state: StateId,
    ) -> Vec<Handler> {
        match hs {
            definition::OneOrMany::One(h) => vec![self.handler(h, path, scope, state)],
            definition::OneOrMany::Many(hs) => hs
                .iter()
                .enumerate()
                .map(|(i, h)| self.handler(h, &path.index(i), scope, state))
                .collect(),
        }
    }

    fn handler(&mut self, h: &HandlerDef, path: &Path, scope: Scope, state: StateId) -> Handler {
        let guard = h
            .guard
            .as_ref()
            .and_then(|g| self.expr(g, &path.key("if"), scope, ""));
        let mut checks = Vec::new();
        for (i, c) in h.validate.iter().enumerate() {
            let cp = path.key("validate").index(i);
            if let (Some(field), Some(sig)) = (&c.field, scope.signal) {
                if let Some(form) = self.signal_form(sig) {
                    if form.field(field).is_none() {
                        self.cx.err_value(
                            &cp.key("field"),
                            format!("信号 `{sig}` 没有字段 `{field}`"),
                        );
                    }
                }
            }
            if let Some(expr) = self.expr(&c.check, &cp.key("check"), scope, "") {
                checks.push(Check {
                    expr,
                    message: c.message.clone(),
                    field: c.field.clone(),
                });
            }
        }
        if !h.validate.is_empty() && scope.signal.is_none() {
            self.cx
                .err_key(&path.key("validate"), "`validate` 只用于信号转移".into());
        }
        let actions = self.actions(&h.actions, &path.key("do"), scope, state);
        let goto = h
            .goto
            .as_ref()
            .and_then(|g| self.goto(state, g, &path.key("goto")));
        Handler {
            guard,
            checks,
            actions,
            goto,
        }
    }

    pub(super) fn signal_form(&self, sig: &str) -> Option<Arc<FormSpec>> {
        let s = self.def.signals.get(sig)?;
        if let Some(f) = &s.form {
            return self.forms.get(f).map(|x| x.0.clone());
        }
        if s.fields.is_empty() {
            return None;
        }
        // Inline fields: rebuild a form just for name lookups.
        Some(Arc::new(FormSpec {
            name: sig.into(),
            title: None,
            notice: None,
            fields: s
                .fields
                .iter()
                .filter_map(|f| {
                    Some(FieldSpec {
                        name: f.name.clone(),
                        label: f.label.clone(),
                        kind: FieldKind::parse(&f.ty)?,
                        required: f.required,
                        min: None,
                        max: None,
                        min_length: None,
                        max_length: None,
                        options: vec![],
                        help: None,
                        default: None,
                    })
                })
                .collect(),
        }))
    }

    pub(super) fn actions(
        &mut self,
        defs: &[ActionDef],
        path: &Path,
        scope: Scope,
        state: StateId,
    ) -> Vec<Action> {
        defs.iter()
            .enumerate()
            .filter_map(|(i, a)| self.action(a, &path.index(i), scope, state))
            .collect()
    }

    fn action(
        &mut self,
        a: &ActionDef,
        path: &Path,
        scope: Scope,
        state: StateId,
    ) -> Option<Action> {
        let kinds = [
            a.set.is_some(),
            a.activity.is_some(),
            a.start_child.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if kinds != 1 {
            self.cx.err_value(
                path,
                "一个动作必须且只能写 `set`、`activity`、`start_child` 中的一个".into(),
            );
            return None;
        }
        let guard = a
            .guard
            .as_ref()
            .and_then(|g| self.expr(g, &path.key("if"), scope, ""));
        let kind = if let Some(set) = &a.set {
            self.set_action(a, set, path, scope)
        } else if let Some(name) = &a.activity {
            self.activity_action(a, name, path, scope, state)
        } else {
            let workflow = a.start_child.as_ref().expect("one kind");
            self.child_action(a, workflow, path, scope, state)
        };
        Some(Action { guard, kind })
    }

    /// `set: {var: value}`: each variable must be declared.
    fn set_action(
        &mut self,
        a: &ActionDef,
        set: &std::collections::BTreeMap<String, serde_yaml::Value>,
        path: &Path,
        scope: Scope,
    ) -> ActionKind {
        for k in misplaced(&activity_only(a))
            .into_iter()
            .chain(misplaced(&child_only(a)))
        {
            self.cx
                .err_key(&path.key(k), format!("`{k}` 不能用于 `set`"));
        }
        let mut out = Vec::new();
        for (var, v) in set {
            let vp = path.key("set").key(var);
            if !self.def.variables.contains_key(var) {
                self.cx.err_key(
                    &vp,
                    format!("`{var}` 不是已声明的变量；请在 `variables:` 下声明"),
                );
            }
            out.push((var.clone(), self.template(v, &vp, scope)));
        }
        ActionKind::Set(out)
    }

    /// `activity: NAME`: declared in the catalog, its retry on top of the
    /// catalog's, `result` a declared variable, then its handlers.
    fn activity_action(
        &mut self,
        a: &ActionDef,
        name: &str,
        path: &Path,
        scope: Scope,
        state: StateId,
    ) -> ActionKind {
        for k in misplaced(&child_only(a)) {
            self.cx
                .err_key(&path.key(k), format!("`{k}` 不能用于活动（activity）"));
        }
        let base = match self.activities.get(name) {
            Some(decl) => decl.retry,
            None => {
                let known: Vec<&str> = self.activities.keys().map(String::as_str).collect();
                self.cx.err_value(
                    &path.key("activity"),
                    format!("未知的活动 `{name}`；活动目录中有：{}", known.join(", ")),
                );
                RetryPolicy::default()
            }
        };
        let retry = self.cx.retry(a.retry.as_ref(), base, &path.key("retry"));
        let args = a
            .args
            .as_ref()
            .map(|v| self.template(v, &path.key("args"), scope))
            .unwrap_or(Template::Literal(Value::Null));
        if let Some(r) = &a.result {
            if !self.def.variables.contains_key(r) {
                self.cx
                    .err_value(&path.key("result"), format!("`{r}` 不是已声明的变量"));
            }
        }
        let (on_success, on_failure) = self.activity_handlers(a, path, scope, state);
        self.program_activities.push(ActivitySpec {
            name: name.to_string(),
            args,
            retry,
            result: a.result.clone(),
            on_success,
            on_failure,
        });
        ActionKind::Activity(self.program_activities.len() - 1)
    }

    /// An activity's `on_success` and `on_failure`, where `result` and
    /// `error` may be read.
    fn activity_handlers(
        &mut self,
        a: &ActionDef,
        path: &Path,
        scope: Scope,
        state: StateId,
    ) -> (Vec<Handler>, Vec<Handler>) {
        let hs = Scope {
            in_activity_handler: true,
            ..scope
        };
        let on_success = a
            .on_success
            .as_ref()
            .map(|h| self.handlers(h, &path.key("on_success"), hs, state))
            .unwrap_or_default();
        let on_failure = a
            .on_failure
            .as_ref()
            .map(|h| self.handlers(h, &path.key("on_failure"), hs, state))
            .unwrap_or_default();
        (on_success, on_failure)
    }

    /// `start_child: WORKFLOW`: a known workflow (when checked), one per
    /// `for_each` item, keyed, with its completion handler.
    fn child_action(
        &mut self,
        a: &ActionDef,
        workflow: &str,
        path: &Path,
        scope: Scope,
        state: StateId,
    ) -> ActionKind {
        for k in misplaced(&activity_only(a)) {
            self.cx
                .err_key(&path.key(k), format!("`{k}` 不能用于 `start_child`"));
        }
        if let Some(names) = self.workflow_names {
            if !names.contains(workflow) {
                self.cx.err_value(
                    &path.key("start_child"),
                    format!("未知的工作流 `{workflow}`"),
                );
            }
        }
        let for_each = a
            .for_each
            .as_ref()
            .and_then(|e| self.expr(e, &path.key("for_each"), scope, ""));
        let item_scope = Scope {
            item: for_each.is_some(),
            ..scope
        };
        let input = a
            .input
            .as_ref()
            .map(|v| self.template(v, &path.key("input"), item_scope))
            .unwrap_or(Template::Literal(Value::Object(Default::default())));
        let key = a
            .key
            .as_ref()
            .and_then(|e| self.expr(e, &path.key("key"), item_scope, ""));
        let hs = Scope {
            in_activity_handler: true,
            ..scope
        };
        let on_complete = a
            .on_child_complete
            .as_ref()
            .map(|h| self.handlers(h, &path.key("on_child_complete"), hs, state))
            .unwrap_or_default();
        self.program_children.push(ChildSpec {
            workflow: workflow.to_string(),
            input,
            for_each,
            key,
            on_complete,
        });
        ActionKind::StartChild(self.program_children.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::program::ActionKind;
    use crate::compile::test_support::{changed, diagnostics, program};

    /// The base workflow with `actions` (YAML list items, 6 spaces in)
    /// on entering `a`, from line 15.
    fn on_enter(actions: &str) -> String {
        changed(
            "  a:\n    on:",
            &format!("  a:\n    on_enter:\n{actions}    on:"),
        )
    }

    #[test]
    fn an_action_is_exactly_one_kind() {
        let w = on_enter("      - { set: { n: 1 }, activity: notify }\n");
        assert_eq!(
            diagnostics(&w),
            ["workflow.yaml:15:9: 一个动作必须且只能写 `set`、`activity`、`start_child` 中的一个"]
        );
        assert_eq!(
            diagnostics(&on_enter("      - { if: \"true\" }\n")),
            ["workflow.yaml:15:9: 一个动作必须且只能写 `set`、`activity`、`start_child` 中的一个"]
        );
    }

    #[test]
    fn each_kind_refuses_the_keys_of_the_others() {
        let w = on_enter(
            "      - { set: { n: 1 }, args: {} }\n      - { activity: notify, key: x }\n      - { start_child: t, result: n }\n",
        );
        assert_eq!(
            diagnostics(&w),
            [
                "workflow.yaml:15:26: `args` 不能用于 `set`",
                "workflow.yaml:16:29: `key` 不能用于活动（activity）",
                "workflow.yaml:17:27: `result` 不能用于 `start_child`",
            ]
        );
    }

    #[test]
    fn set_and_result_name_declared_variables() {
        let w = on_enter("      - set: { m: 1 }\n      - { activity: fetch, result: m }\n");
        assert_eq!(
            diagnostics(&w),
            [
                "workflow.yaml:15:16: `m` 不是已声明的变量；请在 `variables:` 下声明",
                "workflow.yaml:16:36: `m` 不是已声明的变量",
            ]
        );
    }

    #[test]
    fn an_activity_is_from_the_catalog() {
        let w = on_enter("      - activity: send_fax\n");
        assert_eq!(
            diagnostics(&w),
            ["workflow.yaml:15:19: 未知的活动 `send_fax`；活动目录中有：fetch, notify"]
        );
    }

    #[test]
    fn actions_compile_to_their_kinds_in_order() {
        let w = on_enter(
            "      - set: { n: 2 }\n      - activity: notify\n        args: { who: \"${input.who}\" }\n      - start_child: t\n        key: \"input.who\"\n",
        );
        let p = program(&w);
        let kinds: Vec<_> = p.states[0]
            .on_enter
            .iter()
            .map(|a| match &a.kind {
                ActionKind::Set(_) => "set".to_string(),
                ActionKind::Activity(i) => format!("activity {}", p.activities[*i].name),
                ActionKind::StartChild(i) => format!("child {}", p.children[*i].workflow),
            })
            .collect();
        assert_eq!(kinds, ["set", "activity notify", "child t"]);
        assert_eq!(p.activities[0].retry.max_attempts, 3, "the catalog's retry");
    }

    #[test]
    fn validate_belongs_to_signals_and_names_their_fields() {
        let w = changed(
            "      go: { goto: b }",
            "      go:\n        validate:\n          - { check: \"signal.note != ()\", field: notes, message: 写备注 }\n        goto: b",
        )
        .replace(
            "  a:\n    on:",
            "  a:\n    on_enter:\n      - activity: fetch\n        on_success:\n          validate: [{ check: \"true\", message: 不用 }]\n          goto: b\n    on:",
        );
        assert_eq!(
            diagnostics(&w),
            [
                "workflow.yaml:17:11: `validate` 只用于信号转移",
                "workflow.yaml:22:50: 信号 `go` 没有字段 `notes`",
            ]
        );
    }
}
