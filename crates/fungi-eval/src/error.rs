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

/// Which set of rows a matrix or a set of labels belongs to, across all the protocols (a superset
/// of [`SplitKind`], which the kNN protocol's errors keep using).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subset {
    /// Training rows (classification).
    Train,
    /// Validation rows of the linear probe (given, or the held-out part of the stratified split).
    Validation,
    /// Test rows (classification).
    Test,
    /// Retrieval queries.
    Queries,
    /// Retrieval database.
    Database,
}

impl std::fmt::Display for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Subset::Train => "train",
            Subset::Validation => "validation",
            Subset::Test => "test",
            Subset::Queries => "query",
            Subset::Database => "database",
        })
    }
}

impl From<SplitKind> for Subset {
    fn from(s: SplitKind) -> Self {
        match s {
            SplitKind::Train => Subset::Train,
            SplitKind::Test => Subset::Test,
        }
    }
}

/// The lists of a revisited Oxford / Paris ground-truth entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GndList {
    /// `easy`.
    Easy,
    /// `hard`.
    Hard,
    /// `junk`.
    Junk,
}

impl std::fmt::Display for GndList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GndList::Easy => "easy",
            GndList::Hard => "hard",
            GndList::Junk => "junk",
        })
    }
}

/// The two protocols of the revisited retrieval benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalProtocol {
    /// Positives: easy + hard; junk ignored.
    Medium,
    /// Positives: hard; junk + easy ignored.
    Hard,
}

impl std::fmt::Display for RetrievalProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RetrievalProtocol::Medium => "medium",
            RetrievalProtocol::Hard => "hard",
        })
    }
}

fn in_protocol(p: &Option<RetrievalProtocol>) -> String {
    p.map(|p| format!(" in the {p} protocol"))
        .unwrap_or_default()
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
    /// Features and labels of different lengths (the in-memory kNN, the logistic regression).
    #[error("{subset} features have {rows} rows but there are {labels} {subset} labels (expected equal)")]
    LabelRows {
        /// Which rows.
        subset: Subset,
        /// Rows of the features.
        rows: usize,
        /// Labels given.
        labels: usize,
    },
    /// A set of rows that must not be empty (validation, queries, database, the probe's train).
    #[error("the {subset} set has no rows (expected at least one)")]
    EmptySubset {
        /// Which rows.
        subset: Subset,
    },
    /// Features with no columns (the logistic regression, retrieval).
    #[error("{subset} features have 0 columns (expected at least 1)")]
    NoColumns {
        /// Which rows.
        subset: Subset,
    },
    /// A NaN or infinite input of the logistic regression or of the retrieval ranking.
    #[error("{subset} row {row}, column {col} holds {value} (expected finite values)")]
    NonFiniteValue {
        /// Which rows.
        subset: Subset,
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f64,
    },
    /// [`crate::LogisticRegression::predict`] on rows of another width than the fitted ones.
    #[error("linear probe: fitted on {fitted} columns, asked to predict rows of {found} columns")]
    ProbeDims {
        /// Width the model was fitted on.
        fitted: usize,
        /// Width of the input.
        found: usize,
    },
    /// A [`crate::LogisticRegression`] whose `classes` do not match the rows of its `coef`
    /// (only possible for a model built or edited by hand).
    #[error("linear probe: the model has {classes} classes but {rows} coefficient rows (expected equal and at least 1)")]
    ProbeClasses {
        /// Classes.
        classes: usize,
        /// Rows of `coef`.
        rows: usize,
    },
    /// A regularisation strength that is not finite and positive.
    #[error("linear probe: lambda = {value} (expected a finite value > 0)")]
    BadLambda {
        /// The value.
        value: f64,
    },
    /// An empty list of candidate regularisation strengths.
    #[error("linear probe: no lambda values to choose from (expected at least one)")]
    NoLambdas,
    /// A solver tolerance that is not finite and non-negative.
    #[error("linear probe: solver tolerance {value} (expected a finite value >= 0)")]
    BadTolerance {
        /// The value.
        value: f64,
    },
    /// A class too small for the stratified split (scikit-learn refuses it as well).
    #[error("stratified 80/20 split: class {label} has {count} member(s) (expected at least 2 per class)")]
    StratifyClass {
        /// The class label.
        label: i64,
        /// Its rows.
        count: usize,
    },
    /// A stratified split whose train or held-out part cannot hold one row of every class.
    #[error("stratified 80/20 split of {rows} rows: the {part} part gets {size} rows for {classes} classes (expected at least one row per class)")]
    StratifySize {
        /// Rows split.
        rows: usize,
        /// `train` or `validation` (the held-out part).
        part: Subset,
        /// Rows the part gets.
        size: usize,
        /// Distinct classes.
        classes: usize,
    },
    /// A validation set with another number of feature matrices than there are blocks.
    #[error("the validation set has {matrices} feature matrices for {blocks} blocks (expected one per block, in block order)")]
    ValidationBlocks {
        /// Blocks.
        blocks: usize,
        /// Validation matrices.
        matrices: usize,
    },
    /// A segmentation mask whose size is not its image's (or whose values do not fill it).
    #[error("a {height} x {width} mask needs height x width = {} values, got {found} (the mask must have its image's size)", height * width)]
    MaskSize {
        /// Height expected.
        height: usize,
        /// Width expected.
        width: usize,
        /// Values found.
        found: usize,
    },
    /// A mask value that is neither a class id below the class count nor the ignore value.
    #[error("class id {id} is past the {num_classes} classes (ids 0..{num_classes}; 255 marks pixels to ignore)")]
    ClassId {
        /// The value found.
        id: u8,
        /// Classes.
        num_classes: usize,
    },
    /// A temperature that is not a positive finite number.
    #[error("temperature {value}: expected a positive finite number")]
    BadTemperature {
        /// The value.
        value: f64,
    },
    /// A block whose row count differs from its subset's label count.
    #[error("block `{block}`: {subset} features have {rows} rows but there are {labels} {subset} labels (expected equal)")]
    BlockLabelRows {
        /// Block name.
        block: String,
        /// Which rows.
        subset: Subset,
        /// Rows of the block.
        rows: usize,
        /// Labels of the subset.
        labels: usize,
    },
    /// A block whose row count differs from the first block's.
    #[error("block `{block}`: {subset} features have {rows} rows, block `{first}` has {expected} (expected equal)")]
    BlockRows {
        /// Block name.
        block: String,
        /// Which rows.
        subset: Subset,
        /// Rows of the block.
        rows: usize,
        /// The first block.
        first: String,
        /// Its rows.
        expected: usize,
    },
    /// A block matrix that is inconsistent (`data.len() != rows * cols`).
    #[error("block `{block}`: the {subset} matrix claims {rows} x {cols} but holds {len} values")]
    BlockShape {
        /// Block name.
        block: String,
        /// Which rows.
        subset: Subset,
        /// Claimed rows.
        rows: usize,
        /// Claimed columns.
        cols: usize,
        /// Values held.
        len: usize,
    },
    /// A block whose width differs between two subsets, or is zero.
    #[error("block `{block}`: {found} columns in {subset}, {expected} in {reference} (expected equal and at least 1)")]
    BlockWidth {
        /// Block name.
        block: String,
        /// The subset with the unexpected width.
        subset: Subset,
        /// Its columns.
        found: usize,
        /// The subset whose width is the reference.
        reference: Subset,
        /// Columns of the reference.
        expected: usize,
    },
    /// A NaN or infinite feature of a block.
    #[error(
        "block `{block}`, {subset} row {row}, column {col}: {value} (expected finite features)"
    )]
    BlockNonFinite {
        /// Block name.
        block: String,
        /// Which rows.
        subset: Subset,
        /// First bad row.
        row: usize,
        /// First bad column of that row.
        col: usize,
        /// The value.
        value: f64,
    },
    /// Retrieval: another number of query rows than ground-truth entries.
    #[error("block `{block}`: {queries} query rows but the ground truth has {gnd} queries (expected equal)")]
    GndQueries {
        /// Block name.
        block: String,
        /// Query rows.
        queries: usize,
        /// Ground-truth entries.
        gnd: usize,
    },
    /// Retrieval: a ground-truth index past the database.
    #[error("ground truth of query {query}: {list}[{position}] = {index} is past the database of {database} images")]
    GndIndex {
        /// The query.
        query: usize,
        /// The list holding it.
        list: GndList,
        /// Its position in the list.
        position: usize,
        /// The index.
        index: usize,
        /// Database images.
        database: usize,
    },
    /// Retrieval: a query with no positive image (under a protocol, when known). The reference
    /// skips such a query silently; here it is refused.
    #[error("query {query} has no positive images{} (expected at least one)", in_protocol(.protocol))]
    NoPositives {
        /// The query.
        query: usize,
        /// The protocol, when the positives came from a revisited ground truth.
        protocol: Option<RetrievalProtocol>,
    },
    /// Retrieval: a query none of whose positives appears in its ranking (the reference fails on
    /// it).
    #[error("query {query}: none of its {positives} positive images appears in its ranking of {ranked} images")]
    UnrankedPositives {
        /// The query.
        query: usize,
        /// Positives.
        positives: usize,
        /// Length of the ranking.
        ranked: usize,
    },
    /// Retrieval: another number of rankings than ground-truth entries.
    #[error("{rankings} rankings for {queries} ground-truth queries (expected equal)")]
    RankingCount {
        /// Rankings.
        rankings: usize,
        /// Ground-truth queries.
        queries: usize,
    },
    /// Retrieval: rankings of different lengths.
    #[error("the ranking of query {query} has {found} entries, the first one {expected} (expected equal)")]
    RankingLength {
        /// The query.
        query: usize,
        /// Its length.
        found: usize,
        /// The first query's.
        expected: usize,
    },
    /// Retrieval: queries and database of different widths.
    #[error("retrieval: database features have {database} columns, query features {queries} (expected equal)")]
    RetrievalDims {
        /// Database columns.
        database: usize,
        /// Query columns.
        queries: usize,
    },
    /// A precision-at-k cut-off of 0.
    #[error("precision at k: k must be at least 1, got 0")]
    ZeroKappa,
    /// A ground-truth file that cannot be read or parsed.
    #[error("ground truth {path}: {reason}")]
    GndFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A ground-truth file with a missing or malformed field.
    #[error("ground truth {path}: field `{field}`: {reason}")]
    GndField {
        /// The file.
        path: String,
        /// The field, e.g. `gnd[3].hard[2]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl EvalError {
    /// The split the error is about, when it is about the train or test split of the kNN
    /// protocol (see [`EvalError::subset`] for every protocol).
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

    /// The set of rows the error is about, when it is about one (any protocol).
    pub fn subset(&self) -> Option<Subset> {
        if let Some(s) = self.split() {
            return Some(s.into());
        }
        match self {
            EvalError::LabelRows { subset, .. }
            | EvalError::EmptySubset { subset }
            | EvalError::NoColumns { subset }
            | EvalError::NonFiniteValue { subset, .. }
            | EvalError::BlockLabelRows { subset, .. }
            | EvalError::BlockRows { subset, .. }
            | EvalError::BlockShape { subset, .. }
            | EvalError::BlockWidth { subset, .. }
            | EvalError::BlockNonFinite { subset, .. } => Some(*subset),
            EvalError::ValidationBlocks { .. } => Some(Subset::Validation),
            EvalError::StratifyClass { .. } | EvalError::StratifySize { .. } => Some(Subset::Train),
            EvalError::GndQueries { .. } => Some(Subset::Queries),
            EvalError::GndIndex { .. } => Some(Subset::Database),
            _ => None,
        }
    }
}
