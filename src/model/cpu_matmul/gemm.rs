//! Prompt rows: a register-blocked f32 GEMM over weights dequantized one panel at a time.
//!
//! A prompt arrives as many rows per step, so each panel of [`NR`] weight rows is dequantized
//! once into f32, laid out k-major (`panel[k * NR + o]`), and multiplied into tiles of up to
//! [`MR`] activation rows with `2·MR` accumulators of eight outputs each. Every output is one
//! FMA chain over `k` in order, whatever the tile height and however many rows share the
//! step, so a row's result never depends on the rows next to it (and equals the portable
//! `mul_add` loop exactly). With AVX-512 ([`multiply_avx512`]) one register holds a panel
//! row's 16 weights and a tile [`MR_WIDE`] rows: the same FMA chains, so the same bits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::avx2::{Avx2Group, REGS};
use super::blocks::QK;
use super::groups::{Group, ROWS};
use super::{Kernel, SharedOut};

/// Weight rows (output columns) per panel: two AVX2 registers.
pub const NR: usize = 16;
/// Activation rows per tile: 12 accumulators, two panel registers and one broadcast.
const MR: usize = 6;
/// Activation rows per tile of [`multiply_avx512`]: 12 accumulators of 16 outputs each.
const MR_WIDE: usize = 12;

/// Rows per tile on this CPU.
fn tile_rows() -> usize {
    if super::avx2::avx512_available() {
        MR_WIDE
    } else {
        MR
    }
}

/// `y[r * stride + o]` for activation rows `x` (`cols` each) and weight rows `o0..o1` of the
/// groups `w` (`o0` a multiple of [`NR`]).
pub fn run_range<G: Kernel>(
    w: &[G],
    cols: usize,
    x: &[f32],
    y: SharedOut,
    stride: usize,
    o0: usize,
    o1: usize,
) {
    run_range_with(w, cols, x, y, stride, (o0, o1), pack::<G>);
}

/// [`run_range`] with the panels of `w` made by `pack(groups, per_row, panel)`.
pub fn run_range_with<G: Group>(
    w: &[G],
    cols: usize,
    x: &[f32],
    y: SharedOut,
    stride: usize,
    (o0, o1): (usize, usize),
    pack: fn(&[G], usize, &mut [f32]),
) {
    let per_row = cols / QK / G::SUBS;
    let rows = x.len() / cols;
    if rows == 0 {
        return;
    }
    debug_assert!(o0.is_multiple_of(NR));
    let mut panel = vec![0f32; cols * NR];
    let mut tile = [[0f32; NR]; MR_WIDE];
    let mr = tile_rows();
    let mut c0 = o0;
    while c0 < o1 {
        let n = (o1 - c0).min(NR);
        pack(
            &w[c0 / ROWS * per_row..(c0 + n).div_ceil(ROWS) * per_row],
            per_row,
            &mut panel,
        );
        let mut r0 = 0;
        while r0 < rows {
            let t = (rows - r0).min(mr);
            multiply(&panel, cols, t, &x[r0 * cols..(r0 + t) * cols], &mut tile);
            for (i, vals) in tile[..t].iter().enumerate() {
                for (o, v) in vals[..n].iter().enumerate() {
                    // SAFETY: in bounds; tasks write disjoint output columns.
                    unsafe { *y.at((r0 + i) * stride + c0 + o) = *v };
                }
            }
            r0 += t;
        }
        c0 += n;
    }
}

/// `panel[k * NR + o]` = weight `k` of row `o` of `groups` (one or two group rows of
/// `per_row` groups); the columns of a missing group are zero.
fn pack<G: Kernel>(groups: &[G], per_row: usize, panel: &mut [f32]) {
    pack_with(
        groups,
        per_row,
        panel,
        #[cfg(target_arch = "x86_64")]
        pack_avx2::<G>,
    );
}

/// [`pack`] for any groups, `avx2` their packing with AVX2, FMA and F16C (used when the CPU
/// has them).
pub(super) fn pack_with<G: Group>(
    groups: &[G],
    per_row: usize,
    panel: &mut [f32],
    #[cfg(target_arch = "x86_64")] avx2: unsafe fn(&[G], usize, &mut [f32]),
) {
    if groups.len() < NR / ROWS * per_row {
        panel.fill(0.0);
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        unsafe { avx2(groups, per_row, panel) };
        return;
    }
    pack_portable(groups, per_row, panel);
}

/// [`pack`] one weight at a time.
pub(super) fn pack_portable<G: Group>(groups: &[G], per_row: usize, panel: &mut [f32]) {
    for (g, row) in groups.chunks_exact(per_row).enumerate() {
        for (i, group) in row.iter().enumerate() {
            for sub in 0..G::SUBS {
                let b = i * G::SUBS + sub;
                for j in 0..ROWS {
                    for (k, v) in group.dequantize_row(j, sub).iter().enumerate() {
                        panel[(b * QK + k) * NR + g * ROWS + j] = *v;
                    }
                }
            }
        }
    }
}

/// [`pack`] with AVX2: each register of a group holds weights `2r, 2r + 1` of its 8 rows,
/// which widened to 32 bits are panel rows `2r` and `2r + 1` of those 8 columns.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `panel` holds `per_row · SUBS · 32 · NR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pack_avx2<G: Avx2Group>(groups: &[G], per_row: usize, panel: &mut [f32]) {
    debug_assert!(panel.len() >= per_row * G::SUBS * QK * NR);
    debug_assert!(groups.len() <= NR / ROWS * per_row);
    let p = panel.as_mut_ptr();
    for (g, row) in groups.chunks_exact(per_row).enumerate() {
        for (i, group) in row.iter().enumerate() {
            let mut scales = [[_mm256_setzero_ps(); 4]; 8];
            group.all_scale_vectors(&mut scales);
            for (sub, &[d_lo, d_hi, m_lo, m_hi]) in scales.iter().enumerate().take(G::SUBS) {
                let b = i * G::SUBS + sub;
                for l in 0..REGS / G::PER_LOAD {
                    let regs = group.registers(sub, l);
                    for (s, &w) in regs.iter().enumerate().take(G::PER_LOAD) {
                        let r = l * G::PER_LOAD + s;
                        let (d, m) = if r < REGS / 2 {
                            (d_lo, m_lo)
                        } else {
                            (d_hi, m_hi)
                        };
                        // Weight 2r (the low 16 bits, sign-extended) and 2r + 1 (the high ones).
                        let even = _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(w));
                        let odd = _mm256_srai_epi32::<16>(w);
                        for (e, ints) in [even, odd].into_iter().enumerate() {
                            let f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), d, m);
                            _mm256_storeu_ps(p.add((b * QK + 2 * r + e) * NR + g * ROWS), f);
                        }
                    }
                }
            }
        }
    }
}

/// `tile[i][o]` = activation row `i` (of `t`, at most [`tile_rows`]) · panel column `o`.
fn multiply(panel: &[f32], cols: usize, t: usize, x: &[f32], tile: &mut [[f32; NR]; MR_WIDE]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2::avx512_available() {
        // SAFETY: AVX-512 F was detected at run time; x holds t <= MR_WIDE rows.
        unsafe { multiply_avx512_rows(panel, cols, t, x, tile) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: AVX2 and FMA were detected at run time; x holds t <= MR rows.
        unsafe { multiply_avx2_rows(panel, cols, t, x, tile) };
        return;
    }
    multiply_portable(panel, cols, x, tile);
}

/// `$f::<T>(panel, cols, x, tile)` for `T` = `$t`, one of the `$rows`.
#[cfg(target_arch = "x86_64")]
macro_rules! with_height {
    ($f:ident, $t:expr, $args:tt, $($rows:literal)*) => {
        match $t {
            $($rows => $f::<$rows> $args,)*
            t => unreachable!("tile of {t} rows"),
        }
    };
}

/// [`multiply_avx2`] for `t` rows.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x` holds `t` rows of `cols` floats, `t <= MR`.
#[cfg(target_arch = "x86_64")]
unsafe fn multiply_avx2_rows(
    panel: &[f32],
    cols: usize,
    t: usize,
    x: &[f32],
    tile: &mut [[f32; NR]; MR_WIDE],
) {
    with_height!(multiply_avx2, t, (panel, cols, x, tile), 1 2 3 4 5 6)
}

/// [`multiply_avx512`] for `t` rows.
///
/// # Safety
/// The CPU must support AVX-512 F; `x` holds `t` rows of `cols` floats, `t <= MR_WIDE`.
#[cfg(target_arch = "x86_64")]
unsafe fn multiply_avx512_rows(
    panel: &[f32],
    cols: usize,
    t: usize,
    x: &[f32],
    tile: &mut [[f32; NR]; MR_WIDE],
) {
    with_height!(multiply_avx512, t, (panel, cols, x, tile), 1 2 3 4 5 6 7 8 9 10 11 12)
}

/// [`multiply`] one FMA at a time.
fn multiply_portable(panel: &[f32], cols: usize, x: &[f32], tile: &mut [[f32; NR]; MR_WIDE]) {
    for (i, x_row) in x.chunks_exact(cols).enumerate() {
        let mut acc = [0f32; NR];
        for (k, xv) in x_row.iter().enumerate() {
            for (a, w) in acc.iter_mut().zip(&panel[k * NR..(k + 1) * NR]) {
                *a = xv.mul_add(*w, *a);
            }
        }
        tile[i] = acc;
    }
}

/// [`multiply`] for `T` rows with AVX2: per `k`, two panel registers and one broadcast per row.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x` holds `T` rows of `cols` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn multiply_avx2<const T: usize>(
    panel: &[f32],
    cols: usize,
    x: &[f32],
    tile: &mut [[f32; NR]; MR_WIDE],
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; T];
    let p = panel.as_ptr();
    let xp = x.as_ptr();
    for k in 0..cols {
        let w0 = _mm256_loadu_ps(p.add(k * NR));
        let w1 = _mm256_loadu_ps(p.add(k * NR + 8));
        for (t, acc) in acc.iter_mut().enumerate() {
            let a = _mm256_broadcast_ss(&*xp.add(t * cols + k));
            acc[0] = _mm256_fmadd_ps(a, w0, acc[0]);
            acc[1] = _mm256_fmadd_ps(a, w1, acc[1]);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        _mm256_storeu_ps(tile[t].as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(tile[t].as_mut_ptr().add(8), acc[1]);
    }
}

/// [`multiply`] for `T` rows with AVX-512: per `k`, one panel register of 16 weights and one
/// broadcast per row; each output the same FMA chain as in [`multiply_avx2`]. Twice the
/// multiply-adds per instruction, and on Intel's server cores (two 512-bit FMA units) twice
/// the peak.
///
/// # Safety
/// The CPU must support AVX-512 F; `x` holds `T` rows of `cols` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn multiply_avx512<const T: usize>(
    panel: &[f32],
    cols: usize,
    x: &[f32],
    tile: &mut [[f32; NR]; MR_WIDE],
) {
    let mut acc = [_mm512_setzero_ps(); T];
    let p = panel.as_ptr();
    let xp = x.as_ptr();
    for k in 0..cols {
        let w = _mm512_loadu_ps(p.add(k * NR));
        for (t, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(*xp.add(t * cols + k)), w, *acc);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(tile[t].as_mut_ptr(), *acc);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Every tile height of the AVX2 and AVX-512 multiplies gives each output as the portable
    /// loop's FMA chain does: the same bits.
    #[test]
    fn vector_tiles_equal_the_portable_fma_chains() {
        let cols = 96;
        let value = |i: usize, m: usize, p: usize| ((i * m % p) as f32 - (p / 2) as f32) / 7.3;
        let panel: Vec<f32> = (0..cols * NR).map(|i| value(i, 37, 101)).collect();
        let x: Vec<f32> = (0..MR_WIDE * cols).map(|i| value(i, 53, 97)).collect();
        let mut want = [[0f32; NR]; MR_WIDE];
        multiply_portable(&panel, cols, &x, &mut want);
        for t in 1..=MR_WIDE {
            let x = &x[..t * cols];
            let mut got = [[f32::NAN; NR]; MR_WIDE];
            if t <= MR && super::super::avx2::available() {
                // SAFETY: AVX2 and FMA were detected; x holds t <= MR rows.
                unsafe { multiply_avx2_rows(&panel, cols, t, x, &mut got) };
                assert_eq!(got[..t], want[..t], "AVX2, {t} rows");
            }
            if super::super::avx2::avx512_available() {
                // SAFETY: AVX-512 F was detected; x holds t <= MR_WIDE rows.
                unsafe { multiply_avx512_rows(&panel, cols, t, x, &mut got) };
                assert_eq!(got[..t], want[..t], "AVX-512, {t} rows");
            }
        }
    }
}
