//! The HTML pages: first-boot setup, login, overview, devices (with the
//! write confirmation), users. Forms post back with the session's CSRF
//! token; the login and setup forms, which come before a session, carry a
//! token that must match a `SameSite=Strict` cookie (double submit).

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::auth::{random_hex, AuthError, Role, Session, MIN_PASSWORD};
use super::{model, Peer, Shared};

pub const SESSION_COOKIE: &str = "outpost_session";
const FORM_COOKIE: &str = "outpost_form";

/// The logged-in user, as the layout shows them.
#[derive(Debug, Clone)]
pub struct Me {
    pub name: String,
    pub role: &'static str,
    pub csrf: String,
    pub technician: bool,
    pub admin: bool,
}

/// A page request with an open session; without one, the browser is sent
/// to the login (or, before the first admin exists, the setup) page.
#[derive(Debug)]
pub struct PageUser(pub Session);

impl PageUser {
    pub fn me(&self) -> Option<Me> {
        Some(Me {
            name: self.0.user.clone(),
            role: self.0.role.as_str(),
            csrf: self.0.csrf.clone(),
            technician: self.0.role >= Role::Technician,
            admin: self.0.role >= Role::Admin,
        })
    }

    /// A form's CSRF token must be this session's.
    pub fn check(&self, csrf: &str) -> Result<(), Forbidden> {
        if super::auth::constant_time_eq(csrf.as_bytes(), self.0.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(Forbidden(
                "the form's CSRF token is missing or wrong; reload the page".into(),
            ))
        }
    }

    pub fn require(&self, role: Role) -> Result<(), Forbidden> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(Forbidden(format!(
                "this needs the {} role; you are {}",
                role.as_str(),
                self.0.role.as_str()
            )))
        }
    }
}

impl FromRequestParts<Arc<Shared>> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, Response> {
        if let Some(session) =
            cookie(&parts.headers, SESSION_COOKIE).and_then(|t| s.auth.session(t))
        {
            return Ok(PageUser(session));
        }
        if s.auth.has_users() {
            Err(Redirect::to("/login").into_response())
        } else {
            Err(Redirect::to("/setup").into_response())
        }
    }
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!("{name}={value}; Path=/; HttpOnly{secure}; SameSite=Strict; Max-Age={max_age}");
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A request refused with 403 and the reason.
#[derive(Debug)]
pub struct Forbidden(pub String);

impl IntoResponse for Forbidden {
    fn into_response(self) -> Response {
        forbidden(&self.0)
    }
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response()
}

pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "A page did not render.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page did not render\n",
            )
                .into_response()
        }
    }
}

fn client(peer: Option<&Peer>) -> std::net::IpAddr {
    peer.map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |p| {
        p.0.ip()
    })
}

/// The client's address, when the server recorded it (not in router
/// tests without sockets).
#[derive(Debug)]
pub struct Client(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .map(|c| &c.0);
        Ok(Client(client(peer)))
    }
}

// ---- formatting helpers used by the templates ----

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn duration(s: impl std::borrow::Borrow<u64>) -> String {
    let s = *s.borrow();
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

pub fn bytes(b: impl std::borrow::Borrow<u64>) -> String {
    let b = *b.borrow();
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn rate(r: impl std::borrow::Borrow<f64>) -> String {
    let r = *r.borrow();
    if r >= 100.0 {
        format!("{r:.0}/s")
    } else {
        format!("{r:.1}/s")
    }
}

pub fn age(ms: impl std::borrow::Borrow<i64>) -> String {
    let ms = *ms.borrow();
    if ms < 1000 {
        "now".into()
    } else {
        format!("{} ago", duration((ms / 1000) as u64))
    }
}

// ---- first start and login ----

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    csrf: String,
    user: String,
    error: Option<String>,
    min_password: usize,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    csrf: String,
    user: String,
    error: Option<String>,
}

/// A page before login: with a fresh form token in its cookie.
fn pre_session(s: &Shared, status: StatusCode, make: impl FnOnce(String) -> Response) -> Response {
    let Ok(token) = random_hex() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no random source\n").into_response();
    };
    let mut r = make(token.clone());
    *r.status_mut() = status;
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(FORM_COOKIE, &token, 3600, s.secure_cookies),
    );
    r
}

/// The double-submit check of the login and setup forms.
fn form_token_ok(headers: &HeaderMap, field: &str) -> bool {
    cookie(headers, FORM_COOKIE).is_some_and(|c| {
        !c.is_empty() && super::auth::constant_time_eq(c.as_bytes(), field.as_bytes())
    })
}

pub async fn setup_form(State(s): State<Arc<Shared>>) -> Response {
    if s.auth.has_users() {
        return Redirect::to("/login").into_response();
    }
    setup_page(&s, StatusCode::OK, String::from("admin"), None)
}

fn setup_page(s: &Shared, status: StatusCode, user: String, error: Option<String>) -> Response {
    pre_session(s, status, |csrf| {
        render(&SetupPage {
            gateway: s.gateway.clone(),
            me: None,
            page: "setup",
            csrf,
            user,
            error,
            min_password: MIN_PASSWORD,
        })
    })
}

#[derive(Debug, Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    csrf: String,
    token: String,
    user: String,
    password: String,
    confirm: String,
}

pub async fn setup(
    State(s): State<Arc<Shared>>,
    Client(ip): Client,
    headers: HeaderMap,
    Form(f): Form<SetupForm>,
) -> Response {
    if !form_token_ok(&headers, &f.csrf) {
        return forbidden("the form's CSRF token is missing or wrong; reload the page");
    }
    if f.password != f.confirm {
        return setup_page(
            &s,
            StatusCode::BAD_REQUEST,
            f.user,
            Some("the two passwords differ".into()),
        );
    }
    match s.auth.setup(&f.token, &f.user, &f.password).await {
        Ok((cookie, session)) => {
            s.audit(
                "web.setup",
                &session.user,
                format!("admin password set from {ip}"),
            )
            .await;
            logged_in(&s, &cookie)
        }
        Err(AuthError::AlreadySetUp) => Redirect::to("/login").into_response(),
        Err(e) => {
            if e == AuthError::BadToken && s.auth.audit_failure(std::time::Instant::now()).is_some()
            {
                s.audit(
                    "web.setup_refused",
                    &audit_name(&f.user),
                    format!("wrong setup token from {ip}"),
                )
                .await;
            }
            let status = match e {
                AuthError::BadToken => StatusCode::FORBIDDEN,
                AuthError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            setup_page(&s, status, f.user, Some(e.to_string()))
        }
    }
}

pub async fn login_form(State(s): State<Arc<Shared>>) -> Response {
    if !s.auth.has_users() {
        return Redirect::to("/setup").into_response();
    }
    login_page(&s, StatusCode::OK, String::new(), None)
}

fn login_page(s: &Shared, status: StatusCode, user: String, error: Option<String>) -> Response {
    pre_session(s, status, |csrf| {
        render(&LoginPage {
            gateway: s.gateway.clone(),
            me: None,
            page: "login",
            csrf,
            user,
            error,
        })
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    user: String,
    password: String,
}

pub async fn login(
    State(s): State<Arc<Shared>>,
    Client(ip): Client,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !form_token_ok(&headers, &f.csrf) {
        return forbidden("the form's CSRF token is missing or wrong; reload the page");
    }
    match s.auth.login(&f.user, &f.password, ip).await {
        Ok((cookie, session)) => {
            s.audit("web.login", &session.user, format!("from {ip}"))
                .await;
            logged_in(&s, &cookie)
        }
        Err(e) => {
            let action = match e {
                AuthError::Locked(_) => "web.login_locked",
                _ => "web.login_failed",
            };
            if let Some(left_out) = s.auth.audit_failure(std::time::Instant::now()) {
                let more = if left_out > 0 {
                    format!(" ({left_out} more failed logins before this one were not logged)")
                } else {
                    String::new()
                };
                s.audit(
                    action,
                    &audit_name(&f.user),
                    format!("from {ip}: {e}{more}"),
                )
                .await;
            }
            let status = match e {
                AuthError::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_page(&s, status, f.user, Some(e.to_string()))
        }
    }
}

/// A user name as sent by a client that is not logged in, for the audit
/// trail: as it is when it could be a user name, else only its length.
fn audit_name(name: &str) -> String {
    if super::auth::valid_name(name) {
        name.to_string()
    } else {
        format!("(not a user name: {} bytes)", name.len())
    }
}

fn logged_in(s: &Shared, cookie: &str) -> Response {
    let mut r = Redirect::to("/").into_response();
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            cookie,
            s.auth.ttl().as_secs(),
            s.secure_cookies,
        ),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(FORM_COOKIE, "", 0, s.secure_cookies),
    );
    r
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check(&f.csrf) {
        return r.into_response();
    }
    if let Some(t) = cookie(&headers, SESSION_COOKIE) {
        s.auth.logout(t);
    }
    s.audit("web.logout", &user.0.user, String::new()).await;
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, s.secure_cookies),
    );
    r
}

// ---- overview and devices ----

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    o: model::Overview,
    charts: Vec<(String, String)>,
}

pub async fn overview(State(s): State<Arc<Shared>>, user: PageUser) -> Response {
    let o = model::overview(&s).await;
    render(&OverviewPage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "overview",
        o,
        charts: model::history_charts(&s),
    })
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    devices: Vec<model::DeviceRow>,
    can_write: bool,
    csrf: String,
    message: Option<String>,
}

/// The last hour's charts of every tag, cached for a while.
async fn sparks(s: &Shared) -> Arc<super::Sparks> {
    let mut cache = s.sparks.lock().await;
    if let Some((at, sp)) = cache.as_ref() {
        if at.elapsed() < super::SPARKS_TTL {
            return sp.clone();
        }
    }
    let to = s.clock.now().unix_ms;
    let from = to - 3_600_000;
    let sp: super::Sparks = match super::trend::read(&s.log, None, from, to, 60, &[]).await {
        Ok(t) => t
            .series
            .iter()
            .map(|(k, series)| (k.clone(), super::trend::svg(series, 120, 24, false)))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "The last hour's charts could not be read from the log.");
            super::Sparks::new()
        }
    };
    let sp = Arc::new(sp);
    *cache = Some((std::time::Instant::now(), sp.clone()));
    sp
}

async fn devices_page(
    s: &Shared,
    user: &PageUser,
    status: StatusCode,
    message: Option<String>,
) -> Response {
    let sp = sparks(s).await;
    let mut devices = model::devices(s);
    for d in &mut devices {
        for v in &mut d.values {
            if let Some(svg) = sp.get(&(d.name.clone(), v.tag.clone())) {
                v.spark.clone_from(svg);
            }
        }
    }
    let mut r = render(&DevicesPage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "devices",
        devices,
        can_write: user.0.role >= Role::Technician,
        csrf: user.0.csrf.clone(),
        message,
    });
    *r.status_mut() = status;
    r
}

pub async fn devices(State(s): State<Arc<Shared>>, user: PageUser) -> Response {
    devices_page(&s, &user, StatusCode::OK, None).await
}

#[derive(Template)]
#[template(path = "confirm_write.html")]
struct ConfirmWrite {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    csrf: String,
    device: String,
    tag: String,
    value: String,
}

#[derive(Debug, Deserialize)]
pub struct WriteForm {
    #[serde(default)]
    csrf: String,
    device: String,
    tag: String,
    value: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// A write asks for confirmation first; the confirmed form writes through
/// the driver's write path (checked, audited by the driver).
pub async fn write(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    Form(f): Form<WriteForm>,
) -> Response {
    if let Err(r) = user
        .check(&f.csrf)
        .and_then(|()| user.require(Role::Technician))
    {
        return r.into_response();
    }
    if f.confirm.as_deref() != Some("yes") {
        return render(&ConfirmWrite {
            gateway: s.gateway.clone(),
            me: user.me(),
            page: "devices",
            csrf: user.0.csrf.clone(),
            device: f.device,
            tag: f.tag,
            value: f.value,
        });
    }
    let value = super::api::parse_value(&f.value);
    let actor = format!("web:{}", user.0.user);
    match s.writes.write(&f.device, &f.tag, value, &actor).await {
        Ok(()) => {
            devices_page(
                &s,
                &user,
                StatusCode::OK,
                Some(format!("Wrote {} to {}/{}.", f.value, f.device, f.tag)),
            )
            .await
        }
        Err(e) => {
            devices_page(
                &s,
                &user,
                StatusCode::BAD_GATEWAY,
                Some(format!(
                    "The write of {} to {}/{} failed: {e}",
                    f.value, f.device, f.tag
                )),
            )
            .await
        }
    }
}

// ---- users (admin) ----

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    csrf: String,
    users: Vec<(String, &'static str)>,
    tokens: Vec<(String, &'static str)>,
    /// A token just made, shown this once.
    new_token: Option<String>,
    message: Option<String>,
    error: Option<String>,
}

fn users_page(
    s: &Shared,
    user: &PageUser,
    status: StatusCode,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    users_page_with(s, user, status, message, error, None)
}

fn users_page_with(
    s: &Shared,
    user: &PageUser,
    status: StatusCode,
    message: Option<String>,
    error: Option<String>,
    new_token: Option<String>,
) -> Response {
    let mut r = render(&UsersPage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "users",
        csrf: user.0.csrf.clone(),
        users: s
            .auth
            .users()
            .into_iter()
            .map(|(n, r)| (n, r.as_str()))
            .collect(),
        tokens: s
            .auth
            .tokens()
            .into_iter()
            .map(|(n, r)| (n, r.as_str()))
            .collect(),
        new_token,
        message,
        error,
    });
    *r.status_mut() = status;
    r
}

pub async fn users(State(s): State<Arc<Shared>>, user: PageUser) -> Response {
    if let Err(r) = user.require(Role::Admin) {
        return r.into_response();
    }
    users_page(&s, &user, StatusCode::OK, None, None)
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
    action: String,
    user: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

pub async fn user_change(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    Form(f): Form<UserForm>,
) -> Response {
    if let Err(r) = user.check(&f.csrf).and_then(|()| user.require(Role::Admin)) {
        return r.into_response();
    }
    if f.action == "token" {
        return match Role::parse(&f.role)
            .ok_or_else(|| AuthError::Invalid(format!("no role \"{}\"", f.role)))
            .and_then(|role| s.auth.create_token(&f.user, role).map(|t| (t, role)))
        {
            Ok((token, role)) => {
                let msg = format!(
                    "API token {} ({}) made. Copy it now: it is not shown again.",
                    f.user,
                    role.as_str()
                );
                s.audit(
                    "web.token",
                    &user.0.user,
                    format!("token {} made with role {}", f.user, role.as_str()),
                )
                .await;
                users_page_with(&s, &user, StatusCode::OK, Some(msg), None, Some(token))
            }
            Err(e) => users_page(
                &s,
                &user,
                StatusCode::BAD_REQUEST,
                None,
                Some(e.to_string()),
            ),
        };
    }
    let done = match f.action.as_str() {
        "revoke" => s
            .auth
            .revoke_token(&f.user)
            .map(|()| format!("API token {} revoked.", f.user)),
        "set" => match Role::parse(&f.role) {
            Some(role) => s
                .auth
                .set_user(&f.user, role, &f.password)
                .await
                .map(|()| format!("{} is now a {}.", f.user, role.as_str())),
            None => Err(AuthError::Invalid(format!("no role \"{}\"", f.role))),
        },
        "remove" => s
            .auth
            .remove_user(&f.user)
            .map(|()| format!("{} is removed.", f.user)),
        other => Err(AuthError::Invalid(format!("no action \"{other}\""))),
    };
    match done {
        Ok(msg) => {
            s.audit("web.users", &user.0.user, msg.clone()).await;
            users_page(&s, &user, StatusCode::OK, Some(msg), None)
        }
        Err(e) => users_page(
            &s,
            &user,
            StatusCode::BAD_REQUEST,
            None,
            Some(e.to_string()),
        ),
    }
}

// ---- export ----

#[derive(Template)]
#[template(path = "export.html")]
struct ExportPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    devices: Vec<String>,
    from: String,
    to: String,
    events: u64,
    error: Option<String>,
}

fn export_page(s: &Shared, user: &PageUser, status: StatusCode, error: Option<String>) -> Response {
    let now = s.clock.now().unix_ms;
    let mut r = render(&ExportPage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "export",
        devices: model::devices(s).into_iter().map(|d| d.name).collect(),
        from: super::time::format_minutes(now - 86_400_000),
        to: super::time::format_minutes(now + 60_000),
        events: s.log.stats().borrow().rows,
        error,
    });
    *r.status_mut() = status;
    r
}

pub async fn export_form(State(s): State<Arc<Shared>>, user: PageUser) -> Response {
    export_page(&s, &user, StatusCode::OK, None)
}

pub async fn export_data(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    axum::extract::Query(q): axum::extract::Query<super::export::ExportQuery>,
) -> Response {
    match super::export::plan(&q) {
        Ok(plan) => {
            let actor = format!("web:{}", user.0.user);
            super::export::respond(s, plan, &actor).await
        }
        Err(e) => export_page(&s, &user, StatusCode::BAD_REQUEST, Some(e)),
    }
}

// ---- one device, with trends ----

/// Ranges offered on a device page: (query value, label, milliseconds).
/// The time of `device`'s first event in the log (its oldest kept, as
/// events are appended in time order), found slice by slice.
async fn first_ts(log: &outpost_sync::EventLog, device: &str) -> Option<i64> {
    let filter = outpost_sync::log::ScanFilter {
        device: Some(device.to_string()),
        from_ms: i64::MIN,
        to_ms: i64::MAX,
    };
    let mut after = outpost_core::Seq(0);
    loop {
        let slice = log.scan(filter.clone(), after).await.ok()?;
        if let Some(e) = slice.events.first() {
            return Some(e.event.ts.unix_ms);
        }
        if slice.done {
            return None;
        }
        after = slice.next;
    }
}

/// `0`: everything the log keeps (from the device's oldest event).
const RANGES: [(&str, &str, i64); 6] = [
    ("1h", "1 hour", 3_600_000),
    ("6h", "6 hours", 6 * 3_600_000),
    ("24h", "24 hours", 86_400_000),
    ("7d", "7 days", 7 * 86_400_000),
    ("30d", "30 days", 30 * 86_400_000),
    ("all", "all kept", 0),
];

#[derive(Debug)]
struct Chart {
    tag: String,
    now: String,
    unit: String,
    svg: String,
    min: String,
    mean: String,
    max: String,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    d: model::DeviceRow,
    ranges: Vec<(&'static str, &'static str)>,
    range: String,
    from: String,
    to: String,
    events: u64,
    /// Of `events`, those an uplink has yet to send.
    unsent: u64,
    uplinks: bool,
    skipped: u64,
    charts: Vec<Chart>,
}

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    #[serde(default)]
    range: String,
}

pub async fn device(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<RangeQuery>,
) -> Response {
    let Some(d) = model::devices(&s).into_iter().find(|d| d.name == name) else {
        return (StatusCode::NOT_FOUND, format!("no device {name:?}\n")).into_response();
    };
    let (key, span) = RANGES
        .iter()
        .find(|(k, _, _)| *k == q.range)
        .map_or(("1h", 3_600_000), |(k, _, ms)| (*k, *ms));
    let to = s.clock.now().unix_ms;
    let from = if span == 0 {
        first_ts(&s.log, &name)
            .await
            .map_or(to - 3_600_000, |ts| ts.min(to - 60_000))
    } else {
        to - span
    };
    let cursors = s.log.stats().borrow().cursors.clone();
    let t = match super::trend::read(&s.log, Some(&name), from, to, 240, &cursors).await {
        Ok(t) => t,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the log cannot be read: {e}\n"),
            )
                .into_response()
        }
    };
    let num = |v: f64| model::value_text(&outpost_core::Value::F64(v));
    let charts = t
        .series
        .iter()
        .filter_map(|((_, tag), series)| {
            let (min, max, mean) = series.stats()?;
            let now = d
                .values
                .iter()
                .find(|v| v.tag == *tag)
                .map(|v| {
                    if v.unit.is_empty() {
                        v.value.clone()
                    } else {
                        format!("{} {}", v.value, v.unit)
                    }
                })
                .unwrap_or_default();
            Some(Chart {
                tag: tag.clone(),
                now,
                unit: s
                    .units
                    .get(&(name.clone(), tag.clone()))
                    .cloned()
                    .unwrap_or_default(),
                svg: super::trend::svg_marked(series, &t.unsent, 720, 160, true),
                min: num(min),
                mean: num(mean),
                max: num(max),
            })
        })
        .collect();
    render(&DevicePage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "devices",
        d,
        ranges: RANGES.iter().map(|(k, l, _)| (*k, *l)).collect(),
        range: key.to_string(),
        from: super::time::format_minutes(from),
        to: super::time::format_minutes(to),
        events: t.events,
        unsent: t.unsent_events,
        uplinks: !cursors.is_empty(),
        skipped: t.skipped,
        charts,
    })
}

// ---- logs ----

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    levels: [&'static str; 5],
    level: String,
    component: String,
    lines: Vec<crate::logring::Line>,
    capacity: usize,
}

#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub component: String,
}

/// The level named in a query (default: info).
pub fn level_of(s: &str) -> (tracing::Level, &'static str) {
    let l = crate::logring::parse_level(s).unwrap_or(tracing::Level::INFO);
    (l, crate::logring::level_name(l))
}

pub fn time_of(ms: impl std::borrow::Borrow<i64>) -> String {
    super::time::format_utc(*ms.borrow()).replace('T', " ")
}

pub async fn logs(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Response {
    let (min, name) = level_of(&q.level);
    render(&LogsPage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "logs",
        levels: ["error", "warn", "info", "debug", "trace"],
        level: name.to_string(),
        lines: crate::logring::ring().recent(min, &q.component, 500),
        component: q.component,
        capacity: crate::logring::CAPACITY,
    })
}

// ---- rules ----

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    chains: Vec<model::RuleChain>,
}

pub async fn rules(State(s): State<Arc<Shared>>, user: PageUser) -> Response {
    render(&RulesPage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "rules",
        chains: model::rules(&s),
    })
}
