//! Summaries of a series over time: the one bucketing rule behind downsampled history (the
//! charts) and aggregate shares (what a recipient with an hourly or daily grant reads).
//!
//! Buckets are `[start, start + width)` aligned to the Unix epoch, so hourly and daily
//! buckets are UTC hours and days whoever asks and whatever range they ask for. Numbers
//! give min, mean and max; on/off values give the share of samples that were on and the
//! last one; text gives the last one. Empty buckets are left out.

use crate::reading::Value;

pub use hearth_model::Bucket;

/// Summarises time-sorted `readings` in buckets `width` ms wide (at least 1).
pub fn buckets(readings: &[(i64, Value)], width: i64) -> Vec<Bucket> {
    let mut out = Bucketer::new(width);
    for (ts, value) in readings {
        out.push(*ts, value);
    }
    out.finish()
}

/// Summarises readings handed one at a time, in time order, in buckets of one width: only
/// the buckets are held, however many readings go through.
pub struct Bucketer {
    width: i64,
    out: Vec<Bucket>,
    sum: f64,
    numbers: usize,
    flags: usize,
    ons: usize,
}

impl Bucketer {
    /// Buckets `width` ms wide (at least 1), aligned to the epoch.
    pub fn new(width: i64) -> Self {
        Self { width: width.max(1), out: Vec::new(), sum: 0.0, numbers: 0, flags: 0, ons: 0 }
    }

    /// Adds the reading `value` made at `ts` (no earlier than the one before).
    pub fn push(&mut self, ts: i64, value: &Value) {
        let start = ts - ts.rem_euclid(self.width);
        if self.out.last().is_none_or(|b| b.start != start) {
            self.out.push(Bucket { start, count: 0, min: None, avg: None, max: None, on: None, last: None });
            (self.sum, self.numbers, self.flags, self.ons) = (0.0, 0, 0, 0);
        }
        let Some(bucket) = self.out.last_mut() else { return };
        bucket.count += 1;
        match value {
            Value::Number(x) => {
                self.numbers += 1;
                self.sum += x;
                bucket.min = Some(bucket.min.map_or(*x, |m| m.min(*x)));
                bucket.max = Some(bucket.max.map_or(*x, |m| m.max(*x)));
                bucket.avg = Some(self.sum / self.numbers as f64);
            }
            Value::Bool(b) => {
                self.flags += 1;
                self.ons += usize::from(*b);
                bucket.on = Some(self.ons as f64 / self.flags as f64);
                bucket.last = Some(value.clone());
            }
            Value::Text(_) => bucket.last = Some(value.clone()),
        }
    }

    pub fn finish(self) -> Vec<Bucket> {
        self.out
    }
}

/// The bucket width that splits `[from, to)` into at most about `n` buckets: the span over
/// `n`, rounded up to a whole second (buckets still align to the epoch, so the first and
/// last may be partial and there may be `n + 1`).
pub fn width_for(from: i64, to: i64, n: usize) -> i64 {
    let span = (to - from).max(1) as i128;
    let n = n.max(1) as i128;
    let width = ((span + n - 1) / n).max(1);
    let second = 1000;
    (((width + second - 1) / second) * second).min(i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn n(t: i64, x: f64) -> (i64, Value) {
        (t, Value::Number(x))
    }

    #[test]
    fn buckets_align_to_utc_hours_and_days() {
        let readings = vec![n(H + 1, 1.0), n(H + 2, 3.0), n(2 * H, 10.0), n(3 * H - 1, 20.0), n(5 * H, 7.0)];
        let hourly = buckets(&readings, H);
        assert_eq!(
            hourly.iter().map(|b| b.start).collect::<Vec<_>>(),
            [H, 2 * H, 5 * H],
            "the empty hours are left out"
        );
        assert_eq!(
            (hourly[0].count, hourly[0].min, hourly[0].avg, hourly[0].max),
            (2, Some(1.0), Some(2.0), Some(3.0))
        );
        assert_eq!(hourly[1].avg, Some(15.0));
        let daily = buckets(&readings, 24 * H);
        assert_eq!((daily.len(), daily[0].start, daily[0].count, daily[0].avg), (1, 0, 5, Some(41.0 / 5.0)));
        // Whatever range was asked for, a reading falls in the same bucket.
        let later = buckets(&readings[2..], H);
        assert_eq!(later[0].start, 2 * H);
    }

    #[test]
    fn on_off_gives_the_share_that_was_on_and_the_last() {
        let flags = [(0, true), (1, false), (2, true), (3, true)].map(|(t, b)| (t, Value::Bool(b)));
        let b = &buckets(&flags, H)[0];
        assert_eq!((b.count, b.on, b.last.clone()), (4, Some(0.75), Some(Value::Bool(true))));
        assert_eq!((b.min, b.avg, b.max), (None, None, None), "on/off is not averaged as a number");
    }

    #[test]
    fn text_gives_the_last_and_mixed_buckets_keep_each_kind() {
        let mixed = vec![(0, Value::Text("open".into())), n(1, 4.0), (2, Value::Text("shut".into())), n(3, 6.0)];
        let b = &buckets(&mixed, H)[0];
        assert_eq!((b.count, b.avg, b.on), (4, Some(5.0), None));
        assert_eq!(b.last, Some(Value::Text("shut".into())));
    }

    #[test]
    fn times_before_1970_fall_in_their_own_bucket() {
        let b = buckets(&[n(-1, 1.0), n(0, 2.0)], H);
        assert_eq!(b.iter().map(|b| b.start).collect::<Vec<_>>(), [-H, 0]);
    }

    #[test]
    fn a_range_splits_into_whole_seconds() {
        assert_eq!(width_for(0, 24 * H, 24), H);
        assert_eq!(width_for(0, 10_000, 4), 3000, "2.5 s rounds up to 3 s");
        assert_eq!(width_for(5, 5, 10), 1000);
        assert_eq!(width_for(0, 10, 0), 1000);
    }
}
