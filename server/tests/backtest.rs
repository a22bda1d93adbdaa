//! Back-tests (R8.2): the 05:00 run of the demo data (health-commission
//! simulator with high rates, so every reason occurs), then candidate rules
//! judged over what the run stored. The expected persons are worked out
//! from the stored data independently of the back-test; nothing is
//! written; the city's pages, CSV downloads and the roles' guards.

#[path = "support/web.rs"]
mod web;

use axum::http::StatusCode;
use server::backtest::{self, Candidate};
use server::comparison::read_judged;
use std::collections::BTreeSet;
use web::World;

const START: &str = "2026-12-01T04:59:00+08:00";

/// The demo's 60 staff, with rates high enough that each reason occurs.
fn rates(c: &mut server::config::Config) {
    c.health.sim_rates.positive = 0.2;
    c.health.sim_rates.red = 0.15;
    c.health.sim_rates.yellow = 0.3;
}

async fn sqlite() -> (World, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
    let w = World::open_with(&url, START, rates, server::system::Paths::repository()).await;
    (w, dir)
}

async fn postgres(db: &str) -> Option<World> {
    let url = engine::testing::fresh_postgres(db).await?;
    Some(World::open_with(&url, START, rates, server::system::Paths::repository()).await)
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (w, _dir) = super::sqlite().await;
                    super::$name(w).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(w) = super::postgres(concat!("backtest_", stringify!($name))).await {
                        super::$name(w).await;
                    }
                }
            )*
        }
    };
}

both!(
    a_rule_change_flags_exactly_the_expected_persons_and_writes_nothing,
    the_city_back_tests_on_its_page_and_other_roles_are_refused,
);

/// The 05:00 run; its id.
async fn run_at_five(w: &World) -> String {
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    sqlx::query_scalar("SELECT id FROM comparison_runs WHERE status = 'done'")
        .fetch_one(&w.sys.pool)
        .await
        .unwrap()
}

/// What the run stored: (staff id, known to the health commission and not
/// fully vaccinated, reasons).
async fn stored(w: &World, run: &str) -> Vec<(String, bool, Vec<String>)> {
    let data: Vec<String> =
        sqlx::query_scalar("SELECT data FROM comparison_persons WHERE run_id = $1")
            .bind(run)
            .fetch_all(&w.sys.pool)
            .await
            .unwrap();
    data.iter()
        .flat_map(|d| read_judged(d).unwrap())
        .map(|p| {
            let incomplete = p.record.as_ref().is_some_and(|r| !r.vaccination.completed);
            (p.staff_id, incomplete, p.reasons)
        })
        .collect()
}

/// Row counts of every table a run or a page could write.
async fn rows(w: &World) -> Vec<i64> {
    let mut out = Vec::new();
    for t in [
        "comparison_runs",
        "comparison_persons",
        "warnings",
        "warning_counts",
        "daily_records",
        "notices",
        "sms_log",
        "instances",
        "history",
        "timers",
        "tasks",
    ] {
        out.push(w.count(&format!("SELECT COUNT(*) FROM {t}")).await);
    }
    out
}

fn with_anomaly(w: &World, change: impl Fn(&str) -> String) -> Candidate {
    let mut c = Candidate::current(&w.sys.bundle);
    let f = c
        .rules
        .iter_mut()
        .find(|f| f.path.ends_with("anomaly.rhai"))
        .unwrap();
    let changed = change(&f.text);
    assert_ne!(changed, f.text, "the change applies");
    f.text = changed;
    c
}

fn ids(list: &[backtest::Change]) -> BTreeSet<String> {
    list.iter().map(|c| c.staff_id.clone()).collect()
}

const NO_YELLOW: (&str, &str) = ("\"yellow\" => reasons.push(\"黄码\"),", "");
const NEW_RULE: (&str, &str) = (
    "    reasons\n}",
    "    if !person.vaccination.completed { reasons.push(\"未完成疫苗接种\"); }\n    reasons\n}",
);

async fn a_rule_change_flags_exactly_the_expected_persons_and_writes_nothing(w: World) {
    let run = run_at_five(&w).await;
    let persons = stored(&w, &run).await;
    assert_eq!(persons.len(), 60);
    let before = rows(&w).await;

    // The rules in force find exactly what the run found.
    let same = Candidate::current(&w.sys.bundle).compile().unwrap();
    let r = backtest::backtest(&w.sys.reader, None, &same)
        .await
        .unwrap();
    assert_eq!(r.run.id, run, "the latest finished run by default");
    assert_eq!((r.persons, r.total.persons), (60, 60));
    assert!(r.newly.is_empty() && r.no_longer.is_empty() && r.changed.is_empty());
    let anomalies: i64 = w
        .count(&format!(
            "SELECT anomalies FROM comparison_runs WHERE id = '{run}'"
        ))
        .await;
    assert_eq!(r.total.reasons_before, anomalies as u64);
    assert_eq!(r.total.reasons_after, r.total.reasons_before);
    assert_eq!(r.total.flagged_after, r.total.flagged_before);
    assert!(r.window_note.is_none());
    assert_eq!(r.districts.len(), 1);
    assert_eq!(r.districts[0].name, "锦江区住建交局");

    // A yellow code is no longer flagged.
    let yellow = |p: &&(String, bool, Vec<String>)| p.2.iter().any(|r| r == "黄码");
    let only_yellow: BTreeSet<String> = persons
        .iter()
        .filter(yellow)
        .filter(|p| p.2.len() == 1)
        .map(|p| p.0.clone())
        .collect();
    let yellow_and_more: BTreeSet<String> = persons
        .iter()
        .filter(yellow)
        .filter(|p| p.2.len() > 1)
        .map(|p| p.0.clone())
        .collect();
    assert!(!only_yellow.is_empty() && !yellow_and_more.is_empty());
    let c = with_anomaly(&w, |t| t.replace(NO_YELLOW.0, NO_YELLOW.1))
        .compile()
        .unwrap();
    let r = backtest::backtest(&w.sys.reader, Some(&run), &c)
        .await
        .unwrap();
    assert!(r.newly.is_empty());
    assert_eq!(ids(&r.no_longer), only_yellow);
    assert_eq!(ids(&r.changed), yellow_and_more);
    for p in &r.changed {
        assert!(p.before.contains(&"黄码".to_string()) && !p.after.contains(&"黄码".to_string()));
    }
    let d = &r.districts[0];
    assert_eq!(d.no_longer, only_yellow.len() as u64);
    assert_eq!(d.flagged_after, d.flagged_before - only_yellow.len() as u64);
    let yellow_count = r.reasons.iter().find(|c| c.reason == "黄码").unwrap();
    assert_eq!(
        yellow_count.before,
        (only_yellow.len() + yellow_and_more.len()) as u64
    );
    assert_eq!(yellow_count.after, 0);

    // The CSV: a header and one line per changed person, ids masked.
    let csv = r.persons_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "\u{feff}类别,区（市）县,企业,身份证号,比对时的预警原因,回测的预警原因"
    );
    assert_eq!(lines.len(), 1 + only_yellow.len() + yellow_and_more.len());
    let first = &r.no_longer[0];
    assert!(lines.contains(
        &format!(
            "不再预警,锦江区住建交局,{},{},黄码,",
            first.enterprise, first.masked
        )
        .as_str()
    ));
    assert!(first.masked.contains("**********"));
    let districts = r.districts_csv();
    assert!(districts
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("锦江区住建交局,60,"));
    assert!(districts.lines().nth(2).unwrap().starts_with("全市,60,"));

    // A new rule: not fully vaccinated.
    let incomplete_clean: BTreeSet<String> = persons
        .iter()
        .filter(|p| p.1 && p.2.is_empty())
        .map(|p| p.0.clone())
        .collect();
    let incomplete_flagged: BTreeSet<String> = persons
        .iter()
        .filter(|p| p.1 && !p.2.is_empty())
        .map(|p| p.0.clone())
        .collect();
    assert!(!incomplete_clean.is_empty());
    let c = with_anomaly(&w, |t| t.replacen(NEW_RULE.0, NEW_RULE.1, 1))
        .compile()
        .unwrap();
    let r = backtest::backtest(&w.sys.reader, Some(&run), &c)
        .await
        .unwrap();
    assert_eq!(ids(&r.newly), incomplete_clean);
    assert!(r.no_longer.is_empty());
    assert_eq!(ids(&r.changed), incomplete_flagged);
    assert!(r
        .newly
        .iter()
        .all(|p| p.before.is_empty() && p.after == ["未完成疫苗接种"]));

    // A longer look-back than the run stored is said.
    let mut longer = c.clone();
    longer.window_hours = 48;
    let r = backtest::backtest(&w.sys.reader, Some(&run), &longer)
        .await
        .unwrap();
    assert!(r.window_note.unwrap().contains("48小时"));

    // Unknown runs and broken candidates are refused in words.
    assert!(matches!(
        backtest::backtest(&w.sys.reader, Some("nothing"), &c).await,
        Err(backtest::Error::NoRun(_))
    ));
    let broken = with_anomaly(&w, |t| {
        t.replace("fn evaluate(person)", "fn evaluated(person)")
    });
    let e = broken.compile().err().unwrap().to_string();
    assert!(e.contains("fn evaluate"), "{e}");

    assert_eq!(rows(&w).await, before, "a back-test writes nothing");
}

async fn the_city_back_tests_on_its_page_and_other_roles_are_refused(w: World) {
    let run = run_at_five(&w).await;
    let persons = stored(&w, &run).await;
    let only_yellow = persons.iter().filter(|p| p.2 == ["黄码"]).count();
    let before = rows(&w).await;

    // The city lands on its own home, with the definitions in force.
    let mut city = w.logged_in("city", "/policy").await;
    let home = city.get("/policy").await;
    home.assert_ok();
    let program = &w.sys.bundle.workflows["warning"];
    assert!(home.contains(&program.hash) && home.contains("anomaly.rhai"));
    assert!(
        home.contains("reasons.push(&quot;黄码&quot;)"),
        "rule texts readable"
    );
    let form = city.get("/policy/backtest").await;
    form.assert_ok();
    assert!(form.contains("第1次") && form.contains("id=\"backtest\""));

    let path = Candidate::current(&w.sys.bundle)
        .rules
        .iter()
        .find(|f| f.path.ends_with("anomaly.rhai"))
        .unwrap()
        .clone();
    let field = format!("file:{}", path.path);
    let no_yellow = path.text.replace(NO_YELLOW.0, NO_YELLOW.1);

    // Validation: a wrong rule is named, a good one passes.
    let bad = path
        .text
        .replace("fn evaluate(person)", "fn evaluated(person)");
    let page = city
        .post("/policy/validate", &[(field.as_str(), bad.as_str())])
        .await;
    page.assert_ok();
    assert!(page.contains("id=\"validation-problems\"") && page.contains("fn evaluate"));
    let page = city
        .post("/policy/validate", &[(field.as_str(), no_yellow.as_str())])
        .await;
    assert!(page.contains("id=\"validation-ok\"") && page.contains("修改了 1 个文件"));
    // A broken candidate is not back-tested.
    let page = city
        .post("/policy/backtest", &[(field.as_str(), bad.as_str())])
        .await;
    assert!(page.contains("id=\"validation-problems\""));

    // The back-test of "yellow is no longer flagged".
    let result = city
        .post(
            "/policy/backtest",
            &[("run", run.as_str()), (field.as_str(), no_yellow.as_str())],
        )
        .await;
    result.assert_ok();
    assert!(result.contains("锦江区"), "the district table");
    assert!(
        result.contains(&format!("不再预警：{only_yellow} 人")),
        "{}",
        result.body
    );
    assert!(result.contains("未写入任何数据"));

    let csv = city
        .post(
            "/policy/backtest.csv",
            &[
                ("run", run.as_str()),
                (field.as_str(), no_yellow.as_str()),
                ("part", "persons"),
            ],
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.body.starts_with("\u{feff}类别,"));
    assert_eq!(
        csv.body
            .lines()
            .filter(|l| l.starts_with("不再预警,"))
            .count(),
        only_yellow
    );
    let csv = city
        .post(
            "/policy/backtest.csv",
            &[(field.as_str(), no_yellow.as_str()), ("part", "districts")],
        )
        .await;
    assert!(csv.body.contains("锦江区住建交局,60,"));

    // Only operators run comparisons and move the rehearsal clock.
    assert_eq!(city.get("/ops").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        city.post("/ops/run-comparison", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        city.post("/ops/clock", &[("minutes", "60")]).await.status,
        StatusCode::FORBIDDEN
    );
    // Policy pages are the city's.
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let mut d = w.logged_in("jinjiang", "/district").await;
    let mut op = w.logged_in("operator", "/ops").await;
    for c in [&mut e, &mut d, &mut op] {
        for p in ["/policy", "/policy/backtest"] {
            assert_eq!(c.get(p).await.status, StatusCode::FORBIDDEN, "{p}");
        }
        for p in [
            "/policy/backtest",
            "/policy/validate",
            "/policy/backtest.csv",
        ] {
            assert_eq!(
                c.post(p, &[(field.as_str(), no_yellow.as_str())])
                    .await
                    .status,
                StatusCode::FORBIDDEN,
                "{p}"
            );
        }
    }
    assert_eq!(rows(&w).await, before, "the pages wrote nothing");
}

/// `server policy backtest` on the deployment's database: the report, the
/// CSV files, and a refused candidate.
#[tokio::test]
async fn the_command_line_back_test_prints_the_report_and_writes_the_csv() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
    let w = World::open_with(&url, START, rates, server::system::Paths::repository()).await;
    let run = run_at_five(&w).await;
    let only_yellow = stored(&w, &run)
        .await
        .iter()
        .filter(|p| p.2 == ["黄码"])
        .count();
    let before = rows(&w).await;

    let candidate = dir.path().join("candidate");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for sub in ["workflows", "workflows/forms", "rules"] {
        std::fs::create_dir_all(candidate.join(sub)).unwrap();
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let path = e.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, candidate.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let anomaly = candidate.join("rules/anomaly.rhai");
    let text = std::fs::read_to_string(&anomaly).unwrap();
    std::fs::write(&anomaly, text.replace(NO_YELLOW.0, NO_YELLOW.1)).unwrap();
    let csv = dir.path().join("changes.csv");
    let cli = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["policy", "backtest"])
            .args(args)
            .env("EPI_DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    let out = cli(&[
        "--candidate".as_ref(),
        candidate.as_os_str(),
        "--run".as_ref(),
        run.as_ref(),
        "--csv".as_ref(),
        csv.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("不再预警：{only_yellow} 人")),
        "{stdout}"
    );
    assert!(stdout.contains("锦江区住建交局\t60\t"), "{stdout}");
    let persons = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        persons
            .lines()
            .filter(|l| l.starts_with("不再预警,"))
            .count(),
        only_yellow
    );
    let districts = std::fs::read_to_string(dir.path().join("changes-districts.csv")).unwrap();
    assert!(districts.contains("全市,60,"));

    std::fs::write(
        &anomaly,
        text.replace("fn evaluate(person)", "fn evaluated(person)"),
    )
    .unwrap();
    let out = cli(&["--candidate".as_ref(), candidate.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("候选定义或规则有误") && stdout.contains("fn evaluate"),
        "{stdout}"
    );
    assert_eq!(rows(&w).await, before, "the command wrote nothing");
}
