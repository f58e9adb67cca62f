//! The native half of `fungi_rs.eval`: the paper's evaluation protocols (`fungi-eval`) on one
//! feature matrix per set of rows.
//!
//! The Python side (`python/fungi_rs/eval.py`) checks shapes and label counts and passes every
//! matrix as `(little-endian float64 bytes, rows, cols)` and every label vector as
//! little-endian int64 bytes; results come back as JSON text (serde's `f64` output round-trips
//! exactly through Python's `float`). Every computation runs with the GIL released. Errors are
//! `ValueError`s whose message starts with the argument at fault (`train: ...`).

use fungi_eval::{
    evaluate, evaluate_linear_probe, retrieval_map, ClassificationBlock, EvalError, GroundTruth,
    KnnSettings, Matrix, ProbeSettings, RetrievalBlock, Subset, Validation,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::wrap_pyfunction;

use crate::guarded_with;

/// The kNN search's backend (the wheel's CPU backend).
type Knn = burn::backend::Flex;

/// Name of the single block every matrix is evaluated as.
const BLOCK: &str = "features";

/// A matrix from `(bytes, rows, cols)`; an error naming `arg` unless the bytes hold exactly
/// `rows * cols` float64 values.
fn matrix(arg: &str, m: &(Bound<'_, PyBytes>, usize, usize)) -> PyResult<Matrix> {
    let (bytes, rows, cols) = (m.0.as_bytes(), m.1, m.2);
    let want = rows.checked_mul(cols).and_then(|n| n.checked_mul(8));
    if want != Some(bytes.len()) {
        return Err(PyValueError::new_err(format!(
            "{arg}: {} bytes for a {rows} x {cols} float64 matrix",
            bytes.len()
        )));
    }
    let data = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Matrix::new(rows, cols, data).map_err(|e| PyValueError::new_err(format!("{arg}: {e}")))
}

/// Labels from little-endian int64 bytes; an error naming `arg` on a length that is not a
/// multiple of 8.
fn labels(arg: &str, b: &Bound<'_, PyBytes>) -> PyResult<Vec<i64>> {
    let bytes = b.as_bytes();
    if bytes.len() % 8 != 0 {
        return Err(PyValueError::new_err(format!(
            "{arg}: {} bytes are not a whole number of int64 labels",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// The argument a library error is about, given the names of the arguments of the call
/// (`val` is `None` when no validation set was given: the held-out rows are then train's).
fn argument(e: &EvalError, val: Option<&'static str>) -> Option<&'static str> {
    match e {
        EvalError::ZeroK => return Some("k"),
        EvalError::ZeroPcaDim | EvalError::PcaShape { .. } | EvalError::Eigen { .. } => {
            return Some("pca")
        }
        EvalError::ZeroFewShot | EvalError::EmptyFewShot { .. } => return Some("few_shot"),
        EvalError::WidthMismatch { .. } => return Some("test"),
        EvalError::BadLambda { .. } | EvalError::NoLambdas => return Some("lambdas"),
        EvalError::GndIndex { .. }
        | EvalError::NoPositives { .. }
        | EvalError::GndFile { .. }
        | EvalError::GndField { .. } => return Some("gnd"),
        _ => {}
    }
    Some(match e.subset()? {
        Subset::Train => "train",
        Subset::Validation => val.unwrap_or("train (its held-out 20 %, as no val was given)"),
        Subset::Test => "test",
        Subset::Queries => "queries",
        Subset::Database => "db",
    })
}

/// A library error as a `ValueError` starting with the argument at fault.
fn value_error(e: EvalError, val: Option<&'static str>) -> PyErr {
    match argument(&e, val) {
        Some(arg) => PyValueError::new_err(format!("{arg}: {e}")),
        None => PyValueError::new_err(e.to_string()),
    }
}

/// JSON text of a result (serialisation of plain numbers and strings cannot fail).
fn json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// kNN predictions of `test` (the protocol with one block: rows L2-normalised, PCA fitted on
/// train, Euclidean k nearest, majority vote with ties to the smallest label).
#[pyfunction]
#[pyo3(signature = (train, train_labels, test, k, pca, few_shot))]
fn eval_knn(
    py: Python<'_>,
    train: (Bound<'_, PyBytes>, usize, usize),
    train_labels: Bound<'_, PyBytes>,
    test: (Bound<'_, PyBytes>, usize, usize),
    k: usize,
    pca: Option<usize>,
    few_shot: Option<usize>,
) -> PyResult<Vec<i64>> {
    let block = ClassificationBlock {
        name: BLOCK.into(),
        train: matrix("train", &train)?,
        test: matrix("test", &test)?,
    };
    let train_labels = labels("train_labels", &train_labels)?;
    // The protocol scores the predictions; the placeholders' score is not used.
    let placeholders = vec![0; block.test.rows];
    let s = KnnSettings {
        k,
        pca_dim: pca,
        few_shot,
    };
    let r = guarded_with(
        py,
        move || {
            evaluate::<Knn>(
                &[block],
                &train_labels,
                &placeholders,
                &s,
                &Default::default(),
            )
        },
        |e| value_error(e, None),
    )?;
    r.into_iter()
        .next()
        .map(|r| r.predictions)
        .ok_or_else(|| PyValueError::new_err("no result"))
}

/// The linear probe with one block; returns the library's `ProbeResult` as JSON.
#[pyfunction]
#[pyo3(signature = (train, train_labels, test, test_labels, val, val_labels, pca, lambdas, few_shot))]
#[allow(clippy::too_many_arguments)]
fn eval_linear_probe(
    py: Python<'_>,
    train: (Bound<'_, PyBytes>, usize, usize),
    train_labels: Bound<'_, PyBytes>,
    test: (Bound<'_, PyBytes>, usize, usize),
    test_labels: Option<Bound<'_, PyBytes>>,
    val: Option<(Bound<'_, PyBytes>, usize, usize)>,
    val_labels: Option<Bound<'_, PyBytes>>,
    pca: Option<usize>,
    lambdas: Option<Vec<f64>>,
    few_shot: Option<usize>,
) -> PyResult<String> {
    let block = ClassificationBlock {
        name: BLOCK.into(),
        train: matrix("train", &train)?,
        test: matrix("test", &test)?,
    };
    let train_labels = labels("train_labels", &train_labels)?;
    let test_labels = match &test_labels {
        Some(t) => labels("test_labels", t)?,
        None => vec![0; block.test.rows],
    };
    let validation = match (&val, &val_labels) {
        (Some(v), Some(l)) => Some(Validation {
            blocks: vec![matrix("val", v)?],
            labels: labels("val_labels", l)?,
        }),
        (None, None) => None,
        (Some(_), None) => return Err(PyValueError::new_err("val_labels: missing (val given)")),
        (None, Some(_)) => return Err(PyValueError::new_err("val: missing (val_labels given)")),
    };
    let mut s = ProbeSettings {
        pca_dim: pca,
        few_shot,
        ..ProbeSettings::default()
    };
    if let Some(l) = lambdas {
        s.lambdas = l;
    }
    let has_val = validation.is_some();
    let r = guarded_with(
        py,
        move || {
            evaluate_linear_probe(
                &[block],
                &train_labels,
                &test_labels,
                validation.as_ref(),
                &s,
            )
        },
        |e| value_error(e, has_val.then_some("val")),
    )?;
    json(
        &r.first()
            .ok_or_else(|| PyValueError::new_err("no result"))?,
    )
}

/// Revisited retrieval with one block; `gnd` is a file (`gnd_path`) or JSON text (`gnd_json`).
/// Returns the library's `RetrievalResult` as JSON.
#[pyfunction]
#[pyo3(signature = (db, queries, gnd_path, gnd_json, pca))]
fn eval_retrieval_map(
    py: Python<'_>,
    db: (Bound<'_, PyBytes>, usize, usize),
    queries: (Bound<'_, PyBytes>, usize, usize),
    gnd_path: Option<std::path::PathBuf>,
    gnd_json: Option<String>,
    pca: Option<usize>,
) -> PyResult<String> {
    let block = RetrievalBlock {
        name: BLOCK.into(),
        database: matrix("db", &db)?,
        queries: matrix("queries", &queries)?,
    };
    let r = guarded_with(
        py,
        move || {
            let gt = match (gnd_path, gnd_json) {
                (Some(p), _) => GroundTruth::load(&p),
                (None, Some(text)) => GroundTruth::from_json_str(&text, "gnd"),
                (None, None) => return Err(PyValueError::new_err("gnd: no ground truth given")),
            }
            .map_err(|e| value_error(e, None))?;
            for (arg, rows, list, n) in [
                ("db", block.database.rows, "imlist", gt.imlist.len()),
                ("queries", block.queries.rows, "qimlist", gt.qimlist.len()),
            ] {
                if rows != n {
                    return Err(PyValueError::new_err(format!(
                        "{arg}: {rows} rows but gnd's {list} has {n} images (expected one row per image, in that order)"
                    )));
                }
            }
            retrieval_map(&[block], &gt.gnd, pca).map_err(|e| value_error(e, None))
        },
        |e| e,
    )?;
    json(
        &r.first()
            .ok_or_else(|| PyValueError::new_err("no result"))?,
    )
}

/// The probe's default candidate `λ` (`fungi_eval::default_lambdas`).
/// `(bytes, n, a, b)`: a little-endian array of `n × a × b` values of `width` bytes.
type Array3<'py> = (Bound<'py, PyBytes>, usize, usize, usize);

fn array3<T>(
    arg: &str,
    a: &Array3<'_>,
    width: usize,
    read: impl Fn(&[u8]) -> T,
) -> PyResult<Vec<T>> {
    let bytes = a.0.as_bytes();
    let want =
        a.1.checked_mul(a.2)
            .and_then(|n| n.checked_mul(a.3))
            .and_then(|n| n.checked_mul(width));
    if want != Some(bytes.len()) {
        return Err(PyValueError::new_err(format!(
            "{arg}: {} bytes for a {} x {} x {} array of {width}-byte values",
            bytes.len(),
            a.1,
            a.2,
            a.3
        )));
    }
    Ok(bytes.chunks_exact(width).map(read).collect())
}

/// HummingBird on given features: `train` / `val` features `[N, P, D]` (float32), masks
/// `[N, H, W]` (uint8), the patch grid, and the settings as JSON. Returns the report as JSON
/// and the validation predictions `[N_val, H, W]` as bytes.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn eval_hummingbird<'py>(
    py: Python<'py>,
    train: Array3<'py>,
    train_masks: Array3<'py>,
    val: Array3<'py>,
    val_masks: Array3<'py>,
    grid: (usize, usize),
    settings: &str,
) -> PyResult<(String, Bound<'py, PyBytes>)> {
    use fungi::hummingbird::{evaluate_features, FeatureSplit, HummingbirdSettings};
    let settings: HummingbirdSettings = {
        let de = &mut serde_json::Deserializer::from_str(settings);
        serde_path_to_error::deserialize(de)
            .map_err(|e| PyValueError::new_err(format!("{}: {}", e.path(), e.inner())))?
    };
    let f32s = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    let tf = array3("train", &train, 4, f32s)?;
    let vf = array3("val", &val, 4, f32s)?;
    let tm = array3("train_masks", &train_masks, 1, |c| c[0])?;
    let vm = array3("val_masks", &val_masks, 1, |c| c[0])?;
    if train.3 != val.3 {
        return Err(PyValueError::new_err(format!(
            "val: {} features per patch, train has {}",
            val.3, train.3
        )));
    }
    let dim = train.3;
    let (report, preds) = guarded_with(
        py,
        || {
            evaluate_features::<Knn>(
                FeatureSplit {
                    features: &tf,
                    masks: &tm,
                    images: train.1,
                    mask_size: (train_masks.2, train_masks.3),
                },
                FeatureSplit {
                    features: &vf,
                    masks: &vm,
                    images: val.1,
                    mask_size: (val_masks.2, val_masks.3),
                },
                grid,
                dim,
                &settings,
                &Default::default(),
            )
        },
        |e| PyValueError::new_err(e.to_string()),
    )?;
    Ok((json(&report)?, PyBytes::new(py, &preds)))
}

#[pyfunction]
fn eval_default_lambdas() -> Vec<f64> {
    fungi_eval::default_lambdas()
}

/// Adds the functions to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(eval_default_lambdas, m)?)?;
    m.add_function(wrap_pyfunction!(eval_knn, m)?)?;
    m.add_function(wrap_pyfunction!(eval_hummingbird, m)?)?;
    m.add_function(wrap_pyfunction!(eval_linear_probe, m)?)?;
    m.add_function(wrap_pyfunction!(eval_retrieval_map, m)?)?;
    Ok(())
}
