//! Every file in workflows/ and rules/ compiles.

use std::path::Path;

#[test]
fn every_definition_and_rule_compiles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    assert!(
        w.len() >= 5 && r.len() >= 4,
        "found {} workflow files, {} rules",
        w.len(),
        r.len()
    );
    let bundle = match engine::compile_bundle(&w, &r, &engine::Options::default()) {
        Ok(b) => b,
        Err(e) => panic!("definitions do not compile:\n{e}"),
    };
    for name in ["warning", "comparison", "retention"] {
        assert!(bundle.workflows.contains_key(name), "{name} missing");
    }
    // The comparison runs and the nightly retention purge.
    assert_eq!(bundle.schedules.len(), 2);
}

#[test]
fn anomaly_rule_flags_positive_nat_and_red_or_yellow_codes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let eval =
        |person: serde_json::Value| bundle.rules.call("anomaly", "evaluate", &[person]).unwrap();
    let negative = serde_json::json!({"result": "negative", "sampled_at": "2026-12-01T01:00:00Z"});
    let positive = serde_json::json!({"result": "positive", "sampled_at": "2026-12-01T01:00:00Z"});
    let person = |reports: Vec<serde_json::Value>, code: &str| serde_json::json!({"nat_reports": reports, "vaccination": {"doses": 3, "completed": true}, "health_code": code});
    assert_eq!(
        eval(person(vec![negative.clone()], "green")),
        serde_json::json!([])
    );
    assert_eq!(
        eval(person(vec![], "green")),
        serde_json::json!([]),
        "no NAT is not flagged by default"
    );
    assert_eq!(
        eval(person(vec![negative, positive.clone()], "green")),
        serde_json::json!(["核酸阳性"])
    );
    assert_eq!(
        eval(person(vec![positive], "red")),
        serde_json::json!(["核酸阳性", "红码"])
    );
    assert_eq!(eval(person(vec![], "yellow")), serde_json::json!(["黄码"]));
}

#[test]
fn statistics_rule_classifies_a_person_into_counters() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let classify = |person: serde_json::Value| {
        bundle
            .rules
            .call("statistics", "classify", &[person])
            .unwrap()
    };
    let report = |result: &str| serde_json::json!({"result": result, "hours_ago": 3});
    let person = |reports: Vec<serde_json::Value>, completed: bool, code: &str| serde_json::json!({"nat_reports": reports, "vaccination": {"doses": 3, "completed": completed}, "health_code": code});
    assert_eq!(
        classify(person(vec![report("negative")], true, "green")),
        serde_json::json!({"vaccinated": true, "nat_tested": true, "negative": true, "positive": false, "red_yellow": false})
    );
    assert_eq!(
        classify(person(
            vec![report("negative"), report("positive")],
            false,
            "red"
        )),
        serde_json::json!({"vaccinated": false, "nat_tested": true, "negative": false, "positive": true, "red_yellow": true})
    );
    assert_eq!(
        classify(person(vec![], true, "yellow")),
        serde_json::json!({"vaccinated": true, "nat_tested": false, "negative": false, "positive": false, "red_yellow": true})
    );
    let rate = |persons: i64, vaccinated: i64| {
        bundle
            .rules
            .call(
                "statistics",
                "vaccination_permille",
                &[serde_json::json!({"persons": persons, "vaccinated": vaccinated, "nat_tested": 0, "negative": 0, "positive": 0, "red_yellow": 0, "unknown": 0})],
            )
            .unwrap()
    };
    assert_eq!(rate(3, 2), serde_json::json!(666));
    assert_eq!(rate(0, 0), serde_json::Value::Null);
}

#[test]
fn a_stored_definition_recompiles_to_the_same_program() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    for p in bundle.workflows.values() {
        // The source travels as JSON with the instance's version.
        let stored = serde_json::to_string(&p.source).unwrap();
        let source = serde_json::from_str(&stored).unwrap();
        let again = engine::compile_program(&source, &engine::Options::default()).unwrap();
        assert_eq!(again.hash, p.hash, "{}", p.name);
        assert_eq!(again.states.len(), p.states.len());
    }
    let warning = &bundle.workflows["warning"];
    let forms: Vec<_> = warning
        .source
        .forms
        .iter()
        .map(|f| f.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        forms,
        ["disposal.yaml"],
        "only the forms a workflow uses travel with it"
    );
}
