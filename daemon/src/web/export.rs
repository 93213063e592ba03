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
//! - The formats are those of `outpostd export`
//!   (`outpost_sync::log::export`), where CSV cells are defused.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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

pub use outpost_sync::log::export::Format;

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
    let format = Format::parse(&q.format)?;
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
        .then(|| Bytes::from_static(outpost_sync::log::export::CSV_HEADER.as_bytes()));
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
    outpost_sync::log::export::write_events(&mut out, events, f);
    out
}
