//! Cache-line-aligned storage for everything a tile instruction touches.
//!
//! A tile row is 64 bytes. When it starts on a cache line the load reads one line; when it does
//! not, every row straddles two and `tileloadd` runs about 6.5× slower (measured on this
//! project's Xeon: 2.6 ns against 16.8 ns per 16-row load from L1). The allocator only promises
//! 16 bytes, so buffers the kernels read as tiles are built from 64-byte lines instead.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// Bytes of one cache line, and the alignment of everything here.
pub const LINE: usize = 64;

/// A value placed on a cache-line boundary (for stack scratch the tiles load or store).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub struct Aligned<T>(pub T);

impl<T> Deref for Aligned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Element types of an [`AlignedVec`]: plain numbers for which every bit pattern, all zeros
/// included, is a valid value.
///
/// # Safety
/// Implementors have no padding, no invalid bit patterns, and an alignment dividing 64.
pub unsafe trait Plain: Copy + Default + Send + Sync + 'static {}
// SAFETY: primitive numbers (bf16 is a transparent u16).
unsafe impl Plain for f32 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for half::bf16 {}

/// A growable buffer of `T` whose first element starts a cache line.
pub struct AlignedVec<T: Plain> {
    lines: Vec<Aligned<[u8; LINE]>>,
    len: usize,
    _values: PhantomData<T>,
}

impl<T: Plain> AlignedVec<T> {
    pub const fn new() -> Self {
        Self {
            lines: Vec::new(),
            len: 0,
            _values: PhantomData,
        }
    }

    /// `len` zeros.
    pub fn zeroed(len: usize) -> Self {
        let mut v = Self::new();
        v.resize(len);
        v
    }

    /// Sets the length to `len`, keeping the values below both lengths. Values past the old
    /// length are whatever the storage last held (zero if never written): for buffers that are
    /// overwritten anyway, reuse costs no memset. The lines, once there, stay initialised up to
    /// the largest length so far; only lines never used before are zeroed, so a scratch buffer
    /// whose length goes down and up from call to call (the q/k/v rows of each sequence group)
    /// is not cleared again each time it grows (one thread's memset of megabytes, with the
    /// other thread waiting for it).
    pub fn resize(&mut self, len: usize) {
        let lines = (len * size_of::<T>()).div_ceil(LINE);
        if lines > self.lines.len() {
            if lines > self.lines.capacity() {
                self.lines.reserve_exact(lines - self.lines.len());
                // Before the zero-fill below touches the new pages.
                advise_huge_pages(self.lines.as_ptr().cast(), self.lines.capacity() * LINE);
            }
            self.lines.resize(lines, Aligned([0; LINE]));
        }
        self.len = len;
    }

    /// Sets the length to `len` for a caller that overwrites what it reads: values are whatever
    /// the storage held. Storage too small is released before the larger one is allocated, so
    /// growing a scratch buffer never holds old and new at once (a reallocation would, and copy).
    pub fn resize_for_overwrite(&mut self, len: usize) {
        let lines = (len * size_of::<T>()).div_ceil(LINE);
        if lines > self.lines.capacity() {
            self.lines = Vec::new();
            self.len = 0;
        }
        self.resize(len);
    }

    /// Sets the length to `len` with every value zero.
    pub fn clear_to(&mut self, len: usize) {
        self.resize_for_overwrite(len);
        self.fill(T::default());
    }

    /// Bytes allocated.
    pub fn capacity_bytes(&self) -> usize {
        self.lines.capacity() * LINE
    }
}

/// Hands the memory the allocator holds free back to the OS (glibc's `malloc_trim`). Loading a
/// model converts and repacks every weight, and glibc keeps the freed buffers mapped: after
/// loading the 0.6B shape, 0.27 GB in f32 (2.76 → 2.48 GB resident) and 0.10 GB in bf16 (1.39 →
/// 1.29 GB). Elsewhere than Linux with glibc, nothing happens.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the OS; no
    // allocation is moved or touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks Linux to back a large buffer with 2 MB pages. A first touch of fresh memory costs a page
/// fault per page, and in a VM a 4 KB fault is slow enough (measured: 256 MB faulted in at
/// 0.4 GB/s) that the activations of a large batch spent more time faulting than computing. It is
/// only a hint: where transparent huge pages are off, nothing changes.
fn advise_huge_pages(start: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const PAGE: usize = 4096;
        if bytes < HUGE {
            return;
        }
        let begin = (start as usize).next_multiple_of(PAGE);
        let end = (start as usize + bytes) / PAGE * PAGE;
        if end > begin {
            // SAFETY: madvise only changes how the kernel backs pages of this allocation (whole
            // pages inside it); MADV_HUGEPAGE never alters their contents.
            unsafe {
                libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

impl<T: Plain> Default for AlignedVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Plain> Clone for AlignedVec<T> {
    fn clone(&self) -> Self {
        Self {
            lines: self.lines.clone(),
            len: self.len,
            _values: PhantomData,
        }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedVec")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Plain> Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least `len` values' bytes, 64-byte aligned (a multiple of
        // T's alignment), initialised (zero or written as T), and any bit pattern is a T.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Plain> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_kept_across_resizes() {
        let mut v = AlignedVec::<f32>::zeroed(3);
        assert_eq!(v.as_ptr() as usize % LINE, 0);
        assert_eq!(&v[..], &[0.0; 3]);
        v.copy_from_slice(&[1.0, 2.0, 3.0]);
        v.resize(40);
        assert_eq!(&v[..4], &[1.0, 2.0, 3.0, 0.0]);
        assert!(v[3..].iter().all(|&x| x == 0.0));
        v.resize(2);
        v.resize(5);
        assert_eq!(&v[..3], &[1.0, 2.0, 3.0], "storage is reused, not cleared");
        v.resize(40);
        v[39] = 7.0;
        v.resize(1);
        v.resize(40);
        assert_eq!(
            (v[1], v[39]),
            (2.0, 7.0),
            "lines past a shrink are kept, not cleared"
        );
        v.clear_to(4);
        assert_eq!(&v[..], &[0.0; 4]);
        v.resize_for_overwrite(1000);
        assert_eq!((v.len(), v.as_ptr() as usize % LINE), (1000, 0));
        assert_eq!(v.as_ptr() as usize % LINE, 0);
        let s = AlignedVec::<half::bf16>::zeroed(33);
        assert_eq!(s.len(), 33);
        assert_eq!(s.as_ptr() as usize % LINE, 0);
        assert_eq!(std::mem::align_of::<Aligned<[f32; 3]>>(), LINE);
    }
}
