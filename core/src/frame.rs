//! One length-prefixed frame per request-response message: `[u32 big-endian length][bytes]`.
//! The request-response protocols ([`crate::state::sync_protocol`],
//! [`crate::compute::protocol`]) only say how their messages encode and how large they may
//! be ([`WireFrame`]); [`FrameCodec`] carries them.

use std::marker::PhantomData;

use libp2p::{
    futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    StreamProtocol,
};

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

fn invalid_data(e: NodeError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.message)
}

/// A message of a request-response protocol, carried as one frame.
pub trait WireFrame: Sized + Send + 'static {
    /// Largest encoded message.
    const MAX_BYTES: usize;
    /// What it is, for errors.
    const WHAT: &'static str;
    /// Encodes the message.
    fn encode_frame(&self) -> Vec<u8>;
    /// Encodes the message for a stream that negotiated `protocol` (a protocol with several
    /// versions may encode differently for each); decoding reads every version's frames.
    fn encode_frame_for(&self, _protocol: &StreamProtocol) -> Vec<u8> {
        self.encode_frame()
    }
    /// Decodes and checks a message.
    fn decode_frame(bytes: &[u8]) -> Result<Self, NodeError>;
}

/// The request-response codec of a protocol whose requests are `Req` and responses `Res`.
pub struct FrameCodec<Req, Res>(PhantomData<fn() -> (Req, Res)>);

impl<Req, Res> Default for FrameCodec<Req, Res> {
    fn default() -> Self {
        FrameCodec(PhantomData)
    }
}

impl<Req, Res> Clone for FrameCodec<Req, Res> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

async fn read_message<M: WireFrame, T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<M> {
    let bytes = read_frame(io, M::MAX_BYTES, M::WHAT).await?;
    M::decode_frame(&bytes).map_err(invalid_data)
}

async fn write_message<M: WireFrame, T: AsyncWrite + Unpin + Send>(
    protocol: &StreamProtocol,
    io: &mut T,
    message: M,
) -> std::io::Result<()> {
    let bytes = message.encode_frame_for(protocol);
    write_frame(io, &bytes, M::MAX_BYTES, M::WHAT).await
}

impl<Req: WireFrame, Res: WireFrame> libp2p::request_response::Codec for FrameCodec<Req, Res> {
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Res;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Res>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
        req: Req,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(protocol, io, req).await
    }

    async fn write_response<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
        res: Res,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(protocol, io, res).await
    }
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

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
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
