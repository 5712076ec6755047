//! Every size that reaches a node from a tab or from the network is bounded here.

use std::time::Duration;

/// Largest application payload a tab may publish (JSON text or bytes).
pub const MAX_PUBLISH_BYTES: usize = 1024 * 1024;
/// Largest gossipsub frame we accept: one payload plus envelope, signature and protobuf framing.
pub const MAX_GOSSIP_FRAME_BYTES: usize = MAX_PUBLISH_BYTES + 16 * 1024;
/// Longest application topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most topics one tab may be subscribed to at once.
pub const MAX_SUBSCRIPTIONS_PER_TAB: usize = 256;
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
/// Longest a connect request may wait before it is answered with `CONNECT_TIMEOUT`.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default connect timeout when the tab gives none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Depth of the queue between tabs and the node loop; a full queue answers `BUSY`.
pub const TAB_INPUT_QUEUE: usize = 1024;
