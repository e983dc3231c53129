//! The embedder: loads a model once, then runs requests through the pipeline
//! tokenize → pack → forward → pool → normalize. Shared by the Python bindings, the Rust SDK and
//! the server; `&self` methods, so one instance serves many threads.

use std::time::Instant;

use candle_core::{DType, Device};

use crate::config::{Config, EmbeddingArchitecture};
use crate::cpu_bf16;
use crate::device::{parse_compute, parse_device};
use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::pack::{plan_batches, PackedBatch};
use crate::pool;
use crate::prompt::Prompts;
use crate::request::EmbeddingRequest;
use crate::source::ModelSource;
use crate::tokenize::EmbeddingTokenizer;
use crate::weights;

/// Default token budget of one forward pass.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;

/// Everything needed to load a model.
#[derive(Clone, Debug)]
pub struct EmbedderOptions {
    pub source: ModelSource,
    /// Expected architecture; `None` detects it from config.json.
    pub arch: Option<EmbeddingArchitecture>,
    /// `cpu`, `cuda[:N]`, `metal[:N]`.
    pub device: String,
    /// `auto`, `f32`, `bf16`, `f16`.
    pub dtype: String,
    /// Cap on input length below the model's own maximum.
    pub max_length: Option<usize>,
    /// Token budget of one forward pass; inputs are split into batches of at most this many.
    pub max_batch_tokens: usize,
}

impl EmbedderOptions {
    pub fn new(model_id: impl Into<String>) -> Self {
        Self {
            source: ModelSource::new(model_id),
            arch: None,
            device: "cpu".to_owned(),
            dtype: "auto".to_owned(),
            max_length: None,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
        }
    }
}

/// The vectors of one request, in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens each input was embedded with (after truncation, `<|endoftext|>` included).
    pub token_counts: Vec<usize>,
}

impl Embeddings {
    pub fn prompt_tokens(&self) -> usize {
        self.token_counts.iter().sum()
    }
}

/// What a loaded model is, for logs, `/info` and the Python `Runner.info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub model_id: String,
    pub architecture: EmbeddingArchitecture,
    pub hidden_size: usize,
    pub max_length: usize,
    pub vocab_size: usize,
    pub dtype: DType,
    pub storage_dtype: DType,
    /// What does the matmuls: `amx`, `avx512bf16` or `reference` (our bf16 CPU kernels), or
    /// `candle` (candle's own ops: f32 on CPU, and every GPU).
    pub kernel: String,
    pub device: String,
    pub max_batch_tokens: usize,
    pub tokenizer_appends_eos: bool,
    pub prompt_names: Vec<String>,
}

/// The forward pass in use.
enum Forward {
    Candle(Model),
    CpuBf16(cpu_bf16::Model),
}

/// A loaded embedding model.
pub struct Embedder {
    model: Forward,
    tokenizer: EmbeddingTokenizer,
    config: Config,
    prompts: Option<Prompts>,
    info: ModelInfo,
}

impl Embedder {
    pub fn load(options: &EmbedderOptions) -> Result<Self> {
        let started = Instant::now();
        if options.max_batch_tokens == 0 {
            return Err(EngineError::invalid("max_batch_tokens must be positive"));
        }
        let device = parse_device(&options.device)?;
        let compute = parse_compute(&options.dtype, &device)?;
        let dtype = compute.dtype;
        let files = options.source.resolve()?;

        let config = Config::from_file(&files.config)?;
        let architecture = options.arch.unwrap_or_default();
        architecture.check(&config, &files.config)?;
        let max_length = match options.max_length {
            None => config.max_position_embeddings,
            Some(0) => return Err(EngineError::invalid("max_length must be positive")),
            Some(n) if n > config.max_position_embeddings => {
                return Err(EngineError::invalid(format!(
                    "max_length {n} is larger than the model's max_position_embeddings ({})",
                    config.max_position_embeddings
                )))
            }
            Some(n) => n,
        };
        let tokenizer = EmbeddingTokenizer::from_file(&files.tokenizer)?;
        let prompts = files
            .prompts
            .as_deref()
            .map(Prompts::from_file)
            .transpose()?;

        let (model, storage_dtype) = if let Some(isa) = compute.cpu_kernel {
            let reader = weights::WeightReader::open(&files.weights)?;
            let storage = reader.dtype("embed_tokens.weight")?;
            let model = cpu_bf16::Model::new(&config, &reader, isa)?;
            (Forward::CpuBf16(model), storage)
        } else {
            let (vb, storage) = weights::var_builder(&files.weights, dtype, &device)?;
            let dir = files.weights[0]
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_owned();
            let model =
                Model::new(&config, vb).map_err(|source| EngineError::Weights { dir, source })?;
            (Forward::Candle(model), storage)
        };
        let kernel = compute
            .cpu_kernel
            .map_or("candle", |isa| isa.name())
            .to_owned();

        let info = ModelInfo {
            model_id: options.source.model_id.clone(),
            architecture,
            hidden_size: config.hidden_size,
            max_length,
            vocab_size: config.vocab_size,
            dtype,
            storage_dtype,
            kernel,
            device: describe(&device),
            max_batch_tokens: options.max_batch_tokens,
            tokenizer_appends_eos: tokenizer.appends_eos(),
            prompt_names: prompts
                .iter()
                .flat_map(|p| p.names().map(str::to_owned))
                .collect(),
        };
        tracing::info!(
            "loaded {} ({} layers, hidden {}, {:?} weights computed in {:?} on {}, kernel {}) in {:.1?}",
            info.model_id,
            config.num_hidden_layers,
            info.hidden_size,
            storage_dtype,
            dtype,
            info.device,
            info.kernel,
            started.elapsed()
        );
        Ok(Self {
            model,
            tokenizer,
            config,
            prompts,
            info,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The token sequences the model is fed for `request`, in input order.
    pub fn tokenize(&self, request: &EmbeddingRequest) -> Result<Vec<Vec<u32>>> {
        self.tokenizer.encode_request(
            request,
            self.prompts.as_ref(),
            self.info.max_length,
            self.config.vocab_size,
        )
    }

    /// Checks the request's output options before any work is done.
    pub fn check_output(&self, request: &EmbeddingRequest) -> Result<()> {
        match request.dimensions {
            Some(d) if d == 0 || d > self.info.hidden_size => Err(EngineError::invalid(format!(
                "dimensions must be between 1 and {} (the model's hidden size), got {d}",
                self.info.hidden_size
            ))),
            _ => Ok(()),
        }
    }

    /// Embeds every input of `request`.
    pub fn embed(&self, request: &EmbeddingRequest) -> Result<Embeddings> {
        self.check_output(request)?;
        let sequences = self.tokenize(request)?;
        let mut vectors = self.embed_sequences(&sequences)?;
        for v in &mut vectors {
            pool::finish(v, request.dimensions, request.normalize);
        }
        Ok(Embeddings {
            vectors,
            token_counts: sequences.iter().map(Vec::len).collect(),
        })
    }

    /// Raw pooled hidden states (not normalized) of already tokenized sequences, in order.
    pub fn embed_sequences(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
        let mut vectors = Vec::with_capacity(sequences.len());
        for group in plan_batches(&lengths, self.info.max_batch_tokens) {
            let batch = PackedBatch::new(&sequences[group]);
            match &self.model {
                Forward::Candle(model) => {
                    let hidden = model.forward(&batch)?;
                    vectors.extend(pool::to_vectors(&pool::last_token(&hidden, &batch)?)?);
                }
                Forward::CpuBf16(model) => vectors.extend(model.forward_last(&batch)),
            }
        }
        Ok(vectors)
    }
}

fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
