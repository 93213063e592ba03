//! What the pages and the API show, computed from the shared state. The
//! page templates and the JSON API render the same structs, so the API
//! mirrors the pages by construction.

use serde::Serialize;

use super::Shared;

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub gateway: String,
    pub version: &'static str,
    pub uptime_s: u64,
    /// Whether the clock is believed (synchronised or trusted).
    pub clock_synced: bool,
    pub now_ms: i64,
    pub memory_rss_bytes: Option<u64>,
    /// Bytes this process wrote to storage per day, averaged since it
    /// started (flash wear; `None` in the first minute or without
    /// `/proc/self/io`).
    pub written_bytes_per_day: Option<u64>,
    pub log: LogView,
    pub disk: Option<Disk>,
    /// Events accepted into the log per second (last sample interval).
    pub ingest_per_s: f64,
    pub uplinks: Vec<UplinkView>,
    pub devices_total: usize,
    pub devices_online: usize,
    pub config_source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogView {
    pub events: u64,
    pub bytes: u64,
    pub appended_total: u64,
    pub dropped_total: u64,
    pub disk_full: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UplinkView {
    pub name: String,
    pub connected: bool,
    pub backlog: u64,
    /// Age of the oldest event not yet acknowledged, if any is waiting.
    pub oldest_unsent_age_s: Option<i64>,
    pub send_per_s: f64,
    pub events_acked: u64,
    pub inflight: usize,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    pub name: String,
    pub driver: String,
    pub status: String,
    /// Active alarms: (name, severity).
    pub alarms: Vec<(String, String)>,
    pub values: Vec<TagRow>,
    /// Attributes: (scope, key, value), by scope then key.
    pub attributes: Vec<(String, String, String)>,
    pub last_error: Option<String>,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TagRow {
    pub tag: String,
    pub value: String,
    pub unit: String,
    pub quality: String,
    pub age_ms: i64,
    /// The last hour as an inline SVG chart (pages only).
    #[serde(skip)]
    pub spark: String,
    /// The tag takes writes.
    pub writable: bool,
}

pub async fn overview(s: &Shared) -> Overview {
    let stats = s.log.stats().borrow().clone();
    let head = stats.next_seq.saturating_sub(1);
    let now = s.clock.now();
    let (ingest_per_s, send) = rates(s);
    let mut uplinks = Vec::with_capacity(s.uplinks.len());
    for (i, (name, st)) in s.uplinks.iter().enumerate() {
        let u = st.lock().map(|u| u.clone()).unwrap_or_default();
        let backlog = head.saturating_sub(u.cursor);
        let oldest_unsent_age_s = if backlog == 0 {
            None
        } else {
            match s.log.read(outpost_core::Seq(u.cursor), 1).await {
                Ok(v) => v
                    .first()
                    .map(|e| (now.unix_ms - e.event.ts.unix_ms).max(0) / 1000),
                Err(_) => None,
            }
        };
        uplinks.push(UplinkView {
            name: name.clone(),
            connected: u.connected,
            backlog,
            oldest_unsent_age_s,
            send_per_s: send.get(i).copied().unwrap_or(0.0),
            events_acked: u.events_acked,
            inflight: u.inflight,
            reconnects: u.reconnects,
            last_error: u.last_error,
        });
    }
    let (devices_total, devices_online) = device_counts(s);
    Overview {
        gateway: s.gateway.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: s.started.elapsed().as_secs(),
        clock_synced: now.clock == outpost_core::ClockQuality::Synced,
        now_ms: now.unix_ms,
        memory_rss_bytes: rss_bytes(),
        written_bytes_per_day: {
            let up = s.started.elapsed().as_secs();
            written_bytes()
                .filter(|_| up >= 60)
                .map(|w| w.saturating_mul(86_400) / up.max(1))
        },
        log: LogView {
            events: stats.rows,
            bytes: stats.bytes,
            appended_total: stats.appended_total,
            dropped_total: stats.evicted_rows_total
                + stats.evicted_bytes_total
                + stats.evicted_age_total,
            disk_full: stats.disk_full,
        },
        disk: disk(&s.data_dir),
        ingest_per_s,
        uplinks,
        devices_total,
        devices_online,
        config_source: s.config_source.clone(),
    }
}

/// (devices known, devices online): the configured ones and any other
/// that reported.
pub fn device_counts(s: &Shared) -> (usize, usize) {
    s.latest
        .read()
        .map(|l| {
            let online = l
                .devices
                .values()
                .filter(|d| d.status == Some(outpost_core::DeviceStatus::Online))
                .count();
            let unconfigured = l
                .devices
                .keys()
                .filter(|n| !n.is_empty() && !s.devices.iter().any(|(c, _)| c == *n))
                .count();
            (s.devices.len() + unconfigured, online)
        })
        .unwrap_or((s.devices.len(), 0))
}

/// A value as the pages show it: numbers without trailing zeros.
pub fn value_text(v: &outpost_core::Value) -> String {
    match v {
        outpost_core::Value::F64(f) if *f == 0.0 || (1e-3..1e15).contains(&f.abs()) => {
            format!("{f:.3}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        }
        // Too small or too large for three decimals: every digit.
        outpost_core::Value::F64(f) if f.is_finite() => format!("{f:e}"),
        other => other.to_string(),
    }
}

pub use outpost_sync::log::export::quality_text;

/// The overview's charts over the kept samples (up to an hour): ingest
/// rate, and each uplink's send rate and backlog, as (title, SVG).
pub fn history_charts(s: &Shared) -> Vec<(String, String)> {
    let Ok(h) = s.history.lock() else {
        return Vec::new();
    };
    if h.len() < 2 {
        return Vec::new();
    }
    let pairs: Vec<_> = h.iter().zip(h.iter().skip(1)).collect();
    let per_s = |a: u64, b: u64, secs: f64| (secs > 0.0).then(|| b.saturating_sub(a) as f64 / secs);
    let secs = |a: &super::Sample, b: &super::Sample| b.at.duration_since(a.at).as_secs_f64();
    let span = h
        .back()
        .zip(h.front())
        .map_or(0, |(b, a)| b.at.duration_since(a.at).as_secs());
    let over = format!("last {}", super::pages::duration(span));
    let mut out = Vec::new();
    let ingest: Vec<Option<f64>> = pairs
        .iter()
        .map(|(a, b)| per_s(a.appended, b.appended, secs(a, b)))
        .collect();
    out.push((
        format!("Ingest, events/s ({over})"),
        super::trend::svg(&super::trend::from_points(&ingest), 720, 80, false),
    ));
    for (i, (name, _)) in s.uplinks.iter().enumerate() {
        let send: Vec<Option<f64>> = pairs
            .iter()
            .map(|(a, b)| {
                let (x, y) = (a.uplinks.get(i)?, b.uplinks.get(i)?);
                per_s(x.0, y.0, secs(a, b))
            })
            .collect();
        out.push((
            format!("{name}: sent, events/s ({over})"),
            super::trend::svg(&super::trend::from_points(&send), 720, 80, false),
        ));
        let backlog: Vec<Option<f64>> = h
            .iter()
            .map(|x| x.uplinks.get(i).map(|u| u.1 as f64))
            .collect();
        out.push((
            format!("{name}: backlog, events ({over})"),
            super::trend::svg(&super::trend::from_points(&backlog), 720, 80, false),
        ));
    }
    out
}

/// Ingest rate and each uplink's send rate over the last sample interval.
pub fn rates(s: &Shared) -> (f64, Vec<f64>) {
    let Ok(h) = s.history.lock() else {
        return (0.0, Vec::new());
    };
    let n = h.len();
    let (Some(a), Some(b)) = (n.checked_sub(2).and_then(|i| h.get(i)), h.back()) else {
        return (0.0, Vec::new());
    };
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return (0.0, Vec::new());
    }
    let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let send = a
        .uplinks
        .iter()
        .zip(&b.uplinks)
        .map(|(x, y)| per(x.0, y.0))
        .collect();
    (per(a.appended, b.appended), send)
}

pub fn devices(s: &Shared) -> Vec<DeviceRow> {
    let now = s.clock.now().unix_ms;
    let metrics: std::collections::BTreeMap<_, _> = s.drivers.snapshot().into_iter().collect();
    let Ok(latest) = s.latest.read() else {
        return Vec::new();
    };
    let mut names: Vec<(String, String)> = s.devices.clone();
    for name in latest.devices.keys() {
        if !name.is_empty() && !names.iter().any(|(n, _)| n == name) {
            names.push((name.clone(), String::new()));
        }
    }
    names
        .into_iter()
        .map(|(name, driver)| {
            let view = latest.devices.get(&name);
            let m = metrics.get(&name);
            let values = view
                .map(|v| {
                    v.values
                        .iter()
                        .map(|(p, ts)| TagRow {
                            value: value_text(&p.value),
                            unit: s
                                .units
                                .get(&(name.clone(), p.tag.clone()))
                                .cloned()
                                .unwrap_or_default(),
                            quality: quality_text(&p.quality),
                            age_ms: (now - ts.unix_ms).max(0),
                            spark: String::new(),
                            writable: s.writable.contains(&(name.clone(), p.tag.clone())),
                            tag: p.tag.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            DeviceRow {
                attributes: view
                    .map(|v| {
                        v.attributes
                            .iter()
                            .map(|((scope, k), value)| {
                                ((*scope).to_string(), k.clone(), value_text(value))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                alarms: view
                    .map(|v| {
                        v.alarms
                            .iter()
                            .map(|(n, (sev, _))| (n.clone(), format!("{sev:?}").to_lowercase()))
                            .collect()
                    })
                    .unwrap_or_default(),
                status: view
                    .and_then(|v| v.status)
                    .map_or_else(|| "unknown".into(), |st| format!("{st:?}").to_lowercase()),
                values,
                last_error: m.and_then(|m| m.last_error.clone()),
                requests: m.map_or(0, |m| m.requests),
                errors: m.map_or(0, |m| {
                    m.exceptions + m.timeouts + m.crc_errors + m.garbage + m.truncated + m.io_errors
                }),
                name,
                driver,
            }
        })
        .collect()
}

/// Resident memory of this process (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes this process caused to be written to storage (`write_bytes` of
/// `/proc/self/io`).
pub fn written_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// This process's CPU time, threads and open files.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    pub cpu_seconds: f64,
    pub threads: u64,
    pub open_fds: u64,
}

#[cfg(unix)]
#[allow(unsafe_code)]
pub fn process() -> Option<Process> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is writable memory of the right type; getrusage fills
    // it on success (0) and it is read only then.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so the struct is initialised.
    let ru = unsafe { ru.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Some(Process {
        cpu_seconds: secs(ru.ru_utime) + secs(ru.ru_stime),
        threads,
        open_fds,
    })
}

#[cfg(not(unix))]
pub fn process() -> Option<Process> {
    None
}

/// Size and free space of the file system holding the data directory.
#[cfg(unix)]
#[allow(unsafe_code)]
// The field types differ between targets (u32 on armv7, u64 on aarch64).
#[allow(clippy::unnecessary_cast)]
fn disk(dir: &std::path::Path) -> Option<Disk> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid C string and `st` is writable memory of the
    // right type; statvfs fills it on success (0) and we read it only then.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    let frag = st.f_frsize as u64;
    Some(Disk {
        total_bytes: st.f_blocks as u64 * frag,
        free_bytes: st.f_bavail as u64 * frag,
    })
}

#[cfg(not(unix))]
fn disk(_dir: &std::path::Path) -> Option<Disk> {
    None
}

/// One rule node as the rules page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleNode {
    pub name: String,
    /// The node type's short name (`TbJsFilterNode`, `Threshold`).
    pub kind: String,
    pub messages_in: u64,
    /// (relation, messages)
    pub out: Vec<(String, u64)>,
    pub dropped: u64,
    pub errors: u64,
    pub script_ms: f64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleChain {
    pub name: String,
    pub nodes: Vec<RuleNode>,
}

pub fn rules(s: &Shared) -> Vec<RuleChain> {
    let Ok(c) = s.rules.lock() else {
        return Vec::new();
    };
    c.iter()
        .map(|(chain, nodes)| RuleChain {
            name: chain.clone(),
            nodes: nodes
                .iter()
                .map(|(name, kind, c)| RuleNode {
                    name: name.clone(),
                    kind: kind.rsplit('.').next().unwrap_or(kind).to_string(),
                    messages_in: c.messages_in,
                    out: c.out.iter().map(|(r, n)| (r.clone(), *n)).collect(),
                    dropped: c.dropped,
                    errors: c.errors,
                    script_ms: c.script_ns as f64 / 1e6,
                    last_error: c.last_error.clone(),
                })
                .collect(),
        })
        .collect()
}
