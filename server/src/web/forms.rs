//! The YAML-defined forms (daily record, disposal) on HTML pages: their
//! values from a form body and their field errors for the template. Used
//! by the enterprise's and the district's handlers alike.

use engine::compile::form::{FieldKind, FormSpec};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The values of a YAML-defined form (R3.3, R5.3) from an HTML form body:
/// multi-choice fields collect every value, others take the last.
pub fn form_values(spec: &FormSpec, pairs: &[(String, String)]) -> Value {
    let mut m = Map::new();
    for f in &spec.fields {
        let values: Vec<&String> = pairs
            .iter()
            .filter(|(k, _)| k == &f.name)
            .map(|(_, v)| v)
            .collect();
        let v = match f.kind {
            FieldKind::MultiChoice => {
                Value::from(values.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            }
            _ => match values.last() {
                Some(s) => Value::String((*s).clone()),
                None => Value::Null,
            },
        };
        m.insert(f.name.clone(), v);
    }
    Value::Object(m)
}

pub fn field_errors(errors: &[engine::compile::form::FieldError]) -> BTreeMap<String, String> {
    errors
        .iter()
        .map(|e| (e.field.clone(), e.message.clone()))
        .collect()
}
