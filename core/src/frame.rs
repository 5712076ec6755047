//! One length-prefixed frame per request-response message: `[u32 big-endian length][bytes]`.
//! Shared by the request-response protocols ([`crate::state::sync_protocol`],
//! [`crate::compute::protocol`]); each passes its own bound.

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{error::ErrorCode, NodeError};

/// Reads one frame of at most `max` bytes. The buffer grows as bytes arrive; it is never
/// allocated from the peer's length claim up front.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    what: &str,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = Vec::new();
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Writes one frame of at most `max` bytes and closes the stream's write side.
pub async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
    what: &str,
) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l as usize <= max)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{what} frame of {} bytes exceeds {max}", bytes.len()),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

/// A decode error as an I/O error, which is what request-response codecs return.
pub fn invalid_data(e: NodeError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.message)
}

/// Appends an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a varint length and the bytes.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A bounds-checked reader of a decoded frame; every error carries `code`.
pub struct Reader<'a> {
    buf: &'a [u8],
    code: ErrorCode,
}

impl<'a> Reader<'a> {
    /// Reads `buf`; errors get `code`.
    pub fn new(buf: &'a [u8], code: ErrorCode) -> Self {
        Reader { buf, code }
    }

    fn bad(&self, message: String) -> NodeError {
        NodeError::new(self.code, message)
    }

    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// One byte.
    pub fn byte(&mut self, what: &str) -> Result<u8, NodeError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| self.bad(format!("truncated {what}")))?;
        self.buf = rest;
        Ok(b)
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    pub fn varint(&mut self) -> Result<u64, NodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte("varint")?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint too long".into()))
    }

    /// A varint no larger than `max`.
    pub fn bounded(&mut self, max: usize, what: &str) -> Result<usize, NodeError> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(self.bad(format!("{what} {n} exceeds {max}")));
        }
        Ok(n as usize)
    }

    /// Varint-length-prefixed bytes, at most `max`.
    pub fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8], NodeError> {
        let n = self.bounded(max, what)?;
        if n > self.buf.len() {
            return Err(self.bad(format!("truncated {what}")));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Fails unless everything was read.
    pub fn finish(&self, what: &str) -> Result<(), NodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.bad(format!("{} trailing bytes after {what}", self.buf.len())))
        }
    }
}
