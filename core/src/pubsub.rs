//! Application pubsub over gossipsub: topic naming and the payload envelope.
//!
//! Wire format of an application message (the gossipsub `data` field):
//!
//! ```text
//! byte 0      kind: 1 = JSON text (UTF-8), 2 = raw bytes
//! bytes 1..   payload, at most MAX_PUBLISH_BYTES
//! ```
//!
//! JSON payloads are checked to be valid JSON on both ends, so a tab never receives something
//! it cannot parse. Application topics live under [`APP_TOPIC_PREFIX`], apart from the node's
//! own topics (discovery), so an app cannot forge internal traffic.

use libp2p::gossipsub::IdentTopic;

use crate::{
    error::ErrorCode,
    limits::{MAX_PUBLISH_BYTES, MAX_TOPIC_BYTES},
    NodeError,
};

/// Prefix of every application topic on the wire.
pub const APP_TOPIC_PREFIX: &str = "pc/app/1/";

const KIND_JSON: u8 = 1;
const KIND_BYTES: u8 = 2;

/// A decoded application payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Payload {
    /// JSON text, already validated.
    Json(String),
    /// Raw bytes.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Payload {
    /// Validates the payload against its bounds (and JSON syntax).
    pub fn validate(&self) -> Result<(), NodeError> {
        match self {
            Payload::Json(s) => Self::validate_body(s.len(), Some(s)),
            Payload::Bytes(b) => Self::validate_body(b.len(), None),
        }
    }

    /// A body of `len` bytes, JSON text if `json` is given, against the bound and the syntax.
    fn validate_body(len: usize, json: Option<&str>) -> Result<(), NodeError> {
        if len > MAX_PUBLISH_BYTES {
            return Err(NodeError::new(
                ErrorCode::PayloadTooLarge,
                format!("payload of {len} bytes exceeds the bound of {MAX_PUBLISH_BYTES}"),
            ));
        }
        if let Some(s) = json {
            serde_json::from_str::<serde::de::IgnoredAny>(s)
                .map_err(|e| NodeError::new(ErrorCode::InvalidJson, e.to_string()))?;
        }
        Ok(())
    }

    /// Encodes into the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match self {
            Payload::Json(s) => (KIND_JSON, s.as_bytes()),
            Payload::Bytes(b) => (KIND_BYTES, b.as_slice()),
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(kind);
        out.extend_from_slice(body);
        out
    }

    /// Decodes and validates an envelope received from the network.
    pub fn decode(bytes: &[u8]) -> Result<Payload, NodeError> {
        Ok(match Self::check(bytes)? {
            // `check` has found the body to be UTF-8 JSON.
            (KIND_JSON, body) => Payload::Json(String::from_utf8_lossy(body).into_owned()),
            (_, body) => Payload::Bytes(body.to_vec()),
        })
    }

    /// Validates an envelope received from the network without copying it (the relay checks
    /// every message it forwards); returns its kind and body.
    pub fn check(bytes: &[u8]) -> Result<(u8, &[u8]), NodeError> {
        let (&kind, body) = bytes
            .split_first()
            .ok_or_else(|| NodeError::new(ErrorCode::BadRequest, "empty pubsub message"))?;
        match kind {
            KIND_JSON => {
                let text = std::str::from_utf8(body)
                    .map_err(|_| NodeError::new(ErrorCode::InvalidJson, "JSON is not UTF-8"))?;
                Self::validate_body(text.len(), Some(text))?;
            }
            KIND_BYTES => Self::validate_body(body.len(), None)?,
            other => {
                return Err(NodeError::new(
                    ErrorCode::BadRequest,
                    format!("unknown payload kind {other}"),
                ))
            }
        }
        Ok((kind, body))
    }

    /// Size of the payload body in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(s) => s.len(),
            Payload::Bytes(b) => b.len(),
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Validates an application topic name given by a tab.
pub fn validate_topic(topic: &str) -> Result<(), NodeError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return Err(NodeError::new(
            ErrorCode::InvalidTopic,
            format!("topic must be 1..={MAX_TOPIC_BYTES} bytes"),
        ));
    }
    if topic.chars().any(char::is_control) {
        return Err(NodeError::new(
            ErrorCode::InvalidTopic,
            "topic must not contain control characters",
        ));
    }
    Ok(())
}

/// Whether `topic` is one of PeerCompute's gossipsub topics, its name within bounds: an
/// application topic, a document's, discovery or presence. Peers' subscriptions to anything
/// else are not kept (see [`crate::behaviour::KnownTopics`]).
pub fn is_known_topic(topic: &str) -> bool {
    if let Some(name) = app_topic_name(topic) {
        return validate_topic(name).is_ok();
    }
    if let Some(doc) = crate::state::sync_protocol::state_topic_doc(topic) {
        return crate::state::path::validate_doc_name(doc).is_ok();
    }
    topic == crate::discovery::DISCOVERY_TOPIC || topic == crate::presence::PRESENCE_TOPIC
}

/// The gossipsub topic for an application topic name.
pub fn app_topic(topic: &str) -> IdentTopic {
    IdentTopic::new(format!("{APP_TOPIC_PREFIX}{topic}"))
}

/// The application topic name of a gossipsub topic, if it is one.
pub fn app_topic_name(wire_topic: &str) -> Option<&str> {
    wire_topic.strip_prefix(APP_TOPIC_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_topics_within_bounds_are_known() {
        assert!(is_known_topic("pc/app/1/chat"));
        assert!(is_known_topic("pc/state/1/overworld"));
        assert!(is_known_topic(crate::discovery::DISCOVERY_TOPIC));
        assert!(is_known_topic(crate::presence::PRESENCE_TOPIC));
        assert!(!is_known_topic("pc/app/1/"));
        assert!(!is_known_topic(&format!("pc/app/1/{}", "x".repeat(257))));
        assert!(!is_known_topic("pc/app/1/a\nb"));
        assert!(!is_known_topic(&format!("pc/state/1/{}", "d".repeat(129))));
        assert!(!is_known_topic("someone/else"));
    }

    #[test]
    fn round_trips_json_and_bytes() {
        for p in [
            Payload::Json(r#"{"text":"hello"}"#.into()),
            Payload::Bytes(vec![0, 1, 2, 255]),
            Payload::Bytes(vec![]),
        ] {
            assert_eq!(Payload::decode(&p.encode()).expect("decodes"), p);
        }
    }

    #[test]
    fn rejects_hostile_envelopes() {
        assert_eq!(
            Payload::decode(&[]).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            Payload::decode(&[9, 1]).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            Payload::decode(&[KIND_JSON, b'{']).unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            Payload::decode(&[KIND_JSON, 0xff, 0xfe]).unwrap_err().code,
            ErrorCode::InvalidJson
        );
        let mut big = vec![KIND_BYTES];
        big.resize(MAX_PUBLISH_BYTES + 2, 0);
        assert_eq!(
            Payload::decode(&big).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn topic_bounds() {
        assert!(validate_topic("chat").is_ok());
        assert_eq!(
            validate_topic("").unwrap_err().code,
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            validate_topic(&"a".repeat(MAX_TOPIC_BYTES + 1))
                .unwrap_err()
                .code,
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            validate_topic("a\nb").unwrap_err().code,
            ErrorCode::InvalidTopic
        );
        assert_eq!(app_topic_name(&app_topic("chat").to_string()), Some("chat"));
        assert_eq!(app_topic_name("pc/discovery/1"), None);
    }
}
