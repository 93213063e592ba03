//! The Modbus tool for commissioning: read any unit, table, address and
//! count, on the line of a configured device (through its driver, between
//! its polls, so a serial bus keeps one master) or on a TCP endpoint that
//! is not configured yet; see the raw registers and the values they decode
//! to side by side; and get the tags as configuration to paste.
//!
//! Reads are for technicians and are audited; nothing here writes to a
//! device.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_config::modbus::{ModbusTag, ModbusType, Table, WordOrder};
use outpost_drivers::command::Raw;
use outpost_drivers::modbus::value::decode_registers;
use outpost_drivers::modbus::Opener;
use serde::{Deserialize, Serialize};

use super::auth::Role;
use super::pages::{Me, PageUser};
use super::Shared;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ReadQuery {
    /// `device:<name>` (that device's line) or `tcp` / `rtu-over-tcp`.
    #[serde(default)]
    pub via: String,
    /// `host:port` for `tcp` / `rtu-over-tcp`.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub table: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub count: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub order: String,
}

/// A checked read.
#[derive(Debug, Clone)]
pub struct Plan {
    via: Via,
    unit: u8,
    table: Table,
    address: u16,
    count: u16,
    kind: ModbusType,
    order: WordOrder,
}

#[derive(Debug, Clone)]
enum Via {
    Device(String),
    Endpoint { addr: String, rtu: bool },
}

/// One row of the result: a register (or bit) and, where a value of the
/// chosen type starts, what it decodes to.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub address: u16,
    /// `0x1234`, or `1`/`0` for bits.
    pub raw: String,
    pub unsigned: Option<u16>,
    pub signed: Option<i16>,
    pub decoded: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadResult {
    pub rows: Vec<Row>,
    /// The tags for the decoded values, as TOML to paste into a device.
    pub toml: String,
}

fn parse_table(s: &str) -> Option<Table> {
    Some(match s {
        "coil" => Table::Coil,
        "discrete" => Table::Discrete,
        "input" => Table::Input,
        "holding" | "" => Table::Holding,
        _ => return None,
    })
}

fn table_name(t: Table) -> &'static str {
    match t {
        Table::Coil => "coil",
        Table::Discrete => "discrete",
        Table::Input => "input",
        Table::Holding => "holding",
    }
}

fn parse_order(s: &str) -> Option<WordOrder> {
    Some(match s {
        "ABCD" | "" => WordOrder::ABCD,
        "CDAB" => WordOrder::CDAB,
        "BADC" => WordOrder::BADC,
        "DCBA" => WordOrder::DCBA,
        _ => return None,
    })
}

/// Checks the form; every problem at once.
pub fn plan(s: &Shared, q: &ReadQuery) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let via = if let Some(d) = q.via.strip_prefix("device:") {
        if !modbus_devices(s).iter().any(|n| n == d) {
            errors.push(format!("no Modbus device {d:?}"));
        }
        Via::Device(d.to_string())
    } else if q.via == "tcp" || q.via == "rtu-over-tcp" {
        let e = q.endpoint.trim();
        let ok = e
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            errors.push(format!(
                "endpoint {e:?}: use host:port, e.g. 192.168.1.20:502"
            ));
        }
        Via::Endpoint {
            addr: e.to_string(),
            rtu: q.via == "rtu-over-tcp",
        }
    } else {
        errors.push("choose a configured device's line or a TCP endpoint".into());
        Via::Device(String::new())
    };
    let num =
        |name: &str, v: &str, lo: u32, hi: u32, default: u32, errors: &mut Vec<String>| -> u32 {
            if v.trim().is_empty() {
                return default;
            }
            match v.trim().parse::<u32>() {
                Ok(n) if (lo..=hi).contains(&n) => n,
                _ => {
                    errors.push(format!("{name} must be {lo} to {hi}"));
                    default
                }
            }
        };
    let unit = num("unit", &q.unit, 0, 247, 1, &mut errors) as u8;
    let table = parse_table(&q.table).unwrap_or_else(|| {
        errors.push(format!(
            "table {:?}: coil, discrete, input or holding",
            q.table
        ));
        Table::Holding
    });
    let address = num("address", &q.address, 0, 65_535, 0, &mut errors) as u16;
    let max = if table.is_bits() { 2000 } else { 125 };
    let count = num("count", &q.count, 1, max, 10, &mut errors) as u16;
    if u32::from(address) + u32::from(count) > 65_536 {
        errors.push("address + count goes past 65535".into());
    }
    let kind = if q.kind.is_empty() {
        if table.is_bits() {
            ModbusType::Bool
        } else {
            ModbusType::U16
        }
    } else {
        q.kind.parse::<ModbusType>().unwrap_or_else(|e| {
            errors.push(format!("type: {e}"));
            ModbusType::U16
        })
    };
    let order = parse_order(&q.order).unwrap_or_else(|| {
        errors.push(format!("order {:?}: ABCD, CDAB, BADC or DCBA", q.order));
        WordOrder::ABCD
    });
    if errors.is_empty() {
        Ok(Plan {
            via,
            unit,
            table,
            address,
            count,
            kind,
            order,
        })
    } else {
        Err(errors)
    }
}

/// Configured Modbus devices (their lines can be read).
pub fn modbus_devices(s: &Shared) -> Vec<String> {
    s.devices
        .iter()
        .filter(|(_, d)| d.starts_with("modbus"))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Reads and lays out the result.
pub async fn read(s: &Shared, p: &Plan, actor: &str) -> Result<ReadResult, String> {
    let raw = match &p.via {
        Via::Device(d) => {
            s.writes
                .modbus_read(d, p.unit, p.table, p.address, p.count)
                .await
        }
        Via::Endpoint { addr, rtu } => {
            let opener = if *rtu {
                Opener::RtuOverTcp {
                    addr: addr.clone(),
                    gap: std::time::Duration::from_millis(2),
                }
            } else {
                Opener::Tcp { addr: addr.clone() }
            };
            opener
                .read_once(
                    p.unit,
                    p.table,
                    p.address,
                    p.count,
                    std::time::Duration::from_secs(2),
                )
                .await
        }
    };
    let target = match &p.via {
        Via::Device(d) => format!("the line of {d}"),
        Via::Endpoint { addr, rtu } => {
            format!("{}{addr}", if *rtu { "rtu-over-tcp://" } else { "tcp://" })
        }
    };
    s.audit(
        "modbus.read",
        actor,
        format!(
            "{target}: unit {} {} {} x{}: {}",
            p.unit,
            table_name(p.table),
            p.address,
            p.count,
            if raw.is_ok() { "ok" } else { "failed" }
        ),
    )
    .await;
    Ok(layout(p, &raw?))
}

fn layout(p: &Plan, raw: &Raw) -> ReadResult {
    let mut rows = Vec::new();
    let mut toml = String::new();
    match raw {
        Raw::Bits(bits) => {
            for (i, b) in bits.iter().take(usize::from(p.count)).enumerate() {
                let address = p.address.saturating_add(i as u16);
                rows.push(Row {
                    address,
                    raw: u8::from(*b).to_string(),
                    unsigned: None,
                    signed: None,
                    decoded: Some(b.to_string()),
                });
                toml.push_str(&format!(
                    "[[device.modbus.tag]]\nname = \"{}_{address}\"\ntable = \"{}\"\naddress = {address}\n\n",
                    table_name(p.table),
                    table_name(p.table)
                ));
            }
        }
        Raw::Registers(regs) => {
            let mut tag = ModbusTag::new("probe", p.table, p.address);
            tag.kind = Some(p.kind);
            tag.order = p.order;
            let width = usize::from(tag.width().max(1));
            for (i, r) in regs.iter().enumerate() {
                let address = p.address.saturating_add(i as u16);
                let decoded = (i % width == 0 && i + width <= regs.len()).then(|| {
                    let v = decode_registers(&tag, &regs[i..i + width]);
                    super::model::value_text(&v)
                });
                if decoded.is_some() {
                    toml.push_str(&format!(
                        "[[device.modbus.tag]]\nname = \"{}_{address}\"\ntable = \"{}\"\naddress = {address}\ntype = \"{}\"\n{}\n",
                        table_name(p.table),
                        table_name(p.table),
                        p.kind,
                        if width > 1 && p.order != WordOrder::ABCD {
                            format!("order = \"{:?}\"\n", p.order)
                        } else {
                            String::new()
                        }
                    ));
                }
                rows.push(Row {
                    address,
                    raw: format!("0x{r:04X}"),
                    unsigned: Some(*r),
                    signed: Some(*r as i16),
                    decoded,
                });
            }
        }
    }
    ReadResult { rows, toml }
}

#[derive(Template)]
#[template(path = "modbus.html")]
struct ModbusPage {
    gateway: String,
    me: Option<Me>,
    page: &'static str,
    devices: Vec<String>,
    q: ReadQuery,
    types: [&'static str; 9],
    errors: Vec<String>,
    result: Option<ReadResult>,
    target: String,
    /// For an admin reading a configured device's line: the configuration
    /// (secrets masked) with the tags added to that device, for the editor.
    with_tags: Option<(String, String)>,
    csrf: String,
}

/// `GET /modbus`: the form, and with a query, the read.
pub async fn page(
    State(s): State<Arc<Shared>>,
    user: PageUser,
    Query(mut q): Query<ReadQuery>,
) -> Response {
    if user.0.role < Role::Technician {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "forbidden: the Modbus tool needs the technician role; you are {}\n",
                user.0.role.as_str()
            ),
        )
            .into_response();
    }
    let devices = modbus_devices(&s);
    let asked = !q.via.is_empty();
    if q.via.is_empty() {
        q.via = devices
            .first()
            .map_or_else(|| "tcp".into(), |d| format!("device:{d}"));
    }
    let (mut errors, mut result, mut status) = (Vec::new(), None, StatusCode::OK);
    let mut target = String::new();
    if asked {
        match plan(&s, &q) {
            Err(e) => {
                errors = e;
                status = StatusCode::BAD_REQUEST;
            }
            Ok(p) => {
                target = format!(
                    "unit {} {} {}..{}",
                    p.unit,
                    table_name(p.table),
                    p.address,
                    u32::from(p.address) + u32::from(p.count) - 1
                );
                match read(&s, &p, &format!("web:{}", user.0.user)).await {
                    Ok(r) => result = Some(r),
                    Err(e) => {
                        errors.push(format!("the read failed: {e}"));
                        status = StatusCode::BAD_GATEWAY;
                    }
                }
            }
        }
    }
    let with_tags = match (&result, q.via.strip_prefix("device:"), &s.config_path) {
        (Some(r), Some(device), Some(path)) if user.0.role >= Role::Admin && !r.toml.is_empty() => {
            let running = std::fs::read_to_string(path).unwrap_or_default();
            super::config_page::insert_tags(&super::config_page::mask(&running), device, &r.toml)
                .map(|t| (device.to_string(), t))
        }
        _ => None,
    };
    let mut r = super::pages::render(&ModbusPage {
        gateway: s.gateway.clone(),
        me: user.me(),
        page: "modbus",
        devices,
        q,
        types: [
            "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "bool",
        ],
        errors,
        result,
        target,
        with_tags,
        csrf: user.0.csrf.clone(),
    });
    *r.status_mut() = status;
    r
}

#[derive(Debug, Serialize)]
struct ApiResult {
    #[serde(flatten)]
    result: ReadResult,
}

/// `GET /api/v1/modbus/read`: the same read for scripts.
pub async fn api(
    State(s): State<Arc<Shared>>,
    user: super::api::ApiUser,
    q: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return super::api::error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if user.0.role < Role::Technician {
        return super::api::error(
            StatusCode::FORBIDDEN,
            "the Modbus tool needs the technician role",
        );
    }
    let p = match plan(&s, &q) {
        Ok(p) => p,
        Err(e) => return super::api::error(StatusCode::BAD_REQUEST, e.join("; ")),
    };
    match read(&s, &p, &format!("api:{}", user.0.user)).await {
        Ok(result) => axum::Json(ApiResult { result }).into_response(),
        Err(e) => super::api::error(StatusCode::BAD_GATEWAY, e),
    }
}
