//! Form files (and inline signal fields) into [`FormSpec`]s, schedule
//! entries into [`ScheduleSpec`]s.

use super::diagnostics::FileCx;
use super::form::{FieldKind, FieldSpec, FormSpec};
use super::schedule::{CatchUp, ScheduleSpec};
use super::values::is_identifier;
use crate::definition::source::Path;
use crate::definition::{self, FieldDef};
use serde_json::Value;
use std::collections::BTreeSet;

impl FileCx<'_> {
    pub(super) fn form(
        &mut self,
        name: &str,
        title: Option<String>,
        notice: Option<String>,
        fields: &[FieldDef],
        path: &Path,
    ) -> Option<FormSpec> {
        let before = self.diags.len();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let fp = path.index(i);
            if !seen.insert(f.name.clone()) {
                self.err_value(&fp.key("name"), format!("字段 `{}` 出现了两次", f.name));
            }
            if let Some(spec) = self.field(f, &fp) {
                out.push(spec);
            }
        }
        (self.diags.len() == before).then(|| FormSpec {
            name: name.to_string(),
            title,
            notice,
            fields: out,
        })
    }

    /// One field of a form: its name, type, options and bounds.
    fn field(&mut self, f: &FieldDef, fp: &Path) -> Option<FieldSpec> {
        if !is_identifier(&f.name) {
            self.err_value(
                &fp.key("name"),
                format!("字段名 `{}` 只能由字母、数字和 _ 组成", f.name),
            );
        }
        let Some(kind) = FieldKind::parse(&f.ty) else {
            self.err_value(
                &fp.key("type"),
                format!("未知的字段类型 `{}`；可用：{}", f.ty, FieldKind::NAMES),
            );
            return None;
        };
        self.field_options(f, kind, fp);
        self.field_bounds(f, fp);
        let default = f
            .default
            .as_ref()
            .and_then(|d| serde_json::to_value(d).ok());
        Some(FieldSpec {
            name: f.name.clone(),
            label: f.label.clone(),
            kind,
            required: f.required,
            min: f.min,
            max: f.max,
            min_length: f.min_length,
            max_length: f.max_length,
            options: f.options.clone(),
            help: f.help.clone(),
            default,
        })
    }

    /// Choice fields need options; other fields take none.
    fn field_options(&mut self, f: &FieldDef, kind: FieldKind, fp: &Path) {
        let is_choice = matches!(kind, FieldKind::Choice | FieldKind::MultiChoice);
        if is_choice && f.options.is_empty() {
            self.err_value(
                &fp.key("name"),
                format!("字段 `{}` 是 {}，需要写 `options`（选项）", f.name, f.ty),
            );
        }
        if !is_choice && !f.options.is_empty() {
            self.err_value(
                &fp.key("options"),
                format!("`options` 只用于选择字段，不能用于 {}", f.ty),
            );
        }
    }

    /// `min` not above `max`, `min_length` not above `max_length`.
    fn field_bounds(&mut self, f: &FieldDef, fp: &Path) {
        if let (Some(a), Some(b)) = (f.min, f.max) {
            if a > b {
                self.err_value(&fp.key("min"), format!("min {a} 大于 max {b}"));
            }
        }
        if let (Some(a), Some(b)) = (f.min_length, f.max_length) {
            if a > b {
                self.err_value(
                    &fp.key("min_length"),
                    format!("min_length {a} 大于 max_length {b}"),
                );
            }
        }
    }

    pub(super) fn schedule(
        &mut self,
        s: &definition::ScheduleDef,
        path: &Path,
        workflows: &BTreeSet<String>,
    ) -> Option<ScheduleSpec> {
        let before = self.diags.len();
        if !workflows.contains(&s.workflow) {
            self.err_value(
                &path.key("workflow"),
                format!("未知的工作流 `{}`", s.workflow),
            );
        }
        let tz: Option<chrono_tz::Tz> = s.timezone.parse().ok();
        if tz.is_none() {
            self.err_value(
                &path.key("timezone"),
                format!("未知的时区 `{}`；成都请写 Asia/Shanghai", s.timezone),
            );
        }
        let mut times = Vec::new();
        for (i, t) in s.at.iter().enumerate() {
            match chrono::NaiveTime::parse_from_str(t, "%H:%M") {
                Ok(t) => times.push(t),
                Err(_) => self.err_value(
                    &path.key("at").index(i),
                    format!("时间 `{t}` 写法有误：请写 时:分，如 05:00"),
                ),
            }
        }
        if s.at.is_empty() {
            self.err_value(&path.key("at"), "定时任务至少需要一个时间".into());
        }
        times.sort();
        times.dedup();
        let catch_up = match s.catch_up.as_deref() {
            None | Some("once") => CatchUp::Once,
            Some("none") => CatchUp::None,
            Some("all") => CatchUp::All,
            Some(other) => {
                self.err_value(
                    &path.key("catch_up"),
                    format!("catch_up `{other}` 只能是 none、once 或 all"),
                );
                CatchUp::Once
            }
        };
        let input = s
            .input
            .as_ref()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(Value::Object(Default::default()));
        (self.diags.len() == before).then(|| ScheduleSpec {
            name: s.name.clone(),
            workflow: s.workflow.clone(),
            tz: tz.expect("checked"),
            times,
            catch_up,
            input,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::test_support::{diagnostics_with, file, WORKFLOW};
    use crate::compile::{compile_bundle, Options};

    fn form_diagnostics(fields: &str) -> Vec<String> {
        let form = format!("form: f\nfields:\n{fields}");
        diagnostics_with(&[file("f.yaml", &form)], "")
    }

    #[test]
    fn a_field_is_named_once_and_only_choices_take_options() {
        let got = form_diagnostics(
            "  - { name: a, label: A, type: text, options: [x] }\n  - { name: a, label: B, type: choice }\n  - { name: b-c, label: C, type: int }\n",
        );
        assert_eq!(
            got,
            [
                "f.yaml:3:47: `options` 只用于选择字段，不能用于 text",
                "f.yaml:4:13: 字段 `a` 出现了两次",
                "f.yaml:4:13: 字段 `a` 是 choice，需要写 `options`（选项）",
                "f.yaml:5:13: 字段名 `b-c` 只能由字母、数字和 _ 组成",
            ]
        );
    }

    #[test]
    fn bounds_must_not_cross() {
        let got = form_diagnostics(
            "  - { name: a, label: A, type: int, min: 5, max: 1 }\n  - { name: b, label: B, type: text, min_length: 9, max_length: 2 }\n",
        );
        assert_eq!(
            got,
            [
                "f.yaml:3:42: min 5 大于 max 1",
                "f.yaml:4:50: min_length 9 大于 max_length 2",
            ]
        );
    }

    #[test]
    fn a_form_defined_twice_is_an_error_at_the_second() {
        let form = "form: f\nfields:\n  - { name: a, label: A, type: text }\n";
        let got = diagnostics_with(&[file("1.yaml", form), file("2.yaml", form)], "");
        assert_eq!(got, ["2.yaml:1:7: 表单 `f` 定义了两次"]);
    }

    #[test]
    fn schedule_times_are_sorted_deduplicated_and_catch_up_defaults_to_once() {
        let schedules = "schedules:\n  - { name: s, workflow: t, timezone: Asia/Shanghai, at: [\"15:00\", \"05:00\", \"15:00\"] }\n";
        let files = [file("w.yaml", WORKFLOW), file("s.yaml", schedules)];
        let bundle = compile_bundle(&files, &[], &Options::default()).unwrap();
        let s = &bundle.schedules[0];
        let times: Vec<String> = s
            .times
            .iter()
            .map(|t| t.format("%H:%M").to_string())
            .collect();
        assert_eq!(times, ["05:00", "15:00"]);
        assert_eq!(s.catch_up, crate::compile::schedule::CatchUp::Once);
        assert_eq!(s.input, serde_json::json!({}));
    }

    #[test]
    fn a_schedule_needs_a_time() {
        let schedules =
            "schedules:\n  - { name: s, workflow: t, timezone: Asia/Shanghai, at: [] }\n";
        let got = diagnostics_with(&[file("w.yaml", WORKFLOW), file("s.yaml", schedules)], "");
        assert_eq!(got, ["s.yaml:2:58: 定时任务至少需要一个时间"]);
    }
}
