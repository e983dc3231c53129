//! Where the model runs and in which precision, parsed from the strings users write
//! (`"cpu"`, `"cuda:1"`, `"auto"`, `"bf16"`).

use candle_core::{DType, Device};

use crate::error::{EngineError, Result};

/// Opens `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let (kind, ordinal) = match spec.split_once(':') {
        Some((kind, n)) => {
            let n = n.parse::<usize>().map_err(|_| {
                EngineError::invalid(format!(
                    "device {spec:?}: expected an ordinal after ':', e.g. \"cuda:0\""
                ))
            })?;
            (kind, n)
        }
        None => (spec, 0),
    };
    let unavailable = |err: candle_core::Error| {
        EngineError::Unsupported(format!("device {spec:?} is not available: {err}"))
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => Device::new_cuda(ordinal).map_err(unavailable),
        "metal" if cfg!(feature = "metal") => Device::new_metal(ordinal).map_err(unavailable),
        "cuda" | "metal" => Err(EngineError::Unsupported(format!(
            "device {spec:?}: this build of candle-embed has no {kind} support (build with the \
             `{kind}` cargo feature)"
        ))),
        _ => Err(EngineError::invalid(format!(
            "unknown device {spec:?}; expected \"cpu\", \"cuda\", \"cuda:N\", \"metal\" or \"metal:N\""
        ))),
    }
}

/// The compute dtype for `spec` on `device`. `"auto"` is f32 on CPU (exact; candle's CPU matmul
/// has no fast bf16) and bf16 on GPUs.
pub fn parse_dtype(spec: &str, device: &Device) -> Result<DType> {
    let dtype = match spec {
        "auto" => {
            return Ok(if device.is_cuda() {
                DType::BF16
            } else {
                DType::F32
            });
        }
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => {
            return Err(EngineError::invalid(format!(
                "unknown dtype {other:?}; expected \"auto\", \"f32\", \"bf16\" or \"f16\""
            )))
        }
    };
    if device.is_cpu() && dtype != DType::F32 {
        return Err(EngineError::Unsupported(format!(
            "dtype {spec:?} is not supported on CPU yet; use \"f32\" or \"auto\""
        )));
    }
    Ok(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("unknown device"));
        assert!(parse_device("cuda:x")
            .unwrap_err()
            .to_string()
            .contains("ordinal"));
        if !cfg!(feature = "cuda") {
            assert!(parse_device("cuda")
                .unwrap_err()
                .to_string()
                .contains("cargo feature"));
        }
    }

    #[test]
    fn dtypes() {
        assert_eq!(parse_dtype("auto", &Device::Cpu).unwrap(), DType::F32);
        assert_eq!(parse_dtype("float32", &Device::Cpu).unwrap(), DType::F32);
        assert!(parse_dtype("bf16", &Device::Cpu).is_err());
        assert!(parse_dtype("int8", &Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("unknown dtype"));
    }
}
