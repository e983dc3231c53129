//! `EmbeddingRequest` for Python: a thin handle on the engine's own request type.

use candle_embed_engine::{EmbeddingInput, EmbeddingRequest};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyList, PyString, PyTuple};

use crate::errors::to_pyerr;

/// What to embed and how.
#[pyclass(name = "EmbeddingRequest", module = "candle_embed._native", frozen)]
#[derive(Clone)]
pub struct PyEmbeddingRequest {
    pub inner: EmbeddingRequest,
}

#[pymethods]
impl PyEmbeddingRequest {
    /// A request for embeddings.
    ///
    /// input: a str, a list of str, a list of token ids (one sequence) or a list of lists of ids.
    /// truncate_sequence: cut inputs longer than the model maximum instead of raising.
    /// dimensions: keep the first `dimensions` values (Matryoshka), then normalize.
    /// normalize: L2-normalize each vector (default True).
    /// instruction: task description; texts become "Instruct: {instruction}\nQuery:{text}".
    /// prompt_name: a prompt of the model's config_sentence_transformers.json ("query", "document").
    /// truncate_prompt_tokens: keep at most this many tokens (<|endoftext|> included); -1 = maximum.
    /// truncation_side: "right" keeps the first tokens, "left" the last.
    /// precision: "float32", "float16", "int8", "uint8", "binary" or "ubinary"
    /// (sentence-transformers' quantize_embeddings); int8 and uint8 need `ranges`.
    /// ranges: each dimension's [min, max] as a (2, dimensions) array: [[min, ...], [max, ...]].
    #[new]
    #[pyo3(signature = (input, truncate_sequence=false, dimensions=None, normalize=true, instruction=None, prompt_name=None, truncate_prompt_tokens=None, truncation_side="right", precision="float32", ranges=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        input: &Bound<'_, PyAny>,
        truncate_sequence: bool,
        dimensions: Option<i64>,
        normalize: bool,
        instruction: Option<String>,
        prompt_name: Option<String>,
        truncate_prompt_tokens: Option<i64>,
        truncation_side: &str,
        precision: &str,
        ranges: Option<Vec<Vec<f32>>>,
    ) -> PyResult<Self> {
        let inner = EmbeddingRequest {
            input: extract_input(input)?,
            truncate_sequence,
            dimensions,
            normalize,
            instruction,
            prompt_name,
            truncate_prompt_tokens,
            truncation_side: truncation_side.parse().map_err(to_pyerr)?,
            precision: precision.parse().map_err(to_pyerr)?,
            ranges,
        };
        // The engine's own option checks (the ones HTTP bodies get), at construction.
        inner.check_options().map_err(to_pyerr)?;
        Ok(Self { inner })
    }

    #[getter]
    fn input<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match &self.inner.input {
            EmbeddingInput::Text(t) => t.into_pyobject(py)?.into_any(),
            EmbeddingInput::Texts(t) => t.into_pyobject(py)?.into_any(),
            EmbeddingInput::Tokens(t) => t.into_pyobject(py)?.into_any(),
            EmbeddingInput::TokenBatch(t) => t.into_pyobject(py)?.into_any(),
        })
    }

    #[getter]
    fn truncate_sequence(&self) -> bool {
        self.inner.truncate_sequence
    }

    #[getter]
    fn dimensions(&self) -> Option<i64> {
        self.inner.dimensions
    }

    #[getter]
    fn normalize(&self) -> bool {
        self.inner.normalize
    }

    #[getter]
    fn instruction(&self) -> Option<&str> {
        self.inner.instruction.as_deref()
    }

    #[getter]
    fn prompt_name(&self) -> Option<&str> {
        self.inner.prompt_name.as_deref()
    }

    #[getter]
    fn truncate_prompt_tokens(&self) -> Option<i64> {
        self.inner.truncate_prompt_tokens
    }

    #[getter]
    fn truncation_side(&self) -> &'static str {
        self.inner.truncation_side.as_str()
    }

    #[getter]
    fn precision(&self) -> &'static str {
        self.inner.precision.as_str()
    }

    #[getter]
    fn ranges(&self) -> Option<Vec<Vec<f32>>> {
        self.inner.ranges.clone()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("EmbeddingRequest({:?})", self.inner)
    }
}

const INPUT_TYPES: &str =
    "input must be a str, a list of str, a list of int (token ids) or a list of lists of int";

/// str | list[str] | list[int] | list[list[int]], with errors that name the offending item.
fn extract_input(input: &Bound<'_, PyAny>) -> PyResult<EmbeddingInput> {
    if let Ok(text) = input.cast::<PyString>() {
        return Ok(EmbeddingInput::Text(text.extract::<String>()?));
    }
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = input.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = input.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Err(PyTypeError::new_err(format!(
            "{INPUT_TYPES}; got {}",
            type_name(input)
        )));
    };
    let Some(first) = items.first() else {
        return Ok(EmbeddingInput::Texts(Vec::new()));
    };
    if first.is_instance_of::<PyString>() {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.extract::<String>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "input[{i}] is {}, but input[0] is a str; {INPUT_TYPES}",
                        type_name(item)
                    ))
                })
            })
            .collect::<PyResult<_>>()
            .map(EmbeddingInput::Texts)
    } else if first.cast::<PyList>().is_ok() || first.cast::<PyTuple>().is_ok() {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| token_ids(item, &format!("input[{i}]")))
            .collect::<PyResult<_>>()
            .map(EmbeddingInput::TokenBatch)
    } else {
        token_ids(input, "input").map(EmbeddingInput::Tokens)
    }
}

fn token_ids(seq: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<u32>> {
    let items: Vec<Bound<'_, PyAny>> = seq
        .try_iter()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{name} must be a list of int token ids; {INPUT_TYPES}"
            ))
        })?
        .collect::<PyResult<_>>()?;
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            // bool is an int subclass in Python, but True is no token id (JSON's `true` is not
            // one either).
            if !item.is_instance_of::<PyInt>() || item.is_instance_of::<PyBool>() {
                return Err(PyTypeError::new_err(format!(
                    "{name}[{j}] is {}, expected an int token id; {INPUT_TYPES}",
                    type_name(item)
                )));
            }
            let id = item.extract::<u32>().map_err(|_| {
                let negative = item.lt(0).unwrap_or(false);
                let expected = if negative {
                    "ids are >= 0"
                } else {
                    "ids are below the model's vocabulary size"
                };
                PyValueError::new_err(format!(
                    "{name}[{j}] = {item} is not a valid token id ({expected})"
                ))
            })?;
            Ok(id)
        })
        .collect()
}

/// "an int", "a str": the type of `obj` with its article, for error messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map_or_else(
        |_| "an object".to_owned(),
        |n| {
            let n = n.to_string();
            let article = if n.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            format!("{article} {n}")
        },
    )
}
