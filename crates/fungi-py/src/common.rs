//! What `Extractor` (`extractor.rs`) and `Dense` (`dense.rs`) share: their model arguments
//! (architecture, weights file or in-memory state dict), the `on_error` policy, the start and
//! item errors as Python exceptions, the engine lock, the progress callback, the Ctrl-C check
//! and what collects a setup's skipped items and a stream's rows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use fungi::backbone::{RawTensor, StateDict, VitConfig};
use fungi::core::Error;
use fungi::{OnError, Rows};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::engine::{StartError, Weights};
use crate::py_err;
use crate::source::PySource;

/// What `m` guards (an engine, a list); a panic in an earlier call (already reported as
/// `RuntimeError`) does not make it unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The architecture and the weights of the model arguments `arch`, `weights` (a file) /
/// `tensors` (a state dict, exactly one of the two) and `source_name` (the model's name in
/// messages, default "the model").
pub(crate) fn model(
    arch: &Bound<'_, PyAny>,
    weights: Option<PathBuf>,
    tensors: Option<Vec<(String, Bound<'_, PyAny>)>>,
    source_name: Option<String>,
) -> PyResult<(VitConfig, Weights)> {
    let source = source_name.unwrap_or_else(|| "the model".into());
    let arch = architecture(arch, &source)?;
    let weights = match (weights, tensors) {
        (Some(p), None) => Weights::File(p),
        (None, Some(t)) => Weights::Tensors(state_dict(t, &source)?),
        _ => {
            return Err(PyValueError::new_err(
                "exactly one of weights (a file) and tensors (a state dict) is needed",
            ))
        }
    };
    Ok((arch, weights))
}

/// The architecture: a preset name or JSON file, or a dict (a torch module's description).
fn architecture(arch: &Bound<'_, PyAny>, source: &str) -> PyResult<VitConfig> {
    if let Ok(name) = arch.extract::<String>() {
        return VitConfig::from_preset_or_file(&name).map_err(|e| py_err(&e));
    }
    let value: serde_json::Value = pythonize::depythonize(arch)
        .map_err(|e| PyValueError::new_err(format!("architecture of {source}: {e}")))?;
    VitConfig::from_json_str(&value.to_string(), Some(source)).map_err(|e| py_err(&e))
}

/// A state dict handed over as `[(key, float32 numpy array)]` (one copy, no file).
fn state_dict(tensors: Vec<(String, Bound<'_, PyAny>)>, source: &str) -> PyResult<StateDict> {
    let mut out = BTreeMap::new();
    for (key, obj) in tensors {
        let arr = obj.downcast::<PyArrayDyn<f32>>().map_err(|_| {
            PyValueError::new_err(format!(
                "{source}: state dict tensor {key:?}: expected a float32 numpy array, found {}",
                obj.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        let shape = arr.shape().to_vec();
        let data = arr.to_vec().map_err(|e| {
            PyValueError::new_err(format!("{source}: state dict tensor {key:?}: {e}"))
        })?;
        out.insert(
            key,
            RawTensor {
                shape,
                data: Ok(data),
            },
        );
    }
    Ok(StateDict {
        path: PathBuf::from(source),
        tensors: out,
    })
}

/// An engine that could not start: the device (driver, build) as `RuntimeError`, a library
/// error (weights, settings) as `ValueError` / `FileNotFoundError`.
impl From<StartError> for PyErr {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Device(msg) => PyRuntimeError::new_err(msg),
            StartError::Library(e) => py_err(&e),
        }
    }
}

/// The `on_error` argument: `"fail"` or `"skip"`.
pub(crate) fn on_error(s: &str) -> PyResult<OnError> {
    match s {
        "fail" => Ok(OnError::Fail),
        "skip" => Ok(OnError::Skip),
        other => Err(PyValueError::new_err(format!(
            "on_error={other:?}: expected \"fail\" or \"skip\""
        ))),
    }
}

/// The Python exception an item raised, else the library error as a Python exception.
pub(crate) fn stream_err(src: &PySource, e: Error) -> PyErr {
    src.python_error(&e).unwrap_or_else(|| py_err(&e))
}

/// Calls the Python progress callback, when there is one, with `args` (with the GIL; what it
/// raises is ignored).
pub(crate) fn call_progress<A>(progress: Option<&PyObject>, args: A)
where
    A: for<'py> IntoPyObject<'py, Target = PyTuple>,
{
    if let Some(cb) = progress {
        Python::with_gil(|py| {
            let _ = cb.call1(py, args);
        });
    }
}

/// A pending Ctrl-C (checked between batches) as the error that ends the call; `src` re-raises
/// it as `KeyboardInterrupt`.
pub(crate) fn check_signals(src: &PySource) -> Result<(), Error> {
    Python::with_gil(|py| py.check_signals()).map_err(|e| src.stash("interrupted".into(), e))
}

/// The `(index, why)` of the items a setup skipped (its skip callback may run on any thread).
#[derive(Default)]
pub(crate) struct Skipped(Mutex<Vec<(usize, String)>>);

impl Skipped {
    /// Notes item `i`, left out for `e`.
    pub(crate) fn push(&self, i: usize, e: &Error) {
        lock(&self.0).push((i, e.to_string()));
    }

    /// The skipped items, in the order they were noted.
    pub(crate) fn into_vec(self) -> Vec<(usize, String)> {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rows of a stream, batch by batch: features (row-major), the global index of each row,
/// the source positions kept (for their labels) and the skipped `(position, why)`.
pub(crate) struct Collected {
    features: Vec<f32>,
    indices: Vec<u64>,
    kept: Vec<usize>,
    skipped: Vec<(usize, String)>,
}

impl Collected {
    /// Room for `values` feature values.
    pub(crate) fn with_capacity(values: usize) -> Self {
        Self {
            features: Vec::with_capacity(values),
            indices: Vec::new(),
            kept: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// The stream's sink: keeps one batch's rows, after a check for Ctrl-C (what was computed
    /// is handed back with the error).
    pub(crate) fn take(&mut self, src: &PySource, rows: Rows) -> Result<(), Error> {
        check_signals(src)?;
        self.features.extend(rows.features);
        self.indices.extend(rows.indices);
        let gone: Vec<usize> = rows.skipped.iter().map(|(p, _)| *p).collect();
        self.kept.extend(rows.range.filter(|p| !gone.contains(p)));
        self.skipped
            .extend(rows.skipped.into_iter().map(|(p, e)| (p, e.to_string())));
        Ok(())
    }

    /// The features, the global index and the label (as `src` read it) of each row, and the
    /// skipped `(position, why)`.
    pub(crate) fn finish(self, src: &PySource) -> Streamed {
        let labels = src.labels(self.kept.into_iter());
        (self.features, self.indices, labels, self.skipped)
    }
}

/// What [`Collected::finish`] returns: features, global indices, labels, skipped items.
pub(crate) type Streamed = (Vec<f32>, Vec<u64>, Vec<Option<i64>>, Vec<(usize, String)>);
