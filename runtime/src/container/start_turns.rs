//! Container starts take turns. Under a burst (kubelet's pod workers starting many pods at once)
//! the processes of every start in flight share the node's CPUs, so each start takes as long as
//! all of them together and the slowest ones far longer than the median. Starts that run at most
//! `max_concurrent_starts` at a time, in the order they arrived, finish in that order instead,
//! which narrows the spread for the same throughput. A start keeps its turn until it finishes
//! or for [`TURN`], whichever is first: one that waits on something slow (a runtime hook, a
//! stuck shim) holds the others back by at most that long.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Semaphore;

/// The longest a start keeps its turn. A container start takes a few milliseconds on its own.
pub const TURN: Duration = Duration::from_millis(100);

pub struct StartTurns {
    /// None: no limit (`max_concurrent_starts = 0`).
    turns: Option<Semaphore>,
}

impl StartTurns {
    /// `limit` starts at a time; 0 for no limit.
    pub fn new(limit: usize) -> StartTurns {
        StartTurns {
            turns: (limit > 0).then(|| Semaphore::new(limit)),
        }
    }

    /// Runs `start` once a turn is free (turns are given in the order they were asked for:
    /// tokio's semaphore is fair), and gives the turn back when `start` finishes or [`TURN`]
    /// has passed.
    pub async fn take<F: Future>(&self, start: F) -> F::Output {
        let Some(turns) = &self.turns else {
            return start.await;
        };
        // The semaphore is never closed, so acquiring cannot fail; were it to, the start
        // runs without a turn rather than not at all.
        let turn = turns.acquire().await.ok();
        tokio::pin!(start);
        tokio::select! {
            done = &mut start => return done,
            _ = tokio::time::sleep(TURN) => {}
        }
        drop(turn);
        start.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// At most `limit` bodies run at once, and all of them run.
    #[tokio::test(start_paused = true)]
    async fn at_most_limit_at_once() {
        let turns = Arc::new(StartTurns::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        for _ in 0..6 {
            let (turns, running, most) = (turns.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                turns
                    .take(async {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        1
                    })
                    .await
            }));
        }
        let mut done = 0;
        for t in tasks {
            done += t.await.unwrap();
        }
        assert_eq!(done, 6);
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    /// A start slower than TURN lets the next one go after TURN, not after it finishes.
    #[tokio::test(start_paused = true)]
    async fn a_slow_start_gives_its_turn_up() {
        let turns = Arc::new(StartTurns::new(1));
        let slow = {
            let turns = turns.clone();
            tokio::spawn(async move {
                turns
                    .take(tokio::time::sleep(Duration::from_secs(60)))
                    .await
            })
        };
        tokio::task::yield_now().await;
        let began = tokio::time::Instant::now();
        turns.take(async {}).await;
        let waited = began.elapsed();
        assert!(waited >= TURN && waited < TURN * 2, "{waited:?}");
        assert!(!slow.is_finished());
        slow.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_never_waits() {
        let turns = StartTurns::new(0);
        let held = turns.take(tokio::time::sleep(Duration::from_secs(60)));
        tokio::pin!(held);
        tokio::select! { _ = &mut held => {}, _ = tokio::task::yield_now() => {} }
        let began = tokio::time::Instant::now();
        turns.take(async {}).await;
        assert_eq!(began.elapsed(), Duration::ZERO);
    }
}
