//! What the owner chose not to record: a device's values, or some of them, that are heard
//! live (automations, screens, the latest value on its card) and never written, as Home
//! Assistant's recorder exclusions do for chatty values such as link quality. A reading
//! that is not recorded is acknowledged at once: there is nothing to wait for.
//!
//! The latest value of each such series is kept in memory only, with the data key that
//! says whose it is, so the dashboard can show it to those who may see it; a restart
//! forgets it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use crate::reading::Reading;
use crate::store::LatestValue;
use crate::store::readings::Keys;

use super::pipeline::Committed;

/// Most series whose latest value is held in memory, and most of one device: beyond these,
/// new ones are not held (a device inventing metric names can neither grow the hub's
/// memory nor crowd out the others' values).
const MAX_HELD: usize = 10_000;
const MAX_HELD_PER_DEVICE: usize = 256;

/// What is not recorded of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    /// None of its values.
    pub all: bool,
    /// These of its values.
    pub values: BTreeSet<String>,
}

impl Choice {
    fn covers(&self, metric: &str) -> bool {
        self.all || self.values.contains(metric)
    }
}

/// The choices, and the latest value of each series not recorded. Locks are taken in
/// this order: `saving`, `chosen`, `destroyed`, `latest`.
#[derive(Debug, Default)]
pub struct Unrecorded {
    /// Held while a choice is saved and then set here, so two saves of one device set
    /// what the store ends with, in the store's order.
    saving: tokio::sync::Mutex<()>,
    chosen: RwLock<HashMap<String, Choice>>,
    /// (device, metric) -> its latest reading and the key of whoever owns it; in order, so
    /// one device's are found together.
    latest: Mutex<BTreeMap<(String, String), Committed>>,
    /// Keys destroyed (shredded tenancies): nothing is held under them again, even from a
    /// reading that raced the shred with the ownership from before it.
    destroyed: Mutex<HashSet<i64>>,
}

impl Unrecorded {
    /// To be held from saving a choice in the store until [`Unrecorded::choose`] is told.
    pub async fn saving(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.saving.lock().await
    }

    /// Sets what is not recorded of `device` (nothing: forgets it).
    pub fn choose(&self, device: &str, choice: Choice) {
        let mut chosen = self.chosen.write().unwrap_or_else(PoisonError::into_inner);
        // Values recorded again are no longer held in memory: the store has them from now.
        self.held().retain(|(d, metric), _| d != device || choice.covers(metric));
        match choice == Choice::default() {
            true => chosen.remove(device),
            false => chosen.insert(device.to_owned(), choice),
        };
    }

    /// Forgets a device that was removed: its choices and its values held.
    pub fn forget_device(&self, device: &str) {
        self.chosen.write().unwrap_or_else(PoisonError::into_inner).remove(device);
        self.held().retain(|(d, _), _| d != device);
    }

    /// Forgets the values held under a key that was destroyed (a shredded tenancy's), and
    /// holds none under it again.
    pub fn forget_key(&self, key: i64) {
        self.destroyed.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
        self.held().retain(|_, held| held.key != key);
    }

    /// Keeps of `readings` those to be recorded; holds the newest of the others (those
    /// someone owns: `owned` gives their key) as their series' latest value.
    pub fn split(&self, readings: Vec<Reading>, owned: impl Fn(&Reading) -> Option<i64>) -> Vec<Reading> {
        let chosen = self.chosen.read().unwrap_or_else(PoisonError::into_inner);
        if chosen.is_empty() {
            return readings;
        }
        let (kept, live): (Vec<Reading>, Vec<Reading>) =
            readings.into_iter().partition(|r| !chosen.get(&r.device).is_some_and(|choice| choice.covers(&r.metric)));
        // Still under `chosen`: a choice changed meanwhile (recorded again) cannot leave a
        // value held that the store now has.
        if !live.is_empty() {
            let destroyed = self.destroyed.lock().unwrap_or_else(PoisonError::into_inner);
            let mut held = self.held();
            for reading in live {
                let Some(key) = owned(&reading).filter(|key| !destroyed.contains(key)) else { continue };
                let series = (reading.device.clone(), reading.metric.clone());
                match held.get(&series) {
                    Some(old) if old.reading.ts > reading.ts => {}
                    None if held.len() >= MAX_HELD
                        || of_device(&held, &reading.device).nth(MAX_HELD_PER_DEVICE - 1).is_some() => {}
                    _ => {
                        held.insert(series, Committed { reading, key });
                    }
                }
            }
        }
        kept
    }

    /// The latest values held for `device` (or every device), with their keys.
    pub fn latest(&self, device: Option<&str>) -> Vec<Committed> {
        let held = self.held();
        match device {
            Some(device) => of_device(&held, device).cloned().collect(),
            None => held.values().cloned().collect(),
        }
    }

    /// Adds to `latest` (the store's latest values of `device`, or of every device) the
    /// values held here under `keys`, where they are newer; keeps it ordered by device and
    /// metric.
    pub fn merge_into(&self, latest: &mut Vec<LatestValue>, device: Option<&str>, keys: Keys<'_>) {
        let held = self.latest(device);
        if held.is_empty() {
            return;
        }
        for Committed { reading, .. } in held.into_iter().filter(|c| keys.allows(c.key)) {
            match latest.iter_mut().find(|l| l.device == reading.device && l.metric == reading.metric) {
                Some(stored) if stored.ts >= reading.ts => {}
                Some(stored) => (stored.ts, stored.value) = (reading.ts, reading.value),
                None => latest.push(LatestValue {
                    device: reading.device,
                    metric: reading.metric,
                    unit: reading.unit,
                    ts: reading.ts,
                    value: reading.value,
                    every: None,
                }),
            }
        }
        latest.sort_by(|a, b| (&a.device, &a.metric).cmp(&(&b.device, &b.metric)));
    }

    fn held(&self) -> MutexGuard<'_, BTreeMap<(String, String), Committed>> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The values held for `device`, found by their place in the order.
fn of_device<'a>(
    held: &'a BTreeMap<(String, String), Committed>,
    device: &'a str,
) -> impl Iterator<Item = &'a Committed> + 'a {
    held.range((device.to_owned(), String::new())..).take_while(move |((d, _), _)| d == device).map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Value;

    fn reading(device: &str, metric: &str, ts: i64) -> Reading {
        Reading { device: device.into(), metric: metric.into(), ts, value: Value::Number(ts as f64), unit: None }
    }

    #[test]
    fn values_not_recorded_are_held_as_latest_and_left_out() {
        let u = Unrecorded::default();
        let batch = || vec![reading("plug", "power", 2), reading("plug", "linkquality", 2), reading("tv", "on", 2)];
        // Nothing chosen: everything is recorded.
        assert_eq!(u.split(batch(), |_| Some(1)).len(), 3);
        u.choose("plug", Choice { all: false, values: ["linkquality".to_owned()].into() });
        u.choose("tv", Choice { all: true, values: BTreeSet::new() });
        let kept = u.split(batch(), |_| Some(1));
        assert_eq!(kept.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>(), ["power"]);
        // An older reading does not replace a newer one; nobody's reading is not held.
        u.split(vec![reading("tv", "on", 1), reading("plug", "linkquality", 3)], |r| (r.device == "tv").then_some(1));
        let mut latest: Vec<(String, i64)> =
            u.latest(None).into_iter().map(|c| (c.reading.metric, c.reading.ts)).collect();
        latest.sort();
        assert_eq!(latest, [("linkquality".to_owned(), 2), ("on".to_owned(), 2)]);
        assert_eq!(u.latest(Some("tv")).len(), 1);
        // Recorded again: no longer held. A destroyed key takes its values with it.
        u.choose("plug", Choice::default());
        assert!(u.latest(Some("plug")).is_empty());
        assert_eq!(u.split(batch(), |_| Some(1)).len(), 2);
        u.forget_key(1);
        assert!(u.latest(None).is_empty());
        // A reading that raced the shred, with the ownership from before it, is not held.
        u.choose("plug", Choice { all: true, values: BTreeSet::new() });
        u.split(batch(), |_| Some(1));
        assert!(u.latest(None).is_empty());
    }

    #[test]
    fn a_device_inventing_values_cannot_crowd_out_the_others() {
        let u = Unrecorded::default();
        u.choose("noisy", Choice { all: true, values: BTreeSet::new() });
        u.choose("plug", Choice { all: true, values: BTreeSet::new() });
        let invented: Vec<Reading> = (0..1_000).map(|i| reading("noisy", &format!("m{i}"), 1)).collect();
        u.split(invented, |_| Some(1));
        assert_eq!(u.latest(Some("noisy")).len(), MAX_HELD_PER_DEVICE);
        u.split(vec![reading("plug", "power", 1)], |_| Some(1));
        assert_eq!(u.latest(Some("plug")).len(), 1);
    }
}
