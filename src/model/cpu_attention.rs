//! Attention of single decode rows on the CPU, straight over the slot KV cache: every
//! (row, head) is one task that reads its slot's keys and values in place — no copies, no
//! masks — and computes scores, softmax and the weighted sum in one go.
//!
//! A (row, head) is computed by the same instructions whatever else is in the batch.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::SlotId;

/// One query row: its slot and position (it sees positions `0..=position`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeRow {
    pub slot: SlotId,
    pub position: usize,
}

/// Attention for decode rows: queries `[rows, n_head * head_dim]` (already rotated) against
/// the caches `[slots * ctx, n_kv_head * head_dim]`.
pub struct CpuAttention {
    pub rows: Vec<DecodeRow>,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ctx: usize,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("attention: {what} must be f32");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("attention: {what} must be contiguous");
    };
    Ok(&v[a..b])
}

/// Where one head's keys and values are: row `j` of the head starts at `offset + j * stride`.
struct HeadView<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    offset: usize,
    stride: usize,
    visible: usize,
}

impl CustomOp3 for CpuAttention {
    fn name(&self) -> &'static str {
        "docanalyze-cpu-decode-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let q = slice(qs, ql, "queries")?;
        let keys = slice(ks, kl, "keys")?;
        let values = slice(vs, vl, "values")?;
        let hd = self.head_dim;
        let width = self.n_head * hd;
        let rows = self.rows.len();
        if q.len() != rows * width {
            candle_core::bail!("attention: {} query values for {rows} rows", q.len());
        }
        let group = self.n_head / self.n_kv_head;
        let stride = self.n_kv_head * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; rows * width];
        // One task per (row, head): enough parallelism even for a single sequence.
        out.par_chunks_mut(hd)
            .zip(q.par_chunks(hd))
            .enumerate()
            .for_each_init(Vec::new, |scores, (i, (o, q_head))| {
                let row = self.rows[i / self.n_head];
                let g = (i % self.n_head) / group;
                let view = HeadView {
                    keys,
                    values,
                    offset: row.slot.0 * self.ctx * stride + g * hd,
                    stride,
                    visible: row.position + 1,
                };
                attend(q_head, &view, scale, scores, o);
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, width))))
    }
}

fn attend(q: &[f32], view: &HeadView<'_>, scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu_matmul::avx2_available() {
        match q.len() {
            // SAFETY: AVX2 and FMA were detected; the lengths match the const sizes.
            64 => return unsafe { avx2::attend::<8>(q, view, scale, scores, out) },
            128 => return unsafe { avx2::attend::<16>(q, view, scale, scores, out) },
            _ => {}
        }
    }
    attend_portable(q, view, scale, scores, out);
}

/// Scores, softmax (max-subtracted, then normalized) and the weighted sum of values.
fn attend_portable(
    q: &[f32],
    view: &HeadView<'_>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    scores.clear();
    for j in 0..view.visible {
        let k = &view.keys[view.offset + j * view.stride..][..hd];
        let dot = q.iter().zip(k).fold(0f32, |acc, (a, b)| a.mul_add(*b, acc));
        scores.push(dot * scale);
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (j, s) in scores.iter().enumerate() {
        let p = s / sum;
        let v = &view.values[view.offset + j * view.stride..][..hd];
        for (o, x) in out.iter_mut().zip(v) {
            *o = p.mul_add(*x, *o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::cpu_matmul::avx2_hsum as hsum;
    use super::HeadView;

    /// [`super::attend_portable`] for a head of `8 * N` values, the query and the output
    /// held in registers.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `q.len() == out.len() == 8 * N`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend<const N: usize>(
        q: &[f32],
        view: &HeadView<'_>,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let mut qv = [_mm256_setzero_ps(); N];
        for (c, v) in qv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(q.as_ptr().add(8 * c));
        }
        scores.clear();
        scores.reserve(view.visible);
        let keys = view.keys.as_ptr().add(view.offset);
        let mut max = f32::NEG_INFINITY;
        for j in 0..view.visible {
            let k = keys.add(j * view.stride);
            let mut even = _mm256_setzero_ps();
            let mut odd = _mm256_setzero_ps();
            let mut c = 0;
            while c + 1 < N {
                even = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(k.add(8 * c)), even);
                odd = _mm256_fmadd_ps(qv[c + 1], _mm256_loadu_ps(k.add(8 * c + 8)), odd);
                c += 2;
            }
            let s = hsum(_mm256_add_ps(even, odd)) * scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let mut acc = [_mm256_setzero_ps(); N];
        let values = view.values.as_ptr().add(view.offset);
        for (j, s) in scores.iter().enumerate() {
            let p = _mm256_set1_ps(s / sum);
            let v = values.add(j * view.stride);
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(v.add(8 * c)), *a);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), *a);
        }
    }
}
