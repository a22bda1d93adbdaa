//! One workflow file (`WorkflowCx`): its header, input and variables,
//! signals, search fields, states with their timers and transitions, and
//! the `Program` built from them when nothing was wrong. Transitions and
//! actions are in `handlers`, expressions in `expressions`, the state
//! graph in `graph`.

use super::bundle::Forms;
use super::diagnostics::FileCx;
use super::expressions::ROOT;
use super::program::*;
use super::values::is_identifier;
use super::ActivityDecl;
use crate::definition::source::Path;
use crate::definition::{self, StateDef, WorkflowDef};
use crate::rules::{self, Rules};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// A goto edge of the state graph: from, to.
pub(super) type Edge = (StateId, StateId);

pub(super) struct WorkflowCx<'a> {
    pub(super) cx: FileCx<'a>,
    pub(super) def: &'a WorkflowDef,
    pub(super) rules: &'a Arc<Rules>,
    pub(super) broken_modules: &'a BTreeSet<String>,
    pub(super) forms: &'a Forms,
    pub(super) activities: &'a BTreeMap<String, ActivityDecl>,
    /// The workflows a `start_child` may name (None: not checked).
    pub(super) workflow_names: Option<&'a BTreeSet<String>>,
    pub(super) states: BTreeMap<String, StateId>,
    pub(super) used_forms: BTreeSet<String>,
    pub(super) program_activities: Vec<ActivitySpec>,
    pub(super) program_children: Vec<ChildSpec>,
    pub(super) edges: Vec<Edge>,
}

impl<'a> WorkflowCx<'a> {
    pub(super) fn new(
        cx: FileCx<'a>,
        def: &'a WorkflowDef,
        rules: &'a Arc<Rules>,
        broken_modules: &'a BTreeSet<String>,
        forms: &'a Forms,
        activities: &'a BTreeMap<String, ActivityDecl>,
        workflow_names: Option<&'a BTreeSet<String>>,
    ) -> Self {
        WorkflowCx {
            cx,
            def,
            rules,
            broken_modules,
            forms,
            activities,
            workflow_names,
            states: BTreeMap::new(),
            used_forms: BTreeSet::new(),
            program_activities: Vec::new(),
            program_children: Vec::new(),
            edges: Vec::new(),
        }
    }
}

impl WorkflowCx<'_> {
    /// The whole workflow: header, input, variables, signals, search
    /// fields, states, the graph; the `Program` when nothing was wrong.
    pub(super) fn compile(
        &mut self,
        file: &SourceFile,
        rule_files: &[SourceFile],
        activities_file: Option<&SourceFile>,
    ) -> Option<Program> {
        let before = self.cx.diags.len();
        let d = self.def;
        let root = Path::root();
        self.check_header();
        let input = self.vars(&d.input, &root.key("input"), true);
        let vars = self.vars(&d.variables, &root.key("variables"), false);

        // States get their ids first so gotos can be resolved in any order.
        self.states = d
            .states
            .keys()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect();
        let initial = self.state_ref(&d.initial, &root.key("initial"));

        let signals = self.signals();
        let search = self.search();
        let states: Vec<StateSpec> = d
            .states
            .iter()
            .map(|(name, sd)| self.state(name, sd))
            .collect();

        if let Some(initial) = initial {
            self.check_graph(&states, initial);
        }
        if self.cx.diags.len() != before {
            return None;
        }
        let source = self.source(file, rule_files, activities_file);
        Some(Program {
            projection: d.projection.clone(),
            timer_values: timer_values(&states),
            name: d.workflow.clone(),
            version: d.version,
            title: d.title.clone(),
            hash: source_hash(&source),
            input,
            vars,
            search,
            signals,
            state_index: self.states.clone(),
            states,
            initial: initial.expect("checked"),
            activities: std::mem::take(&mut self.program_activities),
            children: std::mem::take(&mut self.program_children),
            rules: self.rules.clone(),
            source,
        })
    }

    /// `version` at least 1, the workflow's name an identifier.
    fn check_header(&mut self) {
        let d = self.def;
        let root = Path::root();
        if d.version == 0 {
            self.cx
                .err_value(&root.key("version"), "version（版本号）至少为 1".into());
        }
        if !is_identifier(&d.workflow) {
            self.cx.err_value(
                &root.key("workflow"),
                format!("工作流名 `{}` 只能由字母、数字和 _ 组成", d.workflow),
            );
        }
    }

    /// The `search:` fields the instances are found by.
    fn search(&mut self) -> Vec<(String, Template)> {
        let d = self.def;
        let root = Path::root();
        d.search
            .iter()
            .map(|(k, v)| {
                let ok = k.starts_with(|c: char| c.is_ascii_lowercase())
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    self.cx.err_key(
                        &root.key("search").key(k),
                        format!("查询字段名 `{k}` 须以小写字母开头，只含小写字母、数字和下划线"),
                    );
                }
                (
                    k.clone(),
                    self.template(v, &root.key("search").key(k), ROOT),
                )
            })
            .collect()
    }

    /// One state: terminal or not, what it does on entry, its timers and
    /// its transitions.
    fn state(&mut self, name: &str, sd: &StateDef) -> StateSpec {
        let sp = Path::root().key("states").key(name);
        let id = self.states[name];
        let terminal = self.terminal(name, sd, &sp);
        let on_enter = self.actions(&sd.on_enter, &sp.key("on_enter"), ROOT, id);
        let timers = sd
            .timers
            .iter()
            .map(|(tname, td)| self.timer(tname, td, &sp.key("timers").key(tname), id))
            .collect();
        let on = self.transitions(sd, &sp, id);
        StateSpec {
            name: name.to_string(),
            label: sd.label.clone(),
            terminal,
            on_enter,
            timers,
            on,
        }
    }

    /// A terminal state has no timers or transitions; `status` and
    /// `output` belong to terminal states only.
    fn terminal(&mut self, name: &str, sd: &StateDef, sp: &Path) -> Option<Terminal> {
        if !sd.terminal {
            if sd.status.is_some() {
                self.cx.err_key(&sp.key("status"), format!("`status` 只用于终止状态：给 `{name}` 加上 `terminal: true`，或删去 `status`"));
            }
            if sd.output.is_some() {
                self.cx
                    .err_key(&sp.key("output"), "`output` 只用于终止状态".into());
            }
            return None;
        }
        if !sd.timers.is_empty() {
            self.cx.err_key(
                &sp.key("timers"),
                format!("终止状态 `{name}` 不能有计时器：工作流到这里已经结束"),
            );
        }
        if !sd.on.is_empty() {
            self.cx.err_key(
                &sp.key("on"),
                format!("终止状态 `{name}` 不能有转移：工作流到这里已经结束"),
            );
        }
        let output = sd
            .output
            .as_ref()
            .map(|o| self.template(o, &sp.key("output"), ROOT));
        Some(Terminal {
            status: sd.status.clone(),
            output,
        })
    }

    fn timer(
        &mut self,
        tname: &str,
        td: &definition::TimerDef,
        tp: &Path,
        id: StateId,
    ) -> TimerSpec {
        let after = self
            .cx
            .duration(&td.after, &tp.key("after"))
            .unwrap_or(Duration::from_secs(1));
        let guard = td
            .guard
            .as_ref()
            .and_then(|g| self.expr(g, &tp.key("if"), ROOT, ""));
        let actions = self.actions(&td.actions, &tp.key("do"), ROOT, id);
        let goto = td
            .goto
            .as_ref()
            .and_then(|g| self.goto(id, g, &tp.key("goto")));
        TimerSpec {
            name: tname.to_string(),
            label: td.label.clone(),
            after,
            deadline: td.deadline,
            from_start: td.from == definition::TimerAnchor::Start,
            guard,
            actions,
            goto,
        }
    }

    /// `on:` — the handlers of each signal; the signal must be declared.
    fn transitions(
        &mut self,
        sd: &StateDef,
        sp: &Path,
        id: StateId,
    ) -> BTreeMap<String, Vec<Handler>> {
        let d = self.def;
        let mut on = BTreeMap::new();
        for (sig, handlers) in &sd.on {
            let op = sp.key("on").key(sig);
            if !d.signals.contains_key(sig) {
                let known: Vec<&str> = d.signals.keys().map(String::as_str).collect();
                self.cx.err_key(
                    &op,
                    format!(
                        "转移所用的信号 `{sig}` 没有声明；已声明的信号：{}",
                        known.join(", ")
                    ),
                );
            }
            let scope = super::expressions::Scope {
                signal: Some(sig),
                ..ROOT
            };
            let list = self.handlers(handlers, &op, scope, id);
            on.insert(sig.clone(), list);
        }
        on
    }

    /// What a published version stores: this file, the forms it uses, the
    /// rules and the activity catalog.
    fn source(
        &self,
        file: &SourceFile,
        rule_files: &[SourceFile],
        activities_file: Option<&SourceFile>,
    ) -> DefinitionSource {
        DefinitionSource {
            workflow: file.clone(),
            forms: self
                .used_forms
                .iter()
                .map(|f| self.forms[f].1.clone())
                .collect(),
            rules: rule_files.to_vec(),
            activities: activities_file.cloned(),
        }
    }

    pub(super) fn vars(
        &mut self,
        defs: &BTreeMap<String, definition::VarDef>,
        path: &Path,
        is_input: bool,
    ) -> Vec<VarSpec> {
        let mut out = Vec::new();
        for (name, v) in defs {
            let vp = path.key(name);
            if !is_identifier(name) {
                self.cx
                    .err_key(&vp, format!("名称 `{name}` 只能由字母、数字和 _ 组成"));
            }
            let Some(ty) = ValueType::parse(&v.ty) else {
                self.cx.err_value(
                    &vp.key("type"),
                    format!("未知的类型 `{}`；可用：{}", v.ty, ValueType::NAMES),
                );
                continue;
            };
            let default = match &v.default {
                Some(d) => {
                    let j = serde_json::to_value(d).unwrap_or(Value::Null);
                    if !ty.accepts(&j) {
                        self.cx.err_value(
                            &vp.key("default"),
                            format!("`{name}` 的默认值不是 {}", v.ty),
                        );
                    }
                    j
                }
                None if is_input => Value::Null,
                None => match ty {
                    ValueType::Int => Value::from(0),
                    ValueType::Number => Value::from(0.0),
                    ValueType::Bool => Value::Bool(false),
                    ValueType::List => Value::Array(vec![]),
                    ValueType::Map => Value::Object(Default::default()),
                    ValueType::String | ValueType::Text => Value::String(String::new()),
                    _ => Value::Null,
                },
            };
            if !is_input && v.required {
                self.cx.err_value(
                    &vp.key("required"),
                    "`required` 只用于 input（输入），不用于变量".into(),
                );
            }
            out.push(VarSpec {
                name: name.clone(),
                ty,
                required: v.required,
                default,
            });
        }
        out
    }

    pub(super) fn signals(&mut self) -> BTreeMap<String, SignalSpec> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.def.signals {
            let sp = Path::root().key("signals").key(name);
            let form = match (&s.form, s.fields.is_empty()) {
                (Some(_), false) => {
                    self.cx
                        .err_key(&sp.key("fields"), "`form` 和 `fields` 只能写一个".into());
                    None
                }
                (Some(f), true) => match self.forms.get(f) {
                    Some((spec, _)) => {
                        self.used_forms.insert(f.clone());
                        Some(spec.clone())
                    }
                    None => {
                        let known: Vec<&str> = self.forms.keys().map(String::as_str).collect();
                        self.cx.err_value(
                            &sp.key("form"),
                            format!("未知的表单 `{f}`；已有的表单：{}", known.join(", ")),
                        );
                        None
                    }
                },
                (None, false) => self
                    .cx
                    .form(name, s.label.clone(), None, &s.fields, &sp.key("fields"))
                    .map(Arc::new),
                (None, true) => None,
            };
            out.insert(
                name.clone(),
                SignalSpec {
                    name: name.clone(),
                    label: s.label.clone(),
                    actors: s.actors.clone(),
                    form,
                },
            );
        }
        out
    }

    pub(super) fn state_ref(&mut self, name: &str, path: &Path) -> Option<StateId> {
        match self.states.get(name) {
            Some(&id) => Some(id),
            None => {
                let known: Vec<&str> = self.states.keys().map(String::as_str).collect();
                let mut message = format!("未知的状态 `{name}`；已有的状态：{}", known.join(", "));
                if let Some(c) = rules::inputs::closest(name, known.iter().copied()) {
                    message.push_str(&format!("；是否想写 `{c}`？"));
                }
                self.cx.err_value(path, message);
                None
            }
        }
    }

    pub(super) fn goto(&mut self, from: StateId, name: &str, path: &Path) -> Option<StateId> {
        let Some(to) = self.state_ref(name, path) else {
            // The graph checks must not repeat this one mistake as
            // unreachable states and dead ends: the edge is taken to go to
            // the state it most likely meant (a misspelling), or else to
            // any state.
            let known = self.states.keys().map(String::as_str);
            match rules::inputs::closest(name, known).map(|c| self.states[c]) {
                Some(meant) => self.edges.push((from, meant)),
                None => self.edges.extend((0..self.states.len()).map(|t| (from, t))),
            }
            return None;
        };
        self.edges.push((from, to));
        Some(to)
    }
}

/// The `timers` value expressions read: every timer of the workflow by
/// name (the first state declaring a name wins).
fn timer_values(states: &[StateSpec]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for t in states.iter().flat_map(|s| &s.timers) {
        m.entry(t.name.clone()).or_insert_with(|| {
            serde_json::json!({
                "after": duration_zh(t.after),
                "hours": t.after.as_secs() / 3600,
                "minutes": t.after.as_secs() / 60,
                "label": t.label,
            })
        });
    }
    serde_json::Value::Object(m)
}

/// The definition's hash: of everything it was compiled from.
fn source_hash(source: &DefinitionSource) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(source).expect("serialisable"),
    ))
}

#[cfg(test)]
mod tests {
    use crate::compile::test_support::{changed, diagnostics, program, WORKFLOW};
    use serde_json::json;

    #[test]
    fn the_base_workflow_compiles() {
        let p = program(WORKFLOW);
        assert_eq!(p.name, "t");
        assert_eq!(p.states[p.initial].name, "a");
        assert_eq!(p.state_index["b"], 1);
        assert_eq!(p.hash.len(), 64);
    }

    #[test]
    fn the_hash_follows_the_text() {
        let a = program(WORKFLOW);
        let b = program(&changed("  b:\n", "  # a comment\n  b:\n"));
        assert_ne!(a.hash, b.hash, "what was published is what is hashed");
    }

    #[test]
    fn the_name_is_an_identifier_and_the_version_at_least_one() {
        let w = WORKFLOW
            .replace("workflow: t", "workflow: 预警")
            .replace("version: 1", "version: 0");
        assert_eq!(
            diagnostics(&w),
            [
                "workflow.yaml:1:11: 工作流名 `预警` 只能由字母、数字和 _ 组成",
                "workflow.yaml:2:10: version（版本号）至少为 1",
            ]
        );
    }

    #[test]
    fn variables_default_to_the_zero_of_their_type_and_inputs_to_null() {
        let w = changed(
            "  n: { type: int }\n",
            "  n: { type: int }\n  l: { type: list }\n  s: { type: string, default: x }\n",
        );
        let p = program(&w);
        let defaults: Vec<_> = p
            .vars
            .iter()
            .map(|v| (v.name.as_str(), v.default.clone()))
            .collect();
        assert_eq!(
            defaults,
            [("l", json!([])), ("n", json!(0)), ("s", json!("x"))]
        );
        assert_eq!(p.input[0].default, json!(null));
    }

    #[test]
    fn a_variable_is_not_required_and_its_default_has_its_type() {
        let w = changed(
            "  n: { type: int }",
            "  n: { type: int, default: x, required: true }",
        );
        assert_eq!(
            diagnostics(&w),
            [
                "workflow.yaml:6:28: `n` 的默认值不是 int",
                "workflow.yaml:6:41: `required` 只用于 input（输入），不用于变量",
            ]
        );
    }

    #[test]
    fn terminal_and_running_states_take_their_own_keys() {
        let w = changed("  a:\n    on:", "  a:\n    status: 办结\n    on:").replace(
            "    terminal: true\n",
            "    terminal: true\n    on:\n      go: { goto: a }\n",
        );
        assert_eq!(
            diagnostics(&w),
            [
                "workflow.yaml:14:5: `status` 只用于终止状态：给 `a` 加上 `terminal: true`，或删去 `status`",
                "workflow.yaml:19:5: 终止状态 `b` 不能有转移：工作流到这里已经结束",
            ]
        );
    }

    #[test]
    fn a_transition_names_a_declared_signal() {
        let w = changed(
            "      go: { goto: b }",
            "      go: { goto: b }\n      stop: { goto: b }",
        );
        assert_eq!(
            diagnostics(&w),
            ["workflow.yaml:16:7: 转移所用的信号 `stop` 没有声明；已声明的信号：go"]
        );
    }

    #[test]
    fn a_signal_has_a_form_or_fields_and_the_form_exists() {
        let w = changed("    fields:\n", "    form: nope\n    fields:\n");
        assert_eq!(
            diagnostics(&w),
            ["workflow.yaml:10:5: `form` 和 `fields` 只能写一个"]
        );
        let w = changed(
            "    fields:\n      - { name: note, label: 备注, type: text }\n",
            "    form: nope\n",
        );
        assert_eq!(
            diagnostics(&w),
            ["workflow.yaml:9:11: 未知的表单 `nope`；已有的表单："]
        );
    }

    #[test]
    fn a_search_field_name_is_checked_at_its_key() {
        // Under either rule (the three known names, or any lower-case
        // identifier) `Colour` is refused, at its key.
        let w = changed(
            "initial: a",
            "search:\n  person: \"${input.who}\"\n  Colour: red\ninitial: a",
        );
        let got = diagnostics(&w);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("workflow.yaml:13:3: "), "{got:?}");
        assert!(got[0].contains("`Colour`"), "{got:?}");
        let p = program(&changed(
            "initial: a",
            "search:\n  person: \"${input.who}\"\ninitial: a",
        ));
        assert_eq!(p.search.len(), 1);
    }

    #[test]
    fn timers_are_readable_by_name_in_words_and_numbers() {
        let w = changed(
            "  a:\n    on:",
            "  a:\n    timers:\n      t: { label: 期限, after: 90m, goto: b }\n    on:",
        );
        assert_eq!(
            program(&w).timer_values,
            json!({"t": {"after": super::duration_zh(std::time::Duration::from_secs(5400)),
                          "hours": 1, "minutes": 90, "label": "期限"}})
        );
    }
}
