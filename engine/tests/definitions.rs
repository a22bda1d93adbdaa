//! Every file in workflows/ and rules/ compiles.

use std::path::Path;

#[test]
fn every_definition_and_rule_compiles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    assert!(
        w.len() >= 5 && r.len() >= 3,
        "found {} workflow files, {} rules",
        w.len(),
        r.len()
    );
    let bundle = match engine::compile_bundle(&w, &r, &engine::Options::default()) {
        Ok(b) => b,
        Err(e) => panic!("definitions do not compile:\n{e}"),
    };
    for name in ["warning", "comparison"] {
        assert!(bundle.workflows.contains_key(name), "{name} missing");
    }
    assert_eq!(bundle.schedules.len(), 1);
}
