//! AVX2/FMA access to weight blocks: each type unpacks its integer weights to 16-bit lanes (for
//! the decode-row kernel, [`super::decode`]), and f32 weights for the prompt-row GEMM's panels
//! come from those lanes (Q4_0 and Q4_1 go straight from their nibbles, which is faster).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5, BlockQ6, BlockQ8_0};

/// Weight types the AVX2 kernels read: integer weights, a scale (or two) and an offset.
#[cfg(target_arch = "x86_64")]
pub trait Avx2Block: super::blocks::WeightBlock {
    /// The block's 32 weights as f32: weights 0..8, 8..16, 16..24, 24..32. For the prompt-row
    /// GEMM's panels; the default goes through [`Self::ints_avx2`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dequantize_avx2(&self) -> [__m256; 4] {
        dequantize_ints(self)
    }

    /// The block's 32 integer weights as 16-bit lanes (weights 0..16, 16..32); the weights are
    /// `scale() * int + offset()`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    unsafe fn ints_avx2(&self) -> (__m256i, __m256i);

    /// The scale of weights 0..16, and of all 32 unless [`Self::SPLIT_SCALE`].
    fn scale(&self) -> f32;

    /// Whether weights 16..32 have a scale of their own (Q6_K), [`Self::scale_hi`].
    const SPLIT_SCALE: bool = false;

    fn scale_hi(&self) -> f32 {
        self.scale()
    }

    /// Whether the type has an offset (Q4_1's `m`); when false `offset()` is 0.
    const HAS_OFFSET: bool = false;

    fn offset(&self) -> f32 {
        0.0
    }
}

/// 16 bytes of nibbles as 16-bit lanes: the low nibbles (weights 0..16), then the high ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn nibbles_i16(qs: &[u8; 16]) -> (__m256i, __m256i) {
    let bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(qs.as_ptr() as *const __m128i));
    (
        _mm256_and_si256(bytes, _mm256_set1_epi16(0x0F)),
        _mm256_srli_epi16(bytes, 4),
    )
}

/// 32 signed bytes as 16-bit lanes: bytes 0..16, then 16..32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn signed_bytes_i16(qs: &[i8; 32]) -> (__m256i, __m256i) {
    let p = qs.as_ptr() as *const __m128i;
    (
        _mm256_cvtepi8_epi16(_mm_loadu_si128(p)),
        _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(1))),
    )
}

/// The block's 32 weights as f32 from its 16-bit integers (`scale · int + offset`, one FMA
/// each): weights 0..8, 8..16, 16..24, 24..32.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dequantize_ints<B: Avx2Block>(block: &B) -> [__m256; 4] {
    let (lo, hi) = block.ints_avx2();
    let (d_lo, d_hi) = (
        _mm256_set1_ps(block.scale()),
        _mm256_set1_ps(block.scale_hi()),
    );
    let m = _mm256_set1_ps(block.offset());
    // (no closures here: they would not inherit the target features)
    macro_rules! f32x8 {
        ($ints:expr, $d:expr) => {
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32($ints)), $d, m)
        };
    }
    [
        f32x8!(_mm256_castsi256_si128(lo), d_lo),
        f32x8!(_mm256_extracti128_si256::<1>(lo), d_lo),
        f32x8!(_mm256_castsi256_si128(hi), d_hi),
        f32x8!(_mm256_extracti128_si256::<1>(hi), d_hi),
    ]
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
    /// (straight from the nibbles: measured ~10% faster panels than through 16-bit lanes)
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dequantize_avx2(&self) -> [__m256; 4] {
        let d = _mm256_set1_ps(self.d);
        nibbles_f32(&self.qs, d, _mm256_set1_ps(-8.0 * self.d))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn ints_avx2(&self) -> (__m256i, __m256i) {
        let (lo, hi) = nibbles_i16(&self.qs);
        let eight = _mm256_set1_epi16(8);
        (_mm256_sub_epi16(lo, eight), _mm256_sub_epi16(hi, eight))
    }

    fn scale(&self) -> f32 {
        self.d
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ4_1 {
    /// (straight from the nibbles, as Q4_0)
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dequantize_avx2(&self) -> [__m256; 4] {
        nibbles_f32(&self.qs, _mm256_set1_ps(self.d), _mm256_set1_ps(self.m))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn ints_avx2(&self) -> (__m256i, __m256i) {
        nibbles_i16(&self.qs)
    }

    fn scale(&self) -> f32 {
        self.d
    }

    const HAS_OFFSET: bool = true;

    fn offset(&self) -> f32 {
        self.m
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ8_0 {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn ints_avx2(&self) -> (__m256i, __m256i) {
        signed_bytes_i16(&self.qs)
    }

    fn scale(&self) -> f32 {
        self.d
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ5 {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn ints_avx2(&self) -> (__m256i, __m256i) {
        let p = self.qs.as_ptr() as *const __m128i;
        (
            _mm256_cvtepu8_epi16(_mm_loadu_si128(p)),
            _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(1))),
        )
    }

    fn scale(&self) -> f32 {
        self.d
    }

    const HAS_OFFSET: bool = true;

    fn offset(&self) -> f32 {
        self.m
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Block for BlockQ6 {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn ints_avx2(&self) -> (__m256i, __m256i) {
        signed_bytes_i16(&self.qs)
    }

    fn scale(&self) -> f32 {
        self.d[0]
    }

    const SPLIT_SCALE: bool = true;

    fn scale_hi(&self) -> f32 {
        self.d[1]
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
