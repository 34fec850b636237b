//! Reading a layer's tensors from the GGUF by llama.cpp's names (`blk.{i}.attn_q.weight`).

use candle_core::{Device, Tensor};

use super::{GgufFile, Linear, ModelError};

/// The tensors of one model file, read onto one device.
pub struct Weights<'a> {
    pub gguf: &'a mut GgufFile,
    pub device: &'a Device,
}

impl Weights<'_> {
    /// A norm's weight (or any small vector), as f32.
    pub fn vector(&mut self, name: &str) -> Result<Tensor, ModelError> {
        Ok(self
            .gguf
            .tensor(name, self.device)?
            .dequantize(self.device)?)
    }

    /// The projection `{name}.weight`, with `{name}.bias` when the file has one.
    pub fn linear(&mut self, name: &str) -> Result<Linear, ModelError> {
        let weight = self.gguf.tensor(&format!("{name}.weight"), self.device)?;
        let bias_name = format!("{name}.bias");
        let bias = if self.gguf.has_tensor(&bias_name) {
            Some(self.vector(&bias_name)?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias)?)
    }

    pub fn has(&self, name: &str) -> bool {
        self.gguf.has_tensor(name)
    }
}
