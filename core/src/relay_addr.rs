//! Relay multiaddrs given by a tab or served in `/peercompute.json`.
//!
//! A browser worker can only dial WebSocket addresses (`/ws`, `/wss`, `/tls/ws`), and must know
//! the relay's peer id to authenticate it, so both are required.

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};

use crate::{error::ErrorCode, limits::MAX_MULTIADDR_BYTES, NodeError};

/// A validated relay address and the relay's peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddr {
    /// The full address, ending in `/p2p/<relay>`.
    pub addr: Multiaddr,
    /// The relay's peer id.
    pub peer_id: PeerId,
}

impl RelayAddr {
    /// Parses and validates a relay address.
    pub fn parse(text: &str) -> Result<RelayAddr, NodeError> {
        let bad = |why: &str| {
            NodeError::new(
                ErrorCode::InvalidRelayAddr,
                format!("relay address {:?}: {why}", truncate(text)),
            )
        };
        if text.len() > MAX_MULTIADDR_BYTES {
            return Err(bad("too long"));
        }
        let addr: Multiaddr = text.parse().map_err(|e| bad(&format!("{e}")))?;
        let peer_id = match addr.iter().last() {
            Some(Protocol::P2p(id)) => id,
            _ => return Err(bad("must end with /p2p/<relay peer id>")),
        };
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return Err(bad("must be the relay itself, not a circuit address"));
        }
        if !is_websocket(&addr) {
            return Err(bad("a browser can dial only /ws or /wss addresses"));
        }
        Ok(RelayAddr { addr, peer_id })
    }
}

/// The address on which a node listens through the relay at `relay` (`…/p2p-circuit`).
pub fn circuit_listen_addr(relay: &Multiaddr) -> Multiaddr {
    relay.clone().with(Protocol::P2pCircuit)
}

/// The address at which `peer` is reachable through the relay at `relay`.
pub fn circuit_addr_of(relay: &Multiaddr, peer: PeerId) -> Multiaddr {
    circuit_listen_addr(relay).with(Protocol::P2p(peer))
}

/// Whether a multiaddr is a WebSocket address a browser can dial.
pub fn is_websocket(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    #[test]
    fn accepts_ws_and_wss_with_peer_id() {
        for a in [
            format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{RELAY}"),
            format!("/dns4/relay.example/tcp/443/wss/p2p/{RELAY}"),
            format!("/dns4/relay.example/tcp/443/tls/ws/p2p/{RELAY}"),
        ] {
            let r = RelayAddr::parse(&a).expect(&a);
            assert_eq!(r.peer_id.to_string(), RELAY);
            assert!(circuit_listen_addr(&r.addr)
                .to_string()
                .ends_with("/p2p-circuit"));
        }
    }

    #[test]
    fn rejects_bad_addresses_with_a_code() {
        for a in [
            "not a multiaddr".to_string(),
            "/ip4/127.0.0.1/tcp/9090/ws".to_string(),
            format!("/ip4/127.0.0.1/tcp/9090/p2p/{RELAY}"),
            format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{RELAY}/p2p-circuit/p2p/{RELAY}"),
            "x".repeat(MAX_MULTIADDR_BYTES + 1),
        ] {
            let e = RelayAddr::parse(&a).expect_err(&a);
            assert_eq!(e.code, ErrorCode::InvalidRelayAddr);
        }
    }
}
