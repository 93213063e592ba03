//! `GET /api/v1/openapi.json`: the API described in OpenAPI 3.1, written
//! out here beside the routes (a test checks that every documented
//! operation is served).

use axum::Json;
use serde_json::{json, Value};

/// (method, path, role, summary) of every operation.
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    (
        "get",
        "/api/v1/session",
        "viewer",
        "Who is logged in, and the CSRF token for state-changing calls",
    ),
    (
        "get",
        "/api/v1/overview",
        "viewer",
        "Uplinks, ingest rate, devices online, memory, disk, log counters",
    ),
    (
        "get",
        "/api/v1/devices",
        "viewer",
        "Each device's status and latest values",
    ),
    (
        "post",
        "/api/v1/devices/{device}/write",
        "technician",
        "Write a value to a device's tag",
    ),
    (
        "get",
        "/api/v1/export",
        "viewer",
        "The log's events as CSV or JSON lines, streamed",
    ),
    (
        "get",
        "/api/v1/logs",
        "viewer",
        "Recent log lines, newest first",
    ),
    (
        "get",
        "/api/v1/modbus/read",
        "technician",
        "Read raw Modbus data ad hoc",
    ),
];

fn params(path: &str) -> Value {
    let q = |name: &str, desc: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": desc});
    // The same, with the values it takes.
    let qs = |name: &str, desc: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": desc});
    let when = json!({"type": "string", "pattern": "^([0-9]{1,15}|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?Z?)?)$"});
    match path {
        "/api/v1/devices/{device}/write" => json!([
            {"name": "device", "in": "path", "required": true, "schema": {"type": "string"}}
        ]),
        "/api/v1/config/{action}" => json!([
            {"name": "action", "in": "path", "required": true, "schema": {"type": "string", "enum": ["validate", "apply"]}}
        ]),
        "/api/v1/export" => json!([
            qs(
                "device",
                "one device (default: all)",
                json!({"type": "string", "pattern": "^[A-Za-z0-9_-]+$"})
            ),
            qs(
                "from",
                "UTC: 2026-11-28, 2026-11-28T14:30[:05][Z] or Unix ms (default: the start)",
                when.clone()
            ),
            qs("to", "as from, exclusive (default: now)", when),
            qs(
                "format",
                "csv (default) or jsonl",
                json!({"type": "string", "enum": ["csv", "jsonl"]})
            ),
        ]),
        "/api/v1/logs" => json!([
            qs(
                "level",
                "error, warn, info (default), debug or trace: that level and worse",
                json!({"type": "string", "enum": ["error", "warn", "info", "debug", "trace"]})
            ),
            q("component", "a part of the component's name"),
        ]),
        "/api/v1/modbus/read" => json!([
            q(
                "via",
                "device:NAME (that device's line), tcp or rtu-over-tcp"
            ),
            q("endpoint", "host:port, for tcp and rtu-over-tcp"),
            q("unit", "0-247 (default 1)"),
            q("table", "holding (default), input, coil or discrete"),
            q("address", "0-based (default 0)"),
            q("count", "registers 1-125 or bits 1-2000 (default 10)"),
            q(
                "type",
                "u16, i16, u32, i32, u64, i64, f32, f64, bool or string[N]"
            ),
            q("order", "ABCD (default), CDAB, BADC or DCBA"),
        ]),
        _ => json!([]),
    }
}

fn response(path: &str) -> Value {
    let err = |description: &str| {
        json!({"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    let error = err("refused; the reason in `error`");
    let ok = match path {
        "/api/v1/export" => json!({"description": "the export", "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}}}}),
        "/api/v1/config/{action}" => {
            json!({"description": "valid (and applied, for apply); 422 with the problems otherwise",
            "content": {"application/json": {"schema": {"type": "object", "properties": {
                "valid": {"type": "boolean"}, "applied": {"type": "boolean"},
                "problems": {"type": "array", "items": {"type": "object", "properties": {
                    "line": {"type": "integer"}, "column": {"type": "integer"},
                    "key_path": {"type": "string"}, "message": {"type": "string"}}}}}}}}})
        }
        "/api/v1/devices/{device}/write" => json!({"description": "written",
            "content": {"application/json": {"schema": {"type": "object", "properties": {"written": {"type": "boolean"}}}}}}),
        "/api/v1/devices" | "/api/v1/logs" => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}})
        }
        _ => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}})
        }
    };
    let mut r = json!({"200": ok, "400": error, "401": error, "403": error});
    if path.ends_with("/write") {
        r["404"] = err("no such device or tag");
        r["422"] = err("the value is out of the tag's type or limits");
        r["503"] = err("the device's driver is not running");
    }
    if path.ends_with("/write") || path.ends_with("/modbus/read") {
        r["502"] = err("the device refused or did not answer");
    }
    r
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, role, summary) in OPERATIONS {
        let mut op = json!({
            "summary": summary,
            "description": format!("Needs the {role} role."),
            "parameters": params(path),
            "responses": response(path),
            "security": [{"session": []}, {"token": []}],
        });
        if *method == "post" {
            if let Some(a) = op["parameters"].as_array_mut() {
                a.push(json!({"name": "X-CSRF-Token", "in": "header", "required": false, "schema": {"type": "string"},
                    "description": "with a session: the `csrf` of GET /api/v1/session (required); with an API token: not needed"}));
            }
            let schema = if path.starts_with("/api/v1/config") {
                json!({"type": "object", "required": ["text"],
                       "properties": {"text": {"type": "string", "description": "the TOML file; `********` keeps a secret as it is"}}})
            } else {
                json!({"type": "object", "required": ["tag", "value"],
                       "properties": {"tag": {"type": "string"}, "value": {"type": ["boolean", "number", "string"]}}})
            };
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Outpost gateway API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The local API of outpostd: what the web page shows, as JSON."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "outpost_session"},
                "token": {"type": "http", "scheme": "bearer", "description": "an API token from the users page (opt_...)"}
            },
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}}}}
        }
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
