//! The simulated device: one telemetry event per interval carrying a value
//! for each configured tag (counter, sine, random walk, toggle).
//!
//! Values are a pure function of the sample index and a seed taken from the
//! device and tag names, so a restarted driver continues plausibly and
//! tests can predict every value ([`SimState::sample`]).

use std::time::Duration;

use outpost_config::{SimDevice, SimTag};
use outpost_core::{Body, DeviceStatus, Event, Point, Status, Value};
use tokio::time::MissedTickBehavior;

use crate::{Driver, DriverContext, DriverError, DriverFuture};

#[derive(Debug)]
pub struct SimDriver {
    device: String,
    interval: Duration,
    state: SimState,
}

impl SimDriver {
    pub fn new(device: &str, cfg: &SimDevice) -> Self {
        Self {
            device: device.to_string(),
            interval: cfg.interval.get(),
            state: SimState::for_device(device, cfg),
        }
    }
}

/// The signal generators of one device.
#[derive(Debug, Clone)]
pub struct SimState {
    tags: Vec<Tag>,
    n: u64,
}

#[derive(Debug, Clone)]
struct Tag {
    name: String,
    signal: Signal,
}

#[derive(Debug, Clone)]
enum Signal {
    Counter {
        value: u64,
        step: u64,
    },
    Sine {
        offset: f64,
        amplitude: f64,
        period_samples: f64,
    },
    Walk {
        value: f64,
        step: f64,
        min: f64,
        max: f64,
        rng: u64,
    },
    Toggle {
        every: u64,
    },
}

fn seed(a: &str, b: &str) -> u64 {
    // FNV-1a: a stable seed per device and tag.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.bytes().chain([0]).chain(b.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

fn xorshift(x: &mut u64) -> f64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    // Uniform in [-1, 1).
    (*x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

impl SimState {
    /// Generators for a device, with sine periods measured in its interval.
    pub fn for_device(device: &str, cfg: &SimDevice) -> Self {
        Self::with_interval(device, &cfg.tags, Some(cfg.interval.get()))
    }

    fn with_interval(device: &str, tags: &[SimTag], interval: Option<Duration>) -> Self {
        let interval_ms = interval.map_or(1000.0, |d| d.as_millis().max(1) as f64);
        let tags = tags
            .iter()
            .map(|t| {
                let signal = if let Some(c) = &t.counter {
                    Signal::Counter {
                        value: c.start,
                        step: c.step,
                    }
                } else if let Some(s) = &t.sine {
                    Signal::Sine {
                        offset: s.offset,
                        amplitude: s.amplitude,
                        period_samples: (s.period.as_millis() as f64 / interval_ms).max(1.0),
                    }
                } else if let Some(w) = &t.random_walk {
                    Signal::Walk {
                        value: w.start.unwrap_or((w.min + w.max) / 2.0),
                        step: w.step,
                        min: w.min,
                        max: w.max,
                        rng: seed(device, &t.name),
                    }
                } else if let Some(tg) = &t.toggle {
                    Signal::Toggle {
                        every: u64::from(tg.every.max(1)),
                    }
                } else {
                    Signal::Counter { value: 0, step: 1 }
                };
                Tag {
                    name: t.name.clone(),
                    signal,
                }
            })
            .collect();
        Self { tags, n: 0 }
    }

    /// The next sample: one point per tag.
    pub fn sample(&mut self) -> Vec<Point> {
        let n = self.n;
        self.n += 1;
        self.tags
            .iter_mut()
            .map(|t| {
                let value = match &mut t.signal {
                    Signal::Counter { value, step } => {
                        let v = *value;
                        *value = value.wrapping_add(*step);
                        Value::U64(v)
                    }
                    Signal::Sine {
                        offset,
                        amplitude,
                        period_samples,
                    } => {
                        let phase = std::f64::consts::TAU * (n as f64) / *period_samples;
                        Value::F64(*offset + *amplitude * phase.sin())
                    }
                    Signal::Walk {
                        value,
                        step,
                        min,
                        max,
                        rng,
                    } => {
                        let v = *value;
                        *value = (*value + *step * xorshift(rng)).clamp(*min, *max);
                        Value::F64(v)
                    }
                    Signal::Toggle { every } => Value::Bool((n / *every) % 2 == 1),
                };
                Point::good(t.name.clone(), value)
            })
            .collect()
    }
}

impl Driver for SimDriver {
    fn device(&self) -> &str {
        &self.device
    }

    fn run(self: Box<Self>, cx: DriverContext) -> DriverFuture {
        Box::pin(async move {
            let SimDriver {
                device,
                interval,
                mut state,
            } = *self;
            let closed = || DriverError::PipelineClosed {
                device: device.clone(),
            };
            let status = |s: DeviceStatus, detail: &str| {
                Event::new(
                    device.clone(),
                    cx.clock.now(),
                    Body::Status(Status {
                        status: s,
                        detail: detail.to_string(),
                    }),
                )
            };
            cx.out
                .send(status(DeviceStatus::Online, "simulated device started"))
                .await
                .map_err(|_| closed())?;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = cx.stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let ev = Event::new(
                    device.clone(),
                    cx.clock.now(),
                    Body::Telemetry(state.sample()),
                );
                tokio::select! {
                    biased;
                    () = cx.stop.cancelled() => break,
                    sent = cx.out.send(ev) => sent.map_err(|_| closed())?,
                }
            }
            // Best effort: the pipeline drains after drivers stop.
            let _closed = cx.out.send(status(DeviceStatus::Stopped, "stopped")).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
