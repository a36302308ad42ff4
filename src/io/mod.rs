//! Input and output: Parquet files in, one validated [`Dataset`] out; atomic Parquet writes.
//!
//! Imports no other stage. The reader makes two projected passes (keys and labels, then vectors) so
//! the activation matrix is written once, directly in class-grouped order; the output stage makes a
//! third, streaming pass over all columns, so pass-through columns are never held in memory.

mod read;
mod vectors;
mod write;

use std::path::PathBuf;

use arrow_schema::SchemaRef;
use parquet::errors::ParquetError;

pub use read::{
    ReadOptions, check_unchanged, for_each_parquet_batch, list_input_files, open_parquet_file, parquet_rows,
    read_dataset, read_dataset_with_progress, read_parquet_columns, read_parquet_file,
};
pub use vectors::{decoded, integer_values};
pub use write::{
    AtomicFile, OutputDirLock, PUBLISH_JOURNAL, ParquetSink, Piece, Publication, Retired, complete_publication,
    drop_in_background, for_each_piece, link_beside, lock_output_dir, same_leaf_columns, settle_output_dir,
};

/// The (mean, scale) each feature column is standardized with: value -> (value - mean) * scale.
pub type FeatureScaling = Vec<(f64, f64)>;

/// One input file as the report's fingerprint records it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FileInfo {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub rows: u64,
    /// SHA-256 of the Parquet footer (metadata + length + magic): changes whenever the data does.
    pub footer_sha256: String,
}

/// Where the per-record vectors come from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum VectorSource {
    /// A `List`/`LargeList`/`FixedSizeList` column of floats, one vector per row.
    Column(String),
    /// Scalar numeric columns, standardized to zero mean and unit variance.
    Features(Vec<String>),
}

/// One record's key, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKey<'a> {
    Int(i64),
    Str(&'a str),
}

/// Record keys in input order, kept in their own type so scores.parquet writes them back as they were.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum RecordKeys {
    Int(Vec<i64>),
    Str(Vec<String>),
}

impl RecordKeys {
    pub fn len(&self) -> usize {
        match self {
            RecordKeys::Int(v) => v.len(),
            RecordKeys::Str(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, row: usize) -> RecordKey<'_> {
        match self {
            RecordKeys::Int(v) => RecordKey::Int(v[row]),
            RecordKeys::Str(v) => RecordKey::Str(&v[row]),
        }
    }
    /// The key of global row `row`, as text for messages and reports.
    pub fn display(&self, row: usize) -> String {
        match self {
            RecordKeys::Int(v) => v[row].to_string(),
            RecordKeys::Str(v) => v[row].clone(),
        }
    }
}

/// A validated input: keys, labels and the vector matrix, grouped by class.
///
/// Rows are numbered globally in input order (file by file, row by row): the "global row".
/// The matrix `x` holds the rows of class 0 first, then class 1, and so on; `order` maps a position
/// in `x` back to its global row, so detectors borrow one contiguous slice per class.
pub struct Dataset {
    pub files: Vec<FileInfo>,
    /// The Arrow schema shared by every file (pass-through columns included).
    pub schema: SchemaRef,
    /// The id column, or `None` when keys are `file#row`.
    pub id_column: Option<String>,
    pub label_column: String,
    pub vectors: VectorSource,
    pub keys: RecordKeys,
    /// Class index per global row.
    pub labels: Vec<u32>,
    /// Class names; index = class index. Integer labels sort numerically, strings lexically.
    pub classes: Vec<String>,
    pub dim: usize,
    /// Row-major `n * dim`, class-grouped (see `order`).
    pub x: Vec<f32>,
    /// Class `c` occupies positions `class_offsets[c]..class_offsets[c + 1]` of `order` and `x`.
    pub class_offsets: Vec<usize>,
    /// Position in `x` -> global row.
    pub order: Vec<u32>,
    /// The input's predicted probabilities, `n * classes`, class-grouped like `x`.
    pub probs: Option<Vec<f32>>,
    /// The input's per-record losses: (`n * epochs`, class-grouped like `x`; epochs).
    pub losses: Option<(Vec<f32>, usize)>,
    /// The column naming who supplied each record, and its values by global row (reports only).
    pub source_column: Option<String>,
    pub sources: Option<Vec<String>>,
    /// Feature columns: the (mean, scale) each was standardized with.
    pub feature_scaling: Option<FeatureScaling>,
    /// Feature columns: each record's hash of its values as read (by position), which
    /// [`Dataset::content_hashes`] uses instead of the standardized vector.
    pub feature_hashes: Option<Vec<u128>>,
}

impl Dataset {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// A 128-bit hash (XXH3) of what the scan reads of each record, by position: its label, its
    /// vector (feature columns: their values as read, which no standardization changes), and
    /// its probabilities and losses when the scan reads them. A record whose hash
    /// matches an earlier scan's is the same record to every detector.
    pub fn content_hashes(&self) -> Vec<u128> {
        use rayon::prelude::*;
        let k = self.classes.len();
        let epochs = self.losses.as_ref().map_or(0, |(_, e)| *e);
        let class_of: Vec<u32> = (0..k)
            .flat_map(|c| std::iter::repeat_n(c as u32, self.class_size(c)))
            .collect();
        (0..self.rows())
            .into_par_iter()
            .map_init(Vec::new, |bytes: &mut Vec<u8>, p| {
                bytes.clear();
                bytes.extend_from_slice(self.classes[class_of[p] as usize].as_bytes());
                bytes.push(0xff); // not UTF-8: ends the label unambiguously
                if let Some(features) = &self.feature_hashes {
                    bytes.extend_from_slice(&features[p].to_le_bytes());
                }
                let mut floats = |v: &[f32]| v.iter().for_each(|f| bytes.extend_from_slice(&f.to_le_bytes()));
                if self.feature_hashes.is_none() {
                    floats(&self.x[p * self.dim..(p + 1) * self.dim]);
                }
                if let Some(probs) = &self.probs {
                    floats(&probs[p * k..(p + 1) * k]);
                }
                if let Some((losses, _)) = &self.losses {
                    floats(&losses[p * epochs..(p + 1) * epochs]);
                }
                twox_hash::XxHash3_128::oneshot(bytes)
            })
            .collect()
    }

    /// The key of the record at position `p` (class-grouped order).
    pub fn key_at(&self, p: usize) -> RecordKey<'_> {
        let g = self.order[p] as usize;
        match &self.keys {
            RecordKeys::Int(v) => RecordKey::Int(v[g]),
            RecordKeys::Str(v) => RecordKey::Str(&v[g]),
        }
    }
    /// The rows of class `c`: (global rows, row-major vectors).
    pub fn class_slice(&self, c: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.class_offsets[c], self.class_offsets[c + 1]);
        (&self.order[a..b], &self.x[a * self.dim..b * self.dim])
    }
    pub fn class_size(&self, c: usize) -> usize {
        self.class_offsets[c + 1] - self.class_offsets[c]
    }
}

/// Everything that can be wrong with the input. Each message names the file (and the column and
/// 0-based row in that file where there is one), then says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a Parquet file (bad or missing footer: {cause}); is it truncated, or another format?")]
    NotParquet { path: PathBuf, cause: ParquetError },
    #[error("{path}: Parquet data could not be decoded: {message}; the file may be corrupt")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: not a datavet report.json ({message}); was it edited, or cut short?")]
    BadReport { path: PathBuf, message: String },
    #[error(
        "{path}: trusted-set label `{label}` is not a class of the scanned data; the trusted set must use the same labels"
    )]
    UnknownTrustedLabel { path: PathBuf, label: String },
    #[error("{path}: trusted-set vectors have {found} dimensions, the scanned data {expected}")]
    TrustedDimension {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error(
        "{path}: {role} column `{column}` has the name of another column of scores.parquet (a score, suspicion, quarantined, reasons, pc1, pc2, cluster, the key, or another role's column); rename it in the data or choose another with --{role}-col"
    )]
    ReservedName {
        path: PathBuf,
        role: &'static str,
        column: String,
    },
    #[error(
        "{out}: the output directory is inside the input {input}, whose next scan would read its outputs as data; choose an --out outside the inputs (or one named _* or .*, which the walk skips)"
    )]
    OutputInsideInput { out: PathBuf, input: PathBuf },
    #[error("{path}: not a regular file or a directory; give Parquet files or folders of them")]
    NotAFile { path: PathBuf },
    #[error("{path}: no Parquet files found (looked for *.parquet, skipping _* and .* files)")]
    NoFiles { path: PathBuf },
    #[error("no input given; pass --input FILE_OR_DIR (repeatable)")]
    NoInput,
    #[error("{path}: the file changed while it was being scanned; run the scan again once it is complete")]
    Changed { path: PathBuf },
    #[error("{path}: the input has no rows ({files} file(s) read); nothing to scan")]
    Empty { path: PathBuf, files: usize },
    #[error("{path}: schema differs from {first}: {difference}; all files of one dataset must share a schema")]
    SchemaMismatch {
        path: PathBuf,
        first: PathBuf,
        difference: String,
    },
    #[error("{path}: {role} column `{column}` not found; columns are {present}; {hint}")]
    MissingColumn {
        path: PathBuf,
        role: &'static str,
        column: String,
        present: String,
        hint: &'static str,
    },
    #[error("{path}: {role} column `{column}` has type {found}, expected {expected}")]
    WrongType {
        path: PathBuf,
        role: &'static str,
        column: String,
        found: String,
        expected: &'static str,
    },
    #[error("{path}: --feature-cols {problem}")]
    BadFeatureColumns { path: PathBuf, problem: String },
    #[error("{path}: no activations column (List/FixedSizeList of floats); {hint}")]
    NoVectorColumn { path: PathBuf, hint: String },
    #[error(
        "{path}: several float-vector columns could be the activations: {candidates}; choose one with --activations-col NAME"
    )]
    AmbiguousVectorColumn { path: PathBuf, candidates: String },
    #[error("{path}: {role} column `{column}`, row {row} (0-based): value is null; {role}s must be set on every row")]
    NullValue {
        path: PathBuf,
        role: &'static str,
        column: String,
        row: u64,
    },
    #[error("{path}: column `{column}`, row {row} (0-based), id {id}: {problem}")]
    BadVector {
        path: PathBuf,
        column: String,
        row: u64,
        id: String,
        problem: String,
    },
    #[error(
        "{path}: column `{column}`, row {row} (0-based): a date64 of {ms} ms is not a whole day (or is past \
         date32's range), and the first file ({first}) stores this column as days (date32, or a date64 as \
         pyarrow writes it), so it would be changed; keep a time of day in a timestamp column"
    )]
    PartialDay {
        path: PathBuf,
        column: String,
        row: u64,
        ms: i64,
        first: PathBuf,
    },
    #[error(
        "{path}: id column `{column}`, row {row} (0-based): id {id} already appears at {first_path} row {first_row}; ids must be unique"
    )]
    DuplicateId {
        path: PathBuf,
        column: String,
        row: u64,
        id: String,
        first_path: PathBuf,
        first_row: u64,
    },
}

/// Failures while writing outputs. The previous outputs stay in place when these happen.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: cannot write: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: Parquet write failed: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("{path}: {message}")]
    Other { path: PathBuf, message: String },
}
