//! `RerankRequest` for Python: a thin handle on the engine's rerank request.

use candle_embed_engine::RerankRequest;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::to_pyerr;

/// Documents to score against a query with a Qwen3-Reranker.
#[pyclass(name = "RerankRequest", module = "candle_embed._native", frozen)]
pub struct PyRerankRequest {
    pub inner: RerankRequest,
}

#[pymethods]
impl PyRerankRequest {
    /// query: the search query. documents: the candidate texts.
    /// instruction: what relevance means (default: Qwen's web-search instruction; "" stays empty).
    /// top_n: keep the best top_n results (all when None).
    /// return_documents: echo each result's text.
    #[new]
    #[pyo3(signature = (query, documents, instruction=None, top_n=None, return_documents=false))]
    fn new(
        query: String,
        documents: Vec<String>,
        instruction: Option<String>,
        top_n: Option<i64>,
        return_documents: bool,
    ) -> PyResult<Self> {
        let top_n = top_n
            .map(|n| {
                usize::try_from(n).map_err(|_| {
                    PyValueError::new_err(format!("top_n must be at least 1, got {n}"))
                })
            })
            .transpose()?;
        let inner = RerankRequest {
            query,
            documents,
            instruction,
            top_n,
            return_documents,
        };
        inner.check().map_err(to_pyerr)?;
        Ok(Self { inner })
    }

    #[getter]
    fn query(&self) -> &str {
        &self.inner.query
    }

    #[getter]
    fn documents(&self) -> Vec<String> {
        self.inner.documents.clone()
    }

    #[getter]
    fn instruction(&self) -> Option<&str> {
        self.inner.instruction.as_deref()
    }

    #[getter]
    fn top_n(&self) -> Option<usize> {
        self.inner.top_n
    }

    #[getter]
    fn return_documents(&self) -> bool {
        self.inner.return_documents
    }

    fn __len__(&self) -> usize {
        self.inner.documents.len()
    }
}
