//! The one place that reads the wall clock. Logic takes `now` as a parameter; the parts
//! that wait for a moment (the automation runtime, the consent sweep) and the API read time
//! through the [`Clock`] handed to `hub::run`, so that tests move time forward instead of
//! sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// The last moment a time given from outside may name: 9999-12-31T23:59:59.999Z. Every
/// time a request or a device gives is checked to lie in `[0, LATEST_MS]`, so sums and
/// differences of times (and of times and bounded durations) cannot overflow.
pub const LATEST_MS: i64 = 253_402_300_799_999;

/// Whether `ms` is a time the hub accepts from outside.
pub fn valid_ms(ms: i64) -> bool {
    (0..=LATEST_MS).contains(&ms)
}

/// Milliseconds since the Unix epoch, from the system clock: only through a [`Clock`].
#[allow(clippy::disallowed_methods)]
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The hub's time: the system clock, plus (only in tests) a jump forward.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    skip: Option<Arc<Skip>>,
}

#[derive(Debug)]
struct Skip {
    ahead_ms: AtomicI64,
    moved: watch::Sender<()>,
}

impl Clock {
    /// The system clock, as the hub runs in a home.
    pub fn system() -> Self {
        Self { skip: None }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        now_ms() + self.skip.as_ref().map_or(0, |s| s.ahead_ms.load(Ordering::Acquire))
    }

    /// Waits until this clock reads `at` (ms) or later. A test clock that jumps past `at`
    /// wakes the waiter at once.
    pub async fn sleep_until(&self, at: i64) {
        let nap = |left: i64| tokio::time::sleep(Duration::from_millis(left.max(0) as u64));
        let Some(skip) = &self.skip else {
            return nap(at - self.now_ms()).await;
        };
        // `skip` holds the sender, so `changed` never fails while this waits.
        let mut moved = skip.moved.subscribe();
        loop {
            let left = at - self.now_ms();
            if left <= 0 {
                return;
            }
            tokio::select! {
                () = nap(left) => {}
                _ = moved.changed() => {}
            }
        }
    }
}

/// A clock that tests move forward: it runs with the system clock and jumps ahead on
/// [`TestClock::advance`], waking whatever waits for a moment that has now passed.
#[derive(Clone, Debug)]
pub struct TestClock {
    skip: Arc<Skip>,
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClock {
    pub fn new() -> Self {
        Self { skip: Arc::new(Skip { ahead_ms: AtomicI64::new(0), moved: watch::Sender::new(()) }) }
    }

    /// The clock to hand to the hub.
    pub fn clock(&self) -> Clock {
        Clock { skip: Some(self.skip.clone()) }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock().now_ms()
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.skip.ahead_ms.fetch_add(by.as_millis() as i64, Ordering::AcqRel);
        self.skip.moved.send_replace(());
    }

    /// Moves time forward to `at` (ms), if it is not there yet.
    pub fn advance_to(&self, at: i64) {
        let left = at - self.now_ms();
        if left > 0 {
            self.advance(Duration::from_millis(left as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_jump_wakes_a_sleeper_at_once() {
        let test = TestClock::new();
        let clock = test.clock();
        let due = clock.now_ms() + 3_600_000;
        let sleeper = tokio::spawn(async move { clock.sleep_until(due).await });
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        test.advance(Duration::from_secs(3600));
        let woke = tokio::time::timeout(Duration::from_secs(5), sleeper).await;
        assert!(woke.is_ok_and(|r| r.is_ok()), "the sleeper did not wake after the jump");
        assert!(test.now_ms() >= due);
    }

    #[tokio::test]
    async fn a_jump_short_of_the_moment_keeps_sleeping() {
        let test = TestClock::new();
        let clock = test.clock();
        let due = clock.now_ms() + 3_600_000;
        let sleeper = tokio::spawn(async move { clock.sleep_until(due).await });
        test.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sleeper.is_finished());
        sleeper.abort();
    }

    #[test]
    fn the_system_clock_is_not_moved() {
        let clock = Clock::system();
        let (a, b) = (now_ms(), clock.now_ms());
        assert!((b - a).abs() < 1000);
    }
}
