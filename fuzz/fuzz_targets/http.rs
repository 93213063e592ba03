//! The web server's request handling: any method, path, query string,
//! cookies, content type and body (HTML forms, JSON, the login), with or
//! without the admin's session (and its CSRF token where the body says
//! `{csrf}`) or API token. Never panics and never answers 500 for what a
//! client sent (a configuration that could not be applied is the one 500:
//! the gateway's state, not the request); 502 and 503 are a device's or
//! the log's state, reported as such.
//!
//! The input is text: `METHOD URI`, a line of flags (`s` session, `b`
//! bearer token), the `Cookie` header, the `Content-Type` header, then the
//! body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_daemon::fuzzing::{FuzzRequest, WebHarness};

struct Harness {
    runtime: tokio::runtime::Runtime,
    web: WebHarness,
    _dir: tempfile::TempDir,
}

thread_local! {
    static HARNESS: Harness = {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("no temp dir: {e}"),
        };
        let runtime = outpost_fuzz::paused_runtime();
        let web = match runtime.block_on(WebHarness::new(dir.path())) {
            Ok(w) => w,
            Err(e) => panic!("the web harness does not start: {e}"),
        };
        Harness { runtime, web, _dir: dir }
    };
}

fn request(data: &[u8]) -> Option<FuzzRequest> {
    let mut lines = data.splitn(5, |&b| b == b'\n');
    let first = std::str::from_utf8(lines.next()?).ok()?;
    let (method, uri) = first.split_once(' ')?;
    let flags = lines.next().unwrap_or_default();
    let text = |l: Option<&[u8]>| String::from_utf8_lossy(l.unwrap_or_default()).into_owned();
    Some(FuzzRequest {
        method: method.to_string(),
        uri: uri.to_string(),
        session: flags.contains(&b's'),
        bearer: flags.contains(&b'b'),
        cookie: text(lines.next()),
        content_type: text(lines.next()),
        body: lines.next().unwrap_or_default().to_vec(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = request(data) else {
        return;
    };
    HARNESS.with(|h| {
        let Ok(answer) = h.runtime.block_on(h.web.call(&req)) else {
            return;
        };
        let body = String::from_utf8_lossy(&answer.body);
        assert!(
            answer.status != 500 || body.contains("applied"),
            "{} {} answered 500: {body}",
            req.method,
            req.uri
        );
        assert!(answer.status < 600, "status {}", answer.status);
    });
});
