//! `${...}` templates and rhai expressions: each is compiled, and every
//! name it reads is checked where it is written (declared variables and
//! inputs, the signal's fields, `result`/`error`/`item` only where they
//! exist, timers, rule functions), reported at the exact column.

use super::diagnostics::FileCx;
use super::program::*;
use super::workflow::WorkflowCx;
use crate::definition::source::{Path, Pos};
use crate::rules::{self, Reference};
use serde_json::Value;

/// What an expression may refer to where it is written.
#[derive(Clone, Copy)]
pub(super) struct Scope<'a> {
    pub(super) signal: Option<&'a str>,
    pub(super) in_activity_handler: bool,
    pub(super) item: bool,
}

pub(super) const ROOT: Scope<'static> = Scope {
    signal: None,
    in_activity_handler: false,
    item: false,
};

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

    /// Compile a YAML value into a template; `${...}` parts are expressions.
    pub(super) fn template(
        &mut self,
        v: &serde_yaml::Value,
        path: &Path,
        scope: Scope,
    ) -> Template {
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
    pub(super) fn expr(
        &mut self,
        src: &str,
        path: &Path,
        scope: Scope,
        prefix: &str,
    ) -> Option<rules::Expr> {
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
        let place = Placement::of(&self.cx, path, prefix);
        let before = self.cx.diags.len();
        for r in rules::references(src) {
            let problem = match r {
                Reference::Call {
                    module,
                    function,
                    arity,
                    offset,
                } => self
                    .call_problem(src, &module, &function, arity)
                    .map(|m| (offset, m)),
                Reference::Field {
                    root,
                    field,
                    offset,
                } => self
                    .field_problem(src, &root, &field, offset, scope)
                    .map(|m| (offset, m)),
            };
            if let Some((offset, m)) = problem {
                let col = src[..offset].chars().count() + 1;
                self.cx.at(place.pos(1, col), m);
            }
        }
        match self.rules.compile_expr(src, origin) {
            Ok(e) => (self.cx.diags.len() == before).then_some(e),
            Err(e) => {
                self.cx.at(
                    place.pos(e.line, e.col),
                    format!("表达式 `{src}` 语法错误：{}", e.message),
                );
                None
            }
        }
    }

    /// A call `module::function(..)` into a rules script that does not
    /// exist (a script that failed to compile was reported already).
    fn call_problem(
        &self,
        src: &str,
        module: &str,
        function: &str,
        arity: usize,
    ) -> Option<String> {
        if self.broken_modules.contains(module) {
            None
        } else if !self.rules.has_module(module) {
            Some(format!(
                "未知的规则脚本 `{module}`（在 `{src}` 中）：没有 rules/{module}.rhai"
            ))
        } else if !self.rules.has_function(module, function, Some(arity)) {
            Some(format!(
                "未知的规则 `{module}::{function}`（{arity} 个参数，在 `{src}` 中）"
            ))
        } else {
            None
        }
    }

    /// A field read `root.field` that is not there where it is written.
    fn field_problem(
        &self,
        src: &str,
        root: &str,
        field: &str,
        offset: usize,
        scope: Scope,
    ) -> Option<String> {
        match root {
            "vars" => (!self.def.variables.contains_key(field))
                .then(|| format!("`vars.{field}` 不是已声明的变量")),
            "input" => (!self.def.input.contains_key(field))
                .then(|| format!("`input.{field}` 不是已声明的输入")),
            "signal" => match scope.signal {
                None => Some("`signal` 只能在信号转移中使用".to_string()),
                Some(sig) => self
                    .signal_form(sig)
                    .filter(|f| f.field(field).is_none())
                    .map(|_| format!("信号 `{sig}` 没有字段 `{field}`")),
            },
            "result" | "error" if !scope.in_activity_handler => Some(format!(
                "`{root}` 只能在 on_success、on_failure 和 on_child_complete 中使用"
            )),
            "item" if !scope.item => Some("`item` 只能与 `for_each` 一起使用".to_string()),
            "timers" => self.timer_reference(field, &src[offset..]),
            _ => None,
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

/// Where an expression's own line:col lands in the file: inside a
/// one-line scalar, past an opening quote and the text before it.
struct Placement {
    value: Pos,
    quote: bool,
    prefix_chars: usize,
}

impl Placement {
    fn of(cx: &FileCx, path: &Path, prefix: &str) -> Self {
        let value = cx.map.value(path);
        let quote = cx
            .file
            .text
            .lines()
            .nth(value.line.saturating_sub(1))
            .and_then(|l| l.chars().nth(value.col.saturating_sub(1)))
            .is_some_and(|c| c == '"' || c == '\'');
        Placement {
            value,
            quote,
            prefix_chars: prefix.chars().count(),
        }
    }

    fn pos(&self, line: usize, col: usize) -> Pos {
        if line <= 1 {
            Pos {
                line: self.value.line,
                col: self.value.col
                    + usize::from(self.quote)
                    + self.prefix_chars
                    + col.saturating_sub(1),
            }
        } else {
            Pos {
                line: self.value.line + line - 1,
                col,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::closing_brace;
    use crate::compile::program::Template;
    use crate::compile::test_support::{changed, diagnostics, program};

    /// The base workflow with `go`'s transition guarded by `guard` (as
    /// written, quotes included), on line 15; the value starts at col 17.
    fn guarded(guard: &str) -> String {
        changed(
            "      go: { goto: b }",
            &format!("      go: {{ if: {guard}, goto: b }}"),
        )
    }

    #[test]
    fn a_closing_brace_skips_nested_braces_and_strings() {
        assert_eq!(closing_brace("a}"), Some(1));
        assert_eq!(closing_brace("#{x: 1}.x}"), Some(9));
        assert_eq!(closing_brace("\"}\" + x}"), Some(7));
        assert_eq!(closing_brace("no end"), None);
    }

    #[test]
    fn names_are_checked_where_they_are_written() {
        assert_eq!(
            diagnostics(&guarded("\"vars.m > 1\"")),
            ["workflow.yaml:15:18: `vars.m` 不是已声明的变量"]
        );
        assert_eq!(
            diagnostics(&guarded("\"input.who == () && signal.notes == ()\"")),
            ["workflow.yaml:15:37: 信号 `go` 没有字段 `notes`"]
        );
        assert_eq!(
            diagnostics(&guarded("\"result.x == 1\"")),
            ["workflow.yaml:15:18: `result` 只能在 on_success、on_failure 和 on_child_complete 中使用"]
        );
        assert_eq!(
            diagnostics(&guarded("\"item.x == 1\"")),
            ["workflow.yaml:15:18: `item` 只能与 `for_each` 一起使用"]
        );
    }

    #[test]
    fn signal_is_only_read_in_a_transition() {
        let w = changed(
            "  a:\n    on:",
            "  a:\n    on_enter:\n      - set: { n: \"${signal.note}\" }\n    on:",
        );
        assert_eq!(
            diagnostics(&w),
            ["workflow.yaml:15:22: `signal` 只能在信号转移中使用"]
        );
    }

    #[test]
    fn rule_calls_name_a_script_and_function_that_exist() {
        assert_eq!(
            diagnostics(&guarded("\"helpers::greet(1) == 1 && other::x()\"")),
            ["workflow.yaml:15:44: 未知的规则脚本 `other`（在 `helpers::greet(1) == 1 && other::x()` 中）：没有 rules/other.rhai"]
        );
        assert_eq!(
            diagnostics(&guarded("\"helpers::greet(1, 2)\"")),
            ["workflow.yaml:15:18: 未知的规则 `helpers::greet`（2 个参数，在 `helpers::greet(1, 2)` 中）"]
        );
    }

    #[test]
    fn timers_are_read_by_a_known_name_and_field() {
        let with_timer = |guard: &str| {
            guarded(guard).replace(
                "  a:\n    on:",
                "  a:\n    timers:\n      t: { after: 1h, goto: b }\n    on:",
            )
        };
        assert_eq!(
            diagnostics(&with_timer("\"timers.t.hours > 0\"")),
            Vec::<String>::new()
        );
        assert_eq!(
            diagnostics(&with_timer("\"timers.u.hours > 0\"")),
            ["workflow.yaml:17:18: `timers.u` 不是本流程的计时器；已有的计时器：t"]
        );
        assert_eq!(
            diagnostics(&with_timer("\"timers.t.days > 0\"")),
            ["workflow.yaml:17:18: `timers.t.days` 未知；可用：after, hours, minutes, label"]
        );
    }

    #[test]
    fn a_syntax_error_points_into_the_template() {
        let w = changed(
            "  a:\n    on:",
            "  a:\n    on_enter:\n      - set: { n: \"x ${vars.n +} y\" }\n    on:",
        );
        let got = diagnostics(&w);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("workflow.yaml:15:"), "{got:?}");
        assert!(got[0].contains("表达式 `vars.n +` 语法错误"), "{got:?}");
        let unclosed = changed(
            "  a:\n    on:",
            "  a:\n    on_enter:\n      - set: { n: \"${vars.n\" }\n    on:",
        );
        assert_eq!(
            diagnostics(&unclosed),
            ["workflow.yaml:15:19: `${` 缺少配对的 `}`"]
        );
    }

    #[test]
    fn templates_are_literals_expressions_or_interpolations() {
        let w = changed(
            "  a:\n    on:",
            "  a:\n    on_enter:\n      - activity: notify\n        args: { a: plain, b: \"${input.who}\", c: \"hi ${input.who}!\", d: [1] }\n    on:",
        );
        let p = program(&w);
        let Template::Map(entries) = &p.activities[0].args else {
            panic!("a map")
        };
        let kinds: Vec<_> = entries
            .iter()
            .map(|(k, t)| {
                let kind = match t {
                    Template::Literal(_) => "literal",
                    Template::Expr(_) => "expr",
                    Template::Interpolate(_) => "interpolate",
                    Template::List(_) => "list",
                    Template::Map(_) => "map",
                };
                (k.as_str(), kind)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", "literal"),
                ("b", "expr"),
                ("c", "interpolate"),
                ("d", "list")
            ]
        );
        // `if:` written as `${...}` is the same expression.
        assert_eq!(
            diagnostics(&guarded("\"${vars.n > 1}\"")),
            Vec::<String>::new()
        );
    }
}
