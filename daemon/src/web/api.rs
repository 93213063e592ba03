//! `/api/v1`: the pages' data as JSON. A request needs a session cookie;
//! a state-changing one also needs the session's CSRF token in the
//! `X-CSRF-Token` header. Errors are `{"error": "..."}` with a status code.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use outpost_core::Value;
use serde::{Deserialize, Serialize};

use super::auth::{constant_time_eq, Role, Session};
use super::pages::{cookie, SESSION_COOKIE};
use super::{model, Shared};

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/overview", get(overview))
        .route("/devices", get(devices))
        .route("/devices/{device}/write", post(write))
        .route("/session", get(session))
        .route("/export", get(export))
        .route("/logs", get(logs))
        .route("/rules", get(rules))
        .route("/config", get(super::config_page::api_view))
        .route("/config/{action}", post(super::config_page::api_submit))
        .route("/modbus/read", get(super::commission::api))
        .route("/openapi.json", get(super::openapi::serve))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API route") })
}

pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    (status, Json(E { error: msg.into() })).into_response()
}

/// A request refused with 403, as the API's JSON error.
#[derive(Debug)]
pub struct Refused(pub String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(StatusCode::FORBIDDEN, self.0)
    }
}

/// An API request with an open session (and, unless it only reads, the
/// session's CSRF token), or with an API token (`Authorization: Bearer`).
#[derive(Debug)]
pub struct ApiUser(pub Session);

impl ApiUser {
    fn require(&self, role: Role) -> Result<(), Refused> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(Refused(format!(
                "this needs the {} role; you are {}",
                role.as_str(),
                self.0.role.as_str()
            )))
        }
    }
}

impl FromRequestParts<Arc<Shared>> for ApiUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, Response> {
        // A machine with an API token: no cookie, so no CSRF to fear.
        if let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            return match s.auth.bearer(token.trim()) {
                Some((user, role)) => Ok(ApiUser(Session {
                    user,
                    role,
                    csrf: String::new(),
                    expires: std::time::Instant::now(),
                })),
                None => Err(error(
                    StatusCode::UNAUTHORIZED,
                    "the API token is not valid",
                )),
            };
        }
        let Some(session) = cookie(&parts.headers, SESSION_COOKIE).and_then(|t| s.auth.session(t))
        else {
            return Err(error(StatusCode::UNAUTHORIZED, "log in first"));
        };
        let reads = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !reads {
            let given = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !constant_time_eq(given.as_bytes(), session.csrf.as_bytes()) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "the X-CSRF-Token header is missing or wrong",
                ));
            }
        }
        Ok(ApiUser(session))
    }
}

async fn overview(State(s): State<Arc<Shared>>, _user: ApiUser) -> Json<model::Overview> {
    Json(model::overview(&s).await)
}

async fn devices(State(s): State<Arc<Shared>>, _user: ApiUser) -> Json<Vec<model::DeviceRow>> {
    Json(model::devices(&s))
}

#[derive(Debug, Serialize)]
struct SessionView {
    user: String,
    role: &'static str,
    csrf: String,
}

/// Who is logged in, and the CSRF token for state-changing calls.
async fn session(user: ApiUser) -> Json<SessionView> {
    Json(SessionView {
        user: user.0.user,
        role: user.0.role.as_str(),
        csrf: user.0.csrf,
    })
}

#[derive(Debug, Deserialize)]
struct WriteBody {
    tag: String,
    value: serde_json::Value,
}

async fn write(
    State(s): State<Arc<Shared>>,
    user: ApiUser,
    Path(device): Path<String>,
    body: Result<Json<WriteBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = user.require(Role::Technician) {
        return r.into_response();
    }
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let value = match b.value {
        serde_json::Value::Bool(v) => Value::Bool(v),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::I64(i),
            (None, Some(u), _) => Value::U64(u),
            (None, None, Some(f)) => Value::F64(f),
            _ => return error(StatusCode::BAD_REQUEST, "the value is not a number"),
        },
        serde_json::Value::String(t) => Value::Str(t),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "`value` must be a boolean, a number or a string",
            )
        }
    };
    let actor = format!("api:{}", user.0.user);
    match s.writes.write(&device, &b.tag, value, &actor).await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({"written": true}))).into_response(),
        Err(e) => error(write_status(&e), e.to_string()),
    }
}

/// The status of a refused write: the caller's mistake (4xx) apart from the
/// device's or the driver's (5xx), so a client knows whether to retry.
fn write_status(e: &outpost_drivers::command::WriteFailure) -> StatusCode {
    use outpost_drivers::command::WriteFailure as W;
    match e {
        W::UnknownDevice(_) | W::UnknownTag { .. } => StatusCode::NOT_FOUND,
        W::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
        W::Exception(_) | W::NoResponse(_) => StatusCode::BAD_GATEWAY,
        W::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A value typed in a form: a boolean, an integer, a number, else text.
pub fn parse_value(s: &str) -> Value {
    let t = s.trim();
    match t {
        "true" | "on" => return Value::Bool(true),
        "false" | "off" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::I64(i);
    }
    if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() {
            return Value::F64(f);
        }
    }
    Value::Str(s.to_string())
}

/// The export, for scripts: the same query as the page's.
async fn export(
    State(s): State<Arc<Shared>>,
    user: ApiUser,
    q: Result<
        axum::extract::Query<super::export::ExportQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match super::export::plan(&q) {
        Ok(plan) => {
            let actor = format!("api:{}", user.0.user);
            super::export::respond(s, plan, &actor).await
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Recent log lines, newest first (`level`, `component` as on the page).
async fn logs(
    _user: ApiUser,
    q: Result<
        axum::extract::Query<super::pages::LogsQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let (min, _) = super::pages::level_of(&q.level);
    Json(crate::logring::ring().recent(min, &q.component, 500)).into_response()
}

/// The rule chains and their nodes' counters.
async fn rules(State(s): State<Arc<Shared>>, _user: ApiUser) -> Json<Vec<model::RuleChain>> {
    Json(model::rules(&s))
}
