//! The slot KV cache: one preallocated buffer per layer for all K slots, written in place.

use candle_core::{DType, Device, Result, Tensor};

use super::SlotId;

/// Element type of the cache: f16, llama.cpp's default. At long contexts decode attention
/// streams the whole cache of every sequence at every step, so half the bytes is nearly half
/// the time; the values are rounded to f16 once, when written.
pub const KV_DTYPE: DType = DType::F16;

/// Keys and values of every slot for every layer, in [`KV_DTYPE`].
///
/// Layout per layer: `[slots * ctx, kv_heads * head_dim]`, i.e. slot `s`, position `p` is row
/// `s * ctx + p`. A row's K/V are one contiguous run, so a batch writes all its rows with one
/// scatter per layer, and a slot's first `n` positions are a contiguous view for attention.
#[derive(Debug)]
pub struct SlotKvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    slots: usize,
    ctx: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl SlotKvCache {
    pub fn new(
        layers: usize,
        slots: usize,
        ctx: usize,
        kv_heads: usize,
        head_dim: usize,
        device: &Device,
    ) -> Result<Self> {
        let shape = (slots * ctx, kv_heads * head_dim);
        let alloc = || Tensor::zeros(shape, KV_DTYPE, device);
        Ok(Self {
            keys: (0..layers).map(|_| alloc()).collect::<Result<_>>()?,
            values: (0..layers).map(|_| alloc()).collect::<Result<_>>()?,
            slots,
            ctx,
            kv_heads,
            head_dim,
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn ctx(&self) -> usize {
        self.ctx
    }

    pub fn bytes(&self) -> usize {
        2 * self.keys.len()
            * self.slots
            * self.ctx
            * self.kv_heads
            * self.head_dim
            * KV_DTYPE.size_in_bytes()
    }

    /// Writes `k`, `v` (`[rows, kv_heads * head_dim]`, f32) at the cache rows `index`
    /// (`[rows, kv_heads * head_dim]` u32, every column holding `slot * ctx + position`).
    pub fn write(&self, layer: usize, index: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
        self.keys[layer].scatter_set(index, &k.to_dtype(KV_DTYPE)?, 0)?;
        self.values[layer].scatter_set(index, &v.to_dtype(KV_DTYPE)?, 0)
    }

    /// Keys and values of positions `0..len` of `slot`, each `[len, kv_heads, head_dim]` views
    /// in [`KV_DTYPE`].
    pub fn slot_prefix(&self, layer: usize, slot: SlotId, len: usize) -> Result<(Tensor, Tensor)> {
        let start = slot.0 * self.ctx;
        let shape = (len, self.kv_heads, self.head_dim);
        let k = self.keys[layer].narrow(0, start, len)?.reshape(shape)?;
        let v = self.values[layer].narrow(0, start, len)?.reshape(shape)?;
        Ok((k, v))
    }

    /// The whole key and value buffers of `layer`.
    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Copies of the keys and values of positions `0..len` of `slot`, per layer
    /// (`[len, kv_heads * head_dim]` each).
    pub fn copy_slot_rows(&self, slot: SlotId, len: usize) -> Result<Vec<(Tensor, Tensor)>> {
        let start = slot.0 * self.ctx;
        self.keys
            .iter()
            .zip(&self.values)
            // The rows alone: `copy` would clone the whole buffer behind the view.
            .map(|(k, v)| {
                Ok((
                    k.narrow(0, start, len)?.force_contiguous()?,
                    v.narrow(0, start, len)?.force_contiguous()?,
                ))
            })
            .collect()
    }

    /// Writes rows from [`SlotKvCache::copy_slot_rows`] to positions `0..len` of `slot`.
    pub fn write_slot_rows(&self, slot: SlotId, rows: &[(Tensor, Tensor)]) -> Result<()> {
        let start = slot.0 * self.ctx;
        for ((k, v), (keys, values)) in rows.iter().zip(self.keys.iter().zip(&self.values)) {
            keys.slice_set(k, 0, start)?;
            values.slice_set(v, 0, start)?;
        }
        Ok(())
    }

    /// The cache row of `slot` at `position`.
    pub fn row_index(&self, slot: SlotId, position: usize) -> u32 {
        (slot.0 * self.ctx + position) as u32
    }
}
