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
