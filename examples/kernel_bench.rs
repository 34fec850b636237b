//! Measures the CPU quantized matmul: GMAC/s and time per row for the default model's matrix
//! shapes at several batch sizes. `cargo run --release --example kernel_bench [threads]`.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Module, Tensor};

fn main() -> anyhow::Result<()> {
    let threads: usize = std::env::args().nth(1).map_or(Ok(1), |t| t.parse())?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let dev = Device::Cpu;
    // (out, in) of SmolLM2-135M: q/o, k/v, gate/up, down.
    let shapes = [(576usize, 576usize), (192, 576), (1536, 576), (576, 1536)];
    println!("threads {threads}; one layer's 7 matrices, Q4_1 weights");
    println!(
        "{:>5} {:>7} {:>12} {:>12} {:>10}",
        "rows", "kind", "ms/call", "us/row", "GMAC/s"
    );
    let lins: Vec<_> = shapes
        .iter()
        .map(|&(out, inp)| {
            let w = Tensor::randn(0f32, 1.0, (out, inp), &dev)?;
            let q = QTensor::quantize(&w, GgmlDType::Q4_1)?;
            Ok(docanalyze::model::Linear::new(q, None)?)
        })
        .collect::<anyhow::Result<_>>()?;
    for rows in [1usize, 2, 4, 8, 16, 64, 256] {
        // Decode rows use the register-tile kernel, prompt rows the panel GEMM.
        for (kind, decode_rows) in [("decode", rows), ("prompt", 0)] {
            let mut total_s = 0.0;
            let mut macs = 0.0;
            for (i, (&(out, inp), lin)) in shapes.iter().zip(&lins).enumerate() {
                let x = Tensor::randn(0f32, 1.0, (rows, inp), &dev)?;
                let reps = (2000 / rows).max(5);
                let count = if i == 0 || i == 2 { 2 } else { 1 } * if i == 1 { 2 } else { 1 };
                // On a pool worker, as in the engine's forward pass.
                let mut timed = Ok(0.0);
                rayon::scope(|_| {
                    timed = (|| -> anyhow::Result<f64> {
                        lin.forward(&x, decode_rows)?;
                        // The fastest of 5 rounds: the host is shared, and noise only slows.
                        let mut best = f64::INFINITY;
                        for _ in 0..5 {
                            let t = Instant::now();
                            for _ in 0..reps.div_ceil(5) {
                                lin.forward(&x, decode_rows)?;
                            }
                            best = best.min(t.elapsed().as_secs_f64() / reps.div_ceil(5) as f64);
                        }
                        Ok(best)
                    })();
                });
                let s = timed?;
                total_s += s * count as f64;
                macs += (out * inp * rows * count) as f64;
            }
            println!(
                "{rows:>5} {kind:>7} {:>12.3} {:>12.1} {:>10.2}",
                total_s * 1e3,
                total_s * 1e6 / rows as f64,
                macs / total_s / 1e9
            );
        }
    }
    let _ = candle_core::quantized::QMatMul::from_qtensor(QTensor::quantize(
        &Tensor::zeros((32, 32), candle_core::DType::F32, &dev)?,
        GgmlDType::Q4_1,
    )?)?
    .forward(&Tensor::zeros((1, 32), candle_core::DType::F32, &dev)?)?;
    Ok(())
}
