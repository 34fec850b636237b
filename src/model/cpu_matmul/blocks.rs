//! GGUF weight blocks (Q4_0, Q4_1, Q8_0), decoded from their file bytes once at load time.

use half::f16;

/// Weights per block, for every type handled here.
pub const QK: usize = 32;

/// A weight block.
pub trait WeightBlock: Copy + Send + Sync + 'static {
    /// Bytes of one block in the GGUF file.
    const BYTES: usize;
    fn read(bytes: &[u8]) -> Self;
    /// The 32 weights as f32, `w[i]` = weight `i` of the block (the portable path).
    fn dequantize(&self) -> [f32; QK];
}

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

fn nibbles(qs: &[u8; 16], f: impl Fn(f32) -> f32) -> [f32; QK] {
    let mut w = [0f32; QK];
    for j in 0..16 {
        w[j] = f(f32::from(qs[j] & 0x0F));
        w[j + 16] = f(f32::from(qs[j] >> 4));
    }
    w
}

impl WeightBlock for BlockQ4_0 {
    const BYTES: usize = 18;
    fn read(b: &[u8]) -> Self {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[2..18]);
        Self {
            d: f16_at(b, 0),
            qs,
        }
    }
    fn dequantize(&self) -> [f32; QK] {
        nibbles(&self.qs, |q| (q - 8.0) * self.d)
    }
}

impl WeightBlock for BlockQ4_1 {
    const BYTES: usize = 20;
    fn read(b: &[u8]) -> Self {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[4..20]);
        Self {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qs,
        }
    }
    fn dequantize(&self) -> [f32; QK] {
        nibbles(&self.qs, |q| q.mul_add(self.d, self.m))
    }
}

impl WeightBlock for BlockQ8_0 {
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
    fn dequantize(&self) -> [f32; QK] {
        self.qs.map(|q| f32::from(q) * self.d)
    }
}
