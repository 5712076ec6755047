//! WebAssembly SIMD (`simd128`) backend. PeerCompute patch: not in the upstream crate.
//!
//! The SSE2 backend's row layout (one 128-bit vector per row of the 4×4 state, diagonals made
//! by rotating rows), run on four blocks at a time so the engine has independent work to
//! schedule. Rotations by 16 and 8 are byte shuffles; 12 and 7 are shift pairs. Wasm has no
//! runtime feature detection: this backend is compiled in when the build enables `simd128`
//! (`-C target-feature=+simd128`), and every engine that loads such a module runs it.

use crate::{Block, StreamClosure, Unsigned, STATE_WORDS};
use cipher::{
    consts::{U4, U64},
    BlockSizeUser, ParBlocks, ParBlocksSizeUser, StreamBackend,
};
use core::{arch::wasm32::*, marker::PhantomData};

#[inline]
pub(crate) fn inner<R, F>(state: &mut [u32; STATE_WORDS], f: F)
where
    R: Unsigned,
    F: StreamClosure<BlockSize = U64>,
{
    let row = |i: usize| u32x4(state[i], state[i + 1], state[i + 2], state[i + 3]);
    let mut backend = Backend::<R> {
        v: [row(0), row(4), row(8), row(12)],
        _pd: PhantomData,
    };

    f.call(&mut backend);

    // Only the block counter moves.
    state[12] = u32x4_extract_lane::<0>(backend.v[3]);
}

struct Backend<R: Unsigned> {
    v: [v128; 4],
    _pd: PhantomData<R>,
}

impl<R: Unsigned> BlockSizeUser for Backend<R> {
    type BlockSize = U64;
}

impl<R: Unsigned> ParBlocksSizeUser for Backend<R> {
    type ParBlocksSize = U4;
}

impl<R: Unsigned> StreamBackend for Backend<R> {
    #[inline(always)]
    fn gen_ks_block(&mut self, block: &mut Block) {
        let mut x = self.v;
        for _ in 0..R::USIZE {
            double_round(&mut x);
        }
        store(block, &x, &self.v);
        self.v[3] = u32x4_add(self.v[3], u32x4(1, 0, 0, 0));
    }

    #[inline(always)]
    fn gen_par_ks_blocks(&mut self, blocks: &mut ParBlocks<Self>) {
        // The counter is 32 bits and wraps, as in the other backends.
        let d = [
            self.v[3],
            u32x4_add(self.v[3], u32x4(1, 0, 0, 0)),
            u32x4_add(self.v[3], u32x4(2, 0, 0, 0)),
            u32x4_add(self.v[3], u32x4(3, 0, 0, 0)),
        ];
        let [a, b, c, _] = self.v;
        let mut x = [
            [a, b, c, d[0]],
            [a, b, c, d[1]],
            [a, b, c, d[2]],
            [a, b, c, d[3]],
        ];
        for _ in 0..R::USIZE {
            double_round4(&mut x);
        }
        store(&mut blocks[0], &x[0], &[a, b, c, d[0]]);
        store(&mut blocks[1], &x[1], &[a, b, c, d[1]]);
        store(&mut blocks[2], &x[2], &[a, b, c, d[2]]);
        store(&mut blocks[3], &x[3], &[a, b, c, d[3]]);
        self.v[3] = u32x4_add(self.v[3], u32x4(4, 0, 0, 0));
    }
}

/// Adds the input state back and writes the block little-endian (wasm is little-endian).
#[inline(always)]
fn store(block: &mut Block, x: &[v128; 4], input: &[v128; 4]) {
    let out = block.as_mut_ptr() as *mut v128;
    // SAFETY: `block` is 64 writable bytes, four vectors; `v128_store` needs no alignment.
    unsafe {
        v128_store(out, u32x4_add(x[0], input[0]));
        v128_store(out.add(1), u32x4_add(x[1], input[1]));
        v128_store(out.add(2), u32x4_add(x[2], input[2]));
        v128_store(out.add(3), u32x4_add(x[3], input[3]));
    }
}

#[inline(always)]
fn rotl16(x: v128) -> v128 {
    i8x16_shuffle::<2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13>(x, x)
}

#[inline(always)]
fn rotl8(x: v128) -> v128 {
    i8x16_shuffle::<3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14>(x, x)
}

#[inline(always)]
fn rotl<const L: u32, const R: u32>(x: v128) -> v128 {
    v128_or(u32x4_shl(x, L), u32x4_shr(x, R))
}

/// Four quarter rounds, one per column of the row layout.
#[inline(always)]
fn quarter_rounds(s: &mut [v128; 4]) {
    step1(s);
    step2(s);
    step3(s);
    step4(s);
}

/// Rotates rows so the columns hold the diagonals (the SSE2 backend's layout trick: `b` stays,
/// so the shuffles do not wait on it).
#[inline(always)]
fn rows_to_diagonals([a, _, c, d]: &mut [v128; 4]) {
    *c = i32x4_shuffle::<1, 2, 3, 0>(*c, *c);
    *d = i32x4_shuffle::<2, 3, 0, 1>(*d, *d);
    *a = i32x4_shuffle::<3, 0, 1, 2>(*a, *a);
}

#[inline(always)]
fn diagonals_to_rows([a, _, c, d]: &mut [v128; 4]) {
    *c = i32x4_shuffle::<3, 0, 1, 2>(*c, *c);
    *d = i32x4_shuffle::<2, 3, 0, 1>(*d, *d);
    *a = i32x4_shuffle::<1, 2, 3, 0>(*a, *a);
}

#[inline(always)]
fn double_round(x: &mut [v128; 4]) {
    quarter_rounds(x);
    rows_to_diagonals(x);
    quarter_rounds(x);
    diagonals_to_rows(x);
}

/// Applies `$step` to each of the four blocks, written out: the steps of four independent
/// dependency chains interleave, and nothing relies on the optimizer unrolling a loop (the
/// browser build optimizes for size).
macro_rules! each {
    ($x:ident, $step:ident) => {
        $step(&mut $x[0]);
        $step(&mut $x[1]);
        $step(&mut $x[2]);
        $step(&mut $x[3]);
    };
}

#[inline(always)]
fn step1(s: &mut [v128; 4]) {
    s[0] = u32x4_add(s[0], s[1]);
    s[3] = rotl16(v128_xor(s[3], s[0]));
}

#[inline(always)]
fn step2(s: &mut [v128; 4]) {
    s[2] = u32x4_add(s[2], s[3]);
    s[1] = rotl::<12, 20>(v128_xor(s[1], s[2]));
}

#[inline(always)]
fn step3(s: &mut [v128; 4]) {
    s[0] = u32x4_add(s[0], s[1]);
    s[3] = rotl8(v128_xor(s[3], s[0]));
}

#[inline(always)]
fn step4(s: &mut [v128; 4]) {
    s[2] = u32x4_add(s[2], s[3]);
    s[1] = rotl::<7, 25>(v128_xor(s[1], s[2]));
}

/// [`quarter_rounds`] on four blocks.
#[inline(always)]
fn quarter_rounds4(x: &mut [[v128; 4]; 4]) {
    each!(x, step1);
    each!(x, step2);
    each!(x, step3);
    each!(x, step4);
}

#[inline(always)]
fn double_round4(x: &mut [[v128; 4]; 4]) {
    quarter_rounds4(x);
    each!(x, rows_to_diagonals);
    quarter_rounds4(x);
    each!(x, diagonals_to_rows);
}
