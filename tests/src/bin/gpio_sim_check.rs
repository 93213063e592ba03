//! The Linux GPIO driver against real kernel lines, run inside the emulated
//! arm64 gateway (`cross/vm/run.sh`): the kernel's GPIO simulator (gpio-sim,
//! whose inputs the test drives through the simulator's `pull` files and
//! whose outputs it reads from `value`) and the virt board's PL061 (which,
//! unlike gpio-sim, keeps an output's level after release, so the safe state
//! at shutdown can be read back).
//!
//! The guest's init gives the lines in the environment: `SIM_CHIP`
//! (`/dev/gpiochipN`), `SIM_SYS` (the simulator's sysfs directory of that
//! chip), `SIM_BASE` and `PL_BASE` (the chips' numbers in the sysfs GPIO
//! interface), `PL_CHIP`. The simulated chip has 16 lines, line 5 named
//! `DOOR`. Prints one line per check and `N passed, N failed`; exits 1 on
//! any failure.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test program

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use outpost_core::{Body, DeviceStatus, Event, Value};
use outpost_tests::drivers::{start, Running};

const WAIT: Duration = Duration::from_secs(15);

struct Env {
    sim_chip: String,
    sim_sys: String,
    sim_base: u32,
    pl_chip: String,
    pl_base: u32,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run by cross/vm/run.sh)"))
}

impl Env {
    fn pull(&self, line: u32, up: bool) {
        let path = format!("{}/sim_gpio{line}/pull", self.sim_sys);
        std::fs::write(&path, if up { "pull-up" } else { "pull-down" })
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    fn sim_value(&self, line: u32) -> String {
        let path = format!("{}/sim_gpio{line}/value", self.sim_sys);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_string()
    }
    fn sim_pull(&self, line: u32) -> String {
        let path = format!("{}/sim_gpio{line}/pull", self.sim_sys);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_string()
    }
}

/// Takes a line through the sysfs GPIO interface (so that it is busy for
/// the character device) or gives it back.
fn sysfs_export(number: u32, export: bool) {
    let file = if export { "export" } else { "unexport" };
    std::fs::write(format!("/sys/class/gpio/{file}"), number.to_string())
        .unwrap_or_else(|e| panic!("/sys/class/gpio/{file} {number}: {e}"));
}

fn sysfs_read(number: u32, what: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/gpio/gpio{number}/{what}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// Waits for an event of `device` that `pick` accepts; `None` after [`WAIT`].
async fn wait_for<T>(
    run: &mut Running,
    device: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Option<T> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(end, run.rx.recv()).await.ok()??;
        run.seen.push(ev.clone());
        if ev.device == device {
            if let Some(t) = pick(&ev) {
                return Some(t);
            }
        }
    }
}

fn points(ev: &Event) -> Option<BTreeMap<String, Value>> {
    match &ev.body {
        Body::Telemetry(p) => Some(p.iter().map(|p| (p.tag.clone(), p.value.clone())).collect()),
        _ => None,
    }
}

/// The next telemetry of `device` carrying `tag`, and its value.
async fn next_value(run: &mut Running, device: &str, tag: &str) -> Option<Value> {
    wait_for(run, device, |ev| points(ev)?.remove(tag)).await
}

/// Waits until `tag` of `device` is reported as `want`.
async fn value_becomes(run: &mut Running, device: &str, tag: &str, want: &Value) -> bool {
    wait_for(run, device, |ev| {
        (points(ev)?.get(tag)? == want).then_some(())
    })
    .await
    .is_some()
}

/// The first status `want` of `device`: among the events already seen, or
/// the next ones.
async fn status_seen(run: &mut Running, device: &str, want: DeviceStatus) -> Option<String> {
    let seen = run
        .seen
        .iter()
        .filter(|ev| ev.device == device)
        .filter_map(status)
        .find(|(s, _)| *s == want);
    if let Some((_, detail)) = seen {
        return Some(detail);
    }
    wait_for(run, device, |ev| status(ev).filter(|(s, _)| *s == want))
        .await
        .map(|(_, d)| d)
}

fn status(ev: &Event) -> Option<(DeviceStatus, String)> {
    match &ev.body {
        Body::Status(s) => Some((s.status, s.detail.clone())),
        _ => None,
    }
}

#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("PASS {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }
}

fn config(e: &Env) -> String {
    format!(
        r#"[gateway]
id = "vm"

[[device]]
name = "cabinet"
[device.gpio]
chip = "{sim}"
report_every = "1s"
[[device.gpio.input]]
name = "door"
line_name = "DOOR"
debounce = "100ms"
[[device.gpio.input]]
name = "water"
line = 1
mode = "pulse"
[[device.gpio.input]]
name = "alarm"
line = 2
active_low = true
debounce = "10ms"
[[device.gpio.input]]
name = "float_up"
line = 3
bias = "pull-up"
debounce = "10ms"
[[device.gpio.input]]
name = "float_down"
line = 4
bias = "pull-down"
debounce = "10ms"
[[device.gpio.output]]
name = "relay"
line = 8
initial = true
[[device.gpio.output]]
name = "lamp"
line = 9
active_low = true
[[device.gpio.output]]
name = "siren"
line = 10
pulse = "500ms"

[[device]]
name = "panel"
[device.gpio]
chip = "{pl}"
[[device.gpio.output]]
name = "valve"
line = 0
initial = false
safe = true

[[device]]
name = "shared"
[device.gpio]
chip = "{sim}"
[[device.gpio.input]]
name = "taken"
line = 12

[[device]]
name = "ghost"
[device.gpio]
chip = "{sim}"
[[device.gpio.input]]
name = "nothing"
line_name = "NO_SUCH_LINE"
"#,
        sim = e.sim_chip,
        pl = e.pl_chip,
    )
}

async fn checks(e: &Env, t: &mut Tally) {
    // Before the drivers start: line 12 taken by another user, line 3 and
    // 4 pulled the other way from what the driver will ask for.
    sysfs_export(e.sim_base + 12, true);
    e.pull(3, false);
    e.pull(4, true);
    let mut run = start(&config(e));

    // Start: online, with the first report.
    let online = wait_for(&mut run, "cabinet", |ev| {
        status(ev).filter(|(s, _)| *s == DeviceStatus::Online)
    })
    .await;
    t.check(
        "simulated chip requested",
        online.is_some(),
        "no online status",
    );
    let first = wait_for(&mut run, "cabinet", points)
        .await
        .unwrap_or_default();
    t.check(
        "line found by name, level read at start",
        first.get("door") == Some(&Value::Bool(false)),
        format!("door = {:?}", first.get("door")),
    );
    t.check(
        "active-low input inverted",
        first.get("alarm") == Some(&Value::Bool(true)),
        format!("alarm = {:?} (line low)", first.get("alarm")),
    );
    t.check(
        "bias pull-up set on request",
        first.get("float_up") == Some(&Value::Bool(true)) && e.sim_pull(3) == "pull-up",
        format!(
            "float_up = {:?}, pull {}",
            first.get("float_up"),
            e.sim_pull(3)
        ),
    );
    t.check(
        "bias pull-down set on request",
        first.get("float_down") == Some(&Value::Bool(false)) && e.sim_pull(4) == "pull-down",
        format!(
            "float_down = {:?}, pull {}",
            first.get("float_down"),
            e.sim_pull(4)
        ),
    );
    t.check(
        "output at its initial state",
        e.sim_value(8) == "1",
        format!("relay line {}", e.sim_value(8)),
    );
    t.check(
        "active-low output inverted",
        e.sim_value(9) == "1",
        format!("lamp (false, active-low) line {}", e.sim_value(9)),
    );

    // A kernel edge becomes a level change.
    e.pull(5, true);
    t.check(
        "edge to level change",
        value_becomes(&mut run, "cabinet", "door", &Value::Bool(true)).await,
        "door never reported true",
    );

    // An active-low line's edges are inverted too: the line going high is
    // the contact opening.
    e.pull(2, true);
    t.check(
        "active-low edge inverted",
        value_becomes(&mut run, "cabinet", "alarm", &Value::Bool(false)).await,
        "alarm never reported false after its line went high",
    );

    // A bouncing contact: eight changes within a few ms, ending low.
    let before = run.seen.len();
    for i in 0..8 {
        e.pull(5, i % 2 == 0);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    run.collect(Duration::from_millis(1100)).await;
    let changes: Vec<Value> = run.seen[before..]
        .iter()
        .filter(|ev| ev.device == "cabinet")
        .filter_map(|ev| points(ev)?.remove("door"))
        .collect();
    // Periodic reports repeat the level; a change is any point that differs
    // from the one before.
    let mut flips = 0;
    let mut last = Value::Bool(true);
    for v in &changes {
        if *v != last {
            flips += 1;
            last = v.clone();
        }
    }
    t.check(
        "bouncing contact gives one change",
        flips == 1 && last == Value::Bool(false),
        format!("door went {changes:?}"),
    );

    // Pulses counted from kernel edges.
    let start_count = match next_value(&mut run, "cabinet", "water").await {
        Some(Value::U64(n)) => n,
        other => {
            t.check("pulse count read", false, format!("water = {other:?}"));
            return;
        }
    };
    for _ in 0..40 {
        e.pull(1, true);
        tokio::time::sleep(Duration::from_millis(5)).await;
        e.pull(1, false);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let want = Value::U64(start_count + 40);
    t.check(
        "40 pulses counted",
        value_becomes(&mut run, "cabinet", "water", &want).await,
        format!("never reached {want:?}"),
    );

    // Writes switch outputs; a pulse output switches back by itself.
    let w = run
        .router
        .write("cabinet", "relay", Value::Bool(false), "test")
        .await;
    t.check(
        "write switches an output",
        w.is_ok() && e.sim_value(8) == "0",
        format!("{w:?}, relay line {}", e.sim_value(8)),
    );
    let w = run
        .router
        .write("cabinet", "siren", Value::Bool(true), "test")
        .await;
    let on = e.sim_value(10);
    let mut off = on.clone();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        off = e.sim_value(10);
        if off == "0" {
            break;
        }
    }
    t.check(
        "pulse output on, then off",
        w.is_ok() && on == "1" && off == "0",
        format!("{w:?}, line {on} then {off}"),
    );

    // A busy line: reported with chip and line, retried, taken when freed.
    let detail = status_seen(&mut run, "shared", DeviceStatus::Offline)
        .await
        .unwrap_or_default();
    t.check(
        "busy line reported with chip and line",
        detail.contains(&e.sim_chip) && detail.contains("line 12") && detail.contains("in use"),
        format!("status detail {detail:?}"),
    );
    sysfs_export(e.sim_base + 12, false);
    let back = wait_for(&mut run, "shared", |ev| {
        status(ev).filter(|(s, _)| *s == DeviceStatus::Online)
    })
    .await;
    t.check(
        "busy line taken once freed",
        back.is_some(),
        "no online status",
    );
    let missing = status_seen(&mut run, "ghost", DeviceStatus::Offline)
        .await
        .unwrap_or_default();
    t.check(
        "missing line named",
        missing.contains("NO_SUCH_LINE"),
        format!("status detail {missing:?}"),
    );

    // PL061: the safe state at shutdown stays on the line after release.
    let valve = e.pl_base;
    let w = run
        .router
        .write("panel", "valve", Value::Bool(false), "test")
        .await;
    t.check("PL061 output written", w.is_ok(), format!("{w:?}"));
    run.stop().await;
    sysfs_export(valve, true);
    let (dir, level) = (sysfs_read(valve, "direction"), sysfs_read(valve, "value"));
    sysfs_export(valve, false);
    t.check(
        "output in its safe state after shutdown",
        dir == "out" && level == "1",
        format!("PL061 line 0: direction {dir}, value {level}"),
    );
}

fn main() -> ExitCode {
    let e = Env {
        sim_chip: env("SIM_CHIP"),
        sim_sys: env("SIM_SYS"),
        sim_base: env("SIM_BASE").parse().expect("SIM_BASE"),
        pl_chip: env("PL_CHIP"),
        pl_base: env("PL_BASE").parse().expect("PL_BASE"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut t = Tally::default();
    rt.block_on(checks(&e, &mut t));
    println!("{} passed, {} failed", t.passed, t.failed);
    if t.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
