//! systemd integration: the `sd_notify` protocol (readiness, status,
//! reloading, stopping, watchdog pings) and the choice of the journal as
//! the log's destination.
//!
//! Invariants:
//! - Without `NOTIFY_SOCKET` nothing is sent and nothing changes: the same
//!   binary runs in a terminal, under another supervisor or in a test.
//! - `READY=1` is sent once the log is open, the configuration valid and the
//!   drivers started (the caller's order), never before.
//! - `WATCHDOG=1` is sent every half watchdog period **only while no stage is
//!   stalled** ([`outpost_core::liveness`]); a stalled stage stops the pings,
//!   says which stage in `STATUS=` and the log, and systemd restarts the
//!   daemon. The pings resume if the stage recovers first.
//! - A failed send is logged at debug level and never stops the daemon.

use std::sync::Arc;
use std::time::Duration;

use outpost_core::liveness::Liveness;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// How often `STATUS=` is refreshed while nothing else changes.
const STATUS_EVERY: Duration = Duration::from_secs(10);

type Sink = Arc<dyn Fn(&[NotifyState<'_>]) + Send + Sync>;

/// The service manager, as far as this process can tell.
#[derive(Clone)]
pub struct Systemd {
    sink: Option<Sink>,
    watchdog: Option<Duration>,
}

impl std::fmt::Debug for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Systemd")
            .field("notify", &self.sink.is_some())
            .field("watchdog", &self.watchdog)
            .finish()
    }
}

impl Systemd {
    /// From the environment systemd sets (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`). The variables stay set: a restart in place (exec,
    /// same process id) notifies and pings as the same service.
    pub fn from_env() -> Self {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let sink: Option<Sink> = notify.then(|| {
            Arc::new(|states: &[NotifyState<'_>]| {
                if let Err(e) = sd_notify::notify(states) {
                    tracing::debug!(error = %e, "Cannot notify systemd.");
                }
            }) as Sink
        });
        let watchdog = if notify {
            sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
        } else {
            None
        };
        Self { sink, watchdog }
    }

    #[cfg(test)]
    fn with_sink(sink: Sink, watchdog: Option<Duration>) -> Self {
        Self {
            sink: Some(sink),
            watchdog,
        }
    }

    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// The liveness registry the stages register with: a stage may stay
    /// busy for half the watchdog period (or the default without one), so
    /// that a stall stops the pings well before systemd gives up on them.
    pub fn liveness(&self) -> Liveness {
        match self.watchdog {
            Some(w) => Liveness::new(w / 2),
            None => Liveness::default(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Some(sink) = &self.sink {
            sink(states);
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Before a restart in place: the new process sends `READY=1` again.
    pub fn reloading(&self, status: &str) {
        self.send(&[NotifyState::Reloading, NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("Stopping: draining the pipeline."),
        ]);
    }

    /// Pings the watchdog while no stage is stalled and refreshes `STATUS=`
    /// with `status()` until `stop`. Without a notify socket it returns at
    /// once.
    pub async fn supervise<S>(self, liveness: Liveness, status: S, stop: CancellationToken)
    where
        S: Fn() -> String + Send,
    {
        if self.sink.is_none() {
            return;
        }
        let period = self
            .watchdog
            .map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = tokio::time::Instant::now();
        let mut stalled_before = false;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let stalled = liveness.stalled();
            if stalled.is_empty() {
                if stalled_before {
                    tracing::warn!("Every stage makes progress again; the watchdog is fed again.");
                    stalled_before = false;
                    last_status = tokio::time::Instant::now();
                    self.status(&status());
                }
                if self.watchdog.is_some() {
                    self.send(&[NotifyState::Watchdog]);
                }
                if last_status.elapsed() >= STATUS_EVERY {
                    last_status = tokio::time::Instant::now();
                    self.status(&status());
                }
            } else {
                let which = stalled
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                if !stalled_before {
                    tracing::error!(
                        stalled = %which,
                        "A stage of the pipeline is stuck; the watchdog is no longer fed, so systemd restarts outpostd if it stays stuck."
                    );
                    stalled_before = true;
                }
                self.status(&format!("Stalled: {which}"));
            }
        }
    }
}

/// The `STATUS=` line: devices online, the largest backlog, the last error.
pub fn status_line(
    online: usize,
    devices: usize,
    backlog: Option<(&str, u64)>,
    last_error: Option<&str>,
) -> String {
    let mut s = format!("{online}/{devices} devices online");
    match backlog {
        Some((uplink, n)) => s.push_str(&format!(", backlog {n} ({uplink})")),
        None => s.push_str(", no uplink"),
    }
    if let Some(e) = last_error {
        // One line, bounded: systemctl status shows it in full.
        let e: String = e.chars().filter(|c| !c.is_control()).take(160).collect();
        s.push_str(&format!(", last error: {e}"));
    }
    s
}

/// Whether stdout or stderr is connected to the journal
/// (`JOURNAL_STREAM=<dev>:<inode>` names the stream systemd connected).
pub fn logging_to_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(spec) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = spec.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let same = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
    };
    same(std::io::stdout().as_fd()) || same(std::io::stderr().as_fd())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // test code
    use std::sync::Mutex;

    use super::*;

    fn recorder() -> (Sink, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s = seen.clone();
        let sink: Sink = Arc::new(move |states: &[NotifyState<'_>]| {
            if let Ok(mut v) = s.lock() {
                v.extend(states.iter().map(ToString::to_string));
            }
        });
        (sink, seen)
    }

    fn count(seen: &Arc<Mutex<Vec<String>>>, what: &str) -> usize {
        seen.lock()
            .map(|v| v.iter().filter(|m| m.as_str() == what).count())
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn pings_every_half_period_and_stop_while_a_stage_is_stalled() {
        let (sink, seen) = recorder();
        let sd = Systemd::with_sink(sink, Some(Duration::from_secs(2)));
        let liveness = sd.liveness();
        assert_eq!(liveness.limit(), Duration::from_secs(1));
        let stage = liveness.stage("event log writer");
        let stop = CancellationToken::new();
        let task = tokio::spawn(sd.clone().supervise(
            liveness.clone(),
            || "1/1 devices online".to_string(),
            stop.clone(),
        ));
        // Ticks at 0, 1, 2, 3, 4 s of paused time.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(count(&seen, "WATCHDOG=1"), 5);

        // Liveness measures real time: hold the stage busy past its limit.
        let busy = stage.busy();
        std::thread::sleep(Duration::from_millis(1100));
        let before = count(&seen, "WATCHDOG=1");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(count(&seen, "WATCHDOG=1"), before, "no ping while stalled");
        let stalled_status = seen
            .lock()
            .map(|v| {
                v.iter()
                    .any(|m| m.starts_with("STATUS=Stalled: event log writer busy for"))
            })
            .unwrap_or(false);
        assert!(stalled_status, "the stalled stage is named in STATUS=");

        drop(busy);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(count(&seen, "WATCHDOG=1") >= before + 2, "pings resume");
        stop.cancel();
        task.await.ok();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watchdog_only_the_status_is_sent() {
        let (sink, seen) = recorder();
        let sd = Systemd::with_sink(sink, None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(sd.clone().supervise(
            sd.liveness(),
            || "0/2 devices online".to_string(),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(25)).await;
        stop.cancel();
        task.await.ok();
        assert_eq!(count(&seen, "WATCHDOG=1"), 0);
        assert!(count(&seen, "STATUS=0/2 devices online") >= 2);
    }

    #[test]
    fn ready_and_stopping_messages() {
        let (sink, seen) = recorder();
        let sd = Systemd::with_sink(sink, None);
        sd.ready("2/2 devices online");
        sd.stopping();
        let v = seen.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(
            v,
            [
                "READY=1",
                "STATUS=2/2 devices online",
                "STOPPING=1",
                "STATUS=Stopping: draining the pipeline."
            ]
        );
    }

    #[test]
    fn status_line_says_what_a_technician_asks_first() {
        assert_eq!(
            status_line(
                3,
                4,
                Some(("nats", 120)),
                Some("connection refused\n(os error 111)")
            ),
            "3/4 devices online, backlog 120 (nats), last error: connection refused(os error 111)"
        );
        assert_eq!(
            status_line(0, 0, None, None),
            "0/0 devices online, no uplink"
        );
    }
}
