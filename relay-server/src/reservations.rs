//! Which peers hold a reservation, for `/status`.
//!
//! libp2p-relay 0.22 reports `ReservationReqAccepted` without the connection it was taken on,
//! and `ReservationClosed` for every closed connection of a peer, reservation or not. So a
//! peer that reserved on one connection and then lost it while another stayed open used to
//! show a reservation it no longer had. Here a new reservation belongs to the peer's newest
//! connection that holds none (a node reserves on the connection it has just opened), and
//! the reservation ends with that connection.

use std::collections::HashMap;

use libp2p::{swarm::ConnectionId, PeerId};

#[derive(Debug, Default)]
struct PeerConnections {
    /// Open connections, oldest first, each with whether it holds a reservation.
    open: Vec<(ConnectionId, bool)>,
}

/// Reservations by peer and connection.
#[derive(Debug, Default)]
pub struct Reservations {
    peers: HashMap<PeerId, PeerConnections>,
}

impl Reservations {
    /// `peer` opened `connection`.
    pub fn connected(&mut self, peer: PeerId, connection: ConnectionId) {
        self.peers
            .entry(peer)
            .or_default()
            .open
            .push((connection, false));
    }

    /// The relay accepted a reservation from `peer` (`renewed`: on a connection that held one).
    pub fn reserved(&mut self, peer: &PeerId, renewed: bool) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if renewed {
            return;
        }
        if let Some(slot) = p.open.iter_mut().rev().find(|(_, held)| !held) {
            slot.1 = true;
        }
    }

    /// `peer`'s reservation timed out (not renewed); which connection held it is unknown, so
    /// the peer holds none now.
    pub fn timed_out(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.get_mut(peer) {
            for slot in &mut p.open {
                slot.1 = false;
            }
        }
    }

    /// `peer`'s `connection` closed.
    pub fn closed(&mut self, peer: &PeerId, connection: ConnectionId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.open.retain(|(c, _)| *c != connection);
            if p.open.is_empty() {
                self.peers.remove(peer);
            }
        }
    }

    /// Whether `peer` holds a reservation.
    pub fn holds(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.open.iter().any(|(_, held)| *held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn a_reservation_ends_with_its_connection_not_with_another() {
        let mut r = Reservations::default();
        let peer = PeerId::random();
        r.connected(peer, id(1));
        r.reserved(&peer, false);
        r.connected(peer, id(2)); // a second connection, no reservation on it
        assert!(r.holds(&peer));
        r.closed(&peer, id(1));
        assert!(!r.holds(&peer), "the reserved connection is gone");
        r.closed(&peer, id(2));
        assert!(!r.holds(&peer));
    }

    #[test]
    fn a_reconnecting_node_keeps_its_reservation_on_the_new_connection() {
        let mut r = Reservations::default();
        let peer = PeerId::random();
        r.connected(peer, id(1));
        r.reserved(&peer, false);
        r.connected(peer, id(2));
        r.reserved(&peer, false); // taken on the new connection
        r.reserved(&peer, true); // and renewed there
        r.closed(&peer, id(1));
        assert!(r.holds(&peer));
        r.closed(&peer, id(2));
        assert!(!r.holds(&peer));
    }

    #[test]
    fn timeouts_and_unknown_peers() {
        let mut r = Reservations::default();
        let peer = PeerId::random();
        r.reserved(&peer, false); // not connected: nothing to hold it
        assert!(!r.holds(&peer));
        r.connected(peer, id(1));
        r.reserved(&peer, false);
        r.timed_out(&peer);
        assert!(!r.holds(&peer));
        r.closed(&PeerId::random(), id(1));
        r.closed(&peer, id(7)); // not one of its connections
        r.reserved(&peer, false);
        assert!(r.holds(&peer));
    }
}
