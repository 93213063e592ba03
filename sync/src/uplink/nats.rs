//! NATS JetStream sessions (async-nats).
//!
//! One message per event, with the header `Nats-Msg-Id: <gateway>:<seq>`:
//! a resend after a failure is removed by the stream's duplicate window, so
//! delivery is exactly-once within it. Publish acks are awaited in order by
//! a helper task, so publishing stays pipelined up to `max_inflight`.

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

async fn connect(n: &NatsUplink) -> Result<async_nats::Client, UplinkError> {
    let mut o = ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .ping_interval(Duration::from_secs(10))
        .name("outpostd");
    if let Some(t) = super::secret(n.token.as_ref(), n.token_file.as_deref())? {
        o = o.token(t);
    }
    if let Some(user) = &n.user {
        let pass =
            super::secret(n.password.as_ref(), n.password_file.as_deref())?.unwrap_or_default();
        o = o.user_and_password(user.clone(), pass);
    }
    if let Some(f) = &n.nkey_file {
        let seed = std::fs::read_to_string(f)
            .map_err(|e| UplinkError::Config(format!("reading {}: {e}", f.display())))?;
        o = o.nkey(seed.trim().to_string());
    }
    if let Some(f) = &n.creds_file {
        o = o
            .credentials_file(f)
            .await
            .map_err(|e| UplinkError::Config(format!("reading {}: {e}", f.display())))?;
    }
    if n.url.starts_with("tls://") {
        o = o.require_tls(true);
        if let Some(ca) = &n.tls.ca_file {
            o = o.add_root_certificates(ca.clone());
        }
        if let (Some(c), Some(k)) = (&n.tls.cert_file, &n.tls.key_file) {
            o = o.add_client_certificate(c.clone(), k.clone());
        }
    }
    o.connect(n.url.as_str())
        .await
        .map_err(|e| UplinkError::Link(format!("connecting to {}: {e}", n.url)))
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
    let client = connect(n).await?;
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
    let (ack_tx, mut ack_rx) = mpsc::channel::<Item<(u64, PublishAckFuture)>>(max + 1);
    let (done_tx, mut done_rx) = mpsc::channel::<Result<Done, String>>(max + 1);
    let ack_timeout = n.ack_timeout.get();
    let waiter = tokio::spawn(async move {
        while let Some(item) = ack_rx.recv().await {
            let r = match item {
                Item::Passed(seq) => Ok(Done::Passed(seq)),
                Item::Publish {
                    item: (seq, fut),
                    live,
                } => match tokio::time::timeout(ack_timeout, fut).await {
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
            let fut = js
                .publish_with_headers(msg.topic, headers, msg.payload.into())
                .await
                .map_err(|e| UplinkError::Link(format!("publishing: {e}")))?;
            ack_tx
                .send(Item::Publish {
                    item: (ev.seq.0, fut),
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
