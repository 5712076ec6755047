//! Chunk dispatch between peers: the request-response protocol [`COMPUTE_PROTOCOL`].
//!
//! One length-prefixed frame each way ([`crate::frame`]). A frame is `[version = 1][tag]`:
//! - request `1` **run**: `[varint task nonce][varint chunk][varint len][job header, JSON]
//!   [varint input count]` and per input `[varint binding][type byte][varint len][bytes]`,
//!   then, when the header says `wasm`, `[varint len][wasm kernel module]`;
//! - request `2` **cancel**: `[varint task nonce][varint chunk]`;
//! - response `1` **result**: `[varint len][little-endian elements]`;
//! - response `2` **error**: `[varint len][code][varint len][message]`;
//! - response `3` **ack** (to a cancel).
//!
//! The task nonce is the submitter's number for the task; a worker keys running chunks by
//! (peer, nonce, chunk). Every count and length is bounded before anything is allocated, and
//! a decoded job is checked the way a tab's task is.

use std::sync::Arc;

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use super::{
    reduce::ElementType,
    split::ChunkRange,
    task::{
        check_entry, ChunkJob, Code, InputArray, OutputSpec, Param, ParamValue, MAX_CODE_BYTES,
        MAX_INPUTS, MAX_INPUT_BYTES, MAX_OUTPUT_BYTES, MAX_PARAMS, MAX_PARAM_NAME_BYTES,
        MAX_TASK_ID_BYTES,
    },
    wasm_kernel::MAX_MODULE_BYTES,
};
use crate::{error::ErrorCode, frame, NodeError};

/// The request-response protocol name.
pub const COMPUTE_PROTOCOL: StreamProtocol = StreamProtocol::new("/peercompute/compute/1");
/// Largest job header (JSON: code, parameters, ranges).
const MAX_HEADER_BYTES: usize = MAX_CODE_BYTES + 64 * 1024;
/// Largest request frame.
pub const MAX_REQUEST_FRAME_BYTES: usize =
    MAX_HEADER_BYTES + MAX_INPUT_BYTES + MAX_MODULE_BYTES + 1024;
/// Largest response frame.
pub const MAX_RESPONSE_FRAME_BYTES: usize = MAX_OUTPUT_BYTES + 16;
/// Longest built-in kernel name on the wire.
const MAX_KERNEL_NAME_BYTES: usize = 64;
/// Longest error message carried back.
const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// A request to a worker peer.
#[derive(Debug, Clone, PartialEq)]
pub enum ComputeRequest {
    /// Run a chunk and answer with its result.
    Run {
        /// The submitter's number for the task.
        nonce: u64,
        /// Chunk index.
        chunk: u32,
        /// The job.
        job: Box<ChunkJob>,
    },
    /// Stop a chunk: its result is no longer wanted.
    Cancel {
        /// The submitter's number for the task.
        nonce: u64,
        /// Chunk index.
        chunk: u32,
    },
}

/// A worker's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ComputeResponse {
    /// The chunk's result.
    Result(Vec<u8>),
    /// Why it did not run (a refusal or a failure), with a stable code.
    Error(NodeError),
    /// Answer to a cancel.
    Ack,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobHeader {
    task: String,
    kernel: Option<String>,
    shader: Option<String>,
    entry: Option<String>,
    tile: Option<[u32; 3]>,
    /// A wasm kernel module follows the inputs.
    #[serde(default)]
    wasm: bool,
    signature: Option<String>,
    params: Vec<(String, WireParam)>,
    grid: [u32; 3],
    offset: [u32; 3],
    size: [u32; 3],
    output: (u32, ElementType, u32),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireParam {
    U32(u32),
    I32(i32),
    F32(f32),
}

fn bad(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::BadRequest, message)
}

fn type_byte(ty: ElementType) -> u8 {
    match ty {
        ElementType::F32 => 0,
        ElementType::U32 => 1,
        ElementType::I32 => 2,
    }
}

fn byte_type(b: u8) -> Result<ElementType, NodeError> {
    Ok(match b {
        0 => ElementType::F32,
        1 => ElementType::U32,
        2 => ElementType::I32,
        _ => return Err(bad(format!("unknown element type {b}"))),
    })
}

impl ComputeRequest {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1];
        match self {
            ComputeRequest::Run { nonce, chunk, job } => {
                out.push(1);
                frame::write_varint(&mut out, *nonce);
                frame::write_varint(&mut out, u64::from(*chunk));
                let (kernel, shader, entry, tile, module) = match &job.code {
                    Code::Kernel(k) => (Some(k.clone()), None, None, None, None),
                    Code::Wgsl {
                        source,
                        entry,
                        tile,
                    } => (
                        None,
                        Some(source.to_string()),
                        Some(entry.clone()),
                        Some(*tile),
                        None,
                    ),
                    Code::Wasm { module, entry } => {
                        (None, None, Some(entry.clone()), None, Some(module))
                    }
                };
                let header = JobHeader {
                    task: job.task.clone(),
                    kernel,
                    shader,
                    entry,
                    tile,
                    wasm: module.is_some(),
                    signature: job.signature.map(|s| super::signing::to_hex(&s)),
                    params: job
                        .params
                        .iter()
                        .map(|p| {
                            let v = match p.value {
                                ParamValue::U32(v) => WireParam::U32(v),
                                ParamValue::I32(v) => WireParam::I32(v),
                                ParamValue::F32(v) => WireParam::F32(v),
                            };
                            (p.name.clone(), v)
                        })
                        .collect(),
                    grid: job.grid,
                    offset: job.range.offset,
                    size: job.range.size,
                    output: (job.output.binding, job.output.ty, job.output.length),
                };
                frame::write_bytes(&mut out, &serde_json::to_vec(&header).unwrap_or_default());
                frame::write_varint(&mut out, job.inputs.len() as u64);
                for input in &job.inputs {
                    frame::write_varint(&mut out, u64::from(input.binding));
                    out.push(type_byte(input.ty));
                    frame::write_bytes(&mut out, &input.bytes);
                }
                if let Some(module) = module {
                    frame::write_bytes(&mut out, module);
                }
            }
            ComputeRequest::Cancel { nonce, chunk } => {
                out.push(2);
                frame::write_varint(&mut out, *nonce);
                frame::write_varint(&mut out, u64::from(*chunk));
            }
        }
        out
    }

    /// Decodes and checks a request.
    pub fn decode(bytes: &[u8]) -> Result<Self, NodeError> {
        let mut r = frame::Reader::new(bytes, ErrorCode::BadRequest);
        if r.byte("version")? != 1 {
            return Err(bad("unknown compute frame version"));
        }
        let tag = r.byte("tag")?;
        let nonce = r.varint()?;
        let chunk = u32::try_from(r.varint()?).map_err(|_| bad("chunk index"))?;
        let request = match tag {
            1 => {
                let header: JobHeader =
                    serde_json::from_slice(r.bytes(MAX_HEADER_BYTES, "job header")?)
                        .map_err(|e| bad(format!("job header: {e}")))?;
                let count = r.bounded(MAX_INPUTS, "input count")?;
                let mut inputs = Vec::with_capacity(count);
                let mut total = 0;
                for _ in 0..count {
                    let binding = u32::try_from(r.varint()?).map_err(|_| bad("binding"))?;
                    let ty = byte_type(r.byte("element type")?)?;
                    let data = r.bytes(MAX_INPUT_BYTES, "input")?;
                    total += data.len();
                    if total > MAX_INPUT_BYTES || data.len() % 4 != 0 {
                        return Err(bad("inputs are whole 4-byte elements within the bound"));
                    }
                    inputs.push(InputArray {
                        binding,
                        ty,
                        bytes: Arc::new(data.to_vec()),
                    });
                }
                let module = if header.wasm {
                    Some(r.bytes(MAX_MODULE_BYTES, "wasm kernel")?.to_vec())
                } else {
                    None
                };
                ComputeRequest::Run {
                    nonce,
                    chunk,
                    job: Box::new(header.into_job(inputs, module)?),
                }
            }
            2 => ComputeRequest::Cancel { nonce, chunk },
            t => return Err(bad(format!("unknown compute request {t}"))),
        };
        r.finish("the compute request")?;
        Ok(request)
    }
}

impl JobHeader {
    fn into_job(
        self,
        inputs: Vec<InputArray>,
        module: Option<Vec<u8>>,
    ) -> Result<ChunkJob, NodeError> {
        if self.task.len() > MAX_TASK_ID_BYTES || self.params.len() > MAX_PARAMS {
            return Err(bad("task id or parameter count out of bounds"));
        }
        if self
            .params
            .iter()
            .any(|(n, _)| n.len() > MAX_PARAM_NAME_BYTES)
        {
            return Err(bad("parameter name too long"));
        }
        let code = match (self.kernel, self.shader, self.entry, self.tile, module) {
            // An unknown name is refused later with its own code (`TASK_UNKNOWN_KERNEL`).
            (Some(k), None, None, None, None) if k.len() <= MAX_KERNEL_NAME_BYTES => {
                Code::Kernel(k)
            }
            (None, Some(source), Some(entry), Some(tile), None)
                if source.len() <= MAX_CODE_BYTES
                    && check_entry(&entry).is_ok()
                    && tile.iter().all(|&n| n > 0) =>
            {
                Code::Wgsl {
                    source: source.into(),
                    entry,
                    tile,
                }
            }
            (None, None, Some(entry), None, Some(module)) if check_entry(&entry).is_ok() => {
                Code::Wasm {
                    module: Arc::new(module),
                    entry,
                }
            }
            _ => {
                return Err(bad(
                    "a job carries a kernel name, a shader with its entry, or a wasm module with its entry",
                ))
            }
        };
        let (binding, ty, length) = self.output;
        if length == 0 || length as usize > MAX_OUTPUT_BYTES / 4 {
            return Err(bad("chunk output length out of bounds"));
        }
        let inside = (0..3).all(|a| {
            self.grid[a] > 0
                && self.size[a] > 0
                && u64::from(self.offset[a]) + u64::from(self.size[a]) <= u64::from(self.grid[a])
        });
        if !inside {
            return Err(bad("the chunk is not inside the grid"));
        }
        let signature = self
            .signature
            .as_deref()
            .map(super::task::parse_signature)
            .transpose()?;
        Ok(ChunkJob {
            task: self.task,
            code,
            signature,
            params: self
                .params
                .into_iter()
                .map(|(name, v)| Param {
                    name,
                    value: match v {
                        WireParam::U32(v) => ParamValue::U32(v),
                        WireParam::I32(v) => ParamValue::I32(v),
                        WireParam::F32(v) => ParamValue::F32(v),
                    },
                })
                .collect(),
            inputs,
            grid: self.grid,
            range: ChunkRange {
                offset: self.offset,
                size: self.size,
            },
            output: OutputSpec {
                binding,
                ty,
                length,
            },
        })
    }
}

impl ComputeResponse {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1];
        match self {
            ComputeResponse::Result(bytes) => {
                out.push(1);
                frame::write_bytes(&mut out, bytes);
            }
            ComputeResponse::Error(e) => {
                out.push(2);
                frame::write_bytes(&mut out, e.code.as_str().as_bytes());
                let message: String = e
                    .message
                    .chars()
                    .take(MAX_ERROR_MESSAGE_BYTES / 4)
                    .collect();
                frame::write_bytes(&mut out, message.as_bytes());
            }
            ComputeResponse::Ack => out.push(3),
        }
        out
    }

    /// Decodes a response.
    pub fn decode(bytes: &[u8]) -> Result<Self, NodeError> {
        let mut r = frame::Reader::new(bytes, ErrorCode::BadRequest);
        if r.byte("version")? != 1 {
            return Err(bad("unknown compute frame version"));
        }
        let response = match r.byte("tag")? {
            1 => ComputeResponse::Result(r.bytes(MAX_OUTPUT_BYTES, "result")?.to_vec()),
            2 => {
                let code = r.bytes(64, "error code")?;
                let message = r.bytes(MAX_ERROR_MESSAGE_BYTES, "error message")?;
                let code = std::str::from_utf8(code)
                    .ok()
                    .and_then(ErrorCode::from_str)
                    .unwrap_or(ErrorCode::TaskChunkFailed);
                ComputeResponse::Error(NodeError::new(
                    code,
                    String::from_utf8_lossy(message).into_owned(),
                ))
            }
            3 => ComputeResponse::Ack,
            t => return Err(bad(format!("unknown compute response {t}"))),
        };
        r.finish("the compute response")?;
        Ok(response)
    }
}

impl frame::WireFrame for ComputeRequest {
    const MAX_BYTES: usize = MAX_REQUEST_FRAME_BYTES;
    const WHAT: &'static str = "compute request";

    fn encode_frame(&self) -> Vec<u8> {
        self.encode()
    }

    fn decode_frame(bytes: &[u8]) -> Result<Self, NodeError> {
        Self::decode(bytes)
    }
}

impl frame::WireFrame for ComputeResponse {
    const MAX_BYTES: usize = MAX_RESPONSE_FRAME_BYTES;
    const WHAT: &'static str = "compute response";

    fn encode_frame(&self) -> Vec<u8> {
        self.encode()
    }

    fn decode_frame(bytes: &[u8]) -> Result<Self, NodeError> {
        Self::decode(bytes)
    }
}

/// The request-response codec: one length-prefixed frame each way.
pub type ComputeCodec = frame::FrameCodec<ComputeRequest, ComputeResponse>;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::compute::task::TaskRequest;

    fn job() -> ChunkJob {
        serde_json::from_value::<TaskRequest>(serde_json::json!({
            "id": "t", "type": "webgpu", "shader": "@compute @workgroup_size(4) fn main() {}",
            "signature": "ab".repeat(64),
            "params": [["a", 1], ["b", -1], ["c", 0.5]],
            "inputs": [{ "binding": 2, "type": "i32", "bytes": [1, 2, 3, 4, 5, 6, 7, 8] }],
            "output": { "type": "f32", "length": 8 }, "grid": [8], "split": { "chunks": 2 },
        }))
        .unwrap()
        .validate()
        .unwrap()
        .jobs(1)
        .unwrap()
        .remove(1)
    }

    #[test]
    fn round_trips() {
        for request in [
            ComputeRequest::Run {
                nonce: 7,
                chunk: 1,
                job: Box::new(job()),
            },
            ComputeRequest::Cancel {
                nonce: u64::MAX,
                chunk: 3,
            },
        ] {
            assert_eq!(ComputeRequest::decode(&request.encode()).unwrap(), request);
        }
        for response in [
            ComputeResponse::Result(vec![1, 2, 3, 4]),
            ComputeResponse::Error(NodeError::new(ErrorCode::CodeSignatureInvalid, "no")),
            ComputeResponse::Ack,
        ] {
            assert_eq!(
                ComputeResponse::decode(&response.encode()).unwrap(),
                response
            );
        }
    }

    #[test]
    fn rejects_hostile_frames() {
        let mut run = ComputeRequest::Run {
            nonce: 1,
            chunk: 0,
            job: Box::new(job()),
        }
        .encode();
        run.push(0);
        assert!(ComputeRequest::decode(&run).is_err(), "trailing bytes");
        let mut outside = job();
        outside.range.offset[0] = 7;
        let frame = ComputeRequest::Run {
            nonce: 1,
            chunk: 0,
            job: Box::new(outside),
        }
        .encode();
        assert!(
            ComputeRequest::decode(&frame).is_err(),
            "chunk outside the grid"
        );
        // An entry point that is not an identifier is refused on the wire as at submission.
        let mut odd_entry = job();
        odd_entry.code = Code::Wasm {
            module: Arc::new(b"\0asm".to_vec()),
            entry: "run; drop".into(),
        };
        let frame = ComputeRequest::Run {
            nonce: 1,
            chunk: 0,
            job: Box::new(odd_entry),
        }
        .encode();
        assert!(ComputeRequest::decode(&frame).is_err(), "odd entry");
        // An input count far over the bound is refused before anything is allocated.
        let mut many = vec![1, 1, 0, 0];
        frame::write_bytes(&mut many, b"{}");
        frame::write_varint(&mut many, 1 << 40);
        assert!(ComputeRequest::decode(&many).is_err());
        let unknown_code = {
            let mut out = vec![1, 2];
            frame::write_bytes(&mut out, b"WHATEVER");
            frame::write_bytes(&mut out, b"m");
            out
        };
        assert!(matches!(
            ComputeResponse::decode(&unknown_code).unwrap(),
            ComputeResponse::Error(NodeError {
                code: ErrorCode::TaskChunkFailed,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ComputeRequest::decode(&bytes);
            let _ = ComputeResponse::decode(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(i in 0usize..400, b in any::<u8>()) {
            let mut frame = ComputeRequest::Run { nonce: 1, chunk: 1, job: Box::new(job()) }.encode();
            let at = i % frame.len();
            frame[at] = b;
            let _ = ComputeRequest::decode(&frame);
        }
    }
}
