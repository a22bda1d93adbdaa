//! Definitions + rules -> checked `Program`s.
//!
//! Reads what `definition` parsed, resolves every name (states, signals,
//! forms, activities, rule functions, variables), parses durations, compiles
//! every rhai expression and checks the state graph. Every problem found is
//! reported at once as a [`Diagnostic`] with `file:line:col`. The
//! interpreter only ever sees the result; nothing here runs a workflow.
//!
//! The parts, in the order a bundle is compiled:
//! - `sources`: reading `workflows/` and `rules/` from disk;
//! - `bundle`: the whole tree, step by step (parse, rules, catalog,
//!   workflows, schedules);
//! - `catalog`: form and schedule files (activity retries in `values`);
//! - `workflow`: one workflow file (`WorkflowCx`): header, variables,
//!   signals, states, timers, the `Program`;
//! - `handlers`: transitions, `validate` checks and actions;
//! - `expressions`: `${...}` templates and expressions, the names they read;
//! - `graph`: reachability and dead ends of the state graph;
//! - `values`: durations, retry policies, identifiers;
//! - `diagnostics`: the [`Diagnostic`] type, where a message points, YAML
//!   errors in Chinese.

mod bundle;
mod catalog;
mod diagnostics;
mod expressions;
pub mod form;
mod graph;
mod handlers;
pub mod program;
pub mod schedule;
mod sources;
mod values;
mod workflow;

pub use diagnostics::{Diagnostic, Error};
pub use expressions::TIMER_FIELDS;
pub use sources::{load_dirs, module_name};

use crate::rules::{Limits, Rules};
use form::FormSpec;
use program::{DefinitionSource, Program, RetryPolicy, SourceFile};
use schedule::ScheduleSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How to compile. Reference-data files in `workflows/` are not an option:
/// the tree declares them itself (`data:`, see [`crate::definition::DataDef`]).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub limits: Limits,
}

/// An activity the host implements, from `workflows/activities.yaml`.
#[derive(Debug, Clone)]
pub struct ActivityDecl {
    pub name: String,
    pub description: Option<String>,
    pub retry: RetryPolicy,
}

/// Everything compiled from `workflows/` and `rules/`.
#[derive(Debug)]
pub struct Bundle {
    pub workflows: BTreeMap<String, Arc<Program>>,
    pub forms: BTreeMap<String, Arc<FormSpec>>,
    pub schedules: Vec<ScheduleSpec>,
    pub activities: BTreeMap<String, ActivityDecl>,
    pub rules: Arc<Rules>,
}

/// Compile a whole tree. Child workflows must exist in it. Rule files
/// ending in `.yaml` are declarations of the rules' inputs: every declared
/// function is run on its samples ([`crate::rules::inputs::check`]).
pub fn compile_bundle(
    workflow_files: &[SourceFile],
    rule_files: &[SourceFile],
    opts: &Options,
) -> Result<Bundle, Error> {
    bundle::compile(workflow_files, rule_files, opts, true)
}

/// Recompile one stored definition (the texts a version was published with).
pub fn compile_program(source: &DefinitionSource, opts: &Options) -> Result<Arc<Program>, Error> {
    let mut files = vec![source.workflow.clone()];
    files.extend(source.forms.iter().cloned());
    files.extend(source.activities.iter().cloned());
    let bundle = bundle::compile(&files, &source.rules, opts, false)?;
    let program = bundle.workflows.into_values().next().ok_or_else(|| {
        Error(vec![Diagnostic {
            file: source.workflow.path.clone(),
            line: 1,
            col: 1,
            message: "保存的定义中没有工作流".into(),
        }])
    })?;
    Ok(program)
}

/// Compiling small trees in the parts' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    /// An activity catalog with `notify` (3 attempts) and `fetch`.
    pub const ACTIVITIES: &str = "activities:\n  notify: { retry: { attempts: 3 } }\n  fetch: {}\n";

    /// A small valid workflow `t`: `a --go--> b` (terminal); `go` carries
    /// a `note`. Tests replace a part of it.
    pub const WORKFLOW: &str = "\
workflow: t
version: 1
input:
  who: { type: string }
variables:
  n: { type: int }
signals:
  go:
    fields:
      - { name: note, label: 备注, type: text }
initial: a
states:
  a:
    on:
      go: { goto: b }
  b:
    terminal: true
";

    /// `file:line:col: message` of every diagnostic of `workflow.yaml`
    /// with `ACTIVITIES` and `rules/helpers.rhai` = `rules` (empty: none);
    /// empty when the tree compiles.
    pub fn diagnostics_with(workflows: &[SourceFile], rules: &str) -> Vec<String> {
        let rule_files: Vec<SourceFile> = if rules.is_empty() {
            vec![]
        } else {
            vec![file("rules/helpers.rhai", rules)]
        };
        match compile_bundle(workflows, &rule_files, &Options::default()) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    /// Diagnostics of one workflow text (with the activity catalog).
    pub fn diagnostics(workflow: &str) -> Vec<String> {
        diagnostics_with(
            &[
                file("activities.yaml", ACTIVITIES),
                file("workflow.yaml", workflow),
            ],
            "fn greet(x) { x }",
        )
    }

    /// The compiled workflow `t` of `workflow`; panics with the diagnostics.
    pub fn program(workflow: &str) -> Arc<Program> {
        let files = [
            file("activities.yaml", ACTIVITIES),
            file("workflow.yaml", workflow),
        ];
        let rules = [file("rules/helpers.rhai", "fn greet(x) { x }")];
        let bundle =
            compile_bundle(&files, &rules, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
        bundle.workflows["t"].clone()
    }

    /// `WORKFLOW` with `from` replaced by `to` (which must be there).
    pub fn changed(from: &str, to: &str) -> String {
        assert!(WORKFLOW.contains(from), "{from:?} not in the base workflow");
        WORKFLOW.replacen(from, to, 1)
    }
}
