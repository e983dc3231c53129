//! Pooling and normalization: the embedding of a sequence is the hidden state of its last token
//! (`<|endoftext|>` for text), optionally cut to its first `dimensions` values (Matryoshka) and
//! L2-normalized.

use candle_core::{DType, Tensor};

use crate::pack::PackedBatch;

/// `(total_tokens, hidden)` → `(sequences, hidden)`: each sequence's last row.
pub fn last_token(hidden: &Tensor, batch: &PackedBatch) -> candle_core::Result<Tensor> {
    let rows = Tensor::new(batch.last_rows(), hidden.device())?;
    hidden.index_select(&rows, 0)
}

/// Keeps the first `dimensions` values of a vector, then L2-normalizes it if asked.
///
/// Done in f32 on the host: the vectors are small and this keeps the result independent of the
/// device's reduction order.
pub fn finish(vector: &mut Vec<f32>, dimensions: Option<usize>, normalize: bool) {
    if let Some(d) = dimensions {
        vector.truncate(d);
    }
    if normalize {
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        // Same guard as torch.nn.functional.normalize: never divide by (almost) zero.
        let denom = norm.max(1e-12);
        for v in vector.iter_mut() {
            *v /= denom;
        }
    }
}

/// Copies pooled rows to the host as f32 vectors.
pub fn to_vectors(pooled: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    pooled.to_dtype(DType::F32)?.to_vec2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matryoshka_then_normalize() {
        let mut v = vec![3.0, 4.0, 12.0];
        finish(&mut v, Some(2), true);
        assert_eq!(v, [0.6, 0.8]);
    }

    #[test]
    fn unnormalized_is_untouched() {
        let mut v = vec![3.0, 4.0];
        finish(&mut v, None, false);
        assert_eq!(v, [3.0, 4.0]);
    }

    #[test]
    fn zero_vector_stays_finite() {
        let mut v = vec![0.0, 0.0];
        finish(&mut v, None, true);
        assert_eq!(v, [0.0, 0.0]);
    }
}
