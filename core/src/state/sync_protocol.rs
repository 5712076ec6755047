//! State sync between peers: the y-sync protocol (`yrs::sync::Message`), several documents per
//! frame, over the libp2p request-response protocol [`SYNC_PROTOCOL`]; and incremental updates
//! broadcast on one gossipsub topic per document.
//!
//! A frame is `[version = 1][varint entry count]` then, per entry, `[varint name length][name]
//! [varint message count]` and per message `[varint length][y-sync message, lib0 v1]`.
//! The exchange, per document (y-sync semantics):
//! - request `SyncStep1(sv_a)` → response `SyncStep2(diff for a)` + `SyncStep1(sv_b)`;
//! - when b lacks something, a sends a second request `Update(diff for b)` (empty response).
//!
//! A peer that does not hold a document leaves it out of its response; nothing is created by
//! a remote message. Every count and length is bounded before anything is allocated.
//!
//! A frame is at most [`MAX_SYNC_FRAME_BYTES`], and the answers for many documents can be
//! larger than that. A response answers documents in the order asked until the next answer
//! would not fit, and lists each one left for later with no messages: "ask again". It always
//! answers the first (a document is bounded well below a frame), so every round makes
//! progress. Pushes that do not fit in one frame go out as several requests.

use libp2p::{gossipsub::IdentTopic, StreamProtocol};
use yrs::{
    sync::{Message, SyncMessage},
    updates::{decoder::Decode, encoder::Encode},
    StateVector,
};

use super::update_check::{check_state_vector_v1, check_update_v1};
use crate::{
    error::ErrorCode,
    frame,
    limits::{MAX_DOC_NAME_BYTES, MAX_PINNED_DOCS, MAX_SYNC_FRAME_BYTES, MAX_SYNC_UPDATE_BYTES},
    NodeError,
};

/// The request-response protocol name.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/peercompute/state-sync/1");
/// Prefix of the gossipsub topics that carry a document's incremental updates.
pub const STATE_TOPIC_PREFIX: &str = "pc/state/1/";
/// Frame format version.
const FRAME_VERSION: u8 = 1;
/// Most y-sync messages for one document in one frame.
const MAX_MESSAGES_PER_DOC: usize = 4;

/// The gossipsub topic of a document's updates.
pub fn state_topic(doc: &str) -> IdentTopic {
    IdentTopic::new(format!("{STATE_TOPIC_PREFIX}{doc}"))
}

/// The document a state topic belongs to.
pub fn state_topic_doc(topic: &str) -> Option<&str> {
    topic.strip_prefix(STATE_TOPIC_PREFIX)
}

/// y-sync messages for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMessages {
    /// Document name.
    pub doc: String,
    /// Its messages, in order.
    pub messages: Vec<SyncMessage>,
}

impl DocMessages {
    /// Bytes this entry takes in an encoded frame.
    pub fn encoded_len(&self) -> usize {
        let messages: usize = self
            .messages
            .iter()
            .map(|m| {
                // `[0 = sync][kind][varint length][payload]`, itself length-prefixed.
                let payload = match m {
                    SyncMessage::SyncStep1(sv) => sv.encode_v1().len(),
                    SyncMessage::SyncStep2(u) | SyncMessage::Update(u) => u.len(),
                };
                let message = 2 + varint_len(payload) + payload;
                varint_len(message) + message
            })
            .sum();
        varint_len(self.doc.len()) + self.doc.len() + varint_len(self.messages.len()) + messages
    }

    /// A response's entry for a document it leaves for another request.
    pub fn ask_again(doc: String) -> Self {
        DocMessages {
            doc,
            messages: Vec::new(),
        }
    }

    /// Bytes of [`Self::ask_again`]'s entry for `doc`.
    pub fn ask_again_len(doc: &str) -> usize {
        varint_len(doc.len()) + doc.len() + 1
    }
}

/// One request or response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncFrame {
    /// Per-document messages.
    pub entries: Vec<DocMessages>,
}

/// Room for a frame's header (version and entry count) within its bound.
pub const FRAME_HEADER_BYTES: usize = 1 + 10;

/// Fills frames with entries, none past `budget` bytes (an entry larger than the budget
/// alone gets a frame of its own).
#[derive(Debug)]
pub struct FramePacker {
    budget: usize,
    used: usize,
    frames: Vec<SyncFrame>,
}

impl FramePacker {
    /// Frames of at most [`MAX_SYNC_FRAME_BYTES`].
    pub fn new() -> Self {
        Self::with_budget(MAX_SYNC_FRAME_BYTES)
    }

    /// Frames of at most `budget` bytes (tests use small ones).
    pub fn with_budget(budget: usize) -> Self {
        FramePacker {
            budget: budget.saturating_sub(FRAME_HEADER_BYTES),
            used: 0,
            frames: Vec::new(),
        }
    }

    /// Whether `entry` fits in the current frame (always, while that frame is empty).
    pub fn fits(&self, entry: &DocMessages) -> bool {
        let empty = self.frames.last().is_none_or(|f| f.entries.is_empty());
        empty || self.used + entry.encoded_len() <= self.budget
    }

    /// Adds `entry` to the current frame, or to a new one when it does not fit.
    pub fn push(&mut self, entry: DocMessages) {
        if !self.fits(&entry) {
            self.frames.push(SyncFrame::default());
            self.used = 0;
        }
        self.used += entry.encoded_len();
        match self.frames.last_mut() {
            Some(frame) => frame.entries.push(entry),
            None => self.frames.push(SyncFrame {
                entries: vec![entry],
            }),
        }
    }

    /// The frames, in order.
    pub fn into_frames(self) -> Vec<SyncFrame> {
        self.frames
    }
}

impl Default for FramePacker {
    fn default() -> Self {
        Self::new()
    }
}

fn varint_len(v: usize) -> usize {
    (usize::BITS - (v | 1).leading_zeros()).div_ceil(7) as usize
}

fn bad(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::StateInvalidUpdate, message)
}

impl SyncFrame {
    /// Bytes of the encoded frame, at most (its entry count counted at its widest).
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_BYTES
            + self
                .entries
                .iter()
                .map(DocMessages::encoded_len)
                .sum::<usize>()
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FRAME_VERSION];
        frame::write_varint(&mut out, self.entries.len() as u64);
        for entry in &self.entries {
            frame::write_varint(&mut out, entry.doc.len() as u64);
            out.extend_from_slice(entry.doc.as_bytes());
            frame::write_varint(&mut out, entry.messages.len() as u64);
            for message in &entry.messages {
                let bytes = Message::Sync(message.clone()).encode_v1();
                frame::write_varint(&mut out, bytes.len() as u64);
                out.extend_from_slice(&bytes);
            }
        }
        out
    }

    /// Decodes a frame, bounding every count and length.
    pub fn decode(bytes: &[u8]) -> Result<Self, NodeError> {
        if bytes.len() > MAX_SYNC_FRAME_BYTES {
            return Err(bad(format!("frame of {} bytes", bytes.len())));
        }
        let mut r = frame::Reader::new(bytes, ErrorCode::StateInvalidUpdate);
        let version = r.byte("frame version")?;
        if version != FRAME_VERSION {
            return Err(bad(format!("unknown frame version {version}")));
        }
        let count = r.bounded(MAX_PINNED_DOCS, "document count")?;
        let mut entries = Vec::with_capacity(count.min(64));
        // Each state vector asks for a diff of the whole document: a document named twice,
        // or asked for twice, would have a small frame cost a large answer many times over.
        let mut seen = std::collections::HashSet::with_capacity(count.min(64));
        for _ in 0..count {
            let name = r.bytes(MAX_DOC_NAME_BYTES, "document name")?;
            let doc = std::str::from_utf8(name)
                .map_err(|_| bad("document name is not UTF-8"))?
                .to_string();
            crate::state::path::validate_doc_name(&doc).map_err(|e| bad(e.message))?;
            if !seen.insert(doc.clone()) {
                return Err(bad(format!("document {doc:?} named twice in one frame")));
            }
            let n = r.bounded(MAX_MESSAGES_PER_DOC, "message count")?;
            let mut messages = Vec::with_capacity(n);
            for _ in 0..n {
                let bytes = r.bytes(MAX_SYNC_FRAME_BYTES, "message")?;
                messages.push(decode_sync_message(bytes)?);
            }
            let asks = messages
                .iter()
                .filter(|m| matches!(m, SyncMessage::SyncStep1(_)))
                .count();
            if asks > 1 {
                return Err(bad(format!(
                    "document {doc:?} asked for {asks} times in one frame"
                )));
            }
            entries.push(DocMessages { doc, messages });
        }
        r.finish("the frame")?;
        Ok(SyncFrame { entries })
    }
}

/// Decodes one y-sync message (`[0 = sync][0 = step 1 | 1 = step 2 | 2 = update][payload]`),
/// checking the payload's layout before yrs decodes it.
fn decode_sync_message(bytes: &[u8]) -> Result<SyncMessage, NodeError> {
    let mut r = frame::Reader::new(bytes, ErrorCode::StateInvalidUpdate);
    if r.varint()? != 0 {
        return Err(bad("only y-sync sync messages are expected here"));
    }
    let kind = r.varint()?;
    let payload = r.bytes(MAX_SYNC_FRAME_BYTES, "payload")?;
    r.finish("a y-sync message")?;
    match kind {
        0 => {
            check_state_vector_v1(payload)?;
            StateVector::decode_v1(payload)
                .map(SyncMessage::SyncStep1)
                .map_err(|e| bad(format!("state vector: {e}")))
        }
        1 | 2 => {
            if payload.len() > MAX_SYNC_UPDATE_BYTES {
                return Err(NodeError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("an update is at most {MAX_SYNC_UPDATE_BYTES} bytes"),
                ));
            }
            check_update_v1(payload)?;
            let payload = payload.to_vec();
            Ok(if kind == 1 {
                SyncMessage::SyncStep2(payload)
            } else {
                SyncMessage::Update(payload)
            })
        }
        other => Err(bad(format!("unknown y-sync message type {other}"))),
    }
}

impl frame::WireFrame for SyncFrame {
    const MAX_BYTES: usize = MAX_SYNC_FRAME_BYTES;
    const WHAT: &'static str = "sync";

    fn encode_frame(&self) -> Vec<u8> {
        self.encode()
    }

    fn decode_frame(bytes: &[u8]) -> Result<Self, NodeError> {
        Self::decode(bytes)
    }
}

/// The request-response codec: one length-prefixed frame each way.
pub type SyncCodec = frame::FrameCodec<SyncFrame, SyncFrame>;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> SyncFrame {
        SyncFrame {
            entries: vec![
                DocMessages {
                    doc: "overworld".into(),
                    messages: vec![SyncMessage::SyncStep1(StateVector::default())],
                },
                DocMessages {
                    doc: "b".into(),
                    messages: vec![
                        SyncMessage::SyncStep2(vec![0, 0]),
                        SyncMessage::Update(vec![0, 0]),
                    ],
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let frame = sample();
        assert_eq!(SyncFrame::decode(&frame.encode()).unwrap(), frame);
        assert_eq!(
            SyncFrame::decode(&SyncFrame::default().encode()).unwrap(),
            SyncFrame::default()
        );
    }

    #[test]
    fn entry_sizes_add_up_to_the_encoded_frame() {
        let frame = sample();
        let entries: usize = frame.entries.iter().map(DocMessages::encoded_len).sum();
        assert_eq!(frame.encode().len(), 2 + entries);
        let big = DocMessages {
            doc: "x".repeat(128),
            messages: vec![SyncMessage::Update(vec![0; 20_000])],
        };
        let mut entries = vec![DocMessages::ask_again("y".into()); 200];
        entries.push(big.clone());
        let frame = SyncFrame { entries };
        let entries = big.encoded_len() + 200 * DocMessages::ask_again_len("y");
        assert_eq!(
            frame.encode().len(),
            3 + entries,
            "a version and a two-byte count"
        );
        // An entry with no messages ("ask again") decodes as such.
        let ask = SyncFrame {
            entries: vec![DocMessages::ask_again("y".into())],
        };
        assert_eq!(SyncFrame::decode(&ask.encode()).unwrap(), ask);
    }

    #[test]
    fn packed_frames_stay_within_their_budget() {
        let entry = |i: usize| DocMessages {
            doc: format!("d{i}"),
            messages: vec![SyncMessage::Update(vec![0; 1000 + i])],
        };
        let mut packer = FramePacker::with_budget(3000);
        for i in 0..7 {
            packer.push(entry(i));
        }
        // An entry larger than the budget still goes out, alone.
        packer.push(DocMessages {
            doc: "huge".into(),
            messages: vec![SyncMessage::Update(vec![0; 5000])],
        });
        let frames = packer.into_frames();
        let docs: Vec<Vec<&str>> = frames
            .iter()
            .map(|f| f.entries.iter().map(|e| e.doc.as_str()).collect())
            .collect();
        assert_eq!(
            docs,
            [
                vec!["d0", "d1"],
                vec!["d2", "d3"],
                vec!["d4", "d5"],
                vec!["d6"],
                vec!["huge"]
            ]
        );
        for frame in &frames[..4] {
            assert!(frame.encode().len() <= 3000);
        }
    }

    #[test]
    fn rejects_hostile_frames() {
        let good = sample().encode();
        for n in 0..good.len() {
            assert!(SyncFrame::decode(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(SyncFrame::decode(&trailing).is_err());
        // A count far past the bound is refused before anything is allocated.
        assert!(SyncFrame::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        // A document name with a control character.
        assert!(SyncFrame::decode(&[1, 1, 1, b'\n', 0]).is_err());
        // Version 2 is not ours.
        assert!(SyncFrame::decode(&[2, 0]).is_err());
    }

    /// A small frame that would cost many whole-document diffs: a document named twice, or
    /// asked for twice under one name.
    #[test]
    fn rejects_repeated_asks_for_a_document() {
        let ask = || SyncMessage::SyncStep1(StateVector::default());
        let entry = |messages| DocMessages {
            doc: "overworld".into(),
            messages,
        };
        let twice = SyncFrame {
            entries: vec![entry(vec![ask()]), entry(vec![ask()])],
        };
        assert!(SyncFrame::decode(&twice.encode()).is_err());
        let asked_twice = SyncFrame {
            entries: vec![entry(vec![ask(), ask()])],
        };
        assert!(SyncFrame::decode(&asked_twice.encode()).is_err());
        let once = SyncFrame {
            entries: vec![entry(vec![ask(), SyncMessage::Update(vec![0, 0])])],
        };
        assert!(SyncFrame::decode(&once.encode()).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SyncFrame::decode(&bytes);
        }

        /// Mutations of a valid frame never panic the decoder.
        #[test]
        fn mutated_frames_never_panic(i in 0usize..64, b in any::<u8>()) {
            let mut bytes = sample().encode();
            let i = i % bytes.len();
            bytes[i] = b;
            let _ = SyncFrame::decode(&bytes);
        }
    }
}
