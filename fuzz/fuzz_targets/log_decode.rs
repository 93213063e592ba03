//! Stored event bodies, as a log row holds them (whatever a corrupt or
//! foreign database put there), decoded and then formatted for every
//! uplink. Decoding never panics; what decodes encodes and decodes back to
//! the same; every payload sent upstream is JSON and the messages cover
//! every event, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_core::{codec, Seq};
use outpost_fuzz::Bytes;
use outpost_sync::uplink::format;
use outpost_core::codec::Tagsets;
use outpost_sync::log::tagsets::TagsetCache;
use outpost_sync::StoredEvent;

// Input: `largest payload (2 bytes)`, then rows, each `length (2 bytes),
// body` as the log's `body` column holds it.
fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let max = usize::from(b.u16()).max(64);
    let mut stored = Vec::new();
    // The log's tag lists for compact rows: a few of them, as a log has.
    let mut sets = TagsetCache::default();
    for tags in [&["t"][..], &["t", "p"], &["a", "b", "c"], &[""]] {
        let _id = sets.intern(tags);
    }
    sets.committed();
    while !b.is_empty() {
        let len = usize::from(b.u16());
        let row = b.take(len);
        let Ok(event) = codec::decode_with(row, &sets) else {
            continue;
        };
        // What decodes is written back compactly where it can be, and reads
        // back the same.
        let mut compact = Vec::new();
        if let Err(e) = codec::encode_compact_into(&event, &mut compact, &mut sets) {
            panic!("a decoded event does not encode: {e}");
        }
        sets.committed();
        let again = match codec::decode_with(&compact, &sets) {
            Ok(e) => e,
            Err(e) => panic!("a compact event does not decode: {e}"),
        };
        let mut twice = Vec::new();
        if let Err(e) = codec::encode_compact_into(&again, &mut twice, &mut sets) {
            panic!("a compact event does not encode again: {e}");
        }
        // (Bytes, not events: NaN is not equal to itself.)
        assert_eq!(twice, compact, "changed on the compact way round");
        let bytes = match codec::encode(&event) {
            Ok(b) => b,
            Err(e) => panic!("a decoded event does not encode: {e}"),
        };
        let again = match codec::decode(&bytes) {
            Ok(e) => e,
            Err(e) => panic!("an encoded event does not decode: {e}"),
        };
        assert_eq!(
            codec::encode(&again).ok(),
            Some(bytes),
            "changed on the way round"
        );
        stored.push(StoredEvent {
            seq: Seq(stored.len() as u64 + 1),
            event,
        });
    }
    let Some(last) = stored.last().map(|s| s.seq.0) else {
        return;
    };
    for messages in [
        format::generic("gw", "outpost/{gateway}/{device}/{kind}", &stored, max),
        format::thingsboard(&stored, max),
    ] {
        let mut seqs = messages.iter().map(|m| m.last_seq);
        assert_eq!(seqs.clone().last(), Some(last), "an event was left out");
        let mut prev = 0;
        assert!(
            seqs.all(|s| std::mem::replace(&mut prev, s) < s),
            "out of order"
        );
        for m in &messages {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&m.payload) {
                panic!(
                    "{} carries {e}: {:?}",
                    m.topic,
                    String::from_utf8_lossy(&m.payload)
                );
            }
        }
    }
    for s in &stored {
        let j = format::event_json("gw", s);
        assert!(
            serde_json::from_slice::<serde_json::Value>(&j).is_ok(),
            "not JSON"
        );
        let n = format::nats("outpost", "gw", s);
        assert!(
            serde_json::from_slice::<serde_json::Value>(&n.payload).is_ok(),
            "not JSON"
        );
    }
});
