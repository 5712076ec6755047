//! The relay's swarm and its event loop.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use libp2p::{
    core::upgrade,
    core::ConnectedPoint,
    gossipsub::{self, MessageAcceptance},
    identify,
    identity::Keypair,
    metrics::{Metrics, Recorder},
    multiaddr::Protocol,
    noise, relay, request_response,
    swarm::{ListenError, SwarmEvent},
    tcp, websocket, yamux, Multiaddr, PeerId, Swarm, Transport,
};
use peercompute_core::{
    discovery::discovery_topic,
    presence::presence_topic,
    pubsub::app_topic_name,
    relay_addr::is_websocket,
    state::{
        response_budget::ResponseBudget, sync_protocol::state_topic_doc,
        update_check::check_update_v1,
    },
};
use prometheus_client::registry::Registry;
use tokio::sync::{oneshot, Mutex};
use tracing::{debug, info, warn};

/// The address to advertise for a listener configured as `configured` and bound at `bound`:
/// `bound`, or, for a listener on every interface, `configured` with the bound port.
fn advertised(configured: &Multiaddr, bound: &Multiaddr) -> Multiaddr {
    let unspecified = configured.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    });
    let Some(port) = bound.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    }) else {
        return bound.clone();
    };
    if !unspecified {
        return bound.clone();
    }
    configured
        .iter()
        .map(|p| match p {
            Protocol::Tcp(_) => Protocol::Tcp(port),
            other => other,
        })
        .collect()
}

/// Largest WebSocket message the relay reads. Noise frames are at most 64 KiB, and a browser
/// sends what its Noise layer buffered (up to ~192 KiB) as one message.
const MAX_WEBSOCKET_MESSAGE_BYTES: usize = 1024 * 1024;

use crate::{
    behaviour::{RelayBehaviour, RelayBehaviourEvent},
    gossip_check::{Checked, GossipCheck},
    ip_limit::{ip_of, TooManyFromIp},
    pinning::PinnedDocs,
    reservations::Reservations,
    routed_topics::{Admission, RoutedTopics},
    stats::{PeerEntry, Stats},
    RelayConfig,
};

/// A relay swarm that is listening and ready to run.
pub struct RunningSwarm {
    swarm: Swarm<RelayBehaviour>,
    stats: Arc<Mutex<Stats>>,
    metrics: Metrics,
    /// Application and document topics routed here, with who made the relay route them.
    routed_topics: RoutedTopics,
    /// Which connection of which peer holds a reservation (for `/status`).
    reservations: Reservations,
    /// The remote address of each connected peer (its latest connection's): what its
    /// routed topics count against.
    peer_ips: HashMap<PeerId, IpAddr>,
    /// Checks gossip bodies and drops replayed discovery and presence messages.
    gossip_check: GossipCheck,
    /// Documents pinned with `--state-dir`.
    pinned: Option<PinnedDocs>,
    /// Sync answers handed to connections and not yet sent: bounded per peer and in all.
    sync_answers: ResponseBudget<request_response::InboundRequestId>,
}

impl RunningSwarm {
    /// Builds the swarm, binds every listen address and returns the dialable addresses.
    pub async fn start(
        keypair: Keypair,
        config: &RelayConfig,
        stats: Arc<Mutex<Stats>>,
        registry: &mut Registry,
    ) -> anyhow::Result<(RunningSwarm, Vec<Multiaddr>)> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::tls::load(cert, key)?),
            None => None,
        };
        if let Some(addr) = config.listen.iter().find(|a| crate::tls::wants_tls(a)) {
            if tls.is_none() {
                anyhow::bail!("{addr} needs --tls-cert and --tls-key");
            }
        }
        let pinned = match &config.state_dir {
            Some(dir) => Some(PinnedDocs::open(dir, config.max_pinned_bytes)?),
            None => None,
        };
        if let Some(pinned) = &pinned {
            pinned.show(&mut *stats.lock().await, pinned.names());
        }
        let pinning = pinned.is_some();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_other_transport(|key| {
                let mut ws = websocket::Config::new(tcp::tokio::Transport::new(
                    tcp::Config::default().nodelay(true),
                ));
                // The default (256 MiB) is allocated and zeroed as soon as a frame header
                // declares it, before any byte of it arrives or anyone has authenticated.
                ws.set_max_data_size(MAX_WEBSOCKET_MESSAGE_BYTES);
                if let Some(tls) = tls {
                    ws.set_tls_config(tls);
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    ws.upgrade(upgrade::Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()),
                )
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_behaviour(|key| RelayBehaviour::new(key, pinning, config.max_connections_per_ip))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&discovery_topic())?;
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&presence_topic())?;
        let peer_id = *swarm.local_peer_id();
        let mut bound = Vec::new();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .with_context(|| format!("listening on {addr}"))?;
            // Wait for the listener to bind (port 0 resolves to a real port here).
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        bound.push(address);
                        break;
                    }
                    SwarmEvent::ListenerError { error, .. } => {
                        anyhow::bail!("listening on {addr}: {error}")
                    }
                    SwarmEvent::ListenerClosed { reason, .. } => {
                        anyhow::bail!("listening on {addr}: {reason:?}")
                    }
                    _ => {}
                }
            }
        }
        // The relay server offers HOP (reservations) only on a node with a confirmed external
        // address: a relay's listen addresses are, by configuration, reachable.
        for addr in bound.iter().chain(config.external.iter()) {
            swarm.add_external_address(addr.clone());
        }
        // A listener on every interface (`0.0.0.0`, `::`) is advertised as such: browsers
        // dial it at the host they loaded the page from (`/peercompute.json` fills it in),
        // not at whichever interface's address was bound first.
        let dialable: Vec<Multiaddr> = config
            .listen
            .iter()
            .zip(&bound)
            .map(|(configured, bound)| advertised(configured, bound))
            .chain(config.external.iter().cloned())
            .filter(is_websocket)
            .map(|a| a.with(Protocol::P2p(peer_id)))
            .collect();
        for a in &bound {
            info!("listening on {a}");
        }
        let metrics = Metrics::new(registry);
        Ok((
            RunningSwarm {
                swarm,
                stats,
                metrics,
                routed_topics: RoutedTopics::default(),
                peer_ips: HashMap::new(),
                reservations: Reservations::default(),
                gossip_check: GossipCheck::default(),
                pinned,
                sync_answers: ResponseBudget::default(),
            },
            dialable,
        ))
    }

    /// Runs until `shutdown` fires (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                event = self.swarm.select_next_some() => self.on_event(event).await,
            }
        }
        info!("relay stopped");
    }

    async fn on_event(&mut self, event: SwarmEvent<RelayBehaviourEvent>) {
        self.metrics.record(&event);
        let stats = self.stats.clone();
        let mut stats = stats.lock().await;
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                stats.connections += 1;
                self.reservations.connected(peer_id, connection_id);
                let entry = stats
                    .peers
                    .entry(peer_id.to_string())
                    .or_insert_with(|| PeerEntry {
                        connections: 0,
                        addr: String::new(),
                        agent: None,
                    });
                entry.connections += 1;
                entry.addr = endpoint.get_remote_address().to_string();
                if let ConnectedPoint::Listener { send_back_addr, .. } = &endpoint {
                    if let Some(ip) = ip_of(send_back_addr) {
                        self.peer_ips.insert(peer_id, ip);
                    }
                }
                debug!(peer = %peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                stats.connections = stats.connections.saturating_sub(1);
                self.reservations.closed(&peer_id, connection_id);
                self.show_reservation(&peer_id, &mut stats);
                if num_established == 0 {
                    stats.peers.remove(&peer_id.to_string());
                    self.peer_ips.remove(&peer_id);
                    // Gossipsub reports no unsubscribe for a peer that is gone.
                    for topic in self.routed_topics.remove_peer(&peer_id) {
                        self.leave(&topic, &mut stats);
                    }
                } else if let Some(e) = stats.peers.get_mut(&peer_id.to_string()) {
                    e.connections = num_established;
                }
                debug!(peer = %peer_id, "disconnected");
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                send_back_addr,
                ..
            } if cause.downcast_ref::<TooManyFromIp>().is_some() => {
                stats.refused_connections_per_ip += 1;
                debug!(from = %send_back_addr, "refused: {cause}");
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(event)) => {
                self.metrics.record(&event);
                match event {
                    relay::Event::ReservationReqAccepted {
                        src_peer_id,
                        renewed,
                    } => {
                        self.reservations.reserved(&src_peer_id, renewed);
                        self.show_reservation(&src_peer_id, &mut stats);
                    }
                    // Reported for every closed connection of a peer, reservation or not:
                    // `self.reservations` has seen the connection close already.
                    relay::Event::ReservationClosed { .. } => {}
                    relay::Event::ReservationTimedOut { src_peer_id } => {
                        self.reservations.timed_out(&src_peer_id);
                        self.show_reservation(&src_peer_id, &mut stats);
                    }
                    relay::Event::CircuitReqAccepted {
                        src_peer_id,
                        dst_peer_id,
                    } => {
                        stats.circuits += 1;
                        stats.circuits_total += 1;
                        debug!(src = %src_peer_id, dst = %dst_peer_id, "circuit");
                    }
                    relay::Event::CircuitClosed { .. } => {
                        stats.circuits = stats.circuits.saturating_sub(1);
                    }
                    relay::Event::ReservationReqDenied {
                        src_peer_id,
                        status,
                    } => warn!(peer = %src_peer_id, ?status, "reservation denied"),
                    relay::Event::CircuitReqDenied {
                        src_peer_id,
                        dst_peer_id,
                        status,
                    } => debug!(src = %src_peer_id, dst = %dst_peer_id, ?status, "circuit denied"),
                    _ => {}
                }
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Identify(event)) => {
                self.metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    if let Some(e) = stats.peers.get_mut(&peer_id.to_string()) {
                        e.agent = Some(info.agent_version.chars().take(128).collect());
                    }
                }
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Ping(event)) => {
                self.metrics.record(&event);
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Gossipsub(event)) => {
                self.metrics.record(&event);
                self.on_gossip(event, &mut stats);
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::StateSync(event)) => {
                self.on_state_sync(event, &mut stats)
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::Behaviour(RelayBehaviourEvent::PerIp(never)) => match never {},
            _ => {}
        }
    }

    /// `/status` lists `peer` among the reservations when it holds one.
    fn show_reservation(&self, peer: &PeerId, stats: &mut Stats) {
        if self.reservations.holds(peer) {
            stats.reservations.insert(peer.to_string());
        } else {
            stats.reservations.remove(&peer.to_string());
        }
    }

    /// The relay leaves `topic`: nobody wants it any more.
    fn leave(&mut self, topic: &gossipsub::TopicHash, stats: &mut Stats) {
        let t = gossipsub::IdentTopic::new(topic.as_str());
        self.swarm.behaviour_mut().gossipsub.unsubscribe(&t);
        stats.topics = self.routed_topics.len();
    }

    fn on_gossip(&mut self, event: gossipsub::Event, stats: &mut Stats) {
        match event {
            // Route every application and document topic some peer subscribes to (bounded):
            // browser nodes gossip through the relay only (never over circuits, which run
            // through it anyway). Gossipsub's filter has checked the topic (`KnownTopics`).
            gossipsub::Event::Subscribed { peer_id, topic }
                if app_topic_name(topic.as_str()).is_some()
                    || state_topic_doc(topic.as_str()).is_some() =>
            {
                let ip = self.peer_ips.get(&peer_id).copied();
                match self.routed_topics.admit(&peer_id, ip, &topic) {
                    Admission::Join => {}
                    Admission::Route => {
                        let t = gossipsub::IdentTopic::new(topic.as_str());
                        if self.swarm.behaviour_mut().gossipsub.subscribe(&t).is_err() {
                            return;
                        }
                    }
                    Admission::Refuse => {
                        debug!(peer = %peer_id, topic = %topic, "not routing another topic");
                        return;
                    }
                }
                self.routed_topics.add(peer_id, ip, topic);
                stats.topics = self.routed_topics.len();
            }
            // The guard records the unsubscription; the arm runs when nobody wants it now.
            gossipsub::Event::Unsubscribed { peer_id, topic }
                if self.routed_topics.remove(&peer_id, &topic) =>
            {
                self.leave(&topic, stats)
            }
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let now = std::time::Instant::now();
                let accept = |ok: bool| {
                    if ok {
                        MessageAcceptance::Accept
                    } else {
                        MessageAcceptance::Reject
                    }
                };
                let acceptance = match self.gossip_check.check(&message, now) {
                    Checked::Done(acceptance) => acceptance,
                    // A state update is checked whether or not it is pinned here (a relay
                    // at its pinned-document bound does not adopt, but still forwards);
                    // pinning's `apply_broadcast` checks every update, adopted or not.
                    Checked::StateUpdate(doc) => accept(match self.pinned.as_mut() {
                        Some(pinned) => {
                            let ok = pinned.apply_broadcast(doc, &message.data);
                            pinned.show(stats, [doc]);
                            ok
                        }
                        None => check_update_v1(&message.data).is_ok(),
                    }),
                };
                match acceptance {
                    MessageAcceptance::Reject => {
                        stats.rejected_messages += 1;
                        debug!(peer = %propagation_source, "rejected malformed gossip message");
                    }
                    MessageAcceptance::Ignore => {
                        stats.replayed_messages += 1;
                        debug!(peer = %propagation_source, "dropped a replayed gossip message");
                    }
                    MessageAcceptance::Accept => {}
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                let dropped = failed_messages.priority + failed_messages.non_priority;
                stats.slow_peer_drops += dropped as u64;
                debug!(peer = %peer_id, dropped, "gossip messages dropped for a slow peer");
            }
            _ => {}
        }
    }

    /// A node's sync request to the pinning relay: adopt, apply, answer.
    fn on_state_sync(
        &mut self,
        event: request_response::Event<
            peercompute_core::state::sync_protocol::SyncFrame,
            peercompute_core::state::sync_protocol::SyncFrame,
        >,
        stats: &mut Stats,
    ) {
        let Some(pinned) = &mut self.pinned else {
            return;
        };
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                let docs: Vec<String> = request.entries.iter().map(|e| e.doc.clone()).collect();
                let now = std::time::Instant::now();
                let limit = self.sync_answers.available(&peer, now);
                let (response, rejected) = pinned.handle_request(request, limit);
                if rejected > 0 {
                    debug!(%peer, rejected, "refused parts of a sync request");
                }
                pinned.show(stats, docs.iter().map(String::as_str));
                let bytes = response.encoded_len();
                if let Some(sync) = self.swarm.behaviour_mut().state_sync.as_mut() {
                    if sync.send_response(channel, response).is_ok() {
                        self.sync_answers.spend(peer, request_id, bytes, now);
                    }
                }
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.sync_answers.settle(&request_id);
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.sync_answers.settle(&request_id);
                debug!(%peer, "sync request failed: {error}");
            }
            _ => {}
        }
        stats.sync_answer_bytes = self.sync_answers.in_flight_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_every_interface_is_advertised_as_such_with_its_port() {
        let addr = |s: &str| s.parse::<Multiaddr>().unwrap();
        let bound = addr("/ip4/127.0.0.1/tcp/40123/ws");
        assert_eq!(
            advertised(&addr("/ip4/0.0.0.0/tcp/0/ws"), &bound),
            addr("/ip4/0.0.0.0/tcp/40123/ws")
        );
        assert_eq!(
            advertised(
                &addr("/ip6/::/tcp/0/tls/ws"),
                &addr("/ip6/::1/tcp/443/tls/ws")
            ),
            addr("/ip6/::/tcp/443/tls/ws")
        );
        assert_eq!(
            advertised(&addr("/ip4/127.0.0.1/tcp/0/ws"), &bound),
            bound,
            "a given interface is advertised as bound"
        );
    }
}
