//! Which bf16 instructions this CPU can run, chosen once per process.
//!
//! AMX is read from CPUID leaf 7 and XCR0 (std's feature macro for it is not stable), then Linux is
//! asked for the tile state with `arch_prctl(ARCH_REQ_XCOMP_PERM)`: without that permission the
//! first tile instruction kills the process. `CANDLE_EMBED_CPU_KERNEL` forces a choice
//! (`amx`, `avx512bf16`, `avx512`, `avx2`, `reference`, `none`), for tests and side-by-side
//! comparisons.
//!
//! Every family's vectors are at least as close to the f32 reference as transformers' own bf16
//! run (the parity suite checks each one the CPU can run), so `dtype="auto"` takes the fastest
//! the CPU has: AMX, then AVX512-BF16, then AVX-512F, then AVX2 — except on Intel cores, where
//! AVX-512F comes before AVX512-BF16 (`ranking`).

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces a kernel.
pub const KERNEL_ENV: &str = "CANDLE_EMBED_CPU_KERNEL";

/// A family of bf16 GEMM / attention kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Intel AMX tiles (`tdpbf16ps`), with AVX512-BF16 for rows too few to fill a tile.
    Amx,
    /// AVX512-BF16 dot products (`vdpbf16ps`).
    Avx512Bf16,
    /// AVX-512F without bf16 instructions (Skylake to Cascade Lake and Ice Lake Xeons), and
    /// Intel CPUs whose AVX512-BF16 is slower than it (`ranking`): bf16 widened to f32 in
    /// 512-bit registers, f32 fused multiply-adds.
    Avx512,
    /// AVX2 and FMA: bf16 widened to f32 in registers (a shift), f32 fused multiply-adds. For x86
    /// CPUs with none of the above (most laptops, AMD Zen 2/3).
    Avx2,
    /// Portable scalar code doing the same arithmetic (bf16 inputs, f32 sums); slow, for tests and
    /// for CPUs with none of the above, when forced.
    Reference,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Amx => "amx",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Reference => "reference",
        }
    }

    /// The family whose f32 loop serves `dtype="f32"` where this one is chosen: the widened
    /// loops take f32 weights as they are, and every CPU with AMX or AVX512-BF16 has AVX-512F.
    #[must_use]
    pub fn for_f32(self) -> Isa {
        match self {
            Isa::Amx | Isa::Avx512Bf16 => Isa::Avx512,
            other => other,
        }
    }

    /// Whether this CPU (and OS) can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Amx => amx_ready(),
            Isa::Avx512Bf16 => avx512bf16_available(),
            Isa::Avx512 => avx512_available(),
            Isa::Avx2 => avx2_available(),
            Isa::Reference => true,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The code that runs a kernel family's loops, as GEMM and attention dispatch on it: the
/// [`Isa`] chosen, or, in tests, a family's loops on a software model of its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Amx,
    /// The AMX loops on the software tile model (slow; tests only).
    #[cfg(test)]
    SoftAmx,
    Avx512Bf16,
    /// The AVX512-BF16 GEMM loop on a 16-lane software model of `vdpbf16ps` (tests only).
    #[cfg(test)]
    SoftAvx512Bf16,
    Avx512,
    /// The AVX-512F GEMM loop on a 16-lane software model (tests only).
    #[cfg(test)]
    SoftAvx512,
    Avx2,
    /// The AVX2 GEMM loop on an 8-lane software model (tests only).
    #[cfg(test)]
    SoftAvx2,
    Reference,
}

impl From<Isa> for Kernel {
    fn from(isa: Isa) -> Self {
        match isa {
            Isa::Amx => Self::Amx,
            Isa::Avx512Bf16 => Self::Avx512Bf16,
            Isa::Avx512 => Self::Avx512,
            Isa::Avx2 => Self::Avx2,
            Isa::Reference => Self::Reference,
        }
    }
}

impl Kernel {
    /// The kernel of `isa`, which this CPU must run; `caller` names the entry point in the panic.
    pub(crate) fn supported(isa: Isa, caller: &str) -> Self {
        assert!(
            isa.is_supported(),
            "{caller}: the {isa} kernel cannot run on this CPU"
        );
        Self::from(isa)
    }
}

/// What the environment asked for and what the hardware offers, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// A bf16 kernel to use.
    Bf16(Isa),
    /// No fast bf16 here (or `none` was forced): compute in f32.
    None,
}

/// The kernel for `dtype="auto"` and `dtype="bf16"`, honouring `CANDLE_EMBED_CPU_KERNEL`: the
/// fastest this CPU has ([`best`]); `Err` names a forced kernel the CPU cannot run, or a value
/// that is not a kernel name.
pub fn select() -> Result<Selection, String> {
    let forced = std::env::var(KERNEL_ENV).ok();
    select_from(forced.as_deref(), best())
}

fn select_from(forced: Option<&str>, unforced: Option<Isa>) -> Result<Selection, String> {
    let isa = match forced.map(str::trim) {
        None | Some("" | "auto") => return Ok(unforced.map_or(Selection::None, Selection::Bf16)),
        Some("none" | "f32") => return Ok(Selection::None),
        Some("amx") => Isa::Amx,
        Some("avx512bf16") => Isa::Avx512Bf16,
        Some("avx512") => Isa::Avx512,
        Some("avx2") => Isa::Avx2,
        Some("reference") => Isa::Reference,
        Some(other) => {
            return Err(format!(
                "{KERNEL_ENV}={other:?} is not a kernel; expected \"auto\", \"amx\", \
                 \"avx512bf16\", \"avx512\", \"avx2\", \"reference\" or \"none\""
            ))
        }
    };
    if isa.is_supported() {
        Ok(Selection::Bf16(isa))
    } else {
        Err(format!(
            "{KERNEL_ENV}={} asks for a kernel this CPU cannot run",
            isa.name()
        ))
    }
}

/// The fastest supported kernel other than the portable reference, if any.
pub fn best() -> Option<Isa> {
    ranking(intel()).into_iter().find(|isa| isa.is_supported())
}

/// The kernel families, fastest first. Intel's cores issue `vdpbf16ps` at half the rate of
/// 512-bit f32 FMAs (`examples/peak` on a Xeon 5th gen: 80–86 against 160–174 GFLOP/s on one
/// core), so there the widened `avx512` GEMM outruns the `avx512bf16` one (`gemm_gflops`, both
/// cores: 200–237 against 127–149 GFLOP/s at the 0.6B shapes). That decides `auto` on an Intel
/// CPU with AVX512-BF16 but no usable AMX: Cooper Lake (unmeasured), or a Sapphire Rapids or
/// later whose tiles a hypervisor hides or an older kernel does not grant. AMD Zen 4 and 5 run
/// `vdpbf16ps` at full rate: on Zen 4 `avx512bf16` was 2.2× forced `avx512` end to end.
fn ranking(intel: bool) -> [Isa; 4] {
    if intel {
        [Isa::Amx, Isa::Avx512, Isa::Avx512Bf16, Isa::Avx2]
    } else {
        [Isa::Amx, Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2]
    }
}

/// Whether CPUID names the vendor GenuineIntel.
#[cfg(target_arch = "x86_64")]
fn intel() -> bool {
    let leaf0 = std::arch::x86_64::__cpuid(0);
    [leaf0.ebx, leaf0.edx, leaf0.ecx]
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .eq(*b"GenuineIntel")
}

#[cfg(not(target_arch = "x86_64"))]
fn intel() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512bf16_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx512bf16_available() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && avx2_available()
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx512_available() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx2_available() -> bool {
    false
}

/// AMX-BF16 present, enabled by the OS, and granted to this process. Asked once.
pub(crate) fn amx_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| amx_in_cpu() && request_tile_permission() && avx512bf16_available())
}

#[cfg(target_arch = "x86_64")]
fn amx_in_cpu() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    const AMX_BF16: u32 = 1 << 22;
    const AMX_TILE: u32 = 1 << 24;
    const OSXSAVE: u32 = 1 << 27;
    // XTILECFG (bit 17) and XTILEDATA (bit 18) of XCR0: the OS saves tile state.
    const XCR0_TILES: u64 = (1 << 17) | (1 << 18);

    if __cpuid(0).eax < 7 {
        return false;
    }
    let leaf7 = __cpuid_count(7, 0);
    if leaf7.edx & (AMX_BF16 | AMX_TILE) != AMX_BF16 | AMX_TILE {
        return false;
    }
    if __cpuid(1).ecx & OSXSAVE == 0 {
        return false;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled and reading XCR0 (index 0) cannot fault.
    let xcr0 = unsafe { xgetbv0() };
    xcr0 & XCR0_TILES == XCR0_TILES
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

#[cfg(not(target_arch = "x86_64"))]
fn amx_in_cpu() -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes an integer feature number and touches no
    // user memory; on kernels without it the call fails with an error code, it does not fault.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tile_permission() -> bool {
    // Other systems either grant tile state by default or do not support AMX; without a way to
    // tell, stay off AMX.
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_choices() {
        assert_eq!(select_from(Some("none"), best()), Ok(Selection::None));
        assert_eq!(
            select_from(Some("reference"), best()),
            Ok(Selection::Bf16(Isa::Reference))
        );
        let err = select_from(Some("sse9"), best()).unwrap_err();
        assert!(err.contains("\"sse9\" is not a kernel"), "{err}");
        for isa in [Isa::Amx, Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2] {
            let got = select_from(Some(isa.name()), best());
            if isa.is_supported() {
                assert_eq!(got, Ok(Selection::Bf16(isa)));
            } else {
                assert!(got.unwrap_err().contains("cannot run"));
            }
        }
    }

    #[test]
    fn auto_takes_the_fastest_family_the_cpu_has() {
        let auto = select_from(None, best()).unwrap();
        match best() {
            Some(isa) => assert_eq!(auto, Selection::Bf16(isa)),
            None => assert_eq!(auto, Selection::None),
        }
        let expected = if amx_ready() {
            Some(Isa::Amx)
        } else if avx512_available() && intel() {
            Some(Isa::Avx512)
        } else if avx512bf16_available() {
            Some(Isa::Avx512Bf16)
        } else if avx512_available() {
            Some(Isa::Avx512)
        } else if avx2_available() {
            Some(Isa::Avx2)
        } else {
            None
        };
        assert_eq!(best(), expected);
    }

    /// Detection agrees with what /proc says the CPU has (the machines that build this project
    /// have had AMX, and have been AMD Zen 3 with AVX2 only), or a fast path silently goes unused.
    /// Under an emulated CPU, whose flags /proc does not show, `CANDLE_EMBED_TEST_CPUINFO` names
    /// a file that describes it (`scripts/emulated_cpu.sh`).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn detection_agrees_with_proc_cpuinfo() {
        let path =
            std::env::var("CANDLE_EMBED_TEST_CPUINFO").unwrap_or_else(|_| "/proc/cpuinfo".into());
        let Ok(cpuinfo) = std::fs::read_to_string(path) else {
            return;
        };
        let flags = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap_or("");
        let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
        let vendor = cpuinfo.lines().find(|l| l.starts_with("vendor_id"));
        assert_eq!(vendor.is_some_and(|l| l.ends_with("GenuineIntel")), intel());
        assert_eq!(has("avx512_bf16"), avx512bf16_available());
        assert_eq!(has("avx2") && has("fma"), avx2_available());
        assert_eq!(
            has("avx512f") && has("avx2") && has("fma"),
            avx512_available()
        );
        assert_eq!(
            has("amx_bf16") && has("amx_tile") && has("avx512_bf16"),
            amx_ready()
        );
    }
}
