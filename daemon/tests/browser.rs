//! The web page in a real browser (headless Chromium through chromedriver)
//! against outpostd reading a real Modbus device (pymodbus): first-boot
//! setup, login, live values, trend charts, the Modbus tool, a write with
//! confirmation that the next poll reads back, a CSV export, and a
//! configuration edit: an error shown at its line, then a valid change
//! applied and running after the restart. Screenshots of each page go
//! to `target/tmp/browser/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outpost_tests::browser::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_outpostd");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser")
}

#[test]
fn a_technician_sets_up_logs_in_watches_writes_and_exports() {
    let plc = outpost_tests::ModbusPeer::tcp(&serde_json::json!({"devices": [{"id": 1,
        "holding": [{"addr": 0, "registers": [42, 7]}]}]}));
    let dir = tempfile::tempdir().unwrap();
    let port = outpost_tests::free_port();
    let cfg = format!(
        "[gateway]\nid = \"site-7\"\ndurability = \"normal\"\n\
         [web]\nbind = \"127.0.0.1:{port}\"\n\
         [[device]]\nname = \"boiler\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nperiod = \"200ms\"\n\
         [[device.modbus.tag]]\nname = \"setpoint\"\ntable = \"holding\"\naddress = 0\nwritable = true\nunit = \"°C\"\n\
         [[device.modbus.tag]]\nname = \"pressure\"\ntable = \"holding\"\naddress = 1\n",
        plc.port
    );
    let cfg_path = dir.path().join("outpost.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let data = dir.path().join("data");
    let _daemon = Daemon(outpost_tests::start_outpostd(
        BIN,
        &cfg_path,
        &data,
        Stdio::null(),
    ));
    let token_file = data.join("web/setup-token");
    let token = outpost_tests::wait_for("the setup token", Duration::from_secs(15), || {
        std::fs::read_to_string(&token_file)
            .ok()
            .filter(|t| !t.trim().is_empty())
    });
    let base = format!("https://127.0.0.1:{port}");
    let b = Browser::start();

    // First boot: every page leads to the setup form.
    b.go(&format!("{base}/devices"));
    assert!(b.url().ends_with("/setup"), "{}", b.url());
    b.screenshot(&shots().join("1-setup.png"));
    b.type_into("input[name=token]", token.trim());
    b.type_into("input[name=password]", "a long passphrase");
    b.type_into("input[name=confirm]", "a long passphrase");
    b.click("main button[type=submit]");
    b.wait("the overview after setup", Duration::from_secs(10), |b| {
        b.url().ends_with('/').then_some(())
    });
    assert!(b.text("h1").contains("Overview"));
    b.screenshot(&shots().join("2-overview.png"));

    // Log out and in again.
    b.click("form.logout button");
    b.wait("the login page", Duration::from_secs(10), |b| {
        b.url().ends_with("/login").then_some(())
    });
    b.type_into("input[name=user]", "admin");
    b.type_into("input[name=password]", "not it");
    b.click("main button[type=submit]");
    b.wait("the refusal", Duration::from_secs(10), |b| {
        b.text("main")
            .contains("wrong user name or password")
            .then_some(())
    });
    b.screenshot(&shots().join("3-login-refused.png"));
    b.type_into("input[name=user]", "admin");
    b.type_into("input[name=password]", "a long passphrase");
    b.click("main button[type=submit]");
    b.wait("the overview after login", Duration::from_secs(10), |b| {
        b.url().ends_with('/').then_some(())
    });

    // Let a few polls reach the log, then the devices page: live values
    // and the last hour's chart.
    std::thread::sleep(Duration::from_secs(2));
    b.go(&format!("{base}/devices"));
    let cell = "[data-live-value=\"boiler/setpoint\"]";
    b.wait("the setpoint 42", Duration::from_secs(10), |b| {
        (b.text(cell) == "42 °C").then_some(())
    });
    assert!(
        b.count("td.spark svg.trend polyline, td.spark svg.trend circle") >= 1,
        "no trend chart next to the values"
    );
    b.screenshot(&shots().join("4-devices.png"));

    // The Modbus tool: the registers on the boiler's line, raw and decoded.
    b.go(&format!("{base}/modbus"));
    b.type_into("input[name=address]", "0");
    b.type_into("input[name=count]", "2");
    b.click("main button[type=submit]");
    b.wait("the registers read", Duration::from_secs(10), |b| {
        let t = b.text("main");
        (t.contains("0x002A") && t.contains("0x0007")).then_some(())
    });
    assert!(b.text("pre.toml").contains("address = 1"));
    b.screenshot(&shots().join("4b-modbus-tool.png"));
    // Then as tags of the boiler, in the configuration editor, validated.
    b.click("main form[action='/config'] button");
    b.wait(
        "the configuration with the new tags",
        Duration::from_secs(10),
        |b| {
            b.text("main")
                .contains("The configuration is valid.")
                .then_some(())
        },
    );
    let edited = b.run(
        "return document.querySelector('textarea[name=text]').value;",
        &[],
    );
    assert!(
        edited.as_str().unwrap().contains("name = \"holding_1\""),
        "{edited}"
    );
    b.screenshot(&shots().join("4c-tags-into-config.png"));
    b.go(&format!("{base}/devices"));

    // Write 55 to the setpoint: a confirmation, then the write.
    let row = "tr:has([data-live-value=\"boiler/setpoint\"])";
    b.type_into(&format!("{row} input[name=value]"), "55");
    b.click(&format!("{row} button"));
    b.wait("the confirmation", Duration::from_secs(10), |b| {
        b.text("h1").contains("Write to boiler?").then_some(())
    });
    b.screenshot(&shots().join("5-confirm-write.png"));
    b.click("main form button[type=submit]");
    b.wait("the write's outcome", Duration::from_secs(15), |b| {
        b.text(".notice")
            .contains("Wrote 55 to boiler/setpoint.")
            .then_some(())
    });
    plc.requests_when("the write at the device", |r| {
        r.iter().any(|r| r.function == 6 || r.function == 16)
    });
    b.wait("the value 55", Duration::from_secs(15), |b| {
        (b.text(cell) == "55 °C").then_some(())
    });
    b.screenshot(&shots().join("6-written.png"));

    // A change the page did not make (a write through the API) shows up on
    // the open page through the live stream, without a reload.
    b.run("window.notReloaded = true;", &[]);
    let updates_before = b
        .run(
            "return +document.body.getAttribute('data-live-updates') || 0;",
            &[],
        )
        .as_u64()
        .unwrap_or(0);
    let wrote = b.run_async(
        "const done = arguments[arguments.length - 1];\
         fetch('/api/v1/session').then(r => r.json()).then(s => fetch('/api/v1/devices/boiler/write', {\
           method: 'POST', headers: {'content-type': 'application/json', 'x-csrf-token': s.csrf},\
           body: JSON.stringify({tag: 'setpoint', value: 60})})).then(r => r.status).then(done, e => done('error ' + e));",
        &[],
    );
    assert_eq!(wrote, serde_json::json!(200));
    b.wait("the live value 60", Duration::from_secs(15), |b| {
        (b.text(cell) == "60 °C").then_some(())
    });
    assert_eq!(
        b.run("return window.notReloaded === true;", &[]),
        serde_json::json!(true),
        "the page was reloaded"
    );
    let updates_after = b
        .run(
            "return +document.body.getAttribute('data-live-updates') || 0;",
            &[],
        )
        .as_u64()
        .unwrap_or(0);
    assert!(updates_after > updates_before, "no live update arrived");
    b.screenshot(&shots().join("7-live.png"));

    // The device page: a chart per numeric tag.
    b.go(&format!("{base}/devices/boiler?range=1h"));
    assert_eq!(b.count("section.chart svg.trend"), 2, "{}", b.source());
    b.screenshot(&shots().join("8-device-trends.png"));

    // Export: the page, then the CSV as the browser downloads it.
    b.go(&format!("{base}/export"));
    b.screenshot(&shots().join("9-export.png"));

    // On a phone's width the pages keep to the screen: wide tables scroll
    // inside their box, the page itself does not.
    b.set_window(390, 844);
    for page in ["/", "/devices", "/modbus", "/export", "/logs", "/config"] {
        b.go(&format!("{base}{page}"));
        let wide = b.run(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            &[],
        );
        assert!(
            wide.as_i64().unwrap_or(999) <= 1,
            "{page} is {wide} px wider than a phone"
        );
    }
    b.go(&format!("{base}/devices"));
    b.screenshot(&shots().join("9b-devices-phone.png"));
    b.set_window(1280, 1000);
    let csv = b.run_async(
        "const done = arguments[arguments.length - 1];\
         fetch('/export/data?device=boiler&format=csv').then(r => r.text()).then(done, e => done('error ' + e));",
        &[],
    );
    let csv = csv.as_str().unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("seq,time,ts_ms,device,kind,tag,value,quality,clock")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(
        rows.iter().all(|r| r.len() == 9 && r[3] == "boiler"),
        "{csv}"
    );
    let setpoints: Vec<&str> = rows
        .iter()
        .filter(|r| r[4] == "telemetry" && r[5] == "setpoint")
        .map(|r| r[6])
        .collect();
    for v in ["42", "55", "60"] {
        assert!(setpoints.contains(&v), "{v} missing in {setpoints:?}");
    }
    assert!(
        rows.iter().any(|r| r[4] == "audit"),
        "the write's audit event is in the export"
    );

    // The configuration: a deliberate error is shown at its line; a valid
    // change is applied and outpostd comes back running it.
    b.go(&format!("{base}/config"));
    let text = b.run(
        "return document.querySelector('textarea[name=text]').value;",
        &[],
    );
    let text = text.as_str().unwrap().to_string();
    let bad = text.replace(
        "durability = \"normal\"\n",
        "durability = \"normal\"\ncolour = \"red\"\n",
    );
    let line = bad.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
    b.run(
        "document.querySelector('textarea[name=text]').value = arguments[0];",
        &[serde_json::json!(bad)],
    );
    b.click("main button[value=validate]");
    b.wait("the error at its line", Duration::from_secs(10), |b| {
        (b.count(&format!("tr#line-{line}.problem")) == 1).then_some(())
    });
    assert!(b
        .text(&format!("tr#line-{line}"))
        .contains("unknown key `colour`"));
    b.screenshot(&shots().join("10-config-error.png"));
    let good = text.replace("id = \"site-7\"", "id = \"site-8\"");
    b.run(
        "document.querySelector('textarea[name=text]').value = arguments[0];",
        &[serde_json::json!(good)],
    );
    b.click("main button[value=apply]");
    b.wait("the applied notice", Duration::from_secs(10), |b| {
        b.text("main")
            .contains("Applied. outpostd restarts")
            .then_some(())
    });
    assert!(std::fs::read_to_string(&cfg_path)
        .unwrap()
        .contains("id = \"site-8\""));
    // It restarts in place (sessions end): log in again, see the new id.
    b.wait(
        "outpostd back with the new configuration",
        Duration::from_secs(30),
        |b| {
            b.go(&format!("{base}/login"));
            b.source().contains("site-8").then_some(())
        },
    );
    b.type_into("input[name=user]", "admin");
    b.type_into("input[name=password]", "a long passphrase");
    b.click("main button[type=submit]");
    b.wait("the overview", Duration::from_secs(10), |b| {
        b.url().ends_with('/').then_some(())
    });
    assert!(b.text("header .gw").contains("site-8"));
    b.screenshot(&shots().join("11-config-applied.png"));
}
