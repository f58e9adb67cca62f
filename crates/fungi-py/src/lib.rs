//! `fungi_rs._fungi_rs`: the native half of the Python package `fungi_rs`.
//!
//! The Python side (`python/fungi_rs/__init__.py`) turns PIL images / arrays into RGB bytes,
//! configs into JSON, and bytes back into numpy arrays; this side holds a
//! [`FungiExtractor`](fungi::core::FungiExtractor) on the CPU backend and runs every call with
//! the GIL released; `eval.rs` holds the functions behind `fungi_rs.eval` (the evaluation
//! protocols of `fungi-eval`). Errors become `FileNotFoundError` (a missing file anywhere in the
//! cause chain) or `ValueError` (everything else, with the library's message naming the key,
//! file or value); a Rust panic becomes `RuntimeError` and never unwinds into the interpreter.
#![warn(missing_docs)]

mod eval;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

use fungi::aug::RgbImage;
use fungi::backbone::{Precision, Vit, VitConfig};
use fungi::core::FungiExtractor;
use fungi::{FungiConfig, ObjectiveConfig};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

type B = burn::backend::Autodiff<burn::backend::Flex>;

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

/// RGB images from `(bytes, width, height)` triples.
fn images(items: Vec<(Vec<u8>, u32, u32)>) -> PyResult<Vec<RgbImage>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, (b, w, h))| {
            let n = b.len();
            RgbImage::from_raw(w, h, b).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "image {i}: {n} bytes for {w}x{h} RGB (expected {})",
                    w as u64 * h as u64 * 3
                ))
            })
        })
        .collect()
}

/// The native extractor behind `fungi_rs.FUNGIWrapper`.
#[pyclass(module = "fungi_rs._fungi_rs")]
struct Extractor {
    ex: Mutex<FungiExtractor<B>>,
}

/// The extractor; a panic in an earlier call (already reported as `RuntimeError`) does not
/// make it unusable.
fn lock(ex: &Mutex<FungiExtractor<B>>) -> std::sync::MutexGuard<'_, FungiExtractor<B>> {
    ex.lock().unwrap_or_else(|p| p.into_inner())
}

#[pymethods]
impl Extractor {
    /// `Extractor(weights, arch, target_layer, device, use_fp16, objectives_json, seed,
    /// batch_size)`.
    #[new]
    #[pyo3(signature = (weights, arch, target_layer, device, use_fp16, objectives_json, seed, batch_size))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        weights: PathBuf,
        arch: String,
        target_layer: Option<String>,
        device: String,
        use_fp16: bool,
        objectives_json: String,
        seed: u64,
        batch_size: usize,
    ) -> PyResult<Self> {
        if device != "cpu" {
            return Err(PyValueError::new_err(format!(
                "device {device:?}: this build of fungi_rs has the CPU backend only (\"cpu\")"
            )));
        }
        if use_fp16 {
            return Err(PyValueError::new_err(
                "use_fp16=True: half precision runs on GPUs; the CPU backend computes in f32 (use_fp16=False)",
            ));
        }
        if !weights.exists() {
            return Err(PyFileNotFoundError::new_err(format!(
                "weights file {} does not exist",
                weights.display()
            )));
        }
        let objectives: Vec<ObjectiveConfig> = serde_json::from_str(&objectives_json)
            .map_err(|e| PyValueError::new_err(format!("extractor_configs: {e}")))?;
        let mut cfg = FungiConfig::preset(fungi::Preset::Fungivision);
        cfg.objectives = objectives;
        cfg.extractor.seed = seed;
        cfg.extractor.batch_size = batch_size;
        cfg.extractor.target_layer = target_layer;
        // fungivision's wrapper returns the objectives' blocks only.
        cfg.extractor.include_embedding = false;
        let text = serde_json::to_string(&cfg).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let cfg = FungiConfig::parse(&text, "extractor_configs.json").map_err(|e| py_err(&e))?;
        let ex = guarded(py, move || {
            let arch = VitConfig::from_preset_or_file(&arch)?;
            let vit = Vit::<B>::from_file(&arch, &weights, &Default::default())?;
            let mut ex = cfg.build(vit)?;
            ex.set_prefix_precision(Precision::F32)?;
            Ok(ex)
        })?;
        Ok(Self { ex: Mutex::new(ex) })
    }

    /// Runs every objective's setup on training images `[(bytes, w, h)]`.
    fn setup(&self, py: Python<'_>, train: Vec<(Vec<u8>, u32, u32)>) -> PyResult<()> {
        let imgs = images(train)?;
        let ex = &self.ex;
        guarded(py, move || {
            let mut ex = lock(ex);
            let load = |i: usize| Ok(imgs[i].clone());
            ex.setup(imgs.len(), &load)
        })
    }

    /// Features of images whose dataset indices are `indices`: `(bytes of f32, rows, cols)`.
    fn extract<'py>(
        &self,
        py: Python<'py>,
        imgs: Vec<(Vec<u8>, u32, u32)>,
        indices: Vec<u64>,
    ) -> PyResult<(Bound<'py, PyBytes>, usize, usize)> {
        let imgs = images(imgs)?;
        let ex = &self.ex;
        let (f, d) = guarded(py, move || {
            let ex = lock(ex);
            Ok((ex.extract(&imgs, &indices)?, ex.feature_dim()))
        })?;
        let rows = f.len() / d.max(1);
        Ok((PyBytes::new(py, &f32_bytes(&f)), rows, d))
    }

    /// Eval-transform CLS embeddings, not normalised: `(bytes of f32, rows, cols)`.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        imgs: Vec<(Vec<u8>, u32, u32)>,
    ) -> PyResult<(Bound<'py, PyBytes>, usize, usize)> {
        let imgs = images(imgs)?;
        let n = imgs.len();
        let ex = &self.ex;
        let f = guarded(py, move || {
            let ex = lock(ex);
            ex.raw_embeddings(&imgs)
        })?;
        let d = f.len().checked_div(n).unwrap_or(0);
        Ok((PyBytes::new(py, &f32_bytes(&f)), n, d))
    }

    /// Saves the state (the CLI's state format).
    fn save_state(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let ex = &self.ex;
        guarded(py, move || lock(ex).save_state(&path))
    }

    /// Loads a state (all or nothing: on an error nothing changes).
    fn load_state(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let ex = &self.ex;
        guarded(py, move || lock(ex).load_state(&path))
    }

    /// Width of a feature row.
    #[getter]
    fn feature_dim(&self) -> usize {
        lock(&self.ex).feature_dim()
    }

    /// Block names in column order.
    #[getter]
    fn block_names(&self) -> Vec<String> {
        lock(&self.ex).block_names()
    }

    /// Batch size (images per pass).
    #[getter]
    fn batch_size(&self) -> usize {
        lock(&self.ex).config().batch_size
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The native module.
#[pymodule]
fn _fungi_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Extractor>()?;
    eval::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
