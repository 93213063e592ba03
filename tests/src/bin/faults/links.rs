//! Half-open uplinks: a proxy between the daemon and the broker stops
//! passing bytes on the connections it holds, without closing them (a NAT
//! entry dropped, a cellular modem wedged). The daemon must notice from
//! its own keep-alive or ack timeout, reconnect (new connections pass) and
//! deliver everything.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_tests::site::{mqtt_subscriber, mqtt_uplink, nats_seen, nats_uplink, stop, Site};
use outpost_tests::{Mosquitto, NatsServer};

use super::{drain_and_count, Row};

/// A TCP proxy to `upstream` whose existing connections can be frozen.
struct Proxy {
    port: u16,
    /// Connections numbered below this pass nothing any more.
    frozen_below: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (f, n, d) = (frozen_below.clone(), next.clone(), done.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                if d.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(u) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let id = n.fetch_add(1, Ordering::Relaxed);
                for (from, to) in [(c.try_clone().unwrap(), u.try_clone().unwrap()), (u, c)] {
                    let (f, d) = (f.clone(), d.clone());
                    std::thread::spawn(move || pump(from, to, id, &f, &d));
                }
            }
        });
        Proxy {
            port,
            frozen_below,
            next,
            done,
        }
    }
    /// Every connection open now stops passing bytes, and stays open.
    fn freeze(&self) {
        self.frozen_below
            .store(self.next.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, frozen: &AtomicU64, done: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if done.load(Ordering::Relaxed) {
            break;
        }
        if id < frozen.load(Ordering::Relaxed) {
            // Half-open: hold the sockets, read and write nothing.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if id < frozen.load(Ordering::Relaxed) {
                    continue; // frozen mid-read: the bytes vanish
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Freezes the proxy's connections once something has been delivered and
/// waits for delivery to resume on a new one.
fn freeze_and_wait(row: &mut Row, proxy: &Proxy, top: &dyn Fn() -> u64, what: &str) {
    if top() == 0 {
        row.problems
            .push("nothing delivered before the freeze".into());
    }
    proxy.freeze();
    let frozen_at = top();
    match resumed(top, frozen_at, Duration::from_secs(45)) {
        Some(t) => {
            eprintln!("faults: half-open {what} link: delivery resumed {t:.1?} after the freeze")
        }
        None => row
            .problems
            .push("delivery did not resume within 45 s of the freeze".into()),
    }
}

/// Waits (up to `limit`) until `top()` passes `above` by 50: delivery
/// resumed on a new connection. How long it took, if it did.
fn resumed(top: &dyn Fn() -> u64, above: u64, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if top() > above + 50 {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

pub fn half_open_nats(rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new("half-open NATS link (ack_timeout = 2s)", 1);
    let server = NatsServer::start();
    let proxy = Proxy::start(server.port);
    let site = Site::new();
    let through =
        nats_uplink(&format!("nats://127.0.0.1:{}", proxy.port)) + "ack_timeout = \"2s\"\n";
    site.configure(&through, true);
    let child = site.start();
    std::thread::sleep(Duration::from_secs(2));
    let top = || {
        nats_seen(rt, &server.url())
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    };
    freeze_and_wait(&mut row, &proxy, &top, "NATS");
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    drop(proxy);
    let direct = nats_uplink(&server.url());
    drain_and_count(&mut row, &site, &direct, &|| nats_seen(rt, &server.url()));
    row
}

pub fn half_open_mqtt(rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new("half-open MQTT link (keep_alive = 2s)", 1);
    row.duplicates_ok = true;
    let broker = Mosquitto::start("");
    let (seen, task) = mqtt_subscriber(rt, broker.port);
    std::thread::sleep(Duration::from_millis(300));
    let proxy = Proxy::start(broker.port);
    let site = Site::new();
    let through = mqtt_uplink(&format!("mqtt://127.0.0.1:{}", proxy.port))
        + "keep_alive = \"2s\"\nack_timeout = \"3s\"\n";
    site.configure(&through, true);
    let child = site.start();
    std::thread::sleep(Duration::from_secs(2));
    let top = || {
        seen.lock()
            .unwrap()
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    };
    freeze_and_wait(&mut row, &proxy, &top, "MQTT");
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    drop(proxy);
    let direct = mqtt_uplink(&broker.url());
    drain_and_count(&mut row, &site, &direct, &|| seen.lock().unwrap().clone());
    task.abort();
    row
}
