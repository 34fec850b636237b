//! AVX2/FMA access to weight groups ([`super::groups`]): each 32-byte load of a group gives
//! 16-bit registers of 8 rows × 2 weights with a shift or a mask, for the decode-row kernel
//! ([`super::decode`]) and, widened to f32, for the prompt-row GEMM's panels.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use half::f16;

#[cfg(target_arch = "x86_64")]
use super::groups::{Bytes8, F16Dm, F32Dm, F32Split, Group, Nibbles8, Scales, F16D};

/// Registers per group: weights `2r, 2r + 1` of the 8 rows for `r` in `0..REGS`.
pub const REGS: usize = 16;

/// Weight groups the AVX2 kernels read; their scales load as 8 f32 lanes
/// ([`Avx2Scales`]).
#[cfg(target_arch = "x86_64")]
pub trait Avx2Group: Group<Scales: Avx2Scales> {
    /// Registers per 32-byte load.
    const PER_LOAD: usize;

    /// Bytes `32l..32l + 32` of the group's weights.
    ///
    /// # Safety
    /// The CPU must support AVX2; `l < REGS / PER_LOAD`.
    unsafe fn load(&self, l: usize) -> __m256i;

    /// Register `s` of a load: lane `j` holds weights `2r, 2r + 1` of row `j` as 16-bit
    /// integers, `r = l · PER_LOAD + s`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    unsafe fn extract(v: __m256i, s: usize) -> __m256i;
}

/// AVX2 loads of a group's scales and offsets, as 8 f32 lanes (one per row).
#[cfg(target_arch = "x86_64")]
pub trait Avx2Scales: Scales {
    /// Scales of the 8 rows (weights 0..16, or all 32 unless [`Scales::SPLIT`]).
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    unsafe fn d(&self) -> __m256;
    /// Scales of weights 16..32 (the same as [`Self::d`] unless split).
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    unsafe fn d_hi(&self) -> __m256 {
        self.d()
    }
    /// Offsets (zero without).
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    unsafe fn m(&self) -> __m256 {
        _mm256_setzero_ps()
    }
}

/// 8 f16 as f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16x8(v: &[f16; 8]) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr() as *const __m128i))
}

#[cfg(target_arch = "x86_64")]
impl Avx2Scales for F16Dm {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn d(&self) -> __m256 {
        f16x8(&self.d)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn m(&self) -> __m256 {
        f16x8(&self.m)
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Scales for F16D {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn d(&self) -> __m256 {
        f16x8(&self.d)
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Scales for F32Dm {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn d(&self) -> __m256 {
        _mm256_loadu_ps(self.d.as_ptr())
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn m(&self) -> __m256 {
        _mm256_loadu_ps(self.m.as_ptr())
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Scales for F32Split {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn d(&self) -> __m256 {
        _mm256_loadu_ps(self.d.as_ptr())
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn d_hi(&self) -> __m256 {
        _mm256_loadu_ps(self.d_hi.as_ptr())
    }
}

#[cfg(target_arch = "x86_64")]
impl<S: Avx2Scales> Avx2Group for Nibbles8<S> {
    const PER_LOAD: usize = 4;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(&self, l: usize) -> __m256i {
        _mm256_load_si256(self.qs.as_ptr().add(32 * l) as *const __m256i)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn extract(v: __m256i, s: usize) -> __m256i {
        let mask = _mm256_set1_epi16(0x0F);
        match s {
            0 => _mm256_and_si256(v, mask),
            1 => _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
            2 => _mm256_and_si256(_mm256_srli_epi16::<8>(v), mask),
            _ => _mm256_srli_epi16::<12>(v),
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl<const SIGNED: bool, S: Avx2Scales> Avx2Group for Bytes8<SIGNED, S> {
    const PER_LOAD: usize = 2;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(&self, l: usize) -> __m256i {
        _mm256_load_si256(self.qs.as_ptr().add(32 * l) as *const __m256i)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn extract(v: __m256i, s: usize) -> __m256i {
        match (s, SIGNED) {
            (0, true) => _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v)),
            (0, false) => _mm256_and_si256(v, _mm256_set1_epi16(0xFF)),
            (_, true) => _mm256_srai_epi16::<8>(v),
            (_, false) => _mm256_srli_epi16::<8>(v),
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

/// One block of 32 activations at `p`, for rounding to integers of at most `q_max`: its four
/// loads times `q_max / amax` rounded to nearest (the default MXCSR mode), the block's scale
/// `amax / q_max` (`x ≈ scale · q`) and the exact sum of its values (for the weights'
/// offsets).
///
/// # Safety
/// AVX2 and FMA must be available; `p` points at 32 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn quantize_block(p: *const f32, q_max: f32) -> ([__m256i; 4], f32, f32) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
    let amax = v
        .iter()
        .map(|&v| _mm256_and_ps(v, abs_mask))
        .reduce(|a, b| _mm256_max_ps(a, b))
        .unwrap_or_else(|| _mm256_setzero_ps());
    let amax = hmax(amax);
    let inv = _mm256_set1_ps(if amax > 0.0 { q_max / amax } else { 0.0 });
    let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, inv)));
    let sum = hsum(_mm256_add_ps(
        _mm256_add_ps(v[0], v[1]),
        _mm256_add_ps(v[2], v[3]),
    ));
    (q, amax / q_max, sum)
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
