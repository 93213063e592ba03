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

use super::format;
use super::{update, SharedStatus, UplinkError, UplinkSpec};
use crate::log::EventLog;

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
    let mut next = log.cursor(&spec.name).await?.map_or(0, |s| s.0);
    update(status, |s| {
        s.connected = true;
        s.cursor = next;
    });
    tracing::info!(uplink = %spec.name, url = %n.url, cursor = next, "NATS uplink connected.");

    let max = usize::from(n.max_inflight.max(1));
    let (ack_tx, mut ack_rx) = mpsc::channel::<(u64, PublishAckFuture)>(max);
    let (done_tx, mut done_rx) = mpsc::channel::<Result<u64, String>>(max);
    let ack_timeout = n.ack_timeout.get();
    let waiter = tokio::spawn(async move {
        while let Some((seq, fut)) = ack_rx.recv().await {
            let r = match tokio::time::timeout(ack_timeout, fut).await {
                Ok(Ok(_ack)) => Ok(seq),
                Ok(Err(e)) => Err(format!("publish of seq {seq} failed: {e}")),
                Err(_) => Err(format!(
                    "no publish ack for seq {seq} within {ack_timeout:?}"
                )),
            };
            let failed = r.is_err();
            if done_tx.send(r).await.is_err() || failed {
                return;
            }
        }
    });
    let _waiter = AbortOnDrop(waiter);

    let mut live = log.subscribe();
    let mut inflight = 0usize;
    let mut pending = std::collections::VecDeque::new();
    loop {
        while inflight < max {
            if pending.is_empty() {
                let events = log.read(Seq(next), spec.read_batch.min(max * 4)).await?;
                let Some(last) = events.last() else { break };
                next = last.seq.0;
                pending.extend(events);
            }
            let Some(ev) = pending.pop_front() else { break };
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
                .send((ev.seq.0, fut))
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
            done = done_rx.recv() => match done {
                Some(Ok(seq)) => {
                    inflight -= 1;
                    // Acks come in publish order: this seq and all before it are in.
                    let mut upto = seq;
                    let mut n_acked = 1u64;
                    let mut failure = None;
                    while let Ok(r) = done_rx.try_recv() {
                        match r {
                            Ok(s) => {
                                upto = s;
                                n_acked += 1;
                                inflight -= 1;
                            }
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                    log.ack(&spec.name, Seq(upto)).await?;
                    update(status, |s| {
                        s.cursor = upto;
                        s.events_acked += n_acked;
                        s.inflight = inflight;
                    });
                    if let Some(e) = failure {
                        return Err(UplinkError::Link(e));
                    }
                }
                Some(Err(e)) => return Err(UplinkError::Link(e)),
                None => return Err(UplinkError::Link("the ack waiter stopped".into())),
            },
            r = live.recv(), if inflight < max && pending.is_empty() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return Ok(());
                }
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
