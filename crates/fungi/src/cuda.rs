//! What a CUDA run needs on this machine, checked before the device is first touched.
//!
//! Burn's CUDA backend (cubecl-cuda over cudarc) loads the driver library (`libcuda`) and NVRTC
//! (`libnvrtc`) at run time, compiles every kernel with NVRTC against the CUDA headers, and
//! creates the device on a thread of its own. When one of them is missing it panics on that
//! thread — or logs a warning and skips the kernel, so later reads return whatever the buffer
//! held. [`preflight`] checks all of it first, from the calling thread, and says what is missing:
//!
//! ```no_run
//! match fungi::cuda::preflight(0) {
//!     Ok(info) => eprintln!("{info}"),
//!     Err(e) => eprintln!("{e}"),   // e.g. names libcuda.so.1 and the dlopen error
//! }
//! ```
//!
//! Nothing here needs the CUDA backend to be compiled in: the checks are `dlopen`/`dlsym` of the
//! same libraries, with the same file names, that cudarc tries.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaInfo {
    /// The driver library that loaded (e.g. `libcuda.so.1`).
    pub driver_library: String,
    /// `cuDriverGetVersion`, e.g. 13000 for CUDA 13.0.
    pub driver_version: i32,
    /// Number of CUDA devices the driver reports.
    pub devices: i32,
    /// The NVRTC library that loaded.
    pub nvrtc_library: String,
    /// The CUDA toolkit folder cubecl-cuda compiles kernels against (`<it>/include`).
    pub cuda_path: PathBuf,
}

impl std::fmt::Display for CudaInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CUDA driver {}.{} ({}), {} device(s), {}, headers in {}",
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10,
            self.driver_library,
            self.devices,
            self.nvrtc_library,
            self.cuda_path.join("include").display()
        )
    }
}

/// Why a CUDA run cannot start here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    /// No NVIDIA driver library could be loaded.
    #[error("CUDA: the NVIDIA driver library libcuda could not be loaded (tried {tried}; {reason}): install the NVIDIA driver, or put the folder holding libcuda.so.1 on LD_LIBRARY_PATH; without a GPU use the CPU (device \"cpu\" / --device flex)")]
    NoDriver {
        /// The file names tried.
        tried: String,
        /// The loader's message for the first name.
        reason: String,
    },
    /// The driver library loaded but lacks an entry point (not a CUDA driver, or a broken one).
    #[error("CUDA: {library} has no symbol {symbol}: not a usable NVIDIA driver library")]
    Symbol {
        /// The library.
        library: String,
        /// The missing function.
        symbol: &'static str,
    },
    /// `cuInit` failed (no GPU, a driver/kernel-module mismatch, ...).
    #[error("CUDA: cuInit failed with {name} (code {code}) from {library}: the driver found no usable GPU")]
    Init {
        /// The driver library.
        library: String,
        /// `CUresult`.
        code: i32,
        /// `cuGetErrorName`.
        name: String,
    },
    /// The device index is past the devices the driver reports.
    #[error("CUDA: device {index} does not exist: the driver reports {count} device(s) (use cuda:0 … cuda:{last})", last = count.saturating_sub(1))]
    NoDevice {
        /// Requested index.
        index: usize,
        /// Devices found.
        count: i32,
    },
    /// NVRTC (the run-time CUDA compiler every kernel goes through) could not be loaded.
    #[error("CUDA: the NVRTC library libnvrtc could not be loaded (tried {tried}; {reason}): cubecl compiles every kernel with it; install the CUDA toolkit's nvrtc (or pip's nvidia-cuda-nvrtc) and put its lib folder on LD_LIBRARY_PATH")]
    NoNvrtc {
        /// The file names tried.
        tried: String,
        /// The loader's message for the first name.
        reason: String,
    },
    /// The CUDA headers that kernels are compiled against were not found.
    #[error("CUDA: no CUDA headers: cubecl compiles kernels against <CUDA>/include/cuda_runtime.h and looked in {looked}: set CUDA_PATH to a CUDA toolkit folder (one holding include/cuda_runtime.h)")]
    NoHeaders {
        /// Where it looked (and what it found there).
        looked: String,
    },
}

/// The driver library names cudarc tries (`libcuda.so`, `libcuda.so.1`, ...), in its order.
const DRIVER_NAMES: &[&str] = &["libcuda.so", "libcuda.so.1"];
/// NVRTC names: cudarc's unversioned and major-versioned names.
const NVRTC_NAMES: &[&str] = &[
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11",
];

/// A library opened with `dlopen` (never closed: cudarc opens the same file again later).
struct Library {
    name: String,
    handle: *mut c_void,
}

fn dlerror_message() -> String {
    // SAFETY: dlerror returns a thread-local, NUL-terminated string or null.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Opens the first of `names` that loads; `Err((tried, first error))` otherwise.
fn open_first(names: &[&str]) -> Result<Library, (String, String)> {
    let mut first_error = None;
    for name in names {
        let c = CString::new(*name).map_err(|e| (name.to_string(), e.to_string()))?;
        // SAFETY: a valid NUL-terminated file name; RTLD_NOW resolves everything at once.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if !handle.is_null() {
            return Ok(Library {
                name: name.to_string(),
                handle,
            });
        }
        let msg = dlerror_message();
        first_error.get_or_insert(msg);
    }
    Err((
        names.join(", "),
        first_error.unwrap_or_else(|| "no names".into()),
    ))
}

impl Library {
    /// The address of `symbol`, or `CudaError::Symbol`.
    fn symbol(&self, symbol: &'static str) -> Result<*mut c_void, CudaError> {
        let c = CString::new(symbol).map_err(|_| CudaError::Symbol {
            library: self.name.clone(),
            symbol,
        })?;
        // SAFETY: a live handle from dlopen and a NUL-terminated name.
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        if p.is_null() {
            Err(CudaError::Symbol {
                library: self.name.clone(),
                symbol,
            })
        } else {
            Ok(p)
        }
    }
}

type CuInit = unsafe extern "C" fn(flags: u32) -> c_int;
type CuIntOut = unsafe extern "C" fn(out: *mut c_int) -> c_int;
type CuGetErrorName = unsafe extern "C" fn(code: c_int, out: *mut *const c_char) -> c_int;

/// The folder cubecl-cuda compiles kernels against, found as cubecl-cuda 0.10 finds it
/// (`$CUDA_PATH`, then `/usr/local/cuda`, `/opt/cuda`, then `/usr` when `/usr/bin/nvcc` exists),
/// and checked for `include/cuda_runtime.h`.
///
/// # Errors
/// [`CudaError::NoHeaders`] naming the folder it would use and what is missing there.
pub fn cuda_headers() -> Result<PathBuf, CudaError> {
    let chosen = match std::env::var_os("CUDA_PATH") {
        Some(p) => Some((PathBuf::from(p), "CUDA_PATH")),
        None => [
            ("/usr/local/cuda", "/usr/local/cuda"),
            ("/opt/cuda", "/opt/cuda"),
        ]
        .iter()
        .find(|(p, _)| Path::new(p).exists())
        .map(|(p, w)| (PathBuf::from(p), *w))
        .or_else(|| {
            Path::new("/usr/bin/nvcc")
                .exists()
                .then(|| (PathBuf::from("/usr"), "/usr (nvcc in /usr/bin)"))
        }),
    };
    match chosen {
        Some((dir, _)) if dir.join("include").join("cuda_runtime.h").is_file() => Ok(dir),
        Some((dir, how)) => Err(CudaError::NoHeaders {
            looked: format!(
                "{} (from {how}), which has no include/cuda_runtime.h",
                dir.display()
            ),
        }),
        None => Err(CudaError::NoHeaders {
            looked: "CUDA_PATH (unset), /usr/local/cuda, /opt/cuda and /usr/bin/nvcc (none exists)"
                .into(),
        }),
    }
}

/// Checks that device `index` can run fungi's CUDA backend: the driver library loads and
/// initialises, the device exists, NVRTC loads and the CUDA headers are there.
///
/// # Errors
/// The first [`CudaError`] met, naming the library, folder or index.
pub fn preflight(index: usize) -> Result<CudaInfo, CudaError> {
    let driver = open_first(DRIVER_NAMES)
        .map_err(|(tried, reason)| CudaError::NoDriver { tried, reason })?;
    // SAFETY: the symbols are the CUDA driver API's, with these C signatures.
    let (init, count, version, error_name) = unsafe {
        (
            std::mem::transmute::<*mut c_void, CuInit>(driver.symbol("cuInit")?),
            std::mem::transmute::<*mut c_void, CuIntOut>(driver.symbol("cuDeviceGetCount")?),
            std::mem::transmute::<*mut c_void, CuIntOut>(driver.symbol("cuDriverGetVersion")?),
            std::mem::transmute::<*mut c_void, CuGetErrorName>(driver.symbol("cuGetErrorName")?),
        )
    };
    let name_of = |code: c_int| -> String {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: cuGetErrorName writes a pointer to a static string (or leaves it null).
        let ok = unsafe { error_name(code, &mut p) } == 0 && !p.is_null();
        if ok {
            // SAFETY: non-null static NUL-terminated string from the driver.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        } else {
            "unknown CUresult".into()
        }
    };
    // SAFETY: cuInit(0) is the documented first call; it may be called more than once.
    let code = unsafe { init(0) };
    if code != 0 {
        return Err(CudaError::Init {
            library: driver.name.clone(),
            code,
            name: name_of(code),
        });
    }
    let mut devices: c_int = 0;
    let mut driver_version: c_int = 0;
    // SAFETY: both write one int.
    let (c1, c2) = unsafe { (count(&mut devices), version(&mut driver_version)) };
    if c1 != 0 || c2 != 0 {
        let code = if c1 != 0 { c1 } else { c2 };
        return Err(CudaError::Init {
            library: driver.name.clone(),
            code,
            name: name_of(code),
        });
    }
    if index >= devices.max(0) as usize {
        return Err(CudaError::NoDevice {
            index,
            count: devices,
        });
    }
    let nvrtc =
        open_first(NVRTC_NAMES).map_err(|(tried, reason)| CudaError::NoNvrtc { tried, reason })?;
    let cuda_path = cuda_headers()?;
    Ok(CudaInfo {
        driver_library: driver.name,
        driver_version,
        devices,
        nvrtc_library: nvrtc.name,
        cuda_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_named_with_the_loader_message() {
        let e = open_first(&["libfungi-does-not-exist.so.7"]).err().unwrap();
        assert_eq!(e.0, "libfungi-does-not-exist.so.7");
        assert!(e.1.contains("libfungi-does-not-exist.so.7"), "{}", e.1);
    }

    #[test]
    fn errors_name_what_is_missing() {
        let e = CudaError::NoDriver {
            tried: DRIVER_NAMES.join(", "),
            reason: "libcuda.so: cannot open shared object file".into(),
        };
        let m = e.to_string();
        assert!(
            m.contains("libcuda.so.1") && m.contains("cannot open"),
            "{m}"
        );
        let m = CudaError::NoDevice { index: 2, count: 1 }.to_string();
        assert!(m.contains("device 2") && m.contains("1 device"), "{m}");
    }

    #[test]
    fn cuda_path_without_headers_is_named() {
        let dir = tempfile::tempdir().unwrap();
        // The only test that sets CUDA_PATH (the preflight test above stops at the driver on
        // machines without one, and reads it only after the driver checks on GPU machines).
        std::env::set_var("CUDA_PATH", dir.path());
        let m = cuda_headers().unwrap_err().to_string();
        assert!(
            m.contains(&dir.path().display().to_string()) && m.contains("CUDA_PATH"),
            "{m}"
        );
        std::fs::create_dir_all(dir.path().join("include")).unwrap();
        std::fs::write(dir.path().join("include/cuda_runtime.h"), "").unwrap();
        assert_eq!(cuda_headers().unwrap(), dir.path());
        std::env::remove_var("CUDA_PATH");
    }

    /// On a machine without the NVIDIA driver (CI), the preflight is an error naming libcuda.
    #[test]
    fn without_a_driver_the_preflight_names_libcuda() {
        if open_first(DRIVER_NAMES).is_ok() {
            return; // a GPU machine: nothing to prove here
        }
        let m = preflight(0).unwrap_err().to_string();
        assert!(m.contains("libcuda"), "{m}");
    }
}
