//! Damaged model directories, many of them: safetensors files cut short or with bytes changed in
//! the header or the data, config.json with every field given a value of the wrong type or an
//! absurd size, tokenizer.json cut short or with its sections replaced. Loading (and, where a
//! load succeeds, embedding a text) must end in `Ok` or an `Err` that names the file; never a
//! panic, and never an abort from an allocation sized by a hostile number.
//!
//! The mutations come from fixed-seed generators (fastrand), so a failure names a case that
//! reproduces.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_embed_engine::{Embedder, EmbedderOptions, EmbeddingRequest};
use serde_json::{json, Value};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/models/gqa-bf16"
);

/// A copy of the fixture model in a temporary directory.
fn copy_of_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(FIXTURE).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// Loads `dir` and embeds one text; a panic fails the test with `case` named.
fn load_and_embed(dir: &Path, case: &str) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let embedder = Embedder::load(&EmbedderOptions::new(dir.to_string_lossy()))
            .map_err(|e| e.to_string())?;
        embedder
            .embed(&EmbeddingRequest::new("a damaged model file"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{case}: panicked: {message}")
        }
    }
}

#[test]
fn the_undamaged_copy_loads_and_embeds() {
    // Without this, every other test here would pass on a harness that can load nothing.
    let dir = copy_of_fixture();
    load_and_embed(dir.path(), "undamaged").unwrap();
}

fn write_json(path: &PathBuf, value: &Value) {
    fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// Values of the wrong type, or of the right type and a size nothing should allocate.
fn hostile_values() -> Vec<Value> {
    vec![
        json!(null),
        json!("64"),
        json!(-1),
        json!(0),
        json!(1.5),
        json!(true),
        json!([]),
        json!({}),
        json!(1_u64 << 40),
        json!(u64::MAX),
        json!(1e300),
    ]
}

#[test]
fn config_fields_of_the_wrong_type_or_size_are_refused_or_harmless() {
    let dir = copy_of_fixture();
    let path = dir.path().join("config.json");
    let original: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let keys: Vec<String> = original.as_object().unwrap().keys().cloned().collect();
    for key in &keys {
        for value in hostile_values() {
            let mut config = original.clone();
            config[key.as_str()] = value.clone();
            write_json(&path, &config);
            let case = format!("config.json {key} = {value}");
            if let Err(message) = load_and_embed(dir.path(), &case) {
                assert!(!message.is_empty(), "{case}");
            }
        }
    }
    // The whole file of the wrong shape.
    for value in [json!([]), json!("config"), json!(null), json!(7)] {
        write_json(&path, &value);
        let err = load_and_embed(dir.path(), "config.json not an object").unwrap_err();
        assert!(err.contains("config.json"), "{err}");
    }
}

#[test]
fn safetensors_cut_short_or_altered_are_refused_or_harmless() {
    let dir = copy_of_fixture();
    let path = dir.path().join("model.safetensors");
    let original = fs::read(&path).unwrap();
    let header_len =
        usize::try_from(u64::from_le_bytes(original[..8].try_into().unwrap())).unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut cuts = vec![
        0,
        1,
        7,
        8,
        9,
        8 + header_len / 2,
        8 + header_len,
        original.len() - 1,
    ];
    cuts.extend((0..24).map(|_| rng.usize(..original.len())));
    for cut in cuts {
        fs::write(&path, &original[..cut]).unwrap();
        let err = load_and_embed(dir.path(), &format!("model.safetensors cut at {cut}"))
            .expect_err("a cut file must be refused");
        assert!(!err.is_empty());
    }
    // The header's length field: zero, past the end, enormous.
    for len in [0_u64, original.len() as u64, 1 << 40, u64::MAX] {
        let mut bytes = original.clone();
        bytes[..8].copy_from_slice(&len.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        load_and_embed(dir.path(), &format!("header length {len}")).expect_err("refused");
    }
    // Bytes changed in the header (names, dtypes, shapes, offsets) or in the data.
    for round in 0..48 {
        let mut bytes = original.clone();
        let in_header = round % 2 == 0;
        for _ in 0..=rng.usize(..4) {
            let at = if in_header {
                8 + rng.usize(..header_len)
            } else {
                8 + header_len + rng.usize(..original.len() - 8 - header_len)
            };
            bytes[at] = rng.u8(..);
        }
        fs::write(&path, &bytes).unwrap();
        let where_ = if in_header { "header" } else { "data" };
        let _ = load_and_embed(
            dir.path(),
            &format!("model.safetensors {where_} round {round}"),
        );
    }
}

#[test]
fn tokenizer_json_cut_short_or_with_sections_replaced_is_refused_or_harmless() {
    let dir = copy_of_fixture();
    let path = dir.path().join("tokenizer.json");
    let original = fs::read(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(2);
    for _ in 0..16 {
        let cut = rng.usize(..original.len());
        fs::write(&path, &original[..cut]).unwrap();
        load_and_embed(dir.path(), &format!("tokenizer.json cut at {cut}"))
            .expect_err("a cut tokenizer.json must be refused");
    }
    let parsed: Value = serde_json::from_slice(&original).unwrap();
    for key in parsed.as_object().unwrap().keys() {
        for value in hostile_values() {
            let mut tokenizer = parsed.clone();
            tokenizer[key.as_str()] = value.clone();
            write_json(&path, &tokenizer);
            let _ = load_and_embed(dir.path(), &format!("tokenizer.json {key} = {value}"));
        }
    }
    fs::write(&path, &original).unwrap();
    let config_path = dir.path().join("tokenizer_config.json");
    let config: Value = serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    for key in config.as_object().unwrap().keys() {
        for value in hostile_values() {
            let mut changed = config.clone();
            changed[key.as_str()] = value.clone();
            write_json(&config_path, &changed);
            let _ = load_and_embed(
                dir.path(),
                &format!("tokenizer_config.json {key} = {value}"),
            );
        }
    }
}
