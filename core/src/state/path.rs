//! Paths into a document and the operations a tab applies to it, validated before they touch
//! the document.
//!
//! A path is a list of map keys from the document root: `["players", "alice", "x"]`. The SDK
//! also accepts the dotted form `"players.alice.x"` and splits it before it is sent. Values are
//! plain JSON: objects become nested shared maps (so concurrent writes to different keys merge),
//! arrays and scalars are stored whole.

use std::{fmt, sync::Arc};

use serde::{
    de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::Value;

use super::document::{depth, entry_key_shared, KEY_SEPARATOR};
use crate::{
    error::ErrorCode,
    limits::{
        MAX_DOC_NAME_BYTES, MAX_JSON_DEPTH, MAX_OPS_PER_UPDATE, MAX_PATH_SEGMENTS,
        MAX_PATH_SEGMENT_BYTES, MAX_STATE_UPDATE_BYTES,
    },
    NodeError,
};

mod compact;

/// A validated path from the document root.
pub type Path = Vec<String>;

/// One operation of an atomic update. Its path is held as the document keys its entries
/// (the path's keys joined by [`KEY_SEPARATOR`]), built once while the JSON is read: the key
/// yrs stores and the index counts is that same allocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Write `value` at the path, creating intermediate maps.
    Set {
        /// Where: the path's entry key.
        key: Arc<str>,
        /// What (plain JSON).
        value: Value,
    },
    /// Remove the entry at the path (nothing happens if it is absent).
    Delete {
        /// Where: the path's entry key.
        key: Arc<str>,
    },
}

impl Op {
    /// A write of `value` at `path` (not validated: [`decode_ops`] is what checks a tab's).
    pub fn set(path: &[String], value: Value) -> Op {
        Op::Set {
            key: entry_key_shared(path),
            value,
        }
    }

    /// A removal at `path` (not validated, as [`Op::set`]).
    pub fn delete(path: &[String]) -> Op {
        Op::Delete {
            key: entry_key_shared(path),
        }
    }

    /// The entry key of the path the operation touches.
    pub fn key(&self) -> &Arc<str> {
        match self {
            Op::Set { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// The state of one update's decoding, shared by the parser's visitors: a path's error, kept
/// here so its own code survives the JSON parser (whose errors are all one kind), and the
/// path being read.
#[derive(Default)]
struct Decoding {
    path_error: Option<NodeError>,
    path: PathKeys,
}

/// A path's entry key, built as its keys are read (by either parser): each key checked
/// ([`check_path_key`]), at most [`MAX_PATH_SEGMENTS`] of them, joined by [`KEY_SEPARATOR`]
/// into a buffer reused from path to path.
#[derive(Default)]
struct PathKeys {
    joined: String,
    keys: usize,
}

impl PathKeys {
    fn start(&mut self) {
        self.joined.clear();
        self.keys = 0;
    }

    fn push(&mut self, key: &str) -> Result<(), NodeError> {
        if self.keys == MAX_PATH_SEGMENTS {
            return Err(path_length_error());
        }
        check_path_key(key)?;
        if self.keys > 0 {
            self.joined.push(KEY_SEPARATOR);
        }
        self.joined.push_str(key);
        self.keys += 1;
        Ok(())
    }

    fn finish(&self) -> Result<Arc<str>, NodeError> {
        if self.keys == 0 {
            return Err(path_length_error());
        }
        Ok(Arc::from(self.joined.as_str()))
    }
}

/// An update's operations as the JSON parser reads them: straight into [`Op`]s (no form in
/// between to convert), the field names matched in place, the paths joined and checked key by
/// key, and the count bounded while reading. (A derived struct of three `Option`s, then
/// converted, was a third of decoding a 1000-op update; it also read `"value": null` as no
/// value. Paths read as lists of `String`s were two allocations per operation more.)
struct OpList<'a>(&'a mut Decoding);

impl<'de> DeserializeSeed<'de> for OpList<'_> {
    type Value = Vec<Op>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Op>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OpList<'_> {
    type Value = Vec<Op>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of operations")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Op>, A::Error> {
        let mut ops = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(op) = seq.next_element_seed(WireOp(&mut *self.0))? {
            if ops.len() == MAX_OPS_PER_UPDATE {
                return Err(A::Error::custom(too_many_ops()));
            }
            ops.push(op);
        }
        Ok(ops)
    }
}

fn too_many_ops() -> String {
    format!("an update has 1 to {MAX_OPS_PER_UPDATE} operations")
}

/// One operation: `{"set": path, "value": v}` or `{"delete": path}`, nothing else.
struct WireOp<'a>(&'a mut Decoding);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Set,
    Delete,
    Value,
}

const OP_SHAPE: &str = "each operation is {set: path, value} or {delete: path}";

impl<'de> DeserializeSeed<'de> for WireOp<'_> {
    type Value = Op;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Op, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WireOp<'_> {
    type Value = Op;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OP_SHAPE)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Op, A::Error> {
        let (mut set, mut delete, mut value) = (None, None, None);
        while let Some(field) = map.next_key()? {
            match field {
                Field::Set if set.is_none() => set = Some(map.next_value_seed(PathKey(self.0))?),
                Field::Delete if delete.is_none() => {
                    delete = Some(map.next_value_seed(PathKey(self.0))?);
                }
                Field::Value if value.is_none() => value = Some(map.next_value()?),
                _ => return Err(A::Error::custom("an operation names a field twice")),
            }
        }
        match (set, delete, value) {
            (Some(key), None, Some(value)) => Ok(Op::Set { key, value }),
            (Some(_), None, None) => Err(A::Error::custom("`set` needs a `value`")),
            (None, Some(key), None) => Ok(Op::Delete { key }),
            _ => Err(A::Error::custom(OP_SHAPE)),
        }
    }
}

/// A path, `["players", "alice"]`, read as its entry key ([`PathKeys`]).
struct PathKey<'a>(&'a mut Decoding);

impl<'de> DeserializeSeed<'de> for PathKey<'_> {
    type Value = Arc<str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Arc<str>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PathKey<'_> {
    type Value = Arc<str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a path: a list of keys")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Arc<str>, A::Error> {
        let decoding = self.0;
        let fail = |decoding: &mut Decoding, error: NodeError| {
            let message = error.message.clone();
            decoding.path_error = Some(error);
            A::Error::custom(message)
        };
        decoding.path.start();
        while let Some(segment) = seq.next_element::<PathSegment<'de>>()? {
            decoding
                .path
                .push(&segment.0)
                .map_err(|e| fail(decoding, e))?;
        }
        decoding.path.finish().map_err(|e| fail(decoding, e))
    }
}

/// One key of a path, borrowed from the JSON text unless it had escapes.
struct PathSegment<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for PathSegment<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Segment;
        impl<'de> Visitor<'de> for Segment {
            type Value = PathSegment<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path key (a string)")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(PathSegment(v.into()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(PathSegment(v.to_owned().into()))
            }
        }
        deserializer.deserialize_str(Segment)
    }
}

fn path_length_error() -> NodeError {
    invalid_path(format!("a path has 1 to {MAX_PATH_SEGMENTS} keys"))
}

fn invalid_path(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::StateInvalidPath, message)
}

fn invalid_value(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::StateInvalidValue, message)
}

/// Whether `s` holds a control character (Unicode's Cc). Every key of every write is checked:
/// an ASCII key (the usual one) is checked byte by byte, without decoding characters.
fn has_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        s.chars().any(char::is_control)
    }
}

/// Checks a document name: 1..=128 bytes, no control characters.
pub fn validate_doc_name(name: &str) -> Result<(), NodeError> {
    if name.is_empty() || name.len() > MAX_DOC_NAME_BYTES || has_control(name) {
        return Err(NodeError::new(
            ErrorCode::StateInvalidDocName,
            format!(
                "a document name is 1 to {MAX_DOC_NAME_BYTES} bytes without control characters"
            ),
        ));
    }
    Ok(())
}

/// Checks one key of a path: 1 to [`MAX_PATH_SEGMENT_BYTES`] bytes without control
/// characters (so never the separator that joins a path's keys).
fn check_path_key(segment: &str) -> Result<(), NodeError> {
    if segment.is_empty() || segment.len() > MAX_PATH_SEGMENT_BYTES || has_control(segment) {
        return Err(invalid_path(format!(
            "path key {segment:?} must be 1 to {MAX_PATH_SEGMENT_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks that a set's deepest stored key stays within [`MAX_PATH_SEGMENTS`]: an object is
/// stored one entry per leaf, below the path, so its nested objects add keys. (Tabs are shown
/// keys of at most that depth, so a deeper write would resolve and never be seen.)
fn validate_key_depth(key: &str, value: &Value) -> Result<(), NodeError> {
    fn object_depth(value: &Value) -> usize {
        match value {
            Value::Object(map) if !map.is_empty() => {
                1 + map.values().map(object_depth).max().unwrap_or(0)
            }
            _ => 0,
        }
    }
    let depth = depth(key) + 1 + object_depth(value);
    if depth > MAX_PATH_SEGMENTS {
        return Err(invalid_path(format!(
            "the value's keys would be {depth} levels deep; a stored key has at most {MAX_PATH_SEGMENTS}"
        )));
    }
    Ok(())
}

/// Checks that a value is plain, finite JSON no deeper than [`MAX_JSON_DEPTH`], whose object
/// keys are valid path keys (objects are stored one entry per leaf, keyed by path).
/// (`serde_json` cannot hold NaN or infinities; this guards depth and object keys.)
pub fn validate_value(value: &Value) -> Result<(), NodeError> {
    fn walk(value: &Value, depth: usize) -> Result<(), NodeError> {
        if depth > MAX_JSON_DEPTH {
            return Err(invalid_value(format!(
                "values nest at most {MAX_JSON_DEPTH} levels"
            )));
        }
        match value {
            Value::Array(items) => items.iter().try_for_each(|v| walk(v, depth + 1)),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if k.is_empty() || k.len() > MAX_PATH_SEGMENT_BYTES || has_control(k) {
                    return Err(invalid_value(format!(
                        "object keys are 1 to {MAX_PATH_SEGMENT_BYTES} bytes without control characters"
                    )));
                }
                walk(v, depth + 1)
            }),
            Value::Number(n) if n.as_f64().is_some_and(|f| !f.is_finite()) => {
                Err(invalid_value("numbers must be finite"))
            }
            _ => Ok(()),
        }
    }
    walk(value, 0)
}

/// Decodes the JSON text of an update (`[{"set": [...], "value": ...}, {"delete": [...]}]`),
/// bounded in size and count, every path and value validated. The SDK's compact form is read
/// by [`compact`]'s one pass; anything else, and every error, by the full parser.
pub fn decode_ops(json: &str) -> Result<Vec<Op>, NodeError> {
    if json.len() > MAX_STATE_UPDATE_BYTES {
        return Err(NodeError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "an update is at most {MAX_STATE_UPDATE_BYTES} bytes of JSON, got {}",
                json.len()
            ),
        ));
    }
    let ops = match compact::decode(json) {
        Some(ops) => ops,
        None => parse_full(json)?,
    };
    if ops.is_empty() {
        return Err(invalid_value(too_many_ops()));
    }
    for op in &ops {
        if let Op::Set { key, value } = op {
            validate_value(value)?;
            validate_key_depth(key, value)?;
        }
    }
    Ok(ops)
}

/// The operations of any JSON text, or what is wrong with it (values not checked yet).
fn parse_full(json: &str) -> Result<Vec<Op>, NodeError> {
    // serde_json's own recursion limit (128) keeps hostile nesting from exhausting the stack.
    let mut decoding = Decoding::default();
    let mut parser = serde_json::Deserializer::from_str(json);
    OpList(&mut decoding)
        .deserialize(&mut parser)
        .and_then(|ops| parser.end().map(|()| ops))
        .map_err(|e| {
            decoding.path_error.take().unwrap_or_else(|| {
                invalid_value(format!("update is not a list of operations: {e}"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_whose_keys_would_pass_the_depth_bound_is_refused() {
        let path = |n: usize| {
            (0..n)
                .map(|i| format!("\"k{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        };
        let nested =
            |levels: usize| (0..levels).fold("1".to_string(), |v, i| format!("{{\"n{i}\":{v}}}"));
        let op = |p: usize, levels: usize| {
            format!("[{{\"set\":[{}],\"value\":{}}}]", path(p), nested(levels))
        };
        assert!(decode_ops(&op(30, 2)).is_ok(), "32 levels in all");
        assert_eq!(
            decode_ops(&op(30, 3)).unwrap_err().code,
            ErrorCode::StateInvalidPath
        );
        assert_eq!(
            decode_ops(&op(1, 40)).unwrap_err().code,
            ErrorCode::StateInvalidPath
        );
        // Arrays are values, not keys: they add no depth.
        let in_array = format!("[{{\"set\":[{}],\"value\":[[[[1]]]]}}]", path(32));
        assert!(decode_ops(&in_array).is_ok());
    }

    #[test]
    fn null_is_a_value_and_the_operation_count_is_bounded() {
        let ops = decode_ops(r#"[{"value":null,"set":["a"]}]"#).unwrap();
        assert_eq!(ops, vec![Op::set(&["a".into()], Value::Null)]);
        let op = r#"{"delete":["a"]}"#;
        let list = |n: usize| format!("[{}]", vec![op; n].join(","));
        assert_eq!(
            decode_ops(&list(MAX_OPS_PER_UPDATE)).unwrap().len(),
            MAX_OPS_PER_UPDATE
        );
        let err = decode_ops(&list(MAX_OPS_PER_UPDATE + 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::StateInvalidValue);
        assert!(
            err.message.contains("1 to 1024 operations"),
            "{}",
            err.message
        );
        for twice in [
            r#"[{"set":["a"],"set":["b"],"value":1}]"#,
            r#"[{"delete":["a"],"delete":["a"]}]"#,
            r#"[{"set":["a"],"value":1,"value":2}]"#,
        ] {
            assert_eq!(
                decode_ops(twice).unwrap_err().code,
                ErrorCode::StateInvalidValue,
                "{twice}"
            );
        }
    }

    #[test]
    fn decodes_set_and_delete() {
        let ops = decode_ops(r#"[{"set":["a","b"],"value":{"x":1}},{"delete":["c"]}]"#).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::set(&["a".into(), "b".into()], serde_json::json!({"x": 1})),
                Op::delete(&["c".into()]),
            ]
        );
    }

    #[test]
    fn rejects_bad_updates_with_codes() {
        let cases = [
            ("[]", ErrorCode::StateInvalidValue),
            ("{}", ErrorCode::StateInvalidValue),
            (r#"[{"set":[],"value":1}]"#, ErrorCode::StateInvalidPath),
            (r#"[{"set":[""],"value":1}]"#, ErrorCode::StateInvalidPath),
            (r#"[{"set":["a"]}]"#, ErrorCode::StateInvalidValue),
            (
                r#"[{"set":["a"],"delete":["a"],"value":1}]"#,
                ErrorCode::StateInvalidValue,
            ),
            (
                r#"[{"delete":["a"],"value":1}]"#,
                ErrorCode::StateInvalidValue,
            ),
            (
                r#"[{"set":["a"],"value":1,"eval":"x"}]"#,
                ErrorCode::StateInvalidValue,
            ),
            (
                r#"[{"set":["a"],"value":NaN}]"#,
                ErrorCode::StateInvalidValue,
            ),
            (
                r#"[{"set":["a"],"value":1e999}]"#,
                ErrorCode::StateInvalidValue,
            ),
        ];
        for (json, code) in cases {
            assert_eq!(decode_ops(json).unwrap_err().code, code, "{json}");
        }
        let long_key = format!(r#"[{{"set":["{}"],"value":1}}]"#, "k".repeat(300));
        assert_eq!(
            decode_ops(&long_key).unwrap_err().code,
            ErrorCode::StateInvalidPath
        );
        let deep = format!(
            r#"[{{"set":["a"],"value":{}1{}}}]"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(
            decode_ops(&deep).unwrap_err().code,
            ErrorCode::StateInvalidValue
        );
        let huge = format!(
            r#"[{{"set":["a"],"value":"{}"}}]"#,
            "x".repeat(MAX_STATE_UPDATE_BYTES)
        );
        assert_eq!(
            decode_ops(&huge).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
    }

    /// Paths are read key by key into the entry key: escapes decoded, each key checked (a
    /// separator smuggled in as an escape is a control character), the key count bounded,
    /// and a path's error keeps its code wherever it is in the update.
    #[test]
    fn paths_are_read_as_entry_keys_and_checked_key_by_key() {
        let ops =
            decode_ops(r#"[{"set":["a\u0062","\u00e9"],"value":1},{"delete":["c"]}]"#).unwrap();
        assert_eq!(ops[0], Op::set(&["ab".into(), "é".into()], 1.into()));
        assert_eq!(ops[0].key().as_ref(), "ab\u{1f}é");
        assert_eq!(ops[1].key().as_ref(), "c");
        let path = |n: usize| format!("[{}]", vec![r#""k""#; n].join(","));
        let set_at = |path: &str| format!(r#"[{{"set":{path},"value":1}}]"#);
        assert_eq!(
            decode_ops(&set_at(&path(MAX_PATH_SEGMENTS))).unwrap()[0]
                .key()
                .len(),
            2 * MAX_PATH_SEGMENTS - 1
        );
        for (bad, code) in [
            (
                set_at(&path(MAX_PATH_SEGMENTS + 1)),
                ErrorCode::StateInvalidPath,
            ),
            (set_at(r#"["a\u001fb"]"#), ErrorCode::StateInvalidPath),
            (set_at(r#"["a",""]"#), ErrorCode::StateInvalidPath),
            (set_at(r#"["a",1]"#), ErrorCode::StateInvalidValue),
            (set_at(r#""a""#), ErrorCode::StateInvalidValue),
            // The path's error, not the syntax error after it.
            (
                r#"[{"delete":[]}, oops"#.to_string(),
                ErrorCode::StateInvalidPath,
            ),
            (
                r#"[{"delete":["a"]}] trailing"#.to_string(),
                ErrorCode::StateInvalidValue,
            ),
        ] {
            assert_eq!(decode_ops(&bad).unwrap_err().code, code, "{bad}");
        }
        let message = decode_ops(&set_at(r#"["a\u001fb"]"#)).unwrap_err().message;
        assert!(message.contains("control characters"), "{message}");
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_beyond() {
        for bad in ["a\u{0}", "\u{1f}", "x\u{7f}", "é\u{85}", "\u{9f}"] {
            assert!(has_control(bad), "{bad:?}");
        }
        for good in ["players", "é", "\u{a0}", "~ ", "日本"] {
            assert!(!has_control(good), "{good:?}");
        }
    }

    #[test]
    fn doc_names() {
        assert!(validate_doc_name("overworld").is_ok());
        assert!(validate_doc_name("").is_err());
        assert!(validate_doc_name("a\nb").is_err());
        assert!(validate_doc_name(&"d".repeat(200)).is_err());
    }
}
