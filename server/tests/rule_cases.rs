//! Every case of `rules/tests/*.yaml` passes (the same run as `server rules
//! test`), a failing case is shown with a diff and fails the command, and
//! the declarations of `rules/inputs/` cover every rule function the server
//! and the workflows call.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn every_rule_case_passes() {
    let ran = server::rule_cases::run_dir(&root().join("rules")).unwrap();
    let (text, ok) = server::rule_cases::report(&ran);
    assert!(ok, "{text}");
    // The kinds the cases must cover.
    for name in [
        "核酸阳性",
        "红码",
        "黄码",
        "卫健委不认识的人",
        "接种率",
        "上报",
        "证据",
    ] {
        assert!(
            ran.iter().any(|r| r.case.name.contains(name)),
            "no case about {name}"
        );
    }
}

fn rules_test(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["rules", "test", "--rules"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_command_passes_on_the_shipped_rules() {
    let (code, out) = rules_test(&root().join("rules"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("个未通过") && out.contains("0 个未通过"),
        "{out}"
    );
}

#[test]
fn a_failing_case_shows_a_diff_and_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let rules = root().join("rules");
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    for f in std::fs::read_dir(&rules).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "rhai") {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    // A policy change the case did not expect: yellow codes are no longer flagged.
    let anomaly = dir.path().join("anomaly.rhai");
    let text = std::fs::read_to_string(&anomaly).unwrap();
    std::fs::write(
        &anomaly,
        text.replace("\"yellow\" => reasons.push(\"黄码\"),", ""),
    )
    .unwrap();
    std::fs::copy(
        rules.join("tests/anomaly.yaml"),
        dir.path().join("tests/anomaly.yaml"),
    )
    .unwrap();
    let (code, out) = rules_test(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("失败  "), "{out}");
    assert!(out.contains("「黄码」"), "{out}");
    assert!(
        out.contains("--- 期望") && out.contains("+++ 实际"),
        "{out}"
    );
    assert!(out.contains("-   \"黄码\""), "{out}");
    assert!(out.contains("+ []"), "{out}");
    assert!(out.contains("个用例：5 个通过，1 个未通过"), "{out}");
}

#[test]
fn every_rule_function_called_is_declared_with_samples() {
    let (w, r) = engine::load_dirs(&root().join("workflows"), &root().join("rules")).unwrap();
    let files: Vec<(String, String)> = r
        .iter()
        .filter(|f| f.path.ends_with(".yaml"))
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    let (decls, findings) = engine::rules::inputs::parse(&files);
    assert!(findings.is_empty(), "{findings:?}");
    let mut called: Vec<(String, String, usize)> = server::comparison::RULES_USED
        .iter()
        .map(|(m, f, n)| (m.to_string(), f.to_string(), *n))
        .collect();
    // And every `module::function(` a workflow calls.
    let expressions = w.iter().flat_map(|f| {
        f.text
            .split("${")
            .skip(1)
            .map(|part| part.split('}').next().unwrap_or(""))
            .collect::<Vec<_>>()
    });
    for e in expressions {
        for reference in engine::rules::references(e) {
            if let engine::rules::Reference::Call {
                module,
                function,
                arity,
                ..
            } = reference
            {
                called.push((module, function, arity));
            }
        }
    }
    assert!(called.iter().any(|c| c.0 == "escalation"));
    for (m, f, n) in called {
        let d = decls
            .function(&m, &f)
            .unwrap_or_else(|| panic!("{m}::{f} is not declared in rules/inputs/{m}.yaml"));
        assert_eq!(d.params.len(), n, "{m}::{f}");
        assert!(!d.samples.is_empty(), "{m}::{f}");
    }
}
