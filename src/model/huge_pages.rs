//! Arrays in 2 MiB pages: the weights, which every token streams through whole.
//!
//! With 4 KiB pages a pass over a 1B model's ~600 MB touches ~150,000 pages, each a TLB miss
//! and a stop for the hardware prefetcher, which does not cross a page. Linux backs a mapping
//! with 2 MiB pages when it is marked `MADV_HUGEPAGE` before it is touched (transparent huge
//! pages; most distributions enable them only for marked mappings, as this machine does).
//! Measured here on a 1B Q4_K file with `--int8`, 2 threads, one sequence decoding,
//! interleaved runs: median 38.8 → 41.5 tok/s (45.5 → 54.5 with the guided task sizes of
//! the matmul regions that came with it).
//!
//! Elsewhere, or where the kernel refuses the mapping, the array lives on the heap.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Size of a huge page: mappings start on such a boundary so that all of it can be backed.
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length array of plain values, in huge pages where the system gives them.
pub struct HugePageArray<T: Copy> {
    storage: Storage<T>,
}

enum Storage<T> {
    /// `len` values at `ptr`, inside the anonymous mapping `base..base + mapped`.
    #[cfg(target_os = "linux")]
    Mapped {
        ptr: *mut T,
        len: usize,
        base: *mut libc::c_void,
        mapped: usize,
    },
    Heap(Vec<T>),
}

// SAFETY: the array owns its values like a Vec does; the raw pointers are never shared.
unsafe impl<T: Copy + Send> Send for HugePageArray<T> {}
unsafe impl<T: Copy + Sync> Sync for HugePageArray<T> {}

impl<T: Copy> HugePageArray<T> {
    /// `len` copies of `value`.
    pub fn filled(len: usize, value: T) -> Self {
        #[cfg(target_os = "linux")]
        if let Some(storage) = Self::map(len, value) {
            return Self { storage };
        }
        Self {
            storage: Storage::Heap(vec![value; len]),
        }
    }

    /// A fresh mapping marked for huge pages before anything touches it, then filled; `None`
    /// for arrays smaller than a huge page, or when the kernel refuses.
    #[cfg(target_os = "linux")]
    fn map(len: usize, value: T) -> Option<Storage<T>> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        if bytes < HUGE_PAGE || std::mem::align_of::<T>() > HUGE_PAGE {
            return None;
        }
        // One huge page more than needed, so that the values can start on a boundary.
        let mapped = bytes.checked_add(HUGE_PAGE)?;
        // SAFETY: a new private anonymous mapping, owned by this array until `drop`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let start = (base as usize).next_multiple_of(HUGE_PAGE);
        // SAFETY: `start..start + bytes` lies inside the mapping; the advice only asks for
        // huge pages (a kernel without them ignores it or fails, and small pages remain).
        unsafe {
            libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
        }
        let ptr = start as *mut T;
        for i in 0..len {
            // SAFETY: in bounds of the mapping, aligned (a page boundary, `size_of` a
            // multiple of the alignment).
            unsafe { ptr.add(i).write(value) };
        }
        Some(Storage::Mapped {
            ptr,
            len,
            base,
            mapped,
        })
    }
}

impl<T: Copy> Deref for HugePageArray<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.storage {
            // SAFETY: `len` initialized values at `ptr`, alive while the array is.
            #[cfg(target_os = "linux")]
            Storage::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Storage::Heap(v) => v,
        }
    }
}

impl<T: Copy> DerefMut for HugePageArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
            #[cfg(target_os = "linux")]
            Storage::Mapped { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts_mut(*ptr, *len)
            },
            Storage::Heap(v) => v,
        }
    }
}

impl<T: Copy> Drop for HugePageArray<T> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Storage::Mapped { base, mapped, .. } = self.storage {
            // SAFETY: the mapping this array made; nothing borrows it any more.
            unsafe { libc::munmap(base, mapped) };
        }
    }
}

impl<T: Copy + fmt::Debug> fmt::Debug for HugePageArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HugePageArray of {} values", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large and small arrays hold their values, can be written, and drop cleanly.
    #[test]
    fn arrays_hold_what_they_are_given() {
        for len in [0, 7, (3 << 20) / 4 + 5] {
            let mut a = HugePageArray::filled(len, 9u32);
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|&v| v == 9));
            if len > 0 {
                a[len - 1] = 4;
                assert_eq!(a[len - 1], 4);
            }
        }
    }

    /// Arrays of a huge page or more start on a huge-page boundary (so that the kernel can
    /// back them with huge pages at all).
    #[cfg(target_os = "linux")]
    #[test]
    fn large_arrays_start_on_a_huge_page() {
        let a = HugePageArray::filled(HUGE_PAGE, 1u8);
        assert!(matches!(a.storage, Storage::Mapped { .. }));
        assert_eq!(a.as_ptr() as usize % HUGE_PAGE, 0);
    }
}
