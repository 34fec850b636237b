//! AVX2/FMA kernels: each weight block is dequantized once into four registers of eight f32
//! and multiplied into every activation row of the tile.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};

/// Weight types with an AVX2 dequantization.
#[cfg(target_arch = "x86_64")]
pub trait Avx2Block: super::blocks::WeightBlock {
    /// The block's 32 weights as f32: weights 0..8, 8..16, 16..24, 24..32.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    unsafe fn dequantize_avx2(&self) -> [__m256; 4];
}

/// 16 bytes of nibbles as four vectors of eight f32 `q * d + m` (low nibbles first).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn nibbles_f32(qs: &[u8; 16], d: __m256, m: __m256) -> [__m256; 4] {
    let bytes = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let lo = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
    // (no closures here: they would not inherit the target features)
    macro_rules! f32x8 {
        ($v:expr) => {
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32($v)), d, m)
        };
    }
    [
        f32x8!(lo),
        f32x8!(_mm_unpackhi_epi64(lo, lo)),
        f32x8!(hi),
        f32x8!(_mm_unpackhi_epi64(hi, hi)),
    ]
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ4_0 {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dequantize_avx2(&self) -> [__m256; 4] {
        let d = _mm256_set1_ps(self.d);
        nibbles_f32(&self.qs, d, _mm256_set1_ps(-8.0 * self.d))
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ4_1 {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dequantize_avx2(&self) -> [__m256; 4] {
        nibbles_f32(&self.qs, _mm256_set1_ps(self.d), _mm256_set1_ps(self.m))
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ8_0 {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dequantize_avx2(&self) -> [__m256; 4] {
        let d = _mm256_set1_ps(self.d);
        let p = self.qs.as_ptr();
        macro_rules! f32x8 {
            ($i:expr) => {
                _mm256_mul_ps(
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        p.add($i) as *const __m128i
                    ))),
                    d,
                )
            };
        }
        [f32x8!(0), f32x8!(8), f32x8!(16), f32x8!(24)]
    }
}

/// `out[o * T + t] = x[t] · w[o]` for `T` activation rows (`x`, row stride `cols`) and the
/// weight rows of `w_rows` (each `cols / 32` blocks).
///
/// Each row keeps two accumulators (weights 0..8 and 16..24 of every block in one, 8..16 and
/// 24..32 in the other) so the FMAs of a block do not wait on each other; the order of
/// operations for one output is the same for every `T`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x` holds `T` rows of `cols` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile<B: Avx2Block, const T: usize>(
    w_rows: &[B],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let nb = cols / QK;
    let xp = x.as_ptr();
    for (o, w_row) in w_rows.chunks_exact(nb).enumerate() {
        let mut acc0 = [_mm256_setzero_ps(); T];
        let mut acc1 = [_mm256_setzero_ps(); T];
        for (b, wb) in w_row.iter().enumerate() {
            let w = wb.dequantize_avx2();
            for t in 0..T {
                let xb = xp.add(t * cols + b * QK);
                acc0[t] = _mm256_fmadd_ps(_mm256_loadu_ps(xb), w[0], acc0[t]);
                acc1[t] = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(8)), w[1], acc1[t]);
                acc0[t] = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(16)), w[2], acc0[t]);
                acc1[t] = _mm256_fmadd_ps(_mm256_loadu_ps(xb.add(24)), w[3], acc1[t]);
            }
        }
        for t in 0..T {
            *out.get_unchecked_mut(o * T + t) = hsum(_mm256_add_ps(acc0[t], acc1[t]));
        }
    }
}

/// The sum of the eight lanes, in a fixed order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Whether this CPU has AVX2, FMA and F16C (every AVX2 CPU so far): the kernels of this file,
/// and the f16 K/V loads of decode attention (checked once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
