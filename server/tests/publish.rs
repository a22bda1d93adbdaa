//! Publishing, versions, rollback and migration (issue 11, R8.3) through
//! the real system: a changed content under an unchanged version is
//! refused (by `policy publish` and at start-up); a running server picks up
//! a publication another process made on the same database without a
//! restart (new instances on the new hash, running ones keep theirs);
//! rollback publishes an earlier version again; a checked migration moves
//! a running instance (recorded in its history, its next timer runs on the
//! new definition) or is refused naming what the target lacks; the city's
//! page lists, publishes and rolls back.
//!
//! The tests add a small workflow of their own (`probe.yaml`) to a copy of
//! `workflows/`, so they do not depend on how the shipped ones read.

use engine::runtime::{Publication, Repair, STARTUP};
use engine::store::Store;
use serde_json::json;
use server::system::{ClockChoice, Paths, Startup, System};
use std::path::Path;
use std::time::Duration;

#[path = "support/web.rs"]
mod web;
use web::World;

const START: &str = "2026-12-01T09:00:00+08:00";

/// The probe workflow: waits an hour in `state`, then notes `note` and ends.
fn probe(version: u32, note: &str, state: &str) -> String {
    format!(
        r#"workflow: probe
version: {version}
title: 发布测试
variables:
  note: {{ type: string, default: "" }}
initial: {state}
states:
  {state}:
    label: 等待
    timers:
      nudge:
        label: 一小时后
        after: 1h
        do:
          - set: {{ note: "{note}" }}
        goto: done
  done:
    label: 完成
    terminal: true
"#
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// A copy of the repository's definitions and rules with `probe.yaml`.
fn definitions(dir: &Path, probe_text: &str) -> Paths {
    let repo = Paths::repository();
    let paths = Paths {
        workflows: dir.join("workflows"),
        rules: dir.join("rules"),
    };
    copy_dir(&repo.workflows, &paths.workflows);
    copy_dir(&repo.rules, &paths.rules);
    std::fs::write(paths.workflows.join("probe.yaml"), probe_text).unwrap();
    paths
}

fn set_probe(paths: &Paths, text: &str) {
    std::fs::write(paths.workflows.join("probe.yaml"), text).unwrap();
}

fn by(reason: &str) -> Publication {
    Publication {
        by: "政策科张三".into(),
        reason: reason.into(),
    }
}

fn repair(reason: &str) -> Repair {
    Repair {
        operator: "政策科张三".into(),
        reason: reason.into(),
    }
}

/// The system on `url` with the probe v1 in a copy of the definitions.
struct Setup {
    w: World,
    url: String,
    paths: Paths,
    _dir: tempfile::TempDir,
}

async fn setup(url: String) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let paths = definitions(dir.path(), &probe(1, "v1", "waiting"));
    let w = World::open_with(&url, START, |_| {}, paths.clone()).await;
    Setup {
        w,
        url,
        paths,
        _dir: dir,
    }
}

/// Another process on the same database: a tool that publishes nothing
/// when it opens (what `server policy …` runs).
async fn other_process(s: &Setup) -> System {
    let config = server::config::Config {
        database_url: s.url.clone(),
        ..Default::default()
    };
    System::open_with(
        &config,
        &s.paths,
        ClockChoice::Adjustable(s.w.clock.clone()),
        engine::runtime::Options {
            worker: "cli".into(),
            ..Default::default()
        },
        Startup::Attach,
    )
    .await
    .unwrap()
}

async fn hash_of(w: &World, id: &str) -> (String, i64) {
    let r = w.sys.store.instance(id).await.unwrap().unwrap();
    (r.definition_hash, r.definition_version)
}

async fn note_of(w: &World, id: &str) -> String {
    let r = w.sys.store.instance(id).await.unwrap().unwrap();
    let s = engine::inspect::state_of(&r).unwrap();
    s.vars["note"].as_str().unwrap_or_default().to_string()
}

async fn same_version_changes_are_refused_at_publish_and_start(s: Setup) {
    let w = &s.w;
    // The start published the files, recorded as by 启动.
    let first = w.sys.store.current_publication().await.unwrap().unwrap();
    assert_eq!(
        (first.seq, first.kind.as_str(), first.published_by.as_str()),
        (1, "startup", STARTUP)
    );
    assert!(first.definitions.contains_key("probe"));
    assert!(first.definitions.contains_key("warning"));

    // The same files again: nothing to publish.
    let same = server::system::compile(&s.paths).unwrap();
    let e = w
        .sys
        .runtime
        .publish(&same, &by("再次发布"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("完全相同"), "{e}");

    // A changed content under version 1: refused, naming workflow, version
    // and file; nothing written.
    set_probe(&s.paths, &probe(1, "changed", "waiting"));
    let changed = server::system::compile(&s.paths).unwrap();
    let e = w
        .sys
        .runtime
        .publish(&changed, &by("改了内容未改版本"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("工作流 probe 的版本 1 已发布过不同的内容") && e.contains("probe.yaml"),
        "{e}"
    );
    assert!(e.contains("提高 version"), "{e}");
    assert_eq!(w.sys.store.publication_seq().await.unwrap(), Some(1));
    assert_eq!(w.sys.store.definitions("probe").await.unwrap().len(), 1);

    // A server starting on these files stops with the same refusal.
    let config = server::config::Config {
        database_url: s.url.clone(),
        ..Default::default()
    };
    let e = System::open(
        &config,
        &s.paths,
        ClockChoice::Adjustable(w.clock.clone()),
        Default::default(),
    )
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(
        e.contains("启动时不能发布") && e.contains("工作流 probe 的版本 1"),
        "{e}"
    );

    // Version 2: published, with who and why; the same files again at
    // start publish nothing more.
    set_probe(&s.paths, &probe(2, "changed", "waiting"));
    let v2 = server::system::compile(&s.paths).unwrap();
    let p = w
        .sys
        .runtime
        .publish(&v2, &by("提醒文字调整"))
        .await
        .unwrap();
    assert_eq!(
        (
            p.seq,
            p.kind.as_str(),
            p.published_by.as_str(),
            p.reason.as_str()
        ),
        (2, "publish", "政策科张三", "提醒文字调整")
    );
    assert_eq!(w.sys.runtime.latest_program("probe").unwrap().version, 2);
    let again = System::open(
        &config,
        &s.paths,
        ClockChoice::Adjustable(w.clock.clone()),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(again.store.publication_seq().await.unwrap(), Some(2));
    // A new content numbered below the current version is refused.
    set_probe(&s.paths, &probe(1, "other", "waiting"));
    let low = server::system::compile(&s.paths).unwrap();
    assert!(w.sys.runtime.publish(&low, &by("x")).await.is_err());
}

async fn a_running_server_follows_another_process(s: Setup) {
    let w = &s.w;
    let rt = &w.sys.runtime;
    rt.start("probe", "old", json!({})).await.unwrap();
    w.settle().await;
    let (v1_hash, v) = hash_of(w, "old").await;
    assert_eq!(v, 1);

    // The CLI (another process, its own store handle) publishes v2.
    set_probe(&s.paths, &probe(2, "v2", "waiting"));
    let cli = other_process(&s).await;
    let bundle = server::system::compile(&s.paths).unwrap();
    let p = cli.runtime.publish(&bundle, &by("新版本")).await.unwrap();
    assert_eq!(p.seq, 2);
    let v2_hash = p.definitions["probe"].clone();
    assert_ne!(v1_hash, v2_hash);

    // The server's next round notices it; no restart.
    w.settle().await;
    assert_eq!(rt.latest_program("probe").unwrap().hash, v2_hash);
    rt.start("probe", "new", json!({})).await.unwrap();
    assert_eq!(hash_of(w, "new").await, (v2_hash.clone(), 2));
    assert_eq!(hash_of(w, "old").await, (v1_hash.clone(), 1));
    // Each runs its own version to the end.
    w.clock.advance(Duration::from_secs(3600));
    w.settle().await;
    assert_eq!(note_of(w, "old").await, "v1");
    assert_eq!(note_of(w, "new").await, "v2");

    // The versions list: hashes, authors, counts.
    let versions = rt.versions().await.unwrap();
    let probe: Vec<_> = versions.iter().filter(|v| v.workflow == "probe").collect();
    assert_eq!(probe.len(), 2);
    assert_eq!((probe[0].version, probe[0].current), (2, true));
    assert_eq!(probe[0].publications[0].published_by, "政策科张三");
    assert_eq!((probe[0].open, probe[0].total), (0, 1));
    assert_eq!((probe[1].version, probe[1].current), (1, false));
    assert_eq!(probe[1].publications[0].published_by, STARTUP);
    assert_eq!(probe[1].total, 1);

    // Rollback from the other process: a new publication pointing at v1.
    let r = cli
        .runtime
        .rollback("probe@1", &by("v2 有误"))
        .await
        .unwrap();
    assert_eq!(
        (r.seq, r.kind.as_str(), r.rollback_of),
        (3, "rollback", Some(1))
    );
    assert_eq!(r.definitions["probe"], v1_hash);
    assert_eq!(r.definitions["warning"], p.definitions["warning"]);
    w.settle().await;
    rt.start("probe", "after-rollback", json!({}))
        .await
        .unwrap();
    assert_eq!(hash_of(w, "after-rollback").await.0, v1_hash);
    // Rolling back to the current one is refused; by hash prefix works.
    assert!(rt.rollback("probe@1", &by("x")).await.is_err());
    let r = rt
        .rollback(&v2_hash[..10], &by("修正后恢复"))
        .await
        .unwrap();
    assert_eq!(r.definitions["probe"], v2_hash);
    let listed = rt.versions().await.unwrap();
    let v1 = listed
        .iter()
        .find(|v| v.hash == v1_hash)
        .expect("v1 listed");
    assert_eq!(
        v1.publications
            .iter()
            .map(|p| p.kind.as_str())
            .collect::<Vec<_>>(),
        ["startup", "rollback"]
    );
}

async fn checked_migration_moves_or_names_what_is_missing(s: Setup) {
    let w = &s.w;
    let rt = &w.sys.runtime;
    for id in ["m1", "m2", "stay"] {
        rt.start("probe", id, json!({})).await.unwrap();
    }
    w.settle().await;
    set_probe(&s.paths, &probe(2, "v2", "waiting"));
    let p2 = rt
        .publish(&server::system::compile(&s.paths).unwrap(), &by("修正"))
        .await
        .unwrap();
    let v2 = p2.definitions["probe"].clone();

    // The dry run: all three can move.
    let plan = rt.plan_migration("probe", 1, &v2).await.unwrap();
    assert_eq!(plan.len(), 3);
    assert!(plan.iter().all(|c| c.problems.is_empty()), "{plan:?}");

    // A reason is required.
    assert!(rt.migrate("m1", &v2, &repair(" ")).await.is_err());
    rt.migrate("m1", &v2, &repair("规则修正需作用于进行中的实例"))
        .await
        .unwrap();
    assert_eq!(hash_of(w, "m1").await, (v2.clone(), 2));
    let h = w.sys.store.history("m1").await.unwrap();
    let note = h.last().unwrap();
    assert_eq!(note.kind, "operator_action");
    assert!(
        note.payload.contains("\"action\":\"migrate\""),
        "{}",
        note.payload
    );
    assert!(note.payload.contains("规则修正需作用于进行中的实例"));
    assert!(w.sys.store.verify_history("m1").await.unwrap().is_ok());
    // Migrating again to the same version is refused.
    let e = rt.migrate("m1", &v2, &repair("再迁")).await.unwrap_err();
    assert!(e.to_string().contains("只能迁移到更高的版本"), "{e}");

    // Version 3 renames the state: migration refused, naming it.
    set_probe(&s.paths, &probe(3, "v3", "idle"));
    let p3 = rt
        .publish(&server::system::compile(&s.paths).unwrap(), &by("重构"))
        .await
        .unwrap();
    let v3 = p3.definitions["probe"].clone();
    let e = rt
        .migrate("m2", &v3, &repair("试试"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("目标版本 3 没有实例所处的状态 `waiting`"), "{e}");
    assert!(e.contains("定时器") || e.contains("waiting"), "{e}");
    assert_eq!(hash_of(w, "m2").await.1, 1, "nothing written");
    let plan = rt.plan_migration("probe", 1, &v3).await.unwrap();
    assert_eq!(plan.len(), 2);
    assert!(plan.iter().all(|c| !c.problems.is_empty()));

    // The next timer runs on the version each instance is on now.
    w.clock.advance(Duration::from_secs(3600));
    w.settle().await;
    assert_eq!(note_of(w, "m1").await, "v2");
    assert_eq!(note_of(w, "m2").await, "v1");
    assert_eq!(note_of(w, "stay").await, "v1");
    // The console shows the migration in words.
    let c = w.sys.store.instance("m1").await.unwrap().unwrap();
    assert_eq!(c.status, "completed");
}

async fn city_page_lists_publishes_and_rolls_back(s: Setup) {
    let w = &s.w;
    let mut c = w.logged_in("city", "/policy").await;
    let page = c.get("/policy/versions").await;
    page.assert_ok();
    assert!(
        page.contains("当前版本") && page.contains("启动时发布"),
        "{}",
        page.body
    );
    // A pasted candidate with a changed content under version 1: refused.
    let r = c
        .post(
            "/policy/versions/publish",
            &[
                ("reason", "试改"),
                ("file", "probe.yaml"),
                ("text", &probe(1, "pasted", "waiting")),
            ],
        )
        .await;
    assert!(
        r.contains("未发布") && r.contains("工作流 probe 的版本 1"),
        "{}",
        r.body
    );
    // Version 2: published, new instances use it at once.
    let r = c
        .post(
            "/policy/versions/publish",
            &[
                ("reason", "页面发布"),
                ("file", "probe.yaml"),
                ("text", &probe(2, "pasted", "waiting")),
            ],
        )
        .await;
    assert!(r.contains("已发布（第 2 次发布）"), "{}", r.body);
    assert_eq!(w.sys.runtime.latest_program("probe").unwrap().version, 2);
    let p = w.sys.store.current_publication().await.unwrap().unwrap();
    assert_eq!(
        (p.published_by.as_str(), p.reason.as_str()),
        ("city", "页面发布")
    );
    // A candidate that does not compile: the diagnostics, nothing published.
    let r = c
        .post(
            "/policy/versions/publish",
            &[
                ("reason", "坏的"),
                ("file", "probe.yaml"),
                (
                    "text",
                    "workflow: probe\nversion: 3\ninitial: nowhere\nstates: {}\n",
                ),
            ],
        )
        .await;
    assert!(r.contains("定义或规则有错误"), "{}", r.body);
    // Roll back.
    let r = c
        .post(
            "/policy/versions/rollback",
            &[("target", "probe@1"), ("reason", "页面回滚")],
        )
        .await;
    assert!(r.contains("已回滚（第 3 次发布）"), "{}", r.body);
    assert_eq!(w.sys.runtime.latest_program("probe").unwrap().version, 1);
    // Other roles may not.
    let mut op = w.logged_in("operator", "/ops").await;
    assert_eq!(op.get("/policy/versions").await.status, 403);
}

async fn the_policy_commands_publish_list_migrate_and_roll_back(s: Setup) {
    let w = &s.w;
    w.sys.runtime.start("probe", "c1", json!({})).await.unwrap();
    w.settle().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .args(args)
            .env("EPI_DATABASE_URL", &s.url)
            .env("RUST_LOG", "error")
            .output()
            .expect("runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + String::from_utf8_lossy(&out.stderr).as_ref(),
        )
    };
    let dir = s.paths.workflows.parent().unwrap().to_str().unwrap();
    set_probe(&s.paths, &probe(2, "cli", "waiting"));
    let (code, out) = run(&[
        "policy",
        "publish",
        "--by",
        "李四",
        "--reason",
        "命令行发布",
        "--dir",
        dir,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("已发布（第 2 次发布"), "{out}");
    let (code, out) = run(&[
        "policy", "publish", "--by", "李四", "--reason", "再来", "--dir", dir,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("未发布") && out.contains("完全相同"), "{out}");
    let (code, out) = run(&["policy", "versions"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("probe\tv2") && l.contains("当前") && l.contains("李四")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("probe\tv1") && l.contains("\t1/1\t")),
        "{out}"
    );
    // The dry run, then the migration.
    let migrate = [
        "policy",
        "migrate",
        "--workflow",
        "probe",
        "--from-version",
        "1",
        "--by",
        "李四",
        "--reason",
        "修正",
    ];
    let (code, out) = run(&migrate);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("可迁移 1 个实例，不能迁移 0 个") && out.contains("预演"),
        "{out}"
    );
    assert_eq!(hash_of(w, "c1").await.1, 1, "a dry run moves nothing");
    let (code, out) = run(&[&migrate[..], &["--apply"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("已迁移 1 个实例"), "{out}");
    assert_eq!(hash_of(w, "c1").await.1, 2);
    let (code, out) = run(&[
        "policy",
        "rollback",
        "probe@1",
        "--by",
        "李四",
        "--reason",
        "回到旧版",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("已回滚（第 3 次发布）"), "{out}");
    w.settle().await;
    assert_eq!(w.sys.runtime.latest_program("probe").unwrap().version, 1);
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
                    super::$name(super::setup(url).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(url) = engine::testing::fresh_postgres(concat!("publish_", stringify!($name))).await {
                        super::$name(super::setup(url).await).await;
                    }
                }
            )*
        }
    };
}

on_both!(
    same_version_changes_are_refused_at_publish_and_start,
    a_running_server_follows_another_process,
    checked_migration_moves_or_names_what_is_missing,
    city_page_lists_publishes_and_rolls_back,
    the_policy_commands_publish_list_migrate_and_roll_back,
);

/// On Temporal the workers and the web's client keep their own "latest
/// programs": `backend::follow_publications` hands them each new
/// publication, whether made in another process (the CLI) or in this one.
#[tokio::test]
async fn temporal_hosts_follow_the_publications() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
    let s = setup(url).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follow = tokio::spawn(server::backend::follow_publications(
        s.w.sys.runtime.clone(),
        Duration::from_millis(1),
        move |programs| {
            let probe = programs.iter().find(|p| p.name == "probe").cloned();
            tx.send(probe.map(|p| (p.version, p.hash.clone()))).unwrap();
        },
    ));
    let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<_>| {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the publication is noticed")
            .unwrap()
    };
    // Another process publishes v2.
    set_probe(&s.paths, &probe(2, "v2", "waiting"));
    let cli = other_process(&s).await;
    let v2 = cli
        .runtime
        .publish(&server::system::compile(&s.paths).unwrap(), &by("新版本"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        Some((2, v2.definitions["probe"].clone()))
    );
    // This process rolls back to v1: handed on too.
    let v1 =
        s.w.sys
            .runtime
            .rollback("probe@1", &by("回滚"))
            .await
            .unwrap();
    assert_eq!(
        next(&mut rx).await,
        Some((1, v1.definitions["probe"].clone()))
    );
    follow.abort();
}

/// A published change of the disposal form shows on the warnings that run
/// the new version (here: one moved there by a checked migration), while a
/// warning still on the old version keeps its own form.
#[tokio::test]
async fn the_warning_page_shows_the_disposal_form_of_its_own_version() {
    let w = World::new("2026-12-01T09:59:00+08:00").await;
    w.clock.set("2026-12-01T10:00:00+08:00".parse().unwrap());
    w.settle().await;
    let opened: Vec<(String, String)> = sqlx::query_as(
        "SELECT w.id, a.username FROM warnings w JOIN accounts a ON a.enterprise_id = w.enterprise_id \
         ORDER BY w.id LIMIT 2",
    )
    .fetch_all(&w.sys.pool)
    .await
    .unwrap();
    assert_eq!(opened.len(), 2, "the 10:00 run opened warnings");

    // The candidate: the form's first label changed, every workflow one
    // version up (forms and rules are part of each workflow's content).
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    copy_dir(&root.join("workflows"), &dir.path().join("workflows"));
    copy_dir(&root.join("rules"), &dir.path().join("rules"));
    let form = dir.path().join("workflows/forms/disposal.yaml");
    let text = std::fs::read_to_string(&form).unwrap();
    assert!(text.contains("label: 已报备社区"));
    std::fs::write(
        &form,
        text.replace("label: 已报备社区", "label: 已向所在社区报告"),
    )
    .unwrap();
    for f in ["warning.yaml", "comparison.yaml", "retention.yaml"] {
        let path = dir.path().join("workflows").join(f);
        let text = std::fs::read_to_string(&path).unwrap();
        let v: u32 = text
            .lines()
            .find_map(|l| l.strip_prefix("version: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::write(
            &path,
            text.replacen(
                &format!("\nversion: {v}\n"),
                &format!("\nversion: {}\n", v + 1),
                1,
            ),
        )
        .unwrap();
    }
    let bundle = server::system::compile(&Paths {
        workflows: dir.path().join("workflows"),
        rules: dir.path().join("rules"),
    })
    .unwrap();
    w.sys
        .runtime
        .publish(&bundle, &by("处置表单措辞"))
        .await
        .unwrap();
    let new_hash = bundle.workflows["warning"].hash.clone();
    let (moved, stays) = (&opened[0], &opened[1]);
    w.sys
        .runtime
        .migrate(&moved.0, &new_hash, &repair("表单措辞修订"))
        .await
        .unwrap();

    for ((id, user), label) in [(moved, "已向所在社区报告"), (stays, "已报备社区")] {
        let mut c = w.client();
        let password = &w.passwords[user];
        c.login(user, password, "/home").await;
        let page = c.get(&format!("/warnings/{id}")).await;
        page.assert_ok();
        assert!(page.contains(label), "{id}: {label}\n{}", page.body);
    }
}
