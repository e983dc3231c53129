//! Finding and memory-mapping a checkpoint's safetensors: one `model.safetensors`, or the shards
//! that `model.safetensors.index.json` lists; tensor names with or without the `model.` prefix.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{EngineError, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The shard files an index names, in a stable order, resolved against `dir`.
pub fn shards_from_index(index: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(index).map_err(|err| EngineError::invalid_file(index, err))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| EngineError::invalid_file(index, err))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| EngineError::invalid_file(index, "no \"weight_map\" object"))?;
    let files: BTreeSet<String> = map
        .values()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                EngineError::invalid_file(index, "weight_map values must be file names")
            })
        })
        .collect::<Result<_>>()?;
    Ok(files.into_iter().collect())
}

/// The safetensors files of a local model directory.
pub fn local_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    let files = if index.is_file() {
        shards_from_index(&index)?
            .into_iter()
            .map(|f| dir.join(f))
            .collect()
    } else {
        vec![dir.join(SINGLE_FILE)]
    };
    for file in &files {
        if !file.is_file() {
            return Err(EngineError::FileNotFound {
                what: "weights file",
                path: file.clone(),
            });
        }
    }
    Ok(files)
}

/// Memory-maps the files and returns a builder rooted where `embed_tokens` lives, plus the dtype
/// the checkpoint stores its weights in.
pub fn var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<(VarBuilder<'static>, DType)> {
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let weights_error = |source| EngineError::Weights {
        dir: dir.clone(),
        source,
    };
    // SAFETY: the files are mapped read-only; like every safetensors loader we rely on nobody
    // truncating them while the model is alive.
    #[allow(unsafe_code)]
    let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }
        .map_err(weights_error)?;
    let (prefix, storage) = ["", "model."]
        .into_iter()
        .find_map(|prefix| {
            let view = tensors.get(&format!("{prefix}embed_tokens.weight")).ok()?;
            Some((prefix, DType::try_from(view.dtype()).ok()?))
        })
        .ok_or_else(|| {
            weights_error(candle_core::Error::Msg(
                "no tensor `embed_tokens.weight` or `model.embed_tokens.weight`; is this a Qwen3 checkpoint?".into(),
            ))
        })?;
    let vb = VarBuilder::from_backend(Box::new(tensors), dtype, device.clone());
    let vb = if prefix.is_empty() {
        vb
    } else {
        vb.pp("model")
    };
    Ok((vb, storage))
}
