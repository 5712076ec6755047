//! Tab ↔ worker protocol, carried over a `MessagePort` as structured-clone objects.
//!
//! Requests: `{ v: 1, id, op, ...fields }`; every request gets exactly one reply,
//! `{ v: 1, id, ok: true, value }` or `{ v: 1, id, ok: false, error: { code, message } }`.
//! Events are pushed as `{ v: 1, event, ...fields }`. Binary payloads travel as `Uint8Array`.
//! A message that cannot be decoded gets an error reply (with `id: null` when even the id is
//! unreadable) and never stops the worker.

use serde::{Deserialize, Serialize};

use crate::{
    error::ErrorCode,
    limits::{MAX_MULTIADDR_BYTES, MAX_RELAYS},
    pubsub::Payload,
    NodeError,
};

/// Version of this protocol; a tab with another version gets `UNSUPPORTED_VERSION`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Prefix of the Web Lock names tabs hold while alive.
pub const TAB_LOCK_PREFIX: &str = "peercompute-tab-";
/// Longest tab lock name.
pub const MAX_LOCK_NAME_BYTES: usize = 128;

/// Identifies one attached tab (one `MessagePort`) inside the worker.
pub type TabId = u32;
/// A tab's request id, echoed in the reply.
pub type RequestId = u32;

/// The fields every request carries; decoded first so even a bad request gets a reply.
#[derive(Debug, Deserialize)]
pub struct Header {
    /// Protocol version.
    pub v: Option<u32>,
    /// Request id.
    pub id: Option<RequestId>,
    /// Operation name.
    pub op: Option<String>,
}

/// A request from a tab.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Request {
    /// Add relays (or none, to just wait) and resolve once a relay connection is up.
    Connect {
        /// Relay multiaddrs; each must end in `/p2p/<relay id>`.
        #[serde(default)]
        relays: Vec<String>,
        /// How long to wait for a relay before answering `CONNECT_TIMEOUT`.
        timeout_ms: Option<u32>,
        /// `false`: answer at once, without waiting for a relay (offline use: the node keeps
        /// dialing the relays in the background, and works locally meanwhile).
        #[serde(default = "yes")]
        wait: bool,
        /// The network's root public key (hex), from `/peercompute.json`: code from peers runs
        /// only when signed by it. The first key a node is given stays its key.
        root_key: Option<String>,
    },
    /// The node's status.
    Status,
    /// Known browser peers.
    Peers,
    /// Publish on an application topic.
    Publish {
        /// Application topic.
        topic: String,
        /// JSON text (exclusive with `bytes`).
        json: Option<String>,
        /// Raw bytes (exclusive with `json`).
        bytes: Option<serde_bytes::ByteBuf>,
    },
    /// Receive messages of an application topic as `message` events.
    Subscribe {
        /// Application topic.
        topic: String,
    },
    /// Stop receiving a topic.
    Unsubscribe {
        /// Application topic.
        topic: String,
    },
    /// First message of a tab. `lock` names a Web Lock the tab holds for its lifetime; the
    /// host watches it and forgets the tab when the lock is released (the tab closed or
    /// crashed), without waiting for a goodbye that a closing tab may never send.
    Attach {
        /// Lock name, `peercompute-tab-…`, at most [`MAX_LOCK_NAME_BYTES`] bytes.
        lock: Option<String>,
    },
    /// Round trip to the worker, for liveness and benchmarks.
    Ping,
    /// The tab is going away; forget it.
    Detach,
    /// Open a shared document (loading it from storage once per node); the reply is its whole
    /// tree, and `state` events keep the tab's copy current until `stateClose`.
    StateOpen {
        /// Document name.
        doc: String,
    },
    /// Stop receiving a document's changes.
    StateClose {
        /// Document name.
        doc: String,
    },
    /// Apply operations as one transaction; answered once the change is durable.
    StateUpdate {
        /// Document name.
        doc: String,
        /// JSON text: `[{"set": [keys], "value": v} | {"delete": [keys]}]`.
        ops: String,
    },
    /// Record a named version.
    StateSnapshot {
        /// Document name.
        doc: String,
        /// Label.
        #[serde(default)]
        label: String,
    },
    /// List named versions.
    StateVersions {
        /// Document name.
        doc: String,
    },
    /// Forget a named version (for every peer).
    StateDeleteVersion {
        /// Document name.
        doc: String,
        /// Version id.
        version: String,
    },
    /// The tree as it was at a version.
    StateAt {
        /// Document name.
        doc: String,
        /// Version id.
        version: String,
    },
    /// The document as one Yjs v1 update.
    StateExport {
        /// Document name.
        doc: String,
    },
    /// Apply a Yjs v1 update (from `yjs` or another export); answered once durable.
    StateImport {
        /// Document name.
        doc: String,
        /// The update.
        bytes: serde_bytes::ByteBuf,
    },
    /// Replace this node's presence state (JSON text; `null` clears it).
    PresenceSet {
        /// JSON text of the state.
        json: String,
    },
    /// Every peer's presence, this node's included, as `{ peerId: state }` JSON text.
    PresenceGet,
    /// Run a compute task; `taskProgress` events follow and the reply is its result.
    TaskSubmit {
        /// The task.
        task: Box<crate::compute::task::TaskRequest>,
    },
    /// Cancel a running task of this tab (its submit is answered `TASK_CANCELLED`).
    TaskCancel {
        /// The task id.
        task: String,
    },
}

fn yes() -> bool {
    true
}

/// Operation names this version understands.
pub const OPS: &[&str] = &[
    "attach",
    "connect",
    "status",
    "peers",
    "publish",
    "subscribe",
    "unsubscribe",
    "ping",
    "detach",
    "stateOpen",
    "stateClose",
    "stateUpdate",
    "stateSnapshot",
    "stateVersions",
    "stateDeleteVersion",
    "stateAt",
    "stateExport",
    "stateImport",
    "presenceSet",
    "presenceGet",
    "taskSubmit",
    "taskCancel",
];

/// The most bytes one top-level string or byte field of an `op` request may hold (the body
/// of a publish, an update's ops, an import's bytes, a presence state; names and ids are far
/// below the default). A host that can measure fields before decoding them (the
/// SharedWorker: a string's length, a typed array's byteLength) refuses larger ones without
/// copying them into wasm first. A task's inputs are nested, and bounded when decoded.
pub fn max_field_bytes(op: &str) -> usize {
    match op {
        "publish" => crate::limits::MAX_PUBLISH_BYTES,
        "stateUpdate" => crate::limits::MAX_STATE_UPDATE_BYTES,
        "stateImport" => crate::limits::MAX_DOC_BYTES,
        "presenceSet" => crate::limits::MAX_PRESENCE_BYTES,
        _ => 64 * 1024,
    }
}

impl Request {
    /// Checks bounds that serde cannot express.
    pub fn validate(&self) -> Result<(), NodeError> {
        match self {
            Request::Connect { relays, .. } => {
                if relays.len() > MAX_RELAYS {
                    return Err(NodeError::new(
                        ErrorCode::InvalidRelayAddr,
                        format!("at most {MAX_RELAYS} relays"),
                    ));
                }
                if let Some(r) = relays.iter().find(|r| r.len() > MAX_MULTIADDR_BYTES) {
                    return Err(NodeError::new(
                        ErrorCode::InvalidRelayAddr,
                        format!("relay address of {} bytes is too long", r.len()),
                    ));
                }
                Ok(())
            }
            Request::Publish { topic, .. }
            | Request::Subscribe { topic }
            | Request::Unsubscribe { topic } => crate::pubsub::validate_topic(topic),
            Request::Attach { lock } => match lock {
                Some(l) if l.len() > MAX_LOCK_NAME_BYTES || !l.starts_with(TAB_LOCK_PREFIX) => {
                    Err(NodeError::new(
                        ErrorCode::BadRequest,
                        format!("lock must start with {TAB_LOCK_PREFIX:?} and be at most {MAX_LOCK_NAME_BYTES} bytes"),
                    ))
                }
                _ => Ok(()),
            },
            Request::StateOpen { doc }
            | Request::StateClose { doc }
            | Request::StateVersions { doc }
            | Request::StateExport { doc }
            | Request::StateAt { doc, .. }
            | Request::StateDeleteVersion { doc, .. }
            | Request::StateUpdate { doc, .. }
            | Request::StateImport { doc, .. }
            | Request::StateSnapshot { doc, .. } => crate::state::path::validate_doc_name(doc),
            Request::PresenceSet { json } => crate::presence::check_state_size(json),
            Request::PresenceGet | Request::TaskSubmit { .. } => Ok(()),
            Request::TaskCancel { task } if task.len() > crate::compute::task::MAX_TASK_ID_BYTES => {
                Err(NodeError::new(ErrorCode::TaskUnknown, "task id too long"))
            }
            Request::TaskCancel { .. } => Ok(()),
            Request::Status
            | Request::Peers
            | Request::Ping
            | Request::Detach => Ok(()),
        }
    }

    /// The payload of a publish request.
    pub fn publish_payload(
        json: Option<String>,
        bytes: Option<serde_bytes::ByteBuf>,
    ) -> Result<Payload, NodeError> {
        let payload = match (json, bytes) {
            (Some(j), None) => Payload::Json(j),
            (None, Some(b)) => Payload::Bytes(b.into_vec()),
            _ => {
                return Err(NodeError::new(
                    ErrorCode::BadRequest,
                    "publish needs exactly one of `json` or `bytes`",
                ))
            }
        };
        payload.validate()?;
        Ok(payload)
    }
}

/// Decodes a request in two steps (header, then body), so that a malformed body still gets an
/// error reply carrying the request's id. The closures are the host's deserializers
/// (serde-wasm-bindgen in the worker, serde_json in tests).
pub fn decode_request<E: std::fmt::Display>(
    header: Result<Header, E>,
    body: impl FnOnce() -> Result<Request, E>,
) -> Result<(RequestId, Request), (Option<RequestId>, NodeError)> {
    let header =
        header.map_err(|e| (None, NodeError::new(ErrorCode::BadRequest, e.to_string())))?;
    let id = header.id;
    let fail = |code, msg: String| (id, NodeError::new(code, msg));
    if header.v != Some(PROTOCOL_VERSION) {
        return Err(fail(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {:?}, expected {PROTOCOL_VERSION}",
                header.v
            ),
        ));
    }
    let Some(id) = id else {
        return Err(fail(ErrorCode::BadRequest, "request without an id".into()));
    };
    match header.op.as_deref() {
        Some(op) if OPS.contains(&op) => {}
        Some(op) => {
            let op: String = op.chars().take(40).collect();
            return Err(fail(ErrorCode::UnknownOp, format!("unknown op {op:?}")));
        }
        None => return Err(fail(ErrorCode::BadRequest, "request without an op".into())),
    }
    let request = body().map_err(|e| fail(ErrorCode::BadRequest, e.to_string()))?;
    request.validate().map_err(|e| (Some(id), e))?;
    Ok((id, request))
}

/// The value of a successful reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReplyValue {
    /// Answer to `connect`.
    Connected {
        /// This node's peer id.
        #[serde(rename = "peerId")]
        peer_id: String,
    },
    /// Answer to `attach`.
    Attached {
        /// This node's peer id.
        #[serde(rename = "peerId")]
        peer_id: String,
    },
    /// Answer to `status`.
    Status(Box<Status>),
    /// Answer to `peers`.
    Peers(Vec<PeerStatus>),
    /// Answer to `publish`.
    Published(PublishReceipt),
    /// Answer to `ping`.
    Pong {
        /// Always true; makes the reply a non-empty object.
        pong: bool,
    },
    /// A document tree (answer to `stateOpen` and `stateAt`), as JSON text: the tab parses
    /// it once instead of receiving a structured clone built field by field.
    Tree {
        /// JSON text of the tree.
        json: String,
    },
    /// Answer to `stateSnapshot`.
    Version(crate::state::Version),
    /// Answer to `stateVersions`.
    Versions(Vec<crate::state::Version>),
    /// Answer to `stateExport`.
    Update {
        /// A Yjs v1 update.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Answer to `taskSubmit`.
    TaskResult(TaskResult),
    /// Answer with no value.
    Done,
}

/// A finished task.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// Little-endian elements of the output type. Not serialized: the browser host sends it
    /// as a transferred `Uint8Array`, not as an array of numbers.
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// Element type (`f32`, `u32`, `i32`).
    #[serde(rename = "type")]
    pub ty: crate::compute::reduce::ElementType,
    /// Chunks the task was split into.
    pub chunks: u32,
    /// Workers (peer ids, this node's included) whose results were accepted.
    pub workers: Vec<String>,
    /// Workers excluded because their results lost a vote: `{ peerId, chunk }`.
    pub excluded: Vec<ExcludedWorker>,
    /// Milliseconds from submit to result.
    pub elapsed_ms: f64,
}

/// A worker excluded from a task for a wrong result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExcludedWorker {
    /// Its peer id.
    pub peer_id: String,
    /// The task.
    pub task: String,
    /// The chunk it got wrong.
    pub chunk: u32,
}

/// The GPU adapter an executor runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuAdapter {
    /// Adapter name, e.g. "SwiftShader Device (Subzero)" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Backend, e.g. "vulkan" or "browser-webgpu".
    pub backend: String,
    /// A software adapter (CPU-emulated): correct, but slow.
    pub fallback: bool,
}

/// This node's compute side, in its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeStatus {
    /// CPU chunks this node runs at once (its tabs' worker pools, or threads natively).
    pub cpu_slots: u32,
    /// A WebGPU adapter is available.
    pub gpu: bool,
    /// The GPU adapter chunks run on, if any.
    pub gpu_adapter: Option<GpuAdapter>,
    /// Measured speed score.
    pub score: f64,
    /// The network's root key (hex), if known.
    pub root_key: Option<String>,
    /// Tasks this node coordinates now.
    pub tasks: usize,
    /// Chunks running on this node now (its own and peers').
    pub running_chunks: usize,
    /// Chunks this node ran for other peers.
    pub chunks_served: u64,
    /// Chunks refused (bad signature, unsupported, busy).
    pub chunks_refused: u64,
    /// Workers recently excluded for wrong results (newest last).
    pub excluded: Vec<ExcludedWorker>,
}

/// Where a published message went.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReceipt {
    /// Network peers it was sent to (0 when no other node subscribes).
    pub peers: usize,
    /// Other tabs of this node it was delivered to.
    pub local_tabs: usize,
}

/// A relay as seen by this node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayStatus {
    /// The relay's peer id.
    pub peer_id: String,
    /// The address in use (or the first known one while disconnected).
    pub addr: String,
    /// Every known address of this relay.
    pub addrs: Vec<String>,
    /// A connection to it is up.
    pub connected: bool,
    /// It holds a reservation for us, so other nodes can reach us through it.
    pub reserved: bool,
    /// Times the connection was lost and dialed again.
    pub reconnects: u32,
}

/// A browser peer as seen by this node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// Its peer id.
    pub peer_id: String,
    /// A direct (relayed circuit) connection is up.
    pub connected: bool,
    /// Last measured round-trip time, if any.
    pub rtt_ms: Option<f64>,
    /// What it computes, from its announcements.
    pub compute: Option<crate::discovery::Capabilities>,
}

/// The node's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// This node's peer id.
    pub peer_id: String,
    /// At least one relay connection is up.
    pub online: bool,
    /// Relays.
    pub relays: Vec<RelayStatus>,
    /// Browser peers with a connection up.
    pub connected_peers: usize,
    /// Browser peers known from discovery.
    pub known_peers: usize,
    /// Open libp2p connections (relays and peers).
    pub connections: usize,
    /// Application topics some tab subscribes to.
    pub topics: Vec<String>,
    /// Shared documents this node holds.
    pub documents: Vec<String>,
    /// Tabs attached to this node.
    pub tabs: usize,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// Compute.
    pub compute: ComputeStatus,
}

/// An event pushed to a tab.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message on a topic the tab subscribed to.
    Message {
        /// Application topic.
        topic: String,
        /// Publishing peer id.
        from: String,
        /// The payload.
        payload: Payload,
        /// Published by another tab of this same node.
        local: bool,
    },
    /// A browser peer connected.
    PeerJoin {
        /// Its peer id.
        peer_id: String,
    },
    /// A browser peer's last connection closed.
    PeerLeave {
        /// Its peer id.
        peer_id: String,
    },
    /// Relay connectivity changed.
    Status(Box<Status>),
    /// A document the tab opened changed.
    State {
        /// Document name.
        doc: String,
        /// JSON text of `[{ path: [keys], value? }]` (no `value`: removed), parents first.
        changes: String,
        /// Made by a tab of this node (`true`) or arrived from a peer.
        local: bool,
    },
    /// Someone's presence changed (or expired).
    Presence {
        /// JSON text of `{ peerId: state }`, this node's own included.
        peers: String,
    },
    /// A task of this tab progressed.
    TaskProgress {
        /// Task id.
        task: String,
        /// Chunks with an accepted result.
        done: u32,
        /// All chunks.
        total: u32,
        /// Workers that contributed so far.
        peers: usize,
    },
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn decode(v: Value) -> Result<(RequestId, Request), (Option<RequestId>, NodeError)> {
        decode_request(serde_json::from_value::<Header>(v.clone()), || {
            serde_json::from_value::<Request>(v)
        })
    }

    #[test]
    fn decodes_each_op() {
        let (id, r) =
            decode(json!({"v":1,"id":3,"op":"publish","topic":"chat","json":"{}"})).expect("ok");
        assert_eq!(id, 3);
        assert!(matches!(r, Request::Publish { ref topic, .. } if topic == "chat"));
        let (_, r) = decode(json!({"v":1,"id":4,"op":"connect","timeoutMs":500})).expect("ok");
        assert_eq!(
            r,
            Request::Connect {
                relays: vec![],
                timeout_ms: Some(500),
                wait: true,
                root_key: None,
            }
        );
        for op in OPS {
            let mut v = json!({"v":1,"id":1,"op":op,"topic":"t"});
            if *op == "connect" || *op == "attach" {
                v = json!({"v":1,"id":1,"op":"connect"});
            }
            if op.starts_with("state") {
                v = json!({"v":1,"id":1,"op":op,"doc":"d","ops":"[]","version":"x","bytes":[0,0]});
            }
            if *op == "presenceSet" {
                v = json!({"v":1,"id":1,"op":op,"json":"null"});
            }
            if *op == "taskSubmit" {
                v = json!({"v":1,"id":1,"op":op,"task":{"id":"t","type":"cpu","kernel":"square",
                    "output":{"type":"f32","length":1},"grid":[1]}});
            }
            if *op == "taskCancel" {
                v = json!({"v":1,"id":1,"op":op,"task":"t"});
            }

            decode(v).unwrap_or_else(|e| panic!("{op}: {e:?}"));
        }
    }

    #[test]
    fn bad_requests_get_a_code_and_keep_the_id() {
        let cases = [
            (json!("garbage"), None, ErrorCode::BadRequest),
            (
                json!({"v":2,"id":5,"op":"ping"}),
                Some(5),
                ErrorCode::UnsupportedVersion,
            ),
            (json!({"v":1,"op":"ping"}), None, ErrorCode::BadRequest),
            (
                json!({"v":1,"id":6,"op":"fly"}),
                Some(6),
                ErrorCode::UnknownOp,
            ),
            (
                json!({"v":1,"id":7,"op":"publish"}),
                Some(7),
                ErrorCode::BadRequest,
            ),
            (
                json!({"v":1,"id":8,"op":"subscribe","topic":""}),
                Some(8),
                ErrorCode::InvalidTopic,
            ),
            (
                json!({"v":1,"id":9,"op":"connect","relays":vec!["x"; MAX_RELAYS + 1]}),
                Some(9),
                ErrorCode::InvalidRelayAddr,
            ),
        ];
        for (v, id, code) in cases {
            let (got_id, e) = decode(v.clone()).expect_err(&v.to_string());
            assert_eq!((got_id, e.code), (id, code), "{v}");
        }
    }

    #[test]
    fn publish_payload_needs_exactly_one_kind() {
        assert!(Request::publish_payload(None, None).is_err());
        assert!(Request::publish_payload(Some("1".into()), Some(Default::default())).is_err());
        assert_eq!(
            Request::publish_payload(Some("{".into()), None)
                .unwrap_err()
                .code,
            ErrorCode::InvalidJson
        );
    }

    /// Any JSON shape a tab could send, biased towards real ops and field names.
    fn arb_message() -> impl proptest::strategy::Strategy<Value = (Value, bool)> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z{}\\[\\]\"0-9:,]{0,12}".prop_map(Value::from),
            proptest::sample::select(OPS).prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        let field = proptest::sample::select(vec![
            "v",
            "id",
            "op",
            "topic",
            "json",
            "bytes",
            "relays",
            "timeoutMs",
            "wait",
            "lock",
            "doc",
            "ops",
            "label",
            "version",
            "task",
            "rootKey",
        ]);
        (
            proptest::collection::btree_map(field, value, 0..8),
            proptest::option::of(proptest::sample::select(OPS)),
        )
            .prop_map(|(m, op)| {
                let mut o: serde_json::Map<String, Value> =
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                // Half the messages get a valid header, so the bodies are exercised too.
                if let Some(op) = op {
                    o.insert("v".into(), json!(1));
                    o.insert("id".into(), json!(7));
                    o.insert("op".into(), json!(op));
                }
                (Value::Object(o), op.is_some())
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
        ))]
        /// The decoder never panics, and a message with a valid header is answered under its
        /// id whatever its body holds (so the tab's request settles): as a request, or as an
        /// error reply.
        #[test]
        fn the_decoder_takes_any_message((msg, has_header) in arb_message()) {
            let id = match decode(msg) {
                Ok((id, _)) => Some(id),
                Err((id, _)) => id,
            };
            if has_header {
                proptest::prop_assert_eq!(id, Some(7));
            }
        }
    }
}
