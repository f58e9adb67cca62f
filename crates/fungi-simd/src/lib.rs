//! # fungi-simd
//!
//! [`multiversion!`] compiles one function three times — AVX-512, AVX2+FMA and the baseline
//! target — and picks the best at run time. Loops inside it are auto-vectorised for the chosen
//! instruction set, and `f32::mul_add` becomes a single FMA instruction instead of a call into
//! libm's software `fmaf` (what the baseline x86-64 target compiles it to). The result of
//! `mul_add` is the correctly rounded fused multiply-add on every path, so bit-exact code stays
//! bit-exact on every x86 CPU.
#![warn(missing_docs)]

/// Defines `fn $name(args)` compiled three times — AVX-512, AVX2+FMA and the baseline target —
/// and dispatched on the CPU's features at run time (detection is cached by `std`).
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn v4($($arg: $ty),*) $body
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $body
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `v3` is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            fn generic($($arg: $ty),*) $body
            generic($($arg),*)
        }
    };
}

/// The CPU's half-precision matrix-multiply instructions, detected at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HalfGemmFeatures {
    /// AVX512-BF16 (`vdpbf16ps`: Zen 4, Zen 5, Cooper Lake and later Xeons).
    pub avx512_bf16: bool,
    /// AMX-BF16 tiles (Sapphire Rapids and later Xeons).
    pub amx_bf16: bool,
    /// AVX512-FP16 (Sapphire Rapids and later).
    pub avx512_fp16: bool,
}

impl HalfGemmFeatures {
    /// What this CPU has.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            Self {
                avx512_bf16: std::arch::is_x86_feature_detected!("avx512bf16"),
                // (std's AMX detection is unstable: the kernel's flag list says it on Linux.)
                amx_bf16: cpuinfo_flag("amx_bf16"),
                avx512_fp16: std::arch::is_x86_feature_detected!("avx512fp16"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self::default()
    }
    /// The names of the features present, e.g. `["avx512_bf16"]` (empty when none).
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.avx512_bf16, "avx512_bf16"),
            (self.amx_bf16, "amx_bf16"),
            (self.avx512_fp16, "avx512_fp16"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect()
    }
}

/// Whether Linux's `/proc/cpuinfo` lists `flag` (false elsewhere or when unreadable).
#[cfg(target_arch = "x86_64")]
fn cpuinfo_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|text| {
        text.lines()
            .filter(|l| l.starts_with("flags"))
            .take(1)
            .any(|l| l.split_whitespace().any(|f| f == flag))
    })
}
