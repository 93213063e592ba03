//! Trends: numeric tags over a time range, read from the log, reduced to a
//! fixed number of buckets (min, max, mean) and drawn on the server as
//! inline SVG, so a technician sees at a glance whether a sensor is flat,
//! noisy or drifting, with no charting library in the browser.
//!
//! Invariants:
//! - Memory is bounded by buckets x series, never by the number of events:
//!   the log is read in scan slices and each slice is folded into the
//!   buckets before the next is read. At most [`MAX_SERIES`] series are
//!   kept; tags beyond that are counted and skipped.
//! - The SVG holds only numbers and fixed markup, never a tag or device
//!   name, so it can be inserted into a page unescaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use outpost_core::{Body, Value};
use outpost_sync::log::ScanFilter;
use outpost_sync::EventLog;

pub const MAX_SERIES: usize = 2000;

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub n: u32,
}

/// One tag's buckets over `[from_ms, to_ms)`.
#[derive(Debug, Clone)]
pub struct Series {
    pub buckets: Vec<Option<Bucket>>,
    pub last: Option<f64>,
}

impl Series {
    fn new(n: usize) -> Self {
        Series {
            buckets: vec![None; n],
            last: None,
        }
    }

    pub fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut it = self.buckets.iter().flatten();
        let first = *it.next()?;
        let (mut min, mut max, mut sum, mut n) = (first.min, first.max, first.sum, first.n);
        for b in it {
            min = min.min(b.min);
            max = max.max(b.max);
            sum += b.sum;
            n += b.n;
        }
        Some((min, max, sum / f64::from(n.max(1))))
    }
}

#[derive(Debug, Default)]
pub struct Trends {
    /// (device, tag) → series
    pub series: BTreeMap<(String, String), Series>,
    /// Events read.
    pub events: u64,
    /// Tags left out for want of room.
    pub skipped: u64,
    /// Per bucket: some event in it is not yet acknowledged by an uplink it
    /// goes to (filled only when `read` is given cursors).
    pub unsent: Vec<bool>,
    /// Events read that some uplink has not acknowledged yet.
    pub unsent_events: u64,
}

/// Whether `e` is still to be sent by one of `cursors` (name, acked seq).
pub fn is_unsent(e: &outpost_sync::StoredEvent, cursors: &[(String, u64)]) -> bool {
    cursors
        .iter()
        .any(|(name, acked)| e.event.route.allows(name) && *acked < e.seq.0)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::F64(f) if f.is_finite() => Some(*f),
        Value::I64(i) => Some(*i as f64),
        Value::U64(u) => Some(*u as f64),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Reads the numeric values of `device` (or all devices) in
/// `[from_ms, to_ms)` into `buckets` buckets per tag, marking the buckets
/// holding events that one of `cursors` (the uplinks' name and
/// acknowledged seq) has yet to send.
pub async fn read(
    log: &EventLog,
    device: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    buckets: usize,
    cursors: &[(String, u64)],
) -> Result<Trends, outpost_sync::LogError> {
    let mut t = Trends {
        unsent: vec![false; buckets],
        ..Trends::default()
    };
    let span = (to_ms - from_ms).max(1) as f64;
    let filter = ScanFilter {
        device: device.map(str::to_string),
        from_ms,
        to_ms,
    };
    let (mut after, end) = log.scan_bounds(&filter).await;
    while after.0 < end {
        let slice = log.scan(filter.clone(), after).await?;
        after = slice.next;
        for e in &slice.events {
            let (Body::Telemetry(points) | Body::Attributes(points)) = &e.event.body else {
                continue;
            };
            t.events += 1;
            let at = ((e.event.ts.unix_ms - from_ms) as f64 / span * buckets as f64) as usize;
            let at = at.min(buckets - 1);
            if is_unsent(e, cursors) {
                t.unsent_events += 1;
                t.unsent[at] = true;
            }
            for p in points {
                let Some(v) = number(&p.value) else { continue };
                let key = (e.event.device.clone(), p.tag.clone());
                if !t.series.contains_key(&key) {
                    if t.series.len() >= MAX_SERIES {
                        t.skipped += 1;
                        continue;
                    }
                    t.series.insert(key.clone(), Series::new(buckets));
                }
                let Some(s) = t.series.get_mut(&key) else {
                    continue;
                };
                s.last = Some(v);
                let b = &mut s.buckets[at];
                *b = Some(match *b {
                    None => Bucket {
                        min: v,
                        max: v,
                        sum: v,
                        n: 1,
                    },
                    Some(b) => Bucket {
                        min: b.min.min(v),
                        max: b.max.max(v),
                        sum: b.sum + v,
                        n: b.n + 1,
                    },
                });
            }
        }
        if slice.done {
            break;
        }
    }
    Ok(t)
}

/// A series of one value per point (`None`: nothing then), e.g. rates
/// sampled by the daemon.
pub fn from_points(points: &[Option<f64>]) -> Series {
    Series {
        buckets: points
            .iter()
            .map(|v| {
                v.map(|v| Bucket {
                    min: v,
                    max: v,
                    sum: v,
                    n: 1,
                })
            })
            .collect(),
        last: points.iter().rev().find_map(|v| *v),
    }
}

/// The series as an inline SVG chart of `w` x `h` pixels: the mean as a
/// line, the min-max spread as a band (with `band`); gaps where no value
/// was read. Coordinates are rounded to what a screen shows (whole pixels
/// across, tenths up and down), which keeps a page of 200 charts small.
pub fn svg(s: &Series, w: u32, h: u32, band: bool) -> String {
    svg_marked(s, &[], w, h, band)
}

/// As [`svg`], with the buckets flagged in `unsent` marked by a strip along
/// the bottom (events there are kept, and not yet acknowledged upstream).
pub fn svg_marked(s: &Series, unsent: &[bool], w: u32, h: u32, band: bool) -> String {
    let n = s.buckets.len().max(1);
    let Some((lo, hi, _)) = s.stats() else {
        return format!(
            "<svg class=\"trend empty\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"no data\"></svg>"
        );
    };
    let pad = 2.0;
    let (wf, hf) = (f64::from(w), f64::from(h));
    let range = if hi > lo { hi - lo } else { 1.0 };
    let x = |i: usize| pad + (wf - 2.0 * pad) * (i as f64 + 0.5) / n as f64;
    let y = |v: f64| {
        if hi > lo {
            hf - pad - (hf - 2.0 * pad) * (v - lo) / range
        } else {
            hf / 2.0
        }
    };
    let mut out = format!(
        "<svg class=\"trend\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"trend from {lo} to {hi}\">"
    );
    // Runs of unsent buckets: one strip each, under the data.
    let mut i = 0;
    while i < unsent.len().min(n) {
        if !unsent[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < unsent.len().min(n) && unsent[i] {
            i += 1;
        }
        let cell = (wf - 2.0 * pad) / n as f64;
        let _infallible = write!(
            out,
            "<rect class=\"unsent\" x=\"{:.0}\" y=\"{:.0}\" width=\"{:.0}\" height=\"3\"><title>not yet sent</title></rect>",
            pad + cell * start as f64,
            hf - 3.0,
            (cell * (i - start) as f64).max(1.0)
        );
    }
    // Runs of buckets with data: a band and a line each.
    let mut i = 0;
    while i < n {
        if s.buckets[i].is_none() {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && s.buckets[i].is_some() {
            i += 1;
        }
        let run: Vec<(usize, Bucket)> = (start..i)
            .filter_map(|k| s.buckets[k].map(|b| (k, b)))
            .collect();
        if band && run.iter().any(|(_, b)| b.max > b.min) {
            let mut points = String::new();
            for (k, b) in &run {
                let _infallible = write!(points, "{:.0},{:.1} ", x(*k), y(b.max));
            }
            for (k, b) in run.iter().rev() {
                let _infallible = write!(points, "{:.0},{:.1} ", x(*k), y(b.min));
            }
            let _infallible = write!(
                out,
                "<polygon class=\"band\" points=\"{}\"/>",
                points.trim_end()
            );
        }
        let mut line = String::new();
        for (k, b) in &run {
            let _infallible = write!(line, "{:.0},{:.1} ", x(*k), y(b.sum / f64::from(b.n)));
        }
        if run.len() == 1 {
            let (k, b) = run[0];
            let _infallible = write!(
                out,
                "<circle class=\"dot\" cx=\"{:.0}\" cy=\"{:.1}\" r=\"1.5\"/>",
                x(k),
                y(b.sum / f64::from(b.n))
            );
        } else {
            let _infallible = write!(
                out,
                "<polyline class=\"line\" vector-effect=\"non-scaling-stroke\" points=\"{}\"/>",
                line.trim_end()
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn series(vals: &[Option<f64>]) -> Series {
        Series {
            buckets: vals
                .iter()
                .map(|v| {
                    v.map(|v| Bucket {
                        min: v - 1.0,
                        max: v + 1.0,
                        sum: v,
                        n: 1,
                    })
                })
                .collect(),
            last: None,
        }
    }

    #[test]
    fn charts_have_a_line_a_band_and_gaps() {
        let s = series(&[Some(1.0), Some(2.0), None, Some(5.0), Some(4.0)]);
        let svg = svg(&s, 100, 20, true);
        assert!(svg.starts_with("<svg class=\"trend\""));
        assert_eq!(
            svg.matches("<polyline").count(),
            2,
            "one line per run: {svg}"
        );
        assert_eq!(svg.matches("<polygon").count(), 2);
        // The lowest minimum at the bottom, the highest maximum at the top.
        assert!(svg.contains(",18.0\""), "{svg}");
        assert!(svg.contains(",2.0 "), "{svg}");
        let (lo, hi, mean) = s.stats().unwrap();
        assert_eq!((lo, hi), (0.0, 6.0));
        assert!((mean - 3.0).abs() < 1e-9);
        // Without the band (the small charts): the lines only.
        let small = super::svg(&s, 100, 20, false);
        assert_eq!(small.matches("<polyline").count(), 2);
        assert!(!small.contains("<polygon"), "{small}");
        let empty = svg_of_nothing();
        assert!(empty.contains("no data"));
    }

    fn svg_of_nothing() -> String {
        svg(&series(&[None, None]), 50, 10, true)
    }

    #[test]
    fn a_flat_series_is_a_line_in_the_middle() {
        let s = Series {
            buckets: vec![
                Some(Bucket {
                    min: 3.0,
                    max: 3.0,
                    sum: 6.0,
                    n: 2
                });
                4
            ],
            last: Some(3.0),
        };
        let svg = svg(&s, 40, 10, true);
        assert!(svg.contains("<polyline class=\"line\" vector-effect=\"non-scaling-stroke\" points=\"6,5.0 16,5.0 24,5.0 34,5.0\"/>"), "{svg}");
        assert!(!svg.contains("<polygon"));
    }
}
