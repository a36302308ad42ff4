//! A scan, stage by stage: read -> per-class statistics and detectors -> decision -> outputs ->
//! report. The only module that calls every stage. An incremental scan (`incremental`) runs the
//! same stages against a reference's fits.

mod analysis;
pub mod incremental;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::detect::{self, Available, DetectorParams};
use crate::io::{self, Dataset, InputError, ReadOptions};
use crate::progress::Progress;
use crate::quarantine;
use crate::reference::delta::IncrementalSummary;
use crate::reference::{Reference, Releases};
use crate::report::diff::Diff;
use crate::report::{ClassReport, DatasetSummary, Report, Tool, Totals};
use crate::score::DecisionParams;
pub use analysis::{
    Analysis, ClassAnalysis, ClassResult, analyse, cluster_stage, features_stage, influence_stage, score_stage,
};
pub use incremental::{Plan, ReferenceOptions, Scanned};

/// Everything a scan needs; the CLI and pipeline files both build one.
#[derive(Clone, Debug, Serialize)]
pub struct ScanConfig {
    pub inputs: Vec<PathBuf>,
    pub read: ReadOptions,
    pub detectors: DetectorParams,
    pub decision: DecisionParams,
    /// Seed for every randomized step (k-means restarts); same input + seed = same output bytes.
    pub seed: u64,
    /// Classes with fewer rows are not analysed (their rows stay in clean) and the report says so.
    pub min_class_rows: usize,
    /// A verified clean Parquet set (same columns) for influence on a trusted set; optional.
    pub trusted: Vec<PathBuf>,
    pub out_dir: PathBuf,
    /// The reference an incremental scan starts from, and whether to save one.
    pub reference: ReferenceOptions,
}

impl ScanConfig {
    pub fn new(inputs: Vec<PathBuf>, out_dir: PathBuf) -> ScanConfig {
        ScanConfig {
            inputs,
            read: ReadOptions::default(),
            detectors: DetectorParams::default(),
            decision: DecisionParams::default(),
            seed: 42,
            min_class_rows: DEFAULT_MIN_CLASS_ROWS,
            trusted: Vec::new(),
            out_dir,
            reference: ReferenceOptions::default(),
        }
    }

    /// Every setting checked before any data is read.
    pub fn check(&self) -> Result<(), crate::Error> {
        self.decision.check()?;
        self.reference.refit.check()?;
        detect::registry(&self.detectors, Available::default())?;
        Ok(())
    }

    /// The settings a scan's fits depend on (columns, detectors, seed, minimum class size, the
    /// trusted set's files): an incremental scan whose settings differ from its reference's fits
    /// afresh. The decision's settings are not among them: it is re-made on every scan.
    pub fn fit_settings(&self) -> Result<serde_json::Value, crate::Error> {
        let read = ReadOptions {
            source_col: None, // reports only
            ..self.read.clone()
        };
        Ok(serde_json::json!({
            "read": read,
            "detectors": self.detectors,
            "seed": self.seed,
            "min_class_rows": self.min_class_rows,
            "trusted": trusted_fingerprints(self)?,
        }))
    }
}

/// Path, size and content hash (XXH3-128, hex) of every trusted-set file: the influence
/// stage's results depend on them, and a file rewritten in place at the same size (a relabelled
/// record) must count as changed. Read in blocks (trusted sets are small: hashing one costs
/// milliseconds, at a few GB/s).
pub fn trusted_fingerprints(config: &ScanConfig) -> Result<Vec<(PathBuf, u64, String)>, crate::Error> {
    use std::io::Read;
    let files = if config.trusted.is_empty() {
        Vec::new()
    } else {
        io::list_input_files(&config.trusted)?
    };
    files
        .into_iter()
        .map(|p| {
            let io_error = |source| InputError::Io {
                path: p.clone(),
                source,
            };
            let mut file = std::fs::File::open(&p).map_err(io_error)?;
            let (mut hasher, mut block, mut size) = (twox_hash::XxHash3_128::new(), vec![0u8; 1 << 20], 0u64);
            loop {
                match file.read(&mut block) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.write(&block[..n]);
                        size += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_error(e).into()),
                }
            }
            Ok((p.clone(), size, format!("{:032x}", hasher.finish_128())))
        })
        .collect()
}

impl ScanConfig {
    /// The fewest rows a class of `dim`-wide vectors needs to be analysed: `min_class_rows`, and
    /// never fewer than its coordinates (`nb-dims` leading directions and the residual) + 2,
    /// which SPECTRE's robust fit needs (a smaller class made it panic), nor 3.
    pub fn rows_to_analyse(&self, dim: usize) -> usize {
        let coordinates = self.detectors.activation_clustering.nb_dims.min(dim) + 1;
        self.min_class_rows.max(coordinates + 2).max(3)
    }
}

/// Default for [`ScanConfig::min_class_rows`]: below this a 10-dim covariance and a 2-way split
/// are mostly noise.
pub const DEFAULT_MIN_CLASS_ROWS: usize = 30;

/// What a finished scan hands back to the caller.
pub struct Outcome {
    pub report: Report,
    pub quarantined: u64,
    /// Against the reference the scan started from (incremental scans).
    pub diff: Option<Diff>,
    /// The reference this scan saved for the next one.
    pub reference: Option<PathBuf>,
}

impl Outcome {
    /// One line for logs and schedulers: the report's, and for an incremental scan what it
    /// scored and what changed since the reference.
    pub fn summary_line(&self) -> String {
        self.report.summary_line() + &incremental_summary(self.report.incremental.as_ref(), self.diff.as_ref())
    }
}

/// "; against reference generation 3: 10 new, ...; newly quarantined 2 (...)", or empty.
pub fn incremental_summary(inc: Option<&IncrementalSummary>, diff: Option<&Diff>) -> String {
    let mut line = String::new();
    if let Some(inc) = inc {
        line.push_str(&format!(
            "; against reference generation {}: {} new, {} changed, {} gone, {} scored ({})",
            inc.reference_generation,
            inc.new,
            inc.changed,
            inc.gone,
            inc.scored,
            if inc.refit { "re-fitted" } else { "fit reused" }
        ));
        match &inc.diff_against {
            Some(base) if *base != inc.reference => line.push_str(&format!(
                "; the same records: diffed against {}, as that scan was",
                base.display()
            )),
            None => line
                .push_str("; the same records as the first incremental night: every quarantined record counts as new"),
            Some(_) => {}
        }
    }
    if let Some(d) = diff {
        line.push_str(&format!(
            "; newly quarantined {} ({} new records), released {}, gone {}",
            d.newly_quarantined.len(),
            d.newly_quarantined_new_records,
            d.released.len(),
            d.gone.len()
        ));
    }
    line
}

/// Runs a whole scan and publishes its outputs in `config.out_dir`, reporting long stages to
/// `progress`. With a reference (`config.reference.since`), only new or changed records are
/// scored against its fits, unless the plan says to fit afresh.
pub fn run_scan(config: &ScanConfig, progress: &dyn Progress) -> Result<Outcome, crate::Error> {
    config.check()?; // bad parameters are rejected before reading any data
    let _lock = io::lock_output_dir(&config.out_dir)?;
    let mut timings = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((name.to_string(), clock.elapsed().as_secs_f64() * 1e3));
        clock = Instant::now();
    };
    let reference = incremental::open_reference(config)?;
    let Ingested {
        mut dataset,
        hashes,
        plan,
        released,
        releases,
    } = ingest(config, reference, progress)?;
    lap("read", &mut timings);

    let fits = plan.as_ref().and_then(Plan::class_fits);
    let bases = features_stage(&dataset, config, fits, progress);
    let (influence, warning) = match plan.as_ref().filter(|p| p.reuses_fit()) {
        Some(p) => p.extend_influence(&dataset, config, progress)?,
        None => influence_stage(&dataset, config, progress)?,
    };
    let influence_ms = influence.as_ref().map(|s| s.report.seconds * 1e3);
    let classes = cluster_stage(&dataset, config, &bases, influence.as_ref(), fits, progress)?;
    let report = influence.as_ref().map(|s| s.report.clone());
    let mut analysis = score_stage(&dataset, config, &classes, report, warning, None);
    analysis.decision.keep_in_clean(&released, &dataset.labels);
    analysis.incremental = plan.as_ref().map(|p| p.summary(dataset.rows()));
    lap("detect+decide", &mut timings);
    if let (Some(ms), Some(last)) = (influence_ms, timings.last_mut()) {
        // Report the influence stage on its own line; it ran first inside the detect stage.
        last.1 = (last.1 - ms).max(0.0);
        timings.insert(timings.len() - 1, ("influence".to_string(), ms));
    }
    // The matrix is the largest allocation and the write stage streams the files again: free it
    // so peak memory is the larger of the two stages (the write's plus the reference's JSON,
    // ~100 MB at 1M rows), not their sum. Unmapping 1 GB takes the kernel a while (4 KiB pages:
    // 0.1-0.2 s), so on a thread beside the write.
    crate::io::drop_in_background("datavet-free", std::mem::take(&mut dataset.x));
    // The next scan's reference needs the scan's state, not the published files (but for two
    // links made when it is committed): it is written while the write stage runs, whose copy of
    // unchanged row groups keeps one core busy at the disk's pace and leaves the other idle.
    let scanned = Scanned {
        dataset: &dataset,
        hashes,
        influence,
        classes: &classes,
        plan: plan.as_ref(),
        releases: &releases,
    };
    let (published, prepared) = rayon::join(
        || publish(&dataset, analysis, config, timings, progress),
        || prepare_reference(config, scanned),
    );
    // A failed publish drops the prepared reference, which deletes it.
    let mut outcome = published?;
    // The human reports read what was just published; the diff too, so side by side.
    let (reports, finished) = rayon::join(
        || {
            let clock = Instant::now();
            crate::report::write_human_reports(&config.out_dir)?;
            log::info!(
                "wrote report.html and report.md in {:.2}s",
                clock.elapsed().as_secs_f64()
            );
            Ok::<(), crate::Error>(())
        },
        || finish(config, plan.as_ref(), prepared),
    );
    reports?;
    (outcome.diff, outcome.reference) = finished?;
    Ok(outcome)
}

/// What the ingest stage hands on.
pub struct Ingested {
    pub dataset: Dataset,
    /// Content hash of every record by position; empty when no reference is read or saved.
    pub hashes: Vec<u128>,
    pub plan: Option<Plan>,
    /// Records a reviewer released that are unchanged since: (global row, who/when/why).
    pub released: Vec<(u32, String)>,
    /// Those releases, for the next reference.
    pub releases: Releases,
}

/// Refuses an output directory that the walk of an input directory would enter: its
/// clean.parquet and quarantine.parquet would be read as input by the next scan (which then
/// failed on their schema). A folder named `_*` or `.*` on the way is skipped by the walk, so it
/// may hold the outputs.
fn refuse_output_inside_inputs(config: &ScanConfig) -> Result<(), io::InputError> {
    let Ok(out) = config.out_dir.canonicalize() else {
        return Ok(());
    };
    for input in &config.inputs {
        let Ok(root) = input.canonicalize() else { continue };
        let Ok(below) = out.strip_prefix(&root) else { continue };
        let walked = below.components().all(|c| {
            let name = c.as_os_str().to_string_lossy();
            !(name.starts_with('_') || name.starts_with('.'))
        });
        if root.is_dir() && walked {
            return Err(io::InputError::OutputInsideInput {
                out: config.out_dir.clone(),
                input: input.clone(),
            });
        }
    }
    Ok(())
}

/// Reads the data (feature columns standardized as the reference did), plans against the
/// reference, and finds the reviewed releases (`OUT/reference`) that still apply. Content hashes
/// are computed only when a reference is read or saved, or releases are checked.
pub fn ingest(
    config: &ScanConfig,
    reference: Option<Reference>,
    progress: &dyn Progress,
) -> Result<Ingested, crate::Error> {
    refuse_output_inside_inputs(config)?;
    let mut read = config.read.clone();
    read.feature_scaling = reference.as_ref().and_then(|r| r.header.feature_scaling.clone());
    let mut dataset = io::read_dataset_with_progress(&config.inputs, &read, progress)?;
    crate::quarantine::check_role_names(&dataset, &config.detectors)?;
    log::info!(
        "read {} rows x {} dims in {} classes from {} file(s)",
        dataset.rows(),
        dataset.dim,
        dataset.classes.len(),
        dataset.files.len()
    );
    let reviewed = crate::reference::releases(&config.out_dir)?;
    let wants_hashes = reference.is_some() || config.reference.save || !reviewed.keys.is_empty();
    let clock = Instant::now();
    let mut hashes = if wants_hashes {
        dataset.content_hashes()
    } else {
        Vec::new()
    };
    let hashing = clock.elapsed().as_secs_f64();
    let plan = reference.map(|r| Plan::new(r, &dataset, &hashes, config)).transpose()?;
    if wants_hashes {
        log::info!(
            "content hashes in {hashing:.2}s; matched against the reference in {:.2}s",
            clock.elapsed().as_secs_f64() - hashing
        );
    }
    if plan.as_ref().is_some_and(|p| !p.reuses_fit()) && read.feature_scaling.is_some() {
        // A re-fit standardizes feature columns by tonight's data, not the reference's.
        dataset = io::read_dataset_with_progress(&config.inputs, &config.read, progress)?;
        hashes = dataset.content_hashes();
    }
    let (released, releases) = reviewed.applying_to(&dataset, &hashes);
    Ok(Ingested {
        dataset,
        hashes,
        plan,
        released,
        releases,
    })
}

/// The reference for the next scan, when the config saves one, written but not yet current
/// (see [`finish`]).
pub fn prepare_reference(
    config: &ScanConfig,
    scanned: Scanned<'_>,
) -> Result<Option<crate::reference::Prepared>, crate::Error> {
    if !config.reference.save {
        return Ok(None);
    }
    let clock = Instant::now();
    let prepared = incremental::prepare_reference(config, scanned)?;
    log::info!(
        "wrote the next reference in {:.2}s (made current once the outputs are published)",
        clock.elapsed().as_secs_f64()
    );
    Ok(Some(prepared))
}

/// After publishing: the diff against the reference the scan started from (`diff.json`), and
/// the reference for the next scan, prepared while the outputs were written, committed (its
/// directory), also when the diff failed.
pub fn finish(
    config: &ScanConfig,
    plan: Option<&Plan>,
    prepared: Result<Option<crate::reference::Prepared>, crate::Error>,
) -> Result<(Option<Diff>, Option<PathBuf>), crate::Error> {
    let after = |what: &'static str| {
        move |e: crate::Error| crate::Error::AfterPublish {
            what,
            out: config.out_dir.clone(),
            source: Box::new(e),
        }
    };
    let clock = Instant::now();
    // The diff is taken first (committing may prune the generation it reads, as with
    // --since-reference naming an older one), but a failed diff (a damaged snapshot) does not
    // keep tonight's reference from becoming current: every later night would fail the same way.
    let diff = match plan.map(|p| (p, &p.diff_base().0)) {
        Some((_, incremental::DiffAgainst::Nothing)) => {
            log::info!(
                "tonight's records are the first incremental night's: every quarantined record \
                 counts as new, as it did then"
            );
            let _ = std::fs::remove_file(config.out_dir.join(crate::report::diff::DIFF_FILE));
            None
        }
        Some((p, incremental::DiffAgainst::Snapshot(base))) => {
            if *base != p.reference.dir {
                log::info!(
                    "tonight's records are the reference's: the diff is taken against {}, as the \
                     reference's own scan took it",
                    base.display()
                );
            }
            let d = incremental::diff_against(base, &config.out_dir);
            log::info!("diff in {:.2}s", clock.elapsed().as_secs_f64());
            Some(d)
        }
        None => None,
    };
    let saving = after("saving the reference for the next scan");
    let saved = match prepared.map_err(saving)? {
        Some(prepared) => {
            let dir = prepared.commit().map_err(|e| saving(e.into()))?;
            log::info!("saved reference {}", dir.display());
            Some(dir)
        }
        None => None,
    };
    let diff = match diff {
        Some(Err(e)) => {
            // Yesterday's diff.json would pass for tonight's.
            let _ = std::fs::remove_file(config.out_dir.join(crate::report::diff::DIFF_FILE));
            return Err(after("the diff against the reference")(e));
        }
        Some(Ok(d)) => Some(d),
        None => None,
    };
    Ok((diff, saved))
}

/// The quarantine and report stages: writes clean/quarantine/scores (conservation checked) and
/// report.json into `config.out_dir` as one [`io::Publication`]: the previous outputs are
/// replaced all together or not at all, also when the run is killed. The HTML and Markdown
/// reports are the caller's next step (`report::write_human_reports`).
pub fn publish(
    dataset: &Dataset,
    analysis: Analysis,
    config: &ScanConfig,
    mut timings: Vec<(String, f64)>,
    progress: &dyn Progress,
) -> Result<Outcome, crate::Error> {
    let clock = Instant::now();
    std::fs::create_dir_all(&config.out_dir).map_err(|source| io::OutputError::Io {
        path: config.out_dir.clone(),
        source,
    })?;
    let staged = quarantine::stage_outputs(
        dataset,
        &analysis.decision,
        &analysis.columns,
        &config.out_dir,
        progress,
    )?;
    timings.push(("write".to_string(), clock.elapsed().as_secs_f64() * 1e3));

    let quarantined = staged.conservation.quarantine_rows;
    let class_names = &dataset.classes;
    let classes: Vec<ClassReport> = (0..class_names.len())
        .map(|c| ClassReport {
            label: class_names[c].clone(),
            rows: dataset.class_size(c),
            analysed: !analysis.skipped.contains_key(&c),
            skipped: analysis.skipped.get(&c).cloned(),
            zero_vectors: analysis.zero_vectors[c],
            stats: analysis.class_stats[c].clone(),
            verdict: analysis.decision.verdicts[c].clone(),
            mean: analysis.class_geometry[c].as_ref().map(|g| g.0.clone()),
            radius: analysis.class_geometry[c].as_ref().map(|g| g.1),
        })
        .collect();
    let attacked_classes = classes
        .iter()
        .filter(|c| c.verdict.as_ref().is_some_and(|v| v.attacked))
        .map(|c| c.label.clone())
        .collect();
    let totals = Totals {
        rows: dataset.rows(),
        clean: staged.conservation.clean_rows,
        quarantined,
        quarantine_fraction: quarantined as f64 / dataset.rows() as f64,
        classes: class_names.len(),
        classes_analysed: class_names.len() - analysis.skipped.len(),
        attacked_classes,
    };
    let conservation = staged.conservation.clone();
    let mut publication = staged.publication(&config.out_dir)?;
    let report = Report {
        tool: Tool::default(),
        detectors: analysis.names.clone(),
        dataset: DatasetSummary {
            files: dataset.files.clone(),
            rows: dataset.rows(),
            dim: dataset.dim,
            id_column: dataset.id_column.clone(),
            label_column: dataset.label_column.clone(),
            vectors: dataset.vectors.clone(),
            source_column: dataset.source_column.clone(),
        },
        config: serde_json::to_value(config).unwrap_or_default(),
        classes,
        totals,
        conservation,
        influence: analysis.influence.clone(),
        timings_ms: timings,
        detector_seconds: analysis.detector_seconds,
        warnings: analysis.warnings,
        incremental: analysis.incremental,
    };
    publication.add_json(&config.out_dir.join(crate::report::REPORT_FILE), &report, true)?;
    // The replaced files are released in the background (`Retired`): dropping last night's
    // 1 GB clean.parquet is not the scan's wait.
    drop(publication.commit()?);
    Ok(Outcome {
        report,
        quarantined,
        diff: None,
        reference: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trusted set rewritten in place at the same size is another trusted set to the stages.
    #[test]
    fn trusted_fingerprints_see_a_same_size_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trusted.parquet");
        let mut config = ScanConfig::new(vec![], dir.path().join("out"));
        config.trusted = vec![path.clone()];
        std::fs::write(&path, b"label 1").unwrap();
        let before = trusted_fingerprints(&config).unwrap();
        std::fs::write(&path, b"label 2").unwrap();
        let after = trusted_fingerprints(&config).unwrap();
        assert_eq!((before.len(), before[0].1), (1, after[0].1));
        assert_ne!(before, after);
    }
}
