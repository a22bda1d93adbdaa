//! The `validate` subcommand: exit status and file:line:col output.

use std::process::Command;

fn validate(workflows: &str, rules: &str) -> (i32, String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .current_dir(root)
        .args(["validate", workflows, rules])
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn validate_accepts_the_shipped_definitions() {
    let (code, out) = validate("workflows", "rules");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
}

#[test]
fn validate_lists_every_problem_and_fails() {
    let (code, out) = validate(
        "engine/tests/fixtures/broken/workflows",
        "engine/tests/fixtures/broken/rules",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "engine/tests/fixtures/broken/workflows/bad.yaml:28:15: unknown state `nowhere`"
        ),
        "{out}"
    );
    assert!(
        out.contains("engine/tests/fixtures/broken/rules/helpers.rhai:6:13:"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("24 problem(s) found"), "{out}");
}
