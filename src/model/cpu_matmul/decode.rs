//! Decode rows with AVX2: activations quantized to 16-bit integers per block of 32, weights
//! read eight rows at a time from their groups ([`super::groups`]), and `pmaddwd` for the
//! products.
//!
//! For each block, one register per pair of weights holds those weights of 8 rows, and each
//! activation row broadcasts its matching pair of activations: one `pmaddwd` and one add give
//! two products for each of the 8 rows, whose sums stay exact 32-bit integers for the whole
//! block. Only then is the block converted and scaled, once for the 8 rows, so a row costs
//! three instructions (broadcast, `pmaddwd`, add) per 16 multiply-adds and the weights'
//! unpacking (a shift and a mask per register) is shared by the tile's rows. The 16-bit
//! rounding of the activations (at most 1/65534 of the block's largest value) is 256 times
//! finer than the 8-bit activations of llama.cpp's CPU kernels, whose rounding changed greedy
//! output of the default model in our tests; 16 bits did not. The weights a tile reads next
//! are prefetched ([`prefetch_next`](super::avx2::prefetch_next)).
//!
//! With AVX-512 VNNI ([`tile_vnni`]), `vpdpwssd` does the `pmaddwd` and the add in one
//! instruction (the same bits) and tiles hold up to 8 rows.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::{half_sums, quantize_block, Avx2Group, REGS};
use super::blocks::QK;
use super::groups::Scales;

/// Largest 16-bit activation: `x ≈ d · q` with `|q| <= Q_MAX`.
const Q_MAX: f32 = 32767.0;

/// Rows of activations quantized per block of 32: `x[i] ≈ d[block] · q[i]`.
pub struct Rows16 {
    cols: usize,
    q: Vec<i16>,
    /// One scale per block, `rows × cols / 32`.
    d: Vec<f32>,
    /// The exact f32 sum of each block's activations, for the weights' offsets (Q4_1).
    sum: Vec<f32>,
    /// The f32 sums of each block's activations 0..16 and 16..32, for split offsets (Q2_K).
    half_sums: Vec<[f32; 2]>,
}

impl Rows16 {
    /// Quantizes `x`, rows of `cols` activations (`cols` a multiple of 32).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize(x: &[f32], cols: usize) -> Self {
        debug_assert!(cols.is_multiple_of(QK) && x.len().is_multiple_of(cols));
        let blocks = x.len() / QK;
        let mut rows = Self {
            cols,
            q: vec![0; x.len()],
            d: vec![0.0; blocks],
            sum: vec![0.0; blocks],
            half_sums: vec![[0.0; 2]; blocks],
        };
        for b in 0..blocks {
            let ([a, b2, c, d], scale, sum) = quantize_block(x.as_ptr().add(b * QK), Q_MAX);
            // packs works within 128-bit lanes: restore the order with one permute each.
            let lo = _mm256_permute4x64_epi64::<0xD8>(_mm256_packs_epi32(a, b2));
            let hi = _mm256_permute4x64_epi64::<0xD8>(_mm256_packs_epi32(c, d));
            let q = rows.q.as_mut_ptr().add(b * QK);
            _mm256_storeu_si256(q as *mut __m256i, lo);
            _mm256_storeu_si256(q.add(16) as *mut __m256i, hi);
            (rows.d[b], rows.sum[b]) = (scale, sum);
            rows.half_sums[b] = half_sums(x.as_ptr().add(b * QK));
        }
        rows
    }

    pub fn len(&self) -> usize {
        self.q.len() / self.cols
    }
}

/// `out[(g * T + t) * 8 + j]` = row `r0 + t` of `x` · row `j` of weight group row `g` of
/// `groups` (each `cols / 32 / G::SUBS` groups), for `T` rows.
///
/// Per block and row: one broadcast, `pmaddwd` and add per register of weights into exact
/// 32-bit sums, then one conversion and FMA with the 8 rows' scales (two for split scales)
/// and one FMA for their offsets times the block's exact activation sum. The order of
/// operations for one output is the same for every `T`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` holds rows `r0..r0 + T`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile<G: Avx2Group, const T: usize>(
    groups: &[G],
    x: &Rows16,
    r0: usize,
    out: &mut [f32],
) {
    tile_with::<G, T, false>(groups, x, r0, out)
}

/// [`tile`] with AVX-512 VNNI: `vpdpwssd` adds the two products of a pair into the 32-bit sum
/// in one instruction instead of `pmaddwd` and an add; the same integers (the activations
/// never reach -32768), so the same bits.
///
/// # Safety
/// As [`tile`], and the CPU must support AVX-512 VL and VNNI
/// ([`super::avx2::vnni_available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub unsafe fn tile_vnni<G: Avx2Group, const T: usize>(
    groups: &[G],
    x: &Rows16,
    r0: usize,
    out: &mut [f32],
) {
    tile_with::<G, T, true>(groups, x, r0, out)
}

/// The body of [`tile`] (`VNNI` false) and [`tile_vnni`], inlined into each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_with<G: Avx2Group, const T: usize, const VNNI: bool>(
    groups: &[G],
    x: &Rows16,
    r0: usize,
    out: &mut [f32],
) {
    let cols = x.cols;
    let nb = cols / QK;
    let per_row = nb / G::SUBS;
    debug_assert!(r0 + T <= x.len() && groups.len().is_multiple_of(per_row));
    debug_assert!(out.len() >= groups.len() / per_row * T * 8);
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    let sum = x.sum.as_ptr().add(r0 * nb);
    let half_sums = x.half_sums.as_ptr().add(r0 * nb);
    for (g, row) in groups.chunks_exact(per_row).enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        for (i, group) in row.iter().enumerate() {
            super::avx2::prefetch_next(group);
            // A super-block's scale vectors, ahead of its blocks
            // ([`Avx2Group::all_scale_vectors`]).
            let ahead = G::SUBS > 1;
            let mut scales = [[_mm256_setzero_ps(); 4]; 8];
            if ahead {
                group.all_scale_vectors(&mut scales);
            }
            // (`sub` also picks the block's weights and activations.)
            #[allow(clippy::needless_range_loop)]
            for sub in 0..G::SUBS {
                let b = i * G::SUBS + sub;
                // Sums of weights 0..16 and 16..32 (apart only for split scales).
                let mut isum = [[_mm256_setzero_si256(); 2]; T];
                for l in 0..REGS / G::PER_LOAD {
                    let regs = group.registers(sub, l);
                    for (s, &w) in regs.iter().enumerate().take(G::PER_LOAD) {
                        let r = l * G::PER_LOAD + s;
                        let half = usize::from(G::Scales::SPLIT && r >= REGS / 2);
                        for (t, isum) in isum.iter_mut().enumerate() {
                            let pair = q.add(t * cols + b * QK + 2 * r) as *const i32;
                            let a = _mm256_set1_epi32(pair.read_unaligned());
                            isum[half] = if VNNI {
                                _mm256_dpwssd_epi32(isum[half], w, a)
                            } else {
                                _mm256_add_epi32(isum[half], _mm256_madd_epi16(w, a))
                            };
                        }
                    }
                }
                let [dw, dw_hi, m, m_hi] = if ahead {
                    scales[sub]
                } else {
                    group.scale_vectors(sub)
                };
                for (t, acc) in acc.iter_mut().enumerate() {
                    let da = _mm256_set1_ps(*d.add(t * nb + b));
                    let ints = _mm256_cvtepi32_ps(isum[t][0]);
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(dw, da), *acc);
                    if G::Scales::SPLIT {
                        let ints = _mm256_cvtepi32_ps(isum[t][1]);
                        *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(dw_hi, da), *acc);
                    }
                    if G::Scales::OFFSET && G::Scales::SPLIT {
                        let [lo, hi] = *half_sums.add(t * nb + b);
                        *acc = _mm256_fmadd_ps(m, _mm256_set1_ps(lo), *acc);
                        *acc = _mm256_fmadd_ps(m_hi, _mm256_set1_ps(hi), *acc);
                    } else if G::Scales::OFFSET {
                        let xs = _mm256_set1_ps(*sum.add(t * nb + b));
                        *acc = _mm256_fmadd_ps(m, xs, *acc);
                    }
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((g * T + t) * 8), *acc);
        }
    }
}
