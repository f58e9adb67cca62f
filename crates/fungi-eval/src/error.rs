//! Errors of the evaluation protocol: every one names what was found and what was expected.

use serde::{Deserialize, Serialize};

/// Which side of the evaluation a matrix or a set of labels belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    /// The training rows (the kNN database, PCA is fitted on them).
    Train,
    /// The test rows (the queries).
    Test,
}

impl std::fmt::Display for SplitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitKind::Train => "train",
            SplitKind::Test => "test",
        })
    }
}

/// Errors of `fungi-eval`. None of its functions panics on bad input; they return one of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A matrix whose number of values is not `rows * cols` (or whose `rows * cols` overflows).
    #[error("a {rows} x {cols} matrix needs rows x cols values, got {len}")]
    MatrixSize {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
        /// Values given.
        len: usize,
    },
    /// A row index past the end of a matrix.
    #[error("row index {index} is out of range for a matrix of {rows} rows")]
    RowIndex {
        /// The index.
        index: usize,
        /// Rows of the matrix.
        rows: usize,
    },
    /// [`crate::Matrix::hcat`] of no matrices.
    #[error("cannot concatenate zero matrices (expected at least one)")]
    NothingToConcatenate,
    /// [`crate::Matrix::hcat`] of matrices with different row counts.
    #[error("cannot concatenate: part {part} has {found} rows, expected {expected} (the rows of part 0)")]
    ConcatRows {
        /// Index of the offending part.
        part: usize,
        /// Its rows.
        found: usize,
        /// Rows of the first part.
        expected: usize,
    },
    /// [`crate::knn_neighbors`] on train and test matrices of different widths.
    #[error("kNN: train features have {train} columns, test features {test} (expected equal)")]
    KnnDims {
        /// Train columns.
        train: usize,
        /// Test columns.
        test: usize,
    },
    /// [`crate::knn_neighbors`] on 0-column features.
    #[error("kNN: features have 0 columns (expected at least 1)")]
    ZeroColumns,
    /// Non-finite input of [`crate::knn_neighbors`].
    #[error("kNN: {split} row {row}, column {col} holds {value} (expected finite values)")]
    KnnNonFinite {
        /// Train or test.
        split: SplitKind,
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f64,
    },
    /// The backend returned a neighbour index outside the training rows.
    #[error("kNN backend returned neighbour index {index} for {rows} training rows")]
    BackendIndex {
        /// The index.
        index: i64,
        /// Training rows.
        rows: usize,
    },
    /// The backend's sorted indices could not be read back as integers.
    #[error("kNN backend: cannot read the neighbour indices: {reason}")]
    Backend {
        /// The backend's message.
        reason: String,
    },
    /// `k = 0`.
    #[error("k must be at least 1, got 0")]
    ZeroK,
    /// `few_shot = Some(0)`.
    #[error("few_shot must be at least 1 example per class, got 0")]
    ZeroFewShot,
    /// `pca_dim = Some(0)`.
    #[error("pca_dim must be at least 1, got 0 (use None for no PCA)")]
    ZeroPcaDim,
    /// [`crate::Pca::fit`] with a component count outside `1..=cols` or on no rows.
    #[error("PCA: cannot fit {components} components on a {rows} x {cols} matrix (expected at least 1 row and 1 <= components <= {cols})")]
    PcaShape {
        /// Components asked for.
        components: usize,
        /// Rows of the data.
        rows: usize,
        /// Columns of the data.
        cols: usize,
    },
    /// faer's symmetric eigen-solver did not converge.
    #[error(
        "PCA: the symmetric eigen-decomposition of the {dim} x {dim} covariance did not converge"
    )]
    Eigen {
        /// Size of the covariance.
        dim: usize,
    },
    /// [`crate::Pca::transform`] of rows whose width differs from the fitted one.
    #[error("PCA: fitted on {fitted} columns, asked to transform {found} columns")]
    PcaDims {
        /// Width the PCA was fitted on.
        fitted: usize,
        /// Width of the input.
        found: usize,
    },
    /// [`crate::evaluate`] with no blocks.
    #[error("no feature blocks to evaluate (expected at least one)")]
    NoBlocks,
    /// A split with no examples.
    #[error("the {split} split has no examples (expected at least one)")]
    EmptySplit {
        /// Train or test.
        split: SplitKind,
    },
    /// The few-shot selection left no training row.
    #[error("few-shot selection of {shots} per class left no training rows")]
    EmptyFewShot {
        /// Shots per class.
        shots: usize,
    },
    /// A block's row count differs from the number of labels of its split.
    #[error("block `{block}`: {split} features have {rows} rows but there are {labels} {split} labels (expected equal)")]
    LabelCount {
        /// Block name.
        block: String,
        /// Train or test.
        split: SplitKind,
        /// Rows of the block.
        rows: usize,
        /// Labels of the split.
        labels: usize,
    },
    /// A block whose matrix is inconsistent (`data.len() != rows * cols`).
    #[error("block `{block}`: the {split} matrix claims {rows} x {cols} but holds {len} values")]
    BlockSize {
        /// Block name.
        block: String,
        /// Train or test.
        split: SplitKind,
        /// Claimed rows.
        rows: usize,
        /// Claimed columns.
        cols: usize,
        /// Values held.
        len: usize,
    },
    /// A block with no columns.
    #[error("block `{block}`: {split} features have 0 columns (expected at least 1)")]
    ZeroWidth {
        /// Block name.
        block: String,
        /// Train or test.
        split: SplitKind,
    },
    /// A block whose train and test widths differ.
    #[error("block `{block}`: {train} columns in train, {test} in test (expected equal)")]
    WidthMismatch {
        /// Block name.
        block: String,
        /// Train columns.
        train: usize,
        /// Test columns.
        test: usize,
    },
    /// A NaN or infinite feature.
    #[error(
        "block `{block}`, {split} row {row}, column {col}: {value} (expected finite features)"
    )]
    NonFinite {
        /// Block name.
        block: String,
        /// Train or test.
        split: SplitKind,
        /// First bad row.
        row: usize,
        /// First bad column of that row.
        col: usize,
        /// The value.
        value: f64,
    },
    /// [`crate::vote`] on a test row with no neighbours.
    #[error("test row {row} has no neighbours to vote (expected at least one)")]
    NoNeighbors {
        /// The test row.
        row: usize,
    },
    /// [`crate::vote`] on a neighbour index past the training labels.
    #[error("neighbour {index} of test row {row} is out of range for {labels} training labels")]
    NeighborIndex {
        /// The test row.
        row: usize,
        /// The neighbour index.
        index: usize,
        /// Training labels.
        labels: usize,
    },
    /// Metrics on predictions and targets of different lengths.
    #[error("{predictions} predictions for {targets} targets (expected equal)")]
    PredictionCount {
        /// Predictions.
        predictions: usize,
        /// Targets.
        targets: usize,
    },
    /// Metrics on no targets.
    #[error("no targets to score (expected at least one)")]
    NoTargets,
}

impl EvalError {
    /// The split the error is about, when it is about one.
    pub fn split(&self) -> Option<SplitKind> {
        match self {
            EvalError::KnnNonFinite { split, .. }
            | EvalError::EmptySplit { split }
            | EvalError::LabelCount { split, .. }
            | EvalError::BlockSize { split, .. }
            | EvalError::ZeroWidth { split, .. }
            | EvalError::NonFinite { split, .. } => Some(*split),
            EvalError::EmptyFewShot { .. } => Some(SplitKind::Train),
            _ => None,
        }
    }
}
