//! Weight blocks of 32, decoded from GGUF bytes once at load time: Q4_0, Q4_1 and Q8_0 as they
//! are, Q5_0 and Q5_1 with their fifth bits joined to the nibbles; the 256-weight super-blocks
//! of the K-quants (Q2_K … Q6_K) in their parts (weights, scales), which their groups keep
//! whole.

use half::f16;

/// Weights per block, for every type handled here.
pub const QK: usize = 32;

/// A weight block as integers: weight `k` is `d[k / 16] · q[k] + m`.
pub trait IntBlock: Copy {
    fn ints(&self) -> ([i32; QK], [f32; 2], f32);
}

/// A block stored as such in GGUF files.
pub trait FileBlock: IntBlock {
    /// Bytes of one block in the GGUF file.
    const BYTES: usize;
    fn read(bytes: &[u8]) -> Self;
}

/// Weights per K-quant super-block.
pub const QK_K: usize = 256;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `w = d * (q - 8)`, q in 0..16; low nibbles are weights 0..16, high nibbles 16..32.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ4_0 {
    pub d: f32,
    pub qs: [u8; 16],
}

/// `w = d * q + m`, q in 0..16; nibble order as Q4_0.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ4_1 {
    pub d: f32,
    pub m: f32,
    pub qs: [u8; 16],
}

/// `w = d * q`, q in -128..128.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ8_0 {
    pub d: f32,
    pub qs: [i8; QK],
}

/// Weight `k` of a Q4 block's nibbles: low nibbles are weights 0..16, high ones 16..32.
fn nibble(qs: &[u8; 16], k: usize) -> i32 {
    i32::from(if k < 16 {
        qs[k] & 0x0F
    } else {
        qs[k - 16] >> 4
    })
}

impl IntBlock for BlockQ4_0 {
    fn ints(&self) -> ([i32; QK], [f32; 2], f32) {
        // d · q − 8d is exactly d · (q − 8): both products are exact in f32.
        let q = std::array::from_fn(|k| nibble(&self.qs, k));
        (q, [self.d; 2], -8.0 * self.d)
    }
}

impl FileBlock for BlockQ4_0 {
    const BYTES: usize = 18;
    fn read(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            qs: qs16(&b[2..18]),
        }
    }
}

impl IntBlock for BlockQ4_1 {
    fn ints(&self) -> ([i32; QK], [f32; 2], f32) {
        let q = std::array::from_fn(|k| nibble(&self.qs, k));
        (q, [self.d; 2], self.m)
    }
}

impl FileBlock for BlockQ4_1 {
    const BYTES: usize = 20;
    fn read(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qs: qs16(&b[4..20]),
        }
    }
}

impl IntBlock for BlockQ8_0 {
    fn ints(&self) -> ([i32; QK], [f32; 2], f32) {
        (self.qs.map(i32::from), [self.d; 2], 0.0)
    }
}

impl FileBlock for BlockQ8_0 {
    const BYTES: usize = 34;
    fn read(b: &[u8]) -> Self {
        let mut qs = [0i8; QK];
        for (q, &byte) in qs.iter_mut().zip(&b[2..34]) {
            *q = byte as i8;
        }
        Self {
            d: f16_at(b, 0),
            qs,
        }
    }
}

/// Weight `k` of a Q5_0/Q5_1 block: its nibble (as Q4_0's) and bit `k` of `qh` as bit 4.
fn five_bits(qs: &[u8; 16], qh: u32, k: usize) -> u8 {
    nibble(qs, k) as u8 | (((qh >> k) & 1) << 4) as u8
}

/// The 16 bytes of packed nibbles of a Q4/Q5 block.
fn qs16(b: &[u8]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    qs.copy_from_slice(&b[..16]);
    qs
}

/// Q5_0 (`d: f16; qh: u32; qs: [u8; 16]`, `w = d * (q - 16)`, q in 0..32), held as a Q8_0
/// block with q − 16 in −16..16.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ5_0(pub BlockQ8_0);

impl IntBlock for BlockQ5_0 {
    fn ints(&self) -> ([i32; QK], [f32; 2], f32) {
        self.0.ints()
    }
}

impl FileBlock for BlockQ5_0 {
    const BYTES: usize = 22;
    fn read(b: &[u8]) -> Self {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = qs16(&b[6..22]);
        Self(BlockQ8_0 {
            d: f16_at(b, 0),
            qs: std::array::from_fn(|k| five_bits(&qs, qh, k) as i8 - 16),
        })
    }
}

/// Q5_1 (`d, m: f16; qh: u32; qs: [u8; 16]`, `w = d * q + m`, q in 0..32), held as a Q5_K
/// sub-block.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ5_1(pub BlockQ5);

impl IntBlock for BlockQ5_1 {
    fn ints(&self) -> ([i32; QK], [f32; 2], f32) {
        self.0.ints()
    }
}

impl FileBlock for BlockQ5_1 {
    const BYTES: usize = 24;
    fn read(b: &[u8]) -> Self {
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = qs16(&b[8..24]);
        Self(BlockQ5 {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qs: std::array::from_fn(|k| five_bits(&qs, qh, k)),
        })
    }
}

/// `w = d * q + m`, q in 0..32 (Q5_K sub-blocks), one byte per weight.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ5 {
    pub d: f32,
    pub m: f32,
    pub qs: [u8; QK],
}

impl IntBlock for BlockQ5 {
    fn ints(&self) -> ([i32; QK], [f32; 2], f32) {
        (self.qs.map(i32::from), [self.d; 2], self.m)
    }
}

/// `w = d[i / 16] * q`, one scale per 16 weights (Q6_K's and Q3_K's blocks before they were
/// held whole; the tests' reference).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ6 {
    pub d: [f32; 2],
    pub qs: [i8; QK],
}

#[cfg(test)]
impl IntBlock for BlockQ6 {
    fn ints(&self) -> ([i32; QK], [f32; 2], f32) {
        (self.qs.map(i32::from), self.d, 0.0)
    }
}

/// Sub-block `j`'s 6-bit scale and min from a Q4_K/Q5_K super-block's 12 scale bytes
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Bytes of a Q2_K, Q3_K, Q4_K, Q5_K and Q6_K super-block.
pub const Q2_K_BYTES: usize = 84;
pub const Q3_K_BYTES: usize = 110;
pub const Q4_K_BYTES: usize = 144;
pub const Q5_K_BYTES: usize = 176;
pub const Q6_K_BYTES: usize = 210;

/// The parts of a super-block with a scale and a min per block of 32 (Q4_K, Q5_K): block
/// `j`'s weight `l` is `d·scales[j].0 · q[j][l] − dmin·scales[j].1`.
pub struct MinParts {
    pub d: f32,
    pub dmin: f32,
    /// 6-bit scale and min of each block.
    pub scales: [(u8, u8); 8],
    /// The unsigned weights (4 or 5 bits) of each block.
    pub q: [[u8; QK]; 8],
}

/// Weight `l` of sub-block `j` of the nibbles `qs` of a Q4_K or Q5_K super-block: sub-blocks
/// 2c and 2c+1 are the low and high nibbles of bytes 32c..32c+32.
fn k_nibble(qs: &[u8], j: usize, l: usize) -> u8 {
    let byte = qs[j / 2 * 32 + l];
    if j.is_multiple_of(2) {
        byte & 0x0F
    } else {
        byte >> 4
    }
}

/// A Q4_K super-block (`d, dmin: f16; scales: [u8; 12]; qs: [u8; 128]`) in parts.
pub fn q4_k_parts(b: &[u8]) -> MinParts {
    let qs = &b[16..144];
    MinParts {
        d: f16_at(b, 0),
        dmin: f16_at(b, 2),
        scales: std::array::from_fn(|j| scale_min_k4(j, &b[4..16])),
        q: std::array::from_fn(|j| std::array::from_fn(|l| k_nibble(qs, j, l))),
    }
}

/// A Q4_K super-block as 8 Q4_1 blocks: sub-block `j` is `d·sc_j · q − dmin·m_j` (the form
/// Q4_K had before [`super::super_blocks::Q4KGroup`]; the tests' reference for it).
#[cfg(test)]
pub fn q4_k_blocks(b: &[u8]) -> [BlockQ4_1; 8] {
    let p = q4_k_parts(b);
    std::array::from_fn(|j| {
        let (sc, m) = p.scales[j];
        let q = &p.q[j];
        BlockQ4_1 {
            d: p.d * f32::from(sc),
            m: -(p.dmin * f32::from(m)),
            qs: std::array::from_fn(|l| q[l] | (q[l + 16] << 4)),
        }
    })
}

/// A Q5_K super-block (`d, dmin: f16; scales: [u8; 12]; qh: [u8; 32]; qs: [u8; 128]`) in parts.
pub fn q5_k_parts(b: &[u8]) -> MinParts {
    let (qh, qs) = (&b[16..48], &b[48..176]);
    MinParts {
        d: f16_at(b, 0),
        dmin: f16_at(b, 2),
        scales: std::array::from_fn(|j| scale_min_k4(j, &b[4..16])),
        // Low nibbles as Q4_K's; bit j of qh[l] is the fifth bit of sub-block j's weight l.
        q: std::array::from_fn(|j| {
            std::array::from_fn(|l| k_nibble(qs, j, l) | (((qh[l] >> j) & 1) << 4))
        }),
    }
}

/// A Q5_K super-block as 8 blocks: sub-block `j` is `d·sc_j · q − dmin·m_j` with 5-bit `q` (the
/// form Q5_K had before [`super::super_blocks::Q5KGroup`]; the tests' reference for it).
#[cfg(test)]
pub fn q5_k_blocks(b: &[u8]) -> [BlockQ5; 8] {
    let p = q5_k_parts(b);
    std::array::from_fn(|j| {
        let (sc, m) = p.scales[j];
        BlockQ5 {
            d: p.d * f32::from(sc),
            m: -(p.dmin * f32::from(m)),
            qs: p.q[j],
        }
    })
}

/// The parts of a super-block with a signed scale per 16 weights (Q3_K, Q6_K): weight `i` is
/// `d·scales[i / 16] · (q[i / 32][i % 32] − bias)`, the bias 4 for Q3_K's 3-bit `q`, 32 for
/// Q6_K's 6-bit `q`.
pub struct SplitParts {
    pub d: f32,
    pub scales: [i8; 16],
    /// The unsigned weights of each block of 32.
    pub q: [[u8; QK]; 8],
}

/// A super-block in [`SplitParts`] as 8 blocks (the form Q3_K and Q6_K had before they were
/// held whole; the tests' reference).
#[cfg(test)]
pub fn split_blocks(p: SplitParts, bias: i8) -> [BlockQ6; 8] {
    std::array::from_fn(|j| BlockQ6 {
        d: [
            p.d * f32::from(p.scales[2 * j]),
            p.d * f32::from(p.scales[2 * j + 1]),
        ],
        qs: std::array::from_fn(|l| p.q[j][l] as i8 - bias),
    })
}

/// A Q3_K super-block (`hmask: [u8; 32]; qs: [u8; 64]; scales: [u8; 12]; d: f16`) in parts
/// (ggml's `dequantize_row_q3_K`: two bits in `qs`, the third in `hmask`, set for `q ≥ 4`;
/// 6-bit scales less 32).
pub fn q3_k_parts(b: &[u8]) -> SplitParts {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    // 16 scales of 6 bits: low 4 bits from bytes 0..8, high 2 bits from bytes 8..12.
    let scale = |i: usize| -> i8 {
        let low = if i < 8 {
            packed[i] & 0x0F
        } else {
            packed[i - 8] >> 4
        };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    };
    SplitParts {
        d: f16_at(b, 108),
        scales: std::array::from_fn(scale),
        // Block j = 4h + s: bits 2s..2s + 2 of qs[32h..32h + 32], the third bit j of hmask.
        q: std::array::from_fn(|j| {
            let (h, shift) = (j / 4, 2 * (j % 4));
            std::array::from_fn(|l| {
                let low = (qs[h * 32 + l] >> shift) & 3;
                low | (((hmask[l] >> j) & 1) << 2)
            })
        }),
    }
}

/// A Q2_K super-block's parts: weight `i` is
/// `d·(scales[i / 16] & 15) · q[i / 32][i % 32] − dmin·(scales[i / 16] >> 4)`.
pub struct Q2KParts {
    pub d: f32,
    pub dmin: f32,
    /// The file's bytes: a 4-bit scale and, above it, a 4-bit min per 16 weights.
    pub scales: [u8; 16],
    /// 2-bit weights of each block of 32.
    pub q: [[u8; QK]; 8],
}

/// A Q2_K super-block (`scales: [u8; 16]; qs: [u8; 64]; d, dmin: f16`) in parts (ggml's
/// `dequantize_row_q2_K`).
pub fn q2_k_parts(b: &[u8]) -> Q2KParts {
    let qs = &b[16..80];
    let mut scales = [0u8; 16];
    scales.copy_from_slice(&b[0..16]);
    Q2KParts {
        d: f16_at(b, 80),
        dmin: f16_at(b, 82),
        scales,
        // Block j = 4h + s: bits 2s..2s + 2 of qs[32h..32h + 32].
        q: std::array::from_fn(|j| {
            let (h, shift) = (j / 4, 2 * (j % 4));
            std::array::from_fn(|l| (qs[h * 32 + l] >> shift) & 3)
        }),
    }
}

/// A Q6_K super-block (`ql: [u8; 128]; qh: [u8; 64]; scales: [i8; 16]; d: f16`) in parts.
pub fn q6_k_parts(b: &[u8]) -> SplitParts {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    // Weight i of the super-block: half h = i / 128, then quarter k = (i % 128) / 32 and l.
    let q = |i: usize| -> u8 {
        let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = ql[h * 64 + (k % 2) * 32 + l];
        let low = if k < 2 { low & 0x0F } else { low >> 4 };
        let high = (qh[h * 32 + l] >> (2 * k)) & 3;
        low | (high << 4)
    };
    SplitParts {
        d: f16_at(b, 208),
        scales: std::array::from_fn(|i| scales[i] as i8),
        q: std::array::from_fn(|j| std::array::from_fn(|l| q(j * QK + l))),
    }
}
