//! Finding and memory-mapping a checkpoint's safetensors: one `model.safetensors`, or the shards
//! that `model.safetensors.index.json` lists; tensor names with or without the `model.` prefix.

use std::collections::{BTreeSet, HashMap};
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

/// Reads tensors one at a time with positioned reads instead of a memory map, for the bf16 CPU
/// model: it re-lays every weight out at load, and pages of a mapping it has read would stay in
/// the process's resident memory next to the packed copy until the whole map is dropped.
#[derive(Clone, Debug)]
pub struct WeightReader {
    index: std::sync::Arc<HashMap<String, TensorEntry>>,
    prefix: String,
    dir: PathBuf,
}

#[derive(Clone, Debug)]
struct TensorEntry {
    file: PathBuf,
    dtype: String,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

impl WeightReader {
    /// Indexes the files' headers, rooted where `embed_tokens` lives (with or without `model.`).
    pub fn open(files: &[PathBuf]) -> Result<Self> {
        let mut index = HashMap::new();
        for file in files {
            read_header(file, &mut index)?;
        }
        let dir = files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let prefix = ["", "model."]
            .into_iter()
            .find(|p| index.contains_key(&format!("{p}embed_tokens.weight")))
            .ok_or_else(|| {
                EngineError::invalid_file(
                    &dir,
                    "loading weights: no tensor `embed_tokens.weight` or `model.embed_tokens.weight`; is this a Qwen3 checkpoint?",
                )
            })?;
        Ok(Self {
            index: std::sync::Arc::new(index),
            prefix: prefix.to_owned(),
            dir,
        })
    }

    /// The reader one level down, like `VarBuilder::pp`.
    #[must_use]
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            index: self.index.clone(),
            prefix: format!("{}{name}.", self.prefix),
            dir: self.dir.clone(),
        }
    }

    /// Whether the checkpoint holds a tensor named `full_name` (no prefix added).
    pub fn has(&self, full_name: &str) -> bool {
        self.index.contains_key(full_name)
    }

    /// Whether the decoder's tensors sit under `model.`, as transformers saves a causal LM.
    pub fn under_model(&self) -> bool {
        self.prefix.starts_with("model.")
    }

    /// Rows `rows` of the matrix `full_name` (no prefix added), `width` values each, as f32;
    /// only those rows are read (a head's two rows out of a 150,000-row vocabulary).
    pub fn rows_f32(&self, full_name: &str, rows: &[usize], width: usize) -> Result<Vec<Vec<f32>>> {
        use std::os::unix::fs::FileExt;
        let bad = |what: String| {
            EngineError::invalid_file(
                &self.dir,
                format!("loading weights: tensor `{full_name}`: {what}"),
            )
        };
        let entry = self
            .index
            .get(full_name)
            .ok_or_else(|| bad("tensor not found in the checkpoint".into()))?;
        let size = match storage_dtype(entry) {
            Some(DType::BF16 | DType::F16) => 2,
            Some(DType::F32) => 4,
            _ => return Err(bad(format!("dtype {} is not supported", entry.dtype))),
        };
        if entry.shape.len() != 2 || entry.shape[1] != width {
            return Err(bad(format!(
                "shape {:?}, expected (rows, {width})",
                entry.shape
            )));
        }
        let file = std::fs::File::open(&entry.file)
            .map_err(|err| EngineError::invalid_file(&entry.file, err))?;
        rows.iter()
            .map(|&row| {
                if row >= entry.shape[0] {
                    return Err(bad(format!(
                        "has {} rows, row {row} asked for",
                        entry.shape[0]
                    )));
                }
                let mut bytes = vec![0u8; width * size];
                let at = entry.start + (row * width * size) as u64;
                file.read_exact_at(&mut bytes, at)
                    .map_err(|err| bad(format!("reading {}: {err}", entry.file.display())))?;
                self.f32_from(full_name, entry, &bytes)
            })
            .collect()
    }

    /// The checkpoint's storage dtype of `name` (`"BF16"`, `"F16"`, `"F32"`).
    pub fn dtype(&self, name: &str) -> Result<DType> {
        let entry = self.entry(name, None)?;
        storage_dtype(entry)
            .ok_or_else(|| self.bad(name, format!("dtype {} is not supported", entry.dtype)))
    }

    /// Tensor `name` with the given shape, converted to bf16 (round to nearest even).
    pub fn bf16(&self, name: &str, shape: &[usize]) -> Result<Vec<half::bf16>> {
        let entry = self.entry(name, Some(shape))?;
        if storage_dtype(entry) == Some(DType::BF16) {
            // In pieces: the embedding table alone is 311 MB for the 0.6B model, and reading
            // it whole next to its converted copy was the peak of the process's memory.
            let mut values = Vec::with_capacity(((entry.end - entry.start) / 2) as usize);
            self.read_pieces(name, entry, |bytes| {
                values.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]])),
                );
            })?;
            return Ok(values);
        }
        let bytes = self.read(name, entry)?;
        Ok(self
            .f32_from(name, entry, &bytes)?
            .into_iter()
            .map(half::bf16::from_f32)
            .collect())
    }

    /// Tensor `name` with the given shape, as f32 (exact from bf16 and f16).
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let entry = self.entry(name, Some(shape))?;
        let bytes = self.read(name, entry)?;
        self.f32_from(name, entry, &bytes)
    }

    fn f32_from(&self, name: &str, entry: &TensorEntry, bytes: &[u8]) -> Result<Vec<f32>> {
        Ok(match storage_dtype(entry) {
            Some(DType::BF16) => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Some(DType::F16) => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Some(DType::F32) => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            _ => return Err(self.bad(name, format!("dtype {} is not supported", entry.dtype))),
        })
    }

    fn entry(&self, name: &str, shape: Option<&[usize]>) -> Result<&TensorEntry> {
        let full = format!("{}{name}", self.prefix);
        let entry = self
            .index
            .get(&full)
            .ok_or_else(|| self.bad(name, "tensor not found in the checkpoint"))?;
        if let Some(shape) = shape {
            if entry.shape != shape {
                return Err(self.bad(
                    name,
                    format!(
                        "shape {:?} does not match the config's {shape:?}",
                        entry.shape
                    ),
                ));
            }
        }
        Ok(entry)
    }

    fn read(&self, name: &str, entry: &TensorEntry) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&entry.file)
            .map_err(|err| EngineError::invalid_file(&entry.file, err))?;
        let mut bytes = vec![0u8; (entry.end - entry.start) as usize];
        file.read_exact_at(&mut bytes, entry.start)
            .map_err(|err| self.bad(name, format!("reading {}: {err}", entry.file.display())))?;
        Ok(bytes)
    }

    /// The tensor's bytes, 4 MiB at a time (pieces of an even length).
    fn read_pieces(
        &self,
        name: &str,
        entry: &TensorEntry,
        mut take: impl FnMut(&[u8]),
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        const PIECE: u64 = 4 << 20;
        let file = std::fs::File::open(&entry.file)
            .map_err(|err| EngineError::invalid_file(&entry.file, err))?;
        let mut buffer = vec![0u8; PIECE.min(entry.end - entry.start) as usize];
        let mut at = entry.start;
        while at < entry.end {
            let piece = &mut buffer[..(entry.end - at).min(PIECE) as usize];
            file.read_exact_at(piece, at).map_err(|err| {
                self.bad(name, format!("reading {}: {err}", entry.file.display()))
            })?;
            take(piece);
            at += piece.len() as u64;
        }
        Ok(())
    }

    fn bad(&self, name: &str, what: impl std::fmt::Display) -> EngineError {
        EngineError::invalid_file(
            &self.dir,
            format!("loading weights: tensor `{}{name}`: {what}", self.prefix),
        )
    }
}

fn storage_dtype(entry: &TensorEntry) -> Option<DType> {
    match entry.dtype.as_str() {
        "BF16" => Some(DType::BF16),
        "F16" => Some(DType::F16),
        "F32" => Some(DType::F32),
        _ => None,
    }
}

/// Adds the tensors a safetensors header lists: 8 bytes of little-endian header length, then a
/// JSON object `name → {dtype, shape, data_offsets}` (offsets relative to the header's end).
fn read_header(file: &Path, index: &mut HashMap<String, TensorEntry>) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Info {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: [u64; 2],
    }
    use std::io::Read;
    let bad = |what: String| EngineError::invalid_file(file, format!("loading weights: {what}"));
    let mut f = std::fs::File::open(file).map_err(|err| EngineError::invalid_file(file, err))?;
    let size = f
        .metadata()
        .map_err(|err| EngineError::invalid_file(file, err))?
        .len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|err| bad(format!("not a safetensors file: {err}")))?;
    let len = u64::from_le_bytes(len);
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(bad(format!("header length {len} does not fit the file")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|err| bad(format!("reading the header: {err}")))?;
    let json: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|err| bad(format!("header is not JSON: {err}")))?;
    for (name, info) in json {
        if name == "__metadata__" {
            continue;
        }
        let info: Info = serde_json::from_value(info)
            .map_err(|err| bad(format!("tensor `{name}` in the header: {err}")))?;
        let [start, end] = info.data_offsets;
        let (start, end) = (start + 8 + len, end + 8 + len);
        if start > end || end > size {
            return Err(bad(format!("tensor `{name}` lies outside the file")));
        }
        index.insert(
            name,
            TensorEntry {
                file: file.to_owned(),
                dtype: info.dtype,
                shape: info.shape,
                start,
                end,
            },
        );
    }
    Ok(())
}
