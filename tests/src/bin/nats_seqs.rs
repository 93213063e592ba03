//! What a JetStream stream holds of a gateway's events, for the emulated
//! gateway's test (`cross/vm/gateway.sh`): reads every message of the stream
//! `OUTPOST` at the URL given and prints one line,
//! `seqs N first A last B missing M duplicated D`, where missing counts the
//! seqs between A and B that no message carries and duplicated the messages
//! beyond the first for one seq. Exits 1 if the stream cannot be read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test program

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: nats_seqs nats://127.0.0.1:PORT");
        return ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = outpost_tests::site::nats_seen(&rt, &url);
    let (Some((&first, _)), Some((&last, _))) = (seen.first_key_value(), seen.last_key_value())
    else {
        eprintln!("nats_seqs: no event in the stream OUTPOST at {url}");
        return ExitCode::from(1);
    };
    let missing = (first..=last).filter(|s| !seen.contains_key(s)).count();
    let duplicated: u64 = seen.values().map(|n| n - 1).sum();
    println!(
        "seqs {} first {first} last {last} missing {missing} duplicated {duplicated}",
        seen.len()
    );
    ExitCode::SUCCESS
}
