//! Property: any sequence of signals and timer advances, replayed from its
//! history, gives the same state; and the warning's invariants hold.

use chrono::{DateTime, Utc};
use engine::testing::TestRuntime;
use engine::Actor;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn programs() -> Vec<Arc<engine::Program>> {
    static B: OnceLock<Vec<Arc<engine::Program>>> = OnceLock::new();
    B.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
        let b = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
        b.workflows.values().cloned().collect()
    })
    .clone()
}

#[derive(Debug, Clone)]
enum Op {
    Dispose { valid: bool },
    Approve,
    Return { comment: Option<String> },
    WrongRole,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<bool>().prop_map(|valid| Op::Dispose { valid }),
        Just(Op::Approve),
        proptest::option::of("[a-z退回整改 ]{0,12}").prop_map(|comment| Op::Return { comment }),
        Just(Op::WrongRole),
        (0u64..(14 * 3600)).prop_map(Op::Advance),
    ]
}

fn actor(role: &str) -> Actor {
    let id = if role == "district" { "d" } else { "e" };
    Actor {
        role: role.into(),
        id: id.into(),
        name: None,
    }
}

fn disposal(valid: bool) -> Value {
    if valid {
        json!({"reported_to_community": true, "community": "社区", "person_situation": "其他"})
    } else {
        json!({"community": ""})
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_history_gives_the_same_state(ops in proptest::collection::vec(op(), 0..40)) {
        let start: DateTime<Utc> = "2026-12-01T21:00:00Z".parse().unwrap();
        let mut rt = TestRuntime::new(programs(), start);
        rt.start("warning", "w", json!({
            "warning_id": "w", "enterprise_id": "e", "enterprise_name": "企业",
            "district": "d", "person_id": "p", "person_name": "某人", "reason": "红码",
        })).unwrap();
        for op in &ops {
            // Refusals are expected for many random signals; they must change nothing.
            let before = rt.state("w").clone();
            let result = match op {
                Op::Dispose { valid } => rt.signal("w", "dispose", disposal(*valid), actor("enterprise")),
                Op::Approve => rt.signal("w", "approve", Value::Null, actor("district")),
                Op::Return { comment } => rt.signal("w", "return", json!({"comment": comment}), actor("district")),
                Op::WrongRole => rt.signal("w", "approve", Value::Null, actor("enterprise")),
                Op::Advance(s) => rt.advance(Duration::from_secs(*s)),
            };
            if result.is_err() {
                prop_assert_eq!(&before, rt.state("w"));
            }
        }
        let program = rt.instances["w"].program.clone();
        let replayed = engine::interpreter::replay(&program, rt.history("w")).unwrap().unwrap();
        prop_assert_eq!(&replayed, rt.state("w"));

        // Invariants of warning.yaml.
        let s = rt.state("w");
        let reminders = rt.calls_named("notify_enterprise").iter().filter(|c| c.args["template"] == "warning_reminder").count();
        prop_assert!((1..=3).contains(&reminders));
        prop_assert_eq!(s.vars["reminders_sent"].as_u64().unwrap() as usize, reminders);
        if s.status == engine::interpreter::Status::Completed {
            prop_assert_eq!(s.state.as_str(), "closed");
            prop_assert!(rt.pending_timers().is_empty());
        }
        // Snapshots survive serialisation unchanged.
        let text = serde_json::to_string(s).unwrap();
        let back: engine::Instance = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, s);
    }
}
