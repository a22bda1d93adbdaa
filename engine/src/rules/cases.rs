//! Rule tests written beside the rules, without Rust (`rules/tests/*.yaml`).
//!
//! ```yaml
//! cases:
//!   - name: 核酸阳性
//!     call: anomaly::evaluate          # a rule function …
//!     args: { person: { … } }          # … its arguments by name (or a list)
//!     expect: [核酸阳性]                # … and what it must return
//!   - name: 未知人员
//!     judge: { … }                     # a kind the host runs (the server: a comparison of one person)
//!     expect: { … }
//! ```
//!
//! The engine runs `call` cases; other kinds are handed to the host. A
//! failure shows expected and actual side by side as a line diff.

use super::{Limits, Rules};
use crate::definition::source::{Path, SourceMap};
use serde_json::Value;

/// One case of a test file.
#[derive(Debug, Clone)]
pub struct Case {
    /// `rules/tests/anomaly.yaml:3` — where the case starts.
    pub file: String,
    pub line: usize,
    pub name: String,
    /// `call`, or the host's kind (`judge`).
    pub kind: String,
    /// The value under the kind's key (`anomaly::evaluate` for `call`).
    pub subject: Value,
    /// `args` of a call case (a list, or a map by parameter name).
    pub args: Option<Value>,
    pub expect: Value,
}

impl Case {
    /// `file:line 「name」`.
    pub fn title(&self) -> String {
        format!("{}:{} 「{}」", self.file, self.line, self.name)
    }
}

/// What became of one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    /// The value differed: the diff of expected (`-`) and actual (`+`).
    Fail(String),
    /// The case could not be run (a rule error, a malformed case).
    Error(String),
}

/// Read every `*.yaml` in `dir` (sorted). Paths are shown as `dir/name`.
pub fn load_dir(dir: &std::path::Path) -> Result<Vec<Case>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("无法读取 {}：{e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yaml" || e == "yml")
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(&p).map_err(|e| format!("无法读取 {}：{e}", p.display()))?;
        out.extend(parse(&p.display().to_string(), &text)?);
    }
    Ok(out)
}

/// The cases of one file.
pub fn parse(path: &str, text: &str) -> Result<Vec<Case>, String> {
    use serde_yaml::Value as Y;
    let doc: Y = serde_yaml::from_str(text).map_err(|e| {
        let (l, c) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        format!("{path}:{l}:{c}: YAML 写法有误：{e}")
    })?;
    let map = SourceMap::build(text);
    let list = doc
        .get("cases")
        .and_then(Y::as_sequence)
        .ok_or_else(|| format!("{path}:1:1: 应以 `cases:` 开头，下面是用例列表"))?;
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let cp = Path::root().key("cases").index(i);
        let pos = map.value(&cp);
        let at = |k: &str, m: String| {
            let p = map.key(&cp.key(k));
            format!("{path}:{}:{}: {m}", p.line, p.col)
        };
        let m = c
            .as_mapping()
            .ok_or_else(|| format!("{path}:{}:{}: 用例应是一个映射", pos.line, pos.col))?;
        let name = c
            .get("name")
            .and_then(Y::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("第 {} 个用例", i + 1));
        let kinds: Vec<String> = m
            .keys()
            .filter_map(Y::as_str)
            .filter(|k| !matches!(*k, "name" | "args" | "expect"))
            .map(str::to_string)
            .collect();
        let kind = match kinds.as_slice() {
            [k] => k.clone(),
            [] => {
                return Err(at(
                    "name",
                    "用例缺少要测什么：`call:`（规则函数）或 `judge:`".into(),
                ))
            }
            [_, second, ..] => {
                return Err(at(
                    second,
                    format!(
                        "一个用例只测一件事：`{}` 和 `{second}` 只能写一个",
                        kinds[0]
                    ),
                ))
            }
        };
        let expect = c
            .get("expect")
            .ok_or_else(|| at(&kind, "用例缺少 `expect:`（期望的结果）".into()))?;
        let json = |v: &Y| serde_json::to_value(v).unwrap_or(Value::Null);
        out.push(Case {
            file: path.to_string(),
            line: pos.line,
            name,
            subject: json(&c[kind.as_str()]),
            kind,
            args: c.get("args").map(json),
            expect: json(expect),
        });
    }
    Ok(out)
}

/// Compile the `*.rhai` scripts directly in `dir` (what a case calls).
pub fn rules_in(dir: &std::path::Path) -> Result<Rules, String> {
    let mut scripts = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("无法读取 {}：{e}", dir.display()))?;
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) == Some("rhai") {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("无法读取 {}：{e}", p.display()))?;
            let module = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            scripts.push((module, p.display().to_string(), text));
        }
    }
    scripts.sort();
    Rules::build(&scripts, Limits::default()).map_err(|errors| {
        errors
            .iter()
            .map(|(m, e)| {
                let file = scripts
                    .iter()
                    .find(|s| &s.0 == m)
                    .map_or(m.as_str(), |s| s.1.as_str());
                format!("{file}:{}:{}: {}", e.line, e.col, e.message)
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Run a `call` case.
pub fn run_call(rules: &Rules, case: &Case) -> Outcome {
    let Some((module, function)) = case.subject.as_str().and_then(|s| s.split_once("::")) else {
        return Outcome::Error("`call:` 应写作 模块::函数，例如 anomaly::evaluate".into());
    };
    let args: Vec<Value> = match &case.args {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Object(m)) => {
            let Some(params) = rules.params(module, function, m.len()) else {
                return Outcome::Error(format!(
                    "规则中没有 {} 个参数的函数 `{module}::{function}`",
                    m.len()
                ));
            };
            let mut out = Vec::new();
            for p in params {
                match m.get(p) {
                    Some(v) => out.push(v.clone()),
                    None => {
                        return Outcome::Error(format!(
                            "`args` 缺少参数 `{p}`（`{function}` 的参数：{}）",
                            params.join(", ")
                        ))
                    }
                }
            }
            out
        }
        Some(one) => vec![one.clone()],
    };
    match rules.call(module, function, &args) {
        Ok(actual) => compare(&case.expect, &actual),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

/// Pass when equal; otherwise the diff.
pub fn compare(expected: &Value, actual: &Value) -> Outcome {
    if same(expected, actual) {
        Outcome::Pass
    } else {
        Outcome::Fail(diff(expected, actual))
    }
}

/// Equal, counting 1 and 1.0 as the same number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// A line diff of two values written as pretty JSON: `-` expected only,
/// `+` actual only, two spaces for lines both have.
pub fn diff(expected: &Value, actual: &Value) -> String {
    let a = pretty(expected);
    let b = pretty(actual);
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // Longest common subsequence, then walk it.
    let mut l = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            l[i][j] = if a[i] == b[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let mut out = String::from("--- 期望\n+++ 实际\n");
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || l[i + 1][j] >= l[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_marks_what_differs() {
        let d = diff(&json!(["核酸阳性", "红码"]), &json!(["红码"]));
        assert!(d.contains("-   \"核酸阳性\","), "{d}");
        assert!(d.contains("    \"红码\""), "{d}");
        assert_eq!(compare(&json!(1), &json!(1.0)), Outcome::Pass);
    }

    #[test]
    fn call_cases_run_by_parameter_name() {
        let rules = Rules::build(
            &[(
                "m".into(),
                "rules/m.rhai".into(),
                "fn f(a, b) { a - b }".into(),
            )],
            Limits::default(),
        )
        .unwrap();
        let cases = parse(
            "rules/tests/m.yaml",
            "cases:\n  - name: 减\n    call: m::f\n    args: { b: 1, a: 3 }\n    expect: 2\n  - name: 错\n    call: m::f\n    args: [1, 1]\n    expect: 1\n",
        )
        .unwrap();
        assert_eq!(cases[0].line, 2);
        assert_eq!(run_call(&rules, &cases[0]), Outcome::Pass);
        assert!(
            matches!(run_call(&rules, &cases[1]), Outcome::Fail(d) if d.contains("- 1") && d.contains("+ 0"))
        );
    }
}
