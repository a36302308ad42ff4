//! The analysis stages on a dataset in memory: features (class bases), influence, cluster (every
//! detector on every class) and score (the decision). `run_scan` and staged runs call them in
//! that order; `analyse` runs them all without writing anything.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ScanConfig;
use crate::detect::{self, Available, BasisFit, ClassBasis, ClassFit, ClassScores, ClassView, DetectError};
use crate::influence::{self, InfluenceReport, InfluenceState};
use crate::io::{self, Dataset, InputError, ReadOptions};
use crate::progress::Progress;
use crate::quarantine::DetectorColumns;
use crate::reference::delta::IncrementalSummary;
use crate::score::{self, ClassEvidence, ClassGeometry};

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
    /// Seconds each detector took on this class, in the order of `ClassAnalysis::names`; empty
    /// when the class was skipped (and in stage results written before 0.2.3).
    #[serde(default)]
    pub detector_seconds: Vec<f64>,
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

impl ClassAnalysis {
    /// Per detector: seconds summed over classes. Classes run in parallel, so the sum can exceed
    /// the detect stage's wall-clock time; it is what the detector costs, for choosing what to
    /// turn off.
    pub fn detector_seconds(&self) -> Vec<(String, f64)> {
        self.names
            .iter()
            .enumerate()
            .map(|(d, name)| {
                let total = self.results.iter().filter_map(|r| r.detector_seconds.get(d)).sum();
                (name.clone(), total)
            })
            .collect()
    }
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
    // The trusted set only serves the surrogate: without it, it is not read.
    let skipped = influence::surrogate_too_large(dataset.rows(), dataset.classes.len(), params);
    let trusted = match skipped {
        Some(_) => None,
        None => read_trusted(dataset, config)?,
    };
    let extras = influence::Extras {
        trusted: trusted.as_ref().map(|t| (t.x.as_slice(), t.labels.as_slice())),
    };
    let state = influence::compute(dataset, params, &extras, config.seed, progress);
    let unread = (skipped.is_some() && !config.trusted.is_empty()).then_some("; the trusted set was not read");
    let warning = state
        .report
        .surrogate_skipped
        .clone()
        .map(|why| why + unread.unwrap_or(""));
    if let Some(why) = &warning {
        log::warn!("{why}");
    }
    Ok((Some(state), warning))
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
            if n < config.rows_to_analyse(dataset.dim) {
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
        neighbours: influence.is_some(),
        surrogate: influence.is_some_and(InfluenceState::has_surrogate),
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
                    min: config.rows_to_analyse(dataset.dim),
                };
                progress.advance(n as u64);
                return ClassResult {
                    class: c,
                    result: Err(err.to_string()),
                    projection: Vec::new(),
                    basis: None,
                    detector_seconds: Vec::new(),
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
            let mut detector_seconds = Vec::with_capacity(detectors.len());
            let result = detectors
                .iter()
                .map(|d| {
                    let started = std::time::Instant::now();
                    let scores = match fit {
                        Some(fit) => d.rescore(&view, fit.detectors.get(d.name())),
                        None => d.score_class(&view),
                    };
                    detector_seconds.push(started.elapsed().as_secs_f64());
                    scores
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
                detector_seconds,
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
    /// Per class: records whose vector is all zero, which no detector can tell apart.
    pub zero_vectors: Vec<usize>,
    /// How an incremental scan matched its reference.
    pub incremental: Option<IncrementalSummary>,
    /// Per detector: seconds summed over the classes it ran on.
    pub detector_seconds: Vec<(String, f64)>,
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
                let (rows, x) = dataset.class_slice(r.class);
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
                    geometry: r.basis.as_ref().map(|basis| ClassGeometry {
                        basis,
                        x,
                        dim: dataset.dim,
                    }),
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
    if let Some(share) = influence
        .as_ref()
        .and_then(|r| crate::detect::near_duplicates::copies_are_common(&r.knn, dataset.rows()))
    {
        warnings.push(format!(
            "near-copies not flagged: {:.1}% of the rows sit in groups of {} or more (near-)identical records, more than {}% is the data's own duplication (discrete features?), not an attack; `near_duplicates` still ranks them",
            share * 100.0,
            config.detectors.influence.near_duplicate_min_group,
            crate::detect::near_duplicates::MAX_COPIED_SHARE * 100.0
        ));
    }
    let zero_vectors: Vec<usize> = (0..dataset.classes.len())
        .map(|c| crate::stats::zero_vectors(dataset.class_slice(c).1, dataset.dim))
        .collect();
    warnings.extend(zero_vector_warning(dataset, &zero_vectors));
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
        zero_vectors,
        incremental: None,
        detector_seconds: classes.detector_seconds(),
    }
}

/// Classes with at least this share of all-zero vectors are named in a warning.
const ZERO_VECTOR_WARNING_SHARE: f64 = 0.05;

/// A warning naming the classes where many records have all-zero vectors. A ReLU layer maps
/// every input it discards there, whatever its class and whether triggered or not, so nothing
/// computed on the layer (clusters, distances, the surrogate's probabilities) tells those records
/// apart: poison among them goes unseen (only per-record losses, where given, still rank them).
/// On the generated 64-dims ReLU layers with 3000 records per class and a 15% backdoor, 0.4-78%
/// of the poison was all zero (seeds 1-5; 15-53% on seeds 1000-1004). Standardized feature
/// columns are all zero only where every feature sits at its mean: no warning for them.
fn zero_vector_warning(dataset: &Dataset, zero_vectors: &[usize]) -> Option<String> {
    if matches!(dataset.vectors, io::VectorSource::Features(_)) {
        return None;
    }
    let mut named: Vec<(usize, f64)> = zero_vectors
        .iter()
        .enumerate()
        .map(|(c, &zeros)| (c, zeros as f64 / dataset.class_size(c).max(1) as f64))
        .filter(|&(_, share)| share >= ZERO_VECTOR_WARNING_SHARE)
        .collect();
    if named.is_empty() {
        return None;
    }
    named.sort_by(|a, b| b.1.total_cmp(&a.1));
    const LISTED: usize = 10;
    let mut list: Vec<String> = named
        .iter()
        .take(LISTED)
        .map(|&(c, share)| {
            format!(
                "`{}` {} of {} ({:.1}%)",
                dataset.classes[c],
                zero_vectors[c],
                dataset.class_size(c),
                100.0 * share
            )
        })
        .collect();
    if named.len() > LISTED {
        list.push(format!("and {} more", named.len() - LISTED));
    }
    Some(format!(
        "all-zero vectors in {} {}: {}; no detector working on the vectors can tell these records apart (poison among them goes unseen); the vectors of a layer before the ReLU, or nearer the input, would show them (`zero_vectors` per class in report.json)",
        named.len(),
        if named.len() == 1 { "class" } else { "classes" },
        list.join(", ")
    ))
}
