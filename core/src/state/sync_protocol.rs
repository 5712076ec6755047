//! State sync between peers: the y-sync protocol (`yrs::sync::Message`), several documents per
//! frame, over the libp2p request-response protocol [`SYNC_PROTOCOL`]; and incremental updates
//! broadcast on one gossipsub topic per document.
//!
//! A frame is `[version = 1][varint entry count]` then, per entry, `[varint name length][name]
//! [varint message count]` and per message `[varint length][y-sync message, lib0 v1]`.
//!
//! Version 2 of the protocol ([`SYNC_PROTOCOL`]) carries the same frames, and a frame of at
//! least [`COMPRESS_MIN_BYTES`] goes out deflated: `[version = 2][varint length of the
//! version-1 frame][raw deflate (RFC 1951) of the version-1 frame]`. A whole document's answer
//! is mostly the same few bytes per entry (Yjs item headers, keys that share a prefix): 100k map
//! entries take 1.9 MB plain and about 0.3 MB deflated, which is what crosses the relay, twice
//! encrypted. Peers that only speak `/1` ([`SYNC_PROTOCOL_V1`]) are still answered, with plain
//! frames; the decoder reads both versions on either protocol.
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

/// The request-response protocol: frames of at least [`COMPRESS_MIN_BYTES`] go out deflated.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/peercompute/state-sync/2");
/// The first version of the protocol, frames never compressed; still spoken, after
/// [`SYNC_PROTOCOL`], with peers that know only it.
pub const SYNC_PROTOCOL_V1: StreamProtocol = StreamProtocol::new("/peercompute/state-sync/1");
/// Prefix of the gossipsub topics that carry a document's incremental updates.
pub const STATE_TOPIC_PREFIX: &str = "pc/state/1/";
/// Frame format version.
const FRAME_VERSION: u8 = 1;
/// A deflated version-1 frame.
const DEFLATED_FRAME_VERSION: u8 = 2;
/// Frames smaller than this go out plain: state vectors and small updates gain little and
/// would pay deflate's set-up (its tables are ~64 KiB).
pub const COMPRESS_MIN_BYTES: usize = 16 * 1024;
/// Deflate's fastest level: a whole document's answer compresses ~6× at ~1/4 of the CPU that
/// level 6 spends for ~3 % fewer bytes.
const DEFLATE_LEVEL: u8 = 1;
/// The most a deflated frame may expand: a receiver inflates at most this many bytes per byte
/// received, so a small frame cannot make it allocate and inflate up to the frame bound.
/// Honest answers expand ~6×; a sender whose frame would expand more sends it plain.
const MAX_INFLATE_RATIO: usize = 64;
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

    /// Encodes the frame for a stream of `protocol`: deflated on [`SYNC_PROTOCOL`] when it is
    /// at least [`COMPRESS_MIN_BYTES`] and deflate saves at least an eighth of it.
    pub fn encode_for(&self, protocol: &StreamProtocol) -> Vec<u8> {
        let plain = self.encode();
        // A frame past the bound goes out plain, to be refused here by the frame writer
        // rather than by the peer once inflated.
        if *protocol != SYNC_PROTOCOL
            || plain.len() < COMPRESS_MIN_BYTES
            || plain.len() > MAX_SYNC_FRAME_BYTES
        {
            return plain;
        }
        let deflated = miniz_oxide::deflate::compress_to_vec(&plain, DEFLATE_LEVEL);
        let wire_len = 1 + varint_len(plain.len()) + deflated.len();
        // Deflate falls back to stored blocks, so it barely grows what it cannot shrink; a
        // frame it shrinks by less than an eighth is not worth the receiver inflating.
        if wire_len > plain.len() - plain.len() / 8
            || plain.len() > deflated.len() * MAX_INFLATE_RATIO
        {
            return plain;
        }
        let mut out = Vec::with_capacity(wire_len);
        out.push(DEFLATED_FRAME_VERSION);
        frame::write_varint(&mut out, plain.len() as u64);
        out.extend_from_slice(&deflated);
        out
    }

    /// Decodes a frame of either version, bounding every count and length (a deflated one's
    /// inflated size as well, before it is inflated past it).
    pub fn decode(bytes: &[u8]) -> Result<Self, NodeError> {
        if bytes.len() > MAX_SYNC_FRAME_BYTES {
            return Err(bad(format!("frame of {} bytes", bytes.len())));
        }
        if bytes.first() == Some(&DEFLATED_FRAME_VERSION) {
            return Self::decode_plain(&inflate(bytes)?);
        }
        Self::decode_plain(bytes)
    }

    /// Decodes a version-1 frame.
    fn decode_plain(bytes: &[u8]) -> Result<Self, NodeError> {
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

/// The version-1 frame inside a deflated one: exactly the length it declares, which is at most
/// [`MAX_SYNC_FRAME_BYTES`] and at most [`MAX_INFLATE_RATIO`] times the deflated bytes.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, NodeError> {
    let mut r = frame::Reader::new(bytes, ErrorCode::StateInvalidUpdate);
    r.byte("frame version")?;
    let len = r.bounded(MAX_SYNC_FRAME_BYTES, "inflated frame length")?;
    let deflated = r.rest();
    if len > deflated.len().saturating_mul(MAX_INFLATE_RATIO) {
        return Err(bad(format!(
            "deflated frame of {} bytes declares {len}: more than {MAX_INFLATE_RATIO}× its size",
            deflated.len()
        )));
    }
    let plain = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, len)
        .map_err(|e| bad(format!("deflated frame: {:?}", e.status)))?;
    if plain.len() != len {
        return Err(bad(format!(
            "deflated frame holds {} bytes, not the {len} it declares",
            plain.len()
        )));
    }
    Ok(plain)
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

    fn encode_frame_for(&self, protocol: &StreamProtocol) -> Vec<u8> {
        self.encode_for(protocol)
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
        // Version 2 is deflated: an empty stream, a declared length past the bound.
        assert!(SyncFrame::decode(&[2, 0]).is_err());
        assert!(SyncFrame::decode(&[2, 0xff, 0xff, 0xff, 0xff, 0x0f, 3, 0]).is_err());
        // Version 3 is not ours.
        assert!(SyncFrame::decode(&[3, 0]).is_err());
    }

    /// A frame holding one document's whole state as a step-2 answer.
    fn whole_document(entries: u32, mut value: impl FnMut(u32) -> yrs::Any) -> SyncFrame {
        use yrs::{Map, ReadTxn, Transact};
        let doc = yrs::Doc::new();
        let root = doc.get_or_insert_map("root");
        {
            let mut txn = doc.transact_mut();
            for i in 0..entries {
                root.insert(&mut txn, format!("k{i}"), value(i));
            }
        }
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        SyncFrame {
            entries: vec![DocMessages {
                doc: "overworld".into(),
                messages: vec![SyncMessage::SyncStep2(update)],
            }],
        }
    }

    #[test]
    fn large_frames_go_out_deflated_on_version_2_and_plain_on_version_1() {
        let frame = whole_document(5000, |i| yrs::Any::from(f64::from(i)));
        let plain = frame.encode();
        assert!(plain.len() > COMPRESS_MIN_BYTES);
        let deflated = frame.encode_for(&SYNC_PROTOCOL);
        assert_eq!(deflated[0], DEFLATED_FRAME_VERSION);
        assert!(
            deflated.len() * 3 < plain.len(),
            "{} deflated of {} plain",
            deflated.len(),
            plain.len()
        );
        assert_eq!(SyncFrame::decode(&deflated).unwrap(), frame);
        assert!(frame.encode_for(&SYNC_PROTOCOL_V1) == plain);
        // Small frames stay plain on version 2.
        assert_eq!(sample().encode_for(&SYNC_PROTOCOL), sample().encode());
    }

    /// A frame that would expand more than the receiver accepts goes out plain.
    #[test]
    fn a_frame_that_deflates_past_the_ratio_goes_out_plain() {
        let frame = SyncFrame {
            entries: vec![DocMessages {
                doc: "zeros".into(),
                messages: vec![SyncMessage::Update(vec![0; 1 << 20])],
            }],
        };
        assert!(frame.encode_for(&SYNC_PROTOCOL) == frame.encode());
    }

    /// The codec writes each stream in its protocol's encoding, and reads both back.
    #[test]
    fn the_codec_encodes_for_the_negotiated_protocol() {
        use libp2p::{futures::io::Cursor, request_response::Codec as _};
        let frame = whole_document(5000, |i| yrs::Any::from(f64::from(i)));
        futures::executor::block_on(async {
            for (protocol, version) in [(SYNC_PROTOCOL, 2), (SYNC_PROTOCOL_V1, 1)] {
                let mut wire = Cursor::new(Vec::new());
                SyncCodec::default()
                    .write_response(&protocol, &mut wire, frame.clone())
                    .await
                    .unwrap();
                let bytes = wire.into_inner();
                assert_eq!(bytes[4], version, "{protocol}");
                let read = SyncCodec::default()
                    .read_response(&SYNC_PROTOCOL_V1, &mut Cursor::new(bytes))
                    .await
                    .unwrap();
                assert!(read == frame, "{protocol}");
            }
        });
    }

    #[test]
    fn a_frame_deflate_cannot_shrink_goes_out_plain() {
        // Pseudo-random values: only the entries' headers and keys would shrink.
        let mut x = 0x9e37_79b9_u32;
        let frame = whole_document(64, |_| {
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            yrs::Any::from(bytes)
        });
        assert!(frame.encode().len() > COMPRESS_MIN_BYTES);
        assert!(frame.encode_for(&SYNC_PROTOCOL) == frame.encode());
    }

    #[test]
    fn rejects_hostile_deflated_frames() {
        let deflated = |declared: usize, body: &[u8]| {
            let mut out = vec![DEFLATED_FRAME_VERSION];
            frame::write_varint(&mut out, declared as u64);
            out.extend(miniz_oxide::deflate::compress_to_vec(body, 1));
            out
        };
        let plain = sample().encode();
        assert_eq!(
            SyncFrame::decode(&deflated(plain.len(), &plain)).unwrap(),
            sample()
        );
        // Declaring fewer or more bytes than it holds.
        let short = SyncFrame::decode(&deflated(plain.len() - 1, &plain)).unwrap_err();
        assert_eq!(short.code, ErrorCode::StateInvalidUpdate);
        assert!(SyncFrame::decode(&deflated(plain.len() + 1, &plain)).is_err());
        // A bomb: 40 MiB of zeros in well under 1 % of that, declared as 1 MiB, is cut off
        // at 1 MiB.
        let zeros = vec![0u8; 40 << 20];
        let bomb = deflated(1 << 20, &zeros);
        assert!(bomb.len() < 400_000, "{} bytes", bomb.len());
        assert!(SyncFrame::decode(&bomb).is_err());
        // Declaring more than 64× its deflated size is refused before anything is inflated,
        // even when the stream holds that much.
        let four_mib = deflated(4 << 20, &zeros[..4 << 20]);
        assert!(four_mib.len() * MAX_INFLATE_RATIO < 4 << 20);
        let refused = SyncFrame::decode(&four_mib).unwrap_err();
        assert!(
            refused.message.contains("more than 64×"),
            "{}",
            refused.message
        );
        // A deflated frame inside a deflated frame.
        let inner = deflated(plain.len(), &plain);
        assert!(SyncFrame::decode(&deflated(inner.len(), &inner)).is_err());
        // Truncated or corrupt streams.
        let good = deflated(plain.len(), &plain);
        for n in 0..good.len() {
            assert!(SyncFrame::decode(&good[..n]).is_err(), "truncated at {n}");
        }
        // Raw deflate has no checksum, so a flipped byte can inflate to other bytes (or, in
        // the padding after the stream's end, to the same ones); at these positions the
        // frame and update checks behind it refuse what comes out, or it differs.
        for i in [3, good.len() / 2, good.len() - 1] {
            let mut corrupt = good.clone();
            corrupt[i] ^= 0xff;
            assert!(
                SyncFrame::decode(&corrupt).map_or(true, |f| f != sample()),
                "byte {i}"
            );
        }
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

        /// Mutations of a valid deflated frame (a real deflate stream, so the inflater and the
        /// checks behind it both see near-valid input) never panic the decoder. (A flip may
        /// still decode to the original: raw deflate ignores the padding bits after its end.)
        #[test]
        fn mutated_deflated_frames_never_panic(
            entries in 1500u32..3000,
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        ) {
            let frame = whole_document(entries, |i| yrs::Any::from(f64::from(i)));
            let good = frame.encode_for(&SYNC_PROTOCOL);
            prop_assert_eq!(good[0], DEFLATED_FRAME_VERSION);
            let mut bytes = good;
            for (i, x) in flips {
                let i = i % bytes.len();
                bytes[i] ^= x;
            }
            let _ = SyncFrame::decode(&bytes);
        }

        /// Arbitrary bytes behind a deflated frame's header never panic the decoder.
        #[test]
        fn deflated_garbage_never_panics(
            len in 0usize..4096,
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut frame = vec![DEFLATED_FRAME_VERSION];
            frame::write_varint(&mut frame, len as u64);
            frame.extend(bytes);
            let _ = SyncFrame::decode(&frame);
        }
    }
}
