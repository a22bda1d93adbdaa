//! Compiled form definitions (`workflows/forms/*.yaml` or inline signal
//! fields) and the one validation of submitted values against them, used by
//! the interpreter for signal payloads and by the server for HTML forms.
//! Messages are Chinese: enterprises and districts read them at the field.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize)]
pub struct FormSpec {
    pub name: String,
    pub title: Option<String>,
    pub notice: Option<String>,
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    String,
    Text,
    Int,
    Number,
    Bool,
    Date,
    Choice,
    MultiChoice,
}

impl FieldKind {
    pub fn parse(s: &str) -> Option<FieldKind> {
        Some(match s {
            "string" => FieldKind::String,
            "text" => FieldKind::Text,
            "int" => FieldKind::Int,
            "number" => FieldKind::Number,
            "bool" => FieldKind::Bool,
            "date" => FieldKind::Date,
            "choice" => FieldKind::Choice,
            "multi_choice" => FieldKind::MultiChoice,
            _ => return None,
        })
    }
    pub const NAMES: &'static str = "string, text, int, number, bool, date, choice, multi_choice";
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldSpec {
    pub name: String,
    pub label: String,
    pub kind: FieldKind,
    pub required: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub options: Vec<String>,
    pub help: Option<String>,
    pub default: Option<Value>,
}

/// A refused field: which one and why, in words the person understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Longest text accepted by a field without its own `max_length`.
pub const DEFAULT_MAX_LENGTH: usize = 2000;

impl FormSpec {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Check `payload` (a JSON object; strings are accepted for numbers,
    /// booleans and lists, as HTML forms send them) and return it normalised
    /// to the fields' types. Every problem is reported, not just the first.
    pub fn validate(&self, payload: &Value) -> Result<Value, Vec<FieldError>> {
        let empty = Map::new();
        let obj = match payload {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => {
                return Err(vec![FieldError {
                    field: String::new(),
                    message: "提交内容格式不正确".into(),
                }])
            }
        };
        let mut errors = Vec::new();
        for k in obj.keys() {
            if self.field(k).is_none() {
                errors.push(FieldError {
                    field: k.clone(),
                    message: format!("未知字段：{k}"),
                });
            }
        }
        let mut out = Map::new();
        for f in &self.fields {
            match f.check(obj.get(&f.name)) {
                Ok(Some(v)) => {
                    out.insert(f.name.clone(), v);
                }
                Ok(None) => {}
                Err(message) => errors.push(FieldError {
                    field: f.name.clone(),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(Value::Object(out))
        } else {
            Err(errors)
        }
    }
}

fn blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

impl FieldSpec {
    fn check(&self, v: Option<&Value>) -> Result<Option<Value>, String> {
        let label = &self.label;
        if blank(v) {
            if self.kind == FieldKind::Bool {
                if self.required {
                    return Err(format!("请确认{label}"));
                }
                return Ok(Some(Value::Bool(false)));
            }
            if self.required {
                return Err(format!("请填写{label}"));
            }
            return Ok(self.default.clone());
        }
        let v = v.expect("not blank");
        match self.kind {
            FieldKind::String | FieldKind::Text | FieldKind::Date | FieldKind::Choice => {
                self.check_text(v).map(Some)
            }
            FieldKind::Int | FieldKind::Number => self.check_number(v).map(Some),
            FieldKind::Bool => match v {
                Value::Bool(b) => Ok(Some(Value::Bool(*b))),
                Value::String(s) if matches!(s.as_str(), "true" | "on" | "1" | "yes" | "是") => {
                    Ok(Some(Value::Bool(true)))
                }
                Value::String(s) if matches!(s.as_str(), "false" | "off" | "0" | "no" | "否") => {
                    Ok(Some(Value::Bool(false)))
                }
                _ => Err(format!("{}格式不正确", self.label)),
            },
            FieldKind::MultiChoice => self.check_choices(v).map(Some),
        }
    }

    /// A text, date or single choice: trimmed, a valid date or option,
    /// within its lengths.
    fn check_text(&self, v: &Value) -> Result<Value, String> {
        let label = &self.label;
        let s = match v {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) if self.kind != FieldKind::Date => n.to_string(),
            _ => return Err(format!("{label}格式不正确")),
        };
        if self.kind == FieldKind::Date
            && chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d").is_err()
        {
            return Err(format!("{label}须为日期（例如 2026-12-01）"));
        }
        if self.kind == FieldKind::Choice && !self.options.contains(&s) {
            return Err(format!("{label}的选项无效"));
        }
        let n = s.chars().count();
        if let Some(max) = self.max_length.or(Some(DEFAULT_MAX_LENGTH)) {
            if n > max {
                return Err(format!("{label}不能超过{max}个字"));
            }
        }
        if let Some(min) = self.min_length {
            if n < min {
                return Err(format!("{label}不能少于{min}个字"));
            }
        }
        Ok(Value::String(s))
    }

    /// An int or number: finite, whole for an int, within min and max.
    fn check_number(&self, v: &Value) -> Result<Value, String> {
        let label = &self.label;
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let Some(n) = n.filter(|n| n.is_finite()) else {
            return Err(format!("{label}须为数字"));
        };
        if self.kind == FieldKind::Int && n.fract() != 0.0 {
            return Err(format!("{label}须为整数"));
        }
        if let Some(min) = self.min {
            if n < min {
                return Err(format!("{label}不能小于{min}"));
            }
        }
        if let Some(max) = self.max {
            if n > max {
                return Err(format!("{label}不能大于{max}"));
            }
        }
        Ok(if self.kind == FieldKind::Int {
            Value::from(n as i64)
        } else {
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        })
    }

    /// A multiple choice: one option or a list of them, each declared.
    fn check_choices(&self, v: &Value) -> Result<Value, String> {
        let label = &self.label;
        let items: Vec<String> = match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("{label}格式不正确"))?,
            _ => return Err(format!("{label}格式不正确")),
        };
        if items.iter().any(|i| !self.options.contains(i)) {
            return Err(format!("{label}的选项无效"));
        }
        Ok(Value::from(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form() -> FormSpec {
        let f = |name: &str, kind, required| FieldSpec {
            name: name.into(),
            label: name.to_uppercase(),
            kind,
            required,
            min: Some(0.0),
            max: Some(10.0),
            min_length: None,
            max_length: Some(5),
            options: vec!["a".into(), "b".into()],
            help: None,
            default: None,
        };
        FormSpec {
            name: "t".into(),
            title: None,
            notice: None,
            fields: vec![
                f("s", FieldKind::String, true),
                f("n", FieldKind::Int, false),
                f("c", FieldKind::Choice, false),
                f("m", FieldKind::MultiChoice, false),
                f("b", FieldKind::Bool, false),
            ],
        }
    }

    #[test]
    fn normalises_html_style_values() {
        let v = form()
            .validate(&json!({"s": " hi ", "n": "3", "m": "a", "b": "on"}))
            .unwrap();
        assert_eq!(v, json!({"s": "hi", "n": 3, "m": ["a"], "b": true}));
    }

    #[test]
    fn reports_every_error_in_chinese() {
        let e = form()
            .validate(&json!({"n": "3.5", "c": "z", "s": "", "x": 1}))
            .unwrap_err();
        let fields: Vec<_> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["x", "s", "n", "c"]);
        assert_eq!(e[1].message, "请填写S");
        assert_eq!(e[2].message, "N须为整数");
        let e = form()
            .validate(&json!({"s": "toolong", "n": 11}))
            .unwrap_err();
        assert_eq!(e[0].message, "S不能超过5个字");
        assert_eq!(e[1].message, "N不能大于10");
    }
}
