//! Spawning tasks: the one door every part of Outpost spawns through.
//!
//! Invariants:
//! - Every task of the daemon is spawned by [`spawn`] (clippy's
//!   `disallowed-methods` refuses `tokio::spawn` elsewhere), so [`live`] is
//!   the number of tasks running or waiting to run: a count that grows with
//!   time is a leak, and the soak test watches it.
//! - The count falls when the task's future is dropped: finished, aborted,
//!   or dropped with its runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Decrements [`LIVE`] when the task's future goes away, however it ends.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `tokio::spawn`, counted.
#[allow(clippy::disallowed_methods)] // the one place that spawns
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    LIVE.fetch_add(1, Ordering::Relaxed);
    let counted = Counted;
    tokio::spawn(async move {
        let _counted = counted;
        future.await
    })
}

/// Tasks spawned through [`spawn`] that have not ended.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[cfg(test)]
#[allow(clippy::let_underscore_must_use)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_count_follows_tasks_that_end_or_are_aborted() {
        let before = live();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = spawn(async move {
            let _ = rx.await;
        });
        let forever = spawn(std::future::pending::<()>());
        assert_eq!(live(), before + 2);
        let _ = tx.send(());
        let _ = waiting.await;
        assert_eq!(live(), before + 1);
        forever.abort();
        let _ = forever.await;
        assert_eq!(live(), before);
    }
}
