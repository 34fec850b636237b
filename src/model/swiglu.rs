//! The feed-forward gate, `silu(gate) · up` (SwiGLU) or `gelu_tanh(gate) · up` (Gemma's
//! GeGLU), in one pass over the CPU team.
//!
//! candle computes it as two ops over strided views (the gate and up halves of one matmul
//! output), each through rayon, which the spinning team of a forward pass answers slowly: in
//! prefill they cost about a fifth of the time. Here every element is read once, the
//! sigmoid's exponential is the vectorized one of [`super::causal_softmax`], and the rows are
//! split into team tasks. Elementwise, so a row's values never depend on its batch.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::causal_softmax::exp;
use super::team::{self, SharedOut};

/// Elements per task.
const CHUNK: usize = 2048;

/// `silu(gate) · up` for `[rows, n]` tensors (views with unit column stride, such as the
/// halves of a joint matmul output).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.device().is_cpu() {
        gate.apply_op2_no_bwd(up, &Gated(Activation::Silu))
    } else {
        candle_nn::ops::silu(gate)? * up
    }
}

/// `gelu(gate) · up` with GELU's tanh approximation, for `[rows, n]` tensors as [`swiglu`].
pub fn geglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.device().is_cpu() {
        gate.apply_op2_no_bwd(up, &Gated(Activation::GeluTanh))
    } else {
        gate.gelu()? * up
    }
}

/// √(2/π) and the cubic term's factor of GELU's tanh approximation.
const GELU_A: f32 = 0.797_884_6;
const GELU_B: f32 = 0.044_715;

/// `gelu(g) · u`, `gelu(g) = g/2 · (1 + tanh(a·(g + b·g³)))`, where
/// `1 + tanh(y) = 2 / (1 + e^(−2y))`, the exponential taken of a non-positive number only.
fn gelu_mul(g: f32, u: f32) -> f32 {
    let y = GELU_A * g * GELU_B.mul_add(g * g, 1.0);
    let e = exp(-2.0 * y.abs());
    // 1 + tanh(y): 2/(1 + e) for y ≥ 0, 2e/(1 + e) for y < 0.
    let one_plus_tanh = 2.0 * if y >= 0.0 { 1.0 } else { e } / (1.0 + e);
    0.5 * g * one_plus_tanh * u
}

/// `silu(g) · u` with `silu(g) = g · sigmoid(g)`, the exponential taken of `-|g|` only.
fn silu_mul(g: f32, u: f32) -> f32 {
    let e = exp(-g.abs());
    let sigmoid = if g >= 0.0 { 1.0 } else { e } / (1.0 + e);
    g * sigmoid * u
}

#[derive(Clone, Copy)]
enum Activation {
    Silu,
    GeluTanh,
}

struct Gated(Activation);

/// A `[rows, n]` f32 input whose rows are contiguous: `(values, offset, row stride, rows, n)`.
fn rows_of<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<(&'a [f32], usize, usize, usize, usize)> {
    let Ok(values) = storage.as_slice::<f32>() else {
        candle_core::bail!("{what} must be f32");
    };
    let (&[rows, n], &[stride, 1]) = (layout.dims(), layout.stride()) else {
        candle_core::bail!("{what} must be rows of contiguous values: {layout:?}");
    };
    if rows > 0 && layout.start_offset() + (rows - 1) * stride + n > values.len() {
        candle_core::bail!("{what}: layout {layout:?} outside its storage");
    }
    Ok((values, layout.start_offset(), stride, rows, n))
}

impl CustomOp2 for Gated {
    fn name(&self) -> &'static str {
        "docanalyze-gated-unit"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, g0, g_stride, rows, n) = rows_of(gs, gl, "swiglu: gate")?;
        let (u, u0, u_stride, u_rows, u_n) = rows_of(us, ul, "swiglu: up")?;
        if (rows, n) != (u_rows, u_n) {
            candle_core::bail!("swiglu: gate {rows}x{n} vs up {u_rows}x{u_n}");
        }
        let mut out = vec![0f32; rows * n];
        let per_row = n.div_ceil(CHUNK).max(1);
        let shared = SharedOut(out.as_mut_ptr());
        team::for_each(rows * per_row, |i| {
            let (r, c0) = (i / per_row, i % per_row * CHUNK);
            let len = CHUNK.min(n - c0);
            let g = &g[g0 + r * g_stride + c0..][..len];
            let u = &u[u0 + r * u_stride + c0..][..len];
            // SAFETY: task i alone writes row r's columns c0..c0 + len, inside `out`.
            let o = unsafe { shared.slice(r * n + c0, len) };
            #[cfg(target_arch = "x86_64")]
            if super::cpu_matmul::avx2_available() {
                // SAFETY: AVX2 and FMA were detected at run time; the slices have len values.
                match self.0 {
                    Activation::Silu => unsafe { avx2::silu_mul(g, u, o) },
                    Activation::GeluTanh => unsafe { avx2::gelu_mul(g, u, o) },
                }
                return;
            }
            let f = match self.0 {
                Activation::Silu => silu_mul,
                Activation::GeluTanh => gelu_mul,
            };
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = f(g, u);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::causal_softmax::avx2::exp8;

    /// [`super::silu_mul`] on eight lanes at a time (the tail one by one).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `g`, `u` and `out` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
        let n = out.len();
        let sign = _mm256_set1_ps(-0.0);
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= n {
            let gv = _mm256_loadu_ps(g.as_ptr().add(i));
            let e = exp8(_mm256_or_ps(gv, sign)); // e^(-|g|)
            let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(gv, _mm256_setzero_ps());
            let sigmoid = _mm256_div_ps(_mm256_blendv_ps(one, e, negative), _mm256_add_ps(one, e));
            let v = _mm256_mul_ps(
                _mm256_mul_ps(gv, sigmoid),
                _mm256_loadu_ps(u.as_ptr().add(i)),
            );
            _mm256_storeu_ps(out.as_mut_ptr().add(i), v);
            i += 8;
        }
        for j in i..n {
            out[j] = super::silu_mul(g[j], u[j]);
        }
    }

    /// [`super::gelu_mul`] on eight lanes at a time (the tail one by one).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `g`, `u` and `out` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
        let n = out.len();
        let sign = _mm256_set1_ps(-0.0);
        let (a, b) = (_mm256_set1_ps(super::GELU_A), _mm256_set1_ps(super::GELU_B));
        let (one, two, half) = (
            _mm256_set1_ps(1.0),
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(0.5),
        );
        let mut i = 0;
        while i + 8 <= n {
            let gv = _mm256_loadu_ps(g.as_ptr().add(i));
            let y = _mm256_mul_ps(
                _mm256_mul_ps(a, gv),
                _mm256_fmadd_ps(b, _mm256_mul_ps(gv, gv), one),
            );
            let e = exp8(_mm256_mul_ps(two, _mm256_or_ps(y, sign))); // e^(-2|y|)
            let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(y, _mm256_setzero_ps());
            let one_plus_tanh = _mm256_div_ps(
                _mm256_mul_ps(two, _mm256_blendv_ps(one, e, negative)),
                _mm256_add_ps(one, e),
            );
            let v = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_mul_ps(half, gv), one_plus_tanh),
                _mm256_loadu_ps(u.as_ptr().add(i)),
            );
            _mm256_storeu_ps(out.as_mut_ptr().add(i), v);
            i += 8;
        }
        for j in i..n {
            out[j] = super::gelu_mul(g[j], u[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against candle's `silu(g) * u` on halves of one joint tensor (strided views), both
    /// signs and large magnitudes, with a length that leaves a tail.
    #[test]
    fn matches_candle_on_strided_halves() {
        let (rows, n) = (3, 2 * CHUNK + 13);
        let values: Vec<f32> = (0..rows * 2 * n)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 25.0)
            .collect();
        let joint = Tensor::from_vec(values, (rows, 2 * n), &Device::Cpu).unwrap();
        let (gate, up) = (
            joint.narrow(1, 0, n).unwrap(),
            joint.narrow(1, n, n).unwrap(),
        );
        let got: Vec<Vec<f32>> = swiglu(&gate, &up).unwrap().to_vec2().unwrap();
        let want: Vec<Vec<f32>> = (candle_nn::ops::silu(&gate).unwrap() * &up)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (r, (got, want)) in got.iter().zip(&want).enumerate() {
            for (c, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 2e-6 * w.abs().max(1e-6),
                    "row {r} column {c}: {g} vs {w}"
                );
            }
        }
    }

    /// GeGLU against GELU's tanh formula in f64, both signs, large magnitudes and a tail.
    #[test]
    fn geglu_matches_the_tanh_formula() {
        let (rows, n) = (2, CHUNK + 11);
        let values: Vec<f32> = (0..rows * 2 * n)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 80.0)
            .collect();
        let joint = Tensor::from_vec(values.clone(), (rows, 2 * n), &Device::Cpu).unwrap();
        let (gate, up) = (
            joint.narrow(1, 0, n).unwrap(),
            joint.narrow(1, n, n).unwrap(),
        );
        let got: Vec<Vec<f32>> = geglu(&gate, &up).unwrap().to_vec2().unwrap();
        for (r, got) in got.iter().enumerate() {
            for (c, g) in got.iter().enumerate() {
                let (x, u) = (
                    values[r * 2 * n + c] as f64,
                    values[r * 2 * n + n + c] as f64,
                );
                let gelu = 0.5
                    * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x))
                            .tanh());
                let want = gelu * u;
                assert!(
                    (*g as f64 - want).abs() <= 1e-5 * want.abs().max(1e-3),
                    "row {r} column {c}: {g} vs {want}"
                );
            }
        }
    }
}
