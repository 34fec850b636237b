//! Rotary position embedding: the cos/sin tables of every position, built once at load, and
//! the rotation of query and key heads by the rows' own positions.

use candle_core::{DType, Device, Tensor};
use candle_nn::rotary_emb::{rope, rope_i};

use super::{GgufFile, ModelConfig, ModelError};

/// cos and sin of `position · θ_i`, `[positions, head_dim / 2]` each.
pub struct RotaryTable {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryTable {
    /// The table of frequency base `base` (the model's own, or a local layer's), with the
    /// file's Llama 3 frequency factors and linear scaling.
    pub fn new(
        config: &ModelConfig,
        base: f32,
        factors: Option<&[f32]>,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let (cos, sin) = rotary_tables(config, base, factors, dev)?;
        Ok(Self { cos, sin })
    }

    /// The rows' tables, `[rows, 1, head_dim / 2]`: each row is its own "batch" of one
    /// position, so rows of different sequences at different positions share one call.
    pub fn at(&self, positions: &Tensor) -> candle_core::Result<Rotation> {
        Ok(Rotation {
            cos: self.cos.index_select(positions, 0)?.unsqueeze(1)?,
            sin: self.sin.index_select(positions, 0)?.unsqueeze(1)?,
        })
    }
}

/// One step's rows' cos/sin, from [`RotaryTable::at`].
pub struct Rotation {
    cos: Tensor,
    sin: Tensor,
}

impl Rotation {
    /// Rotates `[rows, heads, 1, head_dim]`: the two halves of each head (NeoX), or adjacent
    /// pairs (llama.cpp's converter permutes llama/mistral q/k weights for those).
    pub fn apply(&self, x: &Tensor, neox: bool) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        if neox {
            rope(&x, &self.cos, &self.sin)
        } else {
            rope_i(&x, &self.cos, &self.sin)
        }
    }
}

/// Llama 3.1/3.2's RoPE scaling: `rope_freqs.weight`, one divisor per rotary frequency
/// (llama.cpp's `freq_factors`); `None` when the file has none.
pub fn rope_factors(
    gguf: &mut GgufFile,
    config: &ModelConfig,
) -> Result<Option<Vec<f32>>, ModelError> {
    const NAME: &str = "rope_freqs.weight";
    if !gguf.has_tensor(NAME) {
        return Ok(None);
    }
    let factors: Vec<f32> = gguf
        .tensor(NAME, &Device::Cpu)?
        .dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    let half = config.head_dim / 2;
    if factors.len() != half || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(ModelError::BadValue {
            key: NAME.into(),
            path: gguf.path.clone(),
            message: format!(
                "{} RoPE frequency factors, expected {half} positive ones (head size {})",
                factors.len(),
                config.head_dim
            ),
        });
    }
    Ok(Some(factors))
}

/// cos and sin of `position · θ_i` for every position and rotary frequency `i`, where
/// `θ_i = base^(−2i / head_dim) / factor_i / linear_factor` (llama.cpp's `rope` with
/// `freq_factors` and `freq_scale`).
fn rotary_tables(
    config: &ModelConfig,
    base: f32,
    factors: Option<&[f32]>,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = config.head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            let factor = factors.map_or(1.0, |f| f[i]) * config.rope_linear_factor;
            1.0 / base.powf(2.0 * i as f32 / config.head_dim as f32) / factor
        })
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, half), dev)?;
    let positions = Tensor::arange(0u32, config.context_length as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((config.context_length, 1))?;
    let angles = positions.broadcast_mul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(head_dim: usize, linear: f32) -> ModelConfig {
        ModelConfig {
            architecture: "llama".into(),
            name: "t".into(),
            n_layer: 1,
            n_embd: head_dim,
            n_head: 1,
            n_kv_head: 1,
            head_dim,
            n_ff: 8,
            context_length: 64,
            rope_freq_base: 500_000.0,
            rope_linear_factor: linear,
            rms_eps: 1e-5,
            vocab_size: 8,
            rope_neox: false,
            attention_scale: 1.0,
            sliding_window: None,
        }
    }

    #[test]
    fn rotary_angles_divide_by_the_frequency_factors() {
        let c = config(8, 1.0);
        let factors = [1.0, 2.0, 8.0, 32.0];
        let table = |t: Tensor| -> Vec<Vec<f32>> { t.to_vec2().unwrap() };
        let (cos, sin) = rotary_tables(&c, c.rope_freq_base, Some(&factors), &Device::Cpu).unwrap();
        let (plain_cos, _) = rotary_tables(&c, c.rope_freq_base, None, &Device::Cpu).unwrap();
        let (cos, sin, plain_cos) = (table(cos), table(sin), table(plain_cos));
        for p in [0usize, 1, 17, 63] {
            for (i, factor) in factors.iter().enumerate() {
                let theta = p as f64 * 500_000f64.powf(-2.0 * i as f64 / 8.0) / *factor as f64;
                assert!((cos[p][i] as f64 - theta.cos()).abs() < 1e-5, "p {p} i {i}");
                assert!((sin[p][i] as f64 - theta.sin()).abs() < 1e-5, "p {p} i {i}");
            }
            // Factor 1 leaves the first frequency as it was.
            assert_eq!(cos[p][0], plain_cos[p][0]);
        }
        // Linear scaling divides every angle: position 2p at factor 2 is position p.
        let (scaled, _) = rotary_tables(&config(8, 2.0), 500_000.0, None, &Device::Cpu).unwrap();
        let scaled = table(scaled);
        for i in 0..4 {
            assert!((scaled[20][i] - plain_cos[10][i]).abs() < 1e-6);
        }
    }
}
