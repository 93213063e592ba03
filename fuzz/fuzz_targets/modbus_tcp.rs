//! Modbus TCP: the poller's link over an in-memory connection, a server
//! sending any bytes in any pieces at any pace, for a run of requests on
//! one connection (late answers, wrong transaction ids, broken headers).
//! Never panics; a response is used only when it answers the request in
//! full; every transaction ends by its timeout.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use outpost_drivers::modbus::link::TcpLink;
use outpost_fuzz::{check_response, paused_runtime, reply, request, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

// Input: up to eight transactions of `unit, request, reply` (see the
// crate's `request` and `reply`).
fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let timeout = Duration::from_millis(300);
    let bound = timeout + Duration::from_millis(2);
    paused_runtime().block_on(async {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut link = TcpLink::new(Box::new(client));
        for _ in 0..8 {
            if b.is_empty() {
                break;
            }
            let unit = b.u8();
            let req = request(&mut b);
            let answer = reply(&mut b);
            let start = Instant::now();
            let server_side = async {
                for (pause, bytes) in &answer.chunks {
                    tokio::time::sleep(*pause).await;
                    if server.write_all(bytes).await.is_err() {
                        break;
                    }
                }
                if answer.hang_up {
                    let _closed = server.shutdown().await;
                }
                std::future::pending::<()>().await;
            };
            let out = tokio::select! {
                out = link.transact(unit, &req, timeout) => out,
                () = server_side => unreachable!("the server never finishes"),
            };
            let took = start.elapsed();
            assert!(
                took <= bound,
                "a transaction took {took:?}, bound {bound:?}"
            );
            if let Ok(Ok(resp)) = &out {
                check_response(&req, resp);
            }
        }
    });
});
