//! Keeps freed memory in the process for the next forward pass. Every pass allocates its
//! activations afresh (candle tensors), and glibc's defaults hand big blocks back to the
//! kernel when freed (`mmap`, per-thread arenas trimmed by `madvise`), so the next pass
//! faults the same pages in again and the kernel zeroes them: measured here, 1.4 million
//! page faults for one 8 × 256-token prefill of a 1B model, ~10% of its time. One arena and
//! no `mmap` blocks keep them: 0.27 million faults, prefill 205 → 225 tok/s.
//!
//! The cost is that the heap does not shrink after a peak (the peak itself is unchanged).

/// Sets glibc's allocator up as above, once per process; nothing elsewhere.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator parameters; called before the model's
            // big allocations, it applies to them.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 1);
                libc::mallopt(libc::M_MMAP_MAX, 0);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        });
    }
}
