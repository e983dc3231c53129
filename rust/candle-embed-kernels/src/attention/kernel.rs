//! What every attention kernel implements: one pass of a few query rows over one or two key
//! blocks, updating the rows' running softmax state; and the exp2 all of them compute.

use half::bf16;

use super::Stored;
use super::{KEYS, LANES};

/// An attention kernel for Q, K and V stored as `E`: `ROWS` query rows against up to `BLOCKS`
/// key blocks per pass.
pub(super) trait PassKernel<E: Stored = bf16> {
    const ROWS: usize;
    const BLOCKS: usize = 1;
    fn pass(&mut self, pass: &mut Pass<'_, E>);

    /// Called with the K and V of the key blocks the next passes read (each pass until the next
    /// call gets these same blocks), `dp` elements a row: a kernel may convert them here once for
    /// all the query rows of the task instead of in every pass.
    fn key_blocks(&mut self, _k: [&[E::Word]; 2], _v: [&[E::Word]; 2], _dp: usize) {}

    /// `dst = E(o · inv)`: a finished output row.
    fn finish(&self, o: &[f32], inv: f32, dst: &mut [E]) {
        for (d, o) in dst.iter_mut().zip(o) {
            *d = E::from_f32(o * inv);
        }
    }
}

/// One kernel step: a few query rows against one or two key blocks, updating their running
/// state.
pub(super) struct Pass<'a, E: Stored = bf16> {
    /// `rows` queries of `dp`, `q_stride` apart.
    pub(super) q: &'a [E],
    pub(super) q_stride: usize,
    /// `rows × dp` f32 output sums, relative to the running maximum.
    pub(super) o: &'a mut [f32],
    /// Running maximum of each row's base-2 scores.
    pub(super) m: &'a mut [f32],
    /// `rows × 16` running sums of the (stored) probabilities, key `j` in lane `j % 16`.
    pub(super) l: &'a mut [f32],
    /// Keys of the blocks each row may see (causal mask and sequence end): a prefix, possibly
    /// beyond the blocks of the pass.
    pub(super) valid: &'a [usize],
    /// The sequence's first key block: the state is to be set, not updated (its contents are
    /// left from earlier tasks).
    pub(super) first: bool,
    /// Key blocks in this pass (1, or 2 for AMX), and their packed K and V (see [`Packed`]).
    pub(super) blocks: usize,
    pub(super) k: [&'a [E::Word]; 2],
    pub(super) v: [&'a [E::Word]; 2],
    pub(super) dp: usize,
    pub(super) c: f32,
}

impl<E: Stored> Pass<'_, E> {
    /// The sizes the kernels rely on (the vector kernels read through raw pointers).
    pub(super) fn check(&self, rows: usize) {
        let dp = self.dp;
        assert!(dp.is_multiple_of(32));
        assert!(self.q_stride >= dp && self.q.len() >= (rows - 1) * self.q_stride + dp);
        assert!(self.o.len() == rows * dp);
        assert!(self.m.len() == rows && self.l.len() == rows * LANES);
        assert!(self.valid.len() == rows && (1..=2).contains(&self.blocks));
        for (k, v) in self.k.iter().zip(&self.v).take(self.blocks) {
            let words = KEYS * dp / E::PER_WORD;
            assert!(k.len() == words && v.len() == words);
        }
    }
}

/// `2^x` for `x ≤ 0`: round to an integer n, a degree-6 Taylor polynomial of `2^f` on
/// `|f| ≤ 1/2` (relative error below 2e-7, far under bf16's 4e-3), scaled by `2^n`. Inputs are
/// clamped at -125, which keeps every result a normal float (subnormals are slow, and
/// `vdpbf16ps` flushes them) and is negligible against the row maximum's 1.
pub(super) const EXP2_POLY: [f32; 7] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_5,
    0.055_504_11,
    0.009_618_129,
    0.001_333_356,
    0.000_154_035_3,
];
pub(super) const EXP2_MIN: f32 = -125.0;

/// The scalar twin of the vector `exp2`, operation for operation (fused multiply-adds, one
/// rounding in the final scaling), so both kernels produce the same probabilities.
pub(super) fn exp2(x: f32) -> f32 {
    let x = x.max(EXP2_MIN);
    let n = x.round_ties_even();
    let f = x - n;
    let poly = EXP2_POLY[..6]
        .iter()
        .rev()
        .fold(EXP2_POLY[6], |acc, &c| acc.mul_add(f, c));
    // 2^n exactly (n ≥ -125 is well inside f64), then one rounding to f32.
    let scale = f64::from_bits(((1023 + n as i64) as u64) << 52);
    (f64::from(poly) * scale) as f32
}
