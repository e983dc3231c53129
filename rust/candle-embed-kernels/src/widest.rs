//! The row-wise steps (RMSNorm, RoPE, SiLU, rounding to bf16) are portable Rust that the
//! compiler vectorizes; [`widest!`] compiles each once more for AVX-512F and for AVX2 and calls
//! the widest the CPU has: built for the baseline x86-64 alone, they would run 4 lanes of SSE2
//! on every CPU. Rust never fuses a multiply and an add by itself, so every width gives the same
//! bits.

/// The vector widths the row-wise steps are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    Portable,
    Avx2,
    Avx512,
}

impl Width {
    /// The widest this CPU runs.
    #[inline]
    pub(crate) fn detect() -> Self {
        if crate::isa::avx512_available() {
            Self::Avx512
        } else if crate::isa::avx2_available() {
            Self::Avx2
        } else {
            Self::Portable
        }
    }

    /// Every width this CPU runs, for tests that hold them to the portable code.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let mut all = vec![Self::Portable];
        if crate::isa::avx2_available() {
            all.push(Self::Avx2);
        }
        if crate::isa::avx512_available() {
            all.push(Self::Avx512);
        }
        all
    }
}

/// `fn $name(width: Width, args…)`: the `#[inline(always)]` function `$body` (same arguments)
/// compiled at each [`Width`], run at `width`, which must be one this CPU has (see
/// [`Width::detect`]); the portable code where it is not.
macro_rules! widest {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $body:path;) => {
        $(#[$doc])*
        $vis fn $name(width: $crate::widest::Width, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match width {
                    $crate::widest::Width::Avx512 if $crate::isa::avx512_available() => {
                        // SAFETY: the CPU has AVX-512F (checked in the pattern's guard).
                        return unsafe { avx512($($arg),*) };
                    }
                    $crate::widest::Width::Avx2 if $crate::isa::avx2_available() => {
                        // SAFETY: the CPU has AVX2 (checked in the pattern's guard).
                        return unsafe { avx2($($arg),*) };
                    }
                    _ => {}
                }
            }
            let _ = width;
            $body($($arg),*)
        }
    };
}

pub(crate) use widest;
