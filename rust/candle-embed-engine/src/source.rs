//! Where a model's files come from: a local directory, or a Hugging Face hub id fetched into the
//! standard cache (shared with `huggingface_hub`, so earlier downloads are reused).
//!
//! Environment, as `huggingface_hub` reads it: `HF_HOME` / `HF_HUB_CACHE` (cache location),
//! `HF_HUB_OFFLINE` (cache only), `HF_TOKEN` (gated models), `HF_ENDPOINT` (mirrors).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, CacheRepo, Repo, RepoType};

use crate::error::{EngineError, Result};
use crate::weights::{self, INDEX_FILE, SINGLE_FILE};

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const PROMPTS_FILE: &str = "config_sentence_transformers.json";

/// Which model to load and where to look for it.
#[derive(Clone, Debug, Default)]
pub struct ModelSource {
    /// A local directory or a hub id such as `Qwen/Qwen3-Embedding-0.6B`.
    pub model_id: String,
    /// Use this tokenizer.json instead of the model's own.
    pub tokenizer_json: Option<PathBuf>,
    /// Hub branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// Hub cache directory (default: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub hf_cache_path: Option<PathBuf>,
}

/// The files a model is made of, all on local disk.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: Vec<PathBuf>,
    /// `config_sentence_transformers.json`, when the model has one.
    pub prompts: Option<PathBuf>,
}

impl ModelSource {
    pub fn new(model_id: impl Into<String>) -> Self {
        Self {
            model_id: model_id.into(),
            ..Self::default()
        }
    }

    /// Finds (downloading if needed) every file the model needs.
    pub fn resolve(&self) -> Result<ModelFiles> {
        let path = Path::new(&self.model_id);
        let mut files = if path.is_dir() {
            local_files(path)?
        } else if path.exists() {
            return Err(EngineError::invalid(format!(
                "model_id {:?} is a file; give the model's directory or a hub id",
                self.model_id
            )));
        } else if looks_like_hub_id(&self.model_id) {
            self.hub_files()?
        } else {
            return Err(EngineError::FileNotFound {
                what: "model directory",
                path: path.to_owned(),
            });
        };
        if let Some(tokenizer) = &self.tokenizer_json {
            files.tokenizer.clone_from(tokenizer);
        }
        Ok(files)
    }

    fn cache(&self) -> Cache {
        match (&self.hf_cache_path, env("HF_HUB_CACHE")) {
            (Some(path), _) => Cache::new(path.clone()),
            (None, Some(path)) => Cache::new(path.into()),
            (None, None) => Cache::from_env(),
        }
    }

    fn hub_files(&self) -> Result<ModelFiles> {
        let cache = self.cache();
        let revision = self.revision.clone().unwrap_or_else(|| "main".to_owned());
        let repo = Repo::with_revision(self.model_id.clone(), RepoType::Model, revision);
        let cached = Cached {
            snapshot: cache
                .path()
                .join(repo.folder_name())
                .join("snapshots")
                .join(repo.revision()),
            repo: cache.repo(repo.clone()),
        };
        let hub = if offline() {
            Hub::Cache(cached, "HF_HUB_OFFLINE is set")
        } else {
            match self.online(&cache, repo) {
                Ok(hub) => hub,
                // Like huggingface_hub: when the hub cannot be reached, fall back to the cache.
                Err(err) if cached.get(CONFIG_FILE).is_some() => {
                    tracing::warn!("{err}; using the cached copy");
                    Hub::Cache(cached, "the hub could not be reached")
                }
                Err(err) => return Err(err),
            }
        };
        let fetch = |file: &str| {
            hub.get(&self.model_id, file)?.ok_or_else(|| match &hub {
                Hub::Online(..) => EngineError::Hub {
                    model_id: self.model_id.clone(),
                    file: file.to_owned(),
                    message: "the repository has no such file".to_owned(),
                },
                Hub::Cache(_, why) => EngineError::NotCached {
                    model_id: self.model_id.clone(),
                    file: file.to_owned(),
                    cache: cache.path().clone(),
                    why,
                },
            })
        };
        let config = fetch(CONFIG_FILE)?;
        let tokenizer = match &self.tokenizer_json {
            Some(path) => path.clone(),
            None => fetch(TOKENIZER_FILE)?,
        };
        let weights = match hub.get(&self.model_id, INDEX_FILE)? {
            Some(index) => weights::shards_from_index(&index)?
                .iter()
                .map(|shard| fetch(shard))
                .collect::<Result<_>>()?,
            None => vec![fetch(SINGLE_FILE)?],
        };
        let prompts = hub.get(&self.model_id, PROMPTS_FILE)?;
        Ok(ModelFiles {
            config,
            tokenizer,
            weights,
            prompts,
        })
    }

    fn online(&self, cache: &Cache, repo: Repo) -> Result<Hub> {
        let hub_error = |message: String| EngineError::Hub {
            model_id: self.model_id.clone(),
            file: "repository listing".to_owned(),
            message,
        };
        let mut builder = ApiBuilder::from_cache(cache.clone())
            .with_progress(false)
            .with_token(env("HF_TOKEN").or_else(|| cache.token()));
        if let Some(endpoint) = env("HF_ENDPOINT") {
            builder = builder.with_endpoint(endpoint);
        }
        let api = builder.build().map_err(|err| hub_error(err.to_string()))?;
        let api = api.repo(repo);
        let info = api.info().map_err(|err| hub_error(err.to_string()))?;
        let listing = info.siblings.into_iter().map(|s| s.rfilename).collect();
        Ok(Hub::Online(api, listing))
    }
}

/// One revision of a repository in the local cache.
struct Cached {
    repo: CacheRepo,
    /// `snapshots/<revision>`: where a commit-hash revision lives, since huggingface_hub writes
    /// no `refs/<hash>` for it.
    snapshot: PathBuf,
}

impl Cached {
    fn get(&self, file: &str) -> Option<PathBuf> {
        self.repo.get(file).or_else(|| {
            let path = self.snapshot.join(file);
            path.is_file().then_some(path)
        })
    }
}

/// Either the live hub (with the repository's file listing) or the local cache alone.
// Built once per load; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Hub {
    Online(ApiRepo, Vec<String>),
    Cache(Cached, &'static str),
}

impl Hub {
    /// The local path of `file`, or `None` when the repository has no such file.
    fn get(&self, model_id: &str, file: &str) -> Result<Option<PathBuf>> {
        match self {
            Hub::Online(api, listing) => {
                if !listing.iter().any(|f| f == file) {
                    return Ok(None);
                }
                tracing::info!("fetching {file} of {model_id}");
                api.get(file).map(Some).map_err(|err| EngineError::Hub {
                    model_id: model_id.to_owned(),
                    file: file.to_owned(),
                    message: err.to_string(),
                })
            }
            Hub::Cache(repo, _) => Ok(repo.get(file)),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn offline() -> bool {
    env("HF_HUB_OFFLINE")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// `owner/name`, made of the characters the hub allows.
fn looks_like_hub_id(id: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(id.split_once('/'), Some((owner, name)) if ok(owner) && ok(name))
}

fn local_files(dir: &Path) -> Result<ModelFiles> {
    let prompts = dir.join(PROMPTS_FILE);
    Ok(ModelFiles {
        config: dir.join(CONFIG_FILE),
        tokenizer: dir.join(TOKENIZER_FILE),
        weights: weights::local_files(dir)?,
        prompts: prompts.is_file().then_some(prompts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        assert!(looks_like_hub_id("Qwen/Qwen3-Embedding-0.6B"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("single"));
    }

    #[test]
    fn missing_local_path_is_not_found() {
        let err = ModelSource::new("/no/such/model/dir")
            .resolve()
            .unwrap_err();
        assert!(matches!(err, EngineError::FileNotFound { .. }), "{err}");
    }
}
