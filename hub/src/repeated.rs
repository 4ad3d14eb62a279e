//! Events that a flood repeats (refused connections, failed logins, refused messages) are
//! counted, not logged one by one: the first of each minute is logged in full, the rest are
//! counted per source, and one summary line says how many there were and where most came
//! from. No flood can fill the SD card through the log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a kind of event is logged in full at most, and summed up otherwise.
const INTERVAL: Duration = Duration::from_secs(60);
/// Sources counted per interval; past this, further new sources are counted as "others".
const MAX_SOURCES: usize = 1024;

/// One kind of repeated event.
pub struct Repeated {
    what: &'static str,
    state: Mutex<Counts>,
}

struct Counts {
    since: Option<Instant>,
    suppressed: u64,
    by_source: BTreeMap<String, u64>,
}

/// What the caller should do with the event it just reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it in full.
    Log,
    /// Counted; say nothing.
    Counted,
}

impl Repeated {
    pub const fn new(what: &'static str) -> Self {
        Self { what, state: Mutex::new(Counts { since: None, suppressed: 0, by_source: BTreeMap::new() }) }
    }

    /// Reports one event from `source` at `now`. Ends the previous interval with a summary
    /// line if it suppressed anything.
    pub fn note(&self, source: impl ToString, now: Instant) -> Verdict {
        let Ok(mut counts) = self.state.lock() else { return Verdict::Counted };
        let fresh = counts.since.is_none_or(|since| now.duration_since(since) >= INTERVAL);
        if fresh {
            if counts.suppressed > 0 {
                let (top, top_count) =
                    counts.by_source.iter().max_by_key(|(_, n)| **n).map(|(s, n)| (s.clone(), *n)).unwrap_or_default();
                tracing::warn!(
                    event = self.what,
                    more = counts.suppressed,
                    sources = counts.by_source.len(),
                    top_source = %top,
                    top_count,
                    "repeated events counted, not logged one by one"
                );
            }
            counts.since = Some(now);
            counts.suppressed = 0;
            counts.by_source.clear();
            return Verdict::Log;
        }
        counts.suppressed += 1;
        let source = source.to_string();
        if counts.by_source.len() < MAX_SOURCES || counts.by_source.contains_key(&source) {
            *counts.by_source.entry(source).or_default() += 1;
        } else {
            *counts.by_source.entry("others".into()).or_default() += 1;
        }
        Verdict::Counted
    }

    /// Whether this event, from `source`, now, is to be logged in full.
    pub fn log_this(&self, source: impl ToString) -> bool {
        self.note(source, Instant::now()) == Verdict::Log
    }

    /// Events counted but not logged so far in this interval.
    pub fn suppressed(&self) -> u64 {
        self.state.lock().map(|c| c.suppressed).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_once_a_minute_and_counts_the_rest() {
        let r = Repeated::new("test");
        let t0 = Instant::now();
        assert_eq!(r.note("10.0.0.9", t0), Verdict::Log);
        for n in 0..10_000u64 {
            assert_eq!(r.note(format!("10.0.{}.{}", n % 7, n % 3), t0 + Duration::from_millis(n)), Verdict::Counted);
        }
        assert_eq!(r.suppressed(), 10_000);
        assert_eq!(r.note("10.0.0.9", t0 + INTERVAL), Verdict::Log, "the next minute starts with one in full");
        assert_eq!(r.suppressed(), 0);
    }

    #[test]
    fn sources_are_bounded() {
        let r = Repeated::new("test");
        let t0 = Instant::now();
        for n in 0..(MAX_SOURCES as u32 + 500) {
            r.note(std::net::Ipv4Addr::from(n), t0);
        }
        let counts = r.state.lock().unwrap();
        assert!(counts.by_source.len() <= MAX_SOURCES + 1);
    }
}
