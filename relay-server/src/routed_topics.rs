//! The application and document topics the relay routes, and who made it route them.
//!
//! The relay subscribes to a topic when a peer does, and leaves it once no peer wants it,
//! so topics cannot pile up past the bound for good. A new topic is routed only within
//! three bounds: the relay's ([`MAX_ROUTED_TOPICS`]), the subscribing peer's share of them
//! ([`MAX_ROUTED_TOPICS_PER_PEER`]) and its address's ([`MAX_ROUTED_TOPICS_PER_IP`]): peer ids
//! cost nothing, so without the last one a single machine could take every topic by
//! connecting as a few peers. A topic counts against the address of the peer that first
//! made the relay route it, until the relay leaves it.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use libp2p::{gossipsub::TopicHash, PeerId};

use crate::ip_limit::IpCounts;
use peercompute_core::limits::{
    MAX_ROUTED_TOPICS, MAX_ROUTED_TOPICS_PER_IP, MAX_ROUTED_TOPICS_PER_PEER,
};

/// What a peer's subscription does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The topic is routed already: the peer is one more subscriber.
    Join,
    /// The relay should start routing it (then [`RoutedTopics::add`]).
    Route,
    /// Past a bound: ignored (if it is routed later for someone else, this peer is not
    /// counted, and its messages on it still flow through gossipsub as usual).
    Refuse,
}

#[derive(Debug)]
struct Routed {
    peers: HashSet<PeerId>,
    /// The address it counts against, when its first subscriber had one.
    charged: Option<IpAddr>,
}

/// Routed topics, by topic, by peer and by charged address.
#[derive(Debug, Default)]
pub struct RoutedTopics {
    topics: HashMap<TopicHash, Routed>,
    by_peer: HashMap<PeerId, HashSet<TopicHash>>,
    by_ip: IpCounts,
}

impl RoutedTopics {
    /// Topics routed.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Topics charged to `ip`.
    pub fn charged_to(&self, ip: IpAddr) -> usize {
        self.by_ip.get(ip)
    }

    /// What `peer` (connected from `ip`) subscribing to `topic` should do.
    pub fn admit(&self, peer: &PeerId, ip: Option<IpAddr>, topic: &TopicHash) -> Admission {
        if self.topics.contains_key(topic) {
            return Admission::Join;
        }
        let peer_share = self.by_peer.get(peer).map_or(0, HashSet::len);
        let ip_share = ip.map_or(0, |ip| self.charged_to(ip));
        if self.topics.len() < MAX_ROUTED_TOPICS
            && peer_share < MAX_ROUTED_TOPICS_PER_PEER
            && ip_share < MAX_ROUTED_TOPICS_PER_IP
        {
            Admission::Route
        } else {
            Admission::Refuse
        }
    }

    /// Records `peer`'s subscription, after [`Self::admit`] said [`Admission::Join`] or
    /// [`Admission::Route`] (and the relay subscribed).
    pub fn add(&mut self, peer: PeerId, ip: Option<IpAddr>, topic: TopicHash) {
        let routed = self.topics.entry(topic.clone()).or_insert_with(|| {
            if let Some(ip) = ip {
                self.by_ip.add(ip);
            }
            Routed {
                peers: HashSet::new(),
                charged: ip,
            }
        });
        routed.peers.insert(peer);
        self.by_peer.entry(peer).or_default().insert(topic);
    }

    /// `peer` no longer wants `topic`; true when nobody does now (the relay leaves it).
    pub fn remove(&mut self, peer: &PeerId, topic: &TopicHash) -> bool {
        if let Some(topics) = self.by_peer.get_mut(peer) {
            topics.remove(topic);
            if topics.is_empty() {
                self.by_peer.remove(peer);
            }
        }
        let Some(routed) = self.topics.get_mut(topic) else {
            return false;
        };
        routed.peers.remove(peer);
        if !routed.peers.is_empty() {
            return false;
        }
        if let Some(ip) = routed.charged {
            self.by_ip.remove(ip);
        }
        self.topics.remove(topic);
        true
    }

    /// `peer` is gone (gossipsub reports no unsubscribe for it): the topics nobody wants now.
    pub fn remove_peer(&mut self, peer: &PeerId) -> Vec<TopicHash> {
        let topics = self.by_peer.remove(peer).unwrap_or_default();
        topics
            .into_iter()
            .filter(|topic| self.remove(peer, topic))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn topic(i: usize) -> TopicHash {
        TopicHash::from_raw(format!("t{i}"))
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, last)))
    }

    /// Subscribes `peer` to `topic` as the relay does; returns the admission.
    fn subscribe(
        r: &mut RoutedTopics,
        peer: PeerId,
        ip: Option<IpAddr>,
        t: TopicHash,
    ) -> Admission {
        let a = r.admit(&peer, ip, &t);
        if a != Admission::Refuse {
            r.add(peer, ip, t);
        }
        a
    }

    #[test]
    fn peers_of_one_address_share_its_bound() {
        let mut r = RoutedTopics::default();
        let mut next = 0;
        // Sybils on one address, each within its own share, until the address's is used up.
        'fill: loop {
            let peer = PeerId::random();
            for _ in 0..MAX_ROUTED_TOPICS_PER_PEER {
                if subscribe(&mut r, peer, ip(1), topic(next)) == Admission::Refuse {
                    break 'fill;
                }
                next += 1;
            }
        }
        assert_eq!(r.len(), MAX_ROUTED_TOPICS_PER_IP);
        assert_eq!(r.charged_to(ip(1).expect("ip")), MAX_ROUTED_TOPICS_PER_IP);
        // A fresh peer on that address can still join routed topics, not add one.
        let late = PeerId::random();
        assert_eq!(subscribe(&mut r, late, ip(1), topic(0)), Admission::Join);
        assert_eq!(
            subscribe(&mut r, late, ip(1), topic(next)),
            Admission::Refuse
        );
        // Another address routes its own.
        assert_eq!(
            subscribe(&mut r, PeerId::random(), ip(2), topic(next)),
            Admission::Route
        );
        assert_eq!(r.charged_to(ip(1).expect("ip")), MAX_ROUTED_TOPICS_PER_IP);
    }

    #[test]
    fn a_topic_stays_charged_until_the_relay_leaves_it() {
        let mut r = RoutedTopics::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(subscribe(&mut r, a, ip(1), topic(1)), Admission::Route);
        assert_eq!(subscribe(&mut r, b, ip(2), topic(1)), Admission::Join);
        assert!(!r.remove(&a, &topic(1)), "b still wants it");
        assert_eq!(r.charged_to(ip(1).expect("ip")), 1);
        assert!(r.remove(&b, &topic(1)));
        assert_eq!(r.charged_to(ip(1).expect("ip")), 0);
        assert!(r.is_empty());
        assert!(!r.remove(&b, &topic(1)), "unknown now");
    }

    #[test]
    fn a_peer_that_goes_leaves_what_only_it_wanted() {
        let mut r = RoutedTopics::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        for i in 0..3 {
            subscribe(&mut r, a, ip(1), topic(i));
        }
        subscribe(&mut r, b, None, topic(2));
        let mut left = r.remove_peer(&a);
        left.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        assert_eq!(left, vec![topic(0), topic(1)]);
        assert_eq!(r.len(), 1);
        // Still charged to a's address: it made the relay route it.
        assert_eq!(r.charged_to(ip(1).expect("ip")), 1);
        assert_eq!(r.remove_peer(&b), vec![topic(2)]);
        assert_eq!(r.charged_to(ip(1).expect("ip")), 0);
    }

    #[test]
    fn the_peer_share_and_the_relay_bound_hold() {
        let mut r = RoutedTopics::default();
        let greedy = PeerId::random();
        for i in 0..MAX_ROUTED_TOPICS_PER_PEER + 10 {
            subscribe(&mut r, greedy, None, topic(i));
        }
        assert_eq!(r.len(), MAX_ROUTED_TOPICS_PER_PEER);
        // Peers on many addresses fill the relay's bound, and no further.
        let mut i = MAX_ROUTED_TOPICS_PER_PEER + 10;
        for last in 0..=255u8 {
            let peer = PeerId::random();
            for _ in 0..64 {
                subscribe(&mut r, peer, ip(last), topic(i));
                i += 1;
            }
        }
        assert_eq!(r.len(), MAX_ROUTED_TOPICS);
    }
}
