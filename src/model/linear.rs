//! A weight matrix applied to a stack of activation rows, `y = x · Wᵀ (+ b)`.

use std::collections::HashSet;
use std::sync::Mutex;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};

use super::cpu_matmul::{CpuQMatMul, CpuQMatMulGroup, KERNEL_TYPES};

/// Which matmul serves a matrix of `dtype` on the CPU, in words (`info`, warnings).
pub fn cpu_matmul_path(dtype: GgmlDType) -> &'static str {
    if KERNEL_TYPES.contains(&dtype) {
        "batched kernel"
    } else {
        "candle, row by row (slow)"
    }
}

/// Says once per type that candle's row-by-row matmul serves quantized weights of `dtype`.
fn warn_slow_path(dtype: GgmlDType) {
    static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let name = format!("{dtype:?}");
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.get_or_insert_with(HashSet::new).insert(name.clone()) {
        tracing::warn!(
            "{name} weights are not on the batched CPU kernel: candle multiplies them row by row, several times slower"
        );
    }
}

/// Which matmul serves a weight.
#[derive(Debug, Clone)]
enum Backend {
    /// The project's batched CPU kernel (the types of [`KERNEL_TYPES`]).
    Cpu(CpuQMatMul),
    /// candle's `QMatMul`: other types, and GPUs.
    Candle(QMatMul),
}

/// One projection of the model. Every row of the batch goes through the same matrix in a
/// single call, so the weights are streamed once per step.
#[derive(Debug, Clone)]
pub struct Linear {
    backend: Backend,
    bias: Option<Tensor>,
    out_features: usize,
}

/// `DOCANALYZE_KERNEL=candle` routes every matmul through candle (for comparisons).
fn own_kernel_enabled() -> bool {
    std::env::var("DOCANALYZE_KERNEL").map_or(true, |v| v != "candle")
}

impl Linear {
    pub fn new(weight: QTensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_features, _in) = weight.shape().dims2()?;
        let own = match weight.device() {
            Device::Cpu if own_kernel_enabled() => CpuQMatMul::from_qtensor(&weight)?,
            _ => None,
        };
        let dtype = weight.dtype();
        let slow = cpu_matmul_path(dtype).ends_with("(slow)");
        if own.is_none() && weight.device().is_cpu() && own_kernel_enabled() && slow {
            warn_slow_path(dtype);
        }
        let backend = match own {
            Some(k) => Backend::Cpu(k),
            None => Backend::Candle(QMatMul::from_qtensor(weight)?),
        };
        Ok(Self {
            backend,
            bias,
            out_features,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Several projections of the same `x` (q/k/v, gate/up): on the CPU kernel, one pass over
    /// the pool for all of them; the same values as calling [`Linear::forward`] on each.
    pub fn forward_group(parts: &[&Linear], x: &Tensor, decode_rows: usize) -> Result<Vec<Tensor>> {
        let kernels: Option<Vec<CpuQMatMul>> = parts
            .iter()
            .map(|l| match &l.backend {
                Backend::Cpu(k) => Some(k.clone()),
                Backend::Candle(_) => None,
            })
            .collect();
        let same_input = kernels.as_ref().is_some_and(|ks| {
            ks.windows(2)
                .all(|w| w[0].in_features() == w[1].in_features())
        });
        let Some(kernels) = kernels.filter(|_| same_input) else {
            return parts.iter().map(|l| l.forward(x, decode_rows)).collect();
        };
        let joint = x.contiguous()?.apply_op1_no_bwd(&CpuQMatMulGroup {
            mats: kernels,
            decode_rows,
        })?;
        let mut offset = 0;
        parts
            .iter()
            .map(|l| {
                let y = joint.narrow(1, offset, l.out_features)?;
                offset += l.out_features;
                match &l.bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            })
            .collect()
    }

    /// `x`: `[rows, in_features]` → `[rows, out_features]`. The first `decode_rows` rows are
    /// decode rows, the rest prompt rows: the CPU kernel computes each kind its own way (see
    /// `cpu_matmul`); other backends treat all rows alike.
    pub fn forward(&self, x: &Tensor, decode_rows: usize) -> Result<Tensor> {
        let y = match &self.backend {
            Backend::Cpu(k) => x.contiguous()?.apply_op1_no_bwd(&CpuQMatMulGroup {
                mats: vec![k.clone()],
                decode_rows,
            })?,
            Backend::Candle(m) => m.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
