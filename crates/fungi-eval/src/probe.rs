//! The linear-probe protocol of the paper over block combinations: per-block L2 normalisation,
//! concatenation, optional PCA fitted on the rows the model is fitted on at each stage, then a
//! multinomial logistic regression ([`LogisticRegression`]) whose `λ` is chosen by validation
//! accuracy and which is refitted on train + validation.

use serde::{Deserialize, Serialize};

use crate::logreg::{check_lambda, check_options};
use crate::{
    accuracy, all_combinations, check_blocks, combination_name, few_shot_rows,
    mean_per_class_accuracy, stratified_split, ClassificationBlock, EvalError, LogisticRegression,
    Matrix, Pca, Result, SolverOptions, Subset,
};

/// `λ` of the few-shot setting (no validation there).
pub const FEW_SHOT_LAMBDA: f64 = 5e-5;
/// Seed of the stratified split of train when no validation set is given.
pub const SPLIT_SEED: u32 = 42;
/// Fraction of train held out for validation when no validation set is given.
pub const VALIDATION_FRACTION: f64 = 0.2;

/// The paper's candidate `λ`: 5 values log-spaced from `5e-6` to `5e-4`
/// (`np.logspace(log10(5e-6), log10(5e-4), 5)`, computed as numpy does: `10 ** (start + i·step)`,
/// the last exponent exactly `log10(5e-4)`).
pub fn default_lambdas() -> Vec<f64> {
    let (a, b) = (5e-6f64.log10(), 5e-4f64.log10());
    let step = (b - a) / 4.0;
    (0..5)
        .map(|i| {
            let e = if i == 4 { b } else { a + i as f64 * step };
            10f64.powf(e)
        })
        .collect()
}

/// Settings of [`evaluate_linear_probe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSettings {
    /// Candidate regularisation strengths (each finite and `> 0`; at least one unless
    /// `few_shot`). Default [`default_lambdas`].
    pub lambdas: Vec<f64>,
    /// PCA output size (skipped when not below both the rows the model is fitted on and the
    /// feature size); at least 1, `None` for no PCA.
    pub pca_dim: Option<usize>,
    /// Fit only on the first this many training rows of every class (in dataset order), with
    /// `λ =` [`FEW_SHOT_LAMBDA`] and no validation; at least 1.
    pub few_shot: Option<usize>,
    /// The solver's tolerance and iteration cap.
    pub solver: SolverOptions,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            lambdas: default_lambdas(),
            pca_dim: None,
            few_shot: None,
            solver: SolverOptions::default(),
        }
    }
}

/// A validation set: one feature matrix per block (in block order) and its labels.
#[derive(Debug, Clone)]
pub struct Validation {
    /// `[n_val, d_b]` for every block `b`.
    pub blocks: Vec<Matrix>,
    /// `[n_val]`.
    pub labels: Vec<i64>,
}

/// Validation accuracy of one candidate `λ`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LambdaScore {
    /// The candidate.
    pub lambda: f64,
    /// Accuracy on the validation rows of the model fitted with it.
    pub accuracy: f64,
    /// Whether that fit converged.
    pub converged: bool,
}

/// Result of the linear probe for one block combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Block names joined by `+` (as [`crate::evaluate`]).
    pub combination: String,
    /// Test accuracy of the final model.
    pub accuracy: f64,
    /// Test mean per-class accuracy of the final model.
    pub mean_per_class_accuracy: f64,
    /// The `λ` of the final model.
    pub lambda: f64,
    /// Validation accuracy of every candidate, in the order given (empty in the few-shot
    /// setting).
    pub validation: Vec<LambdaScore>,
    /// Whether PCA was applied before the final fit.
    pub pca: bool,
    /// Whether the final fit converged.
    pub converged: bool,
    /// Test predictions of the final model.
    pub predictions: Vec<i64>,
}

/// The rows of `a` then those of `b` (same width).
fn vcat(a: &Matrix, b: &Matrix) -> Result<Matrix> {
    let mut data = Vec::with_capacity(a.data.len() + b.data.len());
    data.extend_from_slice(&a.data);
    data.extend_from_slice(&b.data);
    Matrix::new(a.rows + b.rows, a.cols, data)
}

/// PCA fitted on `fit` (when `pca_dim` is below its rows and columns) applied to `fit` and
/// `other`; returns whether it was applied.
fn reduce(fit: Matrix, other: &Matrix, pca_dim: Option<usize>) -> Result<(Matrix, Matrix, bool)> {
    match pca_dim.filter(|&p| p < fit.rows && p < fit.cols) {
        Some(p) => {
            let pca = Pca::fit(&fit, p)?;
            Ok((pca.transform(&fit)?, pca.transform(other)?, true))
        }
        None => Ok((fit, other.clone(), false)),
    }
}

/// How `λ` is chosen.
enum Selection<'a> {
    /// Few-shot: these train rows, fixed `λ`.
    FewShot(Vec<usize>),
    /// The given validation set (normalised per block).
    Given(&'a [Matrix], &'a [i64]),
    /// Held-out rows of train: `(fit rows, held-out rows)`.
    Split(Vec<usize>, Vec<usize>),
}

fn check_validation(blocks: &[ClassificationBlock], v: &Validation) -> Result<()> {
    if v.blocks.len() != blocks.len() {
        return Err(EvalError::ValidationBlocks {
            blocks: blocks.len(),
            matrices: v.blocks.len(),
        });
    }
    if v.labels.is_empty() {
        return Err(EvalError::EmptySubset {
            subset: Subset::Validation,
        });
    }
    for (b, m) in blocks.iter().zip(&v.blocks) {
        let subset = Subset::Validation;
        if m.check().is_err() {
            return Err(EvalError::BlockShape {
                block: b.name.clone(),
                subset,
                rows: m.rows,
                cols: m.cols,
                len: m.data.len(),
            });
        }
        if m.rows != v.labels.len() {
            return Err(EvalError::BlockLabelRows {
                block: b.name.clone(),
                subset,
                rows: m.rows,
                labels: v.labels.len(),
            });
        }
        if m.cols != b.train.cols {
            return Err(EvalError::BlockWidth {
                block: b.name.clone(),
                subset,
                found: m.cols,
                reference: Subset::Train,
                expected: b.train.cols,
            });
        }
        if let Some((row, col, value)) = m.first_non_finite() {
            return Err(EvalError::BlockNonFinite {
                block: b.name.clone(),
                subset,
                row,
                col,
                value,
            });
        }
    }
    Ok(())
}

/// Fits one model per `λ` on `(fit, fit_labels)` and scores it on `(held, held_labels)`; returns
/// the scores in order and the best `λ` (highest accuracy; ties → the smallest `λ`).
fn select_lambda(
    fit: Matrix,
    fit_labels: &[i64],
    held: &Matrix,
    held_labels: &[i64],
    s: &ProbeSettings,
) -> Result<(Vec<LambdaScore>, f64)> {
    let (fit, held, _) = reduce(fit, held, s.pca_dim)?;
    let mut scores = Vec::with_capacity(s.lambdas.len());
    for &lambda in &s.lambdas {
        let model = LogisticRegression::fit(&fit, fit_labels, lambda, &s.solver)?;
        scores.push(LambdaScore {
            lambda,
            accuracy: accuracy(&model.predict(&held)?, held_labels)?,
            converged: model.converged,
        });
    }
    let best = scores
        .iter()
        .copied()
        .reduce(|best, c| {
            if c.accuracy > best.accuracy || (c.accuracy == best.accuracy && c.lambda < best.lambda)
            {
                c
            } else {
                best
            }
        })
        .map(|b| b.lambda)
        .ok_or(EvalError::NoLambdas)?;
    Ok((scores, best))
}

/// The linear probe of the paper for every non-empty combination of blocks (same order and
/// names as [`crate::evaluate`]).
///
/// For each combination, the blocks are L2-normalised per row and concatenated; then:
/// * `few_shot: Some(n)`: the model is fitted on the first `n` training rows of every class in
///   dataset order with `λ =` [`FEW_SHOT_LAMBDA`] (`validation` is ignored);
/// * with a `validation` set: one model per candidate `λ` is fitted on train and scored on
///   validation; the best `λ` (highest validation accuracy, ties → the smallest `λ`) is refitted
///   on train + validation;
/// * otherwise: train is split as scikit-learn's `train_test_split(test_size=0.2,
///   random_state=42, stratify=labels)` ([`stratified_split`]), candidates are fitted on the
///   80 % and scored on the 20 %, and the best `λ` is refitted on all of train.
///
/// PCA (`pca_dim`) is fitted on the rows each model is fitted on, when `pca_dim` is below their
/// count and the feature size. The test accuracy is that of the final model.
///
/// Everything is validated before any fit: the settings (`pca_dim`, `few_shot` >= 1, at least
/// one `λ`, each finite and positive, a valid tolerance), the blocks as [`crate::evaluate`] does,
/// the validation set (one matrix per block, rows = labels, the train width, finite values), and
/// the stratified split (every class at least 2 rows, both parts at least one row per class).
pub fn evaluate_linear_probe(
    blocks: &[ClassificationBlock],
    train_labels: &[i64],
    test_labels: &[i64],
    validation: Option<&Validation>,
    s: &ProbeSettings,
) -> Result<Vec<ProbeResult>> {
    if s.few_shot == Some(0) {
        return Err(EvalError::ZeroFewShot);
    }
    if s.pca_dim == Some(0) {
        return Err(EvalError::ZeroPcaDim);
    }
    if s.few_shot.is_none() && s.lambdas.is_empty() {
        return Err(EvalError::NoLambdas);
    }
    for &l in &s.lambdas {
        check_lambda(l)?;
    }
    check_options(&s.solver)?;
    check_blocks(blocks, train_labels, test_labels)?;
    let val_normed: Vec<Matrix>;
    let selection = match (s.few_shot, validation) {
        (Some(n), _) => Selection::FewShot(few_shot_rows(train_labels, Some(n))?),
        (None, Some(v)) => {
            check_validation(blocks, v)?;
            val_normed = v.blocks.iter().map(Matrix::l2_normalized).collect();
            Selection::Given(&val_normed, &v.labels)
        }
        (None, None) => {
            let (fit, held) = stratified_split(train_labels, VALIDATION_FRACTION, SPLIT_SEED)?;
            Selection::Split(fit, held)
        }
    };
    let normed: Vec<(Matrix, Matrix)> = blocks
        .iter()
        .map(|b| (b.train.l2_normalized(), b.test.l2_normalized()))
        .collect();
    let pick = |rows: &[usize]| -> Vec<i64> { rows.iter().map(|&r| train_labels[r]).collect() };
    all_combinations(blocks.len())
        .into_iter()
        .map(|c| {
            let tr = Matrix::hcat(&c.iter().map(|&i| &normed[i].0).collect::<Vec<_>>())?;
            let te = Matrix::hcat(&c.iter().map(|&i| &normed[i].1).collect::<Vec<_>>())?;
            let (fit, fit_labels, lambda, validation) = match &selection {
                Selection::FewShot(rows) => {
                    (tr.select_rows(rows)?, pick(rows), FEW_SHOT_LAMBDA, vec![])
                }
                Selection::Given(val, val_labels) => {
                    let va = Matrix::hcat(&c.iter().map(|&i| &val[i]).collect::<Vec<_>>())?;
                    let (scores, best) =
                        select_lambda(tr.clone(), train_labels, &va, val_labels, s)?;
                    let labels: Vec<i64> = train_labels
                        .iter()
                        .chain(val_labels.iter())
                        .copied()
                        .collect();
                    (vcat(&tr, &va)?, labels, best, scores)
                }
                Selection::Split(fit_rows, held_rows) => {
                    let (scores, best) = select_lambda(
                        tr.select_rows(fit_rows)?,
                        &pick(fit_rows),
                        &tr.select_rows(held_rows)?,
                        &pick(held_rows),
                        s,
                    )?;
                    (tr, train_labels.to_vec(), best, scores)
                }
            };
            let (fit, te, pca) = reduce(fit, &te, s.pca_dim)?;
            let model = LogisticRegression::fit(&fit, &fit_labels, lambda, &s.solver)?;
            let preds = model.predict(&te)?;
            Ok(ProbeResult {
                combination: combination_name(&c, |i| blocks[i].name.as_str()),
                accuracy: accuracy(&preds, test_labels)?,
                mean_per_class_accuracy: mean_per_class_accuracy(&preds, test_labels)?,
                lambda,
                validation,
                pca,
                converged: model.converged,
                predictions: preds,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lambdas_are_the_papers() {
        let l = default_lambdas();
        let want = [
            5e-6,
            1.5811388300841898e-5,
            5e-5,
            1.5811388300841898e-4,
            5e-4,
        ];
        assert_eq!(l.len(), 5);
        for (a, b) in l.iter().zip(want) {
            assert!((a / b - 1.0).abs() < 1e-14, "{a} vs {b}");
        }
    }
}
