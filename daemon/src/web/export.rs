//! Data export: the log's events of one device (or all) over a time range,
//! as CSV or JSON lines, streamed. This is how a site that is never online
//! hands over its data.
//!
//! Invariants:
//! - Memory is constant whatever the range: the response is produced one
//!   scan slice at a time (see `EventLog::scan`), each slice formatted and
//!   sent before the next is read; a client that goes away ends the scan.
//! - Only the log is read. A device name is a filter value in a query, never
//!   a path; a name no device can have is refused before anything is read.
//!   Devices no longer configured can be exported: their data is still in
//!   the log.
//! - CSV cells that a spreadsheet would run as a formula (`=`, `+`, `-`,
//!   `@` at the start of a text) are prefixed with `'`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use outpost_core::{Body as EvBody, Quality, Value};
use outpost_sync::log::{ScanFilter, StoredEvent};
use serde::Deserialize;

use super::{time, Shared};

#[derive(Debug, Default, Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

/// A checked export request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub filter: ScanFilter,
    pub format: Format,
}

/// Checks the request; the error says what is wrong with it.
pub fn plan(q: &ExportQuery) -> Result<Plan, String> {
    // Any device the log may hold, also one no longer configured; a name
    // that no device can have is refused.
    let device = if q.device.is_empty() {
        None
    } else {
        let ok = q.device.len() <= 64
            && q.device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!(
                "{:?} is not a device name (letters, digits, `-` and `_`)",
                q.device
            ));
        }
        Some(q.device.clone())
    };
    let from_ms = if q.from.trim().is_empty() {
        i64::MIN
    } else {
        time::parse(&q.from).map_err(|e| format!("from: {e}"))?
    };
    let to_ms = if q.to.trim().is_empty() {
        i64::MAX
    } else {
        time::parse(&q.to).map_err(|e| format!("to: {e}"))?
    };
    if to_ms <= from_ms {
        return Err("`to` must be after `from`".into());
    }
    let format = match q.format.as_str() {
        "" | "csv" => Format::Csv,
        "jsonl" | "ndjson" | "json" => Format::JsonLines,
        other => return Err(format!("format {other:?}: use csv or jsonl")),
    };
    Ok(Plan {
        filter: ScanFilter {
            device,
            from_ms,
            to_ms,
        },
        format,
    })
}

/// The streamed response of a checked request.
pub async fn respond(s: Arc<Shared>, plan: Plan, actor: &str) -> Response {
    let log = s.log.clone();
    let f = &plan.filter;
    let (start, end) = log.scan_bounds(f).await;
    s.audit(
        "web.export",
        actor,
        format!(
            "device {}, {} to {}",
            f.device.as_deref().unwrap_or("(all)"),
            if f.from_ms == i64::MIN {
                "the start".into()
            } else {
                time::format_utc(f.from_ms)
            },
            if f.to_ms == i64::MAX {
                "now".into()
            } else {
                time::format_utc(f.to_ms)
            },
        ),
    )
    .await;
    let (ext, ctype) = match plan.format {
        Format::Csv => ("csv", "text/csv; charset=utf-8"),
        Format::JsonLines => ("jsonl", "application/x-ndjson"),
    };
    let name = format!(
        "outpost-{}-{}.{ext}",
        s.gateway,
        plan.filter.device.as_deref().unwrap_or("all")
    );
    let header_row = (plan.format == Format::Csv)
        .then(|| Bytes::from_static(b"seq,time,ts_ms,device,kind,tag,value,quality\r\n"));
    let state = (header_row, log, plan, start, false);
    let stream =
        futures_util::stream::unfold(state, move |(head, log, plan, after, done)| async move {
            if let Some(h) = head {
                return Some((Ok::<_, std::io::Error>(h), (None, log, plan, after, done)));
            }
            let mut after = after;
            loop {
                if done || after.0 >= end {
                    return None;
                }
                let slice = match log.scan(plan.filter.clone(), after).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "An export stopped: the log could not be read.");
                        return Some((
                            Err(std::io::Error::other(e.to_string())),
                            (None, log, plan, after, true),
                        ));
                    }
                };
                after = slice.next;
                let done = slice.done;
                if slice.events.is_empty() {
                    if done {
                        return None;
                    }
                    continue;
                }
                let chunk = format(&slice.events, plan.format);
                return Some((Ok(Bytes::from(chunk)), (None, log, plan, after, done)));
            }
        });
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    *r.status_mut() = StatusCode::OK;
    r
}

fn format(events: &[StoredEvent], f: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 64);
    for e in events {
        match f {
            Format::Csv => csv_rows(&mut out, e),
            Format::JsonLines => {
                if serde_json::to_writer(&mut out, &json_line(e)).is_ok() {
                    out.push(b'\n');
                }
            }
        }
    }
    out
}

fn csv_rows(out: &mut Vec<u8>, e: &StoredEvent) {
    use std::io::Write;
    let ev = &e.event;
    let kind = ev.kind().as_str();
    let head = format!(
        "{},{},{},{},{kind},",
        e.seq.0,
        time::format_utc(ev.ts.unix_ms),
        ev.ts.unix_ms,
        csv_cell(&ev.device)
    );
    let mut row = |tag: &str, value: &str, quality: &str| {
        let _infallible = write!(
            out,
            "{head}{},{},{}\r\n",
            csv_cell(tag),
            csv_cell(value),
            csv_cell(quality)
        );
    };
    match &ev.body {
        EvBody::Telemetry(points) | EvBody::Attributes(points) => {
            for p in points {
                let v = match &p.value {
                    Value::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                row(&p.tag, &v, &super::model::quality_text(&p.quality));
            }
        }
        EvBody::Alarm(a) => row(
            &a.name,
            &format!("{:?} {:?}", a.severity, a.state).to_lowercase(),
            &a.details,
        ),
        EvBody::Status(st) => row(
            "status",
            &format!("{:?}", st.status).to_lowercase(),
            &st.detail,
        ),
        EvBody::Audit(a) => row(&a.action, &a.detail, &a.actor),
        other => {
            let detail = serde_json::to_string(other).unwrap_or_default();
            row("", &detail, "");
        }
    }
}

/// A CSV cell: quoted when it must be, defused when a spreadsheet would
/// take it for a formula.
fn csv_cell(s: &str) -> String {
    let numeric = s.parse::<f64>().is_ok();
    let risky = !numeric && s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let s = if risky {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One event as a flat JSON object.
fn json_line(e: &StoredEvent) -> serde_json::Value {
    let ev = &e.event;
    let mut o = serde_json::json!({
        "seq": e.seq.0,
        "time": time::format_utc(ev.ts.unix_ms),
        "ts_ms": ev.ts.unix_ms,
        "clock_synced": ev.ts.clock == outpost_core::ClockQuality::Synced,
        "device": ev.device,
        "kind": ev.kind().as_str(),
    });
    match &ev.body {
        EvBody::Telemetry(points) | EvBody::Attributes(points) => {
            let values: serde_json::Map<String, serde_json::Value> = points
                .iter()
                .map(|p| {
                    (
                        p.tag.clone(),
                        outpost_sync::uplink::format::value_json(&p.value),
                    )
                })
                .collect();
            o["values"] = values.into();
            let bad: serde_json::Map<String, serde_json::Value> = points
                .iter()
                .filter(|p| p.quality != Quality::Good)
                .map(|p| (p.tag.clone(), super::model::quality_text(&p.quality).into()))
                .collect();
            if !bad.is_empty() {
                o["quality"] = bad.into();
            }
        }
        other => {
            if let Ok(v) = serde_json::to_value(other) {
                o["detail"] = v;
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("-12.5"), "-12.5");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    }
}
