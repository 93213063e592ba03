//! Checks of `[device.gpio]` that serde cannot make.

use crate::validate::{problem, Problem};

/// Checks of `[device.gpio]`: each line named one way, tags and lines used
/// once, durations in range.
pub(crate) fn device(out: &mut Vec<Problem>, at: &str, g: &crate::gpio::GpioDevice) {
    let at = format!("{at}.gpio");
    if g.inputs.is_empty() && g.outputs.is_empty() {
        out.push(problem(
            at.clone(),
            "a GPIO device needs at least one [[device.gpio.input]] or [[device.gpio.output]]",
        ));
    }
    if g.report_every.as_millis() < 1000 {
        out.push(problem(format!("{at}.report_every"), "must be at least 1s"));
    }
    let mut tags = std::collections::HashSet::new();
    for t in g.tags() {
        if !tags.insert(t.clone()) {
            out.push(problem(at.clone(), format!("tag \"{t}\" is used twice")));
        }
    }
    let mut lines = std::collections::HashSet::new();
    let lines_of = g
        .inputs
        .iter()
        .map(|i| ("input", &i.name, i.line, &i.line_name))
        .chain(
            g.outputs
                .iter()
                .map(|o| ("output", &o.name, o.line, &o.line_name)),
        );
    for (i, (kind, name, line, line_name)) in lines_of.enumerate() {
        let where_ = format!(
            "{at}.{kind}[{}]",
            if kind == "input" {
                i
            } else {
                i - g.inputs.len()
            }
        );
        if name.is_empty() {
            out.push(problem(format!("{where_}.name"), "must not be empty"));
        }
        match (line, line_name) {
            (Some(_), Some(_)) | (None, None) => out.push(problem(
                where_.clone(),
                "needs exactly one of `line` (offset) and `line_name`",
            )),
            _ => {}
        }
        let key = line.map_or_else(|| line_name.clone().unwrap_or_default(), |l| l.to_string());
        if !lines.insert(key.clone()) {
            out.push(problem(where_, format!("line {key} is used twice")));
        }
    }
    for (i, input) in g.inputs.iter().enumerate() {
        if input.debounce.as_millis() > 10_000 {
            out.push(problem(
                format!("{at}.input[{i}].debounce"),
                "must be at most 10s",
            ));
        }
        if input.rate_window.as_millis() < 1000 || input.rate_window.as_millis() > 3_600_000 {
            out.push(problem(
                format!("{at}.input[{i}].rate_window"),
                "must be 1s to 1h",
            ));
        }
    }
    for (i, o) in g.outputs.iter().enumerate() {
        if let Some(p) = o.pulse {
            if p.as_millis() == 0 || p.as_millis() > 3_600_000 {
                out.push(problem(
                    format!("{at}.output[{i}].pulse"),
                    "must be 1ms to 1h",
                ));
            }
        }
    }
}
