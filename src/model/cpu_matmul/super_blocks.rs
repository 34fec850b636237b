//! K-quant super-blocks (Q2_K … Q6_K) held whole, 8 rows at a time: each block's weight bits
//! laid out so that a 32-byte load and a shift or mask give the 16-bit registers of
//! [`super::groups`], the sub-block scales as the file's small integers (Q4_K's and Q5_K's
//! packed 6 bits apiece), and per row the super-block's f16 scales (as f16 or f32). The kernels
//! multiply the scales out per block as they go (exact products, as the file's dequantization
//! has them), so a matrix takes 1.0-1.05× its file's bytes instead of 1.3-2.9× as blocks of 32
//! with f32 scales.

use super::blocks::{self, MinParts, SplitParts, QK};
use super::groups::{
    bit_at, field, nibble_of, set_bit_row, set_nibble_row, BlockBits, F32Dm, F32Split, F32SplitDm,
    Group, Q5Bits, ROWS,
};
use crate::model::huge_pages::HugePageArray;
use half::f16;

/// A block's 4-bit weights laid out as [`Nibbles8`](super::groups::Nibbles8) lays them out.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Q4Bits(pub [u8; 128]);

impl BlockBits for Q4Bits {
    const ZERO: Self = Self([0; 128]);
    const BIAS: i32 = 0;
    const MAX: u8 = 15;

    fn set_row(&mut self, j: usize, q: &[u8; QK]) {
        set_nibble_row(&mut self.0, j, q);
    }

    fn int(&self, j: usize, k: usize) -> i32 {
        nibble_of(&self.0, j, k)
    }
}

/// A block's 6-bit weights: the low 4 bits as [`Nibbles8`](super::groups::Nibbles8) lays them
/// out, the high 2 bits of register `8h + s` at bits `2s..2s + 2` of load `h` of `qh`
/// ([`two_bits_at`]). Together, so that the weights are read in one stream.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Q6Bits {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
}

impl BlockBits for Q6Bits {
    const ZERO: Self = Self {
        ql: [0; 128],
        qh: [0; 64],
    };
    const BIAS: i32 = 32;
    const MAX: u8 = 63;

    fn set_row(&mut self, j: usize, q: &[u8; QK]) {
        set_nibble_row(&mut self.ql, j, &q.map(|q| q & 0x0F));
        set_two_bit_row(&mut self.qh, j, &q.map(|q| q >> 4));
    }

    fn int(&self, j: usize, k: usize) -> i32 {
        nibble_of(&self.ql, j, k) | i32::from(field(&self.qh, two_bits_at(j, k), 2)) << 4
    }
}

/// A block's 3-bit weights: the low 2 bits ([`two_bits_at`]) and the third ([`bit_at`]).
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Q3Bits {
    pub ql: [u8; 64],
    pub qh: [u8; 32],
}

impl BlockBits for Q3Bits {
    const ZERO: Self = Self {
        ql: [0; 64],
        qh: [0; 32],
    };
    const BIAS: i32 = 4;
    const MAX: u8 = 7;

    fn set_row(&mut self, j: usize, q: &[u8; QK]) {
        set_two_bit_row(&mut self.ql, j, &q.map(|q| q & 3));
        set_bit_row(&mut self.qh, j, &q.map(|q| q >> 2));
    }

    fn int(&self, j: usize, k: usize) -> i32 {
        let low = i32::from(field(&self.ql, two_bits_at(j, k), 2));
        low | i32::from(field(&self.qh, bit_at(j, k), 1)) << 2
    }
}

/// Byte and shift of 2 bits of weight `k` of row `j` in 64 bytes laid out as [`Q6Bits::qh`]:
/// load `h` (bytes `32h..32h + 32`) holds, in 16-bit lane `2j + e`, bits `2s..2s + 2`, those of
/// weight `2r + e` of row `j` for register `r = 8h + s`.
fn two_bits_at(j: usize, k: usize) -> (usize, u32) {
    let (r, e) = (k / 2, k % 2);
    let (h, s) = (r / 8, r % 8);
    (32 * h + 2 * (2 * j + e) + s / 4, 2 * (s % 4) as u32)
}

/// Sets row `j` of 64 bytes laid out as [`two_bits_at`] to the 2-bit values `q` (each below
/// 4), whole bytes at a time: load `h` holds weights `16h..16h + 16` of row `j` in its bytes
/// `4j..4j + 4`, byte `2e + t` holding at bits `2f` weight `16h + 8t + 2f + e`.
fn set_two_bit_row(bytes: &mut [u8; 64], j: usize, q: &[u8; QK]) {
    debug_assert!(q.iter().all(|&q| q < 4));
    for h in 0..2 {
        for (e, t) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let at = |f: usize| q[16 * h + 8 * t + 2 * f + e] << (2 * f);
            bytes[32 * h + 4 * j + 2 * e + t] = at(0) | at(1) | at(2) | at(3);
        }
    }
}

/// A super-block of 8 rows with a scale and a min per block of 32 (Q4_K: [`Q4KGroup`], Q5_K:
/// [`Q5KGroup`]): its 8 blocks' bits, their 6-bit scales and mins packed 6 bits apiece as in
/// the file, in an order made for vector unpacking ([`SixBitScales`]), and per row the
/// super-block's scale `d` and negated min scale `−dmin` (the file's f16 values, kept as f16):
/// a group takes exactly its 8 rows' file bytes, since one decode row reads every byte of it.
/// Block `sub` of row `j` is `d·sc · q + (−dmin)·m`, the products exact in f32 as when they
/// were stored.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct MinGroup<B> {
    pub blocks: [B; 8],
    pub scales: SixBitScales,
    pub d: [f16; ROWS],
    pub neg_dmin: [f16; ROWS],
}

/// The 6-bit scale and min of each block of 8 rows, 96 bytes: value `i` of 128 (scales
/// `8·block + row`, then mins `64 + 8·block + row`) keeps its low 4 bits in `low[i % 64]`
/// (scales in the low nibble, mins in the high one) and its high 2 bits in `high[i % 32]` at
/// bits `2·(i / 32)`. So [`Self::block`] takes one block's 8 scales and 8 mins with a few
/// whole-word shifts and masks, and [`six_bit_scales`](super::avx2::six_bit_scales) all 8
/// blocks' with three loads and a dozen vector instructions, no table and no per-row work.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SixBitScales {
    pub low: [u8; 64],
    pub high: [u8; 32],
}

impl SixBitScales {
    const ZERO: Self = Self {
        low: [0; 64],
        high: [0; 32],
    };

    /// Sets row `j`'s scale and min of block `sub` (each below 64).
    fn set(&mut self, sub: usize, j: usize, (sc, m): (u8, u8)) {
        debug_assert!(sc < 64 && m < 64);
        let i = 8 * sub + j;
        self.low[i] = (sc & 0x0F) | (m & 0x0F) << 4;
        // Scale `i` and min `64 + i` share byte `i % 32`, the min 4 bits above the scale.
        let shift = 2 * (i / 32);
        let high = (sc >> 4) << shift | (m >> 4) << (shift + 4);
        let mask = 3 << shift | 3 << (shift + 4);
        self.high[i % 32] = self.high[i % 32] & !mask | high;
    }

    /// Block `sub`'s scales and mins of the 8 rows, byte `j` row `j`'s.
    #[inline(always)]
    pub fn block(&self, sub: usize) -> ([u8; ROWS], [u8; ROWS]) {
        const LOW4: u64 = 0x0F0F_0F0F_0F0F_0F0F;
        const LOW2: u64 = 0x0303_0303_0303_0303;
        let low = u64::from_le_bytes(self.low[8 * sub..8 * sub + 8].try_into().unwrap());
        let at = 8 * (sub % 4);
        let high = u64::from_le_bytes(self.high[at..at + 8].try_into().unwrap());
        let shift = 2 * (sub / 4);
        let sc = low & LOW4 | (high >> shift & LOW2) << 4;
        let m = low >> 4 & LOW4 | (high >> (shift + 4) & LOW2) << 4;
        (sc.to_le_bytes(), m.to_le_bytes())
    }
}

pub type Q4KGroup = MinGroup<Q4Bits>;
pub type Q5KGroup = MinGroup<Q5Bits>;

impl<B: BlockBits> Group for MinGroup<B> {
    type Scales = F32Dm;
    const ZERO: Self = Self {
        blocks: [B::ZERO; 8],
        scales: SixBitScales::ZERO,
        d: [f16::ZERO; ROWS],
        neg_dmin: [f16::ZERO; ROWS],
    };
    const SUBS: usize = 8;

    fn dequantize_row(&self, j: usize, sub: usize) -> [f32; QK] {
        let (sc, m) = self.scales.block(sub);
        let d = self.d[j].to_f32() * f32::from(sc[j]);
        let m = self.neg_dmin[j].to_f32() * f32::from(m[j]);
        let bits = &self.blocks[sub];
        std::array::from_fn(|k| ((bits.int(j, k) - B::BIAS) as f32).mul_add(d, m))
    }
}

impl<B: BlockBits> MinGroup<B> {
    /// A matrix of `rows` rows of super-blocks of `size` bytes (`bytes`, row-major), each read
    /// by `parts`, as `ceil(rows / 8) × (super-blocks per row)` groups.
    fn from_parts(
        bytes: &[u8],
        rows: usize,
        size: usize,
        parts: fn(&[u8]) -> MinParts,
    ) -> HugePageArray<Self> {
        super_block_groups(bytes, rows, size, |group: &mut Self, j, b| {
            let parts = parts(b);
            // (Both read from f16: exact.)
            group.d[j] = f16::from_f32(parts.d);
            group.neg_dmin[j] = f16::from_f32(-parts.dmin);
            for (sub, q) in parts.q.iter().enumerate() {
                group.scales.set(sub, j, parts.scales[sub]);
                group.blocks[sub].set_row(j, q);
            }
        })
    }
}

impl Q4KGroup {
    /// A matrix of `rows` rows of Q4_K super-blocks (`bytes`, row-major) as groups.
    pub fn matrix(bytes: &[u8], rows: usize) -> HugePageArray<Self> {
        Self::from_parts(bytes, rows, blocks::Q4_K_BYTES, blocks::q4_k_parts)
    }
}

impl Q5KGroup {
    /// A matrix of `rows` rows of Q5_K super-blocks (`bytes`, row-major) as groups.
    pub fn matrix(bytes: &[u8], rows: usize) -> HugePageArray<Self> {
        Self::from_parts(bytes, rows, blocks::Q5_K_BYTES, blocks::q5_k_parts)
    }
}

/// A super-block of 8 rows with a signed scale per 16 weights (Q3_K: [`Q3KGroup`], Q6_K:
/// [`Q6KGroup`]): its 8 blocks' bits, the scales, and per row the super-block's scale `d` (the
/// file's f16). Weight `k` of block `sub` is `d·sc[2 sub + k / 16] · (q − bias)`.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct SplitGroup<B> {
    pub blocks: [B; 8],
    /// `[2 · block + half][row]`.
    pub sc: [[i8; ROWS]; 16],
    pub d: [f32; ROWS],
}

pub type Q3KGroup = SplitGroup<Q3Bits>;
pub type Q6KGroup = SplitGroup<Q6Bits>;

impl<B: BlockBits> Group for SplitGroup<B> {
    type Scales = F32Split;
    const ZERO: Self = Self {
        blocks: [B::ZERO; 8],
        sc: [[0; ROWS]; 16],
        d: [0.0; ROWS],
    };
    const SUBS: usize = 8;

    fn dequantize_row(&self, j: usize, sub: usize) -> [f32; QK] {
        let scale = |half: usize| self.d[j] * f32::from(self.sc[2 * sub + half][j]);
        let (lo, hi) = (scale(0), scale(1));
        let bits = &self.blocks[sub];
        std::array::from_fn(|k| {
            let q = bits.int(j, k) - B::BIAS;
            (q as f32).mul_add(if k < 16 { lo } else { hi }, 0.0)
        })
    }
}

impl<B: BlockBits> SplitGroup<B> {
    /// A matrix of `rows` rows of super-blocks of `size` bytes (`bytes`, row-major), each read
    /// by `parts`, as `ceil(rows / 8) × (super-blocks per row)` groups.
    fn from_parts(
        bytes: &[u8],
        rows: usize,
        size: usize,
        parts: fn(&[u8]) -> SplitParts,
    ) -> HugePageArray<Self> {
        super_block_groups(bytes, rows, size, |group: &mut Self, j, b| {
            let parts = parts(b);
            group.d[j] = parts.d;
            for (half, &sc) in parts.scales.iter().enumerate() {
                group.sc[half][j] = sc;
            }
            for (sub, q) in parts.q.iter().enumerate() {
                group.blocks[sub].set_row(j, q);
            }
        })
    }
}

impl Q3KGroup {
    /// A matrix of `rows` rows of Q3_K super-blocks (`bytes`, row-major) as groups.
    pub fn matrix(bytes: &[u8], rows: usize) -> HugePageArray<Self> {
        Self::from_parts(bytes, rows, blocks::Q3_K_BYTES, blocks::q3_k_parts)
    }
}

impl Q6KGroup {
    /// A matrix of `rows` rows of Q6_K super-blocks (`bytes`, row-major) as groups.
    pub fn matrix(bytes: &[u8], rows: usize) -> HugePageArray<Self> {
        Self::from_parts(bytes, rows, blocks::Q6_K_BYTES, blocks::q6_k_parts)
    }
}

/// A Q2_K super-block of 8 rows: each block's 2-bit weights ([`two_bits_at`]), the file's
/// scale bytes (a 4-bit scale, above it a 4-bit min) of each 16 weights, and per row the
/// super-block's scale `d` and negated min scale `−dmin` (the file's f16 values). Weight `k`
/// of block `sub` is `d·(sc & 15) · q + (−dmin)·(sc >> 4)` with `sc = sc[2 sub + k / 16]`.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy)]
pub struct Q2KGroup {
    pub qs: [[u8; 64]; 8],
    /// `[2 · block + half][row]`.
    pub sc: [[u8; ROWS]; 16],
    pub d: [f32; ROWS],
    pub neg_dmin: [f32; ROWS],
}

impl Group for Q2KGroup {
    type Scales = F32SplitDm;
    const ZERO: Self = Self {
        qs: [[0; 64]; 8],
        sc: [[0; ROWS]; 16],
        d: [0.0; ROWS],
        neg_dmin: [0.0; ROWS],
    };
    const SUBS: usize = 8;

    fn dequantize_row(&self, j: usize, sub: usize) -> [f32; QK] {
        let scales = |half: usize| {
            let sc = self.sc[2 * sub + half][j];
            (
                self.d[j] * f32::from(sc & 0x0F),
                self.neg_dmin[j] * f32::from(sc >> 4),
            )
        };
        let halves = [scales(0), scales(1)];
        std::array::from_fn(|k| {
            let q = field(&self.qs[sub], two_bits_at(j, k), 2);
            let (d, m) = halves[k / 16];
            f32::from(q).mul_add(d, m)
        })
    }
}

impl Q2KGroup {
    /// A matrix of `rows` rows of Q2_K super-blocks (`bytes`, row-major) as
    /// `ceil(rows / 8) × (super-blocks per row)` groups, group rows in parallel.
    pub fn matrix(bytes: &[u8], rows: usize) -> HugePageArray<Self> {
        use super::blocks::{q2_k_parts, Q2_K_BYTES};
        super_block_groups(bytes, rows, Q2_K_BYTES, |group: &mut Self, j, b| {
            let parts = q2_k_parts(b);
            group.d[j] = parts.d;
            group.neg_dmin[j] = -parts.dmin;
            for (half, &sc) in parts.scales.iter().enumerate() {
                group.sc[half][j] = sc;
            }
            for (sub, q) in parts.q.iter().enumerate() {
                set_two_bit_row(&mut group.qs[sub], j, q);
            }
        })
    }
}

/// `rows` rows of K-quant super-blocks of `size` bytes (`bytes`, row-major) as
/// `ceil(rows / 8) × (super-blocks per row)` groups, each set row by row by `set(group, j,
/// super-block bytes)`, group rows in parallel.
fn super_block_groups<G: Group>(
    bytes: &[u8],
    rows: usize,
    size: usize,
    set: impl Fn(&mut G, usize, &[u8]) + Sync,
) -> HugePageArray<G> {
    use rayon::prelude::*;
    let per_row = bytes.len() / size / rows.max(1);
    let mut groups = HugePageArray::filled(rows.div_ceil(ROWS) * per_row, G::ZERO);
    if per_row == 0 {
        return groups;
    }
    groups
        .par_chunks_mut(per_row)
        .zip(bytes.par_chunks(ROWS * per_row * size))
        .for_each(|(groups, bytes)| {
            for (j, row) in bytes.chunks_exact(per_row * size).enumerate() {
                for (group, b) in groups.iter_mut().zip(row.chunks_exact(size)) {
                    set(group, j, b);
                }
            }
        });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every block's scales and mins come back as set, through the scalar unpacking and the
    /// AVX2 one, whatever was set before (each value is set over a different one).
    #[test]
    fn six_bit_scales_give_back_what_was_set() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut scales = SixBitScales::ZERO;
        for round in 0..4 {
            let want: [[(u8, u8); ROWS]; 8] = std::array::from_fn(|_| {
                std::array::from_fn(|_| (rng.random_range(0..64), rng.random_range(0..64)))
            });
            for (sub, rows) in want.iter().enumerate() {
                for (j, &v) in rows.iter().enumerate() {
                    scales.set(sub, j, v);
                }
            }
            let split = |sub: usize| -> ([u8; ROWS], [u8; ROWS]) {
                (want[sub].map(|v| v.0), want[sub].map(|v| v.1))
            };
            for sub in 0..8 {
                assert_eq!(scales.block(sub), split(sub), "round {round}, block {sub}");
            }
            #[cfg(target_arch = "x86_64")]
            if super::super::avx2::available() {
                // SAFETY: AVX2 was detected.
                let (sc, m) = unsafe { super::super::avx2::six_bit_scales(&scales) };
                for sub in 0..8 {
                    assert_eq!((sc[sub], m[sub]), split(sub), "AVX2, round {round}");
                }
            }
        }
    }
}
