//! Choosing the compute device: the only place that knows which backends were compiled in.

use candle_core::Device;

use crate::cli::DeviceArg;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(String);

/// The device for `--device`; `auto` prefers CUDA, then Metal, then the CPU.
pub fn select_device(arg: DeviceArg) -> Result<Device, DeviceError> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => Device::new_cuda(0).map_err(|e| {
            DeviceError(format!(
                "--device cuda: {e} (this binary needs the `cuda` cargo feature and an NVIDIA driver)"
            ))
        }),
        DeviceArg::Metal => Device::new_metal(0).map_err(|e| {
            DeviceError(format!(
                "--device metal: {e} (this binary needs the `metal` cargo feature)"
            ))
        }),
        DeviceArg::Auto => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

pub fn device_name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}
