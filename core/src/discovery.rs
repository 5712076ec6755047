//! Discovery of browser nodes: a signed gossipsub announcement on [`DISCOVERY_TOPIC`].
//!
//! Browsers cannot listen for connections, so each node announces the circuit addresses at
//! which it is reachable through its relays (`/…/p2p/<relay>/p2p-circuit/p2p/<self>`). The
//! announcing peer is the gossipsub message's signed `source`, never a field of the body, so a
//! peer cannot announce addresses for someone else.
//!
//! Wire format: JSON `{"v":1,"addrs":["<multiaddr>", …],"compute":{…}}`, at most
//! [`MAX_ANNOUNCEMENT_BYTES`] bytes and [`MAX_ANNOUNCED_ADDRS`] addresses. `compute` (optional)
//! advertises what chunks the node takes: CPU slots, a WebGPU adapter, a measured speed score
//! and its current load.

use libp2p::{gossipsub::IdentTopic, multiaddr::Protocol, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::{
    error::ErrorCode,
    limits::{MAX_ANNOUNCED_ADDRS, MAX_ANNOUNCEMENT_BYTES},
    relay_addr::is_websocket,
    NodeError,
};

/// Gossipsub topic of discovery announcements.
pub const DISCOVERY_TOPIC: &str = "pc/discovery/1";

/// The discovery topic.
pub fn discovery_topic() -> IdentTopic {
    IdentTopic::new(DISCOVERY_TOPIC)
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    addrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compute: Option<Capabilities>,
}

/// What compute work a node takes from peers.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// CPU chunks it runs at once (0: none).
    pub cpu: u32,
    /// It has a WebGPU (or native wgpu) adapter.
    pub gpu: bool,
    /// Measured speed (built-in mandelbrot, Mcells/s).
    pub score: f64,
    /// Current load, 0 to 1.
    pub load: f64,
}

impl Capabilities {
    /// Clamps what a peer claims into sane ranges.
    fn sanitized(self) -> Capabilities {
        let finite = |v: f64, max: f64| {
            if v.is_finite() {
                v.clamp(0.0, max)
            } else {
                0.0
            }
        };
        Capabilities {
            cpu: self.cpu.min(256),
            gpu: self.gpu,
            score: finite(self.score, 1e6),
            load: finite(self.load, 1.0),
        }
    }
}

/// A validated announcement: circuit addresses of `source`, and what it computes.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    /// Circuit addresses, each ending in `/p2p-circuit/p2p/<source>`.
    pub addrs: Vec<Multiaddr>,
    /// Compute capabilities, when it takes chunks.
    pub compute: Option<Capabilities>,
}

impl Announcement {
    /// Encodes the announcement.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            v: 1,
            addrs: self.addrs.iter().map(ToString::to_string).collect(),
            compute: self.compute,
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Decodes an announcement signed by `source`, keeping only addresses that are circuit
    /// addresses of `source` over a WebSocket relay.
    pub fn decode(bytes: &[u8], source: PeerId) -> Result<Announcement, NodeError> {
        let bad = |m: String| NodeError::new(ErrorCode::BadRequest, m);
        if bytes.len() > MAX_ANNOUNCEMENT_BYTES {
            return Err(bad(format!("announcement of {} bytes", bytes.len())));
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if wire.v != 1 {
            return Err(bad(format!("announcement version {}", wire.v)));
        }
        if wire.addrs.len() > MAX_ANNOUNCED_ADDRS {
            return Err(bad(format!("{} addresses", wire.addrs.len())));
        }
        let addrs: Vec<Multiaddr> = wire
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter(|a| is_circuit_addr_of(a, source) && is_websocket(a))
            .collect();
        if addrs.is_empty() {
            return Err(bad("no usable circuit address".into()));
        }
        Ok(Announcement {
            addrs,
            compute: wire.compute.map(Capabilities::sanitized),
        })
    }
}

fn is_circuit_addr_of(addr: &Multiaddr, peer: PeerId) -> bool {
    let parts: Vec<_> = addr.iter().collect();
    matches!(
        parts.as_slice(),
        [.., Protocol::P2p(_), Protocol::P2pCircuit, Protocol::P2p(p)] if *p == peer
    )
}

/// The relay a circuit address goes through (`…/p2p/<relay>/p2p-circuit/p2p/<peer>`). Only
/// its peer id is used: a node dials a peer at its own address of that relay, so an
/// announcement can choose among the relays a node uses but never name a host to dial.
pub fn circuit_relay(addr: &Multiaddr) -> Option<PeerId> {
    let parts: Vec<_> = addr.iter().collect();
    match parts.as_slice() {
        [.., Protocol::P2p(relay), Protocol::P2pCircuit, Protocol::P2p(_)] => Some(*relay),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(relay: PeerId, peer: PeerId) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{relay}/p2p-circuit/p2p/{peer}")
            .parse()
            .expect("valid")
    }

    #[test]
    fn round_trip_keeps_only_the_sources_circuit_addrs() {
        let (relay, me, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        let a = Announcement {
            addrs: vec![
                circuit(relay, me),
                circuit(relay, other),
                "/ip4/1.2.3.4/tcp/1/p2p-circuit".parse().expect("valid"),
            ],
            compute: Some(Capabilities {
                cpu: 100_000,
                gpu: true,
                score: 1e9,
                load: 0.5,
            }),
        };
        let back = Announcement::decode(&a.encode(), me).expect("decodes");
        assert_eq!(back.addrs, vec![circuit(relay, me)]);
        let caps = back.compute.expect("capabilities");
        assert_eq!(
            (caps.cpu, caps.gpu, caps.score, caps.load),
            (256, true, 1e6, 0.5)
        );
        assert!(Announcement::decode(&a.encode(), PeerId::random()).is_err());
    }

    #[test]
    fn rejects_hostile_input() {
        let me = PeerId::random();
        for bytes in [
            b"".to_vec(),
            b"{".to_vec(),
            br#"{"v":2,"addrs":[]}"#.to_vec(),
            vec![b' '; MAX_ANNOUNCEMENT_BYTES + 1],
            serde_json::to_vec(&Wire {
                v: 1,
                addrs: vec![circuit(PeerId::random(), me).to_string(); MAX_ANNOUNCED_ADDRS + 1],
                compute: None,
            })
            .expect("json"),
        ] {
            assert!(Announcement::decode(&bytes, me).is_err());
        }
    }
}
