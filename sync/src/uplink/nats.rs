//! NATS JetStream sessions (async-nats).
//!
//! One message per event, with the header `Nats-Msg-Id: <gateway>:<seq>`:
//! a resend after a failure is removed by the stream's duplicate window, so
//! delivery is exactly-once within it. Publish acks are awaited in order by
//! a helper task, so publishing stays pipelined up to `max_inflight`.
//! `Outpost-Clock` says whether the event's time was synchronised, not
//! (yet), or corrected after the clock sync.
//!
//! Invariant: an ack flagged duplicate moves the cursor only once the
//! stream is known to hold this very message. The waiter fetches the
//! message the id points at and compares subject and payload; if another
//! message holds the id (a log whose seqs started again, another gateway
//! with the same name), the event is published again under
//! `<gateway>:<seq>:<hash>` and that ack is awaited instead. If the stored
//! message cannot be read, the same is done: a possible duplicate in the
//! stream is better than a possible loss.

use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::{ConnectOptions, HeaderMap};
use outpost_config::NatsUplink;
use outpost_core::Seq;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::{Feed, Item, Queue};
use super::format;
use super::{update, SharedStatus, UplinkError, UplinkSpec};
use crate::log::{EventLog, StoredEvent};

/// What the client presents when it authenticates, read once per session.
#[derive(Default)]
pub(crate) struct Credentials {
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    /// The user JWT of a creds file; sent with a signature by `key`.
    jwt: Option<String>,
    /// Signs the server's nonce: the NKey seed, or the creds file's seed.
    key: Option<nkeys::KeyPair>,
}

impl Credentials {
    pub(crate) fn read(n: &NatsUplink) -> Result<Self, UplinkError> {
        let mut c = Self {
            token: super::secret(n.token.as_ref(), n.token_file.as_deref())?,
            ..Self::default()
        };
        if let Some(user) = &n.user {
            c.user = Some(user.clone());
            c.password = Some(
                super::secret(n.password.as_ref(), n.password_file.as_deref())?.unwrap_or_default(),
            );
        }
        if let Some(f) = &n.nkey_file {
            let seed = read_file(f)?;
            c.key = Some(nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| {
                UplinkError::Config(format!("{}: not an NKey seed: {e}", f.display()))
            })?);
        }
        if let Some(f) = &n.creds_file {
            let (jwt, seed) = parse_creds(&read_file(f)?)
                .map_err(|e| UplinkError::Config(format!("{}: {e}", f.display())))?;
            c.key = Some(nkeys::KeyPair::from_seed(&seed).map_err(|e| {
                UplinkError::Config(format!("{}: the user seed is not valid: {e}", f.display()))
            })?);
            c.jwt = Some(jwt);
        }
        Ok(c)
    }

    /// The CONNECT fields for one server nonce.
    pub(crate) fn auth(&self, nonce: &[u8]) -> Result<async_nats::Auth, async_nats::AuthError> {
        let mut a = async_nats::Auth::new();
        a.token.clone_from(&self.token);
        a.username.clone_from(&self.user);
        a.password.clone_from(&self.password);
        a.jwt.clone_from(&self.jwt);
        if let Some(key) = &self.key {
            if self.jwt.is_none() {
                a.nkey = Some(key.public_key());
            }
            a.signature = Some(key.sign(nonce).map_err(async_nats::AuthError::new)?);
        }
        Ok(a)
    }
}

fn read_file(f: &std::path::Path) -> Result<String, UplinkError> {
    std::fs::read_to_string(f)
        .map_err(|e| UplinkError::Config(format!("reading {}: {e}", f.display())))
}

/// The user JWT and seed of a NATS creds file: each is the first non-empty
/// line after its `-----BEGIN ...-----` marker.
fn parse_creds(text: &str) -> Result<(String, String), String> {
    let after = |marker: &str| {
        let mut lines = text.lines().map(str::trim);
        lines.find(|l| l.starts_with("-----BEGIN") && l.contains(marker))?;
        lines
            .find(|l| !l.is_empty())
            .filter(|l| !l.starts_with("---"))
            .map(str::to_string)
    };
    let jwt = after("USER JWT").ok_or("no user JWT (a -----BEGIN NATS USER JWT----- block)")?;
    let seed = after("NKEY SEED").ok_or("no user seed (a -----BEGIN USER NKEY SEED----- block)")?;
    Ok((jwt, seed))
}

/// Opens one connection for one session.
///
/// The client must not reconnect by itself: publishes written to a socket
/// that dies are lost, while publishes still queued in the client would go
/// out on the new connection and be stored ahead of them, breaking the order
/// per device. So the credentials are handed out once (the auth callback
/// refuses any later handshake) and at most one reconnect attempt is allowed,
/// which then fails: the client closes, its queued publishes are dropped, and
/// the worker opens a new session that resends from the cursor. `lost` is
/// cancelled when the connection goes.
async fn connect(
    n: &NatsUplink,
    lost: &CancellationToken,
) -> Result<async_nats::Client, UplinkError> {
    let creds = std::sync::Arc::new(Credentials::read(n)?);
    let used = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_event = lost.clone();
    let o = ConnectOptions::with_auth_callback(move |nonce| {
        let (creds, used) = (creds.clone(), used.clone());
        async move {
            if used.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(async_nats::AuthError::new(
                    "each session uses one connection; outpostd opens a new session",
                ));
            }
            creds.auth(&nonce)
        }
    })
    .max_reconnects(Some(1))
    .event_callback(move |event| {
        let on_event = on_event.clone();
        async move {
            if matches!(
                event,
                async_nats::Event::Disconnected | async_nats::Event::Closed
            ) {
                on_event.cancel();
            }
        }
    })
    .connection_timeout(Duration::from_secs(10))
    .ping_interval(Duration::from_secs(10))
    .name("outpostd");
    with_tls(o, n)
        .connect(n.url.as_str())
        .await
        .map_err(|e| UplinkError::Link(format!("connecting to {}: {e}", n.url)))
}

/// The TLS settings of `n` (for a `tls://` URL), for the uplink's and the
/// control plane's connections alike.
pub(crate) fn with_tls(mut o: ConnectOptions, n: &NatsUplink) -> ConnectOptions {
    if n.url.starts_with("tls://") {
        o = o.require_tls(true);
        if let Some(ca) = &n.tls.ca_file {
            o = o.add_root_certificates(ca.clone());
        }
        if let (Some(c), Some(k)) = (&n.tls.cert_file, &n.tls.key_file) {
            o = o.add_client_certificate(c.clone(), k.clone());
        }
    }
    o
}

/// Makes sure the stream exists (creating it if allowed).
async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    spec: &UplinkSpec,
    n: &NatsUplink,
) -> Result<(), UplinkError> {
    match js.get_stream(&n.stream).await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            if !n.create_stream {
                return Err(UplinkError::Config(format!(
                    "JetStream stream {:?} does not exist on {} ({e}); create it (subjects \"{}.>\") or set create_stream = true",
                    n.stream, n.url, n.subject_prefix
                )));
            }
            js.create_stream(async_nats::jetstream::stream::Config {
                name: n.stream.clone(),
                subjects: vec![format!("{}.{}.>", n.subject_prefix, spec.gateway)],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| UplinkError::Link(format!("creating stream {:?}: {e}", n.stream)))?;
            tracing::info!(stream = %n.stream, "Created the JetStream stream.");
            Ok(())
        }
        Err(e) => Err(UplinkError::Link(format!(
            "looking up stream {:?}: {e}",
            n.stream
        ))),
    }
}

pub(super) async fn session(
    spec: &UplinkSpec,
    n: &NatsUplink,
    log: &EventLog,
    stop: &CancellationToken,
    status: &SharedStatus,
) -> Result<(), UplinkError> {
    let lost = CancellationToken::new();
    let client = connect(n, &lost).await?;
    let js = async_nats::jetstream::new(client.clone());
    ensure_stream(&js, spec, n).await?;
    let cursor = log.cursor(&spec.name).await?.map_or(0, |s| s.0);
    update(status, |s| {
        s.connected = true;
        s.cursor = cursor;
    });
    tracing::info!(uplink = %spec.name, url = %n.url, cursor, "NATS uplink connected.");

    let max = usize::from(n.max_inflight.max(1));
    // Publishes (and backlog markers) in publish order; the waiter hands
    // back, in the same order, what the cursor may move to.
    let (ack_tx, mut ack_rx) = mpsc::channel::<Item<(u64, PublishAckFuture, Sent)>>(max + 1);
    let (done_tx, mut done_rx) = mpsc::channel::<Result<Done, String>>(max + 1);
    let ack_timeout = n.ack_timeout.get();
    let checker = Duplicates {
        js: js.clone(),
        stream: n.stream.clone(),
        handle: None,
        gateway: spec.gateway.clone(),
        uplink: spec.name.clone(),
        status: status.clone(),
        ack_timeout,
    };
    let waiter = outpost_core::task::spawn(async move {
        let mut checker = checker;
        while let Some(item) = ack_rx.recv().await {
            let r = match item {
                Item::Passed(seq) => Ok(Done::Passed(seq)),
                Item::Publish {
                    item: (seq, fut, sent),
                    live,
                } => match tokio::time::timeout(ack_timeout, fut).await {
                    Ok(Ok(ack)) if ack.duplicate => checker
                        .settle(seq, ack.sequence, sent)
                        .await
                        .map(|()| Done::Acked { seq, live }),
                    Ok(Ok(_ack)) => Ok(Done::Acked { seq, live }),
                    Ok(Err(e)) => Err(format!("publish of seq {seq} failed: {e}")),
                    Err(_) => Err(format!(
                        "no publish ack for seq {seq} within {ack_timeout:?}"
                    )),
                },
            };
            let failed = r.is_err();
            if done_tx.send(r).await.is_err() || failed {
                return;
            }
        }
    });
    let _waiter = AbortOnDrop(waiter);

    let mut live = log.subscribe();
    let mut feed = Feed::new(cursor, spec.live_lane, &spec.name);
    let mut inflight = 0usize;
    let mut pending: Queue<StoredEvent> = Queue::new();
    let live_room = max * 4;
    loop {
        while inflight < max {
            if pending.is_empty() {
                let Some((events, upto)) = feed.backlog(log, spec.read_batch.min(max * 4)).await?
                else {
                    break;
                };
                pending.backlog(events, |e| e.seq.0, upto);
            }
            let Some(next) = pending.pop() else {
                break;
            };
            let (ev, live) = match next {
                Item::Passed(seq) => {
                    // A marker takes a place in flight like a publish, so
                    // the waiter's channels never fill up.
                    ack_tx
                        .send(Item::Passed(seq))
                        .await
                        .map_err(|_| UplinkError::Link("the ack waiter stopped".into()))?;
                    inflight += 1;
                    continue;
                }
                Item::Publish { item, live } => (item, live),
            };
            let msg = format::nats(&n.subject_prefix, &spec.gateway, &ev);
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}:{}", spec.gateway, ev.seq.0).as_str(),
            );
            let clock = ev.event.ts.clock.as_str();
            headers.insert(CLOCK_HEADER, clock);
            let sent = Sent {
                subject: msg.topic,
                payload: bytes::Bytes::from(msg.payload),
                clock,
            };
            let fut = js
                .publish_with_headers(sent.subject.clone(), headers, sent.payload.clone())
                .await
                .map_err(|e| UplinkError::Link(format!("publishing: {e}")))?;
            ack_tx
                .send(Item::Publish {
                    item: (ev.seq.0, fut, sent),
                    live,
                })
                .await
                .map_err(|_| UplinkError::Link("the ack waiter stopped".into()))?;
            inflight += 1;
            update(status, |s| {
                s.messages_published += 1;
                s.inflight = inflight;
            });
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            () = lost.cancelled() => return Err(UplinkError::Link(format!("the connection to {} was lost", n.url))),
            done = done_rx.recv() => {
                // Dones come in publish order: take all that are there.
                let mut upto = None;
                let mut n_acked = 0u64;
                let mut failure = None;
                let mut next = done;
                loop {
                    match next {
                        Some(Ok(Done::Acked { seq, live })) => {
                            inflight -= 1;
                            n_acked += 1;
                            if !live {
                                upto = Some(seq);
                            }
                        }
                        Some(Ok(Done::Passed(seq))) => {
                            inflight -= 1;
                            upto = Some(seq);
                        }
                        Some(Err(e)) => {
                            failure = Some(e);
                            break;
                        }
                        None => {
                            failure = Some("the ack waiter stopped".to_string());
                            break;
                        }
                    }
                    match done_rx.try_recv() {
                        Ok(r) => next = Some(r),
                        Err(_) => break,
                    }
                }
                if let Some(upto) = upto {
                    log.ack(&spec.name, Seq(upto)).await?;
                }
                update(status, |s| {
                    if let Some(upto) = upto {
                        s.cursor = upto;
                    }
                    s.events_acked += n_acked;
                    s.inflight = inflight;
                });
                if let Some(e) = failure {
                    return Err(UplinkError::Link(e));
                }
            },
            r = live.recv(), if feed.live_lane() || (inflight < max && pending.is_empty()) => match r {
                Ok(batch) => {
                    if let Some((events, upto)) = feed.follow(&batch) {
                        pending.backlog(events.into_owned(), |e| e.seq.0, upto);
                    } else if let Some(events) = feed.live(&batch, pending.live_len() < live_room) {
                        pending.live(events);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => feed.reread(),
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => feed.reread(),
        }
    }
}

/// A published message, kept until its ack is in.
struct Sent {
    subject: String,
    payload: bytes::Bytes,
    clock: &'static str,
}

/// The header saying how far the event's time is to be believed:
/// `synced`, `unsynced` or `corrected` (re-stamped after the clock sync).
pub const CLOCK_HEADER: &str = "Outpost-Clock";

/// Settles acks the stream flagged as duplicates (see the module docs).
struct Duplicates {
    js: async_nats::jetstream::Context,
    stream: String,
    handle: Option<async_nats::jetstream::stream::Stream>,
    gateway: String,
    uplink: String,
    status: SharedStatus,
    ack_timeout: Duration,
}

impl Duplicates {
    /// Returns once the stream holds `sent` for log seq `seq`; `held` is
    /// the stream seq the duplicate ack named.
    async fn settle(&mut self, seq: u64, held: u64, sent: Sent) -> Result<(), String> {
        match self.stored(held).await {
            Ok((subject, payload)) if subject == sent.subject && payload == sent.payload => {
                return Ok(());
            }
            Ok(_) => {
                tracing::error!(
                    uplink = %self.uplink,
                    seq,
                    stream_seq = held,
                    "The stream holds a different message under this event's id; sending the event again under an id of its own."
                );
                update(&self.status, |s| s.duplicates_conflicting += 1);
            }
            Err(e) => tracing::warn!(
                uplink = %self.uplink,
                seq,
                stream_seq = held,
                error = %e,
                "Cannot read the message the stream took this event for; sending it again under an id of its own."
            ),
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            conflict_id(&self.gateway, seq, &sent.subject, &sent.payload).as_str(),
        );
        headers.insert(CLOCK_HEADER, sent.clock);
        let fut = self
            .js
            .publish_with_headers(sent.subject, headers, sent.payload)
            .await
            .map_err(|e| format!("publishing seq {seq} again: {e}"))?;
        match tokio::time::timeout(self.ack_timeout, fut).await {
            Ok(Ok(_ack)) => Ok(()),
            Ok(Err(e)) => Err(format!("publish of seq {seq} (again) failed: {e}")),
            Err(_) => Err(format!(
                "no publish ack for seq {seq} (again) within {:?}",
                self.ack_timeout
            )),
        }
    }

    async fn stored(&mut self, held: u64) -> Result<(String, bytes::Bytes), String> {
        if self.handle.is_none() {
            let s = self
                .js
                .get_stream(&self.stream)
                .await
                .map_err(|e| format!("looking up stream {:?}: {e}", self.stream))?;
            self.handle = Some(s);
        }
        let Some(stream) = &self.handle else {
            return Err("no stream".into());
        };
        let m = stream
            .get_raw_message(held)
            .await
            .map_err(|e| format!("reading stream seq {held}: {e}"))?;
        Ok((m.subject.to_string(), m.payload))
    }
}

/// The id an event is sent under when another message holds
/// `<gateway>:<seq>`: stable for the same message, so its own resends are
/// still removed by the duplicate window.
fn conflict_id(gateway: &str, seq: u64, subject: &str, payload: &[u8]) -> String {
    // FNV-1a, 64 bits: stable across builds and versions (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in subject.as_bytes().iter().chain([0u8].iter()).chain(payload) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{gateway}:{seq}:{h:016x}")
}

/// What the ack waiter reports, in publish order.
enum Done {
    Acked { seq: u64, live: bool },
    Passed(u64),
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn conflict_ids_are_stable_and_tell_messages_apart() {
        let a = conflict_id("gw", 7, "outpost.gw.d", b"{\"v\":1}");
        assert_eq!(a, conflict_id("gw", 7, "outpost.gw.d", b"{\"v\":1}"));
        assert!(
            a.starts_with("gw:7:") && a.len() == "gw:7:".len() + 16,
            "{a}"
        );
        assert_ne!(a, conflict_id("gw", 7, "outpost.gw.d", b"{\"v\":2}"));
        assert_ne!(a, conflict_id("gw", 7, "outpost.gw.e", b"{\"v\":1}"));
        // Pinned: the id must not change between versions.
        assert_eq!(conflict_id("", 0, "", b""), ":0:af63bd4c8601b7df");
    }

    #[test]
    fn creds_file_gives_jwt_and_seed() {
        let text = "-----BEGIN NATS USER JWT-----\n\
                    eyJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n\
                    ------END NATS USER JWT------\n\n\
                    ************************* IMPORTANT *************************\n\
                    NKEY Seed printed below can be used to sign and prove identity.\n\n\
                    -----BEGIN USER NKEY SEED-----\n\
                    SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n\
                    ------END USER NKEY SEED------\n";
        let (jwt, seed) = parse_creds(text).unwrap();
        assert_eq!(jwt, "eyJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln");
        assert_eq!(
            seed,
            "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"
        );
    }

    #[test]
    fn creds_file_without_a_block_is_refused() {
        let e = parse_creds("-----BEGIN USER NKEY SEED-----\nSUAX\n").unwrap_err();
        assert!(e.contains("no user JWT"), "{e}");
        let e = parse_creds("-----BEGIN NATS USER JWT-----\n------END NATS USER JWT------\n")
            .unwrap_err();
        assert!(e.contains("no user JWT"), "{e}");
        let e = parse_creds("-----BEGIN NATS USER JWT-----\nabc\n").unwrap_err();
        assert!(e.contains("no user seed"), "{e}");
    }

    #[test]
    fn credentials_are_signed_per_nonce() {
        let kp = nkeys::KeyPair::new_user();
        let c = Credentials {
            key: Some(nkeys::KeyPair::from_seed(&kp.seed().unwrap()).unwrap()),
            ..Credentials::default()
        };
        let a = c.auth(b"nonce-1").unwrap();
        assert_eq!(a.nkey.as_deref(), Some(kp.public_key().as_str()));
        kp.verify(b"nonce-1", &a.signature.unwrap()).unwrap();
        // With a JWT the public key is not sent: the JWT names the user.
        let c = Credentials {
            jwt: Some("j".into()),
            ..c
        };
        let a = c.auth(b"nonce-2").unwrap();
        assert_eq!((a.nkey, a.jwt.as_deref()), (None, Some("j")));
        kp.verify(b"nonce-2", &a.signature.unwrap()).unwrap();
    }
}
