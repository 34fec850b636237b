//! AVX2/FMA access to weight groups ([`super::groups`]): each 32-byte load of a group gives
//! 16-bit registers of 8 rows × 2 weights with a shift or a mask, for the decode-row kernel
//! ([`super::decode`]) and, widened to f32, for the prompt-row GEMM's panels.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use half::f16;

#[cfg(target_arch = "x86_64")]
use super::groups::{
    BlockBits, Bytes8, F16Dm, F32Dm, F32Split, Fives8, Group, Nibbles8, Q5Bits, Scales, F16D,
};
#[cfg(target_arch = "x86_64")]
use super::super_blocks::{
    MinGroup, Q2KGroup, Q3Bits, Q4Bits, Q4KGroup, Q6Bits, SixBitScales, SplitGroup,
};

/// Registers per group: weights `2r, 2r + 1` of the 8 rows for `r` in `0..REGS`.
pub const REGS: usize = 16;

/// Weight groups the AVX2 kernels read; their scales load as 8 f32 lanes.
#[cfg(target_arch = "x86_64")]
pub trait Avx2Group: Group {
    /// Registers per 32-byte load of weights.
    const PER_LOAD: usize;

    /// What makes every weight an unsigned byte for `unpacked8` (at most 31, or 63 with
    /// [`Self::UNPACK_WIDE`]); `None` for the groups that do not go there (4-bit ones have
    /// `prompt8`; Q8_0's bytes do not fit).
    const UNPACK_BIAS: Option<i16> = None;
    /// Whether the unpacked bytes reach 63 (Q6_K).
    const UNPACK_WIDE: bool = false;

    /// Registers `l · PER_LOAD..(l + 1) · PER_LOAD` of block `sub` (the first `PER_LOAD`
    /// entries): lane `j` of register `r` holds weights `2r, 2r + 1` of row `j` as 16-bit
    /// integers.
    ///
    /// # Safety
    /// The CPU must support AVX2; `l < REGS / PER_LOAD`, `sub < SUBS`.
    unsafe fn registers(&self, sub: usize, l: usize) -> [__m256i; 4];

    /// Block `sub`'s scales of the 8 rows for weights 0..16 and 16..32, and their offsets for
    /// weights 0..16 and 16..32 (zero without; the same twice unless [`Scales::SPLIT`]).
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C; `sub < SUBS`.
    unsafe fn scale_vectors(&self, sub: usize) -> [__m256; 4];

    /// [`Self::scale_vectors`] of every block, into the first `SUBS` of `scales` (one call
    /// where the scales of all blocks unpack together). The decode tiles take them before a
    /// super-block's blocks are read: they wait in L1 instead of taking registers through the
    /// products (measured faster for tiles of 1 and of 4 rows).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn all_scale_vectors(&self, scales: &mut [[__m256; 4]; 8]) {
        for (sub, s) in scales.iter_mut().enumerate().take(Self::SUBS) {
            *s = self.scale_vectors(sub);
        }
    }

    /// Block `sub`'s scales as small integers times one factor per row, where the group has
    /// them (the K-quants with a scale per 16 weights): the scale of weights 0..16 of row `j`
    /// is `d[j] · lo[j]`, of weights 16..32 `d[j] · hi[j]`.
    fn int_scales(&self, _sub: usize) -> Option<IntScales<'_>> {
        None
    }
}

/// [`Avx2Group::int_scales`].
#[cfg(target_arch = "x86_64")]
pub struct IntScales<'a> {
    pub lo: [i8; 8],
    pub hi: [i8; 8],
    pub d: &'a [f32; 8],
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

/// The scale vectors of a one-block group's scales.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn vectors<S: Avx2Scales>(s: &S) -> [__m256; 4] {
    let m = s.m();
    [s.d(), s.d_hi(), m, m]
}

/// The four registers of a load of 4-bit weights in the [`Nibbles8`] layout: 16-bit lane
/// bits `4s..4s + 4` are register `s`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn nibble_registers(v: __m256i) -> [__m256i; 4] {
    let mask = _mm256_set1_epi16(0x0F);
    [
        _mm256_and_si256(v, mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
        _mm256_and_si256(_mm256_srli_epi16::<8>(v), mask),
        _mm256_srli_epi16::<12>(v),
    ]
}

// (Intrinsics are kept out of closures in the target-feature functions here: closures only
// inherit the features since Rust 1.86, and an intrinsic without them is a call.)

/// 8 unsigned bytes as f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn u8x8(b: &[u8; 8]) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
        b.as_ptr() as *const __m128i
    )))
}

/// 8 signed bytes as f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn i8x8(b: &[i8; 8]) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
        b.as_ptr() as *const __m128i
    )))
}

/// A 6-bit weight minus 32 from its low nibble and its high bits at bits 4..6 of `high`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn six_bits(low: __m256i, high: __m256i) -> __m256i {
    let q = _mm256_or_si256(low, _mm256_and_si256(high, _mm256_set1_epi16(0x30)));
    _mm256_sub_epi16(q, _mm256_set1_epi16(32))
}

/// Groups of 4-bit weights in the [`Nibbles8`] layout (the 8-bit activation kernel's).
#[cfg(target_arch = "x86_64")]
pub trait Avx2Nibbles: Avx2Group {
    /// Bytes `32l..32l + 32` of block `sub`'s nibbles.
    ///
    /// # Safety
    /// The CPU must support AVX2; `l < 4`, `sub < SUBS`.
    unsafe fn load(&self, sub: usize, l: usize) -> __m256i;
}

#[cfg(target_arch = "x86_64")]
impl<S: Avx2Scales> Avx2Nibbles for Nibbles8<S> {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(&self, _sub: usize, l: usize) -> __m256i {
        _mm256_load_si256(self.qs.as_ptr().add(32 * l) as *const __m256i)
    }
}

#[cfg(target_arch = "x86_64")]
impl<S: Avx2Scales> Avx2Group for Nibbles8<S> {
    const PER_LOAD: usize = 4;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, sub: usize, l: usize) -> [__m256i; 4] {
        nibble_registers(self.load(sub, l))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_vectors(&self, _sub: usize) -> [__m256; 4] {
        vectors(&self.scales)
    }
}

/// A block's bits ([`BlockBits`]) as 16-bit registers: lane `j` of register `r` holds weights
/// `2r, 2r + 1` of row `j`, less the bias.
#[cfg(target_arch = "x86_64")]
pub trait Avx2Bits: BlockBits {
    /// [`Avx2Group::UNPACK_BIAS`] of the groups of these blocks: their bias, but for 4-bit
    /// blocks, which have `prompt8`.
    const UNPACK_BIAS: Option<i16> = Some(Self::BIAS as i16);

    /// Registers `4l..4l + 4`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `l < 4`.
    unsafe fn registers(&self, l: usize) -> [__m256i; 4];
}

#[cfg(target_arch = "x86_64")]
impl Avx2Bits for Q4Bits {
    const UNPACK_BIAS: Option<i16> = None;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, l: usize) -> [__m256i; 4] {
        nibble_registers(_mm256_load_si256(
            self.0.as_ptr().add(32 * l) as *const __m256i
        ))
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Bits for Q5Bits {
    /// `low | high << 4`: the nibbles as [`Nibbles8`] lays them out, the fifth bit of
    /// register `r` at bit `r` of each lane of `qh`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, l: usize) -> [__m256i; 4] {
        let low = nibble_registers(_mm256_load_si256(
            self.ql.as_ptr().add(32 * l) as *const __m256i
        ));
        let high = bits_of_load(&self.qh, l);
        let fifth = _mm256_set1_epi16(0x10);
        let at_4 = [
            _mm256_slli_epi16::<4>(high),
            _mm256_slli_epi16::<3>(high),
            _mm256_slli_epi16::<2>(high),
            _mm256_slli_epi16::<1>(high),
        ];
        let mut q = low;
        for (q, at_4) in q.iter_mut().zip(at_4) {
            *q = _mm256_or_si256(*q, _mm256_and_si256(at_4, fifth));
        }
        q
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Bits for Q6Bits {
    /// `(low | high << 4) − 32`: the low nibbles as [`Nibbles8`] lays them out, the high two
    /// bits of registers `8h..8h + 8` at bits `2s..2s + 2` of load `h` of the high bits.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, l: usize) -> [__m256i; 4] {
        let low = nibble_registers(_mm256_load_si256(
            self.ql.as_ptr().add(32 * l) as *const __m256i
        ));
        let high = _mm256_load_si256(self.qh.as_ptr().add(32 * (l / 2)) as *const __m256i);
        // Registers 4l..4l + 4 are fields 4(l % 2)..4(l % 2) + 4 of their load.
        let high = if l.is_multiple_of(2) {
            high
        } else {
            _mm256_srli_epi16::<8>(high)
        };
        let fields = [
            _mm256_slli_epi16::<4>(high),
            _mm256_slli_epi16::<2>(high),
            high,
            _mm256_srli_epi16::<2>(high),
        ];
        [
            six_bits(low[0], fields[0]),
            six_bits(low[1], fields[1]),
            six_bits(low[2], fields[2]),
            six_bits(low[3], fields[3]),
        ]
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Bits for Q3Bits {
    /// `(low | high << 2) − 4` from the block's 2-bit fields and third bits.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, l: usize) -> [__m256i; 4] {
        let low = two_bits(&self.ql, l);
        let high = bits_of_load(&self.qh, l);
        let third = _mm256_set1_epi16(4);
        let at_2 = [
            _mm256_slli_epi16::<2>(high),
            _mm256_slli_epi16::<1>(high),
            high,
            _mm256_srli_epi16::<1>(high),
        ];
        let mut q = low;
        for (q, at_2) in q.iter_mut().zip(at_2) {
            *q = _mm256_sub_epi16(_mm256_or_si256(*q, _mm256_and_si256(at_2, third)), third);
        }
        q
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx2Nibbles for Q4KGroup {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(&self, sub: usize, l: usize) -> __m256i {
        _mm256_load_si256(self.blocks[sub].0.as_ptr().add(32 * l) as *const __m256i)
    }
}

#[cfg(target_arch = "x86_64")]
impl<B: Avx2Bits> Avx2Group for MinGroup<B> {
    const PER_LOAD: usize = 4;
    const UNPACK_BIAS: Option<i16> = B::UNPACK_BIAS;
    const UNPACK_WIDE: bool = B::MAX > 31;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, sub: usize, l: usize) -> [__m256i; 4] {
        self.blocks[sub].registers(l)
    }

    /// `d·sc` and `(−dmin)·m` of the 8 rows, exact products as the file's dequantization has.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_vectors(&self, sub: usize) -> [__m256; 4] {
        let (sc, m) = self.scales.block(sub);
        let d = _mm256_mul_ps(f16x8(&self.d), u8x8(&sc));
        let m = _mm256_mul_ps(f16x8(&self.neg_dmin), u8x8(&m));
        [d, d, m, m]
    }

    /// Every block's, the 6-bit scales and mins unpacked together ([`six_bit_scales`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn all_scale_vectors(&self, scales: &mut [[__m256; 4]; 8]) {
        let (sc, m) = six_bit_scales(&self.scales);
        let (d, neg_dmin) = (f16x8(&self.d), f16x8(&self.neg_dmin));
        for ((s, sc), m) in scales.iter_mut().zip(&sc).zip(&m) {
            let d = _mm256_mul_ps(d, u8x8(sc));
            let m = _mm256_mul_ps(neg_dmin, u8x8(m));
            *s = [d, d, m, m];
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl<B: Avx2Bits> Avx2Group for SplitGroup<B> {
    const PER_LOAD: usize = 4;
    const UNPACK_BIAS: Option<i16> = B::UNPACK_BIAS;
    const UNPACK_WIDE: bool = B::MAX > 31;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, sub: usize, l: usize) -> [__m256i; 4] {
        self.blocks[sub].registers(l)
    }

    /// `d·sc` of the 8 rows for each half of block `sub`, exact products.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_vectors(&self, sub: usize) -> [__m256; 4] {
        split_scales(&self.d, &self.sc[2 * sub], &self.sc[2 * sub + 1])
    }

    fn int_scales(&self, sub: usize) -> Option<IntScales<'_>> {
        Some(IntScales {
            lo: self.sc[2 * sub],
            hi: self.sc[2 * sub + 1],
            d: &self.d,
        })
    }
}

/// `d·sc` of the 8 rows for each half of a block, exact products; no offsets.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn split_scales(d: &[f32; 8], lo: &[i8; 8], hi: &[i8; 8]) -> [__m256; 4] {
    let d = _mm256_loadu_ps(d.as_ptr());
    let zero = _mm256_setzero_ps();
    [
        _mm256_mul_ps(d, i8x8(lo)),
        _mm256_mul_ps(d, i8x8(hi)),
        zero,
        zero,
    ]
}

/// The four 2-bit fields of a 16-bit lane's bits `0..8` (registers `s = 0..4` at bits
/// `2s..2s + 2`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn two_bit_registers(v: __m256i) -> [__m256i; 4] {
    let mask = _mm256_set1_epi16(3);
    [
        _mm256_and_si256(v, mask),
        _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
        _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask),
    ]
}

/// Registers `4l..4l + 4` of 2-bit weights laid out as `two_bits_at` in `super_blocks.rs` lays
/// them out (64 bytes: load `l / 2`, fields `4(l % 2)..4(l % 2) + 4` of each lane).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn two_bits(bytes: &[u8; 64], l: usize) -> [__m256i; 4] {
    let v = _mm256_load_si256(bytes.as_ptr().add(32 * (l / 2)) as *const __m256i);
    two_bit_registers(if l.is_multiple_of(2) {
        v
    } else {
        _mm256_srli_epi16::<8>(v)
    })
}

/// Bits `4l..4l + 4` of each 16-bit lane of `qh` (one bit per register, [`super::groups`]'
/// `bit_at`) moved to bits `0..4`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn bits_of_load(qh: &[u8; 32], l: usize) -> __m256i {
    let v = _mm256_load_si256(qh.as_ptr() as *const __m256i);
    match l {
        0 => v,
        1 => _mm256_srli_epi16::<4>(v),
        2 => _mm256_srli_epi16::<8>(v),
        _ => _mm256_srli_epi16::<12>(v),
    }
}

#[cfg(target_arch = "x86_64")]
impl<const SIGNED: bool, S: Avx2Scales> Avx2Group for Fives8<SIGNED, S> {
    const PER_LOAD: usize = 4;
    const UNPACK_BIAS: Option<i16> = Some(Self::BIAS as i16);

    /// The stored weights less the bias (16 for Q5_0's signed ones).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, _sub: usize, l: usize) -> [__m256i; 4] {
        let mut q = self.bits.registers(l);
        if SIGNED {
            let bias = _mm256_set1_epi16(Self::BIAS as i16);
            for q in q.iter_mut() {
                *q = _mm256_sub_epi16(*q, bias);
            }
        }
        q
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_vectors(&self, _sub: usize) -> [__m256; 4] {
        vectors(&self.scales)
    }
}

/// `d·(sc & 15)` and `neg_dmin·(sc >> 4)` of 8 rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn scale_and_min(d: &[f32; 8], neg_dmin: &[f32; 8], sc: &[u8; 8]) -> (__m256, __m256) {
    let sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sc.as_ptr() as *const __m128i));
    let scale = _mm256_and_si256(sc, _mm256_set1_epi32(0x0F));
    let min = _mm256_srli_epi32::<4>(sc);
    (
        _mm256_mul_ps(_mm256_loadu_ps(d.as_ptr()), _mm256_cvtepi32_ps(scale)),
        _mm256_mul_ps(_mm256_loadu_ps(neg_dmin.as_ptr()), _mm256_cvtepi32_ps(min)),
    )
}

#[cfg(target_arch = "x86_64")]
impl Avx2Group for Q2KGroup {
    const PER_LOAD: usize = 4;
    const UNPACK_BIAS: Option<i16> = Some(0);

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, sub: usize, l: usize) -> [__m256i; 4] {
        two_bits(&self.qs[sub], l)
    }

    /// `d·(sc & 15)` and `(−dmin)·(sc >> 4)` of the 8 rows for each half of block `sub`,
    /// exact products.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_vectors(&self, sub: usize) -> [__m256; 4] {
        let (d_lo, m_lo) = scale_and_min(&self.d, &self.neg_dmin, &self.sc[2 * sub]);
        let (d_hi, m_hi) = scale_and_min(&self.d, &self.neg_dmin, &self.sc[2 * sub + 1]);
        [d_lo, d_hi, m_lo, m_hi]
    }

    /// The 4-bit scales (the mins stay in the offsets).
    fn int_scales(&self, sub: usize) -> Option<IntScales<'_>> {
        let scale = |half: usize| self.sc[2 * sub + half].map(|b| (b & 0x0F) as i8);
        Some(IntScales {
            lo: scale(0),
            hi: scale(1),
            d: &self.d,
        })
    }
}

#[cfg(target_arch = "x86_64")]
impl<const SIGNED: bool, S: Avx2Scales> Avx2Group for Bytes8<SIGNED, S> {
    const PER_LOAD: usize = 2;

    /// The low and high bytes of each 16-bit lane, sign- or zero-extended.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn registers(&self, _sub: usize, l: usize) -> [__m256i; 4] {
        let v = _mm256_load_si256(self.qs.as_ptr().add(32 * l) as *const __m256i);
        let (low, high) = if SIGNED {
            (
                _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v)),
                _mm256_srai_epi16::<8>(v),
            )
        } else {
            (
                _mm256_and_si256(v, _mm256_set1_epi16(0xFF)),
                _mm256_srli_epi16::<8>(v),
            )
        };
        [low, high, low, high]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_vectors(&self, _sub: usize) -> [__m256; 4] {
        vectors(&self.scales)
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
    quantize_block_at(p, q_max, block_amax(p))
}

/// The largest magnitude of the 32 values at `p`.
///
/// # Safety
/// AVX2 and FMA must be available; `p` points at 32 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn block_amax(p: *const f32) -> f32 {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let mut amax = _mm256_setzero_ps();
    for i in [0, 8, 16, 24] {
        amax = _mm256_max_ps(amax, _mm256_and_ps(_mm256_loadu_ps(p.add(i)), abs_mask));
    }
    hmax(amax)
}

/// [`quantize_block`] with the scale `amax / q_max` (`amax` at least the block's largest
/// magnitude: one scale for several blocks).
///
/// # Safety
/// AVX2 and FMA must be available; `p` points at 32 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn quantize_block_at(p: *const f32, q_max: f32, amax: f32) -> ([__m256i; 4], f32, f32) {
    let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
    let inv = _mm256_set1_ps(if amax > 0.0 { q_max / amax } else { 0.0 });
    let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, inv)));
    let sum = hsum(_mm256_add_ps(
        _mm256_add_ps(v[0], v[1]),
        _mm256_add_ps(v[2], v[3]),
    ));
    (q, amax / q_max, sum)
}

/// The f32 sums of activations 0..16 and 16..32 of the block at `p`, for offsets of each half.
///
/// # Safety
/// AVX2 and FMA must be available; `p` points at 32 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn half_sums(p: *const f32) -> [f32; 2] {
    let lo = _mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
    let hi = _mm256_add_ps(_mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24)));
    [hsum(lo), hsum(hi)]
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

/// Whether the CPU has AVX-512 F (with AVX2, FMA and F16C): the prompt rows' f32 GEMM then
/// takes 512-bit registers ([`super::gemm`], the same bits); `DOCANALYZE_AVX512=0` keeps it on
/// AVX2 (to compare).
pub fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            available()
                && is_x86_feature_detected!("avx512f")
                && std::env::var("DOCANALYZE_AVX512").map_or(true, |v| v != "0")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU also has AVX-512 VNNI (with VL, for 256-bit registers): the 8-bit and
/// 16-bit tiles then take `vpdpbusd`/`vpdpwssd` (the same bits); `DOCANALYZE_VNNI=0` keeps
/// them on AVX2 (to compare).
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            available()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
                && std::env::var("DOCANALYZE_VNNI").map_or(true, |v| v != "0")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Asks for the group [`PREFETCH_BYTES`] after `group` in memory ([`prefetch_ahead`]), so
/// that it arrives while this one is multiplied: every tile of every size. On the 2-core Xeon
/// of November 2026 one decode row of 1B Q4_0 went from 23-25 to 30-33 tok/s with it (two rows
/// 38-42 → 56-63; the AVX2 tiles alike); on the Zen 4 EPYC before it, tiles of 1-2 rows were
/// 0.96-0.99x as fast with it (12 in-process pairs), a loss far smaller than that gain.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn prefetch_next<G>(group: &G) {
    prefetch_ahead(group, 0, 1);
}

/// Asks for part `part` of `parts` of the cache lines [`PREFETCH_BYTES`] after `group` in
/// memory (the weights a tile reads next): the whole group for small groups, one block's share
/// at a time for the 8-row Q4_K tile, where asking for a whole group (18 lines) at once left 8
/// decode rows streaming a Q4_K matrix from memory at 133 GMAC/s and one block's share at 176
/// (2 threads, medians of 5).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn prefetch_ahead<G>(group: &G, part: usize, parts: usize) {
    let ahead = (group as *const G as *const i8).wrapping_add(PREFETCH_BYTES);
    // Whole lines, counted in a plain loop (`step_by` over the bytes took ~25% of a hot
    // one-row Q4_K tile's time).
    let lines = std::mem::size_of::<G>().div_ceil(64);
    let (mut line, to) = (part * lines / parts, (part + 1) * lines / parts);
    while line < to {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
        line += 1;
    }
}

/// How far ahead [`prefetch_next`] and [`prefetch_ahead`] read: about four Q4_K groups.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 4096;

/// Every block's 8 scales and 8 mins ([`SixBitScales::block`] of blocks 0..8), as
/// `([block][row] scales, [block][row] mins)`: the low nibbles masked or shifted down, the high
/// 2 bits shifted up to bits 4-5 (16-bit shifts: what crosses a byte is masked off).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn six_bit_scales(s: &SixBitScales) -> ([[u8; 8]; 8], [[u8; 8]; 8]) {
    let low = s.low.as_ptr() as *const __m256i;
    let (low0, low1) = (_mm256_loadu_si256(low), _mm256_loadu_si256(low.add(1)));
    let high = _mm256_loadu_si256(s.high.as_ptr() as *const __m256i);
    let sc = [
        join_six_bits(low0, _mm256_slli_epi16::<4>(high)),
        join_six_bits(low1, _mm256_slli_epi16::<2>(high)),
    ];
    let m = [
        join_six_bits(_mm256_srli_epi16::<4>(low0), high),
        join_six_bits(_mm256_srli_epi16::<4>(low1), _mm256_srli_epi16::<2>(high)),
    ];
    type Blocks = [[u8; 8]; 8];
    // SAFETY: two 32-byte vectors are 64 bytes, as [[u8; 8]; 8] is.
    let blocks = |v| std::mem::transmute::<[__m256i; 2], Blocks>(v);
    (blocks(sc), blocks(m))
}

/// Bytes of `low`'s low 4 bits and `high`'s bits 4-5: 6-bit values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn join_six_bits(low: __m256i, high: __m256i) -> __m256i {
    _mm256_or_si256(
        _mm256_and_si256(low, _mm256_set1_epi8(0x0F)),
        _mm256_and_si256(high, _mm256_set1_epi8(0x30)),
    )
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
