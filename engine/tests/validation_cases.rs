//! One mistake per case: `tests/validation/<case>/` holds the files of
//! `tests/validation/base/` (a copy of the shipped definitions) that the
//! case changes, each with one mistake, and `expected.txt` the exact
//! diagnostics `validate` must give — position, message, nothing more.

use std::path::Path;

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validation")
}

/// Diagnostics of the base definitions with `case`'s files put over them,
/// paths relative to the tree (`rules/anomaly.rhai:19:33: …`).
fn diagnostics(case: Option<&str>) -> Vec<String> {
    let base = dir().join("base");
    let (mut w, mut r) = engine::load_dirs(&base.join("workflows"), &base.join("rules")).unwrap();
    let prefix = format!("{}/", base.display());
    for f in w.iter_mut().chain(r.iter_mut()) {
        f.path = f.path.replace(&prefix, "");
        if let Some(case) = case {
            let over = dir().join(case).join(&f.path);
            if over.exists() {
                f.text = std::fs::read_to_string(over).unwrap();
            }
        }
    }
    match engine::compile_bundle(&w, &r, &engine::Options::default()) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn expected(case: &str) -> Vec<String> {
    std::fs::read_to_string(dir().join(case).join("expected.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn check(case: &str) {
    let got = diagnostics(Some(case));
    assert_eq!(got, expected(case), "case {case}:\n{}", got.join("\n"));
}

#[test]
fn the_base_copy_is_valid() {
    assert_eq!(diagnostics(None), Vec::<String>::new());
}

#[test]
fn a_text_compared_with_a_number_is_an_error() {
    check("string_vs_int");
}

#[test]
fn a_misspelled_property_is_named_with_the_one_meant() {
    check("misspelled_property");
}

#[test]
fn a_wrong_return_shape_is_reported_at_the_function() {
    check("wrong_return_shape");
}

#[test]
fn a_missing_function_is_reported_at_its_declaration() {
    check("missing_function");
}

#[test]
fn one_wrong_goto_gives_exactly_one_diagnostic() {
    let got = diagnostics(Some("wrong_goto"));
    assert_eq!(got.len(), 1, "{got:#?}");
    check("wrong_goto");
}

#[test]
fn every_case_directory_has_a_test() {
    let mut cases: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "base")
        .collect();
    cases.sort();
    assert_eq!(
        cases,
        [
            "missing_function",
            "misspelled_property",
            "string_vs_int",
            "wrong_goto",
            "wrong_return_shape"
        ]
    );
}
