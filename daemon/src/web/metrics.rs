//! `/metrics` in Prometheus text format (prometheus-client): process, event
//! log, uplinks and devices. Each scrape takes a snapshot of the counters
//! the daemon keeps anyway; nothing is counted twice for metrics' sake.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Shared;

/// Numbers of one scrape.
#[derive(Debug, Default)]
struct Snapshot {
    /// (name, help, kind, rows of (labels, value))
    families: Vec<Family>,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    rows: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Snapshot {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        rows: Vec<(Vec<(&'static str, String)>, f64)>,
    ) {
        self.families.push(Family {
            name,
            help,
            kind,
            rows,
        });
    }

    fn one(&mut self, name: &'static str, help: &'static str, kind: MetricType, v: f64) {
        self.add(name, help, kind, vec![(Vec::new(), v)]);
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let mut fam = enc.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.rows {
                let m = fam.encode_family(labels)?;
                match f.kind {
                    // Counts are written as whole numbers, seconds as they are.
                    MetricType::Counter if v.fract() == 0.0 => {
                        ConstCounter::new(*v as u64).encode(m)?;
                    }
                    MetricType::Counter => ConstCounter::new(*v).encode(m)?,
                    _ => ConstGauge::new(*v).encode(m)?,
                }
            }
        }
        Ok(())
    }
}

fn snapshot(s: &Shared) -> Snapshot {
    use MetricType::{Counter, Gauge};
    let mut out = Snapshot::default();
    out.one(
        "outpost_uptime_seconds",
        "Seconds since outpostd started.",
        Gauge,
        s.started.elapsed().as_secs_f64(),
    );
    out.one(
        "outpost_tasks",
        "Tasks of outpostd running or waiting to run (a count that grows with time is a leak).",
        Gauge,
        outpost_core::task::live() as f64,
    );
    if let Some(rss) = super::model::rss_bytes() {
        out.one(
            "outpost_process_resident_memory_bytes",
            "Resident memory of outpostd.",
            Gauge,
            rss as f64,
        );
    }
    if let Some(p) = super::model::process() {
        out.one(
            "outpost_process_cpu_seconds",
            "CPU time outpostd used (user and system).",
            Counter,
            p.cpu_seconds,
        );
        out.one(
            "outpost_process_threads",
            "Threads of outpostd.",
            Gauge,
            p.threads as f64,
        );
        if let Some(w) = super::model::written_bytes() {
            out.one(
                "outpost_process_written_bytes",
                "Bytes outpostd caused to be written to storage (flash wear; its rate times 86,400 is the daily figure).",
                Counter,
                w as f64,
            );
        }
        out.one(
            "outpost_process_open_fds",
            "Open file descriptors of outpostd.",
            Gauge,
            p.open_fds as f64,
        );
    }
    let st = s.log.stats().borrow().clone();
    out.one(
        "outpost_log_events",
        "Events kept in the log.",
        Gauge,
        st.rows as f64,
    );
    out.one(
        "outpost_log_bytes",
        "Bytes of stored events in the log.",
        Gauge,
        st.bytes as f64,
    );
    out.one(
        "outpost_log_appended",
        "Events accepted into the log since start.",
        Counter,
        st.appended_total as f64,
    );
    out.one(
        "outpost_log_commits",
        "Log transactions committed.",
        Counter,
        st.commits_total as f64,
    );
    out.add(
        "outpost_log_dropped",
        "Events dropped by the buffer limits, by the limit that dropped them.",
        Counter,
        vec![
            (vec![("limit", "rows".into())], st.evicted_rows_total as f64),
            (
                vec![("limit", "bytes".into())],
                st.evicted_bytes_total as f64,
            ),
            (vec![("limit", "age".into())], st.evicted_age_total as f64),
        ],
    );
    out.one(
        "outpost_log_trimmed_events",
        "Delivered events deleted from the history by a limit or a full disk (not a loss: every uplink had them).",
        Counter,
        st.trimmed_total as f64,
    );
    out.one(
        "outpost_log_corrupt_rows",
        "Stored events that could not be read back and were skipped.",
        Counter,
        st.corrupt_rows_total as f64,
    );
    out.one(
        "outpost_log_disk_full",
        "1 while the log refuses events for want of disk space.",
        Gauge,
        f64::from(u8::from(st.disk_full)),
    );

    let head = st.next_seq.saturating_sub(1);
    let ups: Vec<(String, outpost_sync::uplink::UplinkStatus)> = s
        .uplinks
        .iter()
        .map(|(n, u)| (n.clone(), u.lock().map(|u| u.clone()).unwrap_or_default()))
        .collect();
    let per_uplink = |f: &dyn Fn(&outpost_sync::uplink::UplinkStatus) -> f64| {
        ups.iter()
            .map(|(n, u)| (vec![("uplink", n.clone())], f(u)))
            .collect::<Vec<_>>()
    };
    out.add(
        "outpost_uplink_connected",
        "1 while the uplink's session is up.",
        Gauge,
        per_uplink(&|u| f64::from(u8::from(u.connected))),
    );
    out.add(
        "outpost_uplink_backlog_events",
        "Events not yet acknowledged by the uplink's broker.",
        Gauge,
        per_uplink(&|u| head.saturating_sub(u.cursor) as f64),
    );
    out.add(
        "outpost_uplink_acked_events",
        "Events acknowledged by the uplink's broker since start.",
        Counter,
        per_uplink(&|u| u.events_acked as f64),
    );
    out.add(
        "outpost_uplink_published_messages",
        "Messages published by the uplink since start.",
        Counter,
        per_uplink(&|u| u.messages_published as f64),
    );
    out.add(
        "outpost_uplink_reconnects",
        "Sessions the uplink started again since start.",
        Counter,
        per_uplink(&|u| u.reconnects as f64),
    );
    out.add(
        "outpost_uplink_inflight_messages",
        "Messages published and not yet acknowledged.",
        Gauge,
        per_uplink(&|u| u.inflight as f64),
    );

    let devs = s.drivers.snapshot();
    let per_device = |f: &dyn Fn(&outpost_drivers::metrics::DeviceSnapshot) -> u64| {
        devs.iter()
            .map(|(n, d)| (vec![("device", n.clone())], f(d) as f64))
            .collect::<Vec<_>>()
    };
    out.add(
        "outpost_device_requests",
        "Requests sent to the device.",
        Counter,
        per_device(&|d| d.requests),
    );
    out.add(
        "outpost_device_responses",
        "Valid responses from the device (exceptions included).",
        Counter,
        per_device(&|d| d.responses),
    );
    let mut errors = Vec::new();
    for (n, d) in &devs {
        for (kind, v) in [
            ("exception", d.exceptions),
            ("timeout", d.timeouts),
            ("crc", d.crc_errors),
            ("truncated", d.truncated),
            ("garbage", d.garbage),
            ("mismatch", d.mismatches),
            ("io", d.io_errors),
        ] {
            errors.push((vec![("device", n.clone()), ("kind", kind.into())], v as f64));
        }
    }
    out.add(
        "outpost_device_errors",
        "Failed requests to the device, by kind.",
        Counter,
        errors,
    );
    out.add(
        "outpost_device_noise_bytes",
        "Bytes on the line that belonged to no response.",
        Counter,
        per_device(&|d| d.noise_bytes),
    );
    out.add(
        "outpost_device_writes",
        "Writes to the device.",
        Counter,
        per_device(&|d| d.writes),
    );
    out.add(
        "outpost_device_write_errors",
        "Writes to the device that failed.",
        Counter,
        per_device(&|d| d.write_errors),
    );
    let online: Vec<_> = s
        .latest
        .read()
        .map(|l| {
            l.devices
                .iter()
                .filter(|(n, _)| !n.is_empty())
                .map(|(n, v)| {
                    let up = v.status == Some(outpost_core::DeviceStatus::Online);
                    (vec![("device", n.clone())], f64::from(u8::from(up)))
                })
                .collect()
        })
        .unwrap_or_default();
    let chains = super::model::rules(s);
    let (mut rin, mut rout, mut rerr) = (Vec::new(), Vec::new(), Vec::new());
    for c in &chains {
        for n in &c.nodes {
            let at = || vec![("chain", c.name.clone()), ("node", n.name.clone())];
            rin.push((at(), n.messages_in as f64));
            rerr.push((at(), n.errors as f64));
            for (rel, k) in &n.out {
                let mut l = at();
                l.push(("relation", rel.clone()));
                rout.push((l, *k as f64));
            }
        }
    }
    out.add(
        "outpost_rule_node_in",
        "Messages into a rule node.",
        Counter,
        rin,
    );
    out.add(
        "outpost_rule_node_out",
        "Messages out of a rule node, by relation.",
        Counter,
        rout,
    );
    out.add(
        "outpost_rule_node_errors",
        "Messages a rule node failed on (script errors, timeouts).",
        Counter,
        rerr,
    );
    out.add(
        "outpost_device_online",
        "1 while the device's last status is online.",
        Gauge,
        online,
    );
    out
}

pub async fn scrape(State(s): State<Arc<Shared>>) -> Response {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(snapshot(&s)));
    let mut body = String::with_capacity(8 * 1024);
    if prometheus_client::encoding::prometheus_text::encode(&mut body, &reg).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
