//! A weight matrix applied to a stack of activation rows, `y = x · Wᵀ (+ b)`.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

/// One projection of the model. Every row of the batch goes through the same matrix in a
/// single call, so the weights are streamed once per step where the backend allows it.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
    out_features: usize,
}

impl Linear {
    pub fn new(weight: QTensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_features, _in) = weight.shape().dims2()?;
        Ok(Self {
            weight: QMatMul::from_qtensor(weight)?,
            bias,
            out_features,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `x`: `[rows, in_features]` → `[rows, out_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
