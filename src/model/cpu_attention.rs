//! Attention of single decode rows on the CPU, straight over the slot KV cache: every
//! (row, key/value head, span of up to [`SPAN`] keys) is one task that reads its keys and
//! values in place — no copies, no masks — once for all the query heads that share them
//! (grouped-query attention), and computes scores, softmax and the weighted sums in one go.
//! A second pass merges each row's spans (flash-decoding's rescaling by the spans' largest
//! scores), so one long document's row keeps every core busy instead of one task per K/V
//! head.
//!
//! A row is computed by the same instructions whatever else is in the batch: its spans
//! depend only on its own position.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use half::f16;

use super::cpu_storage::contiguous;
use super::SlotId;

/// One query row: its slot and position (it sees positions `0..=position`, the last `window`
/// of them in a local layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeRow {
    pub slot: SlotId,
    pub position: usize,
}

/// Attention for decode rows: queries `[rows, n_head * head_dim]` (already rotated) against
/// the caches `[slots * ctx, n_kv_head * head_dim]` (f16).
#[derive(Clone)]
pub struct CpuAttention {
    pub rows: Vec<DecodeRow>,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ctx: usize,
    /// Multiplies the scores.
    pub scale: f32,
    /// Keys a row sees, itself included (a sliding-window layer); all of its prefix if `None`.
    pub window: Option<usize>,
}

impl CpuAttention {
    /// The first key `row` sees.
    fn first_key(&self, row: &DecodeRow) -> usize {
        self.window
            .map_or(0, |w| (row.position + 1).saturating_sub(w))
    }
}

thread_local! {
    /// Each thread's buffer of attention scores, reused across tasks and steps.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keys per task.
const SPAN: usize = 256;

/// Where one head's keys and values are (row `j` of the head starts at `offset + j * stride`)
/// and which of them a task reads: `start..end`.
struct HeadView<'a> {
    keys: &'a [f16],
    values: &'a [f16],
    offset: usize,
    stride: usize,
    start: usize,
    end: usize,
}

/// A span's result for one query head: its largest score `max`, `sum` = Σ e^(score − max),
/// and (in the `hd` values after these two) Σ e^(score − max) · value.
const PARTIAL_HEAD: usize = 2;

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
        let q = contiguous::<f32>(qs, ql, "attention: queries")?;
        let keys = contiguous::<f16>(ks, kl, "attention: keys")?;
        let values = contiguous::<f16>(vs, vl, "attention: values")?;
        let hd = self.head_dim;
        let width = self.n_head * hd;
        let rows = self.rows.len();
        if q.len() != rows * width {
            candle_core::bail!("attention: {} query values for {rows} rows", q.len());
        }
        let group = self.n_head / self.n_kv_head;
        let stride = self.n_kv_head * hd;
        let scale = self.scale;
        // Tasks: (row, K/V head, span); each writes `group` partial heads.
        let spans: Vec<usize> = self
            .rows
            .iter()
            .map(|r| (r.position + 1 - self.first_key(r)).div_ceil(SPAN))
            .collect();
        let first_task: Vec<usize> = spans
            .iter()
            .scan(0, |n, s| {
                let first = *n;
                *n += s * self.n_kv_head;
                Some(first)
            })
            .collect();
        let tasks = first_task
            .last()
            .map_or(0, |f| f + spans[rows - 1] * self.n_kv_head);
        let per_task = group * (PARTIAL_HEAD + hd);
        let mut partial = vec![0f32; tasks * per_task];
        let partial_ptr = super::team::SharedOut(partial.as_mut_ptr());
        super::team::for_each(tasks, |t| {
            let r = first_task.partition_point(|&f| f <= t) - 1;
            let (row, local) = (self.rows[r], t - first_task[r]);
            let (g, span) = (local / spans[r], local % spans[r]);
            let first = self.first_key(&row) + span * SPAN;
            let view = HeadView {
                keys,
                values,
                offset: row.slot.0 * self.ctx * stride + g * hd,
                stride,
                start: first,
                end: (first + SPAN).min(row.position + 1),
            };
            let q0 = r * width + g * group * hd;
            // SAFETY: task t alone writes partial[t * per_task..(t + 1) * per_task].
            let o = unsafe { partial_ptr.slice(t * per_task, per_task) };
            SCORES.with_borrow_mut(|scores| {
                attend_group(&q[q0..q0 + group * hd], hd, &view, scale, scores, o)
            });
        });
        // Merge each (row, query head)'s spans, in order.
        let mut out = vec![0f32; rows * width];
        let out_ptr = super::team::SharedOut(out.as_mut_ptr());
        super::team::for_each(rows * self.n_kv_head, |i| {
            let (r, g) = (i / self.n_kv_head, i % self.n_kv_head);
            let first = first_task[r] + g * spans[r];
            let parts = &partial[first * per_task..(first + spans[r]) * per_task];
            for h in 0..group {
                // SAFETY: (r, g) alone writes its group's heads of row r.
                let o = unsafe { out_ptr.slice(r * width + (g * group + h) * hd, hd) };
                merge_spans(parts, per_task, h * (PARTIAL_HEAD + hd), o);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, width))))
    }
}

/// `out` = the softmax-weighted values of one query head from its spans' partial results
/// (each `per_task` apart in `parts`, the head's at `at`).
fn merge_spans(parts: &[f32], per_task: usize, at: usize, out: &mut [f32]) {
    let len = PARTIAL_HEAD + out.len();
    let head = |c: usize| &parts[c * per_task + at..][..len];
    let spans = parts.len() / per_task;
    let max = (0..spans)
        .map(|c| head(c)[0])
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    out.fill(0.0);
    for c in 0..spans {
        let part = head(c);
        let w = super::causal_softmax::exp(part[0] - max);
        sum = w.mul_add(part[1], sum);
        for (o, v) in out.iter_mut().zip(&part[PARTIAL_HEAD..]) {
            *o = w.mul_add(*v, *o);
        }
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// The query heads `q` (`hd` values each) sharing one K/V head, over the keys of `view`:
/// for each head, `max, sum, Σ e^(score − max) · value` into `out` (`PARTIAL_HEAD + hd` each).
fn attend_group(
    q: &[f32],
    hd: usize,
    view: &HeadView<'_>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu_matmul::avx2_available() {
        match hd {
            // SAFETY: AVX2, FMA and F16C were detected; the lengths match the const sizes.
            64 => return unsafe { avx2::attend_group::<8>(q, view, scale, scores, out) },
            128 => return unsafe { avx2::attend_group::<16>(q, view, scale, scores, out) },
            256 => return unsafe { avx2::attend_group::<32>(q, view, scale, scores, out) },
            _ => {}
        }
    }
    for (q, out) in q
        .chunks_exact(hd)
        .zip(out.chunks_exact_mut(PARTIAL_HEAD + hd))
    {
        attend_portable(q, view, scale, scores, out);
    }
}

/// Scores, their largest, e^(score − max), their sum and the weighted sum of values.
fn attend_portable(
    q: &[f32],
    view: &HeadView<'_>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    scores.clear();
    for j in view.start..view.end {
        let k = &view.keys[view.offset + j * view.stride..][..hd];
        let dot = q
            .iter()
            .zip(k)
            .fold(0f32, |acc, (a, b)| a.mul_add(b.to_f32(), acc));
        scores.push(dot * scale);
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let (stats, acc) = out.split_at_mut(PARTIAL_HEAD);
    stats.copy_from_slice(&[max, sum]);
    acc.fill(0.0);
    for (j, p) in (view.start..view.end).zip(scores.iter()) {
        let v = &view.values[view.offset + j * view.stride..][..hd];
        for (o, x) in acc.iter_mut().zip(v) {
            *o = p.mul_add(x.to_f32(), *o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::causal_softmax::exp;
    use super::super::cpu_matmul::avx2_hsum as hsum;
    use super::{HeadView, PARTIAL_HEAD};
    use half::f16;

    /// Eight f16 values as f32 (exact).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// [`super::attend_portable`] for the query heads of one group (`q` holds them side by
    /// side, `8 * N` values each): every key and value row is loaded once for all of them.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `q.len()` a multiple of `8 * N`, `out.len()`
    /// `PARTIAL_HEAD + 8 * N` per head; `N` even.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attend_group<const N: usize>(
        q: &[f32],
        view: &HeadView<'_>,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let hd = 8 * N;
        let heads = q.len() / hd;
        let visible = view.end - view.start;
        scores.clear();
        scores.resize(heads * visible, 0.0);
        let first = view.offset + view.start * view.stride;
        let keys = view.keys.as_ptr().add(first);
        let qp = q.as_ptr();
        let sp = scores.as_mut_ptr();
        // Scores: each key in registers, dotted with every head's query.
        for j in 0..visible {
            let k = keys.add(j * view.stride);
            let mut kv = [_mm256_setzero_ps(); N];
            for (c, v) in kv.iter_mut().enumerate() {
                *v = load_f16(k.add(8 * c));
            }
            for h in 0..heads {
                let qh = qp.add(h * hd);
                let mut even = _mm256_setzero_ps();
                let mut odd = _mm256_setzero_ps();
                let mut c = 0;
                while c + 1 < N {
                    even = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(8 * c)), kv[c], even);
                    odd = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(8 * c + 8)), kv[c + 1], odd);
                    c += 2;
                }
                *sp.add(h * visible + j) = hsum(_mm256_add_ps(even, odd)) * scale;
            }
        }
        // Each head's e^(score − max) replace its scores; its max and their sum lead its
        // partial result.
        let part = PARTIAL_HEAD + hd;
        for h in 0..heads {
            let row = std::slice::from_raw_parts_mut(sp.add(h * visible), visible);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in row.iter_mut() {
                *s = exp(*s - max);
                sum += *s;
            }
            out[h * part..h * part + PARTIAL_HEAD].copy_from_slice(&[max, sum]);
        }
        // Weighted values, 16 columns at a time for up to 4 heads: each value row's columns
        // are read once, and every output is the same sum over keys in order.
        let values = view.values.as_ptr().add(first);
        for c in (0..hd).step_by(16) {
            for h0 in (0..heads).step_by(4) {
                let v = values.add(c);
                let p = sp.add(h0 * visible);
                let o = out.as_mut_ptr().add(h0 * part + PARTIAL_HEAD + c);
                let at = (visible, view.stride, part);
                match heads - h0 {
                    1 => weighted_values::<1>(v, p, o, at),
                    2 => weighted_values::<2>(v, p, o, at),
                    3 => weighted_values::<3>(v, p, o, at),
                    _ => weighted_values::<4>(v, p, o, at),
                }
            }
        }
    }

    /// `out[h][0..16] = Σ_j p[h][j] · v[j][0..16]` for `H` heads, `j` in order: the heads'
    /// weights `p` (`visible` each), value rows `v` (`stride` apart), outputs `out_stride`
    /// apart.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; the pointers cover what
    /// `(visible, stride, out_stride)` says.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn weighted_values<const H: usize>(
        v: *const f16,
        p: *const f32,
        out: *mut f32,
        (visible, stride, out_stride): (usize, usize, usize),
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; H];
        for j in 0..visible {
            let vj = v.add(j * stride);
            let (v0, v1) = (load_f16(vj), load_f16(vj.add(8)));
            for (h, a) in acc.iter_mut().enumerate() {
                let ph = _mm256_broadcast_ss(&*p.add(h * visible + j));
                a[0] = _mm256_fmadd_ps(ph, v0, a[0]);
                a[1] = _mm256_fmadd_ps(ph, v1, a[1]);
            }
        }
        for (h, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(h * out_stride), a[0]);
            _mm256_storeu_ps(out.add(h * out_stride + 8), a[1]);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The AVX2 kernel's arithmetic, one value at a time: each score is two FMA chains per
    /// lane (even and odd chunks of eight), the lanes summed as `hsum` does, times the scale;
    /// e^(score − max) summed in order; each output column one FMA chain over the keys.
    fn lane_model(q: &[f32], view: &HeadView<'_>, scale: f32) -> Vec<f32> {
        let hd = q.len();
        let row = |src: &[f16], j: usize| -> Vec<f32> {
            let at = view.offset + j * view.stride;
            src[at..at + hd].iter().map(|v| v.to_f32()).collect()
        };
        let scores: Vec<f32> = (view.start..view.end)
            .map(|j| {
                let k = row(view.keys, j);
                let lane = |l: usize| {
                    let (mut even, mut odd) = (0f32, 0f32);
                    for c in (0..hd / 8).step_by(2) {
                        even = q[8 * c + l].mul_add(k[8 * c + l], even);
                        odd = q[8 * c + 8 + l].mul_add(k[8 * c + 8 + l], odd);
                    }
                    even + odd
                };
                let s: Vec<f32> = (0..4).map(|l| lane(l) + lane(l + 4)).collect();
                ((s[0] + s[2]) + (s[1] + s[3])) * scale
            })
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = scores
            .iter()
            .map(|s| super::super::causal_softmax::exp(s - max))
            .collect();
        let sum = weights.iter().fold(0f32, |a, w| a + w);
        let values: Vec<Vec<f32>> = (view.start..view.end)
            .map(|j| row(view.values, j))
            .collect();
        let mut out = vec![max, sum];
        out.extend((0..hd).map(|c| {
            values
                .iter()
                .zip(&weights)
                .fold(0f32, |acc, (v, w)| w.mul_add(v[c], acc))
        }));
        out
    }

    #[test]
    fn avx2_attention_is_its_lane_model_bit_for_bit() {
        if !crate::model::cpu_matmul::avx2_available() {
            return;
        }
        let mut seed = 7u32;
        let mut random = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 4.0 - 2.0
        };
        for (hd, heads, n_kv) in [(64, 4, 2), (128, 3, 1), (256, 1, 2), (64, 7, 1)] {
            let stride = n_kv * hd;
            let ctx = 300;
            let keys: Vec<f16> = (0..ctx * stride).map(|_| f16::from_f32(random())).collect();
            let values: Vec<f16> = (0..ctx * stride).map(|_| f16::from_f32(random())).collect();
            let q: Vec<f32> = (0..heads * hd).map(|_| random()).collect();
            for (start, end) in [(0, 1), (0, 7), (3, 11), (0, 8), (5, 22), (40, 296)] {
                let view = HeadView {
                    keys: &keys,
                    values: &values,
                    offset: (n_kv - 1) * hd,
                    stride,
                    start,
                    end,
                };
                let mut out = vec![0f32; heads * (PARTIAL_HEAD + hd)];
                attend_group(&q, hd, &view, 0.125, &mut Vec::new(), &mut out);
                for (h, got) in out.chunks_exact(PARTIAL_HEAD + hd).enumerate() {
                    let want = lane_model(&q[h * hd..(h + 1) * hd], &view, 0.125);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "hd {hd}, head {h} of {heads}, keys {start}..{end}");
                }
            }
        }
    }
}
