//! The control plane's links: where a gateway's desired configuration
//! arrives from, and where the outcome of each is reported. Each link is its
//! own connection (a reconnecting client, unlike the uplinks' one-session
//! connections: nothing here needs order across a reconnect), built from a
//! configured uplink's server and credentials.
//!
//! - NATS KV: the bucket's key `<gateway>` is watched with its last value
//!   (an ordered consumer on `$KV.<bucket>.<gateway>`, as a KV watch is),
//!   so the current desired document arrives at connect and every put after
//!   it within a round trip; reports are put under `<gateway>.report`.
//! - MQTT: a retained topic (the broker hands the current document on
//!   subscribe); reports go retained to `<topic>/report`.
//! - ThingsBoard: the shared attribute `configuration`, asked for at connect
//!   (`v1/devices/me/attributes/request/<n>`) and pushed on change
//!   (`v1/devices/me/attributes`); reports are the client attribute
//!   `configurationState`.
//!
//! What arrives is handed on as bytes, unparsed; a link that fails is
//! retried with capped back-off until `stop`.

use std::time::Duration;

use futures_util::StreamExt;
use outpost_config::{MqttUplink, NatsUplink};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::uplink::nats::Credentials;
use crate::uplink::UplinkError;

/// Which link a document came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    NatsKv,
    Mqtt,
    Thingsboard,
}

/// A desired-configuration payload as it arrived.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub source: Source,
    pub payload: Payload,
}

/// What arrived: the bytes, or only the size of a message too large to be
/// read (the link refused it from its header, before its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Bytes(Vec<u8>),
    TooLarge { bytes: usize },
}

/// The largest MQTT packet the configuration link reads: a document of
/// [`outpost_config::MAX_DOCUMENT_BYTES`] and its topic.
pub(crate) const MQTT_MAX_PACKET: usize = outpost_config::MAX_DOCUMENT_BYTES + 64 * 1024;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

async fn nats_client(n: &NatsUplink) -> Result<async_nats::Client, UplinkError> {
    let creds = std::sync::Arc::new(Credentials::read(n)?);
    let o = async_nats::ConnectOptions::with_auth_callback(move |nonce| {
        let creds = creds.clone();
        async move { creds.auth(&nonce) }
    })
    .connection_timeout(Duration::from_secs(10))
    .ping_interval(Duration::from_secs(10))
    .name("outpostd-config");
    crate::uplink::nats::with_tls(o, n)
        .connect(n.url.as_str())
        .await
        .map_err(|e| UplinkError::Link(format!("connecting to {}: {e}", n.url)))
}

/// Watches `bucket`/`key` on the server of `n` and puts reports under
/// `<key>.report`, until `stop`.
pub async fn nats_kv(
    n: NatsUplink,
    bucket: String,
    key: String,
    create: bool,
    docs: mpsc::Sender<Incoming>,
    mut reports: mpsc::Receiver<Vec<u8>>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    loop {
        let ended = nats_session(&n, &bucket, &key, create, &docs, &mut reports, &stop).await;
        match ended {
            Ok(()) => return,
            Err(e) => {
                if !warned {
                    tracing::warn!(bucket = %bucket, key = %key, error = %e, "Configuration watch on NATS KV failed; retrying.");
                    warned = true;
                } else {
                    tracing::debug!(error = %e, "Configuration watch still failing.");
                }
            }
        }
        if pause(&stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn nats_session(
    n: &NatsUplink,
    bucket: &str,
    key: &str,
    create: bool,
    docs: &mpsc::Sender<Incoming>,
    reports: &mut mpsc::Receiver<Vec<u8>>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let client = tokio::select! {
        () = stop.cancelled() => return Ok(()),
        c = nats_client(n) => c.map_err(|e| e.to_string())?,
    };
    let js = async_nats::jetstream::new(client.clone());
    let stream = match js.get_stream(format!("KV_{bucket}")).await {
        Ok(s) => s,
        Err(e) if create => {
            create_bucket_stream(&client, bucket).await.map_err(|c| {
                format!("bucket {bucket:?} is missing ({e}) and cannot be created: {c}")
            })?;
            tracing::info!(bucket, "KV bucket created.");
            js.get_stream(format!("KV_{bucket}"))
                .await
                .map_err(|g| format!("bucket {bucket:?} was created but cannot be opened: {g}"))?
        }
        Err(e) => {
            return Err(format!(
                "bucket {bucket:?}: {e} (create it, or set create_bucket = true)"
            ))
        }
    };
    // The key's last value, then every change: an ordered consumer on the
    // key's subject, as a KV watch is.
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("outpostd configuration watch".into()),
            filter_subject: format!("$KV.{bucket}.{key}"),
            replay_policy: async_nats::jetstream::consumer::ReplayPolicy::Instant,
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("watching {bucket}/{key}: {e}"))?;
    let mut watch = consumer
        .messages()
        .await
        .map_err(|e| format!("watching {bucket}/{key}: {e}"))?;
    tracing::info!(bucket, key, "Watching for configuration on NATS KV.");
    let report_subject = format!("$KV.{bucket}.{key}.report");
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            entry = watch.next() => match entry {
                Some(Ok(m)) => {
                    // Deletes and purges carry a KV-Operation header.
                    let put = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("KV-Operation"))
                        .is_none();
                    if put && docs.send(Incoming { source: Source::NatsKv, payload: Payload::Bytes(m.payload.to_vec()) }).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(format!("watch: {e}")),
                None => return Err("the watch ended".into()),
            },
            r = reports.recv() => match r {
                Some(bytes) => {
                    let put = match js.publish(report_subject.clone(), bytes.into()).await {
                        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = put {
                        tracing::warn!(error = %e, "Cannot put the configuration report.");
                    }
                }
                None => return Ok(()),
            },
        }
    }
}

/// Values kept per key in a bucket this gateway creates.
const KV_HISTORY: i64 = 5;

/// Creates a KV bucket's stream by JetStream's own API request, laid out as
/// a KV bucket is (`KV_<bucket>` over `$KV.<bucket>.>`), which every server
/// with JetStream takes (the client's KV creation cannot read the answer of
/// servers before 2.10). The client's KV module is not used at all: it
/// links the full `regex` crate (about 1.5 MB on ARM) for key checks.
async fn create_bucket_stream(client: &async_nats::Client, bucket: &str) -> Result<(), String> {
    let config = serde_json::json!({
        "name": format!("KV_{bucket}"),
        "subjects": [format!("$KV.{bucket}.>")],
        "max_msgs_per_subject": KV_HISTORY,
        "discard": "new",
        "allow_rollup_hdrs": true,
        "deny_delete": true,
        "allow_direct": true,
        "storage": "file",
        "num_replicas": 1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msg_size": -1,
        "retention": "limits",
    });
    let answer = client
        .request(
            format!("$JS.API.STREAM.CREATE.KV_{bucket}"),
            config.to_string().into(),
        )
        .await
        .map_err(|e| format!("creating the stream KV_{bucket}: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
    match v.get("error") {
        Some(err) => Err(format!("creating the stream KV_{bucket}: {err}")),
        None => Ok(()),
    }
}

/// The retained topic and/or ThingsBoard's shared attribute on the broker of
/// `m`, with `client_id` (never the uplink's own: the broker would drop one
/// of the two connections), until `stop`.
pub async fn mqtt(
    m: MqttUplink,
    client_id: String,
    topic: Option<String>,
    thingsboard: bool,
    docs: mpsc::Sender<Incoming>,
    mut reports: mpsc::Receiver<Vec<u8>>,
    stop: CancellationToken,
) {
    let (tls, host, port) = match crate::uplink::mqtt::endpoint(&m) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "The configuration topic's broker address is not usable.");
            return;
        }
    };
    let mut o = rumqttc::MqttOptions::new(client_id, host, port);
    o.set_keep_alive(m.keep_alive.get().max(Duration::from_secs(5)));
    o.set_clean_session(true);
    o.set_max_packet_size(MQTT_MAX_PACKET, 64 * 1024);
    if let Some(user) = &m.username {
        let pass = crate::uplink::secret(m.password.as_ref(), m.password_file.as_deref())
            .ok()
            .flatten()
            .unwrap_or_default();
        o.set_credentials(user.clone(), pass);
    }
    if tls {
        match crate::uplink::tls::client_config(&m.tls) {
            Ok(c) => o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(c)),
            )),
            Err(e) => {
                tracing::error!(error = %e, "The configuration topic's TLS settings are not usable.");
                return;
            }
        };
    }
    let (client, mut events) = rumqttc::AsyncClient::new(o, 16);
    let report_topic = topic.as_ref().map(|t| format!("{t}/report"));
    let mut backoff = BACKOFF_MIN;
    let mut request = 0u32;
    // The size of the last document refused as too large, until a document
    // is read: the broker hands it again on every subscribe, so the link
    // backs off instead of reconnecting at once.
    let mut oversized: Option<usize> = None;
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => {
                let _closing = client.try_disconnect();
                return;
            }
            ev = events.poll() => ev,
            r = reports.recv() => {
                let Some(bytes) = r else { return };
                if let Some(t) = &report_topic {
                    let _queued = client.try_publish(t.clone(), rumqttc::QoS::AtLeastOnce, true, bytes.clone());
                }
                if thingsboard {
                    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    let body = serde_json::json!({ "configurationState": value }).to_string();
                    let _queued = client.try_publish("v1/devices/me/attributes", rumqttc::QoS::AtLeastOnce, false, body);
                }
                continue;
            }
        };
        match ev {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                if oversized.is_none() {
                    backoff = BACKOFF_MIN;
                }
                tracing::info!(topic = ?topic, thingsboard, "Watching for configuration on MQTT.");
                if let Some(t) = &topic {
                    let _queued = client.try_subscribe(t.clone(), rumqttc::QoS::AtLeastOnce);
                }
                if thingsboard {
                    let _queued =
                        client.try_subscribe("v1/devices/me/attributes", rumqttc::QoS::AtLeastOnce);
                    let _queued = client.try_subscribe(
                        "v1/devices/me/attributes/response/+",
                        rumqttc::QoS::AtLeastOnce,
                    );
                    request += 1;
                    let _queued = client.try_publish(
                        format!("v1/devices/me/attributes/request/{request}"),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        r#"{"sharedKeys":"configuration"}"#,
                    );
                }
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let incoming = if Some(p.topic.as_str()) == topic.as_deref() {
                    (!p.payload.is_empty()).then(|| Incoming {
                        source: Source::Mqtt,
                        payload: Payload::Bytes(p.payload.to_vec()),
                    })
                } else if thingsboard && p.topic.starts_with("v1/devices/me/attributes") {
                    thingsboard_configuration(&p.payload).map(|payload| Incoming {
                        source: Source::Thingsboard,
                        payload: Payload::Bytes(payload),
                    })
                } else {
                    None
                };
                if let Some(i) = incoming {
                    if oversized.take().is_some() {
                        backoff = BACKOFF_MIN;
                    }
                    if docs.send(i).await.is_err() {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(bytes),
            ))) => {
                // Only configuration is subscribed to here: this was a
                // document, refused from its header (its body is not read).
                if oversized != Some(bytes) {
                    tracing::warn!(
                        bytes,
                        limit = outpost_config::MAX_DOCUMENT_BYTES,
                        "A configuration document on MQTT is too large to read; rejected."
                    );
                    let source = if topic.is_some() {
                        Source::Mqtt
                    } else {
                        Source::Thingsboard
                    };
                    let refused = Incoming {
                        source,
                        payload: Payload::TooLarge { bytes },
                    };
                    if docs.send(refused).await.is_err() {
                        return;
                    }
                }
                oversized = Some(bytes);
                if pause(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                tracing::debug!(error = %e, "Configuration topic link down; retrying.");
                if pause(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The `configuration` attribute of a ThingsBoard attribute update
/// (`{"configuration": ...}`) or response (`{"shared": {"configuration": ...}}`),
/// as JSON bytes.
pub fn thingsboard_configuration(payload: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let c = v
        .get("shared")
        .and_then(|s| s.get("configuration"))
        .or_else(|| v.get("configuration"))?;
    serde_json::to_vec(c).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn thingsboard_attribute_shapes() {
        let update = br#"{"configuration":{"version":1}}"#;
        assert_eq!(
            thingsboard_configuration(update).unwrap(),
            br#"{"version":1}"#
        );
        let response = br#"{"shared":{"configuration":"{\"version\":2}"}}"#;
        assert_eq!(
            thingsboard_configuration(response).unwrap(),
            br#""{\"version\":2}""#
        );
        assert!(thingsboard_configuration(br#"{"configurationState":{}}"#).is_none());
        assert!(thingsboard_configuration(b"garbage").is_none());
    }
}
