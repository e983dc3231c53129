//! The number types vectors can be returned in ([`Precision`]), computed as sentence-transformers'
//! `quantize_embeddings` computes them, so a file of int8 vectors written here reads the same as
//! one written there:
//!
//! - float16: each value rounded to the nearest half (ties to even);
//! - int8 / uint8: each dimension's `[min, max]` cut into 255 steps (a step of 1 where the range
//!   is one point), `floor((x − min) / step)` in f32, clipped to 0..=255 (so values outside the
//!   range saturate); uint8 is that, int8 that minus 128;
//! - binary / ubinary: one bit per dimension, set where the value is above 0, the first
//!   dimension in a byte's highest bit, 8 dimensions a byte (a row's last byte padded with 0
//!   bits); ubinary keeps the bytes, binary subtracts 128 into int8.
//!
//! Every row is converted on its own: a vector never depends on its batch.

use half::f16;

use crate::error::{EngineError, Result};
use crate::request::{Field, Precision};

/// Each dimension's start and step for int8 / uint8.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranges {
    start: Vec<f32>,
    step: Vec<f32>,
}

impl Ranges {
    /// The ranges of a request (`[[min, ...], [max, ...]]`, checked by
    /// [`EmbeddingRequest::check`](crate::EmbeddingRequest::check)) for vectors of `dimensions`.
    pub fn new(ranges: &[Vec<f32>], dimensions: usize) -> Result<Self> {
        let [min, max] = ranges else {
            return Err(EngineError::field(Field::Ranges, "ranges must be two rows"));
        };
        if min.len() != dimensions || max.len() != dimensions {
            return Err(EngineError::field(
                Field::Ranges,
                format!(
                    "ranges has {} dimensions, the vectors {dimensions} (after `dimensions`)",
                    min.len()
                ),
            ));
        }
        let step = min
            .iter()
            .zip(max)
            .map(|(lo, hi)| {
                let step = (hi - lo) / 255.0;
                if step == 0.0 {
                    1.0
                } else {
                    step
                }
            })
            .collect();
        Ok(Self {
            start: min.clone(),
            step,
        })
    }
}

/// A matrix of vectors in one of the precisions, row after row.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every value as f32 (exact for every type here).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::F32(v) => v.clone(),
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::I8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Self::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        }
    }

    /// The values' bytes, little-endian.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I8(v) => v.iter().map(|&x| x.to_le_bytes()[0]).collect(),
            Self::U8(v) => v.clone(),
        }
    }
}

/// Values per row of `dimensions`-long vectors in `precision`.
pub fn width(precision: Precision, dimensions: usize) -> usize {
    match precision {
        Precision::Binary | Precision::Ubinary => dimensions.div_ceil(8),
        _ => dimensions,
    }
}

/// `vectors` (rows of `dimensions` f32) in `precision`; `ranges` for int8 / uint8.
pub fn quantize(
    vectors: Vec<f32>,
    dimensions: usize,
    precision: Precision,
    ranges: Option<&Ranges>,
) -> Values {
    // 0..=255: the step `x` falls in.
    let step = |x: f32, d: usize| {
        let r = ranges.expect("int8 / uint8 are checked to come with ranges");
        ((x - r.start[d]) / r.step[d]).floor().clamp(0.0, 255.0) as u8
    };
    let indexed = || {
        vectors
            .iter()
            .enumerate()
            .map(|(i, &x)| (x, i % dimensions))
    };
    match precision {
        Precision::Float32 => Values::F32(vectors),
        Precision::Float16 => Values::F16(vectors.iter().map(|&x| f16::from_f32(x)).collect()),
        Precision::Int8 => Values::I8(
            indexed()
                .map(|(x, d)| (i16::from(step(x, d)) - 128) as i8)
                .collect(),
        ),
        Precision::Uint8 => Values::U8(indexed().map(|(x, d)| step(x, d)).collect()),
        Precision::Ubinary => Values::U8(sign_bits(&vectors, dimensions)),
        Precision::Binary => Values::I8(
            sign_bits(&vectors, dimensions)
                .into_iter()
                .map(|b| (i16::from(b) - 128) as i8)
                .collect(),
        ),
    }
}

/// Each row's sign bits, 8 dimensions a byte, the first in the highest bit.
fn sign_bits(vectors: &[f32], dimensions: usize) -> Vec<u8> {
    let width = dimensions.div_ceil(8);
    let mut bytes = vec![0u8; vectors.len() / dimensions.max(1) * width];
    for (row, out) in vectors
        .chunks_exact(dimensions.max(1))
        .zip(bytes.chunks_exact_mut(width.max(1)))
    {
        for (d, &x) in row.iter().enumerate() {
            if x > 0.0 {
                out[d / 8] |= 0x80 >> (d % 8);
            }
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(min: &[f32], max: &[f32]) -> Ranges {
        Ranges::new(&[min.to_vec(), max.to_vec()], min.len()).unwrap()
    }

    #[test]
    fn int8_and_uint8_cut_each_range_into_255_steps() {
        let r = ranges(&[-1.0, 0.0], &[1.0, 255.0]);
        let v = vec![-1.0, 0.0, 1.0, 255.0, 0.0, 100.5];
        // In float32, as numpy computes them: 1.0 lands at 254.99998 of [-1, 1], so step 254.
        assert_eq!(
            quantize(v.clone(), 2, Precision::Uint8, Some(&r)),
            Values::U8(vec![0, 0, 254, 255, 127, 100])
        );
        assert_eq!(
            quantize(v, 2, Precision::Int8, Some(&r)),
            Values::I8(vec![-128, -128, 126, 127, -1, -28])
        );
    }

    #[test]
    fn out_of_range_saturates_and_a_point_range_steps_by_one() {
        let r = ranges(&[0.0, 0.5], &[1.0, 0.5]);
        assert_eq!(
            quantize(vec![2.0, 0.5, -3.0, 2.5], 2, Precision::Int8, Some(&r)),
            Values::I8(vec![127, -128, -128, -126])
        );
    }

    #[test]
    fn sign_bits_fill_bytes_from_the_high_bit() {
        let v = vec![1.0, -1.0, 0.0, 2.0, -0.0, 3.0, 1.0, 1.0, 5.0, -5.0];
        assert_eq!(
            quantize(v.clone(), 10, Precision::Ubinary, None),
            Values::U8(vec![0b1001_0111, 0b1000_0000])
        );
        assert_eq!(
            quantize(v, 10, Precision::Binary, None),
            Values::I8(
                [0b1001_0111 - 128_i16, 0]
                    .iter()
                    .map(|&b| b as i8)
                    .collect()
            )
        );
        assert_eq!(width(Precision::Binary, 10), 2);
    }

    #[test]
    fn ranges_must_fit_the_vectors() {
        let err = Ranges::new(&[vec![0.0; 3], vec![1.0; 3]], 4).unwrap_err();
        assert_eq!(err.request_field(), Some(Field::Ranges));
    }
}
