//! The values a CPU custom op reads: its input storage as a contiguous typed slice.

use candle_core::{CpuStorage, Layout, Result, WithDType};

/// `storage` under `layout` as `&[T]`; `what` names the input in the error (e.g.
/// "attention: keys") when its type is not `T` or its layout not contiguous.
pub fn contiguous<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let Ok(values) = storage.as_slice::<T>() else {
        candle_core::bail!("{what} must be {:?}", T::DTYPE);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous");
    };
    Ok(&values[start..end])
}
