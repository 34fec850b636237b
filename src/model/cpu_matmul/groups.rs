//! Weight rows interleaved eight at a time, the form the kernels read.
//!
//! A group holds one block of 32 weights of 8 consecutive output rows, arranged so that one
//! 32-byte load and a shift or mask give a 16-bit register whose 32-bit lane `j` holds weights
//! `2r` and `2r + 1` of row `j`: `pmaddwd` with the activations `2r, 2r + 1` broadcast then
//! adds two products to each of the 8 rows' sums at once, and after the block the 8 sums are
//! one register, scaled by the 8 rows' scales in one multiply. (Row by row, each block's sum
//! had to be reduced and scaled on its own, which cost more than the products.) A matrix is
//! `ceil(rows / 8) × blocks` groups, group-major; missing rows of the last group are zero.
//!
//! Scales are kept as the file has them where that is exact (f16 for Q4_0, Q4_1 and Q8_0, so
//! that a group takes no more memory than the file's blocks: decode at one sequence streams
//! every weight once per token). The K-quants' groups, a whole super-block of 8 blocks per
//! row, are in [`super::super_blocks`]; their [`Scales`] types here only say which scales and
//! offsets they have.

use std::fmt::Debug;

use half::f16;

use super::blocks::{IntBlock, QK};
use crate::model::huge_pages::HugePageArray;

/// Output rows per group.
pub const ROWS: usize = 8;

/// `SUBS` blocks of 32 weights of 8 rows.
pub trait Group: Copy + Send + Sync + Debug + 'static {
    /// The kind of the 8 rows' scales and offsets ([`Scales::SPLIT`], [`Scales::OFFSET`]).
    type Scales: Scales;
    /// All rows zero.
    const ZERO: Self;
    /// Blocks of 32 weights per row.
    const SUBS: usize = 1;
    /// Row `j`'s weights `32 · sub..32 · sub + 32` as f32: `q · d + m`, one FMA each (the AVX2
    /// paths compute the same).
    fn dequantize_row(&self, j: usize, sub: usize) -> [f32; QK];
}

/// A group of one block per row, built from integer blocks.
pub trait BlockGroup: Group {
    /// Sets row `j`: weight `k` is `d[k / 16] · q[k] + m`.
    fn set_row(&mut self, j: usize, q: &[i32; QK], d: [f32; 2], m: f32);
    /// The integer weight `k` of row `j`.
    fn int(&self, j: usize, k: usize) -> i32;
    /// The 8 rows' scales and offsets.
    fn scales(&self) -> &Self::Scales;
}

/// [`Group::dequantize_row`] of a [`BlockGroup`].
fn dequantize_block_row<G: BlockGroup>(g: &G, j: usize) -> [f32; QK] {
    let s = g.scales();
    std::array::from_fn(|k| (g.int(j, k) as f32).mul_add(s.scale(j, k), s.offset(j, k)))
}

/// Row `o`'s weights of the groups of a matrix of `cols` columns.
#[cfg(test)]
pub fn row_weights<G: Group>(groups: &[G], o: usize, cols: usize) -> Vec<f32> {
    let per_row = cols / QK / G::SUBS;
    (groups[o / ROWS * per_row..][..per_row].iter())
        .flat_map(|g| (0..G::SUBS).flat_map(move |sub| g.dequantize_row(o % ROWS, sub)))
        .collect()
}

/// `rows × nb` blocks (row-major) as `ceil(rows / 8) × nb` groups, group rows in parallel.
pub fn interleave<B: IntBlock + Sync, G: BlockGroup>(
    blocks: &[B],
    rows: usize,
    nb: usize,
) -> HugePageArray<G> {
    use rayon::prelude::*;
    debug_assert_eq!(blocks.len(), rows * nb);
    let mut groups = HugePageArray::filled(rows.div_ceil(ROWS) * nb, G::ZERO);
    if nb == 0 {
        return groups;
    }
    let rows_of_blocks = blocks.par_chunks(ROWS * nb);
    groups
        .par_chunks_mut(nb)
        .zip(rows_of_blocks)
        .for_each(|(groups, blocks)| {
            for (j, row) in blocks.chunks_exact(nb).enumerate() {
                for (group, block) in groups.iter_mut().zip(row) {
                    let (q, d, m) = block.ints();
                    group.set_row(j, &q, d, m);
                }
            }
        });
    groups
}

/// The 8 rows' scales and offsets of a group.
pub trait Scales: Copy + Send + Sync + Debug + 'static {
    const ZERO: Self;
    /// Whether weights 16..32 have scales (and offsets, with [`Self::OFFSET`]) of their own.
    const SPLIT: bool;
    /// Whether the rows have offsets.
    const OFFSET: bool;
    /// Sets row `j`'s scales (weights 0..16, 16..32) and offset; they must be representable.
    fn set(&mut self, j: usize, d: [f32; 2], m: f32);
    /// The scale of weight `k` of row `j`.
    fn scale(&self, j: usize, k: usize) -> f32;
    /// The offset of weight `k` of row `j`.
    fn offset(&self, j: usize, k: usize) -> f32;
}

/// f16 scales and offsets (Q4_0, with `m = -8d`, and Q4_1: the file's own values).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct F16Dm {
    pub d: [f16; ROWS],
    pub m: [f16; ROWS],
}

/// f16 scales (Q8_0).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct F16D {
    pub d: [f16; ROWS],
}

/// f32 scales and offsets (Q4_K and Q5_K blocks: products of two scales).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct F32Dm {
    pub d: [f32; ROWS],
    pub m: [f32; ROWS],
}

/// f32 scales for each half of the block (Q3_K and Q6_K blocks).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct F32Split {
    pub d: [f32; ROWS],
    pub d_hi: [f32; ROWS],
}

/// f32 scales and offsets for each half of the block (Q2_K: a scale and a min per 16
/// weights).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct F32SplitDm {
    pub d: [f32; ROWS],
    pub d_hi: [f32; ROWS],
    pub m: [f32; ROWS],
    pub m_hi: [f32; ROWS],
}

/// `v` as f16, which must be exact.
fn exact_f16(v: f32) -> f16 {
    let h = f16::from_f32(v);
    debug_assert_eq!(h.to_f32(), v, "{v} is not an f16");
    h
}

impl Scales for F16Dm {
    const ZERO: Self = Self {
        d: [f16::ZERO; ROWS],
        m: [f16::ZERO; ROWS],
    };
    const SPLIT: bool = false;
    const OFFSET: bool = true;

    fn set(&mut self, j: usize, d: [f32; 2], m: f32) {
        debug_assert_eq!(d[0], d[1]);
        self.d[j] = exact_f16(d[0]);
        self.m[j] = exact_f16(m);
    }

    fn scale(&self, j: usize, _k: usize) -> f32 {
        self.d[j].to_f32()
    }

    fn offset(&self, j: usize, _k: usize) -> f32 {
        self.m[j].to_f32()
    }
}

impl Scales for F16D {
    const ZERO: Self = Self {
        d: [f16::ZERO; ROWS],
    };
    const SPLIT: bool = false;
    const OFFSET: bool = false;

    fn set(&mut self, j: usize, d: [f32; 2], m: f32) {
        debug_assert!(d[0] == d[1] && m == 0.0);
        self.d[j] = exact_f16(d[0]);
    }

    fn scale(&self, j: usize, _k: usize) -> f32 {
        self.d[j].to_f32()
    }

    fn offset(&self, _j: usize, _k: usize) -> f32 {
        0.0
    }
}

impl Scales for F32Dm {
    const ZERO: Self = Self {
        d: [0.0; ROWS],
        m: [0.0; ROWS],
    };
    const SPLIT: bool = false;
    const OFFSET: bool = true;

    fn set(&mut self, j: usize, d: [f32; 2], m: f32) {
        debug_assert_eq!(d[0], d[1]);
        self.d[j] = d[0];
        self.m[j] = m;
    }

    fn scale(&self, j: usize, _k: usize) -> f32 {
        self.d[j]
    }

    fn offset(&self, j: usize, _k: usize) -> f32 {
        self.m[j]
    }
}

impl Scales for F32Split {
    const ZERO: Self = Self {
        d: [0.0; ROWS],
        d_hi: [0.0; ROWS],
    };
    const SPLIT: bool = true;
    const OFFSET: bool = false;

    fn set(&mut self, j: usize, d: [f32; 2], m: f32) {
        debug_assert_eq!(m, 0.0);
        [self.d[j], self.d_hi[j]] = d;
    }

    fn scale(&self, j: usize, k: usize) -> f32 {
        if k < 16 {
            self.d[j]
        } else {
            self.d_hi[j]
        }
    }

    fn offset(&self, _j: usize, _k: usize) -> f32 {
        0.0
    }
}

impl Scales for F32SplitDm {
    const ZERO: Self = Self {
        d: [0.0; ROWS],
        d_hi: [0.0; ROWS],
        m: [0.0; ROWS],
        m_hi: [0.0; ROWS],
    };
    const SPLIT: bool = true;
    const OFFSET: bool = true;

    /// Both halves get the offset `m`.
    fn set(&mut self, j: usize, d: [f32; 2], m: f32) {
        [self.d[j], self.d_hi[j]] = d;
        [self.m[j], self.m_hi[j]] = [m; 2];
    }

    fn scale(&self, j: usize, k: usize) -> f32 {
        if k < 16 {
            self.d[j]
        } else {
            self.d_hi[j]
        }
    }

    fn offset(&self, j: usize, k: usize) -> f32 {
        if k < 16 {
            self.m[j]
        } else {
            self.m_hi[j]
        }
    }
}

/// 4-bit weights `d · q + m`, q in 0..16 (Q4_0 with `m = -8d`, Q4_1, Q4_K's sub-blocks).
///
/// Load `l` (bytes `32l..32l + 32`) as 16-bit lanes: lane `2j + e`, bits `4s..4s + 4`, holds
/// weight `2r + e` of row `j` for register `r = 4l + s`.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Nibbles8<S> {
    pub qs: [u8; 128],
    pub scales: S,
}

/// Byte and shift of weight `k` of row `j` in [`Nibbles8`].
fn nibble_at(j: usize, k: usize) -> (usize, u32) {
    let (r, e) = (k / 2, k % 2);
    let (l, s) = (r / 4, r % 4);
    (32 * l + 2 * (2 * j + e) + s / 2, 4 * (s % 2) as u32)
}

/// Weight `k` of row `j` of the 128 bytes of a [`Nibbles8`] block.
pub(super) fn nibble_of(qs: &[u8; 128], j: usize, k: usize) -> i32 {
    let (byte, shift) = nibble_at(j, k);
    i32::from((qs[byte] >> shift) & 0x0F)
}

/// Sets row `j` of the 128 bytes of a [`Nibbles8`] block to the 4-bit weights `q` (each
/// below 16), whole bytes at a time (loading a model sets every weight): load `l` holds
/// weights `8l..8l + 8` of row `j` in its bytes `4j..4j + 4`, as
/// `[w0 | w2 << 4, w4 | w6 << 4, w1 | w3 << 4, w5 | w7 << 4]` ([`nibble_at`]).
pub(super) fn set_nibble_row(qs: &mut [u8; 128], j: usize, q: &[u8; QK]) {
    debug_assert!(q.iter().all(|&q| q < 16));
    for (l, w) in q.chunks_exact(8).enumerate() {
        let bytes = [
            w[0] | w[2] << 4,
            w[4] | w[6] << 4,
            w[1] | w[3] << 4,
            w[5] | w[7] << 4,
        ];
        qs[32 * l + 4 * j..][..4].copy_from_slice(&bytes);
    }
}

impl<S: Scales> Group for Nibbles8<S> {
    type Scales = S;
    const ZERO: Self = Self {
        qs: [0; 128],
        scales: S::ZERO,
    };

    fn dequantize_row(&self, j: usize, _sub: usize) -> [f32; QK] {
        dequantize_block_row(self, j)
    }
}

impl<S: Scales> BlockGroup for Nibbles8<S> {
    fn set_row(&mut self, j: usize, q: &[i32; QK], d: [f32; 2], m: f32) {
        debug_assert!(q.iter().all(|q| (0..16).contains(q)));
        set_nibble_row(&mut self.qs, j, &q.map(|q| q as u8));
        self.scales.set(j, d, m);
    }

    fn int(&self, j: usize, k: usize) -> i32 {
        nibble_of(&self.qs, j, k)
    }

    fn scales(&self) -> &S {
        &self.scales
    }
}

/// 8-bit weights, signed (`SIGNED`: Q8_0, Q6_K's sub-blocks) or unsigned (Q5_K's sub-blocks).
///
/// Load `l` (bytes `32l..32l + 32`) as 16-bit lanes: lane `2j + e`, byte `s`, holds weight
/// `2r + e` of row `j` for register `r = 2l + s`; loads 0..4 hold weights 0..16.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Bytes8<const SIGNED: bool, S> {
    pub qs: [u8; 256],
    pub scales: S,
}

/// Byte of weight `k` of row `j` in [`Bytes8`].
fn byte_at(j: usize, k: usize) -> usize {
    let (r, e) = (k / 2, k % 2);
    let (l, s) = (r / 2, r % 2);
    32 * l + 2 * (2 * j + e) + s
}

impl<const SIGNED: bool, S: Scales> Group for Bytes8<SIGNED, S> {
    type Scales = S;
    const ZERO: Self = Self {
        qs: [0; 256],
        scales: S::ZERO,
    };

    fn dequantize_row(&self, j: usize, _sub: usize) -> [f32; QK] {
        dequantize_block_row(self, j)
    }
}

impl<const SIGNED: bool, S: Scales> BlockGroup for Bytes8<SIGNED, S> {
    fn set_row(&mut self, j: usize, q: &[i32; QK], d: [f32; 2], m: f32) {
        debug_assert!(q.iter().all(|&q| if SIGNED {
            i8::try_from(q).is_ok()
        } else {
            u8::try_from(q).is_ok()
        }));
        for (k, &q) in q.iter().enumerate() {
            self.qs[byte_at(j, k)] = q as u8;
        }
        self.scales.set(j, d, m);
    }

    fn int(&self, j: usize, k: usize) -> i32 {
        let byte = self.qs[byte_at(j, k)];
        if SIGNED {
            i32::from(byte as i8)
        } else {
            i32::from(byte)
        }
    }

    fn scales(&self) -> &S {
        &self.scales
    }
}

/// Byte and shift of 1 bit of weight `k` of row `j` in 32 bytes: 16-bit lane `2j + e` holds at
/// bit `r` that of weight `2r + e` of row `j`.
pub(super) fn bit_at(j: usize, k: usize) -> (usize, u32) {
    let (r, e) = (k / 2, k % 2);
    (2 * (2 * j + e) + r / 8, (r % 8) as u32)
}

/// Sets row `j` of 32 bytes laid out as [`bit_at`] to the bits `q` (each 0 or 1): byte
/// `4j + 2e + t` holds at bit `b` weight `2(8t + b) + e`.
pub(super) fn set_bit_row(bytes: &mut [u8; 32], j: usize, q: &[u8; QK]) {
    debug_assert!(q.iter().all(|&q| q < 2));
    for (e, t) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        bytes[4 * j + 2 * e + t] = (0..8).fold(0, |byte, b| byte | q[2 * (8 * t + b) + e] << b);
    }
}

/// The `width` bits at `(byte, bit)` of `bytes`.
pub(super) fn field(bytes: &[u8], (byte, bit): (usize, u32), width: u32) -> u8 {
    (bytes[byte] >> bit) & ((1 << width) - 1)
}

/// 5-bit weights of 8 rows: the low 4 bits as [`Nibbles8`] lays them out, the fifth bit of
/// register `r` at bit `r` of each 16-bit lane of `qh` ([`bit_at`]).
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Q5Bits {
    pub ql: [u8; 128],
    pub qh: [u8; 32],
}

/// The bits of one block of 32 weights of 8 rows (Q5_0, Q5_1 and the K-quants' blocks):
/// unsigned values up to `MAX`, a weight being its value less `BIAS`.
pub trait BlockBits: Copy + Send + Sync + Debug + 'static {
    const ZERO: Self;
    const BIAS: i32;
    const MAX: u8;
    /// Sets row `j` to the values `q` (each at most `MAX`).
    fn set_row(&mut self, j: usize, q: &[u8; QK]);
    /// The value of weight `k` of row `j`.
    fn int(&self, j: usize, k: usize) -> i32;
}

impl BlockBits for Q5Bits {
    const ZERO: Self = Self {
        ql: [0; 128],
        qh: [0; 32],
    };
    const BIAS: i32 = 0;
    const MAX: u8 = 31;

    fn set_row(&mut self, j: usize, q: &[u8; QK]) {
        set_nibble_row(&mut self.ql, j, &q.map(|q| q & 0x0F));
        set_bit_row(&mut self.qh, j, &q.map(|q| q >> 4));
    }

    fn int(&self, j: usize, k: usize) -> i32 {
        nibble_of(&self.ql, j, k) | i32::from(field(&self.qh, bit_at(j, k), 1)) << 4
    }
}

/// 5-bit weights (Q5_0 `SIGNED`, `q − 16`; Q5_1 `q`) held in 5 bits ([`Q5Bits`]): 192 bytes
/// per 8 rows, the file's 176 and 192 (as bytes they took 272 and 288).
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Fives8<const SIGNED: bool, S> {
    pub bits: Q5Bits,
    pub scales: S,
}

impl<const SIGNED: bool, S> Fives8<SIGNED, S> {
    /// What is added to a weight to store it.
    pub const BIAS: i32 = if SIGNED { 16 } else { 0 };
}

impl<const SIGNED: bool, S: Scales> Group for Fives8<SIGNED, S> {
    type Scales = S;
    const ZERO: Self = Self {
        bits: Q5Bits::ZERO,
        scales: S::ZERO,
    };

    fn dequantize_row(&self, j: usize, _sub: usize) -> [f32; QK] {
        dequantize_block_row(self, j)
    }
}

impl<const SIGNED: bool, S: Scales> BlockGroup for Fives8<SIGNED, S> {
    fn set_row(&mut self, j: usize, q: &[i32; QK], d: [f32; 2], m: f32) {
        debug_assert!(q.iter().all(|q| (0..32).contains(&(q + Self::BIAS))));
        self.bits.set_row(j, &q.map(|q| (q + Self::BIAS) as u8));
        self.scales.set(j, d, m);
    }

    fn int(&self, j: usize, k: usize) -> i32 {
        self.bits.int(j, k) - Self::BIAS
    }

    fn scales(&self) -> &S {
        &self.scales
    }
}
