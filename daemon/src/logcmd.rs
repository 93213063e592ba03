//! `outpostd export` and `outpostd log stats`: the log read directly from
//! its file, read-only, with the daemon running or not (see
//! `outpost_sync::log::export`). This is how a site that is never online
//! hands over its data: to a file, a pipe or a USB stick.
//!
//! Invariants: nothing here writes to the log; the output is streamed (one
//! event at a time through a buffered writer), so memory does not grow with
//! the range; the summary and the progress bar go to stderr, never into the
//! data.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use outpost_core::{utc, EventKind};
use outpost_sync::log::export::{self, Format, Reader, Selection};

#[derive(Debug, Clone, clap::Args)]
pub struct Where {
    /// The data directory holding `events.db` (default: as for `run`).
    #[arg(long, env = "OUTPOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Take the data directory from this configuration file.
    #[arg(long, short, env = "OUTPOST_CONFIG")]
    config: Option<PathBuf>,
}

impl Where {
    fn log_path(&self) -> PathBuf {
        let hint = self
            .config
            .as_deref()
            .and_then(|c| std::fs::read_to_string(c).ok())
            .and_then(|src| crate::run::data_dir_hint(&src));
        crate::run::data_dir_default(self.data_dir.clone().or(hint)).join("events.db")
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    at: Where,
    /// csv (one row per value) or jsonl (one JSON object per event).
    #[arg(long, default_value = "csv")]
    format: String,
    /// Only these devices (repeat, or separate with commas).
    #[arg(long, value_delimiter = ',')]
    device: Vec<String>,
    /// Only these kinds: telemetry, attribute, alarm, status, audit, gap.
    #[arg(long, value_delimiter = ',')]
    kind: Vec<String>,
    /// Only these tags of telemetry and attributes.
    #[arg(long, value_delimiter = ',')]
    tag: Vec<String>,
    /// From this time on (UTC: 2026-12-01, 2026-12-01T06:00, or ms since 1970).
    #[arg(long)]
    from: Option<String>,
    /// Up to (not including) this time.
    #[arg(long)]
    to: Option<String>,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Checks the arguments into a selection; every problem at once.
fn selection(a: &ExportArgs) -> Result<(Selection, Format), Vec<String>> {
    let mut problems = Vec::new();
    let format = Format::parse(&a.format).unwrap_or_else(|e| {
        problems.push(format!("--format: {e}"));
        Format::Csv
    });
    let mut kinds = Vec::new();
    for k in &a.kind {
        match EventKind::ALL.iter().find(|x| x.as_str() == k) {
            Some(x) => kinds.push(*x),
            None => problems.push(format!(
                "--kind {k:?}: one of {}",
                EventKind::ALL
                    .iter()
                    .map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    let mut time = |name: &str, v: &Option<String>| {
        v.as_deref().and_then(|s| match utc::parse(s) {
            Ok(ms) => Some(ms),
            Err(e) => {
                problems.push(format!("--{name} {s:?}: {e}"));
                None
            }
        })
    };
    let from_ms = time("from", &a.from);
    let to_ms = time("to", &a.to);
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if t <= f {
            problems.push("--to must be after --from".into());
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((
        Selection {
            devices: a.device.clone(),
            kinds,
            tags: a.tag.clone(),
            from_ms,
            to_ms,
        },
        format,
    ))
}

pub fn export(a: &ExportArgs) -> ExitCode {
    let (sel, format) = match selection(a) {
        Ok(s) => s,
        Err(problems) => {
            for p in problems {
                eprintln!("outpostd export: {p}");
            }
            return ExitCode::from(2);
        }
    };
    let path = a.at.log_path();
    let reader = match Reader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("outpostd export: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let (sink, to_name): (Box<dyn Write>, String) = match &a.output {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => (Box::new(f), p.display().to_string()),
            Err(e) => {
                eprintln!("outpostd export: {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        },
        None => (Box::new(std::io::stdout().lock()), "stdout".into()),
    };
    match run_export(&reader, &sel, format, sink) {
        Ok((n, bad, secs, bytes)) => {
            eprintln!(
                "outpostd export: {n} events ({bytes} bytes) from {} to {to_name} in {secs:.1} s ({:.0} events/s){}",
                path.display(),
                n as f64 / secs.max(1e-9),
                if bad > 0 {
                    format!("; {bad} unreadable rows skipped")
                } else {
                    String::new()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outpostd export: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Streams the selection into `sink`: (events, unreadable rows, seconds,
/// bytes written).
fn run_export(
    reader: &Reader,
    sel: &Selection,
    format: Format,
    sink: Box<dyn Write>,
) -> Result<(u64, u64, f64, u64), String> {
    let started = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    let mut written = 0u64;
    if format == Format::Csv {
        out.write_all(export::CSV_HEADER.as_bytes())
            .map_err(|e| e.to_string())?;
        written += export::CSV_HEADER.len() as u64;
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seqs, {per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut buf = Vec::with_capacity(1024);
    let (n, bad) = reader
        .for_each(
            sel,
            |e| {
                buf.clear();
                export::write_event(&mut buf, e, format);
                written += buf.len() as u64;
                out.write_all(&buf)
            },
            |at, last| {
                if let Some(b) = &bar {
                    b.set_length(last);
                    b.set_position(at);
                }
            },
        )
        .map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((n, bad, started.elapsed().as_secs_f64(), written))
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LogCommand {
    /// Events, bytes, oldest and newest, per device and kind, unsent per uplink.
    Stats {
        #[command(flatten)]
        at: Where,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn log(cmd: &LogCommand) -> ExitCode {
    let LogCommand::Stats { at, json } = cmd;
    let path = at.log_path();
    let summary = Reader::open(&path).and_then(|r| r.summary());
    match summary {
        Ok(s) => {
            if *json {
                println!("{}", summary_json(&s));
            } else {
                print!("{}", summary_text(&path, &s));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outpostd log stats: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), utc::format_utc)
}

fn summary_text(path: &Path, s: &export::Summary) -> String {
    let mut t = format!(
        "log            {}\nschema         {}\nevents         {}\nbytes          {} (file {})\nseqs           {} to {}\noldest         {}\nnewest         {}\n",
        path.display(),
        s.schema_version,
        s.events,
        s.bytes,
        s.file_bytes,
        s.first_seq.map_or_else(|| "-".into(), |v| v.to_string()),
        s.last_seq.map_or_else(|| "-".into(), |v| v.to_string()),
        when(s.oldest_ts_ms),
        when(s.newest_ts_ms),
    );
    if let Some(h) = s.history_from {
        t.push_str(&format!(
            "history from   seq {h} (an earlier version deleted older events on delivery)\n"
        ));
    }
    t.push_str("per device\n");
    for (d, n) in &s.per_device {
        let name = if d.is_empty() { "(gateway)" } else { d };
        t.push_str(&format!("  {name:<24} {n}\n"));
    }
    t.push_str("per kind\n");
    for (k, n) in &s.per_kind {
        t.push_str(&format!("  {k:<24} {n}\n"));
    }
    t.push_str("uplinks\n");
    if s.cursors.is_empty() {
        t.push_str("  (none)\n");
    }
    for (name, acked, unsent) in &s.cursors {
        t.push_str(&format!(
            "  {name:<24} acknowledged up to seq {acked}, {unsent} unsent\n"
        ));
    }
    t
}

fn summary_json(s: &export::Summary) -> serde_json::Value {
    serde_json::json!({
        "schema_version": s.schema_version,
        "events": s.events,
        "bytes": s.bytes,
        "file_bytes": s.file_bytes,
        "first_seq": s.first_seq,
        "last_seq": s.last_seq,
        "oldest": s.oldest_ts_ms.map(utc::format_utc),
        "newest": s.newest_ts_ms.map(utc::format_utc),
        "history_from": s.history_from,
        "per_device": s.per_device.iter().map(|(d, n)| serde_json::json!({"device": d, "events": n})).collect::<Vec<_>>(),
        "per_kind": s.per_kind.iter().map(|(k, n)| serde_json::json!({"kind": k, "events": n})).collect::<Vec<_>>(),
        "uplinks": s.cursors.iter().map(|(n, a, u)| serde_json::json!({"uplink": n, "acked": a, "unsent": u})).collect::<Vec<_>>(),
    })
}
