//! `fungi_rs._fungi_rs.Extractor`: the library's facade ([`Engine`]) behind
//! `fungi_rs.FUNGIWrapper`. Every call runs with the GIL released; datasets are read item by
//! item through [`PySource`]; feature rows reach numpy without a copy (the array owns the
//! Rust buffer).

use std::path::PathBuf;
use std::sync::Mutex;

use fungi::core::Error;
use fungi::{FungiConfig, ObjectiveConfig, OnError, Stream};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::common::{call_progress, lock, model, on_error, stream_err, Collected, Skipped};
use crate::engine::{with_slot, DeviceKind, Engine};
use crate::source::PySource;
use crate::{guarded, guarded_with, py_err};

/// The native extractor behind `fungi_rs.FUNGIWrapper`.
#[pyclass(module = "fungi_rs._fungi_rs")]
pub(crate) struct Extractor {
    engine: Mutex<Engine>,
    device: String,
}

/// What `extract` returns: features `[rows, D]`, global index per row, label per row, and the
/// skipped `(position, why)`.
type Extracted<'py> = (
    Bound<'py, PyArray2<f32>>,
    Vec<u64>,
    Vec<Option<i64>>,
    Vec<(usize, String)>,
);

#[pymethods]
impl Extractor {
    /// `Extractor(arch, objectives, *, weights=None, tensors=None, source_name=None,
    /// target_layer=None, device="cpu", use_fp16=False, seed=0, batch_size=16)`.
    #[new]
    #[pyo3(signature = (arch, objectives, *, weights=None, tensors=None, source_name=None,
        target_layer=None, device="cpu", use_fp16=false, seed=0, batch_size=16))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        arch: &Bound<'_, PyAny>,
        objectives: &Bound<'_, PyAny>,
        weights: Option<PathBuf>,
        tensors: Option<Vec<(String, Bound<'_, PyAny>)>>,
        source_name: Option<String>,
        target_layer: Option<String>,
        device: &str,
        use_fp16: bool,
        seed: u64,
        batch_size: usize,
    ) -> PyResult<Self> {
        let kind = DeviceKind::parse(device).map_err(PyValueError::new_err)?;
        let (arch, weights) = model(arch, weights, tensors, source_name)?;
        let objectives: Vec<ObjectiveConfig> = pythonize::depythonize(objectives)
            .map_err(|e| PyValueError::new_err(format!("extractor_configs: {e}")))?;
        let mut cfg = FungiConfig::preset(fungi::Preset::Fungivision);
        cfg.objectives = objectives;
        cfg.extractor.seed = seed;
        cfg.extractor.batch_size = batch_size;
        cfg.extractor.target_layer = target_layer;
        // fungivision's wrapper returns the objectives' blocks only.
        cfg.extractor.include_embedding = false;
        let engine = guarded_with(
            py,
            move || Engine::start(kind, &arch, weights, cfg, use_fp16),
            PyErr::from,
        )?;
        Ok(Self {
            engine: Mutex::new(engine),
            device: kind.name(),
        })
    }

    /// Runs the objectives' setup on a map-style dataset of `length` items read through
    /// `fetch(dataset, i)`; returns the skipped `(index, why)` under `on_error="skip"`.
    #[pyo3(signature = (dataset, fetch, length, on_error="fail", progress=None))]
    fn setup(
        &self,
        py: Python<'_>,
        dataset: PyObject,
        fetch: PyObject,
        length: usize,
        on_error: &str,
        progress: Option<PyObject>,
    ) -> PyResult<Vec<(usize, String)>> {
        let skip_all = self::on_error(on_error)? == OnError::Skip;
        let src = PySource::new(dataset, fetch, length);
        let skipped = Skipped::default();
        let report = |stage: &str, done: usize, total: usize| {
            call_progress(progress.as_ref(), (stage, done, total));
        };
        let skip = |i: usize, e: &Error| skipped.push(i, e);
        let engine = &self.engine;
        let r = guarded_with(
            py,
            || {
                with_slot!(&mut *lock(engine), s => s.setup(
                    &src,
                    Some(&report),
                    skip_all.then_some(&skip as _),
                ))
            },
            |e| stream_err(&src, e),
        );
        r.map(|()| skipped.into_vec())
    }

    /// Features of the `length` items of `items` (read through `fetch`), in batches of
    /// `batch_size` (default: the extractor's), item `p` keyed by `indices[p]` (default `p`).
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
        let global = indices.unwrap_or_else(|| (0..length as u64).collect());
        let src = PySource::new(items, fetch, length);
        let engine = &self.engine;
        let report = |n: usize| call_progress(progress.as_ref(), (n,));
        let run = || -> Result<_, Error> {
            let mut engine = lock(engine);
            let (bs, dim) = with_slot!(&*engine, s => {
                let x = s.extractor()?;
                (x.config().batch_size, x.feature_dim())
            });
            let stream = Stream::all(length, batch_size.unwrap_or(bs))
                .global_indices(&global)
                .on_error(policy)
                .progress(&report);
            let mut rows = Collected::with_capacity(length * dim);
            with_slot!(&mut *engine, s => s.stream(&src, stream, |batch| rows.take(&src, batch)))?;
            Ok((rows, dim))
        };
        let (rows, dim) = guarded_with(py, run, |e| stream_err(&src, e))?;
        let (data, idx, labels, skipped) = rows.finish(&src);
        let array = PyArray1::from_vec(py, data).reshape([idx.len(), dim])?;
        Ok((array, idx, labels, skipped))
    }

    /// Eval-transform CLS embeddings `[N, E]`, not normalised (no setup needed).
    fn embed<'py>(
        &self,
        py: Python<'py>,
        items: PyObject,
        fetch: PyObject,
        length: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let src = PySource::new(items, fetch, length);
        let engine = &self.engine;
        let f = guarded_with(
            py,
            || with_slot!(&*lock(engine), s => s.embed(&src)),
            |e| stream_err(&src, e),
        )?;
        let d = f.len().checked_div(length).unwrap_or(0);
        PyArray1::from_vec(py, f).reshape([length, d])
    }

    /// Saves the state (the CLI's state format).
    fn save_state(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let engine = &self.engine;
        guarded(
            py,
            move || with_slot!(&mut *lock(engine), s => s.save_state(&path)),
        )
    }

    /// Loads a state (all or nothing: on an error nothing changes).
    fn load_state(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let engine = &self.engine;
        guarded(
            py,
            move || with_slot!(&mut *lock(engine), s => s.load_state(&path)),
        )
    }

    /// Width of a feature row.
    #[getter]
    fn feature_dim(&self) -> PyResult<usize> {
        with_slot!(&*lock(&self.engine), s => Ok(s.extractor().map_err(|e| py_err(&e))?.feature_dim()))
    }

    /// Block names in column order.
    #[getter]
    fn block_names(&self) -> PyResult<Vec<String>> {
        with_slot!(&*lock(&self.engine), s => Ok(s.extractor().map_err(|e| py_err(&e))?.block_names()))
    }

    /// Images per pass.
    #[getter]
    fn batch_size(&self) -> PyResult<usize> {
        with_slot!(&*lock(&self.engine), s => Ok(s.extractor().map_err(|e| py_err(&e))?.config().batch_size))
    }

    /// The device (`cpu`, `cuda:N`).
    #[getter]
    fn device(&self) -> String {
        self.device.clone()
    }
}

/// The cached path of a preset's release weights, downloaded on first use through the same
/// cache and downloader as `fungi fetch`.
#[pyfunction]
#[pyo3(signature = (name, cache_dir=None, mirror=None, progress=true))]
pub(crate) fn fetch_weights(
    py: Python<'_>,
    name: &str,
    cache_dir: Option<PathBuf>,
    mirror: Option<String>,
    progress: bool,
) -> PyResult<PathBuf> {
    let preset = fungi::backbone::presets::find(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown weights {name:?}: expected one of {}",
            fungi::backbone::presets::names().join(", ")
        ))
    })?;
    let entry = preset.entry();
    guarded_with(
        py,
        move || -> Result<PathBuf, fungi::hub::Error> {
            let hub = match cache_dir {
                Some(d) => fungi::hub::Hub::new(d).with_env_sources(),
                None => fungi::hub::Hub::from_env()?,
            }
            .with_progress(progress);
            let hub = match mirror {
                Some(m) => hub.with_mirror(Some(m)),
                None => hub,
            };
            hub.fetch(&entry)
        },
        |e| py_err(&e),
    )
}
