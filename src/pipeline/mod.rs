//! A scan, stage by stage: read -> per-class statistics and detectors -> decision -> outputs ->
//! report. The only module that calls every stage. An incremental scan (`incremental`) runs the
//! same stages against a reference's fits.

pub mod incremental;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::detect::{
    self, Available, BasisFit, ClassBasis, ClassFit, ClassScores, ClassView, DetectError, DetectorParams,
};
use crate::influence::{self, InfluenceReport, InfluenceState};
use crate::io::{self, Dataset, InputError, ReadOptions};
use crate::progress::Progress;
use crate::quarantine::{self, DetectorColumns};
use crate::reference::delta::IncrementalSummary;
use crate::reference::{Reference, Releases};
use crate::report::diff::Diff;
use crate::report::{ClassReport, DatasetSummary, Report, Tool, Totals};
use crate::score::{self, ClassEvidence, DecisionParams};
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

/// Path and size of every trusted-set file (the influence stage's results depend on them).
pub fn trusted_fingerprints(config: &ScanConfig) -> Result<Vec<(PathBuf, u64)>, crate::Error> {
    let files = if config.trusted.is_empty() {
        Vec::new()
    } else {
        io::list_input_files(&config.trusted)?
    };
    files
        .into_iter()
        .map(|p| {
            let size = std::fs::metadata(&p)
                .map_err(|source| InputError::Io {
                    path: p.clone(),
                    source,
                })?
                .len();
            Ok((p, size))
        })
        .collect()
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

/// Detector results for one class, or why it was skipped.
#[derive(Serialize, Deserialize)]
pub struct ClassResult {
    pub class: usize,
    pub result: Result<Vec<ClassScores>, String>,
    /// Each record's coordinates on the class's top two principal directions (for the report's
    /// scatter plots); empty when the class was skipped.
    #[serde(with = "crate::codec::pairs")]
    pub projection: Vec<[f32; 2]>,
    /// The class basis (mean, spectrum, top directions); `None` when the class was skipped. Its
    /// mean and radius let a later scan measure how far the class drifted (`datavet diff`).
    pub basis: Option<BasisFit>,
}

impl ClassResult {
    /// The class's fits, for the reference an incremental scan starts from (`names[d]` is
    /// detector `d`); `None` when the class was skipped.
    pub fn fit(&self, names: &[String]) -> Option<ClassFit> {
        let (Ok(scores), Some(basis)) = (&self.result, &self.basis) else {
            return None;
        };
        let detectors = names
            .iter()
            .zip(scores)
            .filter_map(|(name, s)| Some((name.clone(), s.fit.clone()?)))
            .collect();
        Some(ClassFit {
            basis: basis.clone(),
            detectors,
        })
    }
}

/// A verified clean set: vectors (`labels.len() * dim`) and class indices of the scanned data.
struct TrustedSet {
    x: Vec<f32>,
    labels: Vec<u32>,
}

/// Reads the trusted set, mapping its labels onto the scanned classes.
fn read_trusted(dataset: &Dataset, config: &ScanConfig) -> Result<Option<TrustedSet>, crate::Error> {
    if config.trusted.is_empty() {
        return Ok(None);
    }
    let read = ReadOptions {
        probs_col: None,
        loss_col: None,
        ..config.read.clone()
    };
    let trusted = io::read_dataset(&config.trusted, &read)?;
    let path = trusted.files[0].path.clone();
    if trusted.dim != dataset.dim {
        return Err(InputError::TrustedDimension {
            path,
            found: trusted.dim,
            expected: dataset.dim,
        }
        .into());
    }
    let mut labels = Vec::with_capacity(trusted.x.len() / trusted.dim.max(1));
    for c in 0..trusted.classes.len() {
        let name = &trusted.classes[c];
        let Some(mapped) = dataset.classes.iter().position(|d| d == name) else {
            return Err(InputError::UnknownTrustedLabel {
                path,
                label: name.clone(),
            }
            .into());
        };
        labels.extend(std::iter::repeat_n(mapped as u32, trusted.class_size(c)));
    }
    Ok(Some(TrustedSet { x: trusted.x, labels }))
}

/// Detector output for every class (the cluster stage's result).
#[derive(Serialize, Deserialize)]
pub struct ClassAnalysis {
    pub names: Vec<String>,
    pub results: Vec<ClassResult>,
}

/// The influence stage, when enabled and meaningful (two classes or more); the warning says why
/// it did not run otherwise.
pub fn influence_stage(
    dataset: &Dataset,
    config: &ScanConfig,
    progress: &dyn Progress,
) -> Result<(Option<InfluenceState>, Option<String>), crate::Error> {
    let params = &config.detectors.influence;
    if !params.enabled {
        return Ok((None, None));
    }
    if dataset.classes.len() < 2 || dataset.rows() < 2 * params.folds {
        let why = "influence stage skipped: it needs at least two classes and two rows per fold";
        return Ok((None, Some(why.into())));
    }
    let trusted = read_trusted(dataset, config)?;
    let extras = influence::Extras {
        trusted: trusted.as_ref().map(|t| (t.x.as_slice(), t.labels.as_slice())),
    };
    Ok((
        Some(influence::compute(dataset, params, &extras, config.seed, progress)),
        None,
    ))
}

/// The features stage: each class's basis (mean, covariance spectrum, top principal directions,
/// from mergeable co-moments), classes in parallel; `None` for a class too small to analyse.
/// With `fits` (an incremental scan's reference), a class keeps the reference's basis.
pub fn features_stage(
    dataset: &Dataset,
    config: &ScanConfig,
    fits: Option<&[Option<ClassFit>]>,
    progress: &dyn Progress,
) -> Vec<Option<BasisFit>> {
    let nb_dims = config.detectors.activation_clustering.nb_dims;
    progress.start("features", dataset.rows() as u64);
    let bases = (0..dataset.classes.len())
        .into_par_iter()
        .map(|c| {
            let n = dataset.class_size(c);
            progress.advance(n as u64);
            if n < config.min_class_rows.max(3) {
                return None;
            }
            match fits.and_then(|f| f.get(c)).and_then(Option::as_ref) {
                Some(fit) => Some(fit.basis.clone()),
                None => Some(BasisFit::fit(dataset.class_slice(c).1, dataset.dim, nb_dims)),
            }
        })
        .collect();
    progress.finish();
    bases
}

/// The cluster stage: every detector on every class (classes in parallel) on the class's basis
/// from the features stage, reading the influence stage's state where a detector needs it. With
/// `fits` (an incremental scan's reference, by class), a class that has one is scored under its
/// detectors' fits instead of fitted again.
pub fn cluster_stage(
    dataset: &Dataset,
    config: &ScanConfig,
    bases: &[Option<BasisFit>],
    influence: Option<&InfluenceState>,
    fits: Option<&[Option<ClassFit>]>,
    progress: &dyn Progress,
) -> Result<ClassAnalysis, crate::Error> {
    let available = Available {
        influence: influence.is_some(),
        trusted: influence.as_ref().is_some_and(|s| s.trusted_influence.is_some()),
        probs: dataset.probs.is_some(),
        losses: dataset.losses.is_some(),
    };
    let detectors = detect::registry(&config.detectors, available)?;
    let names: Vec<String> = detectors.iter().map(|d| d.name().to_string()).collect();
    let medians = detect::class_medians(dataset);
    let k = dataset.classes.len();
    progress.start("detect", dataset.rows() as u64);
    let results = (0..k)
        .into_par_iter()
        .map(|c| {
            let n = dataset.class_size(c);
            let Some(basis) = bases.get(c).and_then(Option::as_ref) else {
                let err = DetectError::TooSmall {
                    class: dataset.classes[c].clone(),
                    rows: n,
                    min: config.min_class_rows,
                };
                progress.advance(n as u64);
                return ClassResult {
                    class: c,
                    result: Err(err.to_string()),
                    projection: Vec::new(),
                    basis: None,
                };
            };
            let (_, x) = dataset.class_slice(c);
            let (a, b) = (dataset.class_offsets[c], dataset.class_offsets[c + 1]);
            let fit = fits.and_then(|f| f.get(c)).and_then(Option::as_ref);
            let basis = ClassBasis::project(basis.clone(), x, dataset.dim);
            let view = ClassView {
                class: c,
                x,
                dim: dataset.dim,
                basis: &basis,
                class_medians: &medians,
                seed: config.seed.wrapping_add(c as u64),
                class_names: &dataset.classes,
                offset: a,
                influence,
                probs: dataset.probs.as_ref().map(|p| &p[a * k..b * k]),
                losses: dataset.losses.as_ref().map(|(l, e)| (&l[a * e..b * e], *e)),
            };
            let result = detectors
                .iter()
                .map(|d| match fit {
                    Some(fit) => d.rescore(&view, fit.detectors.get(d.name())),
                    None => d.score_class(&view),
                })
                .collect::<Result<Vec<_>, DetectError>>()
                .map_err(|e| e.to_string());
            let projection = basis
                .projected
                .chunks_exact(basis.k)
                .map(|z| [z[0], z.get(1).copied().unwrap_or(0.0)])
                .collect();
            progress.advance(n as u64);
            ClassResult {
                class: c,
                result,
                projection,
                basis: Some(basis.fitted()),
            }
        })
        .collect();
    progress.finish();
    Ok(ClassAnalysis { names, results })
}

/// Everything the detectors and the decision produced for one dataset.
pub struct Analysis {
    pub names: Vec<String>,
    pub decision: score::Decision,
    pub columns: DetectorColumns,
    /// Per class: each detector's named statistics (empty when the class was skipped).
    pub class_stats: Vec<BTreeMap<String, Vec<crate::detect::Stat>>>,
    /// Classes not analysed, with why.
    pub skipped: BTreeMap<usize, String>,
    pub warnings: Vec<String>,
    pub influence: Option<InfluenceReport>,
    /// Per class: (mean, rms radius), for drift between scans; `None` for skipped classes.
    pub class_geometry: Vec<Option<(Vec<f64>, f64)>>,
    /// How an incremental scan matched its reference.
    pub incremental: Option<IncrementalSummary>,
}

/// Influence, cluster and score stages on a dataset already in memory (no output is written).
pub fn analyse(dataset: &Dataset, config: &ScanConfig, progress: &dyn Progress) -> Result<Analysis, crate::Error> {
    config.decision.check()?;
    let bases = features_stage(dataset, config, None, progress);
    let (influence, warning) = influence_stage(dataset, config, progress)?;
    let classes = cluster_stage(dataset, config, &bases, influence.as_ref(), None, progress)?;
    let report = influence.map(|s| s.report);
    Ok(score_stage(dataset, config, &classes, report, warning, None))
}

/// The score stage: gathers every detector's output and decides (or takes `decision` as already
/// made, when a staged run reuses it).
pub fn score_stage(
    dataset: &Dataset,
    config: &ScanConfig,
    classes: &ClassAnalysis,
    influence: Option<InfluenceReport>,
    influence_warning: Option<String>,
    decision: Option<score::Decision>,
) -> Analysis {
    let names = classes.names.clone();
    let mut warnings: Vec<String> = influence_warning.into_iter().collect();
    let mut evidence = Vec::new();
    let mut columns = DetectorColumns {
        names: names.iter().map(|s| s.to_string()).collect(),
        values: vec![vec![None; dataset.rows()]; names.len()],
        projection: vec![None; dataset.rows()],
        cluster: vec![None; dataset.rows()],
    };
    let mut skipped: BTreeMap<usize, String> = BTreeMap::new();
    let mut class_stats = vec![BTreeMap::new(); dataset.classes.len()];
    let mut class_geometry = vec![None; dataset.classes.len()];
    for r in &classes.results {
        if let (Ok(_), Some(basis)) = (&r.result, &r.basis) {
            class_geometry[r.class] = Some((basis.mean.clone(), basis.radius()));
        }
        match &r.result {
            Ok(scores) => {
                let (rows, _) = dataset.class_slice(r.class);
                for (i, &g) in rows.iter().enumerate() {
                    columns.projection[g as usize] = r.projection.get(i).copied();
                }
                for (d, s) in scores.iter().enumerate() {
                    for (i, &g) in rows.iter().enumerate() {
                        columns.values[d][g as usize] = Some(s.scores[i]);
                    }
                    if names[d] == "activation_clustering"
                        && let Some(grouping) = &s.grouping
                    {
                        for (i, &g) in rows.iter().enumerate() {
                            columns.cluster[g as usize] = grouping.cluster.get(i).copied();
                        }
                    }
                    class_stats[r.class].insert(names[d].to_string(), s.stats.clone());
                }
                evidence.push(ClassEvidence {
                    class: r.class,
                    rows,
                    scores: scores.as_slice().into(),
                });
            }
            Err(e) => {
                warnings.push(format!(
                    "class `{}` skipped: {e}; its rows stay in clean",
                    dataset.classes[r.class]
                ));
                skipped.insert(r.class, e.to_string());
            }
        }
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let decision = decision.unwrap_or_else(|| {
        score::decide(
            &evidence,
            &name_refs,
            &dataset.classes,
            dataset.rows(),
            &config.decision,
        )
    });
    let capped = decision
        .reasons
        .iter()
        .zip(&decision.quarantined)
        .filter(|(r, q)| !**q && r.contains("quarantine cap"))
        .count();
    if capped > 0 {
        warnings.push(format!(
            "{capped} flagged rows kept in clean: the quarantine cap was reached"
        ));
    }
    Analysis {
        names,
        decision,
        columns,
        class_stats,
        skipped,
        warnings,
        influence,
        class_geometry,
        incremental: None,
    }
}

/// Runs a whole scan and publishes its outputs in `config.out_dir`, reporting long stages to
/// `progress`. With a reference (`config.reference.since`), only new or changed records are
/// scored against its fits, unless the plan says to fit afresh.
pub fn run_scan(config: &ScanConfig, progress: &dyn Progress) -> Result<Outcome, crate::Error> {
    config.check()?; // bad parameters are rejected before reading any data
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
        Some(p) => (p.extend_influence(&dataset, config, progress)?, None),
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
    // so peak memory is the larger of the two stages, not their sum.
    dataset.x = Vec::new();
    let mut outcome = publish(&dataset, analysis, config, timings, progress)?;
    (outcome.diff, outcome.reference) = finish(
        config,
        Scanned {
            dataset: &dataset,
            hashes,
            influence,
            classes: &classes,
            plan: plan.as_ref(),
            releases: &releases,
        },
    )?;
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

/// Reads the data (feature columns standardized as the reference did), plans against the
/// reference, and finds the reviewed releases (`OUT/reference`) that still apply. Content hashes
/// are computed only when a reference is read or saved, or releases are checked.
pub fn ingest(
    config: &ScanConfig,
    reference: Option<Reference>,
    progress: &dyn Progress,
) -> Result<Ingested, crate::Error> {
    let mut read = config.read.clone();
    read.feature_scaling = reference.as_ref().and_then(|r| r.header.feature_scaling.clone());
    let mut dataset = io::read_dataset_with_progress(&config.inputs, &read, progress)?;
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

/// After publishing: the diff against the reference the scan started from (`diff.json`), and
/// the reference for the next scan (its directory).
pub fn finish(config: &ScanConfig, scanned: Scanned<'_>) -> Result<(Option<Diff>, Option<PathBuf>), crate::Error> {
    let after = |what: &'static str| {
        move |e: crate::Error| crate::Error::AfterPublish {
            what,
            out: config.out_dir.clone(),
            source: Box::new(e),
        }
    };
    let clock = Instant::now();
    let diff = match scanned.plan {
        Some(p) => {
            let d = incremental::diff_against(&p.reference.dir, &config.out_dir)
                .map_err(after("the diff against the reference"))?;
            log::info!(
                "diff against {} in {:.2}s",
                p.reference.dir.display(),
                clock.elapsed().as_secs_f64()
            );
            Some(d)
        }
        None => None,
    };
    let mut saved = None;
    if config.reference.save {
        let clock = Instant::now();
        let dir =
            incremental::save_reference(config, scanned).map_err(after("saving the reference for the next scan"))?;
        log::info!(
            "saved reference {} in {:.2}s",
            dir.display(),
            clock.elapsed().as_secs_f64()
        );
        saved = Some(dir);
    }
    Ok((diff, saved))
}

/// The quarantine and report stages: writes clean/quarantine/scores (conservation checked) and
/// the reports into `config.out_dir`, replacing previous outputs only when all are written.
pub fn publish(
    dataset: &Dataset,
    analysis: Analysis,
    config: &ScanConfig,
    mut timings: Vec<(String, f64)>,
    progress: &dyn Progress,
) -> Result<Outcome, crate::Error> {
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((name.to_string(), clock.elapsed().as_secs_f64() * 1e3));
        clock = Instant::now();
    };
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
    lap("write", &mut timings);

    let quarantined = staged.conservation.quarantine_rows;
    let class_names = &dataset.classes;
    let classes: Vec<ClassReport> = (0..class_names.len())
        .map(|c| ClassReport {
            label: class_names[c].clone(),
            rows: dataset.class_size(c),
            analysed: !analysis.skipped.contains_key(&c),
            skipped: analysis.skipped.get(&c).cloned(),
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
    staged.commit()?;
    lap("commit", &mut timings);
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
        warnings: analysis.warnings,
        incremental: analysis.incremental,
    };
    report.write(&config.out_dir)?;
    crate::report::write_human_reports(&config.out_dir)?;
    Ok(Outcome {
        report,
        quarantined,
        diff: None,
        reference: None,
    })
}
