//! The fast path of [`decode_ops`](super::decode_ops): the compact form the SDK sends
//! (`JSON.stringify` of `[{set: path, value} | {delete: path}]`: no whitespace, `set` before
//! `value`), read in one pass over the bytes. A scalar value is read here; an object, an array
//! or a string with escapes is handed to `serde_json` as its own slice. Anything else this
//! grammar does not cover, and any input that would be an error, is `None`: the caller then
//! decodes the text with the full parser, which says what is wrong. So for every input the two
//! agree (a differential property test holds them to it), and this path never decides an error.
//!
//! Why: the full parser's visitors were a quarter of applying a tab's update natively (10 ms per
//! 100k single-key sets, of ~40), most of it per-field dispatch this grammar does not need.

use std::sync::Arc;

use serde_json::Value;

use super::{Op, PathKeys};
use crate::limits::{MAX_JSON_DEPTH, MAX_OPS_PER_UPDATE};

/// The operations of `json` if it is in the compact grammar and valid; `None` otherwise.
pub(super) fn decode(json: &str) -> Option<Vec<Op>> {
    let mut reader = Reader {
        text: json,
        at: 0,
        keys: PathKeys::default(),
    };
    reader.eat(b'[')?;
    let mut ops = Vec::with_capacity(64);
    loop {
        if ops.len() == MAX_OPS_PER_UPDATE {
            return None;
        }
        ops.push(reader.op()?);
        match reader.next()? {
            b',' => {}
            b']' => break,
            _ => return None,
        }
    }
    (reader.at == json.len()).then_some(ops)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
    keys: PathKeys,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes().get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn eat_text(&mut self, text: &str) -> Option<()> {
        let end = self.at + text.len();
        (self.bytes().get(self.at..end)? == text.as_bytes()).then(|| self.at = end)
    }

    /// `{"set":PATH,"value":VALUE}` or `{"delete":PATH}`.
    fn op(&mut self) -> Option<Op> {
        if self.eat_text(r#"{"set":"#).is_some() {
            let key = self.path()?;
            self.eat_text(r#","value":"#)?;
            let value = self.value()?;
            self.eat(b'}')?;
            Some(Op::Set { key, value })
        } else {
            self.eat_text(r#"{"delete":"#)?;
            let key = self.path()?;
            self.eat(b'}')?;
            Some(Op::Delete { key })
        }
    }

    /// A string without escapes: its text (the quotes are ASCII, so the slice is on character
    /// boundaries). `None` at an escape or a raw control byte (an error in JSON).
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let len = self.bytes()[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        self.at = start + len;
        self.eat(b'"')?;
        Some(&self.text[start..start + len])
    }

    /// `["k", …]`: a valid path ([`PathKeys`]), as its entry key.
    fn path(&mut self) -> Option<Arc<str>> {
        self.eat(b'[')?;
        self.keys.start();
        loop {
            let segment = self.plain_string()?;
            self.keys.push(segment).ok()?;
            match self.next()? {
                b',' => {}
                b']' => return self.keys.finish().ok(),
                _ => return None,
            }
        }
    }

    /// A value, up to the `}` that closes its operation (not consumed).
    fn value(&mut self) -> Option<Value> {
        let start = self.at;
        match *self.bytes().get(start)? {
            b'"' => {
                if let Some(plain) = self.plain_string() {
                    return Some(Value::String(plain.to_owned()));
                }
                self.at = start;
                self.skip_string()?;
            }
            b'{' | b'[' => self.skip_nested()?,
            _ => {
                let len = self.bytes()[start..].iter().position(|&b| b == b'}')?;
                self.at = start + len;
                let scalar = &self.text[start..self.at];
                if let Some(n) = small_natural(scalar) {
                    return Some(Value::from(n));
                }
            }
        }
        serde_json::from_str(&self.text[start..self.at]).ok()
    }

    /// Past a string, escapes and all (checked by `serde_json` after).
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    self.next()?;
                }
                _ => {}
            }
        }
    }

    /// Past an object or array, no deeper than a value may be (deeper: left to the full
    /// parser, whose own recursion limit decides how it fails).
    fn skip_nested(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match *self.bytes().get(self.at)? {
                b'"' => {
                    self.skip_string()?;
                    continue;
                }
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_JSON_DEPTH + 1 {
                        return None;
                    }
                }
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.at += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.at += 1;
        }
    }
}

/// `text` as a natural number of at most 18 digits without a leading zero: what `serde_json`
/// reads as that `u64` (the usual value of a counter, a score, an id).
fn small_natural(text: &str) -> Option<u64> {
    let digits = text.as_bytes();
    let plain = !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1);
    plain.then(|| {
        digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use proptest::{prelude::*, strategy::ValueTree};
    use serde_json::json;

    use super::*;
    use crate::state::path::parse_full;

    #[test]
    fn reads_the_sdks_form_and_leaves_the_rest_to_the_full_parser() {
        let ops =
            decode(r#"[{"set":["a","b"],"value":12},{"delete":["c"]},{"set":["d"],"value":"x"}]"#)
                .unwrap();
        assert_eq!(
            ops,
            vec![
                Op::set(&["a".into(), "b".into()], json!(12)),
                Op::delete(&["c".into()]),
                Op::set(&["d".into()], json!("x")),
            ]
        );
        let nested = decode(r#"[{"set":["p"],"value":{"x":[1,"}"],"y":"\"{"}}]"#).unwrap();
        assert_eq!(
            nested[0],
            Op::set(&["p".into()], json!({"x": [1, "}"], "y": "\"{"}))
        );
        for other in [
            r#"[ {"set":["a"],"value":1}]"#,
            r#"[{"value":1,"set":["a"]}]"#,
            r#"[{"set":["a\u0062"],"value":1}]"#,
            r#"[{"set":["a"],"value":01}]"#,
            r#"[{"set":["a"],"value":1}]x"#,
            r#"[{"set":[],"value":1}]"#,
            r#"[{"set":[""],"value":1}]"#,
            r#"[{"delete":["a"],"value":1}]"#,
            r#"[]"#,
        ] {
            assert_eq!(decode(other), None, "{other}");
        }
        // Numbers other than small naturals are read by serde_json, exactly.
        for number in [
            "0",
            "-0",
            "-7",
            "1.5",
            "1e21",
            "123456789012345678901",
            "-1.5e-7",
        ] {
            let text = format!(r#"[{{"set":["n"],"value":{number}}}]"#);
            assert_eq!(decode(&text), parse_full(&text).ok(), "{number}");
        }
    }

    /// A JSON value of up to `depth` levels, with strings that need escapes.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            "[a-z\"\\\\{}\\[\\],:\u{1}é ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-c\u{1}]{0,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn op_json() -> impl Strategy<Value = Value> {
        // Mostly valid paths; some with keys that are empty, escaped or not keys at all.
        let path = prop_oneof![
            4 => proptest::collection::vec("[a-cé]{1,3}", 1..4),
            1 => proptest::collection::vec("[a-c\"\\\\.\u{1f}é]{0,3}", 0..4),
        ];
        (any::<bool>(), path, json_value()).prop_map(|(set, path, value)| {
            if set {
                json!({"set": path, "value": value})
            } else {
                json!({"delete": path})
            }
        })
    }

    /// The properties below check something: the generated texts often take this path.
    #[test]
    fn the_generated_texts_often_take_this_path() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = proptest::collection::vec(op_json(), 1..3);
        let fast = (0..400)
            .filter(|_| {
                let ops = strategy.new_tree(&mut runner).unwrap().current();
                decode(&Value::from(ops).to_string()).is_some()
            })
            .count();
        assert!(fast >= 200, "{fast} of 400");
    }

    proptest! {
        /// On the SDK's form of any operations (valid or not) this path agrees with the full
        /// parser, or leaves the text to it.
        #[test]
        fn agrees_with_the_full_parser(ops in proptest::collection::vec(op_json(), 0..5)) {
            let text = Value::from(ops).to_string();
            if let Some(fast) = decode(&text) {
                prop_assert_eq!(Ok(fast), parse_full(&text).map_err(|e| e.message));
            }
        }

        /// Nor does any edit of such a text make it decide differently.
        #[test]
        fn agrees_on_edited_texts(
            ops in proptest::collection::vec(op_json(), 1..4),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..128), 1..4),
        ) {
            let mut bytes = Value::from(ops).to_string().into_bytes();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if let Ok(text) = String::from_utf8(bytes) {
                if let Some(fast) = decode(&text) {
                    prop_assert_eq!(Ok(fast), parse_full(&text).map_err(|e| e.message));
                }
            }
        }
    }
}
