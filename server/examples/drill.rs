//! Fault drill (issue 10): the scheduled comparison run on the real `server`
//! binary while its gateways fail and its process is killed, everything on
//! 127.0.0.1 and bounded in time.
//!
//!   scripts/drill [--staff N] [--kill-during-sms] [--deadline-secs S] [--keep]
//!
//! What it does:
//! 1. A fresh SQLite file in a temporary directory, migrated and seeded with
//!    N staff (`tests/support/bulk.rs`); the comparison schedule is marked
//!    as last handled one minute before its latest slot, so the server
//!    starts as one that was down at that slot and catches it up at once —
//!    the schedule's own path (with `catch_up: once`), not a manual start.
//! 2. The health-commission simulator over HTTP behind a fault switch: every
//!    request in the first `--health-outage-secs` answers 503 (the run's
//!    first attempt fails and the engine retries it); then it forwards, and
//!    on the batch that is a third of the way through the next attempt it
//!    holds the answer and asks for the kill.
//! 3. A fake SMS gateway (the contract of `server/src/adapters/sms.rs`)
//!    that answers 503 for `--sms-outage-secs` from the first message, then
//!    accepts and records every key it accepted and how many times.
//! 4. `server serve --config …` as a child process: SIGKILLed while the
//!    comparison activity is fetching, restarted at once (and with
//!    `--kill-during-sms` killed and restarted again while the SMS gateway
//!    is refusing the first reminders: nothing can be accepted then, so the
//!    "accepted once" check stays exact).
//! 5. Waits, reading the database read-only, until the run's instance has
//!    ended and no activity task is left, then checks: every anomaly that
//!    an independent re-judging of the simulator's answers finds has one
//!    warning (none lost, none extra), no dedupe key opened twice, one
//!    warning workflow per warning, every warning's first reminder accepted
//!    by the gateway under exactly one key and no key accepted twice, the
//!    warnings projection's counts consistent, and the faults really
//!    happened. Prints the counts; exit status 0 only if every check holds.
//!
//! The child is killed when the drill ends, whatever the outcome. A
//! restarted server takes over the tasks its killed predecessor had leased
//! once their lease (5 min) has run out, or at once where the runtime takes
//! them back on start; the default deadline allows for either.

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use clap::Parser;
use engine::store::{StepCommit, Store as _};
use server::adapters::health_sim::{SimRates, Simulator};
use server::comparison::{HealthRecord, Person};
use sqlx::Row as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::sync::mpsc;

#[path = "../tests/support/bulk.rs"]
mod bulk;

const HEALTH_TOKEN: &str = "drill-health-token";
const SMS_TOKEN: &str = "drill-sms-token";
const SIM_SEED: u64 = 2022;

#[derive(Parser)]
#[command(
    name = "drill",
    about = "Fault drill of the scheduled comparison run (loopback only)"
)]
struct Args {
    /// The `server` binary (default: target/release/server beside this example).
    #[arg(long)]
    server: Option<PathBuf>,
    /// The checkout whose workflows/ and rules/ the server runs.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Staff seeded (about 0.6 % of them are anomalous).
    #[arg(long, default_value_t = 20_000)]
    staff: u64,
    /// How long the health gateway answers 503, from its first request.
    #[arg(long, default_value_t = 10)]
    health_outage_secs: u64,
    /// How long the SMS gateway answers 503, from its first message.
    #[arg(long, default_value_t = 20)]
    sms_outage_secs: u64,
    /// Also kill and restart the server while the SMS gateway is down and
    /// the first reminders are being refused.
    #[arg(long)]
    kill_during_sms: bool,
    /// Give up (and fail) this long after the server's first start
    /// (default: room for a 5-minute task lease after each kill).
    #[arg(long)]
    deadline_secs: Option<u64>,
    /// Keep the temporary directory (database, config, server logs).
    #[arg(long)]
    keep: bool,
}

/// Times relative to the drill's start, printed as they happen.
#[derive(Clone)]
struct Timeline {
    start: Instant,
}

impl Timeline {
    fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }
    fn say(&self, what: impl std::fmt::Display) {
        println!("[t+{:6.1}s] {what}", self.at(Instant::now()));
    }
}

// ---------------------------------------------------------------- faults

/// The health gateway: 503 during the outage, then the simulator; holds
/// the `kill_at`-th forwarded batch and asks for the kill.
struct Health {
    sim_url: String,
    http: reqwest::Client,
    outage: Duration,
    first: Mutex<Option<Instant>>,
    refused: AtomicU64,
    forwarded: AtomicU64,
    kill_at: u64,
    kill: Mutex<Option<mpsc::UnboundedSender<&'static str>>>,
    /// Set by the drill after a restart; the first batch after it is noted.
    restarted: Mutex<Option<Instant>>,
    resumed: Mutex<Option<Instant>>,
    timeline: Timeline,
}

async fn health_gateway(State(h): State<Arc<Health>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = Instant::now();
    let first = *h.first.lock().expect("health").get_or_insert(now);
    if now.duration_since(first) < h.outage {
        if h.refused.fetch_add(1, Ordering::SeqCst) == 0 {
            h.timeline.say("health gateway: down, answering 503");
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "down for the drill").into_response();
    }
    let n = h.forwarded.fetch_add(1, Ordering::SeqCst) + 1;
    if n == 1 {
        h.timeline
            .say("health gateway: up again, forwarding to the simulator");
    }
    {
        let restarted = *h.restarted.lock().expect("health");
        let mut resumed = h.resumed.lock().expect("health");
        if let (Some(r), None) = (restarted, *resumed) {
            *resumed = Some(now);
            h.timeline.say(format!(
                "health gateway: first batch after the restart ({:.1} s after it): the comparison resumed",
                now.duration_since(r).as_secs_f64()
            ));
        }
    }
    if n == h.kill_at {
        let kill = h.kill.lock().expect("health").clone();
        if let Some(kill) = kill {
            h.timeline.say(format!(
                "health gateway: holding batch #{n} of the comparison; kill the server now"
            ));
            let _ = kill.send("mid-comparison (a health batch in flight)");
            // The caller is killed meanwhile; answer nobody.
            tokio::time::sleep(Duration::from_secs(30)).await;
            return (StatusCode::SERVICE_UNAVAILABLE, "held").into_response();
        }
    }
    let mut req = h
        .http
        .post(format!("{}/v1/health/query", h.sim_url))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth.clone());
    }
    match req.send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = r.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// One key the SMS gateway accepted.
#[derive(Debug, Clone)]
struct Accepted {
    times: u64,
    template: String,
    warning_id: String,
    round: String,
}

/// The SMS gateway: 503 during the outage (from the first message), then
/// 200 for every message, each recorded under its idempotency key.
struct Sms {
    outage: Duration,
    first: Mutex<Option<Instant>>,
    requests: AtomicU64,
    refused: AtomicU64,
    unauthorised: AtomicU64,
    accepted: Mutex<BTreeMap<String, Accepted>>,
    /// With --kill-during-sms: after this many refusals, ask for a kill.
    kill_after_refusals: u64,
    kill: Mutex<Option<mpsc::UnboundedSender<&'static str>>>,
    timeline: Timeline,
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

async fn sms_gateway(State(s): State<Arc<Sms>>, headers: HeaderMap, body: Bytes) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let expected = format!("Bearer {SMS_TOKEN}");
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        s.unauthorised.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let Ok(m) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let key = text(&m["idempotency_key"]);
    if key.is_empty() || m["phone"].as_str().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "phone and idempotency_key required",
        )
            .into_response();
    }
    let now = Instant::now();
    let first = *s.first.lock().expect("sms").get_or_insert(now);
    let down_for = s.outage.saturating_sub(now.duration_since(first));
    if !down_for.is_zero() {
        let n = s.refused.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            s.timeline.say("SMS gateway: down, answering 503");
        }
        // Only while the outage has a good while to run: no message can
        // be accepted around the kill.
        if n == s.kill_after_refusals && down_for > Duration::from_secs(5) {
            let kill = s.kill.lock().expect("sms").take();
            if let Some(kill) = kill {
                s.timeline.say(format!(
                    "SMS gateway: {n} reminders refused; kill the server now"
                ));
                let _ = kill.send("while the first reminders are refused");
            }
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "down for the drill").into_response();
    }
    let mut accepted = s.accepted.lock().expect("sms");
    if accepted.is_empty() {
        s.timeline.say("SMS gateway: up again, accepting");
    }
    let e = accepted.entry(key).or_insert_with(|| Accepted {
        times: 0,
        template: text(&m["template"]),
        warning_id: text(&m["params"]["warning_id"]),
        round: text(&m["params"]["round"]),
    });
    e.times += 1;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"accepted\":true}",
    )
        .into_response()
}

// ---------------------------------------------------------------- server

struct Server {
    bin: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    url: String,
    starts: usize,
    child: Option<Child>,
}

impl Server {
    fn log(&self, n: usize) -> PathBuf {
        self.dir.join(format!("server-{n}.log"))
    }

    async fn start(&mut self, t: &Timeline) -> anyhow::Result<()> {
        self.starts += 1;
        let log = std::fs::File::create(self.log(self.starts))?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--workflows")
            .arg(self.root.join("workflows"))
            .arg("--rules")
            .arg(self.root.join("rules"))
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // The configuration file is the whole configuration: no EPI_*
        // variable of the caller's environment may point elsewhere.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("EPI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("EPI_HEALTH_TOKEN", HEALTH_TOKEN)
            .env("EPI_SMS_TOKEN", SMS_TOKEN)
            .env("RUST_LOG", "info,sqlx=warn");
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        t.say(format!(
            "server started (pid {}, log {})",
            child.id().unwrap_or(0),
            self.log(self.starts).display()
        ));
        self.child = Some(child);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "the server exited at start-up ({status}):\n{}",
                    tail(&self.log(self.starts))
                );
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    t.say(format!("server answers on {}", self.url));
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the server did not answer /healthz within 60 s")
    }

    async fn kill(&mut self, t: &Timeline, why: &str) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("no server to kill");
        };
        child.start_kill()?;
        let status = child.wait().await?;
        use std::os::unix::process::ExitStatusExt as _;
        t.say(format!(
            "server killed with SIGKILL {why} (signal {:?})",
            status.signal()
        ));
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

async fn serve_on(listener: tokio::net::TcpListener, app: axum::Router) {
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("drill gateway stopped: {e}");
    }
}

async fn loopback() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    Ok((l, url))
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

// ---------------------------------------------------------------- drill

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    match drill(args).await {
        Ok(true) => {
            println!("\nDRILL PASSED");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("\nDRILL FAILED");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("drill error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn drill(args: Args) -> anyhow::Result<bool> {
    let root = match &args.root {
        Some(r) => r.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    };
    let bin = match &args.server {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("locating target/release")?
            .join("server"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p server --bin server) or pass --server",
            bin.display()
        );
    }
    // The server runs in the drill's directory: absolute paths.
    let bin = std::fs::canonicalize(&bin)?;
    let root =
        std::fs::canonicalize(&root).with_context(|| format!("the checkout {}", root.display()))?;
    let tmp = tempfile::Builder::new().prefix("epi-drill-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    println!("drill directory: {}", dir.display());
    let mut server = Server {
        bin,
        root: root.clone(),
        dir: dir.clone(),
        config: dir.join("config.yaml"),
        url: String::new(),
        starts: 0,
        child: None,
    };
    let result = run(&args, &mut server).await;
    server.stop().await;
    let keep = args.keep || !matches!(result, Ok(true));
    if keep {
        let kept = tmp.keep();
        println!(
            "kept {} (database, config.yaml, server-*.log)",
            kept.display()
        );
    }
    result
}

async fn run(args: &Args, server: &mut Server) -> anyhow::Result<bool> {
    let dir = server.dir.clone();
    let root = server.root.clone();
    let db = dir.join("drill.db");
    let rw = format!("sqlite://{}?mode=rwc", db.display());

    // Definitions as the server will read them: the schedule's slot now,
    // and the rules for re-judging the simulator's answers at the end.
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules"))?;
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default()).map_err(|e| {
        anyhow::anyhow!(
            "definitions: {}",
            e.0.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let schedule = bundle
        .schedules
        .iter()
        .find(|s| s.workflow == "comparison")
        .context("no schedule starts `comparison`")?
        .clone();

    // 1. Database: migrated, seeded, and the schedule last handled just
    //    before its latest slot.
    let started = Instant::now();
    let store = server::db::open(&rw).await?;
    let city = bulk::seed_city(store.pool(), args.staff).await;
    let slot = schedule
        .latest_at_or_before(Utc::now())
        .context("the schedule has no slot")?;
    store
        .commit(&[StepCommit {
            schedule_fired: Some((schedule.name.clone(), slot - chrono::Duration::minutes(1))),
            ..Default::default()
        }])
        .await?;
    store.pool().close().await;
    store.reader().close().await;
    let instance = format!(
        "{}@{}",
        schedule.name,
        slot.with_timezone(&schedule.tz).format("%Y-%m-%dT%H:%M%:z")
    );
    println!(
        "seeded {} staff at {} addresses of {} enterprises in {:.1} s; the server will catch up the slot {} (instance {instance})",
        city.persons,
        city.addresses,
        city.enterprises,
        started.elapsed().as_secs_f64(),
        slot.with_timezone(&schedule.tz).format("%Y-%m-%d %H:%M"),
    );

    // 2. Gateways on loopback.
    let t = Timeline {
        start: Instant::now(),
    };
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<&'static str>();
    let rates = SimRates::default();
    let (sim_listener, sim_url) = loopback().await?;
    tokio::spawn(async move {
        let _ = server::adapters::health_sim::serve(
            sim_listener,
            Simulator::new(SIM_SEED, rates),
            HEALTH_TOKEN.to_string(),
        )
        .await;
    });
    let batches = args.staff.div_ceil(1000);
    let health = Arc::new(Health {
        sim_url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        outage: Duration::from_secs(args.health_outage_secs),
        first: Mutex::new(None),
        refused: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
        kill_at: (batches / 3).max(1),
        kill: Mutex::new(Some(kill_tx.clone())),
        restarted: Mutex::new(None),
        resumed: Mutex::new(None),
        timeline: t.clone(),
    });
    let (l, health_url) = loopback().await?;
    tokio::spawn(serve_on(
        l,
        axum::Router::new()
            .route("/v1/health/query", axum::routing::post(health_gateway))
            .with_state(health.clone()),
    ));
    let sms = Arc::new(Sms {
        outage: Duration::from_secs(args.sms_outage_secs),
        first: Mutex::new(None),
        requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        unauthorised: AtomicU64::new(0),
        accepted: Mutex::new(BTreeMap::new()),
        kill_after_refusals: 10,
        kill: Mutex::new(args.kill_during_sms.then(|| kill_tx.clone())),
        timeline: t.clone(),
    });
    drop(kill_tx);
    let (l, sms_url) = loopback().await?;
    tokio::spawn(serve_on(
        l,
        axum::Router::new()
            .route("/v1/sms/send", axum::routing::post(sms_gateway))
            .with_state(sms.clone()),
    ));

    // 3. The server's configuration (tokens come by environment).
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    server.url = format!("http://{listen}");
    std::fs::write(
        &server.config,
        format!(
            "# Written by the fault drill (server/examples/drill.rs).\n\
             database_url: {rw}\n\
             listen: {listen}\n\
             cookie_secure: false\n\
             health:\n  mode: http\n  base_url: {health_url}\n  timeout_ms: 10000\n  batch_size: 1000\n  concurrency: 4\n  sim_seed: {SIM_SEED}\n\
             sms:\n  mode: http\n  base_url: {sms_url}\n  timeout_ms: 5000\n"
        ),
    )?;

    // 4. Start; kill where the faults ask for it; restart at once.
    let deadline_secs = args
        .deadline_secs
        .unwrap_or(if args.kill_during_sms { 900 } else { 540 });
    let deadline = t.start + Duration::from_secs(deadline_secs);
    server.start(&t).await?;
    let ro = {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await?
    };
    let planned = 1 + usize::from(args.kill_during_sms);
    let mut kills = Vec::new();
    let mut ended = None;
    let mut last_report = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            t.say("deadline reached");
            break;
        }
        let wait = Duration::from_millis(500).min(deadline - now);
        if let Ok(Some(why)) = tokio::time::timeout(wait, kill_rx.recv()).await {
            server.kill(&t, why).await?;
            let task = sqlx::query(
                "SELECT name, status, attempt, lease_until FROM tasks WHERE status = 'running' ORDER BY name",
            )
            .fetch_all(&ro)
            .await?;
            let mut leased: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            let now_ms = Utc::now().timestamp_millis();
            for r in &task {
                let e = leased.entry(r.try_get::<String, _>("name")?).or_default();
                e.0 += 1;
                e.1 =
                    e.1.max(r.try_get::<Option<i64>, _>("lease_until")?.unwrap_or(0) - now_ms);
            }
            for (name, (n, ms)) in &leased {
                t.say(format!(
                    "  left leased by the dead process: {n} × {name} (lease runs {:.0} s more)",
                    *ms as f64 / 1000.0
                ));
            }
            kills.push((t.at(Instant::now()), why, task.len()));
            server.start(&t).await?;
            if kills.len() == 1 {
                *health.restarted.lock().expect("health") = Some(Instant::now());
            }
            continue;
        }
        // Done: the run's instance ended and no activity is left to run.
        let state: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT state, status_label FROM instances WHERE id = $1")
                .bind(&instance)
                .fetch_optional(&ro)
                .await?;
        let open_tasks = count(
            &ro,
            "SELECT COUNT(*) FROM tasks WHERE status IN ('pending', 'running')",
        )
        .await?;
        let terminal = matches!(
            state.as_ref().map(|s| s.0.as_str()),
            Some("done" | "failed" | "opening_failed")
        );
        if last_report.elapsed() >= Duration::from_secs(15) {
            last_report = Instant::now();
            let warnings = count(&ro, "SELECT COUNT(*) FROM warnings").await?;
            let accepted = sms.accepted.lock().expect("sms").len();
            t.say(format!(
                "  run {}, {warnings} warnings, {accepted} SMS keys accepted, {open_tasks} tasks to run",
                state.as_ref().map_or("not started", |s| s.0.as_str())
            ));
        }
        // (A run that ends before a planned kill ends the drill too: the
        // kill check below fails.)
        if terminal && open_tasks == 0 {
            t.say(format!(
                "run ended ({}) and no task is left",
                state.as_ref().and_then(|s| s.1.clone()).unwrap_or_default()
            ));
            ended = Some(Instant::now());
            break;
        }
    }
    // A few seconds more: anything still arriving at the gateway shows.
    if ended.is_some() {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    server.stop().await;
    t.say("server stopped; checking");

    // 5. Counts and checks.
    let mut checks: Vec<(String, bool)> = Vec::new();
    let mut check = |name: String, ok: bool| checks.push((name, ok));
    check(
        format!("the drill ended within its deadline ({} s)", deadline_secs),
        ended.is_some(),
    );

    // The comparison.
    let run: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT state, status_label FROM instances WHERE id = $1")
            .bind(&instance)
            .fetch_optional(&ro)
            .await?;
    // Another comparison only if a later slot came due during the drill
    // (it finds the same anomalies and opens nothing new).
    let comparisons = count(
        &ro,
        "SELECT COUNT(*) FROM instances WHERE kind = 'comparison'",
    )
    .await?;
    let runs = sqlx::query(
        "SELECT id, status, as_of, persons, anomalies, new_warnings FROM comparison_runs WHERE id LIKE $1",
    )
    .bind(format!("{instance}/%"))
    .fetch_all(&ro)
    .await?;
    let attempts: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(attempt) FROM tasks WHERE instance_id = $1 AND name = 'run_comparison'",
    )
    .bind(&instance)
    .fetch_one(&ro)
    .await?;
    println!("\n== comparison");
    println!(
        "instance {instance}: {}",
        run.as_ref()
            .map(|(s, l)| format!("{s} ({})", l.clone().unwrap_or_default()))
            .unwrap_or_else(|| "absent".into())
    );
    println!("comparison instances: {comparisons}; comparison_runs rows: {}; run_comparison attempts: {}", runs.len(), attempts.unwrap_or(0));
    check(
        "the run completed (比对完成)".into(),
        run.as_ref().is_some_and(|(s, _)| s == "done"),
    );
    check("the run stored its result once".into(), runs.len() == 1);

    // What the run should have found: the simulator's answers for every
    // person, judged again here by the same rules.
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    if let [run_row] = runs.as_slice() {
        let as_of_ms: i64 = run_row.try_get("as_of")?;
        let as_of = DateTime::<Utc>::from_timestamp_millis(as_of_ms).context("as_of")?;
        let persons: Vec<Person> =
            sqlx::query("SELECT id, address_id, id_number FROM staff WHERE deleted_at IS NULL")
                .fetch_all(&ro)
                .await?
                .iter()
                .map(|r| {
                    Ok(Person {
                        staff_id: r.try_get("id")?,
                        address_id: r.try_get("address_id")?,
                        id_number: r.try_get("id_number")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
        let sim = Simulator::new(SIM_SEED, rates);
        // The windows workflows/comparison.yaml gives the run.
        let windows = server::activities::declared_windows(&bundle)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("comparison.yaml declares no windows"))?;
        let ids: Vec<String> = persons.iter().map(|p| p.id_number.clone()).collect();
        let answers: HashMap<String, HealthRecord> = sim
            .answer(as_of, windows.asked_hours(), &ids)
            .into_iter()
            .map(|r| (r.id_number.clone(), r))
            .collect();
        let outcome = server::comparison::compare(
            &bundle.rules,
            &persons,
            &answers,
            as_of,
            chrono::Duration::hours(windows.nat.into()),
        )?;
        expected = outcome
            .anomalies
            .into_iter()
            .map(|a| (a.staff_id, a.reason))
            .collect();
        println!(
            "stored run: {} persons, {} anomalies, {} new warnings (status {})",
            run_row.try_get::<i64, _>("persons")?,
            run_row.try_get::<i64, _>("anomalies")?,
            run_row.try_get::<i64, _>("new_warnings")?,
            run_row.try_get::<String, _>("status")?
        );
    }

    // Warnings and their workflows.
    let rows = sqlx::query("SELECT id, staff_id, reason, dedupe_key FROM warnings")
        .fetch_all(&ro)
        .await?;
    let mut found: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    let mut warning_ids = BTreeSet::new();
    for r in &rows {
        *found
            .entry((r.try_get("staff_id")?, r.try_get("reason")?))
            .or_default() += 1;
        *keys.entry(r.try_get("dedupe_key")?).or_default() += 1;
        warning_ids.insert(r.try_get::<String, _>("id")?);
    }
    let lost = expected.iter().filter(|k| !found.contains_key(*k)).count();
    let extra = found.keys().filter(|k| !expected.contains(*k)).count();
    let twice_key = keys.values().filter(|n| **n > 1).count();
    let twice_person = found.values().filter(|n| **n > 1).count();
    let workflows: BTreeSet<String> =
        sqlx::query_scalar("SELECT id FROM instances WHERE kind = 'warning'")
            .fetch_all(&ro)
            .await?
            .into_iter()
            .collect();
    let without_workflow = warning_ids.difference(&workflows).count();
    let without_warning = workflows.difference(&warning_ids).count();
    let mismatches = server::warnings::count_mismatches(&ro).await?;
    println!("\n== warnings");
    println!(
        "expected (anomalies re-judged from the simulator): {}",
        expected.len()
    );
    println!(
        "warnings stored:                                   {}",
        rows.len()
    );
    println!("  lost (expected, no warning):                     {lost}");
    println!("  not expected:                                    {extra}");
    println!("  dedupe keys opened twice:                        {twice_key}");
    println!("  person and reason opened twice:                  {twice_person}");
    println!(
        "warning workflows:                                 {}",
        workflows.len()
    );
    println!("  warnings without a workflow:                     {without_workflow}");
    println!("  workflows without a warning:                     {without_warning}");
    println!(
        "projection count mismatches:                       {}",
        mismatches.len()
    );
    check(
        "warnings were expected (the drill is not empty)".into(),
        !expected.is_empty(),
    );
    check("no warning lost".into(), lost == 0);
    check("no warning that was not expected".into(), extra == 0);
    check(
        "none opened twice (dedupe key, person and reason)".into(),
        twice_key == 0 && twice_person == 0,
    );
    check(
        "one warning workflow per warning".into(),
        workflows.len() == rows.len() && without_workflow == 0 && without_warning == 0,
    );
    check(
        "warning counts consistent with the warnings".into(),
        mismatches.is_empty(),
    );

    // SMS.
    let accepted = sms.accepted.lock().expect("sms").clone();
    let twice_sms = accepted.values().filter(|a| a.times > 1).count();
    let mut first_reminders: BTreeMap<&str, usize> = BTreeMap::new();
    let mut other = 0;
    let mut foreign_key = 0;
    for (key, a) in &accepted {
        if a.template == "warning_reminder" && a.round == "1" {
            *first_reminders.entry(a.warning_id.as_str()).or_default() += 1;
            if !key.starts_with(&format!("{}/", a.warning_id)) {
                foreign_key += 1;
            }
        } else {
            other += 1;
        }
    }
    let reminded = warning_ids
        .iter()
        .filter(|w| first_reminders.contains_key(w.as_str()))
        .count();
    let reminded_twice = first_reminders.values().filter(|n| **n > 1).count();
    println!("\n== SMS gateway");
    println!(
        "requests:                                          {}",
        sms.requests.load(Ordering::SeqCst)
    );
    println!(
        "  refused with 503 while down:                     {}",
        sms.refused.load(Ordering::SeqCst)
    );
    println!(
        "  refused for a bad token:                         {}",
        sms.unauthorised.load(Ordering::SeqCst)
    );
    println!(
        "keys accepted:                                     {}",
        accepted.len()
    );
    println!("  accepted more than once:                         {twice_sms}");
    println!(
        "  first reminders (warning_reminder, round 1):     {}",
        first_reminders.values().sum::<usize>()
    );
    println!("  other messages:                                  {other}");
    println!(
        "warnings whose first reminder was accepted:        {reminded} of {}",
        warning_ids.len()
    );
    println!("  warnings reminded under more than one key:       {reminded_twice}");
    println!("  keys not the warning's own ({{warning}}/…):        {foreign_key}");
    check("no SMS key accepted twice".into(), twice_sms == 0);
    check(
        "every warning's first reminder accepted, under one key of its own".into(),
        reminded == warning_ids.len()
            && reminded_twice == 0
            && foreign_key == 0
            && first_reminders.len() == warning_ids.len(),
    );

    // The faults happened.
    let h_refused = health.refused.load(Ordering::SeqCst);
    let resumed = health
        .resumed
        .lock()
        .expect("health")
        .zip(*health.restarted.lock().expect("health"))
        .map(|(a, b)| a.saturating_duration_since(b).as_secs_f64());
    println!("\n== faults");
    println!(
        "health gateway: {h_refused} requests refused (503), {} forwarded",
        health.forwarded.load(Ordering::SeqCst)
    );
    for (at, why, leased) in &kills {
        println!("server SIGKILLed at t+{at:.1}s {why}; {leased} tasks were leased");
    }
    println!(
        "comparison resumed after the restart: {}",
        resumed.map_or("—".into(), |s| if s > 60.0 {
            format!("{s:.1} s (once the killed process's task lease ran out)")
        } else {
            format!("{s:.1} s (taken back at once)")
        })
    );
    println!("server starts: {}", server.starts);
    if let Some(e) = ended {
        println!("run ended at t+{:.1}s", t.at(e));
    }
    check(
        "the health gateway failed, then recovered".into(),
        h_refused > 0 && health.forwarded.load(Ordering::SeqCst) > 0,
    );
    check(
        "the SMS gateway was down for a while".into(),
        sms.refused.load(Ordering::SeqCst) > 0,
    );
    check(
        format!("the server was killed mid-run and restarted ({planned}×)"),
        kills.len() == planned,
    );

    println!(
        "\nsummary: {} warnings expected, {} stored, {lost} lost, {} opened twice; {} SMS keys accepted, {twice_sms} sent twice; {} kill(s)",
        expected.len(),
        rows.len(),
        twice_key.max(twice_person),
        accepted.len(),
        kills.len()
    );
    println!("\n== checks");
    let mut all = true;
    for (name, ok) in &checks {
        println!("{} {name}", if *ok { "ok  " } else { "FAIL" });
        all &= ok;
    }
    if !all {
        for n in 1..=server.starts {
            println!("\n-- tail of {}", server.log(n).display());
            println!("{}", tail(&server.log(n)));
        }
    }
    Ok(all)
}
