//! `fungi_rs._fungi_rs`: the native half of the Python package `fungi_rs`.
//!
//! The Python side (`python/fungi_rs/__init__.py`) reads torch modules (`_torch.py`) and turns
//! one dataset item into RGB bytes or a path (`_fetch`, in `_common.py`); this side holds the
//! library's facade on the chosen device (`engine.rs`: flex, or CUDA when built with it), reads
//! datasets item by item through the one pipeline (`source.rs`) and hands feature rows to numpy
//! without a copy (`extractor.rs`; `dense.rs` the same for dense FUNGI, `fungi_rs.DenseFUNGI`;
//! `common.rs` what the two share), every call with the GIL released; `eval.rs` holds the
//! functions behind
//! `fungi_rs.eval` (the evaluation protocols of `fungi-eval`). Errors become `FileNotFoundError` (a missing file anywhere in the
//! cause chain) or `ValueError` (everything else, with the library's message naming the key,
//! file or value); a Rust panic becomes `RuntimeError` and never unwinds into the interpreter.
#![warn(missing_docs)]

mod common;
mod dense;
mod engine;
mod eval;
mod extractor;
mod source;

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// A library error as the matching Python exception.
fn py_err(e: &(dyn std::error::Error + 'static)) -> PyErr {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                return PyFileNotFoundError::new_err(e.to_string());
            }
        }
        cur = c.source();
    }
    PyValueError::new_err(e.to_string())
}

/// Runs `f` with the GIL released, turning errors and panics into Python exceptions.
fn guarded<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, fungi::core::Error> + Send,
) -> PyResult<T> {
    guarded_with(py, f, |e| py_err(&e))
}

/// [`guarded`] for any error type, turned into a Python exception by `to_py` (with the GIL).
fn guarded_with<T: Send, E: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, E> + Send,
    to_py: impl FnOnce(E) -> PyErr,
) -> PyResult<T> {
    py.allow_threads(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            PyRuntimeError::new_err(format!(
                "internal error in fungi-rs (please report it): {msg}"
            ))
        })?
        .map_err(to_py)
}

/// The native module.
#[pymodule]
fn _fungi_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<extractor::Extractor>()?;
    m.add_class::<dense::Dense>()?;
    m.add_function(wrap_pyfunction!(dense::preset_names, m)?)?;
    m.add_function(wrap_pyfunction!(extractor::fetch_weights, m)?)?;
    m.add("HAS_CUDA", cfg!(feature = "cuda"))?;
    eval::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
