//! Paths into a document and the operations a tab applies to it, validated before they touch
//! the document.
//!
//! A path is a list of map keys from the document root: `["players", "alice", "x"]`. The SDK
//! also accepts the dotted form `"players.alice.x"` and splits it before it is sent. Values are
//! plain JSON: objects become nested shared maps (so concurrent writes to different keys merge),
//! arrays and scalars are stored whole.

use std::fmt;

use serde::{
    de::{Error as _, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::Value;

use crate::{
    error::ErrorCode,
    limits::{
        MAX_DOC_NAME_BYTES, MAX_JSON_DEPTH, MAX_OPS_PER_UPDATE, MAX_PATH_SEGMENTS,
        MAX_PATH_SEGMENT_BYTES, MAX_STATE_UPDATE_BYTES,
    },
    NodeError,
};

/// A validated path from the document root.
pub type Path = Vec<String>;

/// One operation of an atomic update.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Write `value` at `path`, creating intermediate maps.
    Set {
        /// Where.
        path: Path,
        /// What (plain JSON).
        value: Value,
    },
    /// Remove the entry at `path` (nothing happens if it is absent).
    Delete {
        /// Where.
        path: Path,
    },
}

impl Op {
    /// The path the operation touches.
    pub fn path(&self) -> &Path {
        match self {
            Op::Set { path, .. } | Op::Delete { path } => path,
        }
    }
}

/// An update's operations as the JSON parser reads them: straight into [`Op`]s (no form in
/// between to convert), the field names matched in place, and the count bounded while reading.
/// (A derived struct of three `Option`s, then converted, was a third of decoding a 1000-op
/// update; it also read `"value": null` as no value.)
struct OpList(Vec<Op>);

impl<'de> Deserialize<'de> for OpList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = OpList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of operations")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OpList, A::Error> {
                let mut ops = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(WireOp(op)) = seq.next_element()? {
                    if ops.len() == MAX_OPS_PER_UPDATE {
                        return Err(A::Error::custom(too_many_ops()));
                    }
                    ops.push(op);
                }
                Ok(OpList(ops))
            }
        }
        deserializer.deserialize_seq(List)
    }
}

fn too_many_ops() -> String {
    format!("an update has 1 to {MAX_OPS_PER_UPDATE} operations")
}

/// One operation: `{"set": path, "value": v}` or `{"delete": path}`, nothing else.
struct WireOp(Op);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Set,
    Delete,
    Value,
}

const OP_SHAPE: &str = "each operation is {set: path, value} or {delete: path}";

impl<'de> Deserialize<'de> for WireOp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct One;
        impl<'de> Visitor<'de> for One {
            type Value = WireOp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(OP_SHAPE)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireOp, A::Error> {
                let (mut set, mut delete, mut value) = (None, None, None);
                while let Some(field) = map.next_key()? {
                    match field {
                        Field::Set if set.is_none() => set = Some(map.next_value::<Path>()?),
                        Field::Delete if delete.is_none() => {
                            delete = Some(map.next_value::<Path>()?);
                        }
                        Field::Value if value.is_none() => value = Some(map.next_value()?),
                        _ => return Err(A::Error::custom("an operation names a field twice")),
                    }
                }
                match (set, delete, value) {
                    (Some(path), None, Some(value)) => Ok(WireOp(Op::Set { path, value })),
                    (Some(_), None, None) => Err(A::Error::custom("`set` needs a `value`")),
                    (None, Some(path), None) => Ok(WireOp(Op::Delete { path })),
                    _ => Err(A::Error::custom(OP_SHAPE)),
                }
            }
        }
        deserializer.deserialize_map(One)
    }
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

/// Checks a path: 1..=32 non-empty keys of at most 256 bytes each.
pub fn validate_path(path: &[String]) -> Result<(), NodeError> {
    if path.is_empty() || path.len() > MAX_PATH_SEGMENTS {
        return Err(invalid_path(format!(
            "a path has 1 to {MAX_PATH_SEGMENTS} keys"
        )));
    }
    if let Some(bad) = path
        .iter()
        .find(|s| s.is_empty() || s.len() > MAX_PATH_SEGMENT_BYTES || has_control(s))
    {
        return Err(invalid_path(format!(
            "path key {bad:?} must be 1 to {MAX_PATH_SEGMENT_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks that a set's deepest stored key stays within [`MAX_PATH_SEGMENTS`]: an object is
/// stored one entry per leaf, below the path, so its nested objects add keys. (Tabs are shown
/// keys of at most that depth, so a deeper write would resolve and never be seen.)
fn validate_key_depth(path: &[String], value: &Value) -> Result<(), NodeError> {
    fn object_depth(value: &Value) -> usize {
        match value {
            Value::Object(map) if !map.is_empty() => {
                1 + map.values().map(object_depth).max().unwrap_or(0)
            }
            _ => 0,
        }
    }
    let depth = path.len() + object_depth(value);
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
/// bounded in size and count, every path and value validated.
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
    // serde_json's own recursion limit (128) keeps hostile nesting from exhausting the stack.
    let OpList(ops) = serde_json::from_str(json)
        .map_err(|e| invalid_value(format!("update is not a list of operations: {e}")))?;
    if ops.is_empty() {
        return Err(invalid_value(too_many_ops()));
    }
    for op in &ops {
        validate_path(op.path())?;
        if let Op::Set { path, value } = op {
            validate_value(value)?;
            validate_key_depth(path, value)?;
        }
    }
    Ok(ops)
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
        assert_eq!(
            ops,
            vec![Op::Set {
                path: vec!["a".into()],
                value: Value::Null
            }]
        );
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
                Op::Set {
                    path: vec!["a".into(), "b".into()],
                    value: serde_json::json!({"x": 1})
                },
                Op::Delete {
                    path: vec!["c".into()]
                },
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
