//! What the hub writes to its storage, as the kernel counts it (`write_bytes` in
//! `/proc/self/io`: WAL, checkpoints, folds, every file), so the owner can see what the hub
//! costs an SD card. Sampled when asked, at most once a minute; the rate is over the last
//! hour or so (since the oldest sample kept), or since the start.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Samples closer together than this are not kept.
const EVERY: Duration = Duration::from_secs(60);
/// The rate's window: samples older than this are dropped (one is always kept).
const WINDOW: Duration = Duration::from_secs(3600);

/// Bytes written per day, and over how long that was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRate {
    pub bytes_per_day: u64,
    pub over: Duration,
}

#[derive(Debug)]
pub struct WriteMeter {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Default for WriteMeter {
    /// A meter started now (the hub's start).
    fn default() -> Self {
        let first = written().map(|bytes| (Instant::now(), bytes));
        Self { samples: Mutex::new(first.into_iter().collect()) }
    }
}

impl WriteMeter {
    /// The rate now; `None` where the kernel does not count (not Linux) or within the
    /// first seconds.
    pub fn rate(&self) -> Option<WriteRate> {
        self.rate_at(Instant::now(), written()?)
    }

    fn rate_at(&self, now: Instant, bytes: u64) -> Option<WriteRate> {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.back().is_none_or(|(at, _)| now.duration_since(*at) >= EVERY) {
            samples.push_back((now, bytes));
        }
        while samples.len() > 2 && samples.get(1).is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW) {
            samples.pop_front();
        }
        let (since, then) = *samples.front()?;
        let over = now.duration_since(since);
        if over < Duration::from_secs(1) {
            return None;
        }
        let per_day = bytes.saturating_sub(then) as f64 * 86_400.0 / over.as_secs_f64();
        Some(WriteRate { bytes_per_day: per_day as u64, over })
    }
}

/// Bytes this process has had written to storage so far.
fn written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|line| line.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_over_the_last_hour_or_since_the_start() {
        let start = Instant::now();
        let meter = WriteMeter { samples: Mutex::new([(start, 1_000)].into()) };
        let at = |minutes: u64| start + Duration::from_secs(minutes * 60);
        // 100 kB a minute is 144 MB a day.
        let bytes = |minutes: u64| 1_000 + minutes * 100_000;
        let rate = meter.rate_at(at(10), bytes(10)).unwrap();
        assert_eq!((rate.bytes_per_day, rate.over), (144_000_000, Duration::from_secs(600)));
        // Asked every 10 minutes for two hours: the rate covers about the last hour.
        for minutes in (20..=110).step_by(10) {
            meter.rate_at(at(minutes), bytes(minutes));
        }
        let rate = meter.rate_at(at(120), bytes(120)).unwrap();
        assert_eq!((rate.bytes_per_day, rate.over), (144_000_000, WINDOW));
        // Asked again within the minute: no new sample, the same window.
        assert_eq!(
            meter.rate_at(at(120) + Duration::from_secs(30), bytes(120)).unwrap().over,
            WINDOW + Duration::from_secs(30)
        );
    }
}
