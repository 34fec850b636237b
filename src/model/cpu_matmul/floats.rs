//! Unquantized weights (F32, F16, BF16), 8 rows at a time as the file has them: prompt rows
//! through the GEMM ([`super::gemm`], a panel is the weights widened to f32), decode rows
//! through [`tile`]; each output is one FMA chain over the columns in order either way, so
//! both kinds of rows give the same bits, in every batch. (candle held these matrices as f32 —
//! twice an F16 file's bytes — and multiplied them itself.)

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::{bf16, f16};

use super::blocks::QK;
use super::gemm::NR;
use super::groups::{Group, Scales, ROWS};
use crate::model::huge_pages::HugePageArray;

/// A weight type held as it is.
pub trait Element: Copy + Send + Sync + std::fmt::Debug + 'static {
    const ZERO: Self;
    /// Bytes per weight in the file.
    const BYTES: usize;
    fn read(b: &[u8]) -> Self;
    fn to_f32(self) -> f32;
    /// 8 weights from `p` as f32.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C; `p` points at 8 weights.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> __m256;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    const BYTES: usize = 4;
    fn read(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const Self) -> __m256 {
        _mm256_loadu_ps(p)
    }
}

impl Element for f16 {
    const ZERO: Self = f16::ZERO;
    const BYTES: usize = 2;
    fn read(b: &[u8]) -> Self {
        f16::from_le_bytes([b[0], b[1]])
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const Self) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

impl Element for bf16 {
    const ZERO: Self = bf16::ZERO;
    const BYTES: usize = 2;
    fn read(b: &[u8]) -> Self {
        bf16::from_le_bytes([b[0], b[1]])
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    /// A bf16 is the top half of its f32.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const Self) -> __m256 {
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
    }
}

/// 32 columns of 8 rows, column-major: `w[k][j]` is weight `k` of row `j`, so a column of the
/// 8 rows is one load, and a panel row of the GEMM.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Floats8<E> {
    pub w: [[E; ROWS]; QK],
}

/// No scales: the weights are their values.
#[derive(Debug, Clone, Copy)]
pub struct Unscaled;

impl Scales for Unscaled {
    const ZERO: Self = Unscaled;
    const SPLIT: bool = false;
    const OFFSET: bool = false;
    fn set(&mut self, _j: usize, _d: [f32; 2], _m: f32) {}
    fn scale(&self, _j: usize, _k: usize) -> f32 {
        1.0
    }
    fn offset(&self, _j: usize, _k: usize) -> f32 {
        0.0
    }
}

impl<E: Element> Group for Floats8<E> {
    type Scales = Unscaled;
    const ZERO: Self = Self {
        w: [[E::ZERO; ROWS]; QK],
    };

    fn dequantize_row(&self, j: usize, _sub: usize) -> [f32; QK] {
        std::array::from_fn(|k| self.w[k][j].to_f32())
    }
}

/// A `rows × cols` matrix of `E` (`bytes`, row-major) as `ceil(rows / 8) × (cols / 32)`
/// groups, group rows in parallel; missing rows of the last group are zero.
pub fn matrix<E: Element>(bytes: &[u8], rows: usize, cols: usize) -> HugePageArray<Floats8<E>> {
    use rayon::prelude::*;
    let per_row = cols / QK;
    let mut groups = HugePageArray::filled(rows.div_ceil(ROWS) * per_row, Floats8::<E>::ZERO);
    if per_row == 0 {
        return groups;
    }
    let row_bytes = cols * E::BYTES;
    groups
        .par_chunks_mut(per_row)
        .zip(bytes.par_chunks(ROWS * row_bytes))
        .for_each(|(groups, bytes)| {
            for (j, row) in bytes.chunks_exact(row_bytes).enumerate() {
                for (group, block) in groups.iter_mut().zip(row.chunks_exact(QK * E::BYTES)) {
                    for (k, w) in block.chunks_exact(E::BYTES).enumerate() {
                        group.w[k][j] = E::read(w);
                    }
                }
            }
        });
    groups
}

/// The GEMM's panel of `groups` (one or two group rows of `per_row` groups):
/// `panel[k * NR + o]` = weight `k` of row `o` as f32.
pub fn pack<E: Element>(groups: &[Floats8<E>], per_row: usize, panel: &mut [f32]) {
    super::gemm::pack_with(
        groups,
        per_row,
        panel,
        #[cfg(target_arch = "x86_64")]
        pack_avx2::<E>,
    );
}

/// [`pack`] with AVX2: each column of a group is 8 panel floats.
///
/// # Safety
/// The CPU must support AVX2 and F16C; `panel` holds `per_row · 32 · NR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_avx2<E: Element>(groups: &[Floats8<E>], per_row: usize, panel: &mut [f32]) {
    debug_assert!(panel.len() >= per_row * QK * NR);
    let p = panel.as_mut_ptr();
    for (g, row) in groups.chunks_exact(per_row).enumerate() {
        for (b, group) in row.iter().enumerate() {
            for (k, column) in group.w.iter().enumerate() {
                let v = E::load8(column.as_ptr());
                _mm256_storeu_ps(p.add((b * QK + k) * NR + g * ROWS), v);
            }
        }
    }
}

/// `out[(g * T + t) * 8 + j]` = row `t` of `x` (`T` rows of `cols`) · row `j` of group row `g`
/// of `groups` (each `cols / 32` groups), one FMA chain over the columns in order per output:
/// the same bits as the GEMM's, so decode rows (here) and prompt rows (there) agree.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` holds `T` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile<E: Element, const T: usize>(
    groups: &[Floats8<E>],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let per_row = cols / QK;
    debug_assert!(x.len() == T * cols && groups.len().is_multiple_of(per_row));
    debug_assert!(out.len() >= groups.len() / per_row * T * ROWS);
    let xp = x.as_ptr();
    for (g, row) in groups.chunks_exact(per_row).enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        for (b, group) in row.iter().enumerate() {
            for (k, column) in group.w.iter().enumerate() {
                let w = E::load8(column.as_ptr());
                for (t, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_broadcast_ss(&*xp.add(t * cols + b * QK + k));
                    *acc = _mm256_fmadd_ps(a, w, *acc);
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((g * T + t) * ROWS), *acc);
        }
    }
}
