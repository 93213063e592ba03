//! `outpostd`: the Outpost edge gateway daemon. The binary is [`main`];
//! the library exists so that the fuzz targets (feature `fuzzing`) reach
//! the web server's request handling as the binary runs it.

mod attributes;
mod logcmd;
mod logring;
mod memory;
mod parts;
mod pipeline;
mod remote;
mod run;
mod supervisor;
mod systemd;
mod views;
mod web;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

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
    /// Apply a configuration to the running daemon by diff (only what
    /// changed restarts; rolled back if the changed parts are not healthy
    /// within `[remote] grace`). FILE is TOML, or a configuration document
    /// (JSON) such as one from `<data_dir>/config/history/`.
    Apply {
        file: PathBuf,
        /// The running daemon's data directory (default: as in `run`, from FILE).
        #[arg(long, env = "OUTPOST_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Make a configuration document (JSON, on stdout) of a TOML file, for
    /// the NATS KV bucket, the retained topic or ThingsBoard's attribute.
    Document {
        file: PathBuf,
        /// Must grow with every document a gateway is sent.
        #[arg(long)]
        version: u64,
        /// A file holding the fleet's ed25519 private key (64 hex digits, from `outpostd keygen`).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Make a fleet signing key: the private key (keep it off the gateways)
    /// on the first line, the public key for `[remote] fleet_public_key` on
    /// the second.
    Keygen,
    /// Export events from the log (read-only, also while the daemon runs),
    /// as CSV or JSON lines, to stdout or a file: e.g. `outpostd export
    /// --device boiler-1 --from 2026-12-01 --to 2026-12-02 -o boiler.csv`.
    /// Without filters: everything.
    Export(logcmd::ExportArgs),
    /// Look into the log (read-only).
    #[command(subcommand)]
    Log(logcmd::LogCommand),
    /// Print the man page (roff) on stdout: `outpostd man > outpostd.1`.
    Man,
    /// Print a shell completion script on stdout, e.g.
    /// `outpostd completions bash > /usr/share/bash-completion/completions/outpostd`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
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

/// `outpostd`'s command line.
pub fn main() -> ExitCode {
    memory::tune();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Run(args)) => run::main(args),
        Some(Command::Apply { file, data_dir }) => apply(&file, data_dir),
        Some(Command::Document { file, version, key }) => document(&file, version, key.as_deref()),
        Some(Command::Keygen) => keygen(),
        Some(Command::Export(args)) => logcmd::export(&args),
        Some(Command::Log(cmd)) => logcmd::log(&cmd),
        Some(Command::Man) => man(),
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "outpostd", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        None => run::main(cli.run),
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match outpost_config::load(file) {
        Ok(cfg) => {
            let base = file
                .parent()
                .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
            match outpost_rules::build_with_warnings(&cfg, &base) {
                Err(errors) => {
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
                Ok((_, warnings)) => {
                    for w in &warnings {
                        eprintln!("warning: {w}");
                    }
                }
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

fn man() -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
        eprintln!("outpostd: cannot render the man page: {e}");
        return ExitCode::FAILURE;
    }
    use std::io::Write;
    match std::io::stdout().write_all(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpostd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen() -> ExitCode {
    let made = outpost_config::document::new_seed().and_then(|seed| {
        let public = outpost_config::document::public_key_of(&seed)?;
        Ok((seed, public))
    });
    match made {
        Ok((seed, public)) => {
            println!("{seed}");
            println!("{public}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outpostd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn document(file: &std::path::Path, version: u64, key: Option<&std::path::Path>) -> ExitCode {
    let bytes = match outpost_config::read_bounded(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("outpostd: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    if let Err(errors) = outpost_config::parse_bytes(&bytes, &file.display().to_string()) {
        eprintln!("{errors}");
        return ExitCode::FAILURE;
    }
    // Parsed, so UTF-8.
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let mut doc = outpost_config::document::Document::new(version, body);
    if let Some(k) = key {
        let signed = std::fs::read_to_string(k)
            .map_err(|e| format!("{}: {e}", k.display()))
            .and_then(|seed| doc.sign(seed.trim()).map_err(|e| e.to_string()));
        if let Err(e) = signed {
            eprintln!("outpostd: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("{}", doc.to_json());
    ExitCode::SUCCESS
}

/// Sends FILE to the running daemon's control socket and prints the report.
#[cfg(unix)]
fn apply(file: &std::path::Path, data_dir: Option<PathBuf>) -> ExitCode {
    use std::io::{Read, Write};
    let text = match outpost_config::read_bounded(file).and_then(|b| {
        String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("outpostd: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    // A document (from the history) carries its TOML in `body`.
    let body = match outpost_config::document::Document::from_json(text.as_bytes()) {
        Ok(d) => d.body,
        Err(_) => text,
    };
    let dir = run::data_dir_default(data_dir.or_else(|| run::data_dir_hint(&body)));
    let sock = remote::control::socket_path(&dir);
    let sent = std::os::unix::net::UnixStream::connect(&sock).and_then(|mut s| {
        s.write_all(body.as_bytes())?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    });
    let answer = match sent {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "outpostd: cannot reach the running daemon at {} ({e}); is it running with this data directory?",
                sock.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let report: serde_json::Value = serde_json::from_str(answer.trim()).unwrap_or_default();
    let state = report
        .get("state")
        .and_then(|s| s.as_str())
        .unwrap_or("no answer");
    println!(
        "{state}: {}",
        report.get("changed").and_then(|s| s.as_str()).unwrap_or("")
    );
    for e in report
        .get("errors")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
    {
        println!("  {}", e.as_str().unwrap_or_default());
    }
    if matches!(state, "applied" | "unchanged") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(not(unix))]
fn apply(_file: &std::path::Path, _data_dir: Option<PathBuf>) -> ExitCode {
    eprintln!("outpostd apply needs a Unix control socket");
    ExitCode::FAILURE
}
