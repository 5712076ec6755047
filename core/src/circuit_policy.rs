//! What runs on relayed circuits between nodes.
//!
//! A circuit to another node runs *through* the relay, so gossip over it would only duplicate
//! the path every message already takes through the relay's own gossipsub router: twice the
//! bytes on the wire and three Noise passes instead of one on each side (the circuit's Noise
//! runs inside the relay connection's). [`OffCircuits`] keeps a behaviour (gossipsub) on direct
//! connections only. Circuits carry point-to-point protocols (identify, ping; later sync and
//! task dispatch) and are kept open deliberately by [`KeepAlive`] until either side or the
//! relay closes them; a connection with no streams would otherwise be reaped as idle.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    task::{Context, Poll},
};

use either::Either;
use libp2p::{
    core::{transport::PortUse, upgrade::DeniedUpgrade, Endpoint},
    multiaddr::Protocol,
    swarm::{
        behaviour::ConnectionEstablished,
        handler::{ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent},
        ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour,
        NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// Whether an address goes through a relay.
pub fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Runs `B` on direct connections only; relayed circuits get a [`KeepAlive`] handler instead,
/// and `B` never hears of them.
pub struct OffCircuits<B> {
    inner: B,
    hidden: HashSet<ConnectionId>,
    visible: HashMap<PeerId, Vec<ConnectionId>>,
}

impl<B> OffCircuits<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        OffCircuits {
            inner,
            hidden: HashSet::new(),
            visible: HashMap::new(),
        }
    }

    fn visible_count(&self, peer: &PeerId) -> usize {
        self.visible.get(peer).map_or(0, Vec::len)
    }
}

// A transparent wrapper: callers use the inner behaviour's API directly.
impl<B> std::ops::Deref for OffCircuits<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> std::ops::DerefMut for OffCircuits<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for OffCircuits<B> {
    type ConnectionHandler = Either<THandler<B>, KeepAlive>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_circuit(local_addr) || is_circuit(remote_addr) {
            self.hidden.insert(connection_id);
            return Ok(Either::Right(KeepAlive));
        }
        self.inner
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(Either::Left)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_circuit(addr) {
            self.hidden.insert(connection_id);
            return Ok(Either::Right(KeepAlive));
        }
        self.inner
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(Either::Left)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if self.hidden.contains(&e.connection_id) {
                    return;
                }
                let other_established = self.visible_count(&e.peer_id);
                self.visible
                    .entry(e.peer_id)
                    .or_default()
                    .push(e.connection_id);
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established,
                        ..e
                    },
                ));
            }
            FromSwarm::ConnectionClosed(e) => {
                if self.hidden.remove(&e.connection_id) {
                    return;
                }
                if let Some(conns) = self.visible.get_mut(&e.peer_id) {
                    conns.retain(|c| *c != e.connection_id);
                    if conns.is_empty() {
                        self.visible.remove(&e.peer_id);
                    }
                }
                let remaining_established = self.visible_count(&e.peer_id);
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..e
                    }));
            }
            FromSwarm::AddressChange(e) if self.hidden.contains(&e.connection_id) => {}
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => {
                self.inner
                    .on_connection_handler_event(peer_id, connection_id, event)
            }
            Either::Right(never) => match never {},
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let event = match self.inner.poll(cx) {
            Poll::Ready(event) => event,
            Poll::Pending => return Poll::Pending,
        };
        // `Any` could pick a circuit, whose handler is not the inner one: name a visible one.
        let event = match event {
            ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::Any,
                event,
            } => ToSwarm::NotifyHandler {
                peer_id,
                handler: match self.visible.get(&peer_id).and_then(|c| c.first()) {
                    Some(c) => NotifyHandler::One(*c),
                    None => NotifyHandler::Any,
                },
                event,
            },
            other => other,
        };
        Poll::Ready(event.map_in(Either::Left))
    }
}

/// A handler with no protocols that keeps its connection open: an explicit keep-alive.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepAlive;

impl ConnectionHandler for KeepAlive {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        // No protocol is ever negotiated on this handler; nothing to do.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_addresses_are_recognised() {
        let relay = PeerId::random();
        let circuit: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/ws/p2p/{relay}/p2p-circuit")
            .parse()
            .expect("addr");
        assert!(is_circuit(&circuit));
        assert!(!is_circuit(
            &"/ip4/127.0.0.1/tcp/1/ws".parse().expect("addr")
        ));
    }
}
