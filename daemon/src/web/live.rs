//! Live updates for open pages, as Server-Sent Events (`GET /events`).
//!
//! One publisher task compares the live views (latest value per tag,
//! device status, uplink state) with what it last sent, once per
//! [`PUBLISH_EVERY`], and broadcasts the changes as one JSON text; each
//! open page's stream forwards those texts. So the cost of a change is one
//! serialisation however many pages are open, and nothing here reads the
//! log.
//!
//! Invariants:
//! - A stream starts with a full snapshot, then gets deltas. A stream that
//!   falls behind the broadcast (its capacity is [`BACKLOG`]) gets a full
//!   snapshot instead of the missed deltas, so a slow page never holds
//!   memory for others.
//! - Streams end when the server stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde::Serialize;
use tokio::sync::broadcast;

use super::pages::PageUser;
use super::{model, Shared};

pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Updates a slow stream may be behind before it is sent a snapshot.
pub const BACKLOG: usize = 16;

/// One update: values and statuses that changed, and the overview's
/// figures (always, they are few).
#[derive(Debug, Default, Serialize)]
struct Update {
    /// `[device, tag, value, unit, quality]`
    values: Vec<[String; 5]>,
    /// `[device, status]`
    status: Vec<[String; 2]>,
    /// `[device, "Name (severity), …"]` for devices whose alarms changed
    /// (empty text: none active).
    alarms: Vec<[String; 2]>,
    ingest: String,
    online: String,
    uplinks: Vec<UplinkLive>,
}

#[derive(Debug, Serialize)]
struct UplinkLive {
    name: String,
    connected: bool,
    backlog: u64,
    rate: String,
}

/// What the publisher last sent, to find changes.
#[derive(Debug, Default)]
pub struct Sent {
    values: HashMap<(String, String), i64>,
    status: HashMap<String, String>,
    alarms: HashMap<String, String>,
}

/// The changes since `sent` (everything when `sent` is empty), and `sent`
/// brought up to date.
fn update(s: &Shared, sent: &mut Sent) -> Update {
    let mut u = Update::default();
    if let Ok(latest) = s.latest.read() {
        for (device, view) in &latest.devices {
            if device.is_empty() {
                continue;
            }
            let status = view.status.map_or_else(
                || "unknown".to_string(),
                |st| format!("{st:?}").to_lowercase(),
            );
            if sent.status.get(device) != Some(&status) {
                sent.status.insert(device.clone(), status.clone());
                u.status.push([device.clone(), status]);
            }
            let alarms = view
                .alarms
                .iter()
                .map(|(n, (sev, _))| format!("{n} ({})", format!("{sev:?}").to_lowercase()))
                .collect::<Vec<_>>()
                .join(", ");
            if sent
                .alarms
                .get(device)
                .map_or(!alarms.is_empty(), |a| *a != alarms)
            {
                sent.alarms.insert(device.clone(), alarms.clone());
                u.alarms.push([device.clone(), alarms]);
            }
            for (p, ts) in &view.values {
                let key = (device.clone(), p.tag.clone());
                if sent.values.get(&key) == Some(&ts.unix_ms) {
                    continue;
                }
                sent.values.insert(key, ts.unix_ms);
                let unit = s
                    .units
                    .get(&(device.clone(), p.tag.clone()))
                    .cloned()
                    .unwrap_or_default();
                u.values.push([
                    device.clone(),
                    p.tag.clone(),
                    model::value_text(&p.value),
                    unit,
                    model::quality_text(&p.quality),
                ]);
            }
        }
    }
    let (ingest, send) = model::rates(s);
    u.ingest = super::pages::rate(ingest);
    let stats = s.log.stats().borrow().clone();
    let head = stats.next_seq.saturating_sub(1);
    u.uplinks = s
        .uplinks
        .iter()
        .enumerate()
        .map(|(i, (name, st))| {
            let st = st.lock().map(|x| x.clone()).unwrap_or_default();
            UplinkLive {
                name: name.clone(),
                connected: st.connected,
                backlog: head.saturating_sub(st.cursor),
                rate: super::pages::rate(send.get(i).copied().unwrap_or(0.0)),
            }
        })
        .collect();
    let (total, online) = model::device_counts(s);
    u.online = format!("{online} / {total}");
    u
}

fn json(u: &Update) -> Arc<str> {
    serde_json::to_string(u).map_or_else(|_| Arc::from("{}"), Arc::from)
}

/// Publishes changes until `stop`.
pub async fn publish(s: Arc<Shared>, stop: tokio_util::sync::CancellationToken) {
    let mut sent = Sent::default();
    let mut every = tokio::time::interval(PUBLISH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if s.live.receiver_count() == 0 {
            // Nobody is watching: start from a full picture next time.
            sent = Sent::default();
            continue;
        }
        let u = update(&s, &mut sent);
        let _nobody = s.live.send(json(&u));
    }
}

/// `GET /events`: the page's live stream.
pub async fn events(State(s): State<Arc<Shared>>, _user: PageUser) -> impl IntoResponse {
    let rx = s.live.subscribe();
    let first = json(&update(&s, &mut Sent::default()));
    let stop = s.stop.clone();
    let stream = futures_util::stream::unfold(
        (Some(first), rx, s, stop),
        |(pending, mut rx, s, stop)| async move {
            if let Some(text) = pending {
                return Some((
                    Ok::<_, Infallible>(Event::default().data(&*text)),
                    (None, rx, s, stop),
                ));
            }
            let text = tokio::select! {
                () = stop.cancelled() => return None,
                r = rx.recv() => match r {
                    Ok(t) => t,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        json(&update(&s, &mut Sent::default()))
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok(Event::default().data(&*text)), (None, rx, s, stop)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
