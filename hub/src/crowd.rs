//! Places that strangers on the network share: connections that have not logged in, HTTP
//! connections. Each has a budget overall and per source address. When a newcomer finds it
//! full, nobody is turned away: the oldest place of the address holding the most gives way
//! (within the newcomer's own address first, if that one is full). So a flood from one
//! address, or from many, pushes out its own oldest places, never the one a device or the
//! owner has just taken; refusing newcomers instead would let whoever holds the places keep
//! them.
//!
//! Two things keep an honest slow client in (decision 0024):
//! - Addresses that proved themselves before ([`Known`]: a device's credentials or a
//!   person's password were accepted from them) have places of their own, which strangers'
//!   connections never take. A flood from hundreds of new addresses cannot push out a
//!   device pausing before its TLS handshake from the address it always uses.
//! - Within one address, a place that has said nothing yet gives way before one that has
//!   ([`Place::spoke`]). Idle sockets from a device's own address (behind NAT, on the hub
//!   itself) go before the device's login.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Most addresses remembered as known; past it, the one seen longest ago is forgotten.
const MAX_KNOWN: usize = 1024;

/// Addresses a login was accepted from (a device's credentials, a person's password or
/// session), most recent last. Shared by every server of the hub; kept in memory.
#[derive(Default)]
pub struct Known {
    inner: Mutex<(HashMap<IpAddr, u64>, u64)>,
}

impl Known {
    /// A login was accepted from `addr`.
    pub fn remember(&self, addr: IpAddr) {
        let addr = addr.to_canonical();
        let Ok(mut inner) = self.inner.lock() else { return };
        let (seen, clock) = &mut *inner;
        *clock += 1;
        if !seen.contains_key(&addr) && seen.len() >= MAX_KNOWN {
            let oldest = seen.iter().min_by_key(|(_, at)| **at).map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                seen.remove(&oldest);
            }
        }
        seen.insert(addr, *clock);
    }

    /// Whether a login was accepted from `addr` (among the last [`MAX_KNOWN`] addresses).
    pub fn knows(&self, addr: IpAddr) -> bool {
        self.inner.lock().is_ok_and(|inner| inner.0.contains_key(&addr.to_canonical()))
    }
}

/// A budget of places: as many again for known addresses as for strangers.
pub struct Crowd {
    max: usize,
    per_address: usize,
    known: Arc<Known>,
    inner: Mutex<[Part; 2]>,
}

/// The places of strangers (0) or of known addresses (1).
#[derive(Default)]
struct Part {
    by_address: HashMap<IpAddr, VecDeque<Taken>>,
    total: usize,
    next: u64,
}

struct Taken {
    id: u64,
    gives_way: CancellationToken,
    spoke: bool,
}

/// A place taken: its token is cancelled when it must give way; dropping it leaves.
pub struct Place {
    crowd: Arc<Crowd>,
    addr: IpAddr,
    part: usize,
    id: u64,
    pub gives_way: CancellationToken,
}

impl Crowd {
    pub fn new(max: usize, per_address: usize, known: Arc<Known>) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), per_address: per_address.max(1), known, inner: Mutex::default() })
    }

    /// Takes a place for `addr`, making room as described above.
    pub fn enter(self: &Arc<Self>, addr: IpAddr) -> Place {
        let gives_way = CancellationToken::new();
        let part = usize::from(self.known.knows(addr));
        let mut id = 0;
        if let Ok(mut parts) = self.inner.lock() {
            let inner = &mut parts[part];
            inner.next += 1;
            id = inner.next;
            let own_full = inner.by_address.get(&addr).is_some_and(|q| q.len() >= self.per_address);
            let crowded = if own_full {
                Some(addr)
            } else if inner.total >= self.max {
                // The address with the most places; of those, the one holding the oldest.
                inner
                    .by_address
                    .iter()
                    .max_by_key(|(_, q)| (q.len(), std::cmp::Reverse(q.front().map(|p| p.id))))
                    .map(|(a, _)| *a)
            } else {
                None
            };
            if let Some(crowded) = crowded
                && let Some(queue) = inner.by_address.get_mut(&crowded)
            {
                // Its oldest place that said nothing yet, else its oldest.
                let at = queue.iter().position(|p| !p.spoke).unwrap_or(0);
                if let Some(gone) = queue.remove(at) {
                    gone.gives_way.cancel();
                    inner.total -= 1;
                }
                if queue.is_empty() {
                    inner.by_address.remove(&crowded);
                }
            }
            let taken = Taken { id, gives_way: gives_way.clone(), spoke: false };
            inner.by_address.entry(addr).or_default().push_back(taken);
            inner.total += 1;
        }
        Place { crowd: self.clone(), addr, part, id, gives_way }
    }

    /// Places taken now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|parts| parts.iter().map(|p| p.total).sum()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Place {
    /// The client said something (its first bytes arrived): it gives way after those of
    /// its address that have not.
    pub fn spoke(&self) {
        if let Ok(mut parts) = self.crowd.inner.lock()
            && let Some(queue) = parts[self.part].by_address.get_mut(&self.addr)
            && let Some(taken) = queue.iter_mut().find(|p| p.id == self.id)
        {
            taken.spoke = true;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut parts) = self.crowd.inner.lock() {
            let inner = &mut parts[self.part];
            if let Some(queue) = inner.by_address.get_mut(&self.addr) {
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
        known.remember(ip(20));
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
    fn known_addresses_are_bounded_and_the_least_recent_forgotten() {
        let known = Known::default();
        for n in 0..MAX_KNOWN + 1 {
            known.remember(IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]));
        }
        assert!(!known.knows(IpAddr::from([10, 0, 0, 0])));
        assert!(known.knows(IpAddr::from([10, 0, 0, 1])));
    }
}
