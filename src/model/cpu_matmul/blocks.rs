//! GGUF weight blocks (Q4_0, Q4_1, Q8_0) and the 8-bit activation blocks they are dotted with.

use half::f16;

/// Elements per block, for every type handled here.
pub const QK: usize = 32;

/// 32 activations quantized to int8: `x ≈ d * qs`, `s ≈ d * Σ qs` (llama.cpp's Q8_1; the
/// sum serves the min term of Q4_1). `d` and `s` are rounded through f16 exactly as candle's
/// `BlockQ8_1` does, so results agree with candle's `QMatMul` (the GPU path) and with the
/// llama.cpp reference outputs the tests check.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8 {
    pub qs: [i8; QK],
    pub d: f32,
    pub s: f32,
}

impl BlockQ8 {
    const ZERO: Self = Self {
        qs: [0; QK],
        d: 0.0,
        s: 0.0,
    };

    #[inline(always)]
    pub fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), QK);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        let mut sum = 0i32;
        for (q, v) in qs.iter_mut().zip(x) {
            // round half away from zero, like C's roundf
            *q = (v * id).round() as i8;
            sum += i32::from(*q);
        }
        let d16 = f16::from_f32(d).to_f32();
        Self {
            qs,
            d: d16,
            s: (f16::from_f32(sum as f32) * f16::from_f32(d)).to_f32(),
        }
    }
}

/// Quantizes rows of activations (each row a multiple of 32 long), block after block.
pub fn quantize_rows(x: &[f32]) -> Vec<BlockQ8> {
    use rayon::prelude::*;
    const BLOCKS_PER_TASK: usize = 128;
    let mut out = vec![BlockQ8::ZERO; x.len() / QK];
    if out.len() <= BLOCKS_PER_TASK {
        quantize_into(x, &mut out);
    } else {
        out.par_chunks_mut(BLOCKS_PER_TASK)
            .zip(x.par_chunks(BLOCKS_PER_TASK * QK))
            .for_each(|(o, x)| quantize_into(x, o));
    }
    out
}

fn quantize_into(x: &[f32], out: &mut [BlockQ8]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe { quantize_into_avx2(x, out) };
        return;
    }
    quantize_into_portable(x, out);
}

/// The same code compiled for AVX2 (vectorized max and rounding; same results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_into_avx2(x: &[f32], out: &mut [BlockQ8]) {
    quantize_into_portable(x, out);
}

#[inline(always)]
fn quantize_into_portable(x: &[f32], out: &mut [BlockQ8]) {
    for (o, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        *o = BlockQ8::quantize(x);
    }
}

/// A weight block: decoded from its GGUF bytes once, at load time.
pub trait WeightBlock: Copy + Send + Sync + 'static {
    /// Bytes of one block in the GGUF file.
    const BYTES: usize;
    fn read(bytes: &[u8]) -> Self;
    /// Exact dot product with an activation block (the portable path).
    fn dot(&self, a: &BlockQ8) -> f32;
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `x = d * (q - 8)`, q in 0..16; low nibbles are elements 0..16, high nibbles 16..32.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ4_0 {
    pub d: f32,
    pub qs: [u8; 16],
}

/// `x = d * q + m`, q in 0..16; nibble order as Q4_0.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ4_1 {
    pub d: f32,
    pub m: f32,
    pub qs: [u8; 16],
}

/// `x = d * q`, q in -128..128.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ8_0 {
    pub d: f32,
    pub qs: [i8; QK],
}

fn nibble_dot(qs: &[u8; 16], a: &[i8; QK]) -> i32 {
    let mut sum = 0i32;
    for j in 0..16 {
        sum += i32::from(qs[j] & 0x0F) * i32::from(a[j]);
        sum += i32::from(qs[j] >> 4) * i32::from(a[j + 16]);
    }
    sum
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
    fn dot(&self, a: &BlockQ8) -> f32 {
        let mut sum = 0i32;
        for j in 0..16 {
            sum += (i32::from(self.qs[j] & 0x0F) - 8) * i32::from(a.qs[j]);
            sum += (i32::from(self.qs[j] >> 4) - 8) * i32::from(a.qs[j + 16]);
        }
        sum as f32 * (self.d * a.d)
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
    fn dot(&self, a: &BlockQ8) -> f32 {
        nibble_dot(&self.qs, &a.qs) as f32 * (self.d * a.d) + self.m * a.s
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
    fn dot(&self, a: &BlockQ8) -> f32 {
        let sum: i32 = self
            .qs
            .iter()
            .zip(&a.qs)
            .map(|(&w, &x)| i32::from(w) * i32::from(x))
            .sum();
        sum as f32 * (self.d * a.d)
    }
}
