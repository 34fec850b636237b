//! Rows with 8-bit activations (`--int8`: prompt and decode rows alike), for 4-bit weights
//! (Q4_0, Q4_1: [`tile`]; Q4_K: [`tile_k`]): `vpmaddubsw` multiplies 32 unsigned 4-bit weights
//! by 32 signed 8-bit activations and adds them in pairs, and the 16-bit pair sums of a whole
//! block stay exact (at most 8 · 2 · 15 · 127 = 30,480), so a block of 8 rows costs 8 of them
//! and one `vpmaddwd` to widen — about twice the multiply-adds per instruction of the 16-bit
//! decode kernel and four times f32 FMA. llama.cpp's CPU kernels round activations to 8 bits
//! the same way (one scale per block of 32, and per super-block of 256 for K-quants).
//!
//! The weights stay in their [`Nibbles8`](super::groups::Nibbles8) layout (Q4_K's
//! [`Q4KGroup`](super::super_blocks::Q4KGroup) blocks too): masking a load's low nibbles gives, in the
//! 32-bit lane of row `j`, that row's weights `8l + [0, 4, 1, 5]`, the high nibbles weights
//! `8l + [2, 6, 3, 7]`; the activations are stored in that order ([`PERMUTATION`]) so each
//! product is one broadcast of four bytes. A row's result depends only on its own values, so
//! it is the same in every batch.
//!
//! Where the CPU has AVX-512 VNNI (with VL: [`vnni_available`](super::avx2::vnni_available)),
//! `vpdpbusd` adds four products straight into 32-bit lanes ([`nibble_dots`]): the same
//! integers with fewer instructions, so the same bits; its 32 registers hold tiles of up to 8
//! rows (weights unpacked once for 8 decode rows). Either way the weights a tile reads next
//! are prefetched ([`prefetch_next`](super::avx2::prefetch_next)).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::Avx2Nibbles;
use super::blocks::QK;
#[cfg(target_arch = "x86_64")]
use super::super_blocks::Q4KGroup;

/// Largest 8-bit activation: `x ≈ d · q` with `|q| <= Q_MAX`.
const Q_MAX: f32 = 127.0;

/// Where each stored activation of a block comes from: positions `8l..8l + 8` hold
/// activations `8l + [0, 4, 1, 5, 2, 6, 3, 7]`.
#[cfg(test)]
const PERMUTATION: [usize; QK] = {
    let mut p = [0; QK];
    let order = [0, 4, 1, 5, 2, 6, 3, 7];
    let mut i = 0;
    while i < QK {
        p[i] = (i / 8) * 8 + order[i % 8];
        i += 1;
    }
    p
};

/// Rows of activations quantized to 8 bits per block of 32, in [`PERMUTATION`] order.
pub struct Rows8 {
    pub(super) cols: usize,
    /// Blocks in a row that share one scale: 1, or [`SPAN_K`] for [`tile_k`].
    pub(super) span: usize,
    pub(super) q: Vec<i8>,
    /// One scale per block.
    pub(super) d: Vec<f32>,
    /// The exact f32 sum of each block's activations, for the weights' offsets.
    pub(super) sum: Vec<f32>,
    /// The f32 sums of each block's activations 0..16 and 16..32, for offsets of each half
    /// ([`super::unpacked8`]).
    pub(super) half_sums: Vec<[f32; 2]>,
    /// The sums of each block's 8-bit activations 0..16 and 16..32, and of all 32,
    /// dequantized (`d · Σ q`), for weights with a bias ([`super::unpacked8`]).
    pub(super) q_half_sums: Vec<[f32; 2]>,
    pub(super) q_sums: Vec<f32>,
    /// The two halves' sums of 8-bit activations as 16-bit integers, `lo | hi << 16` (each at
    /// most 16 · 127), for [`super::unpacked8`]'s integer scales.
    pub(super) q_pairs: Vec<i32>,
    /// The sums of 8-bit activations of blocks `2k` and `2k + 1` as 16-bit integers,
    /// `s₂ₖ | s₂ₖ₊₁ << 16` (each at most 32 · 127), for [`tile_k`]'s mins.
    pub(super) block_pairs: Vec<i32>,
}

impl Rows8 {
    /// Quantizes `x`, rows of `cols` activations (`cols` a multiple of `32 · span`), rounding
    /// to nearest, ties to even, with one scale per `span` blocks (each block still has its
    /// copy in `d`).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize(x: &[f32], cols: usize, span: usize) -> Self {
        debug_assert!(cols.is_multiple_of(QK * span) && x.len().is_multiple_of(cols));
        let blocks = x.len() / QK;
        let mut rows = Self {
            cols,
            span,
            q: vec![0; x.len()],
            d: vec![0.0; blocks],
            sum: vec![0.0; blocks],
            half_sums: vec![[0.0; 2]; blocks],
            q_half_sums: vec![[0.0; 2]; blocks],
            q_sums: vec![0.0; blocks],
            q_pairs: vec![0; blocks],
            block_pairs: vec![0; blocks.div_ceil(2)],
        };
        // After the packs, 32-bit chunk c holds activations 4·[0, 8, 16, 24, 1, 9, 17, 25][c]..:
        // gather the chunks in order, then interleave each 8's halves ([`PERMUTATION`]).
        let chunks = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let halves = _mm256_setr_epi8(
            0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15, 0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9,
            13, 10, 14, 11, 15,
        );
        let mut amax = 0f32;
        for b in 0..blocks {
            if b.is_multiple_of(span) {
                amax = 0.0;
                for k in b..b + span {
                    amax = amax.max(super::avx2::block_amax(x.as_ptr().add(k * QK)));
                }
            }
            let ([a, b2, c, d], scale, sum) =
                super::avx2::quantize_block_at(x.as_ptr().add(b * QK), Q_MAX, amax);
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b2), _mm256_packs_epi32(c, d));
            let ordered = _mm256_permutevar8x32_epi32(packed, chunks);
            let q = _mm256_shuffle_epi8(ordered, halves);
            _mm256_storeu_si256(rows.q.as_mut_ptr().add(b * QK) as *mut __m256i, q);
            (rows.d[b], rows.sum[b]) = (scale, sum);
            rows.half_sums[b] = super::avx2::half_sums(x.as_ptr().add(b * QK));
            let (lo, hi) = (
                hsum_i32(_mm256_add_epi32(a, b2)),
                hsum_i32(_mm256_add_epi32(c, d)),
            );
            rows.q_half_sums[b] = [scale * lo as f32, scale * hi as f32];
            rows.q_sums[b] = scale * (lo + hi) as f32;
            rows.q_pairs[b] = (lo as u16 as i32) | (hi << 16);
            let whole = (lo + hi) as u16 as i32;
            rows.block_pairs[b / 2] |= if b % 2 == 0 { whole } else { whole << 16 };
        }
        rows
    }

    pub fn len(&self) -> usize {
        self.q.len() / self.cols
    }
}

/// The sum of the eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Each block's scales and offsets of the 8 rows ([`Avx2Group::scale_vectors`]) of `groups`,
/// in order, into `out`: computed once for all the tiles of rows that pass a chunk of weights.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_vectors<G: Avx2Nibbles>(groups: &[G], out: &mut Vec<[__m256; 2]>) {
    out.clear();
    for group in groups {
        for sub in 0..G::SUBS {
            let [d, _, m, _] = group.scale_vectors(sub);
            out.push([d, m]);
        }
    }
}

/// The 16-bit pair sums of block `sub` of `group`'s nibbles times the 8-bit activations of `T`
/// rows at `q` (row stride `cols`), row `j`'s in 32-bit lane `j`: exact (at most 30,480).
///
/// # Safety
/// The CPU must support AVX2; `q` points at a block of each of the `T` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn nibble_pairs<G: Avx2Nibbles, const T: usize>(
    group: &G,
    sub: usize,
    q: *const i8,
    cols: usize,
) -> [__m256i; T] {
    let nibble = _mm256_set1_epi8(0x0F);
    let mut pairs = [_mm256_setzero_si256(); T];
    for l in 0..4 {
        let v = group.load(sub, l);
        let lo = _mm256_and_si256(v, nibble);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
        for (t, pairs) in pairs.iter_mut().enumerate() {
            let a = q.add(t * cols + 8 * l) as *const i32;
            let a_lo = _mm256_set1_epi32(a.read_unaligned());
            let a_hi = _mm256_set1_epi32(a.add(1).read_unaligned());
            *pairs = _mm256_add_epi16(*pairs, _mm256_maddubs_epi16(lo, a_lo));
            *pairs = _mm256_add_epi16(*pairs, _mm256_maddubs_epi16(hi, a_hi));
        }
    }
    pairs
}

/// [`nibble_pairs`] with AVX-512 VNNI: each row's 32 products of block `sub` added up as one
/// 32-bit integer (`vpdpbusd`: four products into a lane per instruction, no 16-bit pairs to
/// widen), row `j`'s in lane `j`; the same integers as `vpmaddwd` of the pairs by ones.
/// Low and high nibbles accumulate apart, two chains per row, so the adds overlap.
///
/// # Safety
/// The CPU must support AVX2, AVX-512 VL and VNNI; `q` points at a block of each of the `T`
/// rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn nibble_dots<G: Avx2Nibbles, const T: usize>(
    group: &G,
    sub: usize,
    q: *const i8,
    cols: usize,
) -> [__m256i; T] {
    let nibble = _mm256_set1_epi8(0x0F);
    let mut lo_dots = [_mm256_setzero_si256(); T];
    let mut hi_dots = [_mm256_setzero_si256(); T];
    for l in 0..4 {
        let v = group.load(sub, l);
        let lo = _mm256_and_si256(v, nibble);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
        for t in 0..T {
            let a = q.add(t * cols + 8 * l) as *const i32;
            let a_lo = _mm256_set1_epi32(a.read_unaligned());
            let a_hi = _mm256_set1_epi32(a.add(1).read_unaligned());
            lo_dots[t] = _mm256_dpbusd_epi32(lo_dots[t], lo, a_lo);
            // Past 4 rows, one chain per row (registers run short; 8 chains still overlap).
            let hi_dots = if T > 4 { &mut lo_dots } else { &mut hi_dots };
            hi_dots[t] = _mm256_dpbusd_epi32(hi_dots[t], hi, a_hi);
        }
    }
    if T > 4 {
        return lo_dots;
    }
    let mut dots = [_mm256_setzero_si256(); T];
    for t in 0..T {
        dots[t] = _mm256_add_epi32(lo_dots[t], hi_dots[t]);
    }
    dots
}

/// `out[(g * T + t) * 8 + j]` = row `r0 + t` of `x` · row `j` of weight group row `g` of
/// `groups` (each `cols / 32 / G::SUBS` groups), for `T` rows; with `CACHED`, `scales` are
/// [`scale_vectors`] of `groups` (for several tiles of rows passing the same weights);
/// without, they are computed here, on the way through the weights rather than in a pass of
/// their own, and `scales` is empty. Two variants, so that neither holds the other's
/// registers.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` holds rows `r0..r0 + T`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile<G: Avx2Nibbles, const T: usize, const CACHED: bool>(
    groups: &[G],
    scales: &[[__m256; 2]],
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    tile_with::<G, T, CACHED, false>(groups, scales, x, r0, out)
}

/// [`tile`] with AVX-512 VNNI ([`nibble_dots`]): the same integers, so the same bits.
///
/// # Safety
/// As [`tile`], and the CPU must support AVX-512 VL and VNNI
/// ([`vnni_available`](super::avx2::vnni_available)).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub unsafe fn tile_vnni<G: Avx2Nibbles, const T: usize, const CACHED: bool>(
    groups: &[G],
    scales: &[[__m256; 2]],
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    tile_with::<G, T, CACHED, true>(groups, scales, x, r0, out)
}

/// The body of [`tile`] (`VNNI` false) and [`tile_vnni`], inlined into each so that it is
/// compiled with its caller's instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_with<G: Avx2Nibbles, const T: usize, const CACHED: bool, const VNNI: bool>(
    groups: &[G],
    scales: &[[__m256; 2]],
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    let cols = x.cols;
    let nb = cols / QK;
    let per_row = nb / G::SUBS;
    debug_assert!(r0 + T <= x.len() && groups.len().is_multiple_of(per_row));
    debug_assert!(out.len() >= groups.len() / per_row * T * 8);
    debug_assert!(!CACHED || scales.len() == groups.len() * G::SUBS);
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    let sum = x.sum.as_ptr().add(r0 * nb);
    let ones = _mm256_set1_epi16(1);
    for (g, row) in groups.chunks_exact(per_row).enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        for (i, group) in row.iter().enumerate() {
            super::avx2::prefetch_next(group);
            for sub in 0..G::SUBS {
                let b = i * G::SUBS + sub;
                let q = q.add(b * QK);
                let dots = if VNNI {
                    nibble_dots::<G, T>(group, sub, q, cols)
                } else {
                    let mut pairs = nibble_pairs::<G, T>(group, sub, q, cols);
                    for p in &mut pairs {
                        *p = _mm256_madd_epi16(*p, ones);
                    }
                    pairs
                };
                let [dw, m] = if CACHED {
                    *scales.get_unchecked((g * per_row + i) * G::SUBS + sub)
                } else {
                    let [d, _, m, _] = group.scale_vectors(sub);
                    [d, m]
                };
                for (t, acc) in acc.iter_mut().enumerate() {
                    let ints = _mm256_cvtepi32_ps(dots[t]);
                    let da = _mm256_set1_ps(*d.add(t * nb + b));
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(dw, da), *acc);
                    *acc = _mm256_fmadd_ps(m, _mm256_set1_ps(*sum.add(t * nb + b)), *acc);
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((g * T + t) * 8), *acc);
        }
    }
}

/// Blocks per activation scale for [`tile_k`]: a Q4_K super-block's 8.
pub const SPAN_K: usize = 8;

/// [`tile`] for Q4_K with rows quantized per super-block ([`SPAN_K`], as llama.cpp's `q8_K`):
/// a block's 16-bit pair sums times the row's 6-bit block scale (`vpmaddwd`) add up as 32-bit
/// integers over the super-block (at most 8 · 30,480 · 63 < 2³¹), converted and scaled once
/// per super-block instead of once per block; so do the mins times each block's sum of 8-bit
/// activations (two blocks per `vpmaddwd`, as llama.cpp's `bsums`). 1.05-1.17x [`tile`]'s
/// speed on the same weights (one 2048 × 8192 matrix, 1 to 64 rows, 1 and 2 threads).
///
/// With `prefetch` (the first tile to meet these weights, which come from memory) it asks for
/// the weights ahead, one block's share of a group's lines at a time
/// ([`prefetch_ahead`](super::avx2::prefetch_ahead)); the tiles after it find them in cache,
/// and prefetching there made prefill 7% slower. One decode row on 1B Q4_K, 12 in-process
/// pairs twice on Zen 4: 1.085x and 1.05x faster with it (2048 or 4096 bytes ahead alike).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` holds rows `r0..r0 + T`, quantized with
/// `span == SPAN_K`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_k<const T: usize>(
    groups: &[Q4KGroup],
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
    prefetch: bool,
) {
    tile_k_with::<T, false>(groups, x, r0, out, prefetch)
}

/// [`tile_k`] with AVX-512 VNNI: each block's 32-bit sums ([`nibble_dots`]) times the 6-bit
/// scales (`vpmulld`) — the same integers, so the same bits.
///
/// # Safety
/// As [`tile_k`], and the CPU must support AVX-512 VL and VNNI
/// ([`vnni_available`](super::avx2::vnni_available)).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub unsafe fn tile_k_vnni<const T: usize>(
    groups: &[Q4KGroup],
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
    prefetch: bool,
) {
    tile_k_with::<T, true>(groups, x, r0, out, prefetch)
}

/// The body of [`tile_k`] (`VNNI` false) and [`tile_k_vnni`], inlined into each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_k_with<const T: usize, const VNNI: bool>(
    groups: &[Q4KGroup],
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
    prefetch: bool,
) {
    let cols = x.cols;
    let nb = cols / QK;
    let per_row = nb / SPAN_K;
    debug_assert!(x.span == SPAN_K && r0 + T <= x.len());
    debug_assert!(groups.len().is_multiple_of(per_row));
    debug_assert!(out.len() >= groups.len() / per_row * T * 8);
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    let block_pairs = x.block_pairs.as_ptr().add(r0 * nb / 2);
    // Row j's byte (of 8, in both halves) to both 16-bit halves of 32-bit lane j.
    let spread = _mm256_setr_epi8(
        0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1, 4, -1, 4, -1, 5, -1, 5, -1, 6, -1,
        6, -1, 7, -1, 7, -1,
    );
    for (g, row) in groups.chunks_exact(per_row).enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        for (i, group) in row.iter().enumerate() {
            let mut ints = [_mm256_setzero_si256(); T];
            let (scales, mins_of) = super::avx2::six_bit_scales(&group.scales);
            for (sub, sc) in scales.iter().enumerate() {
                if prefetch {
                    super::avx2::prefetch_ahead(group, sub, SPAN_K);
                }
                let b = i * SPAN_K + sub;
                let q = q.add(b * QK);
                if VNNI {
                    let sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sc.as_ptr() as *const __m128i));
                    let dots = nibble_dots::<Q4KGroup, T>(group, sub, q, cols);
                    for t in 0..T {
                        ints[t] = _mm256_add_epi32(ints[t], _mm256_mullo_epi32(dots[t], sc));
                    }
                } else {
                    let bytes = i64::from_le_bytes(*sc);
                    let sc = _mm256_shuffle_epi8(_mm256_set1_epi64x(bytes), spread);
                    let pairs = nibble_pairs::<Q4KGroup, T>(group, sub, q, cols);
                    for t in 0..T {
                        ints[t] = _mm256_add_epi32(ints[t], _mm256_madd_epi16(pairs[t], sc));
                    }
                }
            }
            let dw = _mm256_cvtph_ps(_mm_load_si128(group.d.as_ptr() as *const __m128i));
            for (t, acc) in acc.iter_mut().enumerate() {
                let da = _mm256_set1_ps(*d.add(t * nb + i * SPAN_K));
                let ints = _mm256_cvtepi32_ps(ints[t]);
                *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(dw, da), *acc);
            }
            // The mins times each block's sum of 8-bit activations, as 32-bit integers: lane j
            // of `m` holds row j's mins of blocks 2k and 2k + 1, `sums` the row's two sums.
            let mut mins = [_mm256_setzero_si256(); T];
            for k in 0..SPAN_K / 2 {
                let m0 = _mm_loadl_epi64(mins_of[2 * k].as_ptr() as *const __m128i);
                let m1 = _mm_loadl_epi64(mins_of[2 * k + 1].as_ptr() as *const __m128i);
                let m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m0, m1));
                for (t, mins) in mins.iter_mut().enumerate() {
                    let sums = _mm256_set1_epi32(*block_pairs.add(t * nb / 2 + i * SPAN_K / 2 + k));
                    *mins = _mm256_add_epi32(*mins, _mm256_madd_epi16(m, sums));
                }
            }
            let neg_dmin =
                _mm256_cvtph_ps(_mm_load_si128(group.neg_dmin.as_ptr() as *const __m128i));
            for (t, acc) in acc.iter_mut().enumerate() {
                let da = _mm256_set1_ps(*d.add(t * nb + i * SPAN_K));
                let mins = _mm256_cvtepi32_ps(mins[t]);
                *acc = _mm256_fmadd_ps(mins, _mm256_mul_ps(neg_dmin, da), *acc);
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((g * T + t) * 8), *acc);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::model::cpu_matmul::{matmul_group_with, CpuQMatMul};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Rows through the 8-bit kernel (decode and prompt rows alike) stay within 8-bit rounding
    /// of the f64 products of the dequantized weights with both the 8-bit activations
    /// (`d · q`) and the exact ones, and a row alone gives the same bits.
    #[test]
    fn prompt_rows_are_the_products_of_the_rounded_activations() {
        if !super::super::avx2::available() {
            return;
        }
        let dev = Device::Cpu;
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q4K,
            // Prompt rows through unpacked8, decode rows through the 16-bit kernel.
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let (out, inp, rows) = (37, 512, 7);
            let w = Tensor::from_vec(random(out * inp, 3), (out, inp), &dev).unwrap();
            let qt = QTensor::quantize(&w, dtype).unwrap();
            let k = CpuQMatMul::from_qtensor(&qt).unwrap().unwrap();
            let wd: Vec<f32> = qt
                .dequantize(&dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let x = random(rows * inp, 4);
            let decode_rows = 2;
            let y = matmul_group_with(&[&k], &x, decode_rows, true);
            // As quantize_int8_rows does: one scale per super-block where Q4_K reads the rows.
            let span = if dtype == GgmlDType::Q4K { SPAN_K } else { 1 };
            // SAFETY: AVX2 and FMA were detected.
            let x8 = unsafe { Rows8::quantize(&x, inp, span) };
            for r in 0..rows {
                let xr: Vec<f64> = (0..inp)
                    .map(|i| {
                        let (b, k) = (i / QK, i % QK);
                        let at = PERMUTATION.iter().position(|&p| p == k).unwrap();
                        x8.d[r * inp / QK + b] as f64 * x8.q[r * inp + b * QK + at] as f64
                    })
                    .collect();
                // The offsets multiply the exact f32 sums: add back what rounding took away.
                let exact: Vec<f64> = x[r * inp..][..inp].iter().map(|&v| v as f64).collect();
                for o in 0..out {
                    let row = &wd[o * inp..(o + 1) * inp];
                    let got = y[r * out + o] as f64;
                    let quantized: f64 = row.iter().zip(&xr).map(|(&w, &x)| w as f64 * x).sum();
                    let full: f64 = row.iter().zip(&exact).map(|(&w, &x)| w as f64 * x).sum();
                    // Between the two: the scale part uses the 8-bit values, the offset part
                    // the exact sums; the result stays within 8-bit rounding of the f32 one.
                    let scale: f64 = row.iter().map(|w| w.abs() as f64).sum::<f64>() / 127.0;
                    assert!(
                        (got - quantized).abs() <= scale,
                        "{dtype:?} row {r} col {o}: {got} vs {quantized}"
                    );
                    assert!(
                        (got - full).abs() <= scale,
                        "{dtype:?} row {r} col {o}: {got} vs {full}"
                    );
                }
                let kind = usize::from(r < decode_rows);
                let alone = matmul_group_with(&[&k], &x[r * inp..][..inp], kind, true);
                assert_eq!(alone, y[r * out..][..out], "{dtype:?} row {r} alone");
            }
        }
    }

    /// The vector quantization stores each block's activations in [`PERMUTATION`] order,
    /// rounded to nearest, with one scale per `span` blocks, and the sums of each pair of
    /// blocks' 8-bit activations.
    #[test]
    fn quantized_rows_hold_the_permuted_activations() {
        if !super::super::avx2::available() {
            return;
        }
        let cols = 512;
        let x: Vec<f32> = (0..2 * cols)
            .map(|i| ((i * 37 % 61) as f32 - 30.0) / (7.0 + (i / 100) as f32))
            .collect();
        for span in [1, SPAN_K] {
            // SAFETY: AVX2 and FMA were detected.
            let rows = unsafe { Rows8::quantize(&x, cols, span) };
            let amaxes: Vec<f32> = x
                .chunks_exact(QK * span)
                .map(|s| s.iter().fold(0f32, |m, v| m.max(v.abs())))
                .collect();
            let mut sums = Vec::new();
            for (b, block) in x.chunks_exact(QK).enumerate() {
                let amax = amaxes[b / span];
                assert_eq!(rows.d[b], amax / Q_MAX, "span {span} block {b}");
                for (i, &src) in PERMUTATION.iter().enumerate() {
                    let want = (block[src] * (Q_MAX / amax)).round_ties_even() as i8;
                    assert_eq!(
                        rows.q[b * QK + i],
                        want,
                        "span {span} block {b} position {i}"
                    );
                }
                sums.push(
                    rows.q[b * QK..][..QK]
                        .iter()
                        .map(|&q| q as i32)
                        .sum::<i32>(),
                );
            }
            for (k, pair) in sums.chunks_exact(2).enumerate() {
                let want = (pair[0] as u16 as i32) | (pair[1] << 16);
                assert_eq!(rows.block_pairs[k], want, "span {span} pair {k}");
            }
        }
    }
}
