//! The web server's request handling for the fuzz targets (feature
//! `fuzzing`, never in a release build): the router as `serve` mounts it,
//! over a real log and account store in a directory the caller owns, with
//! an admin already set up, logged in and holding an API token.
//!
//! Invariants: a request is handled in-process (no socket), its body read
//! to the end (an event stream only up to its first chunk), and the only
//! outcome checked here is the one every client is promised: the server
//! answers, with a status below 500, and nothing panics.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use tower::ServiceExt;

use crate::web::auth::{Auth, Role};
use crate::web::{live_channel, router, Shared};

/// One request as the fuzzer shapes it.
#[derive(Debug, Clone, Default)]
pub struct FuzzRequest {
    pub method: String,
    /// Path and query string.
    pub uri: String,
    /// Send the admin's session cookie (and its CSRF token wherever the
    /// body says `{csrf}`).
    pub session: bool,
    /// Send the admin's API token as a bearer token.
    pub bearer: bool,
    /// More of the `Cookie` header, as sent.
    pub cookie: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The router and the admin's credentials.
#[derive(Debug)]
pub struct WebHarness {
    app: axum::Router,
    session: String,
    csrf: String,
    bearer: String,
}

/// What a request got.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl WebHarness {
    /// Sets up the web server's state in `dir` (which must be empty and
    /// outlive the harness).
    pub async fn new(dir: &Path) -> Result<Self, String> {
        let clock = Arc::new(outpost_core::FixedClock::new(1_764_000_000_000));
        let demo = outpost_config::demo().map_err(|e| e.to_string())?;
        let (log, _) = outpost_sync::EventLog::open(
            &dir.join("events.db"),
            outpost_sync::LogOptions::from_config(&demo.gateway),
            clock.clone(),
        )
        .map_err(|e| e.to_string())?;
        let (auth, token) = Auth::open(&dir.join("web"), Duration::from_secs(3600), None)
            .map_err(|e| e.to_string())?;
        let token = token.ok_or("no setup token")?;
        let (session, s) = auth
            .setup(&token, "admin", "correct horse battery")
            .await
            .map_err(|e| e.to_string())?;
        let bearer = auth
            .create_token("fuzz", Role::Admin)
            .map_err(|e| e.to_string())?;
        // A device whose driver is gone: writes to it fail at once.
        let mut writes = outpost_drivers::command::Router::default();
        writes.add("pump", tokio::sync::mpsc::channel(1).0);
        let config_path = dir.join("outpost.toml");
        std::fs::write(&config_path, outpost_config::DEMO_TOML).map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            gateway: "gw-fuzz".into(),
            clock,
            started: std::time::Instant::now(),
            log,
            latest: Arc::default(),
            uplinks: vec![("cloud".into(), Arc::default())],
            drivers: outpost_drivers::metrics::Metrics::default(),
            devices: vec![("pump".into(), "modbus tcp 127.0.0.1:502".into())],
            writes,
            auth,
            data_dir: dir.to_path_buf(),
            units: [(("pump".to_string(), "speed".to_string()), "rpm".to_string())].into(),
            writable: [("pump".to_string(), "speed".to_string())].into(),
            secure_cookies: false,
            history: std::sync::Mutex::default(),
            config_source: "fuzz".into(),
            config_path: Some(config_path),
            rules: Arc::default(),
            restart: tokio_util::sync::CancellationToken::new(),
            manager: None,
            running: None,
            live: live_channel(),
            stop: tokio_util::sync::CancellationToken::new(),
            sparks: tokio::sync::Mutex::new(None),
        });
        Ok(Self {
            app: router(shared),
            session,
            csrf: s.csrf,
            bearer,
        })
    }

    /// Handles one request. `Err` only for a request that cannot be made
    /// at all (an invalid method, URI or header value): hyper would have
    /// refused it before the router.
    pub async fn call(&self, r: &FuzzRequest) -> Result<Answer, String> {
        let mut b = Request::builder()
            .method(r.method.as_str())
            .uri(r.uri.as_str());
        let mut cookie = r.cookie.clone();
        let mut body = r.body.clone();
        if r.session {
            cookie = format!("outpost_session={}; {cookie}", self.session);
            body = replace(&body, b"{csrf}", self.csrf.as_bytes());
        }
        if !cookie.is_empty() {
            b = b.header(header::COOKIE, cookie);
        }
        if r.bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {}", self.bearer));
        }
        if !r.content_type.is_empty() {
            b = b.header(header::CONTENT_TYPE, r.content_type.as_str());
        }
        let req = b.body(Body::from(body)).map_err(|e| e.to_string())?;
        let res = self
            .app
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let streaming = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = if streaming {
            Vec::new()
        } else {
            axum::body::to_bytes(res.into_body(), 64 << 20)
                .await
                .map_err(|e| e.to_string())?
                .to_vec()
        };
        Ok(Answer { status, body })
    }
}

fn replace(hay: &[u8], what: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(what) {
            out.extend_from_slice(with);
            i += what.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}
