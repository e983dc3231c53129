//! The AMX attention kernel: 32 query rows against one or two key blocks, the scores of each in
//! four tiles, the softmax on AVX512 ([`super::avx512::softmax`]), then P·V tile by tile into the
//! output rows.

use std::arch::x86_64::{_mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_storeu_ps};

use half::bf16;

use super::avx512::{finish, softmax};
use super::kernel::{Pass, PassKernel};
use super::KEYS;
use crate::aligned::Aligned;
use crate::tiles::Tiles;

/// The AMX kernel over a tile implementation (the hardware, or the model in tests).
pub(super) struct AmxPasses<T: Tiles>(T);

impl<T: Tiles> AmxPasses<T> {
    /// # Safety
    /// The CPU has AVX512F, AVX512BW and AVX512-BF16 (the softmax), and `tiles` can run.
    pub(super) unsafe fn new(mut tiles: T) -> Self {
        tiles.configure();
        Self(tiles)
    }
}

const AMX_ROWS: usize = 32;

impl<T: Tiles> PassKernel for AmxPasses<T> {
    const ROWS: usize = AMX_ROWS;
    const BLOCKS: usize = 2;

    fn pass(&mut self, pass: &mut Pass<'_>) {
        pass.check(AMX_ROWS);
        // SAFETY: construction vouched for the CPU and configured the tiles; the pass was
        // checked.
        unsafe { amx_pass(&mut self.0, pass) }
    }

    fn finish(&self, o: &[f32], inv: f32, dst: &mut [bf16]) {
        // SAFETY: construction vouched for the CPU.
        unsafe { finish(o, inv, dst) }
    }
}

/// Scores: per key block, tiles 0–3 hold the 2×2 16×16 f32 blocks, 4–5 the two 16-row
/// halves of Q, 6–7 the two 16-key halves of K. Then P·V, see [`one_block`] and
/// [`two_blocks`].
///
/// # Safety
/// The CPU has AVX512F/BW/BF16; `tiles` is configured; `pass` passed [`Pass::check`] for
/// 32 rows.
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn amx_pass<T: Tiles>(tiles: &mut T, pass: &mut Pass<'_>) {
    let (dp, width) = (pass.dp, pass.blocks * KEYS);
    let mut scores = Aligned([0f32; AMX_ROWS * 2 * KEYS]);
    let sc = scores.as_mut_ptr();
    // SAFETY: every tile access is 16 rows of 64 bytes inside a checked buffer: Q rows
    // 0..32 × dims 32t..32t+32, q_stride·2 bytes apart; K pairs 16t..16t+16 × 16 keys, 128
    // bytes apart; the 32-row score scratch, width·4 bytes apart.
    unsafe {
        let q = pass.q.as_ptr();
        for (kb, k) in pass.k.iter().take(pass.blocks).enumerate() {
            tiles.zero::<0>();
            tiles.zero::<1>();
            tiles.zero::<2>();
            tiles.zero::<3>();
            for t in 0..dp / 32 {
                tiles.load::<4>(q.add(32 * t).cast(), pass.q_stride * 2);
                tiles.load::<5>(
                    q.add(HALF * pass.q_stride + 32 * t).cast(),
                    pass.q_stride * 2,
                );
                let kt = k.as_ptr().add(t * HALF * KEYS);
                tiles.load::<6>(kt.cast(), 4 * KEYS);
                tiles.load::<7>(kt.add(HALF).cast(), 4 * KEYS);
                tiles.dot::<0, 4, 6>();
                tiles.dot::<1, 4, 7>();
                tiles.dot::<2, 5, 6>();
                tiles.dot::<3, 5, 7>();
            }
            let at = sc.add(kb * KEYS);
            tiles.store::<0>(at.cast(), 4 * width);
            tiles.store::<1>(at.add(HALF).cast(), 4 * width);
            tiles.store::<2>(at.add(HALF * width).cast(), 4 * width);
            tiles.store::<3>(at.add(HALF * width + HALF).cast(), 4 * width);
        }
    }

    let mut probs = Aligned([bf16::ZERO; AMX_ROWS * 2 * KEYS]);
    let mut alpha = [0f32; AMX_ROWS];
    let rows = AMX_ROWS * width;
    softmax(pass, &scores[..rows], &mut probs[..rows], &mut alpha);
    for (r, &alpha) in alpha.iter().enumerate() {
        // Once a row's maximum settles, alpha is exactly 1 (never more): skip the no-op
        // rescale.
        if alpha < 1.0 && !pass.first {
            let a = _mm512_set1_ps(alpha);
            // SAFETY: row r's dp outputs lie inside the checked `o`.
            unsafe {
                let o = pass.o.as_mut_ptr().add(r * dp);
                for d in (0..dp).step_by(16) {
                    _mm512_storeu_ps(o.add(d), _mm512_mul_ps(_mm512_loadu_ps(o.add(d)), a));
                }
            }
        }
    }
    // SAFETY: as checked, with `probs` holding 32 rows of `width` keys.
    unsafe {
        if pass.blocks == 1 {
            one_block(tiles, pass, &probs.0);
        } else {
            two_blocks(tiles, pass, &probs.0);
        }
    }
}

const HALF: usize = 16;

/// `O += P·V` for one key block: per two 16-dimension chunks, tiles 0–3 the 2×2 output
/// blocks (loaded, or zero for the first block), 4–5 the two 16-row halves of P (loaded
/// once), 6–7 the chunks' V tiles.
///
/// # Safety
/// As [`amx_pass`], `probs` holding 32 rows of 32 keys.
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn one_block<T: Tiles>(tiles: &mut T, pass: &mut Pass<'_>, probs: &[bf16]) {
    let dp = pass.dp;
    // SAFETY: 16-row tiles inside checked buffers: P rows of 64 bytes; output rows 0..32 ×
    // 16 dimensions, dp·4 bytes apart; V key pairs 0..16 × 16 dimensions, dp·4 bytes apart.
    unsafe {
        let (o, v, p) = (pass.o.as_mut_ptr(), pass.v[0].as_ptr(), probs.as_ptr());
        tiles.load::<4>(p.cast(), 2 * KEYS);
        tiles.load::<5>(p.add(HALF * KEYS).cast(), 2 * KEYS);
        for chunk in (0..dp / 16).step_by(2) {
            let (lo, hi) = (o.add(chunk * 16), o.add(HALF * dp + chunk * 16));
            if pass.first {
                tiles.zero::<0>();
                tiles.zero::<1>();
                tiles.zero::<2>();
                tiles.zero::<3>();
            } else {
                tiles.load::<0>(lo.cast(), dp * 4);
                tiles.load::<1>(lo.add(16).cast(), dp * 4);
                tiles.load::<2>(hi.cast(), dp * 4);
                tiles.load::<3>(hi.add(16).cast(), dp * 4);
            }
            tiles.load::<6>(v.add(chunk * 16).cast(), dp * 4);
            tiles.load::<7>(v.add(chunk * 16 + 16).cast(), dp * 4);
            tiles.dot::<0, 4, 6>();
            tiles.dot::<1, 4, 7>();
            tiles.dot::<2, 5, 6>();
            tiles.dot::<3, 5, 7>();
            tiles.store::<0>(lo.cast(), dp * 4);
            tiles.store::<1>(lo.add(16).cast(), dp * 4);
            tiles.store::<2>(hi.cast(), dp * 4);
            tiles.store::<3>(hi.add(16).cast(), dp * 4);
        }
    }
}

/// `O += P·V` for two key blocks: P's four tiles (2 row halves × 2 blocks) stay loaded in
/// 2–5, so each 16-dimension chunk costs two output tiles (0–1) and two V tiles (6–7) for
/// four products: half the output traffic of [`one_block`] per key.
///
/// # Safety
/// As [`amx_pass`], `probs` holding 32 rows of 64 keys.
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn two_blocks<T: Tiles>(tiles: &mut T, pass: &mut Pass<'_>, probs: &[bf16]) {
    let dp = pass.dp;
    // SAFETY: 16-row tiles inside checked buffers: P rows of 128 bytes (64 keys); output
    // rows 0..32 × 16 dimensions, dp·4 bytes apart; both blocks' V key pairs 0..16 × 16
    // dimensions, dp·4 bytes apart.
    unsafe {
        let o = pass.o.as_mut_ptr();
        let (v0, v1, p) = (pass.v[0].as_ptr(), pass.v[1].as_ptr(), probs.as_ptr());
        let stride = 4 * KEYS;
        tiles.load::<2>(p.cast(), stride);
        tiles.load::<3>(p.add(KEYS).cast(), stride);
        tiles.load::<4>(p.add(HALF * 2 * KEYS).cast(), stride);
        tiles.load::<5>(p.add(HALF * 2 * KEYS + KEYS).cast(), stride);
        for chunk in 0..dp / 16 {
            let (lo, hi) = (o.add(chunk * 16), o.add(HALF * dp + chunk * 16));
            if pass.first {
                tiles.zero::<0>();
                tiles.zero::<1>();
            } else {
                tiles.load::<0>(lo.cast(), dp * 4);
                tiles.load::<1>(hi.cast(), dp * 4);
            }
            tiles.load::<6>(v0.add(chunk * 16).cast(), dp * 4);
            tiles.load::<7>(v1.add(chunk * 16).cast(), dp * 4);
            tiles.dot::<0, 2, 6>();
            tiles.dot::<0, 3, 7>();
            tiles.dot::<1, 4, 6>();
            tiles.dot::<1, 5, 7>();
            tiles.store::<0>(lo.cast(), dp * 4);
            tiles.store::<1>(hi.cast(), dp * 4);
        }
    }
}
