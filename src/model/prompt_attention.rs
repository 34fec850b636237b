//! Attention of a block of prompt rows on the CPU, one K/V head at a time: scores `Q·Kᵀ`, the
//! scaled causal softmax in place, then `P·V`.
//!
//! Each (block, K/V head) is already a task of the forward pass's team, so the two products
//! run single-threaded on the `gemm` crate (candle's own matmul would split them again over
//! rayon, whose jobs the busy team answers slowly), on slices read straight from the step's
//! queries and the f16 cache: no tensor copies, transposes or mask. A row's values depend only
//! on its own block's shapes, so they are the same in every batch.

use gemm::{gemm, Parallelism};
use half::f16;
use half::slice::HalfFloatSliceExt;

use super::attention::ATTENTION_BLOCK;
use super::batch::Segment;
use super::causal_softmax::softmax_row;

/// Query rows of a product are padded to a multiple of this.
const PAD_ROWS: usize = 16;

/// What the blocks of one layer read.
pub struct PromptInputs<'a> {
    /// The step's rotated queries, `[rows, n_head * head_dim]`.
    pub q: &'a [f32],
    /// The layer's caches, `[slots * ctx, n_kv_head * head_dim]`.
    pub keys: &'a [f16],
    pub values: &'a [f16],
    pub ctx: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Multiplies the scores.
    pub scale: f32,
    /// Keys a row sees, itself included (a sliding-window layer); all of its prefix if `None`.
    pub window: Option<usize>,
}

impl PromptInputs<'_> {
    /// The block's query heads of K/V head `head` over its slot's positions
    /// `0..first_position + len` (from the first row's window on, in a local layer), into
    /// `out`: `[len * group, head_dim]`, row `i * group + h`.
    pub fn block_head(&self, block: &Segment, head: usize, out: &mut [f32]) {
        let (kvh, hd) = (self.n_kv_head, self.head_dim);
        let group = self.n_head / kvh;
        // Keys `lo..end` as columns `0..total`, the same for every row of the aligned block
        // (of `ATTENTION_BLOCK` positions) the rows are in, however its rows were split into
        // steps: the products' sums then round alike for a row in every batch (a gemm of
        // other widths rounds some last bits differently, which 8-bit activations of the next
        // layer can turn into a whole step). Keys past the block's own rows are masked.
        let first_key =
            |position: usize| self.window.map_or(0, |w| (position + 1).saturating_sub(w));
        let aligned = block.first_position / ATTENTION_BLOCK * ATTENTION_BLOCK;
        let (lo, end) = (
            first_key(aligned),
            (aligned + ATTENTION_BLOCK).min(self.ctx),
        );
        debug_assert!(block.first_position + block.len <= end);
        let (n, total) = (block.len, end - lo);
        // Query rows padded with zero rows to a multiple of PAD_ROWS, for the same reason:
        // the gemm takes other paths for the fewest rows.
        let rows = n * group;
        let m = rows.next_multiple_of(PAD_ROWS);
        // This head group's queries, row by row.
        let width = self.n_head * hd;
        let mut q = Vec::with_capacity(m * hd);
        for i in 0..n {
            let row = &self.q[(block.start + i) * width..][..width];
            q.extend_from_slice(&row[head * group * hd..][..group * hd]);
        }
        q.resize(m * hd, 0.0);
        // The head's keys and values of the slot's prefix, as f32; zeros past the block's
        // rows (whatever the cache holds there, from an earlier sequence, is never read).
        let first = block.slot.0 * self.ctx + lo;
        let written = block.first_position + block.len - lo;
        let of_head = |cache: &[f16]| {
            let mut out = vec![0f32; total * hd];
            for (p, row) in out.chunks_exact_mut(hd).take(written).enumerate() {
                cache[((first + p) * kvh + head) * hd..][..hd].convert_to_f32_slice(row);
            }
            out
        };
        let (k, v) = (of_head(self.keys), of_head(self.values));
        let mut scores = vec![0f32; m * total];
        // SAFETY: scores is m × total (row stride total), q is m × hd (row stride hd), and Kᵀ
        // reads k (total × hd) with row stride 1 and column stride hd.
        unsafe {
            product(
                m,
                total,
                hd,
                &mut scores,
                (&q, hd as isize, 1),
                (&k, 1, hd as isize),
            )
        };
        for (r, row) in scores.chunks_exact_mut(total).enumerate() {
            if r >= rows {
                row.fill(0.0); // a padding row
                continue;
            }
            let position = block.first_position + r / group;
            let (hidden, seen) = row.split_at_mut(first_key(position) - lo);
            hidden.fill(0.0);
            softmax_row(seen, position + 1 - lo - hidden.len(), self.scale);
        }
        assert_eq!(
            out.len(),
            rows * hd,
            "prompt attention: output of {rows} rows"
        );
        let mut padded = vec![0f32; m * hd];
        // SAFETY: padded is m × hd, scores m × total, v total × hd, all row-major.
        unsafe {
            let (rs, hd_rs) = (total as isize, hd as isize);
            product(m, hd, total, &mut padded, (&scores, rs, 1), (&v, hd_rs, 1));
        }
        out.copy_from_slice(&padded[..rows * hd]);
    }
}

/// `dst (m × n, row-major) = lhs (m × k) · rhs (k × n)`, each operand given as (values, row
/// stride, column stride), single-threaded.
///
/// # Safety
/// The strides must keep every element of the three matrices inside their slices.
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    (lhs, lhs_rs, lhs_cs): (&[f32], isize, isize),
    (rhs, rhs_rs, rhs_cs): (&[f32], isize, isize),
) {
    debug_assert!(dst.len() >= m * n);
    gemm(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        1,
        n as isize,
        false,
        lhs.as_ptr(),
        lhs_cs,
        lhs_rs,
        rhs.as_ptr(),
        rhs_cs,
        rhs_rs,
        0.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    );
}
