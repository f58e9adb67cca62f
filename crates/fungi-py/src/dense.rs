//! `fungi_rs._fungi_rs.Dense`: the dense FUNGI extractor ([`DenseExtractor`], the library code
//! of `fungi dense`) behind `fungi_rs.DenseFUNGI`. The support bank is built from a Python
//! dataset read item by item ([`PySource`]), dense features stream through the library's one
//! pipeline ([`fungi::dense::stream`], as `fungi dense` runs it), every call with the GIL
//! released; feature blocks `[N, P, E+K]` reach numpy without a copy.

use std::path::PathBuf;
use std::sync::Mutex;

use fungi::backbone::{AutodiffVitOps, VitConfig};
use fungi::core::Error;
use fungi::dense::{DenseExtractor, DenseSettings};
use fungi::{ImageSource, OnError, Stream};
use numpy::{PyArray1, PyArray3, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::common::{
    call_progress, check_signals, lock, model, on_error, stream_err, Collected, Skipped,
};
use crate::engine::{DeviceKind, FlexB, StartError, Weights};
use crate::source::PySource;
use crate::{guarded, guarded_with, py_err};

#[cfg(feature = "cuda")]
use crate::engine::CudaB;

/// The message of a call that needs the support bank before one exists.
const NO_SUPPORT: &str = "DenseFUNGI has no support bank yet: call setup(support_images) \
    (the images whose patch tokens give each token its negatives) or load_state(path) / pass \
    state= (a state saved by save_state or `fungi dense --save-state`) first";

/// The dense extractor on one backend (boxed: the backends' extractors differ in size).
pub(crate) enum DenseEngine {
    /// flex (CPU).
    Cpu(Box<DenseExtractor<FlexB>>),
    /// CUDA.
    #[cfg(feature = "cuda")]
    Cuda(Box<DenseExtractor<CudaB>>),
}

/// Runs `$body` with `$ex` bound to the engine's [`DenseExtractor`], whatever its backend.
macro_rules! with_dense {
    ($engine:expr, $ex:ident => $body:expr) => {
        match $engine {
            DenseEngine::Cpu($ex) => $body,
            #[cfg(feature = "cuda")]
            DenseEngine::Cuda($ex) => $body,
        }
    };
}

/// Loads the backbone on `device`, builds the extractor and loads `state` when given.
fn build<B: AutodiffVitOps>(
    device: &B::Device,
    arch: &VitConfig,
    weights: Weights,
    settings: DenseSettings,
    state: Option<&std::path::Path>,
) -> fungi::core::Result<DenseExtractor<B>> {
    let mut ex = DenseExtractor::new(weights.load(arch, device)?, settings)?;
    if let Some(p) = state {
        ex.load_state(p)?;
    }
    Ok(ex)
}

impl DenseEngine {
    /// The extractor on `device`: flex, or CUDA after the driver / NVRTC / headers preflight.
    fn start(
        device: DeviceKind,
        arch: &VitConfig,
        weights: Weights,
        settings: DenseSettings,
        state: Option<PathBuf>,
    ) -> Result<Self, StartError> {
        match device {
            DeviceKind::Cpu => Ok(Self::Cpu(Box::new(build(
                &Default::default(),
                arch,
                weights,
                settings,
                state.as_deref(),
            )?))),
            DeviceKind::Cuda(index) => Self::start_cuda(index, arch, weights, settings, state),
        }
    }

    #[cfg(feature = "cuda")]
    fn start_cuda(
        index: usize,
        arch: &VitConfig,
        weights: Weights,
        settings: DenseSettings,
        state: Option<PathBuf>,
    ) -> Result<Self, StartError> {
        let device = StartError::cuda_device(index)?;
        Ok(Self::Cuda(Box::new(build(
            &device,
            arch,
            weights,
            settings,
            state.as_deref(),
        )?)))
    }

    #[cfg(not(feature = "cuda"))]
    fn start_cuda(
        index: usize,
        _arch: &VitConfig,
        _weights: Weights,
        _settings: DenseSettings,
        _state: Option<PathBuf>,
    ) -> Result<Self, StartError> {
        Err(StartError::no_cuda(index))
    }
}

/// The settings: a dict (read by serde, unknown keys refused by name) or a TOML / JSON file.
fn settings(
    config: Option<&Bound<'_, PyAny>>,
    config_path: Option<PathBuf>,
    batch_size: Option<usize>,
) -> PyResult<DenseSettings> {
    let mut s = match (config, config_path) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "config: pass a dict or a file, not both",
            ))
        }
        (Some(c), None) => pythonize::depythonize::<DenseSettings>(c)
            .map_err(|e| PyValueError::new_err(format!("config: {e}")))?,
        (None, Some(p)) => DenseSettings::from_file(&p).map_err(|e| py_err(&e))?,
        (None, None) => DenseSettings::default(),
    };
    if let Some(bs) = batch_size {
        s.batch_size = bs;
    }
    s.validate()
        .map_err(|e| PyValueError::new_err(format!("config: {e}")))?;
    Ok(s)
}

/// What `extract` returns: features `[rows, P, E+K]`, global index per row, label per row, and
/// the skipped `(position, why)`.
type Extracted<'py> = (
    Bound<'py, PyArray3<f32>>,
    Vec<u64>,
    Vec<Option<i64>>,
    Vec<(usize, String)>,
);

/// The native dense extractor behind `fungi_rs.DenseFUNGI`.
#[pyclass(module = "fungi_rs._fungi_rs")]
pub(crate) struct Dense {
    engine: Mutex<DenseEngine>,
    device: String,
}

impl Dense {
    /// Fails with [`NO_SUPPORT`] unless a support bank is set.
    fn check_ready(&self) -> PyResult<()> {
        let ready = with_dense!(&*lock(&self.engine), ex => ex.ready().is_ok());
        if ready {
            Ok(())
        } else {
            Err(PyValueError::new_err(NO_SUPPORT))
        }
    }
}

#[pymethods]
impl Dense {
    /// `Dense(arch, *, weights=None, tensors=None, source_name=None, config=None,
    /// config_path=None, state=None, device="cpu", batch_size=None)`.
    #[new]
    #[pyo3(signature = (arch, *, weights=None, tensors=None, source_name=None, config=None,
        config_path=None, state=None, device="cpu", batch_size=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        arch: &Bound<'_, PyAny>,
        weights: Option<PathBuf>,
        tensors: Option<Vec<(String, Bound<'_, PyAny>)>>,
        source_name: Option<String>,
        config: Option<&Bound<'_, PyAny>>,
        config_path: Option<PathBuf>,
        state: Option<PathBuf>,
        device: &str,
        batch_size: Option<usize>,
    ) -> PyResult<Self> {
        let kind = DeviceKind::parse(device).map_err(PyValueError::new_err)?;
        let (arch, weights) = model(arch, weights, tensors, source_name)?;
        let settings = settings(config, config_path, batch_size)?;
        let engine = guarded_with(
            py,
            move || DenseEngine::start(kind, &arch, weights, settings, state),
            PyErr::from,
        )?;
        Ok(Self {
            engine: Mutex::new(engine),
            device: kind.name(),
        })
    }

    /// Builds the support bank from the `length` items of `dataset` (read through
    /// `fetch(dataset, i)`); returns the bank's rows and the skipped `(index, why)` under
    /// `on_error="skip"`. On an error the previous bank (if any) is kept.
    #[pyo3(signature = (dataset, fetch, length, on_error="fail", progress=None))]
    fn setup(
        &self,
        py: Python<'_>,
        dataset: PyObject,
        fetch: PyObject,
        length: usize,
        on_error: &str,
        progress: Option<PyObject>,
    ) -> PyResult<(usize, Vec<(usize, String)>)> {
        let skip_all = self::on_error(on_error)? == OnError::Skip;
        if length == 0 {
            return Err(PyValueError::new_err(
                "setup: the support set is empty (an empty support bank has no negatives: pass \
                 at least one image)",
            ));
        }
        let src = PySource::new(dataset, fetch, length);
        let skipped = Skipped::default();
        let report = |done: usize, total: usize| call_progress(progress.as_ref(), (done, total));
        let skip = |i: usize, e: &Error| skipped.push(i, e);
        let load = |i: usize| src.image(i);
        let engine = &self.engine;
        let rows = guarded_with(
            py,
            || {
                with_dense!(&mut *lock(engine), ex => ex.build_support(
                    length,
                    &load,
                    Some(&report),
                    skip_all.then_some(&skip as _),
                ))
            },
            |e| stream_err(&src, e),
        )?;
        Ok((rows, skipped.into_vec()))
    }

    /// Dense features of the `length` items of `items` (read through `fetch`), in batches of
    /// `batch_size` (default: the settings'), item `p` keyed by `indices[p]` (default `p`).
    #[pyo3(signature = (items, fetch, length, indices=None, on_error="fail", progress=None,
        batch_size=None))]
    #[allow(clippy::too_many_arguments)]
    fn extract<'py>(
        &self,
        py: Python<'py>,
        items: PyObject,
        fetch: PyObject,
        length: usize,
        indices: Option<Vec<u64>>,
        on_error: &str,
        progress: Option<PyObject>,
        batch_size: Option<usize>,
    ) -> PyResult<Extracted<'py>> {
        let policy = self::on_error(on_error)?;
        if batch_size == Some(0) {
            return Err(PyValueError::new_err(
                "batch_size: expected a positive integer, found 0",
            ));
        }
        let global = indices.unwrap_or_else(|| (0..length as u64).collect());
        if global.len() != length {
            return Err(PyValueError::new_err(format!(
                "indices: {} for {length} images",
                global.len()
            )));
        }
        self.check_ready()?;
        let src = PySource::new(items, fetch, length);
        let engine = &self.engine;
        let report = |n: usize| call_progress(progress.as_ref(), (n,));
        let run = || -> Result<_, Error> {
            let mut engine = lock(engine);
            with_dense!(&mut *engine, ex => {
                let own = ex.settings().batch_size;
                let bs = batch_size.unwrap_or(own);
                ex.set_batch_size(bs)?;
                let (p, d) = (ex.patches(), ex.feature_dim());
                let stream = Stream::all(length, bs)
                    .global_indices(&global)
                    .on_error(policy)
                    .progress(&report);
                let mut rows = Collected::with_capacity(length * p * d);
                let r = fungi::dense::stream(&**ex, &src, stream, |batch| rows.take(&src, batch));
                ex.set_batch_size(own)?;
                r?;
                Ok((rows, p, d))
            })
        };
        let (rows, p, d) = guarded_with(py, run, |e| stream_err(&src, e))?;
        let (data, idx, labels, skipped) = rows.finish(&src);
        let array = PyArray1::from_vec(py, data).reshape([idx.len(), p, d])?;
        Ok((array, idx, labels, skipped))
    }

    /// The L2-normalised patch tokens `[N, P, E]` of the `length` items (the embedding
    /// baseline; no support bank needed), in batches of `batch_size` (default: the settings').
    #[pyo3(signature = (items, fetch, length, batch_size=None))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        items: PyObject,
        fetch: PyObject,
        length: usize,
        batch_size: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray3<f32>>> {
        if batch_size == Some(0) {
            return Err(PyValueError::new_err(
                "batch_size: expected a positive integer, found 0",
            ));
        }
        let src = PySource::new(items, fetch, length);
        let engine = &self.engine;
        let run = || -> Result<_, Error> {
            with_dense!(&*lock(engine), ex => {
                let bs = batch_size.unwrap_or(ex.settings().batch_size);
                let (p, e) = (ex.patches(), ex.width());
                let mut out = Vec::with_capacity(length * p * e);
                for start in (0..length).step_by(bs) {
                    check_signals(&src)?;
                    let imgs = (start..(start + bs).min(length))
                        .map(|i| src.image(i))
                        .collect::<Result<Vec<_>, Error>>()?;
                    out.extend(ex.patch_tokens(&imgs)?);
                }
                Ok((out, p, e))
            })
        };
        let (data, p, e) = guarded_with(py, run, |err| stream_err(&src, err))?;
        PyArray1::from_vec(py, data).reshape([length, p, e])
    }

    /// Saves projection, head and support bank (the state of `fungi dense --save-state`).
    fn save_state(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        self.check_ready()?;
        let engine = &self.engine;
        guarded(
            py,
            move || with_dense!(&*lock(engine), ex => ex.save_state(&path)),
        )
    }

    /// Loads a state (all or nothing: on an error nothing changes).
    fn load_state(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let engine = &self.engine;
        guarded(
            py,
            move || with_dense!(&mut *lock(engine), ex => ex.load_state(&path)),
        )
    }

    /// Patch tokens per image `P`.
    #[getter]
    fn patches(&self) -> usize {
        with_dense!(&*lock(&self.engine), ex => ex.patches())
    }

    /// Width of a patch feature, `E + K`.
    #[getter]
    fn feature_dim(&self) -> usize {
        with_dense!(&*lock(&self.engine), ex => ex.feature_dim())
    }

    /// Token size `E`.
    #[getter]
    fn embed_dim(&self) -> usize {
        with_dense!(&*lock(&self.engine), ex => ex.width())
    }

    /// Projection size `K`.
    #[getter]
    fn projection_dim(&self) -> usize {
        with_dense!(&*lock(&self.engine), ex => ex.projection().out_dim())
    }

    /// The patch grid `(rows, columns)` of `image_size`.
    #[getter]
    fn grid(&self) -> (usize, usize) {
        with_dense!(&*lock(&self.engine), ex => {
            let g = ex.settings().dense.image_size / ex.engine().inner().config.patch_size.max(1);
            (g, g)
        })
    }

    /// Rows of the support bank, `None` before one is set.
    #[getter]
    fn support_size(&self) -> Option<usize> {
        with_dense!(&*lock(&self.engine), ex => ex.support().map(|s| s.shape[0]))
    }

    /// The target layer (canonical name).
    #[getter]
    fn target_layer(&self) -> String {
        with_dense!(&*lock(&self.engine), ex => ex.engine().target().to_string())
    }

    /// Images per pass.
    #[getter]
    fn batch_size(&self) -> usize {
        with_dense!(&*lock(&self.engine), ex => ex.settings().batch_size)
    }

    /// The settings as a dict (the keys of a `dense.toml`).
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = with_dense!(&*lock(&self.engine), ex => ex.settings().clone());
        pythonize::pythonize(py, &s).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// The device (`cpu`, `cuda:N`).
    #[getter]
    fn device(&self) -> String {
        self.device.clone()
    }
}

/// The preset names (`fungi fetch --list`): a weights argument that is one of them and no
/// file is fetched into the cache, implying its architecture.
#[pyfunction]
pub(crate) fn preset_names() -> Vec<&'static str> {
    fungi::backbone::presets::names()
}
