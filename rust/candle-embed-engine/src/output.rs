//! The last stage: pooled rows become a request's vectors. Each is cut to its first `dimensions`
//! values (Matryoshka), L2-normalized, then converted to the requested precision
//! ([`crate::quantize`]), in one contiguous `inputs × width` buffer.
//!
//! Done in f32 on the host, row by row: a vector depends on its own row alone, whatever the
//! device or the batch.

use crate::error::{EngineError, Result};
use crate::pool::Pooled;
use crate::quantize::{self, Ranges, Values};
use crate::request::{EmbeddingRequest, Field, Precision};

/// What a request wants done with its pooled rows, checked against the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Values kept per vector (the model's hidden size unless the request asks for fewer).
    pub dimensions: usize,
    pub normalize: bool,
    pub precision: Precision,
    /// For int8 / uint8.
    pub ranges: Option<Ranges>,
}

impl Output {
    /// The request's output options for a model whose vectors have `hidden_size` values.
    pub fn for_request(request: &EmbeddingRequest, hidden_size: usize) -> Result<Self> {
        let dimensions = match request.dimensions {
            None => hidden_size,
            Some(d) => usize::try_from(d)
                .ok()
                .filter(|d| (1..=hidden_size).contains(d))
                .ok_or_else(|| {
                    EngineError::field(
                        Field::Dimensions,
                        format!(
                            "dimensions must be between 1 and {hidden_size} (the model's hidden \
                             size), got {d}"
                        ),
                    )
                })?,
        };
        let ranges = request
            .ranges
            .as_deref()
            .map(|r| Ranges::new(r, dimensions))
            .transpose()?;
        Ok(Self {
            dimensions,
            normalize: request.normalize,
            precision: request.precision,
            ranges,
        })
    }

    /// The vectors of `pooled` (one row per input, in order), embedded with `token_counts`
    /// tokens each.
    pub fn finish(&self, pooled: Pooled, token_counts: Vec<usize>) -> Embeddings {
        let (rows, width) = (pooled.rows(), pooled.width());
        assert_eq!(rows, token_counts.len(), "one pooled row per input");
        let dims = self.dimensions.min(width);
        let mut values = pooled.into_values();
        if dims < width {
            // Row i moves to i·dims; it never overlaps a row not yet moved.
            for i in 1..rows {
                values.copy_within(i * width..i * width + dims, i * dims);
            }
            values.truncate(rows * dims);
        }
        if self.normalize {
            for v in values.chunks_exact_mut(dims) {
                normalize(v);
            }
        }
        Embeddings {
            values: quantize::quantize(values, dims, self.precision, self.ranges.as_ref()),
            dimensions: dims,
            width: quantize::width(self.precision, dims),
            token_counts,
        }
    }
}

/// `v / max(‖v‖, 1e-12)`, as `torch.nn.functional.normalize` computes it.
fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denom = norm.max(1e-12);
    for x in v.iter_mut() {
        *x /= denom;
    }
}

/// The vectors of one request, in input order: one contiguous `len() × width()` matrix of
/// values in the request's precision.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    values: Values,
    dimensions: usize,
    width: usize,
    token_counts: Vec<usize>,
}

impl Embeddings {
    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.token_counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_counts.is_empty()
    }

    /// Dimensions per vector.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Values per row: the dimensions, or for binary precisions the bytes they pack into.
    pub fn width(&self) -> usize {
        self.width
    }

    /// All values, row after row, in the request's precision.
    pub fn values(&self) -> &Values {
        &self.values
    }

    pub fn into_values(self) -> Values {
        self.values
    }

    /// The float32 vectors, when that is the precision.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.values {
            Values::F32(v) => Some(v),
            _ => None,
        }
    }

    /// One `Vec` of f32 per row, whatever the precision (a copy; integers are exact in f32).
    pub fn to_vecs(&self) -> Vec<Vec<f32>> {
        self.values
            .to_f32()
            .chunks_exact(self.width.max(1))
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// Tokens each input was embedded with (after truncation, `<|endoftext|>` included).
    pub fn token_counts(&self) -> &[usize] {
        &self.token_counts
    }

    pub fn prompt_tokens(&self) -> usize {
        self.token_counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(dimensions: usize, normalize: bool) -> Output {
        Output {
            dimensions,
            normalize,
            precision: Precision::Float32,
            ranges: None,
        }
    }

    #[test]
    fn matryoshka_then_normalize() {
        let pooled = Pooled::new(vec![3.0, 4.0, 12.0, 0.0, 5.0, 1.0], 3);
        let e = output(2, true).finish(pooled, vec![4, 7]);
        assert_eq!(e.dimensions(), 2);
        assert_eq!(e.as_f32().unwrap(), [0.6, 0.8, 0.0, 1.0]);
        assert_eq!(e.prompt_tokens(), 11);
    }

    #[test]
    fn unnormalized_is_untouched() {
        let e = output(2, false).finish(Pooled::new(vec![3.0, 4.0], 2), vec![1]);
        assert_eq!(e.as_f32().unwrap(), [3.0, 4.0]);
    }

    #[test]
    fn zero_vector_stays_finite() {
        let e = output(2, true).finish(Pooled::new(vec![0.0, 0.0], 2), vec![1]);
        assert_eq!(e.as_f32().unwrap(), [0.0, 0.0]);
    }

    #[test]
    fn precision_applies_after_normalizing() {
        let mut out = output(2, true);
        out.precision = Precision::Binary;
        let e = out.finish(Pooled::new(vec![3.0, -4.0, -1.0, 1.0], 2), vec![1, 1]);
        assert_eq!(e.width(), 1);
        assert_eq!(e.values(), &Values::I8(vec![0, -64]));
    }

    #[test]
    fn dimensions_are_checked_against_the_model() {
        let mut req = EmbeddingRequest::new("x");
        assert_eq!(Output::for_request(&req, 8).unwrap(), output(8, true));
        req.precision = Precision::Int8;
        req.ranges = Some(vec![vec![0.0; 4], vec![1.0; 4]]);
        req.dimensions = Some(4);
        assert!(Output::for_request(&req, 8).is_ok());
        req.dimensions = None;
        let err = Output::for_request(&req, 8).unwrap_err();
        assert_eq!(err.request_field(), Some(Field::Ranges));
        req.precision = Precision::Float32;
        req.ranges = None;
        req.dimensions = Some(9);
        let err = Output::for_request(&req, 8).unwrap_err();
        assert_eq!(err.request_field(), Some(Field::Dimensions));
        assert!(err.to_string().contains("between 1 and 8"), "{err}");
    }
}
