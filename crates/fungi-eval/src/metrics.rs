//! Accuracy, mean per-class accuracy and the few-shot subset.

use crate::{EvalError, Result};

pub(crate) fn check_scored(preds: &[i64], targets: &[i64]) -> Result<()> {
    if preds.len() != targets.len() {
        return Err(EvalError::PredictionCount {
            predictions: preds.len(),
            targets: targets.len(),
        });
    }
    if targets.is_empty() {
        return Err(EvalError::NoTargets);
    }
    Ok(())
}

/// Fraction of correct predictions (an error on different lengths or no targets).
pub fn accuracy(preds: &[i64], targets: &[i64]) -> Result<f64> {
    check_scored(preds, targets)?;
    Ok(
        preds.iter().zip(targets).filter(|(p, t)| p == t).count() as f64
            / targets.len().max(1) as f64,
    )
}

/// Mean over the classes present in `targets` of the per-class recall (the paper's
/// `confusion_matrix(preds, targets)` diagonal over column sums); an error on different lengths
/// or no targets.
pub fn mean_per_class_accuracy(preds: &[i64], targets: &[i64]) -> Result<f64> {
    check_scored(preds, targets)?;
    let mut per: std::collections::BTreeMap<i64, (usize, usize)> = Default::default();
    for (p, t) in preds.iter().zip(targets) {
        let e = per.entry(*t).or_default();
        e.1 += 1;
        if p == t {
            e.0 += 1;
        }
    }
    Ok(per
        .values()
        .map(|(c, n)| *c as f64 / *n as f64)
        .sum::<f64>()
        / per.len().max(1) as f64)
}

/// The first `shots` indices of every class in dataset order, sorted (`sample_balanced(..,
/// shuffle=False)`).
pub fn few_shot_indices(labels: &[i64], shots: usize) -> Vec<usize> {
    let mut seen: std::collections::HashMap<i64, usize> = Default::default();
    let mut out = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let c = seen.entry(*l).or_default();
        if *c < shots {
            *c += 1;
            out.push(i);
        }
    }
    out
}
