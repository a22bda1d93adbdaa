//! A whole tree, step by step: parse every file, build the rules (and run
//! the declared samples), collect forms and the activity catalog, compile
//! each workflow, then the schedules. Every step adds to one list of
//! diagnostics; the bundle is returned only when that list is empty.

use super::diagnostics::{drop_alias_repeats, yaml_words, FileCx};
use super::program::SourceFile;
use super::sources::{is_declaration, module_name};
use super::workflow::WorkflowCx;
use super::{ActivityDecl, Bundle, Diagnostic, Error, Options};
use crate::compile::form::FormSpec;
use crate::compile::program::{Program, RetryPolicy};
use crate::compile::schedule::ScheduleSpec;
use crate::definition::source::{Path, SourceMap};
use crate::definition::{self, File};
use crate::rules::{self, Rules};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One workflow-tree file that parsed.
pub(super) struct Parsed {
    pub(super) file: SourceFile,
    pub(super) map: SourceMap,
    pub(super) def: File,
}

impl Parsed {
    fn cx<'a>(&'a self, diags: &'a mut Vec<Diagnostic>) -> FileCx<'a> {
        FileCx {
            file: &self.file,
            map: &self.map,
            diags,
        }
    }
}

/// Forms by name, with the file each was declared in.
pub(super) type Forms = BTreeMap<String, (Arc<FormSpec>, SourceFile)>;

/// The rules as built: the scripts that compiled, and the modules that did not
/// (calls into those are not reported again).
struct BuiltRules {
    rules: Arc<Rules>,
    broken_modules: BTreeSet<String>,
}

/// Forms and activities declared across the tree.
#[derive(Default)]
struct Catalog {
    forms: Forms,
    activities: BTreeMap<String, ActivityDecl>,
    activity_files: Vec<SourceFile>,
}

pub(super) fn compile(
    workflow_files: &[SourceFile],
    rule_files: &[SourceFile],
    opts: &Options,
    check_children: bool,
) -> Result<Bundle, Error> {
    let mut diags = Vec::new();
    let (declarations, scripts): (Vec<SourceFile>, Vec<SourceFile>) = rule_files
        .iter()
        .cloned()
        .partition(|f| is_declaration(&f.path));
    let parsed = parse_files(workflow_files, &mut diags);
    let built = build_rules(&scripts, opts, &mut diags);
    check_declarations(&declarations, &built, opts, &mut diags);
    let catalog = collect_catalog(&parsed, &mut diags);
    let workflow_names = workflow_names(&parsed);
    let children = check_children.then_some(&workflow_names);
    let workflows = compile_workflows(&parsed, &scripts, &built, &catalog, children, &mut diags);
    let schedules = collect_schedules(&parsed, &workflow_names, &mut diags);

    drop_alias_repeats(&mut diags, workflow_files);
    if diags.is_empty() {
        Ok(Bundle {
            workflows,
            forms: catalog
                .forms
                .into_iter()
                .map(|(k, (f, _))| (k, f))
                .collect(),
            schedules,
            activities: catalog.activities,
            rules: built.rules,
        })
    } else {
        diags.sort();
        diags.dedup();
        Err(Error(diags))
    }
}

/// Step 1: parse every workflow-tree file. The files a `data:` list declares
/// are skipped (reference data the host reads itself); any other file that
/// is not a definition is reported.
fn parse_files(files: &[SourceFile], diags: &mut Vec<Diagnostic>) -> Vec<Parsed> {
    let results: Vec<(&SourceFile, Result<File, definition::ParseError>)> = files
        .iter()
        .map(|f| (f, definition::parse(&f.text)))
        .collect();
    let mut data = BTreeSet::new();
    for (f, r) in &results {
        if let Ok(File::Data(d)) = r {
            declare_data(f, d, files, &mut data, diags);
        }
    }
    let mut parsed = Vec::new();
    for (f, r) in results {
        if data.contains(std::path::Path::new(&f.path)) {
            continue;
        }
        match r {
            Ok(File::Data(_)) => {}
            Ok(def) => parsed.push(Parsed {
                file: f.clone(),
                map: SourceMap::build(&f.text),
                def,
            }),
            Err(e) => diags.push(Diagnostic {
                file: f.path.clone(),
                line: e.line,
                col: e.col,
                message: yaml_words(&e.message),
            }),
        }
    }
    parsed
}

/// The paths a `data:` list names (relative to its own directory); a name
/// with no such file among `files` is reported at its entry.
fn declare_data<'a>(
    decl: &SourceFile,
    d: &definition::DataDef,
    files: &'a [SourceFile],
    data: &mut BTreeSet<&'a std::path::Path>,
    diags: &mut Vec<Diagnostic>,
) {
    let dir = std::path::Path::new(&decl.path)
        .parent()
        .unwrap_or(std::path::Path::new(""));
    let map = SourceMap::build(&decl.text);
    for (i, name) in d.data.iter().enumerate() {
        let want = dir.join(name);
        match files.iter().find(|f| std::path::Path::new(&f.path) == want) {
            Some(f) => {
                data.insert(std::path::Path::new(&f.path));
            }
            None => FileCx {
                file: decl,
                map: &map,
                diags: &mut *diags,
            }
            .err_value(
                &Path::root().key("data").index(i),
                format!("声明为参考数据的文件 `{name}` 不存在（相对于本文件所在目录）"),
            ),
        }
    }
}

/// Step 2: build the rule scripts. A script that does not compile is reported
/// and left out, so calls into the others are still checked.
fn build_rules(
    rule_files: &[SourceFile],
    opts: &Options,
    diags: &mut Vec<Diagnostic>,
) -> BuiltRules {
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
    BuiltRules {
        rules: Arc::new(rules),
        broken_modules,
    }
}

/// Step 2b: the declarations of the rules' inputs, and every declared function
/// run on its samples.
fn check_declarations(
    declarations: &[SourceFile],
    built: &BuiltRules,
    opts: &Options,
    diags: &mut Vec<Diagnostic>,
) {
    if declarations.is_empty() {
        return;
    }
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
                .filter(|f| !built.broken_modules.contains(&f.module))
                .collect(),
            types: decls.types,
        };
        diags.extend(
            rules::inputs::check(&built.rules, &decls, opts.limits)
                .into_iter()
                .map(Diagnostic::from),
        );
    }
}

/// Step 3: forms and the activity catalog.
fn collect_catalog(parsed: &[Parsed], diags: &mut Vec<Diagnostic>) -> Catalog {
    let mut catalog = Catalog::default();
    for p in parsed {
        let mut cx = p.cx(diags);
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
                    if catalog.forms.contains_key(&fd.form) {
                        cx.err_value(&root.key("form"), format!("表单 `{}` 定义了两次", fd.form));
                    } else {
                        catalog
                            .forms
                            .insert(fd.form.clone(), (Arc::new(spec), p.file.clone()));
                    }
                }
            }
            File::Activities(ad) => {
                catalog.activity_files.push(p.file.clone());
                declare_activities(&mut cx, ad, &mut catalog.activities);
            }
            _ => {}
        }
    }
    catalog
}

fn declare_activities(
    cx: &mut FileCx,
    ad: &definition::ActivitiesDef,
    activities: &mut BTreeMap<String, ActivityDecl>,
) {
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

fn workflow_names(parsed: &[Parsed]) -> BTreeSet<String> {
    parsed
        .iter()
        .filter_map(|p| match &p.def {
            File::Workflow(w) => Some(w.workflow.clone()),
            _ => None,
        })
        .collect()
}

/// Step 4: workflows. `children`: the names a `start_child` may use (None: not checked).
fn compile_workflows(
    parsed: &[Parsed],
    rule_files: &[SourceFile],
    built: &BuiltRules,
    catalog: &Catalog,
    children: Option<&BTreeSet<String>>,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Arc<Program>> {
    let mut workflows = BTreeMap::new();
    for p in parsed {
        let File::Workflow(w) = &p.def else { continue };
        let mut wc = WorkflowCx::new(
            p.cx(diags),
            w,
            &built.rules,
            &built.broken_modules,
            &catalog.forms,
            &catalog.activities,
            children,
        );
        if let Some(program) = wc.compile(&p.file, rule_files, catalog.activity_files.first()) {
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
    workflows
}

/// Step 5: schedules.
fn collect_schedules(
    parsed: &[Parsed],
    workflow_names: &BTreeSet<String>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<ScheduleSpec> {
    let mut schedules = Vec::new();
    for p in parsed {
        let File::Schedules(sd) = &p.def else {
            continue;
        };
        let mut cx = p.cx(diags);
        for (i, s) in sd.schedules.iter().enumerate() {
            let path = Path::root().key("schedules").index(i);
            if let Some(spec) = cx.schedule(s, &path, workflow_names) {
                schedules.push(spec);
            }
        }
    }
    schedules
}

#[cfg(test)]
mod tests {
    use crate::compile::program::DefinitionSource;
    use crate::compile::test_support::{changed, diagnostics_with, file, ACTIVITIES, WORKFLOW};
    use crate::compile::{compile_program, Options};

    #[test]
    fn an_activity_declared_twice_is_an_error() {
        let got = diagnostics_with(
            &[
                file("1.yaml", ACTIVITIES),
                file("2.yaml", "activities:\n  fetch: {}\n"),
            ],
            "",
        );
        assert_eq!(got, ["2.yaml:2:3: 活动 `fetch` 声明了两次"]);
    }

    #[test]
    fn reference_data_is_skipped_only_when_a_data_list_declares_it() {
        let tree = |decl: Option<&str>| {
            let mut files = vec![
                file("w/activities.yaml", ACTIVITIES),
                file("w/warning.yaml", WORKFLOW),
                file("w/towns.yaml", "towns:\n  - name: 一\n"),
            ];
            files.extend(decl.map(|d| file("w/data.yaml", d)));
            diagnostics_with(&files, "")
        };
        assert_eq!(tree(Some("data:\n  - towns.yaml\n")), Vec::<String>::new());
        let undeclared = tree(None);
        assert_eq!(undeclared.len(), 1, "{undeclared:?}");
        assert!(
            undeclared[0].starts_with("w/towns.yaml:1:1: 无法识别的文件")
                && undeclared[0].contains("`data:` 清单"),
            "{undeclared:?}"
        );
        // Another file's name does not cover it; a name with no file is reported.
        assert_eq!(
            tree(Some("data:\n  - town.yaml\n")),
            [
                "w/data.yaml:2:5: 声明为参考数据的文件 `town.yaml` 不存在（相对于本文件所在目录）",
                "w/towns.yaml:1:1: 无法识别的文件：顶层应以 `workflow:`、`form:`、`schedules:`、`activities:` 或 `data:` 开头；若是应用自己读取的参考数据，请把它列入 `data:` 清单（workflows/data.yaml）",
            ]
        );
    }

    #[test]
    fn a_workflow_defined_twice_is_an_error_at_the_second() {
        let got = diagnostics_with(&[file("1.yaml", WORKFLOW), file("2.yaml", WORKFLOW)], "");
        assert_eq!(got, ["2.yaml:1:11: 工作流 `t` 定义了两次"]);
    }

    #[test]
    fn a_broken_script_is_reported_once_and_calls_into_it_are_not() {
        let w = changed(
            "go: { goto: b }",
            "go: { if: \"helpers::greet(1)\", goto: b }",
        );
        let got = diagnostics_with(&[file("w.yaml", &w)], "fn greet(x) { x +; }");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("rules/helpers.rhai:1:"), "{got:?}");
    }

    #[test]
    fn a_child_workflow_is_checked_in_a_tree_but_not_in_a_stored_definition() {
        let w = changed(
            "  a:\n    on:",
            "  a:\n    on_enter:\n      - start_child: ghost\n    on:",
        );
        let got = diagnostics_with(&[file("w.yaml", &w)], "");
        assert_eq!(got, ["w.yaml:15:22: 未知的工作流 `ghost`"]);
        // A published version is recompiled alone: its children are other definitions.
        let source = DefinitionSource {
            workflow: file("w.yaml", &w),
            forms: vec![],
            rules: vec![],
            activities: None,
        };
        assert_eq!(
            compile_program(&source, &Options::default()).unwrap().name,
            "t"
        );
    }

    #[test]
    fn a_stored_definition_without_a_workflow_is_refused() {
        let source = DefinitionSource {
            workflow: file("w.yaml", ACTIVITIES),
            forms: vec![],
            rules: vec![],
            activities: None,
        };
        let err = compile_program(&source, &Options::default()).unwrap_err();
        assert_eq!(err.to_string(), "w.yaml:1:1: 保存的定义中没有工作流");
    }

    #[test]
    fn every_mistake_of_every_file_is_reported_at_once_and_sorted() {
        let bad = WORKFLOW
            .replace("version: 1", "version: 0")
            .replace("initial: a", "initial: z");
        let got = diagnostics_with(&[file("b.yaml", &bad), file("a.yaml", "form: [")], "");
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("a.yaml:"), "{got:?}");
        assert_eq!(got[1], "b.yaml:2:10: version（版本号）至少为 1");
        assert!(
            got[2].starts_with("b.yaml:11:10: 未知的状态 `z`"),
            "{got:?}"
        );
    }
}
