//! One contract suite, run against every store: SQLite always, PostgreSQL
//! when `DATABASE_URL_PG` is set (scripts/test starts one on loopback).

use chrono::{DateTime, Duration, Utc};
use engine::store::*;

fn t(s: i64) -> DateTime<Utc> {
    from_millis("test", 1_780_000_000_000 + s * 1000).unwrap()
}

fn instance(id: &str, revision: i64) -> InstanceRow {
    InstanceRow {
        id: id.into(),
        kind: "warning".into(),
        definition_hash: "h1".into(),
        definition_version: 1,
        state: "awaiting".into(),
        status: "running".into(),
        status_label: None,
        search: [
            ("enterprise_id", "e1"),
            ("district", "jinjiang"),
            ("person", "p1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        parent: None,
        snapshot: "{}".into(),
        revision,
        history_len: revision,
        history_hash: None,
        created_at: t(0),
        updated_at: t(revision),
        closed_at: None,
    }
}

fn history(id: &str, seq: i64) -> HistoryRow {
    HistoryRow {
        instance_id: id.into(),
        seq,
        at: t(seq),
        kind: "signal".into(),
        payload: format!("{{\"n\":{seq}}}"),
        prev_hash: None,
        hash: None,
    }
}

fn timer(id: &str, timer_id: &str, due: i64) -> TimerRow {
    TimerRow {
        due_at: t(due),
        instance_id: id.into(),
        timer_id: timer_id.into(),
        name: "remind".into(),
    }
}

fn task(id: &str, instance: &str) -> TaskRow {
    TaskRow {
        id: id.into(),
        instance_id: instance.into(),
        activity_id: "a1".into(),
        name: "notify".into(),
        args: "{}".into(),
        retry: "{}".into(),
        attempt: 0,
        max_attempts: 3,
        status: TaskStatus::Pending,
        next_run_at: t(0),
        lease_until: None,
        last_error: None,
        result: None,
        created_at: t(0),
        updated_at: t(0),
    }
}

async fn publish(s: &impl Store) {
    let d = DefinitionRow {
        hash: "h1".into(),
        kind: "warning".into(),
        version: 1,
        source: "{}".into(),
        published_at: t(0),
    };
    assert!(s.publish_definition(&d).await.unwrap());
    assert!(
        !s.publish_definition(&d).await.unwrap(),
        "publishing the same hash twice is a no-op"
    );
}

fn start(id: &str) -> StepCommit {
    StepCommit {
        instance: Some(instance(id, 1)),
        history: vec![history(id, 0)],
        timers_insert: vec![timer(id, "t1", 10)],
        tasks_insert: vec![task(&format!("{id}/a1"), id)],
        ..Default::default()
    }
}

async fn commit_is_atomic_and_checks_revisions(s: SqlStore) {
    publish(&s).await;
    s.commit(&[start("i1")]).await.unwrap();
    let row = s.instance("i1").await.unwrap().unwrap();
    assert_eq!(row, instance("i1", 1));
    // A second insert of the same id fails and writes nothing.
    assert!(matches!(
        s.commit(&[start("i1")]).await,
        Err(Error::Duplicate(_))
    ));
    // A stale revision fails the whole batch: nothing of the good commit lands either.
    let good = StepCommit {
        instance: Some(instance("i2", 1)),
        history: vec![history("i2", 0)],
        timers_insert: vec![timer("i2", "t1", 5)],
        ..Default::default()
    };
    let stale = StepCommit {
        instance: Some(instance("i1", 3)),
        expected_revision: Some(2),
        history: vec![history("i1", 1)],
        timers_insert: vec![timer("i1", "t9", 1)],
        tasks_insert: vec![task("i1/a9", "i1")],
        ..Default::default()
    };
    match s.commit(&[good, stale]).await {
        Err(Error::Conflict {
            expected: 2,
            found: 1,
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(s.instance("i2").await.unwrap().is_none());
    assert_eq!(s.history("i1").await.unwrap().len(), 1);
    assert_eq!(s.count_timers().await.unwrap(), 1);
    assert!(s.task("i1/a9").await.unwrap().is_none());
    // The right revision applies.
    let next = StepCommit {
        instance: Some(InstanceRow {
            state: "review".into(),
            ..instance("i1", 2)
        }),
        expected_revision: Some(1),
        history: vec![history("i1", 1), history("i1", 2)],
        timers_delete: vec!["t1".into()],
        ..Default::default()
    };
    s.commit(&[next]).await.unwrap();
    let row = s.instance("i1").await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.revision), ("review", 2));
    let h = s.history("i1").await.unwrap();
    assert_eq!(h.iter().map(|h| h.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(h[2].payload, "{\"n\":2}");
    assert_eq!(s.count_timers().await.unwrap(), 0);
}

async fn insert_if_absent_is_idempotent(s: SqlStore) {
    publish(&s).await;
    let mut c = start("child");
    c.insert_if_absent = true;
    c.outbox_delivered = vec![];
    assert_eq!(s.commit(std::slice::from_ref(&c)).await.unwrap(), [true]);
    c.schedule_fired = Some(("comparison".into(), t(100)));
    assert_eq!(s.commit(&[c]).await.unwrap(), [false]);
    assert_eq!(
        s.history("child").await.unwrap().len(),
        1,
        "the second start wrote no history"
    );
    assert_eq!(s.count_timers().await.unwrap(), 1);
    assert_eq!(
        s.schedule_last_fired("comparison").await.unwrap(),
        Some(t(100)),
        "bookkeeping still applies"
    );
}

async fn timers_come_due_in_order(s: SqlStore) {
    publish(&s).await;
    let mut c = start("i1");
    c.timers_insert = vec![
        timer("i1", "t3", 30),
        timer("i1", "t1", 10),
        timer("i1", "t2", 20),
    ];
    s.commit(&[c]).await.unwrap();
    assert!(s.due_timers(t(9), 10).await.unwrap().is_empty());
    let due = s.due_timers(t(25), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|x| x.timer_id.as_str()).collect::<Vec<_>>(),
        ["t1", "t2"]
    );
    assert_eq!(
        s.due_timers(t(99), 1).await.unwrap().len(),
        1,
        "limit holds"
    );
    assert_eq!(s.next_timer().await.unwrap(), Some(t(10)));
    let pending = s.pending_timers(Some("i1"), Page::default()).await.unwrap();
    assert_eq!(pending.len(), 3);
}

async fn tasks_are_claimed_leased_and_retried_with_the_same_key(s: SqlStore) {
    publish(&s).await;
    s.commit(&[start("i1")]).await.unwrap();
    let claimed = s.claim_tasks(t(1), 10, t(31), "w").await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (
            claimed[0].id.as_str(),
            claimed[0].attempt,
            claimed[0].status
        ),
        ("i1/a1", 1, TaskStatus::Running)
    );
    assert!(
        s.claim_tasks(t(2), 10, t(32), "w")
            .await
            .unwrap()
            .is_empty(),
        "leased tasks are not claimed twice"
    );
    // The worker died: after the lease, the same task (same key) is claimed again.
    let again = s.claim_tasks(t(31), 10, t(61), "w").await.unwrap();
    assert_eq!((again[0].id.as_str(), again[0].attempt), ("i1/a1", 2));
    // A worker of another name starting takes nothing back; the same worker
    // starting again takes back its lease at once, not at t(61).
    assert_eq!(s.release_leases("other", t(32)).await.unwrap(), 0);
    assert!(s
        .claim_tasks(t(32), 10, t(62), "w")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.release_leases("w", t(32)).await.unwrap(), 1);
    assert_eq!(s.next_task().await.unwrap(), Some(t(32)));
    let retaken = s.claim_tasks(t(32), 10, t(62), "w").await.unwrap();
    assert_eq!((retaken[0].id.as_str(), retaken[0].attempt), ("i1/a1", 3));
    s.retry_task("i1/a1", "HTTP 503", t(40), t(32))
        .await
        .unwrap();
    assert!(
        s.claim_tasks(t(39), 10, t(70), "w")
            .await
            .unwrap()
            .is_empty(),
        "backoff holds"
    );
    assert_eq!(s.next_task().await.unwrap(), Some(t(40)));
    let third = s.claim_tasks(t(40), 10, t(70), "w").await.unwrap();
    assert_eq!(
        (third[0].attempt, third[0].last_error.as_deref()),
        (4, Some("HTTP 503"))
    );
    // The final failure is recorded with the step that reports it.
    let done = StepCommit {
        instance: Some(instance("i1", 2)),
        expected_revision: Some(1),
        task_done: Some(TaskDone {
            id: "i1/a1".into(),
            status: TaskStatus::Failed,
            result: None,
            error: Some("gave up".into()),
            next_run_at: None,
        }),
        ..Default::default()
    };
    s.commit(&[done]).await.unwrap();
    let failed = s.failed_tasks(Page::default()).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].status, failed[0].last_error.as_deref()),
        (TaskStatus::Failed, Some("gave up"))
    );
    assert!(s
        .claim_tasks(t(1000), 10, t(2000), "w")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.next_task().await.unwrap(), None);
}

async fn outbox_and_signals(s: SqlStore) {
    publish(&s).await;
    let mut c = start("i1");
    let row = OutboxRow {
        id: "i1/c1".into(),
        instance_id: "i1".into(),
        kind: "start_child".into(),
        payload: "{}".into(),
        created_at: t(0),
        delivered_at: None,
    };
    c.outbox_insert = vec![row.clone(), row.clone()];
    s.commit(&[c]).await.unwrap();
    assert_eq!(
        s.pending_outbox(10).await.unwrap(),
        vec![row],
        "an outbox id is kept once"
    );
    let delivered = StepCommit {
        outbox_delivered: vec!["i1/c1".into()],
        ..Default::default()
    };
    s.commit(&[delivered]).await.unwrap();
    assert!(s.pending_outbox(10).await.unwrap().is_empty());

    let sig = |n: &str| SignalRow {
        id: 0,
        instance_id: "i1".into(),
        name: n.into(),
        payload: "{}".into(),
        actor: "{}".into(),
        received_at: t(1),
    };
    let a = s.enqueue_signal(&sig("a")).await.unwrap();
    s.enqueue_signal(&sig("b")).await.unwrap();
    let pending = s.pending_signals(10).await.unwrap();
    assert_eq!(
        pending.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    s.commit(&[StepCommit {
        signal_consumed: Some(a),
        ..Default::default()
    }])
    .await
    .unwrap();
    assert_eq!(s.pending_signals(10).await.unwrap().len(), 1);
}

async fn definitions_are_versioned(s: SqlStore) {
    publish(&s).await;
    let v2 = DefinitionRow {
        hash: "h2".into(),
        kind: "warning".into(),
        version: 2,
        source: "{\"v\":2}".into(),
        published_at: t(5),
    };
    s.publish_definition(&v2).await.unwrap();
    let all = s.definitions("warning").await.unwrap();
    assert_eq!(all.iter().map(|d| d.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(s.definition("h2").await.unwrap().unwrap(), v2);
    // An instance of version 1 keeps its hash.
    s.commit(&[start("i1")]).await.unwrap();
    assert_eq!(
        s.instance("i1").await.unwrap().unwrap().definition_hash,
        "h1"
    );
}

async fn instances_are_listed_by_filter_with_pages(s: SqlStore) {
    publish(&s).await;
    let mut batch = Vec::new();
    for n in 0..25 {
        let mut i = instance(&format!("w{n:02}"), 1);
        i.created_at = t(n);
        let district = if n % 2 == 0 { "jinjiang" } else { "qingyang" };
        i.search.insert("district".into(), district.into());
        i.state = if n < 5 { "closed" } else { "awaiting" }.into();
        batch.push(StepCommit {
            instance: Some(i),
            ..Default::default()
        });
    }
    s.commit(&batch).await.unwrap();
    let f = InstanceFilter::default().search("district", Some("jinjiang".into()));
    assert_eq!(s.count_instances(&f).await.unwrap(), 13);
    let p1 = s
        .instances(
            &f,
            Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let p2 = s
        .instances(
            &f,
            Page {
                limit: 10,
                offset: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!((p1.len(), p2.len()), (10, 3));
    assert_eq!(p1[0].id, "w24", "newest first");
    let f = InstanceFilter {
        state: Some("closed".into()),
        created_from: Some(t(2)),
        created_to: Some(t(4)),
        ..Default::default()
    };
    let ids: Vec<_> = s
        .instances(&f, Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["w03", "w02"]);
    let counts = s.count_by_state().await.unwrap();
    assert_eq!(
        counts,
        [
            ("warning".into(), "awaiting".into(), 20),
            ("warning".into(), "closed".into(), 5)
        ]
    );
    let _ = Duration::zero();
}

/// Commit `n` chained steps of instance `id` (one row each, the first two
/// in one batch), after `legacy` rows written as before migration 0003.
async fn chained(s: &SqlStore, id: &str, legacy: i64, n: i64) {
    let mut rows: Vec<HistoryRow> = (0..legacy).map(|seq| history(id, seq)).collect();
    let mut head: Option<String> = None;
    for seq in legacy..legacy + n {
        let h = HistoryRow::chained(
            id,
            seq,
            t(seq),
            "signal",
            format!("{{\"n\":{seq}}}"),
            head.as_deref().unwrap_or(GENESIS_HASH),
        );
        head = h.hash.clone();
        rows.push(h);
    }
    // The legacy rows (or the first row) in the first step, then a row a
    // step; the first two steps in one batch, chained in order.
    let first = legacy.max(1) as usize;
    let mut groups = vec![rows[..first].to_vec()];
    groups.extend(rows[first..].iter().map(|r| vec![r.clone()]));
    let mut commits: Vec<StepCommit> = groups
        .into_iter()
        .enumerate()
        .map(|(k, history)| {
            let revision = k as i64 + 1;
            let last = history.last().unwrap();
            StepCommit {
                instance: Some(InstanceRow {
                    history_len: last.seq + 1,
                    history_hash: last.hash.clone(),
                    ..instance(id, revision)
                }),
                expected_revision: (revision > 1).then_some(revision - 1),
                history,
                ..Default::default()
            }
        })
        .collect();
    let rest = commits.split_off(commits.len().min(2));
    s.commit(&commits).await.unwrap();
    for c in rest {
        s.commit(&[c]).await.unwrap();
    }
}

async fn tamper(s: &SqlStore, sql: &str) {
    sqlx::query(sql).execute(s.pool()).await.unwrap();
}

async fn history_chain_shows_altered_removed_and_reordered_rows(s: SqlStore) {
    publish(&s).await;
    for id in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        chained(&s, id, 0, 5).await;
    }
    let ok = s.verify_history("a").await.unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!((ok.rows, ok.unchained), (5, 0));
    let h = s.history("a").await.unwrap();
    assert_eq!(h[0].prev_hash.as_deref(), Some(GENESIS_HASH));
    assert_eq!(h[3].prev_hash, h[2].hash);
    assert_eq!(
        s.instance("a").await.unwrap().unwrap().history_hash,
        h[4].hash
    );

    let broken = |c: ChainCheck| c.broken.expect("broken");
    // A payload edited in place.
    tamper(
        &s,
        "UPDATE history SET payload = '{\"n\":99}' WHERE instance_id = 'a' AND seq = 2",
    )
    .await;
    let b = broken(s.verify_history("a").await.unwrap());
    assert_eq!(b.seq, 2);
    assert!(
        matches!(b.problem, ChainProblem::HashMismatch { .. }),
        "{b}"
    );
    assert!(b.to_string().starts_with("seq 2: row altered"), "{b}");
    // A row deleted in the middle, at the end, at the start.
    tamper(
        &s,
        "DELETE FROM history WHERE instance_id = 'b' AND seq = 1",
    )
    .await;
    let b = broken(s.verify_history("b").await.unwrap());
    assert_eq!((b.seq, b.problem), (1, ChainProblem::Gap { next: 2 }));
    tamper(
        &s,
        "DELETE FROM history WHERE instance_id = 'c' AND seq = 4",
    )
    .await;
    let b = broken(s.verify_history("c").await.unwrap());
    assert_eq!(
        (b.seq, b.problem),
        (4, ChainProblem::Truncated { history_len: 5 })
    );
    tamper(
        &s,
        "DELETE FROM history WHERE instance_id = 'd' AND seq = 0",
    )
    .await;
    assert_eq!(broken(s.verify_history("d").await.unwrap()).seq, 0);
    // Rows 1 and 2 swapped (seq renumbered): the link shows it.
    tamper(
        &s,
        "UPDATE history SET seq = -1 WHERE instance_id = 'e' AND seq = 1",
    )
    .await;
    tamper(
        &s,
        "UPDATE history SET seq = 1 WHERE instance_id = 'e' AND seq = 2",
    )
    .await;
    tamper(
        &s,
        "UPDATE history SET seq = 2 WHERE instance_id = 'e' AND seq = -1",
    )
    .await;
    let b = broken(s.verify_history("e").await.unwrap());
    assert_eq!(b.seq, 1);
    assert!(
        matches!(b.problem, ChainProblem::PrevHashMismatch { .. }),
        "{b}"
    );
    // A hash removed to pass a row off as written before the chain.
    tamper(
        &s,
        "UPDATE history SET hash = NULL, prev_hash = NULL WHERE instance_id = 'f' AND seq = 3",
    )
    .await;
    let b = broken(s.verify_history("f").await.unwrap());
    assert_eq!((b.seq, b.problem), (3, ChainProblem::MissingHash));
    // The last row replaced with a consistent hash: the instance's head disagrees.
    let h = s.history("g").await.unwrap();
    let forged = history_hash(
        "g",
        4,
        millis(t(4)),
        "signal",
        "{}",
        h[3].hash.as_deref().unwrap(),
    );
    tamper(&s, &format!("UPDATE history SET payload = '{{}}', hash = '{forged}' WHERE instance_id = 'g' AND seq = 4")).await;
    let b = broken(s.verify_history("g").await.unwrap());
    assert_eq!(b.seq, 4);
    assert!(
        matches!(b.problem, ChainProblem::HeadMismatch { .. }),
        "{b}"
    );
    // A row added beyond the end, chained to the last one with a correct
    // hash, the instance row left alone: reported as extra, not as a head mismatch.
    let h = s.history("h").await.unwrap();
    let beyond = HistoryRow::chained(
        "h",
        5,
        t(5),
        "signal",
        "{}".into(),
        h[4].hash.as_deref().unwrap(),
    );
    tamper(
        &s,
        &format!(
            "INSERT INTO history (instance_id, seq, at, kind, payload, prev_hash, hash) \
         VALUES ('h', 5, {}, 'signal', '{{}}', '{}', '{}')",
            millis(beyond.at),
            beyond.prev_hash.unwrap(),
            beyond.hash.unwrap()
        ),
    )
    .await;
    let c = s.verify_history("h").await.unwrap();
    assert_eq!(c.rows, 6);
    let b = broken(c);
    assert_eq!(
        (b.seq, b.problem),
        (5, ChainProblem::Extra { history_len: 5 })
    );

    assert!(matches!(
        s.verify_history("nobody").await,
        Err(Error::NotFound(_))
    ));
    // Every instance, in pages of three by id.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.verify_histories(after.as_deref(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|c| c.instance_id.clone());
        seen.extend(page.into_iter().map(|c| (c.is_ok(), c.instance_id)));
    }
    let expected: Vec<(bool, String)> = ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .map(|id| (false, id.to_string()))
        .collect();
    assert_eq!(seen, expected);
}

async fn rows_written_before_the_chain_are_counted_not_checked(s: SqlStore) {
    publish(&s).await;
    // Two rows from before migration 0003, then three chained ones.
    chained(&s, "old", 2, 3).await;
    let c = s.verify_history("old").await.unwrap();
    assert!(c.is_ok(), "{c:?}");
    assert_eq!((c.rows, c.unchained), (5, 2));
    // An instance not stepped since the migration: nothing to check, not broken.
    s.commit(&[start("untouched")]).await.unwrap();
    let c = s.verify_history("untouched").await.unwrap();
    assert!(c.is_ok(), "{c:?}");
    assert_eq!((c.rows, c.unchained), (1, 1));
    // The first chained row must start from the genesis: a legacy row
    // cannot hide a removed chained one.
    tamper(
        &s,
        "UPDATE history SET hash = NULL, prev_hash = NULL WHERE instance_id = 'old' AND seq = 2",
    )
    .await;
    let b = s
        .verify_history("old")
        .await
        .unwrap()
        .broken
        .expect("broken");
    assert_eq!(b.seq, 3);
    assert!(
        matches!(b.problem, ChainProblem::PrevHashMismatch { .. }),
        "{b}"
    );
}

/// The encoding is part of the stored data: changing it would break every
/// existing chain, so it is pinned here.
#[test]
fn the_history_hash_encoding_is_stable() {
    let h = history_hash("w1", 0, 1_780_000_000_000, "started", "{}", GENESIS_HASH);
    assert_eq!(
        h,
        "cf46a9a1c07abe0b2fce6ef1ae3112f082bf16f628292c14541f6d29ab3fd59c"
    );
    // Field boundaries count: moving a byte between fields changes the hash.
    assert_ne!(
        history_hash("w1", 0, 0, "ab", "c", ""),
        history_hash("w1", 0, 0, "a", "bc", "")
    );
}

/// Retention (issue 15): `finished_before` offers and `purge_instances`
/// removes only completed or terminated instances with no child still
/// running, with their history, timers, tasks; a repeat removes nothing.
async fn only_finished_instances_without_unfinished_children_are_purged(s: SqlStore) {
    publish(&s).await;
    let ended = |id: &str, status: &str, parent: Option<&str>| {
        let mut c = start(id);
        let row = c.instance.as_mut().unwrap();
        row.kind = "comparison".into();
        row.status = status.into();
        row.closed_at = (status != "running").then(|| t(5));
        row.parent = parent.map(|p| ParentRef {
            instance_id: p.to_string(),
            call: "c1".into(),
        });
        c
    };
    s.commit(&[
        ended("done", "completed", None),
        ended("stopped", "terminated", None),
        ended("running", "running", None),
        ended("failed", "failed", None),
        // A finished parent whose child still runs, and one whose child ended.
        ended("parent-busy", "completed", None),
        ended("busy-child", "running", Some("parent-busy")),
        ended("parent-idle", "completed", None),
        ended("idle-child", "completed", Some("parent-idle")),
    ])
    .await
    .unwrap();
    let mut offered = s.finished_before("comparison", t(6), 100).await.unwrap();
    offered.sort();
    assert_eq!(offered, ["done", "idle-child", "parent-idle", "stopped"]);
    assert!(s
        .finished_before("comparison", t(5), 100)
        .await
        .unwrap()
        .is_empty());
    let all: Vec<String> = [
        "done",
        "stopped",
        "running",
        "failed",
        "parent-busy",
        "busy-child",
        "parent-idle",
        "idle-child",
        "nonexistent",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let mut purged = s.purge_instances(&all).await.unwrap();
    purged.sort();
    assert_eq!(purged, ["done", "idle-child", "parent-idle", "stopped"]);
    for id in &purged {
        assert!(s.instance(id).await.unwrap().is_none());
        assert!(s.history(id).await.unwrap().is_empty());
        assert!(s.tasks_of(id).await.unwrap().is_empty());
        assert!(s
            .pending_timers(Some(id), Page::default())
            .await
            .unwrap()
            .is_empty());
    }
    for id in ["running", "failed", "parent-busy", "busy-child"] {
        assert!(s.instance(id).await.unwrap().is_some(), "{id} kept");
        assert_eq!(s.history(id).await.unwrap().len(), 1);
    }
    assert!(s.purge_instances(&all).await.unwrap().is_empty());
}

mod support;

/// A stored time out of range is an error naming its table and column
/// (it used to read as 1970); search attributes go with the instance.
async fn a_bad_stored_time_is_an_error_naming_its_column(s: SqlStore) {
    publish(&s).await;
    s.commit(&[start("w1")]).await.unwrap();
    let row = s.instance("w1").await.unwrap().unwrap();
    assert_eq!(
        row.search.get("district").map(String::as_str),
        Some("jinjiang")
    );
    sqlx::query("UPDATE instances SET updated_at = $1 WHERE id = 'w1'")
        .bind(i64::MAX)
        .execute(s.pool())
        .await
        .unwrap();
    let e = s.instance("w1").await.unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt(m) if m.contains("instances.updated_at") && m.contains(&i64::MAX.to_string())),
        "{e}"
    );
    assert!(from_millis("x.y", 0).is_ok());
}

on_every_store!("contract":
    a_bad_stored_time_is_an_error_naming_its_column,
    commit_is_atomic_and_checks_revisions,
    insert_if_absent_is_idempotent,
    timers_come_due_in_order,
    tasks_are_claimed_leased_and_retried_with_the_same_key,
    outbox_and_signals,
    definitions_are_versioned,
    instances_are_listed_by_filter_with_pages,
    history_chain_shows_altered_removed_and_reordered_rows,
    rows_written_before_the_chain_are_counted_not_checked,
    only_finished_instances_without_unfinished_children_are_purged,
);
