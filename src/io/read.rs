//! Files or directories -> one validated [`Dataset`].
//!
//! Pass 1 reads only the id and label columns (cheap) to learn the class sizes; pass 2 decodes the
//! vectors row group by row group, in parallel, straight into their class-grouped place. So the
//! matrix is never copied and every row group could come from a different machine.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::vectors::{
    copy_vectors, decoded, first_length, integer_values, is_dictionary_of, is_float_vector, is_numeric_scalar,
    numeric_column,
};
use super::{Dataset, FileInfo, InputError, RecordKeys, VectorSource};
use crate::progress::{NoProgress, Progress};

/// Rows decoded per Arrow batch.
pub const DEFAULT_BATCH_ROWS: usize = 8192;
/// Rows decoded per batch when reading the vectors into the matrix (see `read_vectors`).
const VECTOR_BATCH_ROWS: usize = 1024;
/// Column names taken as activations, in this order, when `--activations-col` is not given.
const ACTIVATION_NAMES: [&str; 3] = ["activations", "embedding", "embeddings"];
/// A vector column never taken as activations: it holds the model's predicted probabilities.
const PROBS_NAME: &str = "probs";

/// Which columns play which role. `Default` is what `datavet scan` does without flags.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReadOptions {
    /// The id column; `None` means `id` when present, else keys are `file#row`.
    pub id_col: Option<String>,
    pub label_col: String,
    /// The vector column; `None` means: `activations`, `embedding`, `embeddings`, else the only one.
    pub activations_col: Option<String>,
    /// Scalar numeric columns to use instead of a vector column (standardized).
    pub feature_cols: Option<Vec<String>>,
    /// The model's predicted class probabilities (a float vector, one entry per class in the
    /// order of the sorted labels); `None` means `probs` when present.
    pub probs_col: Option<String>,
    /// Per-record training loss: one float, or a float vector of per-epoch losses.
    pub loss_col: Option<String>,
    /// Who or what supplied each record (contributor, vendor, batch), for the per-source tables
    /// of the reports; `None` means `source` when present.
    pub source_col: Option<String>,
    /// Standardize feature columns with these (mean, scale) pairs instead of the data's own: an
    /// incremental scan keeps the reference's, so unchanged records read back the same vectors.
    /// Ignored unless there is one pair per feature column.
    #[serde(skip)]
    pub feature_scaling: Option<super::FeatureScaling>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            id_col: None,
            label_col: "label".into(),
            activations_col: None,
            feature_cols: None,
            probs_col: None,
            loss_col: None,
            source_col: None,
            feature_scaling: None,
        }
    }
}

/// Expands files and directories into the sorted list of Parquet files to read.
/// In directories, `*.parquet`/`*.parq` files are taken (recursively); names starting with `_` or
/// `.` (Spark's `_SUCCESS`, `.crc` files) are skipped.
pub fn list_input_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    Ok(list_inputs(inputs)?.into_iter().map(|f| f.path).collect())
}

/// One input file and the name its records are keyed by when the data has no id column.
struct Listed {
    path: PathBuf,
    /// The path below the `--input` directory it was found in, or the file's name when it was
    /// given itself: the same however the input is spelled (`data`, `./data`, an absolute path,
    /// a pipeline file's folder), so a nightly scan keys yesterday's records as yesterday did.
    key_name: String,
    /// The `--input` it was found under.
    input: PathBuf,
}

/// [`list_input_files`] with key names. A file reached twice (given twice, or through a
/// symlinked directory) is read once; directory symlink loops are walked once; anything but a
/// regular file or a directory (a FIFO would block the read forever) is an error.
fn list_inputs(inputs: &[PathBuf]) -> Result<Vec<Listed>, InputError> {
    if inputs.is_empty() {
        return Err(InputError::NoInput);
    }
    let mut files: Vec<Listed> = Vec::new();
    let mut seen_files = std::collections::HashSet::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|source| InputError::Io {
            path: input.clone(),
            source,
        })?;
        let mut found = Vec::new();
        if meta.is_dir() {
            // Loops are detected per input; files read by an earlier input are skipped below.
            walk_dir(input, &mut found, &mut std::collections::HashSet::new())?;
            if found.is_empty() {
                return Err(InputError::NoFiles { path: input.clone() });
            }
        } else if meta.is_file() {
            found.push(input.clone());
        } else {
            return Err(InputError::NotAFile { path: input.clone() });
        }
        for path in found {
            let canonical = path.canonicalize().map_err(|source| InputError::Io {
                path: path.clone(),
                source,
            })?;
            if !seen_files.insert(canonical) {
                log::warn!("{} is reached twice among the inputs; read once", path.display());
                continue;
            }
            let key_name = match path.strip_prefix(input) {
                Ok(below) if meta.is_dir() => below.display().to_string(),
                _ => file_name(&path),
            };
            files.push(Listed {
                path,
                key_name,
                input: input.clone(),
            });
        }
    }
    disambiguate_key_names(&mut files);
    Ok(files)
}

/// Files of one key name under two inputs (`a/x.parquet`, `b/x.parquet`): the first keeps it,
/// a later one takes its input's name in front (`b/x.parquet`), or failing that its path as
/// given. So an input added after the others does not re-key yesterday's records.
fn disambiguate_key_names(files: &mut [Listed]) {
    let mut used = std::collections::HashSet::new();
    for f in files.iter_mut() {
        if !used.contains(&f.key_name) {
            used.insert(f.key_name.clone());
            continue;
        }
        let prefixed = format!("{}/{}", file_name(&f.input), f.key_name);
        f.key_name = if used.contains(&prefixed) {
            f.path.display().to_string()
        } else {
            prefixed
        };
        used.insert(f.key_name.clone());
    }
}

/// The last component of `path` as given (`data` for `./data/`), or the path itself.
fn file_name(path: &Path) -> String {
    path.components()
        .rev()
        .find_map(|c| match c {
            std::path::Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap_or_else(|| path.display().to_string())
}

fn walk_dir(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen_dirs: &mut std::collections::HashSet<PathBuf>,
) -> Result<(), InputError> {
    let io_err = |source| InputError::Io {
        path: dir.to_path_buf(),
        source,
    };
    // A directory reached again (a symlink loop, or a link to one already walked) adds nothing.
    if !seen_dirs.insert(dir.canonicalize().map_err(io_err)?) {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk_dir(&path, out, seen_dirs)?;
        } else if name.ends_with(".parquet") || name.ends_with(".parq") {
            // A dangling link is an error of its own (not found), a FIFO or device another.
            let meta = std::fs::metadata(&path).map_err(|source| InputError::Io {
                path: path.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(InputError::NotAFile { path });
            }
            out.push(path);
        }
    }
    Ok(())
}

/// An opened input file: its footer parsed once and shared by every reader of its row groups.
struct Source {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    info: FileInfo,
}

impl Source {
    fn open(path: &Path) -> Result<Source, InputError> {
        let io_err = |source| InputError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let size_bytes = file.metadata().map_err(io_err)?.len();
        let meta = load_input_footer(&file, path)?;
        let rows = meta.metadata().file_metadata().num_rows().max(0) as u64;
        let footer_sha256 = footer_hash(&mut file, size_bytes).map_err(io_err)?;
        let info = FileInfo {
            path: path.to_path_buf(),
            size_bytes,
            rows,
            footer_sha256,
        };
        Ok(Source {
            path: path.to_path_buf(),
            meta,
            info,
        })
    }

    fn schema(&self) -> &SchemaRef {
        self.meta.schema()
    }

    fn row_group_rows(&self) -> Vec<usize> {
        self.meta
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows() as usize)
            .collect()
    }

    /// Batches of the named top-level columns, restricted to `row_groups` (all when `None`).
    fn read_columns(&self, columns: &[&str], row_groups: Option<Vec<usize>>) -> Result<Vec<RecordBatch>, InputError> {
        self.batches(columns, row_groups, DEFAULT_BATCH_ROWS)?.collect()
    }

    /// [`Source::read_columns`] as a stream of `batch_rows`-row batches, decoded as they are taken.
    fn batches(
        &self,
        columns: &[&str],
        row_groups: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch, InputError>> + '_, InputError> {
        let roots: Vec<usize> = columns.iter().filter_map(|c| self.schema().index_of(c).ok()).collect();
        self.batches_of_roots(roots, row_groups, batch_rows)
    }

    /// [`Source::batches`] of top-level columns given by position (names may repeat).
    fn batches_of_roots(
        &self,
        roots: Vec<usize>,
        row_groups: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch, InputError>> + '_, InputError> {
        // A fresh descriptor per reader: `try_clone` shares the file offset, and parquet's reader
        // seeks, so parallel row-group readers on clones would read each other's bytes.
        let file = File::open(&self.path).map_err(|source| InputError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mask = ProjectionMask::roots(self.meta.metadata().file_metadata().schema_descr(), roots);
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_projection(mask)
            .with_batch_size(batch_rows);
        if let Some(rgs) = row_groups {
            builder = builder.with_row_groups(rgs);
        }
        let corrupt = move |e: &dyn std::fmt::Display| InputError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let reader = builder.build().map_err(|e| corrupt(&e))?;
        Ok(reader.map(move |b| b.map_err(|e| corrupt(&e))))
    }
}

/// Fails if any input file differs (size or footer) from when it was read: the write stage reads
/// the files again, and a file replaced mid-run must not mix two datasets in the outputs.
pub fn check_unchanged(files: &[FileInfo]) -> Result<(), InputError> {
    for info in files {
        let changed = || InputError::Changed {
            path: info.path.clone(),
        };
        let io_err = |source| InputError::Io {
            path: info.path.clone(),
            source,
        };
        let mut file = File::open(&info.path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        if size != info.size_bytes || size < 8 || footer_hash(&mut file, size).map_err(io_err)? != info.footer_sha256 {
            return Err(changed());
        }
    }
    Ok(())
}

fn footer_hash(file: &mut File, size: u64) -> std::io::Result<String> {
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::Start(size - 8))?;
    file.read_exact(&mut tail)?;
    let footer_len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64 + 8;
    let mut footer = vec![0u8; footer_len.min(size) as usize];
    file.seek(SeekFrom::Start(size - footer.len() as u64))?;
    file.read_exact(&mut footer)?;
    Ok(Sha256::digest(&footer).iter().map(|b| format!("{b:02x}")).collect())
}

/// The resolved role of each column, checked against the schema of the first file.
struct Roles {
    id: Option<String>,
    label: String,
    vectors: VectorSource,
    probs: Option<String>,
    losses: Option<String>,
}

fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn resolve_roles(src: &Source, opts: &ReadOptions) -> Result<Roles, InputError> {
    let schema = src.schema();
    let path = &src.path;
    let missing = |role, column: &str, hint| InputError::MissingColumn {
        path: path.clone(),
        role,
        column: column.to_string(),
        present: column_list(schema),
        hint,
    };
    let wrong = |role, column: &str, found: &DataType, expected| InputError::WrongType {
        path: path.clone(),
        role,
        column: column.to_string(),
        found: found.to_string(),
        expected,
    };
    let key_type_ok =
        |t: &DataType| t.is_integer() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let id = match &opts.id_col {
        Some(name) => Some(name.clone()),
        None => schema.index_of("id").ok().map(|_| "id".to_string()),
    };
    if let Some(name) = &id {
        let field = schema
            .field_with_name(name)
            .map_err(|_| missing("id", name, "use --id-col NAME"))?;
        if !(key_type_ok(field.data_type()) || is_dictionary_of(field.data_type(), key_type_ok)) {
            return Err(wrong(
                "id",
                name,
                field.data_type(),
                "an integer or string (plain or dictionary-encoded)",
            ));
        }
    }
    let label = opts.label_col.clone();
    let field = schema
        .field_with_name(&label)
        .map_err(|_| missing("label", &label, "use --label-col NAME"))?;
    let label_ok = key_type_ok(field.data_type())
        || matches!(field.data_type(), DataType::Boolean)
        || is_dictionary_of(field.data_type(), |v| matches!(v, DataType::Utf8 | DataType::LargeUtf8));
    if !label_ok {
        return Err(wrong(
            "label",
            &label,
            field.data_type(),
            "an integer, boolean, string or dictionary-encoded string",
        ));
    }
    let probs = match &opts.probs_col {
        Some(name) => Some(name.clone()),
        None => schema.index_of(PROBS_NAME).ok().map(|_| PROBS_NAME.to_string()),
    };
    if let Some(name) = &probs {
        let f = schema
            .field_with_name(name)
            .map_err(|_| missing("probs", name, "use --probs-col NAME"))?;
        if !is_float_vector(f.data_type()) {
            return Err(wrong(
                "probs",
                name,
                f.data_type(),
                "List or FixedSizeList of floats, one per class",
            ));
        }
    }
    if let Some(name) = &opts.loss_col {
        let f = schema
            .field_with_name(name)
            .map_err(|_| missing("loss", name, "use --loss-col NAME"))?;
        if !is_float_vector(f.data_type()) && !is_numeric_scalar(f.data_type()) {
            return Err(wrong(
                "loss",
                name,
                f.data_type(),
                "a number, or a list of per-epoch losses",
            ));
        }
    }
    let reserved = |name: &str| {
        Some(name) == id.as_deref()
            || name == label
            || Some(name) == probs.as_deref()
            || Some(name) == opts.loss_col.as_deref()
    };
    let vectors = if let Some(cols) = &opts.feature_cols {
        let bad = |problem: String| InputError::BadFeatureColumns {
            path: path.to_path_buf(),
            problem,
        };
        if cols.is_empty() {
            return Err(bad(
                "names no column; list the numeric feature columns, comma-separated".into(),
            ));
        }
        if let Some(c) = cols.iter().find(|c| reserved(c)) {
            // Features that hold the label (or the id) would make every class trivially separable.
            return Err(bad(format!(
                "names `{c}`, which is the id, label, probabilities or loss column; features are the model's inputs only"
            )));
        }
        if let Some((i, c)) = cols.iter().enumerate().find(|(i, c)| cols[..*i].contains(c)) {
            return Err(bad(format!(
                "names `{c}` twice (at {} and {})",
                cols.iter().position(|x| x == c).unwrap_or(0) + 1,
                i + 1
            )));
        }
        for c in cols {
            let f = schema
                .field_with_name(c)
                .map_err(|_| missing("feature", c, "check --feature-cols"))?;
            if !is_numeric_scalar(f.data_type()) {
                return Err(wrong(
                    "feature",
                    c,
                    f.data_type(),
                    "a numeric scalar (integer or float)",
                ));
            }
        }
        VectorSource::Features(cols.clone())
    } else if let Some(name) = &opts.activations_col {
        let f = schema
            .field_with_name(name)
            .map_err(|_| missing("activations", name, "use --activations-col NAME"))?;
        if !is_float_vector(f.data_type()) {
            return Err(wrong(
                "activations",
                name,
                f.data_type(),
                "List, LargeList or FixedSizeList of f16/f32/f64",
            ));
        }
        VectorSource::Column(name.clone())
    } else {
        let named = ACTIVATION_NAMES.iter().find_map(|n| schema.field_with_name(n).ok());
        if let Some(f) = named {
            if !is_float_vector(f.data_type()) {
                return Err(wrong(
                    "activations",
                    f.name(),
                    f.data_type(),
                    "List, LargeList or FixedSizeList of f16/f32/f64 (or pass --activations-col / --feature-cols)",
                ));
            }
            VectorSource::Column(f.name().clone())
        } else {
            let candidates: Vec<&String> = schema
                .fields()
                .iter()
                .filter(|f| is_float_vector(f.data_type()) && !reserved(f.name()))
                .map(|f| f.name())
                .collect();
            match candidates.as_slice() {
                [one] => VectorSource::Column((*one).clone()),
                [] => {
                    let numeric: Vec<&String> = schema
                        .fields()
                        .iter()
                        .filter(|f| is_numeric_scalar(f.data_type()) && !reserved(f.name()))
                        .map(|f| f.name())
                        .collect();
                    let hint = if numeric.is_empty() {
                        "use --activations-col NAME for a vector column, or --feature-cols A,B,C for numeric columns"
                            .to_string()
                    } else {
                        let names: Vec<&str> = numeric.iter().map(|s| s.as_str()).collect();
                        format!(
                            "found numeric columns {}, use --feature-cols {}",
                            names.join(","),
                            names.join(",")
                        )
                    };
                    return Err(InputError::NoVectorColumn {
                        path: path.clone(),
                        hint,
                    });
                }
                many => {
                    let names: Vec<String> = many.iter().map(|s| format!("`{s}`")).collect();
                    return Err(InputError::AmbiguousVectorColumn {
                        path: path.clone(),
                        candidates: names.join(", "),
                    });
                }
            }
        }
    };
    Ok(Roles {
        id,
        label,
        vectors,
        probs,
        losses: opts.loss_col.clone(),
    })
}

/// The first file's schema, with a column made nullable where another file's is: the outputs
/// hold every file's rows (one writer's required column beside another's optional one, with
/// nulls, failed the write after the whole analysis).
fn nullable_where_any_file_is(sources: &[Source]) -> SchemaRef {
    let first = sources[0].schema();
    let nullable: Vec<bool> = (0..first.fields().len())
        .map(|i| sources.iter().any(|s| s.schema().field(i).is_nullable()))
        .collect();
    if first.fields().iter().zip(&nullable).all(|(f, &n)| f.is_nullable() == n) {
        return first.clone();
    }
    let fields: Vec<arrow_schema::FieldRef> = first
        .fields()
        .iter()
        .zip(nullable)
        .map(|(f, n)| std::sync::Arc::new(f.as_ref().clone().with_nullable(n)))
        .collect();
    std::sync::Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        first.metadata().clone(),
    ))
}

/// First difference between two schemas, ignoring top-level nullability and list item names,
/// which writers set differently for the same data (a list's `item` or `element`; a column
/// required or optional). A list's elements required in one file and optional in another differ.
fn schema_difference(a: &SchemaRef, b: &SchemaRef) -> Option<String> {
    let names = |s: &SchemaRef| s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        return Some(format!(
            "columns [{}] vs [{}]",
            names(a).join(", "),
            names(b).join(", ")
        ));
    }
    a.fields().iter().zip(b.fields()).find_map(|(fa, fb)| {
        let (ta, tb) = (fa.data_type(), fb.data_type());
        (!same_but_dates(ta, tb)).then(|| format!("column `{}` is {ta} vs {tb}", fa.name()))
    })
}

/// Whether two columns' types are one to a dataset: equal as `equals_datatype` has it (list item
/// names aside), or differing only where one holds days as date32 and the other as date64, at
/// any depth (pyarrow stores a date64 as days, arrow-rs as milliseconds). Struct fields match by
/// name, in any order: `equals_datatype` matches them by position, and the cast to the first
/// file's types (`io::write::conform`) then relabelled another file's `x, y` as `a, b` without a
/// word; a map's entries match by position, as their names are the writer's convention.
/// Batches are cast to the first file's types.
fn same_but_dates(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    let child = |x: &arrow_schema::FieldRef, y: &arrow_schema::FieldRef| {
        x.is_nullable() == y.is_nullable() && same_but_dates(x.data_type(), y.data_type())
    };
    match (a, b) {
        (Date32 | Date64, Date32 | Date64) => true,
        (List(x), List(y)) | (LargeList(x), LargeList(y)) => child(x, y),
        (FixedSizeList(x, n), FixedSizeList(y, m)) => n == m && child(x, y),
        (Map(x, s), Map(y, t)) => {
            s == t
                && x.is_nullable() == y.is_nullable()
                && match (x.data_type(), y.data_type()) {
                    (Struct(p), Struct(q)) => p.len() == q.len() && p.iter().zip(q.iter()).all(|(p, q)| child(p, q)),
                    _ => child(x, y),
                }
        }
        (Dictionary(k, x), Dictionary(l, y)) => k == l && same_but_dates(x, y),
        // One to one by name; where a name repeats, by position and name (a cast by name
        // would fill both of the first file's `a, a` from the other's one `a`).
        (Struct(x), Struct(y)) if has_unique_names(x) && has_unique_names(y) => {
            x.len() == y.len() && x.iter().all(|f| y.find(f.name()).is_some_and(|(_, g)| child(f, g)))
        }
        (Struct(x), Struct(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(f, g)| f.name() == g.name() && child(f, g))
        }
        _ => a.equals_datatype(b),
    }
}

/// Whether no two of `fields` share a name.
fn has_unique_names(fields: &arrow_schema::Fields) -> bool {
    let mut names: Vec<&String> = fields.iter().map(|f| f.name()).collect();
    names.sort_unstable();
    names.windows(2).all(|pair| pair[0] != pair[1])
}

/// Checks that `s`'s date64 values that `first` stores as date32 (at the top level or nested)
/// hold whole days, which the outputs (of the first file's schema) can keep exactly
/// (`io::write::conform`); else an error naming the record's row, before any analysis runs.
/// Reads those columns only, and only in such files.
fn dates_are_whole_days(first: &Source, s: &Source) -> Result<(), InputError> {
    let narrowed = first
        .schema()
        .fields()
        .iter()
        .zip(s.schema().fields())
        .enumerate()
        .filter(|(_, (a, b))| a.data_type() != b.data_type() && holds_date64(b.data_type()));
    for (root, (first_field, field)) in narrowed {
        let batches = s.batches_of_roots(vec![root], None, DEFAULT_BATCH_ROWS)?;
        let found = first_partial_day_in(first_field.data_type(), batches.map(|b| b.map(|b| b.column(0).clone())))?;
        if let Some((row, ms)) = found {
            return Err(InputError::PartialDay {
                path: s.path.clone(),
                column: field.name().clone(),
                row,
                ms,
                first: first.path.clone(),
            });
        }
    }
    Ok(())
}

/// The first record (its row, counted over `batches`, the column's values batch by batch)
/// holding a date64 that is not a whole day where `first` (the first file's type of the column)
/// holds date32, with that value in milliseconds.
fn first_partial_day_in(
    first: &DataType,
    batches: impl Iterator<Item = Result<ArrayRef, InputError>>,
) -> Result<Option<(u64, i64)>, InputError> {
    let mut row0 = 0u64;
    for values in batches {
        let values = values?;
        if let Some((row, ms)) = partial_day_under(first, &values) {
            return Ok(Some((row0 + row as u64, ms)));
        }
        row0 += values.len() as u64;
    }
    Ok(None)
}

/// The index into `array` of the first element holding (itself or nested) a date64 that is not
/// a whole day where `first` holds date32, with that value. For arrays as the Parquet reader
/// makes them: not sliced (a list's values are its offsets' whole range), nothing under a null.
fn partial_day_under(first: &DataType, array: &ArrayRef) -> Option<(usize, i64)> {
    use DataType::*;
    // A child array's index back to its parent's, through the parent's offsets.
    fn parent<O: Copy + TryInto<usize>>(offsets: &[O], (child, ms): (usize, i64)) -> (usize, i64) {
        let at = offsets.partition_point(|&o| o.try_into().unwrap_or(usize::MAX) <= child);
        (at.saturating_sub(1), ms)
    }
    match (first, array.data_type()) {
        (Date32, Date64) => crate::io::write::first_partial_day(array),
        (List(f), List(_)) => {
            let list = array.as_list::<i32>();
            let found = partial_day_under(f.data_type(), list.values())?;
            Some(parent(list.value_offsets(), found))
        }
        (LargeList(f), LargeList(_)) => {
            let list = array.as_list::<i64>();
            let found = partial_day_under(f.data_type(), list.values())?;
            Some(parent(list.value_offsets(), found))
        }
        (FixedSizeList(f, n), FixedSizeList(_, _)) => {
            let (child, ms) = partial_day_under(f.data_type(), array.as_fixed_size_list().values())?;
            Some((child / (*n).max(1) as usize, ms))
        }
        // A map's key and value by position, as `same_but_dates` matches them (writers name
        // them differently: by name, a value named otherwise went unchecked).
        (Map(f, _), Map(_, _)) => {
            let map = array.as_map();
            let found = match f.data_type() {
                Struct(fields) => fields
                    .iter()
                    .zip(map.entries().columns())
                    .filter_map(|(f, column)| partial_day_under(f.data_type(), column))
                    .min_by_key(|found| found.0),
                first_entries => {
                    let entries: ArrayRef = std::sync::Arc::new(map.entries().clone());
                    partial_day_under(first_entries, &entries)
                }
            }?;
            Some(parent(map.value_offsets(), found))
        }
        // By name: the fields may come in another order (`same_but_dates`).
        (Struct(fields), Struct(_)) => fields
            .iter()
            .filter_map(|f| partial_day_under(f.data_type(), array.as_struct().column_by_name(f.name())?))
            .min_by_key(|found| found.0),
        // Unpacked: one value per record (the column is checked in files that need it only).
        (Dictionary(_, first_values), Dictionary(_, values)) => {
            let unpacked = arrow_cast::cast(array, values).ok()?;
            partial_day_under(first_values, &unpacked)
        }
        _ => None,
    }
}

/// Types a source column may have: what names a group (strings, integers, booleans, dates, and
/// dictionaries of them).
fn is_source_type(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, values) => is_source_type(values),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean => true,
        DataType::Date32 | DataType::Date64 => true,
        t => t.is_integer(),
    }
}

/// A label value before classes are numbered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum LabelKey {
    Int(i64),
    Str(String),
}

fn label_keys(column: &ArrayRef) -> Result<Vec<LabelKey>, usize> {
    if let Some(row) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err(row);
    }
    Ok(match column.data_type() {
        DataType::Boolean => column
            .as_boolean()
            .iter()
            .map(|v| LabelKey::Int(v.unwrap_or_default() as i64))
            .collect(),
        DataType::Dictionary(_, _) => {
            let dict = column.as_any_dictionary();
            let values = string_values(dict.values());
            dict.normalized_keys()
                .into_iter()
                .map(|k| LabelKey::Str(values[k].clone()))
                .collect()
        }
        t if t.is_integer() => integer_values(column).into_iter().map(LabelKey::Int).collect(),
        _ => string_values(column).into_iter().map(LabelKey::Str).collect(),
    })
}

fn string_values(column: &ArrayRef) -> Vec<String> {
    match column.data_type() {
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect(),
        DataType::LargeUtf8 => column
            .as_string::<i64>()
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect(),
        DataType::Utf8View => column
            .as_string_view()
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect(),
        _ => (0..column.len()).map(|i| format!("{:?}", column.slice(i, 1))).collect(),
    }
}

/// The footer of an input file, with the Arrow types its columns are read as: those of the
/// Arrow schema a writer stored in it, but for a `date64` that pyarrow stored as a Parquet DATE
/// (INT32 days), read as the `date32` it is, at the top level or nested in lists, structs and
/// maps. Read as `date64`, it was written back as plain INT64, which pyarrow reads as integers:
/// the column would not pass through as it was.
pub fn load_input_footer(file: &File, path: &Path) -> Result<ArrowReaderMetadata, InputError> {
    let not_parquet = |cause| InputError::NotParquet {
        path: path.to_path_buf(),
        cause,
    };
    let meta = ArrowReaderMetadata::load(file, Default::default()).map_err(not_parquet)?;
    let stored = meta.schema();
    if !stored.fields().iter().any(|f| holds_date64(f.data_type())) {
        return Ok(meta);
    }
    let physical = parquet::arrow::parquet_to_arrow_schema(meta.parquet_schema(), None).map_err(not_parquet)?;
    let fields: Vec<arrow_schema::FieldRef> = stored
        .fields()
        .iter()
        .zip(physical.fields())
        .map(|(f, p)| days_where_stored_as_days(f, p))
        .collect();
    let schema = std::sync::Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        stored.metadata().clone(),
    ));
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(schema);
    ArrowReaderMetadata::try_new(meta.metadata().clone(), options).map_err(not_parquet)
}

/// Whether a column of type `t` holds a date64 anywhere (nested in lists, maps, structs,
/// dictionaries): only such files' footers are read again by [`load_input_footer`].
fn holds_date64(t: &DataType) -> bool {
    match t {
        DataType::Date64 => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
            holds_date64(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| holds_date64(f.data_type())),
        DataType::Dictionary(_, values) => holds_date64(values),
        _ => false,
    }
}

/// `stored` (the writer's Arrow field) with each `date64` that `physical` (the same field as the
/// Parquet types alone read it: lists of every kind as `List`) holds as `date32` made `date32`.
fn days_where_stored_as_days(
    stored: &arrow_schema::FieldRef,
    physical: &arrow_schema::FieldRef,
) -> arrow_schema::FieldRef {
    use DataType::*;
    let child = |a: &arrow_schema::FieldRef| match physical.data_type() {
        List(b) | LargeList(b) | FixedSizeList(b, _) => days_where_stored_as_days(a, b),
        _ => a.clone(),
    };
    let data_type = match (stored.data_type(), physical.data_type()) {
        (Date64, Date32) => Date32,
        (Dictionary(keys, values), Date32) if **values == Date64 => Dictionary(keys.clone(), Box::new(Date32)),
        (List(a), _) => List(child(a)),
        (LargeList(a), _) => LargeList(child(a)),
        (FixedSizeList(a, n), _) => FixedSizeList(child(a), *n),
        (Map(a, sorted), Map(b, _)) => Map(days_where_stored_as_days(a, b), *sorted),
        (Struct(a), Struct(b)) if a.len() == b.len() => Struct(
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| days_where_stored_as_days(x, y))
                .collect(),
        ),
        _ => return stored.clone(),
    };
    std::sync::Arc::new(stored.as_ref().clone().with_data_type(data_type))
}

/// A Parquet file opened and its footer read, ready to build readers of it.
fn parquet_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, InputError> {
    let file = File::open(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|cause| InputError::NotParquet {
        path: path.to_path_buf(),
        cause,
    })
}

/// A reader over one Parquet file written by a run (read back by the reports and review
/// commands), batch by batch, with its schema (the file's metadata included), known even when it
/// has no rows.
pub fn open_parquet_file(path: &Path) -> Result<(SchemaRef, ParquetRecordBatchReader), InputError> {
    let builder = parquet_builder(path)?;
    // The builder's schema, not the reader's: it keeps the file's key-value metadata.
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| InputError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok((schema, reader))
}

/// The row count in a Parquet file's footer.
pub fn parquet_rows(path: &Path) -> Result<u64, InputError> {
    let builder = parquet_builder(path)?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

/// One whole Parquet file written by a run: its schema and every batch.
pub fn read_parquet_file(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>), InputError> {
    read_parquet_columns(path, |_| true)
}

/// Reads the top-level columns of a Parquet file that `keep(index, name)` selects, in file order.
pub fn read_parquet_columns(
    path: &Path,
    keep: impl Fn((usize, &str)) -> bool,
) -> Result<(SchemaRef, Vec<RecordBatch>), InputError> {
    let mut batches = Vec::new();
    let schema = for_each_parquet_batch(path, keep, |batch| {
        batches.push(batch);
        Ok(())
    })?;
    Ok((schema, batches))
}

/// [`read_parquet_columns`] a batch at a time: `visit` gets each batch in file order (and may
/// stop the read with an error); returns the projected schema.
pub fn for_each_parquet_batch(
    path: &Path,
    keep: impl Fn((usize, &str)) -> bool,
    mut visit: impl FnMut(RecordBatch) -> Result<(), InputError>,
) -> Result<SchemaRef, InputError> {
    let builder = parquet_builder(path)?;
    let roots: Vec<usize> = (builder.schema().fields().iter().enumerate())
        .filter(|(i, f)| keep((*i, f.name().as_str())))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let corrupt = |message: String| InputError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    // The projected reader's schema lacks the file's key-value metadata (pandas' index, a
    // writer's notes), which a file rewritten from it (release, export) must keep.
    let metadata = builder.schema().metadata().clone();
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    let schema = std::sync::Arc::new(reader.schema().as_ref().clone().with_metadata(metadata));
    for batch in reader {
        visit(batch.map_err(|e| corrupt(e.to_string()))?)?;
    }
    Ok(schema)
}

/// Reads, validates and class-groups the whole input. See the module doc for the passes.
pub fn read_dataset(inputs: &[PathBuf], opts: &ReadOptions) -> Result<Dataset, InputError> {
    read_dataset_with_progress(inputs, opts, &NoProgress)
}

/// [`read_dataset`], reporting the vector pass (the long one) to `progress`.
pub fn read_dataset_with_progress(
    inputs: &[PathBuf],
    opts: &ReadOptions,
    progress: &dyn Progress,
) -> Result<Dataset, InputError> {
    let listed = list_inputs(inputs)?;
    let sources: Vec<Source> = listed
        .par_iter()
        .map(|f| Source::open(&f.path))
        .collect::<Result<_, _>>()?;
    let first = &sources[0];
    for s in &sources[1..] {
        if let Some(difference) = schema_difference(first.schema(), s.schema()) {
            return Err(InputError::SchemaMismatch {
                path: s.path.clone(),
                first: first.path.clone(),
                difference,
            });
        }
        dates_are_whole_days(first, s)?;
    }
    let roles = resolve_roles(first, opts)?;
    let total: u64 = sources.iter().map(|s| s.info.rows).sum();
    if total == 0 {
        return Err(InputError::Empty {
            path: first.path.clone(),
            files: sources.len(),
        });
    }

    // Pass 1: keys and labels.
    let per_file: Vec<(Option<RecordKeys>, Vec<LabelKey>)> = sources
        .par_iter()
        .map(|s| read_keys_and_labels(s, &roles))
        .collect::<Result<_, _>>()?;
    let key_names: Vec<&str> = listed.iter().map(|f| f.key_name.as_str()).collect();
    let keys = merge_keys(&sources, &key_names, &roles, per_file.iter().map(|(k, _)| k.as_ref()))?;
    let id_type = roles
        .id
        .as_ref()
        .and_then(|id| first.schema().field_with_name(id).ok())
        .map(|f| f.data_type());
    let keys = unsigned_above_i64(keys, id_type);
    let label_keys: Vec<&LabelKey> = per_file.iter().flat_map(|(_, l)| l.iter()).collect();
    let mut distinct: Vec<LabelKey> = label_keys
        .iter()
        .map(|&k| k.clone())
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    distinct.sort();
    let class_of: HashMap<&LabelKey, u32> = distinct.iter().enumerate().map(|(i, k)| (k, i as u32)).collect();
    let labels: Vec<u32> = label_keys.iter().map(|k| class_of[k]).collect();
    let classes: Vec<String> = distinct
        .iter()
        .map(|k| match k {
            LabelKey::Int(v) => v.to_string(),
            LabelKey::Str(s) => s.clone(),
        })
        .collect();
    let (class_offsets, position, order) = group_by_class(&labels, classes.len());

    // Pass 2: vectors, straight into class-grouped positions.
    let (x, dim, feature_scaling, feature_hashes) = match &roles.vectors {
        VectorSource::Column(col) => {
            progress.start("read", total);
            let read = read_vectors(&sources, col, &position, &keys, progress);
            progress.finish();
            let (x, dim) = read?;
            (x, dim, None, None)
        }
        VectorSource::Features(cols) => {
            let given = opts.feature_scaling.as_deref().filter(|s| s.len() == cols.len());
            let read = read_scalars(&sources, cols, &position, Scaling::Standardize(given))?;
            (read.x, cols.len(), Some(read.scaling), read.raw_hashes)
        }
    };
    let probs = match &roles.probs {
        Some(col) => {
            let (p, width) = read_vectors(&sources, col, &position, &keys, &NoProgress)?;
            if width != classes.len() {
                return Err(InputError::WrongType {
                    path: first.path.clone(),
                    role: "probs",
                    column: col.clone(),
                    found: format!("vectors of length {width}"),
                    expected: "one probability per class (as many as there are distinct labels); pass --probs-col NAME or rename the column",
                });
            }
            Some(p)
        }
        None => None,
    };
    let loss_is_vector = roles
        .losses
        .as_ref()
        .and_then(|c| first.schema().field_with_name(c).ok())
        .is_some_and(|f| is_float_vector(f.data_type()));
    let losses = match &roles.losses {
        Some(col) if loss_is_vector => Some(read_vectors(&sources, col, &position, &keys, &NoProgress)?),
        Some(col) => Some((
            read_scalars(&sources, std::slice::from_ref(col), &position, Scaling::Keep)?.x,
            1,
        )),
        None => None,
    };
    let source_col = match &opts.source_col {
        Some(name) => {
            let field = first
                .schema()
                .field_with_name(name)
                .map_err(|_| InputError::MissingColumn {
                    path: first.path.clone(),
                    role: "source",
                    column: name.clone(),
                    present: column_list(first.schema()),
                    hint: "use --source-col NAME",
                })?;
            // One short value per record to group by: a vector or a blob would be printed whole,
            // per record, into scores.parquet and the reports.
            if !is_source_type(field.data_type()) {
                return Err(InputError::WrongType {
                    path: first.path.clone(),
                    role: "source",
                    column: name.clone(),
                    found: field.data_type().to_string(),
                    expected: "one value per record (a string, integer, boolean or date)",
                });
            }
            Some(name.clone())
        }
        None => (first.schema().field_with_name("source").ok())
            .filter(|f| is_source_type(f.data_type()))
            .map(|_| "source".to_string()),
    };
    let record_sources = match &source_col {
        Some(col) => {
            let per_file: Vec<Vec<String>> = sources
                .par_iter()
                .map(|s| {
                    let mut out = Vec::with_capacity(s.info.rows as usize);
                    for b in s.read_columns(&[col.as_str()], None)? {
                        out.extend(display_values(b.column(0)));
                    }
                    Ok(out)
                })
                .collect::<Result<_, InputError>>()?;
            Some(per_file.concat())
        }
        None => None,
    };
    let schema = nullable_where_any_file_is(&sources);
    Ok(Dataset {
        files: sources.into_iter().map(|s| s.info).collect(),
        schema,
        id_column: roles.id,
        label_column: roles.label,
        vectors: roles.vectors,
        keys,
        labels,
        classes,
        dim,
        x,
        class_offsets,
        order,
        probs,
        losses,
        source_column: source_col,
        sources: record_sources,
        feature_scaling,
        feature_hashes,
    })
}

/// How [`read_scalars`] scales each column.
enum Scaling<'a> {
    /// Values as they are (losses).
    Keep,
    /// To zero mean and unit variance (feature columns), or with given (mean, scale) pairs.
    Standardize(Option<&'a [(f64, f64)]>),
}

/// Any column as display text per row (sources for reports): strings as they are, integers in
/// decimal, dictionary-encoded strings decoded, nulls empty.
fn display_values(column: &ArrayRef) -> Vec<String> {
    match column.data_type() {
        t if t.is_integer() => {
            let values = integer_values(column);
            (0..column.len())
                .map(|i| {
                    if column.is_null(i) {
                        String::new()
                    } else {
                        values[i].to_string()
                    }
                })
                .collect()
        }
        DataType::Dictionary(_, _) => {
            let dict = column.as_any_dictionary();
            let values = display_values(dict.values());
            dict.normalized_keys()
                .into_iter()
                .enumerate()
                .map(|(i, k)| {
                    if column.is_null(i) {
                        String::new()
                    } else {
                        values[k].clone()
                    }
                })
                .collect()
        }
        DataType::Boolean => (column.as_boolean().iter())
            .map(|v| v.map(|b| b.to_string()).unwrap_or_default())
            .collect(),
        // A day as the same text whichever way a file stores it; a time of day as a datetime.
        DataType::Date64 => {
            let ms = column.as_primitive::<arrow_array::types::Date64Type>();
            let days: ArrayRef =
                std::sync::Arc::new(ms.unary::<_, arrow_array::types::Date32Type>(|v| v.div_euclid(86_400_000) as i32));
            let (as_days, as_datetimes) = (formatted(&days), formatted(column));
            (0..ms.len())
                .map(|i| match ms.value(i).rem_euclid(86_400_000) {
                    0 => as_days[i].clone(),
                    _ => as_datetimes[i].clone(),
                })
                .collect()
        }
        DataType::Date32 => formatted(column),
        _ => string_values(column),
    }
}

/// Each value as Arrow displays it (dates as ISO days); nulls empty.
fn formatted(column: &ArrayRef) -> Vec<String> {
    let options = arrow_cast::display::FormatOptions::default();
    match arrow_cast::display::ArrayFormatter::try_new(column.as_ref(), &options) {
        Ok(f) => (0..column.len())
            .map(|i| {
                if column.is_null(i) {
                    String::new()
                } else {
                    f.value(i).to_string()
                }
            })
            .collect(),
        Err(_) => string_values(column),
    }
}

fn read_keys_and_labels(s: &Source, roles: &Roles) -> Result<(Option<RecordKeys>, Vec<LabelKey>), InputError> {
    let mut cols = vec![roles.label.as_str()];
    if let Some(id) = &roles.id {
        cols.push(id);
    }
    let batches = s.read_columns(&cols, None)?;
    let mut labels = Vec::with_capacity(s.info.rows as usize);
    let mut keys: Option<RecordKeys> = None;
    let mut row0 = 0u64;
    for b in &batches {
        let col = b.column_by_name(&roles.label).expect("projected label column");
        let null_at = |row: usize| InputError::NullValue {
            path: s.path.clone(),
            role: "label",
            column: roles.label.clone(),
            row: row0 + row as u64,
        };
        labels.extend(label_keys(col).map_err(null_at)?);
        if let Some(id) = &roles.id {
            // Decoded first: a null can sit in a dictionary's values as well as in its keys.
            let col = &decoded(b.column_by_name(id).expect("projected id column"));
            if let Some(row) = (0..col.len()).find(|&i| col.is_null(i)) {
                return Err(InputError::NullValue {
                    path: s.path.clone(),
                    role: "id",
                    column: id.clone(),
                    row: row0 + row as u64,
                });
            }
            match (
                col.data_type().is_integer(),
                keys.get_or_insert_with(|| {
                    if col.data_type().is_integer() {
                        RecordKeys::Int(vec![])
                    } else {
                        RecordKeys::Str(vec![])
                    }
                }),
            ) {
                (true, RecordKeys::Int(v)) => v.extend(integer_values(col)),
                (false, RecordKeys::Str(v)) => v.extend(string_values(col)),
                _ => unreachable!("one id type per file"),
            }
        }
        row0 += b.num_rows() as u64;
    }
    Ok((keys, labels))
}

/// UInt64 ids above `i64::MAX` (64-bit hashes as ids) as their decimal text: kept as i64 they
/// wrapped to negative numbers in scores.parquet, and a release (which matches the quarantine's
/// ids as written) left scores.parquet disagreeing with it. Smaller ids stay integers.
fn unsigned_above_i64(keys: RecordKeys, id_type: Option<&DataType>) -> RecordKeys {
    match keys {
        RecordKeys::Int(v) if id_type == Some(&DataType::UInt64) && v.iter().any(|&k| k < 0) => {
            RecordKeys::Str(v.into_iter().map(|k| (k as u64).to_string()).collect())
        }
        keys => keys,
    }
}

/// Concatenates per-file keys (or makes `name#row` keys from the files' key names) and rejects
/// duplicates, naming both places.
fn merge_keys<'a>(
    sources: &[Source],
    key_names: &[&str],
    roles: &Roles,
    per_file: impl Iterator<Item = Option<&'a RecordKeys>>,
) -> Result<RecordKeys, InputError> {
    let per_file: Vec<Option<&RecordKeys>> = per_file.collect();
    let Some(id_col) = &roles.id else {
        let keys = sources
            .iter()
            .zip(key_names)
            .flat_map(|(s, name)| (0..s.info.rows).map(move |r| format!("{name}#{r}")))
            .collect();
        return Ok(RecordKeys::Str(keys));
    };
    let keys = match per_file.iter().flatten().next() {
        Some(RecordKeys::Int(_)) => RecordKeys::Int(
            per_file
                .iter()
                .flatten()
                .flat_map(|k| match k {
                    RecordKeys::Int(v) => v.clone(),
                    RecordKeys::Str(_) => vec![],
                })
                .collect(),
        ),
        _ => RecordKeys::Str(
            per_file
                .iter()
                .flatten()
                .flat_map(|k| match k {
                    RecordKeys::Str(v) => v.clone(),
                    RecordKeys::Int(_) => vec![],
                })
                .collect(),
        ),
    };
    // Locate a global row: (file, row in file).
    let starts: Vec<u64> = sources
        .iter()
        .scan(0u64, |acc, s| {
            let start = *acc;
            *acc += s.info.rows;
            Some(start)
        })
        .collect();
    let locate = |g: usize| {
        let f = starts.partition_point(|&st| st <= g as u64) - 1;
        (&sources[f].path, g as u64 - starts[f])
    };
    let duplicate = |first: usize, second: usize| {
        let (first_path, first_row) = locate(first);
        let (path, row) = locate(second);
        InputError::DuplicateId {
            path: path.clone(),
            column: id_col.clone(),
            row,
            id: keys.display(second),
            first_path: first_path.clone(),
            first_row,
        }
    };
    let mut by_key: Vec<u32> = (0..keys.len() as u32).collect();
    let dup = match &keys {
        RecordKeys::Int(v) => {
            by_key.sort_by_key(|&i| (v[i as usize], i));
            by_key.windows(2).find(|w| v[w[0] as usize] == v[w[1] as usize])
        }
        RecordKeys::Str(v) => {
            by_key.sort_by(|&a, &b| v[a as usize].cmp(&v[b as usize]).then(a.cmp(&b)));
            by_key.windows(2).find(|w| v[w[0] as usize] == v[w[1] as usize])
        }
    };
    match dup {
        Some(w) => Err(duplicate(w[0] as usize, w[1] as usize)),
        None => Ok(keys),
    }
}

/// (class offsets, global row -> position, position -> global row), stable within each class.
pub(crate) fn group_by_class(labels: &[u32], n_classes: usize) -> (Vec<usize>, Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0usize; n_classes + 1];
    for &l in labels {
        offsets[l as usize + 1] += 1;
    }
    for c in 0..n_classes {
        offsets[c + 1] += offsets[c];
    }
    let mut next = offsets.clone();
    let mut position = vec![0u32; labels.len()];
    let mut order = vec![0u32; labels.len()];
    for (g, &l) in labels.iter().enumerate() {
        let p = next[l as usize];
        next[l as usize] += 1;
        position[g] = p as u32;
        order[p] = g as u32;
    }
    (offsets, position, order)
}

/// Raw pointer to the matrix, shared by row-group tasks that write disjoint rows.
struct RowSink {
    ptr: *mut f32,
    rows: usize,
    dim: usize,
}
// SAFETY: tasks write rows at `position[g]`, a permutation, so no two tasks touch the same row.
unsafe impl Sync for RowSink {}
impl RowSink {
    #[allow(clippy::mut_from_ref)]
    fn row(&self, pos: usize) -> &mut [f32] {
        assert!(pos < self.rows);
        // SAFETY: in bounds (asserted), and disjoint across callers (see the Sync impl).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(pos * self.dim), self.dim) }
    }
}

/// Every (file index, row group, first global row of the group) of the input.
fn row_group_tasks(sources: &[Source]) -> Vec<(usize, usize, usize)> {
    let mut tasks = Vec::new();
    let mut g = 0usize;
    for (f, s) in sources.iter().enumerate() {
        for (rg, rows) in s.row_group_rows().into_iter().enumerate() {
            tasks.push((f, rg, g));
            g += rows;
        }
    }
    tasks
}

fn read_vectors(
    sources: &[Source],
    col: &str,
    position: &[u32],
    keys: &RecordKeys,
    progress: &dyn Progress,
) -> Result<(Vec<f32>, usize), InputError> {
    // The length of the dataset's first vector sets `dim`; every other row is checked against it.
    // One row decoded, not the whole first row group.
    let first_batch = match sources.iter().find(|s| s.info.rows > 0) {
        Some(s) => s.batches(&[col], Some(vec![0]), 1)?.next().transpose()?,
        None => None,
    };
    let dim = match first_batch.map(|b| first_length(b.column(0))) {
        Some(Some(d)) if d > 0 => d,
        _ => 0, // row 0 is null or empty: the copy below reports it with its position
    };
    let n = position.len();
    let mut x = vec![0f32; n * dim.max(1)];
    ask_for_huge_pages(&mut x);
    let sink = RowSink {
        ptr: x.as_mut_ptr(),
        rows: n,
        dim: dim.max(1),
    };
    let tasks = row_group_tasks(sources);
    let results: Vec<Result<(), InputError>> = tasks
        .par_iter()
        .map(|&(f, rg, g0)| {
            let s = &sources[f];
            let file_start: usize = sources[..f].iter().map(|s| s.info.rows as usize).sum();
            let mut g = g0;
            // Small batches, copied as they are decoded: a row group's vectors (64 MiB for 65 536
            // x 256) decoded whole were fresh pages for every group, faulted in, grown by
            // reallocation and copied again; a batch this size is reused warm from the allocator.
            for b in s.batches(&[col], Some(vec![rg]), VECTOR_BATCH_ROWS)? {
                let b = b?;
                copy_vectors(b.column(0), dim, |r| sink.row(position[g + r] as usize)).map_err(|(r, problem)| {
                    InputError::BadVector {
                        path: s.path.clone(),
                        column: col.to_string(),
                        row: (g + r - file_start) as u64,
                        id: keys.display(g + r),
                        problem,
                    }
                })?;
                g += b.num_rows();
                progress.advance(b.num_rows() as u64);
            }
            Ok(())
        })
        .collect();
    // Report the first bad row in input order, whatever order the tasks finished in.
    results.into_iter().collect::<Result<(), _>>()?;
    Ok((x, dim))
}

/// Asks Linux to back a large matrix with 2 MiB pages where transparent huge pages are on for
/// regions that ask (`madvise`, the common default). Each 4 KiB page of the matrix was a page
/// fault when first written (262 144 per GB), a TLB entry in every later pass over it, and one
/// more page to unmap when it is freed. Only from 64 MiB: an allocation that large is a fresh,
/// untouched mapping (glibc's mmap threshold is at most 32 MiB), so the advice comes before its
/// pages exist; a smaller one may sit in the heap, where the hint would outlive it. A hint:
/// refused or unsupported, the pages stay small.
fn ask_for_huge_pages(values: &mut [f32]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = std::mem::size_of_val(values);
        if bytes < 64 << 20 {
            return;
        }
        // The whole 2 MiB pages inside the allocation (at least 31 of them at this size).
        let start = values.as_mut_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let len = (start + bytes - first) / HUGE * HUGE;
        // SAFETY: advice on whole pages inside `values`' own allocation; it changes how the
        // kernel backs them, never their contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = values;
}

/// What [`read_scalars`] read: one vector per record, by position (class-grouped order), the
/// scaling applied, and with [`Scaling::Standardize`] each record's hash of its values as read
/// (by position), which no scaling changes.
struct Scalars {
    x: Vec<f32>,
    scaling: super::FeatureScaling,
    raw_hashes: Option<Vec<u128>>,
}

/// Scalar numeric columns as a row-major matrix in class-grouped positions, scaled as `scaling`
/// says, with the (mean, scale) pair used for each column.
fn read_scalars(
    sources: &[Source],
    cols: &[String],
    position: &[u32],
    scaling: Scaling<'_>,
) -> Result<Scalars, InputError> {
    let dim = cols.len();
    let n = position.len();
    let mut columns = vec![Vec::<f64>::with_capacity(n); dim];
    for s in sources {
        let names: Vec<&str> = cols.iter().map(|c| c.as_str()).collect();
        let mut row0 = 0u64;
        for b in s.read_columns(&names, None)? {
            for (j, c) in cols.iter().enumerate() {
                let values = numeric_column(b.column_by_name(c).expect("projected")).map_err(|(r, problem)| {
                    InputError::BadVector {
                        path: s.path.clone(),
                        column: c.clone(),
                        row: row0 + r as u64,
                        id: "-".into(),
                        problem,
                    }
                })?;
                columns[j].extend(values);
            }
            row0 += b.num_rows() as u64;
        }
    }
    // Standardize: features on different scales would otherwise let one column dominate every distance.
    let mut x = vec![0f32; n * dim];
    let mut used = Vec::with_capacity(dim);
    for (j, col) in columns.iter().enumerate() {
        let mean = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let (mean, scale) = match (&scaling, var > 0.0) {
            (Scaling::Keep, _) => (0.0, 1.0),
            (Scaling::Standardize(Some(given)), _) => given[j],
            (Scaling::Standardize(None), true) => (mean, 1.0 / var.sqrt()),
            (Scaling::Standardize(None), false) => (mean, 0.0),
        };
        for (g, v) in col.iter().enumerate() {
            x[position[g] as usize * dim + j] = ((v - mean) * scale) as f32;
        }
        used.push((mean, scale));
    }
    // A re-fit standardizes by tonight's data: hashes of the scaled values would change for
    // every record, and reviewed releases (kept while a record's hash holds) would be lost.
    let raw_hashes = matches!(scaling, Scaling::Standardize(_)).then(|| {
        let mut hashes = vec![0u128; n];
        let mut bytes = Vec::with_capacity(dim * 8);
        for g in 0..n {
            bytes.clear();
            columns
                .iter()
                .for_each(|col| bytes.extend_from_slice(&col[g].to_le_bytes()));
            hashes[position[g] as usize] = twox_hash::XxHash3_128::oneshot(&bytes);
        }
        hashes
    });
    Ok(Scalars {
        x,
        scaling: used,
        raw_hashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A date64 with a time of day where the first file holds days is found in lists and
    /// structs, and named by its record's row counted over every batch.
    #[test]
    fn partial_days_are_found_at_any_depth_and_counted_over_batches() {
        use arrow_array::builder::{Date64Builder, ListBuilder};
        use arrow_schema::Field;
        use std::sync::Arc;
        const DAY: i64 = 86_400_000;
        let lists = |records: &[&[i64]]| -> ArrayRef {
            let mut list = ListBuilder::new(Date64Builder::new());
            for values in records {
                list.values().append_slice(values);
                list.append(true);
            }
            Arc::new(list.finish())
        };
        let batches = [
            lists(&[&[DAY], &[2 * DAY, 3 * DAY]]),
            lists(&[&[], &[DAY, DAY + 5], &[DAY]]),
        ];
        let list_of = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        let found = |first: &DataType, batches: &[ArrayRef]| {
            first_partial_day_in(first, batches.iter().cloned().map(Ok)).unwrap()
        };
        assert_eq!(found(&list_of(DataType::Date32), &batches), Some((3, DAY + 5)));
        // Kept as date64 (the first file's type): nothing to lose, nothing refused.
        assert_eq!(found(&list_of(DataType::Date64), &batches), None);
        let whole = [lists(&[&[DAY], &[-3 * DAY]])];
        assert_eq!(found(&list_of(DataType::Date32), &whole), None);

        let days: ArrayRef = Arc::new(arrow_array::Date64Array::from(vec![DAY, 2 * DAY, 2 * DAY - 1]));
        let ids: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3]));
        let fields = |t: DataType| {
            arrow_schema::Fields::from(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("day", t, false),
            ])
        };
        let records: ArrayRef = Arc::new(arrow_array::StructArray::new(
            fields(DataType::Date64),
            vec![ids, days],
            None,
        ));
        let first = DataType::Struct(fields(DataType::Date32));
        assert_eq!(found(&first, &[records]), Some((2, 2 * DAY - 1)));

        // A dictionary of dates: the record whose key points at the value is named.
        let values = arrow_array::Date64Array::from(vec![DAY, DAY + 1]);
        let keys = arrow_array::Int32Array::from(vec![0, 0, 1, 0]);
        let coded: ArrayRef = Arc::new(arrow_array::DictionaryArray::new(keys, Arc::new(values)));
        let dictionary_of = |t: DataType| DataType::Dictionary(Box::new(DataType::Int32), Box::new(t));
        assert_eq!(found(&dictionary_of(DataType::Date32), &[coded]), Some((2, DAY + 1)));
        // Such types are one dataset's, at any depth; other differences are not.
        assert!(same_but_dates(
            &dictionary_of(DataType::Date32),
            &dictionary_of(DataType::Date64)
        ));
        assert!(same_but_dates(
            &list_of(first.clone()),
            &list_of(DataType::Struct(fields(DataType::Date64)))
        ));
        assert!(!same_but_dates(&list_of(DataType::Date32), &list_of(DataType::Int32)));
        assert!(!same_but_dates(&first, &DataType::Struct(fields(DataType::Int64))));

        // A map whose entries this file's writer named otherwise (arrow-rs `keys`/`values`,
        // pyarrow `key`/`value`): its values are still checked, by position.
        let entry_fields = |key: &str, value: &str, t: DataType| {
            arrow_schema::Fields::from(vec![Field::new(key, DataType::Utf8, false), Field::new(value, t, true)])
        };
        let keys: ArrayRef = Arc::new(arrow_array::StringArray::from(vec!["x", "y", "z"]));
        let values: ArrayRef = Arc::new(arrow_array::Date64Array::from(vec![DAY, DAY, 2 * DAY - 1]));
        let entries = arrow_array::StructArray::new(
            entry_fields("keys", "values", DataType::Date64),
            vec![keys, values],
            None,
        );
        let map: ArrayRef = Arc::new(arrow_array::MapArray::new(
            Arc::new(Field::new("entries", entries.data_type().clone(), false)),
            arrow_buffer::OffsetBuffer::new(vec![0, 2, 3].into()),
            entries,
            None,
            false,
        ));
        let first = DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(entry_fields("key", "value", DataType::Date32)),
                false,
            )),
            false,
        );
        assert_eq!(found(&first, &[map]), Some((1, 2 * DAY - 1)));
    }

    /// Struct fields are matched by name: renamed ones are other data (a cast by position
    /// relabelled them), reordered ones the same; a map's entries by position, whose names are
    /// each writer's own (`entries`/`key`, `key_value`/`keys`).
    #[test]
    fn struct_fields_match_by_name_and_map_entries_by_position() {
        use arrow_schema::{DataType, Field, Fields};
        use std::sync::Arc;
        let pair = |a: &str, b: &str| {
            DataType::Struct(Fields::from(vec![
                Field::new(a, DataType::Int64, false),
                Field::new(b, DataType::Utf8, true),
            ]))
        };
        let list_of = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        assert!(same_but_dates(&pair("a", "b"), &pair("a", "b")));
        assert!(!same_but_dates(&pair("a", "b"), &pair("x", "y")));
        assert!(!same_but_dates(&pair("a", "b"), &pair("a", "y")));
        assert!(!same_but_dates(&list_of(pair("a", "b")), &list_of(pair("x", "y"))));
        // Reordered: the same fields, types and all.
        let reordered = DataType::Struct(Fields::from(vec![
            Field::new("b", DataType::Utf8, true),
            Field::new("a", DataType::Int64, false),
        ]));
        assert!(same_but_dates(&pair("a", "b"), &reordered));
        assert!(same_but_dates(&list_of(pair("a", "b")), &list_of(reordered)));
        let swapped_types = DataType::Struct(Fields::from(vec![
            Field::new("b", DataType::Int64, false),
            Field::new("a", DataType::Utf8, true),
        ]));
        assert!(!same_but_dates(&pair("a", "b"), &swapped_types));
        let map = |entries: &str, key: &str, value: &str| {
            let fields = Fields::from(vec![
                Field::new(key, DataType::Utf8, false),
                Field::new(value, DataType::Int64, true),
            ]);
            DataType::Map(Arc::new(Field::new(entries, DataType::Struct(fields), false)), false)
        };
        assert!(same_but_dates(
            &map("entries", "key", "value"),
            &map("key_value", "keys", "values")
        ));
        // A repeated name: by position and name, so `a, a` and `a, b` differ.
        let twice = |b: &str| {
            DataType::Struct(Fields::from(vec![
                Field::new("a", DataType::Int64, false),
                Field::new(b, DataType::Int64, false),
            ]))
        };
        assert!(!same_but_dates(&twice("a"), &twice("b")));
        assert!(!same_but_dates(&twice("b"), &twice("a")));
        assert!(same_but_dates(&twice("a"), &twice("a")));
    }

    #[test]
    fn dates_display_as_days_whichever_way_they_are_stored() {
        const DAY: i64 = 86_400_000;
        let date64: ArrayRef = std::sync::Arc::new(arrow_array::Date64Array::from(vec![
            Some(19_000 * DAY),
            Some(19_000 * DAY + 13 * 3_600_000),
            None,
        ]));
        let date32: ArrayRef = std::sync::Arc::new(arrow_array::Date32Array::from(vec![19_000]));
        let shown = display_values(&date64);
        assert_eq!(shown[0], display_values(&date32)[0]);
        assert_eq!(shown[0], "2022-01-08");
        assert!(shown[1].starts_with("2022-01-08T13:00"), "{shown:?}");
        assert_eq!(shown[2], "");
        let flags: ArrayRef = std::sync::Arc::new(arrow_array::BooleanArray::from(vec![true, false]));
        assert_eq!(display_values(&flags), ["true", "false"]);
    }

    #[test]
    fn sources_are_short_values_that_name_a_group() {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        for ok in [
            DataType::Utf8,
            DataType::Int64,
            DataType::Boolean,
            DataType::Date32,
            dictionary,
        ] {
            assert!(is_source_type(&ok), "{ok}");
        }
        let list = DataType::new_list(DataType::Float32, true);
        for refused in [DataType::Float64, DataType::Binary, list] {
            assert!(!is_source_type(&refused), "{refused}");
        }
    }
}
