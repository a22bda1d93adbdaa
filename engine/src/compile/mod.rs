//! Definitions + rules -> checked `Program`s.
//!
//! Reads what `definition` parsed, resolves every name (states, signals,
//! forms, activities, rule functions, variables), parses durations, compiles
//! every rhai expression and checks the state graph. Every problem found is
//! reported at once as a [`Diagnostic`] with `file:line:col`. The
//! interpreter only ever sees the result; nothing here runs a workflow.

pub mod form;
pub mod program;
pub mod schedule;

use crate::definition::source::{Path, Pos, SourceMap};
use crate::definition::{self, ActionDef, FieldDef, File, HandlerDef, RetryDef, WorkflowDef};
use crate::rules::{self, Limits, Reference, Rules};
use form::{FieldKind, FieldSpec, FormSpec};
use program::*;
use schedule::{CatchUp, ScheduleSpec};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// One problem in one file, where a policy officer can find it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl From<rules::inputs::Finding> for Diagnostic {
    fn from(f: rules::inputs::Finding) -> Self {
        Diagnostic {
            file: f.file,
            line: f.line,
            col: f.col,
            message: f.message,
        }
    }
}

/// Every problem found, sorted by file and position.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Error(pub Vec<Diagnostic>);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub limits: Limits,
    /// Top-level keys of reference-data files in `workflows/` that the host
    /// validates itself (for example `districts`).
    pub data_keys: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            data_keys: vec!["districts".into()],
        }
    }
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

/// Read every `*.yaml`/`*.yml` under `workflows`, `*.rhai` under `rules`
/// and the declarations of what the rules receive (`rules/inputs/*.yaml`,
/// see [`crate::rules::inputs`]), sorted by path. Paths are shown as given
/// (`workflows/warning.yaml`).
pub fn load_dirs(
    workflows: &std::path::Path,
    rules: &std::path::Path,
) -> std::io::Result<(Vec<SourceFile>, Vec<SourceFile>)> {
    fn walk(
        dir: &std::path::Path,
        exts: &[&str],
        out: &mut Vec<SourceFile>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, exts, out)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                let text = std::fs::read_to_string(&path)?;
                out.push(SourceFile {
                    path: path.display().to_string(),
                    text,
                });
            }
        }
        Ok(())
    }
    let (mut w, mut r) = (Vec::new(), Vec::new());
    walk(workflows, &["yaml", "yml"], &mut w)?;
    if rules.exists() {
        walk(rules, &["rhai"], &mut r)?;
        let inputs = rules.join("inputs");
        if inputs.is_dir() {
            walk(&inputs, &["yaml", "yml"], &mut r)?;
        }
    }
    w.sort();
    r.sort();
    Ok((w, r))
}

/// Module name of a rules file: its file stem (`rules/anomaly.rhai` -> `anomaly`).
pub fn module_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(path)
        .to_string()
}

/// Is `path` a declaration of rule inputs rather than a script?
fn is_declaration(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// Compile a whole tree. Child workflows must exist in it. Rule files
/// ending in `.yaml` are declarations of the rules' inputs: every declared
/// function is run on its samples ([`crate::rules::inputs::check`]).
pub fn compile_bundle(
    workflow_files: &[SourceFile],
    rule_files: &[SourceFile],
    opts: &Options,
) -> Result<Bundle, Error> {
    compile_inner(workflow_files, rule_files, opts, true)
}

/// Recompile one stored definition (the texts a version was published with).
pub fn compile_program(source: &DefinitionSource, opts: &Options) -> Result<Arc<Program>, Error> {
    let mut files = vec![source.workflow.clone()];
    files.extend(source.forms.iter().cloned());
    files.extend(source.activities.iter().cloned());
    let bundle = compile_inner(&files, &source.rules, opts, false)?;
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

struct Parsed {
    file: SourceFile,
    map: SourceMap,
    def: File,
}

fn compile_inner(
    workflow_files: &[SourceFile],
    rule_files: &[SourceFile],
    opts: &Options,
    check_children: bool,
) -> Result<Bundle, Error> {
    let mut diags = Vec::new();
    let data_keys: Vec<&str> = opts.data_keys.iter().map(String::as_str).collect();
    let (declarations, rule_files): (Vec<SourceFile>, Vec<SourceFile>) = rule_files
        .iter()
        .cloned()
        .partition(|f| is_declaration(&f.path));
    let rule_files = rule_files.as_slice();

    // 1. Parse.
    let mut parsed = Vec::new();
    for f in workflow_files {
        match definition::parse(&f.text, &data_keys) {
            Ok(Some(def)) => parsed.push(Parsed {
                file: f.clone(),
                map: SourceMap::build(&f.text),
                def,
            }),
            Ok(None) => {}
            Err(e) => diags.push(Diagnostic {
                file: f.path.clone(),
                line: e.line,
                col: e.col,
                message: yaml_words(&e.message),
            }),
        }
    }

    // 2. Rules.
    let mut broken_modules = BTreeSet::new();
    let scripts: Vec<(String, String, String)> = rule_files
        .iter()
        .map(|f| (module_name(&f.path), f.path.clone(), f.text.clone()))
        .collect();
    let rules = match Rules::build(&scripts, opts.limits) {
        Ok(r) => r,
        Err(errors) => {
            for (module, e) in errors {
                let file = scripts
                    .iter()
                    .find(|s| s.0 == module)
                    .map(|s| s.1.clone())
                    .unwrap_or_default();
                diags.push(Diagnostic {
                    file,
                    line: e.line,
                    col: e.col,
                    message: e.message.clone(),
                });
                broken_modules.insert(module);
            }
            // Keep checking calls into the scripts that did compile.
            let good: Vec<_> = scripts
                .iter()
                .filter(|s| !broken_modules.contains(&s.0))
                .cloned()
                .collect();
            Rules::build(&good, opts.limits)
                .unwrap_or_else(|_| Rules::build(&[], opts.limits).expect("empty rules build"))
        }
    };
    let rules = Arc::new(rules);
    if !declarations.is_empty() {
        let files: Vec<(String, String)> = declarations
            .iter()
            .map(|f| (f.path.clone(), f.text.clone()))
            .collect();
        let (decls, findings) = rules::inputs::parse(&files);
        let broken_declarations = !findings.is_empty();
        diags.extend(findings.into_iter().map(Diagnostic::from));
        // A script that does not compile is reported once, not again
        // through every declared function of it.
        if !broken_declarations {
            let decls = rules::inputs::Declarations {
                files: decls
                    .files
                    .into_iter()
                    .filter(|f| !broken_modules.contains(&f.module))
                    .collect(),
                types: decls.types,
            };
            diags.extend(
                rules::inputs::check(&rules, &decls, opts.limits)
                    .into_iter()
                    .map(Diagnostic::from),
            );
        }
    }

    // 3. Forms and the activity catalog.
    let mut forms: BTreeMap<String, (Arc<FormSpec>, SourceFile)> = BTreeMap::new();
    let mut activities: BTreeMap<String, ActivityDecl> = BTreeMap::new();
    let mut activity_files = Vec::new();
    for p in &parsed {
        let mut cx = FileCx {
            file: &p.file,
            map: &p.map,
            diags: &mut diags,
        };
        match &p.def {
            File::Form(fd) => {
                let root = Path::root();
                if let Some(spec) = cx.form(
                    &fd.form,
                    fd.title.clone(),
                    fd.notice.clone(),
                    &fd.fields,
                    &root.key("fields"),
                ) {
                    if forms.contains_key(&fd.form) {
                        cx.err_value(&root.key("form"), format!("表单 `{}` 定义了两次", fd.form));
                    } else {
                        forms.insert(fd.form.clone(), (Arc::new(spec), p.file.clone()));
                    }
                }
            }
            File::Activities(ad) => {
                activity_files.push(p.file.clone());
                for (name, decl) in &ad.activities {
                    let path = Path::root().key("activities").key(name);
                    let retry = cx.retry(
                        decl.retry.as_ref(),
                        RetryPolicy::default(),
                        &path.key("retry"),
                    );
                    if activities.contains_key(name) {
                        cx.err_key(&path, format!("活动 `{name}` 声明了两次"));
                    }
                    activities.insert(
                        name.clone(),
                        ActivityDecl {
                            name: name.clone(),
                            description: decl.description.clone(),
                            retry,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    // 4. Workflows.
    let workflow_names: BTreeSet<String> = parsed
        .iter()
        .filter_map(|p| match &p.def {
            File::Workflow(w) => Some(w.workflow.clone()),
            _ => None,
        })
        .collect();
    let mut workflows = BTreeMap::new();
    for p in &parsed {
        let File::Workflow(w) = &p.def else { continue };
        let cx = FileCx {
            file: &p.file,
            map: &p.map,
            diags: &mut diags,
        };
        let mut wc = WorkflowCx {
            cx,
            def: w,
            rules: &rules,
            broken_modules: &broken_modules,
            forms: &forms,
            activities: &activities,
            workflow_names: if check_children {
                Some(&workflow_names)
            } else {
                None
            },
            states: BTreeMap::new(),
            used_forms: BTreeSet::new(),
            program_activities: Vec::new(),
            program_children: Vec::new(),
            edges: Vec::new(),
        };
        if let Some(program) = wc.compile(&p.file, rule_files, activity_files.first()) {
            if workflows.contains_key(&program.name) {
                wc.cx.err_value(
                    &Path::root().key("workflow"),
                    format!("工作流 `{}` 定义了两次", program.name),
                );
            } else {
                workflows.insert(program.name.clone(), Arc::new(program));
            }
        }
    }

    // 5. Schedules.
    let mut schedules = Vec::new();
    for p in &parsed {
        let File::Schedules(sd) = &p.def else {
            continue;
        };
        let mut cx = FileCx {
            file: &p.file,
            map: &p.map,
            diags: &mut diags,
        };
        for (i, s) in sd.schedules.iter().enumerate() {
            let path = Path::root().key("schedules").index(i);
            if let Some(spec) = cx.schedule(s, &path, &workflow_names) {
                schedules.push(spec);
            }
        }
    }

    drop_alias_repeats(&mut diags, workflow_files);
    if diags.is_empty() {
        Ok(Bundle {
            workflows,
            forms: forms.into_iter().map(|(k, (f, _))| (k, f)).collect(),
            schedules,
            activities,
            rules,
        })
    } else {
        diags.sort();
        diags.dedup();
        Err(Error(diags))
    }
}

/// serde_yaml's and the parser's English in Chinese: `states.a: unknown
/// field `colour`, expected one of …` -> `states.a: 未知的键 `colour`；可用的键：…`.
fn yaml_words(message: &str) -> String {
    let (prefix, m) = match message.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') => (format!("{p}: "), rest),
        _ => (String::new(), message),
    };
    let zh = if let Some(rest) = m.strip_prefix("unknown field ") {
        match rest.split_once(", expected one of ") {
            Some((f, known)) => format!("未知的键 {f}；可用的键：{known}"),
            None => match rest.split_once(", expected ") {
                Some((f, known)) => format!("未知的键 {f}；可用的键：{known}"),
                None => format!("未知的键 {rest}"),
            },
        }
    } else if let Some(rest) = m.strip_prefix("unknown variant ") {
        match rest.split_once(", expected one of ") {
            Some((v, known)) => format!("未知的取值 {v}；可用：{known}"),
            None => format!("未知的取值 {rest}"),
        }
    } else if let Some(f) = m.strip_prefix("missing field ") {
        format!("缺少 {f}")
    } else if let Some(f) = m.strip_prefix("duplicate field ") {
        format!("{f} 写了两次")
    } else if let Some(rest) = m.strip_prefix("invalid type: ") {
        match rest.split_once(", expected ") {
            Some((got, want)) => format!("类型不对：写的是 {got}，应为 {want}"),
            None => format!("类型不对：{rest}"),
        }
    } else if let Some(rest) = m.strip_prefix("invalid value: ") {
        format!("取值不对：{rest}")
    } else if m.starts_with("unrecognised file") || m.starts_with("expected a mapping with") {
        "无法识别的文件：顶层应以 `workflow:`、`form:`、`schedules:` 或 `activities:` 开头".into()
    } else {
        format!("YAML 写法有误：{m}")
    };
    format!("{prefix}{zh}")
}

/// A YAML alias (`dispose: *submitted`) compiles the anchored text again
/// where it is used; a mistake in that text is reported at the anchor, and
/// the same message at an alias is dropped.
fn drop_alias_repeats(diags: &mut Vec<Diagnostic>, files: &[SourceFile]) {
    let at_alias = |d: &Diagnostic| {
        files
            .iter()
            .find(|f| f.path == d.file)
            .and_then(|f| f.text.lines().nth(d.line.saturating_sub(1)))
            .and_then(|l| l.chars().nth(d.col.saturating_sub(1)))
            == Some('*')
    };
    let originals: BTreeSet<(String, String)> = diags
        .iter()
        .filter(|d| !at_alias(d))
        .map(|d| (d.file.clone(), d.message.clone()))
        .collect();
    diags.retain(|d| !at_alias(d) || !originals.contains(&(d.file.clone(), d.message.clone())));
}

/// Per-file helpers: report at a path's key or value.
struct FileCx<'a> {
    file: &'a SourceFile,
    map: &'a SourceMap,
    diags: &'a mut Vec<Diagnostic>,
}

impl FileCx<'_> {
    fn at(&mut self, pos: Pos, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.path.clone(),
            line: pos.line,
            col: pos.col,
            message,
        });
    }
    fn err_value(&mut self, path: &Path, message: String) {
        let pos = self.map.value(path);
        self.at(pos, message);
    }
    fn err_key(&mut self, path: &Path, message: String) {
        let pos = self.map.key(path);
        self.at(pos, message);
    }
    fn origin(&self, path: &Path) -> String {
        let p = self.map.value(path);
        format!("{}:{}:{}", self.file.path, p.line, p.col)
    }

    fn duration(&mut self, text: &str, path: &Path) -> Option<Duration> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.err_value(path, format!("时长 `{text}` 必须大于零"));
                None
            }
            Err(_) => {
                self.err_value(
                    path,
                    format!("时长 `{text}` 写法有误：请写数字加单位，如 30m、6h、12h 或 1d"),
                );
                None
            }
        }
    }

    fn retry(&mut self, def: Option<&RetryDef>, base: RetryPolicy, path: &Path) -> RetryPolicy {
        let mut r = base;
        let Some(d) = def else { return r };
        if let Some(a) = d.attempts {
            if a == 0 {
                self.err_value(&path.key("attempts"), "attempts（尝试次数）至少为 1".into());
            } else {
                r.max_attempts = a;
            }
        }
        if let Some(b) = &d.backoff {
            r.initial_backoff = self
                .duration(b, &path.key("backoff"))
                .unwrap_or(r.initial_backoff);
        }
        if let Some(b) = &d.max_backoff {
            r.max_backoff = self
                .duration(b, &path.key("max_backoff"))
                .unwrap_or(r.max_backoff);
        }
        if let Some(t) = &d.timeout {
            r.timeout = self.duration(t, &path.key("timeout")).unwrap_or(r.timeout);
        }
        if r.max_backoff < r.initial_backoff {
            self.err_value(path, "max_backoff 不能短于 backoff".into());
        }
        r
    }

    fn form(
        &mut self,
        name: &str,
        title: Option<String>,
        notice: Option<String>,
        fields: &[FieldDef],
        path: &Path,
    ) -> Option<FormSpec> {
        let before = self.diags.len();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let fp = path.index(i);
            if !is_identifier(&f.name) {
                self.err_value(
                    &fp.key("name"),
                    format!("字段名 `{}` 只能由字母、数字和 _ 组成", f.name),
                );
            }
            if !seen.insert(f.name.clone()) {
                self.err_value(&fp.key("name"), format!("字段 `{}` 出现了两次", f.name));
            }
            let Some(kind) = FieldKind::parse(&f.ty) else {
                self.err_value(
                    &fp.key("type"),
                    format!("未知的字段类型 `{}`；可用：{}", f.ty, FieldKind::NAMES),
                );
                continue;
            };
            let is_choice = matches!(kind, FieldKind::Choice | FieldKind::MultiChoice);
            if is_choice && f.options.is_empty() {
                self.err_value(
                    &fp.key("name"),
                    format!("字段 `{}` 是 {}，需要写 `options`（选项）", f.name, f.ty),
                );
            }
            if !is_choice && !f.options.is_empty() {
                self.err_value(
                    &fp.key("options"),
                    format!("`options` 只用于选择字段，不能用于 {}", f.ty),
                );
            }
            if let (Some(a), Some(b)) = (f.min, f.max) {
                if a > b {
                    self.err_value(&fp.key("min"), format!("min {a} 大于 max {b}"));
                }
            }
            if let (Some(a), Some(b)) = (f.min_length, f.max_length) {
                if a > b {
                    self.err_value(
                        &fp.key("min_length"),
                        format!("min_length {a} 大于 max_length {b}"),
                    );
                }
            }
            let default = f
                .default
                .as_ref()
                .and_then(|d| serde_json::to_value(d).ok());
            out.push(FieldSpec {
                name: f.name.clone(),
                label: f.label.clone(),
                kind,
                required: f.required,
                min: f.min,
                max: f.max,
                min_length: f.min_length,
                max_length: f.max_length,
                options: f.options.clone(),
                help: f.help.clone(),
                default,
            });
        }
        (self.diags.len() == before).then(|| FormSpec {
            name: name.to_string(),
            title,
            notice,
            fields: out,
        })
    }

    fn schedule(
        &mut self,
        s: &definition::ScheduleDef,
        path: &Path,
        workflows: &BTreeSet<String>,
    ) -> Option<ScheduleSpec> {
        let before = self.diags.len();
        if !workflows.contains(&s.workflow) {
            self.err_value(
                &path.key("workflow"),
                format!("未知的工作流 `{}`", s.workflow),
            );
        }
        let tz: Option<chrono_tz::Tz> = s.timezone.parse().ok();
        if tz.is_none() {
            self.err_value(
                &path.key("timezone"),
                format!("未知的时区 `{}`；成都请写 Asia/Shanghai", s.timezone),
            );
        }
        let mut times = Vec::new();
        for (i, t) in s.at.iter().enumerate() {
            match chrono::NaiveTime::parse_from_str(t, "%H:%M") {
                Ok(t) => times.push(t),
                Err(_) => self.err_value(
                    &path.key("at").index(i),
                    format!("时间 `{t}` 写法有误：请写 时:分，如 05:00"),
                ),
            }
        }
        if s.at.is_empty() {
            self.err_value(&path.key("at"), "定时任务至少需要一个时间".into());
        }
        times.sort();
        times.dedup();
        let catch_up = match s.catch_up.as_deref() {
            None | Some("once") => CatchUp::Once,
            Some("none") => CatchUp::None,
            Some("all") => CatchUp::All,
            Some(other) => {
                self.err_value(
                    &path.key("catch_up"),
                    format!("catch_up `{other}` 只能是 none、once 或 all"),
                );
                CatchUp::Once
            }
        };
        let input = s
            .input
            .as_ref()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(Value::Object(Default::default()));
        (self.diags.len() == before).then(|| ScheduleSpec {
            name: s.name.clone(),
            workflow: s.workflow.clone(),
            tz: tz.expect("checked"),
            times,
            catch_up,
            input,
        })
    }
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// What an expression may refer to where it is written.
#[derive(Clone, Copy)]
struct Scope<'a> {
    signal: Option<&'a str>,
    in_activity_handler: bool,
    item: bool,
}

const ROOT: Scope<'static> = Scope {
    signal: None,
    in_activity_handler: false,
    item: false,
};

/// A goto edge of the state graph: from, to, where written.
type Edge = (StateId, StateId);

struct WorkflowCx<'a> {
    cx: FileCx<'a>,
    def: &'a WorkflowDef,
    rules: &'a Arc<Rules>,
    broken_modules: &'a BTreeSet<String>,
    forms: &'a BTreeMap<String, (Arc<FormSpec>, SourceFile)>,
    activities: &'a BTreeMap<String, ActivityDecl>,
    workflow_names: Option<&'a BTreeSet<String>>,
    states: BTreeMap<String, StateId>,
    used_forms: BTreeSet<String>,
    program_activities: Vec<ActivitySpec>,
    program_children: Vec<ChildSpec>,
    edges: Vec<Edge>,
}

impl WorkflowCx<'_> {
    /// `timers.NAME` and `timers.NAME.FIELD` (`rest` starts at `timers`):
    /// NAME must be a timer of this workflow, FIELD one of
    /// [`TIMER_FIELDS`]. None when it is.
    fn timer_reference(&self, name: &str, rest: &str) -> Option<String> {
        let known: Vec<&str> = self
            .def
            .states
            .values()
            .flat_map(|s| s.timers.keys().map(String::as_str))
            .collect();
        if !known.contains(&name) {
            return Some(format!(
                "`timers.{name}` 不是本流程的计时器；已有的计时器：{}",
                known.join(", ")
            ));
        }
        let after = rest
            .trim_start_matches("timers")
            .trim_start()
            .strip_prefix('.')?
            .trim_start()
            .strip_prefix(name)?
            .trim_start();
        let field: String = after
            .strip_prefix('.')?
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        (!TIMER_FIELDS.contains(&field.as_str())).then(|| {
            format!(
                "`timers.{name}.{field}` 未知；可用：{}",
                TIMER_FIELDS.join(", ")
            )
        })
    }
    fn compile(
        &mut self,
        file: &SourceFile,
        rule_files: &[SourceFile],
        activities_file: Option<&SourceFile>,
    ) -> Option<Program> {
        let before = self.cx.diags.len();
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
        let search = d
            .search
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
            .collect();

        let mut states = Vec::new();
        for (name, sd) in &d.states {
            let sp = root.key("states").key(name);
            let id = self.states[name];
            let terminal = if sd.terminal {
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
            } else {
                if sd.status.is_some() {
                    self.cx.err_key(&sp.key("status"), format!("`status` 只用于终止状态：给 `{name}` 加上 `terminal: true`，或删去 `status`"));
                }
                if sd.output.is_some() {
                    self.cx
                        .err_key(&sp.key("output"), "`output` 只用于终止状态".into());
                }
                None
            };
            let on_enter = self.actions(&sd.on_enter, &sp.key("on_enter"), ROOT, id);
            let mut timers = Vec::new();
            for (tname, td) in &sd.timers {
                let tp = sp.key("timers").key(tname);
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
                timers.push(TimerSpec {
                    name: tname.clone(),
                    label: td.label.clone(),
                    after,
                    deadline: td.deadline,
                    from_start: td.from == definition::TimerAnchor::Start,
                    guard,
                    actions,
                    goto,
                });
            }
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
                let scope = Scope {
                    signal: Some(sig),
                    ..ROOT
                };
                let list = self.handlers(handlers, &op, scope, id);
                on.insert(sig.clone(), list);
            }
            states.push(StateSpec {
                name: name.clone(),
                label: sd.label.clone(),
                terminal,
                on_enter,
                timers,
                on,
            });
        }

        if let Some(initial) = initial {
            self.check_graph(&states, initial);
        }
        if self.cx.diags.len() != before {
            return None;
        }

        let forms: Vec<SourceFile> = self
            .used_forms
            .iter()
            .map(|f| self.forms[f].1.clone())
            .collect();
        let source = DefinitionSource {
            workflow: file.clone(),
            forms,
            rules: rule_files.to_vec(),
            activities: activities_file.cloned(),
        };
        let hash = hex::encode(Sha256::digest(
            serde_json::to_vec(&source).expect("serialisable"),
        ));
        let timer_values = timer_values(&states);
        Some(Program {
            projection: d.projection.clone(),
            timer_values,
            name: d.workflow.clone(),
            version: d.version,
            title: d.title.clone(),
            hash,
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

    fn vars(
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

    fn signals(&mut self) -> BTreeMap<String, SignalSpec> {
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

    fn state_ref(&mut self, name: &str, path: &Path) -> Option<StateId> {
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

    fn goto(&mut self, from: StateId, name: &str, path: &Path) -> Option<StateId> {
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

    /// One handler or a list of them, in order.
    fn handlers(
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

    fn signal_form(&self, sig: &str) -> Option<Arc<FormSpec>> {
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

    fn actions(
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
        let activity_only = [
            ("args", a.args.is_some()),
            ("retry", a.retry.is_some()),
            ("result", a.result.is_some()),
            ("on_success", a.on_success.is_some()),
            ("on_failure", a.on_failure.is_some()),
        ];
        let child_only = [
            ("input", a.input.is_some()),
            ("for_each", a.for_each.is_some()),
            ("key", a.key.is_some()),
            ("on_child_complete", a.on_child_complete.is_some()),
        ];
        fn misplaced(list: &[(&'static str, bool)]) -> Vec<&'static str> {
            list.iter().filter(|x| x.1).map(|x| x.0).collect()
        }
        if let Some(set) = &a.set {
            for k in misplaced(&activity_only)
                .into_iter()
                .chain(misplaced(&child_only))
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
            return Some(Action {
                guard,
                kind: ActionKind::Set(out),
            });
        }
        if let Some(name) = &a.activity {
            for k in misplaced(&child_only) {
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
            self.program_activities.push(ActivitySpec {
                name: name.clone(),
                args,
                retry,
                result: a.result.clone(),
                on_success,
                on_failure,
            });
            return Some(Action {
                guard,
                kind: ActionKind::Activity(self.program_activities.len() - 1),
            });
        }
        let workflow = a.start_child.as_ref().expect("one kind");
        for k in misplaced(&activity_only) {
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
            workflow: workflow.clone(),
            input,
            for_each,
            key,
            on_complete,
        });
        Some(Action {
            guard,
            kind: ActionKind::StartChild(self.program_children.len() - 1),
        })
    }

    /// Compile a YAML value into a template; `${...}` parts are expressions.
    fn template(&mut self, v: &serde_yaml::Value, path: &Path, scope: Scope) -> Template {
        use serde_yaml::Value as Y;
        match v {
            Y::String(s) => self.string_template(s, path, scope),
            Y::Sequence(items) => Template::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.template(x, &path.index(i), scope))
                    .collect(),
            ),
            Y::Mapping(m) => {
                let mut out = Vec::new();
                for (k, x) in m {
                    let Some(k) = k.as_str() else {
                        self.cx.err_value(path, "映射的键必须是文本".into());
                        continue;
                    };
                    out.push((k.to_string(), self.template(x, &path.key(k), scope)));
                }
                Template::Map(out)
            }
            Y::Tagged(t) => self.template(&t.value, path, scope),
            other => Template::Literal(serde_json::to_value(other).unwrap_or(Value::Null)),
        }
    }

    fn string_template(&mut self, s: &str, path: &Path, scope: Scope) -> Template {
        if !s.contains("${") {
            return Template::Literal(Value::String(s.to_string()));
        }
        let mut pieces = Vec::new();
        let mut rest = s;
        let mut offset = 0;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let Some(len) = rest[start + 2..]
                .find('}')
                .map(|e| closing_brace(&rest[start + 2..]).unwrap_or(e))
            else {
                self.cx.err_value(path, "`${` 缺少配对的 `}`".into());
                return Template::Literal(Value::String(s.to_string()));
            };
            let src = &rest[start + 2..start + 2 + len];
            let prefix = offset + start + 2;
            match self.expr(src, path, scope, &s[..prefix]) {
                Some(e) => pieces.push(Piece::Expr(e)),
                None => return Template::Literal(Value::Null),
            }
            offset += start + 2 + len + 1;
            rest = &rest[start + 2 + len + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.len() == 1 {
            if let Piece::Expr(e) = &pieces[0] {
                return Template::Expr(e.clone());
            }
        }
        Template::Interpolate(pieces)
    }

    /// Compile an expression and check what it refers to. `prefix` is the
    /// text before it in the same YAML scalar (for exact columns).
    fn expr(&mut self, src: &str, path: &Path, scope: Scope, prefix: &str) -> Option<rules::Expr> {
        // Fields that are always expressions (`if`, `for_each`, `key`,
        // `check`) may still be written as `${...}`; accept both.
        let trimmed = src.trim();
        if prefix.is_empty()
            && trimmed.starts_with("${")
            && closing_brace(&trimmed[2..]) == Some(trimmed.len() - 3)
        {
            let lead = src.len() - src.trim_start().len();
            return self.expr(
                &trimmed[2..trimmed.len() - 1],
                path,
                scope,
                &src[..lead + 2],
            );
        }
        let origin = self.cx.origin(path);
        let vpos = self.cx.map.value(path);
        let before = self.cx.diags.len();
        let at = |cx: &FileCx, line: usize, col: usize| -> Pos {
            // Columns inside a one-line scalar: skip an opening quote and the prefix.
            let quote = cx
                .file
                .text
                .lines()
                .nth(vpos.line.saturating_sub(1))
                .and_then(|l| l.chars().nth(vpos.col.saturating_sub(1)))
                .is_some_and(|c| c == '"' || c == '\'');
            if line <= 1 {
                Pos {
                    line: vpos.line,
                    col: vpos.col
                        + usize::from(quote)
                        + prefix.chars().count()
                        + col.saturating_sub(1),
                }
            } else {
                Pos {
                    line: vpos.line + line - 1,
                    col,
                }
            }
        };
        for r in rules::references(src) {
            match r {
                Reference::Call {
                    module,
                    function,
                    arity,
                    offset,
                } => {
                    if self.broken_modules.contains(&module) {
                        continue;
                    }
                    let col = src[..offset].chars().count() + 1;
                    if !self.rules.has_module(&module) {
                        let p = at(&self.cx, 1, col);
                        self.cx.at(
                            p,
                            format!(
                                "未知的规则脚本 `{module}`（在 `{src}` 中）：没有 rules/{module}.rhai"
                            ),
                        );
                    } else if !self.rules.has_function(&module, &function, Some(arity)) {
                        let p = at(&self.cx, 1, col);
                        self.cx.at(p, format!("未知的规则 `{module}::{function}`（{arity} 个参数，在 `{src}` 中）"));
                    }
                }
                Reference::Field {
                    root,
                    field,
                    offset,
                } => {
                    let col = src[..offset].chars().count() + 1;
                    let missing = match root.as_str() {
                        "vars" => (!self.def.variables.contains_key(&field))
                            .then(|| format!("`vars.{field}` 不是已声明的变量")),
                        "input" => (!self.def.input.contains_key(&field))
                            .then(|| format!("`input.{field}` 不是已声明的输入")),
                        "signal" => match scope.signal {
                            None => Some("`signal` 只能在信号转移中使用".to_string()),
                            Some(sig) => self
                                .signal_form(sig)
                                .filter(|f| f.field(&field).is_none())
                                .map(|_| format!("信号 `{sig}` 没有字段 `{field}`")),
                        },
                        "result" | "error" if !scope.in_activity_handler => Some(format!(
                            "`{root}` 只能在 on_success、on_failure 和 on_child_complete 中使用"
                        )),
                        "item" if !scope.item => {
                            Some("`item` 只能与 `for_each` 一起使用".to_string())
                        }
                        "timers" => self.timer_reference(&field, &src[offset..]),
                        _ => None,
                    };
                    if let Some(m) = missing {
                        let p = at(&self.cx, 1, col);
                        self.cx.at(p, m);
                    }
                }
            }
        }
        match self.rules.compile_expr(src, origin) {
            Ok(e) => (self.cx.diags.len() == before).then_some(e),
            Err(e) => {
                let p = at(&self.cx, e.line, e.col);
                self.cx
                    .at(p, format!("表达式 `{src}` 语法错误：{}", e.message));
                None
            }
        }
    }

    /// Unreachable states, no reachable terminal, dead ends.
    fn check_graph(&mut self, states: &[StateSpec], initial: StateId) {
        let n = states.len();
        let mut fwd = vec![Vec::new(); n];
        let mut back = vec![Vec::new(); n];
        for &(a, b) in &self.edges {
            fwd[a].push(b);
            back[b].push(a);
        }
        let reach = |start: Vec<StateId>, adj: &Vec<Vec<StateId>>| {
            let mut seen = vec![false; n];
            let mut q: VecDeque<StateId> = start.into_iter().collect();
            for &s in &q {
                seen[s] = true;
            }
            while let Some(s) = q.pop_front() {
                for &t in &adj[s] {
                    if !seen[t] {
                        seen[t] = true;
                        q.push_back(t);
                    }
                }
            }
            seen
        };
        let from_initial = reach(vec![initial], &fwd);
        let terminals: Vec<StateId> = (0..n).filter(|&i| states[i].terminal.is_some()).collect();
        let to_terminal = reach(terminals.clone(), &back);
        let root = Path::root();
        if terminals.is_empty() {
            self.cx.err_key(
                &root.key("states"),
                "没有终止状态：请给工作流结束的状态加上 `terminal: true`".into(),
            );
        } else if !terminals.iter().any(|&t| from_initial[t]) {
            self.cx.err_value(
                &root.key("initial"),
                format!("从 `{}` 无法到达任何终止状态", states[initial].name),
            );
        }
        for (i, s) in states.iter().enumerate() {
            let sp = root.key("states").key(&s.name);
            if !from_initial[i] {
                self.cx.err_key(
                    &sp,
                    format!(
                        "状态 `{}` 无法到达：从 `{}` 出发，没有转移、计时器或处理器通往它",
                        s.name, states[initial].name
                    ),
                );
            } else if !terminals.is_empty() && !to_terminal[i] {
                self.cx.err_key(
                    &sp,
                    format!("状态 `{}` 是死路：从它无法到达任何终止状态", s.name),
                );
            }
        }
    }
}

/// Length of an expression inside `${...}`, honouring nested braces and strings.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote = None;
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q && prev != '\\' => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' | '`' => quote = Some(c),
                '{' => depth += 1,
                '}' if depth == 0 => return Some(i),
                '}' => depth -= 1,
                _ => {}
            },
        }
        prev = c;
    }
    None
}

/// What an expression reads of a timer: `timers.NAME.after` (its duration
/// in words, `8小时`), `.hours`, `.minutes` (whole numbers) and `.label`.
pub const TIMER_FIELDS: [&str; 4] = ["after", "hours", "minutes", "label"];

/// The `timers` value expressions read: every timer of the workflow by
/// name (the first state declaring a name wins).
fn timer_values(states: &[StateSpec]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for t in states.iter().flat_map(|s| &s.timers) {
        m.entry(t.name.clone()).or_insert_with(|| {
            serde_json::json!({
                "after": program::duration_zh(t.after),
                "hours": t.after.as_secs() / 3600,
                "minutes": t.after.as_secs() / 60,
                "label": t.label,
            })
        });
    }
    serde_json::Value::Object(m)
}
