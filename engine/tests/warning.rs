//! Every path of workflows/warning.yaml through the in-memory runtime with
//! a manual clock (DOMAIN.md R5–R6).

use chrono::{DateTime, Utc};
use engine::interpreter::{Error, Status};
use engine::testing::TestRuntime;
use engine::Actor;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const H: u64 = 3600;

fn runtime() -> TestRuntime {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let start: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap(); // 10:00 Shanghai
    let mut rt = TestRuntime::new(bundle.workflows.values().cloned(), start);
    rt.start("warning", "w1", input()).unwrap();
    rt
}

fn input() -> Value {
    json!({
        "warning_id": "w1",
        "enterprise_id": "e1",
        "enterprise_name": "成都示例建设有限公司",
        "district": "jinjiang",
        "district_name": "锦江区住建交局",
        "person_id": "510104********1234",
        "person_name": "张三",
        "reason": "核酸阳性",
    })
}

fn enterprise() -> Actor {
    Actor {
        role: "enterprise".into(),
        id: "e1".into(),
        name: None,
    }
}

fn district() -> Actor {
    Actor {
        role: "district".into(),
        id: "jinjiang".into(),
        name: None,
    }
}

fn disposal() -> Value {
    json!({
        "reported_to_community": true,
        "community": "书院街社区",
        "person_situation": "集中隔离",
        "measures": ["办公区域清洁消毒"],
    })
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * H)
}

fn reminders(rt: &TestRuntime) -> usize {
    rt.calls_named("notify_enterprise")
        .iter()
        .filter(|c| c.args["template"] == "warning_reminder")
        .count()
}

#[test]
fn disposed_before_the_second_reminder_sends_one_reminder() {
    let mut rt = runtime();
    assert_eq!(reminders(&rt), 1, "the first push goes out at creation");
    rt.advance(hours(5)).unwrap();
    rt.signal("w1", "dispose", disposal(), enterprise())
        .unwrap();
    rt.advance(hours(7)).unwrap();
    assert_eq!(reminders(&rt), 1);
    assert_eq!(rt.state("w1").state, "under_review");
    assert_eq!(rt.state("w1").vars["disposal"]["community"], "书院街社区");
    assert_eq!(
        rt.state("w1").vars["disposal"]["measures"],
        json!(["办公区域清洁消毒"])
    );
    assert!(!rt.state("w1").vars["disposal_overdue"].as_bool().unwrap());
    assert!(rt.calls_named("notify_district").is_empty());
}

#[test]
fn never_disposed_gets_three_reminders_then_overdue_tells_the_district() {
    let mut rt = runtime();
    rt.advance(hours(6) - Duration::from_secs(1)).unwrap();
    assert_eq!(reminders(&rt), 1);
    rt.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(reminders(&rt), 2);
    assert!(!rt.state("w1").vars["disposal_overdue"].as_bool().unwrap());
    rt.advance(hours(2)).unwrap();
    assert_eq!(reminders(&rt), 3);
    let s = rt.state("w1");
    assert!(s.vars["disposal_overdue"].as_bool().unwrap());
    assert_eq!(s.state, "awaiting_disposal", "overdue warnings stay open");
    let district_calls = rt.calls_named("notify_district");
    assert_eq!(district_calls.len(), 1);
    assert_eq!(district_calls[0].args["template"], "disposal_overdue");
    assert_eq!(district_calls[0].args["district"], "jinjiang");
    // Days later, nothing more is sent.
    rt.advance(hours(72)).unwrap();
    assert_eq!(reminders(&rt), 3);
    assert_eq!(rt.calls_named("notify_district").len(), 1);
    // The reminders carry their round number.
    let rounds: Vec<_> = rt
        .calls_named("notify_enterprise")
        .iter()
        .map(|c| c.args["round"].clone())
        .collect();
    assert_eq!(rounds, vec![json!(1), json!(2), json!(3)]);
}

#[test]
fn return_without_comment_is_refused_and_changes_nothing() {
    let mut rt = runtime();
    rt.signal("w1", "dispose", disposal(), enterprise())
        .unwrap();
    let before = rt.state("w1").clone();
    let history = rt.history("w1").len();
    for payload in [json!({}), json!({"comment": "   "})] {
        match rt.signal("w1", "return", payload, district()) {
            Err(engine::testing::Error::Step(Error::InvalidPayload(errors))) => {
                assert_eq!(errors[0].field, "comment");
                assert_eq!(errors[0].message, "请填写处理意见");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(rt.state("w1"), &before);
    assert_eq!(rt.history("w1").len(), history);
}

#[test]
fn return_with_comment_loops_then_close_ends_in_xiaohao_banjie() {
    let mut rt = runtime();
    rt.advance(hours(1)).unwrap();
    rt.signal("w1", "dispose", disposal(), enterprise())
        .unwrap();
    rt.advance(hours(2)).unwrap();
    rt.signal(
        "w1",
        "return",
        json!({"comment": "未报备社区，请补充"}),
        district(),
    )
    .unwrap();
    let s = rt.state("w1");
    assert_eq!(s.state, "rectifying");
    assert_eq!(s.vars["last_comment"], "未报备社区，请补充");
    let returned = rt.calls_named("notify_enterprise");
    assert_eq!(
        returned.last().unwrap().args["template"],
        "warning_returned"
    );
    assert_eq!(
        returned.last().unwrap().args["comment"],
        "未报备社区，请补充"
    );
    // Returned warnings get no further +6h/+8h reminders: those were for the first disposal.
    rt.advance(hours(1)).unwrap();
    rt.signal("w1", "dispose", disposal(), enterprise())
        .unwrap();
    assert_eq!(rt.state("w1").state, "under_review");
    assert_eq!(rt.state("w1").vars["submissions"], 2);
    rt.signal("w1", "approve", Value::Null, district()).unwrap();
    let s = rt.state("w1");
    assert_eq!(s.state, "closed");
    assert_eq!(s.status, Status::Completed);
    assert_eq!(s.status_label.as_deref(), Some("销号办结"));
    assert!(
        rt.pending_timers().is_empty(),
        "no timer outlives the workflow"
    );
    assert_eq!(reminders(&rt), 1);
}

#[test]
fn review_overdue_escalates_to_the_city() {
    let mut rt = runtime();
    rt.advance(hours(3)).unwrap();
    rt.signal("w1", "dispose", disposal(), enterprise())
        .unwrap();
    rt.advance(hours(12) - Duration::from_secs(1)).unwrap();
    assert!(rt.calls_named("notify_city").is_empty());
    rt.advance(Duration::from_secs(1)).unwrap();
    let city = rt.calls_named("notify_city");
    assert_eq!(city.len(), 1);
    assert_eq!(city[0].args["target"], "city");
    assert!(
        city[0].args["text"]
            .as_str()
            .unwrap()
            .contains("锦江区住建交局"),
        "{}",
        city[0].args["text"]
    );
    assert!(rt.state("w1").vars["review_overdue"].as_bool().unwrap());
    assert_eq!(
        rt.state("w1").state,
        "under_review",
        "still awaiting the review"
    );
    // The district can still close it afterwards.
    rt.signal("w1", "approve", Value::Null, district()).unwrap();
    assert_eq!(rt.state("w1").status_label.as_deref(), Some("销号办结"));
}

#[test]
fn signals_are_refused_in_the_wrong_state_or_from_the_wrong_role() {
    let mut rt = runtime();
    let err = rt
        .signal("w1", "approve", Value::Null, district())
        .unwrap_err();
    assert!(
        matches!(err, engine::testing::Error::Step(Error::NotAccepted { .. })),
        "{err:?}"
    );
    let err = rt
        .signal("w1", "dispose", disposal(), district())
        .unwrap_err();
    assert!(
        matches!(
            err,
            engine::testing::Error::Step(Error::ActorNotAllowed { .. })
        ),
        "{err:?}"
    );
    let err = rt
        .signal("w1", "dispose", json!({"community": "x"}), enterprise())
        .unwrap_err();
    let engine::testing::Error::Step(Error::InvalidPayload(fields)) = err else {
        panic!()
    };
    let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(names, ["reported_to_community", "person_situation"]);
    // Another enterprise or district cannot act on this warning, even with the right role.
    let other = Actor {
        role: "enterprise".into(),
        id: "e2".into(),
        name: None,
    };
    let err = rt.signal("w1", "dispose", disposal(), other).unwrap_err();
    let engine::testing::Error::Step(Error::InvalidPayload(e)) = err else {
        panic!()
    };
    assert_eq!(e[0].message, "只能处置本企业的预警");
    rt.signal("w1", "dispose", disposal(), enterprise())
        .unwrap();
    let other = Actor {
        role: "district".into(),
        id: "qingyang".into(),
        name: None,
    };
    let err = rt.signal("w1", "approve", Value::Null, other).unwrap_err();
    let engine::testing::Error::Step(Error::InvalidPayload(e)) = err else {
        panic!()
    };
    assert_eq!(e[0].message, "只能审核本辖区的预警");
    assert_eq!(rt.state("w1").state, "under_review");
    assert_eq!(
        rt.history("w1").len(),
        3,
        "start, the reminder's completion, the one accepted signal (the projection is the runtime's, no step)"
    );
}

#[test]
fn the_history_replays_to_the_same_state() {
    let mut rt = runtime();
    rt.advance(hours(7)).unwrap();
    rt.signal("w1", "dispose", disposal(), enterprise())
        .unwrap();
    rt.signal("w1", "return", json!({"comment": "补充材料"}), district())
        .unwrap();
    rt.advance(hours(9)).unwrap();
    let program = rt.instances["w1"].program.clone();
    let replayed = engine::interpreter::replay(&program, rt.history("w1"))
        .unwrap()
        .unwrap();
    assert_eq!(&replayed, rt.state("w1"));
}
