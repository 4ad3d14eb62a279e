//! Who owns a reading, what a recipient asked for and was granted, and what a grant lets it
//! read. Pure rules with time as a parameter: no I/O, no SQL, no HTTP. Reading shared data
//! needs a [`Permit`], and only [`Permit::check`] makes one.

pub mod log;
pub mod receipt;

use std::collections::{BTreeSet, HashMap};

use crate::reading::valid_metric;

pub const DAY_MS: i64 = 24 * 3600 * 1000;

pub use hearth_model::consent::{Accrual, GrantStatus, Narrowing, Offer, Terms};
pub use hearth_model::{DeviceClass, Granularity, Period, Subject};

/// A tenancy as the ownership rule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub tenancy: i64,
    pub start: i64,
    /// Exclusive; `None` while open-ended.
    pub end: Option<i64>,
}

impl Span {
    pub fn contains(&self, ts: i64) -> bool {
        ts >= self.start && self.end.is_none_or(|end| ts < end)
    }
}

/// Everything that decides who owns a reading: tenancies, device classes over time, and
/// which devices are a tenant's own. The writer holds a snapshot and consults it per reading.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    /// Non-overlapping, sorted by start.
    pub tenancies: Vec<Span>,
    /// device -> (from_ms, class), sorted by from_ms. A device with no entry is household.
    pub classes: HashMap<String, Vec<(i64, DeviceClass)>>,
    /// A tenant's own devices -> their tenancy.
    pub tenant_devices: HashMap<String, i64>,
}

impl Ownership {
    /// The class of `device` for a reading made at `ts`: the last change at or before `ts`.
    pub fn class_at(&self, device: &str, ts: i64) -> DeviceClass {
        self.classes
            .get(device)
            .and_then(|changes| changes.iter().rev().find(|(from, _)| *from <= ts))
            .map_or(DeviceClass::Household, |(_, class)| *class)
    }

    /// The class in force now (the latest change, even one that starts a moment from now).
    pub fn current_class(&self, device: &str) -> DeviceClass {
        self.classes.get(device).and_then(|c| c.last()).map_or(DeviceClass::Household, |(_, class)| *class)
    }

    /// Who holds `device`'s credentials, and so whose readings they may read back: the
    /// tenant for a tenant's own device, the owner for the home's devices. During a
    /// tenancy a household device's readings are the tenant's, so the owner's credentials
    /// for it read none of them.
    pub fn holder(&self, device: &str) -> Subject {
        self.tenant_devices.get(device).map_or(Subject::Owner, |&t| Subject::Tenancy(t))
    }

    /// A tenancy's own devices (removed ones too).
    pub fn own_devices(&self, tenancy: i64) -> Vec<String> {
        self.tenant_devices.iter().filter(|(_, t)| **t == tenancy).map(|(d, _)| d.clone()).collect()
    }

    /// Whether `device` may log in at `now`: the home's devices always; a tenant's own
    /// device only during its tenancy (a former tenant's bridge adds no devices).
    pub fn admits(&self, device: &str, now: i64) -> bool {
        self.tenant_devices.get(device).is_none_or(|&t| self.acts_at(Subject::Tenancy(t), now))
    }

    /// Tenancies that have ended by `now`.
    pub fn ended_by(&self, now: i64) -> impl Iterator<Item = i64> + '_ {
        self.tenancies.iter().filter(move |s| s.end.is_some_and(|end| end <= now)).map(|s| s.tenancy)
    }

    /// The first tenancy end after `now`, if one is set.
    pub fn next_end_after(&self, now: i64) -> Option<i64> {
        self.tenancies.iter().filter_map(|s| s.end).filter(|&end| end > now).min()
    }

    /// Whether `subject` may act in the home at `now` (a rule of theirs run, a command of
    /// theirs sent): the owner always; a tenancy's tenant from its start until its end, and
    /// not before or after (a tenancy is shredded only after it ended).
    pub fn acts_at(&self, subject: Subject, now: i64) -> bool {
        match subject {
            Subject::Owner => true,
            Subject::Tenancy(t) => self.tenancies.iter().any(|s| s.tenancy == t && s.contains(now)),
        }
    }

    /// Whether `subject` may command `device` at `now`: the owner the home's devices (not
    /// a tenant's own); a tenant, during their tenancy, their own devices and the home's
    /// household devices (a building device is the owner's to command).
    pub fn may_command(&self, subject: Subject, device: &str, now: i64) -> bool {
        let own = self.tenant_devices.get(device).copied();
        match subject {
            Subject::Owner => own.is_none(),
            Subject::Tenancy(t) => {
                self.acts_at(subject, now)
                    && match own {
                        Some(holder) => holder == t,
                        None => self.current_class(device) == DeviceClass::Household,
                    }
            }
        }
    }

    /// Who owns a reading of `device` made at `ts`; `None` if nobody may (a tenant's own
    /// device outside its tenancy), and then the reading is not stored.
    pub fn subject_at(&self, device: &str, ts: i64) -> Option<Subject> {
        if let Some(&tenancy) = self.tenant_devices.get(device) {
            let span = self.tenancies.iter().find(|s| s.tenancy == tenancy)?;
            return span.contains(ts).then_some(Subject::Tenancy(tenancy));
        }
        if self.class_at(device, ts) == DeviceClass::Building {
            return Some(Subject::Owner);
        }
        Some(match self.tenancies.iter().find(|s| s.contains(ts)) {
            Some(span) => Subject::Tenancy(span.tenancy),
            None => Subject::Owner,
        })
    }
}

/// Categories a recipient can ask for, and the metric names in each. A metric also
/// matches a category when it starts with one of these names and an underscore
/// (`energy_total` is energy).
pub const CATEGORIES: &[(&str, &str, &[&str])] = &[
    ("energy", "energy use", &["energy", "power", "voltage", "current", "gas", "kwh", "watts"]),
    ("climate", "temperature and air", &["temperature", "humidity", "pressure", "co2", "voc", "pm25", "pm10"]),
    ("presence", "presence and motion", &["presence", "motion", "occupancy", "door", "contact", "window"]),
    ("water", "water use and leaks", &["water", "flow", "leak"]),
];

/// The categories `metric` belongs to.
pub fn categories_of(metric: &str) -> impl Iterator<Item = &'static str> + '_ {
    CATEGORIES.iter().filter(move |(_, _, names)| names.iter().any(|n| metric_is(metric, n))).map(|(c, _, _)| *c)
}

fn metric_is(metric: &str, name: &str) -> bool {
    metric == name || metric.strip_prefix(name).is_some_and(|rest| rest.starts_with('_'))
}

/// Longest a grant can last.
pub const MAX_DURATION_DAYS: u32 = 5 * 366;

/// Checks a request's terms; `Err` names the field and the problem.
pub fn check_terms(terms: &Terms) -> Result<(), (&'static str, String)> {
    if terms.categories.is_empty() && terms.metrics.is_empty() {
        return Err(("categories", "ask for at least one category or metric".into()));
    }
    if let Some(bad) = terms.categories.iter().find(|c| !CATEGORIES.iter().any(|(name, _, _)| name == c)) {
        let known: Vec<&str> = CATEGORIES.iter().map(|(c, _, _)| *c).collect();
        return Err(("categories", format!("unknown category {bad:?}; known: {}", known.join(", "))));
    }
    if let Some(bad) = terms.metrics.iter().find(|m| !valid_metric(m)) {
        return Err(("metrics", format!("{bad:?} is not a metric name")));
    }
    if terms.categories.len() + terms.metrics.len() > 64 {
        return Err(("metrics", "at most 64 categories and metrics".into()));
    }
    for (name, time) in [("window_from", Some(terms.window_from)), ("window_to", terms.window_to)] {
        if time.is_some_and(|t| !crate::clock::valid_ms(t)) {
            return Err((name, "must be a time from 1970 to 9999, in ms since the epoch".into()));
        }
    }
    if terms.window_to.is_some_and(|to| to <= terms.window_from) {
        return Err(("window_to", "must be after window_from".into()));
    }
    if terms.duration_days == 0 || terms.duration_days > MAX_DURATION_DAYS {
        return Err(("duration_days", format!("must be 1-{MAX_DURATION_DAYS}")));
    }
    let text_ok = |s: &str, max| !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control);
    if !text_ok(&terms.purpose, 500) {
        return Err(("purpose", "say why, in 1-500 characters".into()));
    }
    if !text_ok(&terms.offer.text, 500) {
        return Err(("offer", "describe the offer in 1-500 characters".into()));
    }
    if terms.offer.amount.is_some_and(|a| !a.is_finite() || !(0.0..=1e9).contains(&a)) {
        return Err(("offer", "amount must be between 0 and 1e9".into()));
    }
    if terms.offer.amount.is_some() != terms.offer.currency.is_some()
        || terms.offer.amount.is_some() != terms.offer.period.is_some()
    {
        return Err(("offer", "an amount needs a currency and a period, and they need an amount".into()));
    }
    if terms.offer.currency.as_deref().is_some_and(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(("offer", "currency must be a 3-letter code such as EUR".into()));
    }
    Ok(())
}

/// Whether `terms` cover `metric`.
pub fn covers(terms: &Terms, metric: &str) -> bool {
    terms.metrics.contains(metric) || categories_of(metric).any(|c| terms.categories.contains(c))
}

/// The terms of a grant: the request's, narrowed. Widening anything is refused.
pub fn narrow(asked: &Terms, by: &Narrowing) -> Result<Terms, (&'static str, String)> {
    let mut t = asked.clone();
    if let Some(c) = &by.categories {
        if !c.is_subset(&asked.categories) {
            return Err(("categories", "can only leave out categories that were asked for".into()));
        }
        t.categories = c.clone();
    }
    if let Some(m) = &by.metrics {
        if !m.is_subset(&asked.metrics) {
            return Err(("metrics", "can only leave out metrics that were asked for".into()));
        }
        t.metrics = m.clone();
    }
    if let Some(g) = by.granularity {
        if g < asked.granularity {
            return Err(("granularity", "can only be made coarser".into()));
        }
        t.granularity = g;
    }
    for (name, time) in [("window_from", by.window_from), ("window_to", by.window_to)] {
        if time.is_some_and(|t| !crate::clock::valid_ms(t)) {
            return Err((name, "must be a time from 1970 to 9999, in ms since the epoch".into()));
        }
    }
    if let Some(from) = by.window_from {
        if from < asked.window_from {
            return Err(("window_from", "can only be made later".into()));
        }
        t.window_from = from;
    }
    if let Some(to) = by.window_to {
        if asked.window_to.is_some_and(|asked_to| to > asked_to) {
            return Err(("window_to", "can only be made earlier".into()));
        }
        t.window_to = Some(to);
    }
    if let Some(days) = by.duration_days {
        if days > asked.duration_days {
            return Err(("duration_days", "can only be made shorter".into()));
        }
        t.duration_days = days;
    }
    check_terms(&t)?;
    Ok(t)
}

/// A grant as stored, for the checks below.
#[derive(Debug, Clone)]
pub struct GrantRecord {
    pub id: String,
    pub request_id: i64,
    pub recipient_id: String,
    pub subject_id: i64,
    pub terms: Terms,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
}

impl GrantRecord {
    pub fn status(&self, now: i64) -> GrantStatus {
        if self.revoked_ms.is_some_and(|r| r <= now) {
            GrantStatus::Revoked
        } else if now >= self.expires_ms {
            GrantStatus::Expired
        } else {
            GrantStatus::Active
        }
    }

    /// When access ended (revocation or expiry), if it has.
    pub fn ended_at(&self, now: i64) -> Option<i64> {
        match self.status(now) {
            GrantStatus::Active => None,
            GrantStatus::Revoked => self.revoked_ms.map(|r| r.min(self.expires_ms)),
            GrantStatus::Expired => Some(self.expires_ms),
        }
    }
}

/// Why a recipient may not read under a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this grant is not yours")]
    NotYours,
    #[error("this grant was revoked")]
    Revoked,
    #[error("this grant has expired")]
    Expired,
}

/// Leave to read one subject's data under one grant, now. Its fields are private: the
/// store's sharing queries take a `Permit`, so reading shared data without this check
/// does not compile.
#[derive(Debug, Clone)]
pub struct Permit {
    grant_id: String,
    recipient_id: String,
    subject_id: i64,
    terms: Terms,
    /// The readings the subject owns are those sealed under these keys.
    keys: BTreeSet<i64>,
    /// `[from, to)` of readings that may be served: the granted window, cut at now.
    from: i64,
    to: i64,
}

impl Permit {
    /// The consent check: `recipient` may read under `grant` at `now`, and the subject's
    /// readings are those under `subject_keys`.
    pub fn check(grant: &GrantRecord, recipient: &str, subject_keys: BTreeSet<i64>, now: i64) -> Result<Self, Refusal> {
        if grant.recipient_id != recipient {
            return Err(Refusal::NotYours);
        }
        match grant.status(now) {
            GrantStatus::Active => {}
            GrantStatus::Revoked => return Err(Refusal::Revoked),
            GrantStatus::Expired => return Err(Refusal::Expired),
        }
        let to = grant.terms.window_to.unwrap_or(i64::MAX).min(now.saturating_add(1));
        Ok(Self {
            grant_id: grant.id.clone(),
            recipient_id: grant.recipient_id.clone(),
            subject_id: grant.subject_id,
            terms: grant.terms.clone(),
            keys: subject_keys,
            from: grant.terms.window_from,
            to,
        })
    }

    pub fn grant_id(&self) -> &str {
        &self.grant_id
    }
    pub fn recipient_id(&self) -> &str {
        &self.recipient_id
    }
    pub fn subject_id(&self) -> i64 {
        self.subject_id
    }
    pub fn granularity(&self) -> Granularity {
        self.terms.granularity
    }
    pub fn keys(&self) -> &BTreeSet<i64> {
        &self.keys
    }
    pub fn covers(&self, metric: &str) -> bool {
        covers(&self.terms, metric)
    }
    /// `[from, to)` narrowed to what the grant allows; `None` if nothing is left. For an
    /// aggregate grant the range is whole buckets of the granted width (UTC-aligned): a
    /// partial bucket at either end, including the one in progress, is left out, so no
    /// range, however narrow, reaches inside a bucket.
    pub fn clamp(&self, from: Option<i64>, to: Option<i64>) -> Option<(i64, i64)> {
        let mut from = from.map_or(self.from, |f| f.max(self.from));
        let mut to = to.map_or(self.to, |t| t.min(self.to));
        if let Some(width) = self.terms.granularity.width_ms() {
            from = from.div_euclid(width).saturating_add(i64::from(from.rem_euclid(width) != 0)).saturating_mul(width);
            to = to.div_euclid(width).saturating_mul(width);
        }
        (from < to).then_some((from, to))
    }
}

/// Fewest readings a shared bucket may summarise. With its min, mean and max, a bucket of
/// one reading is that reading, and one of two or three gives each of its readings back
/// (the third is three means less the other two); from four on, only the extremes are
/// known. Sparser buckets are left out, exactly as empty ones are, so a recipient cannot
/// tell the two apart.
pub const MIN_SHARED_READINGS: usize = 4;

/// Months are counted as 30 days and years as 365: the ledger is an estimate for the
/// household to compare offers, not an invoice.
pub fn accrued(offer: &Offer, granted_at: i64, ended_at: Option<i64>, now: i64) -> Accrual {
    let end = ended_at.unwrap_or(now).min(now);
    let active = (end - granted_at).max(0);
    let periods = match offer.period {
        None => 0,
        Some(Period::Once) => 1,
        Some(Period::Month) => (active / (30 * DAY_MS)) as u32,
        Some(Period::Year) => (active / (365 * DAY_MS)) as u32,
    };
    Accrual { periods, amount: offer.amount.map(|a| (a * f64::from(periods) * 100.0).round() / 100.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * 1000;

    fn home() -> Ownership {
        let mut o = Ownership {
            tenancies: vec![
                Span { tenancy: 1, start: 10 * H, end: Some(20 * H) },
                Span { tenancy: 2, start: 30 * H, end: None },
            ],
            ..Default::default()
        };
        // The boiler was wrongly classed household until hour 15.
        o.classes.insert("boiler".into(), vec![(0, DeviceClass::Household), (15 * H, DeviceClass::Building)]);
        o.tenant_devices.insert("plug".into(), 1);
        o
    }

    #[test]
    fn household_readings_follow_tenancies() {
        let o = home();
        assert_eq!(o.subject_at("meter", 9 * H), Some(Subject::Owner));
        assert_eq!(o.subject_at("meter", 10 * H), Some(Subject::Tenancy(1)), "start is inclusive");
        assert_eq!(o.subject_at("meter", 20 * H - 1), Some(Subject::Tenancy(1)));
        assert_eq!(o.subject_at("meter", 20 * H), Some(Subject::Owner), "end is exclusive");
        assert_eq!(o.subject_at("meter", 1000 * H), Some(Subject::Tenancy(2)), "open-ended");
    }

    #[test]
    fn a_tenant_s_own_device_logs_in_during_the_tenancy_only() {
        let o = home();
        assert!(o.admits("meter", 0) && o.admits("meter", 25 * H), "the home's devices always");
        assert!(o.admits("plug", 10 * H) && o.admits("plug", 20 * H - 1));
        assert!(!o.admits("plug", 20 * H), "from the end on");
        assert!(!o.admits("plug", 9 * H), "nor before the start");
        assert_eq!(o.ended_by(20 * H - 1).count(), 0);
        assert_eq!(o.ended_by(20 * H).collect::<Vec<_>>(), [1], "ended at its end; the open-ended one never");
        assert_eq!(o.next_end_after(0), Some(20 * H));
        assert_eq!(o.next_end_after(20 * H), None);
    }

    #[test]
    fn a_tenant_acts_during_their_tenancy_only() {
        let o = home();
        assert!(o.acts_at(Subject::Owner, 0) && o.acts_at(Subject::Owner, 25 * H));
        assert!(!o.acts_at(Subject::Tenancy(1), 10 * H - 1), "not before it starts");
        assert!(o.acts_at(Subject::Tenancy(1), 10 * H) && o.acts_at(Subject::Tenancy(1), 20 * H - 1));
        assert!(!o.acts_at(Subject::Tenancy(1), 20 * H), "not once it has ended");
        assert!(o.acts_at(Subject::Tenancy(2), 1000 * H), "open-ended");
        assert!(!o.acts_at(Subject::Tenancy(3), 15 * H), "an unknown tenancy never");
    }

    #[test]
    fn a_tenant_commands_household_devices_and_their_own_only() {
        let o = home();
        let during = 12 * H;
        assert!(o.may_command(Subject::Tenancy(1), "meter", during), "household");
        assert!(o.may_command(Subject::Tenancy(1), "plug", during), "their own");
        assert!(!o.may_command(Subject::Tenancy(1), "boiler", during), "building, since hour 15: now");
        assert!(!o.may_command(Subject::Tenancy(1), "meter", 25 * H), "not after the tenancy");
        assert!(!o.may_command(Subject::Tenancy(2), "plug", 1000 * H), "not another tenancy's own device");
        assert!(o.may_command(Subject::Owner, "boiler", during) && !o.may_command(Subject::Owner, "plug", during));
    }

    #[test]
    fn a_class_change_applies_only_from_when_it_was_made() {
        let o = home();
        assert_eq!(o.subject_at("boiler", 12 * H), Some(Subject::Tenancy(1)), "before the change: household");
        assert_eq!(o.subject_at("boiler", 15 * H), Some(Subject::Owner));
        assert_eq!(o.subject_at("boiler", 35 * H), Some(Subject::Owner), "building data is never a tenant's");
        assert_eq!(o.current_class("boiler"), DeviceClass::Building);
        assert_eq!(o.current_class("meter"), DeviceClass::Household, "unclassed devices are household");
    }

    #[test]
    fn a_tenants_own_device_is_theirs_and_only_during_their_tenancy() {
        let o = home();
        assert_eq!(o.subject_at("plug", 11 * H), Some(Subject::Tenancy(1)));
        assert_eq!(o.subject_at("plug", 5 * H), None);
        assert_eq!(o.subject_at("plug", 31 * H), None, "not the next tenant's either");
    }

    fn terms() -> Terms {
        Terms {
            categories: ["energy".to_owned()].into(),
            metrics: ["temperature".to_owned()].into(),
            granularity: Granularity::Min15,
            window_from: 100,
            window_to: Some(1000),
            duration_days: 90,
            purpose: "tariff advice".into(),
            offer: Offer {
                text: "5 EUR a month off".into(),
                amount: Some(5.0),
                currency: Some("EUR".into()),
                period: Some(Period::Month),
            },
        }
    }

    #[test]
    fn categories_cover_their_metrics() {
        let t = terms();
        assert!(covers(&t, "power") && covers(&t, "energy_total") && covers(&t, "temperature"));
        assert!(!covers(&t, "humidity") && !covers(&t, "powerful") && !covers(&t, "motion"));
    }

    #[test]
    fn narrowing_only_narrows() {
        let asked = terms();
        let by = Narrowing {
            granularity: Some(Granularity::Hour),
            metrics: Some(BTreeSet::new()),
            window_from: Some(200),
            duration_days: Some(30),
            ..Default::default()
        };
        let granted = narrow(&asked, &by).unwrap();
        assert_eq!(
            (granted.granularity, granted.metrics.len(), granted.window_from, granted.duration_days),
            (Granularity::Hour, 0, 200, 30)
        );
        let finer = Narrowing { granularity: Some(Granularity::Raw), ..Default::default() };
        assert_eq!(narrow(&asked, &finer).unwrap_err().0, "granularity");
        let more = Narrowing { categories: Some(["climate".to_owned()].into()), ..Default::default() };
        assert_eq!(narrow(&asked, &more).unwrap_err().0, "categories");
        let longer = Narrowing { window_to: Some(2000), ..Default::default() };
        assert_eq!(narrow(&asked, &longer).unwrap_err().0, "window_to");
        let nothing =
            Narrowing { categories: Some(BTreeSet::new()), metrics: Some(BTreeSet::new()), ..Default::default() };
        assert_eq!(narrow(&asked, &nothing).unwrap_err().0, "categories", "an empty grant is a denial");
    }

    #[test]
    fn requests_are_validated() {
        assert!(check_terms(&terms()).is_ok());
        let mut t = terms();
        t.categories.insert("dreams".into());
        assert_eq!(check_terms(&t).unwrap_err().0, "categories");
        let mut t = terms();
        t.offer.currency = None;
        assert_eq!(check_terms(&t).unwrap_err().0, "offer");
        let mut t = terms();
        t.window_to = Some(50);
        assert_eq!(check_terms(&t).unwrap_err().0, "window_to");
    }

    fn grant(now: i64) -> GrantRecord {
        GrantRecord {
            id: "g1".into(),
            request_id: 1,
            recipient_id: "r1".into(),
            subject_id: 7,
            terms: terms(),
            created_ms: now,
            expires_ms: now + 500,
            revoked_ms: None,
        }
    }

    #[test]
    fn an_aggregate_grant_serves_whole_buckets_only() {
        const Q: i64 = 15 * 60 * 1000;
        let g = GrantRecord {
            terms: Terms { window_from: 10 * Q + 7, window_to: None, ..terms() },
            expires_ms: i64::MAX,
            ..grant(0)
        };
        let p = Permit::check(&g, "r1", [3].into(), 20 * Q + 5).unwrap();
        assert_eq!(p.clamp(None, None), Some((11 * Q, 20 * Q)), "the partial first and current buckets are left out");
        assert_eq!(p.clamp(Some(12 * Q + 1), Some(12 * Q + 2)), None, "a range inside one bucket gets nothing");
        assert_eq!(p.clamp(Some(12 * Q - 1), Some(14 * Q + 1)), Some((12 * Q, 14 * Q)));
        assert_eq!(p.clamp(Some(12 * Q), Some(13 * Q)), Some((12 * Q, 13 * Q)), "a whole bucket is served");
    }

    #[test]
    fn permits_end_with_revocation_and_expiry() {
        let g = grant(0);
        let keys: BTreeSet<i64> = [3].into();
        let raw = GrantRecord { terms: Terms { granularity: Granularity::Raw, ..terms() }, ..grant(0) };
        let p = Permit::check(&raw, "r1", keys.clone(), 400).unwrap();
        assert_eq!(p.clamp(None, None), Some((100, 401)), "the window is cut at now");
        assert_eq!(p.clamp(Some(0), Some(150)), Some((100, 150)));
        assert_eq!(p.clamp(Some(500), None), None);
        assert_eq!(Permit::check(&g, "r2", keys.clone(), 10).unwrap_err(), Refusal::NotYours);
        assert_eq!(Permit::check(&g, "r1", keys.clone(), 500).unwrap_err(), Refusal::Expired);
        let revoked = GrantRecord { revoked_ms: Some(300), ..g };
        assert!(Permit::check(&revoked, "r1", keys.clone(), 299).is_ok());
        assert_eq!(Permit::check(&revoked, "r1", keys, 300).unwrap_err(), Refusal::Revoked);
        assert_eq!(revoked.ended_at(1000), Some(300));
    }

    #[test]
    fn the_ledger_counts_whole_periods_while_active() {
        let offer = terms().offer;
        assert_eq!(accrued(&offer, 0, None, 29 * DAY_MS).periods, 0);
        assert_eq!(accrued(&offer, 0, None, 61 * DAY_MS), Accrual { periods: 2, amount: Some(10.0) });
        assert_eq!(accrued(&offer, 0, Some(31 * DAY_MS), 400 * DAY_MS).periods, 1, "nothing after revocation");
        let once = Offer { period: Some(Period::Once), ..offer.clone() };
        assert_eq!(accrued(&once, 0, None, 1).amount, Some(5.0));
        let words = Offer { text: "a thank-you".into(), amount: None, currency: None, period: None };
        assert_eq!(accrued(&words, 0, None, 100 * DAY_MS), Accrual { periods: 0, amount: None });
    }
}
