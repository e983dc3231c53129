//! `Tokenizer`: the request tokenizer on its own, without a model (for counting tokens and for
//! checking our tokenization against the `tokenizers` library).

use std::path::PathBuf;

use candle_embed_engine::prepare::{prepare, Limits};
use candle_embed_engine::tokenize::EmbeddingTokenizer;
use pyo3::prelude::*;

use crate::errors::without_gil;
use crate::request::PyEmbeddingRequest;

/// A tokenizer.json, used the way the Runner uses it: every text ends with <|endoftext|>.
#[pyclass(name = "Tokenizer", module = "candle_embed._native", frozen)]
pub struct PyTokenizer {
    inner: EmbeddingTokenizer,
    vocab_size: usize,
}

#[pymethods]
impl PyTokenizer {
    /// Loads a tokenizer.json file.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = without_gil(py, || EmbeddingTokenizer::from_file(&path))?;
        let vocab_size = inner.vocab_size();
        Ok(Self { inner, vocab_size })
    }

    /// Token ids of each input of the request (instruction applied; prompt_name needs a model).
    /// max_length: longest accepted input (default: no limit).
    #[pyo3(signature = (request, max_length=None))]
    fn encode(
        &self,
        py: Python<'_>,
        request: &PyEmbeddingRequest,
        max_length: Option<usize>,
    ) -> PyResult<Vec<Vec<u32>>> {
        let request = &request.inner;
        // No model: no prompts file, and no hidden size to bound `dimensions` by.
        let limits = Limits {
            max_length: max_length.unwrap_or(usize::MAX),
            vocab_size: self.vocab_size,
            hidden_size: usize::MAX,
        };
        without_gil(py, || {
            Ok(prepare(request, &self.inner, None, &limits)?.sequences)
        })
    }

    /// Id of <|endoftext|>.
    #[getter]
    fn eos_id(&self) -> u32 {
        self.inner.eos_id()
    }

    /// Whether tokenizer.json's post-processor appends <|endoftext|> itself.
    #[getter]
    fn appends_eos(&self) -> bool {
        self.inner.appends_eos()
    }
}
