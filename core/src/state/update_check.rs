//! A bounded structural check of a Yjs v1 update before yrs sees it.
//!
//! yrs trusts its input: a hostile update can overflow a clock (`u32`), carry a client id above
//! 2^53, or nest `Any` values deep enough to exhaust the stack, and some of those panic (or,
//! with overflow checks off, corrupt the document). So every update from a peer, a file or a
//! tab is walked once here, against the lib0 v1 layout Yjs writes, with every count bounded by
//! the bytes left and every clock range checked. The walk allocates nothing.

use crate::{error::ErrorCode, NodeError};

/// Deepest `Any` nesting accepted (JSON values are bounded at 64 levels when written).
const MAX_ANY_DEPTH: usize = 96;
/// Yjs client ids are 53-bit (JavaScript safe integers).
const MAX_CLIENT: u64 = (1 << 53) - 1;

fn bad(message: impl Into<String>) -> NodeError {
    NodeError::new(
        ErrorCode::StateInvalidUpdate,
        format!("not a valid Yjs update: {}", message.into()),
    )
}

struct Walk<'a> {
    buf: &'a [u8],
}

impl Walk<'_> {
    fn byte(&mut self) -> Result<u8, NodeError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| bad("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    fn var(&mut self) -> Result<u64, NodeError> {
        // Most varints (lengths, small clocks, tags) are one byte.
        if let Some((&b, rest)) = self.buf.split_first() {
            if b & 0x80 == 0 {
                self.buf = rest;
                return Ok(u64::from(b));
            }
        }
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn ivar(&mut self) -> Result<(), NodeError> {
        // lib0 signed varint: at most 10 bytes.
        for _ in 0..10 {
            if self.byte()? & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(bad("varint too long"))
    }

    /// A count of things that take at least one byte each: never more than the bytes left.
    fn count(&mut self) -> Result<u64, NodeError> {
        let n = self.var()?;
        if n > self.buf.len() as u64 {
            return Err(bad(format!("count {n} exceeds the bytes left")));
        }
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> Result<(), NodeError> {
        if n > self.buf.len() as u64 {
            return Err(bad("truncated"));
        }
        self.buf = &self.buf[n as usize..];
        Ok(())
    }

    fn buf(&mut self) -> Result<&[u8], NodeError> {
        let n = self.var()?;
        if n > self.buf.len() as u64 {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.buf.split_at(n as usize);
        self.buf = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<(), NodeError> {
        std::str::from_utf8(self.buf()?).map_err(|_| bad("string is not UTF-8"))?;
        Ok(())
    }

    fn client(&mut self) -> Result<u64, NodeError> {
        let c = self.var()?;
        if c > MAX_CLIENT {
            return Err(bad(format!("client id {c} is not a 53-bit integer")));
        }
        Ok(c)
    }

    fn clock(&mut self) -> Result<u64, NodeError> {
        let c = self.var()?;
        if c > u64::from(u32::MAX) {
            return Err(bad(format!("clock {c} exceeds 32 bits")));
        }
        Ok(c)
    }

    fn id(&mut self) -> Result<(), NodeError> {
        self.client()?;
        self.clock()?;
        Ok(())
    }

    fn any(&mut self, depth: usize) -> Result<(), NodeError> {
        if depth > MAX_ANY_DEPTH {
            return Err(bad("value nested too deep"));
        }
        match self.byte()? {
            127 | 126 | 121 | 120 => Ok(()),
            125 => self.ivar(),
            124 => self.skip(4),
            123 | 122 => self.skip(8),
            119 => self.string(),
            118 => {
                for _ in 0..self.count()? {
                    self.string()?;
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            117 => {
                for _ in 0..self.count()? {
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            116 => self.buf().map(|_| ()),
            tag => Err(bad(format!("unknown value tag {tag}"))),
        }
    }

    /// A state vector: clients and their clocks.
    fn state_vector(&mut self) -> Result<(), NodeError> {
        for _ in 0..self.count()? {
            self.client()?;
            self.clock()?;
        }
        Ok(())
    }

    fn finish(&self, what: &str) -> Result<(), NodeError> {
        if !self.buf.is_empty() {
            return Err(bad(format!("trailing bytes after {what}")));
        }
        Ok(())
    }

    /// A delete set: per client, ranges that stay within `u32` clocks.
    fn delete_set(&mut self) -> Result<(), NodeError> {
        for _ in 0..self.count()? {
            self.client()?;
            for _ in 0..self.count()? {
                let start = self.clock()?;
                let len = self.var()?;
                if start
                    .checked_add(len)
                    .is_none_or(|end| end > u64::from(u32::MAX))
                {
                    return Err(bad("deleted range overflows"));
                }
            }
        }
        Ok(())
    }

    /// The length (in clock units) of a struct's content.
    fn content(&mut self, content_ref: u8) -> Result<u64, NodeError> {
        Ok(match content_ref {
            1 => self.var()?, // deleted
            // Legacy JSON strings: Yjs stopped writing them, and yrs reads one string more
            // than the count says, so the rest of an update would be read at other offsets
            // than the ones checked here.
            2 => return Err(bad("legacy JSON content is not accepted")),
            3 => {
                self.buf()?;
                1
            }
            4 => {
                // A string's length counts UTF-16 units; any non-empty string is at least 1.
                let s = self.buf()?;
                let s = std::str::from_utf8(s).map_err(|_| bad("string is not UTF-8"))?;
                s.encode_utf16().count() as u64
            }
            5 => {
                self.string()?;
                1
            }
            6 => {
                self.string()?;
                self.string()?;
                1
            }
            7 => {
                let type_ref = self.var()?;
                match type_ref {
                    // An XmlElement carries a name.
                    3 => self.string()?,
                    // An XmlHook carries one in Yjs, but yrs reads none, so the bytes after it
                    // would be read at other offsets than the ones checked here.
                    5 => return Err(bad("XmlHook types are not accepted")),
                    0..=9 | 15 => {}
                    other => return Err(bad(format!("unknown type ref {other}"))),
                }
                1
            }
            8 => {
                let n = self.count()?;
                for _ in 0..n {
                    self.any(0)?;
                }
                n
            }
            9 => {
                self.string()?;
                self.any(0)?;
                1
            }
            other => return Err(bad(format!("unknown content ref {other}"))),
        })
    }
}

/// Checks the layout of a Yjs v1 update: structs per client, then the delete set.
pub fn check_update_v1(update: &[u8]) -> Result<(), NodeError> {
    let mut w = Walk { buf: update };
    for _ in 0..w.count()? {
        let structs = w.count()?;
        w.client()?;
        let mut clock = w.clock()?;
        for _ in 0..structs {
            let info = w.byte()?;
            let content_ref = info & 0x1f;
            let len = match content_ref {
                0 | 10 => w.var()?, // GC, Skip
                _ => {
                    let has_origin = info & 0x80 != 0;
                    let has_right_origin = info & 0x40 != 0;
                    if has_origin {
                        w.id()?;
                    }
                    if has_right_origin {
                        w.id()?;
                    }
                    if !has_origin && !has_right_origin {
                        if w.var()? == 1 {
                            w.string()?; // parent is a root type, by name
                        } else {
                            w.id()?; // parent is an item
                        }
                        if info & 0x20 != 0 {
                            w.string()?; // key in a map
                        }
                    }
                    w.content(content_ref)?
                }
            };
            if len == 0 {
                return Err(bad("empty struct"));
            }
            clock = clock
                .checked_add(len)
                .filter(|&c| c <= u64::from(u32::MAX))
                .ok_or_else(|| bad("clock range overflows"))?;
        }
    }
    w.delete_set()?;
    w.finish("the update")
}

/// Checks the layout of a yrs v1 snapshot: a delete set, then a state vector.
pub fn check_snapshot_v1(snapshot: &[u8]) -> Result<(), NodeError> {
    let mut w = Walk { buf: snapshot };
    w.delete_set()?;
    w.state_vector()?;
    w.finish("the snapshot")
}

/// Checks the layout of a Yjs v1 state vector.
pub fn check_state_vector_v1(sv: &[u8]) -> Result<(), NodeError> {
    let mut w = Walk { buf: sv };
    w.state_vector()?;
    w.finish("the state vector")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_out_of_range_ids_and_clocks() {
        // One client, one struct, client id 2^60.
        let mut big_client = vec![1, 1];
        big_client.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
        big_client.extend([0, 0]);
        assert!(check_update_v1(&big_client).is_err());
        // A deleted range that runs past u32.
        let ds = [0, 1, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0x10];
        assert!(check_update_v1(&ds).is_err());
        assert!(check_update_v1(&[0, 0]).is_ok());
        assert!(check_state_vector_v1(&[1, 5, 7]).is_ok());
        assert!(check_state_vector_v1(&[2, 5, 7]).is_err());
    }

    /// One struct of client 1 under the root type "r", with `content` (its info byte first).
    fn one_struct(content: &[u8]) -> Vec<u8> {
        let mut u = vec![1, 1, 1, 0, content[0], 1, 1, b'r'];
        u.extend_from_slice(&content[1..]);
        u.push(0); // empty delete set
        u
    }

    #[test]
    fn refuses_what_yrs_would_read_at_other_offsets() {
        // A map entry holding one Any string: the layout both sides read alike.
        assert!(check_update_v1(&one_struct(&[0x08, 1, 0x77, 1, b'x'])).is_ok());
        // Legacy JSON content of one string: yrs reads two.
        assert!(check_update_v1(&one_struct(&[0x02, 1, 1, b'x'])).is_err());
        // An XmlHook type with a name: yrs reads none, and would take the name for content.
        assert!(check_update_v1(&one_struct(&[0x07, 5, 1, b'h'])).is_err());
        // An XmlElement's name is read by both.
        assert!(check_update_v1(&one_struct(&[0x07, 3, 1, b'p'])).is_ok());
    }
}
