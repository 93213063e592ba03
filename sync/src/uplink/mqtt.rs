//! MQTT sessions (rumqttc, QoS 1), over MQTT 3.1.1 or 5.
//!
//! Both versions feed the same session through [`Note`]s; MQTT 5 adds
//! [`Note::Refused`]: a PUBACK with a failure reason code ends the session
//! without moving the cursor, so a refused event is never counted as sent.
//!
//! The event loop runs in its own task and forwards what the session needs
//! (packet ids of sent publishes, PUBACKs, RPC requests, the end of the
//! connection) over a channel: rumqttc's `poll` is not documented as
//! cancel-safe, the channel is.
//!
//! The cursor is saved at most every 50 ms, when nothing is in flight, and
//! before a session ends; after a kill -9, up to 50 ms of messages the
//! broker had acknowledged are published again (at-least-once).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use outpost_config::{MqttMode, MqttProtocol, MqttUplink};
use outpost_core::Seq;
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::{Event, Outgoing, Packet, QoS};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::{Feed, Item, Queue};
use super::format::{self, Message};
use super::window::Window;
use super::{update, SharedStatus, UplinkError, UplinkSpec};
use crate::log::{EventLog, StoredEvent};

enum Note {
    Connected,
    Sent(u16),
    Acked(u16),
    /// MQTT 5: the broker refused a publish (PUBACK reason code ≥ 0x80).
    Refused(u16, String),
    /// A publish from the broker: (topic, payload).
    Incoming(String, Vec<u8>),
    /// A publish too large to read (its size): the connection ends after it.
    TooLarge(usize),
    Down(String),
}

/// One session's client, for the configured protocol version.
#[derive(Clone)]
enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// Queues a QoS 1 publish (never waits: the request channel holds the
    /// whole window).
    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, V5QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    fn subscribe(&self, topic: &str) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(topic, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(topic, V5QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }
}

const V5_MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Where the broker is: (TLS, host, port).
pub(crate) fn endpoint(m: &MqttUplink) -> Result<(bool, String, u16), UplinkError> {
    m.endpoint().ok_or_else(|| {
        UplinkError::Config(
            if m.url.starts_with("mqtt://") || m.url.starts_with("mqtts://") {
                format!("bad port in {}", m.url)
            } else {
                format!("unsupported URL {}", m.url)
            },
        )
    })
}

/// Opens the session's client and starts the pump of its event loop.
fn open(
    spec: &UplinkSpec,
    m: &MqttUplink,
    tx: mpsc::Sender<Note>,
    stop: CancellationToken,
) -> Result<(Client, tokio::task::JoinHandle<()>), UplinkError> {
    let (tls, host, port) = endpoint(m)?;
    let id = m.client_id.clone().unwrap_or_else(|| spec.gateway.clone());
    let keep_alive = m.keep_alive.get().max(Duration::from_secs(1));
    let mut max = usize::try_from(m.max_payload.0)
        .unwrap_or(usize::MAX)
        .saturating_add(1024);
    if spec
        .thingsboard
        .as_ref()
        .is_some_and(|t| t.control.is_some())
    {
        // The remote configuration arrives on this connection.
        max = max.max(crate::control::MQTT_MAX_PACKET);
    }
    let requests = usize::from(m.max_inflight) * 2 + 16;
    let login = match &m.username {
        Some(user) => Some((
            user.clone(),
            super::secret(m.password.as_ref(), m.password_file.as_deref())?.unwrap_or_default(),
        )),
        None => None,
    };
    let transport = if tls {
        let config = super::tls::client_config(&m.tls).map_err(UplinkError::Config)?;
        Some(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
        ))
    } else {
        None
    };
    Ok(match m.protocol {
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(id, host, port);
            o.set_keep_alive(keep_alive);
            o.set_clean_session(m.clean_session);
            o.set_inflight(m.max_inflight.max(1));
            o.set_max_packet_size(max.max(64 * 1024), max);
            o.set_request_channel_capacity(requests);
            if let Some((user, pass)) = login {
                o.set_credentials(user, pass);
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (client, el) = rumqttc::AsyncClient::new(o, requests);
            (Client::V311(client), pump(el, tx, stop))
        }
        MqttProtocol::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(id, host, port);
            // The v5 client panics below 5 s; the config check refuses it.
            o.set_keep_alive(keep_alive.max(V5_MIN_KEEP_ALIVE));
            o.set_clean_start(m.clean_session);
            if !m.clean_session {
                // As in 3.1.1, a kept session does not expire.
                o.set_session_expiry_interval(Some(u32::MAX));
            }
            o.set_outgoing_inflight_upper_limit(m.max_inflight.max(1));
            o.set_max_packet_size(Some(u32::try_from(max.max(64 * 1024)).unwrap_or(u32::MAX)));
            o.set_request_channel_capacity(requests);
            if let Some((user, pass)) = login {
                o.set_credentials(user, pass);
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (client, el) = rumqttc::v5::AsyncClient::new(o, requests);
            (Client::V5(client), pump(el, tx, stop))
        }
    })
}

/// An event loop of either protocol version, reduced to what a session needs.
trait Events: Send + 'static {
    /// The next event (`None`: one the session does not need); `Err` when
    /// the connection is gone.
    fn next(&mut self) -> impl std::future::Future<Output = Result<Option<Note>, String>> + Send;
}

impl Events for rumqttc::EventLoop {
    async fn next(&mut self) -> Result<Option<Note>, String> {
        let ev = match self.poll().await {
            Ok(ev) => ev,
            Err(rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(bytes),
            ))) => return Ok(Some(Note::TooLarge(bytes))),
            Err(e) => return Err(e.to_string()),
        };
        Ok(match ev {
            Event::Incoming(Packet::ConnAck(_)) => Some(Note::Connected),
            Event::Outgoing(Outgoing::Publish(pkid)) => Some(Note::Sent(pkid)),
            Event::Incoming(Packet::PubAck(a)) => Some(Note::Acked(a.pkid)),
            Event::Incoming(Packet::Publish(p)) => {
                Some(Note::Incoming(p.topic, p.payload.to_vec()))
            }
            _ => None,
        })
    }
}

impl Events for rumqttc::v5::EventLoop {
    async fn next(&mut self) -> Result<Option<Note>, String> {
        use rumqttc::v5::mqttbytes::v5::{Packet as P, PubAckReason};
        use rumqttc::v5::Event as E;
        let ev = match self.poll().await {
            Ok(ev) => ev,
            Err(rumqttc::v5::ConnectionError::MqttState(
                rumqttc::v5::StateError::Deserialization(
                    rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded { pkt_size, .. },
                ),
            )) => return Ok(Some(Note::TooLarge(pkt_size))),
            Err(e) => return Err(e.to_string()),
        };
        Ok(match ev {
            E::Incoming(P::ConnAck(_)) => Some(Note::Connected),
            E::Outgoing(Outgoing::Publish(pkid)) => Some(Note::Sent(pkid)),
            E::Incoming(P::PubAck(a)) => match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                    Some(Note::Acked(a.pkid))
                }
                reason => {
                    let why = a
                        .properties
                        .and_then(|p| p.reason_string)
                        .map_or_else(String::new, |r| format!(" ({r})"));
                    Some(Note::Refused(a.pkid, format!("{reason:?}{why}")))
                }
            },
            E::Incoming(P::Publish(p)) => Some(Note::Incoming(
                String::from_utf8_lossy(&p.topic).into_owned(),
                p.payload.to_vec(),
            )),
            _ => None,
        })
    }
}

fn pump(
    mut el: impl Events,
    tx: mpsc::Sender<Note>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    outpost_core::task::spawn(async move {
        loop {
            let ev = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                ev = el.next() => ev,
            };
            let note = match ev {
                Ok(Some(Note::TooLarge(bytes))) => {
                    let _gone = tx.send(Note::TooLarge(bytes)).await;
                    let _gone = tx
                        .send(Note::Down(format!(
                            "the broker sent a message of {bytes} bytes, too large to read"
                        )))
                        .await;
                    return;
                }
                Ok(Some(note)) => note,
                Ok(None) => continue,
                Err(e) => {
                    let _gone = tx.send(Note::Down(e)).await;
                    return;
                }
            };
            if tx.send(note).await.is_err() {
                return;
            }
        }
    })
}

/// One connection: runs until it fails (`Err`) or `stop` (`Ok`).
pub(super) async fn session(
    spec: &UplinkSpec,
    m: &MqttUplink,
    log: &EventLog,
    stop: &CancellationToken,
    status: &SharedStatus,
) -> Result<(), UplinkError> {
    let (tx, mut rx) = mpsc::channel(usize::from(m.max_inflight) * 2 + 16);
    let pump_stop = stop.child_token();
    let (client, pump) = open(spec, m, tx, pump_stop.clone())?;
    let _pump = PumpGuard(pump, pump_stop);

    // Connected first (or the connection's error).
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(Note::Connected)) => {}
        Ok(Some(Note::Down(e))) => {
            return Err(UplinkError::Link(format!("connecting to {}: {e}", m.url)))
        }
        Ok(_) => {
            return Err(UplinkError::Link(format!(
                "connecting to {}: unexpected first event",
                m.url
            )))
        }
        Err(_) => {
            return Err(UplinkError::Link(format!(
                "connecting to {}: timed out",
                m.url
            )))
        }
    }
    let tb = m.mode == MqttMode::Thingsboard;
    let link = spec.thingsboard.as_ref().filter(|_| tb);
    // Messages that are not the log's (RPC replies, attribute requests,
    // configuration reports), sent in the window's order so that packet
    // ids stay matched to their slots.
    let (side_tx, mut side_rx) = mpsc::channel::<(String, Vec<u8>)>(16);
    let mut side: std::collections::VecDeque<(String, Vec<u8>)> = Default::default();
    let mut reports = match link.and_then(|l| l.control.as_ref()) {
        Some(c) => Some(c.reports.lock().await),
        None => None,
    };
    if tb {
        let mut topics = vec![format::TB_RPC];
        if link.is_some() {
            topics.extend([format::TB_ATTRIBUTES, format::TB_ATTRIBUTES_RESPONSE]);
        }
        if reports.is_some() {
            topics.extend([
                format::TB_OWN_ATTRIBUTES,
                format::TB_OWN_ATTRIBUTES_RESPONSE,
            ]);
        }
        for t in topics {
            client.subscribe(t).map_err(UplinkError::Link)?;
        }
        if let Some(c) = link.and_then(|l| l.control.as_ref()) {
            if !c.oversized.load(std::sync::atomic::Ordering::Relaxed) {
                side.push_back((
                    format!("{}/request/1", format::TB_OWN_ATTRIBUTES),
                    br#"{"sharedKeys":"configuration"}"#.to_vec(),
                ));
            }
        }
    }
    let cursor = log.cursor(&spec.name).await?.map_or(0, |s| s.0);
    update(status, |s| {
        s.connected = true;
        s.cursor = cursor;
    });
    tracing::info!(uplink = %spec.name, url = %m.url, cursor, "MQTT uplink connected.");

    let mut live = log.subscribe();
    let mut feed = Feed::new(cursor, spec.live_lane, &spec.name);
    let mut window: Window<u16> = Window::new(usize::from(m.max_inflight));
    let mut pending: Queue<Message> = Queue::new();
    let mut shaper = Shaper {
        tb,
        gateway: &spec.gateway,
        topic: &m.topic,
        max_payload: usize::try_from(m.max_payload.0).unwrap_or(usize::MAX),
        announced: HashSet::new(),
        devices: link.map(|l| l.devices.clone()),
        request_id: 0,
    };
    // Acknowledged by the broker, not yet saved as the cursor.
    let mut confirmed: Option<u64> = None;
    let mut unsaved = 0u64;
    let mut last_save = tokio::time::Instant::now();
    let live_room = usize::from(m.max_inflight).max(4) * 4;
    // However the session ends (a stop, a link error, a failed publish or
    // read), what was acknowledged is saved on the way out: otherwise up to
    // SAVE_EVERY of acknowledged messages would be sent again.
    let ended: Result<(), UplinkError> = async {
        loop {
            // Messages of the session itself first.
            while window.has_room() {
                let Some((topic, payload)) = side.pop_front() else {
                    break;
                };
                client
                    .publish(topic, payload, false)
                    .map_err(|e| UplinkError::Link(format!("publishing: {e}")))?;
                window.push(None, 0, 0, true);
            }
            // Fill the window.
            while window.has_room() {
                if pending.is_empty() {
                    let Some((events, upto)) = feed.backlog(log, spec.read_batch).await? else {
                        break;
                    };
                    pending.backlog(shaper.messages(&events, false), |m| m.last_seq, upto);
                }
                let (msg, live) = match pending.pop() {
                    None => break,
                    Some(Item::Passed(seq)) => {
                        if let Some((upto, n)) = window.push_passed(seq) {
                            confirmed = upto.or(confirmed);
                            unsaved += n as u64;
                        }
                        continue;
                    }
                    Some(Item::Publish { item, live }) => (item, live),
                };
                client
                    .publish(msg.topic, msg.payload, msg.retain)
                    .map_err(|e| UplinkError::Link(format!("publishing: {e}")))?;
                window.push(None, msg.last_seq, msg.events, live);
                update(status, |s| {
                    s.messages_published += 1;
                    s.inflight = window.len();
                });
            }
            let deadline = window.oldest().map(|t| t + m.ack_timeout.get());
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    return Ok(());
                }
                () = tokio::time::sleep_until(last_save + SAVE_EVERY), if confirmed.is_some() => {
                    save(log, spec, status, &mut confirmed, &mut unsaved, window.len()).await?;
                    last_save = tokio::time::Instant::now();
                }
                note = rx.recv() => match note {
                    Some(Note::Sent(pkid)) => { window.assign(pkid); }
                    Some(Note::Acked(pkid)) => {
                        if let Some((upto, n)) = window.ack(pkid) {
                            confirmed = upto.or(confirmed);
                            unsaved += n as u64;
                            // Save the cursor at most every 50 ms (one log
                            // transaction per PUBACK would cap the rate), and
                            // whenever nothing is left in flight.
                            if window.is_empty() || last_save.elapsed() >= SAVE_EVERY {
                                save(log, spec, status, &mut confirmed, &mut unsaved, window.len()).await?;
                                last_save = tokio::time::Instant::now();
                            }
                        }
                    }
                    Some(Note::Incoming(topic, body)) => {
                        incoming(spec, link, &topic, body, &side_tx).await;
                    }
                    Some(Note::TooLarge(bytes)) => {
                        if let Some(c) = link.and_then(|l| l.control.as_ref()) {
                            tracing::warn!(bytes, limit = outpost_config::MAX_DOCUMENT_BYTES, "A configuration document from ThingsBoard is too large to read; rejected.");
                            c.oversized.store(true, std::sync::atomic::Ordering::Relaxed);
                            let refused = crate::control::Incoming {
                                source: crate::control::Source::Thingsboard,
                                payload: crate::control::Payload::TooLarge { bytes },
                            };
                            let _closed = c.docs.send(refused).await;
                        }
                    }
                    Some(Note::Connected) => {}
                    Some(Note::Refused(pkid, why)) => {
                        return Err(UplinkError::Link(format!(
                            "the broker refused publish {pkid}: {why}; it is published again after the back-off"
                        )));
                    }
                    Some(Note::Down(e)) => {
                        return Err(UplinkError::Link(e));
                    }
                    None => {
                        return Err(UplinkError::Link("the MQTT event loop ended".into()));
                    }
                },
                () = sleep_until_opt(deadline) => {
                    return Err(UplinkError::Link(format!(
                        "no acknowledgement within {} (connected but not acknowledging)", m.ack_timeout
                    )));
                }
                r = live.recv(), if feed.live_lane() || (window.has_room() && pending.is_empty()) => match r {
                    Ok(batch) => {
                        if let Some((events, upto)) = feed.follow(&batch) {
                            pending.backlog(shaper.messages(&events, false), |m| m.last_seq, upto);
                        } else if let Some(events) = feed.live(&batch, pending.live_len() < live_room) {
                            pending.live(shaper.messages(&events, true));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => feed.reread(),
                },
                Some(msg) = side_rx.recv() => side.push_back(msg),
                r = recv_report(&mut reports) => match r {
                    Some(bytes) => {
                        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        let body = json!({ "configurationState": value }).to_string().into_bytes();
                        side.push_back((format::TB_OWN_ATTRIBUTES.to_string(), body));
                    }
                    None => reports = None,
                },
                () = tokio::time::sleep(Duration::from_secs(1)) => feed.reread(),
            }
        }
    }
    .await;
    save(
        log,
        spec,
        status,
        &mut confirmed,
        &mut unsaved,
        window.len(),
    )
    .await?;
    ended
}

/// The next configuration report, if this session carries them.
async fn recv_report(
    reports: &mut Option<tokio::sync::MutexGuard<'_, mpsc::Receiver<Vec<u8>>>>,
) -> Option<Vec<u8>> {
    match reports {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// A publish from the broker: RPC, shared attributes of the devices, the
/// gateway's own configuration. Anything else (our own publishes echoed
/// by a broker that is not ThingsBoard) is ignored.
async fn incoming(
    spec: &UplinkSpec,
    link: Option<&super::TbLink>,
    topic: &str,
    body: Vec<u8>,
    side: &mpsc::Sender<(String, Vec<u8>)>,
) {
    if topic == format::TB_RPC {
        return rpc(spec, side, body);
    }
    let Some(link) = link else { return };
    if topic == format::TB_ATTRIBUTES || topic == format::TB_ATTRIBUTES_RESPONSE {
        if let Some(update) = format::shared_attributes(&body) {
            if link.shared.send(update).await.is_err() {
                tracing::debug!("Shared attributes arrived after the pipeline stopped.");
            }
        }
    } else if topic.starts_with(format::TB_OWN_ATTRIBUTES) {
        if let (Some(c), Some(doc)) = (
            &link.control,
            crate::control::thingsboard_configuration(&body),
        ) {
            c.oversized
                .store(false, std::sync::atomic::Ordering::Relaxed);
            let doc = crate::control::Incoming {
                source: crate::control::Source::Thingsboard,
                payload: crate::control::Payload::Bytes(doc),
            };
            let _closed = c.docs.send(doc).await;
        }
    }
}

const SAVE_EVERY: Duration = Duration::from_millis(50);

/// Turns events into messages for one session's mode.
struct Shaper<'a> {
    tb: bool,
    gateway: &'a str,
    topic: &'a str,
    max_payload: usize,
    /// Devices ThingsBoard has been told about in this session.
    announced: HashSet<String>,
    devices: Option<Arc<std::sync::RwLock<super::TbDevices>>>,
    request_id: u64,
}

impl Shaper<'_> {
    /// The messages of `events`: `publish` events (the MQTT node's) as
    /// they are, on their own topics, between the mode's messages of the
    /// events around them.
    fn messages(&mut self, events: &[StoredEvent], live: bool) -> Vec<Message> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, e) in events.iter().enumerate() {
            if let outpost_core::Body::Publish(p) = &e.event.body {
                if start < i {
                    out.extend(self.shaped(&events[start..i], live));
                }
                out.push(Message {
                    topic: p.topic.clone(),
                    payload: p.payload.clone().into_bytes(),
                    last_seq: e.seq.0,
                    first_seq: e.seq.0,
                    events: 1,
                    retain: p.retain,
                });
                start = i + 1;
            }
        }
        if start == 0 {
            return self.shaped(events, live);
        }
        if start < events.len() {
            out.extend(self.shaped(&events[start..], live));
        }
        out
    }

    fn shaped(&mut self, events: &[StoredEvent], live: bool) -> Vec<Message> {
        if !self.tb {
            return format::generic(self.gateway, self.topic, events, self.max_payload);
        }
        // ThingsBoard wants each device connected (with its type) before its
        // data, and told when it goes offline or away. The connects (and
        // requests for shared attributes) of a run of events go before its
        // messages and claim the seq before the run (or, live, its first);
        // a disconnect follows the status that caused it and claims that
        // status's seq. None moves a cursor past an unsent event.
        let mut out = Vec::new();
        let mut start = 0;
        let mut connects: Vec<Message> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let d = &e.event.device;
            if !d.is_empty() && !self.announced.contains(d) {
                self.announced.insert(d.clone());
                let first = events[start].seq.0;
                let before = first.saturating_sub(1);
                let claim = if live { first } else { before };
                let (kind, keys) = self.device(d);
                connects.push(Message {
                    topic: format::TB_CONNECT.into(),
                    payload: json!({ "device": d, "type": kind })
                        .to_string()
                        .into_bytes(),
                    last_seq: claim,
                    first_seq: before,
                    events: 0,
                    retain: false,
                });
                if !keys.is_empty() {
                    let id = self.next_id();
                    connects.push(Message {
                        topic: format::TB_ATTRIBUTES_REQUEST.into(),
                        payload: json!({"id": id, "device": d, "client": false, "keys": keys})
                            .to_string()
                            .into_bytes(),
                        last_seq: claim,
                        first_seq: before,
                        events: 0,
                        retain: false,
                    });
                }
            }
            let gone = matches!(&e.event.body, outpost_core::Body::Status(st)
                if matches!(st.status, outpost_core::DeviceStatus::Offline | outpost_core::DeviceStatus::Stopped));
            if gone && !d.is_empty() {
                out.append(&mut connects);
                out.extend(format::thingsboard(&events[start..=i], self.max_payload));
                start = i + 1;
                self.announced.remove(d);
                out.push(Message {
                    topic: format::TB_DISCONNECT.into(),
                    payload: json!({ "device": d }).to_string().into_bytes(),
                    last_seq: e.seq.0,
                    first_seq: e.seq.0,
                    events: 0,
                    retain: false,
                });
            }
        }
        out.append(&mut connects);
        if start < events.len() {
            out.extend(format::thingsboard(&events[start..], self.max_payload));
        }
        out
    }

    /// A device's type and the shared keys to ask for.
    fn device(&self, d: &str) -> (String, Vec<String>) {
        let Some(devices) = &self.devices else {
            return ("default".into(), Vec::new());
        };
        let Ok(devices) = devices.read() else {
            return ("default".into(), Vec::new());
        };
        (
            devices
                .types
                .get(d)
                .cloned()
                .unwrap_or_else(|| "default".into()),
            devices.shared_keys.get(d).cloned().unwrap_or_default(),
        )
    }

    fn next_id(&mut self) -> u64 {
        self.request_id += 1;
        self.request_id
    }
}

/// Saves the confirmed position as the cursor.
async fn save(
    log: &EventLog,
    spec: &UplinkSpec,
    status: &SharedStatus,
    confirmed: &mut Option<u64>,
    unsaved: &mut u64,
    inflight: usize,
) -> Result<(), UplinkError> {
    if let Some(upto) = confirmed.take() {
        log.ack(&spec.name, Seq(upto)).await?;
        let n = std::mem::take(unsaved);
        update(status, |s| {
            s.cursor = upto;
            s.events_acked += n;
            s.inflight = inflight;
        });
    }
    Ok(())
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct PumpGuard(tokio::task::JoinHandle<()>, CancellationToken);

impl Drop for PumpGuard {
    fn drop(&mut self) {
        self.1.cancel();
        self.0.abort();
    }
}

/// ThingsBoard server-side RPC to a device behind the gateway (see
/// [`format::rpc_request`]); the reply `{"device", "id", "data": {"success":
/// bool, "error"?}}` goes to `v1/gateway/rpc`.
fn rpc(spec: &UplinkSpec, side: &mpsc::Sender<(String, Vec<u8>)>, body: Vec<u8>) {
    let spec = spec.clone();
    let side = side.clone();
    outpost_core::task::spawn(async move {
        let Some(req) = format::rpc_request(&body) else {
            // A reply (ours, echoed by a broker that is not ThingsBoard) or junk.
            return;
        };
        let outcome = match (&spec.rpc, req.write) {
            (_, Err(e)) => Err(e),
            (None, Ok(_)) => Err("this gateway takes no writes".to_string()),
            (Some(h), Ok((tag, v))) => h(req.device.clone(), tag, v).await,
        };
        let data = match outcome {
            Ok(()) => json!({"success": true}),
            Err(e) => json!({"success": false, "error": e}),
        };
        let reply = json!({"device": req.device, "id": req.id, "data": data});
        if side
            .send((format::TB_RPC.into(), reply.to_string().into_bytes()))
            .await
            .is_err()
        {
            tracing::warn!("The session ended before an RPC reply could be sent.");
        }
    });
}
