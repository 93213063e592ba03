//! The technician's web page, the local JSON API (`/api/v1`), Prometheus
//! metrics (`/metrics`) and health checks (`/healthz`, `/readyz`).
//!
//! Everything shown comes from the live views and counters the daemon
//! keeps anyway (projections of committed events, uplink and driver
//! status), never from scanning the log, so a page costs the same whatever
//! the backlog. Pages are server-rendered HTML (askama, compiled into the
//! binary) and work without JavaScript; a little plain JavaScript adds live
//! updates.
//!
//! Invariants:
//! - Every page and API route except the login, setup, health and metrics
//!   routes needs a session; every state-changing request needs the
//!   session's CSRF token (see [`auth`]).
//! - Responses carry a strict Content-Security-Policy: scripts and styles
//!   only from this server, no frames.
//! - A web server that cannot start (port taken, bad certificate) is logged
//!   and the gateway keeps collecting: the page is not the data path.

mod api;
pub mod auth;
mod commission;
mod config_page;
mod export;
mod listen;
mod live;
mod metrics;
mod model;
mod openapi;
mod pages;
pub(crate) mod time;
mod trend;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use outpost_core::Clock;
use outpost_drivers::command::Router as Writes;
use outpost_drivers::metrics::Metrics;
use outpost_sync::uplink::SharedStatus;
use outpost_sync::EventLog;
use tokio_util::sync::CancellationToken;

use crate::views::Latest;
pub use listen::Peer;

/// How often the rate history takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: one hour.
const SAMPLES: usize = 720;

/// What the web server reads. Built once by the daemon.
#[derive(Debug)]
pub struct Shared {
    pub gateway: String,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    pub log: EventLog,
    pub latest: Arc<RwLock<Latest>>,
    pub uplinks: Vec<(String, SharedStatus)>,
    pub drivers: Metrics,
    /// Configured devices: (name, driver description).
    pub devices: Vec<(String, String)>,
    pub writes: Writes,
    pub auth: auth::Auth,
    pub data_dir: PathBuf,
    /// Unit of each (device, tag), where configured.
    pub units: BTreeMap<(String, String), String>,
    /// (device, tag) pairs that take writes.
    pub writable: std::collections::BTreeSet<(String, String)>,
    /// Whether cookies get the `Secure` flag (served over HTTPS).
    pub secure_cookies: bool,
    pub history: Mutex<VecDeque<Sample>>,
    /// Where the configuration came from, for the overview.
    pub config_source: String,
    /// The configuration file (none for the embedded demo).
    pub config_path: Option<PathBuf>,
    /// Cancelled to have outpostd restart (after a configuration is applied).
    pub restart: CancellationToken,
    /// The configuration manager (applies by diff); none in page tests.
    pub manager: Option<tokio::sync::mpsc::Sender<crate::remote::Request>>,
    /// The running configuration document (none in page tests: the file is).
    pub running: Option<crate::remote::SharedRunning>,
    /// The rule chains' node counters.
    pub rules: crate::pipeline::SharedCounters,
    /// Live updates for open pages (see [`live`]).
    pub live: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Ends the server and its streams.
    pub stop: CancellationToken,
    /// The devices page's last-hour charts, computed at most every
    /// [`SPARKS_TTL`] whatever the number of viewers.
    pub sparks: tokio::sync::Mutex<Option<(Instant, Arc<Sparks>)>>,
}

/// Last-hour SVG per (device, tag).
pub type Sparks = BTreeMap<(String, String), String>;
pub const SPARKS_TTL: Duration = Duration::from_secs(30);

/// Counters at one moment, for rates and the overview's charts.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub appended: u64,
    /// Per uplink, in `Shared::uplinks` order: (events acknowledged, backlog).
    pub uplinks: Vec<(u64, u64)>,
}

impl Shared {
    /// Takes a sample of the counters into the history.
    pub fn sample(&self) {
        let stats = self.log.stats().borrow().clone();
        let head = stats.next_seq.saturating_sub(1);
        let uplinks = self
            .uplinks
            .iter()
            .map(|(_, st)| {
                st.lock()
                    .map(|u| (u.events_acked, head.saturating_sub(u.cursor)))
                    .unwrap_or_default()
            })
            .collect();
        let s = Sample {
            at: Instant::now(),
            appended: stats.appended_total,
            uplinks,
        };
        if let Ok(mut h) = self.history.lock() {
            if h.len() >= SAMPLES {
                h.pop_front();
            }
            h.push_back(s);
        }
    }

    /// Appends an audit event (who did what); a log that refuses it is
    /// reported, not fatal.
    pub async fn audit(&self, action: &str, actor: &str, detail: String) {
        let ev = outpost_core::Event::new(
            "",
            self.clock.now(),
            outpost_core::Body::Audit(outpost_core::Audit {
                action: action.to_string(),
                actor: actor.to_string(),
                detail,
            }),
        );
        if let Err(e) = self.log.append(vec![ev]).await {
            tracing::warn!(action, error = %e.error, "Cannot log an audit event.");
        }
    }
}

/// Every route of the web page and the API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/devices", get(pages::devices))
        .route("/devices/write", post(pages::write))
        .route("/devices/{device}", get(pages::device))
        .route("/logs", get(pages::logs))
        .route("/rules", get(pages::rules))
        .route("/config", get(config_page::view).post(config_page::edit))
        .route("/config/history", get(config_page::earlier))
        .route("/config/document", get(config_page::document))
        .route("/modbus", get(commission::page))
        .route("/export", get(pages::export_form))
        .route("/export/data", get(pages::export_data))
        .route(
            "/login",
            get(pages::login_form)
                .post(pages::login)
                .layer(small_forms()),
        )
        .route("/logout", post(pages::logout))
        .route(
            "/setup",
            get(pages::setup_form)
                .post(pages::setup)
                .layer(small_forms()),
        )
        .route("/users", get(pages::users).post(pages::user_change))
        .route("/events", get(live::events))
        .route("/static/app.css", get(static_css))
        .route("/static/app.js", get(static_js))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .nest("/api/v1", api::routes())
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared)
}

/// Forms anyone may post before logging in: a few fields, never megabytes.
fn small_forms() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(16 * 1024)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn static_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
        .into_response()
}

async fn static_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/app.js"),
    )
        .into_response()
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the log accepts events (not full, not broken).
async fn readyz(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
) -> (StatusCode, String) {
    let stats = s.log.stats().borrow().clone();
    if stats.disk_full {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the event log's disk is full\n".into(),
        );
    }
    (StatusCode::OK, "ready\n".into())
}

/// A broadcast channel for [`Shared::live`].
pub fn live_channel() -> tokio::sync::broadcast::Sender<Arc<str>> {
    tokio::sync::broadcast::channel(live::BACKLOG).0
}

/// Serves the router on `bind` until `shared.stop`. Returns once listening
/// (or the reason it cannot).
pub async fn serve(
    shared: Arc<Shared>,
    web: &outpost_config::Web,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(shared, web, listen::Limits::default()).await
}

/// [`serve`] with other connection limits (tests use short timeouts).
pub async fn serve_with(
    shared: Arc<Shared>,
    web: &outpost_config::Web,
    limits: listen::Limits,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use anyhow::Context;
    let stop = shared.stop.clone();
    let tls = if web.tls {
        let dir = shared.data_dir.join("web");
        let configured = web.cert.as_deref().zip(web.key.as_deref());
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !web.bind.ip().is_unspecified() && !web.bind.ip().is_loopback() {
            names.push(web.bind.ip().to_string());
        }
        names.push(shared.gateway.clone());
        let cfg = listen::tls_config(&dir, configured, names)
            .map_err(|e| anyhow::anyhow!("the web page's certificate: {e}"))?;
        Some(cfg)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(web.bind)
        .await
        .with_context(|| format!("listening on {}", web.bind))?;
    let accepted = listen::Accepted::start(listener, tls, limits, stop.clone())?;
    let local = accepted.local_addr();
    let app = router(shared.clone()).layer(axum::middleware::from_fn_with_state(
        shared.clone(),
        connection_trust,
    ));
    outpost_core::task::spawn(live::publish(shared.clone(), stop.clone()));
    let sampler = shared.clone();
    let sampler_stop = stop.clone();
    outpost_core::task::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tokio::select! {
                () = sampler_stop.cancelled() => return,
                _ = every.tick() => sampler.sample(),
            }
        }
    });
    let task = outpost_core::task::spawn(listen::serve(accepted, app, limits, stop));
    Ok((local, task))
}

/// Marks a connection trusted once it carries a valid session or API token
/// (see [`listen`]), and counts its requests in progress.
async fn connection_trust(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let conn = req
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| c.0 .1.clone());
    let _busy = conn.as_ref().map(|c| {
        if !c.is_trusted() && authenticated(&s, req.headers()) {
            c.trust();
        }
        c.busy()
    });
    next.run(req).await
}

/// Whether the request carries an open session or a valid API token.
fn authenticated(s: &Shared, headers: &axum::http::HeaderMap) -> bool {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return s.auth.bearer(bearer.trim()).is_some();
    }
    pages::cookie(headers, pages::SESSION_COOKIE).is_some_and(|t| s.auth.session(t).is_some())
}

#[cfg(test)]
mod connection_tests;
#[cfg(test)]
mod tests;
