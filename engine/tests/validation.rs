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
    // `island` is unreachable too, but a `goto` to an unknown state
    // (`nowhere`, 28:15) could have meant it: one mistake, one message.
    let expected = [
        "rules/helpers.rhai:6:13: 这里不应出现 `;`",
        "workflows/bad.yaml:7:17: 未知的类型 `boolean`；可用：string, text, int, number, bool, date, datetime, list, map, any",
        "workflows/bad.yaml:10:11: 未知的表单 `missing_form`；已有的表单：",
        "workflows/bad.yaml:20:19: 未知的活动 `send_fax`；活动目录中有：notify",
        "workflows/bad.yaml:21:16: `nope` 不是已声明的变量；请在 `variables:` 下声明",
        "workflows/bad.yaml:24:16: 时长 `6 hours please` 写法有误：请写数字加单位，如 30m、6h、12h 或 1d",
        "workflows/bad.yaml:28:15: 未知的状态 `nowhere`；已有的状态：end, island, middle, start",
        "workflows/bad.yaml:29:7: 转移所用的信号 `jump` 没有声明；已声明的信号：check, go",
        "workflows/bad.yaml:32:29: 表达式 `vars.count > (1` 语法错误：缺少 `)`（与前面的 `(` 配对）",
        "workflows/bad.yaml:37:14: `vars.cuont` 不是已声明的变量",
        "workflows/bad.yaml:37:32: 未知的规则 `ok::shout`（1 个参数，在 `vars.cuont > 1 && ok::shout(signal.note) && helpers::greet(1)` 中）",
        "workflows/bad.yaml:39:21: 信号 `check` 没有字段 `notes`",
        "workflows/bad.yaml:40:20: 信号 `check` 没有字段 `notes`",
        "workflows/bad.yaml:49:5: 终止状态 `end` 不能有计时器：工作流到这里已经结束",
        "workflows/form_bad.yaml:3:11: 字段 `choice` 是 choice，需要写 `options`（选项）",
        "workflows/form_bad.yaml:8:11: 未知的字段类型 `integer`；可用：string, text, int, number, bool, date, choice, multi_choice",
        "workflows/no_end.yaml:6:1: 没有终止状态：请给工作流结束的状态加上 `terminal: true`",
        "workflows/schedules.yaml:3:15: 未知的工作流 `ghost`",
        "workflows/schedules.yaml:4:15: 未知的时区 `Asia/Chengdu`；成都请写 Asia/Shanghai",
        "workflows/schedules.yaml:5:18: 时间 `25:00` 写法有误：请写 时:分，如 05:00",
        "workflows/schedules.yaml:6:15: catch_up `twice` 只能是 none、once 或 all",
        "workflows/unknown_key.yaml:7:5: states.a: 未知的键 `colour`；可用的键：`label`, `terminal`, `status`, `output`, `on_enter`, `timers`, `on`",
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
