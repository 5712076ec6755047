//! Connections per remote IP address.
//!
//! Peer ids cost nothing to make, so the relay's per-peer bounds (connections, reservations,
//! routed topics) alone let one machine take every slot by connecting as many peers. This
//! behaviour refuses a connection from an address that already holds `max` of them, at the
//! first byte (pending) and again once the peer is known (established), so one address can
//! hold a bounded share of the relay whatever it calls itself.
//!
//! Behind a reverse proxy every connection comes from the proxy's address: raise the bound
//! there (`--max-connections-per-ip`), or set it to 0 to turn it off.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, ConnectedPoint, Endpoint},
    multiaddr::Protocol,
    swarm::{
        dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour,
        THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// Default of `--max-connections-per-ip`: room for a household or office behind one NAT
/// (a browser node needs one connection), a small share of the relay's 4096.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 64;

/// The IP address a multiaddr starts with (`/ip4/…` or `/ip6/…`), if it does.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// A count per IP address (connections held, topics charged), with no entry at 0, so it
/// holds no more entries than there are things counted.
#[derive(Debug, Default)]
pub struct IpCounts(HashMap<IpAddr, usize>);

impl IpCounts {
    /// The count of `ip`.
    pub fn get(&self, ip: IpAddr) -> usize {
        self.0.get(&ip).copied().unwrap_or(0)
    }

    /// One more for `ip`.
    pub fn add(&mut self, ip: IpAddr) {
        *self.0.entry(ip).or_default() += 1;
    }

    /// One fewer for `ip` (none below 0).
    pub fn remove(&mut self, ip: IpAddr) {
        if let Some(n) = self.0.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&ip);
            }
        }
    }
}

/// Why a connection was refused: its address already holds `limit` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFromIp {
    /// The remote address.
    pub ip: IpAddr,
    /// Its bound.
    pub limit: u32,
}

impl fmt::Display for TooManyFromIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} already holds {} connections", self.ip, self.limit)
    }
}

impl std::error::Error for TooManyFromIp {}

/// Refuses inbound connections from an address past its bound (`None`: no bound).
#[derive(Debug, Default)]
pub struct ConnectionsPerIp {
    limit: Option<u32>,
    /// Established inbound connections, with their address.
    connections: HashMap<ConnectionId, IpAddr>,
    /// How many of those each address holds.
    per_ip: IpCounts,
}

impl ConnectionsPerIp {
    /// At most `limit` established inbound connections per address; 0 turns the bound off.
    pub fn new(limit: u32) -> Self {
        ConnectionsPerIp {
            limit: (limit > 0).then_some(limit),
            ..Self::default()
        }
    }

    /// Established inbound connections from `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(ip)
    }

    fn check(&self, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        match (self.limit, ip_of(remote)) {
            (Some(limit), Some(ip)) if self.connections_from(ip) >= limit as usize => {
                Err(ConnectionDenied::new(TooManyFromIp { ip, limit }))
            }
            _ => Ok(()),
        }
    }
}

impl NetworkBehaviour for ConnectionsPerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // Refused before the Noise handshake costs anything.
        self.check(remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // Checked again: several handshakes from one address may have been pending at once.
        self.check(remote_addr)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // Counted here, not when approved above: another behaviour may still refuse it.
            FromSwarm::ConnectionEstablished(e) => {
                if let ConnectedPoint::Listener { send_back_addr, .. } = e.endpoint {
                    if let Some(ip) = ip_of(send_back_addr) {
                        self.connections.insert(e.connection_id, ip);
                        self.per_ip.add(ip);
                    }
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(ip) = self.connections.remove(&connection_id) {
                    self.per_ip.remove(ip);
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use libp2p::core::ConnectedPoint;
    use libp2p::swarm::{behaviour::ConnectionEstablished, ConnectionClosed};

    use super::*;

    fn addr(ip: [u8; 4], port: u16) -> Multiaddr {
        format!("/ip4/{}.{}.{}.{}/tcp/{port}/ws", ip[0], ip[1], ip[2], ip[3])
            .parse()
            .expect("addr")
    }

    fn listener(remote: &Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Listener {
            local_addr: addr([127, 0, 0, 1], 9090),
            send_back_addr: remote.clone(),
        }
    }

    /// Runs a connection from `remote` through both checks; counts it when both pass.
    fn connect(
        b: &mut ConnectionsPerIp,
        remote: &Multiaddr,
    ) -> Result<ConnectionId, ConnectionDenied> {
        let id = ConnectionId::new_unchecked(rand_id());
        let local = addr([127, 0, 0, 1], 9090);
        b.handle_pending_inbound_connection(id, &local, remote)?;
        let peer = PeerId::random();
        b.handle_established_inbound_connection(id, peer, &local, remote)?;
        let endpoint = listener(remote);
        b.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: id,
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
        Ok(id)
    }

    fn close(b: &mut ConnectionsPerIp, id: ConnectionId, remote: &Multiaddr) {
        let endpoint = listener(remote);
        b.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: PeerId::random(),
            connection_id: id,
            endpoint: &endpoint,
            cause: None,
            remaining_established: 0,
        }));
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn an_address_holds_at_most_its_bound_and_others_are_unaffected() {
        let mut b = ConnectionsPerIp::new(2);
        let a = addr([203, 0, 113, 7], 5000);
        let a2 = addr([203, 0, 113, 7], 5001); // same address, another port
        let other = addr([198, 51, 100, 1], 5000);
        let first = connect(&mut b, &a).expect("first");
        connect(&mut b, &a2).expect("second");
        let refused = connect(&mut b, &a).expect_err("third");
        let why = refused.downcast_ref::<TooManyFromIp>().expect("ours");
        assert_eq!(why.to_string(), "203.0.113.7 already holds 2 connections");
        connect(&mut b, &other).expect("another address");
        assert_eq!(
            b.connections_from(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
            2
        );
        // One closes: room for one more.
        close(&mut b, first, &a);
        connect(&mut b, &a).expect("after a close");
        assert!(connect(&mut b, &a2).is_err());
    }

    #[test]
    fn a_refusal_elsewhere_is_not_counted() {
        let mut b = ConnectionsPerIp::new(1);
        let a = addr([203, 0, 113, 7], 5000);
        let local = addr([127, 0, 0, 1], 9090);
        let id = ConnectionId::new_unchecked(rand_id());
        // Approved here, then refused by another behaviour: no ConnectionEstablished follows.
        b.handle_pending_inbound_connection(id, &local, &a)
            .expect("pending");
        b.handle_established_inbound_connection(id, PeerId::random(), &local, &a)
            .expect("established");
        connect(&mut b, &a).expect("the slot is still free");
    }

    #[test]
    fn zero_turns_the_bound_off_and_addresses_without_ip_pass() {
        let mut off = ConnectionsPerIp::new(0);
        let a = addr([203, 0, 113, 7], 5000);
        for _ in 0..100 {
            connect(&mut off, &a).expect("no bound");
        }
        let mut on = ConnectionsPerIp::new(1);
        let memory: Multiaddr = "/memory/1234".parse().expect("addr");
        for _ in 0..3 {
            connect(&mut on, &memory).expect("no IP to count");
        }
        assert_eq!(ip_of(&memory), None);
    }
}
