//! Liveness of the daemon's stages, for the systemd watchdog.
//!
//! A stage is *busy* while it runs — inside one poll of its future, inside
//! one commit of the log writer — and *idle* while it waits for input. A
//! stage busy for longer than its limit is *stalled*: a loop that never
//! yields, a blocking call on an async thread, a commit that never returns.
//! The daemon's supervisor pings the watchdog only while no stage is
//! stalled, so a wedged stage ends in a restart by systemd.
//!
//! Invariants:
//! - Waiting is never a stall: a GPIO input that sees no edge for a week,
//!   an uplink waiting for its broker, are idle, not stuck.
//! - A stage that is dropped is forgotten: a stopped driver is not stalled.
//! - Marks nest: an inner [`Stage::busy`] inside a busy stage leaves the
//!   outer mark in place, and only the outermost clears it.
//! - Marking costs two atomic operations; nothing here allocates per poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Microseconds since the process's first use of this module; 0 means idle.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    // +1 so that a mark made at the epoch is not taken for "idle".
    (epoch.elapsed().as_micros() as u64).saturating_add(1)
}

#[derive(Debug)]
struct State {
    name: String,
    limit: Duration,
    busy_since_us: AtomicU64,
}

/// The registry of stages the watchdog looks at. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Liveness {
    stages: Arc<Mutex<Vec<Weak<State>>>>,
    limit: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT)
    }
}

/// How long a stage may stay busy when the registry is made without a limit.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(15);

/// A stage found busy for longer than its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    pub name: String,
    pub busy_for: Duration,
    pub limit: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} busy for {:.1} s (limit {} s)",
            self.name,
            self.busy_for.as_secs_f64(),
            self.limit.as_secs()
        )
    }
}

impl Liveness {
    /// A registry whose stages may each stay busy for at most `limit` at a time.
    pub fn new(limit: Duration) -> Self {
        Self {
            stages: Arc::default(),
            limit,
        }
    }

    /// The limit stages registered with [`Liveness::stage`] get.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Registers a stage with the registry's limit.
    pub fn stage(&self, name: impl Into<String>) -> Stage {
        self.stage_with_limit(name, self.limit)
    }

    /// Registers a stage that may stay busy for at most `limit` at a time.
    pub fn stage_with_limit(&self, name: impl Into<String>, limit: Duration) -> Stage {
        let state = Arc::new(State {
            name: name.into(),
            limit,
            busy_since_us: AtomicU64::new(0),
        });
        if let Ok(mut stages) = self.stages.lock() {
            stages.retain(|w| w.strong_count() > 0);
            stages.push(Arc::downgrade(&state));
        }
        Stage(state)
    }

    /// The stages busy for longer than their limit, now.
    pub fn stalled(&self) -> Vec<Stalled> {
        let now = now_us();
        let Ok(stages) = self.stages.lock() else {
            // A panic while registering: report it as a stall rather than
            // keep the watchdog fed blindly.
            return vec![Stalled {
                name: "the liveness registry".into(),
                busy_for: Duration::ZERO,
                limit: Duration::ZERO,
            }];
        };
        stages
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|s| {
                let since = s.busy_since_us.load(Ordering::Relaxed);
                if since == 0 {
                    return None;
                }
                let busy_for = Duration::from_micros(now.saturating_sub(since));
                (busy_for > s.limit).then(|| Stalled {
                    name: s.name.clone(),
                    busy_for,
                    limit: s.limit,
                })
            })
            .collect()
    }

    /// Stages registered and not dropped.
    pub fn len(&self) -> usize {
        self.stages
            .lock()
            .map(|s| s.iter().filter(|w| w.strong_count() > 0).count())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One stage's handle: mark it busy around work, or wrap its future.
#[derive(Debug, Clone)]
pub struct Stage(Arc<State>);

impl Stage {
    /// A stage no registry watches (tests, tools).
    pub fn detached(name: impl Into<String>) -> Self {
        Liveness::default().stage_with_limit(name, Duration::MAX)
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Marks the stage busy until the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        let set = self
            .0
            .busy_since_us
            .compare_exchange(0, now_us(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        Busy { stage: self, set }
    }

    /// `future`, with the stage busy during each of its polls.
    pub fn watch<F: Future>(self, future: F) -> Watched<F> {
        Watched {
            future: Box::pin(future),
            stage: self,
        }
    }
}

/// The stage is busy while this lives.
#[derive(Debug)]
pub struct Busy<'a> {
    stage: &'a Stage,
    set: bool,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.set {
            self.stage.0.busy_since_us.store(0, Ordering::Relaxed);
        }
    }
}

/// A future whose polls mark its stage busy ([`Stage::watch`]).
#[derive(Debug)]
pub struct Watched<F> {
    future: Pin<Box<F>>,
    stage: Stage,
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _busy = this.stage.busy();
        this.future.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // test code
    use super::*;

    #[test]
    fn idle_and_short_work_are_not_stalls() {
        let l = Liveness::new(Duration::from_millis(50));
        let s = l.stage("writer");
        assert!(l.stalled().is_empty());
        {
            let _b = s.busy();
            assert!(l.stalled().is_empty(), "busy within its limit");
        }
        std::thread::sleep(Duration::from_millis(80));
        assert!(l.stalled().is_empty(), "idle for longer than the limit");
    }

    #[test]
    fn busy_past_the_limit_is_a_stall_until_it_ends() {
        let l = Liveness::new(Duration::from_millis(20));
        let s = l.stage("driver boiler-1");
        let b = s.busy();
        std::thread::sleep(Duration::from_millis(40));
        let stalled = l.stalled();
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].name, "driver boiler-1");
        assert!(stalled[0].busy_for >= Duration::from_millis(40));
        assert!(stalled[0].to_string().contains("driver boiler-1 busy for"));
        drop(b);
        assert!(l.stalled().is_empty());
    }

    #[test]
    fn nested_marks_keep_the_outer_one() {
        let l = Liveness::new(Duration::from_millis(20));
        let s = l.stage("rules");
        let outer = s.busy();
        drop(s.busy());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            l.stalled().len(),
            1,
            "the inner guard must not clear the outer mark"
        );
        drop(outer);
        assert!(l.stalled().is_empty());
    }

    #[test]
    fn a_dropped_stage_is_forgotten() {
        let l = Liveness::new(Duration::from_millis(1));
        let s = l.stage("driver gone");
        let other = l.stage_with_limit("ingest", Duration::from_secs(10));
        assert_eq!(l.len(), 2);
        let b = s.busy();
        std::mem::forget(b); // stays busy forever
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(l.stalled().len(), 1);
        drop(s);
        assert!(l.stalled().is_empty());
        assert_eq!(l.len(), 1);
        drop(other);
        assert!(l.is_empty());
    }

    #[tokio::test]
    async fn a_watched_future_is_busy_only_inside_its_polls() {
        let l = Liveness::new(Duration::from_millis(20));
        let stage = l.stage("sim");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = tokio::spawn(stage.clone().watch(async move {
            rx.await.ok();
        }));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            l.stalled().is_empty(),
            "waiting inside a watched future is idle"
        );
        tx.send(()).ok();
        waiting.await.ok();
        // A poll that blocks its thread is a stall while it lasts.
        let blocker = std::thread::spawn({
            let stage = stage.clone();
            move || {
                futures_block_on(stage.watch(async {
                    std::thread::sleep(Duration::from_millis(60));
                }))
            }
        });
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(l.stalled().len(), 1);
        blocker.join().ok();
        assert!(l.stalled().is_empty());
    }

    /// Polls a future that never returns Pending to completion.
    fn futures_block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
