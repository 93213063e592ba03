//! Timestamps and the clock.
//!
//! A Raspberry-Pi-class gateway has no battery-backed clock: it boots with the
//! time it had at its last shutdown (fake-hwclock) or with 1970, and only
//! learns the real time when NTP (or GPS) answers. Every timestamp therefore
//! says whether the clock was known to be good when it was taken.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, plus what we knew about the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    pub unix_ms: i64,
    pub clock: ClockQuality,
}

impl Timestamp {
    pub fn synced(unix_ms: i64) -> Self {
        Self {
            unix_ms,
            clock: ClockQuality::Synced,
        }
    }

    pub fn unsynced(unix_ms: i64) -> Self {
        Self {
            unix_ms,
            clock: ClockQuality::Unsynced,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ClockQuality {
    /// The clock was synchronised (or trusted by configuration).
    Synced,
    /// The clock was not known to be right; the time may be far off.
    Unsynced,
}

/// Where time comes from. Rules and the log take `now` from a `Clock`, so tests
/// pass a [`FixedClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// How much the system clock is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockPolicy {
    /// The kernel says whether NTP has synchronised the clock; until it has, events
    /// are marked unsynced. The right choice for a gateway without an RTC.
    #[default]
    Ntp,
    /// The clock is always right (a gateway with a battery-backed RTC).
    Trust,
}

/// Timestamps from the kernel's real-time clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    policy: ClockPolicy,
}

/// Any time before this (2025-01-01) is certainly wrong, whatever the kernel says.
const PLAUSIBLE_FLOOR_MS: i64 = 1_735_689_600_000;

impl SystemClock {
    pub fn new(policy: ClockPolicy) -> Self {
        Self { policy }
    }

    /// The kernel's sync state, asked at most once a second (a system call
    /// per timestamp showed in profiles at 500 polls/s).
    fn kernel_synced(now_ms: i64) -> bool {
        use std::sync::atomic::{AtomicI64, Ordering};
        // When the state was last asked, shifted left by one; the low bit is
        // the answer. i64::MIN: never asked.
        static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
        let last = LAST.load(Ordering::Relaxed);
        if last != i64::MIN && now_ms.abs_diff(last >> 1) < 1000 {
            return last & 1 == 1;
        }
        let synced = kernel_clock_synchronised();
        LAST.store((now_ms << 1) | i64::from(synced), Ordering::Relaxed);
        synced
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let unix_ms = unix_ms_now();
        let good = unix_ms >= PLAUSIBLE_FLOOR_MS
            && match self.policy {
                ClockPolicy::Trust => true,
                ClockPolicy::Ntp => Self::kernel_synced(unix_ms),
            };
        Timestamp {
            unix_ms,
            clock: if good {
                ClockQuality::Synced
            } else {
                ClockQuality::Unsynced
            },
        }
    }
}

/// `d` ±20 %, so that many parts failing together do not retry in lockstep
/// (the spread comes from the clock's sub-second nanoseconds).
pub fn jitter(d: std::time::Duration) -> std::time::Duration {
    #[allow(clippy::disallowed_methods)] // the clock's own module
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0)
}

/// The current wall time in Unix milliseconds (negative before 1970).
#[allow(clippy::disallowed_methods)] // the clock's own module
pub fn unix_ms_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Asks the kernel whether its clock is synchronised (NTP's `STA_UNSYNC` bit
/// clear), as `timedatectl` does.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn kernel_clock_synchronised() -> bool {
    // SAFETY: `timex` is plain data; zeroed with `modes = 0` asks adjtimex to
    // read the state without changing anything.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state != libc::TIME_ERROR && (tx.status & libc::STA_UNSYNC) == 0
}

#[cfg(not(target_os = "linux"))]
fn kernel_clock_synchronised() -> bool {
    true
}

/// A clock that says what it is told, for tests.
#[derive(Debug, Default)]
pub struct FixedClock {
    ms: std::sync::atomic::AtomicI64,
}

impl FixedClock {
    pub fn new(unix_ms: i64) -> Self {
        Self {
            ms: std::sync::atomic::AtomicI64::new(unix_ms),
        }
    }

    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set(&self, unix_ms: i64) {
        self.ms.store(unix_ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::synced(self.ms.load(std::sync::atomic::Ordering::SeqCst))
    }
}
