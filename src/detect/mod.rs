//! Per-class detectors behind one trait. A detector scores the records of one class and states how
//! attacked the class looks; it never thresholds records: `score` decides, so no detector can
//! "flag the smaller cluster of every class" (ART's default).
//!
//! Imports: `io` (types only), `stats`. Adding a detector: one file here and one line in [`registry`].

pub mod activation_clustering;
pub mod confident_learning;
pub mod deep_knn;
pub mod density;
pub mod distance_analysis;
pub mod kmeans;
pub mod linalg;
pub mod loss_trajectory;
pub mod mixture;
pub mod model_probs;
pub mod near_duplicates;
pub mod self_influence;
pub mod separated_group;
pub mod shared_shift;
pub mod spectral;
pub mod spectre;
pub mod trusted_influence;
pub mod untangle;

use serde::{Deserialize, Serialize};

use crate::influence::{InfluenceParams, InfluenceState};
use crate::io::Dataset;
use linalg::project;

pub use activation_clustering::{ActivationClustering, ActivationClusteringParams};
pub use spectral::{Spectral, SpectralParams};
pub use spectre::{Spectre, SpectreParams};

/// The fitted part of a class's geometry: what a later scan projects new records with
/// (incremental scans keep it in the reference).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BasisFit {
    #[serde(with = "crate::codec::f64s")]
    pub mean: Vec<f64>,
    /// The leading eigenvalues of the class covariance, descending (at least two, when the
    /// vectors have two dimensions; references from before 0.2.12 hold all of them).
    #[serde(with = "crate::codec::f64s")]
    pub eigenvalues: Vec<f64>,
    /// The covariance's trace (the sum of all its eigenvalues); absent in references from before
    /// 0.2.12, whose `eigenvalues` are complete and sum to it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::codec::opt_f64")]
    pub trace: Option<f64>,
    /// Top `k` principal directions, `k * dim` row-major.
    #[serde(with = "crate::codec::f32s")]
    pub components: Vec<f32>,
    pub k: usize,
}

impl BasisFit {
    /// PCA of one class to `k` dimensions (fewer when the class or the vectors are smaller):
    /// co-moments, then the leading eigenpairs of the covariance (all of them are never needed:
    /// the spread beyond the top two is the trace less theirs); with fewer records than
    /// dimensions, the same pairs from the records' Gram matrix (`linalg::principal_by_gram`).
    pub fn fit(x: &[f32], dim: usize, k: usize) -> BasisFit {
        let n = x.len() / dim;
        let k = k.min(dim).min(n.saturating_sub(1)).max(1);
        // Fewer records than dimensions (wide layers, many small classes): the Gram route.
        let principal = (n < dim)
            .then(|| linalg::principal_by_gram(x, dim, k.max(2)))
            .flatten()
            .unwrap_or_else(|| linalg::principal_by_moments(x, dim, k.max(2)));
        BasisFit {
            mean: principal.mean,
            eigenvalues: principal.eigenvalues,
            trace: Some(principal.trace),
            components: principal.components[..k * dim].iter().map(|&v| v as f32).collect(),
            k,
        }
    }

    /// The class's total variance: the covariance trace.
    pub fn total_variance(&self) -> f64 {
        self.trace
            .unwrap_or_else(|| self.eigenvalues.iter().map(|v| v.max(0.0)).sum::<f64>())
    }

    /// Root-mean-square distance of the class's records from its mean (sqrt of the covariance
    /// trace): the unit drift is measured in.
    pub fn radius(&self) -> f64 {
        self.total_variance().max(0.0).sqrt()
    }
}

/// Everything fitted on one class that an incremental scan reuses: the basis and each detector's
/// own fit (by detector name).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassFit {
    pub basis: BasisFit,
    pub detectors: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The shared per-class geometry every detector starts from, computed once per class.
///
/// Fitted from mergeable co-moments (`linalg::Moments`), so a streaming scan can build it from row
/// groups (a class with fewer records than dimensions from its records' Gram matrix, smaller than
/// its co-moments); `projected` and `residual` are the only per-record parts.
pub struct ClassBasis {
    pub mean: Vec<f64>,
    /// The leading eigenvalues of the class covariance, descending (see [`BasisFit`]).
    pub eigenvalues: Vec<f64>,
    /// The covariance's trace.
    pub total_variance: f64,
    /// Top `k` principal directions, `k * dim` row-major.
    pub components: Vec<f32>,
    pub k: usize,
    /// Coordinates of every record of the class on the `k` components (centred), `n * k`.
    pub projected: Vec<f32>,
    /// Per record: distance from the class mean outside the top-`k` subspace (reconstruction
    /// error). A poison cluster too small to own a principal direction still shows up here.
    pub residual: Vec<f32>,
}

impl ClassBasis {
    /// PCA of one class to `k` dimensions, and every record on it.
    pub fn fit(x: &[f32], dim: usize, k: usize) -> ClassBasis {
        ClassBasis::project(BasisFit::fit(x, dim, k), x, dim)
    }

    /// The records `x` on an already fitted basis (an incremental scan's, or the one just fitted).
    pub fn project(fit: BasisFit, x: &[f32], dim: usize) -> ClassBasis {
        let total_variance = fit.total_variance();
        let BasisFit {
            mean,
            eigenvalues,
            components,
            k,
            ..
        } = fit;
        let projected = project(x, dim, &mean, &components, k);
        let residual = x
            .chunks_exact(dim)
            .zip(projected.chunks_exact(k))
            .map(|(row, z)| {
                let total: f64 = row.iter().zip(&mean).map(|(&v, m)| (v as f64 - m).powi(2)).sum();
                let inside: f64 = z.iter().map(|&v| (v as f64).powi(2)).sum();
                (total - inside).max(0.0).sqrt() as f32
            })
            .collect();
        ClassBasis {
            mean,
            eigenvalues,
            total_variance,
            components,
            k,
            projected,
            residual,
        }
    }

    /// Every record's top-k basis coordinates plus its residual norm outside them (when the
    /// vectors, `dim` long, have more dimensions than k): a poison cluster too small to own a
    /// principal direction moves the residual instead. (`n * width` values, width.)
    pub fn coordinates(&self, dim: usize) -> (Vec<f64>, usize) {
        let k0 = self.k;
        let with_residual = dim > k0;
        let k = k0 + with_residual as usize;
        let mut z: Vec<f64> = Vec::with_capacity(self.residual.len() * k);
        for (row, r) in self.projected.chunks_exact(k0).zip(&self.residual) {
            z.extend(row.iter().map(|&v| v as f64));
            if with_residual {
                z.push(*r as f64);
            }
        }
        (z, k)
    }

    /// The fitted part, for the reference an incremental scan starts from.
    pub fn fitted(&self) -> BasisFit {
        BasisFit {
            mean: self.mean.clone(),
            eigenvalues: self.eigenvalues.clone(),
            trace: Some(self.total_variance),
            components: self.components.clone(),
            k: self.k,
        }
    }
}

/// Above this share of exact zeros among a class's activation values it counts as sparse (a
/// ReLU layer's).
pub const MAX_ZERO_SHARE: f64 = 0.1;

/// Share of exact zeros among the values of `x`.
pub fn zero_share(x: &[f32]) -> f64 {
    x.iter().filter(|&&v| v == 0.0).count() as f64 / x.len().max(1) as f64
}

/// Whether a class's activations are sparse: more than [`MAX_ZERO_SHARE`] of them exact zeros.
pub fn is_sparse(x: &[f32]) -> bool {
    zero_share(x) > MAX_ZERO_SHARE
}

/// One class's records, borrowed from the [`Dataset`]; detectors never copy the matrix.
pub struct ClassView<'a> {
    /// Class index (into `dataset.classes`).
    pub class: usize,
    /// Row-major `n * dim` vectors of this class.
    pub x: &'a [f32],
    pub dim: usize,
    pub basis: &'a ClassBasis,
    /// Coordinate-wise median vector of every class (estimated on a sample), for cross-class checks.
    pub class_medians: &'a [Vec<f32>],
    /// Seed for randomized detectors; already mixed with the class index.
    pub seed: u64,
    /// Class names, for reasons.
    pub class_names: &'a [String],
    /// Position of the class's first record in the class-grouped order (`Dataset::x`), where the
    /// dataset-wide arrays below are indexed.
    pub offset: usize,
    /// The influence stage's results, when it ran.
    pub influence: Option<&'a InfluenceState>,
    /// The input's own predicted probabilities for this class's records (`n * classes`).
    pub probs: Option<&'a [f32]>,
    /// The input's per-record losses for this class's records: (`n * epochs`, epochs).
    pub losses: Option<(&'a [f32], usize)>,
}

impl<'a> ClassView<'a> {
    pub fn n(&self) -> usize {
        self.x.len() / self.dim
    }

    /// The influence stage's results, or the error a detector that needs them returns.
    pub fn influence(&self, detector: &'static str) -> Result<&'a InfluenceState, DetectError> {
        self.influence.ok_or(DetectError::Failed {
            detector,
            message: "the influence stage did not run".into(),
        })
    }

    /// Positions (class-grouped order) of this class's records.
    pub fn positions(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.n()
    }

    /// The class's basis coordinates and residuals ([`ClassBasis::coordinates`]).
    pub fn coordinates(&self) -> (Vec<f64>, usize) {
        self.basis.coordinates(self.dim)
    }
}

/// A named per-class diagnostic number, rendered by the report without knowing the detector.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stat {
    pub name: std::borrow::Cow<'static, str>,
    pub value: f64,
}

/// How strongly a whole class looks attacked to one detector.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ClassSignal {
    /// Higher = more attacked-looking. Classes are compared by their excess over `clean_bound`,
    /// which takes out what class size alone does to the value.
    pub value: f64,
    /// What a clean class of this size would reach at most (the decision also requires `value` to
    /// exceed it, or `bound_with_group` where set, so one class, or classes that are all alike,
    /// are not judged on ranks alone).
    pub clean_bound: f64,
    /// Smallest spread between clean classes to assume when comparing classes (the MAD floor), in
    /// units of `value`: with few classes, or classes that all score 0, the MAD alone can be ~0
    /// and would make any small difference look like an outlier.
    pub min_spread: f64,
    /// Where the detector also found a group of its own that accounts for the value (its
    /// suspect, a whole population), the bound the value must exceed instead of `clean_bound`:
    /// the group is a second piece of evidence that the bound alone stood for. Classes are still
    /// compared by their excess over `clean_bound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_with_group: Option<f64>,
}

impl ClassSignal {
    /// A signal of `value` against `clean_bound`, with no lower bound for a group.
    pub fn new(value: f64, clean_bound: f64, min_spread: f64) -> ClassSignal {
        ClassSignal {
            value,
            clean_bound,
            min_spread,
            bound_with_group: None,
        }
    }

    /// Whether the value is over the bound it is judged by (`bound_with_group` where set).
    pub fn over_bound(&self) -> bool {
        over_bound(self.value, self.clean_bound, self.bound_with_group)
    }
}

/// Whether a class signal's `value` is over the bound it is judged by: `bound_with_group` where
/// its detector found a group of its own, else `clean_bound`. The one rule for the signal and
/// for its report (`score::SignalVerdict`).
pub fn over_bound(value: f64, clean_bound: f64, bound_with_group: Option<f64>) -> bool {
    value > bound_with_group.unwrap_or(clean_bound)
}

/// Per-record cluster assignment, for reasons ("cluster 1 of 2").
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Grouping {
    pub cluster: Vec<u8>,
    /// The cluster that looks anomalous (the smaller, well-separated one), if any.
    pub suspect: Option<u8>,
    /// Another class whose median is closer to the suspect cluster than its own class's is.
    pub closer_to_class: Option<usize>,
    /// The suspect cluster is all the detector found: where only such detectors judge a class
    /// attacked, the decision flags their clusters and not SPECTRE's record tail. True for a
    /// population of its own (a k-means split, a separated group). False for SPECTRE's split,
    /// which only marks where its tail begins, and for density's clump, the core of a faint
    /// backdoor whose rim SPECTRE's tail finds (Gaussian 64 dims x 500, tuning seeds: faint
    /// recall 0.56 -> 0.44 with it true).
    #[serde(default)]
    pub suspect_is_whole: bool,
    /// The suspect group, whole in that it is all the detector found, may be only part of its
    /// population: a shared shift's few records stand out, while a large backdoor's others share
    /// the shift less. Alone it never replaces the class's other flags as the regrowth's seed (a
    /// 15% backdoor's shared-shift group of 14 did, and 200 of its 450 records were found where
    /// SPECTRE's tail found 450: Gaussian 64 dims x 3 000, tuning seed 13). Where it alone judges
    /// the class, it is still what is flagged ([`Grouping::suspect_is_whole`]), then regrown.
    #[serde(default)]
    pub may_be_part: bool,
    /// Empty, or one per record: what the detector says of a suspect member beyond being one
    /// (how it stands out; "" where nothing more), added to its reason. A detector whose group
    /// gathers records found in different ways says which way found each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Grouping {
    /// A whole population found as such (1 = member): the suspect cluster, and all the detector
    /// found ([`Grouping::suspect_is_whole`]).
    pub fn whole(members: Vec<u8>) -> Grouping {
        Grouping {
            cluster: members,
            suspect: Some(1),
            suspect_is_whole: true,
            ..Grouping::default()
        }
    }
}

/// What one detector says about one class: scores, never decisions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassScores {
    /// One per record of the view, in view order; higher = more suspicious; finite.
    #[serde(with = "crate::codec::f32s")]
    pub scores: Vec<f32>,
    pub stats: Vec<Stat>,
    pub signal: Option<ClassSignal>,
    pub grouping: Option<Grouping>,
    /// Evidence in [0, 1] that each record is bad on its own, whatever its class looks like
    /// (confident learning's 1 - p(label)); it ranks records below the quarantine line, so
    /// suspicion stays informative where nothing is quarantined. Most detectors leave it `None`.
    #[serde(with = "crate::codec::opt_f32s")]
    pub record_level: Option<Vec<f32>>,
    /// Records the detector's own method marks whatever the class verdict (confident learning's
    /// label issues, near-copy groups). Most detectors leave it empty.
    pub flagged: Vec<Flag>,
    /// The detector's own fit on this class (cluster centres, a robust covariance), when it has
    /// one: an incremental scan scores new records under it ([`Detector::rescore`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<serde_json::Value>,
}

impl ClassScores {
    /// Record scores and nothing else: no statistics, signal, group, flags or fit.
    pub fn scores_only(scores: Vec<f32>) -> ClassScores {
        ClassScores {
            scores,
            stats: Vec::new(),
            signal: None,
            grouping: None,
            record_level: None,
            flagged: Vec::new(),
            fit: None,
        }
    }
}

/// One record a detector's method marks on its own, with how strongly and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flag {
    /// Index of the record within the class view.
    pub index: usize,
    /// In [0, 1]; sets the record's suspicion between 0.5 and 1.
    pub strength: f64,
    pub why: String,
}

/// A detector of poisoned records. Object-safe so pipelines run a `Vec<Box<dyn Detector>>`.
pub trait Detector: Send + Sync {
    /// The name in pipeline files, score columns and reasons: "spectral".
    fn name(&self) -> &'static str;
    /// Fits on the class and scores every record of it; a fit of the detector's own comes back
    /// in [`ClassScores::fit`].
    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError>;
    /// Scores the class's records under `fit` (a [`ClassScores::fit`] of an earlier scan) without
    /// fitting again: the incremental scan's path. On the records of that scan it gives the same
    /// scores. Detectors without a fit of their own (they read the class basis or the influence
    /// state) score as usual.
    fn rescore(&self, view: &ClassView<'_>, fit: Option<&serde_json::Value>) -> Result<ClassScores, DetectError> {
        let _ = fit;
        self.score_class(view)
    }
}

/// Reads a detector's stored fit back; a mismatch means the reference was written by another
/// version of the detector.
pub fn parse_fit<T: serde::de::DeserializeOwned>(
    detector: &'static str,
    fit: Option<&serde_json::Value>,
) -> Result<T, DetectError> {
    let fit = fit.ok_or(DetectError::Failed {
        detector,
        message: "the reference holds no fit for this class".into(),
    })?;
    T::deserialize(fit).map_err(|e| DetectError::Failed {
        detector,
        message: format!("the reference's fit does not read: {e}"),
    })
}

/// A detector's fit as stored in [`ClassScores::fit`].
pub fn store_fit(fit: &impl Serialize) -> Option<serde_json::Value> {
    serde_json::to_value(fit).ok()
}

/// Detector failures on one class; the class is skipped and the report says why.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{rows} rows, fewer than the {min} needed to analyse class `{class}`")]
    TooSmall { class: String, rows: usize, min: usize },
    #[error("{detector}: {message}")]
    Failed { detector: &'static str, message: String },
}

/// A hyperparameter that breaks its rule; `key` is spelled as in pipeline files.
#[derive(Debug, thiserror::Error)]
#[error("`{key}` {rule} (got {got})")]
pub struct ParamError {
    pub key: &'static str,
    pub rule: &'static str,
    pub got: String,
}

impl ParamError {
    pub fn new(key: &'static str, rule: &'static str, got: impl ToString) -> ParamError {
        ParamError {
            key,
            rule,
            got: got.to_string(),
        }
    }
}

/// Settings of every detector; `Default` is what `datavet scan` runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DetectorParams {
    pub activation_clustering: ActivationClusteringParams,
    pub spectral: SpectralParams,
    pub spectre: SpectreParams,
    pub shared_shift: shared_shift::SharedShiftParams,
    pub influence: InfluenceParams,
}

/// Which optional inputs a scan has; some detectors only run with them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Available {
    /// The influence stage ran (enabled, and at least two classes): its neighbour search, ...
    pub neighbours: bool,
    /// ... and its surrogate (skipped above `max-probability-values`).
    pub surrogate: bool,
    pub trusted: bool,
    pub probs: bool,
    pub losses: bool,
}

/// The checked detectors to run, in report order.
pub fn registry(params: &DetectorParams, available: Available) -> Result<Vec<Box<dyn Detector>>, ParamError> {
    let activation_clustering = params.activation_clustering.clone().check()?;
    let mut detectors: Vec<Box<dyn Detector>> = vec![Box::new(activation_clustering.clone())];
    if params.activation_clustering.distance_analysis {
        detectors.push(Box::new(distance_analysis::DistanceAnalysis::new(
            activation_clustering,
        )));
    }
    detectors.push(Box::new(params.spectral.clone().check()?));
    if params.spectre.enabled {
        detectors.push(Box::new(params.spectre.clone().check()?));
    }
    if params.shared_shift.enabled {
        detectors.push(Box::new(shared_shift::SharedShift));
    }
    params.influence.check()?;
    if available.surrogate {
        detectors.push(Box::new(confident_learning::ConfidentLearning));
        detectors.push(Box::new(self_influence::SelfInfluence));
    }
    if available.neighbours {
        detectors.push(Box::new(deep_knn::DeepKnn));
        detectors.push(Box::new(density::Density));
        detectors.push(Box::new(near_duplicates::NearDuplicates::new(&params.influence)));
        detectors.push(Box::new(separated_group::SeparatedGroup));
    }
    if available.surrogate && available.trusted {
        detectors.push(Box::new(trusted_influence::TrustedInfluence));
    }
    if available.probs {
        detectors.push(Box::new(model_probs::ModelProbs));
    }
    if available.losses {
        detectors.push(Box::new(loss_trajectory::LossTrajectory));
    }
    Ok(detectors)
}

/// Rows sampled per class for medians and silhouettes (cheap sketches of O(n^2) or sorting work).
pub const SAMPLE_ROWS: usize = 2000;

/// Evenly spaced sample of row indices `0..n`, at most `max` of them (deterministic).
pub fn sample_rows(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    (0..max).map(|i| i * n / max).collect()
}

/// Coordinate-wise median of each class's vectors, on a sample of its rows.
pub fn class_medians(dataset: &Dataset) -> Vec<Vec<f32>> {
    (0..dataset.classes.len())
        .map(|c| {
            let (_, x) = dataset.class_slice(c);
            coordinate_median(x, dataset.dim, &sample_rows(x.len() / dataset.dim.max(1), SAMPLE_ROWS))
        })
        .collect()
}

/// Coordinate-wise median of the rows `rows` of row-major `x`.
pub fn coordinate_median(x: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    let mut column = vec![0f32; rows.len()];
    (0..dim)
        .map(|j| {
            if rows.is_empty() {
                return 0.0;
            }
            column.iter_mut().zip(rows).for_each(|(c, &r)| *c = x[r * dim + j]);
            let mid = column.len() / 2;
            *column.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1
        })
        .collect()
}

/// `f` of class `class`'s view among `classes` (row-major vectors, `dim` each), with a basis of
/// 2 directions and no influence state: for detectors' unit tests.
#[cfg(test)]
pub(crate) fn with_view<R>(classes: &[Vec<f32>], dim: usize, class: usize, f: impl FnOnce(&ClassView<'_>) -> R) -> R {
    let medians: Vec<Vec<f32>> = classes
        .iter()
        .map(|x| coordinate_median(x, dim, &(0..x.len() / dim).collect::<Vec<_>>()))
        .collect();
    let x = &classes[class];
    let basis = ClassBasis::fit(x, dim, 2);
    let names: Vec<String> = (0..classes.len()).map(|c| c.to_string()).collect();
    f(&ClassView {
        class,
        x,
        dim,
        basis: &basis,
        class_medians: &medians,
        seed: 7,
        class_names: &names,
        offset: 0,
        influence: None,
        probs: None,
        losses: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_types_are_send_and_sync() {
        fn ok<T: Send + Sync>() {}
        ok::<ClassBasis>();
        ok::<ClassScores>();
        ok::<Box<dyn Detector>>();
    }

    #[test]
    fn registry_respects_detector_switches() {
        let names = |p: &DetectorParams, available: Available| -> Vec<&'static str> {
            registry(p, available).unwrap().iter().map(|d| d.name()).collect()
        };
        let mut p = DetectorParams::default();
        assert_eq!(registry(&p, Available::default()).unwrap().len(), 5);
        p.spectre.enabled = false;
        assert_eq!(
            names(&p, Available::default()),
            ["activation_clustering", "distance_analysis", "spectral", "shared_shift"]
        );
        p.activation_clustering.distance_analysis = false;
        assert_eq!(
            names(&p, Available::default()),
            ["activation_clustering", "spectral", "shared_shift"]
        );
        p.shared_shift.enabled = false;
        assert_eq!(names(&p, Available::default()), ["activation_clustering", "spectral"]);
        p.shared_shift.enabled = true;
        p.activation_clustering.distance_analysis = true;
        let all = Available {
            neighbours: true,
            surrogate: true,
            trusted: true,
            probs: true,
            losses: true,
        };
        assert_eq!(
            names(&p, all),
            [
                "activation_clustering",
                "distance_analysis",
                "spectral",
                "shared_shift",
                "confident_learning",
                "self_influence",
                "deep_knn",
                "density",
                "near_duplicates",
                "separated_group",
                "trusted_influence",
                "model_probs",
                "loss_trajectory"
            ]
        );
        // Without the surrogate (too many class probabilities) its detectors go, the trusted
        // set's with them; the neighbour search's stay.
        let neighbours_only = Available {
            surrogate: false,
            ..all
        };
        assert_eq!(
            names(&p, neighbours_only),
            [
                "activation_clustering",
                "distance_analysis",
                "spectral",
                "shared_shift",
                "deep_knn",
                "density",
                "near_duplicates",
                "separated_group",
                "model_probs",
                "loss_trajectory"
            ]
        );
    }

    #[test]
    fn basis_finds_the_direction_of_largest_variance() {
        // Points on a line along (1, 1, 0) plus small noise on the third axis.
        let x: Vec<f32> = (0..200)
            .flat_map(|i| {
                let t = i as f32 - 100.0;
                [t, t, ((i * 37) % 7) as f32 * 0.01]
            })
            .collect();
        let b = ClassBasis::fit(&x, 3, 2);
        let c = &b.components[..3];
        assert!(
            (c[0].abs() - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3
                && (c[1].abs() - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3
        );
        assert!(b.eigenvalues[0] > 100.0 * b.eigenvalues[1]);
        assert_eq!(b.projected.len(), 200 * 2);
    }
}
