//! Rows whose fault is on the device side: a serial adapter unplugged and
//! plugged back, and Modbus TCP peers that answer wrongly or not at all.
//!
//! Without an uplink the log keeps every event, so these rows count the
//! log itself: every seq it handed out is still there, in order.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_core::{Body, DeviceStatus};
use outpost_tests::site::{stop, Site};
use outpost_tests::PtyPair;

use super::{count_log, now_ms, Row};

fn readings(events: &[outpost_sync::StoredEvent], device: &str, after_ms: i64) -> usize {
    events
        .iter()
        .filter(|e| e.event.device == device && e.event.ts.unix_ms >= after_ms)
        .filter(|e| matches!(&e.event.body, Body::Telemetry(_)))
        .count()
}

/// A line-writing instrument on a pty; the adapter is pulled out for two
/// seconds and put back at the same path.
pub fn serial_unplug() -> Row {
    let mut row = Row::new("serial adapter unplugged and plugged back", 1);
    let mut pty = PtyPair::new();
    let site = Site::new();
    let device = format!(
        "[[device]]\nname = \"line\"\n[device.serial]\nport = \"{}\"\nbaud = 9600\n\
         frame = {{ delimiter = \"\\n\" }}\n\
         parse = {{ regex = '^v=(?P<v>\\d+)$', types = {{ v = \"i64\" }} }}\n",
        pty.a.display()
    );
    site.configure(&device, false);
    let run = Arc::new(AtomicBool::new(true));
    let far = pty.b.clone();
    let go = run.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while go.load(Ordering::Relaxed) {
            let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&far) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            while go.load(Ordering::Relaxed) && f.write_all(format!("v={n}\n").as_bytes()).is_ok() {
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let child = site.start();
    std::thread::sleep(Duration::from_secs(2));
    let unplugged = now_ms();
    pty.unplug();
    std::thread::sleep(Duration::from_secs(2));
    pty.replug();
    let replugged = now_ms();
    std::thread::sleep(Duration::from_secs(3));
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    run.store(false, Ordering::Relaxed);
    let _ = writer.join();
    let events = count_log(&mut row, &site);
    let before = readings(&events, "line", 0) - readings(&events, "line", unplugged);
    let after = readings(&events, "line", replugged);
    let status = |want: DeviceStatus, from: i64| {
        events.iter().any(|e| {
            e.event.device == "line"
                && e.event.ts.unix_ms >= from
                && matches!(&e.event.body, Body::Status(s) if s.status == want)
        })
    };
    if before == 0 {
        row.problems.push("no readings before the unplug".into());
    }
    if !status(DeviceStatus::Offline, unplugged) {
        row.problems
            .push("no offline status after the unplug".into());
    }
    if !status(DeviceStatus::Online, unplugged) {
        row.problems
            .push("no online status after the replug".into());
    }
    if after < 20 {
        row.problems
            .push(format!("readings did not resume: {after} after the replug"));
    }
    row
}

/// What a hostile Modbus TCP server does with each read request.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Honest,
    Garbage,
    WrongTid,
    WrongLength,
    HugeLength,
    ByteAtATime,
    CloseMidFrame,
    Silence,
}

const PEERS: [(&str, Peer); 8] = [
    ("honest", Peer::Honest),
    ("garbage", Peer::Garbage),
    ("wrong-tid", Peer::WrongTid),
    ("wrong-length", Peer::WrongLength),
    ("huge-length", Peer::HugeLength),
    ("byte-at-a-time", Peer::ByteAtATime),
    ("close-mid-frame", Peer::CloseMidFrame),
    ("silence", Peer::Silence),
];

/// Serves one connection: an FC3/FC4 answer holding a counter, spoilt as
/// `how` says.
fn serve(mut s: TcpStream, how: Peer) {
    let mut counter = 0u16;
    let mut seed = 0x9e37_79b9_u32;
    loop {
        let mut head = [0u8; 7];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let mut pdu = vec![0u8; len.saturating_sub(1)];
        if s.read_exact(&mut pdu).is_err() || pdu.len() < 5 {
            return;
        }
        let qty = u16::from_be_bytes([pdu[3], pdu[4]]).min(125);
        let mut body = vec![pdu[0], (qty * 2) as u8];
        for _ in 0..qty {
            counter = counter.wrapping_add(1);
            body.extend_from_slice(&counter.to_be_bytes());
        }
        let mut reply = Vec::with_capacity(7 + body.len());
        let mut tid = [head[0], head[1]];
        let mut mlen = (body.len() as u16 + 1).to_be_bytes();
        match how {
            Peer::WrongTid => tid[1] ^= 0x55,
            Peer::WrongLength => mlen = (body.len() as u16 + 6).to_be_bytes(),
            Peer::HugeLength => mlen = [0xff, 0xff],
            _ => {}
        }
        reply.extend_from_slice(&tid);
        reply.extend_from_slice(&[0, 0]);
        reply.extend_from_slice(&mlen);
        reply.push(head[6]);
        reply.extend_from_slice(&body);
        let ok = match how {
            Peer::Honest | Peer::WrongTid | Peer::WrongLength => s.write_all(&reply).is_ok(),
            Peer::HugeLength => s.write_all(&reply).is_ok() && s.write_all(&[0; 64]).is_ok(),
            Peer::Garbage => {
                let junk: Vec<u8> = (0..40)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        seed as u8
                    })
                    .collect();
                s.write_all(&junk).is_ok()
            }
            Peer::ByteAtATime => reply.iter().all(|b| {
                std::thread::sleep(Duration::from_millis(5));
                s.write_all(&[*b]).is_ok()
            }),
            Peer::CloseMidFrame => {
                let _ = s.write_all(&reply[..reply.len() / 2]);
                return;
            }
            Peer::Silence => true,
        };
        if !ok {
            return;
        }
    }
}

fn listen(how: Peer) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s, how));
        }
    });
    port
}

/// Seven hostile Modbus TCP peers and an honest one beside a fast simulated
/// device: the honest and the slow-but-correct peers are read, the others
/// fail cleanly, the simulated device keeps its rate and memory stays bounded.
pub fn modbus_hostile() -> Row {
    let mut row = Row::new("Modbus TCP peers: garbage, wrong tid/length, huge length, byte-at-a-time, close mid-frame, silence", 1);
    let site = Site::new();
    let mut devices = String::from(
        "[[device]]\nname = \"fast\"\n[device.sim]\ninterval = \"10ms\"\n\
         [[device.sim.tag]]\nname = \"n\"\ncounter = {}\n",
    );
    for (name, how) in PEERS {
        let port = listen(how);
        devices.push_str(&format!(
            "[[device]]\nname = \"{name}\"\n[device.modbus]\ntcp = \"127.0.0.1:{port}\"\nunit = 1\n\
             period = \"100ms\"\ntimeout = \"300ms\"\nretries = 0\nbackoff_max = \"2s\"\n\
             [[device.modbus.tag]]\nname = \"r\"\ntable = \"holding\"\naddress = 0\n"
        ));
    }
    // The configured sim device comes from `devices`, not `configure`'s.
    site.configure(&devices, false);
    let started = Instant::now();
    let child = site.start();
    let mut rss_max = 0u64;
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(250));
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        rss_max = rss_max.max(kib);
    }
    let ran = started.elapsed();
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    let events = count_log(&mut row, &site);
    let fast = readings(&events, "fast", 0);
    let expected = ran.as_millis() as usize / 10;
    if fast < expected / 2 {
        row.problems.push(format!(
            "the simulated device slowed down: {fast} readings in {ran:.1?} (~{expected} expected)"
        ));
    }
    let polls = ran.as_millis() as usize / 100;
    for name in ["honest", "byte-at-a-time"] {
        let n = readings(&events, name, 0);
        if n < polls / 3 {
            row.problems.push(format!(
                "{name}: {n} readings in {ran:.1?} (~{polls} polls)"
            ));
        }
    }
    for name in [
        "garbage",
        "wrong-tid",
        "wrong-length",
        "huge-length",
        "close-mid-frame",
        "silence",
    ] {
        let good = events.iter().any(|e| {
            e.event.device == name
                && matches!(&e.event.body, Body::Telemetry(p) if p.iter().any(|p| p.quality.is_good()))
        });
        if good {
            row.problems
                .push(format!("{name}: a reading was taken from a bad reply"));
        }
    }
    if rss_max > 64 * 1024 {
        row.problems
            .push(format!("RSS reached {} MiB", rss_max / 1024));
    }
    eprintln!(
        "faults: hostile Modbus peers: RSS max {} KiB, {fast} sim readings",
        rss_max
    );
    row
}
