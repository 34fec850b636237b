//! Scaled, causally masked softmax over the attention scores of a block of prompt rows, in one
//! pass per row on the CPU (candle's path scales, adds a mask and exponentiates with scalar
//! `expf` in three passes: a third of a long prompt's time went there).
//!
//! A row of scores is one query head of one prompt row, which sees the keys up to its own
//! position ([`super::prompt_attention`] passes how many); the rest of the row comes out 0. A
//! row's values depend only on its own scores, so they are the same in every batch.

/// `row[..visible]` ← softmax(scale · row[..visible]); `row[visible..]` ← 0.
pub fn softmax_row(row: &mut [f32], visible: usize, scale: f32) {
    let (seen, hidden) = row.split_at_mut(visible);
    hidden.fill(0.0);
    #[cfg(target_arch = "x86_64")]
    if super::cpu_matmul::avx2_available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::softmax(seen, scale) };
    }
    let max = seen
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
    let mut sum = 0f32;
    for s in seen.iter_mut() {
        *s = exp(s.mul_add(scale, -max));
        sum += *s;
    }
    let inv = 1.0 / sum;
    seen.iter_mut().for_each(|s| *s *= inv);
}

// Cephes' single-precision exp: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-7 polynomial
// (within 2 ulp of the true value on the range used here), times 2^n.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];
/// Below this e^x is under f32's smallest normal number: taken as 0.
const EXP_MIN: f32 = -87.0;

/// e^x for x ≤ 0, the same arithmetic as the AVX2 lanes.
pub fn exp(x: f32) -> f32 {
    if x < EXP_MIN {
        return 0.0;
    }
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let y = P[1..].iter().fold(P[0], |y, &p| y.mul_add(r, p));
    let y = y.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::{EXP_MIN, LN2_HI, LN2_LO, P};
    use crate::model::cpu_matmul::avx2_hsum as hsum;

    /// [`super::exp`] on eight lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_MIN));
        let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut y = _mm256_set1_ps(P[0]);
        for &p in &P[1..] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(p));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_andnot_ps(tiny, _mm256_mul_ps(y, pow2))
    }

    /// [`super::softmax_row`] for the visible scores: lanes of eight, then the scalar tail.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(row: &mut [f32], scale: f32) {
        let n = row.len();
        let body = n - n % 8;
        let p = row.as_mut_ptr();
        let sc = _mm256_set1_ps(scale);
        let mut maxv = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..body).step_by(8) {
            maxv = _mm256_max_ps(maxv, _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), sc));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), maxv);
        let max = row[body..].iter().fold(
            lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            |m, &s| m.max(s * scale),
        );
        let neg_max = _mm256_set1_ps(-max);
        let mut sumv = _mm256_setzero_ps();
        for i in (0..body).step_by(8) {
            let e = exp8(_mm256_fmadd_ps(_mm256_loadu_ps(p.add(i)), sc, neg_max));
            _mm256_storeu_ps(p.add(i), e);
            sumv = _mm256_add_ps(sumv, e);
        }
        let mut sum = hsum(sumv);
        for s in row[body..].iter_mut() {
            *s = super::exp(s.mul_add(scale, -max));
            sum += *s;
        }
        let inv = 1.0 / sum;
        let invv = _mm256_set1_ps(inv);
        for i in (0..body).step_by(8) {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), invv));
        }
        row[body..].iter_mut().for_each(|s| *s *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= want * 3e-7,
                "exp({x}) = {got}, libm {want}"
            );
            x += 0.013;
        }
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn rows_sum_to_one_and_hide_later_keys() {
        for total in [1usize, 7, 8, 19, 64] {
            for visible in 1..=total {
                let mut row: Vec<f32> = (0..total).map(|j| (j as f32 * 0.37).sin() * 9.0).collect();
                let want: Vec<f64> = {
                    let s: Vec<f64> = row[..visible].iter().map(|&v| v as f64 * 0.125).collect();
                    let m = s.iter().copied().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    e.iter().map(|v| v / z).collect()
                };
                softmax_row(&mut row, visible, 0.125);
                for (j, v) in row.iter().enumerate() {
                    let w = want.get(j).copied().unwrap_or(0.0);
                    assert!(
                        (*v as f64 - w).abs() < 1e-6,
                        "total {total} visible {visible} key {j}: {v} vs {w}"
                    );
                }
            }
        }
    }
}
