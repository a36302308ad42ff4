//! The machine-readable report (`report.json`): one `Serialize` struct, built from what the stages
//! returned. It is written last, so a report on disk always describes the outputs beside it.
//!
//! Imports: `io`, `detect`, `score`, `quarantine`.

pub mod diff;
pub mod html;
pub mod markdown;
pub mod view;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::detect::Stat;
use crate::io::{AtomicFile, FileInfo, OutputError, VectorSource};
use crate::quarantine::Conservation;
use crate::score::ClassVerdict;

pub const REPORT_FILE: &str = "report.json";
pub const HTML_FILE: &str = "report.html";
pub const MARKDOWN_FILE: &str = "report.md";

/// (Re)writes `report.html` and `report.md` in a run's output directory from its `report.json`
/// and `scores.parquet` (atomically, each).
pub fn write_human_reports(dir: &Path) -> Result<(), crate::Error> {
    let view = view::RunView::load(dir)?;
    let (html, markdown) = rayon::join(|| html::render(&view), || markdown::render(&view));
    AtomicFile::write_all(&dir.join(HTML_FILE), html.as_bytes())?;
    AtomicFile::write_all(&dir.join(MARKDOWN_FILE), markdown.as_bytes())?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: Tool,
    /// The detectors that ran, in the order of their columns in scores.parquet.
    pub detectors: Vec<String>,
    pub dataset: DatasetSummary,
    /// The resolved configuration the scan ran with.
    pub config: serde_json::Value,
    pub classes: Vec<ClassReport>,
    pub totals: Totals,
    pub conservation: Conservation,
    /// The influence stage: surrogate fits, confident learning, trusted-set solve, neighbour
    /// search recall; `None` when it did not run.
    pub influence: Option<crate::influence::InfluenceReport>,
    /// Wall-clock milliseconds per stage, in order.
    pub timings_ms: Vec<(String, f64)>,
    /// Per detector: seconds of work summed over classes (classes run in parallel, so the sum
    /// can exceed the detect stage's wall time). The influence stage's own cost is in
    /// `timings_ms` and `influence`.
    pub detector_seconds: Vec<(String, f64)>,
    /// Non-fatal problems (skipped classes, caps reached), also printed by the CLI.
    pub warnings: Vec<String>,
    /// An incremental scan: how its records matched the reference, drift, and whether it re-fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<crate::reference::delta::IncrementalSummary>,
}

#[derive(Debug, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

impl Default for Tool {
    fn default() -> Self {
        Tool {
            name: "datavet",
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DatasetSummary {
    pub files: Vec<FileInfo>,
    pub rows: usize,
    pub dim: usize,
    pub id_column: Option<String>,
    pub label_column: String,
    pub vectors: VectorSource,
    /// The column naming each record's supplier, when the input has one.
    pub source_column: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClassReport {
    pub label: String,
    pub rows: usize,
    pub analysed: bool,
    /// Why the class was not analysed (its rows stay in clean).
    pub skipped: Option<String>,
    /// Records whose vector is all zero: no detector working on the vectors can tell them apart
    /// (see the warnings).
    pub zero_vectors: usize,
    /// Per detector: its named statistics for this class.
    pub stats: BTreeMap<String, Vec<Stat>>,
    pub verdict: Option<ClassVerdict>,
    /// Class mean vector and rms distance of records from it (for drift between scans).
    pub mean: Option<Vec<f64>>,
    pub radius: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub rows: usize,
    pub clean: u64,
    pub quarantined: u64,
    pub quarantine_fraction: f64,
    pub classes: usize,
    pub classes_analysed: usize,
    pub attacked_classes: Vec<String>,
}

impl Report {
    pub fn write(&self, out_dir: &Path) -> Result<(), OutputError> {
        AtomicFile::write_json(&out_dir.join(REPORT_FILE), self, true)
    }

    /// One line for logs and schedulers.
    pub fn summary_line(&self) -> String {
        let t = &self.totals;
        format!(
            "datavet: {} rows, {} classes ({} analysed); quarantined {} ({:.2}%); attacked classes: {}",
            t.rows,
            t.classes,
            t.classes_analysed,
            t.quarantined,
            100.0 * t.quarantine_fraction,
            if t.attacked_classes.is_empty() {
                "none".to_string()
            } else {
                t.attacked_classes.join(", ")
            }
        )
    }
}
