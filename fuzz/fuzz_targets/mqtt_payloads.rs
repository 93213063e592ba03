//! What an MQTT broker delivers to the gateway: ThingsBoard RPC requests
//! (`v1/gateway/rpc`) and attribute updates and responses. Never panics;
//! a request the gateway acts on names a tag and a plain value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_core::Value;
use outpost_sync::uplink::format::rpc_request;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = rpc_request(data) {
        if let Ok((tag, value)) = &req.write {
            assert!(!tag.is_empty(), "a write without a tag");
            if let Value::F64(f) = value {
                assert!(f.is_finite(), "a write of {f}");
            }
        }
        let _reply =
            serde_json::json!({"device": req.device, "id": req.id, "data": {}}).to_string();
    }
    if let Some(inner) = outpost_sync::control::thingsboard_configuration(data) {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&inner).is_ok(),
            "the attribute is not handed on as JSON"
        );
    }
});
