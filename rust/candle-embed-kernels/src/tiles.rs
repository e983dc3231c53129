//! AMX tile operations behind one trait, with two implementations: the real instructions
//! ([`Amx`], stable inline `asm!`) and a software model of them ([`SoftTiles`]). The GEMM block
//! loop in [`block`] is written once against the trait, so its addressing, packing and edge logic
//! is tested on any CPU through the model, and on AMX CPUs against the hardware.
//!
//! Register use: tiles 0–3 hold a 32×32 f32 block of C (2×2 tiles of 16×16), resident across all
//! of K; tiles 4–5 the two 16-row slices of A; tiles 6–7 the two 16-column B tiles of a panel.

use half::bf16;

use crate::gemm::{prefetch, Ahead};
use crate::pack::{BLOCK_ELEMS, TILE_ELEMS};

/// Rows of every tile; bytes of every tile row.
const ROWS: usize = 16;
const ROW_BYTES: usize = 64;

/// The tile operations the block loop needs. Pointers address memory the caller owns; `stride`
/// is in bytes. Tile numbers are const so the real instructions can encode them.
///
/// # Safety
/// Implementations read and write raw memory: callers guarantee that 16 rows of 64 bytes at
/// `stride` are valid at every pointer they pass.
pub(crate) unsafe trait Tiles {
    /// Loads the palette (all tiles 16 × 64 bytes). Once per thread before other operations.
    fn configure(&mut self);
    unsafe fn zero<const T: u8>(&mut self);
    unsafe fn load<const T: u8>(&mut self, ptr: *const u8, stride: usize);
    unsafe fn store<const T: u8>(&mut self, ptr: *mut u8, stride: usize);
    /// `C[T] += A[TA] · B[TB]` in bf16 pairs with f32 sums.
    unsafe fn dot<const T: u8, const TA: u8, const TB: u8>(&mut self);
}

/// The real AMX unit of the current core.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Amx {
    _not_send: std::marker::PhantomData<*const ()>,
}

#[cfg(target_arch = "x86_64")]
impl Amx {
    /// # Safety
    /// AMX must be available and granted to the process ([`crate::isa::Isa::Amx`] supported).
    pub(crate) unsafe fn new() -> Self {
        Self {
            _not_send: std::marker::PhantomData,
        }
    }
}

/// `ldtilecfg` operand: palette 1, every tile 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    const fn full() -> Self {
        let mut cfg = [0u8; 64];
        cfg[0] = 1; // palette
        let mut t = 0;
        while t < 8 {
            cfg[16 + 2 * t] = ROW_BYTES as u8; // colsb, little-endian u16
            cfg[48 + t] = ROWS as u8; // rows
            t += 1;
        }
        Self(cfg)
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Amx {
    fn drop(&mut self) {
        // SAFETY: tilerelease only resets tile state, which this value configured.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

// SAFETY: every method issues the instruction it names on memory the caller vouches for.
#[cfg(target_arch = "x86_64")]
unsafe impl Tiles for Amx {
    fn configure(&mut self) {
        static CONFIG: TileConfig = TileConfig::full();
        // SAFETY: construction promised AMX; the operand is a valid 64-byte config.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
        }
    }

    #[inline(always)]
    unsafe fn zero<const T: u8>(&mut self) {
        // SAFETY: tiles configured; no memory touched.
        unsafe { std::arch::asm!("tilezero tmm{t}", t = const T, options(nostack, nomem)) };
    }

    #[inline(always)]
    unsafe fn load<const T: u8>(&mut self, ptr: *const u8, stride: usize) {
        // SAFETY: the caller guarantees 16 rows of 64 bytes at `stride` are readable.
        unsafe {
            std::arch::asm!(
                "tileloadd tmm{t}, [{p} + {s}*1]",
                t = const T, p = in(reg) ptr, s = in(reg) stride,
                options(nostack, readonly)
            );
        }
    }

    #[inline(always)]
    unsafe fn store<const T: u8>(&mut self, ptr: *mut u8, stride: usize) {
        // SAFETY: the caller guarantees 16 rows of 64 bytes at `stride` are writable.
        unsafe {
            std::arch::asm!(
                "tilestored [{p} + {s}*1], tmm{t}",
                t = const T, p = in(reg) ptr, s = in(reg) stride,
                options(nostack)
            );
        }
    }

    #[inline(always)]
    unsafe fn dot<const T: u8, const TA: u8, const TB: u8>(&mut self) {
        // SAFETY: tiles configured; register-only operation.
        unsafe {
            std::arch::asm!(
                "tdpbf16ps tmm{c}, tmm{a}, tmm{b}",
                c = const T, a = const TA, b = const TB,
                options(nostack, nomem)
            );
        }
    }
}

/// A software model of the eight tile registers and `tdpbf16ps`, per Intel's description: for
/// each row m and column n, `C[m][n] += Σ_p A[m][2p]·B[p][2n] + A[m][2p+1]·B[p][2n+1]` in f32.
/// The tests run the AMX loops on it, so they are tested on any CPU.
#[cfg(test)]
pub(crate) struct SoftTiles {
    regs: [[[u8; ROW_BYTES]; ROWS]; 8],
    configured: bool,
}

#[cfg(test)]
impl SoftTiles {
    pub(crate) fn new() -> Self {
        Self {
            regs: [[[0; ROW_BYTES]; ROWS]; 8],
            configured: false,
        }
    }

    fn f32_at(&self, t: u8, row: usize, col: usize) -> f32 {
        let b = &self.regs[t as usize][row][4 * col..4 * col + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn bf16_at(&self, t: u8, row: usize, elem: usize) -> f32 {
        let b = &self.regs[t as usize][row][2 * elem..2 * elem + 2];
        bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
    }
}

// SAFETY: pointer accesses stay within 16 rows × 64 bytes at `stride`, as the trait requires.
#[cfg(test)]
unsafe impl Tiles for SoftTiles {
    fn configure(&mut self) {
        self.configured = true;
    }

    unsafe fn zero<const T: u8>(&mut self) {
        assert!(self.configured, "tile op before ldtilecfg");
        self.regs[T as usize] = [[0; ROW_BYTES]; ROWS];
    }

    unsafe fn load<const T: u8>(&mut self, ptr: *const u8, stride: usize) {
        assert!(self.configured, "tile op before ldtilecfg");
        for (r, row) in self.regs[T as usize].iter_mut().enumerate() {
            // SAFETY: the caller guarantees this row is readable.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr.add(r * stride), row.as_mut_ptr(), ROW_BYTES);
            }
        }
    }

    unsafe fn store<const T: u8>(&mut self, ptr: *mut u8, stride: usize) {
        assert!(self.configured, "tile op before ldtilecfg");
        for (r, row) in self.regs[T as usize].iter().enumerate() {
            // SAFETY: the caller guarantees this row is writable.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), ptr.add(r * stride), ROW_BYTES) };
        }
    }

    unsafe fn dot<const T: u8, const TA: u8, const TB: u8>(&mut self) {
        assert!(self.configured, "tile op before ldtilecfg");
        for m in 0..ROWS {
            for n in 0..ROWS {
                let mut acc = self.f32_at(T, m, n);
                for p in 0..ROWS {
                    acc += self.bf16_at(TA, m, 2 * p) * self.bf16_at(TB, p, 2 * n)
                        + self.bf16_at(TA, m, 2 * p + 1) * self.bf16_at(TB, p, 2 * n + 1);
                }
                self.regs[T as usize][m][4 * n..4 * n + 4].copy_from_slice(&acc.to_le_bytes());
            }
        }
    }
}

/// K blocks ahead at which A's rows are prefetched: 16–32 rows far apart in memory are more
/// streams than the hardware prefetcher follows.
const PREFETCH_AHEAD: usize = 2;

/// One block of C over all of K: `C[rows, 32 cols] (+)= A[rows, K] · panel`, `rows` 16 or 32.
/// The rows of `ahead` (up to 32: the next block's destination) are requested over the K loop,
/// and `during(kb)` runs after K block `kb`'s products are issued: vector work placed there
/// overlaps the tiles' (the previous block's epilogue, see `gemm::amx`).
///
/// # Safety
/// `a` points at `rows` (16 or 32) readable rows of `k_blocks · 32` bf16, `lda` elements apart;
/// `panel` at `k_blocks · 1024` packed bf16; `c` at `rows` rows of 32 f32, `ldc` elements apart,
/// readable when `accumulate` and writable. Tiles are configured.
#[inline(always)]
pub(crate) unsafe fn block<T: Tiles>(
    tiles: &mut T,
    rows: usize,
    a: *const bf16,
    lda: usize,
    panel: *const bf16,
    k_blocks: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    ahead: Option<Ahead>,
    during: &mut impl FnMut(usize),
) {
    let (a_stride, c_stride) = (lda * 2, ldc * 4);
    let two = rows > ROWS;
    let ahead_rows_per_k_block = (2 * ROWS).div_ceil(k_blocks.max(1));
    // SAFETY: every offset below stays inside the regions the caller vouched for: A rows
    // `0..rows` and columns `< k_blocks·32`, the panel's `k_blocks` blocks, C's block.
    unsafe {
        let c_lo = c.cast::<u8>();
        let c_hi = c.add(ROWS * ldc).cast::<u8>();
        if accumulate {
            tiles.load::<0>(c_lo, c_stride);
            tiles.load::<1>(c_lo.add(ROWS * 4), c_stride);
            if two {
                tiles.load::<2>(c_hi, c_stride);
                tiles.load::<3>(c_hi.add(ROWS * 4), c_stride);
            }
        } else {
            tiles.zero::<0>();
            tiles.zero::<1>();
            tiles.zero::<2>();
            tiles.zero::<3>();
        }
        let a_hi = a.add(ROWS * lda);
        for kb in 0..k_blocks {
            let b = panel.add(kb * BLOCK_ELEMS).cast::<u8>();
            if kb + PREFETCH_AHEAD < k_blocks {
                for row in 0..rows {
                    prefetch(a.add(row * lda + (kb + PREFETCH_AHEAD) * 32).cast());
                }
            }
            if let Some(ahead) = ahead {
                for row in kb * ahead_rows_per_k_block..(kb + 1) * ahead_rows_per_k_block {
                    ahead.request(row);
                }
            }
            tiles.load::<4>(a.add(kb * 32).cast(), a_stride);
            tiles.load::<6>(b, ROW_BYTES);
            tiles.load::<7>(b.add(TILE_ELEMS * 2), ROW_BYTES);
            tiles.dot::<0, 4, 6>();
            tiles.dot::<1, 4, 7>();
            if two {
                tiles.load::<5>(a_hi.add(kb * 32).cast(), a_stride);
                tiles.dot::<2, 5, 6>();
                tiles.dot::<3, 5, 7>();
            }
            during(kb);
        }
        tiles.store::<0>(c_lo, c_stride);
        tiles.store::<1>(c_lo.add(ROWS * 4), c_stride);
        if two {
            tiles.store::<2>(c_hi, c_stride);
            tiles.store::<3>(c_hi.add(ROWS * 4), c_stride);
        }
    }
}
