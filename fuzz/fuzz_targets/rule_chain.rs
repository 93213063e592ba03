//! ThingsBoard rule-chain exports: any JSON (the input splits into up to
//! three chain files at NUL bytes, so that chains can refer to each other).
//! Loading never panics and reports every problem with its file; a chain
//! that loads runs a telemetry message and its timers without panicking,
//! every hop bounded (a chain that loops is cut off, not spun forever).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use outpost_core::Timestamp;
use outpost_rules::msg::Msg;
use outpost_rules::tb::{load, LoadOptions, Source};

fuzz_target!(|data: &[u8]| {
    let sources: Vec<Source> = data
        .split(|&b| b == 0)
        .take(3)
        .enumerate()
        .map(|(i, part)| Source {
            origin: format!("chain{i}.json"),
            json: String::from_utf8_lossy(part).into_owned(),
        })
        .collect();
    let opts = LoadOptions {
        pass_unsupported: data.first().is_some_and(|b| b & 1 == 1),
        script_memory: 4 << 20,
        script_timeout: Duration::from_millis(20),
        ..LoadOptions::default()
    };
    let mut engine = match load(&sources, &opts) {
        Ok(e) => e,
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without a reason");
            return;
        }
    };
    let now = Timestamp::synced(1_764_000_000_000);
    let data = serde_json::json!({"temperature": 71.5, "pressure": 2, "state": "on"});
    let msg = Msg::new("boiler", "POST_TELEMETRY_REQUEST", data, now);
    let (mut events, mut writes) = (Vec::new(), Vec::new());
    engine.process(now, msg, &mut events, &mut writes);
    engine.tick(
        Timestamp::synced(now.unix_ms + 3_600_000),
        &mut events,
        &mut writes,
    );
});
