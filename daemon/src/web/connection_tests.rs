//! The web server over real loopback sockets: idle, slow and anonymous
//! clients cannot keep a logged-in user out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::listen::Limits;
use super::tests::{fixture, ready};
use super::*;

async fn start(limits: Limits) -> (super::tests::Fixture, SocketAddr, String) {
    let (f, _app, admin) = ready(fixture(false)).await;
    let mut web = outpost_config::demo().unwrap().web;
    web.bind = "127.0.0.1:0".parse().unwrap();
    web.tls = false;
    let (addr, _task) = serve_with(f.shared.clone(), &web, limits).await.unwrap();
    (f, addr, admin)
}

/// Sends one keep-alive request on `s` and returns the status code.
async fn request(s: &mut TcpStream, path: &str, cookie: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the head and a body of Content-Length have arrived.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("no answer in 20 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

/// Whether the server closes `s` within `limit` (EOF or a reset).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn idle_connections_cannot_keep_a_logged_in_user_out() {
    let limits = Limits {
        connections: 16,
        header_read: Duration::from_secs(120),
        ..Limits::default()
    };
    let (_f, addr, admin) = start(limits).await;
    // Every slot taken by clients that say nothing.
    let mut idle = Vec::new();
    for _ in 0..limits.connections {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The admin still gets in: the oldest idle connection makes room.
    let mut user = TcpStream::connect(addr).await.unwrap();
    assert_eq!(request(&mut user, "/api/v1/session", &admin).await, 200);
    // More anonymous clients, more than there are slots: they take each
    // other's places, never the admin's, whose connection keeps working.
    for _ in 0..limits.connections * 2 {
        idle.push(TcpStream::connect(addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(request(&mut user, "/api/v1/session", &admin).await, 200);
    // And the first idle one was closed to make room.
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)).await);
    // Anonymous requests still work on a connection of their own.
    let mut anon = TcpStream::connect(addr).await.unwrap();
    assert_eq!(request(&mut anon, "/healthz", "").await, 200);
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_dribbles_a_header_is_closed() {
    let limits = Limits {
        header_read: Duration::from_secs(1),
        ..Limits::default()
    };
    let (_f, addr, admin) = start(limits).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    // A header a byte every 200 ms (slowloris) takes longer than 1 s.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let dribble = async {
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(&[*b]).await.is_err() {
                return true;
            }
        }
        false
    };
    let cut = tokio::time::timeout(Duration::from_secs(20), dribble)
        .await
        .unwrap_or(false);
    assert!(cut, "a header dribbled for 12 s was still being read");
    // A kept-alive connection that goes quiet after a request is closed too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    assert_eq!(request(&mut kept, "/api/v1/session", &admin).await, 200);
    assert!(closed_within(&mut kept, Duration::from_secs(10)).await);
}
