//! Attention on the CPU straight over the slot KV cache: each query row of each sequence
//! reads its own slot's keys and values in place, no copies, no masks.
//!
//! Every (row, head) is computed by the same loop whatever else is in the batch, so a
//! sequence's result never depends on how its prompt was chunked or who shared its step.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::batch::Segment;

/// Attention for one batch: queries `[rows, n_head * head_dim]` (already rotated) against
/// the caches `[slots * ctx, n_kv_head * head_dim]`.
pub struct CpuAttention {
    pub segments: Vec<Segment>,
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

/// Σ a·b in 8 independent fused multiply-add lanes summed in a fixed order: vectorizes
/// without reordering, so the result is the same on every call.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] = a[c * 8 + l].mul_add(b[c * 8 + l], acc[l]);
        }
    }
    let mut sum = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in chunks * 8..a.len() {
        sum = a[i].mul_add(b[i], sum);
    }
    sum
}

impl CpuAttention {
    /// One (row, kv head) item, compiled for AVX2 where the CPU has it.
    #[allow(clippy::too_many_arguments)]
    fn head_group(
        &self,
        q_row: &[f32],
        keys: &[f32],
        values: &[f32],
        base: usize,
        visible: usize,
        g: usize,
        out: &mut [f32],
        scores: &mut Vec<f32>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::cpu_matmul::avx2_available() {
            // SAFETY: AVX2 and FMA were detected at run time.
            unsafe { self.head_group_avx2(q_row, keys, values, base, visible, g, out, scores) };
            return;
        }
        self.head_group_portable(q_row, keys, values, base, visible, g, out, scores);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn head_group_avx2(
        &self,
        q_row: &[f32],
        keys: &[f32],
        values: &[f32],
        base: usize,
        visible: usize,
        g: usize,
        out: &mut [f32],
        scores: &mut Vec<f32>,
    ) {
        self.head_group_portable(q_row, keys, values, base, visible, g, out, scores);
    }

    /// The `group` query heads sharing K/V head `g`, for one query row.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn head_group_portable(
        &self,
        q_row: &[f32],
        keys: &[f32],
        values: &[f32],
        base: usize,
        visible: usize,
        g: usize,
        out: &mut [f32],
        scores: &mut Vec<f32>,
    ) {
        let hd = self.head_dim;
        let kv_dim = self.n_kv_head * hd;
        let group = self.n_head / self.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        for h in g * group..(g + 1) * group {
            let q = &q_row[h * hd..(h + 1) * hd];
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for j in 0..visible {
                let k = &keys[(base + j) * kv_dim + g * hd..][..hd];
                let s = dot(q, k) * scale;
                max = max.max(s);
                scores.push(s);
            }
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let o = &mut out[h * hd..(h + 1) * hd];
            o.fill(0.0);
            for (j, s) in scores.iter().enumerate() {
                let p = s / sum;
                let v = &values[(base + j) * kv_dim + g * hd..][..hd];
                for (od, vd) in o.iter_mut().zip(v) {
                    *od = p.mul_add(*vd, *od);
                }
            }
        }
    }
}

impl CustomOp3 for CpuAttention {
    fn name(&self) -> &'static str {
        "docanalyze-cpu-attention"
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
        let width = self.n_head * self.head_dim;
        let rows = q.len() / width;
        let mut out = vec![0f32; rows * width];
        // One task per query row; each writes only its own output row.
        let row_segment: Vec<&Segment> = self
            .segments
            .iter()
            .flat_map(|s| std::iter::repeat_n(s, s.len))
            .collect();
        out.par_chunks_mut(width)
            .zip(q.par_chunks(width))
            .zip(row_segment.par_iter())
            .enumerate()
            .for_each_init(Vec::new, |scores, (r, ((o, q_row), seg))| {
                let visible = seg.first_position + (r - seg.start) + 1;
                let base = seg.slot.0 * self.ctx;
                for g in 0..self.n_kv_head {
                    self.head_group(q_row, keys, values, base, visible, g, o, scores);
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, width))))
    }
}
