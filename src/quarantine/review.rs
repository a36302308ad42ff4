//! After a scan: export the quarantine for review (`datavet export`) and move reviewed records
//! back to clean (`datavet release`), with an append-only audit log. A release keeps the
//! guarantee of the scan: every input row is in exactly one of clean/quarantine, unchanged, and
//! this is checked (row counts and id sets) before anything replaces the previous files.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use arrow_select::filter::filter_record_batch;

use super::{CLEAN_FILE, QUARANTINE_FILE, SCORES_FILE};
use crate::io::{AtomicFile, InputError, OutputError, ParquetSink, Publication, open_parquet_file, read_parquet_file};
use crate::report::REPORT_FILE;

/// The append-only log of releases, one JSON object per line.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// Formats `datavet export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Parquet,
    Csv,
    Jsonl,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "export.parquet",
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }
}

/// Why a review command could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("{dir}: not a datavet output directory ({missing} is missing); pass the --out directory of a scan")]
    NotARun { dir: PathBuf, missing: &'static str },
    #[error("{path}: the input had no id column, so records cannot be released by id")]
    NoIds { path: PathBuf },
    #[error("{path}: {count} id(s) are not in the quarantine (first: {first}); nothing was released")]
    UnknownIds { path: PathBuf, count: usize, first: String },
    #[error("{path}: no ids listed (one id per line; blank lines and lines starting with # are skipped)")]
    NoIdsListed { path: PathBuf },
    #[error("{path}: is one of the run's own outputs; export to a file outside {dir} or under another name")]
    ExportOverRun { path: PathBuf, dir: PathBuf },
    #[error("--{flag} is empty; the audit log records who did what and why")]
    EmptyAuditField { flag: &'static str },
    #[error("{dir}: no reference saved here, so no nightly alert to acknowledge")]
    NoReference { dir: PathBuf },
}

/// `datavet ack`: acknowledges the alert of the last incremental scan into `dir`. A rerun on
/// the same records (a retried job, a night without new data) repeats the last scan's alert
/// until then; after it, such a rerun diffs against the last scan and finds nothing new. Logged
/// in the audit log (who, when, why, which generation). Returns the generation acknowledged.
pub fn acknowledge(dir: &Path, reason: &str, by: &str) -> Result<u64, crate::Error> {
    check_audit_fields(reason, by)?;
    if !dir.is_dir() {
        require(dir, REPORT_FILE)?;
    }
    let _lock = crate::io::lock_output_dir(dir)?;
    let mut publication = Publication::new(dir);
    let Some(generation) = crate::reference::stage_acknowledgement(dir, &mut publication)? else {
        return Err(ReviewError::NoReference { dir: dir.to_path_buf() }.into());
    };
    let entry = serde_json::json!({
        "action": "acknowledge",
        "at": now(),
        "by": by,
        "reason": reason,
        "generation": generation,
    });
    publication.append_line(&dir.join(AUDIT_FILE), &entry.to_string())?;
    drop(publication.commit()?);
    Ok(generation)
}

fn check_audit_fields(reason: &str, by: &str) -> Result<(), ReviewError> {
    for (flag, value) in [("reason", reason), ("by", by)] {
        if value.trim().is_empty() {
            return Err(ReviewError::EmptyAuditField { flag });
        }
    }
    Ok(())
}

/// Now, to the second, for the audit log.
fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or(jiff::Timestamp::now())
        .to_string()
}

fn require(dir: &Path, file: &'static str) -> Result<PathBuf, ReviewError> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ReviewError::NotARun {
            dir: dir.to_path_buf(),
            missing: file,
        })
    }
}

/// Writes the run's quarantine (every column, plus suspicion and reasons) to `out`; returns the
/// number of rows.
pub fn export(dir: &Path, format: ExportFormat, out: &Path) -> Result<usize, crate::Error> {
    if is_run_output(dir, out) {
        return Err(ReviewError::ExportOverRun {
            path: out.to_path_buf(),
            dir: dir.to_path_buf(),
        }
        .into());
    }
    // A run killed while publishing left its files half replaced: finish that first.
    crate::io::settle_output_dir(dir)?;
    let (schema, batches) = read_parquet_file(&require(dir, QUARANTINE_FILE)?)?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    if format == ExportFormat::Parquet {
        let mut sink = ParquetSink::create(out, schema, &[])?;
        for b in &batches {
            sink.write(b)?;
        }
        sink.commit()?;
        return Ok(rows);
    }
    let mut file = AtomicFile::create(out)?;
    let io = |source| OutputError::Io {
        path: out.to_path_buf(),
        source,
    };
    let w = file.writer();
    let mut w = std::io::BufWriter::new(w);
    if format == ExportFormat::Csv {
        let header: Vec<String> = schema.fields().iter().map(|f| csv_quote(f.name())).collect();
        writeln!(w, "{}", header.join(",")).map_err(io)?;
    }
    for b in &batches {
        for i in 0..b.num_rows() {
            let line = match format {
                ExportFormat::Csv => b
                    .columns()
                    .iter()
                    .map(|c| csv_field(c.as_ref(), i))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => {
                    // Written field by field, so the object keeps the input's column order.
                    let fields: Vec<String> = schema
                        .fields()
                        .iter()
                        .zip(b.columns())
                        .map(|(f, c)| {
                            format!(
                                "{}:{}",
                                serde_json::Value::from(f.name().as_str()),
                                json_value(c.as_ref(), i)
                            )
                        })
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }
            };
            writeln!(w, "{line}").map_err(io)?;
        }
    }
    w.flush().map_err(io)?;
    drop(w);
    file.commit()?;
    Ok(rows)
}

/// RFC 4180 quoting: always quoted, inner quotes doubled; newlines, commas and NULs stay inside.
fn csv_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn csv_field(column: &dyn Array, i: usize) -> String {
    if column.is_null(i) {
        return String::new();
    }
    match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => csv_quote(&text(column, i)),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) | DataType::Struct(_) => {
            csv_quote(&json_value(column, i).to_string())
        }
        _ => csv_quote(&text(column, i)),
    }
}

/// Any value as display text (arrow-cast's formatter: the same text Arrow prints).
fn text(column: &dyn Array, i: usize) -> String {
    match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => column.as_string_view().value(i).to_string(),
        _ => ArrayFormatter::try_new(column, &FormatOptions::default())
            .map(|f| f.value(i).to_string())
            .unwrap_or_default(),
    }
}

/// A value as JSON: numbers, booleans, strings, arrays for lists, objects for structs; anything
/// else (timestamps, decimals, binary) as its display text. Non-finite floats become strings.
fn json_value(column: &dyn Array, i: usize) -> serde_json::Value {
    use serde_json::Value;
    if column.is_null(i) {
        return Value::Null;
    }
    let list = |values: ArrayRef| Value::Array((0..values.len()).map(|j| json_value(values.as_ref(), j)).collect());
    match column.data_type() {
        DataType::Boolean => Value::Bool(column.as_boolean().value(i)),
        t if t.is_integer() => text(column, i).parse::<i128>().map_or(Value::Null, |v| {
            serde_json::Number::from_i128(v).map_or(Value::String(v.to_string()), Value::Number)
        }),
        t if t.is_floating() => {
            let s = text(column, i);
            s.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::String(s), Value::Number)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Value::String(text(column, i)),
        DataType::List(_) => list(column.as_list::<i32>().value(i)),
        DataType::LargeList(_) => list(column.as_list::<i64>().value(i)),
        DataType::FixedSizeList(_, _) => list(column.as_fixed_size_list().value(i)),
        DataType::Struct(fields) => {
            let s = column.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), json_value(c.as_ref(), i)))
                    .collect(),
            )
        }
        _ => Value::String(text(column, i)),
    }
}

/// What a release did.
#[derive(Debug, serde::Serialize)]
pub struct Released {
    pub released: usize,
    /// Of those, how many the output directory's reference records, so that later scans keep
    /// them in clean while their content is unchanged (0 when the scan saved no reference).
    pub remembered: usize,
    pub clean_rows: usize,
    pub quarantine_rows: usize,
}

/// Reads the ids to release: one per line; blank lines and `#` comments skipped.
pub fn read_id_list(path: &Path) -> Result<Vec<String>, crate::Error> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return Err(ReviewError::NoIdsListed {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(ids)
}

fn ids_of(batch: &RecordBatch, column: &str) -> Vec<String> {
    let c = batch.column_by_name(column).expect("id column checked");
    (0..c.len()).map(|i| text(c.as_ref(), i)).collect()
}

/// Whether `out` names one of the files a run keeps in `dir` (an export there would replace it).
fn is_run_output(dir: &Path, out: &Path) -> bool {
    const OWN: [&str; 9] = [
        CLEAN_FILE,
        QUARANTINE_FILE,
        SCORES_FILE,
        REPORT_FILE,
        crate::report::HTML_FILE,
        crate::report::MARKDOWN_FILE,
        crate::report::diff::DIFF_FILE,
        AUDIT_FILE,
        "reference",
    ];
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let same_dir = match (parent.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    same_dir
        && out
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| OWN.contains(&n))
}

/// Moves the quarantined records whose ids are in `ids` back to clean.parquet, marks them
/// released in scores.parquet and report.json, and appends who, when and why to the audit log.
pub fn release(dir: &Path, ids_file: &Path, ids: &[String], reason: &str, by: &str) -> Result<Released, crate::Error> {
    check_audit_fields(reason, by)?;
    if !dir.is_dir() {
        require(dir, CLEAN_FILE)?;
    }
    // A scan publishing into `dir` meanwhile would overwrite the release (or the release the
    // scan's outputs), and another release would lose one of the two. Taken first: it also
    // finishes a publication a killed run left half done.
    let _lock = crate::io::lock_output_dir(dir)?;
    let clean_path = require(dir, CLEAN_FILE)?;
    let quarantine_path = require(dir, QUARANTINE_FILE)?;
    let scores_path = require(dir, SCORES_FILE)?;
    let report_path = require(dir, REPORT_FILE)?;
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).map_err(|source| InputError::Io {
            path: report_path.clone(),
            source,
        })?)
        .map_err(|e| InputError::BadReport {
            path: report_path.clone(),
            message: e.to_string(),
        })?;
    let Some(id_column) = report["dataset"]["id_column"].as_str().map(String::from) else {
        return Err(ReviewError::NoIds { path: report_path }.into());
    };
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let (quarantine_schema, quarantine) = read_parquet_file(&quarantine_path)?;
    let quarantined_ids: HashSet<String> = quarantine.iter().flat_map(|b| ids_of(b, &id_column)).collect();
    let unknown: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|i| !quarantined_ids.contains(*i))
        .collect();
    if let Some(first) = unknown.first() {
        return Err(ReviewError::UnknownIds {
            path: ids_file.to_path_buf(),
            count: unknown.len(),
            first: first.to_string(),
        }
        .into());
    }

    // The files must hold the scan's input rows once before anything moves (counted from the
    // footers, before a byte is rewritten): a run killed between replacing clean.parquet and
    // quarantine.parquet leaves rows in both, and a release on top would publish the duplicates
    // as checked.
    let old_quarantine: usize = quarantine.iter().map(|b| b.num_rows()).sum();
    let footer_rows = crate::io::parquet_rows(&clean_path)?;
    let input_rows = report["conservation"]["input_rows"].as_u64();
    if input_rows.is_some_and(|rows| rows != footer_rows + old_quarantine as u64) {
        return Err(crate::Error::Conservation(format!(
            "{}: clean.parquet {footer_rows} + quarantine.parquet {old_quarantine} rows, but the scan read {} \
             (a run killed while replacing them?); nothing was released: run the scan again",
            dir.display(),
            input_rows.unwrap_or_default()
        )));
    }

    // New clean = old clean + released rows (input columns only); new quarantine = the rest.
    // The clean file (most of the data) is streamed, never held whole.
    let (clean_schema, clean) = open_parquet_file(&clean_path)?;
    let input_columns: Vec<usize> = (0..clean_schema.fields().len()).collect();
    let plain = super::plain_input_columns(&clean_schema, Some(&id_column));
    let mut clean_sink = ParquetSink::create(&clean_path, clean_schema.clone(), &plain)?;
    let mut quarantine_sink = ParquetSink::create(&quarantine_path, quarantine_schema, &plain)?;
    let mut old_clean = 0usize;
    for b in clean {
        let b = b.map_err(|e| InputError::Corrupt {
            path: clean_path.clone(),
            message: e.to_string(),
        })?;
        old_clean += b.num_rows();
        clean_sink.write(&b)?;
    }
    let other = |path: &Path, e: arrow_schema::ArrowError| OutputError::Other {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let (mut new_clean, mut new_quarantine) = (old_clean, 0usize);
    for b in &quarantine {
        let ids = ids_of(b, &id_column);
        let go: BooleanArray = ids.iter().map(|i| Some(wanted.contains(i.as_str()))).collect();
        let stay: BooleanArray = ids.iter().map(|i| Some(!wanted.contains(i.as_str()))).collect();
        let released = filter_record_batch(b, &go).map_err(|e| other(&clean_path, e))?;
        let released = released
            .project(&input_columns)
            .and_then(|r| r.with_schema(clean_schema.clone()))
            .map_err(|e| other(&clean_path, e))?;
        let kept = filter_record_batch(b, &stay).map_err(|e| other(&quarantine_path, e))?;
        new_clean += released.num_rows();
        new_quarantine += kept.num_rows();
        clean_sink.write(&released)?;
        quarantine_sink.write(&kept)?;
    }
    if new_clean + new_quarantine != old_clean + old_quarantine || new_clean - old_clean != wanted.len() {
        return Err(crate::Error::Conservation(format!(
            "release would leave {new_clean} clean + {new_quarantine} quarantined rows from {old_clean} + {old_quarantine}"
        )));
    }

    // scores.parquet: released records are no longer quarantined; their reasons say why.
    let note = format!("released on review by {by}: {reason}");
    let mut scores_sink = None;
    let mut released_per_class: std::collections::HashMap<String, u64> = Default::default();
    for b in read_parquet_file(&scores_path)?.1 {
        let key = b.column(0);
        let keys: Vec<String> = (0..b.num_rows()).map(|i| text(key.as_ref(), i)).collect();
        for i in (0..b.num_rows()).filter(|&i| wanted.contains(keys[i].as_str())) {
            *released_per_class.entry(text(b.column(1).as_ref(), i)).or_default() += 1;
        }
        let q = b
            .column_by_name("quarantined")
            .expect("scores have `quarantined`")
            .as_boolean();
        let r = b
            .column_by_name("reasons")
            .expect("scores have `reasons`")
            .as_string::<i32>();
        let hit = |i: usize| wanted.contains(keys[i].as_str());
        let quarantined: BooleanArray = (0..b.num_rows()).map(|i| Some(q.value(i) && !hit(i))).collect();
        let reasons: StringArray = (0..b.num_rows())
            .map(|i| {
                Some(if hit(i) {
                    format!("{}; {note}", r.value(i))
                } else {
                    r.value(i).to_string()
                })
            })
            .collect();
        let schema = b.schema();
        let mut columns: Vec<ArrayRef> = b.columns().to_vec();
        columns[schema.index_of("quarantined").expect("checked")] = std::sync::Arc::new(quarantined);
        columns[schema.index_of("reasons").expect("checked")] = std::sync::Arc::new(reasons);
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| other(&scores_path, e))?;
        let sink = match &mut scores_sink {
            Some(s) => s,
            None => {
                let plain = super::per_record_columns(&schema);
                scores_sink.insert(ParquetSink::create(&scores_path, schema.clone(), &plain)?)
            }
        };
        sink.write(&batch)?;
    }

    let at = now();
    let entry = serde_json::json!({
        "action": "release",
        "at": at,
        "by": by,
        "reason": reason,
        "ids": ids,
        "clean_rows": new_clean,
        "quarantine_rows": new_quarantine,
    });
    for class in report["classes"].as_array_mut().into_iter().flatten() {
        let released = class["label"].as_str().and_then(|l| released_per_class.get(l)).copied();
        if let (Some(n), Some(flagged)) = (released, class["verdict"]["flagged"].as_u64()) {
            class["verdict"]["flagged"] = flagged.saturating_sub(n).into();
        }
    }
    let totals = &mut report["totals"];
    totals["clean"] = new_clean.into();
    totals["quarantined"] = new_quarantine.into();
    let rows = (new_clean + new_quarantine).max(1) as f64;
    totals["quarantine_fraction"] = (new_quarantine as f64 / rows).into();
    report["conservation"]["clean_rows"] = new_clean.into();
    report["conservation"]["quarantine_rows"] = new_quarantine.into();
    match report["releases"].as_array_mut() {
        Some(list) => list.push(entry.clone()),
        None => report["releases"] = serde_json::json!([entry.clone()]),
    }

    // One publication: the data files, the report, the audit log with its new line and the
    // releases later scans keep, all replaced together (a release half applied would be one the
    // audit log does not show, or one the next scan forgets).
    let mut publication = Publication::new(dir);
    publication.add_parquet(clean_sink)?;
    publication.add_parquet(quarantine_sink)?;
    if let Some(s) = scores_sink {
        publication.add_parquet(s)?;
    }
    publication.add_json(&report_path, &report, true)?;
    publication.append_line(&dir.join(AUDIT_FILE), &entry.to_string())?;
    // Later scans keep these records in clean while they are unchanged.
    let audited = format!("released on review by {by} at {at}: {reason}");
    let remembered = crate::reference::stage_release(dir, ids, &audited, &mut publication)?;
    drop(publication.commit()?);
    crate::report::write_human_reports(dir)?;
    Ok(Released {
        remembered: remembered.unwrap_or(0),
        released: wanted.len(),
        clean_rows: new_clean,
        quarantine_rows: new_quarantine,
    })
}
