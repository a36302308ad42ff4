//! The influence stage: one surrogate model and one neighbour search over the whole dataset,
//! computed once, from which the per-record influence detectors read (`detect::confident_learning`,
//! `detect::self_influence`, `detect::trusted_influence`, `detect::deep_knn`,
//! `detect::near_duplicates`, `detect::separated_group`, `detect::loss_trajectory`,
//! `detect::model_probs`).
//!
//! Steps: standardize the vectors and reduce them by PCA (`dims`); fit a softmax regression on
//! every fold's complement (K-fold, stratified) to get out-of-fold probabilities, and once on all
//! rows for in-sample quantities; confident learning on the out-of-fold probabilities; self- and
//! trusted-set influence from the full fit; k nearest neighbours in the first `knn-dims` PCA
//! coordinates. Every array is in the dataset's class-grouped order (like `Dataset::x`). Above
//! `max-probability-values` the surrogate is skipped (`surrogate_too_large`) and the vectors it
//! fills are empty: count records with `InfluenceState::rows`.
//!
//! Imports: `io` (types), `detect::linalg`, `stats`.

pub mod confident;
mod incremental;
pub mod knn;
pub mod neighbourhood;
pub mod separated;
pub mod softmax;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::detect::linalg::{Moments, eigh_desc, project};
use crate::detect::{ParamError, sample_rows};
use crate::io::Dataset;
use crate::progress::Progress;
pub use confident::LabelIssueRule;
use confident::{LabelRule, carries_label_evidence, confident_learning, prune_by_noise_rate};
pub use incremental::extend;
use softmax::{FitReport, FitSettings, Softmax};

/// `[detect.influence]` in a pipeline file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct InfluenceParams {
    /// Run the influence stage (surrogate model, confident learning, influence, neighbours).
    pub enabled: bool,
    /// Folds for out-of-fold probabilities.
    pub folds: usize,
    /// PCA dimensions the surrogate sees (standardized vectors); 0 keeps every dimension.
    pub dims: usize,
    /// L2 penalty of the surrogate (per record).
    pub l2: f64,
    /// Gradient tolerance of the surrogate fit (largest component).
    pub tolerance: f64,
    pub max_iterations: usize,
    /// Each fit uses at most this many rows (evenly spaced, every class represented); predictions
    /// cover every row. A linear model on a few dozen dimensions gains nothing from more.
    pub max_fit_rows: usize,
    /// Which records confident learning flags: `prune-by-noise-rate` (cleanlab's default) or
    /// `confident-joint` (stricter: only records confidently in another class).
    pub label_issues: LabelIssueRule,
    /// Two classes overlap when each one's label, where the model is confident of the other, is
    /// more common than this share of its rate in the whole set (both ways), and the model
    /// confidently mistakes each for the other at least once; records of one that look like the
    /// other are then not label issues. `inf` turns it off (cleanlab's rule).
    #[serde(with = "crate::codec::maybe_infinite")]
    pub label_overlap: f64,
    /// Neighbours per record for the neighbourhood scores.
    pub knn_k: usize,
    /// Leading PCA dimensions the neighbour search uses.
    pub knn_dims: usize,
    /// Index lists searched per record: those whose centres are nearest to it (more = higher
    /// recall, slower; 8 finds ~94% of the true neighbours at 1M rows).
    pub knn_probes: usize,
    /// Two records are near-copies when their distance is below this share of the median
    /// nearest-neighbour distance (or when they sit before a cliff in a record's neighbour
    /// distances: see `neighbourhood`).
    pub near_duplicate_ratio: f64,
    /// Near-copy groups of at least this many records are flagged. Natural activations hold
    /// small tight groups (3-4 records, measured on trained ReLU layers); an attacker who wants
    /// copies to move a model needs more.
    pub near_duplicate_min_group: usize,
    /// The surrogate is skipped (with a warning; the neighbour search still runs) when rows x
    /// classes exceeds this: its class probabilities are dense while it runs, 4 bytes each,
    /// in-sample and out-of-fold, and every fit costs rows x classes exponentials per step.
    /// Measured: 100k rows x 1000 classes (1e8) took 30-50 s and 1.1 GB with it, 1.4-3.6 s and
    /// 140-170 MB without (0.2.52's softmax: the stage 18.5 -> 13.5 s there, the same 1.1 GB);
    /// 1.28M x 1000 (ImageNet) would need several GB.
    pub max_probability_values: usize,
}

impl Default for InfluenceParams {
    fn default() -> Self {
        InfluenceParams {
            enabled: true,
            folds: 5,
            dims: 64,
            l2: 1e-3,
            tolerance: 1e-5,
            max_iterations: 300,
            max_fit_rows: 100_000,
            label_issues: LabelIssueRule::PruneByNoiseRate,
            label_overlap: 0.2,
            knn_k: 10,
            knn_dims: 32,
            knn_probes: 8,
            near_duplicate_ratio: 0.05,
            near_duplicate_min_group: 5,
            max_probability_values: 200_000_000,
        }
    }
}

impl InfluenceParams {
    pub fn check(&self) -> Result<(), ParamError> {
        let rule = |ok: bool, key, rule, got: String| {
            if ok {
                Ok(())
            } else {
                Err(ParamError::new(key, rule, got))
            }
        };
        rule(
            (2..=50).contains(&self.folds),
            "folds",
            "must be in 2..=50",
            self.folds.to_string(),
        )?;
        rule(
            self.l2.is_finite() && self.l2 > 0.0,
            "l2",
            "must be positive",
            self.l2.to_string(),
        )?;
        rule(
            self.tolerance.is_finite() && self.tolerance > 0.0,
            "tolerance",
            "must be positive",
            self.tolerance.to_string(),
        )?;
        rule(
            self.max_iterations >= 1,
            "max-iterations",
            "must be at least 1",
            self.max_iterations.to_string(),
        )?;
        rule(
            self.max_fit_rows >= 100,
            "max-fit-rows",
            "must be at least 100",
            self.max_fit_rows.to_string(),
        )?;
        rule(
            self.label_overlap > 0.0,
            "label-overlap",
            "must be positive (inf turns it off)",
            self.label_overlap.to_string(),
        )?;
        rule(
            (1..=1000).contains(&self.knn_k),
            "knn-k",
            "must be in 1..=1000",
            self.knn_k.to_string(),
        )?;
        rule(
            self.knn_dims >= 1,
            "knn-dims",
            "must be at least 1",
            self.knn_dims.to_string(),
        )?;
        rule(
            self.max_probability_values >= 1,
            "max-probability-values",
            "must be at least 1",
            self.max_probability_values.to_string(),
        )?;
        rule(
            self.knn_probes >= 1,
            "knn-probes",
            "must be at least 1",
            self.knn_probes.to_string(),
        )?;
        rule(
            (0.0..1.0).contains(&self.near_duplicate_ratio),
            "near-duplicate-ratio",
            "must be in [0, 1)",
            self.near_duplicate_ratio.to_string(),
        )?;
        rule(
            self.near_duplicate_min_group >= 2,
            "near-duplicate-min-group",
            "must be at least 2",
            self.near_duplicate_min_group.to_string(),
        )
    }
}

/// The linear map from raw vectors to the surrogate's features: standardize, project on the top
/// principal directions, scale each to unit variance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureMap {
    #[serde(with = "crate::codec::f64s")]
    mean: Vec<f64>,
    /// `dims * dim` row-major: principal directions divided by the per-dimension spread, so one
    /// projection standardizes and reduces.
    #[serde(with = "crate::codec::f32s")]
    components: Vec<f32>,
    /// Spread of each principal coordinate (to whiten the surrogate's features).
    #[serde(with = "crate::codec::f32s")]
    scale: Vec<f32>,
    pub dims: usize,
}

impl FeatureMap {
    /// Fits the map on an evenly spaced sample of `x` (`dim` columns).
    pub fn fit(x: &[f32], dim: usize, dims: usize) -> FeatureMap {
        let n = x.len() / dim;
        let rows = sample_rows(n, 50_000);
        let sample: Vec<f32> = rows
            .iter()
            .flat_map(|&r| x[r * dim..(r + 1) * dim].iter().copied())
            .collect();
        let moments = Moments::from_rows(&sample, dim);
        let cov = moments.covariance();
        let sd: Vec<f64> = (0..dim).map(|j| cov[j * dim + j].max(0.0).sqrt()).collect();
        // Constant dimensions carry nothing; give them unit spread so they stay zero, not NaN.
        let sd: Vec<f64> = sd.iter().map(|&s| if s > 1e-12 { s } else { 1.0 }).collect();
        let corr: Vec<f64> = (0..dim * dim).map(|i| cov[i] / (sd[i / dim] * sd[i % dim])).collect();
        let (values, vectors) = eigh_desc(&corr, dim);
        let dims = if dims == 0 { dim } else { dims.min(dim) };
        let floor = values[0].max(1e-12) * 1e-6;
        let components = (0..dims)
            .flat_map(|k| (0..dim).map(move |j| (k, j)))
            .map(|(k, j)| (vectors[k * dim + j] / sd[j]) as f32)
            .collect();
        let scale = values[..dims].iter().map(|&v| v.max(floor).sqrt() as f32).collect();
        FeatureMap {
            mean: moments.mean,
            components,
            scale,
            dims,
        }
    }

    /// The surrogate's design matrix (whitened coordinates plus a constant column, `n * (dims + 1)`)
    /// and the first `knn_dims` plain coordinates (`n * knn_dims`, for neighbour search), made
    /// chunk by chunk so the full coordinate matrix never exists.
    pub fn features(&self, x: &[f32], dim: usize, knn_dims: usize) -> (Vec<f32>, Vec<f32>) {
        const CHUNK: usize = 4096;
        let knn_dims = knn_dims.clamp(1, self.dims);
        let n = x.len() / dim;
        let cols = self.dims + 1;
        let mut design = vec![0f32; n * cols];
        let mut near = vec![0f32; n * knn_dims];
        design
            .par_chunks_mut(CHUNK * cols)
            .zip(near.par_chunks_mut(CHUNK * knn_dims))
            .zip(x.par_chunks(CHUNK * dim))
            .for_each(|((d, k), chunk)| {
                let coords = project(chunk, dim, &self.mean, &self.components, self.dims);
                for (r, row) in coords.chunks_exact(self.dims).enumerate() {
                    let out = &mut d[r * cols..(r + 1) * cols];
                    for j in 0..self.dims {
                        out[j] = row[j] / self.scale[j];
                    }
                    out[self.dims] = 1.0;
                    k[r * knn_dims..(r + 1) * knn_dims].copy_from_slice(&row[..knn_dims]);
                }
            });
        (design, near)
    }

    /// The first `dims` plain coordinates of every row (the neighbour search's space).
    pub fn coordinates(&self, x: &[f32], dim: usize, dims: usize) -> Vec<f32> {
        const CHUNK: usize = 4096;
        let dims = dims.clamp(1, self.dims);
        let components = &self.components[..dims * dim];
        x.par_chunks(CHUNK * dim)
            .flat_map_iter(|chunk| project(chunk, dim, &self.mean, components, dims))
            .collect()
    }

    /// Dimension of the raw vectors the map takes.
    pub fn input_dim(&self) -> usize {
        self.mean.len()
    }
}

/// Optional inputs that sharpen the influence scores.
#[derive(Default)]
pub struct Extras<'a> {
    /// A verified clean set: (vectors `m * dim`, class index per row).
    pub trusted: Option<(&'a [f32], &'a [u32])>,
}

/// How the stage went, for the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InfluenceReport {
    /// Wall-clock seconds of the whole stage (the neighbour search's share is in `knn`).
    pub seconds: f64,
    pub feature_dims: usize,
    pub folds: usize,
    pub fit_rows_per_fold: usize,
    /// The surrogate's fits; `None` (and no folds) when it was skipped (`surrogate_skipped`).
    pub full_fit: Option<FitReport>,
    pub fold_fits: Vec<FitReport>,
    /// Accuracy of the out-of-fold predictions against the given labels.
    pub out_of_fold_accuracy: Option<f64>,
    /// Confident learning: per-class threshold (mean out-of-fold probability of the class among
    /// records labelled with it), the confident joint (`[given][suggested]` counts) and the
    /// estimated share of wrong labels per class.
    pub class_thresholds: Vec<f64>,
    pub confident_joint: Vec<Vec<u64>>,
    pub label_issues: usize,
    /// Pairs of classes that overlap (see `label-overlap`), whose records were not called label
    /// issues of each other, and how many records that set aside (an incremental scan keeps
    /// its reference fit's pairs and count: new records are judged by that fit's rule).
    #[serde(default)]
    pub overlapping_classes: Vec<ClassOverlap>,
    #[serde(default)]
    pub label_issues_set_aside: usize,
    /// Records whose vector is all zero: never label issues (their probabilities are the label
    /// mix of every record the layer zeroes, not evidence about theirs).
    #[serde(default)]
    pub zero_vectors_not_label_checked: usize,
    /// Koh & Liang on the trusted set: CG iterations and the relative residual reached.
    pub trusted: Option<TrustedSolve>,
    pub knn: KnnReport,
    pub which_probabilities: String,
    /// Why the surrogate was not fitted (too many class probabilities), when it was not: then
    /// only the neighbour search ran, and the surrogate's detectors did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate_skipped: Option<String>,
    /// Set when an incremental scan extended a reference's state instead of fitting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalReport>,
}

/// Two classes the surrogate cannot tell apart well enough for label issues between them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassOverlap {
    pub classes: [String; 2],
    /// Each class's label rate where the model is confident of the other, over its rate in the
    /// whole set (first class's, then second's).
    pub likelihood_ratios: [f64; 2],
    /// Records labelled one and confidently the other, both ways (the confident joint).
    pub confident_disagreements: u64,
}

/// How an incremental scan extended the reference's influence state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncrementalReport {
    /// Records scored against the reference's fit (new or changed since it).
    pub records_scored: usize,
    /// Records whose values were carried over from the reference.
    pub records_reused: usize,
    pub seconds: f64,
    /// Accuracy of the reference's surrogate on the newly scored records (out-of-sample for
    /// it), next to the reference's own out-of-fold accuracy: a drop says the data moved.
    pub new_record_accuracy: Option<f64>,
}

/// The influence stage's fitted state: what an incremental scan scores new records with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InfluenceModel {
    pub map: FeatureMap,
    /// The surrogate fitted on all rows (out-of-sample for every record it was not fitted on)
    /// and its label rule; `None` when it was skipped.
    pub surrogate: Option<Softmax>,
    pub label_rule: Option<LabelRule>,
    /// H^-1 g_trusted (`classes * cols`), when a trusted set was given.
    #[serde(with = "crate::codec::opt_f32s")]
    pub trusted_direction: Option<Vec<f32>>,
    pub knn_dims: usize,
    /// The neighbour index; its `assignment` covers every record of the state, by position.
    pub index: knn::IvfIndex,
    pub median_nearest: f64,
    /// Per class: the median vector norm (records under a quarter of it never form copy groups).
    #[serde(with = "crate::codec::f64s")]
    pub typical_norms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrustedSolve {
    pub rows: usize,
    pub iterations: usize,
    pub relative_residual: f64,
    pub converged: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KnnReport {
    pub k: usize,
    pub dims: usize,
    pub probes: usize,
    /// Share of the exact k neighbours the index found, on a sample of records.
    pub recall: f64,
    pub recall_sample: usize,
    pub median_nearest_distance: f64,
    pub near_duplicate_threshold: f64,
    pub near_duplicate_groups: usize,
    /// Records in those groups (0 in reports written before 0.2.8).
    #[serde(default)]
    pub near_duplicate_records: usize,
    /// Records in separated groups (`separated`; 0 in reports written before 0.2.14).
    #[serde(default)]
    pub separated_records: usize,
    /// Seconds spent finding the separated groups (part of `seconds`).
    #[serde(default)]
    pub separated_seconds: f64,
    pub seconds: f64,
}

/// Everything the influence detectors read, in class-grouped order. The surrogate's vectors
/// (`label_probability` to `trusted_influence`) are empty when it was skipped
/// ([`InfluenceState::has_surrogate`]); the neighbour search's always cover every record.
#[derive(Serialize, Deserialize)]
pub struct InfluenceState {
    pub classes: usize,
    /// Out-of-fold probability of each record's own label. Only it and the suggested class's are
    /// kept, not all `n * classes` (0.2.11 kept them all: 570 MB of reference at 100k rows in
    /// 1000 classes).
    #[serde(default, with = "crate::codec::f32s")]
    pub label_probability: Vec<f32>,
    /// Out-of-fold probability of `suggested` (of the label itself where that is the same).
    #[serde(default, with = "crate::codec::f32s")]
    pub suggested_probability: Vec<f32>,
    /// All out-of-fold probabilities, `n * classes`, as states written before 0.2.12 hold them
    /// (read, never written); [`InfluenceState::probabilities_of`] reads either form.
    #[serde(default, rename = "out_of_fold", with = "crate::codec::f32s", skip_serializing)]
    pub legacy_out_of_fold: Vec<f32>,
    /// Confident learning: the record's label looks wrong; `suggested` is the confident class.
    pub label_issue: Vec<bool>,
    pub suggested: Vec<u32>,
    /// TracIn self-influence at the full fit: |p - y|^2 (|x|^2 + 1).
    #[serde(with = "crate::codec::f32s")]
    pub self_influence: Vec<f32>,
    /// Koh & Liang influence on the trusted loss (> 0: up-weighting the record raises it).
    #[serde(with = "crate::codec::opt_f32s")]
    pub trusted_influence: Option<Vec<f32>>,
    /// Share of the k nearest neighbours whose label differs.
    #[serde(with = "crate::codec::f32s")]
    pub knn_disagreement: Vec<f32>,
    /// Mean distance to the k nearest neighbours.
    #[serde(with = "crate::codec::f32s")]
    pub knn_distance: Vec<f32>,
    /// Distance to the nearest neighbour divided by the dataset's median of it.
    #[serde(with = "crate::codec::f32s")]
    pub nearest_ratio: Vec<f32>,
    /// Size of the record's near-copy group (1 = none).
    pub duplicate_group_size: Vec<u32>,
    /// Labels seen within the record's near-copy group (more than one: conflicting copies).
    pub duplicate_group_labels: Vec<u32>,
    /// The record's near-copy group, named by one member's position (itself when none).
    #[serde(default, with = "crate::codec::u32s")]
    pub duplicate_group: Vec<u32>,
    /// Size of the record's separated group (0 = in none; see `separated`). Empty in states
    /// written before 0.2.14, read as no groups.
    #[serde(default, with = "crate::codec::u32s")]
    pub separated_group_size: Vec<u32>,
    /// Share of the record's separated group's nearest outsiders that carry another label.
    #[serde(default, with = "crate::codec::f32s")]
    pub separated_outsider_disagreement: Vec<f32>,
    pub report: InfluenceReport,
    /// The fit, for incremental scans; `None` in state written before they existed.
    #[serde(default)]
    pub model: Option<InfluenceModel>,
}

impl InfluenceState {
    /// Whether the surrogate's scores are here (it is skipped above `max-probability-values`).
    pub fn has_surrogate(&self) -> bool {
        self.report.surrogate_skipped.is_none()
    }

    /// Records the state covers.
    pub fn rows(&self) -> usize {
        self.knn_disagreement.len()
    }

    /// Whether every per-record vector covers [`InfluenceState::rows`] records (the surrogate's
    /// only where it was fitted; fields older states lack may be empty): a state read from disk
    /// is checked before use.
    pub fn is_consistent(&self) -> bool {
        let n = self.rows();
        let whole = |len: usize| len == n;
        let whole_or_absent = |len: usize| len == n || len == 0;
        let probabilities = (whole(self.label_probability.len()) && whole(self.suggested_probability.len()))
            || self.legacy_out_of_fold.len() == n * self.classes;
        let surrogate = !self.has_surrogate()
            || (whole(self.label_issue.len())
                && whole(self.suggested.len())
                && whole(self.self_influence.len())
                && probabilities
                && self.trusted_influence.as_ref().is_none_or(|t| whole(t.len())));
        surrogate
            && [self.knn_distance.len(), self.nearest_ratio.len()]
                .into_iter()
                .all(whole)
            && [self.duplicate_group_size.len(), self.duplicate_group_labels.len()]
                .into_iter()
                .all(whole)
            && [
                self.duplicate_group.len(),
                self.separated_group_size.len(),
                self.separated_outsider_disagreement.len(),
            ]
            .into_iter()
            .all(whole_or_absent)
    }

    /// Out-of-fold (p(label), p(suggested)) of the record at `position`, labelled `label`.
    pub fn probabilities_of(&self, position: usize, label: usize) -> (f32, f32) {
        if self.label_probability.is_empty() && !self.legacy_out_of_fold.is_empty() {
            let row = &self.legacy_out_of_fold[position * self.classes..(position + 1) * self.classes];
            (row[label], row[self.suggested[position] as usize])
        } else {
            (self.label_probability[position], self.suggested_probability[position])
        }
    }
}

/// Class index of every position (class-grouped order).
fn position_labels(dataset: &Dataset) -> Vec<u32> {
    (0..dataset.classes.len())
        .flat_map(|c| std::iter::repeat_n(c as u32, dataset.class_size(c)))
        .collect()
}

/// Positions of `pool` thinned evenly to at most `max` (keeps every class's share).
fn thin(pool: &[usize], max: usize) -> Vec<usize> {
    sample_rows(pool.len(), max).into_iter().map(|i| pool[i]).collect()
}

/// The rows `rows` of `design` (`cols` columns), copied in parallel: a fold's held-out rows at
/// 1M are 50 MB of fresh memory, whose page faults one thread took a good share of a second over.
fn gather(design: &[f32], cols: usize, rows: &[usize]) -> Vec<f32> {
    const CHUNK: usize = 4096;
    let mut out = vec![0f32; rows.len() * cols];
    out.par_chunks_mut(CHUNK * cols)
        .zip(rows.par_chunks(CHUNK))
        .for_each(|(out, rows)| {
            for (dst, &r) in out.chunks_exact_mut(cols).zip(rows) {
                dst.copy_from_slice(&design[r * cols..(r + 1) * cols]);
            }
        });
    out
}

/// Why the surrogate is not fitted on `n` rows of `k` classes, if it is not: its class
/// probabilities (`n * k`, in-sample and out-of-fold) would exceed `max-probability-values`.
pub fn surrogate_too_large(n: usize, k: usize, params: &InfluenceParams) -> Option<String> {
    let values = n.saturating_mul(k);
    (values > params.max_probability_values).then(|| {
        format!(
            "surrogate skipped: {n} rows x {k} classes make {values} class probabilities, over \
             `[detect.influence] max-probability-values` ({}); the neighbour search and its detectors \
             (deep kNN, density, near-copies, separated groups) ran, confident learning and \
             self- and trusted-set influence did not. Raise the limit if memory allows (4 bytes \
             each, about three copies)",
            params.max_probability_values
        )
    })
}

/// Runs the whole influence stage: the surrogate and what comes of it (unless it is too large,
/// see [`surrogate_too_large`]), then the neighbour search.
pub fn compute(
    dataset: &Dataset,
    params: &InfluenceParams,
    extras: &Extras<'_>,
    seed: u64,
    progress: &dyn Progress,
) -> InfluenceState {
    let n = dataset.rows();
    let k = dataset.classes.len();
    let labels = position_labels(dataset);
    let stage_started = std::time::Instant::now();
    // Progress counts rows: each of the four steps (full fit, folds, influence, neighbours)
    // reports a quarter of them.
    progress.start("influence", n as u64);
    let quarter = (n / 4) as u64;
    let map = FeatureMap::fit(&dataset.x, dataset.dim, params.dims);
    let knn_dims = params.knn_dims.min(map.dims);
    let surrogate_skipped = surrogate_too_large(n, k, params);
    let (surrogate, knn_x) = if surrogate_skipped.is_none() {
        let (design, knn_x) = map.features(&dataset.x, dataset.dim, knn_dims);
        let fitted = fit_surrogate(&design, &map, &labels, dataset, params, extras, seed, progress);
        (Some(fitted), knn_x)
    } else {
        progress.advance(3 * quarter);
        (None, map.coordinates(&dataset.x, dataset.dim, knn_dims))
    };

    let started = std::time::Instant::now();
    let (neighbours, index) = knn::approximate(&knn_x, knn_dims, params.knn_k, params.knn_probes, seed);
    let queries = sample_rows(n, 200);
    let exact = knn::exact(&knn_x, knn_dims, params.knn_k, &queries);
    let recall = knn::recall(&neighbours, &exact, &queries);
    let norms = neighbourhood::norms(&dataset.x, dataset.dim);
    let typical_norms = neighbourhood::typical_norms(&norms, &dataset.class_offsets);
    let live = neighbourhood::live(&norms, &labels, &typical_norms);
    let copyable = neighbourhood::copyable(&dataset.x, dataset.dim, &live);
    let hood = neighbourhood::neighbourhood(&neighbours, &knn_x, knn_dims, &labels, &copyable, params);
    let separated_started = std::time::Instant::now();
    let separated = separated::separated_groups(&neighbours, &knn_x, knn_dims, &labels, &live);
    let separated_seconds = separated_started.elapsed().as_secs_f64();
    let separated_records = separated.size.iter().filter(|&&s| s > 0).count();
    progress.advance(n as u64 - 3 * quarter);
    progress.finish();
    let knn = KnnReport {
        k: neighbours.k,
        dims: knn_dims,
        probes: params.knn_probes,
        recall,
        recall_sample: queries.len(),
        median_nearest_distance: hood.median_nearest,
        near_duplicate_threshold: hood.threshold,
        near_duplicate_groups: hood.groups.count,
        near_duplicate_records: hood.groups.records,
        separated_records,
        separated_seconds,
        seconds: started.elapsed().as_secs_f64(),
    };

    let s = surrogate.unwrap_or_default();
    let fitted = s.full.is_some();
    InfluenceState {
        classes: k,
        label_issue: s.cl.issue,
        suggested: s.cl.suggested,
        self_influence: s.self_influence,
        trusted_influence: s.trusted_influence,
        knn_disagreement: hood.disagreement,
        knn_distance: hood.mean_distance,
        nearest_ratio: hood.nearest_ratio,
        duplicate_group_size: hood.groups.size,
        duplicate_group_labels: hood.groups.labels,
        duplicate_group: hood.groups.root,
        separated_group_size: separated.size,
        separated_outsider_disagreement: separated.outsider_disagreement,
        report: InfluenceReport {
            seconds: stage_started.elapsed().as_secs_f64(),
            feature_dims: map.dims,
            folds: if fitted { params.folds } else { 0 },
            fit_rows_per_fold: s.fit_rows_per_fold,
            full_fit: s.full_fit,
            fold_fits: s.fold_fits,
            out_of_fold_accuracy: s.out_of_fold_accuracy,
            class_thresholds: s.cl.thresholds.clone(),
            overlapping_classes: (0..s.cl.overlapping.len())
                .filter(|&ij| ij / k < ij % k && s.cl.overlapping[ij])
                .map(|ij| {
                    let (i, j) = (ij / k, ij % k);
                    ClassOverlap {
                        classes: [dataset.classes[i].clone(), dataset.classes[j].clone()],
                        likelihood_ratios: [s.cl.likelihood_ratio[ij], s.cl.likelihood_ratio[j * k + i]],
                        confident_disagreements: s.cl.joint[i][j] + s.cl.joint[j][i],
                    }
                })
                .collect(),
            label_issues_set_aside: s.cl.set_aside,
            zero_vectors_not_label_checked: s.cl.zero_vectors,
            confident_joint: s.cl.joint,
            label_issues: s.cl.count,
            trusted: s.trusted_report,
            knn,
            which_probabilities: if fitted {
                "out-of-fold surrogate probabilities for confident learning; the full fit (in-sample) \
                 for self-influence and the trusted-set influence"
                    .into()
            } else {
                "none: the surrogate was not fitted".into()
            },
            surrogate_skipped,
            incremental: None,
        },
        label_probability: s.label_probability,
        suggested_probability: s.suggested_probability,
        legacy_out_of_fold: Vec::new(),
        model: Some(InfluenceModel {
            map,
            label_rule: s.full.as_ref().map(|_| LabelRule {
                rule: params.label_issues,
                thresholds: s.cl.thresholds,
                prune_margins: s.cl.prune_margins,
                overlapping: s.cl.overlapping,
            }),
            surrogate: s.full,
            trusted_direction: s.trusted_direction,
            knn_dims,
            index,
            median_nearest: hood.median_nearest,
            typical_norms,
        }),
    }
}

/// What the surrogate gives: its fits, confident learning on its out-of-fold probabilities, and
/// the influence scores of its full fit (`Default`: skipped, every per-record vector empty).
#[derive(Default)]
struct SurrogateOutputs {
    full: Option<Softmax>,
    full_fit: Option<FitReport>,
    fold_fits: Vec<FitReport>,
    fit_rows_per_fold: usize,
    out_of_fold_accuracy: Option<f64>,
    cl: confident::ConfidentLearning,
    label_probability: Vec<f32>,
    suggested_probability: Vec<f32>,
    self_influence: Vec<f32>,
    trusted_influence: Option<Vec<f32>>,
    trusted_report: Option<TrustedSolve>,
    trusted_direction: Option<Vec<f32>>,
}

/// The surrogate on the design matrix (`map`'s, row-aligned with `labels`): a full fit,
/// stratified out-of-fold fits, confident learning, self- and trusted-set influence. Advances
/// `progress` by three quarters of the rows.
#[allow(clippy::too_many_arguments)]
fn fit_surrogate(
    design: &[f32],
    map: &FeatureMap,
    labels: &[u32],
    dataset: &Dataset,
    params: &InfluenceParams,
    extras: &Extras<'_>,
    seed: u64,
    progress: &dyn Progress,
) -> SurrogateOutputs {
    let (n, k, cols) = (labels.len(), dataset.classes.len(), map.dims + 1);
    let quarter = (n / 4) as u64;
    let settings = FitSettings {
        l2: params.l2,
        tolerance: params.tolerance,
        max_iterations: params.max_iterations,
    };
    // Full fit: in-sample probabilities for self-influence and the trusted-set Hessian.
    let all: Vec<usize> = (0..n).collect();
    let full_rows = thin(&all, params.max_fit_rows);
    let full_x = gather(design, cols, &full_rows);
    let full_y: Vec<u32> = full_rows.iter().map(|&r| labels[r]).collect();
    let started = std::time::Instant::now();
    let (full, full_fit) = Softmax::fit(&full_x, cols, &full_y, k, &settings, None);
    let in_sample = full.predict(design);
    log::debug!(
        "surrogate: full fit on {} rows x {cols} x {k} classes, {} iterations, {:.2}s",
        full_rows.len(),
        full_fit.iterations,
        started.elapsed().as_secs_f64()
    );
    progress.advance(quarter);
    let started = std::time::Instant::now();

    // Stratified folds: shuffle each class, deal its records round-robin.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xf01d);
    let mut fold = vec![0usize; n];
    for c in 0..k {
        let mut members: Vec<usize> = (dataset.class_offsets[c]..dataset.class_offsets[c + 1]).collect();
        members.shuffle(&mut rng);
        members
            .iter()
            .enumerate()
            .for_each(|(i, &p)| fold[p] = i % params.folds);
    }
    let mut out_of_fold = vec![0f32; n * k];
    let mut fold_fits = Vec::new();
    let mut fit_rows_per_fold = 0;
    for f in 0..params.folds {
        let (held, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&p| fold[p] == f);
        let rows = thin(&train, params.max_fit_rows);
        fit_rows_per_fold = fit_rows_per_fold.max(rows.len());
        let y: Vec<u32> = rows.iter().map(|&r| labels[r]).collect();
        // Warm start from the full fit: the objective is strictly convex, so the start changes
        // only the path, not the (tolerance-level) optimum.
        let (model, report) = Softmax::fit(&gather(design, cols, &rows), cols, &y, k, &settings, Some(&full));
        fold_fits.push(report);
        let p = model.predict(&gather(design, cols, &held));
        for (i, &r) in held.iter().enumerate() {
            out_of_fold[r * k..(r + 1) * k].copy_from_slice(&p[i * k..(i + 1) * k]);
        }
    }
    log::debug!(
        "surrogate: {} folds, iterations {:?}, {:.2}s",
        params.folds,
        fold_fits.iter().map(|f| f.iterations).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    progress.advance(quarter);

    let correct = (0..n)
        .filter(|&p| argmax(&out_of_fold[p * k..(p + 1) * k]) == labels[p] as usize)
        .count();
    let dim = dataset.dim;
    let evidence: Vec<bool> = (0..n)
        .map(|p| carries_label_evidence(&dataset.x[p * dim..(p + 1) * dim]))
        .collect();
    let mut cl = confident_learning(&out_of_fold, labels, k, params.label_overlap, &evidence);
    if params.label_issues == LabelIssueRule::PruneByNoiseRate {
        prune_by_noise_rate(&mut cl, &out_of_fold, labels, k, &evidence);
    }

    let label_probability: Vec<f32> = (0..n).map(|p| out_of_fold[p * k + labels[p] as usize]).collect();
    let suggested_probability: Vec<f32> = (0..n).map(|p| out_of_fold[p * k + cl.suggested[p] as usize]).collect();
    drop(out_of_fold);
    let self_influence = self_influence(&in_sample, design, cols, labels);

    let (trusted_influence, trusted_report, trusted_direction) = match extras.trusted {
        Some((tx, ty)) if !ty.is_empty() => {
            let (t_design, _) = map.features(tx, dataset.dim, 1);
            let (direction, solve) = trusted_direction(&full, &full_x, &t_design, ty);
            let scores = trusted_influence(&direction, design, cols, labels, &in_sample, k);
            (Some(scores), Some(solve), Some(direction))
        }
        _ => (None, None, None),
    };
    progress.advance(quarter);

    SurrogateOutputs {
        full: Some(full),
        full_fit: Some(full_fit),
        fold_fits,
        fit_rows_per_fold,
        out_of_fold_accuracy: Some(correct as f64 / n.max(1) as f64),
        cl,
        label_probability,
        suggested_probability,
        self_influence,
        trusted_influence,
        trusted_report,
        trusted_direction,
    }
}

/// TracIn self-influence at the surrogate (last layer): |p - y|^2 (|x|^2 + 1), the design row's
/// constant column supplying the 1. `probs` and `design` are row-aligned with `labels`.
fn self_influence(probs: &[f32], design: &[f32], cols: usize, labels: &[u32]) -> Vec<f32> {
    let k = probs.len() / labels.len().max(1);
    (0..labels.len())
        .map(|p| {
            let prob = &probs[p * k..(p + 1) * k];
            let residual: f32 = prob
                .iter()
                .enumerate()
                .map(|(j, &v)| (v - (j == labels[p] as usize) as u8 as f32).powi(2))
                .sum();
            let norm: f32 = design[p * cols..(p + 1) * cols].iter().map(|v| v * v).sum();
            residual * norm
        })
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Koh & Liang (2017) on the trusted set: H^-1 g_trusted (`classes * cols`), with g_trusted the
/// gradient of the mean trusted loss and H the Hessian of the regularised training loss of the
/// full fit (on its training rows), solved once by conjugate gradient.
fn trusted_direction(
    model: &Softmax,
    fit_x: &[f32],
    trusted_design: &[f32],
    trusted_labels: &[u32],
) -> (Vec<f32>, TrustedSolve) {
    let (k, cols) = (model.classes, model.cols);
    let tp = model.predict(trusted_design);
    let mut g = vec![0f64; k * cols];
    let m = trusted_labels.len();
    for r in 0..m {
        for j in 0..k {
            let residual = tp[r * k + j] as f64 - (j == trusted_labels[r] as usize) as u8 as f64;
            for c in 0..cols {
                g[j * cols + c] += residual * trusted_design[r * cols + c] as f64 / m as f64;
            }
        }
    }
    const TOLERANCE: f64 = 1e-6;
    let (s, residual, iterations) =
        softmax::conjugate_gradient(|v| model.hessian_vector(fit_x, v, 1e-6), &g, TOLERANCE, 500);
    (
        s.iter().map(|&v| v as f32).collect(),
        TrustedSolve {
            rows: m,
            iterations,
            relative_residual: residual,
            converged: residual <= TOLERANCE,
        },
    )
}

/// Influence of every record on the mean trusted loss, I(z) = -g_trusted^T H^-1 g_z, from the
/// solved `direction`: one matrix product a = design * S^T, then I(z) = -sum_j (p_zj - y_zj) a_zj.
fn trusted_influence(
    direction: &[f32],
    design: &[f32],
    cols: usize,
    labels: &[u32],
    probs: &[f32],
    k: usize,
) -> Vec<f32> {
    let n = labels.len();
    let mut a = vec![0f32; n * k];
    crate::detect::linalg::mul_abt(design, direction, cols, &mut a);
    (0..n)
        .map(|p| {
            -(0..k)
                .map(|j| (probs[p * k + j] - (j == labels[p] as usize) as u8 as f32) * a[p * k + j])
                .sum::<f32>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_reject_bad_values() {
        let p = InfluenceParams {
            folds: 1,
            ..Default::default()
        };
        assert!(p.check().unwrap_err().to_string().contains("folds"));
        let p = InfluenceParams {
            label_overlap: 0.0,
            ..Default::default()
        };
        assert!(p.check().unwrap_err().to_string().contains("label-overlap"));
        assert!(InfluenceParams::default().check().is_ok());
    }

    #[test]
    fn over_the_probability_limit_only_the_surrogate_is_skipped() {
        use crate::testkit::{Attack, Kind, Spec, generate};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.parquet");
        let spec = Spec {
            kind: Kind::Gaussian,
            classes: 5,
            rows_per_class: 60,
            dim: 8,
            attack: Attack::None,
            seed: 3,
        };
        generate(&spec).write_parquet(&path, 100).unwrap();
        let dataset = crate::io::read_dataset(&[path], &Default::default()).unwrap();
        let run = |limit: usize| {
            let params = InfluenceParams {
                max_probability_values: limit,
                ..Default::default()
            };
            compute(&dataset, &params, &Extras::default(), 1, &crate::progress::NoProgress)
        };
        let (fitted, skipped) = (run(1500), run(1499));
        assert!(fitted.has_surrogate() && fitted.model.as_ref().unwrap().surrogate.is_some());
        assert!(!skipped.has_surrogate() && skipped.model.as_ref().unwrap().surrogate.is_none());
        let why = skipped.report.surrogate_skipped.as_deref().unwrap();
        assert!(
            why.contains("300 rows x 5 classes make 1500 class probabilities"),
            "{why}"
        );
        assert!(skipped.self_influence.is_empty() && skipped.label_issue.is_empty());
        assert!(skipped.report.full_fit.is_none() && skipped.report.overlapping_classes.is_empty());
        // The neighbour search is the same either way.
        assert_eq!(fitted.knn_distance, skipped.knn_distance);
        assert_eq!(fitted.duplicate_group_size, skipped.duplicate_group_size);
        assert_eq!(skipped.rows(), 300);
        for mut state in [fitted, skipped] {
            assert!(state.is_consistent());
            state.nearest_ratio.pop();
            assert!(!state.is_consistent());
        }
        let mut fitted = run(1500);
        fitted.self_influence.pop();
        assert!(!fitted.is_consistent());
    }
}
