//! `_native.quantize`: float32 vectors already computed, converted to a precision by the engine's
//! own finishing step (what `precision=` does inside a request).

use candle_embed_engine::quantize::{quantize as convert, width, Ranges};
use candle_embed_engine::{Precision, Values};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::errors::to_pyerr;

/// Converts (rows, dimensions) float32 vectors to `precision` ("float32", "float16", "int8",
/// "uint8", "binary", "ubinary"); int8 and uint8 take `ranges`, a (2, dimensions) array of each
/// dimension's min and max.
#[pyfunction]
#[pyo3(signature = (embeddings, precision, ranges=None))]
pub fn quantize<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    precision: &str,
    ranges: Option<Vec<Vec<f32>>>,
) -> PyResult<Bound<'py, PyAny>> {
    let precision: Precision = precision.parse().map_err(to_pyerr)?;
    let (rows, dimensions) = (embeddings.shape()[0], embeddings.shape()[1]);
    // The request's own check: ranges exactly where the precision uses them.
    let mut request = candle_embed_engine::EmbeddingRequest::new("-");
    request.precision = precision;
    request.ranges = ranges;
    request.check_options().map_err(to_pyerr)?;
    let ranges = request
        .ranges
        .as_deref()
        .map(|r| Ranges::new(r, dimensions))
        .transpose()
        .map_err(to_pyerr)?;
    let values = embeddings.as_array().iter().copied().collect();
    let shape = [rows, width(precision, dimensions)];
    Ok(
        match convert(values, dimensions, precision, ranges.as_ref()) {
            Values::F32(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
            Values::F16(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
            Values::I8(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
            Values::U8(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        },
    )
}
