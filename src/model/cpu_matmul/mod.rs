//! The project's own CPU matmul for quantized weights × a batch of f32 activation rows.
//!
//! candle's CPU `QMatMul` streams the whole weight matrix once per activation row, so stacking
//! K sequences into one matmul buys nothing there. Here each weight block is dequantized once
//! into registers and multiplied into a tile of up to 4 activation rows; weight rows are
//! visited in L1-sized chunks by every tile, and tasks split the output rows over the rayon
//! pool. Activations stay f32 (no 8-bit rounding), so results are the f32 product of the
//! quantized weights up to summation order — and that order is the same for every output
//! whatever the batch, so a row's result never depends on which rows share its step.

mod avx2;
mod blocks;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, WeightBlock, QK};

pub use avx2::available as avx2_available;

/// Activation rows multiplied with one dequantized weight block.
const MAX_TILE: usize = 4;
/// Weight rows visited together by all tiles of activation rows (L1-sized).
const W_CHUNK: usize = 16;

#[cfg(target_arch = "x86_64")]
trait Kernel: avx2::Avx2Block {}
#[cfg(target_arch = "x86_64")]
impl<B: avx2::Avx2Block> Kernel for B {}
#[cfg(not(target_arch = "x86_64"))]
trait Kernel: WeightBlock {}
#[cfg(not(target_arch = "x86_64"))]
impl<B: WeightBlock> Kernel for B {}

#[derive(Debug)]
enum Packed {
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
}

/// A quantized weight matrix `[out_features, in_features]` in decoded block form.
#[derive(Debug, Clone)]
pub struct CpuQMatMul {
    packed: Arc<Packed>,
    out_features: usize,
    in_features: usize,
}

fn decode<B: WeightBlock>(bytes: &[u8]) -> Vec<B> {
    bytes.chunks_exact(B::BYTES).map(B::read).collect()
}

impl CpuQMatMul {
    /// The weights in kernel form, or `None` for a type this kernel does not cover.
    pub fn from_qtensor(qt: &QTensor) -> candle_core::Result<Option<Self>> {
        let (out_features, in_features) = qt.shape().dims2()?;
        if in_features % QK != 0 {
            return Ok(None);
        }
        let data = qt.data()?;
        let packed = match qt.dtype() {
            GgmlDType::Q4_0 => Packed::Q4_0(decode(&data)),
            GgmlDType::Q4_1 => Packed::Q4_1(decode(&data)),
            GgmlDType::Q8_0 => Packed::Q8_0(decode(&data)),
            _ => return Ok(None),
        };
        Ok(Some(Self {
            packed: Arc::new(packed),
            out_features,
            in_features,
        }))
    }

    /// `y = x · Wᵀ` for `x` of `rows × in_features`; returns `rows × out_features`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.in_features;
        let mut y = vec![0f32; rows * self.out_features];
        match &*self.packed {
            Packed::Q4_0(w) => self.run(w, x, rows, &mut y),
            Packed::Q4_1(w) => self.run(w, x, rows, &mut y),
            Packed::Q8_0(w) => self.run(w, x, rows, &mut y),
        }
        y
    }

    fn run<B: Kernel>(&self, w: &[B], x: &[f32], rows: usize, y: &mut [f32]) {
        let cols = self.in_features;
        let nb = cols / QK;
        let out = self.out_features;
        let threads = rayon::current_num_threads().max(1);
        // Enough tasks to balance the pool, each big enough to amortize its scheduling.
        let per_task = out.div_ceil(threads * 4).max(W_CHUNK);
        let y_ptr = SharedOut(y.as_mut_ptr());
        (0..out.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let task_end = (task * per_task + per_task).min(out);
                let mut scratch = [0f32; W_CHUNK * MAX_TILE];
                let mut o0 = task * per_task;
                while o0 < task_end {
                    let o1 = (o0 + W_CHUNK).min(task_end);
                    let w_rows = &w[o0 * nb..o1 * nb];
                    let mut r0 = 0;
                    while r0 < rows {
                        let t = (rows - r0).min(MAX_TILE);
                        let scratch = &mut scratch[..(o1 - o0) * t];
                        compute_tile(w_rows, cols, t, &x[r0 * cols..(r0 + t) * cols], scratch);
                        for (o, vals) in scratch.chunks_exact(t).enumerate() {
                            for (i, v) in vals.iter().enumerate() {
                                // SAFETY: tasks write disjoint output columns.
                                unsafe { *y_ptr.at((r0 + i) * out + o0 + o) = *v };
                            }
                        }
                        r0 += t;
                    }
                    o0 = o1;
                }
            });
    }
}

/// The output buffer, shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
impl SharedOut {
    /// # Safety
    /// `i` in bounds, and no other task writes element `i`.
    unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

/// `out[o * t + i] = x row i · weight row o`, for `t` rows of `cols` activations.
fn compute_tile<B: Kernel>(w_rows: &[B], cols: usize, t: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        macro_rules! tiles {
            ($($n:literal)*) => {
                match t {
                    // SAFETY: AVX2 and FMA were detected at run time; x holds t rows.
                    $($n => unsafe { avx2::tile::<B, $n>(w_rows, cols, x, out) },)*
                    _ => unreachable!("tile of {t} rows"),
                }
            };
        }
        tiles!(1 2 3 4);
        return;
    }
    let nb = cols / QK;
    for (o, w_row) in w_rows.chunks_exact(nb).enumerate() {
        for (i, x_row) in x.chunks_exact(cols).enumerate() {
            let mut sum = 0f32;
            for (wb, xb) in w_row.iter().zip(x_row.chunks_exact(QK)) {
                for (w, x) in wb.dequantize().iter().zip(xb) {
                    sum = x.mul_add(*w, sum);
                }
            }
            out[o * t + i] = sum;
        }
    }
}

impl CustomOp1 for CpuQMatMul {
    fn name(&self) -> &'static str {
        "docanalyze-cpu-qmatmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = storage else {
            candle_core::bail!("quantized matmul expects f32 activations");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("quantized matmul expects contiguous activations");
        };
        let dims = layout.shape().dims();
        if dims.last() != Some(&self.in_features) {
            candle_core::bail!(
                "quantized matmul: activations {:?} do not match weights [{}, {}]",
                dims,
                self.out_features,
                self.in_features
            );
        }
        let y = self.matmul(&x[start..end]);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("non-empty dims") = self.out_features;
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    const TYPES: [GgmlDType; 3] = [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0];

    /// Every type against a dequantize-then-f64 reference, for odd sizes and batch 1..=17.
    #[test]
    fn matches_dequantized_reference() {
        let dev = Device::Cpu;
        for dtype in TYPES {
            for (out, inp) in [(7usize, 32usize), (37, 96), (65, 160)] {
                let w = Tensor::from_vec(random(out * inp, 1), (out, inp), &dev).unwrap();
                let qw = QTensor::quantize(&w, dtype).unwrap();
                let wd: Vec<f32> = qw
                    .dequantize(&dev)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let k = CpuQMatMul::from_qtensor(&qw).unwrap().unwrap();
                for rows in 1..=17 {
                    let x = random(rows * inp, 2 + rows as u64);
                    let y = k.matmul(&x);
                    for r in 0..rows {
                        for o in 0..out {
                            let (exact, scale) = (0..inp).fold((0f64, 0f64), |(e, s), i| {
                                let p = x[r * inp + i] as f64 * wd[o * inp + i] as f64;
                                (e + p, s + p.abs())
                            });
                            // f32 activations: only f32 rounding of the products and sums.
                            let err = (y[r * out + o] as f64 - exact).abs();
                            assert!(
                                err <= scale * 1e-6 + 1e-6,
                                "{dtype:?} {out}x{inp} rows={rows} r={r} o={o}: {} vs {exact}",
                                y[r * out + o]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch() {
        let dev = Device::Cpu;
        let (out, inp) = (40, 128);
        for dtype in TYPES {
            let w = Tensor::from_vec(random(out * inp, 5), (out, inp), &dev).unwrap();
            let k = CpuQMatMul::from_qtensor(&QTensor::quantize(&w, dtype).unwrap())
                .unwrap()
                .unwrap();
            let x = random(13 * inp, 6);
            let batched = k.matmul(&x);
            for r in 0..13 {
                let alone = k.matmul(&x[r * inp..(r + 1) * inp]);
                assert_eq!(alone, batched[r * out..(r + 1) * out], "{dtype:?} row {r}");
            }
        }
    }
}
