//! The node event loop: tabs' requests in, swarm events, replies and events out.
//!
//! One [`Node`] runs per origin (in the SharedWorker) or per native process. It owns the swarm,
//! keeps relay connections up (re-dialing with backoff), holds a reservation at each relay so
//! other nodes can reach it through `/p2p-circuit`, discovers other nodes from signed
//! announcements and connects to them through the relay, and routes application pubsub between
//! the network and the attached tabs.

mod compute;
mod presence;
mod state;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures::{FutureExt, Stream, StreamExt};
use libp2p::{
    core::ConnectedPoint,
    gossipsub::{self, MessageAcceptance, PublishError},
    identity::Keypair,
    ping, relay,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use tracing::{debug, info, warn};
use web_time::Instant;

use crate::{
    backoff::Backoff,
    behaviour::{NodeBehaviour, NodeBehaviourEvent},
    circuit_policy::is_circuit,
    discovery::{discovery_topic, Announcement, DISCOVERY_TOPIC},
    error::ErrorCode,
    limits::{
        DEFAULT_CONNECT_TIMEOUT, MAX_CIRCUIT_PEERS, MAX_CONNECT_TIMEOUT, MAX_INBOUND_CIRCUIT_PEERS,
        MAX_KNOWN_PEERS, MAX_LINGERING_TOPICS, MAX_NODE_APP_TOPICS, MAX_RELAYS,
        MAX_SUBSCRIPTIONS_PER_TAB, STABLE_CONNECTION,
    },
    presence::{presence_topic, PRESENCE_TOPIC},
    pubsub::{app_topic, app_topic_name, Payload},
    relay_addr::{circuit_addr_of, circuit_listen_addr, RelayAddr},
    replay::ReplayGuard,
    state::sync_protocol::state_topic_doc,
    tab_protocol::{
        Event, PeerStatus, PublishReceipt, RelayStatus, ReplyValue, Request, RequestId, Status,
        TabId,
    },
    NodeError,
};

/// Tunables of the node loop.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// A connection with no open stream and no keep-alive reason closes after this long.
    /// Relay connections stay up through the reservation, peer connections through gossipsub's
    /// long-lived streams; this only reaps connections nothing uses.
    pub idle_connection_timeout: Duration,
    /// How often this node re-announces its circuit addresses.
    pub announce_interval: Duration,
    /// A peer not announced for this long, and not connected, is forgotten.
    pub peer_ttl: Duration,
    /// First and longest delay between relay re-dials.
    pub relay_backoff: (Duration, Duration),
    /// First and longest delay between peer re-dials.
    pub peer_backoff: (Duration, Duration),
    /// Housekeeping period (timeouts, re-dials, announcements).
    pub tick: Duration,
    /// A topic no tab subscribes to any more stays subscribed on the network this long, so a
    /// tab that subscribes again soon (a re-mounted component, a reload) finds it as it was.
    /// Leaving and rejoining at once would cost seconds of late messages: a node that leaves
    /// a topic's mesh announces a backoff during which neither side re-grafts, and until
    /// then messages reach it only as gossip, up to a heartbeat late each.
    pub topic_linger: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            idle_connection_timeout: Duration::from_secs(60),
            announce_interval: Duration::from_secs(10),
            peer_ttl: Duration::from_secs(35),
            relay_backoff: (Duration::from_millis(250), Duration::from_secs(3)),
            peer_backoff: (Duration::from_millis(500), Duration::from_secs(10)),
            tick: Duration::from_millis(100),
            topic_linger: Duration::from_secs(15),
        }
    }
}

/// What the host feeds into the node.
#[derive(Debug)]
pub enum Input {
    /// A tab attached.
    Attach(TabId),
    /// A tab went away (closed, or its lock was released).
    Detach(TabId),
    /// A decoded request from a tab.
    Request {
        /// Which tab.
        tab: TabId,
        /// Its request id.
        id: RequestId,
        /// The request.
        request: Request,
    },
    /// The answer to [`Output::LoadDoc`]: the document's stored records, in order.
    DocLoaded {
        /// Document name.
        doc: String,
        /// Stored Yjs v1 updates, oldest first.
        records: Vec<Vec<u8>>,
        /// Why storage could not be read, if it could not (the document opens empty).
        error: Option<String>,
    },
    /// What the host's executors can run now (reported again whenever it changes).
    Executors {
        /// CPU chunks it runs at once.
        cpu_slots: u32,
        /// The GPU adapter WGSL chunks run on, if any.
        gpu: Option<crate::tab_protocol::GpuAdapter>,
        /// Measured speed ([`crate::compute::kernels::benchmark_score`]).
        score: f64,
    },
    /// The answer to [`Output::RunChunk`].
    ChunkDone {
        /// The job number.
        job: u64,
        /// The chunk's result bytes, or why it failed.
        result: Result<Vec<u8>, NodeError>,
    },
}

/// Queues an input that must not be lost to a full queue: a tab attached or gone, a chunk's
/// result, the executors' report. Tabs' requests may fill the queue (they get `BUSY`), but
/// dropping one of these would leave a closed tab attached for good, or a chunk waiting out
/// its timeout. Each clone of a bounded `futures` `Sender` owns one guaranteed slot (the
/// channel's capacity is its buffer plus its senders), so a fresh clone's `try_send` fails
/// only once the node loop has stopped. The order with earlier requests is kept; how many of
/// these there can be is bounded by tabs and jobs, not by what tabs send.
pub fn queue_lifecycle(
    inputs: &futures::channel::mpsc::Sender<Input>,
    input: Input,
) -> Result<(), Input> {
    inputs
        .clone()
        .try_send(input)
        .map_err(futures::channel::mpsc::TrySendError::into_inner)
}

/// What the node asks the host to deliver.
#[derive(Debug)]
pub enum Output {
    /// The one reply to a request.
    Reply {
        /// Which tab.
        tab: TabId,
        /// The request id.
        id: RequestId,
        /// Value or error.
        result: Result<ReplyValue, NodeError>,
    },
    /// An event for one tab.
    Event {
        /// Which tab.
        tab: TabId,
        /// The event.
        event: Event,
    },
    /// The tab is gone: the host may release its port (after any reply emitted before this).
    Forget {
        /// Which tab.
        tab: TabId,
    },
    /// Read a document's stored records and answer with [`Input::DocLoaded`].
    LoadDoc {
        /// Document name.
        doc: String,
    },
    /// Append an update to a document's stored records; once it is durable, deliver `then`
    /// (when the write fails, deliver its replies as `STATE_PERSIST_FAILED` errors instead).
    /// Writes must complete in the order they are emitted.
    Persist {
        /// Document name.
        doc: String,
        /// A Yjs v1 update.
        update: Vec<u8>,
        /// Outputs held back until the update is durable.
        then: Vec<Output>,
    },
    /// Replace all of a document's stored records (those emitted before this) by `state`.
    Compact {
        /// Document name.
        doc: String,
        /// The whole document as one Yjs v1 update.
        state: Vec<u8>,
    },
    /// Run a chunk on an executor and answer with [`Input::ChunkDone`].
    RunChunk {
        /// The job number, echoed in the answer.
        job: u64,
        /// What to run.
        chunk: crate::compute::task::ChunkJob,
    },
    /// The result of a job is no longer wanted: stop it if possible (an answer that still
    /// comes is ignored).
    AbortChunk {
        /// The job number.
        job: u64,
    },
}

/// One relay, known by its peer id, reachable at one or more addresses.
struct Relay {
    peer_id: PeerId,
    addrs: Vec<Multiaddr>,
    /// The address of the live connection; circuits are announced through it.
    connected_addr: Option<Multiaddr>,
    connected: bool,
    reserved: bool,
    listener: Option<libp2p::core::transport::ListenerId>,
    backoff: Backoff,
    /// When to dial (or listen) next; `None` while a dial is in flight or the relay is up.
    next_attempt: Option<Instant>,
    reconnects: u32,
    ever_connected: bool,
}

struct Peer {
    addrs: Vec<Multiaddr>,
    last_seen: Instant,
    connections: u32,
    /// A dial is in flight: counted against `MAX_CIRCUIT_PEERS` like a connection.
    dialing: bool,
    /// When its circuit came up: one that closes sooner than `STABLE_CONNECTION` does not
    /// reset the redial backoff (a peer that accepts and drops at once is not redialed
    /// every half second).
    connected_since: Option<Instant>,
    rtt: Option<Duration>,
    backoff: Backoff,
    next_dial: Instant,
    /// What it computes, from its announcements.
    compute: Option<crate::discovery::Capabilities>,
}

impl Peer {
    fn new(now: Instant, (initial, max): (Duration, Duration)) -> Self {
        Peer {
            addrs: Vec::new(),
            last_seen: now,
            connections: 0,
            dialing: false,
            connected_since: None,
            rtt: None,
            backoff: Backoff::new(initial, max),
            next_dial: now,
            compute: None,
        }
    }
}

struct PendingConnect {
    tab: TabId,
    id: RequestId,
    deadline: Instant,
    timeout: Duration,
}

/// A PeerCompute node.
pub struct Node {
    swarm: Swarm<NodeBehaviour>,
    config: NodeConfig,
    started: Instant,
    tabs: HashMap<TabId, HashSet<String>>,
    /// Topics no tab wants, still subscribed until the instant (see `topic_linger`).
    lingering_topics: HashMap<String, Instant>,
    relays: Vec<Relay>,
    peers: HashMap<PeerId, Peer>,
    pending_connects: Vec<PendingConnect>,
    last_announce: Option<Instant>,
    announce_wanted: bool,
    /// Announcements' senders' last gossip sequence numbers: a replayed one (its peer's old
    /// addresses or compute capabilities) is dropped.
    announcement_replays: ReplayGuard,
    status_dirty: bool,
    state: state::NodeState,
    presence: presence::NodePresence,
    compute: compute::NodeCompute,
    /// Outputs produced where no sink is at hand; delivered after the current event.
    pending_outputs: Vec<Output>,
}

impl Node {
    /// Wraps a swarm built by [`crate::transport::build_swarm`].
    pub fn new(mut swarm: Swarm<NodeBehaviour>, config: NodeConfig) -> Result<Self, NodeError> {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&discovery_topic())
            .map_err(|e| NodeError::new(ErrorCode::Internal, e.to_string()))?;
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&presence_topic())
            .map_err(|e| NodeError::new(ErrorCode::Internal, e.to_string()))?;
        Ok(Node {
            swarm,
            config,
            started: Instant::now(),
            tabs: HashMap::new(),
            lingering_topics: HashMap::new(),
            relays: Vec::new(),
            peers: HashMap::new(),
            pending_connects: Vec::new(),
            last_announce: None,
            announce_wanted: false,
            announcement_replays: ReplayGuard::new(2 * MAX_KNOWN_PEERS),
            status_dirty: false,
            state: state::NodeState::new(),
            presence: presence::NodePresence::new(),
            compute: compute::NodeCompute::new(),
            pending_outputs: Vec::new(),
        })
    }

    /// Builds a native node from a keypair.
    #[cfg(not(wasm_browser))]
    pub async fn native(keypair: Keypair, config: NodeConfig) -> Result<Self, NodeError> {
        let swarm = crate::transport::build_swarm(keypair, config.idle_connection_timeout)
            .await
            .map_err(|e| NodeError::new(ErrorCode::Internal, e.to_string()))?;
        Node::new(swarm, config)
    }

    /// Builds a browser node from a keypair.
    #[cfg(wasm_browser)]
    pub fn browser(keypair: Keypair, config: NodeConfig) -> Result<Self, NodeError> {
        let swarm = crate::transport::build_swarm(keypair, config.idle_connection_timeout)
            .map_err(|e| NodeError::new(ErrorCode::Internal, e.to_string()))?;
        Node::new(swarm, config)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Runs until `inputs` ends. `sink` receives every reply and event; it must not block.
    /// Cancel-safe at every await point: dropping the future drops the node.
    pub async fn run(
        mut self,
        inputs: impl Stream<Item = Input> + Unpin,
        mut sink: impl FnMut(Output),
    ) {
        let mut inputs = inputs.fuse();
        let mut tick = futures_timer::Delay::new(self.config.tick);
        loop {
            // Local work (tabs) before new remote work (swarm).
            futures::select_biased! {
                input = inputs.next() => match input {
                    Some(input) => self.on_input(input, &mut sink),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event, &mut sink),
                _ = (&mut tick).fuse() => {
                    self.on_tick(&mut sink);
                    tick.reset(self.config.tick);
                }
            }
            for output in std::mem::take(&mut self.pending_outputs) {
                sink(output);
            }
            if std::mem::take(&mut self.status_dirty) {
                let status = self.status();
                for &tab in self.tabs.keys() {
                    sink(Output::Event {
                        tab,
                        event: Event::Status(Box::new(status.clone())),
                    });
                }
            }
        }
    }

    // ---------------------------------------------------------------- tabs

    fn on_input(&mut self, input: Input, sink: &mut impl FnMut(Output)) {
        match input {
            Input::Attach(tab) => {
                self.tabs.entry(tab).or_default();
            }
            Input::Detach(tab) => {
                self.detach(tab, sink);
                sink(Output::Forget { tab });
            }
            Input::Request { tab, id, request } => {
                // A tab is known from its attach (the host sends one first) to its detach. A
                // request sent before a detach went through must not bring the tab back: no
                // second detach would come, and what it subscribed would stay for good.
                if !self.tabs.contains_key(&tab) && !matches!(request, Request::Detach) {
                    let result = Err(NodeError::new(
                        ErrorCode::BadRequest,
                        "this tab has detached from the node",
                    ));
                    sink(Output::Reply { tab, id, result });
                    return;
                }
                let detaching = matches!(request, Request::Detach);
                if let Some(result) = self.on_request(tab, id, request, sink) {
                    sink(Output::Reply { tab, id, result });
                }
                if detaching {
                    sink(Output::Forget { tab });
                }
            }
            Input::DocLoaded {
                doc,
                records,
                error,
            } => self.on_doc_loaded(doc, records, error, sink),
            Input::Executors {
                cpu_slots,
                gpu,
                score,
            } => self.on_executors(cpu_slots, gpu, score),
            Input::ChunkDone { job, result } => self.on_chunk_done(job, result, sink),
        }
    }

    fn detach(&mut self, tab: TabId, sink: &mut impl FnMut(Output)) {
        self.compute_forget_tab(tab, sink);
        if let Some(topics) = self.tabs.remove(&tab) {
            for topic in topics {
                self.release_topic(&topic);
            }
        }
        self.pending_connects.retain(|p| p.tab != tab);
        self.state.forget_tab(tab);
        debug!(tab, "tab detached");
    }

    /// Handles a request; `None` means the reply comes later (connect, task submit, and
    /// state requests that wait for a load or a durable write).
    fn on_request(
        &mut self,
        tab: TabId,
        id: RequestId,
        request: Request,
        sink: &mut impl FnMut(Output),
    ) -> Option<Result<ReplyValue, NodeError>> {
        Some(match request {
            Request::Connect {
                relays,
                timeout_ms,
                wait,
                root_key,
            } => {
                if let Some(key) = root_key {
                    if let Err(e) = self.compute.set_root_key(&key) {
                        return Some(Err(e));
                    }
                }
                return self.connect(tab, id, relays, timeout_ms, wait);
            }
            Request::Status => Ok(ReplyValue::Status(Box::new(self.status()))),
            Request::Peers => Ok(ReplyValue::Peers(self.peer_list())),
            Request::Publish { topic, json, bytes } => Request::publish_payload(json, bytes)
                .and_then(|payload| self.publish(tab, &topic, payload, sink)),
            Request::Subscribe { topic } => self.subscribe(tab, topic),
            Request::Unsubscribe { topic } => {
                if self
                    .tabs
                    .get_mut(&tab)
                    .is_some_and(|topics| topics.remove(&topic))
                {
                    self.release_topic(&topic);
                }
                Ok(ReplyValue::Done)
            }
            Request::Attach { .. } => Ok(ReplyValue::Attached {
                peer_id: self.peer_id().to_string(),
            }),
            Request::Ping => Ok(ReplyValue::Pong { pong: true }),
            Request::Detach => {
                self.detach(tab, sink);
                Ok(ReplyValue::Done)
            }
            Request::TaskSubmit { task } => return self.submit_task(tab, id, *task),
            Request::TaskCancel { task } => self.cancel_task(tab, &task, sink),
            Request::PresenceSet { json } => self.set_presence(&json, sink),
            Request::PresenceGet => Ok(self.presence_json()),
            state_request => return self.on_state_request(tab, id, state_request, sink),
        })
    }

    fn connect(
        &mut self,
        tab: TabId,
        id: RequestId,
        relays: Vec<String>,
        timeout_ms: Option<u32>,
        wait: bool,
    ) -> Option<Result<ReplyValue, NodeError>> {
        let parsed: Result<Vec<RelayAddr>, NodeError> =
            relays.iter().map(|r| RelayAddr::parse(r)).collect();
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let now = Instant::now();
        let known_addrs: usize = self.relays.iter().map(|r| r.addrs.len()).sum();
        let new: Vec<RelayAddr> = parsed
            .into_iter()
            .filter(|r| !self.relays.iter().any(|k| k.addrs.contains(&r.addr)))
            .collect();
        if known_addrs + new.len() > MAX_RELAYS {
            return Some(Err(NodeError::new(
                ErrorCode::InvalidRelayAddr,
                format!("a node keeps at most {MAX_RELAYS} relay addresses"),
            )));
        }
        if self.relays.is_empty() && new.is_empty() && wait {
            return Some(Err(NodeError::new(
                ErrorCode::InvalidRelayAddr,
                "no relay address given and none configured",
            )));
        }
        for RelayAddr { addr, peer_id } in new {
            info!(relay = %addr, "adding relay address");
            match self.relays.iter_mut().find(|r| r.peer_id == peer_id) {
                Some(relay) => {
                    relay.addrs.push(addr);
                    if !relay.connected {
                        relay.next_attempt = Some(now);
                    }
                }
                None => self.relays.push(Relay {
                    peer_id,
                    addrs: vec![addr],
                    connected_addr: None,
                    connected: false,
                    reserved: false,
                    listener: None,
                    backoff: Backoff::new(self.config.relay_backoff.0, self.config.relay_backoff.1),
                    next_attempt: Some(now),
                    reconnects: 0,
                    ever_connected: false,
                }),
            }
        }
        self.drive_relays(now);
        if self.is_online() || !wait {
            return Some(Ok(self.connected_reply()));
        }
        let timeout = timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            .min(MAX_CONNECT_TIMEOUT);
        self.pending_connects.push(PendingConnect {
            tab,
            id,
            deadline: now + timeout,
            timeout,
        });
        None
    }

    fn connected_reply(&self) -> ReplyValue {
        ReplyValue::Connected {
            peer_id: self.peer_id().to_string(),
        }
    }

    fn subscribe(&mut self, tab: TabId, topic: String) -> Result<ReplyValue, NodeError> {
        let newly_wanted = !self.tabs.values().any(|t| t.contains(&topic));
        let topics = self.tabs.entry(tab).or_default();
        if topics.len() >= MAX_SUBSCRIPTIONS_PER_TAB && !topics.contains(&topic) {
            return Err(NodeError::new(
                ErrorCode::TooManySubscriptions,
                format!("a tab may subscribe to at most {MAX_SUBSCRIPTIONS_PER_TAB} topics"),
            ));
        }
        if newly_wanted && !self.lingering_topics.contains_key(&topic) {
            // Peers keep at most `MAX_PEER_TOPICS` of a node's topics: past that they would
            // ignore its subscriptions. A lingering topic gives way first.
            let wanted: HashSet<&String> = self.tabs.values().flatten().collect();
            if wanted.len() + self.lingering_topics.len() >= MAX_NODE_APP_TOPICS {
                let soonest_due = self
                    .lingering_topics
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(t, _)| t.clone());
                match soonest_due {
                    Some(t) => {
                        self.lingering_topics.remove(&t);
                        self.leave_topic(&t);
                    }
                    None => {
                        return Err(NodeError::new(
                            ErrorCode::TooManySubscriptions,
                            format!(
                                "a node subscribes to at most {MAX_NODE_APP_TOPICS} topics, \
                                 all its tabs together"
                            ),
                        ))
                    }
                }
            }
        }
        let topics = self.tabs.entry(tab).or_default();
        topics.insert(topic.clone());
        // A lingering topic is still subscribed (gossipsub ignores the repeat).
        self.lingering_topics.remove(&topic);
        if newly_wanted {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&app_topic(&topic))
                .map_err(|e| NodeError::new(ErrorCode::Internal, e.to_string()))?;
        }
        Ok(ReplyValue::Done)
    }

    /// Once no tab wants the topic, leaves it after `topic_linger` (at once when that is zero
    /// or too many topics linger already).
    fn release_topic(&mut self, topic: &str) {
        if self.tabs.values().any(|t| t.contains(topic)) {
            return;
        }
        let linger = self.config.topic_linger;
        if linger.is_zero() || self.lingering_topics.len() >= MAX_LINGERING_TOPICS {
            self.leave_topic(topic);
        } else {
            self.lingering_topics
                .insert(topic.to_string(), Instant::now() + linger);
        }
    }

    /// Leaves the topics whose linger is over.
    fn leave_lingering_topics(&mut self, now: Instant) {
        let due: Vec<String> = self
            .lingering_topics
            .iter()
            .filter(|(_, &until)| until <= now)
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in due {
            self.lingering_topics.remove(&topic);
            self.leave_topic(&topic);
        }
    }

    fn leave_topic(&mut self, topic: &str) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .unsubscribe(&app_topic(topic));
    }

    fn publish(
        &mut self,
        from_tab: TabId,
        topic: &str,
        payload: Payload,
        sink: &mut impl FnMut(Output),
    ) -> Result<ReplyValue, NodeError> {
        let wire_topic = app_topic(topic);
        let hash = wire_topic.hash();
        let peers = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .count();
        let sent = match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(wire_topic, payload.encode())
        {
            Ok(_) => peers,
            Err(PublishError::NoPeersSubscribedToTopic) => 0,
            Err(PublishError::MessageTooLarge) => {
                return Err(NodeError::new(
                    ErrorCode::PayloadTooLarge,
                    "message too large",
                ))
            }
            Err(PublishError::AllQueuesFull(_)) => {
                return Err(NodeError::new(
                    ErrorCode::Busy,
                    "every peer's send queue is full; try again",
                ))
            }
            Err(e) => return Err(NodeError::new(ErrorCode::Internal, e.to_string())),
        };
        let me = self.peer_id().to_string();
        let mut local_tabs = 0;
        for (&tab, topics) in &self.tabs {
            if tab != from_tab && topics.contains(topic) {
                local_tabs += 1;
                sink(Output::Event {
                    tab,
                    event: Event::Message {
                        topic: topic.to_string(),
                        from: me.clone(),
                        payload: payload.clone(),
                        local: true,
                    },
                });
            }
        }
        Ok(ReplyValue::Published(PublishReceipt {
            peers: sent,
            local_tabs,
        }))
    }

    // ---------------------------------------------------------------- status

    fn is_online(&self) -> bool {
        self.relays.iter().any(|r| r.reserved)
    }

    /// The node's status as tabs see it.
    pub fn status(&self) -> Status {
        let mut topics: Vec<String> = self
            .tabs
            .values()
            .flatten()
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        topics.sort();
        Status {
            peer_id: self.peer_id().to_string(),
            online: self.is_online(),
            relays: self
                .relays
                .iter()
                .map(|r| RelayStatus {
                    peer_id: r.peer_id.to_string(),
                    addr: r.connected_addr.as_ref().unwrap_or(&r.addrs[0]).to_string(),
                    addrs: r.addrs.iter().map(ToString::to_string).collect(),
                    connected: r.connected,
                    reserved: r.reserved,
                    reconnects: r.reconnects,
                })
                .collect(),
            connected_peers: self.peers.values().filter(|p| p.connections > 0).count(),
            known_peers: self.peers.len(),
            connections: self
                .swarm
                .network_info()
                .connection_counters()
                .num_established() as usize,
            topics,
            documents: self.state.documents(),
            tabs: self.tabs.len(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            compute: self.compute.status(),
        }
    }

    fn peer_list(&self) -> Vec<PeerStatus> {
        let mut list: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(id, p)| PeerStatus {
                peer_id: id.to_string(),
                connected: p.connections > 0,
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                compute: p.compute,
            })
            .collect();
        list.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        list
    }

    fn broadcast(&self, event: Event, sink: &mut impl FnMut(Output)) {
        for &tab in self.tabs.keys() {
            sink(Output::Event {
                tab,
                event: event.clone(),
            });
        }
    }

    // ---------------------------------------------------------------- housekeeping

    fn on_tick(&mut self, sink: &mut impl FnMut(Output)) {
        let now = Instant::now();
        self.drive_relays(now);
        self.expire_connects(now, sink);
        self.expire_peers(now);
        self.dial_peers(now);
        self.resync_tick(now);
        self.presence_tick(now, sink);
        self.compute_tick(now, sink);
        self.leave_lingering_topics(now);
        let periodic = self
            .last_announce
            .is_none_or(|t| now.duration_since(t) >= self.config.announce_interval);
        if self.announce_wanted || periodic {
            self.announce(now);
        }
    }

    /// Dials relays that are down and due, and listens through relays that are up.
    fn drive_relays(&mut self, now: Instant) {
        for relay in &mut self.relays {
            let due = relay.next_attempt.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            relay.next_attempt = None;
            if !relay.connected {
                debug!(relay = %relay.peer_id, "dialing relay");
                let opts = DialOpts::peer_id(relay.peer_id)
                    .addresses(relay.addrs.clone())
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    warn!(relay = %relay.peer_id, "dial failed: {e}");
                    relay.next_attempt = Some(now + relay.backoff.next_delay());
                }
            } else if let (None, Some(addr)) = (relay.listener, &relay.connected_addr) {
                match self.swarm.listen_on(circuit_listen_addr(addr)) {
                    Ok(id) => relay.listener = Some(id),
                    Err(e) => {
                        warn!(relay = %relay.peer_id, "listening through relay failed: {e}");
                        relay.next_attempt = Some(now + relay.backoff.next_delay());
                    }
                }
            }
        }
    }

    fn expire_connects(&mut self, now: Instant, sink: &mut impl FnMut(Output)) {
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_connects)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.pending_connects = waiting;
        for p in expired {
            sink(Output::Reply {
                tab: p.tab,
                id: p.id,
                result: Err(NodeError::new(
                    ErrorCode::ConnectTimeout,
                    format!(
                        "no relay reachable within {} ms; the node keeps retrying in the background",
                        p.timeout.as_millis()
                    ),
                )),
            });
        }
    }

    fn expire_peers(&mut self, now: Instant) {
        let ttl = self.config.peer_ttl;
        self.peers
            .retain(|_, p| p.connections > 0 || now.duration_since(p.last_seen) < ttl);
    }

    /// Opens circuits to known peers. Of two peers, the one with the smaller id dials, so a
    /// pair never races into two connections.
    fn dial_peers(&mut self, now: Instant) {
        let me = self.peer_id();
        // Through the relays this node is connected to, at its own address of each: the
        // announcement only says which of them the peer listens through.
        let relays: HashMap<PeerId, &Multiaddr> = self
            .relays
            .iter()
            .filter(|r| r.connected)
            .filter_map(|r| Some((r.peer_id, r.connected_addr.as_ref()?)))
            .collect();
        if relays.is_empty() {
            return;
        }
        let mut busy = self
            .peers
            .values()
            .filter(|p| p.connections > 0 || p.dialing)
            .count();
        for (id, peer) in &mut self.peers {
            if busy >= MAX_CIRCUIT_PEERS {
                break;
            }
            if peer.connections > 0 || peer.dialing || peer.next_dial > now || me >= *id {
                continue;
            }
            let mut addrs: Vec<Multiaddr> = Vec::new();
            for relay in peer
                .addrs
                .iter()
                .filter_map(crate::discovery::circuit_relay)
            {
                if let Some(relay_addr) = relays.get(&relay) {
                    let addr = circuit_addr_of(relay_addr, *id);
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
            }
            if addrs.is_empty() {
                continue;
            }
            peer.next_dial = now + peer.backoff.next_delay();
            let opts = DialOpts::peer_id(*id)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(peer = %id, "dial: {e}");
            } else {
                peer.dialing = true;
                busy += 1;
            }
        }
    }

    fn announce(&mut self, now: Instant) {
        let me = self.peer_id();
        let addrs: Vec<Multiaddr> = self
            .relays
            .iter()
            .filter(|r| r.reserved)
            .filter_map(|r| r.connected_addr.as_ref())
            .map(|addr| circuit_addr_of(addr, me))
            .collect();
        if addrs.is_empty() {
            return;
        }
        if self
            .last_announce
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return; // rate limit; `announce_wanted` stays set
        }
        let bytes = Announcement {
            addrs,
            compute: self.compute.capabilities(),
        }
        .encode();
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(discovery_topic(), bytes)
        {
            Ok(_) => {
                self.last_announce = Some(now);
                self.announce_wanted = false;
            }
            Err(e) => debug!("announce not sent yet: {e}"),
        }
    }

    // ---------------------------------------------------------------- swarm

    fn relay_index(&self, peer: &PeerId) -> Option<usize> {
        self.relays.iter().position(|r| r.peer_id == *peer)
    }

    fn on_swarm_event(
        &mut self,
        event: SwarmEvent<NodeBehaviourEvent>,
        sink: &mut impl FnMut(Output),
    ) {
        let now = Instant::now();
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if let Some(i) = self.relay_index(&peer_id) {
                    let relay = &mut self.relays[i];
                    if !relay.connected {
                        let addr = endpoint.get_remote_address().clone();
                        info!(relay = %addr, "relay connected");
                        // The dialed address, minus nothing: it already ends in /p2p/<relay>.
                        relay.connected_addr = Some(match addr.iter().last() {
                            Some(libp2p::multiaddr::Protocol::P2p(_)) => addr,
                            _ => addr.with(libp2p::multiaddr::Protocol::P2p(peer_id)),
                        });
                        if relay.ever_connected {
                            relay.reconnects += 1;
                        }
                        relay.ever_connected = true;
                        relay.connected = true;
                        // The backoff resets once the relay takes our reservation: one that
                        // accepts connections and drops them (full, overloaded) is not
                        // redialed by every node four times a second.
                        relay.next_attempt = Some(now); // listen through it
                        self.drive_relays(now);
                        self.status_dirty = true;
                        self.sync_all_with(peer_id);
                    }
                } else if endpoint_is_circuit(&endpoint) {
                    // Inbound circuits are not ours to limit by dialing less: past the bound
                    // (or for a peer the table has no room for) they are closed, so other
                    // nodes cannot hold an unbounded number open here.
                    let known = self.peers.get(&peer_id).is_some_and(|p| p.connections > 0);
                    let circuit_peers = self.peers.values().filter(|p| p.connections > 0).count();
                    if !known
                        && (circuit_peers >= MAX_INBOUND_CIRCUIT_PEERS
                            || !self.make_room_for(&peer_id))
                    {
                        debug!(peer = %peer_id, "closing a circuit past the bound");
                        self.swarm.close_connection(connection_id);
                        if let Some(peer) = self.peers.get_mut(&peer_id) {
                            peer.dialing = false;
                        }
                        return;
                    }
                    let peer = self.peer_entry(peer_id, now);
                    peer.connections = num_established.get();
                    peer.dialing = false;
                    peer.connected_since.get_or_insert(now);
                    if num_established.get() == 1 {
                        info!(peer = %peer_id, "peer connected");
                        self.sync_all_with(peer_id);
                        self.presence.want_broadcast();
                        self.broadcast(
                            Event::PeerJoin {
                                peer_id: peer_id.to_string(),
                            },
                            sink,
                        );
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                if let Some(i) = self.relay_index(&peer_id) {
                    if num_established == 0 {
                        let relay = &mut self.relays[i];
                        warn!(relay = %relay.peer_id, ?cause, "relay connection closed");
                        relay.connected = false;
                        relay.connected_addr = None;
                        relay.reserved = false;
                        if let Some(l) = relay.listener.take() {
                            self.swarm.remove_listener(l);
                        }
                        let relay = &mut self.relays[i];
                        relay.next_attempt = Some(now + relay.backoff.next_delay());
                        self.status_dirty = true;
                    }
                } else if let Some(peer) = self.peers.get_mut(&peer_id) {
                    let was = peer.connections;
                    peer.connections = num_established;
                    if num_established == 0 && was > 0 {
                        info!(peer = %peer_id, ?cause, "peer disconnected");
                        if peer
                            .connected_since
                            .take()
                            .is_some_and(|t| now.duration_since(t) >= STABLE_CONNECTION)
                        {
                            peer.backoff.reset();
                        }
                        peer.next_dial = now + peer.backoff.next_delay();
                        self.broadcast(
                            Event::PeerLeave {
                                peer_id: peer_id.to_string(),
                            },
                            sink,
                        );
                        self.presence_peer_left(&peer_id, sink);
                        self.compute_peer_left(peer_id, sink);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let Some(i) = peer_id.and_then(|p| self.relay_index(&p)) {
                    let relay = &mut self.relays[i];
                    if !relay.connected {
                        debug!(relay = %relay.peer_id, "relay dial failed: {error}");
                        relay.next_attempt = Some(now + relay.backoff.next_delay());
                    }
                } else {
                    if let Some(peer) = peer_id.and_then(|p| self.peers.get_mut(&p)) {
                        peer.dialing = false;
                    }
                    debug!(?peer_id, "dial failed: {error}");
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self
                    .relays
                    .iter_mut()
                    .find(|r| r.listener == Some(listener_id))
                {
                    debug!(relay = %relay.peer_id, ?reason, "relay listener closed");
                    relay.listener = None;
                    relay.reserved = false;
                    if relay.connected {
                        relay.next_attempt = Some(now + relay.backoff.next_delay());
                    }
                    self.status_dirty = true;
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event, now, sink),
            _ => {}
        }
    }

    fn on_behaviour_event(
        &mut self,
        event: NodeBehaviourEvent,
        now: Instant,
        sink: &mut impl FnMut(Output),
    ) {
        match event {
            NodeBehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => {
                if let Some(i) = self.relay_index(&relay_peer_id) {
                    if !self.relays[i].reserved {
                        info!(relay = %relay_peer_id, "reservation accepted");
                        self.status_dirty = true;
                    }
                    self.relays[i].reserved = true;
                    self.relays[i].backoff.reset();
                    self.announce_wanted = true;
                    let reply = self.connected_reply();
                    for p in std::mem::take(&mut self.pending_connects) {
                        sink(Output::Reply {
                            tab: p.tab,
                            id: p.id,
                            result: Ok(reply.clone()),
                        });
                    }
                }
            }
            NodeBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let acceptance = self.on_gossip_message(message, now, sink);
                // Every message must be judged, or it lingers in gossipsub's cache.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            // The relay now routes discovery for us: announce without waiting a period.
            NodeBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic })
                if topic.as_str() == DISCOVERY_TOPIC && self.relay_index(&peer_id).is_some() =>
            {
                self.announce_wanted = true;
            }
            // Likewise for presence: the relay routes it to everyone from now on.
            NodeBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic })
                if topic.as_str() == PRESENCE_TOPIC && self.relay_index(&peer_id).is_some() =>
            {
                self.presence.want_broadcast();
            }
            NodeBehaviourEvent::StateSync(event) => self.on_sync_event(event, sink),
            NodeBehaviourEvent::Compute(event) => self.on_compute_event(event, sink),
            NodeBehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.rtt = Some(rtt);
                }
            }
            _ => {}
        }
    }

    fn on_gossip_message(
        &mut self,
        message: gossipsub::Message,
        now: Instant,
        sink: &mut impl FnMut(Output),
    ) -> MessageAcceptance {
        let Some(source) = message.source else {
            return MessageAcceptance::Reject;
        };
        let topic = message.topic.as_str();
        if topic == DISCOVERY_TOPIC {
            let Ok(announcement) = Announcement::decode(&message.data, source) else {
                return MessageAcceptance::Reject;
            };
            // A replay changes nothing and is not forwarded; whoever relayed it is not
            // penalized.
            if let Some(seq) = message.sequence_number {
                if !self.announcement_replays.fresh(source, seq, now) {
                    return MessageAcceptance::Ignore;
                }
            }
            if source != self.peer_id() {
                self.on_announcement(source, announcement, now);
            }
            return MessageAcceptance::Accept;
        }
        if topic == PRESENCE_TOPIC {
            return self.on_presence_gossip(
                source,
                message.sequence_number,
                &message.data,
                now,
                sink,
            );
        }
        if let Some(doc) = state_topic_doc(topic) {
            let doc = doc.to_string();
            return self.on_state_gossip(&doc, &message, sink);
        }
        let Some(name) = app_topic_name(topic) else {
            return MessageAcceptance::Ignore;
        };
        let payload = match Payload::decode(&message.data) {
            Ok(p) => p,
            Err(e) => {
                debug!(peer = %source, "rejected message: {e}");
                return MessageAcceptance::Reject;
            }
        };
        let from = source.to_string();
        for (&tab, topics) in &self.tabs {
            if topics.contains(name) {
                sink(Output::Event {
                    tab,
                    event: Event::Message {
                        topic: name.to_string(),
                        from: from.clone(),
                        payload: payload.clone(),
                        local: false,
                    },
                });
            }
        }
        MessageAcceptance::Accept
    }

    /// Whether `peer` has (or now has) a place in the peer table. When it is full, the peer
    /// heard from longest ago that is neither connected nor being dialed gives way, so
    /// whoever filled the table first cannot keep newcomers out.
    fn make_room_for(&mut self, peer: &PeerId) -> bool {
        if self.peers.contains_key(peer) || self.peers.len() < MAX_KNOWN_PEERS {
            return true;
        }
        let stalest = self
            .peers
            .iter()
            .filter(|(_, p)| p.connections == 0 && !p.dialing)
            .min_by_key(|(_, p)| p.last_seen)
            .map(|(id, _)| *id);
        stalest.is_some_and(|id| self.peers.remove(&id).is_some())
    }

    /// The table's entry for `peer`, a fresh one if it has none (room made by the caller).
    fn peer_entry(&mut self, peer: PeerId, now: Instant) -> &mut Peer {
        let backoff = self.config.peer_backoff;
        self.peers
            .entry(peer)
            .or_insert_with(|| Peer::new(now, backoff))
    }

    fn on_announcement(&mut self, source: PeerId, announcement: Announcement, now: Instant) {
        if !self.make_room_for(&source) {
            return;
        }
        let peer = self.peer_entry(source, now);
        let is_new = peer.addrs.is_empty();
        peer.addrs = announcement.addrs;
        let gained_compute =
            announcement.compute.is_some() && peer.compute.is_none() && peer.connections > 0;
        peer.compute = announcement.compute;
        peer.last_seen = now;
        if is_new {
            debug!(peer = %source, "discovered peer");
            // Answer a newcomer at once, so it learns about us without waiting a period.
            self.announce_wanted = true;
        }
        if gained_compute {
            self.on_peer_capabilities(source);
        }
    }
}

fn endpoint_is_circuit(endpoint: &ConnectedPoint) -> bool {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => is_circuit(address),
        ConnectedPoint::Listener {
            local_addr,
            send_back_addr,
        } => is_circuit(local_addr) || is_circuit(send_back_addr),
    }
}

#[cfg(test)]
mod tests;
