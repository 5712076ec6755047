//! Errors that reach a tab: a stable code string and a human message.

use serde::{Deserialize, Serialize};

/// Stable error codes. The string form (`as_str`) is part of the public API: tabs match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The message from the tab could not be decoded.
    BadRequest,
    /// The tab speaks another protocol version.
    UnsupportedVersion,
    /// The operation is not known to this node.
    UnknownOp,
    /// A relay multiaddr could not be parsed or cannot be dialed from a browser.
    InvalidRelayAddr,
    /// No relay connection came up before the timeout; the node keeps retrying.
    ConnectTimeout,
    /// A topic name is empty, too long or reserved.
    InvalidTopic,
    /// A payload is larger than its bound.
    PayloadTooLarge,
    /// A JSON payload is not valid JSON.
    InvalidJson,
    /// The node is overloaded; try again.
    Busy,
    /// Too many subscriptions for one tab.
    TooManySubscriptions,
    /// A document name is empty, too long or has control characters.
    StateInvalidDocName,
    /// A document path is empty, too deep or has an empty or overlong key.
    StateInvalidPath,
    /// A value is not plain JSON (functions, cycles, non-finite numbers) or breaks a bound.
    StateInvalidValue,
    /// Bytes given as a Yjs update (or state vector) cannot be decoded or applied.
    StateInvalidUpdate,
    /// The document was not opened by this tab first.
    StateNotOpen,
    /// Too many documents open at once.
    StateTooManyDocs,
    /// A document would outgrow its size bound.
    StateDocTooLarge,
    /// No version with that id.
    StateUnknownVersion,
    /// This copy does not hold all the history a version names yet (a peer's version whose
    /// updates have not synced here, or are waiting for their dependencies).
    StateVersionIncomplete,
    /// An imported update builds on history this document does not hold: the part that
    /// could go in did (stored and shown), the rest was not kept.
    StateMissingHistory,
    /// The document already keeps the most versions allowed.
    StateTooManyVersions,
    /// The write could not be made durable (IndexedDB failed); it is not acknowledged.
    StatePersistFailed,
    /// A presence state is not plain JSON.
    PresenceInvalidValue,
    /// A compute task is malformed or out of bounds.
    TaskInvalid,
    /// A CPU task names a kernel this runtime does not have.
    TaskUnknownKernel,
    /// Code from the network (or code to be sent to it) has no root-key signature.
    CodeUnsigned,
    /// A code signature is malformed or does not verify against the network's root key.
    CodeSignatureInvalid,
    /// This node cannot run that kind of work (no WebGPU adapter, no executor).
    TaskUnsupported,
    /// A chunk failed on a worker.
    TaskChunkFailed,
    /// A task failed: its chunks kept failing, or no worker could run them.
    TaskFailed,
    /// Workers disagreed on a chunk and no majority emerged.
    TaskUnverifiable,
    /// The task did not finish within its timeout.
    TaskTimeout,
    /// The task was cancelled.
    TaskCancelled,
    /// A task with that id is already running on this node.
    TaskDuplicateId,
    /// No running task has that id.
    TaskUnknown,
    /// An internal error; the node keeps running.
    Internal,
}

impl ErrorCode {
    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::UnknownOp => "UNKNOWN_OP",
            ErrorCode::InvalidRelayAddr => "INVALID_RELAY_ADDR",
            ErrorCode::ConnectTimeout => "CONNECT_TIMEOUT",
            ErrorCode::InvalidTopic => "INVALID_TOPIC",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::Busy => "BUSY",
            ErrorCode::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            ErrorCode::StateInvalidDocName => "STATE_INVALID_DOC_NAME",
            ErrorCode::StateInvalidPath => "STATE_INVALID_PATH",
            ErrorCode::StateInvalidValue => "STATE_INVALID_VALUE",
            ErrorCode::StateInvalidUpdate => "STATE_INVALID_UPDATE",
            ErrorCode::StateNotOpen => "STATE_NOT_OPEN",
            ErrorCode::StateTooManyDocs => "STATE_TOO_MANY_DOCS",
            ErrorCode::StateDocTooLarge => "STATE_DOC_TOO_LARGE",
            ErrorCode::StateUnknownVersion => "STATE_UNKNOWN_VERSION",
            ErrorCode::StateVersionIncomplete => "STATE_VERSION_INCOMPLETE",
            ErrorCode::StateMissingHistory => "STATE_MISSING_HISTORY",
            ErrorCode::StateTooManyVersions => "STATE_TOO_MANY_VERSIONS",
            ErrorCode::StatePersistFailed => "STATE_PERSIST_FAILED",
            ErrorCode::PresenceInvalidValue => "PRESENCE_INVALID_VALUE",
            ErrorCode::TaskInvalid => "TASK_INVALID",
            ErrorCode::TaskUnknownKernel => "TASK_UNKNOWN_KERNEL",
            ErrorCode::CodeUnsigned => "CODE_UNSIGNED",
            ErrorCode::CodeSignatureInvalid => "CODE_SIGNATURE_INVALID",
            ErrorCode::TaskUnsupported => "TASK_UNSUPPORTED",
            ErrorCode::TaskChunkFailed => "TASK_CHUNK_FAILED",
            ErrorCode::TaskFailed => "TASK_FAILED",
            ErrorCode::TaskUnverifiable => "TASK_UNVERIFIABLE",
            ErrorCode::TaskTimeout => "TASK_TIMEOUT",
            ErrorCode::TaskCancelled => "TASK_CANCELLED",
            ErrorCode::TaskDuplicateId => "TASK_DUPLICATE_ID",
            ErrorCode::TaskUnknown => "TASK_UNKNOWN",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The code with this string form (codes that come back from peers).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(s: &str) -> Option<ErrorCode> {
        use serde::{de::value::StrDeserializer, Deserialize};
        ErrorCode::deserialize(StrDeserializer::<serde::de::value::Error>::new(s)).ok()
    }
}

/// An error with its stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct NodeError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl NodeError {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        NodeError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_strings() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::StateInvalidUpdate,
            ErrorCode::PresenceInvalidValue,
            ErrorCode::CodeSignatureInvalid,
            ErrorCode::TaskChunkFailed,
            ErrorCode::TaskUnknown,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_str(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", code.as_str()),
                "serde and as_str agree"
            );
        }
        assert_eq!(ErrorCode::from_str("NOPE"), None);
    }
}
