//! Checks of Modbus buses, devices and tags that types alone cannot make.

use std::collections::{HashMap, HashSet};

use crate::modbus::{Bus, ModbusDevice, ModbusType, Table};
use crate::schema::Device;
use crate::validate::{check_ident, problem, Problem};

pub(crate) fn buses(out: &mut Vec<Problem>, buses: &[Bus], devices: &[Device]) {
    let mut names = HashSet::new();
    let mut ports = HashMap::new();
    for (i, bus) in buses.iter().enumerate() {
        let at = format!("bus[{i}]");
        check_ident(out, &format!("{at}.name"), "a bus name", &bus.name);
        if !bus.name.is_empty() && !names.insert(bus.name.as_str()) {
            out.push(problem(
                format!("{at}.name"),
                format!("bus name \"{}\" is used twice", bus.name),
            ));
        }
        if let Some(other) = ports.insert(bus.port.clone(), bus.name.clone()) {
            out.push(problem(
                format!("{at}.port"),
                format!(
                    "port {} is already used by bus \"{other}\"",
                    bus.port.display()
                ),
            ));
        }
        if bus.baud < 300 || bus.baud > 4_000_000 {
            out.push(problem(
                format!("{at}.baud"),
                "expected a baud rate between 300 and 4000000",
            ));
        }
        if !matches!(bus.data_bits, 7 | 8) {
            out.push(problem(format!("{at}.data_bits"), "expected 7 or 8"));
        }
        if !matches!(bus.stop_bits, 1 | 2) {
            out.push(problem(format!("{at}.stop_bits"), "expected 1 or 2"));
        }
        if let Some(d) = bus.inter_frame_delay {
            if d.as_millis() > 1000 {
                out.push(problem(
                    format!("{at}.inter_frame_delay"),
                    "must be at most 1s",
                ));
            }
        }
        let used = devices
            .iter()
            .filter_map(|d| d.modbus.as_ref())
            .any(|m| m.bus.as_deref() == Some(bus.name.as_str()));
        if !used {
            out.push(problem(
                format!("{at}.name"),
                format!("no device uses bus \"{}\"", bus.name),
            ));
        }
    }
    // Two devices with the same unit id on one bus would answer each other's requests.
    let mut units: HashMap<(&str, u8), usize> = HashMap::new();
    for (i, dev) in devices.iter().enumerate() {
        if let Some(ModbusDevice {
            bus: Some(b), unit, ..
        }) = &dev.modbus
        {
            if let Some(first) = units.insert((b.as_str(), *unit), i) {
                out.push(problem(
                    format!("device[{i}].modbus.unit"),
                    format!("unit {unit} on bus \"{b}\" is already used by device[{first}]"),
                ));
            }
        }
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

pub(crate) fn device(out: &mut Vec<Problem>, at: &str, m: &ModbusDevice, buses: &[Bus]) {
    let at = format!("{at}.modbus");
    let set = [m.bus.is_some(), m.tcp.is_some(), m.rtu_over_tcp.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        out.push(problem(
            at.clone(),
            format!("needs exactly one of `bus`, `tcp`, `rtu_over_tcp` (found {set})"),
        ));
    }
    if let Some(b) = &m.bus {
        if !buses.iter().any(|x| &x.name == b) {
            let known: Vec<&str> = buses.iter().map(|x| x.name.as_str()).collect();
            out.push(problem(
                format!("{at}.bus"),
                format!("no [[bus]] named \"{b}\" (configured: {known:?})"),
            ));
        }
    }
    for (key, v) in [("tcp", &m.tcp), ("rtu_over_tcp", &m.rtu_over_tcp)] {
        if let Some(addr) = v {
            if !is_host_port(addr) {
                out.push(problem(
                    format!("{at}.{key}"),
                    format!("expected host:port, found \"{addr}\""),
                ));
            }
        }
    }
    let rtu = m.bus.is_some() || m.rtu_over_tcp.is_some();
    if rtu && !(1..=247).contains(&m.unit) {
        out.push(problem(format!("{at}.unit"), "an RTU unit id is 1 to 247"));
    }
    if m.period.as_millis() < 10 {
        out.push(problem(format!("{at}.period"), "must be at least 10ms"));
    }
    if m.timeout.as_millis() < 5 || m.timeout.as_millis() > 60_000 {
        out.push(problem(
            format!("{at}.timeout"),
            "must be between 5ms and 60s",
        ));
    }
    if m.retries > 10 {
        out.push(problem(format!("{at}.retries"), "must be at most 10"));
    }
    if !(1..=125).contains(&m.max_registers) {
        out.push(problem(
            format!("{at}.max_registers"),
            "must be 1 to 125 (the protocol's limit)",
        ));
    }
    if !(1..=2000).contains(&m.max_bits) {
        out.push(problem(
            format!("{at}.max_bits"),
            "must be 1 to 2000 (the protocol's limit)",
        ));
    }
    if m.tags.is_empty() {
        out.push(problem(
            format!("{at}.tag"),
            "a Modbus device needs at least one [[device.modbus.tag]]",
        ));
    }
    let mut names = HashSet::new();
    // (table, start, end, index) of writable tags, to find overlaps.
    let mut writable: Vec<(Table, u32, u32, usize)> = Vec::new();
    for (j, t) in m.tags.iter().enumerate() {
        let tat = format!("{at}.tag[{j}]");
        if t.name.is_empty() {
            out.push(problem(
                format!("{tat}.name"),
                "a tag name must not be empty",
            ));
        } else if !names.insert(t.name.as_str()) {
            out.push(problem(
                format!("{tat}.name"),
                format!("tag name \"{}\" is used twice in this device", t.name),
            ));
        }
        let kind = t.kind();
        let width = u32::from(t.width());
        if u32::from(t.address) + width > 65_536 {
            out.push(problem(
                format!("{tat}.address"),
                format!("{kind} at {} runs past the last address 65535", t.address),
            ));
        }
        if t.table.is_bits() {
            if kind != ModbusType::Bool {
                out.push(problem(
                    format!("{tat}.type"),
                    format!(
                        "a {:?} holds single bits: the type must be bool, found {kind}",
                        t.table
                    )
                    .to_lowercase(),
                ));
            }
            if t.bit.is_some() {
                out.push(problem(format!("{tat}.bit"), "`bit` selects a bit inside a register; coils and discrete inputs are bits already"));
            }
        } else {
            if kind == ModbusType::Bool && t.bit.is_none() {
                out.push(problem(
                    format!("{tat}.bit"),
                    "a bool in a register needs `bit` (0 to 15)",
                ));
            }
            if let Some(b) = t.bit {
                if kind != ModbusType::Bool {
                    out.push(problem(
                        format!("{tat}.bit"),
                        format!("`bit` needs type bool, found {kind}"),
                    ));
                } else if b > 15 {
                    out.push(problem(format!("{tat}.bit"), "a register has bits 0 to 15"));
                }
            }
            let limit = m.max_registers;
            if t.width() > limit {
                out.push(problem(
                    format!("{tat}.type"),
                    format!(
                        "{kind} needs {} registers, more than max_registers = {limit}",
                        t.width()
                    ),
                ));
            }
        }
        if !kind.is_numeric() && (t.scale != 1.0 || t.offset != 0.0) {
            out.push(problem(
                format!("{tat}.scale"),
                format!("scale and offset apply to numbers, not {kind}"),
            ));
        }
        if t.scale == 0.0 || !t.scale.is_finite() {
            out.push(problem(
                format!("{tat}.scale"),
                "must be a finite number other than 0",
            ));
        }
        if t.deadband.is_some() && t.deadband_percent.is_some() {
            out.push(problem(
                format!("{tat}.deadband_percent"),
                "give `deadband` or `deadband_percent`, not both",
            ));
        }
        if (t.deadband.is_some() || t.deadband_percent.is_some()) && !kind.is_numeric() {
            out.push(problem(
                format!("{tat}.deadband"),
                format!("a deadband needs a number, not {kind}"),
            ));
        }
        for (key, v) in [
            ("deadband", t.deadband),
            ("deadband_percent", t.deadband_percent),
        ] {
            if v.is_some_and(|v| v.is_nan() || v < 0.0) {
                out.push(problem(format!("{tat}.{key}"), "must not be negative"));
            }
        }
        if t.heartbeat.is_some()
            && !(t.on_change || t.deadband.is_some() || t.deadband_percent.is_some())
        {
            out.push(problem(
                format!("{tat}.heartbeat"),
                "a heartbeat only matters with `on_change` or a deadband (otherwise every poll is reported)",
            ));
        }
        if let Some(p) = t.period {
            if p.as_millis() < 10 {
                out.push(problem(format!("{tat}.period"), "must be at least 10ms"));
            }
        }
        if t.writable {
            if !matches!(t.table, Table::Coil | Table::Holding) {
                out.push(problem(
                    format!("{tat}.writable"),
                    format!(
                        "only coils and holding registers can be written, not {:?}",
                        t.table
                    )
                    .to_lowercase(),
                ));
            }
            if t.bit.is_some() {
                out.push(problem(
                    format!("{tat}.writable"),
                    "a bit inside a register cannot be written without disturbing the others",
                ));
            }
            let start = u32::from(t.address);
            for (table, s, e, k) in &writable {
                if *table == t.table && start < *e && *s < start + width {
                    out.push(problem(
                        format!("{tat}.address"),
                        format!(
                            "overlapping writes: this writable tag shares addresses with tag[{k}]"
                        ),
                    ));
                }
            }
            writable.push((t.table, start, start + width, j));
        } else if t.write_min.is_some() || t.write_max.is_some() {
            out.push(problem(
                format!("{tat}.write_min"),
                "write limits need `writable = true`",
            ));
        }
        if let (Some(lo), Some(hi)) = (t.write_min, t.write_max) {
            if lo > hi {
                out.push(problem(
                    format!("{tat}.write_max"),
                    "must not be below `write_min`",
                ));
            }
        }
    }
}
