//! Splitting a task's grid into chunks along one axis.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most chunks one task may be split into.
pub const MAX_CHUNKS: u32 = 65_536;

/// A chunk of a grid: `offset` and `size` per axis (x, y, z).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRange {
    /// First cell of the chunk on each axis.
    pub offset: [u32; 3],
    /// Extent of the chunk on each axis.
    pub size: [u32; 3],
}

impl ChunkRange {
    /// Number of grid cells in the chunk.
    pub fn cells(&self) -> u64 {
        self.size.iter().map(|&s| u64::from(s)).product()
    }
}

/// Why a grid cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SplitError {
    /// A grid dimension is zero.
    #[error("grid dimensions must be at least 1")]
    EmptyGrid,
    /// The axis is not 0, 1 or 2.
    #[error("axis {0} is not 0 (x), 1 (y) or 2 (z)")]
    BadAxis(usize),
    /// Zero chunks, or more than [`MAX_CHUNKS`].
    #[error("chunk count {0} is not in 1..={MAX_CHUNKS}")]
    BadChunkCount(u32),
}

/// How many chunks `auto` picks: a few per worker, so faster workers can take more of them,
/// never more than the axis has cells.
pub fn auto_chunks(axis_len: u32, workers: usize) -> u32 {
    let want = (workers.max(1) as u32).saturating_mul(4);
    want.min(axis_len).clamp(1, MAX_CHUNKS)
}

/// Splits `grid` into `chunks` contiguous ranges along `axis`, as even as possible (the first
/// `len % chunks` ranges are one cell longer). Asking for more chunks than the axis has cells
/// gives one chunk per cell.
pub fn split_grid(grid: [u32; 3], axis: usize, chunks: u32) -> Result<Vec<ChunkRange>, SplitError> {
    if grid.contains(&0) {
        return Err(SplitError::EmptyGrid);
    }
    if axis > 2 {
        return Err(SplitError::BadAxis(axis));
    }
    if chunks == 0 || chunks > MAX_CHUNKS {
        return Err(SplitError::BadChunkCount(chunks));
    }
    let len = grid[axis];
    let n = chunks.min(len);
    let (base, extra) = (len / n, len % n);
    let mut out = Vec::with_capacity(n as usize);
    let mut start = 0;
    for i in 0..n {
        let size = base + u32::from(i < extra);
        let mut range = ChunkRange {
            offset: [0; 3],
            size: grid,
        };
        range.offset[axis] = start;
        range.size[axis] = size;
        out.push(range);
        start += size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_the_grid_exactly_once() {
        for (grid, axis, chunks) in [
            ([4096, 4096, 1], 1, 7),
            ([10, 3, 2], 0, 3),
            ([5, 1, 1], 0, 9),
            ([1, 1, 64], 2, 64),
        ] {
            let parts = split_grid(grid, axis, chunks).expect("splits");
            let total: u64 = parts.iter().map(ChunkRange::cells).sum();
            assert_eq!(total, grid.iter().map(|&g| u64::from(g)).product::<u64>());
            let mut next = 0;
            for p in &parts {
                assert_eq!(p.offset[axis], next, "contiguous");
                next += p.size[axis];
                let sizes: Vec<u32> = parts.iter().map(|p| p.size[axis]).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
            assert_eq!(next, grid[axis]);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(split_grid([0, 1, 1], 0, 1), Err(SplitError::EmptyGrid));
        assert_eq!(split_grid([1, 1, 1], 3, 1), Err(SplitError::BadAxis(3)));
        assert_eq!(
            split_grid([1, 1, 1], 0, 0),
            Err(SplitError::BadChunkCount(0))
        );
        assert_eq!(
            split_grid([1, 1, 1], 0, MAX_CHUNKS + 1),
            Err(SplitError::BadChunkCount(MAX_CHUNKS + 1))
        );
        assert_eq!(auto_chunks(4096, 3), 12);
        assert_eq!(auto_chunks(2, 3), 2);
        assert_eq!(auto_chunks(100, 0), 4);
    }
}
