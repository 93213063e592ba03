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

/// What was known about the clock when a timestamp was taken.
///
/// Variants are only ever added at the end: the log stores them by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ClockQuality {
    /// The clock was synchronised (or trusted by configuration).
    Synced,
    /// The clock was not known to be right; the time may be far off, and
    /// nothing is known to correct it with (events of older releases).
    Unsynced,
    /// The clock was not known to be right; `boot_ms` is the boot-relative
    /// time (`CLOCK_BOOTTIME`) at the stamp, so once the clock is
    /// synchronised in the same boot the true time can be worked out.
    SinceBoot { boot_ms: i64 },
    /// Taken unsynchronised and re-stamped with the true time once the clock
    /// was synchronised (from the boot-relative time, so exact to the
    /// kernel's tick, not to NTP's first answer).
    Corrected,
}

impl ClockQuality {
    /// The time can be believed: synchronised, or corrected afterwards.
    pub fn is_true_time(self) -> bool {
        matches!(self, ClockQuality::Synced | ClockQuality::Corrected)
    }

    /// How uplinks, exports and the page name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockQuality::Synced => "synced",
            ClockQuality::Unsynced | ClockQuality::SinceBoot { .. } => "unsynced",
            ClockQuality::Corrected => "corrected",
        }
    }
}

/// Where time comes from. Rules and the log take `now` from a `Clock`, so tests
/// pass a [`FixedClock`] or a [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;

    /// Milliseconds since this boot began, counting suspend
    /// (`CLOCK_BOOTTIME`): unaffected by the wall clock being set.
    fn boot_ms(&self) -> i64 {
        boot_ms_now()
    }

    /// Identifies this boot (a hash of the kernel's `boot_id`): a
    /// boot-relative time only means something within its boot.
    fn boot_id(&self) -> i64 {
        boot_id_now()
    }
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
                ClockQuality::SinceBoot {
                    boot_ms: boot_ms_now(),
                }
            },
        }
    }
}

/// `CLOCK_BOOTTIME` in milliseconds.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[allow(clippy::useless_conversion)] // time_t and c_long are 32-bit on armv7
pub fn boot_ms_now() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on
    // every kernel since 2.6.39.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return process_ms();
    }
    i64::from(ts.tv_sec)
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.tv_nsec) / 1_000_000)
}

#[cfg(not(target_os = "linux"))]
pub fn boot_ms_now() -> i64 {
    process_ms()
}

/// Milliseconds since the process began: the fallback boot clock.
fn process_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// A hash of `/proc/sys/kernel/random/boot_id` (FNV-1a, 63 bits so that it
/// fits SQLite's integers as a positive number); without one, the process's
/// own id, so that a boot-relative time is never matched across boots by
/// mistake.
pub fn boot_id_now() -> i64 {
    static ID: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_else(|_| format!("pid-{}-{}", std::process::id(), unix_ms_now()));
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.trim().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        i64::try_from(h >> 1).unwrap_or(0)
    })
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
    /// Its boot clock: moved by [`FixedClock::advance`] with the wall
    /// clock, and not by real time or [`FixedClock::set`] (a set is a step
    /// of the wall clock), so that the log sees no step where there is none.
    boot: std::sync::atomic::AtomicI64,
}

impl FixedClock {
    pub fn new(unix_ms: i64) -> Self {
        Self {
            ms: std::sync::atomic::AtomicI64::new(unix_ms),
            boot: std::sync::atomic::AtomicI64::new(60_000),
        }
    }

    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
        self.boot.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set(&self, unix_ms: i64) {
        self.ms.store(unix_ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::synced(self.ms.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn boot_ms(&self) -> i64 {
        self.boot.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A clock for tests of clock trouble: wall time, boot time, boot id and
/// whether the clock is synchronised are all set by hand.
#[derive(Debug)]
pub struct ManualClock {
    state: std::sync::Mutex<ManualState>,
}

#[derive(Debug, Clone, Copy)]
struct ManualState {
    unix_ms: i64,
    boot_ms: i64,
    boot_id: i64,
    synced: bool,
}

impl ManualClock {
    /// A boot that began `boot_ms` ago, with the wall clock at `unix_ms`
    /// (1970 for a gateway without an RTC) and not synchronised.
    pub fn unsynced(unix_ms: i64, boot_ms: i64) -> Self {
        Self {
            state: std::sync::Mutex::new(ManualState {
                unix_ms,
                boot_ms,
                boot_id: 1,
                synced: false,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ManualState) -> T) -> T {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// Time passes: wall and boot clocks alike.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.with(|s| {
            s.unix_ms = s.unix_ms.saturating_add(ms);
            s.boot_ms = s.boot_ms.saturating_add(ms);
        });
    }

    /// The wall clock is set (NTP's step, or a person); the boot clock is not.
    pub fn set_unix(&self, unix_ms: i64, synced: bool) {
        self.with(|s| {
            s.unix_ms = unix_ms;
            s.synced = synced;
        });
    }

    /// A reboot: a new boot id, the boot clock from `boot_ms`, the wall clock
    /// at `unix_ms`, unsynchronised.
    pub fn reboot(&self, unix_ms: i64, boot_ms: i64) {
        self.with(|s| {
            s.boot_id += 1;
            s.unix_ms = unix_ms;
            s.boot_ms = boot_ms;
            s.synced = false;
        });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.with(|s| Timestamp {
            unix_ms: s.unix_ms,
            clock: if s.synced {
                ClockQuality::Synced
            } else {
                ClockQuality::SinceBoot { boot_ms: s.boot_ms }
            },
        })
    }

    fn boot_ms(&self) -> i64 {
        self.with(|s| s.boot_ms)
    }

    fn boot_id(&self) -> i64 {
        self.with(|s| s.boot_id)
    }
}
