//! Prompt rows with 8-bit activations (`--int8`) for the weight types without a 4-bit layout
//! (Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K): each chunk of weight rows the tiles pass is first
//! unpacked into unsigned bytes `u = q + bias` (at most 63), in the order of the activations
//! of [`Rows8`], then every tile of prompt rows multiplies them with `vpmaddubsw` as
//! [`super::prompt8`] does the 4-bit layouts.
//!
//! Each 16-bit register of a group ([`Avx2Group::registers`]) holds weights `2r, 2r + 1` of 8
//! rows; two of them, the second shifted up a byte, give in the 32-bit lane of row `j` the four
//! bytes that meet a broadcast of four activations. Two products of bytes of at most 63 and
//! activations of at most 127 in magnitude, twice, stay within 16 bits (4 · 63 · 127 = 32,004),
//! so each half block (16 weights) is two `vpmaddubsw` pairs and two `vpmaddwd`, exact. The
//! bias comes off in integers, `Σ q·a = Σ u·a − bias·Σ a` with the half's sum of 8-bit
//! activations (as llama.cpp's K-quant dot products do), before the half's sum is scaled; the
//! offsets (Q5_1, Q2_K, Q5_K) multiply the exact f32 sums of the half's activations, as in
//! [`super::prompt8`].
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
/// blocks), the bytes and the scales and offsets ([`Avx2Group::scale_vectors`]); and the bias
/// added to the weights.
#[derive(Default)]
pub struct Chunk8 {
    blocks: Vec<(Block8, [__m256; 4])>,
    bias: i32,
}

/// Unpacks `groups` into `chunk`, adding `bias` to every weight.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; every weight plus `bias` must lie in `0..=63`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn unpack<G: Avx2Group>(groups: &[G], bias: i16, chunk: &mut Chunk8) {
    chunk.blocks.clear();
    chunk.bias = i32::from(bias);
    let add = _mm256_set1_epi16(bias);
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
            chunk.blocks.push((block, group.scale_vectors(sub)));
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
    let cols = x.cols;
    let nb = cols / QK;
    debug_assert!(r0 + T <= x.len() && chunk.blocks.len().is_multiple_of(nb));
    debug_assert!(out.len() >= chunk.blocks.len() / nb * T * 8);
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    let half_sums = x.half_sums.as_ptr().add(r0 * nb);
    let q_sums = x.q_sums.as_ptr().add(r0 * nb);
    let ones = _mm256_set1_epi16(1);
    for (g, row) in chunk.blocks.chunks_exact(nb).enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        for (b, (block, [dw, dw_hi, m, m_hi])) in row.iter().enumerate() {
            let w = block.0.as_ptr() as *const __m256i;
            // Per row, the exact sums of each half block's products.
            let mut halves = [[_mm256_setzero_si256(); 2]; T];
            for half in 0..2 {
                for pair in 0..2 {
                    let p = 4 * half + 2 * pair;
                    let (w0, w1) = (_mm256_load_si256(w.add(p)), _mm256_load_si256(w.add(p + 1)));
                    for (t, halves) in halves.iter_mut().enumerate() {
                        let a = q.add(t * cols + b * QK + 4 * p) as *const i32;
                        let a0 = _mm256_set1_epi32(a.read_unaligned());
                        let a1 = _mm256_set1_epi32(a.add(1).read_unaligned());
                        let pairs = _mm256_add_epi16(
                            _mm256_maddubs_epi16(w0, a0),
                            _mm256_maddubs_epi16(w1, a1),
                        );
                        halves[half] =
                            _mm256_add_epi32(halves[half], _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let da = _mm256_set1_ps(*d.add(t * nb + b));
                let [lo, hi] = *half_sums.add(t * nb + b);
                let [q_lo, q_hi] = *q_sums.add(t * nb + b);
                let lo_bias = _mm256_set1_epi32(chunk.bias * q_lo);
                let ints = _mm256_cvtepi32_ps(_mm256_sub_epi32(halves[t][0], lo_bias));
                *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(*dw, da), *acc);
                let hi_bias = _mm256_set1_epi32(chunk.bias * q_hi);
                let ints = _mm256_cvtepi32_ps(_mm256_sub_epi32(halves[t][1], hi_bias));
                *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(*dw_hi, da), *acc);
                *acc = _mm256_fmadd_ps(*m, _mm256_set1_ps(lo), *acc);
                *acc = _mm256_fmadd_ps(*m_hi, _mm256_set1_ps(hi), *acc);
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((g * T + t) * 8), *acc);
        }
    }
}
