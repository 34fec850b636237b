//! The project's own CPU matmul for quantized weights × a batch of f32 activation rows.
//!
//! candle's CPU `QMatMul` streams the whole weight matrix once per activation row, so stacking
//! K sequences into one matmul buys nothing there. A step's rows are of two kinds, computed
//! by two kernels:
//! - decode rows (one per sequence, few per step): [`decode`] quantizes their activations to
//!   16-bit integers per block of 32 once per matmul, and multiplies each group of 8 weight
//!   rows' block ([`groups`]) into a tile of up to 4 rows with `pmaddwd`; weight rows are
//!   visited in L1-sized chunks by every tile;
//! - prompt rows (many per step): [`gemm`] dequantizes panels of 16 weight rows into f32 once
//!   and runs a register-blocked GEMM over them with f32 activations.
//!
//! Weights are decoded from the file's blocks once at load time and interleaved 8 rows at a
//! time ([`groups`]), the form both kernels read, in 2 MiB pages where the system gives them
//! ([`super::huge_pages`]).
//!
//! Tasks split the output columns over the rayon pool. The order of operations for a row
//! depends only on its kind, never on which rows share its step, so a row's result is the
//! same in every batch. A token is always the same kind of row (a prompt token is never
//! decoded), so batched runs equal sequential runs exactly. Without AVX2 both kinds use the
//! portable f32 loops.

mod avx2;
mod blocks;
#[cfg(target_arch = "x86_64")]
mod decode;
mod floats;
mod gemm;
mod groups;
#[cfg(target_arch = "x86_64")]
mod pairs8;
#[cfg(target_arch = "x86_64")]
mod prompt8;
mod super_blocks;
#[cfg(target_arch = "x86_64")]
mod unpacked8;

#[cfg(target_arch = "x86_64")]
use decode::Rows16;
#[cfg(target_arch = "x86_64")]
use prompt8::Rows8;
/// (decode rows are never quantized without AVX2)
#[cfg(not(target_arch = "x86_64"))]
enum Rows16 {}
/// (nor prompt rows)
#[cfg(not(target_arch = "x86_64"))]
enum Rows8 {}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

use super::cpu_storage::contiguous;
use super::huge_pages::HugePageArray;
use super::team::SharedOut;
use blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, FileBlock, QK, QK_K};
use floats::Floats8;
use groups::{interleave, BlockGroup, Bytes8, F16Dm, Fives8, Group, Nibbles8, F16D, ROWS};
use half::{bf16, f16};
use super_blocks::{Q2KGroup, Q3KGroup, Q4KGroup, Q5KGroup, Q6KGroup};

pub use avx2::available as avx2_available;
#[cfg(target_arch = "x86_64")]
pub use avx2::hsum as avx2_hsum;

/// Decode rows multiplied with one unpacked weight block.
const MAX_TILE: usize = 4;
/// The same for the AVX-512 VNNI tiles, whose 32 registers hold twice the rows.
const MAX_TILE_VNNI: usize = 8;

/// The most rows in a tile: [`MAX_TILE_VNNI`] for the VNNI tiles, else [`MAX_TILE`].
fn max_tile(vnni: bool) -> usize {
    if vnni {
        MAX_TILE_VNNI
    } else {
        MAX_TILE
    }
}
/// Bytes of activation rows (at one byte per column: 8-bit rows) in a block of rows that
/// [`for_each_tile`] passes over all the weights of a task before the next (half of L2).
const ROW_BLOCK_BYTES: usize = 512 << 10;
/// Smallest matmul (in multiply-adds) split over the thread pool.
const PARALLEL_MIN_MACS: usize = 1 << 18;
/// Weight rows visited together by all tiles of activation rows (L1-sized); also the width
/// of a prompt-row panel, so tasks split the columns on panel boundaries.
const W_CHUNK: usize = gemm::NR;

#[cfg(target_arch = "x86_64")]
trait Kernel: avx2::Avx2Group {}
#[cfg(target_arch = "x86_64")]
impl<G: avx2::Avx2Group> Kernel for G {}
#[cfg(not(target_arch = "x86_64"))]
trait Kernel: Group {}
#[cfg(not(target_arch = "x86_64"))]
impl<G: Group> Kernel for G {}

/// The weights as groups of 8 rows, `ceil(out / 8) × (in / 32)`.
#[derive(Debug)]
enum Packed {
    /// Q4_0 and Q4_1.
    Q4(HugePageArray<Nibbles8<F16Dm>>),
    /// Q8_0.
    Q8_0(HugePageArray<Bytes8<true, F16D>>),
    /// Q5_0 (5 bits less 16, f16 scale) and Q5_1 (5 bits, f16 scale and offset).
    Q5_0(HugePageArray<Fives8<true, F16D>>),
    Q5_1(HugePageArray<Fives8<false, F16Dm>>),
    /// K-quant super-blocks, 8 rows each.
    Q2K(HugePageArray<Q2KGroup>),
    Q3K(HugePageArray<Q3KGroup>),
    Q4K(HugePageArray<Q4KGroup>),
    Q5K(HugePageArray<Q5KGroup>),
    Q6K(HugePageArray<Q6KGroup>),
    /// Unquantized ([`floats`]): decode rows through their FMA tile, prompt rows the GEMM.
    F32(HugePageArray<Floats8<f32>>),
    F16(HugePageArray<Floats8<f16>>),
    BF16(HugePageArray<Floats8<bf16>>),
}

/// `$body` with the constant `$n` equal to `$t`, a tile's row count (1 to [`MAX_TILE`], or
/// with `wide` to [`MAX_TILE_VNNI`]): the register tiles take their rows as a const generic.
macro_rules! with_tile_rows {
    ($t:expr, $n:ident => $body:expr) => {
        with_tile_rows!(@rows $t, $n, $body, 1 2 3 4)
    };
    (wide $t:expr, $n:ident => $body:expr) => {
        with_tile_rows!(@rows $t, $n, $body, 1 2 3 4 5 6 7 8)
    };
    (@rows $t:expr, $n:ident, $body:expr, $($rows:literal)*) => {
        match $t {
            $($rows => {
                const $n: usize = $rows;
                $body
            })*
            t => unreachable!("tile of {t} rows"),
        }
    };
}

/// `$body` with `$g` bound to the groups `$packed` holds, whatever their type.
macro_rules! with_groups {
    ($packed:expr, $g:ident => $body:expr) => {
        match $packed {
            Packed::Q4($g) => $body,
            Packed::Q8_0($g) => $body,
            Packed::Q5_0($g) => $body,
            Packed::Q5_1($g) => $body,
            Packed::Q2K($g) => $body,
            Packed::Q3K($g) => $body,
            Packed::Q4K($g) => $body,
            Packed::Q5K($g) => $body,
            Packed::Q6K($g) => $body,
            Packed::F32(_) | Packed::F16(_) | Packed::BF16(_) => {
                unreachable!("unquantized weights have their own tile and panels")
            }
        }
    };
}

/// Rows of 4-bit weights with 8-bit activations ([`prompt8`]), and prompt rows of the other
/// types but Q8_0 ([`unpacked8`]), instead of f32 (prompt rows) and 16-bit (decode rows).
static INT8_ACTIVATIONS: AtomicBool = AtomicBool::new(false);

/// `--int8`: multiplies every row (prompt and decode) of Q4_0, Q4_1 and Q4_K weights, and the
/// prompt rows of Q5_0, Q5_1, Q2_K, Q3_K, Q5_K and Q6_K weights, with 8-bit activations, as
/// llama.cpp does (faster, not bit-identical to the default); also switched on by
/// `DOCANALYZE_INT8=1` (examples, benchmarks).
pub fn set_int8_activations(on: bool) {
    INT8_ACTIVATIONS.store(on, Ordering::Relaxed);
}

pub fn int8_activations() -> bool {
    static FROM_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    INT8_ACTIVATIONS.load(Ordering::Relaxed)
        || *FROM_ENV.get_or_init(|| std::env::var("DOCANALYZE_INT8").is_ok_and(|v| v == "1"))
}

/// The GGUF weight types the kernel holds.
pub const KERNEL_TYPES: [GgmlDType; 13] = [
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// Whether `dtype` has super-blocks of 256 weights.
fn is_k_quant(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K
    )
}

/// A quantized weight matrix `[out_features, in_features]` in decoded block form.
#[derive(Debug, Clone)]
pub struct CpuQMatMul {
    packed: Arc<Packed>,
    out_features: usize,
    in_features: usize,
    /// With `--int8`, prompt rows through [`unpacked8`].
    unpacks: bool,
}

/// Whether the prompt rows of `packed` can go through [`unpacked8`] (its groups say how their
/// weights become bytes: every type but the 4-bit ones, which have [`prompt8`], Q8_0, whose
/// bytes do not fit, and the unquantized ones).
fn unpacks(packed: &Packed) -> bool {
    #[cfg(target_arch = "x86_64")]
    fn of<G: Kernel>(_: &[G]) -> bool {
        G::UNPACK_BIAS.is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    fn of<G: Kernel>(_: &[G]) -> bool {
        false
    }
    match packed {
        Packed::F32(_) | Packed::F16(_) | Packed::BF16(_) => false,
        packed => with_groups!(packed, g => of(g)),
    }
}

/// File blocks of a `rows`-row matrix, as groups.
fn decode<B: FileBlock + Sync, G: BlockGroup>(bytes: &[u8], rows: usize) -> HugePageArray<G> {
    let blocks: Vec<B> = bytes.chunks_exact(B::BYTES).map(B::read).collect();
    interleave(&blocks, rows, blocks.len() / rows.max(1))
}

/// K-quant super-blocks of `size` bytes, each split into 8 blocks of 32 by `split`, as groups
/// (the form K-quants had before they were held whole; the tests' reference).
#[cfg(test)]
fn decode_k<B: blocks::IntBlock + Sync, G: BlockGroup>(
    bytes: &[u8],
    rows: usize,
    size: usize,
    split: fn(&[u8]) -> [B; 8],
) -> HugePageArray<G> {
    let blocks: Vec<B> = bytes.chunks_exact(size).flat_map(split).collect();
    interleave(&blocks, rows, blocks.len() / rows.max(1))
}

impl CpuQMatMul {
    /// The weights in kernel form, or `None` for a type this kernel does not cover.
    pub fn from_qtensor(qt: &QTensor) -> candle_core::Result<Option<Self>> {
        let (out_features, in_features) = qt.shape().dims2()?;
        if in_features % QK != 0 {
            return Ok(None);
        }
        let data = qt.data()?;
        if is_k_quant(qt.dtype()) && in_features % QK_K != 0 {
            return Ok(None);
        }
        let rows = out_features;
        let packed = match qt.dtype() {
            GgmlDType::Q4_0 => Packed::Q4(decode::<BlockQ4_0, _>(&data, rows)),
            GgmlDType::Q4_1 => Packed::Q4(decode::<BlockQ4_1, _>(&data, rows)),
            GgmlDType::Q5_0 => Packed::Q5_0(decode::<BlockQ5_0, _>(&data, rows)),
            GgmlDType::Q5_1 => Packed::Q5_1(decode::<BlockQ5_1, _>(&data, rows)),
            GgmlDType::Q8_0 => Packed::Q8_0(decode::<BlockQ8_0, _>(&data, rows)),
            GgmlDType::Q2K => Packed::Q2K(Q2KGroup::matrix(&data, rows)),
            GgmlDType::Q3K => Packed::Q3K(Q3KGroup::matrix(&data, rows)),
            GgmlDType::Q4K => Packed::Q4K(Q4KGroup::matrix(&data, rows)),
            GgmlDType::Q5K => Packed::Q5K(Q5KGroup::matrix(&data, rows)),
            GgmlDType::Q6K => Packed::Q6K(Q6KGroup::matrix(&data, rows)),
            GgmlDType::F32 => Packed::F32(floats::matrix(&data, rows, in_features)),
            GgmlDType::F16 => Packed::F16(floats::matrix(&data, rows, in_features)),
            GgmlDType::BF16 => Packed::BF16(floats::matrix(&data, rows, in_features)),
            _ => return Ok(None),
        };
        Ok(Some(Self {
            unpacks: unpacks(&packed),
            packed: Arc::new(packed),
            out_features,
            in_features,
        }))
    }

    /// `y = x · Wᵀ` for `x` of `rows × in_features`, whose first `decode_rows` rows are decode
    /// rows and the rest prompt rows; returns `rows × out_features`.
    #[cfg(test)]
    fn matmul(&self, x: &[f32], decode_rows: usize) -> Vec<f32> {
        matmul_group(&[self], x, decode_rows)
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output columns `range` (`o0..o1`) for every activation row, written to `y` (row stride
    /// `stride`, this matrix's columns starting at `y`); the first `decode_rows` rows of `x`
    /// are decode rows (also given quantized as `x16` with AVX2), the rest prompt rows.
    #[allow(clippy::too_many_arguments)]
    fn run_range(
        &self,
        x: &[f32],
        x16: Option<&Rows16>,
        x8: Option<&Rows8>,
        decode_rows: usize,
        y: SharedOut,
        stride: usize,
        range: (usize, usize),
    ) {
        #[cfg(target_arch = "x86_64")]
        if let Some(x8) = x8 {
            match &*self.packed {
                Packed::Q4(w) => return self.run_int8(w, x8, y, stride, range),
                Packed::Q4K(w) => return self.run_int8_k(w, x8, y, stride, range),
                _ => {}
            }
            if self.unpacks {
                let rows8 = (x, x16, x8, decode_rows);
                return with_groups!(&*self.packed, w => {
                    self.run_unpacked8(w, rows8, y, stride, range)
                });
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = x8;
        let rows = (x, decode_rows);
        match &*self.packed {
            Packed::F32(w) => self.run_floats(w, rows, y, stride, range),
            Packed::F16(w) => self.run_floats(w, rows, y, stride, range),
            Packed::BF16(w) => self.run_floats(w, rows, y, stride, range),
            packed => {
                with_groups!(packed, w => self.run_rows(w, x, x16, decode_rows, y, stride, range))
            }
        }
    }

    /// [`Self::run_range`] for unquantized weights: decode rows through [`floats::tile`] (with
    /// AVX2), prompt rows through the GEMM; both one FMA chain per output, the same bits.
    fn run_floats<E: floats::Element>(
        &self,
        w: &[Floats8<E>],
        (x, decode_rows): (&[f32], usize),
        y: SharedOut,
        stride: usize,
        range: (usize, usize),
    ) {
        let cols = self.in_features;
        let (decode, prompt) = if avx2::available() {
            x.split_at(decode_rows * cols)
        } else {
            (&x[..0], x)
        };
        let rows = decode.len() / cols;
        for_each_tile(
            w,
            cols,
            (rows, MAX_TILE),
            range,
            y,
            stride,
            |groups, r0, t, _, out| {
                let x = &decode[r0 * cols..(r0 + t) * cols];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2, FMA and F16C were detected; x holds t rows.
                with_tile_rows!(t, T => unsafe { floats::tile::<E, T>(groups, cols, x, out) });
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (groups, x, out);
            },
        );
        let skipped = x.len() / cols - prompt.len() / cols;
        // SAFETY: the prompt rows' outputs start after the decode rows done above.
        let y_prompt = unsafe { SharedOut(y.at(skipped * stride)) };
        gemm::run_range_with(w, cols, prompt, y_prompt, stride, range, floats::pack);
    }

    /// Whether all its rows can take 8-bit activations ([`prompt8`]).
    fn takes_int8(&self) -> bool {
        matches!(&*self.packed, Packed::Q4(_) | Packed::Q4K(_))
    }

    /// Whether its prompt rows, at least, can take 8-bit activations.
    fn takes_int8_prompt(&self) -> bool {
        self.takes_int8() || self.unpacks
    }

    /// [`Self::run_range`] with decode rows through the 16-bit tiles and prompt rows (of
    /// `x8`, after its first `decode_rows`) through [`unpacked8`], each chunk of weights
    /// unpacked before its first tile.
    #[cfg(target_arch = "x86_64")]
    fn run_unpacked8<G: Kernel>(
        &self,
        w: &[G],
        (x, x16, x8, decode_rows): (&[f32], Option<&Rows16>, &Rows8, usize),
        y: SharedOut,
        stride: usize,
        (o0, o1): (usize, usize),
    ) {
        let cols = self.in_features;
        self.run_typed(w, &x[..decode_rows * cols], x16, y, stride, o0, o1);
        // SAFETY: the prompt rows' outputs start `decode_rows` rows into y.
        let y_prompt = unsafe { SharedOut(y.at(decode_rows * stride)) };
        let mut chunk = unpacked8::Chunk8::default();
        let prompt_rows = x8.len() - decode_rows;
        let vnni = avx2::vnni_available();
        let max_tile = max_tile(vnni);
        let tile = |groups: &[G], r0: usize, t: usize, first: bool, out: &mut [f32]| {
            // SAFETY: x8 exists only where AVX2, FMA and F16C were detected; x8 holds the rows;
            // VNNI was detected where it is used.
            unsafe {
                if first {
                    unpacked8::unpack(groups, &mut chunk);
                }
                let r0 = decode_rows + r0;
                if vnni {
                    with_tile_rows!(wide t, T => unpacked8::tile::<T, true>(&chunk, x8, r0, out))
                } else {
                    with_tile_rows!(t, T => unpacked8::tile::<T, false>(&chunk, x8, r0, out))
                }
            }
        };
        // One group of 8 weight rows at a time: its unpacked bytes stay in L1 (up to 2048
        // columns) while every tile of rows passes.
        let mut tile = tile;
        for c0 in (o0..o1).step_by(ROWS) {
            let range = (c0, (c0 + ROWS).min(o1));
            for_each_tile(
                w,
                cols,
                (prompt_rows, max_tile),
                range,
                y_prompt,
                stride,
                &mut tile,
            );
        }
    }

    /// [`Self::run_range`] with every row (quantized as `x8`) through [`prompt8`].
    #[cfg(target_arch = "x86_64")]
    fn run_int8<G: avx2::Avx2Nibbles>(
        &self,
        w: &[G],
        x8: &Rows8,
        y: SharedOut,
        stride: usize,
        range: (usize, usize),
    ) {
        // The scale vectors of the chunk of weights the tiles pass, once per chunk when
        // many tiles pass it (a pass of their own over the chunk costs more than computing
        // them again for a few). Those many (prompt) rows take two groups at a time with
        // VNNI ([`pairs8`]).
        let mut scales = Vec::new();
        let several = many_rows(x8);
        let vnni = avx2::vnni_available();
        let tile = |groups: &[G], r0: usize, t: usize, first: bool, out: &mut [f32]| {
            if several && first {
                // SAFETY: x8 exists only where AVX2, FMA and F16C were detected.
                unsafe { prompt8::scale_vectors(groups, &mut scales) };
            }
            let scales = if several { &scales[..] } else { &[] };
            // SAFETY: as above; x8 holds rows r0..r0 + t; scales are those of groups; VNNI
            // was detected where it is used.
            unsafe {
                match (several, vnni) {
                    (true, true) => with_tile_rows!(wide t, T =>
                        pairs8::tile::<G, T>(groups, scales, x8, r0, out)),
                    (false, true) => with_tile_rows!(wide t, T =>
                        prompt8::tile_vnni::<G, T, false>(groups, scales, x8, r0, out)),
                    (true, false) => with_tile_rows!(t, T =>
                        prompt8::tile::<G, T, true>(groups, scales, x8, r0, out)),
                    (false, false) => with_tile_rows!(t, T =>
                        prompt8::tile::<G, T, false>(groups, scales, x8, r0, out)),
                }
            }
        };
        let max_tile = max_tile(vnni);
        for_each_tile(
            w,
            self.in_features,
            (x8.len(), max_tile),
            range,
            y,
            stride,
            tile,
        );
    }

    /// [`Self::run_int8`] for Q4_K, through [`prompt8::tile_k`] (`x8` quantized per
    /// super-block).
    #[cfg(target_arch = "x86_64")]
    fn run_int8_k(
        &self,
        w: &[Q4KGroup],
        x8: &Rows8,
        y: SharedOut,
        stride: usize,
        range: (usize, usize),
    ) {
        // Many (prompt) rows take two groups at a time with VNNI ([`pairs8`]).
        let several = many_rows(x8);
        let vnni = avx2::vnni_available();
        let tile = |groups: &[Q4KGroup], r0: usize, t: usize, first: bool, out: &mut [f32]| {
            // SAFETY: x8 exists only where AVX2 and FMA were detected; it holds rows
            // r0..r0 + t, quantized per super-block (quantize_int8_rows, for Q4_K); VNNI was
            // detected where it is used.
            if several && vnni {
                with_tile_rows!(wide t, T => unsafe {
                    pairs8::tile_k::<T>(groups, x8, r0, out, first)
                })
            } else if vnni {
                with_tile_rows!(wide t, T => unsafe {
                    prompt8::tile_k_vnni::<T>(groups, x8, r0, out, first)
                })
            } else {
                with_tile_rows!(t, T => unsafe { prompt8::tile_k::<T>(groups, x8, r0, out, first) })
            }
        };
        let max_tile = max_tile(vnni);
        for_each_tile(
            w,
            self.in_features,
            (x8.len(), max_tile),
            range,
            y,
            stride,
            tile,
        );
    }

    /// [`Self::run_range`] for weight groups of type `G`: decode rows through the register
    /// tiles, prompt rows through [`gemm`].
    #[allow(clippy::too_many_arguments)]
    fn run_rows<G: Kernel>(
        &self,
        w: &[G],
        x: &[f32],
        x16: Option<&Rows16>,
        decode_rows: usize,
        y: SharedOut,
        stride: usize,
        (o0, o1): (usize, usize),
    ) {
        let (decode, prompt) = x.split_at(decode_rows * self.in_features);
        self.run_typed(w, decode, x16, y, stride, o0, o1);
        // SAFETY: the prompt rows' outputs start `decode_rows` rows into y.
        let y_prompt = unsafe { SharedOut(y.at(decode_rows * stride)) };
        gemm::run_range(w, self.in_features, prompt, y_prompt, stride, o0, o1);
    }

    #[allow(clippy::too_many_arguments)]
    fn run_typed<G: Kernel>(
        &self,
        w: &[G],
        x: &[f32],
        x16: Option<&Rows16>,
        y: SharedOut,
        stride: usize,
        o0: usize,
        o1: usize,
    ) {
        let cols = self.in_features;
        let rows = x.len() / cols;
        let max_tile = max_tile(x16.is_some() && avx2::vnni_available());
        for_each_tile(
            w,
            cols,
            (rows, max_tile),
            (o0, o1),
            y,
            stride,
            |groups, r0, t, _, out| {
                let x = &x[r0 * cols..(r0 + t) * cols];
                compute_tile(groups, cols, x, x16.map(|x16| (x16, r0)), out);
            },
        );
    }
}

/// Whether `x8` holds many rows (prompt rows): more than 4 tiles' worth, which take the tiles
/// over two groups of weight rows at a time ([`pairs8`]).
#[cfg(target_arch = "x86_64")]
fn many_rows(x8: &Rows8) -> bool {
    x8.len() > 4 * MAX_TILE
}

/// Output columns `o0..o1` of `rows` activation rows into `y` (row stride `stride`): blocks
/// of activation rows that fit L2 ([`ROW_BLOCK_BYTES`]), and for each, weight rows in
/// L1-sized chunks, every tile of up to `max_tile` ([`MAX_TILE`], or [`MAX_TILE_VNNI`])
/// activation rows of the block streaming past them in order;
/// `tile(groups, r0, t, first, out)` computes rows `r0..r0 + t` against `groups` into `out`,
/// `out[(g * t + i) * 8 + j]` being output column `8g + j` (of the chunk) of row `r0 + i`;
/// `first` says it is the first tile to meet this chunk since the one before it.
fn for_each_tile<G: Group>(
    w: &[G],
    cols: usize,
    (rows, max_tile): (usize, usize),
    (o0, o1): (usize, usize),
    y: SharedOut,
    stride: usize,
    mut tile: impl FnMut(&[G], usize, usize, bool, &mut [f32]),
) {
    let per_row = cols / QK / G::SUBS;
    let mut scratch = [0f32; W_CHUNK * MAX_TILE_VNNI];
    debug_assert!(o0.is_multiple_of(ROWS));
    // Without blocks, many rows (several prompts in one step) stream from memory past every
    // chunk of weights instead of from L2.
    let block = (ROW_BLOCK_BYTES / cols / max_tile * max_tile).max(max_tile);
    for b0 in (0..rows).step_by(block) {
        let b1 = (b0 + block).min(rows);
        let mut c0 = o0;
        while c0 < o1 {
            let c1 = (c0 + W_CHUNK).min(o1);
            let groups = &w[c0 / ROWS * per_row..c1.div_ceil(ROWS) * per_row];
            let mut r0 = b0;
            while r0 < b1 {
                let t = (b1 - r0).min(max_tile);
                let scratch = &mut scratch[..groups.len() / per_row * t * ROWS];
                tile(groups, r0, t, r0 == b0, scratch);
                for (gi, vals) in scratch.chunks_exact(t * ROWS).enumerate() {
                    for (i, vals) in vals.chunks_exact(ROWS).enumerate() {
                        let o = c0 + gi * ROWS;
                        for (j, v) in vals[..(c1 - o).min(ROWS)].iter().enumerate() {
                            // SAFETY: in bounds; tasks write disjoint output columns.
                            unsafe { *y.at((r0 + i) * stride + o + j) = *v };
                        }
                    }
                }
                r0 += t;
            }
            c0 = c1;
        }
    }
}

/// Several matrices with the same input applied to `x` in one parallel region (q/k/v,
/// gate/up): one wake-up of the pool instead of one per matrix. Returns `rows × Σ out`, the
/// matrices' outputs side by side; each value is computed exactly as by
/// [`CpuQMatMul::matmul`]. The first `decode_rows` rows of `x` are decode rows.
pub fn matmul_group(mats: &[&CpuQMatMul], x: &[f32], decode_rows: usize) -> Vec<f32> {
    matmul_group_with(mats, x, decode_rows, int8_activations())
}

/// [`matmul_group`], with 8-bit activations (`--int8`) if `int8`.
fn matmul_group_with(mats: &[&CpuQMatMul], x: &[f32], decode_rows: usize, int8: bool) -> Vec<f32> {
    let cols = mats.first().map_or(1, |m| m.in_features);
    debug_assert!(mats.iter().all(|m| m.in_features == cols));
    let rows = x.len() / cols;
    let total_out: usize = mats.iter().map(|m| m.out_features).sum();
    let mut y = vec![0f32; rows * total_out];
    let mut offset = 0;
    let ptrs: Vec<SharedOut> = mats
        .iter()
        .map(|m| {
            // SAFETY: offset < total_out, inside every row of y.
            let p = SharedOut(unsafe { y.as_mut_ptr().add(offset) });
            offset += m.out_features;
            p
        })
        .collect();
    let outs: Vec<usize> = mats.iter().map(|m| m.out_features).collect();
    let tasks = guided_tasks(&outs, rayon::current_num_threads().max(1));
    let decode_rows = decode_rows.min(rows);
    let x8 = quantize_int8_rows(mats, x, cols, int8);
    // The 16-bit decode rows, unless every matrix takes the 8-bit ones.
    let x16 = if x8.is_some() && mats.iter().all(|m| m.takes_int8()) {
        None
    } else {
        quantize_decode_rows(&x[..decode_rows * cols], cols)
    };
    let run = |&(m, o0, o1): &(usize, usize, usize)| {
        let x8 = x8.as_ref().filter(|_| mats[m].takes_int8_prompt());
        mats[m].run_range(
            x,
            x16.as_ref(),
            x8,
            decode_rows,
            ptrs[m],
            total_out,
            (o0, o1),
        )
    };
    // Below this many multiply-adds, waking the pool costs more than it saves.
    if rows * cols * total_out < PARALLEL_MIN_MACS {
        tasks.iter().for_each(run);
    } else {
        super::team::for_each(tasks.len(), |i| run(&tasks[i]));
    }
    y
}

/// The tasks of a region over matrices of `outs` output columns: `(matrix, o0, o1)`, ranges
/// on [`W_CHUNK`] boundaries covering every column once, in shrinking sizes (each half of
/// what is left per thread, down to one chunk): the first tasks are long, so that
/// claims are few, and the last are one chunk, so that the threads finish together instead
/// of one waiting for the other's last big task (~5% of each thread's time at K=1 with
/// tasks of equal size).
fn guided_tasks(outs: &[usize], threads: usize) -> Vec<(usize, usize, usize)> {
    let mut left: usize = outs.iter().sum();
    let mut tasks = Vec::new();
    for (m, &out) in outs.iter().enumerate() {
        let mut o0 = 0;
        while o0 < out {
            let size = (left / (2 * threads))
                .next_multiple_of(W_CHUNK)
                .max(W_CHUNK);
            let o1 = (o0 + size).min(out);
            tasks.push((m, o0, o1));
            left -= o1 - o0;
            o0 = o1;
        }
    }
    tasks
}

/// Every row for [`prompt8::tile`] and [`unpacked8::tile`], with `--int8`, AVX2 and weights
/// that take them.
fn quantize_int8_rows(mats: &[&CpuQMatMul], x: &[f32], cols: usize, int8: bool) -> Option<Rows8> {
    #[cfg(target_arch = "x86_64")]
    if !x.is_empty() && int8 && avx2::available() && mats.iter().any(|m| m.takes_int8_prompt()) {
        // One scale per super-block where a Q4_K matrix reads the rows (prompt8::tile_k);
        // the other kernels take any scale per block.
        let q4k = mats.iter().any(|m| matches!(*m.packed, Packed::Q4K(_)));
        let span = if q4k { prompt8::SPAN_K } else { 1 };
        // SAFETY: AVX2 and FMA were detected at run time.
        return Some(unsafe { Rows8::quantize(x, cols, span) });
    }
    let _ = (mats, x, cols, int8);
    None
}

/// The decode rows for [`decode::tile`], when there are some and the CPU has AVX2.
fn quantize_decode_rows(x: &[f32], cols: usize) -> Option<Rows16> {
    #[cfg(target_arch = "x86_64")]
    if !x.is_empty() && avx2::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return Some(unsafe { Rows16::quantize(x, cols) });
    }
    let _ = (x, cols);
    None
}

/// `out[(g * t + i) * 8 + j] = x row i · row j of group row g`, for `t` rows of `cols`
/// activations; `x16`: the same rows quantized (rows `r0..r0 + t` of it), when the CPU has
/// AVX2.
fn compute_tile<G: Kernel>(
    groups: &[G],
    cols: usize,
    x: &[f32],
    x16: Option<(&Rows16, usize)>,
    out: &mut [f32],
) {
    let t = x.len() / cols;
    #[cfg(target_arch = "x86_64")]
    if let Some((x16, r0)) = x16 {
        if avx2::vnni_available() {
            // SAFETY: as below, and VNNI was detected.
            with_tile_rows!(wide t, T => unsafe { decode::tile_vnni::<G, T>(groups, x16, r0, out) });
        } else {
            // SAFETY: x16 exists only where AVX2 and FMA were detected; it holds rows
            // r0..r0 + t.
            with_tile_rows!(t, T => unsafe { decode::tile::<G, T>(groups, x16, r0, out) });
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x16;
    let per_row = cols / QK / G::SUBS;
    for (g, row) in groups.chunks_exact(per_row).enumerate() {
        for (i, x_row) in x.chunks_exact(cols).enumerate() {
            for j in 0..ROWS {
                let mut sum = 0f32;
                for (b, xb) in x_row.chunks_exact(QK).enumerate() {
                    let w = row[b / G::SUBS].dequantize_row(j, b % G::SUBS);
                    for (w, x) in w.iter().zip(xb) {
                        sum = x.mul_add(*w, sum);
                    }
                }
                out[(g * t + i) * ROWS + j] = sum;
            }
        }
    }
}

/// Matrices sharing one input, as one candle op whose output is theirs side by side; the
/// input's first `decode_rows` rows are decode rows, the rest prompt rows.
pub struct CpuQMatMulGroup {
    pub mats: Vec<CpuQMatMul>,
    pub decode_rows: usize,
}

impl CustomOp1 for CpuQMatMulGroup {
    fn name(&self) -> &'static str {
        "docanalyze-cpu-qmatmul-group"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let refs: Vec<&CpuQMatMul> = self.mats.iter().collect();
        let Some(first) = refs.first() else {
            candle_core::bail!("empty matmul group");
        };
        let x = activations(storage, layout, first.in_features)?;
        let total: usize = refs.iter().map(|m| m.out_features).sum();
        let rows = x.len() / first.in_features;
        Ok((
            CpuStorage::F32(matmul_group(&refs, x, self.decode_rows)),
            Shape::from((rows, total)),
        ))
    }
}

/// The contiguous f32 activations of an op's input, checked against `in_features`.
fn activations<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    in_features: usize,
) -> candle_core::Result<&'a [f32]> {
    let x = contiguous::<f32>(storage, layout, "quantized matmul: activations")?;
    if layout.shape().dims().last() != Some(&in_features) {
        candle_core::bail!(
            "quantized matmul: activations {:?} do not match {in_features} input features",
            layout.shape().dims()
        );
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use groups::{F32Dm, F32Split};
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Guided tasks cover each matrix's columns once, in order, on chunk boundaries (but at a
    /// matrix's end), never growing, and end in one-chunk tasks.
    #[test]
    fn guided_tasks_cover_every_column_once_and_shrink() {
        for (outs, threads) in [
            (vec![2048, 512, 512], 2),
            (vec![128256], 2),
            (vec![576], 1),
            (vec![40, 8, 3000], 4),
            (vec![0, 16], 2),
        ] {
            let tasks = guided_tasks(&outs, threads);
            let mut next = vec![0; outs.len()];
            let mut last = usize::MAX;
            for &(m, o0, o1) in &tasks {
                assert_eq!(o0, next[m], "{outs:?}: tasks of matrix {m} in order");
                assert!(o0 < o1 && o1 <= outs[m]);
                assert!(o1 == outs[m] || (o1 - o0).is_multiple_of(W_CHUNK));
                if o1 < outs[m] {
                    assert!(o1 - o0 <= last, "{outs:?}: sizes never grow");
                    last = o1 - o0;
                }
                next[m] = o1;
            }
            assert_eq!(next, outs, "every column once");
            if outs.iter().sum::<usize>() > 64 * threads {
                let (_, o0, o1) = tasks[tasks.len() - 2];
                assert_eq!(o1 - o0, W_CHUNK, "{outs:?}: ends in one-chunk tasks");
            }
        }
    }

    const TYPES: [GgmlDType; 13] = KERNEL_TYPES;

    /// The types with decode tiles and AVX2 registers (all but F32, F16, BF16).
    fn quantized() -> impl Iterator<Item = GgmlDType> {
        let float = [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16];
        TYPES.into_iter().filter(move |t| !float.contains(t))
    }

    /// Odd output sizes; inputs a multiple of 32, or of 256 for the K-quants.
    fn shapes(dtype: GgmlDType) -> [(usize, usize); 3] {
        if is_k_quant(dtype) {
            [(7, 256), (37, 512), (65, 768)]
        } else {
            [(7, 32), (37, 96), (65, 160)]
        }
    }

    /// candle's f32 weights of a quantized matrix, row by row.
    fn candle_weights(qw: &QTensor) -> Vec<f32> {
        let w = qw.dequantize(&Device::Cpu).unwrap();
        w.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The blocks of every type, as the kernel holds them.
    fn packed_blocks(dtype: GgmlDType) -> CpuQMatMul {
        let (out, inp) = shapes(dtype)[1];
        let w = Tensor::from_vec(random(out * inp, 12), (out, inp), &Device::Cpu).unwrap();
        let qw = QTensor::quantize(&w, dtype).unwrap();
        CpuQMatMul::from_qtensor(&qw).unwrap().unwrap()
    }

    /// The AVX2 panels of the prompt-row GEMM equal the portable ones exactly (a zero may
    /// differ in sign), for every type and a last group with missing rows.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_panels_equal_the_portable_ones() {
        if !avx2_available() {
            return;
        }
        fn check<G: Kernel>(groups: &[G], cols: usize, dtype: GgmlDType) {
            let n = cols / QK / G::SUBS;
            // Group rows 4 (full) and 4..5 (the last, 37 = 4·8 + 5 rows).
            for range in [2 * n..4 * n, 4 * n..5 * n] {
                let mut want = vec![1f32; cols * gemm::NR];
                let mut got = want.clone();
                want.fill(0.0);
                gemm::pack_portable(&groups[range.clone()], n, &mut want);
                got.fill(0.0);
                // SAFETY: AVX2 and FMA were detected above.
                unsafe { gemm::pack_avx2(&groups[range.clone()], n, &mut got) };
                assert!(got == want, "{dtype:?} groups {range:?}");
            }
        }
        for dtype in quantized() {
            let k = packed_blocks(dtype);
            with_groups!(&*k.packed, g => check(g, k.in_features, dtype))
        }
        // Unquantized weights: floats::pack against the portable packing.
        for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16] {
            let k = packed_blocks(dtype);
            let n = k.in_features / QK;
            let check = |pack: &dyn Fn(&mut [f32], bool)| {
                let (mut want, mut got) = (
                    vec![1f32; k.in_features * gemm::NR],
                    vec![2f32; k.in_features * gemm::NR],
                );
                pack(&mut want, false);
                pack(&mut got, true);
                assert!(got == want, "{dtype:?}");
            };
            for range in [2 * n..4 * n, 4 * n..5 * n] {
                macro_rules! both {
                    ($g:expr) => {
                        check(&|panel: &mut [f32], avx2: bool| {
                            panel.fill(0.0);
                            if avx2 {
                                floats::pack(&$g[range.clone()], n, panel)
                            } else {
                                gemm::pack_portable(&$g[range.clone()], n, panel)
                            }
                        })
                    };
                }
                match &*k.packed {
                    Packed::F32(g) => both!(g),
                    Packed::F16(g) => both!(g),
                    Packed::BF16(g) => both!(g),
                    _ => unreachable!(),
                }
            }
        }
    }

    /// Every type's groups dequantize to candle's weights, row by row (K-quant super-blocks
    /// split into blocks of 32; 9 rows, so the last group has missing rows).
    #[test]
    fn groups_dequantize_like_candle() {
        fn rows<G: Group>(groups: &[G], rows: usize, cols: usize) -> Vec<f32> {
            (0..rows)
                .flat_map(|o| groups::row_weights(groups, o, cols))
                .collect()
        }
        let dev = Device::Cpu;
        for dtype in TYPES {
            let w = Tensor::from_vec(random(9 * 512, 11), (9, 512), &dev).unwrap();
            let qw = QTensor::quantize(&w, dtype).unwrap();
            let want = candle_weights(&qw);
            let k = CpuQMatMul::from_qtensor(&qw).unwrap().unwrap();
            let got: Vec<f32> = match &*k.packed {
                Packed::F32(g) => rows(g, 9, 512),
                Packed::F16(g) => rows(g, 9, 512),
                Packed::BF16(g) => rows(g, 9, 512),
                packed => with_groups!(packed, g => rows(g, 9, 512)),
            };
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // ggml computes d·q − m with a separate multiply; ours is one FMA.
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                    "{dtype:?} weight {i}: {g} vs {w}"
                );
            }
        }
    }

    /// Every type against a dequantize-then-f64 reference, for odd sizes and batch 1..=17,
    /// half of each batch decode rows and half prompt rows (both kernels), within the
    /// rounding that 16-bit activations explain.
    #[test]
    fn matches_dequantized_reference() {
        let dev = Device::Cpu;
        for dtype in TYPES {
            for (out, inp) in shapes(dtype) {
                let w = Tensor::from_vec(random(out * inp, 1), (out, inp), &dev).unwrap();
                let qw = QTensor::quantize(&w, dtype).unwrap();
                let wd = candle_weights(&qw);
                let k = CpuQMatMul::from_qtensor(&qw).unwrap().unwrap();
                for rows in 1..=17 {
                    let x = random(rows * inp, 2 + rows as u64);
                    let decode_rows = rows / 2;
                    let y = k.matmul(&x, decode_rows);
                    for r in 0..rows {
                        // Decode rows' activations are rounded to 16 bits (with AVX2): by at
                        // most half a step, 1/65534 of their block's largest value.
                        let step = |i: usize| {
                            let block = &x[r * inp + i / QK * QK..][..QK];
                            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                            amax as f64 / 65534.0
                        };
                        let rounded = r < decode_rows && avx2_available();
                        for o in 0..out {
                            let (exact, scale, rounding) =
                                (0..inp).fold((0f64, 0f64, 0f64), |(e, s, q), i| {
                                    let w = wd[o * inp + i] as f64;
                                    let p = x[r * inp + i] as f64 * w;
                                    let q = if rounded { q + w.abs() * step(i) } else { q };
                                    (e + p, s + p.abs(), q)
                                });
                            // Otherwise only f32 rounding of the products and sums.
                            let err = (y[r * out + o] as f64 - exact).abs();
                            assert!(
                                err <= scale * 1e-6 + 1e-6 + rounding,
                                "{dtype:?} {out}x{inp} rows={rows} r={r} o={o}: {} vs {exact}",
                                y[r * out + o]
                            );
                        }
                    }
                }
            }
        }
    }

    /// The portable decode tiles (the path of CPUs without AVX2) give each output as one f32
    /// FMA chain over the dequantized weights, in order: exactly the sum computed here, for
    /// every type, tile heights 1-4 and a last group with missing rows.
    #[test]
    fn portable_decode_tiles_are_exact_f32_sums() {
        fn check<G: Kernel>(groups: &[G], rows: usize, cols: usize, dtype: GgmlDType) {
            let weights = |o: usize| groups::row_weights(groups, o, cols);
            for t in 1..=MAX_TILE {
                let x = random(t * cols, 40 + t as u64);
                let mut out = vec![f32::NAN; groups.len() / (cols / QK / G::SUBS) * t * ROWS];
                compute_tile(groups, cols, &x, None, &mut out);
                for o in 0..rows {
                    let w = weights(o);
                    for (i, x) in x.chunks_exact(cols).enumerate() {
                        let want = x.iter().zip(&w).fold(0f32, |s, (x, w)| x.mul_add(*w, s));
                        let got = out[(o / ROWS * t + i) * ROWS + o % ROWS];
                        assert_eq!(got, want, "{dtype:?} t={t} row {o}, activation row {i}");
                    }
                }
            }
        }
        for dtype in quantized() {
            let k = packed_blocks(dtype);
            let (rows, cols) = (k.out_features, k.in_features);
            with_groups!(&*k.packed, g => check(g, rows, cols, dtype))
        }
    }

    /// Q3_K … Q6_K held whole per super-block ([`Q3KGroup`], [`Q4KGroup`], [`Q5KGroup`],
    /// [`Q6KGroup`]; Q4_K's and Q5_K's 6-bit scales and mins packed 6 bits apiece as in the file,
    /// the others' scales as bytes) give the same bits in every kernel as their blocks with
    /// the scales multiplied out in f32 (their form before: 2.9×, 1.33×, 1.8× and 1.52× the
    /// file's bytes instead of 1.05×, 1.0×, 1.0× and 1.01×); Q2_K (no form before) is held at
    /// 1.05×.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn whole_super_blocks_equal_their_blocks_with_f32_scales() {
        if !avx2_available() {
            return;
        }
        let (out, cols) = (37usize, 768);
        let padded = out.div_ceil(ROWS) * ROWS;
        let w = Tensor::from_vec(random(out * cols, 21), (out, cols), &Device::Cpu).unwrap();
        let x = random(4 * cols, 22);
        // SAFETY: AVX2, FMA and F16C were detected above.
        let (x16, x8) = unsafe { (Rows16::quantize(&x, cols), Rows8::quantize(&x, cols, 1)) };
        let data = |dtype| {
            QTensor::quantize(&w, dtype)
                .unwrap()
                .data()
                .unwrap()
                .to_vec()
        };

        let q4k = data(GgmlDType::Q4K);
        let whole = Q4KGroup::matrix(&q4k, out);
        let blocks: HugePageArray<Nibbles8<F32Dm>> =
            decode_k(&q4k, out, blocks::Q4_K_BYTES, blocks::q4_k_blocks);
        // The file's 144 bytes per row and super-block (rows padded to 8).
        assert_eq!(size_of_val(&whole[..]), padded * cols / QK_K * 144);
        assert_eq!(q4k.len(), out * cols / QK_K * blocks::Q4_K_BYTES);
        same_bits(&whole, &blocks, cols, &x, &x16);
        for t in 1..=MAX_TILE {
            let (mut a, mut b) = (vec![0f32; 5 * ROWS * t], vec![0f32; 5 * ROWS * t]);
            let (mut sa, mut sb) = (Vec::new(), Vec::new());
            // SAFETY: as above; x8 holds 4 rows.
            with_tile_rows!(t, T => unsafe {
                prompt8::scale_vectors(&whole, &mut sa);
                prompt8::scale_vectors(&blocks, &mut sb);
                prompt8::tile::<_, T, true>(&whole, &sa, &x8, 0, &mut a);
                prompt8::tile::<_, T, false>(&blocks, &[], &x8, 0, &mut b);
            });
            assert!(a == b, "8-bit tile of {t} rows");
        }

        let q6k = data(GgmlDType::Q6K);
        let whole = Q6KGroup::matrix(&q6k, out);
        let blocks: HugePageArray<Bytes8<true, F32Split>> =
            decode_k(&q6k, out, blocks::Q6_K_BYTES, |b| {
                blocks::split_blocks(blocks::q6_k_parts(b), 32)
            });
        // 212 bytes per row and super-block, the file's 210.
        assert_eq!(size_of_val(&whole[..]), padded * cols / QK_K * 212);
        same_bits(&whole, &blocks, cols, &x, &x16);

        let q5k = data(GgmlDType::Q5K);
        let whole = Q5KGroup::matrix(&q5k, out);
        let blocks: HugePageArray<Bytes8<false, F32Dm>> =
            decode_k(&q5k, out, blocks::Q5_K_BYTES, blocks::q5_k_blocks);
        // The file's 176 bytes per row and super-block.
        assert_eq!(size_of_val(&whole[..]), padded * cols / QK_K * 176);
        same_bits(&whole, &blocks, cols, &x, &x16);

        let q3k = data(GgmlDType::Q3K);
        let whole = Q3KGroup::matrix(&q3k, out);
        let blocks: HugePageArray<Bytes8<true, F32Split>> =
            decode_k(&q3k, out, blocks::Q3_K_BYTES, |b| {
                blocks::split_blocks(blocks::q3_k_parts(b), 4)
            });
        // 116 bytes per row and super-block, the file's 110.
        assert_eq!(size_of_val(&whole[..]), padded * cols / QK_K * 116);
        same_bits(&whole, &blocks, cols, &x, &x16);

        // 88 bytes per row and super-block, the file's 84.
        let whole = Q2KGroup::matrix(&data(GgmlDType::Q2K), out);
        assert_eq!(size_of_val(&whole[..]), padded * cols / QK_K * 88);
    }

    /// Q5_0 and Q5_1 held in 5 bits ([`Fives8`], 192 bytes per 8 rows: the file's 176 and 192)
    /// give the same bits in every kernel as their former form, a byte per weight (272 and 288).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn five_bit_blocks_equal_their_bytes() {
        if !avx2_available() {
            return;
        }
        let (out, cols) = (37usize, 768);
        let w = Tensor::from_vec(random(out * cols, 23), (out, cols), &Device::Cpu).unwrap();
        let x = random(4 * cols, 24);
        // SAFETY: AVX2, FMA and F16C were detected above.
        let x16 = unsafe { Rows16::quantize(&x, cols) };
        let data = |dtype| {
            QTensor::quantize(&w, dtype)
                .unwrap()
                .data()
                .unwrap()
                .to_vec()
        };
        let q5_0 = data(GgmlDType::Q5_0);
        let fives: HugePageArray<Fives8<true, F16D>> = decode::<BlockQ5_0, _>(&q5_0, out);
        let bytes: HugePageArray<Bytes8<true, F16D>> = decode::<BlockQ5_0, _>(&q5_0, out);
        assert_eq!(size_of::<Fives8<true, F16D>>(), 192);
        same_bits(&fives, &bytes, cols, &x, &x16);
        let q5_1 = data(GgmlDType::Q5_1);
        let fives: HugePageArray<Fives8<false, F16Dm>> = decode::<BlockQ5_1, _>(&q5_1, out);
        let bytes: HugePageArray<Bytes8<false, F16Dm>> = decode::<BlockQ5_1, _>(&q5_1, out);
        assert_eq!(size_of::<Fives8<false, F16Dm>>(), 192);
        same_bits(&fives, &bytes, cols, &x, &x16);
    }

    /// Decode tiles of 1-4 rows and prompt-row panels of `whole` equal those of `blocks`.
    #[cfg(target_arch = "x86_64")]
    fn same_bits<W: Kernel, B: Kernel>(
        whole: &[W],
        blocks: &[B],
        cols: usize,
        x: &[f32],
        x16: &Rows16,
    ) {
        let name = std::any::type_name::<W>();
        for t in 1..=MAX_TILE {
            let tile = |y: &mut Vec<f32>, held_whole: bool| {
                let x = &x[..t * cols];
                if held_whole {
                    compute_tile(whole, cols, x, Some((x16, 0)), y)
                } else {
                    compute_tile(blocks, cols, x, Some((x16, 0)), y)
                }
            };
            let (mut a, mut b) = (vec![0f32; 5 * t * ROWS], vec![0f32; 5 * t * ROWS]);
            tile(&mut a, true);
            tile(&mut b, false);
            assert!(a == b, "{name}: decode tile of {t} rows");
        }
        let (mut a, mut b) = (vec![0f32; cols * gemm::NR], vec![0f32; cols * gemm::NR]);
        let (n_whole, n_blocks) = (cols / QK / W::SUBS, cols / QK / B::SUBS);
        // SAFETY: AVX2, FMA and F16C were detected by the caller.
        unsafe {
            gemm::pack_avx2(&whole[2 * n_whole..4 * n_whole], n_whole, &mut a);
            gemm::pack_avx2(&blocks[2 * n_blocks..4 * n_blocks], n_blocks, &mut b);
        }
        assert!(a == b, "{name}: prompt-row panels");
    }

    /// With AVX-512 VNNI, the tiles of 1-8 rows give each row the same bits as the AVX2 tile
    /// of that row alone: the 16-bit decode tile for every type, the 8-bit tiles for Q4_0,
    /// Q4_1 and Q4_K, the unpacked 8-bit tile for the other types but Q8_0.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_tiles_equal_the_avx2_ones() {
        if !avx2::vnni_available() {
            return;
        }
        /// `tile(t, vnni, r0, out)`: the VNNI tile of `t` = 1..8 rows against the AVX2 tile
        /// of each row alone.
        fn check(name: String, groups: usize, tile: impl Fn(usize, bool, usize, &mut [f32])) {
            for t in 1..=MAX_TILE_VNNI {
                let mut batched = vec![f32::NAN; groups * t * ROWS];
                tile(t, true, 0, &mut batched);
                for r in 0..t {
                    let mut alone = vec![f32::NAN; groups * ROWS];
                    tile(1, false, r, &mut alone);
                    for g in 0..groups {
                        let got = &batched[(g * t + r) * ROWS..][..ROWS];
                        assert_eq!(got, &alone[g * ROWS..][..ROWS], "{name}: row {r} of {t}");
                    }
                }
            }
        }
        fn decode_tiles<G: Kernel>(w: &[G], cols: usize, x16: &Rows16, name: String) {
            let groups = w.len() / (cols / QK / G::SUBS);
            check(name, groups, |t, vnni, r0, out| {
                // SAFETY: VNNI (and so AVX2) was detected; x16 holds 8 rows.
                unsafe {
                    if vnni {
                        with_tile_rows!(wide t, T => decode::tile_vnni::<G, T>(w, x16, r0, out))
                    } else {
                        with_tile_rows!(t, T => decode::tile::<G, T>(w, x16, r0, out))
                    }
                }
            });
        }
        for dtype in quantized() {
            let k = packed_blocks(dtype);
            let cols = k.in_features;
            let x = random(MAX_TILE_VNNI * cols, 31);
            // SAFETY: AVX2, FMA and F16C were detected (with VNNI).
            let x16 = unsafe { Rows16::quantize(&x, cols) };
            let name = format!("{dtype:?} decode tile");
            with_groups!(&*k.packed, w => decode_tiles(w, cols, &x16, name));
            let span = if dtype == GgmlDType::Q4K {
                prompt8::SPAN_K
            } else {
                1
            };
            // SAFETY: as above.
            let x8 = unsafe { Rows8::quantize(&x, cols, span) };
            match &*k.packed {
                Packed::Q4(w) => {
                    let groups = w.len() / (cols / QK);
                    let mut scales = Vec::new();
                    // SAFETY: as above.
                    unsafe { prompt8::scale_vectors(w, &mut scales) };
                    // The VNNI tiles of one and of two groups at a time ([`pairs8`], which
                    // takes the scales given).
                    for kind in ["one group", "pairs"] {
                        check(
                            format!("{dtype:?} 8-bit tile, {kind}"),
                            groups,
                            |t, vnni, r0, out| {
                                // SAFETY: as above; x8 holds 8 rows.
                                unsafe {
                                    match (vnni, kind) {
                                        (false, _) => with_tile_rows!(t, T =>
                                            prompt8::tile::<_, T, false>(w, &[], &x8, r0, out)),
                                        (true, "one group") => with_tile_rows!(wide t, T =>
                                            prompt8::tile_vnni::<_, T, false>(w, &[], &x8, r0, out)),
                                        (true, _) => with_tile_rows!(wide t, T =>
                                            pairs8::tile::<_, T>(w, &scales, &x8, r0, out)),
                                    }
                                }
                            },
                        );
                    }
                }
                Packed::Q4K(w) => {
                    let groups = w.len() / (cols / QK_K);
                    for kind in ["one group", "pairs"] {
                        check(
                            format!("{dtype:?} 8-bit tile, {kind}"),
                            groups,
                            |t, vnni, r0, out| {
                                // SAFETY: as above; x8 holds 8 rows, quantized per
                                // super-block.
                                unsafe {
                                    match (vnni, kind) {
                                        (false, _) => with_tile_rows!(t, T =>
                                            prompt8::tile_k::<T>(w, &x8, r0, out, false)),
                                        (true, "one group") => with_tile_rows!(wide t, T =>
                                            prompt8::tile_k_vnni::<T>(w, &x8, r0, out, true)),
                                        (true, _) => with_tile_rows!(wide t, T =>
                                            pairs8::tile_k::<T>(w, &x8, r0, out, true)),
                                    }
                                }
                            },
                        );
                    }
                }
                _ if k.unpacks => {
                    fn unpacked<G: Kernel>(w: &[G], cols: usize, x8: &Rows8, name: String) {
                        let mut chunk = unpacked8::Chunk8::default();
                        // SAFETY: as above; the chunk holds whole group rows.
                        unsafe { unpacked8::unpack(w, &mut chunk) };
                        let groups = w.len() / (cols / QK / G::SUBS);
                        check(name, groups, |t, vnni, r0, out| {
                            // SAFETY: as above; x8 holds 8 rows.
                            unsafe {
                                if vnni {
                                    with_tile_rows!(wide t, T =>
                                        unpacked8::tile::<T, true>(&chunk, x8, r0, out))
                                } else {
                                    with_tile_rows!(t, T =>
                                        unpacked8::tile::<T, false>(&chunk, x8, r0, out))
                                }
                            }
                        });
                    }
                    let name = format!("{dtype:?} unpacked 8-bit tile");
                    with_groups!(&*k.packed, w => unpacked(w, cols, &x8, name));
                }
                _ => {}
            }
        }
    }

    /// A row's result is the same alone and in any batch, for both kinds of rows, every type,
    /// with and without `--int8`.
    #[test]
    fn rows_do_not_depend_on_their_batch() {
        let dev = Device::Cpu;
        let (out, inp) = (40, 256);
        for dtype in TYPES {
            let w = Tensor::from_vec(random(out * inp, 5), (out, inp), &dev).unwrap();
            let k = CpuQMatMul::from_qtensor(&QTensor::quantize(&w, dtype).unwrap())
                .unwrap()
                .unwrap();
            let x = random(13 * inp, 6);
            if !quantized().any(|t| t == dtype) {
                // Unquantized: decode rows (their tile) and prompt rows (the GEMM) agree.
                assert_eq!(k.matmul(&x, 13), k.matmul(&x, 0), "{dtype:?}");
            }
            // Decode rows alone, prompt rows alone, and 5 decode rows before 8 prompt rows.
            for (decode_rows, int8) in [13, 0, 5].into_iter().flat_map(|d| [(d, false), (d, true)])
            {
                let batched = matmul_group_with(&[&k], &x, decode_rows, int8);
                for r in 0..13 {
                    let kind = usize::from(r < decode_rows);
                    let alone = matmul_group_with(&[&k], &x[r * inp..(r + 1) * inp], kind, int8);
                    assert_eq!(
                        alone,
                        batched[r * out..(r + 1) * out],
                        "{dtype:?} row {r} of 13, {decode_rows} decode rows, int8 {int8}"
                    );
                }
            }
        }
    }
}
