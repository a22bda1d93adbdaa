//! Fakes the integration tests of the engine and of its Temporal backend
//! share.

use serde_json::{json, Value};

/// The comparison activities as `workflows/comparison.yaml` calls them,
/// answered from a fixture `{run_id, as_of, new_warnings: [...],
/// per_district, summary}`: `run_comparison` returns the run without the
/// list (its number in `summary.new_warnings`), `warnings_to_open` pages
/// through the list after `args.after`, `args.limit` at a time. None for
/// other activities.
pub fn comparison_answer(fixture: &Value, name: &str, args: &Value) -> Option<Value> {
    let list = fixture["new_warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match name {
        "run_comparison" => {
            let mut run = fixture.clone();
            run.as_object_mut()?.remove("new_warnings");
            run["summary"]["new_warnings"] = list.len().into();
            Some(run)
        }
        "warnings_to_open" => {
            let after = args["after"].as_str().unwrap_or_default();
            let limit = args["limit"].as_u64().unwrap_or(1) as usize;
            let items: Vec<_> = list
                .into_iter()
                .filter(|w| w["warning_id"].as_str().unwrap_or_default() > after)
                .take(limit)
                .collect();
            let last = items.last().map(|w| w["warning_id"].clone());
            Some(json!({ "items": items, "last": last }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_pages_through_its_fixture() {
        let fixture = json!({
            "run_id": "r1",
            "new_warnings": [{"warning_id": "w1"}, {"warning_id": "w2"}, {"warning_id": "w3"}],
            "summary": {},
        });
        let run = comparison_answer(&fixture, "run_comparison", &json!({})).unwrap();
        assert_eq!(run["summary"]["new_warnings"], 3);
        assert!(run.get("new_warnings").is_none());
        let page = |after: &str| {
            comparison_answer(
                &fixture,
                "warnings_to_open",
                &json!({"after": after, "limit": 2}),
            )
            .unwrap()
        };
        assert_eq!(page("")["last"], "w2");
        assert_eq!(page("w2")["items"], json!([{"warning_id": "w3"}]));
        assert_eq!(page("w3")["last"], Value::Null);
        assert_eq!(comparison_answer(&fixture, "notify", &json!({})), None);
    }
}
