//! What a problem looks like ([`Diagnostic`], [`Error`]), where it points
//! ([`FileCx`]: at a path's key or value), serde_yaml's English in Chinese,
//! and one message per mistake written behind a YAML alias.

use super::program::SourceFile;
use crate::definition::source::{Path, Pos, SourceMap};
use crate::rules;
use std::collections::BTreeSet;

/// One problem in one file, where a policy officer can find it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl From<rules::inputs::Finding> for Diagnostic {
    fn from(f: rules::inputs::Finding) -> Self {
        Diagnostic {
            file: f.file,
            line: f.line,
            col: f.col,
            message: f.message,
        }
    }
}

/// Every problem found, sorted by file and position.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Error(pub Vec<Diagnostic>);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// serde_yaml's and the parser's English in Chinese: `states.a: unknown
/// field `colour`, expected one of …` -> `states.a: 未知的键 `colour`；可用的键：…`.
pub(super) fn yaml_words(message: &str) -> String {
    let (prefix, m) = match message.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') => (format!("{p}: "), rest),
        _ => (String::new(), message),
    };
    let zh = if let Some(rest) = m.strip_prefix("unknown field ") {
        match rest.split_once(", expected one of ") {
            Some((f, known)) => format!("未知的键 {f}；可用的键：{known}"),
            None => match rest.split_once(", expected ") {
                Some((f, known)) => format!("未知的键 {f}；可用的键：{known}"),
                None => format!("未知的键 {rest}"),
            },
        }
    } else if let Some(rest) = m.strip_prefix("unknown variant ") {
        match rest.split_once(", expected one of ") {
            Some((v, known)) => format!("未知的取值 {v}；可用：{known}"),
            None => format!("未知的取值 {rest}"),
        }
    } else if let Some(f) = m.strip_prefix("missing field ") {
        format!("缺少 {f}")
    } else if let Some(f) = m.strip_prefix("duplicate field ") {
        format!("{f} 写了两次")
    } else if let Some(rest) = m.strip_prefix("invalid type: ") {
        match rest.split_once(", expected ") {
            Some((got, want)) => format!("类型不对：写的是 {got}，应为 {want}"),
            None => format!("类型不对：{rest}"),
        }
    } else if let Some(rest) = m.strip_prefix("invalid value: ") {
        format!("取值不对：{rest}")
    } else if m.starts_with("unrecognised file") || m.starts_with("expected a mapping with") {
        "无法识别的文件：顶层应以 `workflow:`、`form:`、`schedules:`、`activities:` 或 `data:` 开头；\
         若是应用自己读取的参考数据，请把它列入 `data:` 清单（workflows/data.yaml）"
            .into()
    } else {
        format!("YAML 写法有误：{m}")
    };
    format!("{prefix}{zh}")
}

/// A YAML alias (`dispose: *submitted`) compiles the anchored text again
/// where it is used; a mistake in that text is reported at the anchor, and
/// the same message at an alias is dropped.
pub(super) fn drop_alias_repeats(diags: &mut Vec<Diagnostic>, files: &[SourceFile]) {
    let at_alias = |d: &Diagnostic| {
        files
            .iter()
            .find(|f| f.path == d.file)
            .and_then(|f| f.text.lines().nth(d.line.saturating_sub(1)))
            .and_then(|l| l.chars().nth(d.col.saturating_sub(1)))
            == Some('*')
    };
    let originals: BTreeSet<(String, String)> = diags
        .iter()
        .filter(|d| !at_alias(d))
        .map(|d| (d.file.clone(), d.message.clone()))
        .collect();
    diags.retain(|d| !at_alias(d) || !originals.contains(&(d.file.clone(), d.message.clone())));
}

/// Per-file helpers: report at a path's key or value.
pub(super) struct FileCx<'a> {
    pub(super) file: &'a SourceFile,
    pub(super) map: &'a SourceMap,
    pub(super) diags: &'a mut Vec<Diagnostic>,
}

impl FileCx<'_> {
    pub(super) fn at(&mut self, pos: Pos, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.path.clone(),
            line: pos.line,
            col: pos.col,
            message,
        });
    }
    pub(super) fn err_value(&mut self, path: &Path, message: String) {
        let pos = self.map.value(path);
        self.at(pos, message);
    }
    pub(super) fn err_key(&mut self, path: &Path, message: String) {
        let pos = self.map.key(path);
        self.at(pos, message);
    }
    pub(super) fn origin(&self, path: &Path) -> String {
        let p = self.map.value(path);
        format!("{}:{}:{}", self.file.path, p.line, p.col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::test_support::{diagnostics_with, file, WORKFLOW};

    #[test]
    fn serde_yaml_messages_are_said_in_chinese_with_their_path() {
        assert_eq!(
            yaml_words("states.a: unknown field `colour`, expected one of `label`, `on`"),
            "states.a: 未知的键 `colour`；可用的键：`label`, `on`"
        );
        assert_eq!(yaml_words("missing field `version`"), "缺少 `version`");
        assert_eq!(
            yaml_words("version: invalid type: string \"x\", expected u32"),
            "version: 类型不对：写的是 string \"x\"，应为 u32"
        );
        assert_eq!(
            yaml_words("unknown variant `daily`, expected one of `once`, `all`"),
            "未知的取值 `daily`；可用：`once`, `all`"
        );
        assert!(yaml_words("unrecognised file").starts_with("无法识别的文件"));
        assert_eq!(yaml_words("something odd"), "YAML 写法有误：something odd");
    }

    #[test]
    fn an_error_prints_one_diagnostic_per_line_as_file_line_col() {
        let d = |line| Diagnostic {
            file: "w.yaml".into(),
            line,
            col: 3,
            message: "不对".into(),
        };
        assert_eq!(
            Error(vec![d(1), d(2)]).to_string(),
            "w.yaml:1:3: 不对\nw.yaml:2:3: 不对"
        );
    }

    #[test]
    fn a_mistake_behind_an_alias_is_reported_at_the_anchor_only() {
        let text = "a: &x\n  k: 1\nb: *x\n";
        let files = [file("w.yaml", text)];
        let at = |line, col, m: &str| Diagnostic {
            file: "w.yaml".into(),
            line,
            col,
            message: m.into(),
        };
        let mut diags = vec![at(1, 4, "错"), at(3, 4, "错"), at(3, 4, "只在别名处")];
        drop_alias_repeats(&mut diags, &files);
        assert_eq!(diags, vec![at(1, 4, "错"), at(3, 4, "只在别名处")]);
    }

    #[test]
    fn a_yaml_syntax_error_is_a_diagnostic_of_its_file() {
        let got = diagnostics_with(
            &[file(
                "w.yaml",
                &WORKFLOW.replace("initial: a", "initial: [a"),
            )],
            "",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("w.yaml:"), "{got:?}");
    }
}
