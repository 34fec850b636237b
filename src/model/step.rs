//! What the layers of one forward pass share: the rows' rotations and cache rows, and the
//! attention plan. An architecture's layer file asks it for self-attention and does the rest.

use candle_core::{Result, Tensor};

use super::attention::AttentionPlan;
use super::rotary::Rotation;
use super::{ModelConfig, SlotKvCache};

/// One forward pass as its layers see it.
pub struct Step<'a> {
    pub config: &'a ModelConfig,
    /// Rows in the step; the first `decode_rows` are decode rows.
    pub rows: usize,
    pub decode_rows: usize,
    pub(super) cache: &'a SlotKvCache,
    /// `[rows, n_kv_head * head_dim]`: each row's cache row, broadcast for the scatter.
    pub(super) cache_index: Tensor,
    /// The rows' rotations, one per rotary table of the model.
    pub(super) rotations: Vec<Rotation>,
    pub(super) attention: AttentionPlan,
}

/// How a layer attends: which rotary table rotates its queries and keys, and whether it sees
/// only the model's sliding window (a local layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionKind {
    pub rotary: usize,
    pub local: bool,
}

impl Step<'_> {
    /// Self-attention of layer `layer`: rotates `q` (`[rows, n_head * head_dim]` or
    /// `[rows, n_head, head_dim]`) and `k`, writes `k` and `v` into the rows' cache rows, and
    /// attends; returns `[rows, n_head * head_dim]`, before the output projection.
    pub fn self_attention(
        &self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kind: AttentionKind,
    ) -> Result<Tensor> {
        let c = self.config;
        let (n, kv_dim) = (self.rows, c.n_kv_head * c.head_dim);
        let rotation = &self.rotations[kind.rotary];
        let q = rotation
            .apply(&q.reshape((n, c.n_head, 1, c.head_dim))?, c.rope_neox)?
            .reshape((n, c.n_head, c.head_dim))?;
        let k = rotation
            .apply(&k.reshape((n, c.n_kv_head, 1, c.head_dim))?, c.rope_neox)?
            .reshape((n, kv_dim))?;
        let v = v.reshape((n, kv_dim))?.contiguous()?;
        self.cache.write(layer, &self.cache_index, &k, &v)?;
        self.attention.forward(layer, &q, self.cache, kind.local)
    }
}
