//! The whole system wired together: database (migrated, districts seeded),
//! compiled definitions and rules, adapters chosen by the configuration,
//! activities and the durable runtime. `serve`, the demo, the web tests and
//! the end-to-end tests all build it here, so they run the same thing.
//!
//! Must not hold business rules or HTTP: it only assembles.

use crate::activities::registry;
use crate::adapters::health::{HealthCommission, HttpHealth};
use crate::adapters::health_sim::Simulator;
use crate::adapters::sms::{HttpSms, Inbox, LogSms, MeteredSms, SmsGateway};
use crate::config::{Config, HealthMode, SmsMode};
use crate::domain::Districts;
use crate::services::Services;
use engine::clock::{AdjustableClock, Clock};
use engine::compile::form::FormSpec;
use engine::runtime::{Options, Runtime};
use engine::store::SqlStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading definitions: {0}")]
    Load(String),
    #[error("the definitions do not compile:\n{0}")]
    Compile(String),
    #[error("workflows/districts.yaml: {0}")]
    Districts(String),
    #[error("the definitions lack the form `{0}` the pages need")]
    MissingForm(&'static str),
    #[error(transparent)]
    Db(#[from] crate::db::Error),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Runtime(#[from] engine::runtime::Error),
    #[error("adapter: {0}")]
    Adapter(String),
    /// An operator's request that cannot be carried out, in words.
    #[error("{0}")]
    Refused(String),
}

/// Where definitions are read from.
#[derive(Debug, Clone)]
pub struct Paths {
    pub workflows: PathBuf,
    pub rules: PathBuf,
}

impl Paths {
    /// `workflows/` and `rules/` of this repository (for tests and
    /// `cargo run` from anywhere in the checkout).
    /// `workflows/` and `rules/` of the working directory when it has them
    /// (an installed server, the image's `/app`), else of this repository.
    pub fn repository_or_cwd() -> Paths {
        let here = Paths {
            workflows: PathBuf::from("workflows"),
            rules: PathBuf::from("rules"),
        };
        if here.workflows.is_dir() && here.rules.is_dir() {
            here
        } else {
            Paths::repository()
        }
    }

    pub fn repository() -> Paths {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Paths {
            workflows: root.join("workflows"),
            rules: root.join("rules"),
        }
    }
}

/// Everything running.
#[derive(Clone)]
pub struct System {
    pub store: SqlStore,
    pub pool: sqlx::AnyPool,
    /// For pages' reads: several read-only connections on a SQLite file
    /// (see `SqlStore::reader`), `pool` itself elsewhere.
    pub reader: sqlx::AnyPool,
    pub runtime: Runtime<SqlStore>,
    /// Starts and signals, on the engine that runs the workflows (the
    /// embedded `runtime` unless [`System::on_temporal`]).
    pub workflows: crate::backend::Workflows,
    /// The application's activities and projection hooks, the registry the
    /// embedded runtime runs (and a Temporal worker, `server worker`).
    pub activities: engine::runtime::Activities,
    pub clock: Arc<dyn Clock>,
    /// Set in rehearsals and tests: the clock an operator may move.
    pub adjustable: Option<Arc<dyn AdjustableClock>>,
    pub sms: Arc<dyn SmsGateway>,
    /// SMS go to the `sms_log` table (the embedded default), not a gateway.
    pub sms_logged: bool,
    /// In a demo, rehearsal or test with the log SMS: the messages in
    /// clear, as the phones got them (in memory only; `sms_log` and the
    /// log have their secrets redacted). Empty otherwise.
    pub sms_inbox: Inbox,
    pub districts: Arc<Districts>,
    pub daily_record: Arc<FormSpec>,
    pub disposal: Arc<FormSpec>,
    pub bundle: Arc<engine::Bundle>,
    /// Where the definitions were read from at start (the city's page
    /// publishes them, or a candidate based on them).
    pub paths: Paths,
    /// The application's metrics (HTTP, comparison, gateways), served
    /// with the runtime's on `/metrics`.
    pub metrics: crate::metrics::AppMetrics,
}

/// The clock to run on.
pub enum ClockChoice {
    System,
    Adjustable(Arc<dyn AdjustableClock>),
}

/// Read and compile the definitions and rules under `paths`, with the
/// checks the application adds (the rule functions the comparison calls).
pub fn compile(paths: &Paths) -> Result<engine::Bundle, Error> {
    let (w, r) = engine::load_dirs(&paths.workflows, &paths.rules)
        .map_err(|e| Error::Load(e.to_string()))?;
    compile_files(&w, &r)
}

/// Compile files already read (a candidate: the files under `paths` with
/// some replaced, say).
pub fn compile_files(
    w: &[engine::compile::program::SourceFile],
    r: &[engine::compile::program::SourceFile],
) -> Result<engine::Bundle, Error> {
    let bundle = engine::compile_bundle(w, r, &engine::Options::default()).map_err(|e| {
        Error::Compile(
            e.0.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    crate::comparison::check_rules(&bundle.rules).map_err(Error::Compile)?;
    crate::activities::check_windows(&bundle).map_err(Error::Compile)?;
    crate::retention::check_policy(&bundle).map_err(Error::Compile)?;
    Ok(bundle)
}

/// The files under `paths` with one replaced by `text` (matched by file
/// name, e.g. `warning.yaml` or `anomaly.rhai`; a new name is added beside
/// the others of its kind), compiled: a candidate to publish.
pub fn compile_candidate(paths: &Paths, name: &str, text: &str) -> Result<engine::Bundle, Error> {
    use engine::compile::program::SourceFile;
    let (mut w, mut r) = engine::load_dirs(&paths.workflows, &paths.rules)
        .map_err(|e| Error::Load(e.to_string()))?;
    let name = name.trim();
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::Refused(
            "请填写文件名，例如 warning.yaml 或 anomaly.rhai".into(),
        ));
    }
    let is_rule = name.ends_with(".rhai");
    if !is_rule && !name.ends_with(".yaml") && !name.ends_with(".yml") {
        return Err(Error::Refused(format!(
            "{name}：只能是 .yaml 定义或 .rhai 规则文件"
        )));
    }
    let files = if is_rule { &mut r } else { &mut w };
    let same =
        |f: &SourceFile| Path::new(&f.path).file_name().and_then(|n| n.to_str()) == Some(name);
    match files.iter_mut().find(|f| same(f)) {
        Some(f) => f.text = text.to_string(),
        None => {
            let dir = if is_rule {
                &paths.rules
            } else {
                &paths.workflows
            };
            files.push(SourceFile {
                path: dir.join(name).display().to_string(),
                text: text.to_string(),
            });
        }
    }
    compile_files(&w, &r)
}

/// Whether opening the system publishes the files (see
/// `Runtime::publish_at_startup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// A server starting: the files' new versions are published by 启动.
    Publish,
    /// A tool on the database (`server policy …`, `server instances …`):
    /// nothing is published; new instances run the latest publication.
    Attach,
}

impl System {
    /// The system as a server starts it: the files' new versions are
    /// published (start-up rule), a changed content under a published
    /// version number stops the start.
    pub async fn open(
        config: &Config,
        paths: &Paths,
        clock: ClockChoice,
        opts: Options,
    ) -> Result<System, Error> {
        Self::open_with(config, paths, clock, opts, Startup::Publish).await
    }

    pub async fn open_with(
        config: &Config,
        paths: &Paths,
        clock: ClockChoice,
        opts: Options,
        startup: Startup,
    ) -> Result<System, Error> {
        let bundle = compile(paths)?;
        let districts = Districts::load(paths.workflows.join("districts.yaml"))
            .map_err(|e| Error::Districts(e.to_string()))?;
        create_sqlite_dir(&config.database_url)?;
        let store = crate::db::open(&config.database_url).await?;
        let pool = store.pool().clone();
        crate::db::seed_districts(&pool, &districts).await?;
        let (clock, adjustable) = clock.split();
        let metrics = crate::metrics::AppMetrics::new();
        let gateways = Gateways::new(config, &pool, &clock, adjustable.is_some(), &metrics)?;
        let services = Arc::new(Services {
            store: store.clone(),
            pool: pool.clone(),
            reader: store.reader().clone(),
            clock: clock.clone(),
            health: gateways.health,
            sms: gateways.sms.clone(),
            rules: bundle.rules.clone(),
            rules_by_version: Default::default(),
        });
        let activities = metrics.meter_activities(registry(services));
        let runtime = startup
            .runtime(&store, &clock, &bundle, &activities, opts)
            .await?;
        runtime.on_incident(incident_notices(pool.clone(), clock.clone()));
        Ok(System {
            daily_record: form(&bundle, "daily_record")?,
            disposal: form(&bundle, "disposal")?,
            reader: store.reader().clone(),
            store,
            pool,
            workflows: crate::backend::Workflows::embedded(runtime.clone()),
            activities,
            runtime,
            clock,
            adjustable,
            sms: gateways.sms,
            sms_logged: config.sms.mode == SmsMode::Log,
            sms_inbox: gateways.sms_inbox,
            districts: Arc::new(districts),
            bundle: Arc::new(bundle),
            paths: paths.clone(),
            metrics,
        })
    }

    /// The latest instant recorded by workflows or schedules: a rehearsal
    /// clock must not start before it (time never goes back in a history).
    pub async fn latest_recorded(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, Error> {
        use engine::store::Store as _;
        Ok(self
            .store
            .latest_recorded()
            .await
            .map_err(engine::runtime::Error::from)?)
    }

    /// Run the workflows on Temporal (`engine: temporal`): starts and
    /// signals go to `engine`, whose programs are this system's latest
    /// publication. The embedded runtime stays the definitions' store and
    /// is not run.
    #[cfg(feature = "temporal")]
    pub async fn on_temporal(
        mut self,
        engine: engine_temporal::TemporalEngine,
    ) -> Result<System, Error> {
        engine.set_programs(self.runtime.current().1.into_values());
        self.workflows.backend = crate::backend::Backend::Temporal(Box::new(engine));
        Ok(self)
    }

    /// Start a comparison run now (the operator's "立即比对"). Returns its id.
    pub async fn run_comparison_now(&self) -> Result<String, Error> {
        let now = self.clock.now();
        let id = format!("comparison/manual/{}", now.timestamp_millis());
        let slot = format!(
            "手动 {}",
            now.with_timezone(&chrono_tz::Asia::Shanghai)
                .format("%Y-%m-%d %H:%M")
        );
        self.workflows
            .start("comparison", &id, serde_json::json!({ "slot": slot }))
            .await?;
        Ok(id)
    }

    /// Run a comparison again for the slot of an earlier run (a slot whose
    /// run failed, say): a new instance with the same `slot` input, as of
    /// now. Returns its id.
    pub async fn rerun_comparison(&self, earlier: &str) -> Result<String, Error> {
        use engine::store::Store;
        let row = self
            .store
            .instance(earlier)
            .await
            .map_err(engine::runtime::Error::from)?
            .filter(|r| r.kind == "comparison")
            .ok_or_else(|| Error::Refused(format!("没有比对实例 {earlier}")))?;
        let state = engine::inspect::state_of(&row).map_err(Error::Refused)?;
        let id = format!("{earlier}#rerun-{}", self.clock.now().timestamp_millis());
        self.workflows
            .start("comparison", &id, (*state.input).clone())
            .await?;
        Ok(id)
    }
}

/// A form the pages need, from the compiled definitions.
fn form(bundle: &engine::Bundle, name: &'static str) -> Result<Arc<FormSpec>, Error> {
    bundle
        .forms
        .get(name)
        .cloned()
        .ok_or(Error::MissingForm(name))
}

/// The directory of a SQLite database file, made when missing (a fresh
/// install's `data/`). Nothing for other databases.
fn create_sqlite_dir(database_url: &str) -> Result<(), Error> {
    let Some(dir) = database_url
        .strip_prefix("sqlite://")
        .and_then(|p| Path::new(p.split('?').next().unwrap_or(p)).parent())
    else {
        return Ok(());
    };
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(dir).map_err(|e| {
            crate::db::Error::Open(format!("无法建立数据库所在目录 {}：{e}", dir.display()))
        })?;
    }
    Ok(())
}

impl ClockChoice {
    /// The clock to run on, and the same clock when an operator may move it.
    fn split(self) -> (Arc<dyn Clock>, Option<Arc<dyn AdjustableClock>>) {
        match self {
            ClockChoice::System => (Arc::new(engine::clock::SystemClock), None),
            ClockChoice::Adjustable(c) => (c.clone() as Arc<dyn Clock>, Some(c)),
        }
    }
}

/// The health commission and the SMS gateway the configuration chooses,
/// metered.
struct Gateways {
    health: Arc<dyn HealthCommission>,
    sms: Arc<dyn SmsGateway>,
    /// The messages in clear, for a demo or rehearsal with the log SMS.
    sms_inbox: Inbox,
}

impl Gateways {
    fn new(
        config: &Config,
        pool: &sqlx::AnyPool,
        clock: &Arc<dyn Clock>,
        rehearsal: bool,
        metrics: &crate::metrics::AppMetrics,
    ) -> Result<Gateways, Error> {
        let health: Arc<dyn HealthCommission> = match config.health.mode {
            HealthMode::Sim => Arc::new(Simulator::new(
                config.health.sim_seed,
                config.health.sim_rates,
            )),
            HealthMode::Http => Arc::new(
                HttpHealth::new(config.health.http_options())
                    .map_err(|e| Error::Adapter(e.to_string()))?
                    .with_metrics(metrics.clone()),
            ),
        };
        let sms_inbox = Inbox::default();
        let sms: Arc<dyn SmsGateway> = match config.sms.mode {
            // A demo or rehearsal (the clock an operator may move) shows
            // messages on the console so a newcomer can log in.
            SmsMode::Log if rehearsal => {
                Arc::new(LogSms::new(pool.clone(), clock.clone()).with_console(sms_inbox.clone()))
            }
            SmsMode::Log => Arc::new(LogSms::new(pool.clone(), clock.clone())),
            SmsMode::Http => Arc::new(
                HttpSms::new(
                    config.sms.base_url.clone(),
                    config.sms.token.clone(),
                    std::time::Duration::from_millis(config.sms.timeout_ms),
                )
                .map_err(|e| Error::Adapter(e.to_string()))?,
            ),
        };
        Ok(Gateways {
            health,
            sms: Arc::new(MeteredSms::new(sms, metrics.clone())),
            sms_inbox,
        })
    }
}

impl Startup {
    /// The embedded runtime over `store`: publishing the files' new
    /// versions, or attached to what is published.
    async fn runtime(
        self,
        store: &SqlStore,
        clock: &Arc<dyn Clock>,
        bundle: &engine::Bundle,
        activities: &engine::runtime::Activities,
        opts: Options,
    ) -> Result<Runtime<SqlStore>, Error> {
        let (store, clock, activities) = (store.clone(), clock.clone(), activities.clone());
        Ok(match self {
            Startup::Publish => Runtime::new(store, clock, bundle, activities, opts).await?,
            Startup::Attach => Runtime::attach(store, clock, bundle, activities, opts).await?,
        })
    }
}

/// Incidents (a step whose rules failed, an activity that used up its
/// attempts) become notices in the operators' inbox, linked to the instance.
fn incident_notices(pool: sqlx::AnyPool, clock: Arc<dyn Clock>) -> engine::runtime::IncidentSink {
    Arc::new(move |i: engine::runtime::Incident| {
        let (pool, now) = (pool.clone(), clock.now().timestamp_millis());
        tokio::spawn(async move {
            let (title, what) = match (i.kind, &i.activity) {
                ("activity_failed", Some(a)) => ("故障：活动重试已用尽", format!("活动 {a}")),
                _ => ("故障：流程步骤失败，等待运维处理", "规则执行".to_string()),
            };
            let body = format!("实例 {}：{what}失败。{}", i.instance_id, i.error);
            let link = format!("/ops/instances/{}", urlencoding::encode(&i.instance_id));
            let id = format!("incident/{}/{}/{now}", i.instance_id, i.kind);
            let r = sqlx::query(
                "INSERT INTO notices (id, recipient_kind, recipient_id, title, body, link, created_at) \
                 VALUES ($1, 'operator', 'operators', $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&id)
            .bind(title)
            .bind(&body)
            .bind(&link)
            .bind(now)
            .execute(&pool)
            .await;
            if let Err(e) = r {
                tracing::error!(incident = %id, error = %e, "could not record the incident notice");
            }
        });
    })
}
