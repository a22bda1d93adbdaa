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
