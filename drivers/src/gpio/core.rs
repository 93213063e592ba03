//! The GPIO driver's loop, over edge sources and output pins given to it:
//! debounced level changes and pulse counts become telemetry, writes switch
//! outputs (or pulse them), every input is reported periodically, and the
//! outputs go to their safe state when the loop ends. The Linux side only
//! builds the sources and pins; tests give scripted fakes.

use std::time::Duration;

use embedded_hal::digital::OutputPin;
use outpost_core::{Body, Event, Point, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::logic::{Debouncer, Edge, Output, PulseCounter};
use crate::command::{Command, WriteFailure};
use crate::{DriverContext, DriverError};

/// What an input does with its edges.
#[derive(Debug)]
pub enum InputKind {
    Level(Debouncer),
    Pulse(PulseCounter),
}

/// An input line: its tag, what it does, and where its edges come from
/// (a bounded channel fed by the kernel's edge events, or a test).
#[derive(Debug)]
pub struct Input {
    pub name: String,
    pub kind: InputKind,
    pub edges: mpsc::Receiver<Edge>,
}

/// An output line: its tag, the pin, and the pulse length of a write of
/// `true` (none: the write sets the level).
#[derive(Debug)]
pub struct OutputLine<P: OutputPin> {
    pub name: String,
    pub output: Output<P>,
    pub pulse: Option<Duration>,
}

/// The points of every input now (the periodic report).
fn report(inputs: &mut [Input], now: Instant) -> Vec<Point> {
    let mut out = Vec::new();
    for i in inputs {
        match &mut i.kind {
            InputKind::Level(d) => out.push(Point::good(i.name.as_str(), Value::Bool(d.level()))),
            InputKind::Pulse(c) => {
                out.push(Point::good(i.name.as_str(), Value::U64(c.count())));
                out.push(Point::good(
                    format!("{}_per_min", i.name),
                    Value::F64(c.per_minute(now)),
                ));
            }
        }
    }
    out
}

/// Runs until `cx.stop`; the outputs end in their safe state.
pub async fn run<P: OutputPin + Send>(
    device: &str,
    mut inputs: Vec<Input>,
    mut outputs: Vec<OutputLine<P>>,
    report_every: Duration,
    cx: &DriverContext,
) -> Result<(), DriverError> {
    let send = |points: Vec<Point>| {
        let ev = Event::new(device, cx.clock.now(), Body::Telemetry(points));
        async move {
            cx.out
                .send(ev)
                .await
                .map_err(|_| DriverError::PipelineClosed {
                    device: device.to_string(),
                })
        }
    };
    let mut inbox = cx.commands.lock().await;
    let mut inbox_open = true;
    let mut next_report = Instant::now();
    // Edges come from several channels; one task per input forwards them,
    // tagged with the input's index, into one bounded channel.
    let (tx, mut edges) = mpsc::channel::<(usize, Edge)>(64);
    let mut forwarders = Vec::new();
    for (i, input) in inputs.iter_mut().enumerate() {
        let (_, dummy) = mpsc::channel(1);
        let mut rx = std::mem::replace(&mut input.edges, dummy);
        let tx = tx.clone();
        forwarders.push(outpost_core::task::spawn(async move {
            while let Some(e) = rx.recv().await {
                if tx.send((i, e)).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let result = loop {
        let settle_at = inputs
            .iter()
            .filter_map(|i| match &i.kind {
                InputKind::Level(d) => d.deadline(),
                InputKind::Pulse(_) => None,
            })
            .chain(outputs.iter().filter_map(|o| o.output.deadline()))
            .min();
        tokio::select! {
            biased;
            () = cx.stop.cancelled() => break Ok(()),
            Some((i, e)) = edges.recv() => {
                if let Some(input) = inputs.get_mut(i) {
                    match &mut input.kind {
                        InputKind::Level(d) => {
                            if let Some(level) = d.edge(e) {
                                if let Err(e) = send(vec![Point::good(input.name.as_str(), Value::Bool(level))]).await { break Err(e); }
                            }
                        }
                        InputKind::Pulse(c) => c.edge(e),
                    }
                }
            }
            () = sleep_until(settle_at) => {
                let now = Instant::now();
                let mut changed = Vec::new();
                for input in &mut inputs {
                    if let InputKind::Level(d) = &mut input.kind {
                        if let Some(level) = d.settle(now) {
                            changed.push(Point::good(input.name.as_str(), Value::Bool(level)));
                        }
                    }
                }
                for o in &mut outputs {
                    if o.output.tick(now).is_err() {
                        tracing::warn!(device, output = %o.name, "Cannot drive a GPIO output back after its pulse.");
                    }
                }
                if !changed.is_empty() {
                    if let Err(e) = send(changed).await { break Err(e); }
                }
            }
            () = tokio::time::sleep_until(next_report) => {
                next_report = Instant::now() + report_every;
                let points = report(&mut inputs, Instant::now());
                if !points.is_empty() {
                    if let Err(e) = send(points).await { break Err(e); }
                }
            }
            cmd = inbox.recv(), if inbox_open => match cmd {
                None => inbox_open = false,
                Some(Command::ModbusRead(r)) => {
                    let _gone = r.reply.send(Err(format!("{device} is a GPIO device, not Modbus")));
                }
                Some(Command::Write(w)) => {
                    let result = match outputs.iter_mut().find(|o| o.name == w.tag) {
                        None => Err(WriteFailure::UnknownTag { device: w.device.clone(), tag: w.tag.clone() }),
                        Some(o) => {
                            let on = match &w.value {
                                Value::Bool(b) => Some(*b),
                                Value::I64(0) | Value::U64(0) => Some(false),
                                Value::I64(1) | Value::U64(1) => Some(true),
                                _ => None,
                            };
                            match on {
                                None => Err(WriteFailure::Rejected(format!("a GPIO output takes true or false, not {}", w.value))),
                                Some(on) => {
                                    let driven = match o.pulse {
                                        Some(len) if on => o.output.pulse(true, len, Instant::now()),
                                        _ => o.output.set(on),
                                    };
                                    driven.map_err(|_| WriteFailure::NoResponse(format!("cannot drive the line of {}", o.name)))
                                }
                            }
                        }
                    };
                    let detail = match &result {
                        Ok(()) => format!("{} = {}: done", w.tag, w.value),
                        Err(e) => format!("{} = {}: failed: {e}", w.tag, w.value),
                    };
                    tracing::info!(device, actor = %w.actor, %detail, "Device write.");
                    let audit = Event::new(
                        device,
                        cx.clock.now(),
                        Body::Audit(outpost_core::Audit { action: "device.write".into(), actor: w.actor.clone(), detail }),
                    );
                    let state = outputs.iter().find(|o| o.name == w.tag).map(|o| o.output.is_on());
                    let _gone = w.reply.send(result);
                    if cx.out.send(audit).await.is_err() {
                        break Err(DriverError::PipelineClosed { device: device.to_string() });
                    }
                    if let Some(on) = state {
                        if let Err(e) = send(vec![Point::good(w.tag.as_str(), Value::Bool(on))]).await { break Err(e); }
                    }
                }
            },
        }
    };
    for f in forwarders {
        f.abort();
    }
    for o in outputs {
        if o.output.shut_down().is_err() {
            tracing::error!(device, output = %o.name, "Cannot drive a GPIO output to its safe state.");
        }
    }
    result
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test code
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use embedded_hal::digital::{ErrorType, PinState};
    use outpost_core::{FixedClock, Quality};

    use super::*;
    use crate::command::{inbox, Router};
    use crate::metrics::Metrics;

    #[derive(Debug, Clone, Default)]
    struct FakeOut(Arc<Mutex<Vec<PinState>>>);

    impl ErrorType for FakeOut {
        type Error = Infallible;
    }

    impl OutputPin for FakeOut {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.0.lock().unwrap().push(PinState::Low);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.0.lock().unwrap().push(PinState::High);
            Ok(())
        }
    }

    fn points(ev: &Event) -> Vec<(String, Value)> {
        match &ev.body {
            Body::Telemetry(p) => p
                .iter()
                .map(|p| {
                    assert_eq!(p.quality, Quality::Good);
                    (p.tag.clone(), p.value.clone())
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn edges_pulses_writes_and_the_safe_state() {
        let (out_tx, mut out) = mpsc::channel(64);
        let (cmd_tx, commands) = inbox();
        let mut router = Router::default();
        router.add("cabinet", cmd_tx);
        let stop = tokio_util::sync::CancellationToken::new();
        let cx = DriverContext {
            out: out_tx,
            stop: stop.clone(),
            clock: Arc::new(FixedClock::new(1_764_000_000_000)),
            commands,
            metrics: Metrics::default(),
        };
        let (door_tx, door_rx) = mpsc::channel(16);
        let (meter_tx, meter_rx) = mpsc::channel(16);
        let inputs = vec![
            Input {
                name: "door".into(),
                kind: InputKind::Level(Debouncer::new(false, Duration::from_millis(20))),
                edges: door_rx,
            },
            // Restored from the log: 500 pulses before the restart.
            Input {
                name: "water".into(),
                kind: InputKind::Pulse(PulseCounter::new(500, Duration::from_secs(60))),
                edges: meter_rx,
            },
        ];
        let pin = FakeOut::default();
        let pins = pin.0.clone();
        let outputs = vec![OutputLine {
            name: "siren".into(),
            output: Output::new(pin, false, false, false).unwrap(),
            pulse: Some(Duration::from_secs(2)),
        }];
        let task = tokio::spawn(async move {
            run("cabinet", inputs, outputs, Duration::from_secs(60), &cx).await
        });
        // The first report: every input.
        let first = points(&out.recv().await.unwrap());
        assert_eq!(
            first,
            [
                ("door".into(), Value::Bool(false)),
                ("water".into(), Value::U64(500)),
                ("water_per_min".into(), Value::F64(0.0)),
            ]
        );
        // A bouncing door: one change, once it has held 20 ms.
        let t0 = Instant::now();
        for (ms, high) in [(0, true), (2, false), (4, true), (5, false), (7, true)] {
            door_tx
                .send(Edge {
                    high,
                    at: t0 + Duration::from_millis(ms),
                })
                .await
                .unwrap();
        }
        let change = points(&out.recv().await.unwrap());
        assert_eq!(change, [("door".into(), Value::Bool(true))]);
        // Ten pulses.
        for i in 0..10u64 {
            let at = Instant::now() + Duration::from_millis(i * 100);
            meter_tx.send(Edge { high: true, at }).await.unwrap();
            meter_tx
                .send(Edge {
                    high: false,
                    at: at + Duration::from_millis(10),
                })
                .await
                .unwrap();
        }
        // A write pulses the siren for 2 s.
        let writer = {
            let router = router.clone();
            tokio::spawn(async move {
                router
                    .write("cabinet", "siren", Value::Bool(true), "tester")
                    .await
            })
        };
        let mut audit_seen = false;
        let mut siren_on = false;
        while !(audit_seen && siren_on) {
            let ev = out.recv().await.unwrap();
            audit_seen |= matches!(ev.body, Body::Audit(_));
            siren_on |= points(&ev) == [("siren".to_string(), Value::Bool(true))];
        }
        writer.await.unwrap().unwrap();
        assert_eq!(*pins.lock().unwrap(), [PinState::Low, PinState::High]);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            *pins.lock().unwrap(),
            [PinState::Low, PinState::High, PinState::Low],
            "the pulse ended"
        );
        let bad = router
            .write("cabinet", "siren", Value::Str("loud".into()), "tester")
            .await;
        assert!(matches!(bad, Err(WriteFailure::Rejected(_))), "{bad:?}");
        // The next report carries the count on from the restored one.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let mut report = Vec::new();
        while report.is_empty() || !report.iter().any(|(t, _): &(String, Value)| t == "water") {
            report = points(&out.recv().await.unwrap());
        }
        assert!(
            report.contains(&("water".into(), Value::U64(510))),
            "{report:?}"
        );
        // Stopped: the siren goes to its safe state (off).
        pins.lock().unwrap().clear();
        router
            .write("cabinet", "siren", Value::Bool(true), "tester")
            .await
            .unwrap();
        assert_eq!(pins.lock().unwrap().as_slice(), [PinState::High]);
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(
            pins.lock().unwrap().last(),
            Some(&PinState::Low),
            "safe state on shutdown"
        );
    }
}
