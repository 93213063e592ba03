//! Modbus RTU: the poller's link over an in-memory line, a device sending
//! any bytes in any pieces at any pace, for a run of requests on one link
//! (so that what one response leaves behind meets the next request).
//! Never panics; a response is used only when it answers the request in
//! full; every transaction ends by its timeout plus one full response's
//! wire time and two gaps, however the device babbles.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use outpost_drivers::modbus::link::RtuLink;
use outpost_fuzz::{check_response, paused_runtime, reply, request, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

// Input: `char time (µs, 2 bytes; 0 is RTU over TCP)`, then up to eight
// transactions of `unit, request, reply` (see the crate's `request` and
// `reply`).
fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let char_time = Duration::from_micros(u64::from(b.u16() % 2000));
    // No inter-frame gap: a gap's last stretch is slept on a real thread.
    let gap = Duration::ZERO;
    let timeout = Duration::from_millis(300);
    paused_runtime().block_on(async {
        let (client, mut device) = tokio::io::duplex(1 << 16);
        let mut link = RtuLink::new(Box::new(client), char_time, gap);
        for _ in 0..8 {
            if b.is_empty() {
                break;
            }
            let unit = b.u8() % 248;
            let req = request(&mut b);
            let answer = reply(&mut b);
            let full = 1 + req.response_len() + 2;
            let mut frame = Vec::new();
            req.encode(&mut frame);
            let bound = char_time * (frame.len() as u32 + 3)
                + timeout
                + char_time * full as u32
                + gap * 2
                + Duration::from_millis(2);
            let start = Instant::now();
            let device_side = async {
                for (pause, bytes) in &answer.chunks {
                    tokio::time::sleep(*pause).await;
                    if device.write_all(bytes).await.is_err() {
                        break;
                    }
                }
                if answer.hang_up {
                    let _closed = device.shutdown().await;
                }
                std::future::pending::<()>().await;
            };
            // The requests wait in the line's buffer unread (64 KiB, far
            // more than eight requests).
            let out = tokio::select! {
                out = link.transact(unit, &req, timeout) => out,
                () = device_side => unreachable!("the device never finishes"),
            };
            let took = start.elapsed();
            assert!(
                took <= bound,
                "a transaction took {took:?}, bound {bound:?}"
            );
            if let Ok(Ok(resp)) = &out {
                check_response(&req, resp);
            }
            let _noise = link.take_noise();
        }
    });
});
