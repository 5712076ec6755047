//! Combining chunk results: concatenation in chunk order, or an element-wise sum, min or max
//! of equally long partial results. Results are little-endian typed arrays, as WGSL storage
//! buffers and wasm kernels produce them.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Element type of a result array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    /// 32-bit float.
    F32,
    /// 32-bit unsigned integer.
    U32,
    /// 32-bit signed integer.
    I32,
}

/// How chunk results combine into the task's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduce {
    /// Chunk results one after another, in chunk order.
    Concat,
    /// Element-wise sum (integers wrap, as on a GPU).
    Sum,
    /// Element-wise minimum.
    Min,
    /// Element-wise maximum.
    Max,
}

/// Why results cannot be combined.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReduceError {
    /// A result is not a whole number of 4-byte elements.
    #[error("chunk {chunk}: {len} bytes is not a whole number of 4-byte elements")]
    Misaligned {
        /// The chunk.
        chunk: usize,
        /// Its length.
        len: usize,
    },
    /// Element-wise reductions need results of equal length.
    #[error("chunk {chunk} has {len} bytes, chunk 0 has {expected}")]
    LengthMismatch {
        /// The chunk.
        chunk: usize,
        /// Its length.
        len: usize,
        /// Chunk 0's length.
        expected: usize,
    },
    /// Nothing to combine.
    #[error("no chunk results")]
    Empty,
}

fn fold<T: Copy>(
    parts: &[Vec<u8>],
    decode: fn([u8; 4]) -> T,
    encode: fn(T) -> [u8; 4],
    op: fn(T, T) -> T,
) -> Vec<u8> {
    let mut acc: Vec<T> = parts[0]
        .chunks_exact(4)
        .map(|b| decode([b[0], b[1], b[2], b[3]]))
        .collect();
    for part in &parts[1..] {
        for (a, b) in acc.iter_mut().zip(part.chunks_exact(4)) {
            *a = op(*a, decode([b[0], b[1], b[2], b[3]]));
        }
    }
    acc.into_iter().flat_map(encode).collect()
}

/// Combines chunk results (in chunk order) into the task's result.
pub fn reduce(parts: &[Vec<u8>], how: Reduce, ty: ElementType) -> Result<Vec<u8>, ReduceError> {
    if parts.is_empty() {
        return Err(ReduceError::Empty);
    }
    for (chunk, p) in parts.iter().enumerate() {
        if p.len() % 4 != 0 {
            return Err(ReduceError::Misaligned {
                chunk,
                len: p.len(),
            });
        }
        if how != Reduce::Concat && p.len() != parts[0].len() {
            return Err(ReduceError::LengthMismatch {
                chunk,
                len: p.len(),
                expected: parts[0].len(),
            });
        }
    }
    Ok(match (how, ty) {
        (Reduce::Concat, _) => parts.concat(),
        (Reduce::Sum, ElementType::F32) => {
            fold(parts, f32::from_le_bytes, f32::to_le_bytes, |a, b| a + b)
        }
        (Reduce::Min, ElementType::F32) => {
            fold(parts, f32::from_le_bytes, f32::to_le_bytes, f32::min)
        }
        (Reduce::Max, ElementType::F32) => {
            fold(parts, f32::from_le_bytes, f32::to_le_bytes, f32::max)
        }
        (Reduce::Sum, ElementType::U32) => fold(
            parts,
            u32::from_le_bytes,
            u32::to_le_bytes,
            u32::wrapping_add,
        ),
        (Reduce::Min, ElementType::U32) => {
            fold(parts, u32::from_le_bytes, u32::to_le_bytes, u32::min)
        }
        (Reduce::Max, ElementType::U32) => {
            fold(parts, u32::from_le_bytes, u32::to_le_bytes, u32::max)
        }
        (Reduce::Sum, ElementType::I32) => fold(
            parts,
            i32::from_le_bytes,
            i32::to_le_bytes,
            i32::wrapping_add,
        ),
        (Reduce::Min, ElementType::I32) => {
            fold(parts, i32::from_le_bytes, i32::to_le_bytes, i32::min)
        }
        (Reduce::Max, ElementType::I32) => {
            fold(parts, i32::from_le_bytes, i32::to_le_bytes, i32::max)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32s(xs: &[u32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn f32s(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn combines_in_chunk_order() {
        let parts = vec![u32s(&[1, 2]), u32s(&[3, 4])];
        assert_eq!(
            reduce(&parts, Reduce::Concat, ElementType::U32),
            Ok(u32s(&[1, 2, 3, 4]))
        );
        assert_eq!(
            reduce(&parts, Reduce::Sum, ElementType::U32),
            Ok(u32s(&[4, 6]))
        );
        assert_eq!(
            reduce(&parts, Reduce::Max, ElementType::U32),
            Ok(u32s(&[3, 4]))
        );
        let parts = vec![f32s(&[1.5, -2.0]), f32s(&[0.5, 3.0])];
        assert_eq!(
            reduce(&parts, Reduce::Min, ElementType::F32),
            Ok(f32s(&[0.5, -2.0]))
        );
        assert_eq!(
            reduce(&parts, Reduce::Sum, ElementType::F32),
            Ok(f32s(&[2.0, 1.0]))
        );
        let parts = vec![i32s(&[-1, 5]), i32s(&[i32::MAX, -7])];
        assert_eq!(
            reduce(&parts, Reduce::Sum, ElementType::I32),
            Ok(i32s(&[i32::MAX.wrapping_add(-1), -2]))
        );
    }

    fn i32s(xs: &[i32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            reduce(&[], Reduce::Sum, ElementType::U32),
            Err(ReduceError::Empty)
        );
        assert!(matches!(
            reduce(&[vec![1, 2, 3]], Reduce::Concat, ElementType::U32),
            Err(ReduceError::Misaligned { chunk: 0, len: 3 })
        ));
        assert!(matches!(
            reduce(&[u32s(&[1]), u32s(&[1, 2])], Reduce::Sum, ElementType::U32),
            Err(ReduceError::LengthMismatch { chunk: 1, .. })
        ));
    }
}
