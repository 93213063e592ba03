//! `outpostd`: the Outpost edge gateway daemon.

mod logring;
mod memory;
mod pipeline;
mod run;
mod supervisor;
mod views;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "outpostd",
    version,
    about = "Outpost edge gateway daemon",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run(RunArgs),
    /// Check a configuration file, print every problem, exit non-zero if any.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Configuration file. Without one, the embedded demo configuration runs.
    #[arg(long, short, env = "OUTPOST_CONFIG")]
    config: Option<PathBuf>,
    /// Override the data directory of the configuration.
    #[arg(long, env = "OUTPOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    memory::tune();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Run(args)) => run::main(args),
        None => run::main(cli.run),
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match outpost_config::load(file) {
        Ok(cfg) => {
            let base = file
                .parent()
                .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
            if let Err(errors) = outpost_rules::build(&cfg.rules, &base) {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!(
                    "{}: {} problem(s) in the rule chains",
                    file.display(),
                    errors.len()
                );
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok (gateway {:?}, {} devices, {} uplinks)",
                file.display(),
                cfg.gateway.id,
                cfg.devices.len(),
                cfg.uplinks.len()
            );
            ExitCode::SUCCESS
        }
        Err(outpost_config::LoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            eprintln!("{}: {} problem(s)", file.display(), errors.0.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
