//! A finished run as the human reports see it: `report.json` plus every record's row of
//! `scores.parquet`, loaded from the output directory, so `datavet report DIR` regenerates the
//! reports from a run without the input data.
//!
//! Every string from the data (ids, labels, sources, reasons) goes through [`plain_text`] before
//! a format escapes it: control and bidirectional-override characters become visible `\u{..}`
//! escapes and very long values are cut, so a value can neither reorder a page nor flood it.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type, UInt8Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::io::{InputError, for_each_parquet_batch};
use crate::quarantine::SCORES_FILE;

use super::REPORT_FILE;

/// One record's row of scores.parquet.
#[derive(Clone, Debug)]
pub struct RecordRow {
    pub key: String,
    pub label: String,
    pub source: Option<String>,
    pub suspicion: f64,
    pub quarantined: bool,
    pub reasons: String,
    pub projection: Option<[f32; 2]>,
    pub cluster: Option<u8>,
}

/// Records per source (contributor, batch), for "who supplies the suspicious records".
#[derive(Clone, Debug)]
pub struct SourceRow {
    pub source: String,
    pub rows: usize,
    pub quarantined: usize,
    /// The detectors named in the quarantined records' reasons, most frequent first.
    pub detectors: Vec<(String, usize)>,
}

/// A finished run: the JSON report and every record's scores.
pub struct RunView {
    pub report: serde_json::Value,
    pub detectors: Vec<String>,
    pub records: Vec<RecordRow>,
    /// `scores[d][i]`: detector `d`'s score of record `i` (by column: a vector per record was
    /// a million small allocations of the report's time at 1M rows). Empty for verdicts only.
    pub scores: Vec<Vec<Option<f32>>>,
}

/// An empty vector with room for `rows`, if that can be had (a hint: never fails).
fn reserved<T>(rows: usize) -> Vec<T> {
    let mut v = Vec::new();
    let _ = v.try_reserve_exact(rows);
    v
}

/// A report.json that is not one datavet wrote (or not whole).
fn bad_report(path: &Path, message: impl ToString) -> InputError {
    InputError::BadReport {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn corrupt(path: &Path, message: impl ToString) -> InputError {
    InputError::Corrupt {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn text_at(column: &dyn Array, i: usize) -> String {
    match column.data_type() {
        DataType::Int64 => column.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Utf8 => column.as_string::<i32>().value(i).to_string(),
        other => format!("({other})"),
    }
}

impl RunView {
    /// Loads `report.json` and `scores.parquet` from a run's output directory.
    pub fn load(dir: &Path) -> Result<RunView, InputError> {
        RunView::load_with(dir, true)
    }

    /// Like [`RunView::load`], but each record's verdict only (key, label, source, suspicion,
    /// quarantined, reasons): what a diff compares, read without the score columns.
    pub fn load_verdicts(dir: &Path) -> Result<RunView, InputError> {
        RunView::load_with(dir, false)
    }

    fn load_with(dir: &Path, scores: bool) -> Result<RunView, InputError> {
        let report_path = dir.join(REPORT_FILE);
        let text = std::fs::read(&report_path).map_err(|source| InputError::Io {
            path: report_path.clone(),
            source,
        })?;
        let report: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad_report(&report_path, e))?;
        let detectors: Vec<String> = report["detectors"]
            .as_array()
            .ok_or_else(|| bad_report(&report_path, "no `detectors` list (written by another version?)"))?
            .iter()
            .filter_map(|d| d.as_str().map(String::from))
            .collect();
        let source_column = report["dataset"]["source_column"].as_str().map(String::from);
        let path = dir.join(SCORES_FILE);
        let verdict = |(i, name): (usize, &str)| {
            i < 2 || ["suspicion", "quarantined", "reasons"].contains(&name) || Some(name) == source_column.as_deref()
        };
        // Sized from the report up front: grown by doubling, a million records were reallocated
        // and copied (and their fresh pages faulted in) several times over. A hint only (the
        // file may be hand-edited): a count that cannot be reserved is ignored.
        let rows = report["totals"]["rows"].as_u64().unwrap_or(0) as usize;
        let mut records = reserved(rows);
        let read = if scores { &detectors[..] } else { &[] };
        let mut score_columns: Vec<Vec<Option<f32>>> = read.iter().map(|_| reserved(rows)).collect();
        // Batch by batch: each is dropped once its rows are converted.
        for_each_parquet_batch(
            &path,
            |c| scores || verdict(c),
            |batch| {
                read_batch(&batch, read, source_column.as_deref(), &mut records, &mut score_columns)
                    .map_err(|m| corrupt(&path, m))
            },
        )?;
        Ok(RunView {
            report,
            detectors,
            records,
            scores: score_columns,
        })
    }

    /// The `n` most suspicious records, most suspicious first.
    pub fn top(&self, n: usize) -> Vec<&RecordRow> {
        let most_suspicious_first =
            |a: &&RecordRow, b: &&RecordRow| b.suspicion.total_cmp(&a.suspicion).then(a.key.cmp(&b.key));
        // Only records at or above the n-th highest suspicion can be among the first n: found on
        // the numbers alone, so keys are compared among those few (and the ties at the cut), not
        // across a million records mostly tied at 0 (1 s of the report by a full sort).
        let mut all: Vec<&RecordRow> = match n.checked_sub(1) {
            Some(last) if last < self.records.len() => {
                let mut suspicions: Vec<f64> = self.records.iter().map(|r| r.suspicion).collect();
                let (_, &mut cut, _) = suspicions.select_nth_unstable_by(last, |a, b| b.total_cmp(a));
                self.records
                    .iter()
                    .filter(|r| r.suspicion.total_cmp(&cut).is_ge())
                    .collect()
            }
            Some(_) => self.records.iter().collect(),
            None => Vec::new(),
        };
        if n < all.len() {
            all.select_nth_unstable_by(n, most_suspicious_first);
            all.truncate(n);
        }
        all.sort_by(most_suspicious_first);
        all
    }

    /// Per source: rows, quarantined rows and which detectors flagged them; most quarantined first.
    /// Empty when the input has no source column.
    pub fn per_source(&self) -> Vec<SourceRow> {
        let mut by: BTreeMap<&str, SourceRow> = BTreeMap::new();
        for r in &self.records {
            let Some(source) = &r.source else { continue };
            let row = by.entry(source).or_insert_with(|| SourceRow {
                source: source.clone(),
                rows: 0,
                quarantined: 0,
                detectors: Vec::new(),
            });
            row.rows += 1;
            if r.quarantined {
                row.quarantined += 1;
                for d in self.detectors.iter().filter(|d| r.reasons.contains(d.as_str())) {
                    match row.detectors.iter_mut().find(|(name, _)| name == d) {
                        Some((_, count)) => *count += 1,
                        None => row.detectors.push((d.clone(), 1)),
                    }
                }
            }
        }
        let mut rows: Vec<SourceRow> = by.into_values().collect();
        for r in &mut rows {
            r.detectors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        rows.sort_by(|a, b| b.quarantined.cmp(&a.quarantined).then(a.source.cmp(&b.source)));
        rows
    }
}

fn read_batch(
    batch: &RecordBatch,
    detectors: &[String],
    source_column: Option<&str>,
    out: &mut Vec<RecordRow>,
    score_columns: &mut [Vec<Option<f32>>],
) -> Result<(), String> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("column `{name}` missing"))
    };
    let key = batch.column(0);
    let label = batch.column(1);
    let suspicion = column("suspicion")?.as_primitive::<Float64Type>();
    let quarantined = column("quarantined")?.as_boolean();
    let reasons = column("reasons")?.as_string::<i32>();
    // Absent when only the verdicts were read.
    let pc1 = batch.column_by_name("pc1").map(|c| c.as_primitive::<Float32Type>());
    let pc2 = batch.column_by_name("pc2").map(|c| c.as_primitive::<Float32Type>());
    let cluster = batch.column_by_name("cluster").map(|c| c.as_primitive::<UInt8Type>());
    let source = source_column.map(column).transpose()?;
    for (d, values) in detectors.iter().zip(score_columns.iter_mut()) {
        values.extend(column(d)?.as_primitive::<Float32Type>().iter());
    }
    for i in 0..batch.num_rows() {
        out.push(RecordRow {
            key: text_at(key, i),
            label: text_at(label, i),
            source: source.map(|s| text_at(s, i)),
            suspicion: suspicion.value(i),
            quarantined: quarantined.value(i),
            reasons: reasons.value(i).to_string(),
            projection: pc1
                .zip(pc2)
                .filter(|(a, _)| !a.is_null(i))
                .map(|(a, b)| [a.value(i), b.value(i)]),
            cluster: cluster.filter(|c| !c.is_null(i)).map(|c| c.value(i)),
        });
    }
    Ok(())
}

/// What a record's reason says of the record itself: a quarantined record's reason opens with
/// its class's verdict (`class `3` attacked: ...; record: ...`), which the reports show per class,
/// and table cells are cut to a line or two, so the record's part would never show. Other
/// reasons are returned whole.
pub fn record_part(reasons: &str) -> &str {
    match reasons.split_once("; record: ") {
        Some((class, record)) if class.starts_with("class `") => record,
        _ => reasons,
    }
}

/// A data string made safe to show as text: control characters and bidirectional formatting
/// characters (which would reorder what is displayed around them) become visible `\u{..}`
/// escapes; values longer than `max_chars` are cut and say how long they were.
pub fn plain_text(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (count, c) in s.chars().enumerate() {
        if count == max_chars {
            out.push_str(&format!("... ({} chars)", s.chars().count()));
            break;
        }
        let invisible = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if invisible {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_part_of_a_reason_is_what_follows_the_class_verdict() {
        let reason = "class `3` attacked: shared_shift 9.1 is 17.5 MADs above; record: spectre score 7.9 sigma";
        assert_eq!(record_part(reason), "spectre score 7.9 sigma");
        assert_eq!(record_part("label issue: p(label) 0.02"), "label issue: p(label) 0.02");
        assert_eq!(record_part(""), "");
    }

    #[test]
    fn top_records_are_the_most_suspicious_in_order_ties_by_key() {
        let row = |key: &str, suspicion: f64| RecordRow {
            key: key.to_string(),
            label: "0".to_string(),
            source: None,
            suspicion,
            quarantined: suspicion > 0.5,
            reasons: String::new(),
            projection: None,
            cluster: None,
        };
        let suspicions = [0.0, 0.9, 0.0, 0.3, 0.9, 0.0, 0.7, 0.0];
        let view = RunView {
            report: serde_json::Value::Null,
            detectors: Vec::new(),
            records: suspicions
                .iter()
                .enumerate()
                .map(|(i, &s)| row(&format!("k{}", 7 - i), s))
                .collect(),
            scores: Vec::new(),
        };
        let keys = |n: usize| view.top(n).iter().map(|r| r.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(3), ["k3", "k6", "k1"]);
        // Ties at 0 are broken by key, also where the cut falls inside them.
        assert_eq!(keys(6), ["k3", "k6", "k1", "k4", "k0", "k2"]);
        assert_eq!(keys(20).len(), 8);
    }

    #[test]
    fn plain_text_shows_invisible_characters_and_cuts_long_values() {
        assert_eq!(plain_text("a\nb\u{202e}c\0", 100), "a\\u{a}b\\u{202e}c\\u{0}");
        let long = "x".repeat(5000);
        assert_eq!(plain_text(&long, 10), format!("{}... (5000 chars)", "x".repeat(10)));
        assert_eq!(plain_text("<script>", 100), "<script>", "markup is the formats' job");
    }
}
