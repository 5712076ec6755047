//! Every size that reaches a node from a tab or from the network is bounded here.

use std::time::Duration;

/// Largest application payload a tab may publish (JSON text or bytes).
pub const MAX_PUBLISH_BYTES: usize = 1024 * 1024;
/// Largest gossipsub frame we accept: one payload plus envelope, signature and protobuf framing.
pub const MAX_GOSSIP_FRAME_BYTES: usize = MAX_PUBLISH_BYTES + 16 * 1024;
/// Most message data waiting in the gossip send queue to one peer (each queued message holds
/// its own copy). Gossipsub alone bounds the queue at 5000 messages, so a peer that stops
/// reading could make a relay hold 5000 × 1 MiB for it. 32 MiB is about a second of a
/// browser's relayed traffic (`npm run bench`: ~30 MB/s); past it, messages forwarded to
/// that peer are dropped (the relay counts them: `/status` `slowPeerDrops`) and a node's own
/// `publish` gets `BUSY` once every peer's queue is full.
pub const MAX_GOSSIP_QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// Longest application topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most topics one tab may be subscribed to at once.
pub const MAX_SUBSCRIPTIONS_PER_TAB: usize = 256;
/// Most application topics one node subscribes to on the network, all its tabs' and the
/// lingering ones together.
pub const MAX_NODE_APP_TOPICS: usize = 1024;
/// Most application and document topics a relay routes.
pub const MAX_ROUTED_TOPICS: usize = 4096;
/// Most of those one peer's subscriptions make a relay route: a node's own bound
/// ([`MAX_NODE_APP_TOPICS`]) plus its documents, so a few peers cannot take them all.
pub const MAX_ROUTED_TOPICS_PER_PEER: usize = MAX_NODE_APP_TOPICS + MAX_OPEN_DOCS;
/// Most of those the peers of one IP address make a relay route: peer ids cost nothing, so
/// one machine could otherwise take them all as a few peers. Half: the rest stays for others.
pub const MAX_ROUTED_TOPICS_PER_IP: usize = MAX_ROUTED_TOPICS / 2;
/// Most gossipsub topics a node or relay keeps track of per peer. A relay announces every
/// topic it routes (and the two internal ones) to each node in one message, which must not
/// pass this, or the node would ignore all of it and could no longer publish.
pub const MAX_PEER_TOPICS: usize = MAX_ROUTED_TOPICS + 16;
/// Most topics no tab wants that a node keeps subscribed for a while (`topic_linger`); past
/// this, a released topic is left at once.
pub const MAX_LINGERING_TOPICS: usize = 256;
/// Most relays a node keeps at once.
pub const MAX_RELAYS: usize = 8;
/// Longest relay multiaddr accepted from a tab, in bytes.
pub const MAX_MULTIADDR_BYTES: usize = 512;
/// Largest discovery announcement accepted from a peer.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 4 * 1024;
/// Most addresses in one discovery announcement.
pub const MAX_ANNOUNCED_ADDRS: usize = 8;
/// Most browser peers a node remembers from discovery.
pub const MAX_KNOWN_PEERS: usize = 1024;
/// Most browser peers a node holds direct (circuit) connections to.
pub const MAX_CIRCUIT_PEERS: usize = 32;
/// Most peers with a circuit open to this node, its dials and theirs together; circuits
/// other nodes open past it are closed.
pub const MAX_INBOUND_CIRCUIT_PEERS: usize = 2 * MAX_CIRCUIT_PEERS;
/// A connection that lived this long resets its redial backoff when it closes.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Longest a connect request may wait before it is answered with `CONNECT_TIMEOUT`.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default connect timeout when the tab gives none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Depth of the queue between tabs and the node loop; a full queue answers `BUSY`.
pub const TAB_INPUT_QUEUE: usize = 1024;

/// Longest document name, in bytes.
pub const MAX_DOC_NAME_BYTES: usize = 128;
/// Most documents a browser node holds open at once.
pub const MAX_OPEN_DOCS: usize = 64;
/// Most documents a pinning relay keeps.
pub const MAX_PINNED_DOCS: usize = 1024;
/// Most keys in a document path.
pub const MAX_PATH_SEGMENTS: usize = 32;
/// Longest key in a path (and in a stored object), in bytes.
pub const MAX_PATH_SEGMENT_BYTES: usize = 256;
/// Deepest nesting of a stored JSON value.
pub const MAX_JSON_DEPTH: usize = 64;
/// Largest update a tab may apply at once, as JSON text.
pub const MAX_STATE_UPDATE_BYTES: usize = 1024 * 1024;
/// Most operations in one atomic update.
pub const MAX_OPS_PER_UPDATE: usize = 1024;
/// Largest single Yjs update accepted from a peer, a file or a tab (`importUpdate`).
pub const MAX_SYNC_UPDATE_BYTES: usize = 32 * 1024 * 1024;
/// Largest sync frame (several documents' messages) on the wire.
pub const MAX_SYNC_FRAME_BYTES: usize = 48 * 1024 * 1024;
/// Most state-sync streams open at once on one connection (each may buffer one frame).
pub const MAX_SYNC_STREAMS: usize = 8;
/// Largest document, as a full encoded update; local writes beyond it are refused.
pub const MAX_DOC_BYTES: usize = 32 * 1024 * 1024;
/// Largest stored record read back: a compacted record holds the whole document, which can
/// pass [`MAX_DOC_BYTES`] by the size of the write that crossed it.
pub const MAX_STORED_RECORD_BYTES: usize = MAX_SYNC_FRAME_BYTES;
/// Bytes of peers' updates a document holds while they wait for history it lacks (yrs keeps
/// them pending, merged, until the missing updates arrive). Past this, updates that would
/// wait too are not taken; the sync exchange brings them again with their history.
pub const MAX_PENDING_UPDATE_BYTES: usize = 8 * 1024 * 1024;
/// Most named versions per document.
pub const MAX_VERSIONS_PER_DOC: usize = 256;
/// Longest version label, in bytes.
pub const MAX_VERSION_LABEL_BYTES: usize = 256;
/// Stored update records of one document after which it is compacted into one, once they
/// hold at least half as many bytes as the last compacted state (a large document is not
/// rewritten whole for every 200 small writes), or in any case past 20 times as many.
pub const COMPACT_AFTER_RECORDS: usize = 200;
/// Stored records of one document after which it is compacted whatever their size (and on
/// load): bounds the records a load replays.
pub const COMPACT_ALWAYS_AFTER_RECORDS: usize = 20 * COMPACT_AFTER_RECORDS;

/// Largest presence state, as JSON text.
pub const MAX_PRESENCE_BYTES: usize = 4 * 1024;
/// Most peers whose presence a node shows.
pub const MAX_PRESENCE_PEERS: usize = 1024;

/// Most compute streams open at once on one connection (each may buffer one chunk's frame).
pub const MAX_COMPUTE_STREAMS: usize = 16;
/// Most compute tasks one node coordinates at once.
pub const MAX_RUNNING_TASKS: usize = 16;
/// Most chunks running on a node's executors at once (its own and peers'); beyond it, peers
/// are answered `BUSY` and their scheduler retries elsewhere.
pub const MAX_RUNNING_CHUNKS: usize = 256;

// A node must take the whole subscription message a relay sends on connect.
const _: () = assert!(MAX_PEER_TOPICS >= MAX_ROUTED_TOPICS + 2);
// One node alone must be able to reach its own share from one address.
const _: () = assert!(MAX_ROUTED_TOPICS_PER_IP >= MAX_ROUTED_TOPICS_PER_PEER);
