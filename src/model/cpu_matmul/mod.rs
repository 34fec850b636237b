//! The project's own CPU matmul for quantized weights × a batch of activation rows.
//!
//! candle's CPU `QMatMul` streams the whole weight matrix once per activation row, so stacking
//! K sequences into one matmul buys nothing there. Here the activations are quantized once per
//! call to 8-bit blocks, and each weight block is unpacked once into a register and used for a
//! tile of up to 8 rows; tasks split the output rows across the rayon pool. Every output
//! value is computed by the same sequence of operations whatever the batch size, so a row's
//! result never depends on which other rows share its step.

mod avx2;
mod blocks;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use blocks::{quantize_rows, BlockQ4_0, BlockQ4_1, BlockQ8, BlockQ8_0, WeightBlock, QK};

pub use avx2::available as avx2_available;

/// Rows of activations processed against one unpacked weight block.
const MAX_TILE: usize = 8;

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
        let acts = quantize_rows(x);
        let mut y = vec![0f32; rows * self.out_features];
        match &*self.packed {
            Packed::Q4_0(w) => self.run(w, &acts, rows, &mut y),
            Packed::Q4_1(w) => self.run(w, &acts, rows, &mut y),
            Packed::Q8_0(w) => self.run(w, &acts, rows, &mut y),
        }
        y
    }

    fn run<B: Kernel>(&self, w: &[B], acts: &[BlockQ8], rows: usize, y: &mut [f32]) {
        let nb = self.in_features / QK;
        let out = self.out_features;
        let threads = rayon::current_num_threads().max(1);
        // Enough tasks to balance the pool, each big enough to amortize its scheduling.
        let per_task = out.div_ceil(threads * 4).max(16);
        let y_ptr = SharedOut(y.as_mut_ptr());
        (0..out.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let o0 = task * per_task;
                let o1 = (o0 + per_task).min(out);
                let w_rows = &w[o0 * nb..o1 * nb];
                let mut scratch = vec![0f32; (o1 - o0) * MAX_TILE];
                let mut r0 = 0;
                while r0 < rows {
                    let t = (rows - r0).min(MAX_TILE);
                    let tile_acts = &acts[r0 * nb..(r0 + t) * nb];
                    let scratch = &mut scratch[..(o1 - o0) * t];
                    compute_tile(w_rows, nb, t, tile_acts, scratch);
                    for (o, vals) in scratch.chunks_exact(t).enumerate() {
                        for (i, v) in vals.iter().enumerate() {
                            // SAFETY: tasks write disjoint output columns o0..o1.
                            unsafe { *y_ptr.at((r0 + i) * out + o0 + o) = *v };
                        }
                    }
                    r0 += t;
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

/// `out[o * t + i] = row i of acts · weight row o`, for `t` rows of `nb` blocks each.
fn compute_tile<B: Kernel>(w_rows: &[B], nb: usize, t: usize, acts: &[BlockQ8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        macro_rules! tiles {
            ($($n:literal)*) => {
                match t {
                    // SAFETY: AVX2 and FMA were detected at run time.
                    $($n => unsafe { avx2::tile::<B, $n>(w_rows, nb, acts, out) },)*
                    _ => unreachable!("tile of {t} rows"),
                }
            };
        }
        tiles!(1 2 3 4 5 6 7 8);
        return;
    }
    for (o, w_row) in w_rows.chunks_exact(nb).enumerate() {
        for (i, a_row) in acts.chunks_exact(nb).enumerate() {
            let mut sum = 0f32;
            for (wb, ab) in w_row.iter().zip(a_row) {
                sum += wb.dot(ab);
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
    use candle_core::{Device, Module, Tensor};
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Every type against a dequantize-then-f64 reference, for odd sizes and batch 1..=17.
    #[test]
    fn matches_dequantized_reference() {
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
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
                            let exact: f64 = (0..inp)
                                .map(|i| x[r * inp + i] as f64 * wd[o * inp + i] as f64)
                                .sum();
                            let scale: f64 = (0..inp)
                                .map(|i| (x[r * inp + i] as f64 * wd[o * inp + i] as f64).abs())
                                .sum();
                            let err = (y[r * out + o] as f64 - exact).abs();
                            // 8-bit activations: ≤ 1/254 relative error per element, plus f16 scales.
                            assert!(
                                err <= scale * 0.01 + 1e-4,
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
    fn agrees_with_candle_qmatmul() {
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4_0] {
            let (out, inp, rows) = (48, 576, 5);
            let w = Tensor::from_vec(random(out * inp, 3), (out, inp), &dev).unwrap();
            let qw = QTensor::quantize(&w, dtype).unwrap();
            let k = CpuQMatMul::from_qtensor(&qw).unwrap().unwrap();
            let x = random(rows * inp, 4);
            let ours = k.matmul(&x);
            let xt = Tensor::from_vec(x, (rows, inp), &dev).unwrap();
            let theirs: Vec<f32> = candle_core::quantized::QMatMul::from_qtensor(qw)
                .unwrap()
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{dtype:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch() {
        let dev = Device::Cpu;
        let (out, inp) = (40, 128);
        let w = Tensor::from_vec(random(out * inp, 5), (out, inp), &dev).unwrap();
        let k = CpuQMatMul::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q4_1).unwrap())
            .unwrap()
            .unwrap();
        let x = random(13 * inp, 6);
        let batched = k.matmul(&x);
        for r in 0..13 {
            let alone = k.matmul(&x[r * inp..(r + 1) * inp]);
            assert_eq!(alone, batched[r * out..(r + 1) * out]);
        }
    }
}
