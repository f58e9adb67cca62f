//! A Python dataset as an [`ImageSource`]: the pipeline asks for image `i`, this fetches
//! `dataset[i]` through the package's `_fetch(dataset, i)` (with the GIL, one item at a time)
//! and decodes paths in Rust, without the GIL. Nothing is listed up front: a SimCLR setup
//! reads only its picks, an extraction one batch ahead of the compute.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use fungi::aug::{DecodeOptions, RgbImage};
use fungi::core::Error;
use fungi::ImageSource;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// What `_fetch` hands back for one item.
enum Item {
    /// Packed RGB bytes, width, height (a PIL image, an array or a tensor, converted in Python).
    Rgb(Vec<u8>, u32, u32),
    /// An image file, decoded here.
    Path(PathBuf),
}

/// A map-style Python dataset (`len()` and `[i]`), or a list of images.
pub(crate) struct PySource {
    items: Py<PyAny>,
    fetch: Py<PyAny>,
    len: usize,
    decode: DecodeOptions,
    labels: Mutex<HashMap<usize, i64>>,
    /// The Python exceptions items raised (or a pending signal), each with the message the
    /// pipeline got for it: the one whose message ends the call is re-raised as it was. Items
    /// are read in parallel, so several may have raised before the call ends.
    raised: Mutex<Vec<(String, PyErr)>>,
}

impl PySource {
    /// `fetch(items, i)` returns `(bytes | path, width, height, label | None)`.
    pub(crate) fn new(items: Py<PyAny>, fetch: Py<PyAny>, len: usize) -> Self {
        Self {
            items,
            fetch,
            len,
            decode: DecodeOptions::default(),
            labels: Mutex::new(HashMap::new()),
            raised: Mutex::new(Vec::new()),
        }
    }

    /// Keeps `err` for [`PySource::python_error`] and returns the library error that stands
    /// for it in the pipeline.
    pub(crate) fn stash(&self, what: String, err: PyErr) -> Error {
        let mut raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        raised.push((what.clone(), err));
        Error::Input(what)
    }

    /// The Python exception behind `e`, when the call ended on one an item raised.
    pub(crate) fn python_error(&self, e: &Error) -> Option<PyErr> {
        let mut raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        let msg = e.to_string();
        let at = raised
            .iter()
            .position(|(what, _)| msg.contains(what.as_str()))?;
        Some(raised.swap_remove(at).1)
    }

    /// Labels of positions `0..len` (`None` where the item had none or was not read).
    pub(crate) fn labels(&self, positions: impl Iterator<Item = usize>) -> Vec<Option<i64>> {
        let labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        positions.map(|i| labels.get(&i).copied()).collect()
    }

    fn fetch(&self, i: usize) -> PyResult<(Item, Option<i64>)> {
        Python::with_gil(|py| {
            let got = self.fetch.call1(py, (self.items.clone_ref(py), i))?;
            let (payload, w, h, label): (Bound<'_, PyAny>, u32, u32, Option<i64>) =
                got.extract(py)?;
            let item = match payload.downcast::<PyBytes>() {
                Ok(b) => Item::Rgb(b.as_bytes().to_vec(), w, h),
                Err(_) => Item::Path(payload.extract::<PathBuf>()?),
            };
            Ok((item, label))
        })
    }
}

impl ImageSource for PySource {
    fn len(&self) -> usize {
        self.len
    }

    fn image(&self, i: usize) -> fungi::core::Result<RgbImage> {
        let (item, label) = match self.fetch(i) {
            Ok(got) => got,
            Err(e) => {
                let msg = Python::with_gil(|py| {
                    format!(
                        "{}: {}",
                        e.get_type(py)
                            .name()
                            .map_or_else(|_| "error".into(), |n| n.to_string()),
                        e.value(py)
                    )
                });
                return Err(self.stash(format!("dataset item {i}: {msg}"), e));
            }
        };
        if let Some(l) = label {
            self.labels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(i, l);
        }
        match item {
            Item::Rgb(bytes, w, h) => {
                let n = bytes.len();
                RgbImage::from_raw(w, h, bytes).ok_or_else(|| {
                    Error::Input(format!(
                        "dataset item {i}: {n} bytes for a {w}x{h} RGB image (expected {})",
                        w as u64 * h as u64 * 3
                    ))
                })
            }
            Item::Path(p) => Ok(fungi::aug::decode_rgb(&p, &self.decode)?),
        }
    }

    fn label(&self, i: usize) -> Option<i64> {
        self.labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&i)
            .copied()
    }

    fn name(&self, i: usize) -> String {
        format!("dataset item {i}")
    }
}
