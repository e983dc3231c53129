//! Where the model runs and in which precision, parsed from the strings users write
//! (`"cpu"`, `"cuda:1"`, `"auto"`, `"bf16"`).

use candle_core::{DType, Device};

use candle_embed_kernels::{Isa, Selection, KERNEL_ENV};

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

/// How the model computes: the dtype, and on CPU which bf16 kernel (if any) does the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compute {
    pub dtype: DType,
    /// `Some` where our CPU decoder ([`crate::cpu`]) runs, on this family's kernels: in bf16 the
    /// family selected, in f32 its f32 loops ([`Isa::for_f32`]). `None` runs candle's own ops
    /// (GPUs; in f32, CPUs without AVX2 or `CANDLE_EMBED_CPU_KERNEL=none`).
    pub cpu_kernel: Option<Isa>,
}

/// The compute dtype for `spec` on `device`. `"auto"` is bf16 on GPUs, and on CPUs with AMX,
/// AVX512-BF16, AVX-512F or AVX2 (our kernels, f32 sums; each at least as close to the f32
/// reference as transformers' bf16 run); f32 on other CPUs and on Metal.
pub fn parse_compute(spec: &str, device: &Device) -> Result<Compute> {
    let candle = |dtype| {
        Ok(Compute {
            dtype,
            cpu_kernel: None,
        })
    };
    let dtype = match spec {
        "auto" if device.is_cpu() => {
            return match cpu_selection()? {
                Selection::Bf16(isa) => Ok(Compute {
                    dtype: DType::BF16,
                    cpu_kernel: Some(isa),
                }),
                Selection::None => candle(DType::F32),
            };
        }
        "auto" => {
            return candle(if device.is_cuda() {
                DType::BF16
            } else {
                DType::F32
            })
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
    if !device.is_cpu() {
        return candle(dtype);
    }
    if dtype == DType::F32 {
        return Ok(Compute {
            dtype,
            cpu_kernel: match cpu_selection()? {
                Selection::Bf16(isa) => Some(isa.for_f32()),
                Selection::None => None,
            },
        });
    }
    if dtype == DType::F16 {
        return Err(EngineError::Unsupported(format!(
            "dtype {spec:?} is not supported on CPU; use \"bf16\", \"f32\" or \"auto\""
        )));
    }
    match cpu_selection()? {
        Selection::Bf16(isa) => Ok(Compute {
            dtype,
            cpu_kernel: Some(isa),
        }),
        Selection::None => Err(EngineError::Unsupported(format!(
            "dtype {spec:?} on CPU needs AMX, AVX512-BF16, AVX-512F or AVX2, which this CPU lacks \
             (or {KERNEL_ENV} is \"none\"); use \"f32\" or \"auto\", or set \
             {KERNEL_ENV}=reference for slow portable bf16"
        ))),
    }
}

fn cpu_selection() -> Result<Selection> {
    candle_embed_kernels::isa::select().map_err(EngineError::invalid)
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
        let cpu = |spec| parse_compute(spec, &Device::Cpu);
        let fast = match candle_embed_kernels::isa::select() {
            Ok(Selection::Bf16(isa)) => Some(isa),
            _ => None,
        };
        let bf16 = fast;
        let auto = cpu("auto").unwrap();
        assert_eq!(auto.cpu_kernel, fast);
        assert_eq!(
            auto.dtype,
            if fast.is_some() {
                DType::BF16
            } else {
                DType::F32
            }
        );
        assert_eq!(
            cpu("float32").unwrap(),
            Compute {
                dtype: DType::F32,
                cpu_kernel: fast.map(Isa::for_f32),
            }
        );
        assert_eq!(cpu("bf16").ok().and_then(|c| c.cpu_kernel), bf16);
        assert!(cpu("f16")
            .unwrap_err()
            .to_string()
            .contains("not supported on CPU"));
        assert!(cpu("int8")
            .unwrap_err()
            .to_string()
            .contains("unknown dtype"));
    }
}
