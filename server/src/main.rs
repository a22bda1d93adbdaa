//! The `server` binary: command-line entry point. Parses arguments, sets up
//! logging and hands over to the library; errors end here as anyhow.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every workflow definition, form, schedule and rule; print each
    /// problem as file:line:col and exit non-zero if there is any.
    Validate {
        #[arg(default_value = "workflows")]
        workflows: PathBuf,
        #[arg(default_value = "rules")]
        rules: PathBuf,
    },
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
    match cli.command {
        Command::Validate { workflows, rules } => {
            let (w, r) = engine::load_dirs(&workflows, &rules).with_context(|| {
                format!("reading {} and {}", workflows.display(), rules.display())
            })?;
            // Reference data the engine leaves to the application.
            let districts = workflows.join("districts.yaml");
            let districts_error = match server::domain::Districts::load(&districts) {
                Ok(_) => None,
                Err(e) => Some(format!("{}: {e}", districts.display())),
            };
            match engine::compile_bundle(&w, &r, &engine::Options::default()) {
                Ok(b) if districts_error.is_none() => {
                    println!(
                        "ok: {} workflows, {} forms, {} schedules, {} activities, {} rule scripts",
                        b.workflows.len(),
                        b.forms.len(),
                        b.schedules.len(),
                        b.activities.len(),
                        r.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                result => {
                    let mut problems: Vec<String> = match result {
                        Err(e) => e.0.iter().map(ToString::to_string).collect(),
                        Ok(_) => Vec::new(),
                    };
                    problems.extend(districts_error);
                    for p in &problems {
                        println!("{p}");
                    }
                    println!("{} problem(s) found", problems.len());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
