//! The embedder: loads a model once, then runs requests through the stages
//! [`prepare`](Embedder::prepare) → [`forward_all_until`] (pack, forward, pool) →
//! [`Output::finish`](crate::output::Output::finish). Python and the Rust SDK call
//! [`Embedder::embed`], which chains them; the server calls the same stages with its batching
//! scheduler in the middle. `&self` methods, so one instance serves many threads.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};

use crate::config::{Config, EmbeddingArchitecture};
use crate::cpu;
use crate::decoder::{forward_all_until, Decoder};
use crate::device::{parse_compute, parse_device};
use crate::error::{EngineError, Result};
use crate::model::{AttentionPath, Model};
use crate::output::Embeddings;
use crate::pack::TokenBudget;
use crate::prepare::{self, Limits, Prepared};
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
    /// What does the matmuls: `amx`, `avx512bf16`, `avx512`, `avx2` or `reference` (our bf16 CPU
    /// kernels), or `candle` (candle's own ops: f32 on CPU, Metal), `candle+varlen` (candle's ops
    /// with our packed attention kernel: CUDA).
    pub kernel: String,
    pub device: String,
    pub max_batch_tokens: usize,
    pub tokenizer_appends_eos: bool,
    pub prompt_names: Vec<String>,
}

/// A loaded embedding model.
pub struct Embedder {
    decoder: Arc<dyn Decoder>,
    tokenizer: EmbeddingTokenizer,
    config: Config,
    prompts: Option<Prompts>,
    info: ModelInfo,
}

/// What every model kind loads the same way: config, tokenizer, decoder, and what they are.
pub(crate) struct Loaded {
    pub decoder: Arc<dyn Decoder>,
    pub tokenizer: EmbeddingTokenizer,
    pub config: Config,
    pub files: crate::source::ModelFiles,
    pub weights: weights::WeightReader,
    pub info: ModelInfo,
}

impl Loaded {
    /// Loads `options`' model as `architecture`; `max_length` is the length cap when the options
    /// give none.
    pub fn load(
        options: &EmbedderOptions,
        architecture: EmbeddingArchitecture,
        default_max_length: usize,
    ) -> Result<Self> {
        let started = Instant::now();
        if options.max_batch_tokens == 0 {
            return Err(EngineError::invalid("max_batch_tokens must be positive"));
        }
        let device = parse_device(&options.device)?;
        let compute = parse_compute(&options.dtype, &device)?;
        let dtype = compute.dtype;
        let attention = AttentionPath::choose(&device, dtype).map_err(EngineError::invalid)?;
        let files = options.source.resolve()?;

        let config = Config::from_file(&files.config)?;
        architecture.check(&config, &files.config)?;
        let max_length = match options.max_length {
            None => default_max_length.min(config.max_position_embeddings),
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
        // Headers only: what the checkpoint holds decides whether it is the kind asked for.
        let reader = weights::WeightReader::open(&files.weights)?;
        architecture.check_weights(&config, &reader)?;

        // A forced varlen attention in f32 runs candle's ops around it: that path exists to test
        // the CUDA kernel's CPU model.
        let ours = compute
            .cpu_kernel
            .filter(|_| !(dtype == DType::F32 && attention == AttentionPath::Varlen));
        let (decoder, storage_dtype): (Arc<dyn Decoder>, _) = if let Some(isa) = ours {
            let storage = reader.dtype("embed_tokens.weight")?;
            let decoder: Arc<dyn Decoder> = if dtype == DType::F32 {
                Arc::new(cpu::Model::<cpu::F32>::new(&config, &reader, isa)?)
            } else {
                Arc::new(cpu::Model::<cpu::Bf16>::new(&config, &reader, isa)?)
            };
            (decoder, storage)
        } else {
            let (vb, storage) = weights::var_builder(&files.weights, dtype, &device)?;
            let dir = files.weights[0]
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_owned();
            let model = Model::new(&config, vb, attention)
                .map_err(|source| EngineError::Weights { dir, source })?;
            (Arc::new(model), storage)
        };
        candle_embed_kernels::aligned::release_free_memory();
        // Our decoder's kernel family, or candle's ops (with the varlen attention kernel).
        let kernel = match (ours, attention) {
            (Some(isa), _) => isa.name().to_owned(),
            (None, AttentionPath::Blocked) => "candle".to_owned(),
            (None, AttentionPath::Varlen) => "candle+varlen".to_owned(),
        };

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
            prompt_names: Vec::new(),
        };
        tracing::info!(
            "loaded {} as {} ({} layers, hidden {}, {:?} weights computed in {:?} on {}, kernel {}) in {:.1?}",
            info.model_id,
            architecture.as_str(),
            config.num_hidden_layers,
            info.hidden_size,
            storage_dtype,
            dtype,
            info.device,
            info.kernel,
            started.elapsed()
        );
        Ok(Self {
            decoder,
            tokenizer,
            config,
            files,
            weights: reader,
            info,
        })
    }
}

impl Embedder {
    pub fn load(options: &EmbedderOptions) -> Result<Self> {
        let architecture = options.arch.unwrap_or_default();
        let loaded = Loaded::load(options, architecture, usize::MAX)?;
        let prompts = loaded
            .files
            .prompts
            .as_deref()
            .map(Prompts::from_file)
            .transpose()?;
        let mut info = loaded.info;
        info.prompt_names = prompts
            .iter()
            .flat_map(|p| p.names().map(str::to_owned))
            .collect();
        Ok(Self {
            decoder: loaded.decoder,
            tokenizer: loaded.tokenizer,
            config: loaded.config,
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

    /// What requests are checked against.
    pub fn limits(&self) -> Limits {
        Limits {
            max_length: self.info.max_length,
            vocab_size: self.config.vocab_size,
            hidden_size: self.info.hidden_size,
        }
    }

    /// The token budget of one forward pass.
    pub fn budget(&self) -> TokenBudget {
        TokenBudget::new(self.info.max_batch_tokens)
    }

    /// The forward pass, for callers that form their own batches (the server's scheduler).
    pub fn decoder(&self) -> Arc<dyn Decoder> {
        Arc::clone(&self.decoder)
    }

    /// Stage one: `request` checked against this model and tokenized, with its output plan.
    pub fn prepare(&self, request: &EmbeddingRequest) -> Result<Prepared> {
        prepare::prepare(
            request,
            &self.tokenizer,
            self.prompts.as_ref(),
            &self.limits(),
        )
    }

    /// Embeds every input of `request`: prepare, forward in budget-sized passes, finish.
    pub fn embed(&self, request: &EmbeddingRequest) -> Result<Embeddings> {
        self.embed_until(request, &|| true)
    }

    /// [`Self::embed`], stopped with [`EngineError::Interrupted`] when `go_on` (asked before each
    /// forward pass) says no.
    pub fn embed_until(
        &self,
        request: &EmbeddingRequest,
        go_on: &(dyn Fn() -> bool + Sync),
    ) -> Result<Embeddings> {
        let prepared = self.prepare(request)?;
        let pooled = forward_all_until(&*self.decoder, &prepared.sequences, self.budget(), go_on)?;
        Ok(prepared.output.finish(pooled, prepared.token_counts()))
    }
}

fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
