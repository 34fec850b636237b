//! The 8-bit VNNI tiles of [`super::prompt8`] for Q4_0 and Q4_1 ([`tile`]) and Q4_K
//! ([`tile_k`]) over two groups of 8 weight rows at once: one 512-bit register holds the 16
//! rows' lanes (the first group's in lanes 0..8), so each broadcast activation and each
//! instruction serves twice the weights. Prompt rows take them (more than 16 rows in a
//! matmul); decode rows keep the 256-bit tiles.
//!
//! In the 256-bit tile each `vpdpbusd` takes its own broadcast of four activations, and on
//! Zen 4 the broadcasts, not the multiplies, set the pace (~1.1 `vpdpbusd` per cycle of the 2
//! the core can do). With 16 lanes per broadcast, prompt rows of a 1B Q4_0 file prefill 1.14x
//! faster there (8 × 128 tokens, 2 threads, 220 → 251 tok/s); Q4_K's gained nothing there.
//! Intel's server cores (the 2-core Xeon of November 2026) run 512-bit `vpdpbusd` at twice the
//! 256-bit rate (653 vs 355 GMAC/s on 2 threads, `scripts/machine-roofs.sh`'s loop on zmm):
//! there Q4_K's prompt rows prefill 1.2x faster (1B, pp512 157-173 → 202-209 tok/s, 8 × 128
//! tokens 173-176 → 208-229). Decode rows (a few per step, the weights streaming from memory)
//! were slower this way (one row: half the speed on Zen 4, 0.93x on the Xeon).
//!
//! Each lane computes exactly what the 256-bit tile computes for its row (the same integers,
//! then the same float operations in the same order), so the bits are the same. A last group
//! row without a partner goes through the 256-bit tile.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::{prefetch_ahead, prefetch_next, six_bit_scales, Avx2Nibbles};
use super::blocks::QK;
use super::prompt8::{self, Rows8, SPAN_K};
use super::super_blocks::Q4KGroup;

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
            prefetch_next(a);
            prefetch_next(b);
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

/// [`prompt8::tile_k_vnni`] with group rows in pairs; the same bits. With `prefetch`, asks
/// for both groups' weights ahead, as `tile_k_vnni` does.
///
/// # Safety
/// As [`prompt8::tile_k_vnni`], and the CPU must support AVX-512 BW
/// ([`vnni_available`](super::avx2::vnni_available)).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn tile_k<const T: usize>(
    groups: &[Q4KGroup],
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
    prefetch: bool,
) {
    let cols = x.cols;
    let nb = cols / QK;
    let per_row = nb / SPAN_K;
    let group_rows = groups.len() / per_row;
    debug_assert!(x.span == SPAN_K && r0 + T <= x.len());
    debug_assert!(groups.len().is_multiple_of(per_row) && out.len() >= group_rows * T * 8);
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    let block_pairs = x.block_pairs.as_ptr().add(r0 * nb / 2);
    for g in (0..group_rows / 2).map(|p| 2 * p) {
        let (row_a, row_b) = groups[g * per_row..(g + 2) * per_row].split_at(per_row);
        let mut acc = [_mm512_setzero_ps(); T];
        for (i, (a, b)) in row_a.iter().zip(row_b).enumerate() {
            let mut ints = [_mm512_setzero_si512(); T];
            let (scales_a, mins_a) = six_bit_scales(&a.scales);
            let (scales_b, mins_b) = six_bit_scales(&b.scales);
            for sub in 0..SPAN_K {
                if prefetch {
                    prefetch_ahead(a, sub, SPAN_K);
                    prefetch_ahead(b, sub, SPAN_K);
                }
                let blk = i * SPAN_K + sub;
                let sc = _mm512_cvtepu8_epi32(join_bytes(&scales_a[sub], &scales_b[sub]));
                let dots = nibble_dots::<Q4KGroup, T>(a, b, sub, q.add(blk * QK), cols);
                for t in 0..T {
                    ints[t] = _mm512_add_epi32(ints[t], _mm512_mullo_epi32(dots[t], sc));
                }
            }
            let dw = join_halves(&a.d, &b.d);
            for (t, acc) in acc.iter_mut().enumerate() {
                let da = _mm512_set1_ps(*d.add(t * nb + i * SPAN_K));
                let ints = _mm512_cvtepi32_ps(ints[t]);
                *acc = _mm512_fmadd_ps(ints, _mm512_mul_ps(dw, da), *acc);
            }
            // The mins times each block's sum of 8-bit activations, as `tile_k_vnni` does:
            // row j's mins of blocks 2k and 2k + 1 in 16-bit lanes 2j, 2j + 1.
            let mut mins = [_mm512_setzero_si512(); T];
            for k in 0..SPAN_K / 2 {
                let m = _mm512_cvtepu8_epi16(_mm256_set_m128i(
                    _mm_unpacklo_epi8(load8(&mins_b[2 * k]), load8(&mins_b[2 * k + 1])),
                    _mm_unpacklo_epi8(load8(&mins_a[2 * k]), load8(&mins_a[2 * k + 1])),
                ));
                for (t, mins) in mins.iter_mut().enumerate() {
                    let sums = *block_pairs.add(t * nb / 2 + i * SPAN_K / 2 + k);
                    *mins = _mm512_add_epi32(*mins, _mm512_madd_epi16(m, _mm512_set1_epi32(sums)));
                }
            }
            let neg_dmin = join_halves(&a.neg_dmin, &b.neg_dmin);
            for (t, acc) in acc.iter_mut().enumerate() {
                let da = _mm512_set1_ps(*d.add(t * nb + i * SPAN_K));
                let mins = _mm512_cvtepi32_ps(mins[t]);
                *acc = _mm512_fmadd_ps(mins, _mm512_mul_ps(neg_dmin, da), *acc);
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
        prompt8::tile_k_vnni::<T>(&groups[g * per_row..], x, r0, out, prefetch);
    }
}

/// Eight bytes into the low half of a register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load8(bytes: &[u8; 8]) -> __m128i {
    _mm_loadl_epi64(bytes.as_ptr() as *const __m128i)
}

/// `a`'s 8 bytes, then `b`'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn join_bytes(a: &[u8; 8], b: &[u8; 8]) -> __m128i {
    _mm_unpacklo_epi64(load8(a), load8(b))
}

/// `a`'s 8 f16 values as f32 in lanes 0..8, `b`'s in lanes 8..16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f")]
#[inline]
unsafe fn join_halves(a: &[half::f16; 8], b: &[half::f16; 8]) -> __m512 {
    let a = _mm_loadu_si128(a.as_ptr() as *const __m128i);
    let b = _mm_loadu_si128(b.as_ptr() as *const __m128i);
    _mm512_cvtph_ps(_mm256_set_m128i(b, a))
}
