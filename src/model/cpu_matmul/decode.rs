//! Decode rows with AVX2: activations quantized to 16-bit integers per block of 32, weights
//! unpacked to 16-bit integers once per block, and `pmaddwd` for the products.
//!
//! Unpacking a 4-bit block to 16-bit integers takes three instructions where unpacking it to
//! f32 takes about fifteen, and only one FMA per block and row waits on the previous one, so
//! a single row (K=1 decode) runs about 1.5 times as fast as with f32 activations. The 16-bit
//! rounding of the activations (at most 1/65534 of the block's largest value) is 256 times
//! finer than the 8-bit activations of llama.cpp's CPU kernels, whose rounding changed greedy
//! output of the default model in our tests; 16 bits did not.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::{hsum, Avx2Block};
use super::blocks::QK;

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
        };
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        for b in 0..blocks {
            let p = x.as_ptr().add(b * QK);
            let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
            let amax = v
                .iter()
                .map(|&v| _mm256_and_ps(v, abs_mask))
                .reduce(|a, b| _mm256_max_ps(a, b))
                .unwrap_or_else(|| _mm256_setzero_ps());
            let amax = hmax(amax);
            let inv = if amax > 0.0 { Q_MAX / amax } else { 0.0 };
            let inv = _mm256_set1_ps(inv);
            // Round to nearest (the default MXCSR mode); |x · inv| <= 32767.
            let [a, b2, c, d] = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, inv)));
            // packs works within 128-bit lanes: restore the order with one permute each.
            let lo = _mm256_permute4x64_epi64::<0xD8>(_mm256_packs_epi32(a, b2));
            let hi = _mm256_permute4x64_epi64::<0xD8>(_mm256_packs_epi32(c, d));
            let q = rows.q.as_mut_ptr().add(b * QK);
            _mm256_storeu_si256(q as *mut __m256i, lo);
            _mm256_storeu_si256(q.add(16) as *mut __m256i, hi);
            rows.d[b] = amax / Q_MAX;
            rows.sum[b] = hsum(_mm256_add_ps(
                _mm256_add_ps(v[0], v[1]),
                _mm256_add_ps(v[2], v[3]),
            ));
        }
        rows
    }

    pub fn len(&self) -> usize {
        self.q.len() / self.cols
    }
}

/// The largest of the eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// `out[o * T + t]` = row `r0 + t` of `x` · weight row `o` of `w_rows` (each `cols / 32`
/// blocks), for `T` rows.
///
/// Per block and row: two `pmaddwd` and an add give eight 32-bit partial sums, converted to
/// f32 and added with the block's two scales into one of two accumulators (even and odd
/// blocks). The order of operations for one output is the same for every `T`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x` holds rows `r0..r0 + T`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile<B: Avx2Block, const T: usize>(
    w_rows: &[B],
    x: &Rows16,
    r0: usize,
    out: &mut [f32],
) {
    let cols = x.cols;
    let nb = cols / QK;
    debug_assert!(r0 + T <= x.len() && w_rows.len().is_multiple_of(nb));
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    let sum = x.sum.as_ptr().add(r0 * nb);
    for (o, w_row) in w_rows.chunks_exact(nb).enumerate() {
        let mut acc = [[_mm256_setzero_ps(); 2]; T];
        // (no closures here: they would not inherit the target features)
        macro_rules! block {
            ($b:expr, $k:literal) => {{
                let b = $b;
                let wb = w_row.get_unchecked(b);
                let (lo, hi) = wb.ints_avx2();
                let dw = _mm256_set1_ps(wb.scale());
                let dw_hi = _mm256_set1_ps(wb.scale_hi());
                for t in 0..T {
                    let qb = q.add(t * cols + b * QK);
                    let s_lo = _mm256_madd_epi16(lo, _mm256_loadu_si256(qb as *const __m256i));
                    let s_hi =
                        _mm256_madd_epi16(hi, _mm256_loadu_si256(qb.add(16) as *const __m256i));
                    let da = _mm256_set1_ps(*d.add(t * nb + b));
                    if B::SPLIT_SCALE {
                        // Two scales (Q6_K): each half converted and scaled on its own.
                        let a = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(s_lo),
                            _mm256_mul_ps(dw, da),
                            acc[t][$k],
                        );
                        acc[t][$k] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(s_hi), _mm256_mul_ps(dw_hi, da), a);
                    } else {
                        let s = _mm256_add_epi32(s_lo, s_hi);
                        let scale = _mm256_mul_ps(dw, da);
                        acc[t][$k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[t][$k]);
                    }
                }
            }};
        }
        let mut b = 0;
        while b + 2 <= nb {
            block!(b, 0);
            block!(b + 1, 1);
            b += 2;
        }
        if b < nb {
            block!(b, 0);
        }
        // Σ offset · Σx over the blocks, in a loop of its own so that its accumulators do not
        // take registers from the one above (even and odd blocks again).
        let mut offsets = [[0f32; 2]; T];
        if B::HAS_OFFSET {
            // Unrolled by two: indexing by `b & 1` would keep the sums in memory.
            let mut b = 0;
            while b < nb {
                let m0 = w_row.get_unchecked(b).offset();
                let m1 = if b + 1 < nb {
                    w_row.get_unchecked(b + 1).offset()
                } else {
                    0.0
                };
                for (t, off) in offsets.iter_mut().enumerate() {
                    off[0] = m0.mul_add(*sum.add(t * nb + b), off[0]);
                    if b + 1 < nb {
                        off[1] = m1.mul_add(*sum.add(t * nb + b + 1), off[1]);
                    }
                }
                b += 2;
            }
        }
        for t in 0..T {
            let dot = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
            *out.get_unchecked_mut(o * T + t) = dot + (offsets[t][0] + offsets[t][1]);
        }
    }
}
