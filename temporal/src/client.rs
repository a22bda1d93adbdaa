//! The client side: what the web server (and the CLI) call instead of the
//! embedded runtime when `engine: temporal`.

use crate::codec::{self, Definition, InstanceView, RetryArgs, SignalArgs, StartArgs, StepRecord};
use crate::workflow::Interpreter;
use crate::{Options, Tls};
use engine::Program;
use engine::compile::schedule::{CatchUp, ON_TIME_GRACE, ScheduleSpec};
use engine::interpreter::{self, Actor, Input, Instance};
use engine::store::HistoryRow;
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::schedules::{
    CreateScheduleOptions, ScheduleAction, ScheduleOverlapPolicy, ScheduleSpec as TemporalSpec,
};
use temporalio_client::{
    Client, ClientOptions, ClientTlsOptions, ConnectionOptions, TlsOptions,
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowListOptions, WorkflowQueryOptions,
    WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_common::search_attributes::{SearchAttributeKey, SearchAttributes};

/// What can go wrong talking to Temporal. Messages are in Chinese and
/// English: operators read them in logs and on start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("无法连接 Temporal（{address}）/ cannot reach Temporal at {address}: {detail}")]
    Unreachable { address: String, detail: String },
    #[error("Temporal 配置错误 / invalid Temporal configuration: {0}")]
    Config(String),
    #[error("未知工作流 `{0}` / unknown workflow `{0}`")]
    UnknownWorkflow(String),
    #[error("实例 `{0}` 不存在 / no instance `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] interpreter::Error),
    /// A refusal (the signal was not sent): the workflow's own words, or
    /// an operator's repair refused as the embedded runtime refuses it.
    #[error("{0}")]
    SignalRefused(String),
    #[error("Temporal 调用失败 / Temporal call failed: {0}")]
    Temporal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn temporal(e: impl std::fmt::Display) -> Error {
    Error::Temporal(e.to_string())
}

/// [`Error::NotFound`] when Temporal says there is no such workflow.
fn not_found_or(id: &str, e: impl std::fmt::Display) -> Error {
    let s = e.to_string();
    if s.contains("not found") || s.contains("NotFound") {
        Error::NotFound(id.to_string())
    } else {
        temporal(s)
    }
}

/// The engine on Temporal, client side. Cheap to clone.
#[derive(Clone)]
pub struct TemporalEngine {
    client: Client,
    options: Options,
    latest: Arc<RwLock<BTreeMap<String, Arc<Program>>>>,
}

/// The connection options for `options` (TLS files read here).
pub(crate) fn connection_options(options: &Options) -> Result<ConnectionOptions> {
    let url = url::Url::parse(&options.address)
        .map_err(|e| Error::Config(format!("address `{}`: {e}", options.address)))?;
    let tls = options.tls.as_ref().map(tls_options).transpose()?;
    let identity = options
        .identity
        .clone()
        .unwrap_or_else(|| format!("epi@{}", std::process::id()));
    Ok(ConnectionOptions::new(url)
        .identity(identity)
        .maybe_tls_options(tls)
        .connect_timeout(Duration::from_secs(10))
        .build())
}

fn tls_options(t: &Tls) -> Result<TlsOptions> {
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
    };
    let ca = t.ca.as_ref().map(read).transpose()?;
    let client = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some(
            ClientTlsOptions::builder()
                .client_cert(read(c)?)
                .client_private_key(read(k)?)
                .build(),
        ),
        (None, None) => None,
        _ => {
            return Err(Error::Config(
                "TLS 客户端证书和私钥须同时给出 / TLS cert and key go together".into(),
            ));
        }
    };
    let mut o = TlsOptions::default();
    o.server_root_ca_cert = ca;
    o.domain = t.domain.clone();
    o.client_tls_options = client;
    Ok(o)
}

/// Connect a client, with the clear message when Temporal is not there.
pub(crate) async fn connect_client(options: &Options) -> Result<Client> {
    let conn = connection_options(options)?;
    Client::connect(conn, ClientOptions::new(options.namespace.clone()).build())
        .await
        .map_err(|e| Error::Unreachable {
            address: options.address.clone(),
            detail: e.to_string(),
        })
}

impl TemporalEngine {
    /// Connect to Temporal; fails with [`Error::Unreachable`] (naming the
    /// address) when it cannot be reached.
    pub async fn connect(options: Options) -> Result<Self> {
        let client = connect_client(&options).await?;
        Ok(TemporalEngine {
            client,
            options,
            latest: Default::default(),
        })
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The underlying SDK client (for what this type does not wrap).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Make these programs the ones new instances start on (a bundle's
    /// workflows, or a publication's).
    pub fn set_programs(&self, programs: impl IntoIterator<Item = Arc<Program>>) {
        let mut l = self.latest.write().expect("lock");
        for p in programs {
            crate::cache::insert(p.clone());
            l.insert(p.name.clone(), p);
        }
    }

    /// The program new instances of `workflow` start on.
    pub fn latest_program(&self, workflow: &str) -> Option<Arc<Program>> {
        self.latest.read().expect("lock").get(workflow).cloned()
    }

    /// Start `workflow` as instance `id` on its latest program. Returns
    /// false if `id` already exists; invalid input is refused here, as the
    /// embedded runtime refuses it.
    pub async fn start(&self, workflow: &str, id: &str, input: Value) -> Result<bool> {
        let program = self
            .latest_program(workflow)
            .ok_or_else(|| Error::UnknownWorkflow(workflow.to_string()))?;
        // The same check the workflow's first step makes, before anything
        // is sent; its search fields go with the start (one upsert less).
        let first = interpreter::step(
            &program,
            None,
            &Input::Started {
                at: chrono::Utc::now(),
                input: input.clone(),
            },
        )?;
        let args = StartArgs {
            workflow: workflow.to_string(),
            definition: Some(Definition::of(&program)),
            id: id.to_string(),
            input,
            parent: None,
            launch: None,
        };
        let attrs = SearchAttributes::new(
            codec::search_attributes(&first.state, false)
                .into_iter()
                .filter_map(|(k, v)| Some(SearchAttributeKey::<String>::keyword(k).value_set(v?))),
        );
        let opts = WorkflowStartOptions::new(self.options.task_queue.clone(), id.to_string())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
            .search_attributes(attrs)
            .build();
        match self
            .client
            .start_workflow(Interpreter::run, args, opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(false),
            Err(e) => Err(temporal(e)),
        }
    }

    /// Start many instances; ids that exist are skipped. Returns how many
    /// were created. Any invalid input refuses the batch before anything
    /// is started.
    pub async fn start_many(&self, items: &[(&str, String, Value)]) -> Result<usize> {
        for (workflow, _, input) in items {
            let program = self
                .latest_program(workflow)
                .ok_or_else(|| Error::UnknownWorkflow(workflow.to_string()))?;
            interpreter::step(
                &program,
                None,
                &Input::Started {
                    at: chrono::Utc::now(),
                    input: input.clone(),
                },
            )?;
        }
        let starts = items
            .iter()
            .map(|(workflow, id, input)| self.start(workflow, id, input.clone()));
        let mut n = 0;
        // A few at a time: Temporal takes them concurrently.
        let mut results = futures::stream::iter(starts).buffered(16);
        while let Some(r) = results.next().await {
            if r? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deliver a signal. A refusal (wrong state, role, content) comes back
    /// as [`Error::Refused`] with the interpreter's error (or
    /// [`Error::SignalRefused`] in words when this process does not know
    /// the instance's program) and nothing is sent; the workflow checks
    /// again when it applies the signal and ignores one refused then.
    pub async fn signal(&self, id: &str, name: &str, payload: Value, actor: Actor) -> Result<()> {
        let args = SignalArgs {
            name: name.to_string(),
            payload,
            actor,
        };
        let h = self
            .client
            .get_workflow_handle::<Interpreter>(id.to_string());
        let refusal = h
            .query(
                Interpreter::check,
                args.clone(),
                WorkflowQueryOptions::default(),
            )
            .await
            .map_err(|e| self.query_error(id, e))?;
        if let Some(r) = refusal {
            return Err(self
                .typed_refusal(id, &args)
                .await
                .unwrap_or(Error::SignalRefused(r)));
        }
        self.signal_unchecked(id, args).await
    }

    /// The refusal as the interpreter's own error (field errors and all,
    /// as the embedded runtime returns it), when this process knows the
    /// instance's program: the same step, run here on the instance's state.
    async fn typed_refusal(&self, id: &str, args: &SignalArgs) -> Option<Error> {
        let state = self.state(id).await.ok()??;
        let program = crate::cache::get(&state.hash)?;
        let input = Input::Signal {
            at: chrono::Utc::now(),
            name: args.name.clone(),
            payload: args.payload.clone(),
            actor: args.actor.clone(),
        };
        interpreter::step(&program, Some(&state), &input)
            .err()
            .map(Error::Refused)
    }

    /// Send a signal without asking first (for senders that must not
    /// wait: an import job, another workflow).
    pub async fn signal_unchecked(&self, id: &str, args: SignalArgs) -> Result<()> {
        let h = self
            .client
            .get_workflow_handle::<Interpreter>(id.to_string());
        h.signal(Interpreter::event, args, WorkflowSignalOptions::default())
            .await
            .map_err(|e| not_found_or(id, e))
    }

    fn query_error(&self, id: &str, e: temporalio_client::errors::WorkflowQueryError) -> Error {
        match e {
            temporalio_client::errors::WorkflowQueryError::NotFound(_) => {
                Error::NotFound(id.to_string())
            }
            e => temporal(e),
        }
    }

    /// The interpreter state of an instance (None when there is no such
    /// instance, or before its first step).
    pub async fn state(&self, id: &str) -> Result<Option<Instance>> {
        Ok(self.view(id).await?.map(|v| v.instance))
    }

    /// The instance with its status (`running`, `completed`, `failed`)
    /// and the step that failed, if one did (None when there is no such
    /// instance, or before its first step).
    pub async fn view(&self, id: &str) -> Result<Option<InstanceView>> {
        let h = self
            .client
            .get_workflow_handle::<Interpreter>(id.to_string());
        match h
            .query(Interpreter::state, (), WorkflowQueryOptions::default())
            .await
        {
            Ok(s) => Ok(s),
            Err(temporalio_client::errors::WorkflowQueryError::NotFound(_)) => Ok(None),
            Err(e) => Err(temporal(e)),
        }
    }

    /// Apply again the input whose step failed, after the definition was
    /// fixed, as `engine::runtime`'s `retry_failed_step` does: refused
    /// unless the instance has a failed step and the latest published
    /// program of its workflow still has its current state. Sends one
    /// [`codec::RETRY_SIGNAL`] with the operator, the reason and that
    /// program; the workflow moves to it and applies the input there (if
    /// it fails again, the instance stays failed with a new `step_failed`).
    pub async fn retry_failed_step(&self, id: &str, by: &engine::runtime::Repair) -> Result<()> {
        if by.operator.trim().is_empty() || by.reason.trim().is_empty() {
            return Err(Error::SignalRefused("运维操作须注明操作人和原因".into()));
        }
        let view = self
            .view(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        if view.failed.is_none() {
            return Err(Error::SignalRefused(format!(
                "实例 {id} 没有失败的步骤（状态：{}）",
                view.status
            )));
        }
        let state = &view.instance;
        let latest = self
            .latest_program(&state.workflow)
            .ok_or_else(|| Error::UnknownWorkflow(state.workflow.to_string()))?;
        if let Some(refusal) = codec::retry_refusal(&latest, state) {
            return Err(Error::SignalRefused(refusal));
        }
        let args = RetryArgs {
            operator: by.operator.clone(),
            reason: by.reason.clone(),
            definition: Definition::of(&latest),
        };
        self.client
            .get_workflow_handle::<Interpreter>(id.to_string())
            .signal(Interpreter::retry, args, WorkflowSignalOptions::default())
            .await
            .map_err(|e| not_found_or(id, e))
    }

    /// Wait for an instance to end and return its outcome (terminal
    /// state, status label, output), as a parent receives it. Waits on
    /// Temporal's long poll: no query, no worker needed to answer.
    pub async fn result(&self, id: &str) -> Result<crate::Outcome> {
        let h = self
            .client
            .get_workflow_handle::<Interpreter>(id.to_string());
        h.get_result(Default::default()).await.map_err(temporal)
    }

    /// End an instance where it stands (an operator's repair); Temporal
    /// records the reason. Its pending timers and activities are dropped.
    pub async fn terminate(&self, id: &str, reason: &str) -> Result<()> {
        let h = self
            .client
            .get_workflow_handle::<Interpreter>(id.to_string());
        h.terminate(
            temporalio_client::WorkflowTerminateOptions::builder()
                .reason(reason.to_string())
                .build(),
        )
        .await
        .map_err(|e| not_found_or(id, e))
    }

    /// The instance's steps as history rows, as the embedded runtime
    /// writes them (without the hash chain: Temporal's history is the
    /// record), so `engine::inspect::events` and the operator view read
    /// them unchanged.
    pub async fn history_rows(&self, id: &str) -> Result<Vec<HistoryRow>> {
        let h = self
            .client
            .get_workflow_handle::<Interpreter>(id.to_string());
        let steps: Vec<StepRecord> = h
            .query(Interpreter::steps, (), WorkflowQueryOptions::default())
            .await
            .map_err(|e| self.query_error(id, e))?;
        Ok(history_rows(id, &steps))
    }

    /// The instance's history as the operator reads it.
    pub async fn history(&self, id: &str) -> Result<Vec<engine::inspect::Entry>> {
        Ok(engine::inspect::events(&self.history_rows(id).await?))
    }

    /// The instance's inputs in order (for replay and audits).
    pub async fn inputs(&self, id: &str) -> Result<Vec<Input>> {
        Ok(engine::runtime::inputs(&self.history_rows(id).await?))
    }

    /// Instance ids whose search field (`workflow`, `enterprise_id`,
    /// `district`, `person`, `state`) equals `value`, from Temporal's
    /// visibility, newest first, at most `limit`.
    pub async fn search(&self, field: &str, value: &str, limit: usize) -> Result<Vec<String>> {
        let attr = codec::search_attribute(field)
            .ok_or_else(|| Error::Config(format!("unknown search field `{field}`")))?;
        let query = format!(
            "WorkflowType = '{}' AND {}",
            codec::WORKFLOW_TYPE,
            codec::visibility_query(attr, value)
        );
        let mut s = self
            .client
            .list_workflows(query, WorkflowListOptions::builder().limit(limit).build());
        let mut out = Vec::new();
        while let Some(w) = s.next().await {
            out.push(w.map_err(temporal)?.id().to_string());
        }
        Ok(out)
    }

    /// Turn the compiled schedules into Temporal Schedules (created, or
    /// updated when they exist): each daily time in the schedule's time
    /// zone; catch-up as the embedded runtime does it (see
    /// [`schedule_policy`]). Each start runs the `epi` workflow in launch
    /// mode, which starts `{schedule}@{slot}` on the latest definition.
    pub async fn install_schedules(&self, schedules: &[ScheduleSpec]) -> Result<usize> {
        for s in schedules {
            let id = schedule_id(&s.name);
            let (overlap, window) = schedule_policy(s.catch_up);
            let spec = schedule_spec(s);
            let action = || {
                ScheduleAction::start_workflow(
                    Interpreter::run,
                    StartArgs {
                        workflow: s.workflow.clone(),
                        definition: None,
                        id: id.clone(),
                        input: s.input.clone(),
                        parent: None,
                        launch: Some(codec::Launch::of(s)),
                    },
                    self.options.task_queue.clone(),
                    id.clone(),
                )
            };
            let created = self
                .client
                .create_schedule(
                    id.clone(),
                    CreateScheduleOptions::builder()
                        .action(action())
                        .spec(spec.clone())
                        .overlap_policy(overlap)
                        .note(format!("epi schedule {}", s.name))
                        .build(),
                )
                .await;
            let h = self.client.get_schedule_handle(id.clone());
            let exists = match created {
                Ok(_) => false,
                Err(temporalio_client::schedules::ScheduleError::Rpc(st))
                    if st.code() == tonic::Code::AlreadyExists =>
                {
                    true
                }
                Err(e) => return Err(temporal(e)),
            };
            let action = action();
            h.update(
                move |u| {
                    if exists {
                        u.set_spec(spec);
                        u.set_action(action);
                    }
                    u.set_overlap_policy(overlap);
                    u.set_catchup_window(window);
                },
                Default::default(),
            )
            .await
            .map_err(temporal)?;
        }
        Ok(schedules.len())
    }
}

/// The Temporal Schedule id of a schedule of `workflows/schedules.yaml`.
pub fn schedule_id(name: &str) -> String {
    format!("epi-schedule-{name}")
}

/// A schedule's times as Temporal cron strings in its time zone.
pub fn schedule_spec(s: &ScheduleSpec) -> TemporalSpec {
    use chrono::Timelike;
    TemporalSpec::builder()
        .cron_strings(
            s.times
                .iter()
                .map(|t| format!("{} {} * * *", t.minute(), t.hour()))
                .collect::<Vec<_>>(),
        )
        .timezone_name(s.tz.name().to_string())
        .build()
}

/// The embedded runtime's catch-up rule in Temporal's terms. Temporal
/// takes every missed action within the catch-up window; each one starts a
/// short launcher run, which applies the engine's own rule
/// ([`codec::Launch::runs`]: `once` starts only the newest missed slot,
/// `none` only a slot within the on-time grace). So the launchers may
/// overlap (`AllowAll`) and the window only bounds how far back Temporal
/// looks: [`ON_TIME_GRACE`] for `none`, a year otherwise.
pub fn schedule_policy(c: CatchUp) -> (ScheduleOverlapPolicy, Duration) {
    let year = Duration::from_secs(365 * 24 * 3600);
    match c {
        CatchUp::None => (
            ScheduleOverlapPolicy::AllowAll,
            ON_TIME_GRACE.to_std().expect("positive"),
        ),
        CatchUp::Once | CatchUp::All => (ScheduleOverlapPolicy::AllowAll, year),
    }
}

/// Step records as the store's history rows of instance `id`.
pub fn history_rows(id: &str, steps: &[StepRecord]) -> Vec<HistoryRow> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| HistoryRow {
            instance_id: id.to_string(),
            seq: i as i64,
            at: s.at,
            kind: s.kind.clone(),
            payload: s.payload.to_string(),
            prev_hash: None,
            hash: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_mistakes_are_named() {
        let bad = Options {
            address: "not a url".into(),
            ..Options::default()
        };
        let Err(e) = connection_options(&bad) else {
            panic!("accepted");
        };
        assert!(e.to_string().contains("not a url"), "{e}");

        let dir = std::env::temp_dir().join(format!("epi-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("client.pem");
        std::fs::write(&cert, "CERT").unwrap();
        let half = Options {
            tls: Some(Tls {
                cert: Some(cert.clone()),
                ..Tls::default()
            }),
            ..Options::default()
        };
        let Err(e) = connection_options(&half) else {
            panic!("a cert without its key accepted");
        };
        assert!(e.to_string().contains("cert and key go together"), "{e}");
        let missing = Options {
            tls: Some(Tls {
                ca: Some(dir.join("nope.pem")),
                ..Tls::default()
            }),
            ..Options::default()
        };
        let Err(e) = connection_options(&missing) else {
            panic!("a missing CA file accepted");
        };
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let full = Options {
            address: "https://temporal.example:7233".into(),
            tls: Some(Tls {
                ca: Some(cert.clone()),
                cert: Some(cert.clone()),
                key: Some(cert),
                domain: Some("temporal.example".into()),
            }),
            ..Options::default()
        };
        let c = connection_options(&full).unwrap();
        let tls = c.tls_options.unwrap();
        assert_eq!(tls.domain.as_deref(), Some("temporal.example"));
        assert_eq!(tls.server_root_ca_cert.as_deref(), Some(&b"CERT"[..]));
        assert!(tls.client_tls_options.is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn schedules_map_onto_temporal() {
        let spec = ScheduleSpec {
            name: "comparison".into(),
            workflow: "comparison".into(),
            tz: chrono_tz::Asia::Shanghai,
            times: vec!["05:00:00".parse().unwrap(), "10:30:00".parse().unwrap()],
            catch_up: CatchUp::Once,
            input: Value::Null,
        };
        let t = schedule_spec(&spec);
        assert_eq!(t.cron_strings, vec!["0 5 * * *", "30 10 * * *"]);
        assert_eq!(t.timezone_name, "Asia/Shanghai");
        assert_eq!(schedule_id("comparison"), "epi-schedule-comparison");
        assert_eq!(
            schedule_policy(CatchUp::None).1,
            ON_TIME_GRACE.to_std().unwrap()
        );
        assert!(schedule_policy(CatchUp::Once).1 > Duration::from_secs(30 * 24 * 3600));
    }

    #[test]
    fn step_records_read_as_history() {
        let steps = vec![StepRecord {
            at: "2026-12-01T02:00:00Z".parse().unwrap(),
            kind: "started".into(),
            payload: serde_json::json!({
                "input": {"type": "started", "at": "2026-12-01T02:00:00Z", "input": {}},
                "state": "first",
                "decisions": [],
                "effects": [{"type": "schedule_activity", "id": "a1", "name": "say",
                    "args": {}, "retry": {"max_attempts": 1, "initial_backoff": 1000,
                    "max_backoff": 1000, "timeout": 1000}}],
                "ignored": null,
            }),
        }];
        let rows = history_rows("w-1", &steps);
        let events = engine::inspect::events(&rows);
        assert!(events.iter().any(|e| matches!(
            &e.event,
            engine::inspect::Event::ActivityScheduled { idempotency_key, .. } if idempotency_key == "w-1/a1"
        )));
        assert_eq!(engine::runtime::inputs(&rows).len(), 1);
    }
}
