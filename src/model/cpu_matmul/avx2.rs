//! AVX2/FMA dot products: each weight block is unpacked once into a register and multiplied
//! with the matching block of every activation row of the tile.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8, BlockQ8_0, QK};

/// A weight block in register form: 32 int8/uint8 values and the scalars of the block.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Unpacked {
    /// Unsigned operand of `maddubs` (Q4_1 nibbles, or |w| for signed types).
    v: __m256i,
    /// Signed weights (Q8_0, Q4_0 as q−8), whose signs move onto the activations.
    signs: __m256i,
    d: f32,
    /// Coefficient of the activation block's sum `s` (Q4_1: m; 0 otherwise).
    m: f32,
}

/// Weight types with an AVX2 form.
#[cfg(target_arch = "x86_64")]
pub trait Avx2Block: super::blocks::WeightBlock {
    const SIGNED: bool;
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    unsafe fn unpack(&self) -> Unpacked;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    let bytes = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let lo = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
    _mm256_set_m128i(hi, lo)
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ4_0 {
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn unpack(&self) -> Unpacked {
        let w = _mm256_sub_epi8(nibbles(&self.qs), _mm256_set1_epi8(8));
        Unpacked {
            v: _mm256_sign_epi8(w, w),
            signs: w,
            d: self.d,
            m: 0.0,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ4_1 {
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn unpack(&self) -> Unpacked {
        Unpacked {
            v: nibbles(&self.qs),
            signs: _mm256_setzero_si256(),
            d: self.d,
            m: self.m,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ8_0 {
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn unpack(&self) -> Unpacked {
        let w = _mm256_loadu_si256(self.qs.as_ptr() as *const __m256i);
        Unpacked {
            v: _mm256_sign_epi8(w, w),
            signs: w,
            d: self.d,
            m: 0.0,
        }
    }
}

/// `out[o * T + t] = Σ_b dot(w[o][b], a[t][b])` for `T` activation rows (`acts`, `T × nb`
/// blocks) and the weight rows of `w_rows` (each `nb` blocks).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile<B: Avx2Block, const T: usize>(
    w_rows: &[B],
    nb: usize,
    acts: &[BlockQ8],
    out: &mut [f32],
) {
    let ones = _mm256_set1_epi16(1);
    for (o, w_row) in w_rows.chunks_exact(nb).enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        let mut msum = [0f32; T];
        for (b, wb) in w_row.iter().enumerate() {
            let u = wb.unpack();
            for t in 0..T {
                let a = acts.get_unchecked(t * nb + b);
                let av = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
                let av = if B::SIGNED {
                    _mm256_sign_epi8(av, u.signs)
                } else {
                    av
                };
                let p16 = _mm256_maddubs_epi16(u.v, av);
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[t] = _mm256_fmadd_ps(p, _mm256_set1_ps(u.d * a.d), acc[t]);
                if !B::SIGNED {
                    msum[t] += u.m * a.s;
                }
            }
        }
        for t in 0..T {
            *out.get_unchecked_mut(o * T + t) = hsum(acc[t]) + msum[t];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Whether this CPU can run the kernels of this file (checked once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE
            .get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[allow(dead_code)]
const _: () = assert!(QK == 32);
