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

/// One request or response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncFrame {
    /// Per-document messages.
    pub entries: Vec<DocMessages>,
}

fn bad(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::StateInvalidUpdate, message)
}

impl SyncFrame {
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
