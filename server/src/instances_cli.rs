//! `server instances list | show | terminate | retry | retry-task | signal`:
//! the operator's console on the command line. Like the pages it goes
//! through `backend::Workflows`, so on `engine: temporal` it searches
//! Temporal's visibility, reads the instance from Temporal and repairs
//! there.

use crate::{InstancesCommand, Why};
use anyhow::Context as _;
use server::console::RepairAction;
use server::instances::{InstanceSummary, InstanceView};
use server::system::System;
use std::process::ExitCode;

/// `instances list | show | terminate | retry | retry-task | signal`.
pub async fn instances_console(command: InstancesCommand) -> anyhow::Result<ExitCode> {
    let on = match &command {
        InstancesCommand::List { on, .. }
        | InstancesCommand::Show { on, .. }
        | InstancesCommand::Terminate { on, .. }
        | InstancesCommand::Retry { on, .. }
        | InstancesCommand::RetryTask { on, .. }
        | InstancesCommand::Signal { on, .. } => on,
        InstancesCommand::Verify { .. } => unreachable!("verify has its own command"),
    };
    let config = server::config::Config::from_process(on.config.as_deref())?;
    // A tool on the database: it publishes nothing (see `policy publish`).
    let sys = System::open_with(
        &config,
        &server::system::Paths::repository(),
        server::system::ClockChoice::System,
        engine::runtime::Options::default(),
        server::system::Startup::Attach,
    )
    .await
    .context("opening the system")?;
    let sys = if config.engine == server::config::EngineKind::Embedded {
        sys
    } else {
        on_temporal(sys, &config).await?
    };
    match command {
        InstancesCommand::List { .. } => list(&sys, command).await?,
        InstancesCommand::Show { id, .. } => show(&sys, &id).await?,
        other => repair(&sys, other).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The console on Temporal: the system's starts, signals and reads go there.
#[cfg(feature = "temporal")]
async fn on_temporal(sys: System, config: &server::config::Config) -> anyhow::Result<System> {
    let options = server::backend::temporal_options(&config.temporal);
    let engine = engine_temporal::TemporalEngine::connect(options).await?;
    Ok(sys.on_temporal(engine).await?)
}

#[cfg(not(feature = "temporal"))]
async fn on_temporal(_sys: System, _config: &server::config::Config) -> anyhow::Result<System> {
    anyhow::bail!(
        "engine: temporal 需要含 Temporal 后端的构建：`cargo build -p server --features temporal` \
         (this build has no Temporal backend)"
    )
}

fn status_of(s: &InstanceSummary) -> String {
    format!(
        "{}{}",
        s.status,
        s.status_label
            .as_ref()
            .map(|l| format!("（{l}）"))
            .unwrap_or_default()
    )
}

async fn list(sys: &System, command: InstancesCommand) -> anyhow::Result<()> {
    use engine::store::{InstanceFilter, Page};
    let InstancesCommand::List {
        kind,
        status,
        state,
        enterprise,
        district,
        person,
        version,
        from,
        to,
        limit,
        ..
    } = command
    else {
        unreachable!("a list command")
    };
    let day = |d: Option<String>, days: i64| -> anyhow::Result<_> {
        d.map(|d| {
            server::console::chengdu_day(&d, days)
                .with_context(|| format!("`{d}` is not a day such as 2026-12-01"))
        })
        .transpose()
    };
    let filter = InstanceFilter {
        kind,
        status,
        state,
        search: Vec::new(),
        definition_version: version,
        created_from: day(from, 0)?,
        created_to: day(to, 1)?,
    }
    .search("enterprise_id", enterprise)
    .search("district", district)
    .search("person", person);
    let (total, rows) = sys
        .workflows
        .instances(&filter, Page { limit, offset: 0 })
        .await?;
    for r in rows {
        println!(
            "{}\t{}{}\t{}\t{}\t{}",
            r.id,
            r.kind,
            r.version.map(|v| format!(" v{v}")).unwrap_or_default(),
            r.state,
            status_of(&r),
            r.updated
                .or(r.created)
                .map(server::console::local_time)
                .unwrap_or_default()
        );
    }
    println!("{total} instance(s)");
    Ok(())
}

async fn show(sys: &System, id: &str) -> anyhow::Result<()> {
    let v: InstanceView = sys
        .workflows
        .instance(id)
        .await?
        .with_context(|| format!("no instance {id}"))?;
    let s = &v.summary;
    println!(
        "{} — {}{} ({}) — state {} — {}",
        s.id,
        s.kind,
        s.version.map(|v| format!(" v{v}")).unwrap_or_default(),
        v.hash.as_deref().unwrap_or("?"),
        s.state,
        status_of(s)
    );
    println!("history: {}", v.chain);
    println!("pending timers:");
    for t in &v.timers {
        let due = server::console::local_time(t.due);
        println!("  {} {} due {due}", t.name, t.id);
    }
    println!("activity tasks:");
    for t in &v.tasks {
        println!(
            "  {} {} {} attempt {}/{}{}",
            t.key,
            t.name,
            t.status,
            t.attempt,
            t.max_attempts,
            t.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
    }
    println!("history:");
    for e in &v.events {
        let (what, detail) = server::console::describe(&e.event);
        let at = server::console::local_time(e.at.timestamp_millis());
        println!("  {:>4} {at} {what} {detail}", e.seq);
    }
    Ok(())
}

/// Who the history records as having repaired from the command line.
fn by(why: &Why) -> engine::runtime::Repair {
    engine::runtime::Repair {
        operator: format!(
            "命令行 {}",
            std::env::var("USER").unwrap_or_else(|_| "operator".into())
        ),
        reason: why.reason.clone(),
    }
}

async fn repair(sys: &System, command: InstancesCommand) -> anyhow::Result<()> {
    use server::console::repair;
    let (action, why) = match command {
        InstancesCommand::Terminate { id, why, .. } => (RepairAction::Terminate { id }, why),
        InstancesCommand::Retry { id, why, .. } => (RepairAction::RetryStep { id }, why),
        InstancesCommand::RetryTask { key, why, .. } => (RepairAction::RetryTask { key }, why),
        InstancesCommand::Signal {
            id,
            name,
            role,
            actor,
            payload,
            why,
            ..
        } => {
            let payload = match payload {
                Some(p) => serde_json::from_str(&p).context("--payload must be JSON")?,
                None => serde_json::Value::Null,
            };
            let actor = engine::Actor {
                role,
                id: actor,
                name: None,
            };
            let action = RepairAction::Signal {
                id,
                name,
                payload,
                actor,
            };
            (action, why)
        }
        _ => unreachable!("a repair command"),
    };
    let done = match &action {
        RepairAction::Terminate { .. } => "terminated".to_string(),
        RepairAction::RetryStep { .. } => "retried".to_string(),
        RepairAction::RetryTask { .. } => {
            "will run again (the server's runtime picks it up)".to_string()
        }
        RepairAction::Signal { name, .. } => format!("signal {name} taken"),
    };
    let target = match &action {
        RepairAction::RetryTask { key } => key.clone(),
        _ => String::new(),
    };
    let id = repair(sys, action, &by(&why)).await?;
    let now = match sys.workflows.instance(&id).await? {
        Some(v) => format!("; now {} ({})", v.summary.state, v.summary.status),
        None => String::new(),
    };
    let target = if target.is_empty() { id } else { target };
    println!("{target}: {done}{now}");
    Ok(())
}
