//! Configuration documents as every remote source delivers them: a NATS KV
//! value or a retained MQTT payload (the document's JSON), and ThingsBoard's
//! shared-attribute update (the document inside an attribute). Reading and
//! verifying never panic; a document that verifies against the fleet key
//! was signed by it; its body goes on to the configuration parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_config::document::Document;

/// The fleet key of the corpus's signed documents (public half, hex).
const FLEET_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fuzz_target!(|data: &[u8]| {
    let mut candidates = vec![data.to_vec()];
    if let Some(inner) = outpost_sync::control::thingsboard_configuration(data) {
        candidates.push(inner);
    }
    for bytes in candidates {
        let Ok(doc) = Document::from_json(&bytes) else {
            continue;
        };
        let unsigned = doc.verify(None);
        let signed = doc.verify(Some(FLEET_KEY));
        if signed.is_ok() {
            assert!(unsigned.is_ok(), "signed but its hash is wrong");
        }
        let _round = Document::from_json(doc.to_json().as_bytes());
        if unsigned.is_ok() {
            let _checked = outpost_config::parse_bytes(doc.body.as_bytes(), "document.toml");
        }
    }
});
