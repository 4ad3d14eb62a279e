//! Places that strangers on the network share: connections that have not logged in, HTTP
//! connections, DTLS handshakes. Each has a budget overall and per source address. When a
//! newcomer finds it full, nobody is turned away: the oldest place of the address holding
//! the most gives way (within the newcomer's own address first, if that one is full). So a
//! flood from one address, or from many, pushes out its own oldest places, never the one
//! a device or the owner has just taken; refusing newcomers instead would let whoever holds
//! the places keep them.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// A budget of places.
pub struct Crowd {
    max: usize,
    per_address: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_address: HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>,
    total: usize,
    next: u64,
}

/// A place taken: its token is cancelled when it must give way; dropping it leaves.
pub struct Place {
    crowd: Arc<Crowd>,
    addr: IpAddr,
    id: u64,
    pub gives_way: CancellationToken,
}

impl Crowd {
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), per_address: per_address.max(1), inner: Mutex::default() })
    }

    /// Takes a place for `addr`, making room as described above.
    pub fn enter(self: &Arc<Self>, addr: IpAddr) -> Place {
        let gives_way = CancellationToken::new();
        let mut id = 0;
        if let Ok(mut inner) = self.inner.lock() {
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
                    .max_by_key(|(_, q)| (q.len(), std::cmp::Reverse(q.front().map(|p| p.0))))
                    .map(|(a, _)| *a)
            } else {
                None
            };
            if let Some(crowded) = crowded
                && let Some(queue) = inner.by_address.get_mut(&crowded)
                && let Some((_, oldest)) = queue.pop_front()
            {
                oldest.cancel();
                if queue.is_empty() {
                    inner.by_address.remove(&crowded);
                }
                inner.total -= 1;
            }
            inner.by_address.entry(addr).or_default().push_back((id, gives_way.clone()));
            inner.total += 1;
        }
        Place { crowd: self.clone(), addr, id, gives_way }
    }

    /// Places taken now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.total).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.crowd.inner.lock()
            && let Some(queue) = inner.by_address.get_mut(&self.addr)
        {
            let before = queue.len();
            queue.retain(|(id, _)| *id != self.id);
            let left = before - queue.len();
            if queue.is_empty() {
                inner.by_address.remove(&self.addr);
            }
            inner.total -= left;
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
        let crowd = Crowd::new(8, 3);
        let flood: Vec<Place> = (0..100).map(|_| crowd.enter(ip(66))).collect();
        assert_eq!(flood.iter().filter(|p| !p.gives_way.is_cancelled()).count(), 3);
        let device = crowd.enter(ip(20));
        assert!(!device.gives_way.is_cancelled());
        assert_eq!(crowd.len(), 4);
    }

    #[test]
    fn when_full_the_most_crowded_address_gives_way() {
        let crowd = Crowd::new(6, 3);
        let attacker: Vec<Place> = (0..3).map(|_| crowd.enter(ip(66))).collect();
        let others: Vec<Place> = (1..=3).map(|n| crowd.enter(ip(n))).collect();
        let owner = crowd.enter(ip(20));
        assert!(attacker[0].gives_way.is_cancelled(), "the attacker's oldest gave way");
        assert!(others.iter().all(|p| !p.gives_way.is_cancelled()));
        assert!(!owner.gives_way.is_cancelled());
        // With one place each, the oldest gives way.
        let crowd = Crowd::new(3, 3);
        let early: Vec<Place> = (1..=3).map(|n| crowd.enter(ip(n))).collect();
        let late = crowd.enter(ip(9));
        assert!(early[0].gives_way.is_cancelled() && !late.gives_way.is_cancelled());
    }

    #[test]
    fn leaving_frees_the_place() {
        let crowd = Crowd::new(2, 2);
        let a = crowd.enter(ip(1));
        drop(crowd.enter(ip(1)));
        assert_eq!(crowd.len(), 1);
        drop(a);
        assert!(crowd.is_empty());
    }
}
