//! Small values every kind of file uses: durations (`8h`), retry policies,
//! identifiers.

use super::diagnostics::FileCx;
use super::program::RetryPolicy;
use crate::definition::source::Path;
use crate::definition::RetryDef;
use std::time::Duration;

impl FileCx<'_> {
    pub(super) fn duration(&mut self, text: &str, path: &Path) -> Option<Duration> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.err_value(path, format!("时长 `{text}` 必须大于零"));
                None
            }
            Err(_) => {
                self.err_value(
                    path,
                    format!("时长 `{text}` 写法有误：请写数字加单位，如 30m、6h、12h 或 1d"),
                );
                None
            }
        }
    }

    pub(super) fn retry(
        &mut self,
        def: Option<&RetryDef>,
        base: RetryPolicy,
        path: &Path,
    ) -> RetryPolicy {
        let mut r = base;
        let Some(d) = def else { return r };
        if let Some(a) = d.attempts {
            if a == 0 {
                self.err_value(&path.key("attempts"), "attempts（尝试次数）至少为 1".into());
            } else {
                r.max_attempts = a;
            }
        }
        if let Some(b) = &d.backoff {
            r.initial_backoff = self
                .duration(b, &path.key("backoff"))
                .unwrap_or(r.initial_backoff);
        }
        if let Some(b) = &d.max_backoff {
            r.max_backoff = self
                .duration(b, &path.key("max_backoff"))
                .unwrap_or(r.max_backoff);
        }
        if let Some(t) = &d.timeout {
            r.timeout = self.duration(t, &path.key("timeout")).unwrap_or(r.timeout);
        }
        if r.max_backoff < r.initial_backoff {
            self.err_value(path, "max_backoff 不能短于 backoff".into());
        }
        r
    }
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

#[cfg(test)]
mod tests {
    use crate::compile::test_support::{changed, diagnostics, program, ACTIVITIES};

    #[test]
    fn a_duration_must_be_a_number_with_a_unit_and_above_zero() {
        let timer = |after: &str| {
            changed(
                "  a:\n    on:",
                &format!("  a:\n    timers:\n      t: {{ after: {after}, goto: b }}\n    on:"),
            )
        };
        assert_eq!(
            program(&timer("90m")).states[0].timers[0].after,
            std::time::Duration::from_secs(5400)
        );
        assert_eq!(
            diagnostics(&timer("0s")),
            ["workflow.yaml:15:19: 时长 `0s` 必须大于零"]
        );
        assert_eq!(
            diagnostics(&timer("soon")),
            ["workflow.yaml:15:19: 时长 `soon` 写法有误：请写数字加单位，如 30m、6h、12h 或 1d"]
        );
    }

    #[test]
    fn a_retry_overrides_the_catalog_and_is_checked() {
        let call = |retry: &str| {
            changed(
                "  a:\n    on:",
                &format!("  a:\n    on_enter:\n      - activity: notify\n        retry: {retry}\n    on:"),
            )
        };
        let p = program(&call("{ backoff: 2s }"));
        assert_eq!(p.activities[0].retry.max_attempts, 3, "from the catalog");
        assert_eq!(
            p.activities[0].retry.initial_backoff,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            diagnostics(&call("{ attempts: 0 }")),
            ["workflow.yaml:16:28: attempts（尝试次数）至少为 1"]
        );
        assert_eq!(
            diagnostics(&call("{ backoff: 1m, max_backoff: 10s }")),
            ["workflow.yaml:16:16: max_backoff 不能短于 backoff"]
        );
        assert!(ACTIVITIES.contains("attempts: 3"));
    }

    #[test]
    fn identifiers_are_ascii_letters_digits_and_underscores() {
        use super::is_identifier;
        assert!(is_identifier("warning_2"));
        assert!(is_identifier("_x"));
        assert!(!is_identifier("2x"));
        assert!(!is_identifier("预警"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
    }
}
