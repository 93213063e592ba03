//! Checks that span more than one key or need more than a type: unique
//! names, exactly-one-of sections, sane limits. Each problem is located by
//! key path; all are returned together.

use std::collections::HashSet;

use crate::schema::{Config, SimTag};

/// A problem found by validation, before spans are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub path: String,
    pub message: String,
}

pub(crate) fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// An identifier used in topics and subjects: letters, digits, `-`, `_`.
pub(crate) fn check_ident(out: &mut Vec<Problem>, path: &str, what: &str, s: &str) {
    if s.is_empty() {
        out.push(problem(path, format!("{what} must not be empty")));
    } else if s.len() > 64 {
        out.push(problem(
            path,
            format!("{what} must be at most 64 characters"),
        ));
    } else if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        out.push(problem(
            path,
            format!("{what} \"{s}\" may contain only letters, digits, `-` and `_`"),
        ));
    }
}

/// A device's type, attribute tags, attributes and attribute updates.
fn attributes(out: &mut Vec<Problem>, at: &str, dev: &crate::schema::Device) {
    if let Some(t) = &dev.device_type {
        if t.trim().is_empty() || t.len() > 255 {
            out.push(problem(
                format!("{at}.type"),
                "must be 1 to 255 characters (ThingsBoard's device profile name)",
            ));
        }
    }
    let tags = dev.tag_names();
    let known = |t: &str| tags.as_ref().is_none_or(|v| v.iter().any(|n| n == t));
    let mut seen = HashSet::new();
    for (j, t) in dev.attribute_tags.iter().enumerate() {
        let path = format!("{at}.attribute_tags[{j}]");
        if !seen.insert(t.as_str()) {
            out.push(problem(path, format!("tag \"{t}\" is listed twice")));
        } else if !known(t) {
            out.push(problem(
                path,
                format!("device \"{}\" has no tag \"{t}\"", dev.name),
            ));
        }
    }
    for (scope, map) in [
        ("attributes", &dev.attributes),
        ("server_attributes", &dev.server_attributes),
    ] {
        for k in map.keys() {
            if k.is_empty() {
                out.push(problem(
                    format!("{at}.{scope}"),
                    "an attribute key must not be empty",
                ));
            } else if dev.attribute_tags.iter().any(|t| t == k) && scope == "attributes" {
                out.push(problem(
                    format!("{at}.{scope}.{k}"),
                    format!("\"{k}\" is also an attribute tag: keep one"),
                ));
            }
        }
    }
    for (k, tag) in &dev.attribute_updates {
        if !known(tag) {
            out.push(problem(
                format!("{at}.attribute_updates.{k}"),
                format!("device \"{}\" has no tag \"{tag}\" to write", dev.name),
            ));
        }
    }
}

pub(crate) fn validate(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    check_ident(&mut out, "gateway.id", "the gateway id", &cfg.gateway.id);

    let log = &cfg.gateway.log;
    if log.commit_max_events == 0 {
        out.push(problem(
            "gateway.log.commit_max_events",
            "must be at least 1",
        ));
    }
    if log.commit_max_delay.as_millis() > 10_000 {
        out.push(problem(
            "gateway.log.commit_max_delay",
            "must be at most 10s (events wait this long before they are accepted)",
        ));
    }
    if log.clock_wait.as_millis() > 86_400_000 {
        out.push(problem(
            "gateway.log.clock_wait",
            "must be at most 24h (events stamped without the clock are held back this long after boot)",
        ));
    }
    let buf = &cfg.gateway.buffer;
    if buf.max_bytes.0 < 64 * 1024 {
        out.push(problem(
            "gateway.buffer.max_bytes",
            "must be at least 64KiB",
        ));
    }
    if buf.max_rows < 100 {
        out.push(problem("gateway.buffer.max_rows", "must be at least 100"));
    }
    if buf.max_age.as_millis() < 60_000 {
        out.push(problem("gateway.buffer.max_age", "must be at least 1m"));
    }

    let mut names = HashSet::new();
    for (i, dev) in cfg.devices.iter().enumerate() {
        let at = format!("device[{i}]");
        check_ident(&mut out, &format!("{at}.name"), "a device name", &dev.name);
        if !dev.name.is_empty() && !names.insert(dev.name.as_str()) {
            out.push(problem(
                format!("{at}.name"),
                format!("device name \"{}\" is used twice", dev.name),
            ));
        }
        attributes(&mut out, &at, dev);
        let drivers = [
            dev.sim.is_some(),
            dev.modbus.is_some(),
            dev.serial.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if let Some(serial) = &dev.serial {
            crate::validate_serial::device(&mut out, &at, serial);
        }
        if let Some(gpio) = &dev.gpio {
            crate::validate_gpio::device(&mut out, &at, gpio);
        }
        match (&dev.sim, &dev.modbus) {
            _ if drivers > 1 => out.push(problem(
                at.clone(),
                format!(
                    "device \"{}\" has {drivers} drivers: keep one of [device.sim], [device.modbus], [device.serial] and [device.gpio]",
                    dev.name
                ),
            )),
            (None, None) if dev.serial.is_some() || dev.gpio.is_some() => {}
            (None, None) => out.push(problem(
                at.clone(),
                format!(
                    "device \"{}\" has no driver: add a [device.sim], [device.modbus], [device.serial] or [device.gpio] section",
                    dev.name
                ),
            )),
            (Some(_), Some(_)) => {}
            (None, Some(m)) => crate::validate_modbus::device(&mut out, &at, m, &cfg.buses),
            (Some(sim), None) => {
                if sim.interval.as_millis() < 10 {
                    out.push(problem(
                        format!("{at}.sim.interval"),
                        "must be at least 10ms",
                    ));
                }
                if sim.tags.is_empty() {
                    out.push(problem(
                        format!("{at}.sim.tag"),
                        "a simulated device needs at least one [[device.sim.tag]]",
                    ));
                }
                let mut tags = HashSet::new();
                for (j, tag) in sim.tags.iter().enumerate() {
                    let tat = format!("{at}.sim.tag[{j}]");
                    if tag.name.is_empty() {
                        out.push(problem(
                            format!("{tat}.name"),
                            "a tag name must not be empty",
                        ));
                    } else if !tags.insert(tag.name.as_str()) {
                        out.push(problem(
                            format!("{tat}.name"),
                            format!("tag name \"{}\" is used twice in this device", tag.name),
                        ));
                    }
                    check_signal(&mut out, &tat, tag);
                }
            }
        }
    }

    crate::validate_modbus::buses(&mut out, &cfg.buses, &cfg.devices);

    let mut uplinks = HashSet::new();
    for (i, up) in cfg.uplinks.iter().enumerate() {
        let at = format!("uplink[{i}]");
        check_ident(&mut out, &format!("{at}.name"), "an uplink name", &up.name);
        if !up.name.is_empty() && !uplinks.insert(up.name.as_str()) {
            out.push(problem(
                format!("{at}.name"),
                format!("uplink name \"{}\" is used twice", up.name),
            ));
        }
        match (&up.mqtt, &up.nats) {
            (None, None) => out.push(problem(
                at.clone(),
                "an uplink needs one of [uplink.mqtt] or [uplink.nats]",
            )),
            (Some(_), Some(_)) => out.push(problem(
                at.clone(),
                "an uplink takes one of [uplink.mqtt] or [uplink.nats], not both",
            )),
            _ => {}
        }
        if let Some(m) = &up.mqtt {
            if !(m.url.starts_with("mqtt://") || m.url.starts_with("mqtts://")) {
                out.push(problem(
                    format!("{at}.mqtt.url"),
                    format!(
                        "expected mqtt://host:port or mqtts://host:port, found \"{}\"",
                        m.url
                    ),
                ));
            }
            if m.password.is_some() && m.password_file.is_some() {
                out.push(problem(
                    format!("{at}.mqtt.password_file"),
                    "give `password` or `password_file`, not both",
                ));
            }
            if m.mode == crate::schema::MqttMode::Generic && !m.topic.contains("{device}") {
                out.push(problem(
                    format!("{at}.mqtt.topic"),
                    "the topic template needs `{device}` (order is kept per device, so each device needs its own topic)",
                ));
            }
            if !(1..=1024).contains(&m.max_inflight) {
                out.push(problem(
                    format!("{at}.mqtt.max_inflight"),
                    "must be 1 to 1024",
                ));
            }
            if m.max_payload.0 < 1024 || m.max_payload.0 > 256 << 20 {
                out.push(problem(
                    format!("{at}.mqtt.max_payload"),
                    "must be between 1KiB and 256MiB",
                ));
            }
            if m.protocol == crate::schema::MqttProtocol::V5 && m.keep_alive.as_millis() < 5000 {
                out.push(problem(
                    format!("{at}.mqtt.keep_alive"),
                    "must be at least 5s with protocol = \"5\" (the MQTT 5 client's minimum)",
                ));
            } else if m.keep_alive.as_millis() < 1000 {
                out.push(problem(
                    format!("{at}.mqtt.keep_alive"),
                    "must be at least 1s",
                ));
            }
            check_tls(
                &mut out,
                &format!("{at}.mqtt.tls"),
                &m.tls,
                m.url.starts_with("mqtts://"),
            );
        }
        if let Some(n) = &up.nats {
            if !(n.url.starts_with("nats://") || n.url.starts_with("tls://")) {
                out.push(problem(
                    format!("{at}.nats.url"),
                    format!(
                        "expected nats://host:port or tls://host:port, found \"{}\"",
                        n.url
                    ),
                ));
            }
            check_ident(
                &mut out,
                &format!("{at}.nats.subject_prefix"),
                "a subject prefix",
                &n.subject_prefix,
            );
            if n.token.is_some() && n.token_file.is_some() {
                out.push(problem(
                    format!("{at}.nats.token_file"),
                    "give `token` or `token_file`, not both",
                ));
            }
            if n.password.is_some() && n.password_file.is_some() {
                out.push(problem(
                    format!("{at}.nats.password_file"),
                    "give `password` or `password_file`, not both",
                ));
            }
            let auths = [
                n.token.is_some() || n.token_file.is_some(),
                n.user.is_some(),
                n.nkey_file.is_some(),
                n.creds_file.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if auths > 1 {
                out.push(problem(
                    format!("{at}.nats"),
                    "give one way to authenticate: token, user/password, nkey_file or creds_file",
                ));
            }
            if (n.password.is_some() || n.password_file.is_some()) && n.user.is_none() {
                out.push(problem(
                    format!("{at}.nats.user"),
                    "a password needs `user`",
                ));
            }
            check_ident(
                &mut out,
                &format!("{at}.nats.stream"),
                "a stream name",
                &n.stream,
            );
            if !(1..=4096).contains(&n.max_inflight) {
                out.push(problem(
                    format!("{at}.nats.max_inflight"),
                    "must be 1 to 4096",
                ));
            }
            check_tls(
                &mut out,
                &format!("{at}.nats.tls"),
                &n.tls,
                n.url.starts_with("tls://"),
            );
        }
    }

    let web = &cfg.web;
    if web.cert.is_some() != web.key.is_some() {
        let missing = if web.cert.is_some() { "key" } else { "cert" };
        out.push(problem(
            format!("web.{missing}"),
            "`cert` and `key` go together: set both or neither",
        ));
    }
    if !web.tls && web.cert.is_some() {
        out.push(problem(
            "web.cert",
            "a certificate is set but `tls = false`: remove it or serve HTTPS",
        ));
    }
    if web.session_ttl.as_millis() < 60_000 || web.session_ttl.as_millis() > 30 * 86_400_000 {
        out.push(problem("web.session_ttl", "must be between 1m and 30d"));
    }
    if let Some(h) = &web.admin_password_hash {
        if !h.starts_with("$argon2") {
            out.push(problem(
                "web.admin_password_hash",
                "must be an argon2 hash in PHC form (`$argon2id$v=19$m=…`), never the password itself",
            ));
        }
    }
    check_remote(&mut out, cfg);
    if let Some(key) = &cfg.remote.fleet_public_key {
        if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push(problem(
                "remote.fleet_public_key",
                "expected 64 hex digits (an ed25519 public key)",
            ));
        }
    }
    out
}

fn check_remote(out: &mut Vec<Problem>, cfg: &Config) {
    let r = &cfg.remote;
    let uplink = |name: &str| cfg.uplinks.iter().find(|u| u.name == name);
    if let Some(n) = &r.nats_uplink {
        match uplink(n) {
            Some(u) if u.nats.is_some() => {}
            Some(_) => out.push(problem(
                "remote.nats_uplink",
                format!("uplink {n:?} is not a NATS uplink"),
            )),
            None => out.push(problem(
                "remote.nats_uplink",
                format!("no uplink is named {n:?}"),
            )),
        }
        if r.kv_bucket.is_empty()
            || !r
                .kv_bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.push(problem(
                "remote.kv_bucket",
                "a bucket name is letters, digits, `-` and `_`",
            ));
        }
    }
    if let Some(m) = &r.mqtt_uplink {
        match uplink(m) {
            Some(u) => {
                match &u.mqtt {
                    Some(mq) => {
                        if r.thingsboard && mq.mode != crate::schema::MqttMode::Thingsboard {
                            out.push(problem(
                            "remote.thingsboard",
                            format!("uplink {m:?} is not in ThingsBoard mode (mode = \"thingsboard\")"),
                        ));
                        }
                        if !r.thingsboard && mq.mode == crate::schema::MqttMode::Thingsboard {
                            out.push(problem(
                                "remote.thingsboard",
                                format!("uplink {m:?} is in ThingsBoard mode, which takes the configuration from the gateway's shared attribute `configuration` (set thingsboard = true; a retained topic is not ThingsBoard's)"),
                            ));
                        }
                    }
                    None => out.push(problem(
                        "remote.mqtt_uplink",
                        format!("uplink {m:?} is not an MQTT uplink"),
                    )),
                }
            }
            None => out.push(problem(
                "remote.mqtt_uplink",
                format!("no uplink is named {m:?}"),
            )),
        }
        if r.topic.contains(['+', '#']) {
            out.push(problem(
                "remote.topic",
                "a topic to subscribe to has no wildcards",
            ));
        }
    } else if r.thingsboard {
        out.push(problem("remote.thingsboard", "needs `mqtt_uplink`"));
    }
    if r.grace.as_millis() < 1_000 || r.grace.as_millis() > 600_000 {
        out.push(problem("remote.grace", "must be between 1s and 10m"));
    }
    if r.history == 0 || r.history > 100 {
        out.push(problem("remote.history", "must be between 1 and 100"));
    }
}

fn check_tls(out: &mut Vec<Problem>, at: &str, tls: &crate::schema::Tls, secure_url: bool) {
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        out.push(problem(
            format!("{at}.key_file"),
            "a client certificate needs both `cert_file` and `key_file`",
        ));
    }
    if !secure_url && (tls.ca_file.is_some() || tls.cert_file.is_some()) {
        out.push(problem(
            at,
            "TLS files are set but the URL does not use TLS (mqtts:// or tls://)",
        ));
    }
}

fn check_signal(out: &mut Vec<Problem>, at: &str, tag: &SimTag) {
    let set = [
        tag.counter.is_some(),
        tag.sine.is_some(),
        tag.random_walk.is_some(),
        tag.toggle.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        out.push(problem(
            at,
            format!(
                "tag \"{}\" needs exactly one signal: `counter`, `sine`, `random_walk` or `toggle` (found {set})",
                tag.name
            ),
        ));
    }
    if let Some(s) = &tag.sine {
        if s.period.as_millis() == 0 {
            out.push(problem(
                format!("{at}.sine.period"),
                "must be longer than 0s",
            ));
        }
    }
    if let Some(w) = &tag.random_walk {
        if w.min >= w.max {
            out.push(problem(
                format!("{at}.random_walk.max"),
                "must be greater than `min`",
            ));
        }
        if let Some(start) = w.start {
            if start < w.min || start > w.max {
                out.push(problem(
                    format!("{at}.random_walk.start"),
                    "must lie between `min` and `max`",
                ));
            }
        }
    }
    if let Some(t) = &tag.toggle {
        if t.every == 0 {
            out.push(problem(format!("{at}.toggle.every"), "must be at least 1"));
        }
    }
}
