//! Attention for one forward pass: which rows go to the CPU decode kernel and which to tensor
//! ops, planned once per step and applied at every layer.
//!
//! Prompt rows are split into blocks at positions that are multiples of [`ATTENTION_BLOCK`], so
//! a row's attention is computed with the same shapes however its prompt was chunked into
//! steps: batched and sequential runs give the same bits.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::ops::softmax_last_dim;

use super::batch::Segment;
use super::cpu_attention::{CpuAttention, DecodeRow};
use super::prompt_attention::PromptInputs;
use super::team::SharedOut;
use super::{ModelConfig, SlotKvCache};

/// Prompt positions are attended in blocks aligned to multiples of this.
pub const ATTENTION_BLOCK: usize = 256;

/// How the rows of one step are attended.
pub struct AttentionPlan {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Multiplies the scores.
    scale: f32,
    /// The keys a local (sliding-window) layer's rows see, themselves included.
    window: Option<usize>,
    /// Blocks of more than one row (or every block off the CPU), with their causal masks for
    /// global and local layers (none on the CPU, where the softmax masks as it goes).
    tensor_blocks: Vec<(Segment, Masks)>,
    use_cpu: bool,
    /// Single rows attended by the CPU kernel, and their row indices in the step.
    cpu: Option<(CpuAttention, Vec<usize>, Tensor)>,
    /// Single rows off the CPU, attended all together.
    padded: Option<PaddedRows>,
    rows: usize,
}

/// A block's additive masks for global layers and (in a model with a window) local ones.
#[derive(Default)]
struct Masks {
    global: Option<Tensor>,
    local: Option<Tensor>,
}

impl Masks {
    fn for_layer(&self, local: bool) -> Option<&Tensor> {
        if local {
            self.local.as_ref()
        } else {
            self.global.as_ref()
        }
    }
}

/// Whether a row at `position` sees the key at `key`: causal, and within the window if any.
fn visible(key: usize, position: usize, window: Option<usize>) -> bool {
    key <= position && window.is_none_or(|w| position - key < w)
}

/// Single rows (decode rows) on a GPU: each row's slot prefix is gathered from the cache and
/// padded to the longest, so the step's decode attention is a handful of kernel launches per
/// layer however many rows there are (a loop over rows would launch several per row).
struct PaddedRows {
    /// Row indices in the step, and the same as a u32 tensor.
    starts: Vec<usize>,
    index: Tensor,
    /// Cache rows `[rows * len]`: row `i`'s positions `0..len`, clamped to its own position.
    gather: Tensor,
    /// `[rows, 1, 1, len]`: 0 where row `i` may look, -inf past its position (and, for local
    /// layers, before its window).
    masks: Masks,
    len: usize,
}

impl PaddedRows {
    fn new(
        rows: &[(usize, Segment)],
        ctx: usize,
        window: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let len = rows
            .iter()
            .map(|(_, b)| b.first_position + 1)
            .max()
            .unwrap_or(1);
        let mut gather = Vec::with_capacity(rows.len() * len);
        for (_, b) in rows {
            for t in 0..len {
                gather.push((b.slot.0 * ctx + t.min(b.first_position)) as u32);
            }
        }
        let mask = |window: Option<usize>| -> Result<Tensor> {
            let values = rows
                .iter()
                .flat_map(|(_, b)| (0..len).map(move |t| (t, b.first_position)))
                .map(|(t, p)| {
                    if visible(t, p, window) {
                        0f32
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            Tensor::from_vec(values, (rows.len(), 1, 1, len), device)
        };
        let masks = Masks {
            global: Some(mask(None)?),
            local: window.map(|w| mask(Some(w))).transpose()?,
        };
        let starts: Vec<usize> = rows.iter().map(|&(start, _)| start).collect();
        let index: Vec<u32> = starts.iter().map(|&i| i as u32).collect();
        Ok(Self {
            index: Tensor::new(index, device)?,
            gather: Tensor::new(gather, device)?,
            masks,
            starts,
            len,
        })
    }
}

impl AttentionPlan {
    /// The first `decode_rows` rows of the step are decode rows; on the CPU only those go to
    /// the decode kernel, and a prompt row alone in its block is a block of one (the two
    /// kernels round differently, and a prompt token must be computed alike however its
    /// prompt was cut into steps).
    pub fn new(
        segments: &[Segment],
        decode_rows: usize,
        config: &ModelConfig,
        ctx: usize,
        device: &Device,
        force_tensor: bool,
    ) -> Result<Self> {
        let group = config.n_head / config.n_kv_head;
        let window = config.sliding_window;
        let use_cpu = matches!(device, Device::Cpu) && !force_tensor;
        let mut tensor_blocks = Vec::new();
        let mut decode_rows_of = Vec::new();
        let mut decode_index = Vec::new();
        let mut single_rows = Vec::new();
        for block in segments
            .iter()
            .flat_map(|s| split_blocks(s, ATTENTION_BLOCK))
        {
            if use_cpu && block.len == 1 && block.start < decode_rows {
                decode_rows_of.push(DecodeRow {
                    slot: block.slot,
                    position: block.first_position,
                });
                decode_index.push(block.start);
            } else if block.len == 1 && !use_cpu {
                single_rows.push((block.start, block));
            } else {
                let masks = if use_cpu {
                    Masks::default()
                } else {
                    Masks {
                        global: causal_mask(&block, group, None, device)?,
                        local: match window {
                            Some(w) => causal_mask(&block, group, Some(w), device)?,
                            None => None,
                        },
                    }
                };
                tensor_blocks.push((block, masks));
            }
        }
        let rows = segments.iter().map(|s| s.len).sum();
        let cpu = if decode_rows_of.is_empty() {
            None
        } else {
            let index: Vec<u32> = decode_index.iter().map(|&i| i as u32).collect();
            let index = Tensor::new(index, device)?;
            let op = CpuAttention {
                rows: decode_rows_of,
                n_head: config.n_head,
                n_kv_head: config.n_kv_head,
                head_dim: config.head_dim,
                ctx,
                scale: config.attention_scale,
                window: None,
            };
            Some((op, decode_index, index))
        };
        let padded = if single_rows.is_empty() {
            None
        } else {
            Some(PaddedRows::new(&single_rows, ctx, window, device)?)
        };
        Ok(Self {
            n_head: config.n_head,
            n_kv_head: config.n_kv_head,
            head_dim: config.head_dim,
            scale: config.attention_scale,
            window,
            tensor_blocks,
            use_cpu,
            cpu,
            padded,
            rows,
        })
    }

    /// `q`: `[rows, n_head, head_dim]`, rotated; returns `[rows, n_head * head_dim]`. A `local`
    /// layer's rows see only the model's sliding window of keys.
    pub fn forward(
        &self,
        layer: usize,
        q: &Tensor,
        cache: &SlotKvCache,
        local: bool,
    ) -> Result<Tensor> {
        let window = if local { self.window } else { None };
        let width = self.n_head * self.head_dim;
        let mut pieces: Vec<(usize, Tensor)> = Vec::new();
        if let Some((op, starts, index)) = &self.cpu {
            let q2 = q.reshape((self.rows, width))?;
            let q_rows = if starts.len() == self.rows {
                q2 // every row is a decode row, in order
            } else {
                q2.index_select(index, 0)?
            };
            let (keys, values) = cache.layer(layer);
            let windowed;
            let op = if window.is_some() {
                windowed = CpuAttention {
                    window,
                    ..op.clone()
                };
                &windowed
            } else {
                op
            };
            let out = q_rows.contiguous()?.apply_op3_no_bwd(keys, values, op)?;
            if starts.len() == self.rows {
                return Ok(out);
            }
            for (i, &start) in starts.iter().enumerate() {
                pieces.push((start, out.narrow(0, i, 1)?));
            }
        }
        if let Some(padded) = &self.padded {
            let out = self.padded_rows(layer, padded, q, cache, window.is_some())?;
            if padded.starts.len() == self.rows {
                return Ok(out); // every row is a single row, in order
            }
            for (i, &start) in padded.starts.iter().enumerate() {
                pieces.push((start, out.narrow(0, i, 1)?));
            }
        }
        if self.use_cpu {
            pieces.extend(self.cpu_blocks(layer, q, cache, window)?);
        } else {
            for (block, masks) in &self.tensor_blocks {
                let mask = masks.for_layer(window.is_some());
                pieces.push((
                    block.start,
                    self.tensor_block(layer, block, mask, q, cache)?,
                ));
            }
        }
        pieces.sort_by_key(|(start, _)| *start);
        let mut tensors: Vec<Tensor> = pieces.into_iter().map(|(_, t)| t).collect();
        if tensors.len() == 1 {
            return Ok(tensors.pop().expect("one piece"));
        }
        Tensor::cat(&tensors, 0)
    }

    /// All single rows at once: `[rows, kvh, group, hd]` queries against their gathered,
    /// padded prefixes `[rows, kvh, len, hd]`, masked past each row's position.
    fn padded_rows(
        &self,
        layer: usize,
        padded: &PaddedRows,
        q: &Tensor,
        cache: &SlotKvCache,
        local: bool,
    ) -> Result<Tensor> {
        let (d, kvh, hd, len) = (
            padded.starts.len(),
            self.n_kv_head,
            self.head_dim,
            padded.len,
        );
        let group = self.n_head / kvh;
        let q = q
            .reshape((self.rows, self.n_head * hd))?
            .index_select(&padded.index, 0)?
            .reshape((d, kvh, group, hd))?;
        let (keys, values) = cache.layer(layer);
        let gathered = |t: &Tensor| -> Result<Tensor> {
            t.index_select(&padded.gather, 0)?
                .to_dtype(DType::F32)?
                .reshape((d, len, kvh, hd))
        };
        let k = gathered(keys)?.permute((0, 2, 3, 1))?.contiguous()?; // [d, kvh, hd, len]
        let v = gathered(values)?.permute((0, 2, 1, 3))?.contiguous()?; // [d, kvh, len, hd]
        let mask = padded
            .masks
            .for_layer(local)
            .expect("padded rows have masks");
        let scores = (q.matmul(&k)? * self.scale as f64)?.broadcast_add(mask)?;
        softmax_last_dim(&scores)?
            .matmul(&v)?
            .reshape((d, kvh * group * hd))
    }

    /// The prompt blocks on the CPU: one task of the thread team per (block, K/V head), each a
    /// gemm, the causal softmax and a gemm; results `(first row, [rows, width])` per block.
    fn cpu_blocks(
        &self,
        layer: usize,
        q: &Tensor,
        cache: &SlotKvCache,
        window: Option<usize>,
    ) -> Result<Vec<(usize, Tensor)>> {
        let (kvh, hd) = (self.n_kv_head, self.head_dim);
        let (keys, values) = cache.layer(layer);
        let q = q.contiguous()?;
        let (q_storage, q_layout) = q.storage_and_layout();
        let (k_storage, k_layout) = keys.storage_and_layout();
        let (v_storage, v_layout) = values.storage_and_layout();
        let inputs = PromptInputs {
            q: cpu_slice(&q_storage, q_layout, "attention: queries")?,
            keys: cpu_slice(&k_storage, k_layout, "attention: keys")?,
            values: cpu_slice(&v_storage, v_layout, "attention: values")?,
            ctx: cache.ctx(),
            n_head: self.n_head,
            n_kv_head: kvh,
            head_dim: hd,
            scale: self.scale,
            window,
        };
        // Each block's heads side by side, `[kvh, rows * group, hd]`, one slice per task.
        let per_head = |block: &Segment| block.len * (self.n_head / kvh) * hd;
        let mut outs: Vec<Vec<f32>> = (self.tensor_blocks.iter())
            .map(|(block, _)| vec![0f32; kvh * per_head(block)])
            .collect();
        let ptrs: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut(o.as_mut_ptr())).collect();
        super::team::for_each(self.tensor_blocks.len() * kvh, |i| {
            let ((block, _), head) = (&self.tensor_blocks[i / kvh], i % kvh);
            let len = per_head(block);
            // SAFETY: task i alone writes head `head` of its block's buffer.
            let out = unsafe { ptrs[i / kvh].slice(head * len, len) };
            inputs.block_head(block, head, out);
        });
        let device = q.device();
        self.tensor_blocks
            .iter()
            .zip(outs)
            .map(|((block, _), out)| {
                let t = Tensor::from_vec(out, (kvh, per_head(block) / hd, hd), device)?;
                Ok((block.start, self.heads_to_rows(&t, block.len)?))
            })
            .collect()
    }

    /// One block's queries over its slot with tensor ops (GPU kernels, or the CPU when the
    /// tensor path is forced), grouped-query style: the query heads sharing a K/V head are
    /// stacked as rows, so K/V are never repeated.
    fn tensor_block(
        &self,
        layer: usize,
        block: &Segment,
        mask: Option<&Tensor>,
        q: &Tensor,
        cache: &SlotKvCache,
    ) -> Result<Tensor> {
        let (n, kvh, hd) = (block.len, self.n_kv_head, self.head_dim);
        let group = self.n_head / kvh;
        let total = block.first_position + n;
        let (k, v) = cache.slot_prefix(layer, block.slot, total)?;
        let (k, v) = (k.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?);
        // [n, H, hd] -> [kvh, n * group, hd]
        let q = q
            .narrow(0, block.start, n)?
            .reshape((n, kvh, group, hd))?
            .permute((1, 0, 2, 3))?
            .contiguous()?
            .reshape((kvh, n * group, hd))?;
        let k = k.permute((1, 2, 0))?; // [kvh, hd, total]
        let v = v.permute((1, 0, 2))?; // [kvh, total, hd]
        let scores = (q.matmul(&k)? * self.scale as f64)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let out = softmax_last_dim(&scores)?.matmul(&v.contiguous()?)?;
        self.heads_to_rows(&out, n)
    }

    /// A block's attention output by K/V head, `[kvh, n * group, hd]`, as rows `[n, width]`.
    fn heads_to_rows(&self, t: &Tensor, n: usize) -> Result<Tensor> {
        let (kvh, hd) = (self.n_kv_head, self.head_dim);
        let group = self.n_head / kvh;
        t.reshape((kvh, n, group, hd))?
            .permute((1, 0, 2, 3))?
            .contiguous()?
            .reshape((n, kvh * group * hd))
    }
}

/// Splits a segment at positions that are multiples of `block`.
fn split_blocks(seg: &Segment, block: usize) -> Vec<Segment> {
    let mut out = Vec::new();
    let end = seg.first_position + seg.len;
    let mut pos = seg.first_position;
    while pos < end {
        let stop = ((pos / block + 1) * block).min(end);
        out.push(Segment {
            slot: seg.slot,
            start: seg.start + (pos - seg.first_position),
            len: stop - pos,
            first_position: pos,
        });
        pos = stop;
    }
    out
}

/// `[n * group, total]` additive mask for a block of more than one row: query row `i` (at
/// position `first + i`) may see keys `0..=first + i` (the last `window` of them when there is
/// one). A single row sees everything.
///
/// ```text
///            keys: 0 .. first-1 | first .. first+n-1
/// row 0:           0 ...      0 | 0  -inf -inf
/// row 1:           0 ...      0 | 0  0    -inf
/// row n-1:         0 ...      0 | 0  0    0
/// ```
fn causal_mask(
    block: &Segment,
    group: usize,
    window: Option<usize>,
    dev: &Device,
) -> Result<Option<Tensor>> {
    if block.len == 1 {
        return Ok(None);
    }
    let total = block.first_position + block.len;
    let mut mask = Vec::with_capacity(block.len * group * total);
    for i in 0..block.len {
        let position = block.first_position + i;
        for _ in 0..group {
            mask.extend((0..total).map(|j| {
                if visible(j, position, window) {
                    0f32
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Tensor::from_vec(mask, (block.len * group, total), dev).map(Some)
}

/// A CPU tensor's contiguous values (`what` names it in the error).
fn cpu_slice<'a, T: candle_core::WithDType>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
    what: &str,
) -> Result<&'a [T]> {
    match storage {
        candle_core::Storage::Cpu(s) => super::cpu_storage::contiguous::<T>(s, layout, what),
        _ => candle_core::bail!("{what}: not on the CPU"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SlotId;

    #[test]
    fn blocks_split_at_aligned_positions() {
        let seg = Segment {
            slot: SlotId(1),
            start: 3,
            len: 10,
            first_position: 6,
        };
        let blocks = split_blocks(&seg, 4);
        let spans: Vec<(usize, usize, usize)> = blocks
            .iter()
            .map(|b| (b.start, b.first_position, b.len))
            .collect();
        assert_eq!(spans, vec![(3, 6, 2), (5, 8, 4), (9, 12, 4)]);
    }

    #[test]
    fn mask_hides_later_positions_of_the_block() {
        let block = Segment {
            slot: SlotId(0),
            start: 0,
            len: 2,
            first_position: 3,
        };
        let m: Vec<Vec<f32>> = causal_mask(&block, 1, None, &Device::Cpu)
            .unwrap()
            .unwrap()
            .to_vec2()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![vec![0.0, 0.0, 0.0, 0.0, inf], vec![0.0; 5]]);
        // A window of 2: position 3 sees keys 2 and 3, position 4 keys 3 and 4.
        let m: Vec<Vec<f32>> = causal_mask(&block, 1, Some(2), &Device::Cpu)
            .unwrap()
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(
            m,
            vec![vec![inf, inf, 0.0, 0.0, inf], vec![inf, inf, inf, 0.0, 0.0]]
        );
    }
}
