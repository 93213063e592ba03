//! The daemon's recent log lines, kept in memory for the web page's log
//! view: a `tracing` layer that formats each event into a bounded ring.
//!
//! Invariant: the ring holds at most [`CAPACITY`] lines of at most
//! [`MAX_LINE`] bytes each; the oldest line goes when a new one comes. It
//! sees what the daemon's log filter lets through, like stdout.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

pub const CAPACITY: usize = 1000;
pub const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub unix_ms: i64,
    pub level: &'static str,
    /// The component: the crate and module that logged it, e.g. `sync::uplink::mqtt`.
    pub component: String,
    pub text: String,
}

#[derive(Debug, Default)]
pub struct Ring {
    lines: Mutex<VecDeque<Line>>,
}

impl Ring {
    pub(crate) fn push(&self, line: Line) {
        if let Ok(mut l) = self.lines.lock() {
            if l.len() >= CAPACITY {
                l.pop_front();
            }
            l.push_back(line);
        }
    }

    /// Newest first: lines at `min_level` or more severe whose component
    /// contains `component`, at most `max`.
    pub fn recent(&self, min_level: Level, component: &str, max: usize) -> Vec<Line> {
        let Ok(l) = self.lines.lock() else {
            return Vec::new();
        };
        l.iter()
            .rev()
            .filter(|x| {
                parse_level(x.level).unwrap_or(Level::TRACE) <= min_level
                    && x.component.contains(component)
            })
            .take(max)
            .cloned()
            .collect()
    }
}

/// A level's name as lines carry it: `error`, `warn`, `info`, `debug`, `trace`.
pub fn level_name(l: Level) -> &'static str {
    match l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// The level a name stands for (any case), if it names one. Note that
/// `tracing::Level` orders TRACE > DEBUG > INFO > WARN > ERROR.
pub fn parse_level(s: &str) -> Option<Level> {
    s.parse().ok()
}

/// The ring of this process (empty until [`layer`] is installed).
pub fn ring() -> Arc<Ring> {
    RING.get_or_init(Arc::default).clone()
}

static RING: OnceLock<Arc<Ring>> = OnceLock::new();

/// The layer that fills [`ring`].
pub fn layer() -> RingLayer {
    RingLayer(ring())
}

#[derive(Debug)]
pub struct RingLayer(Arc<Ring>);

struct Fields<'a>(&'a mut String, &'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _infallible = write!(self.1, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _infallible = write!(self.0, "{value:?}");
        } else {
            let _infallible = write!(self.1, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let (mut message, mut fields) = (String::new(), String::new());
        event.record(&mut Fields(&mut message, &mut fields));
        message.push_str(&fields);
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let component = meta
            .target()
            .strip_prefix("outpost_")
            .unwrap_or(meta.target())
            .to_string();
        let unix_ms = outpost_core::unix_ms_now();
        self.0.push(Line {
            unix_ms,
            level: level_name(*meta.level()),
            component,
            text: message,
        });
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn keeps_the_newest_lines_with_fields_and_filters() {
        let ring = Arc::new(Ring::default());
        let sub = tracing_subscriber::registry().with(RingLayer(ring.clone()));
        tracing::subscriber::with_default(sub, || {
            for i in 0..(CAPACITY + 5) {
                tracing::info!(n = i, "line");
            }
            tracing::warn!(target: "outpost_sync::uplink", uplink = "cloud", "Link down.");
            tracing::error!("{}", "x".repeat(MAX_LINE * 2));
        });
        let all = ring.recent(Level::TRACE, "", usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert!(all[0].text.ends_with('…') && all[0].text.len() <= MAX_LINE + 3);
        assert_eq!(all[1].text, "Link down. uplink=cloud");
        assert_eq!(all[1].component, "sync::uplink");
        assert_eq!(all.last().map(|l| l.text.as_str()), Some("line n=7"));
        let warn = ring.recent(Level::WARN, "", 10);
        assert_eq!(warn.len(), 2);
        assert_eq!(ring.recent(Level::TRACE, "uplink", 10).len(), 1);
    }
}
