//! `Runner`: a loaded model that answers `EmbeddingRequest`s with numpy arrays.

use candle_embed_engine::{
    Embedder, EmbedderOptions, ModelInfo, Reranker, Values, DEFAULT_MAX_BATCH_TOKENS,
};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{interruptible, without_gil};
use crate::request::PyEmbeddingRequest;
use crate::rerank::PyRerankRequest;
use crate::which::PyWhich;

/// A loaded model: an embedding model or a reranker. Thread-safe: calls release the GIL and may
/// run concurrently.
#[pyclass(name = "Runner", module = "candle_embed._native", frozen, subclass)]
pub struct PyRunner {
    model: Model,
}

enum Model {
    Embedding(Embedder),
    Reranker(Reranker),
}

impl PyRunner {
    fn embedder(&self) -> PyResult<&Embedder> {
        match &self.model {
            Model::Embedding(embedder) => Ok(embedder),
            Model::Reranker(_) => Err(PyValueError::new_err(
                "this Runner holds a reranker (Which.Reranker): it scores pairs with rerank(), \
                 it does not embed; load an embedding model with Which.Embedding",
            )),
        }
    }

    fn reranker(&self) -> PyResult<&Reranker> {
        match &self.model {
            Model::Reranker(reranker) => Ok(reranker),
            Model::Embedding(_) => Err(PyValueError::new_err(
                "this Runner holds an embedding model: rerank() needs a reranker, loaded with \
                 Which.Reranker(model_id=...)",
            )),
        }
    }

    fn model_info(&self) -> &ModelInfo {
        match &self.model {
            Model::Embedding(embedder) => embedder.info(),
            Model::Reranker(reranker) => reranker.info(),
        }
    }
}

#[pymethods]
impl PyRunner {
    /// Loads the model `which` names.
    ///
    /// device: "cpu", "cuda", "cuda:N", "metal". max_length: cap on input tokens (default: the
    /// model's max_position_embeddings). max_batch_tokens: token budget of one forward pass.
    #[new]
    #[pyo3(signature = (which, device="cpu".to_owned(), max_length=None, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS as i64))]
    fn new(
        py: Python<'_>,
        which: PyWhich,
        device: String,
        max_length: Option<i64>,
        max_batch_tokens: i64,
    ) -> PyResult<Self> {
        let positive = |name: &str, value: i64| {
            usize::try_from(value)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "{name} must be a positive number of tokens, got {value}"
                    ))
                })
        };
        let max_length = max_length.map(|n| positive("max_length", n)).transpose()?;
        let max_batch_tokens = positive("max_batch_tokens", max_batch_tokens)?;
        let options = EmbedderOptions {
            source: which.source(),
            arch: which.arch(),
            device,
            dtype: which.dtype().to_owned(),
            max_length,
            max_batch_tokens,
        };
        let model = if which.is_reranker() {
            Model::Reranker(without_gil(py, || Reranker::load(&options))?)
        } else {
            Model::Embedding(without_gil(py, || Embedder::load(&options))?)
        };
        Ok(Self { model })
    }

    /// Embeds the request's inputs: an array of shape (inputs, dimensions) in the request's
    /// precision (float32, float16, int8, uint8; binary ones: (inputs, ceil(dimensions / 8))).
    fn send_embedding_request<'py>(
        &self,
        py: Python<'py>,
        request: &PyEmbeddingRequest,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.embed_counted(py, request)?.0)
    }

    /// `send_embedding_request`, and the number of tokens embedded (for `encode`'s progress).
    #[pyo3(name = "_embed")]
    fn embed_counted<'py>(
        &self,
        py: Python<'py>,
        request: &PyEmbeddingRequest,
    ) -> PyResult<(Bound<'py, PyAny>, usize)> {
        // The request is frozen, so the GIL-free work borrows it: no copy of its texts.
        let request = &request.inner;
        let embedder = self.embedder()?;
        let embeddings = interruptible(py, |go_on| embedder.embed_until(request, go_on))?;
        let tokens = embeddings.prompt_tokens();
        let shape = [embeddings.len(), embeddings.width()];
        // The vectors' one buffer becomes the array's, without a copy.
        let array = match embeddings.into_values() {
            Values::F32(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
            Values::F16(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
            Values::I8(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
            Values::U8(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        };
        Ok((array, tokens))
    }

    /// The token ids the model would be fed for this request, one list per input.
    fn tokenize(&self, py: Python<'_>, request: &PyEmbeddingRequest) -> PyResult<Vec<Vec<u32>>> {
        let request = &request.inner;
        let embedder = self.embedder()?;
        without_gil(py, || Ok(embedder.prepare(request)?.sequences))
    }

    /// Each document's relevance score in [0, 1], in the request's order (float32 array), and
    /// the number of tokens the pairs took.
    #[pyo3(name = "_rerank")]
    fn rerank_counted<'py>(
        &self,
        py: Python<'py>,
        request: &PyRerankRequest,
    ) -> PyResult<(Bound<'py, PyAny>, usize)> {
        let reranker = self.reranker()?;
        let request = &request.inner;
        let scores = interruptible(py, |go_on| reranker.rerank_until(request, go_on))?;
        let tokens = scores.prompt_tokens();
        Ok((PyArray1::from_vec(py, scores.scores).into_any(), tokens))
    }

    /// The ids the reranker reads for each (query, document) pair.
    fn tokenize_pairs(&self, py: Python<'_>, request: &PyRerankRequest) -> PyResult<Vec<Vec<u32>>> {
        let reranker = self.reranker()?;
        let request = &request.inner;
        without_gil(py, || reranker.tokenize(request))
    }

    /// Size of a full embedding vector.
    #[getter]
    fn hidden_size(&self) -> usize {
        self.model_info().hidden_size
    }

    /// Longest accepted input, in tokens.
    #[getter]
    fn max_length(&self) -> usize {
        self.model_info().max_length
    }

    /// What was loaded and how it runs: model id, dtypes, device, limits.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.model_info();
        let dict = PyDict::new(py);
        dict.set_item("model_id", &info.model_id)?;
        dict.set_item("architecture", info.architecture.as_str())?;
        dict.set_item("hidden_size", info.hidden_size)?;
        dict.set_item("max_length", info.max_length)?;
        dict.set_item("vocab_size", info.vocab_size)?;
        dict.set_item("dtype", info.dtype.as_str())?;
        dict.set_item("storage_dtype", info.storage_dtype.as_str())?;
        dict.set_item("kernel", &info.kernel)?;
        dict.set_item("device", &info.device)?;
        dict.set_item("max_batch_tokens", info.max_batch_tokens)?;
        dict.set_item("tokenizer_appends_eos", info.tokenizer_appends_eos)?;
        dict.set_item("prompt_names", &info.prompt_names)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let info = self.model_info();
        format!(
            "Runner(model_id={:?}, device={:?}, dtype={:?}, kernel={:?})",
            info.model_id,
            info.device,
            info.dtype.as_str(),
            info.kernel
        )
    }
}
