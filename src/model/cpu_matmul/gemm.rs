//! Prompt rows: a register-blocked f32 GEMM over weights dequantized one panel at a time.
//!
//! A prompt arrives as many rows per step, so each panel of [`NR`] weight rows is dequantized
//! once into f32, laid out k-major (`panel[k * NR + o]`), and multiplied into tiles of up to
//! [`MR`] activation rows with `2·MR` accumulators of eight outputs each. Every output is one
//! FMA chain over `k` in order, whatever the tile height and however many rows share the
//! step, so a row's result never depends on the rows next to it (and equals the portable
//! `mul_add` loop exactly).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::blocks::QK;
use super::{Kernel, SharedOut};

/// Weight rows (output columns) per panel: two AVX2 registers.
pub const NR: usize = 16;
/// Activation rows per tile: 12 accumulators, two panel registers and one broadcast.
const MR: usize = 6;

/// `y[r * stride + o]` for activation rows `x` (`cols` each) and weight rows `o0..o1` of `w`.
pub fn run_range<B: Kernel>(
    w: &[B],
    cols: usize,
    x: &[f32],
    y: SharedOut,
    stride: usize,
    o0: usize,
    o1: usize,
) {
    let nb = cols / QK;
    let rows = x.len() / cols;
    if rows == 0 {
        return;
    }
    let mut panel = vec![0f32; cols * NR];
    let mut tile = [[0f32; NR]; MR];
    let mut c0 = o0;
    while c0 < o1 {
        let n = (o1 - c0).min(NR);
        pack(&w[c0 * nb..(c0 + n) * nb], nb, &mut panel);
        let mut r0 = 0;
        while r0 < rows {
            let t = (rows - r0).min(MR);
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

/// `panel[k * NR + o]` = weight `k` of row `o` of `w_rows` (up to `NR` rows of `nb` blocks);
/// the columns of missing rows are zero.
fn pack<B: Kernel>(w_rows: &[B], nb: usize, panel: &mut [f32]) {
    let n = w_rows.len() / nb;
    if n < NR {
        panel.fill(0.0);
    }
    let mut o = 0;
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        while o + 8 <= n {
            // SAFETY: AVX2 and FMA were detected at run time; 8 rows, columns o..o + 8 < NR.
            unsafe { pack8_avx2(&w_rows[o * nb..(o + 8) * nb], nb, panel, o) };
            o += 8;
        }
    }
    for (i, row) in w_rows[o * nb..].chunks_exact(nb).enumerate() {
        for (b, block) in row.iter().enumerate() {
            for (j, v) in block.dequantize().iter().enumerate() {
                panel[(b * QK + j) * NR + o + i] = *v;
            }
        }
    }
}

/// [`pack`] for 8 weight rows into panel columns `col..col + 8`: each block of the 8 rows is
/// dequantized in registers and transposed 8×8 at a time, one store per weight position.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `w_rows` holds 8 rows of `nb` blocks; `col + 8 <= NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack8_avx2<B: Kernel>(w_rows: &[B], nb: usize, panel: &mut [f32], col: usize) {
    debug_assert!(w_rows.len() == 8 * nb && col + 8 <= NR && panel.len() >= nb * QK * NR);
    let p = panel.as_mut_ptr();
    // (no closures here: they would not inherit the target features)
    let mut rows = [[_mm256_setzero_ps(); 4]; 8];
    let mut quarter = [_mm256_setzero_ps(); 8];
    for b in 0..nb {
        for (r, row) in rows.iter_mut().enumerate() {
            *row = w_rows.get_unchecked(r * nb + b).dequantize_avx2();
        }
        for q in 0..4 {
            for (v, row) in quarter.iter_mut().zip(&rows) {
                *v = row[q];
            }
            let t = transpose8(quarter);
            for (kk, v) in t.iter().enumerate() {
                _mm256_storeu_ps(p.add((b * QK + q * 8 + kk) * NR + col), *v);
            }
        }
    }
}

/// Rows `r[i]` of an 8×8 matrix → its columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// `tile[i][o]` = activation row `i` (of `t`) · panel column `o`.
fn multiply(panel: &[f32], cols: usize, t: usize, x: &[f32], tile: &mut [[f32; NR]; MR]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        macro_rules! heights {
            ($($t:literal)*) => {
                match t {
                    // SAFETY: AVX2 and FMA were detected at run time; x holds t rows.
                    $($t => unsafe { multiply_avx2::<$t>(panel, cols, x, tile) },)*
                    _ => unreachable!("tile of {t} rows"),
                }
            };
        }
        heights!(1 2 3 4 5 6);
        return;
    }
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
    tile: &mut [[f32; NR]; MR],
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
