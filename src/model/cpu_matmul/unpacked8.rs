//! Prompt rows with 8-bit activations (`--int8`) for the weight types without a 4-bit layout
//! (Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K): each chunk of weight rows the tiles pass is first
//! unpacked into unsigned bytes `u = q + bias` (at most 63), in the order of the activations
//! of [`Rows8`], then every tile of prompt rows multiplies them with `vpmaddubsw` as
//! [`super::prompt8`] does the 4-bit layouts.
//!
//! Each 16-bit register of a group ([`Avx2Group::registers`]) holds weights `2r, 2r + 1` of 8
//! rows; two of them, the second shifted up a byte, give in the 32-bit lane of row `j` the four
//! bytes that meet a broadcast of four activations. A half block (16 weights) is four
//! `vpmaddubsw` whose 16-bit sums stay exact (4 · 2 · 31 · 127 = 31,496 for bytes up to 31;
//! Q6_K's, up to 63, are widened after every two), then one `vpmaddwd`. The bias comes off
//! against the sums of the 8-bit activations, so the products are those of `q` (as in
//! llama.cpp's dot products): in integers for the types with integer scales per half block
//! (Q3_K, Q6_K), else as `−bias·d` times the dequantized sum (Q5_0: the block's); the offsets
//! (Q5_1, Q2_K, Q5_K) multiply the exact f32 sums of the activations, as in
//! [`super::prompt8`].
//!
//! With AVX-512 VNNI ([`tile_of_vnni`]), a half block's products add up in 32 bits
//! (`vpdpbusd`) and meet the integer scales with `vpmulld`: the same integers, so the same
//! bits, in tiles of up to 8 rows.
//!
//! Decode rows of these types stay on the 16-bit kernel (unpacking a chunk for a few rows
//! costs more than it saves). A prompt row takes this path whatever rows share its step, so
//! its result is the same in every batch.

use std::arch::x86_64::*;

use super::avx2::{Avx2Group, IntScales};
use super::blocks::QK;
use super::prompt8::Rows8;

/// One block of 32 weights of 8 rows as unsigned bytes: 32 bytes per group of four
/// activations of [`Rows8`]'s order, row `j`'s four in 32-bit lane `j`.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub struct Block8([u8; 256]);

/// A chunk of weight groups unpacked for the tiles: per block (groups in order, then their
/// blocks), the bytes and their scaling ([`Scaling`]); and how the bytes were made.
#[derive(Default)]
pub struct Chunk8 {
    blocks: Vec<(Block8, [__m256; 5])>,
    bias: i16,
    scaling: Scaling,
    /// Bytes up to 63 (Q6_K), else up to 31.
    wide: bool,
}

/// How a chunk's blocks are scaled: the five vectors stored with each block.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Scaling {
    /// One scale per block: `[d, _, offset, _, _]`.
    #[default]
    One,
    /// A scale per half block in f32: `[d, d_hi, offset, offset_hi, _]`.
    Halves,
    /// A scale per half block as small integers ([`IntScales`]), both in each 32-bit lane:
    /// `[d, sc, sc_hi, offset, offset_hi]` — the halves' sums are scaled in integers and
    /// joined, then converted once (as llama.cpp's K-quant dot products do).
    IntHalves,
}

/// Unpacks `groups` into `chunk`, adding the group type's bias ([`Avx2Group::UNPACK_BIAS`],
/// 0 or a power of two) to every weight. The offsets stored are the group's, or `−bias·d` with
/// a bias (those types have no offsets of their own).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `G::UNPACK_BIAS` is some.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn unpack<G: Avx2Group>(groups: &[G], chunk: &mut Chunk8) {
    use super::groups::Scales;
    const {
        if let Some(bias) = G::UNPACK_BIAS {
            assert!(bias == 0 || !G::Scales::OFFSET, "a bias and offsets");
            assert!(bias == 0 || (bias as u16).is_power_of_two());
        }
    };
    let Some(bias) = G::UNPACK_BIAS else {
        unreachable!("only groups with a bias for bytes are unpacked")
    };
    chunk.blocks.clear();
    (chunk.bias, chunk.wide) = (bias, G::UNPACK_WIDE);
    chunk.scaling = if !G::Scales::SPLIT {
        Scaling::One
    } else if groups.first().is_some_and(|g| g.int_scales(0).is_some()) {
        Scaling::IntHalves
    } else {
        Scaling::Halves
    };
    let add = _mm256_set1_epi16(bias);
    let neg_bias = _mm256_set1_ps(-f32::from(bias));
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
            let [d, d_hi, m, m_hi] = group.scale_vectors(sub);
            let zero = _mm256_setzero_ps();
            let scaling = match (chunk.scaling, group.int_scales(sub)) {
                (Scaling::IntHalves, Some(IntScales { lo, hi, d })) => {
                    let d = _mm256_loadu_ps(d.as_ptr());
                    let offsets = if bias != 0 { [zero, zero] } else { [m, m_hi] };
                    [d, twice(&lo), twice(&hi), offsets[0], offsets[1]]
                }
                _ if bias != 0 => {
                    let offsets = [_mm256_mul_ps(neg_bias, d), _mm256_mul_ps(neg_bias, d_hi)];
                    [d, d_hi, offsets[0], offsets[1], zero]
                }
                _ => [d, d_hi, m, m_hi, zero],
            };
            chunk.blocks.push((block, scaling));
        }
    }
}

/// 8 small integers, each in both 16-bit halves of its 32-bit lane (for `vpmaddwd`), as the
/// bits of an f32 vector.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn twice(v: &[i8; 8]) -> __m256 {
    let v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(v.as_ptr() as *const __m128i));
    let low = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
    _mm256_castsi256_ps(_mm256_or_si256(low, _mm256_slli_epi32::<16>(v)))
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
/// With `VNNI`, through [`tile_of_vnni`].
///
/// # Safety
/// The CPU must support AVX2 and FMA (and AVX-512 VL and VNNI with `VNNI`); `x` holds rows
/// `r0..r0 + T`; `chunk` holds whole group rows of `nb` blocks.
pub unsafe fn tile<const T: usize, const VNNI: bool>(
    chunk: &Chunk8,
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    const ONE: u8 = Scaling::One as u8;
    const HALVES: u8 = Scaling::Halves as u8;
    const INT: u8 = Scaling::IntHalves as u8;
    macro_rules! dispatch {
        ($($s:ident $w:literal $b:literal),*) => {
            match (chunk.scaling as u8, chunk.wide, chunk.bias != 0) {
                $(($s, $w, $b) => if VNNI {
                    tile_of_vnni::<T, $s, $w, $b>(chunk, x, r0, out)
                } else {
                    tile_of::<T, $s, $w, $b>(chunk, x, r0, out)
                },)*
                _ => unreachable!(),
            }
        };
    }
    dispatch!(
        ONE false false, ONE false true, ONE true false, ONE true true,
        HALVES false false, HALVES false true, HALVES true false, HALVES true true,
        INT false false, INT false true, INT true false, INT true true
    )
}

/// [`tile`] for a chunk of [`Scaling`] `SCALING`, `WIDE` bytes (up to 63, else 31) and a bias
/// (`BIASED`).
///
/// Per half block and row, four `vpmaddubsw` whose 16-bit pair sums stay exact (four of bytes
/// up to 31: 4 · 2 · 31 · 127 = 31,496; two of bytes up to 63), widened by `vpmaddwd` — times
/// the half's integer scale with [`Scaling::IntHalves`], the bias then taken off in integers
/// with the halves' sums of 8-bit activations (`Σ sc·q·a` exactly, at most 2^24); else the bias
/// comes off as `−bias·d` times the dequantized sum of the 8-bit activations. Offsets multiply
/// the exact f32 sums.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_of<const T: usize, const SCALING: u8, const WIDE: bool, const BIASED: bool>(
    chunk: &Chunk8,
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    tile_of_with::<T, SCALING, WIDE, BIASED, false>(chunk, x, r0, out)
}

/// [`tile_of`] with AVX-512 VNNI: a half block's products add up in 32 bits (`vpdpbusd`, no
/// 16-bit pair sums to widen), then times the integer scales (`vpmulld`): the same integers,
/// so the same bits.
///
/// # Safety
/// As [`tile`], and the CPU must support AVX-512 VL and VNNI.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
unsafe fn tile_of_vnni<const T: usize, const SCALING: u8, const WIDE: bool, const BIASED: bool>(
    chunk: &Chunk8,
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    tile_of_with::<T, SCALING, WIDE, BIASED, true>(chunk, x, r0, out)
}

/// The body of [`tile_of`] (`VNNI` false) and [`tile_of_vnni`], inlined into each.
#[inline(always)]
unsafe fn tile_of_with<
    const T: usize,
    const SCALING: u8,
    const WIDE: bool,
    const BIASED: bool,
    const VNNI: bool,
>(
    chunk: &Chunk8,
    x: &Rows8,
    r0: usize,
    out: &mut [f32],
) {
    let int = SCALING == Scaling::IntHalves as u8;
    let split = SCALING != Scaling::One as u8;
    let cols = x.cols;
    let nb = cols / QK;
    debug_assert!(r0 + T <= x.len() && chunk.blocks.len().is_multiple_of(nb));
    debug_assert!(out.len() >= chunk.blocks.len() / nb * T * 8);
    let q = x.q.as_ptr().add(r0 * cols);
    let d = x.d.as_ptr().add(r0 * nb);
    // The sums the offsets multiply: of the 8-bit activations with a bias (unless it comes off
    // in integers), else exact.
    let (halves_of, all_of) = if BIASED && !int {
        (x.q_half_sums.as_ptr(), x.q_sums.as_ptr())
    } else {
        (x.half_sums.as_ptr(), x.sum.as_ptr())
    };
    let (halves_of, all_of) = (halves_of.add(r0 * nb), all_of.add(r0 * nb));
    let q_pairs = x.q_pairs.as_ptr().add(r0 * nb);
    let shift = _mm_cvtsi32_si128(chunk.bias.trailing_zeros() as i32);
    let ones = _mm256_set1_epi16(1);
    for (g, row) in chunk.blocks.chunks_exact(nb).enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        for (b, (block, scaling)) in row.iter().enumerate() {
            let w = block.0.as_ptr() as *const __m256i;
            // The 16-bit multipliers of each half's pair sums.
            let widen = if int {
                [
                    _mm256_castps_si256(scaling[1]),
                    _mm256_castps_si256(scaling[2]),
                ]
            } else {
                [ones, ones]
            };
            // Per row, the exact sums of each half block's products (with integer scales,
            // both halves in the first).
            let mut halves = [[_mm256_setzero_si256(); 2]; T];
            for (half, &widen) in widen.iter().enumerate() {
                let into = usize::from(half == 1 && !int);
                if VNNI {
                    let mut dots = [_mm256_setzero_si256(); T];
                    for p in 4 * half..4 * half + 4 {
                        let w = _mm256_load_si256(w.add(p));
                        for (t, dots) in dots.iter_mut().enumerate() {
                            let a = q.add(t * cols + b * QK + 4 * p) as *const i32;
                            let a = _mm256_set1_epi32(a.read_unaligned());
                            *dots = _mm256_dpbusd_epi32(*dots, w, a);
                        }
                    }
                    // The 16-bit scale (in both halves of each lane), sign-extended.
                    let scale = _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(widen));
                    for (halves, dots) in halves.iter_mut().zip(dots) {
                        let dots = if int {
                            _mm256_mullo_epi32(dots, scale)
                        } else {
                            dots
                        };
                        halves[into] = _mm256_add_epi32(halves[into], dots);
                    }
                    continue;
                }
                let mut pairs = [_mm256_setzero_si256(); T];
                for p in 4 * half..4 * half + 4 {
                    let w = _mm256_load_si256(w.add(p));
                    for (t, pairs) in pairs.iter_mut().enumerate() {
                        let a = q.add(t * cols + b * QK + 4 * p) as *const i32;
                        let a = _mm256_set1_epi32(a.read_unaligned());
                        *pairs = _mm256_add_epi16(*pairs, _mm256_maddubs_epi16(w, a));
                    }
                    if !WIDE && p % 4 != 3 || WIDE && p % 2 == 0 {
                        continue;
                    }
                    for (halves, pairs) in halves.iter_mut().zip(pairs.iter_mut()) {
                        let wide = _mm256_madd_epi16(*pairs, widen);
                        halves[into] = _mm256_add_epi32(halves[into], wide);
                        *pairs = _mm256_setzero_si256();
                    }
                }
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let da = _mm256_set1_ps(*d.add(t * nb + b));
                if int {
                    let mut ints = halves[t][0];
                    if BIASED {
                        // Σ sc·a over each half, times the bias.
                        let sc = _mm256_blend_epi16::<0xAA>(widen[0], widen[1]);
                        let qa = _mm256_set1_epi32(*q_pairs.add(t * nb + b));
                        let bias = _mm256_sll_epi32(_mm256_madd_epi16(sc, qa), shift);
                        ints = _mm256_sub_epi32(ints, bias);
                    }
                    let ints = _mm256_cvtepi32_ps(ints);
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(scaling[0], da), *acc);
                    if !BIASED {
                        let [lo, hi] = *halves_of.add(t * nb + b);
                        *acc = _mm256_fmadd_ps(scaling[3], _mm256_set1_ps(lo), *acc);
                        *acc = _mm256_fmadd_ps(scaling[4], _mm256_set1_ps(hi), *acc);
                    }
                } else if split {
                    let [lo, hi] = *halves_of.add(t * nb + b);
                    let ints = _mm256_cvtepi32_ps(halves[t][0]);
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(scaling[0], da), *acc);
                    let ints = _mm256_cvtepi32_ps(halves[t][1]);
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(scaling[1], da), *acc);
                    *acc = _mm256_fmadd_ps(scaling[2], _mm256_set1_ps(lo), *acc);
                    *acc = _mm256_fmadd_ps(scaling[3], _mm256_set1_ps(hi), *acc);
                } else {
                    let ints = _mm256_cvtepi32_ps(_mm256_add_epi32(halves[t][0], halves[t][1]));
                    *acc = _mm256_fmadd_ps(ints, _mm256_mul_ps(scaling[0], da), *acc);
                    let sum = _mm256_set1_ps(*all_of.add(t * nb + b));
                    *acc = _mm256_fmadd_ps(scaling[2], sum, *acc);
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((g * T + t) * 8), *acc);
        }
    }
}
