//! The Temporal backend end to end on a dev server (`TEMPORAL_ADDRESS`,
//! e.g. from `scripts/temporal.sh start`): a worker in this process on a
//! task queue of its own runs the fixtures in `tests/fixtures/workflows`.
//! Without a server the end-to-end tests say so and pass, unless
//! `EPI_TEMPORAL_TESTS=1` (then a missing server fails them). The dev
//! server cannot skip time: the pipeline's timer is 2 s of real time.

use engine::Actor;
use engine::inspect::Event;
use engine::interpreter::Status;
use engine::runtime::activity::{Activities, ActivityCall, ActivityError, ProjectionCall};
use engine::store::InstanceRow;
use engine_temporal::codec::InstanceView;
use engine_temporal::{Error, Options, TemporalEngine, Worker, WorkerSetup};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn bundle() -> engine::Bundle {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (w, r) = engine::load_dirs(&dir.join("workflows"), &dir.join("rules")).unwrap();
    engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap()
}

/// The dev server's address, or None (skip) when there is none.
fn address() -> Option<String> {
    match std::env::var("TEMPORAL_ADDRESS") {
        Ok(a) if !a.is_empty() => Some(a),
        _ => {
            if std::env::var("EPI_TEMPORAL_TESTS").as_deref() == Ok("1") {
                panic!(
                    "EPI_TEMPORAL_TESTS=1 but TEMPORAL_ADDRESS is not set (scripts/temporal.sh start)"
                );
            }
            eprintln!(
                "skipped: TEMPORAL_ADDRESS is not set (start one with scripts/temporal.sh start)"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{n}")
}

type Calls = Arc<Mutex<Vec<ActivityCall>>>;
type Rows = Arc<Mutex<Vec<InstanceRow>>>;

fn activities(calls: &Calls, rows: &Rows) -> Activities {
    let said = calls.clone();
    let rows = rows.clone();
    Activities::new()
        .register("say", move |c: ActivityCall| {
            let text = c.args["text"].as_str().unwrap_or_default().to_string();
            said.lock().unwrap().push(c);
            async move { Ok(json!(format!("said {text}"))) }
        })
        .register("flaky", {
            let calls = calls.clone();
            move |c: ActivityCall| {
                let first = c.attempt == 1;
                calls.lock().unwrap().push(c);
                async move {
                    if first {
                        Err(ActivityError::Retryable(
                            "首次失败 first attempt fails".into(),
                        ))
                    } else {
                        Ok(json!("ok"))
                    }
                }
            }
        })
        .register("broken", {
            let calls = calls.clone();
            move |c: ActivityCall| {
                calls.lock().unwrap().push(c);
                async { Err(ActivityError::Permanent("无法处理 cannot be done".into())) }
            }
        })
        .projection("seen", move |c: ProjectionCall| {
            rows.lock().unwrap().push(c.instance);
            async { Ok(()) }
        })
}

/// The fixtures' programs and the recording activities.
fn worker_setup(calls: &Calls, rows: &Rows) -> WorkerSetup {
    WorkerSetup {
        programs: bundle().workflows.values().cloned().collect(),
        activities: activities(calls, rows),
    }
}

/// Run `body` beside a worker on a fresh task queue, with the calls its
/// activities received and the rows its projection saw; stop the worker
/// after. Skipped (said on stderr) without a server.
async fn with_worker<F, Fut>(body: F)
where
    F: FnOnce(TemporalEngine, Calls, Rows) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(address) = address() else { return };
    let calls: Calls = Default::default();
    let rows: Rows = Default::default();
    let options = Options {
        address,
        task_queue: unique("smoke"),
        ..Options::default()
    };
    let setup = worker_setup(&calls, &rows);
    let mut worker = Worker::new(&options, setup.clone()).await.unwrap();
    let stop = worker.shutdown_handle();
    let engine = TemporalEngine::connect(options).await.unwrap();
    engine.set_programs(setup.programs);
    let test = async move {
        body(engine, calls, rows).await;
        stop();
    };
    let (r, ()) = futures::future::join(worker.run(), test).await;
    r.unwrap();
}

/// The arguments of instance `id`'s activity calls, in order.
fn args_of(calls: &Calls, id: &str) -> Vec<Value> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.instance_id == id)
        .map(|c| c.args.clone())
        .collect()
}

/// Start `workflow` as `id` (a new id).
async fn start(engine: &TemporalEngine, workflow: &str, id: &str, input: Value) {
    assert!(
        engine.start(workflow, id, input).await.unwrap(),
        "{id} started twice"
    );
}

/// Wait (up to `limit`) until instance `id` satisfies `want`; return it.
async fn reach(
    engine: &TemporalEngine,
    id: &str,
    limit: Duration,
    want: impl Fn(&InstanceView) -> bool,
) -> InstanceView {
    let began = Instant::now();
    loop {
        let view = engine.view(id).await.unwrap();
        if let Some(v) = view.filter(&want) {
            return v;
        }
        assert!(
            began.elapsed() < limit,
            "{id} did not get there within {limit:?}: {:?}",
            engine.view(id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until instance `id` has completed; return it.
async fn completed(engine: &TemporalEngine, id: &str, limit: Duration) -> engine::Instance {
    reach(engine, id, limit, |v| {
        v.instance.status == Status::Completed
    })
    .await
    .instance
}

/// Wait until instance `id` has taken its first step and is in `state`.
async fn in_state(engine: &TemporalEngine, id: &str, state: &str) -> engine::Instance {
    reach(engine, id, Duration::from_secs(30), |v| {
        v.instance.state == state
    })
    .await
    .instance
}

/// Wait until a search of `field` for `value` lists `id` (`listed`) or
/// does not (Temporal's visibility follows a moment later).
async fn searched(engine: &TemporalEngine, (field, value): (&str, &str), id: &str, listed: bool) {
    wait_until("visibility", Duration::from_secs(20), || async move {
        engine
            .search(field, value, 1000)
            .await
            .unwrap()
            .iter()
            .any(|i| i == id)
            == listed
    })
    .await;
}

/// A fixture's workflow compiled from its file as `edit` changes it (a
/// new version), with the fixtures' activity catalogue.
fn edited(file: &str, edit: impl FnOnce(&str) -> String) -> Arc<engine::Program> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workflows");
    let text = edit(&std::fs::read_to_string(dir.join(file)).unwrap());
    let catalog = std::fs::read_to_string(dir.join("activities.yaml")).unwrap();
    let files = [(file, text), ("activities.yaml", catalog)].map(|(p, text)| {
        engine::compile::program::SourceFile {
            path: p.into(),
            text,
        }
    });
    let b = engine::compile_bundle(&files, &[], &engine::Options::default()).unwrap();
    let workflow = file.trim_end_matches(".yaml");
    b.workflows[workflow].clone()
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_runs_to_completion_with_stable_keys() {
    with_worker(|engine, c2, r2| async move {
        let id = unique("pipeline");
        let district = unique("district");
        let input = json!({"name": "张三", "district": district});
        assert!(engine.start("pipeline", &id, input.clone()).await.unwrap());
        assert!(
            !engine.start("pipeline", &id, input).await.unwrap(),
            "an id starts once"
        );
        // Invalid input is refused before anything is sent.
        assert!(matches!(
            engine.start("pipeline", &unique("bad"), json!({})).await,
            Err(Error::Refused(_))
        ));
        let began = Instant::now();
        let s = completed(&engine, &id, Duration::from_secs(60)).await;
        assert!(
            began.elapsed() >= Duration::from_secs(2),
            "the 2 s timer ran"
        );
        assert_eq!(s.state, "done");
        let outcome = engine.result(&id).await.unwrap();
        assert_eq!(
            (outcome.state.as_str(), outcome.status.as_deref()),
            ("done", Some("已完成"))
        );
        assert_eq!(s.status_label.as_deref(), Some("已完成"));
        assert_eq!(s.output, json!({"said": "said first 张三"}));

        // The activities, with the embedded runtime's idempotency keys.
        let calls = c2.lock().unwrap().clone();
        let mine: Vec<_> = calls.iter().filter(|c| c.instance_id == id).collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert_eq!(mine[0].args, json!({"text": "first 张三"}));
        assert_eq!(mine[1].args, json!({"text": "second said first 张三"}));
        for c in &mine {
            assert_eq!(c.idempotency_key, ActivityCall::key(&id, &c.activity_id));
            assert_eq!(c.attempt, 1);
        }
        assert_ne!(mine[0].activity_id, mine[1].activity_id);

        // The projection saw every step, the last one completed.
        let rows: Vec<_> = r2
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.id == id)
            .cloned()
            .collect();
        assert!(rows.len() >= 4, "{rows:?}");
        let last_row = rows.last().unwrap();
        assert_eq!(
            (last_row.status.as_str(), last_row.state.as_str()),
            ("completed", "done")
        );
        assert_eq!(
            last_row.search.get("district").map(String::as_str),
            Some(district.as_str())
        );
        assert_eq!(last_row.kind, "pipeline");
        assert!(rows.windows(2).all(|w| w[0].revision < w[1].revision));

        // The operator's history: timer set and fired, both activities.
        let history = engine.history(&id).await.unwrap();
        let events: Vec<_> = history.iter().map(|e| &e.event).collect();
        assert!(matches!(events[0], Event::Started { .. }), "{events:?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::TimerSet { name, .. } if name == "pause"))
        );
        assert!(events.iter().any(|e| matches!(e, Event::TimerFired { .. })));
        let keys: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::ActivityScheduled {
                    idempotency_key, ..
                } => Some(idempotency_key.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            keys,
            mine.iter()
                .map(|c| c.idempotency_key.clone())
                .collect::<Vec<_>>()
        );
        assert!(matches!(events.last().unwrap(), Event::Completed { .. }));
        assert_eq!(
            engine.inputs(&id).await.unwrap().len(),
            history_inputs(&history)
        );

        // Visibility: the search fields as search attributes.
        wait_until("visibility", Duration::from_secs(20), || {
            let engine = engine.clone();
            let (district, id) = (district.clone(), id.clone());
            async move { engine.search("district", &district, 10).await.unwrap() == vec![id] }
        })
        .await;
        searched(&engine, ("state", "done"), &id, true).await;
    })
    .await;
}

fn history_inputs(h: &[engine::inspect::Entry]) -> usize {
    h.iter()
        .filter(|e| {
            matches!(
                e.event,
                Event::Started { .. }
                    | Event::Signal { .. }
                    | Event::TimerFired { .. }
                    | Event::ActivityCompleted { .. }
                    | Event::ActivityFailed { .. }
                    | Event::ChildCompleted { .. }
            )
        })
        .count()
}

fn actor(role: &str) -> Actor {
    Actor {
        role: role.into(),
        id: format!("{role}-1"),
        name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_signal_changes_nothing() {
    with_worker(|engine, c2, _| async move {
        let id = unique("approval");
        start(&engine, "approval", &id, json!({"district": "d1"})).await;
        let before = in_state(&engine, &id, "waiting").await;

        // Wrong role, missing field: refused, nothing sent.
        let e = engine
            .signal(
                &id,
                "approve",
                json!({"comment": "好"}),
                actor("enterprise"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused(engine::interpreter::Error::ActorNotAllowed { .. })
            ),
            "{e}"
        );
        let e = engine
            .signal(&id, "approve", json!({}), actor("district"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused(engine::interpreter::Error::InvalidPayload(_))
            ),
            "{e}"
        );
        // Sent anyway (no check): the workflow refuses it and changes nothing.
        engine
            .signal_unchecked(
                &id,
                engine_temporal::SignalArgs {
                    name: "approve".into(),
                    payload: json!({"comment": "好"}),
                    actor: actor("enterprise"),
                },
            )
            .await
            .unwrap();
        // A query answers after the signal's workflow task has run.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(engine.state(&id).await.unwrap().unwrap(), before);
        assert_eq!(engine.inputs(&id).await.unwrap().len(), 1, "only the start");

        engine
            .signal(&id, "approve", json!({"comment": "好"}), actor("district"))
            .await
            .unwrap();
        let s = completed(&engine, &id, Duration::from_secs(30)).await;
        assert_eq!(
            (s.state.as_str(), s.status_label.as_deref()),
            ("approved", Some("已同意"))
        );
        // The activity the last step scheduled runs after the end.
        wait_until(
            "the approval's activity",
            Duration::from_secs(30),
            || async { args_of(&c2, &id) == [json!({"text": "approved: 好"})] },
        )
        .await;
        assert_eq!(engine.state(&unique("nobody")).await.unwrap(), None);
        assert!(matches!(
            engine
                .signal(&unique("nobody"), "approve", json!({}), actor("district"))
                .await,
            Err(Error::NotFound(_))
        ));
        // Ended: further signals are refused.
        assert!(
            engine
                .signal(
                    &id,
                    "approve",
                    json!({"comment": "again"}),
                    actor("district")
                )
                .await
                .is_err()
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    let options = Options {
        address: "http://127.0.0.1:1".into(),
        ..Options::default()
    };
    let Err(e) = TemporalEngine::connect(options).await else {
        panic!("connected to nothing");
    };
    let text = e.to_string();
    assert!(text.contains("无法连接 Temporal"), "{text}");
    assert!(
        text.contains("cannot reach Temporal at http://127.0.0.1:1"),
        "{text}"
    );
}

#[test]
fn definitions_travel_and_recompile_to_their_hash() {
    let b = bundle();
    for p in b.workflows.values() {
        let def = engine_temporal::Definition::of(p);
        let json = serde_json::to_string(&def).unwrap();
        let back: engine_temporal::Definition = serde_json::from_str(&json).unwrap();
        let again = engine::compile_program(&back.source, &engine::Options::default()).unwrap();
        assert_eq!(again.hash, p.hash, "{}", p.name);
        assert_eq!(again.version, p.version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_install_idempotently_and_launch_the_embedded_ids() {
    with_worker(|engine, _, _| async move {
        let name = unique("nightly");
        let district = unique("sched");
        let spec = engine::compile::schedule::ScheduleSpec {
            name: name.clone(),
            workflow: "pipeline".into(),
            tz: chrono_tz::Asia::Shanghai,
            times: vec!["05:00:00".parse().unwrap(), "10:00:00".parse().unwrap()],
            catch_up: engine::compile::schedule::CatchUp::Once,
            input: json!({"name": "定时", "district": district}),
        };
        // Installing again updates the schedule in place.
        assert_eq!(
            engine
                .install_schedules(std::slice::from_ref(&spec))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            engine
                .install_schedules(std::slice::from_ref(&spec))
                .await
                .unwrap(),
            1
        );
        let h = engine
            .client()
            .get_schedule_handle(engine_temporal::schedule_id(&name));
        // Triggered by hand (not at a slot time): the launcher starts
        // `{schedule}@{time}` on the latest definition.
        h.trigger(
            temporalio_client::schedules::ScheduleOverlapPolicy::AllowAll,
            Default::default(),
        )
        .await
        .unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Default::default();
        wait_until("the scheduled instance", Duration::from_secs(30), || {
            let engine = engine.clone();
            let district = district.clone();
            let seen = seen.clone();
            async move {
                let ids = engine.search("district", &district, 10).await.unwrap();
                *seen.lock().unwrap() = ids.clone();
                !ids.is_empty()
            }
        })
        .await;
        let found = seen.lock().unwrap().clone();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(&format!("{name}@")), "{found:?}");
        assert!(found[0].ends_with("+08:00"), "{found:?}");
        h.delete(Default::default()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_start_with_their_keys_and_report_back() {
    with_worker(|engine, _, _| async move {
        let tag = unique("p");
        let id = unique("parent");
        start(
            &engine,
            "parent",
            &id,
            json!({"tag": tag, "items": ["x", "y"]}),
        )
        .await;
        // Each child is the keyed instance, waiting for its approval.
        for item in ["x", "y"] {
            let child = format!("{tag}-{item}");
            in_state(&engine, &child, "waiting").await;
            engine
                .signal(
                    &child,
                    "approve",
                    json!({"comment": item}),
                    actor("district"),
                )
                .await
                .unwrap();
        }
        let s = completed(&engine, &id, Duration::from_secs(30)).await;
        assert_eq!(s.output, json!({"done": 2}));
        let history = engine.history(&id).await.unwrap();
        let started: Vec<_> = history
            .iter()
            .filter_map(|e| match &e.event {
                Event::ChildStarted { key, .. } => key.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(started, vec![format!("{tag}-x"), format!("{tag}-y")]);
        let completed = history
            .iter()
            .filter(|e| matches!(e.event, Event::ChildCompleted { .. }))
            .count();
        assert_eq!(completed, 2);
    })
    .await;
}

/// A worker stopped while an instance waits on its timer; another worker
/// (no cached state: it replays the history) carries it to the end, and no
/// activity runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_takes_over_mid_flight() {
    let Some(address) = address() else { return };
    let calls: Calls = Default::default();
    let rows: Rows = Default::default();
    let options = Options {
        address,
        task_queue: unique("takeover"),
        ..Options::default()
    };
    let setup = worker_setup(&calls, &rows);
    let engine = TemporalEngine::connect(options.clone()).await.unwrap();
    engine.set_programs(setup.programs.clone());
    let id = unique("takeover");

    let mut first = Worker::new(&options, setup.clone()).await.unwrap();
    let stop = first.shutdown_handle();
    let body = async {
        start(
            &engine,
            "pipeline",
            &id,
            json!({"name": "李四", "district": "d"}),
        )
        .await;
        in_state(&engine, &id, "waiting").await;
        stop();
    };
    let (r, ()) = futures::future::join(first.run(), body).await;
    r.unwrap();
    drop(first);

    let mut second = Worker::new(&options, setup).await.unwrap();
    let stop = second.shutdown_handle();
    let body = async {
        completed(&engine, &id, Duration::from_secs(60)).await;
        stop();
    };
    let (r, ()) = futures::future::join(second.run(), body).await;
    r.unwrap();
    let keys: Vec<_> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.instance_id == id)
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_the_key_and_permanent_failures_are_not_retried() {
    with_worker(|engine, c2, _| async move {
        let id = unique("retrying");
        start(&engine, "retrying", &id, json!({"tag": "t"})).await;
        let s = completed(&engine, &id, Duration::from_secs(60)).await;
        assert_eq!(s.output, json!({"failure": "无法处理 cannot be done"}));
        let mine: Vec<_> = c2
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.instance_id == id)
            .map(|c| (c.name.clone(), c.attempt, c.idempotency_key.clone()))
            .collect();
        assert_eq!(mine.len(), 3, "{mine:?}");
        let (flaky, broken) = (&mine[..2], &mine[2]);
        assert_eq!((flaky[0].0.as_str(), flaky[0].1), ("flaky", 1));
        assert_eq!((flaky[1].0.as_str(), flaky[1].1), ("flaky", 2));
        assert_eq!(flaky[0].2, flaky[1].2, "a retry reuses the key");
        assert_eq!((broken.0.as_str(), broken.1), ("broken", 1));
        assert_ne!(broken.2, flaky[0].2);
    })
    .await;
}

/// R8.3: an instance keeps the version it started on; new instances take
/// the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_instances_keep_their_version() {
    with_worker(|engine, c2, _| async move {
        let old = unique("v1");
        start(&engine, "approval", &old, json!({"district": "d"})).await;
        // Version 2 of `approval` says something else.
        let p2 = edited("approval.yaml", |t| {
            t.replace("version: 1", "version: 2").replace(
                "approved: ${signal.comment}",
                "v2 approved: ${signal.comment}",
            )
        });
        assert_eq!(p2.version, 2);
        engine.set_programs([p2.clone()]);
        let new = unique("v2");
        start(&engine, "approval", &new, json!({"district": "d"})).await;
        for id in [&old, &new] {
            in_state(&engine, id, "waiting").await;
            engine
                .signal(id, "approve", json!({"comment": "好"}), actor("district"))
                .await
                .unwrap();
        }
        for id in [&old, &new] {
            completed(&engine, id, Duration::from_secs(30)).await;
        }
        assert_eq!(engine.state(&old).await.unwrap().unwrap().version, 1);
        assert_eq!(engine.state(&new).await.unwrap().unwrap().version, 2);
        let text = |id: &str| {
            c2.lock()
                .unwrap()
                .iter()
                .find(|c| c.instance_id == id)
                .map(|c| c.args["text"].clone())
        };
        assert_eq!(text(&old), Some(json!("approved: 好")));
        assert_eq!(text(&new), Some(json!("v2 approved: 好")));
    })
    .await;
}

/// A rule that fails in a timer handler does not fail the Temporal
/// workflow: as on the embedded runtime the instance is `failed` (in the
/// state query and `EpiStatus`), the history shows `step_failed` with the
/// input and the error, and an operator's retry moves it to the latest
/// published version (refused while that lacks its state) and applies the
/// timer again, where the fixed rule lets it go on to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_waits_for_a_retry_on_the_fixed_version() {
    with_worker(|engine, c2, _| async move {
        let id = unique("fragile");
        let by = |reason: &str| engine::runtime::Repair {
            operator: "运维甲".into(),
            reason: reason.into(),
        };
        start(&engine, "fragile", &id, json!({})).await;
        let failed = reach(&engine, &id, Duration::from_secs(30), |v| {
            v.status == "failed"
        })
        .await;
        assert_eq!(failed.instance.state, "waiting");
        let step = failed.failed.expect("the failed step");
        assert!(
            matches!(&step.input, engine::Input::TimerFired { .. }),
            "{step:?}"
        );
        let history = engine.history(&id).await.unwrap();
        assert!(
            history
                .iter()
                .any(|e| matches!(&e.event, Event::StepFailed { error } if *error == step.error)),
            "{history:?}"
        );
        searched(&engine, ("status", "failed"), &id, true).await;

        // Refused as the embedded runtime refuses: no reason; a latest
        // version without the instance's state.
        let e = engine.retry_failed_step(&id, &by(" ")).await.unwrap_err();
        assert_eq!(e.to_string(), "运维操作须注明操作人和原因");
        engine.set_programs([edited("fragile.yaml", |t| {
            t.replace("version: 1", "version: 3")
                .replace("waiting", "pausing")
        })]);
        let e = engine
            .retry_failed_step(&id, &by("试试"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "最新版本（3）没有实例所处的状态 waiting，不能在其上重试"
        );

        // The unfixed version fails the same way again.
        engine.set_programs(bundle().workflows.get("fragile").cloned());
        engine
            .retry_failed_step(&id, &by("再试一次"))
            .await
            .unwrap();
        wait_until("the second failure", Duration::from_secs(30), || async {
            let h = engine.history(&id).await.unwrap();
            h.iter()
                .filter(|e| matches!(e.event, Event::StepFailed { .. }))
                .count()
                == 2
        })
        .await;
        assert_eq!(engine.view(&id).await.unwrap().unwrap().status, "failed");

        // Fixed and published: the retry moves it to version 2 and it goes on.
        engine.set_programs([edited("fragile.yaml", |t| {
            t.replace("version: 1", "version: 2")
                .replace("${10 / vars.zero}", "${10}")
        })]);
        engine
            .retry_failed_step(&id, &by("规则已修正（除零）"))
            .await
            .unwrap();
        let s = completed(&engine, &id, Duration::from_secs(30)).await;
        assert_eq!((s.state.as_str(), s.version), ("done", 2));
        let view = engine.view(&id).await.unwrap().unwrap();
        assert_eq!((view.status.as_str(), view.failed), ("completed", None));
        assert_eq!(args_of(&c2, &id), [json!({"text": "x = 10"})]);
        let history = engine.history(&id).await.unwrap();
        let retries: Vec<_> = history
            .iter()
            .filter_map(|e| match &e.event {
                Event::OperatorAction { action, reason, .. } if action == "retry_step" => {
                    Some(reason.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(retries, ["再试一次", "规则已修正（除零）"]);
        searched(&engine, ("status", "failed"), &id, false).await;
        let e = engine
            .retry_failed_step(&id, &by("又一次"))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("没有失败的步骤（状态：completed）"),
            "{e}"
        );
    })
    .await;
}
