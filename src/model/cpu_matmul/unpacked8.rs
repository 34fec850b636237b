//! Prompt rows with 8-bit activations (`--int8`) for the weight types without a 4-bit layout
//! (Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K): each chunk of weight rows the tiles pass is first
//! unpacked into unsigned bytes `u = q + bias` (at most 63), in the order of the activations
//! of [`Rows8`], then every tile of prompt rows multiplies them with `vpmaddubsw` as
//! [`super::prompt8`] does the 4-bit layouts.
//!
//! Each 16-bit register of a group ([`Avx2Group::registers`]) holds weights `2r, 2r + 1` of 8
//! rows; two of them, the second shifted up a byte, give in the 32-bit lane of row `j` the four
//! bytes that meet a broadcast of four activations. A half block (16 weights) is four
//! `vpmaddubsw` whose 16-bit sums stay exact (4 · 2 · 31 · 127 = 31,496 for bytes up to 31;
//! Q6_K's, up to 63, are widened after every two), then one `vpmaddwd`. The bias comes off
//! as `−bias·d` times the dequantized sum of the half's 8-bit activations, so the products
//! are those of `q` (as in llama.cpp's K-quant dot products); the offsets (Q5_1, Q2_K, Q5_K)
//! multiply the exact f32 sums of the activations, as in [`super::prompt8`].
//!
//! Decode rows of these types stay on the 16-bit kernel (unpacking a chunk for a few rows
//! costs more than it saves). A prompt row takes this path whatever rows share its step, so
//! its result is the same in every batch.

use std::arch::x86_64::*;

use super::avx2::Avx2Group;
use super::blocks::QK;
use super::prompt8::Rows8;

/// One block of 32 weights of 8 rows as unsigned bytes: 32 bytes per group of four
/// activations of [`Rows8`]'s order, row `j`'s four in 32-bit lane `j`.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub struct Block8([u8; 256]);

/// A chunk of weight groups unpacked for the tiles: per block (groups in order, then their
/// blocks), the bytes and the scales and offsets ([`Avx2Group::scale_vectors`], with a bias
/// `−bias·d` instead, those types having no offsets); and how the bytes were made.
#[derive(Default)]
pub struct Chunk8 {
    blocks: Vec<(Block8, [__m256; 4])>,
    bias: i16,
    /// Scales and offsets per half block.
    split: bool,
    /// Bytes up to 63 (a bias of 32: Q6_K), else up to 31.
    wide: bool,
}

/// Unpacks `groups` into `chunk`, adding `bias` to every weight.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; every weight plus `bias` must lie in `0..=63`,
/// in `0..=31` unless `bias` is 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn unpack<G: Avx2Group>(groups: &[G], bias: i16, chunk: &mut Chunk8) {
    use super::groups::Scales;
    debug_assert!(bias == 0 || !G::Scales::OFFSET, "a bias and offsets");
    chunk.blocks.clear();
    (chunk.bias, chunk.split, chunk.wide) = (bias, G::Scales::SPLIT, bias > 16);
    let add = _mm256_set1_epi16(bias);
    let neg_bias = _mm256_set1_ps(-f32::from(bias));
    for group in groups {
        for sub in 0..G::SUBS {
            let mut block = Block8([0; 256]);
            let p = block.0.as_mut_ptr() as *mut __m256i;
            // Registers 4l..4l + 4 hold weights 8l..8l + 8; activations 8l + [0, 4, 1, 5]
            // meet registers 4l and 4l + 2, then 8l + [2, 6, 3, 7] registers 4l + 1 and 4l + 3.
            for l in 0..4 {
                let regs = registers4(group, sub, l);
                let mut u = [_mm256_setzero_si256(); 4];
                for (u, r) in u.iter_mut().zip(regs) {
                    *u = _mm256_add_epi16(r, add);
                }
                let even = _mm256_or_si256(u[0], _mm256_slli_epi16::<8>(u[2]));
                let odd = _mm256_or_si256(u[1], _mm256_slli_epi16::<8>(u[3]));
                _mm256_store_si256(p.add(2 * l), even);
                _mm256_store_si256(p.add(2 * l + 1), odd);
            }
            let [d, d_hi, m, m_hi] = group.scale_vectors(sub);
            let offsets = if bias != 0 {
                [_mm256_mul_ps(neg_bias, d), _mm256_mul_ps(neg_bias, d_hi)]
            } else {
                [m, m_hi]
            };
            chunk
                .blocks
                .push((block, [d, d_hi, offsets[0], offsets[1]]));
        }
    }
}

/// Registers `4l..4l + 4` of block `sub`, whatever the group's registers per load.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn registers4<G: Avx2Group>(group: &G, sub: usize, l: usize) -> [__m256i; 4] {
    if G::PER_LOAD == 4 {
        return group.registers(sub, l);
    }
    // Two registers per load (bytes): loads 2l and 2l + 1.
    let a = group.registers(sub, 2 * l);
    let b = group.registers(sub, 2 * l + 1);
    [a[0], a[1], b[0], b[1]]
}

/// `out[(g * T + t) * 8 + j]` = prompt row `r0 + t` of `x` · row `j` of group row `g` of the
/// unpacked `chunk` (`nb` blocks per row), for `T` rows.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x` holds rows `r0..r0 + T`; `chunk` holds whole group
/// rows of `nb` blocks.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile<const T: usize>(chunk: &Chunk8, x: &Rows8, r0: usize, out: &mut [f32]) {
    match (chunk.split, chunk.wide, chunk.bias != 0) {
        (false, false, false) => tile_of::<T, false, false, false>(chunk, x, r0, out),
        (false, false, true) => tile_of::<T, false, false, true>(chunk, x, r0, out),
        (false, true, false) => tile_of::<T, false, true, false>(chunk, x, r0, out),
        (false, true, true) => tile_of::<T, false, true, true>(chunk, x, r0, out),
        (true, false, false) => tile_of::<T, true, false, false>(chunk, x, r0, out),
        (true, false, true) => tile_of::<T, true, false, true>(chunk, x, r0, out),
        (true, true, false) => tile_of::<T, true, true, false>(chunk, x, r0, out),
        (true, true, true) => tile_of::<T, true, true, true>(chunk, x, r0, out),
    }
}

/// [`tile`] for a chunk of `SPLIT` scales (a scale and offset per half block), `WIDE` bytes
/// (up to 63, else 31) and a bias (`BIASED`).
///
/// Per half block and row, four `vpmaddubsw` whose 16-bit pair sums stay exact (four of bytes
/// up to 31: 4 · 2 · 31 · 127 = 31,496; two of bytes up to 63), widened by `vpmaddwd`. The
/// bias comes off with the dequantized sum of the 8-bit activations (`−bias·d` times `da · Σ a`,
/// so the products are those of `q`, as in llama.cpp's dot products); the offsets multiply the
/// exact f32 sums.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_of<const T: usize, const SPLIT: bool, const WIDE: bool, const BIASED: bool>(
    chunk: &Chunk8,
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    let cols = x.cols;
    let nb = cols / QK;
    debug_assert!(r0 + T <= x.len() && chunk.blocks.len().is_multiple_of(nb));
    debug_assert!(out.len() >= chunk.blocks.len() / nb * T * 8);
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    // The sums the offsets multiply: of the 8-bit activations with a bias, else exact.
    let (halves_of, all_of) = if BIASED {
        (x.q_half_sums.as_ptr(), x.q_sums.as_ptr())
    } else {
        (x.half_sums.as_ptr(), x.sum.as_ptr())
    };
    let (halves_of, all_of) = (halves_of.add(r0 * nb), all_of.add(r0 * nb));
    let ones = _mm256_set1_epi16(1);
    for (g, row) in chunk.blocks.chunks_exact(nb).enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        for (b, (block, [dw, dw_hi, m, m_hi])) in row.iter().enumerate() {
            let w = block.0.as_ptr() as *const __m256i;
            // Per row, the exact sums of each half block's products.
            let mut halves = [[_mm256_setzero_si256(); 2]; T];
            for half in 0..2 {
                let mut pairs = [_mm256_setzero_si256(); T];
                for p in 4 * half..4 * half + 4 {
                    let w = _mm256_load_si256(w.add(p));
                    for (t, pairs) in pairs.iter_mut().enumerate() {
                        let a = q.add(t * cols + b * QK + 4 * p) as *const i32;
                        let a = _mm256_set1_epi32(a.read_unaligned());
                        *pairs = _mm256_add_epi16(*pairs, _mm256_maddubs_epi16(w, a));
                    }
                    if WIDE && p % 2 == 1 {
                        for (halves, pairs) in halves.iter_mut().zip(pairs.iter_mut()) {
                            let wide = _mm256_madd_epi16(*pairs, ones);
                            halves[half] = _mm256_add_epi32(halves[half], wide);
                            *pairs = _mm256_setzero_si256();
                        }
                    }
                }
                if !WIDE {
                    for (halves, pairs) in halves.iter_mut().zip(pairs) {
                        halves[half] = _mm256_madd_epi16(pairs, ones);
                    }
                }
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let da = _mm256_set1_ps(*d.add(t * nb + b));
                if SPLIT {
                    let [lo, hi] = *halves_of.add(t * nb + b);
                    let ints = _mm256_cvtepi32_ps(halves[t][0]);
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(*dw, da), *acc);
                    let ints = _mm256_cvtepi32_ps(halves[t][1]);
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(*dw_hi, da), *acc);
                    *acc = _mm256_fmadd_ps(*m, _mm256_set1_ps(lo), *acc);
                    *acc = _mm256_fmadd_ps(*m_hi, _mm256_set1_ps(hi), *acc);
                } else {
                    let ints = _mm256_cvtepi32_ps(_mm256_add_epi32(halves[t][0], halves[t][1]));
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(*dw, da), *acc);
                    *acc = _mm256_fmadd_ps(*m, _mm256_set1_ps(*all_of.add(t * nb + b)), *acc);
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((g * T + t) * 8), *acc);
        }
    }
}
