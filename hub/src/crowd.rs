//! Places that strangers on the network share: connections that have not logged in, HTTP
//! connections. Each has a budget overall and per source address. When a newcomer finds it
//! full, nobody is turned away: the oldest place of the address holding the most gives way
//! (within the newcomer's own address first, if that one is full). So a flood from one
//! address, or from many, pushes out its own oldest places, never the one a device or the
//! owner has just taken; refusing newcomers instead would let whoever holds the places keep
//! them.
//!
//! Two things keep an honest slow client in (decision 0024):
//! - Addresses that proved themselves before ([`Known`]: a device's credentials or an owner's
//!   or tenant's password were accepted from them) have places of their own, which
//!   strangers' connections never take. There, the household holding the most places gives
//!   way, not the address: a tenant flooding from many addresses it proved pushes out its
//!   own places, never the owner's device pausing before its TLS handshake.
//! - Within one address, a place whose client has not yet shown a whole opening (a TLS
//!   handshake, a CONNECT, a first byte of HTTP in clear) gives way before one that has
//!   ([`Place::spoke`]). Idle sockets from a device's own address (behind NAT, on the hub
//!   itself) go before the device's login.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::consent::Subject;

/// Most addresses remembered for one household; past it, the household's own address seen
/// longest ago is forgotten (another household's never are).
const MAX_KNOWN_PER_HOUSEHOLD: usize = 1024;

/// Addresses a login was accepted from (a device's credentials, an owner's or a tenant's
/// password or session), with the household whose login it was. Shared by every server of
/// the hub; kept in memory.
#[derive(Default)]
pub struct Known {
    inner: Mutex<Seen>,
}

/// Each address's household and when it was last seen (a counter), and the counter.
type Seen = (HashMap<IpAddr, (Subject, u64)>, u64);

impl Known {
    /// A login of `household` was accepted from `addr`.
    pub fn remember(&self, addr: IpAddr, household: Subject) {
        let addr = addr.to_canonical();
        let Ok(mut inner) = self.inner.lock() else { return };
        let (seen, clock) = &mut *inner;
        *clock += 1;
        if seen.get(&addr).is_none_or(|(h, _)| *h != household) {
            let theirs = seen.iter().filter(|(_, (h, _))| *h == household);
            if theirs.clone().count() >= MAX_KNOWN_PER_HOUSEHOLD {
                let oldest = theirs.min_by_key(|(_, (_, at))| *at).map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    seen.remove(&oldest);
                }
            }
        }
        seen.insert(addr, (household, *clock));
    }

    /// The household whose login was last accepted from `addr`, if one was (among the
    /// last [`MAX_KNOWN_PER_HOUSEHOLD`] addresses of each).
    pub fn household(&self, addr: IpAddr) -> Option<Subject> {
        self.inner.lock().ok()?.0.get(&addr.to_canonical()).map(|(h, _)| *h)
    }
}

/// A budget of places: as many again for known addresses as for strangers. A stranger's
/// address holds at most `per_address` of them; a known address, any of its part.
pub struct Crowd {
    max: usize,
    per_address: usize,
    known: Arc<Known>,
    inner: Mutex<[Part; 2]>,
}

/// The places of strangers (0) or of known addresses (1).
#[derive(Default)]
struct Part {
    by_address: HashMap<IpAddr, (Group, VecDeque<Taken>)>,
    total: usize,
    next: u64,
}

/// Who gives way together when a part is full: a stranger's address, or a household.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Address(IpAddr),
    Household(Subject),
}

struct Taken {
    id: u64,
    gives_way: CancellationToken,
    spoke: Arc<AtomicBool>,
}

/// A place taken: its token is cancelled when it must give way; dropping it leaves.
pub struct Place {
    crowd: Arc<Crowd>,
    addr: IpAddr,
    part: usize,
    id: u64,
    spoke: Arc<AtomicBool>,
    pub gives_way: CancellationToken,
}

impl Crowd {
    pub fn new(max: usize, per_address: usize, known: Arc<Known>) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), per_address: per_address.max(1), known, inner: Mutex::default() })
    }

    /// Takes a place for `addr`, making room as described above.
    pub fn enter(self: &Arc<Self>, addr: IpAddr) -> Place {
        let gives_way = CancellationToken::new();
        let spoke = Arc::new(AtomicBool::new(false));
        let household = self.known.household(addr);
        let (part, group) = match household {
            Some(h) => (1, Group::Household(h)),
            None => (0, Group::Address(addr)),
        };
        let mut id = 0;
        if let Ok(mut parts) = self.inner.lock() {
            let inner = &mut parts[part];
            inner.next += 1;
            id = inner.next;
            // A known address may hold the whole part (the devices of a home behind one
            // address connecting at once): its silent places give way first, and a
            // household that holds the most gives way before the others.
            let per_address = if part == 1 { self.max } else { self.per_address };
            let own_full = inner.by_address.get(&addr).is_some_and(|(_, q)| q.len() >= per_address);
            let crowded = match own_full {
                true => Some(addr),
                false if inner.total >= self.max => inner.most_crowded(),
                false => None,
            };
            if let Some(crowded) = crowded {
                inner.give_way(crowded);
            }
            let taken = Taken { id, gives_way: gives_way.clone(), spoke: spoke.clone() };
            let (place_group, queue) = inner.by_address.entry(addr).or_insert_with(|| (group, VecDeque::new()));
            *place_group = group;
            queue.push_back(taken);
            inner.total += 1;
        }
        Place { crowd: self.clone(), addr, part, id, spoke, gives_way }
    }

    /// Places taken now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|parts| parts.iter().map(|p| p.total).sum()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Part {
    /// The address that gives way: of the group holding the most places (a stranger's
    /// address, or a household), its address holding the most; ties go to the oldest.
    fn most_crowded(&self) -> Option<IpAddr> {
        let mut groups: HashMap<Group, (usize, u64)> = HashMap::new();
        for (group, queue) in self.by_address.values() {
            let oldest = queue.front().map_or(u64::MAX, |p| p.id);
            let entry = groups.entry(*group).or_insert((0, u64::MAX));
            *entry = (entry.0 + queue.len(), entry.1.min(oldest));
        }
        let (group, _) = groups.into_iter().max_by_key(|(_, (n, oldest))| (*n, std::cmp::Reverse(*oldest)))?;
        self.by_address
            .iter()
            .filter(|(_, (g, _))| *g == group)
            .max_by_key(|(_, (_, q))| (q.len(), std::cmp::Reverse(q.front().map(|p| p.id))))
            .map(|(a, _)| *a)
    }

    /// `addr`'s oldest place that has not shown a whole opening gives way, else its oldest.
    fn give_way(&mut self, addr: IpAddr) {
        let Some((_, queue)) = self.by_address.get_mut(&addr) else { return };
        let at = queue.iter().position(|p| !p.spoke.load(Ordering::Relaxed)).unwrap_or(0);
        if let Some(gone) = queue.remove(at) {
            gone.gives_way.cancel();
            self.total -= 1;
        }
        if queue.is_empty() {
            self.by_address.remove(&addr);
        }
    }
}

impl Place {
    /// The client showed a whole opening (its TLS handshake, its CONNECT, its first bytes
    /// of HTTP in clear): it gives way after the places of its address that have not.
    pub fn spoke(&self) {
        self.spoke.store(true, Ordering::Relaxed);
    }

    /// What [`Place::spoke`] sets, for a reader that notes the client's first bytes itself.
    pub fn spoke_flag(&self) -> Arc<AtomicBool> {
        self.spoke.clone()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut parts) = self.crowd.inner.lock() {
            let inner = &mut parts[self.part];
            if let Some((_, queue)) = inner.by_address.get_mut(&self.addr) {
                let before = queue.len();
                queue.retain(|p| p.id != self.id);
                let left = before - queue.len();
                if queue.is_empty() {
                    inner.by_address.remove(&self.addr);
                }
                inner.total -= left;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, n])
    }

    #[test]
    fn a_flood_from_one_address_pushes_out_its_own_oldest() {
        let crowd = Crowd::new(8, 3, Arc::default());
        let flood: Vec<Place> = (0..100).map(|_| crowd.enter(ip(66))).collect();
        assert_eq!(flood.iter().filter(|p| !p.gives_way.is_cancelled()).count(), 3);
        let device = crowd.enter(ip(20));
        assert!(!device.gives_way.is_cancelled());
        assert_eq!(crowd.len(), 4);
    }

    #[test]
    fn when_full_the_most_crowded_address_gives_way() {
        let crowd = Crowd::new(6, 3, Arc::default());
        let attacker: Vec<Place> = (0..3).map(|_| crowd.enter(ip(66))).collect();
        let others: Vec<Place> = (1..=3).map(|n| crowd.enter(ip(n))).collect();
        let owner = crowd.enter(ip(20));
        assert!(attacker[0].gives_way.is_cancelled(), "the attacker's oldest gave way");
        assert!(others.iter().all(|p| !p.gives_way.is_cancelled()));
        assert!(!owner.gives_way.is_cancelled());
        // With one place each, the oldest gives way.
        let crowd = Crowd::new(3, 3, Arc::default());
        let early: Vec<Place> = (1..=3).map(|n| crowd.enter(ip(n))).collect();
        let late = crowd.enter(ip(9));
        assert!(early[0].gives_way.is_cancelled() && !late.gives_way.is_cancelled());
    }

    #[test]
    fn leaving_frees_the_place() {
        let crowd = Crowd::new(2, 2, Arc::default());
        let a = crowd.enter(ip(1));
        drop(crowd.enter(ip(1)));
        assert_eq!(crowd.len(), 1);
        drop(a);
        assert!(crowd.is_empty());
    }

    #[test]
    fn strangers_never_take_the_places_of_known_addresses() {
        let known = Arc::new(Known::default());
        known.remember(ip(20), Subject::Owner);
        let crowd = Crowd::new(4, 1, known);
        let device = crowd.enter(ip(20));
        let flood: Vec<Place> = (100..200).map(|n| crowd.enter(ip(n))).collect();
        assert!(!device.gives_way.is_cancelled(), "a stranger pushed out a known address");
        assert_eq!(flood.iter().filter(|p| !p.gives_way.is_cancelled()).count(), 4);
        // Without the proof, the same device is pushed out.
        let crowd = Crowd::new(4, 1, Arc::default());
        let device = crowd.enter(ip(20));
        let _flood: Vec<Place> = (100..200).map(|n| crowd.enter(ip(n))).collect();
        assert!(device.gives_way.is_cancelled());
    }

    #[test]
    fn within_an_address_the_silent_give_way_first() {
        let crowd = Crowd::new(64, 8, Arc::default());
        let device = crowd.enter(ip(1));
        device.spoke();
        let idle: Vec<Place> = (0..600).map(|_| crowd.enter(ip(1))).collect();
        assert!(!device.gives_way.is_cancelled(), "an idle socket pushed out the device's login");
        assert_eq!(idle.iter().filter(|p| !p.gives_way.is_cancelled()).count(), 7);
    }

    #[test]
    fn a_household_flooding_from_addresses_it_proved_pushes_out_its_own() {
        let known = Arc::new(Known::default());
        known.remember(ip(20), Subject::Owner);
        for n in 100..200 {
            known.remember(ip(n), Subject::Tenancy(3));
        }
        let crowd = Crowd::new(8, 2, known);
        let device = crowd.enter(ip(20));
        let flood: Vec<Place> = (0..5).flat_map(|_| (100..200).map(|n| crowd.enter(ip(n)))).collect();
        assert!(!device.gives_way.is_cancelled(), "the tenant's places pushed out the owner's device");
        assert_eq!(flood.iter().filter(|p| !p.gives_way.is_cancelled()).count(), 7);
    }

    #[test]
    fn a_household_s_known_addresses_are_bounded_and_push_out_only_its_own() {
        let known = Known::default();
        known.remember(ip(1), Subject::Owner);
        let tenant = |n: usize| IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]);
        for n in 0..MAX_KNOWN_PER_HOUSEHOLD + 1 {
            known.remember(tenant(n), Subject::Tenancy(3));
        }
        assert_eq!(known.household(tenant(0)), None, "the tenant's oldest was not forgotten");
        assert_eq!(known.household(tenant(1)), Some(Subject::Tenancy(3)));
        assert_eq!(known.household(ip(1)), Some(Subject::Owner), "the owner's address was forgotten");
    }

    #[test]
    fn a_known_address_may_hold_the_whole_part_and_its_silent_go_first() {
        let known = Arc::new(Known::default());
        known.remember(ip(1), Subject::Owner);
        let crowd = Crowd::new(64, 8, known);
        // A home's devices behind one address connecting at once.
        let home: Vec<Place> = (0..64).map(|_| crowd.enter(ip(1))).collect();
        assert!(home.iter().all(|p| !p.gives_way.is_cancelled()));
        home.iter().for_each(Place::spoke);
        // Idle sockets from the same address push out only each other.
        let idle: Vec<Place> = (0..600).map(|_| crowd.enter(ip(1))).collect();
        assert!(home.iter().skip(1).all(|p| !p.gives_way.is_cancelled()), "a device that spoke gave way");
        assert_eq!(idle.iter().filter(|p| !p.gives_way.is_cancelled()).count(), 1);
    }
}
