//! The `server` binary: command-line entry point. Parses arguments, sets up
//! logging and hands over to the library; errors end here as anyhow.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod instances_cli;

// The engine allocates on every step; mimalloc makes a step about a quarter
// cheaper than glibc malloc (see engine/benches/interpreter.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "server",
    about = "成都市建筑业企业疫情防控模块 — workflow engine and application"
)]
struct Cli {
    /// Without a command: `serve --demo` (the embedded system with demo data).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system: web server, schedules, timers and activities.
    /// Embedded default: SQLite under ./data, simulated health commission,
    /// SMS written to a log.
    Serve(ServeArgs),
    /// Apply the database migrations (the engine's and the application's
    /// tables) of the configured database and exit: the deployment's
    /// migration job, run before new web servers and workers start.
    Migrate {
        /// Configuration file (YAML); EPI_* environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The Temporal worker (`engine: temporal`): runs the interpreter
    /// workflow and the application's activities (notices, SMS, the
    /// comparison, the warnings' projection) from the task queue. Start as
    /// many as the load needs, beside one or more `serve`; `/healthz` is
    /// served on `listen` for the probes. Needs a build with `--features
    /// temporal`.
    Worker {
        /// Configuration file (YAML); EPI_* environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check every workflow definition, form, schedule and rule; print each
    /// problem as file:line:col and exit non-zero if there is any.
    Validate {
        #[arg(default_value = "workflows")]
        workflows: PathBuf,
        #[arg(default_value = "rules")]
        rules: PathBuf,
    },
    /// The rules of `rules/`: `rules test` runs the cases of `rules/tests/*.yaml`.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Set up and administer a deployment's database (SQLite or PostgreSQL,
    /// as configured): the first administrator, accounts, enterprises.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Workflow instances on the configured database.
    Instances {
        #[command(subcommand)]
        command: InstancesCommand,
    },
    /// Policy (the city's work): publish, versions, rollback, migrate,
    /// back-tests of candidate definitions and rules.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    #[command(flatten)]
    Publishing(server::policy_cli::Publishing),
    /// Judge again the per-person data a finished comparison run stored
    /// with candidate definitions and rules (R8.2); print the counts per
    /// district before and after and the persons whose finding changed.
    /// Writes nothing to the database.
    Backtest(BacktestArgs),
}

/// The configuration an `instances` command works on.
#[derive(clap::Args)]
struct On {
    /// Configuration file (YAML); EPI_* environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Why an operator repairs (recorded in the instance's history).
#[derive(clap::Args)]
struct Why {
    /// The reason, recorded with who and when.
    #[arg(long)]
    reason: String,
}

#[derive(Subcommand)]
enum InstancesCommand {
    /// Search instances (newest first).
    List {
        #[command(flatten)]
        on: On,
        #[arg(long)]
        kind: Option<String>,
        /// running, completed, failed or terminated.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        enterprise: Option<String>,
        #[arg(long)]
        district: Option<String>,
        /// Masked ID number of the person.
        #[arg(long)]
        person: Option<String>,
        /// Definition version.
        #[arg(long)]
        version: Option<i64>,
        /// Started on or after this Chengdu day (YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Started on or before this Chengdu day (YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One instance: state, pending timers, activity tasks, whole history.
    Show {
        #[command(flatten)]
        on: On,
        id: String,
    },
    /// End an instance (its timers go; later inputs are ignored).
    Terminate {
        #[command(flatten)]
        on: On,
        id: String,
        #[command(flatten)]
        why: Why,
    },
    /// Apply again the input whose step failed, on the latest definition.
    Retry {
        #[command(flatten)]
        on: On,
        id: String,
        #[command(flatten)]
        why: Why,
    },
    /// Run once more an activity task that used up its attempts (by its
    /// idempotency key, `instance/aN`).
    RetryTask {
        #[command(flatten)]
        on: On,
        key: String,
        #[command(flatten)]
        why: Why,
    },
    /// Send a signal on someone's behalf.
    Signal {
        #[command(flatten)]
        on: On,
        id: String,
        name: String,
        /// The role the definition allows (enterprise, district, …).
        #[arg(long)]
        role: String,
        /// The account id acted for (enterprise id, district code, …).
        #[arg(long)]
        actor: String,
        /// The signal's payload as JSON.
        #[arg(long)]
        payload: Option<String>,
        #[command(flatten)]
        why: Why,
    },
    /// Verify instances' tamper-evident histories (each row carries the hash
    /// of the row before it): prints `ID: ok (N rows)` or `ID: broken at seq
    /// K: …` per instance; exits 1 if any is broken or not found.
    Verify {
        /// Configuration file (YAML); EPI_* environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Instance ids to check.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Check every instance, in pages by id.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Run every case of `<rules>/tests/*.yaml` (an input and the expected
    /// reasons, counts or return value); print 通过/失败 per case with a diff
    /// of expected and actual, and exit non-zero if any case fails.
    Test {
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator account; prints its generated password once
    /// (to be changed at first login).
    CreateAdmin {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        username: String,
        /// Bound mobile (SMS login codes, resets sent by SMS).
        #[arg(long)]
        mobile: Option<String>,
    },
    /// Give an account a new generated password, printed once (changed at
    /// next login), and end its sessions: for an administrator locked out.
    ResetPassword {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        username: String,
    },
    /// Create a token of the operators' JSON API (/api/v1); printed once,
    /// stored only as its SHA-256.
    CreateApiToken {
        #[command(flatten)]
        target: Target,
        /// Who or what uses it (recorded with every repair it makes).
        #[arg(long)]
        name: String,
    },
    /// Import district, city, operator and administrator accounts from CSV
    /// (header 账号,角色,区（市）县,手机号); prints each new account's
    /// generated password once. Existing accounts are left as they are.
    ImportAccounts {
        #[command(flatten)]
        target: Target,
        file: PathBuf,
    },
    /// Import enterprises that already have credit-system accounts (the
    /// administrator page's import; columns in README.md "Production").
    /// Any bad row and nothing is imported; importing again updates.
    ImportEnterprises {
        #[command(flatten)]
        target: Target,
        file: PathBuf,
    },
}

/// The deployment an admin command works on: the configuration `serve` uses.
#[derive(clap::Args)]
struct Target {
    /// Configuration file (YAML); EPI_* environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "workflows")]
    workflows: PathBuf,
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Configuration file (YAML); EPI_* environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed demo data and print the demo accounts with fresh passwords.
    /// Refused on a production configuration.
    #[arg(long)]
    demo: bool,
    /// Rehearsal: run on a simulated clock starting at this instant (e.g.
    /// 2026-12-01T04:55+08:00) that an operator moves forward from /ops.
    /// Refused on a production configuration.
    #[arg(long, value_parser = parse_instant)]
    simulated_clock: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long, default_value = "workflows")]
    workflows: PathBuf,
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
}

fn parse_instant(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M%:z"))
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("`{s}`: use a time with its offset, e.g. 2026-12-01T04:55+08:00"))
}

/// The demo's rehearsal starts at 04:55 today in Chengdu: the 05:00
/// comparison is five minutes away (or one click on the operator's page).
fn rehearsal_default_start() -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone as _;
    let tz = chrono_tz::Asia::Shanghai;
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    tz.from_local_datetime(&today.and_hms_opt(4, 55, 0).expect("valid time"))
        .single()
        .expect("Shanghai has no DST")
        .with_timezone(&chrono::Utc)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs {
        demo: true,
        simulated_clock: Some(rehearsal_default_start()),
        workflows: "workflows".into(),
        rules: "rules".into(),
        ..Default::default()
    }));
    let done = |()| ExitCode::SUCCESS;
    match command {
        Command::Serve(args) => block_on(serve(args)).map(done),
        Command::Migrate { config } => block_on(migrate(config)).map(done),
        Command::Worker { config } => block_on(worker(config)).map(done),
        Command::Admin { command } => block_on(admin(command)),
        Command::Instances { command } => block_on(instances(command)),
        Command::Rules {
            command: RulesCommand::Test { rules },
        } => Ok(rules_test(&rules)),
        Command::Policy { command } => match command {
            PolicyCommand::Publishing(c) => block_on(server::policy_cli::run(c)),
            PolicyCommand::Backtest(args) => block_on(policy_backtest(args)),
        },
        Command::Validate { workflows, rules } => validate(&workflows, &rules),
    }
}

/// Run `work` to its end on a new tokio runtime.
fn block_on<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
    rt.block_on(work)
}

/// `rules test`: run the cases of `<rules>/tests/*.yaml` and report.
fn rules_test(rules: &std::path::Path) -> ExitCode {
    match server::rule_cases::run_dir(rules) {
        Ok(ran) => {
            let (text, ok) = server::rule_cases::report(&ran);
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `validate`: compile the definitions and rules, and check what the
/// application itself needs of them; print a summary or every problem.
fn validate(workflows: &std::path::Path, rules: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (w, r) = engine::load_dirs(workflows, rules)
        .with_context(|| format!("reading {} and {}", workflows.display(), rules.display()))?;
    // Reference data the engine leaves to the application.
    let districts = workflows.join("districts.yaml");
    let districts_error = match server::domain::Districts::load(&districts) {
        Ok(_) => None,
        Err(e) => Some(format!("{}: {e}", districts.display())),
    };
    // The functions the comparison run calls by name must exist.
    let bundle = engine::compile_bundle(&w, &r, &engine::Options::default());
    let rules_error = bundle.as_ref().ok().and_then(|b| {
        server::comparison::check_rules(&b.rules)
            .and_then(|()| server::activities::check_windows(b))
            .and_then(|()| server::retention::check_policy(b))
            .err()
    });
    match bundle {
        Ok(b) if districts_error.is_none() && rules_error.is_none() => {
            let scripts = r.iter().filter(|f| f.path.ends_with(".rhai")).count();
            println!(
                "ok: {} 个工作流，{} 个表单，{} 个定时任务，{} 个活动，{} 个规则脚本，{} 个规则输入声明（样例均已运行）",
                b.workflows.len(),
                b.forms.len(),
                b.schedules.len(),
                b.activities.len(),
                scripts,
                r.len() - scripts
            );
            Ok(ExitCode::SUCCESS)
        }
        result => {
            let mut problems: Vec<String> = match result {
                Err(e) => e.0.iter().map(ToString::to_string).collect(),
                Ok(_) => Vec::new(),
            };
            problems.extend(districts_error);
            problems.extend(rules_error);
            for p in &problems {
                println!("{p}");
            }
            println!("共发现 {} 处问题", problems.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `server migrate`: both sets of migrations, nothing else (no
/// publication, no seeding), so the job is safe to run again.
async fn migrate(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = server::config::Config::from_process(config.as_deref())?;
    server::db::open(&config.database_url)
        .await
        .context("migrating the database")?;
    println!("数据库已迁移（引擎与应用的表均为最新）");
    Ok(())
}

/// `server worker`: the Temporal worker with this deployment's database
/// and gateways (the activities'), on the programs of the latest
/// publication. Publishes nothing (`serve` does).
#[cfg(feature = "temporal")]
async fn worker(config: Option<PathBuf>) -> anyhow::Result<()> {
    use server::system::{ClockChoice, Paths, Startup, System};
    let config = server::config::Config::from_process(config.as_deref())?;
    if config.engine != server::config::EngineKind::Temporal {
        anyhow::bail!("server worker 只用于 engine: temporal（当前为内嵌引擎，`server serve` 已包含其工作进程）");
    }
    let sys = System::open_with(
        &config,
        &Paths::repository_or_cwd(),
        ClockChoice::System,
        engine::runtime::Options::default(),
        Startup::Attach,
    )
    .await
    .context("opening the system")?;
    let options = server::backend::temporal_options(&config.temporal);
    let setup = engine_temporal::WorkerSetup {
        programs: sys.runtime.current().1.into_values().collect(),
        activities: sys.activities.clone(),
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    println!(
        "Temporal 工作进程已连接 {}（命名空间 {}，任务队列 {}）；健康检查 http://{}/healthz",
        options.address,
        options.namespace,
        options.task_queue,
        listener.local_addr()?
    );
    let health = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let probes = tokio::spawn(async move {
        axum::serve(listener, health)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        println!("stopping");
    };
    let mut worker = engine_temporal::Worker::new(&options, setup).await?;
    // A publication made by `serve` (the city's page) reaches this worker:
    // new children and scheduled starts take it.
    let latest = worker.programs();
    let follow = tokio::spawn(server::backend::follow_publications(
        sys.runtime.clone(),
        PUBLICATION_POLL,
        move |programs| latest.set(programs),
    ));
    let stop = worker.shutdown_handle();
    let (r, ()) = futures::future::join(worker.run(), async move {
        shutdown.await;
        stop();
    })
    .await;
    follow.abort();
    let _ = stop_tx.send(());
    let _ = probes.await;
    r.context("Temporal worker")
}

#[cfg(not(feature = "temporal"))]
async fn worker(_config: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!(
        "这个 server 构建不含 Temporal 后端：用 `cargo build -p server --features temporal` 构建 \
         (this build has no Temporal backend)"
    )
}

/// `serve` on `engine: temporal`: connect (a clear error naming the
/// address when Temporal cannot be reached), install the schedules as
/// Temporal Schedules, and send starts and signals there.
#[cfg(feature = "temporal")]
async fn on_temporal(
    sys: server::system::System,
    config: &server::config::Config,
) -> anyhow::Result<server::system::System> {
    let engine = engine_temporal::TemporalEngine::connect(server::backend::temporal_options(
        &config.temporal,
    ))
    .await?;
    let installed = engine
        .install_schedules(&sys.bundle.schedules)
        .await
        .context("installing the schedules on Temporal")?;
    println!(
        "工作流运行在 Temporal（{}）：{installed} 个定时计划已安装；请另行启动 `server worker`",
        config.temporal.address
    );
    // The city's publications (on this server's pages or by the CLI)
    // reach the client: new instances start on them.
    let client = engine.clone();
    tokio::spawn(server::backend::follow_publications(
        sys.runtime.clone(),
        PUBLICATION_POLL,
        move |programs| client.set_programs(programs),
    ));
    Ok(sys.on_temporal(engine).await?)
}

/// How often a Temporal worker or client looks for a new publication.
#[cfg(feature = "temporal")]
const PUBLICATION_POLL: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(not(feature = "temporal"))]
async fn on_temporal(
    _sys: server::system::System,
    _config: &server::config::Config,
) -> anyhow::Result<server::system::System> {
    anyhow::bail!(
        "engine: temporal 需要含 Temporal 后端的构建：`cargo build -p server --features temporal` \
         (this build has no Temporal backend)"
    )
}

/// `serve`: open the system, say where it is, then run the web server (and
/// on `engine: embedded` the runtime) until Ctrl-C.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = serve_config(&args)?;
    // Paths relative to the checkout when run through cargo from elsewhere.
    let paths = given_or_repository(&args.workflows, &args.rules);
    let rehearsal = args
        .simulated_clock
        .map(|t| std::sync::Arc::new(engine::clock::RehearsalClock::starting_at(t)));
    let sys = start_system(&config, &paths, rehearsal.as_ref()).await?;
    if !args.demo {
        say_if_no_administrator(&sys).await?;
    }
    if let Some(c) = &rehearsal {
        resume_rehearsal(c, &sys).await?;
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    announce(&sys, &listener, args.demo).await?;
    run_until_stopped(sys, &config, listener).await
}

/// The configuration `serve` runs on: demo and rehearsal refused in
/// production; the demo's simulated health commission finds more.
fn serve_config(args: &ServeArgs) -> anyhow::Result<server::config::Config> {
    let mut config = server::config::Config::from_process(args.config.as_deref())?;
    if (args.demo || args.simulated_clock.is_some()) && config.is_production() {
        anyhow::bail!(
            "--demo and --simulated-clock are refused on a production configuration \
             (real health-commission or SMS gateway, or PostgreSQL)"
        );
    }
    if args.demo && config.health.sim_rates == Default::default() {
        // Enough anomalies among the demo's 60 staff to see warnings at once.
        config.health.sim_rates.positive = 0.03;
        config.health.sim_rates.red = 0.02;
        config.health.sim_rates.yellow = 0.03;
    }
    Ok(config)
}

/// `workflows` and `rules` when they exist, else this checkout's.
fn given_or_repository(
    workflows: &std::path::Path,
    rules: &std::path::Path,
) -> server::system::Paths {
    if workflows.exists() {
        server::system::Paths {
            workflows: workflows.to_path_buf(),
            rules: rules.to_path_buf(),
        }
    } else {
        server::system::Paths::repository()
    }
}

/// Open the system on the rehearsal clock or the system's, and take back
/// the tasks a previous run left leased.
async fn start_system(
    config: &server::config::Config,
    paths: &server::system::Paths,
    rehearsal: Option<&std::sync::Arc<engine::clock::RehearsalClock>>,
) -> anyhow::Result<server::system::System> {
    use server::system::{ClockChoice, System};
    let clock = match rehearsal {
        Some(c) => ClockChoice::Adjustable(c.clone()),
        None => ClockChoice::System,
    };
    let opts = engine::runtime::Options {
        worker: config.worker.clone(),
        ..Default::default()
    };
    let sys = System::open(config, paths, clock, opts)
        .await
        .context("starting the system")?;
    sys.runtime
        .take_back_leases()
        .await
        .context("taking back the tasks of the previous run")?;
    Ok(sys)
}

/// Print the address and the system's time (and the demo's accounts).
async fn announce(
    sys: &server::system::System,
    listener: &tokio::net::TcpListener,
    demo: bool,
) -> anyhow::Result<()> {
    let url = format!("http://{}", listener.local_addr()?);
    if demo {
        print_demo_accounts(sys).await?;
    }
    println!(
        "\n已启动: {url}  （系统时间 {}）",
        sys.clock
            .now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y-%m-%d %H:%M")
    );
    if demo {
        println!("以 operator 登录后在“运行管理”点击“立即比对”，即可生成预警；企业账号在“预警处置”中处置。");
    }
    Ok(())
}

/// Serve the pages, and on `engine: embedded` run the runtime, until
/// either ends or Ctrl-C.
async fn run_until_stopped(
    sys: server::system::System,
    config: &server::config::Config,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let embedded = config.engine == server::config::EngineKind::Embedded;
    let sys = if embedded {
        sys
    } else {
        on_temporal(sys, config).await?
    };
    let runtime = sys.runtime.clone();
    // On Temporal the workers carry the effects out; this process's
    // runtime only keeps the definitions.
    let run = async move {
        if embedded {
            runtime.run().await
        } else {
            std::future::pending().await
        }
    };
    let app = server::web::app(sys, server::web::Options::of(config));
    tokio::select! {
        r = run => r.context("runtime")?,
        r = server::web::serve(listener, app) => r.context("web server")?,
        _ = tokio::signal::ctrl_c() => println!("stopping"),
    }
    Ok(())
}

/// A server without an administrator says how to create the first one.
async fn say_if_no_administrator(sys: &server::system::System) -> anyhow::Result<()> {
    let admins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM accounts WHERE role = 'admin' AND disabled_at IS NULL",
    )
    .fetch_one(&sys.pool)
    .await?;
    if admins == 0 {
        println!(
            "尚无系统管理员账号：先运行 `server admin create-admin --config <配置文件> --username <账号>`（见 README.md “Production”）"
        );
    }
    Ok(())
}

/// A rehearsal clock must not start before the latest instant recorded
/// (time never goes back in a history): it continues from there.
async fn resume_rehearsal(
    c: &std::sync::Arc<engine::clock::RehearsalClock>,
    sys: &server::system::System,
) -> anyhow::Result<()> {
    if let Some(latest) = sys.latest_recorded().await? {
        use engine::clock::{AdjustableClock as _, Clock as _};
        if latest > c.now() {
            let ahead = (latest - c.now()).to_std().unwrap_or_default();
            c.advance_by(ahead + std::time::Duration::from_secs(60));
            println!(
                "演练时钟从数据库中最后记录的时间继续（时间不能倒退）: {}",
                c.now()
                    .with_timezone(&chrono_tz::Asia::Shanghai)
                    .format("%Y-%m-%d %H:%M")
            );
        }
    }
    Ok(())
}

/// The demo's data, and its accounts with fresh passwords on the console.
async fn print_demo_accounts(sys: &server::system::System) -> anyhow::Result<()> {
    let now = sys.clock.now().timestamp_millis();
    let creds = server::demo::seed(&sys.pool, &sys.districts, now).await?;
    println!("\n演示账号（密码每次启动重新生成）:");
    for c in creds
        .iter()
        .filter(|c| c.role != "district" || c.username == server::demo::DISTRICT)
    {
        println!(
            "  {:<28} 账号 {:<12} 密码 {}",
            c.label, c.username, c.password
        );
    }
    println!("  其余22个区（市）县账号为其代码（如 qingyang），密码:");
    for c in creds
        .iter()
        .filter(|c| c.role == "district" && c.username != server::demo::DISTRICT)
    {
        println!("    {:<12} {}", c.username, c.password);
    }
    Ok(())
}

/// Who the audit records as having acted from the command line (not a
/// possible account name).
/// Instances checked per page by `instances verify --all`.
const VERIFY_PAGE: i64 = 500;

async fn instances(command: InstancesCommand) -> anyhow::Result<ExitCode> {
    use engine::store::{ChainCheck, Store as _};
    let InstancesCommand::Verify { config, ids, all } = command else {
        return instances_cli::instances_console(command).await;
    };
    let config = server::config::Config::from_process(config.as_deref())?;
    let store = server::db::open(&config.database_url)
        .await
        .context("opening the database")?;
    let (mut checked, mut failed) = (0u64, 0u64);
    let mut report = |c: &ChainCheck| {
        checked += 1;
        match &c.broken {
            None if c.unchained > 0 => println!(
                "{}: ok ({} rows; the first {} written before the chain, not checked)",
                c.instance_id, c.rows, c.unchained
            ),
            None => println!("{}: ok ({} rows)", c.instance_id, c.rows),
            Some(b) => {
                failed += 1;
                println!("{}: broken at {b}", c.instance_id);
            }
        }
    };
    let mut missing = 0u64;
    if all {
        let mut after: Option<String> = None;
        loop {
            let page = store
                .verify_histories(after.as_deref(), VERIFY_PAGE)
                .await?;
            page.iter().for_each(&mut report);
            match page.last() {
                Some(c) if page.len() as i64 == VERIFY_PAGE => after = Some(c.instance_id.clone()),
                _ => break,
            }
        }
    } else {
        for id in &ids {
            match store.verify_history(id).await {
                Ok(c) => report(&c),
                Err(engine::store::Error::NotFound(_)) => {
                    missing += 1;
                    println!("{id}: not found");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if all || checked + missing > 1 {
        println!("{checked} instance(s) checked, {failed} broken, {missing} not found");
    }
    Ok(if failed + missing > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

const CLI_ACTOR: &str = "（命令行）";

/// `admin create-admin | reset-password | create-api-token |
/// import-accounts | import-enterprises`.
async fn admin(command: AdminCommand) -> anyhow::Result<ExitCode> {
    let target = match &command {
        AdminCommand::CreateAdmin { target, .. }
        | AdminCommand::ResetPassword { target, .. }
        | AdminCommand::CreateApiToken { target, .. }
        | AdminCommand::ImportAccounts { target, .. }
        | AdminCommand::ImportEnterprises { target, .. } => target,
    };
    let sys = open_target(target).await?;
    match command {
        AdminCommand::CreateAdmin {
            username, mobile, ..
        } => create_admin(&sys, &username, mobile).await,
        AdminCommand::CreateApiToken { name, .. } => {
            let now = sys.clock.now().timestamp_millis();
            let token = server::api_tokens::create(&sys.pool, &name, now).await?;
            println!("API token for {name} (shown once; send it as `Authorization: Bearer …`):");
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::ResetPassword { username, .. } => reset_password(&sys, &username).await,
        AdminCommand::ImportAccounts { file, .. } => import_accounts(&sys, &file).await,
        AdminCommand::ImportEnterprises { file, .. } => import_enterprises(&sys, &file).await,
    }
}

/// The system an admin command works on (attached: nothing published).
async fn open_target(target: &Target) -> anyhow::Result<server::system::System> {
    let config = server::config::Config::from_process(target.config.as_deref())?;
    let paths = given_or_repository(&target.workflows, &target.rules);
    server::system::System::open_with(
        &config,
        &paths,
        server::system::ClockChoice::System,
        engine::runtime::Options::default(),
        server::system::Startup::Attach,
    )
    .await
    .context("opening the database")
}

/// `admin create-admin`: the account, its password printed once.
async fn create_admin(
    sys: &server::system::System,
    username: &str,
    mobile: Option<String>,
) -> anyhow::Result<ExitCode> {
    use server::admin;
    let now = sys.clock.now().timestamp_millis();
    let form = admin::NewAccount {
        username: username.to_string(),
        role: "admin".into(),
        district: String::new(),
        mobile: mobile.unwrap_or_default(),
    };
    match admin::create_account(&sys.pool, &sys.districts, &form, CLI_ACTOR, now).await {
        Ok(password) => {
            println!("已创建系统管理员 {}", username.trim());
            println!("初始密码: {password}");
            println!("（只显示这一次；首次登录须修改密码）");
            Ok(ExitCode::SUCCESS)
        }
        Err(admin::Error::Invalid(errors)) => {
            for m in errors.values() {
                println!("{m}");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// `admin reset-password`: a new password, shown here (or sent by SMS).
async fn reset_password(sys: &server::system::System, username: &str) -> anyhow::Result<ExitCode> {
    use server::admin;
    let now = sys.clock.now().timestamp_millis();
    match admin::reset_password(
        &sys.pool,
        None,
        &*sys.sms,
        username,
        admin::Delivery::Show,
        CLI_ACTOR,
        now,
    )
    .await?
    {
        admin::Reset::Shown(password) => {
            println!("已重置 {username} 的密码，其会话均已结束");
            println!("新密码: {password}");
            println!("（只显示这一次；下次登录须修改密码）");
        }
        admin::Reset::Sent { mobile_masked } => {
            println!("新密码已短信发送至 {mobile_masked}")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text of a CSV file (UTF-8, with or without a byte order mark).
fn read_csv(file: &std::path::Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    server::admin::csv_text(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// Rows with problems: print them all (bounded) and fail.
fn refuse_rows(file: &std::path::Path, e: server::admin::RowErrors) -> anyhow::Result<ExitCode> {
    println!("{}: {}", file.display(), e.summary());
    for l in e.lines() {
        println!("  {l}");
    }
    Ok(ExitCode::FAILURE)
}

/// `admin import-accounts`: the new accounts with their passwords.
async fn import_accounts(
    sys: &server::system::System,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use server::admin;
    let now = sys.clock.now().timestamp_millis();
    let text = read_csv(file)?;
    match admin::import_accounts(&sys.pool, &sys.districts, &text, CLI_ACTOR, now).await {
        Ok(report) => {
            println!(
                "新建账号 {} 个，已存在未改动 {} 个。初始密码只显示这一次，首次登录须修改：",
                report.created.len(),
                report.skipped.len()
            );
            for (username, role, password) in &report.created {
                println!("  账号 {username:<16} {role:<12} 初始密码 {password}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(admin::Error::Rows(e)) => refuse_rows(file, e),
        Err(e) => Err(e.into()),
    }
}

/// `admin import-enterprises`: counts, and each new account.
async fn import_enterprises(
    sys: &server::system::System,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use server::admin;
    let now = sys.clock.now().timestamp_millis();
    let text = read_csv(file)?;
    match admin::import_enterprises(&sys.pool, &*sys.sms, &sys.districts, &text, CLI_ACTOR, now)
        .await
    {
        Ok(report) => {
            println!(
                "新增企业 {} 家，更新企业 {} 家，新开账号 {} 个",
                report.created,
                report.updated,
                report.accounts.len()
            );
            for a in &report.accounts {
                println!(
                    "  {:<16} {}（{}）{}",
                    a.username,
                    a.enterprise,
                    a.methods,
                    if a.sms_sent { "" } else { " 短信未发送" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(admin::Error::Rows(e)) => refuse_rows(file, e),
        Err(e) => Err(e.into()),
    }
}

#[derive(clap::Args)]
struct BacktestArgs {
    /// Configuration file (YAML); EPI_* environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The comparison run (its id); default: the latest finished run.
    #[arg(long)]
    run: Option<String>,
    /// Directory with the candidate's `workflows/` and `rules/`.
    #[arg(long)]
    candidate: PathBuf,
    /// Write the changed persons to this CSV file (and the counts per
    /// district beside it, `NAME-districts.csv`).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// How many persons of each list to print.
    #[arg(long, default_value_t = 50)]
    show: usize,
}

/// `policy backtest`: exit 0 with the report, 1 when the candidate does
/// not compile or there is no run to test.
async fn policy_backtest(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    use server::backtest::{self, Candidate};
    let candidate = match Candidate::from_dir(&args.candidate).and_then(|c| c.compile()) {
        Ok(c) => c,
        Err(e) => {
            println!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let config = server::config::Config::from_process(args.config.as_deref())?;
    let store = server::db::open(&config.database_url)
        .await
        .context("opening the database")?;
    let report = match backtest::backtest(store.reader(), args.run.as_deref(), &candidate).await {
        Ok(r) => r,
        Err(e @ (backtest::Error::NoRun(_) | backtest::Error::Candidate(_))) => {
            println!("{e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    print!("{}", report.text(args.show));
    if let Some(file) = &args.csv {
        std::fs::write(file, report.persons_csv())
            .with_context(|| format!("writing {}", file.display()))?;
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("backtest");
        let districts = file.with_file_name(format!("{stem}-districts.csv"));
        std::fs::write(&districts, report.districts_csv())
            .with_context(|| format!("writing {}", districts.display()))?;
        println!("已写入 {} 和 {}", file.display(), districts.display());
    }
    Ok(ExitCode::SUCCESS)
}
