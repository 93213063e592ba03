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
    match path {
        "/api/v1/devices/{device}/write" => json!([
            {"name": "device", "in": "path", "required": true, "schema": {"type": "string"}}
        ]),
        "/api/v1/config/{action}" => json!([
            {"name": "action", "in": "path", "required": true, "schema": {"type": "string", "enum": ["validate", "apply"]}}
        ]),
        "/api/v1/export" => json!([
            q("device", "one device (default: all)"),
            q(
                "from",
                "UTC: 2026-11-28, 2026-11-28T14:30[:05][Z] or Unix ms (default: the start)"
            ),
            q("to", "as from, exclusive (default: now)"),
            q("format", "csv (default) or jsonl"),
        ]),
        "/api/v1/logs" => json!([
            q(
                "level",
                "error, warn, info (default), debug or trace: that level and worse"
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
    let error = json!({"description": "refused; the reason in `error`",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
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
        _ => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}})
        }
    };
    json!({"200": ok, "400": error, "401": error, "403": error, "502": error})
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, role, summary) in OPERATIONS {
        let mut op = json!({
            "summary": summary,
            "description": format!("Needs the {role} role."),
            "parameters": params(path),
            "responses": response(path),
            "security": [{"session": []}],
        });
        if *method == "post" {
            if let Some(a) = op["parameters"].as_array_mut() {
                a.push(json!({"name": "X-CSRF-Token", "in": "header", "required": true, "schema": {"type": "string"}}));
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
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "outpost_session"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}}}}
        }
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
