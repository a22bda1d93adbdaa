//! `server policy publish | versions | rollback | migrate` (issue 11): the
//! city's publishing from the command line, on the configured database. A
//! server running on the same database takes a publication up at its next
//! round (new instances; running ones keep their version).

use crate::system::{ClockChoice, Paths, Startup, System};
use anyhow::Context as _;
use engine::runtime::{Publication, Repair};
use std::path::PathBuf;
use std::process::ExitCode;

/// The configuration a `policy` command works on.
#[derive(clap::Args, Debug)]
pub struct On {
    /// Configuration file (YAML); EPI_* environment variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Who acts and why (recorded with the publication or migration).
#[derive(clap::Args, Debug)]
pub struct Who {
    /// The person publishing, rolling back or migrating.
    #[arg(long)]
    pub by: String,
    /// Why (recorded).
    #[arg(long)]
    pub reason: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum Publishing {
    /// Validate and publish the definitions and rules of DIR (its
    /// `workflows/` and `rules/`; default: this checkout's): new instances
    /// use them at once, running ones keep their version. A changed content
    /// under an unchanged `version:` is refused.
    Publish {
        #[command(flatten)]
        on: On,
        #[command(flatten)]
        who: Who,
        /// A directory holding `workflows/` and `rules/`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Every published version: hash, author, date, reason, instances on it.
    Versions {
        #[command(flatten)]
        on: On,
    },
    /// Publish an earlier version again: a hash (or its first 6+
    /// characters), `workflow@version`, or a version number.
    Rollback {
        #[command(flatten)]
        on: On,
        target: String,
        #[command(flatten)]
        who: Who,
    },
    /// Move running instances to a newer version, checked first (the
    /// current state, its pending timers and variables must exist in the
    /// target). Without --apply: a dry run saying how many can move and why
    /// others cannot.
    Migrate {
        #[command(flatten)]
        on: On,
        /// One instance (or use --workflow and --from-version).
        #[arg(required_unless_present = "workflow", conflicts_with = "workflow")]
        instance: Option<String>,
        #[arg(long, requires = "from_version")]
        workflow: Option<String>,
        #[arg(long)]
        from_version: Option<i64>,
        /// Target version (default: the current one of the workflow).
        #[arg(long)]
        to_version: Option<i64>,
        #[command(flatten)]
        who: Who,
        /// Migrate those that can move (otherwise only report).
        #[arg(long)]
        apply: bool,
    },
}

fn chengdu(t: chrono::DateTime<chrono::Utc>) -> String {
    crate::console::local_time(t.timestamp_millis())
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

async fn open(on: &On, paths: &Paths) -> anyhow::Result<System> {
    let config = crate::config::Config::from_process(on.config.as_deref())?;
    System::open_with(
        &config,
        paths,
        ClockChoice::System,
        engine::runtime::Options::default(),
        Startup::Attach,
    )
    .await
    .context("opening the system")
}

/// Paths of `dir` (its `workflows/` and `rules/`), or this checkout's.
fn paths_of(dir: Option<&PathBuf>) -> Paths {
    match dir {
        Some(d) => Paths {
            workflows: d.join("workflows"),
            rules: d.join("rules"),
        },
        None if PathBuf::from("workflows").exists() => Paths {
            workflows: "workflows".into(),
            rules: "rules".into(),
        },
        None => Paths::repository(),
    }
}

/// Run one `policy` command; the exit code says whether it was refused.
pub async fn run(command: Publishing) -> anyhow::Result<ExitCode> {
    match command {
        Publishing::Publish { on, who, dir } => publish(&on, who, dir.as_ref()).await,
        Publishing::Versions { on } => versions(&on).await,
        Publishing::Rollback { on, target, who } => rollback(&on, &target, who).await,
        Publishing::Migrate {
            on,
            instance,
            workflow,
            from_version,
            to_version,
            who,
            apply,
        } => {
            let sys = open(&on, &Paths::repository()).await?;
            let which = Which {
                instance,
                workflow,
                from_version,
                to_version,
            };
            migrate(&sys, &which, who, apply).await
        }
    }
}

fn publication(who: Who) -> Publication {
    Publication {
        by: who.by,
        reason: who.reason,
    }
}

/// Success, or failure when anything was refused.
fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `policy publish`: compile DIR's definitions and rules, then publish them.
async fn publish(on: &On, who: Who, dir: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let paths = paths_of(dir);
    let bundle = match crate::system::compile(&paths) {
        Ok(b) => b,
        Err(e) => {
            println!("未发布：定义或规则有错误\n{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let sys = open(on, &Paths::repository()).await?;
    match sys.runtime.publish(&bundle, &publication(who)).await {
        Ok(p) => {
            println!("已发布（第 {} 次发布，{}）", p.seq, chengdu(p.published_at));
            for (w, h) in &p.definitions {
                let v = bundle.workflows.get(w).map(|p| p.version.to_string());
                println!("  {w} v{} {}", v.unwrap_or_else(|| "?".into()), short(h));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(engine::runtime::Error::Refused(m)) => {
            println!("未发布：{m}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// `policy versions`: one line per published version.
async fn versions(on: &On) -> anyhow::Result<ExitCode> {
    let sys = open(on, &Paths::repository()).await?;
    println!("工作流\t版本\t哈希\t当前\t实例（进行中/全部）\t发布");
    for v in sys.runtime.versions().await? {
        let by = v
            .publications
            .iter()
            .map(|p| {
                format!(
                    "#{} {} {} {}（{}）",
                    p.seq,
                    kind_label(&p.kind),
                    p.published_by,
                    chengdu(p.published_at),
                    p.reason
                )
            })
            .collect::<Vec<_>>()
            .join("；");
        println!(
            "{}\tv{}\t{}\t{}\t{}/{}\t{}",
            v.workflow,
            v.version,
            short(&v.hash),
            if v.current { "当前" } else { "" },
            v.open,
            v.total,
            if by.is_empty() {
                "（未经发布记录）".into()
            } else {
                by
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `policy rollback`: publish an earlier version again.
async fn rollback(on: &On, target: &str, who: Who) -> anyhow::Result<ExitCode> {
    let sys = open(on, &Paths::repository()).await?;
    match sys.runtime.rollback(target, &publication(who)).await {
        Ok(p) => {
            println!("已回滚（第 {} 次发布）", p.seq);
            for (w, h) in &p.definitions {
                println!("  {w} {}", short(h));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(engine::runtime::Error::Refused(m)) => {
            println!("未回滚：{m}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// The instances `policy migrate` works on, and where they go.
struct Which {
    instance: Option<String>,
    workflow: Option<String>,
    from_version: Option<i64>,
    to_version: Option<i64>,
}

/// `policy migrate`: check the instances, report, and (with --apply) move
/// those that can.
async fn migrate(sys: &System, which: &Which, who: Who, apply: bool) -> anyhow::Result<ExitCode> {
    let rt = &sys.runtime;
    let kind = workflow_of(sys, which).await?;
    let to_hash = match target_hash(sys, &kind, which.to_version).await {
        Ok(h) => h,
        Err(e) => {
            println!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let checks = match &which.instance {
        Some(id) => vec![rt.check_migration(id, &to_hash).await?],
        None => {
            rt.plan_migration(&kind, which.from_version.expect("clap"), &to_hash)
                .await?
        }
    };
    let (can, cannot): (Vec<_>, Vec<_>) = checks.into_iter().partition(|c| c.problems.is_empty());
    println!(
        "可迁移 {} 个实例，不能迁移 {} 个（目标：{kind} {}）",
        can.len(),
        cannot.len(),
        short(&to_hash)
    );
    for c in &cannot {
        println!(
            "  不能迁移 {}（v{}，状态 {}）：{}",
            c.instance_id,
            c.from_version,
            c.state,
            c.problems.join("；")
        );
    }
    if !apply {
        if !can.is_empty() {
            println!("这是预演：加 --apply 迁移可迁移的实例");
        }
        return Ok(exit(cannot.is_empty()));
    }
    let by = Repair {
        operator: who.by,
        reason: who.reason,
    };
    let mut failed = 0;
    for c in &can {
        match rt.migrate(&c.instance_id, &to_hash, &by).await {
            Ok(()) => println!("  已迁移 {}", c.instance_id),
            Err(e) => {
                failed += 1;
                println!("  未迁移 {}：{e}", c.instance_id);
            }
        }
    }
    println!("已迁移 {} 个实例", can.len() - failed);
    Ok(exit(failed == 0 && cannot.is_empty()))
}

/// The workflow migrated: the one named, or the given instance's.
async fn workflow_of(sys: &System, which: &Which) -> anyhow::Result<String> {
    match (&which.instance, &which.workflow) {
        (_, Some(w)) => Ok(w.clone()),
        (Some(id), None) => {
            use engine::store::Store as _;
            Ok(sys
                .store
                .instance(id)
                .await?
                .with_context(|| format!("没有实例 {id}"))?
                .kind)
        }
        (None, None) => unreachable!("clap requires one"),
    }
}

/// The definition hash migrated to: `to_version` of `kind`, or its latest.
async fn target_hash(
    sys: &System,
    kind: &str,
    to_version: Option<i64>,
) -> Result<String, engine::runtime::Error> {
    let rt = &sys.runtime;
    match to_version {
        Some(v) => rt.definition_hash(kind, v).await,
        None => rt
            .latest_program(kind)
            .map(|p| p.hash.clone())
            .ok_or_else(|| engine::runtime::Error::Refused(format!("工作流 {kind} 尚未发布"))),
    }
}

/// A publication's kind in words.
pub fn kind_label(kind: &str) -> &'static str {
    match kind {
        "startup" => "启动时发布",
        "rollback" => "回滚",
        _ => "发布",
    }
}
