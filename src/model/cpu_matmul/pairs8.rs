//! The 8-bit VNNI tile of [`super::prompt8`] for Q4_0 and Q4_1 over two groups of 8 weight
//! rows at once: one 512-bit register holds the 16 rows' lanes (the first group's in lanes
//! 0..8), so each broadcast activation and each instruction serves twice the weights.
//!
//! In the 256-bit tile each `vpdpbusd` takes its own broadcast of four activations, and on
//! this machine (Zen 4) the broadcasts, not the multiplies, set the pace (~1.1 `vpdpbusd` per
//! cycle of the 2 the core can do). With 16 lanes per broadcast, prompt rows of a 1B Q4_0
//! file prefill 1.14x faster (8 × 128 tokens, 2 threads, 220 → 251 tok/s). Decode rows (a few
//! per step, the weights streaming from memory) were slower this way (one row: half the
//! speed), and Q4_K's tile gained nothing, so they keep the 256-bit tiles.
//!
//! Each lane computes exactly what the 256-bit tile computes for its row (the same integers,
//! then the same float operations in the same order), so the bits are the same. A last group
//! row without a partner goes through the 256-bit tile.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::{prefetch_for_tile, Avx2Nibbles};
use super::blocks::QK;
use super::prompt8::{self, Rows8};

/// `lo` and `hi` side by side: lanes 0..8 and 8..16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    let lo = _mm512_castpd256_pd512(_mm256_castps_pd(lo));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(hi)))
}

/// Lanes 0..8 of `v` to `a`, lanes 8..16 to `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_halves(v: __m512, a: *mut f32, b: *mut f32) {
    _mm256_storeu_ps(a, _mm512_castps512_ps256(v));
    _mm256_storeu_ps(
        b,
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    );
}

/// [`prompt8`]'s `nibble_dots` for the 16 rows of groups `a` and `b`: row `t`'s 32 products of
/// block `sub` with each weight row, as 32-bit integers (`a`'s rows in lanes 0..8). Up to 4
/// activation rows, low and high nibbles accumulate apart (two chains per row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn nibble_dots<G: Avx2Nibbles, const T: usize>(
    a: &G,
    b: &G,
    sub: usize,
    q: *const i8,
    cols: usize,
) -> [__m512i; T] {
    let nibble = _mm512_set1_epi8(0x0F);
    let mut lo_dots = [_mm512_setzero_si512(); T];
    let mut hi_dots = [_mm512_setzero_si512(); T];
    for l in 0..4 {
        let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a.load(sub, l)), b.load(sub, l));
        let lo = _mm512_and_si512(v, nibble);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
        for t in 0..T {
            let x = q.add(t * cols + 8 * l) as *const i32;
            let x_lo = _mm512_set1_epi32(x.read_unaligned());
            let x_hi = _mm512_set1_epi32(x.add(1).read_unaligned());
            lo_dots[t] = _mm512_dpbusd_epi32(lo_dots[t], lo, x_lo);
            let hi_dots = if T > 4 { &mut lo_dots } else { &mut hi_dots };
            hi_dots[t] = _mm512_dpbusd_epi32(hi_dots[t], hi, x_hi);
        }
    }
    if T > 4 {
        return lo_dots;
    }
    let mut dots = [_mm512_setzero_si512(); T];
    for t in 0..T {
        dots[t] = _mm512_add_epi32(lo_dots[t], hi_dots[t]);
    }
    dots
}

/// [`prompt8::tile_vnni`] with its scales given (`CACHED`: the prompt rows' case), group rows
/// in pairs; the same bits.
///
/// # Safety
/// As [`prompt8::tile_vnni`], and the CPU must support AVX-512 BW
/// ([`vnni_available`](super::avx2::vnni_available)).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn tile<G: Avx2Nibbles, const T: usize>(
    groups: &[G],
    scales: &[[__m256; 2]],
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    let cols = x.cols;
    let nb = cols / QK;
    let per_row = nb / G::SUBS;
    let group_rows = groups.len() / per_row;
    debug_assert!(r0 + T <= x.len() && groups.len().is_multiple_of(per_row));
    debug_assert!(out.len() >= group_rows * T * 8 && scales.len() == groups.len() * G::SUBS);
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    let sum = x.sum.as_ptr().add(r0 * nb);
    for g in (0..group_rows / 2).map(|p| 2 * p) {
        let (row_a, row_b) = groups[g * per_row..(g + 2) * per_row].split_at(per_row);
        let mut acc = [_mm512_setzero_ps(); T];
        for (i, (a, b)) in row_a.iter().zip(row_b).enumerate() {
            prefetch_for_tile::<true, T, _>(a);
            prefetch_for_tile::<true, T, _>(b);
            for sub in 0..G::SUBS {
                let blk = i * G::SUBS + sub;
                let dots = nibble_dots::<G, T>(a, b, sub, q.add(blk * QK), cols);
                let at = |g: usize| *scales.get_unchecked((g * per_row + i) * G::SUBS + sub);
                let ([dw_a, m_a], [dw_b, m_b]) = (at(g), at(g + 1));
                let (dw, m) = (join_ps(dw_a, dw_b), join_ps(m_a, m_b));
                for (t, acc) in acc.iter_mut().enumerate() {
                    let ints = _mm512_cvtepi32_ps(dots[t]);
                    let da = _mm512_set1_ps(*d.add(t * nb + blk));
                    *acc = _mm512_fmadd_ps(ints, _mm512_mul_ps(dw, da), *acc);
                    *acc = _mm512_fmadd_ps(m, _mm512_set1_ps(*sum.add(t * nb + blk)), *acc);
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            let o = out.as_mut_ptr();
            store_halves(*acc, o.add((g * T + t) * 8), o.add(((g + 1) * T + t) * 8));
        }
    }
    if group_rows % 2 == 1 {
        let g = group_rows - 1;
        let out = &mut out[g * T * 8..];
        prompt8::tile_vnni::<G, T, true>(&groups[g * per_row..], &scales[g * nb..], x, r0, out);
    }
}
