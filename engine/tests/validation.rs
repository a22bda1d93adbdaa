//! Broken definitions: every error is reported at once, each at its exact
//! file:line:col, with a message a policy officer can act on.

use std::path::Path;

fn diagnostics() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken");
    let (w, r) = engine::load_dirs(&dir.join("workflows"), &dir.join("rules")).unwrap();
    let err = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap_err();
    let prefix = format!("{}/", dir.display());
    err.0
        .iter()
        .map(|d| d.to_string().replace(&prefix, ""))
        .collect()
}

#[test]
fn broken_fixtures_report_every_error_with_its_position() {
    let got = diagnostics();
    let expected = [
        "rules/helpers.rhai:6:13: rhai: Unexpected ';'",
        "workflows/bad.yaml:7:17: unknown type `boolean`; use one of string, text, int, number, bool, date, datetime, list, map, any",
        "workflows/bad.yaml:10:11: unknown form `missing_form`; known forms: ",
        "workflows/bad.yaml:20:19: unknown activity `send_fax`; activities in the catalog: notify",
        "workflows/bad.yaml:21:16: `nope` is not a declared variable; declare it under `variables:`",
        "workflows/bad.yaml:24:16: bad duration `6 hours please`: write a number and a unit, like 30m, 6h, 12h or 1d",
        "workflows/bad.yaml:28:15: unknown state `nowhere`; states: end, island, middle, start",
        "workflows/bad.yaml:29:7: transition on undeclared signal `jump`; declared signals: check, go",
        "workflows/bad.yaml:32:29: rhai syntax error in `vars.count > (1`: Expecting ')' for a matching ( in this expression",
        "workflows/bad.yaml:37:14: `vars.cuont` is not a declared variable",
        "workflows/bad.yaml:37:32: unknown rule `ok::shout` with 1 argument(s) in `vars.cuont > 1 && ok::shout(signal.note) && helpers::greet(1)`",
        "workflows/bad.yaml:39:21: signal `check` has no field `notes`",
        "workflows/bad.yaml:40:20: signal `check` has no field `notes`",
        "workflows/bad.yaml:43:3: state `island` is unreachable: no transition, timer or handler goes there from `start`",
        "workflows/bad.yaml:49:5: terminal state `end` cannot have timers: the workflow has ended there",
        "workflows/form_bad.yaml:3:11: field `choice` is a choice and needs `options`",
        "workflows/form_bad.yaml:8:11: unknown field type `integer`; use one of string, text, int, number, bool, date, choice, multi_choice",
        "workflows/no_end.yaml:6:1: no terminal state: mark the state where the workflow ends with `terminal: true`",
        "workflows/schedules.yaml:3:15: unknown workflow `ghost`",
        "workflows/schedules.yaml:4:15: unknown time zone `Asia/Chengdu`; for Chengdu write Asia/Shanghai",
        "workflows/schedules.yaml:5:18: bad time `25:00`: write HH:MM, like 05:00",
        "workflows/schedules.yaml:6:15: catch_up `twice` must be none, once or all",
        "workflows/unknown_key.yaml:7:5: states.a: unknown field `colour`, expected one of `label`, `terminal`, `status`, `output`, `on_enter`, `timers`, `on`",
    ];
    let missing: Vec<_> = expected
        .iter()
        .filter(|e| !got.contains(&e.to_string()))
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|g| !expected.contains(&g.as_str()))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:#?}\nunexpected: {extra:#?}"
    );
}

#[test]
fn good_rule_script_positions_survive_a_broken_neighbour() {
    // The broken helpers script is reported once, at its own line:col, and
    // its calls in workflows do not cascade into "unknown rule" errors.
    let got = diagnostics();
    assert_eq!(
        got.iter()
            .filter(|d| d.starts_with("rules/helpers.rhai"))
            .count(),
        1
    );
}
