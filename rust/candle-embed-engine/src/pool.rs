//! Pooling: the embedding of a sequence is the final hidden state of its last token
//! (`<|endoftext|>` for text). Every decoder hands these rows back as one [`Pooled`] matrix, in
//! the batch's sequence order.

use candle_core::{DType, Tensor};

/// One f32 row per sequence, `width` values each, stored contiguously.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pooled {
    values: Vec<f32>,
    width: usize,
}

impl Pooled {
    /// Rows of `width` values laid end to end.
    pub fn new(values: Vec<f32>, width: usize) -> Self {
        assert!(
            width > 0 && values.len().is_multiple_of(width),
            "pooled rows: {} values do not make rows of {width}",
            values.len()
        );
        Self { values, width }
    }

    /// No rows yet, room for `rows` rows of `width`.
    pub fn with_capacity(rows: usize, width: usize) -> Self {
        Self {
            values: Vec::with_capacity(rows * width),
            width,
        }
    }

    /// The rows of a `(sequences, width)` tensor, as f32.
    pub fn from_tensor(rows: &Tensor) -> candle_core::Result<Self> {
        let width = rows.dim(1)?;
        let values = rows.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Ok(Self::new(values, width))
    }

    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn row(&self, index: usize) -> &[f32] {
        &self.values[index * self.width..][..self.width]
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.values
    }

    pub fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// Adds `other`'s rows after these.
    pub fn append(&mut self, other: &Self) {
        if self.values.is_empty() {
            self.width = other.width;
        }
        assert_eq!(self.width, other.width, "pooled rows of different widths");
        self.values.extend_from_slice(&other.values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_append_in_order() {
        let mut all = Pooled::with_capacity(3, 2);
        assert_eq!(all.rows(), 0);
        all.append(&Pooled::new(vec![1.0, 2.0], 2));
        all.append(&Pooled::new(vec![3.0, 4.0, 5.0, 6.0], 2));
        assert_eq!(all.rows(), 3);
        assert_eq!(all.row(2), [5.0, 6.0]);
    }
}
