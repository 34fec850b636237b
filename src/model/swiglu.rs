//! The feed-forward gate, `silu(gate) · up`, in one pass over the CPU team.
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
        gate.apply_op2_no_bwd(up, &SwiGlu)
    } else {
        candle_nn::ops::silu(gate)? * up
    }
}

/// `silu(g) · u` with `silu(g) = g · sigmoid(g)`, the exponential taken of `-|g|` only.
fn silu_mul(g: f32, u: f32) -> f32 {
    let e = exp(-g.abs());
    let sigmoid = if g >= 0.0 { 1.0 } else { e } / (1.0 + e);
    g * sigmoid * u
}

struct SwiGlu;

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

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "docanalyze-swiglu"
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
                unsafe { avx2::silu_mul(g, u, o) };
                return;
            }
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = silu_mul(g, u);
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
}
