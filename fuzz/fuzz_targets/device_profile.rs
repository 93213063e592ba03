//! ThingsBoard device-profile exports: any JSON. Reading never panics and a
//! refusal always says why; a profile that loads runs in a chain on
//! telemetry, attribute and timer steps (numbers, strings, booleans, across
//! days and time zones) without panicking.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use outpost_core::Timestamp;
use outpost_rules::msg::Msg;
use outpost_rules::profile::{Profile, Profiles};
use outpost_rules::tb::{load, LoadOptions, Source};

const CHAIN: &str = r#"{"ruleChain": {"name": "root"}, "metadata": {"firstNodeIndex": 0,
  "nodes": [{"type": "org.thingsboard.rule.engine.profile.TbDeviceProfileNode", "name": "p",
             "configuration": {}}], "connections": []}}"#;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let profile = match Profile::parse(&text, "profile.json") {
        Ok(p) => p,
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without a reason");
            return;
        }
    };
    let name = profile.name.clone();
    let keys: Vec<String> = profile.ts_keys.iter().cloned().collect();
    let mut profiles = Profiles::default();
    profiles.insert(profile);
    let opts = LoadOptions {
        profiles: Arc::new(profiles),
        ..LoadOptions::default()
    };
    let source = Source {
        origin: "root.json".into(),
        json: CHAIN.into(),
    };
    let Ok(mut engine) = load(&[source], &opts) else {
        return;
    };
    let values = [
        serde_json::json!(95.5),
        serde_json::json!(-3),
        serde_json::json!("FAULT"),
        serde_json::json!(true),
        serde_json::json!(null),
    ];
    let (mut events, mut writes) = (Vec::new(), Vec::new());
    let mut ms = 1_796_641_200_000i64;
    for (i, v) in values.iter().enumerate() {
        let mut data = serde_json::Map::new();
        for k in &keys {
            data.insert(k.clone(), v.clone());
        }
        let kind = if i % 2 == 0 {
            "POST_TELEMETRY_REQUEST"
        } else {
            "POST_ATTRIBUTES_REQUEST"
        };
        let mut msg = Msg::new("dev", kind, serde_json::Value::Object(data), Timestamp::synced(ms));
        msg.metadata.insert("deviceType".into(), name.clone());
        engine.process(Timestamp::synced(ms), msg, &mut events, &mut writes);
        ms += 7 * 3_600_000;
        engine.tick(Timestamp::synced(ms), &mut events, &mut writes);
    }
});
