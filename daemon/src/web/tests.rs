//! Router tests without sockets: every route, with and without a session,
//! and the security rules (CSRF, lock-out, roles, escaping, cookie flags).
//! The device behind a write is a fake driver inbox answering in-process.

#![allow(clippy::disallowed_methods)] // test code: spawns and opens SQLite freely
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use outpost_core::{Body as EvBody, DeviceStatus, Event, FixedClock, Point, Seq, Timestamp, Value};
use outpost_drivers::command::{Command, Router as Writes, WriteCommand};
use outpost_sync::log::StoredEvent;
use outpost_sync::{EventLog, LogOptions};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::auth::{Auth, LOCK_AFTER};
use super::config_page::mask;
use super::*;

const NOW: i64 = 1_764_000_000_000;

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) shared: Arc<Shared>,
    token: String,
    writes: mpsc::Receiver<Command>,
}

/// The next write the fake driver got.
async fn next_write(rx: &mut mpsc::Receiver<Command>) -> WriteCommand {
    match rx.recv().await.unwrap() {
        Command::Write(w) => w,
        other => panic!("not a write: {other:?}"),
    }
}

pub(super) fn fixture(secure: bool) -> Fixture {
    build(secure, None)
}

/// A fixture running the configuration file `text`.
fn fixture_with_config(text: &str) -> Fixture {
    build(true, Some(text))
}

fn build(secure: bool, config: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config_path = config.map(|text| {
        let p = dir.path().join("outpost.toml");
        std::fs::write(&p, text).unwrap();
        p
    });
    let clock = Arc::new(FixedClock::new(NOW));
    // Commits at once: these tests read back what a request just wrote
    // (the group commit's delay is the log's business, tested there).
    let mut log_opts = LogOptions::from_config(&outpost_config::demo().unwrap().gateway);
    log_opts.commit_max_delay = Duration::ZERO;
    let (log, _) = EventLog::open(&dir.path().join("events.db"), log_opts, clock.clone()).unwrap();
    let (auth, token) =
        Auth::open(&dir.path().join("web"), Duration::from_secs(3600), None).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let mut writes = Writes::default();
    writes.add("pump", tx);
    let status: outpost_sync::uplink::SharedStatus = Arc::default();
    let shared = Arc::new(Shared {
        gateway: "gw-test".into(),
        clock,
        started: std::time::Instant::now(),
        log,
        latest: Arc::default(),
        uplinks: vec![("cloud".into(), status)],
        drivers: outpost_drivers::metrics::Metrics::default(),
        devices: vec![("pump".into(), "modbus tcp 127.0.0.1:502".into())],
        writes,
        auth,
        data_dir: dir.path().to_path_buf(),
        units: [(("pump".to_string(), "speed".to_string()), "rpm".to_string())].into(),
        writable: [("pump".to_string(), "speed".to_string())].into(),
        secure_cookies: secure,
        history: std::sync::Mutex::default(),
        config_source: "test".into(),
        config_path,
        rules: Arc::default(),
        restart: tokio_util::sync::CancellationToken::new(),
        manager: None,
        running: None,
        live: live_channel(),
        stop: tokio_util::sync::CancellationToken::new(),
        sparks: tokio::sync::Mutex::new(None),
    });
    Fixture {
        _dir: dir,
        shared,
        token: token.unwrap(),
        writes: rx,
    }
}

/// A reading of `device` into the live view.
fn reading(shared: &Shared, device: &str, tag: &str, v: f64) {
    let batch = Arc::new(vec![
        StoredEvent {
            seq: Seq(1),
            event: Event::new(
                device,
                Timestamp::synced(NOW - 5000),
                EvBody::Status(outpost_core::Status {
                    status: DeviceStatus::Online,
                    detail: String::new(),
                }),
            ),
        },
        StoredEvent {
            seq: Seq(2),
            event: Event::new(
                device,
                Timestamp::synced(NOW - 3000),
                EvBody::Telemetry(vec![Point::good(tag, Value::F64(v))]),
            ),
        },
    ]);
    shared.latest.write().unwrap().apply(&batch);
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
    /// `name=value` of a cookie this reply sets.
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_string())
    }
    /// The value of the hidden `csrf` field in the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("no csrf field");
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

async fn call(app: &Router, method: &str, uri: &str, cookie: &str, form: Option<&str>) -> Reply {
    call_with(app, method, uri, cookie, form, &[]).await
}

async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    cookie: &str,
    body: Option<&str>,
    extra: &[(&str, &str)],
) -> Reply {
    let mut b = Request::builder().method(method).uri(uri);
    if !cookie.is_empty() {
        b = b.header(header::COOKIE, cookie);
    }
    let is_json = extra.iter().any(|(k, _)| *k == "content-type");
    if body.is_some() && !is_json {
        b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let req = b
        .body(body.map_or_else(Body::empty, |f| Body::from(f.to_string())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The router of `f`, set up, with the admin's session cookie.
pub(super) async fn ready(f: Fixture) -> (Fixture, Router, String) {
    let app = router(f.shared.clone());
    let admin = set_up(&app, &f.token).await;
    (f, app, admin)
}

/// Goes through first start; returns the admin's session cookie.
async fn set_up(app: &Router, token: &str) -> String {
    let page = call(app, "GET", "/setup", "", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let form_cookie = page.cookie("outpost_form").unwrap();
    let body = format!(
        "csrf={}&token={}&user=admin&password=correct+horse&confirm=correct+horse",
        page.csrf(),
        enc(token)
    );
    let r = call(app, "POST", "/setup", &form_cookie, Some(&body)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    r.cookie("outpost_session").unwrap()
}

async fn login(app: &Router, user: &str, password: &str) -> Reply {
    let page = call(app, "GET", "/login", "", None).await;
    let form_cookie = page.cookie("outpost_form").unwrap();
    let body = format!(
        "csrf={}&user={}&password={}",
        page.csrf(),
        enc(user),
        enc(password)
    );
    call(app, "POST", "/login", &form_cookie, Some(&body)).await
}

/// Adds a user through the users page as `admin`; returns their session
/// cookie after a login.
async fn add_user(app: &Router, admin: &str, name: &str, role: &str, password: &str) -> String {
    let csrf = session_csrf(app, admin).await;
    let body = format!(
        "csrf={csrf}&action=set&user={name}&role={role}&password={}",
        enc(password)
    );
    let r = call(app, "POST", "/users", admin, Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    login(app, name, password)
        .await
        .cookie("outpost_session")
        .unwrap()
}

/// A form posted with `cookie`.
async fn post(app: &Router, uri: &str, cookie: &str, form: &str) -> Reply {
    call(app, "POST", uri, cookie, Some(form)).await
}

/// The CSRF token of a session, from a page it renders.
async fn session_csrf(app: &Router, cookie: &str) -> String {
    call(app, "GET", "/devices", cookie, None).await.csrf()
}

async fn audit_actions(log: &EventLog) -> Vec<String> {
    audits(log).await.into_iter().map(|a| a.action).collect()
}

async fn audits(log: &EventLog) -> Vec<outpost_core::Audit> {
    let mut out = Vec::new();
    let mut after = Seq(0);
    loop {
        let batch = log.read(after, 1000).await.unwrap();
        let Some(last) = batch.last() else {
            return out;
        };
        after = last.seq;
        out.extend(batch.into_iter().filter_map(|e| match e.event.body {
            EvBody::Audit(a) => Some(a),
            _ => None,
        }));
    }
}

#[tokio::test]
async fn before_setup_every_page_leads_to_setup_and_after_it_to_login() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    for page in ["/", "/devices", "/users", "/login"] {
        let r = call(&app, "GET", page, "", None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(r.location(), "/setup", "{page}");
    }
    set_up(&app, &f.token).await;
    for page in ["/", "/devices", "/users", "/setup"] {
        let r = call(&app, "GET", page, "", None).await;
        assert_eq!(r.location(), "/login", "{page}");
    }
    // An unknown or ended session is no session.
    let r = call(&app, "GET", "/", "outpost_session=0123", None).await;
    assert_eq!(r.location(), "/login");
}

#[tokio::test]
async fn setup_checks_the_form_token_and_the_setup_token() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    let page = call(&app, "GET", "/setup", "", None).await;
    let form_cookie = page.cookie("outpost_form").unwrap();
    let good = |token: &str, csrf: &str| {
        format!(
            "csrf={csrf}&token={}&user=admin&password=correct+horse&confirm=correct+horse",
            enc(token)
        )
    };
    // Without the cookie that matches the form, refused.
    let r = call(
        &app,
        "POST",
        "/setup",
        "",
        Some(&good(&f.token, &page.csrf())),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(&app, "/setup", &form_cookie, &good(&f.token, "forged")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A wrong setup token: refused, shown, audited, nobody created.
    let r = post(
        &app,
        "/setup",
        &form_cookie,
        &good("AAAA-BBBB-CCCC", &page.csrf()),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("the setup token is wrong"), "{}", r.body);
    assert!(!f.shared.auth.has_users());
    // Passwords that differ.
    let body = format!(
        "csrf={}&token={}&user=admin&password=correct+horse&confirm=other+horse",
        page.csrf(),
        enc(&f.token)
    );
    let r = call(&app, "POST", "/setup", &form_cookie, Some(&body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("the two passwords differ"));
    // The right one.
    let r = post(&app, "/setup", &form_cookie, &good(&f.token, &page.csrf())).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/");
    assert!(f.shared.auth.has_users());
    let actions = audit_actions(&f.shared.log).await;
    assert!(
        actions.contains(&"web.setup_refused".to_string()),
        "{actions:?}"
    );
    assert!(actions.contains(&"web.setup".to_string()), "{actions:?}");
}

#[tokio::test]
async fn session_cookies_are_http_only_secure_strict_and_expire() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    set_up(&app, &f.token).await;
    let r = login(&app, "admin", "correct horse").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let c = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("outpost_session="))
        .unwrap();
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=3600",
        "Path=/",
    ] {
        assert!(c.contains(flag), "{flag} missing in {c}");
    }
    // Served over plain HTTP (configured), the cookie cannot be Secure.
    let f = fixture(false);
    let app = router(f.shared.clone());
    let page = call(&app, "GET", "/setup", "", None).await;
    let c = page.cookies().join("; ");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"),
        "{c}"
    );
}

#[tokio::test]
async fn ten_wrong_passwords_lock_the_login_and_every_attempt_is_audited() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    set_up(&app, &f.token).await;
    for i in 1..LOCK_AFTER {
        let r = login(&app, "admin", "wrong password").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(r.body.contains("wrong user name or password"));
    }
    let r = login(&app, "admin", "wrong password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.body.contains("locked for 15 more minute(s)"),
        "{}",
        r.body
    );
    // Locked even for the right password.
    let r = login(&app, "admin", "correct horse").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.cookie("outpost_session").is_none());
    let actions = audit_actions(&f.shared.log).await;
    let failed = actions.iter().filter(|a| *a == "web.login_failed").count();
    let locked = actions.iter().filter(|a| *a == "web.login_locked").count();
    assert_eq!(
        (failed, locked),
        (LOCK_AFTER as usize - 1, 2),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_login_flood_without_a_session_cannot_fill_the_log() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    set_up(&app, &f.token).await;
    let before = audits(&f.shared.log).await.len();
    let big = "x".repeat(12_000);
    for i in 0..80 {
        let r = login(&app, &format!("{big}{i}"), "wrong password").await;
        assert!(
            matches!(
                r.status,
                StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
            ),
            "{}",
            r.status
        );
    }
    let written = &audits(&f.shared.log).await[before..];
    assert!(!written.is_empty(), "failed logins are not audited at all");
    assert!(
        written.len() <= super::auth::AUDITS_PER_MINUTE as usize,
        "{} audit events for 80 failed logins: {:?}",
        written.len(),
        written
            .iter()
            .map(|a| (&a.action, &a.detail))
            .collect::<Vec<_>>()
    );
    for a in written {
        assert!(
            a.actor.len() <= 64 && a.detail.len() < 300,
            "{} / {}",
            a.actor.len(),
            a.detail.len()
        );
        assert!(a.actor.starts_with("(not a user name"), "{}", a.actor);
    }
    // A form far over the limit is refused before anything is read into it.
    let page = call(&app, "GET", "/login", "", None).await;
    let form_cookie = page.cookie("outpost_form").unwrap();
    let huge = format!(
        "csrf={}&user={}&password=x",
        page.csrf(),
        "y".repeat(2_000_000)
    );
    let r = call(&app, "POST", "/login", &form_cookie, Some(&huge)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(audits(&f.shared.log).await.len(), before + written.len());
}

#[tokio::test]
async fn overview_devices_and_escaping() {
    let (f, app, admin) = ready(fixture(true)).await;
    reading(&f.shared, "pump", "speed", 1450.0);
    reading(&f.shared, "<script>alert(1)</script>", "x", 1.0);
    f.shared.sample();
    let r = call(&app, "GET", "/", &admin, None).await;
    assert!(
        !r.body.contains("Ingest, events/s"),
        "a chart of one sample"
    );
    history(&f.shared, 10).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.shared.sample();
    let r = call(&app, "GET", "/", &admin, None).await;
    for want in [
        "Ingest, events/s",
        "cloud: sent, events/s",
        "cloud: backlog, events",
    ] {
        assert!(r.body.contains(want), "{want} missing in the overview");
    }
    assert_eq!(
        r.body
            .matches("<figure class=\"card chart small-chart\"><figcaption class=\"small\">")
            .count(),
        3
    );
    assert_eq!(r.status, StatusCode::OK);
    for want in [
        "gw-test",
        "cloud",
        "disconnected",
        "Devices online",
        "2 / 2",
    ] {
        assert!(r.body.contains(want), "{want} missing in the overview");
    }
    let r = call(&app, "GET", "/devices", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("1450 rpm"), "{}", r.body);
    assert!(r.body.contains("online"));
    assert!(r.body.contains("3s ago"));
    assert!(
        r.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("<script>alert"),
        "a device name was not escaped"
    );
    // The security headers are on every response.
    let csp = r
        .headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(
        r.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff"
    );
}

#[tokio::test]
async fn a_write_is_confirmed_then_sent_to_the_driver_with_the_user() {
    let (mut f, app, admin) = ready(fixture(true)).await;
    let csrf = session_csrf(&app, &admin).await;
    // Without the session's token: refused, nothing sent.
    let r = post(
        &app,
        "/devices/write",
        &admin,
        "csrf=nope&device=pump&tag=speed&value=5&confirm=yes",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(f.writes.try_recv().is_err());
    // First the confirmation page; nothing is sent yet.
    let body = format!("csrf={csrf}&device=pump&tag=speed&value=5");
    let r = call(&app, "POST", "/devices/write", &admin, Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Write to pump?"), "{}", r.body);
    assert!(f.writes.try_recv().is_err());
    // Confirmed: the driver gets it, and its answer is shown.
    let driver = tokio::spawn(async move {
        let cmd = next_write(&mut f.writes).await;
        let seen = (
            cmd.device.clone(),
            cmd.tag.clone(),
            cmd.value.clone(),
            cmd.actor.clone(),
        );
        cmd.reply.send(Ok(())).unwrap();
        let cmd = next_write(&mut f.writes).await;
        cmd.reply
            .send(Err(outpost_drivers::command::WriteFailure::Exception(
                "illegal data value".into(),
            )))
            .unwrap();
        seen
    });
    let r = post(
        &app,
        "/devices/write",
        &admin,
        &format!("{body}&confirm=yes"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Wrote 5 to pump/speed."), "{}", r.body);
    let r = post(
        &app,
        "/devices/write",
        &admin,
        &format!("{body}&confirm=yes"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.body.contains("the device refused: illegal data value"),
        "{}",
        r.body
    );
    let seen = driver.await.unwrap();
    assert_eq!(
        seen,
        (
            "pump".into(),
            "speed".into(),
            Value::I64(5),
            "web:admin".into()
        )
    );
    // A device nobody serves is a clear error.
    let r = call(
        &app,
        "POST",
        "/devices/write",
        &admin,
        Some(&format!(
            "csrf={csrf}&device=nope&tag=x&value=1&confirm=yes"
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.body.contains("no device"), "{}", r.body);
}

#[tokio::test]
async fn roles_limit_what_a_user_may_do() {
    let (mut f, app, admin) = ready(fixture(true)).await;
    let csrf = session_csrf(&app, &admin).await;
    let r = call(
        &app,
        "POST",
        "/users",
        &admin,
        Some(&format!(
            "csrf={csrf}&action=set&user=watcher&role=viewer&password=viewer+password"
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("watcher is now a viewer."), "{}", r.body);
    // The last admin cannot be removed.
    let r = post(
        &app,
        "/users",
        &admin,
        &format!("csrf={csrf}&action=remove&user=admin"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("the last admin cannot be removed"));

    let viewer = login(&app, "watcher", "viewer password")
        .await
        .cookie("outpost_session")
        .unwrap();
    let vcsrf = session_csrf(&app, &viewer).await;
    let r = call(&app, "GET", "/devices", &viewer, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("Write…"), "a viewer is offered writes");
    let r = call(
        &app,
        "POST",
        "/devices/write",
        &viewer,
        Some(&format!(
            "csrf={vcsrf}&device=pump&tag=speed&value=5&confirm=yes"
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("needs the technician role"));
    let r = call_with(
        &app,
        "POST",
        "/api/v1/devices/pump/write",
        &viewer,
        Some(r#"{"tag":"speed","value":5}"#),
        &[
            ("content-type", "application/json"),
            ("x-csrf-token", &vcsrf),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        f.writes.try_recv().is_err(),
        "a viewer's write reached the driver"
    );
    for page in ["/users"] {
        assert_eq!(
            call(&app, "GET", page, &viewer, None).await.status,
            StatusCode::FORBIDDEN
        );
    }
    let r = post(
        &app,
        "/users",
        &viewer,
        &format!("csrf={vcsrf}&action=remove&user=admin"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn logout_needs_the_token_and_ends_the_session() {
    let (_f, app, admin) = ready(fixture(true)).await;
    let r = call(&app, "POST", "/logout", &admin, Some("csrf=wrong")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let csrf = session_csrf(&app, &admin).await;
    let r = post(&app, "/logout", &admin, &format!("csrf={csrf}")).await;
    assert_eq!(r.location(), "/login");
    assert!(r
        .cookies()
        .iter()
        .any(|c| c.starts_with("outpost_session=;") && c.contains("Max-Age=0")));
    assert_eq!(
        call(&app, "GET", "/", &admin, None).await.location(),
        "/login"
    );
}

#[tokio::test]
async fn the_api_mirrors_the_pages_and_checks_session_and_csrf() {
    let mut f = fixture(true);
    let app = router(f.shared.clone());
    let r = call(&app, "GET", "/api/v1/devices", "", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("\"error\""));
    let admin = set_up(&app, &f.token).await;
    reading(&f.shared, "pump", "speed", 99.5);
    let r = call(&app, "GET", "/api/v1/devices", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v[0]["name"], "pump");
    assert_eq!(v[0]["status"], "online");
    assert_eq!(v[0]["values"][0]["value"], "99.5");
    assert_eq!(v[0]["values"][0]["unit"], "rpm");
    let r = call(&app, "GET", "/api/v1/overview", &admin, None).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["gateway"], "gw-test");
    assert_eq!(v["uplinks"][0]["name"], "cloud");
    assert_eq!(v["uplinks"][0]["connected"], false);
    let r = call(&app, "GET", "/api/v1/session", &admin, None).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["role"], "admin");
    let csrf = v["csrf"].as_str().unwrap().to_string();
    let json = [("content-type", "application/json")];
    // No token, a wrong one: 403 and nothing sent.
    let write = Some(r#"{"tag":"speed","value":7.5}"#);
    let r = call_with(
        &app,
        "POST",
        "/api/v1/devices/pump/write",
        &admin,
        write,
        &json,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let wrong = [
        ("content-type", "application/json"),
        ("x-csrf-token", "abc"),
    ];
    let r = call_with(
        &app,
        "POST",
        "/api/v1/devices/pump/write",
        &admin,
        write,
        &wrong,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(f.writes.try_recv().is_err());
    let ok = [
        ("content-type", "application/json"),
        ("x-csrf-token", csrf.as_str()),
    ];
    // A malformed body is a 400 naming the problem.
    let r = call_with(
        &app,
        "POST",
        "/api/v1/devices/pump/write",
        &admin,
        Some(r#"{"value":1}"#),
        &ok,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("tag"), "{}", r.body);
    let driver = tokio::spawn(async move {
        let cmd = next_write(&mut f.writes).await;
        let v = cmd.value.clone();
        cmd.reply.send(Ok(())).unwrap();
        v
    });
    let r = call_with(
        &app,
        "POST",
        "/api/v1/devices/pump/write",
        &admin,
        write,
        &ok,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(driver.await.unwrap(), Value::F64(7.5));
    // A device nobody serves is the caller's mistake: 404, not a 5xx.
    let r = call_with(
        &app,
        "POST",
        "/api/v1/devices/nope/write",
        &admin,
        write,
        &ok,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(r.body.contains("no device"), "{}", r.body);
    let r = call(&app, "GET", "/api/v1/nothing", &admin, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("no such API route"));
    // A query the API cannot read is refused as JSON, like every other error.
    for uri in [
        "/api/v1/logs?level=info&level=warn",
        "/api/v1/export?format=csv&format=jsonl",
        "/api/v1/modbus/read?unit=1&unit=2",
    ] {
        let r = call(&app, "GET", uri, &admin, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", r.body));
        assert!(v["error"].is_string(), "{uri}: {}", r.body);
    }
}

#[tokio::test]
async fn health_metrics_static_and_unknown_routes() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    let r = call(&app, "GET", "/healthz", "", None).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok\n"));
    let r = call(&app, "GET", "/readyz", "", None).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ready\n"));
    f.shared
        .log
        .append(vec![Event::new(
            "pump",
            Timestamp::synced(NOW),
            EvBody::Telemetry(vec![Point::good("speed", Value::F64(1.0))]),
        )])
        .await
        .unwrap();
    f.shared.drivers.device("pump");
    reading(&f.shared, "pump", "speed", 1.0);
    let r = call(&app, "GET", "/metrics", "", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    for want in [
        "# TYPE outpost_log_appended_total counter",
        "outpost_log_appended_total 1",
        "outpost_uplink_connected{uplink=\"cloud\"} 0",
        "outpost_uplink_backlog_events{uplink=\"cloud\"} 1",
        "outpost_device_requests_total{device=\"pump\"} 0",
        "outpost_device_errors_total{device=\"pump\",kind=\"timeout\"} 0",
        "outpost_device_online{device=\"pump\"} 1",
        "outpost_log_dropped_total{limit=\"age\"} 0",
        "# TYPE outpost_process_cpu_seconds_total counter",
        "# TYPE outpost_process_open_fds gauge",
        "# TYPE outpost_tasks gauge",
    ] {
        assert!(r.body.contains(want), "{want} missing in:\n{}", r.body);
    }
    let tasks: f64 = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("outpost_tasks "))
        .and_then(|v| v.parse().ok())
        .expect("outpost_tasks has a value");
    assert_eq!(tasks, outpost_core::task::live() as f64);
    let r = call(&app, "GET", "/static/app.css", "", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let r = call(&app, "GET", "/static/app.js", "", None).await;
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let r = call(&app, "GET", "/no/such/page", "", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A path-like route cannot reach files.
    let r = call(&app, "GET", "/static/../../etc/passwd", "", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains("root:"));
}

/// The next data frame of a live stream, as text.
async fn next(b: &mut Body) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(5), b.frame())
        .await
        .expect("no event within 5 s")
        .unwrap()
        .unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn live_updates_start_with_a_snapshot_then_carry_changes() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    let r = call(&app, "GET", "/events", "", None).await;
    assert_eq!(r.location(), "/setup", "the stream needs a session");
    let admin = set_up(&app, &f.token).await;
    reading(&f.shared, "pump", "speed", 1450.0);
    let req = Request::builder()
        .uri("/events")
        .header(header::COOKIE, &admin)
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = res.into_body();
    let first = next(&mut body).await;
    assert!(first.starts_with("data: "), "{first}");
    let snap: serde_json::Value =
        serde_json::from_str(first.trim_start_matches("data: ").trim()).unwrap();
    assert_eq!(
        snap["values"][0],
        serde_json::json!(["pump", "speed", "1450", "rpm", "good"])
    );
    assert_eq!(snap["status"][0], serde_json::json!(["pump", "online"]));
    assert_eq!(snap["online"], "1 / 1");
    assert_eq!(snap["uplinks"][0]["name"], "cloud");
    // The publisher sends only what changed.
    let publisher = tokio::spawn(live::publish(f.shared.clone(), f.shared.stop.clone()));
    let first_delta = next(&mut body).await;
    let d: serde_json::Value =
        serde_json::from_str(first_delta.trim_start_matches("data: ").trim()).unwrap();
    assert_eq!(d["values"].as_array().unwrap().len(), 1, "{d}");
    let batch = Arc::new(vec![StoredEvent {
        seq: Seq(3),
        event: Event::new(
            "pump",
            Timestamp::synced(NOW - 1000),
            EvBody::Telemetry(vec![Point::good("speed", Value::F64(1500.0))]),
        ),
    }]);
    f.shared.latest.write().unwrap().apply(&batch);
    let mut changed = None;
    for _ in 0..5 {
        let t = next(&mut body).await;
        let d: serde_json::Value =
            serde_json::from_str(t.trim_start_matches("data: ").trim()).unwrap();
        if !d["values"].as_array().unwrap().is_empty() {
            changed = Some(d);
            break;
        }
    }
    let d = changed.expect("the change never came");
    assert_eq!(
        d["values"],
        serde_json::json!([["pump", "speed", "1500", "rpm", "good"]])
    );
    assert!(
        d["status"].as_array().unwrap().is_empty(),
        "an unchanged status was sent again"
    );
    // Stopping the server ends the stream.
    f.shared.stop.cancel();
    publisher.await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream outlived the server");
}

/// Appends `n` readings of `pump`, one per second from `NOW - n s`, and one
/// of another device in between each.
async fn history(shared: &Shared, n: i64) {
    let mut events = Vec::new();
    for i in 0..n {
        let ts = NOW - (n - i) * 1000;
        events.push(Event::new(
            "pump",
            Timestamp::synced(ts),
            EvBody::Telemetry(vec![
                Point::good("speed", Value::F64(i as f64)),
                Point::good(
                    "label",
                    Value::Str(if i == 0 {
                        "=cmd()".into()
                    } else {
                        "ok, fine".into()
                    }),
                ),
            ]),
        ));
        events.push(Event::new(
            "other",
            Timestamp::synced(ts),
            EvBody::Telemetry(vec![Point::good("x", Value::I64(i))]),
        ));
    }
    for chunk in events.chunks(500) {
        shared.log.append(chunk.to_vec()).await.unwrap();
    }
}

#[tokio::test]
async fn export_streams_csv_and_json_lines_by_device_and_range() {
    let (f, app, admin) = ready(fixture(true)).await;
    history(&f.shared, 3000).await;
    // The page, with its form.
    let r = call(&app, "GET", "/export", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("<option value=\"pump\">"), "{}", r.body);
    // CSV of pump over the whole log: a header and two rows per event.
    let r = call(
        &app,
        "GET",
        "/export/data?device=pump&format=csv",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("outpost-gw-test-pump.csv"));
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(
        lines[0],
        "seq,time,ts_ms,device,kind,tag,value,quality,clock"
    );
    assert_eq!(lines.len(), 1 + 2 * 3000);
    let first_ts = NOW - 3_000_000;
    // (seq 1 is the setup's audit event)
    assert_eq!(
        lines[1],
        format!(
            "2,{},{first_ts},pump,telemetry,speed,0,good,synced",
            time::format_utc(first_ts)
        )
    );
    // A formula in a text value is defused; a comma is quoted.
    assert_eq!(
        lines[2],
        format!(
            "2,{},{first_ts},pump,telemetry,label,'=cmd(),good,synced",
            time::format_utc(first_ts)
        )
    );
    assert!(
        lines[4].ends_with(",label,\"ok, fine\",good,synced"),
        "{}",
        lines[4]
    );
    assert!(lines.iter().skip(1).all(|l| l.contains(",pump,")));
    // A range: [from, to) in UTC, as the form sends it.
    let from = time::format_utc(NOW - 1_000_000);
    let to = time::format_utc(NOW - 900_000);
    let uri = format!(
        "/export/data?device=pump&from={}&to={}&format=jsonl",
        enc(&from),
        enc(&to)
    );
    let r = call(&app, "GET", &uri, &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let rows: Vec<serde_json::Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[0]["device"], "pump");
    assert_eq!(rows[0]["ts_ms"], NOW - 1_000_000);
    assert_eq!(rows[0]["values"]["speed"], 2000.0);
    assert_eq!(rows[99]["values"]["speed"], 2099.0);
    // All devices.
    let r = call(
        &app,
        "GET",
        &format!("/export/data?from={}&to={}", enc(&from), enc(&to)),
        &admin,
        None,
    )
    .await;
    assert_eq!(r.body.lines().count(), 1 + 100 * 3);
    // The API serves the same.
    let r = call(
        &app,
        "GET",
        &format!(
            "/api/v1/export?device=pump&from={}&to={}&format=jsonl",
            enc(&from),
            enc(&to)
        ),
        &admin,
        None,
    )
    .await;
    assert_eq!(r.body.lines().count(), 100);
    // Exports are audited.
    assert!(audit_actions(&f.shared.log)
        .await
        .contains(&"web.export".to_string()));
}

#[tokio::test]
async fn export_refuses_unknown_devices_bad_ranges_and_strangers() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    let r = call(&app, "GET", "/api/v1/export?device=pump", "", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, "GET", "/export/data?device=pump", "", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let admin = set_up(&app, &f.token).await;
    history(&f.shared, 10).await;
    for (q, why) in [
        ("device=..%2F..%2F..%2Fetc%2Fpasswd", "is not a device name"),
        ("device=%2Fetc%2Fpasswd", "is not a device name"),
        (
            "device=pump&from=yesterday",
            "from: \"yesterday\" is not a time",
        ),
        (
            "device=pump&from=2026-01-02&to=2026-01-01",
            "`to` must be after `from`",
        ),
        ("device=pump&format=xlsx", "format \"xlsx\""),
    ] {
        let r = call(&app, "GET", &format!("/export/data?{q}"), &admin, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(
            r.body.contains(&why.replace('"', "&#34;")),
            "{q}: {}",
            r.body
        );
        assert!(!r.body.contains("root:"), "{q}");
        let r = call(&app, "GET", &format!("/api/v1/export?{q}"), &admin, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(
            r.body.contains(&why.replace('"', "\\\"")),
            "{q}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn device_pages_draw_trends_from_the_log() {
    let (f, app, admin) = ready(fixture(true)).await;
    history(&f.shared, 3000).await;
    reading(&f.shared, "pump", "speed", 2999.0);
    // The devices page: a last-hour chart next to the live value.
    let r = call(&app, "GET", "/devices", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let spark = r
        .body
        .find("<td class=\"spark\"><svg class=\"trend\"")
        .expect("no chart");
    assert!(r.body[spark..].contains("<polyline class=\"line\""));
    // The device page: one chart per numeric tag over the chosen range.
    let r = call(&app, "GET", "/devices/pump?range=1h", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body.matches("<svg class=\"trend\"").count(),
        1,
        "only speed is numeric"
    );
    assert!(
        r.body.contains("3000 events read from the log"),
        "{}",
        r.body
    );
    // speed ran 0..2999 over 3000 s; the last hour holds 0..2999 (3000 s < 1 h).
    assert!(
        r.body.contains("min 0 · mean 1499.5 · max 2999 (rpm)"),
        "{}",
        r.body
    );
    // No uplink: nothing is marked unsent, nor said to be sent.
    assert!(!r.body.contains("class=\"unsent\""), "{}", r.body);
    assert!(!r.body.contains("not yet sent") && !r.body.contains("all sent"));
    // An uplink that has acknowledged the first 2000 of pump's events: the
    // rest are marked along the bottom of the chart, and counted.
    let log = &f.shared.log;
    log.set_cursors(vec!["cloud".into()]).await.unwrap();
    let pump: Vec<_> = log
        .read(outpost_core::Seq(0), 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.device == "pump")
        .collect();
    log.ack("cloud", pump[1999].seq).await.unwrap();
    let r = call(&app, "GET", "/devices/pump?range=1h", &admin, None).await;
    assert!(r.body.contains("1000 not yet sent"), "{}", r.body);
    let strips = r.body.matches("<rect class=\"unsent\"").count();
    assert_eq!(strips, 1, "one run of unsent buckets: {}", r.body);
    // The strip covers the last 1000 s of the hour: from 2600/3600 across.
    let at = r.body.find("<rect class=\"unsent\" x=\"").unwrap() + 24;
    let x: f64 = r.body[at..].split('"').next().unwrap().parse().unwrap();
    assert!((510.0..=525.0).contains(&x), "strip starts at x={x}");
    log.ack("cloud", pump[2999].seq).await.unwrap();
    let r = call(&app, "GET", "/devices/pump?range=1h", &admin, None).await;
    assert!(r.body.contains("all sent"), "{}", r.body);
    assert!(!r.body.contains("<rect class=\"unsent\""));
    // Everything the log keeps: from its oldest event (3000 s ago).
    let r = call(&app, "GET", "/devices/pump?range=all", &admin, None).await;
    assert!(
        r.body.contains("aria-current=\"page\">all kept"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("min 0 · mean 1499.5 · max 2999 (rpm)"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&time::format_minutes(NOW - 3_000_000)),
        "the range starts at the oldest event"
    );
    let r = call(&app, "GET", "/devices/pump?range=nonsense", &admin, None).await;
    assert!(
        r.body.contains("aria-current=\"page\">1 hour"),
        "an unknown range falls back to 1 hour"
    );
    let r = call(&app, "GET", "/devices/nobody", &admin, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, "GET", "/devices/pump", "", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_log_view_filters_by_level_and_component() {
    let (_f, app, admin) = ready(fixture(true)).await;
    let ring = crate::logring::ring();
    for (level, component, text) in [
        (
            "warn",
            "sync::uplink::mqtt",
            "<b>broker gone</b> uplink=web-test-1",
        ),
        ("info", "sync::uplink::mqtt", "connected uplink=web-test-1"),
        ("error", "drivers::modbus", "port vanished web-test-1"),
    ] {
        ring.push(crate::logring::Line {
            unix_ms: NOW,
            level,
            component: component.into(),
            text: text.into(),
        });
    }
    let r = call(
        &app,
        "GET",
        "/logs?level=warn&component=uplink",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body
            .contains("&#60;b&#62;broker gone&#60;/b&#62; uplink=web-test-1"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("connected uplink=web-test-1"),
        "an info line passed a warn filter"
    );
    assert!(
        !r.body.contains("port vanished web-test-1"),
        "another component passed the filter"
    );
    let r = call(
        &app,
        "GET",
        "/api/v1/logs?level=info&component=modbus",
        &admin,
        None,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|l| l["text"] == "port vanished web-test-1"),
        "{v}"
    );
    assert_eq!(
        call(&app, "GET", "/logs", "", None).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        call(&app, "GET", "/api/v1/logs", "", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_modbus_tool_reads_through_the_driver_and_decodes_side_by_side() {
    let (mut f, app, admin) = ready(fixture(true)).await;
    let r = call(&app, "GET", "/modbus", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("<option value=\"device:pump\""),
        "{}",
        r.body
    );
    // The driver of pump gets the read and answers with registers.
    let driver = tokio::spawn(async move {
        match f.writes.recv().await.unwrap() {
            Command::ModbusRead(r) => {
                let asked = (r.unit, r.table, r.address, r.count);
                r.reply
                    .send(Ok(outpost_drivers::command::Raw::Registers(vec![
                        0x0000, 0x4148, 0xFFFF, 0x0001,
                    ])))
                    .unwrap();
                asked
            }
            other => panic!("{other:?}"),
        }
    });
    let r = call(
        &app,
        "GET",
        "/modbus?via=device%3Apump&unit=3&table=holding&address=100&count=4&type=f32&order=CDAB",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        driver.await.unwrap(),
        (3, outpost_config::modbus::Table::Holding, 100, 4)
    );
    // Raw next to decoded: 0x0000 0x4148 word-swapped is 12.5.
    assert!(r.body.contains("<code>0x4148</code>"), "{}", r.body);
    assert!(
        r.body.contains("<td class=\"decoded\">12.5</td>"),
        "{}",
        r.body
    );
    assert!(r.body.contains("<td>-1</td>"), "the signed view of 0xFFFF");
    assert!(
        r.body.contains("name = &#34;holding_100&#34;\ntable = &#34;holding&#34;\naddress = 100\ntype = &#34;f32&#34;\norder = &#34;CDAB&#34;"),
        "{}",
        r.body
    );
    // A value too small for three decimals is not shown as 0.
    assert!(
        r.body
            .contains("<td class=\"decoded\">1.836695910175181e-40</td>"),
        "{}",
        r.body
    );
    assert!(audit_actions(&f.shared.log)
        .await
        .contains(&"modbus.read".to_string()));
    // Every problem of a bad form at once; nothing is read.
    let r = call(
        &app,
        "GET",
        "/modbus?via=tcp&endpoint=nohost&unit=300&table=bogus&count=0&type=f33",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    for want in [
        "endpoint",
        "unit must be 0 to 247",
        "table &#34;bogus&#34;",
        "count must be 1 to 125",
        "type:",
    ] {
        assert!(r.body.contains(want), "{want} missing in {}", r.body);
    }
    // Nothing listens there: a clear failure.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = call(
        &app,
        "GET",
        &format!("/modbus?via=tcp&endpoint=127.0.0.1%3A{port}&count=2"),
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.body
            .contains("the read failed: cannot open tcp://127.0.0.1:"),
        "{}",
        r.body
    );
    // Viewers cannot use it, on the page or the API.
    let viewer = add_user(&app, &admin, "v", "viewer", "viewer password").await;
    assert_eq!(
        call(&app, "GET", "/modbus", &viewer, None).await.status,
        StatusCode::FORBIDDEN
    );
    let r = call(
        &app,
        "GET",
        "/api/v1/modbus/read?via=device%3Apump",
        &viewer,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!call(&app, "GET", "/devices", &viewer, None)
        .await
        .body
        .contains("Modbus tool"));
}

#[tokio::test]
async fn the_openapi_document_lists_every_operation_and_each_is_served() {
    let f = fixture(true);
    let app = router(f.shared.clone());
    let r = call(&app, "GET", "/api/v1/openapi.json", "", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented += 1;
            let uri = path
                .replace("{device}", "pump")
                .replace("{action}", "validate");
            // Without a session every operation answers 401, not the
            // router's 404: it exists.
            let r = call(&app, &method.to_uppercase(), &uri, "", Some("{}")).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {}",
                r.body
            );
        }
    }
    assert_eq!(documented, openapi::OPERATIONS.len());
    let r = call(&app, "GET", "/api/v1/undocumented", "", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

const SITE: &str = "[gateway]\nid = \"site\"\n\n[[uplink]]\nname = \"cloud\"\n[uplink.mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"gw\"\npassword = \"s3cret-pw\"\n";

#[tokio::test]
async fn the_config_page_masks_secrets_shows_errors_at_their_line_and_applies() {
    let (f, app, admin) = ready(fixture_with_config(SITE)).await;
    let r = call(&app, "GET", "/config", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.body.contains("s3cret-pw"),
        "a secret reached the browser"
    );
    assert!(
        r.body.contains("password = &#34;********&#34;"),
        "{}",
        r.body
    );
    let csrf = r.csrf();
    // A deliberate error on line 3 and another on line 10: both shown at their line.
    let bad = SITE
        .replace(
            "[gateway]\nid = \"site\"\n",
            "[gateway]\nid = \"site\"\ncolour = \"red\"\n",
        )
        .replace(
            "password = \"s3cret-pw\"",
            "password = \"********\"\nkeep_alive = \"soon\"",
        );
    let body = format!("csrf={csrf}&action=validate&text={}", enc(&bad));
    let r = call(&app, "POST", "/config", &admin, Some(&body)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body.contains("2 problem(s); nothing was changed."),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("<tr class=\"problem\" id=\"line-3\">"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("line 3, column 1: gateway.colour: unknown key `colour`"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("<tr class=\"problem\" id=\"line-11\">"),
        "{}",
        r.body
    );
    assert!(r.body.contains("uplink[0].mqtt.keep_alive"), "{}", r.body);
    assert_eq!(
        std::fs::read_to_string(f.shared.config_path.as_ref().unwrap()).unwrap(),
        SITE
    );
    // A valid edit: validated, then applied; the secret stays.
    let good = mask(SITE).replace("id = \"site\"", "id = \"site-2\"");
    let r = post(
        &app,
        "/config",
        &admin,
        &format!("csrf={csrf}&action=validate&text={}", enc(&good)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("The configuration is valid."));
    assert!(!f.shared.restart.is_cancelled());
    let r = post(
        &app,
        "/config",
        &admin,
        &format!("csrf={csrf}&action=apply&text={}", enc(&good)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("Applied. outpostd restarts with it now"),
        "{}",
        r.body
    );
    let written = std::fs::read_to_string(f.shared.config_path.as_ref().unwrap()).unwrap();
    assert_eq!(written, SITE.replace("id = \"site\"", "id = \"site-2\""));
    assert!(f.shared.restart.is_cancelled(), "no restart was asked for");
    assert!(audit_actions(&f.shared.log)
        .await
        .contains(&"config.applied".to_string()));
    // The history holds the file it replaced; it opens for a rollback.
    let r = call(&app, "GET", "/config", &admin, None).await;
    let at = r
        .body
        .find("/config/history?name=")
        .expect("no history entry");
    let name = &r.body[at + 21..at + 21 + r.body[at + 21..].find('"').unwrap()];
    assert!(name.ends_with("-admin.toml"), "{name}");
    let r = call(
        &app,
        "GET",
        &format!("/config/history?name={name}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("id = &#34;site&#34;") && !r.body.contains("s3cret-pw"),
        "{}",
        r.body
    );
    let r = call(
        &app,
        "GET",
        "/config/history?name=..%2F..%2Fetc%2Fpasswd",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains("root:"));
}

#[tokio::test]
async fn only_admins_edit_the_config_and_the_demo_cannot_be_edited() {
    let (f, app, admin) = ready(fixture_with_config(SITE)).await;
    let tech = add_user(&app, &admin, "t", "technician", "tech password").await;
    let r = call(&app, "GET", "/config", &tech, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.body.contains("<textarea"),
        "a technician is offered the editor"
    );
    let tcsrf = session_csrf(&app, &tech).await;
    let body = format!("csrf={tcsrf}&action=apply&text={}", enc(SITE));
    assert_eq!(
        call(&app, "POST", "/config", &tech, Some(&body))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let body = format!("csrf=wrong&action=apply&text={}", enc(SITE));
    assert_eq!(
        call(&app, "POST", "/config", &admin, Some(&body))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert!(!f.shared.restart.is_cancelled());

    let demo = fixture(true);
    let app = router(demo.shared.clone());
    let admin = set_up(&app, &demo.token).await;
    let r = call(&app, "GET", "/config", &admin, None).await;
    assert!(r.body.contains("the embedded demo configuration") && !r.body.contains("<textarea"));
    let csrf = session_csrf(&app, &admin).await;
    let r = post(
        &app,
        "/config",
        &admin,
        &format!("csrf={csrf}&action=apply&text=x"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn rules_show_each_nodes_counters_on_the_page_the_api_and_metrics() {
    let (f, app, admin) = ready(fixture(true)).await;
    let r = call(&app, "GET", "/rules", &admin, None).await;
    assert!(r.body.contains("No rule chain is configured"));
    let counters = outpost_rules::NodeCounters {
        messages_in: 5,
        out: [("True".to_string(), 3), ("False".to_string(), 2)].into(),
        dropped: 0,
        errors: 1,
        last_error: Some("<script> threw: x is not defined".into()),
        script_ns: 2_500_000,
    };
    *f.shared.rules.lock().unwrap() = vec![(
        "Boiler".into(),
        vec![(
            "Hot?".into(),
            "org.thingsboard.rule.engine.filter.TbJsFilterNode".into(),
            counters,
        )],
    )];
    let r = call(&app, "GET", "/rules", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    for want in [
        "<h2>Boiler</h2>",
        "TbJsFilterNode",
        "False: 2, True: 3",
        "2.5 ms",
        "&#60;script&#62; threw",
    ] {
        assert!(r.body.contains(want), "{want} missing in {}", r.body);
    }
    let r = call(&app, "GET", "/api/v1/rules", &admin, None).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v[0]["nodes"][0]["messages_in"], 5);
    assert_eq!(v[0]["nodes"][0]["errors"], 1);
    let r = call(&app, "GET", "/metrics", "", None).await;
    for want in [
        "outpost_rule_node_in_total{chain=\"Boiler\",node=\"Hot?\"} 5",
        "outpost_rule_node_out_total{chain=\"Boiler\",node=\"Hot?\",relation=\"True\"} 3",
        "outpost_rule_node_errors_total{chain=\"Boiler\",node=\"Hot?\"} 1",
    ] {
        assert!(r.body.contains(want), "{want} missing in {}", r.body);
    }
}

#[tokio::test]
async fn machines_use_api_tokens_without_cookies_or_csrf() {
    let (mut f, app, admin) = ready(fixture(true)).await;
    let csrf = session_csrf(&app, &admin).await;
    let make = |name: &str, role: &str| format!("csrf={csrf}&action=token&user={name}&role={role}");
    let r = post(&app, "/users", &admin, &make("scada", "viewer")).await;
    assert_eq!(r.status, StatusCode::OK);
    let token_of = |body: &str| {
        let at = body.find("<code class=\"token\">").expect("no token shown") + 20;
        body[at..at + body[at..].find('<').unwrap()].to_string()
    };
    let viewer = token_of(&r.body);
    assert!(viewer.starts_with("opt_"));
    // Shown once on the page, and nowhere else (not in the title).
    assert_eq!(r.body.matches(&viewer).count(), 1, "{}", r.body);
    let title = &r.body[r.body.find("<title>").unwrap()..r.body.find("</title>").unwrap()];
    assert!(!title.contains("opt_"), "{title}");
    // Shown once: not on the next visit.
    assert!(!call(&app, "GET", "/users", &admin, None)
        .await
        .body
        .contains(&viewer));
    let tech = token_of(
        &post(&app, "/users", &admin, &make("plc-script", "technician"))
            .await
            .body,
    );
    let bearer = |t: &str| format!("Bearer {t}");
    let r = call_with(
        &app,
        "GET",
        "/api/v1/devices",
        "",
        None,
        &[("authorization", &bearer(&viewer))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let json = ("content-type", "application/json");
    let write = Some(r#"{"tag":"speed","value":3}"#);
    let r = call_with(
        &app,
        "POST",
        "/api/v1/devices/pump/write",
        "",
        write,
        &[json, ("authorization", &bearer(&viewer))],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let driver = tokio::spawn(async move {
        let cmd = next_write(&mut f.writes).await;
        let actor = cmd.actor.clone();
        cmd.reply.send(Ok(())).unwrap();
        actor
    });
    let r = call_with(
        &app,
        "POST",
        "/api/v1/devices/pump/write",
        "",
        write,
        &[json, ("authorization", &bearer(&tech))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(driver.await.unwrap(), "api:token:plc-script");
    let r = call_with(
        &app,
        "GET",
        "/api/v1/devices",
        "",
        None,
        &[("authorization", "Bearer opt_forged")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Revoked: refused.
    post(
        &app,
        "/users",
        &admin,
        &format!("csrf={csrf}&action=revoke&user=scada"),
    )
    .await;
    let r = call_with(
        &app,
        "GET",
        "/api/v1/devices",
        "",
        None,
        &[("authorization", &bearer(&viewer))],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(audit_actions(&f.shared.log)
        .await
        .contains(&"web.token".to_string()));
}

#[tokio::test]
async fn active_alarms_show_on_the_devices_page_and_in_live_updates() {
    let (f, app, admin) = ready(fixture(true)).await;
    reading(&f.shared, "pump", "speed", 1.0);
    let alarm = |state| {
        Arc::new(vec![StoredEvent {
            seq: Seq(9),
            event: Event::new(
                "pump",
                Timestamp::synced(NOW),
                EvBody::Alarm(outpost_core::Alarm {
                    state,
                    ..outpost_core::Alarm::raised(
                        "Overheat",
                        outpost_core::AlarmSeverity::Critical,
                        "",
                        NOW,
                    )
                }),
            ),
        }])
    };
    f.shared
        .latest
        .write()
        .unwrap()
        .apply(&alarm(outpost_core::AlarmState::Active));
    let r = call(&app, "GET", "/devices", &admin, None).await;
    assert!(
        r.body
            .contains("data-live-alarms=\"pump\">Overheat (critical)</p>"),
        "{}",
        r.body
    );
    let r = call(&app, "GET", "/api/v1/devices", &admin, None).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v[0]["alarms"],
        serde_json::json!([["Overheat", "critical"]])
    );
    let req = Request::builder()
        .uri("/events")
        .header(header::COOKIE, &admin)
        .body(Body::empty())
        .unwrap();
    let mut body = app.clone().oneshot(req).await.unwrap().into_body();
    let snap: serde_json::Value =
        serde_json::from_str(next(&mut body).await.trim_start_matches("data: ").trim()).unwrap();
    assert_eq!(
        snap["alarms"],
        serde_json::json!([["pump", "Overheat (critical)"]])
    );
    // Cleared: the change goes out, with no alarm left.
    let publisher = tokio::spawn(live::publish(f.shared.clone(), f.shared.stop.clone()));
    let _first = next(&mut body).await;
    f.shared
        .latest
        .write()
        .unwrap()
        .apply(&alarm(outpost_core::AlarmState::Cleared));
    let mut cleared = false;
    for _ in 0..5 {
        let d: serde_json::Value =
            serde_json::from_str(next(&mut body).await.trim_start_matches("data: ").trim())
                .unwrap();
        if d["alarms"] == serde_json::json!([["pump", ""]]) {
            cleared = true;
            break;
        }
    }
    assert!(cleared, "the cleared alarm was not sent");
    f.shared.stop.cancel();
    publisher.await.unwrap();
}

#[tokio::test]
async fn the_config_api_validates_with_line_precise_problems_and_applies() {
    let (f, app, admin) = ready(fixture_with_config(SITE)).await;
    let r = call(&app, "GET", "/api/v1/config", &admin, None).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["text"]
        .as_str()
        .unwrap()
        .contains("password = \"********\""));
    assert!(!r.body.contains("s3cret-pw"));
    let csrf = session_csrf(&app, &admin).await;
    let hdr = [
        ("content-type", "application/json"),
        ("x-csrf-token", csrf.as_str()),
    ];
    let bad = serde_json::json!({"text": v["text"].as_str().unwrap().replace("[gateway]\n", "[gateway]\ncolour = 1\n")}).to_string();
    let r = call_with(
        &app,
        "POST",
        "/api/v1/config/validate",
        &admin,
        Some(&bad),
        &hdr,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let p: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(p["problems"][0]["line"], 2);
    assert_eq!(p["problems"][0]["key_path"], "gateway.colour");
    let good = serde_json::json!({"text": v["text"].as_str().unwrap().replace("site", "site-3")})
        .to_string();
    let r = call_with(
        &app,
        "POST",
        "/api/v1/config/apply",
        &admin,
        Some(&good),
        &hdr,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("\"applied\":true"));
    let written = std::fs::read_to_string(f.shared.config_path.as_ref().unwrap()).unwrap();
    assert!(
        written.contains("id = \"site-3\"") && written.contains("s3cret-pw"),
        "{written}"
    );
    assert!(f.shared.restart.is_cancelled());
    // Over the size bound: refused unparsed, as a problem of the file.
    let padded = format!(
        "{}{}",
        v["text"].as_str().unwrap(),
        "# pad\n".repeat(200_000)
    );
    let huge = serde_json::json!({ "text": padded }).to_string();
    let r = call_with(
        &app,
        "POST",
        "/api/v1/config/validate",
        &admin,
        Some(&huge),
        &hdr,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("larger than 1 MiB"), "{}", r.body);
    // Without the CSRF header, or as a technician: refused.
    let r = call_with(
        &app,
        "POST",
        "/api/v1/config/apply",
        &admin,
        Some(&good),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let tech = add_user(&app, &admin, "t", "technician", "tech password").await;
    let tcsrf = session_csrf(&app, &tech).await;
    let r = call_with(
        &app,
        "POST",
        "/api/v1/config/validate",
        &tech,
        Some(&good),
        &[
            ("content-type", "application/json"),
            ("x-csrf-token", tcsrf.as_str()),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn kept_configuration_documents_are_listed_and_open_in_the_editor() {
    let (f, app, admin) = ready(fixture_with_config(SITE)).await;
    let r = call(&app, "GET", "/config", &admin, None).await;
    assert!(r.body.contains("No document was applied"), "{}", r.body);
    let store = crate::remote::store::Store::new(&f.shared.data_dir, 10);
    let doc = outpost_config::document::Document::new(
        3,
        SITE.replace("id = \"site\"", "id = \"site-3\""),
    );
    store.commit(&doc).unwrap();
    let r = call(&app, "GET", "/config", &admin, None).await;
    assert!(r.body.contains("<title>Configuration"), "{}", r.body);
    assert_eq!(
        r.body.matches("/config/document?version=3").count(),
        1,
        "{}",
        r.body
    );
    assert!(r.body.contains(&doc.hash[7..19]), "{}", r.body);
    let r = call(&app, "GET", "/config/document?version=3", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("id = &#34;site-3&#34;"), "{}", r.body);
    assert!(!r.body.contains("s3cret-pw"), "a secret reached the page");
    assert!(r.body.contains("Apply it to go back to it"), "{}", r.body);
    let r = call(&app, "GET", "/config/document?version=9", &admin, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_device_page_lists_attributes_by_scope_and_open_alarms() {
    use outpost_core::{AttributeScope, Point, Value};
    let (f, app, admin) = ready(fixture(true)).await;
    reading(&f.shared, "pump", "speed", 1.0);
    // What the log's current state holds at start.
    let current = vec![
        Event::new(
            "pump",
            Timestamp::synced(NOW),
            EvBody::Attributes(vec![Point::good("model", Value::Str("P-7".into()))]),
        ),
        Event::new(
            "pump",
            Timestamp::synced(NOW),
            EvBody::ScopedAttributes(
                AttributeScope::Shared,
                vec![Point::good("target", Value::I64(55))],
            ),
        ),
        Event::new(
            "pump",
            Timestamp::synced(NOW),
            EvBody::ScopedAttributes(
                AttributeScope::Server,
                vec![Point::good("limit", Value::F64(90.5))],
            ),
        ),
        Event::new(
            "pump",
            Timestamp::synced(NOW),
            EvBody::Alarm(outpost_core::Alarm::raised(
                "Dry run",
                outpost_core::AlarmSeverity::Major,
                "",
                NOW - 5_000,
            )),
        ),
    ];
    f.shared.latest.write().unwrap().seed(&current);
    let r = call(&app, "GET", "/devices/pump", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    for row in [
        "<td>client</td><td>model</td><td>&#34;P-7&#34;</td>",
        "<td>shared</td><td>target</td><td>55</td>",
        "<td>server</td><td>limit</td><td>90.5</td>",
    ] {
        assert!(r.body.contains(row), "{row}: {}", r.body);
    }
    assert!(r.body.contains("Dry run"), "{}", r.body);
    // Attributes are not telemetry: no chart, no value row for them.
    assert!(!r.body.contains("data-live-value=\"pump/model\""));
}
