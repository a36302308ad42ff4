//! Activation clustering's distance analysis (ART's `analyze_by_distance`, on the reasoning behind
//! exclusionary reclassification in Chen et al. 2018, arXiv:1811.03728): a backdoor's poison is
//! made of other classes' inputs with a trigger, and a network's layer keeps much of what those
//! inputs were, so the poison cluster of a k = 2 split sits closer to another class's median
//! than to its own class's. A clean class's sub-population seldom does.
//!
//! It sees what the split's shape does not: on generated ReLU layers (3000 records per class), a
//! 15% backdoor is a second mode that looks like the lobes clean classes have (silhouette,
//! spectral gap and SPECTRE's eigenvalue all within the other classes'), yet its cluster's median
//! is 1.3-2.4 times as far from its own class's median as from another class's, where clean
//! classes' clusters mostly stay below 1.0.
//!
//! The split is activation clustering's k-means, on each record's direction rather than its
//! position (see `DistanceAnalysis::split`). Class signal: the distance ratio (clean bound 1:
//! "closer to another class"), compared across classes; held at the bound when the cluster is no
//! small side (`distance-max-cluster-share` of the split, see `score_split`). Suspect group: the
//! cluster's records, and the class's short records, that are themselves closer to another class's
//! median than to their own (a clean class's cluster takes in part of the class's bulk; its poison
//! does not). All-zero vectors never count: a ReLU layer gives them to inputs of every class, and
//! their median, the zero vector, can sit on a sparse class's median.

use serde::{Deserialize, Serialize};

use super::activation_clustering::{ActivationClustering, dist};
use super::mixture::fit_two_gaussians;
use super::{ClassScores, ClassSignal, ClassView, DetectError, Detector, Grouping, SAMPLE_ROWS, Stat};
use super::{coordinate_median, sample_rows};
use crate::influence::neighbourhood::{self, is_live};

/// A cluster whose median is closer to another class's median than to its own is poison by
/// ART's rule; here it must also stand out among the classes (`score`).
const CLEAN_RATIO: f64 = 1.0;

/// A cluster not closer to another class, but whose ratio passes this, leans toward one: the
/// class is judged by this bound instead of [`CLEAN_RATIO`] where a group of its own stands at
/// the end of the line from the class's median toward the cluster's (`lean_group`). On generated
/// ReLU layers (128 units x 300 per class, 15% backdoors, tuning seeds 1-200) the poison of 5 of
/// 200 runs was found by nothing: from 9 source classes, it sat at one end of the class's first
/// principal direction, no cluster of its own (k-means split the class near half and half) and
/// no tail; the direction cluster that held it, with as many clean records, leaned at 0.67-1.07
/// (clean classes 0.1-0.35 mostly) and stood 4.5-11 MADs above the classes' median, and along
/// that line the poison formed a second mode (D 2.9-5.4) holding 35-45 of its 45 records.
const LEAN_RATIO: f64 = 0.5;

/// Ashman's D the lean's group needs from the rest of the class along the line.
const LEAN_SEPARATION: f64 = 2.6;

/// Largest share of the class's non-zero records the lean's group may hold.
const LEAN_MAX_SHARE: f64 = 0.2;

/// The ratio reported when another class's median coincides with the cluster's own.
const MAX_RATIO: f64 = 10.0;

/// Non-zero records a cluster needs before its median says where the class's records sit (as a
/// separated group needs 12): on a generated ReLU layer of 100 000 records per class, a class of
/// 99 967 zero vectors had a cluster of a few non-zero records whose median sat nearer another
/// class, 8.7 MADs out.
const MIN_LIVE: usize = 12;

/// Other classes each record of a suspect cluster is compared with: those nearest the cluster's
/// median (all of them in datasets of up to 17 classes).
const MAX_CANDIDATES: usize = 16;

/// Records the direction split's k-means is fitted on: unit vectors vary less than positions,
/// and at 100 000 records per class a fit on activation clustering's 20 000 cost as much as that
/// detector (1.1 s summed over the classes of a 1M x 256 scan).
const FIT_ROWS: usize = 5000;

/// The checked detector: it splits each class with activation clustering's k-means (same
/// restarts, same seed), on directions rather than positions (see `DistanceAnalysis::split`).
#[derive(Clone, Debug)]
pub struct DistanceAnalysis {
    split: ActivationClustering,
}

/// The fit a later scan scores new records under: the class's median length (which records are
/// short), and the split's centres (activation clustering's format).
#[derive(Serialize, Deserialize)]
struct DirectionFit {
    typical_norm: f64,
    centroids: Option<serde_json::Value>,
}

/// Where a class's suspect group comes from.
struct Candidates {
    /// The direction split's smaller cluster: its median gives the class signal.
    cluster: Vec<usize>,
    /// Non-zero records shorter than a quarter of the class's median length (near-zero vectors,
    /// as near-copy groups call them: `neighbourhood::is_live`), left out of the split because
    /// their direction is noise (on generated ReLU layers a clean class's short records formed a
    /// cluster whose median, near zero, sat 6.8 times closer to a sparse class's median). Their
    /// side the split cannot tell: in a class whose cluster sits closer to another class, they
    /// join the suspect group as the cluster's records do, by their own distances. On generated
    /// ReLU layers triggered records run short (a median of 0.57 of their class's length inside
    /// the cluster), and 26-111 of a 15% backdoor's 450 records fell below a quarter.
    short: Vec<usize>,
    /// Records the split was made on (the class's non-zero records less the short ones).
    split_rows: usize,
}

impl DistanceAnalysis {
    pub fn new(split: ActivationClustering) -> DistanceAnalysis {
        DistanceAnalysis { split }
    }

    /// The class's split (afresh, or under a stored fit) and its distance analysis.
    fn analyse(
        &self,
        view: &ClassView<'_>,
        stored: Option<Option<&serde_json::Value>>,
    ) -> Result<ClassScores, DetectError> {
        let (candidates, fit) = self.split(view, stored)?;
        let max_cluster_share = self.split.distance_max_cluster_share();
        Ok(score_split(view, candidates, fit, max_cluster_share))
    }

    /// The records a suspect group can hold: the smaller cluster of a k = 2 split of the
    /// class's records by *direction*, and the short records (see [`Candidates`]). A record's
    /// direction is its unit vector on the class's principal directions (k-means is blind to
    /// the offset the class mean adds, so these are the basis coordinates plus the mean's, over
    /// the length).
    ///
    /// Why directions: a ReLU layer's record length is heavy-tailed (it follows the input's
    /// intensity), and k-means on positions splits a class by length. On generated ReLU layers
    /// with 3000 records per class and a 15% backdoor (tuning seeds, 64 dims), the position
    /// split held the poison whole in 1 run of 5 (in others long and short records split,
    /// poison on both sides); the direction split held it at 99-100% purity in 8 of 10 runs at
    /// 64 and 128 dims, and in 10 clean sets no clean class's cluster sat closer to another
    /// class.
    fn split(
        &self,
        view: &ClassView<'_>,
        stored: Option<Option<&serde_json::Value>>,
    ) -> Result<(Candidates, Option<serde_json::Value>), DetectError> {
        let (n, dim, k) = (view.n(), view.dim, view.basis.k);
        let norms = neighbourhood::norms(view.x, dim);
        // A stored fit without centres (the class had too few records to split then) is
        // split afresh.
        let (typical_norm, centroids) = match stored {
            Some(fit) => {
                let fit: DirectionFit = super::parse_fit(self.name(), fit)?;
                (fit.typical_norm, fit.centroids)
            }
            None => {
                // The upper middle of an even sample, as the scores in the README were measured.
                let mut sample: Vec<f64> = sample_rows(n, SAMPLE_ROWS).into_iter().map(|i| norms[i]).collect();
                let mid = sample.len() / 2;
                (*sample.select_nth_unstable_by(mid, f64::total_cmp).1, None)
            }
        };
        let (rows, short): (Vec<usize>, Vec<usize>) = (0..n)
            .filter(|&i| norms[i] > 0.0)
            .partition(|&i| is_live(norms[i], typical_norm));
        if rows.len() < 2 * MIN_LIVE {
            let none = Candidates {
                cluster: Vec::new(),
                short: Vec::new(),
                split_rows: rows.len(),
            };
            return Ok((
                none,
                super::store_fit(&DirectionFit {
                    typical_norm,
                    centroids,
                }),
            ));
        }
        let basis = view.basis;
        // The class mean's coordinates: a record's own are its centred ones plus these.
        let mean_coordinates: Vec<f32> = basis
            .components
            .chunks_exact(dim)
            .map(|c| c.iter().zip(&basis.mean).map(|(&v, &m)| v as f64 * m).sum::<f64>() as f32)
            .collect();
        let points: Vec<f32> = rows
            .iter()
            .flat_map(|&i| {
                let z = &basis.projected[i * k..(i + 1) * k];
                let norm = norms[i] as f32;
                z.iter().zip(&mean_coordinates).map(move |(v, m)| (v + m) / norm)
            })
            .collect();
        let split = self.split.split_points(
            self.name(),
            &points,
            k,
            FIT_ROWS,
            view.seed,
            centroids.as_ref().map(Some),
        )?;
        let candidates = Candidates {
            cluster: split.small_rows().into_iter().map(|j| rows[j]).collect(),
            short,
            split_rows: rows.len(),
        };
        Ok((
            candidates,
            super::store_fit(&DirectionFit {
                typical_norm,
                centroids: split.fit.clone(),
            }),
        ))
    }
}

impl Detector for DistanceAnalysis {
    fn name(&self) -> &'static str {
        "distance_analysis"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        self.analyse(view, None)
    }

    fn rescore(&self, view: &ClassView<'_>, fit: Option<&serde_json::Value>) -> Result<ClassScores, DetectError> {
        self.analyse(view, Some(fit))
    }
}

/// The distance analysis of a class's split (`candidates`, records of the class view).
///
/// A cluster holding `max_cluster_share` of the split's records or more is no small side: its
/// ratio counts at most as clean (as activation clustering's `max_relative_size` does for its
/// split). On generated ReLU layers, clean classes whose direction cluster sat closer to another
/// class held 22-25% of their split's records, and the attacked class's cluster 4-20% (15%
/// backdoors included; Python replica, seeds 1-25).
fn score_split(
    view: &ClassView<'_>,
    candidates: Candidates,
    fit: Option<serde_json::Value>,
    max_cluster_share: f64,
) -> ClassScores {
    let (n, dim) = (view.n(), view.dim);
    let row = |i: usize| &view.x[i * dim..(i + 1) * dim];
    // The split's records are non-zero already.
    let live = candidates.cluster;
    let own_median = &view.class_medians[view.class];
    let others: Vec<usize> = (0..view.class_medians.len()).filter(|&c| c != view.class).collect();
    // A record's distance to its own class's median over that to the nearest of `candidates`.
    let ratio_of = |x: &[f32], candidates: &[usize]| -> (f64, Option<usize>) {
        let own = dist(x, own_median) as f64;
        let nearest = candidates
            .iter()
            .map(|&c| (c, dist(x, &view.class_medians[c]) as f64))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match nearest {
            Some((c, d)) if d > 0.0 => ((own / d).min(MAX_RATIO), Some(c)),
            Some((c, _)) if own > 0.0 => (MAX_RATIO, Some(c)),
            _ => (0.0, None),
        }
    };
    let subsample: Vec<usize> = sample_rows(live.len(), SAMPLE_ROWS)
        .into_iter()
        .map(|i| live[i])
        .collect();
    let cluster_median = (live.len() >= MIN_LIVE).then(|| coordinate_median(view.x, dim, &subsample));
    let (ratio, nearest_class) = cluster_median.as_ref().map_or((0.0, None), |m| ratio_of(m, &others));
    let cluster_share = live.len() as f64 / candidates.split_rows.max(1) as f64;
    let judged_ratio = if cluster_share < max_cluster_share {
        ratio
    } else {
        ratio.min(CLEAN_RATIO)
    };
    let closer = judged_ratio > CLEAN_RATIO;
    // Not closer, but leaning: a group of its own at the end of the line toward the cluster.
    let lean = cluster_median
        .as_ref()
        .filter(|_| !closer && ratio > LEAN_RATIO)
        .and_then(|median| lean_group(view, median));
    let mut scores = vec![0f32; n];
    let mut member = vec![0u8; n];
    // Score, in a class whose cluster is closer to another class: how much farther a record of
    // the cluster is from its own class's median than from the nearest other one, less one; 0
    // for every other record (the ranking sees only records closer to another class). Elsewhere
    // nothing is measured: at 100 000 records per class and 256 dimensions these distances cost
    // as much as the split's k-means.
    if let Some(median) = cluster_median.as_ref().filter(|_| closer) {
        // Each record is compared with the classes nearest the cluster's median only: with a
        // thousand classes, every record against every class would cost more than the scan.
        let mut nearest: Vec<(usize, f32)> = others
            .iter()
            .map(|&c| (c, dist(median, &view.class_medians[c])))
            .collect();
        nearest.sort_by(|a, b| a.1.total_cmp(&b.1));
        let nearest_classes: Vec<usize> = nearest.iter().take(MAX_CANDIDATES).map(|&(c, _)| c).collect();
        for &i in live.iter().chain(&candidates.short) {
            let r = ratio_of(row(i), &nearest_classes).0;
            scores[i] = (r - CLEAN_RATIO).max(0.0) as f32;
            member[i] = (r > CLEAN_RATIO) as u8;
        }
    }
    if let Some(group) = &lean {
        scores.clone_from(&group.posterior);
        member.clone_from(&group.members);
    }
    // The suspect group's size: the records closer to another class, or the lean's group.
    let in_group = member.iter().filter(|&&m| m == 1).count() as f64;
    ClassScores {
        scores,
        stats: vec![
            Stat {
                name: "own_to_other_class_distance".into(),
                value: ratio,
            },
            Stat {
                name: "direction_cluster_share".into(),
                value: cluster_share,
            },
            Stat {
                name: "closer_to_other_class".into(),
                value: nearest_class.filter(|_| closer).map_or(-1.0, |c| c as f64),
            },
            Stat {
                name: "records_closer_to_other_class".into(),
                value: if closer { in_group } else { 0.0 },
            },
            Stat {
                name: "lean_group_records".into(),
                value: if lean.is_some() { in_group } else { 0.0 },
            },
        ],
        // Clean classes' ratios spread by 0.05-0.2; the floor keeps a spread of ~0 (a few classes
        // alike) from making a small difference an outlier.
        // A large cluster's ratio is capped, not dropped: fewer than three classes with a signal
        // leave no spread to judge the rest by.
        // With a lean group (the small side the share limit asks for), the ratio stays the capped
        // one: over the clean bound, the class would be judged by that bound and its group
        // regrown, which a lean group must not be (score::judged_by_their_groups).
        signal: cluster_median.is_some().then_some(ClassSignal {
            bound_with_group: lean.as_ref().map(|_| LEAN_RATIO),
            ..ClassSignal::new(judged_ratio, CLEAN_RATIO, 0.05)
        }),
        grouping: Some(Grouping {
            cluster: member,
            suspect: (closer || lean.is_some()).then_some(1),
            closer_to_class: nearest_class.filter(|_| closer),
            suspect_is_whole: true,
            ..Grouping::default()
        }),
        record_level: None,
        flagged: Vec::new(),
        fit,
    }
}

/// A group of its own at the end of the line from the class's median toward its direction
/// cluster's median (see [`LEAN_RATIO`]).
struct LeanGroup {
    /// 1 for the group's records, per record of the class view.
    members: Vec<u8>,
    /// Each record's posterior of the group's component past the main mode (0 at or before it,
    /// and for all-zero vectors): its score.
    posterior: Vec<f32>,
}

/// The class's non-zero records on the line from its median toward `cluster_median`, fitted by
/// two Gaussians: a group when the minor component sits at the cluster's end, clearly apart
/// (Ashman's D over [`LEAN_SEPARATION`]), with at least [`MIN_LIVE`] records and at most
/// [`LEAN_MAX_SHARE`] of them. Its members are the records past the main mode the minor one
/// explains better. (A minor component far narrower than the main one is no sign against a
/// group here, unlike `mixture::Split::minor_is_a_group`'s: a faint 5% backdoor's 22 records
/// formed one, tuning seed 302 at 64 units x 500.)
fn lean_group(view: &ClassView<'_>, cluster_median: &[f32]) -> Option<LeanGroup> {
    let dim = view.dim;
    let own = &view.class_medians[view.class];
    let direction: Vec<f64> = cluster_median.iter().zip(own).map(|(&c, &o)| (c - o) as f64).collect();
    let length = direction.iter().map(|d| d * d).sum::<f64>().sqrt();
    if length <= 0.0 || !length.is_finite() {
        return None;
    }
    let (live, along): (Vec<usize>, Vec<f64>) = view
        .x
        .chunks_exact(dim)
        .enumerate()
        .filter(|(_, row)| row.iter().any(|&v| v != 0.0))
        .map(|(i, row)| {
            let on_line = row
                .iter()
                .zip(own)
                .zip(&direction)
                .map(|((&x, &o), d)| (x - o) as f64 * d);
            (i, on_line.sum::<f64>() / length)
        })
        .unzip();
    let split = fit_two_gaussians(&along)?;
    // Only records past the main mode, toward the cluster, can be the group's: where the minor
    // component is the wider one, its posterior also passes 0.5 at the far end.
    let minor: Vec<f64> = along
        .iter()
        .map(|&t| {
            if t > split.means[0] {
                split.minor_posterior(t)
            } else {
                0.0
            }
        })
        .collect();
    let size = minor.iter().filter(|&&p| p > 0.5).count();
    let at_cluster_end = split.means[1] > split.means[0];
    let passes = at_cluster_end
        && split.separation() > LEAN_SEPARATION
        && size >= MIN_LIVE
        && size as f64 <= LEAN_MAX_SHARE * live.len() as f64;
    log::debug!(
        "class {}: along its lean, a mode at {} end ({size} of {} records past the main one), D {:.2}: {}",
        view.class,
        if at_cluster_end { "the cluster's" } else { "the other" },
        live.len(),
        split.separation(),
        if passes { "a group" } else { "no group" }
    );
    if !passes {
        return None;
    }
    let (mut members, mut posterior) = (vec![0u8; view.n()], vec![0f32; view.n()]);
    for (&i, &p) in live.iter().zip(&minor) {
        posterior[i] = p as f32;
        members[i] = (p > 0.5) as u8;
    }
    Some(LeanGroup { members, posterior })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ActivationClusteringParams;

    const DIM: usize = 4;

    /// `n` records around `centre`, spread +-0.5 per coordinate (deterministic).
    fn blob(centre: [f32; DIM], n: usize, salt: usize) -> Vec<f32> {
        (0..n * DIM)
            .map(|i| centre[i % DIM] + (((i + salt) * 7919 % 1000) as f32 / 1000.0 - 0.5))
            .collect()
    }

    /// Scores class `class` of `classes` (row-major vectors, DIM each).
    fn analyse(classes: &[Vec<f32>], class: usize) -> ClassScores {
        let split = ActivationClusteringParams::default().check().unwrap();
        score_with(&DistanceAnalysis::new(split), classes, class)
    }

    /// Class `class` of `classes` scored by `detector`.
    fn score_with(detector: &dyn Detector, classes: &[Vec<f32>], class: usize) -> ClassScores {
        with_view(classes, class, |view| detector.score_class(view).unwrap())
    }

    /// `f` of class `class`'s view among `classes` (row-major vectors, DIM each).
    fn with_view<R>(classes: &[Vec<f32>], class: usize, f: impl FnOnce(&ClassView<'_>) -> R) -> R {
        super::super::with_view(classes, DIM, class, f)
    }

    #[test]
    fn a_cluster_made_of_another_class_is_the_suspect_and_a_clean_lobe_is_not() {
        // Class 0 holds 30 records that look like class 1 plus a trigger coordinate; class 2 a
        // lobe of 40 records further out along its own direction.
        let mut poisoned = blob([10.0, 0.0, 0.0, 0.0], 170, 1);
        poisoned.extend(blob([0.0, 10.0, 0.0, 5.0], 30, 2));
        let mut lobed = blob([0.0, 0.0, 10.0, 0.0], 160, 3);
        lobed.extend(blob([0.0, 0.0, 16.0, 0.0], 40, 4));
        let classes = vec![poisoned, blob([0.0, 10.0, 0.0, 0.0], 200, 5), lobed];

        let scores = analyse(&classes, 0);
        let signal = scores.signal.unwrap();
        assert!(signal.value > CLEAN_RATIO, "{}", signal.value);
        let grouping = scores.grouping.unwrap();
        assert_eq!(grouping.suspect, Some(1));
        assert_eq!(grouping.closer_to_class, Some(1));
        let members: Vec<usize> = (0..200).filter(|&i| grouping.cluster[i] == 1).collect();
        assert_eq!(members, (170..200).collect::<Vec<_>>());
        assert!(scores.scores[170..].iter().all(|&s| s > 0.0));
        assert!(scores.scores[..170].iter().all(|&s| s == 0.0));

        let scores = analyse(&classes, 2);
        assert!(scores.signal.unwrap().value < CLEAN_RATIO);
        assert_eq!(scores.grouping.unwrap().suspect, None);
    }

    #[test]
    fn all_zero_vectors_never_make_a_cluster_closer_to_a_sparse_class() {
        // Class 0 holds 40 zero vectors; class 1 is mostly zero vectors, so its coordinate median
        // is the zero vector too, closer to those 40 than class 0's median is.
        let mut with_zeros = blob([10.0, 10.0, 0.0, 0.0], 160, 1);
        with_zeros.extend(vec![0.0; 40 * DIM]);
        let mut sparse = vec![0.0; 150 * DIM];
        sparse.extend(blob([0.0, 0.0, 10.0, 10.0], 50, 2));
        let classes = vec![with_zeros, sparse, blob([0.0, 10.0, 10.0, 0.0], 200, 3)];

        let scores = analyse(&classes, 0);
        assert!(scores.signal.unwrap().value < CLEAN_RATIO);
        let grouping = scores.grouping.unwrap();
        assert_eq!(grouping.suspect, None);
        assert!(grouping.cluster.iter().all(|&m| m == 0));
    }

    #[test]
    fn the_split_follows_direction_not_length() {
        // Class 0: 100 records along its own direction, 60 three times as long (a ReLU layer's
        // lengths are heavy-tailed), 30 triggered records of class 1 and 10 more of them short.
        // k-means on positions splits the long records off; on directions, the triggered ones.
        let mut poisoned = blob([10.0, 0.0, 0.0, 0.0], 100, 1);
        poisoned.extend(blob([30.0, 0.0, 0.0, 0.0], 60, 2));
        poisoned.extend(blob([0.0, 10.0, 0.0, 5.0], 30, 3));
        poisoned.extend((0..10).flat_map(|i| [0.01 * i as f32, 1.0, 0.0, 0.5]));
        // 5 short records of the class's own direction stay out of the group.
        poisoned.extend((0..5).flat_map(|i| [1.0, 0.01 * i as f32, 0.0, 0.0]));
        let classes = vec![
            poisoned,
            blob([0.0, 10.0, 0.0, 0.0], 200, 4),
            blob([0.0, 0.0, 10.0, 0.0], 200, 5),
        ];
        let scores = analyse(&classes, 0);
        assert!(scores.signal.unwrap().value > CLEAN_RATIO);
        let grouping = scores.grouping.unwrap();
        assert_eq!(grouping.closer_to_class, Some(1));
        let members: Vec<usize> = (0..205).filter(|&i| grouping.cluster[i] == 1).collect();
        assert_eq!(members, (160..200).collect::<Vec<_>>());
        // Activation clustering's split of positions puts the long records on a side of their own.
        let positions = ActivationClusteringParams::default().check().unwrap();
        let by_position = score_with(&positions, &classes, 0).grouping.unwrap();
        let long_side = by_position.cluster[100];
        assert!((100..160).all(|i| by_position.cluster[i] == long_side));
        assert!((0..100).all(|i| by_position.cluster[i] != long_side));
    }

    #[test]
    fn a_cluster_of_fewer_than_12_records_says_nothing() {
        // Class 0 holds 11 records that look like class 1: its split's small cluster is those 11,
        // closer to class 1, yet too few to place the class.
        let with = |m: usize| {
            let mut x = blob([10.0, 0.0, 0.0, 0.0], 150, 1);
            x.extend(blob([0.0, 10.0, 0.0, 0.0], m, 2));
            vec![
                x,
                blob([0.0, 10.0, 0.0, 0.0], 200, 3),
                blob([0.0, 0.0, 10.0, 0.0], 200, 4),
            ]
        };
        let scores = analyse(&with(MIN_LIVE - 1), 0);
        assert!(scores.signal.is_none(), "{:?}", scores.signal);
        assert_eq!(scores.grouping.unwrap().suspect, None);
        // One record more and the cluster counts.
        let scores = analyse(&with(MIN_LIVE), 0);
        assert!(scores.signal.unwrap().value > CLEAN_RATIO);
    }

    /// Three classes of 200; `like` of class 0's records are like class 1's.
    fn class_0_with_records_like_class_1(like: usize) -> Vec<Vec<f32>> {
        let mut x = blob([10.0, 0.0, 0.0, 0.0], 200 - like, 1);
        x.extend(blob([0.0, 10.0, 0.0, 0.0], like, 2));
        vec![
            x,
            blob([0.0, 10.0, 0.0, 0.0], 200, 3),
            blob([0.0, 0.0, 10.0, 0.0], 200, 4),
        ]
    }

    #[test]
    fn a_cluster_of_a_fifth_of_the_split_or_more_counts_as_clean() {
        // Class 0's split cluster is 50 records like class 1's of the 200 split: by default a
        // quarter of the split is no small side. Its ratio is reported, the signal held at the clean bound.
        let classes = class_0_with_records_like_class_1(50);
        let scores = analyse(&classes, 0);
        let stat = |name: &str| scores.stats.iter().find(|s| s.name == name).unwrap().value;
        assert!(stat("own_to_other_class_distance") > CLEAN_RATIO);
        assert_eq!(stat("direction_cluster_share"), 0.25);
        assert_eq!(scores.signal.as_ref().unwrap().value, CLEAN_RATIO);
        let grouping = scores.grouping.unwrap();
        assert_eq!(grouping.suspect, None);
        assert!(grouping.cluster.iter().all(|&m| m == 0));
        assert!(scores.scores.iter().all(|&s| s == 0.0));

        // Allowed a larger share, the quarter is the suspect group.
        let split = ActivationClusteringParams {
            distance_max_cluster_share: 0.3,
            ..Default::default()
        };
        let scores = score_with(&DistanceAnalysis::new(split.check().unwrap()), &classes, 0);
        assert!(scores.signal.unwrap().value > CLEAN_RATIO);
        let grouping = scores.grouping.unwrap();
        assert_eq!(grouping.suspect, Some(1));
        let members: Vec<usize> = (0..200).filter(|&i| grouping.cluster[i] == 1).collect();
        assert_eq!(members, (150..200).collect::<Vec<_>>());
    }

    #[test]
    fn a_lean_group_in_a_cluster_of_a_fifth_is_judged_at_most_at_the_clean_bound() {
        // Class 0's direction cluster is 40 records like class 1's of its 200: a fifth, so its
        // ratio is held at the clean bound; the 40 are also a mode at the cluster's end. Over
        // the clean bound, the class would be judged by it and the group regrown.
        let scores = analyse(&class_0_with_records_like_class_1(40), 0);
        let stat = |name: &str| scores.stats.iter().find(|s| s.name == name).unwrap().value;
        assert!(stat("own_to_other_class_distance") > CLEAN_RATIO);
        assert_eq!(stat("lean_group_records"), 40.0);
        let signal = scores.signal.unwrap();
        assert_eq!(signal.bound_with_group, Some(LEAN_RATIO));
        assert_eq!(signal.value, CLEAN_RATIO);
        assert!(signal.over_bound());
    }

    /// `n` records along the line through `centre` in `direction`, one mode: placed at the
    /// quantiles of a logistic distribution of scale `scale`, jittered as `blob` does.
    fn one_mode(centre: [f32; DIM], direction: [f32; DIM], scale: f32, n: usize, salt: usize) -> Vec<f32> {
        let jitter = blob([0.0; DIM], n, salt);
        (0..n * DIM)
            .map(|i| {
                let (row, j) = (i / DIM, i % DIM);
                let p = (row as f32 + 0.5) / n as f32;
                centre[j] + scale * (p / (1.0 - p)).ln() * direction[j] + 0.3 * jitter[i]
            })
            .collect()
    }

    #[test]
    fn a_group_at_the_end_the_cluster_leans_toward_is_judged_by_the_lower_bound() {
        // Class 0 spreads toward class 1 in one mode; 30 triggered records sit past its end,
        // a mode of their own but still nearer class 0's median than class 1's.
        let clean = one_mode([10.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], 0.6, 170, 1);
        let mut poisoned = clean.clone();
        poisoned.extend(blob([7.0, 6.5, 0.0, 0.0], 30, 2));
        let others = [blob([0.0, 10.0, 0.0, 0.0], 200, 3), blob([0.0, 0.0, 10.0, 0.0], 200, 4)];
        let classes = vec![poisoned, others[0].clone(), others[1].clone()];
        let scores = analyse(&classes, 0);
        let stat = |name: &str| scores.stats.iter().find(|s| s.name == name).unwrap().value;
        let signal = scores.signal.unwrap();
        assert!(
            signal.value < CLEAN_RATIO && signal.value > LEAN_RATIO,
            "{}",
            signal.value
        );
        assert_eq!(signal.bound_with_group, Some(LEAN_RATIO));
        assert!(signal.over_bound());
        assert_eq!(stat("records_closer_to_other_class"), 0.0);
        assert_eq!(stat("lean_group_records"), 30.0);
        let grouping = scores.grouping.unwrap();
        assert_eq!(grouping.suspect, Some(1));
        assert!(grouping.suspect_is_whole);
        let members: Vec<usize> = (0..200).filter(|&i| grouping.cluster[i] == 1).collect();
        assert_eq!(members, (170..200).collect::<Vec<_>>());
        assert!(scores.scores[170..].iter().all(|&s| s > 0.5));

        // A class spread in one mode along that same line, as far: no group.
        let toward_the_group = [7.0, 6.5, 0.0, 0.0];
        assert!(with_view(&classes, 0, |view| lean_group(view, &toward_the_group)).is_some());
        let unimodal = one_mode([10.0, 2.0, 0.0, 0.0], [-0.55, 0.83, 0.0, 0.0], 1.2, 200, 1);
        let classes = vec![unimodal, others[0].clone(), others[1].clone()];
        assert!(with_view(&classes, 0, |view| lean_group(view, &toward_the_group)).is_none());
    }

    /// `n` records spread evenly from `from` to `to` (plus `blob`'s jitter, scaled by 0.3).
    fn along_line(from: [f32; DIM], to: [f32; DIM], n: usize, salt: usize) -> Vec<f32> {
        let jitter = blob([0.0; DIM], n, salt);
        (0..n * DIM)
            .map(|i| {
                let (row, j) = (i / DIM, i % DIM);
                let f = row as f32 / (n - 1).max(1) as f32;
                from[j] + f * (to[j] - from[j]) + 0.3 * jitter[i]
            })
            .collect()
    }

    #[test]
    fn a_lean_group_holds_only_records_past_the_main_mode() {
        // A tight class at (10, 2), a wide group toward (7, 6.5) and three strays on the far side: the wide
        // component's posterior passes 0.5 at the far end too, but the strays are no members.
        // (They still widen the fit: D about 3.1, against the 2.6 a group needs.)
        let toward = [7.0, 6.5, 0.0, 0.0];
        let mut class = along_line([10.28, 1.58, 0.0, 0.0], [9.72, 2.42, 0.0, 0.0], 170, 1);
        class.extend(along_line([6.67, 6.99, 0.0, 0.0], [5.01, 9.49, 0.0, 0.0], 30, 2));
        class.extend(along_line([11.11, 0.34, 0.0, 0.0], [11.14, 0.29, 0.0, 0.0], 3, 3));
        let others = [blob([0.0, 10.0, 0.0, 0.0], 200, 3), blob([0.0, 0.0, 10.0, 0.0], 200, 4)];
        let classes = vec![class, others[0].clone(), others[1].clone()];
        let group = with_view(&classes, 0, |view| lean_group(view, &toward)).expect("a group");
        assert_eq!(group.members[170..200].iter().filter(|&&m| m == 1).count(), 30);
        assert_eq!(&group.members[200..], &[0, 0, 0]);
        assert!(group.posterior[200..].iter().all(|&p| p == 0.0));
        assert_eq!(group.members[..170].iter().filter(|&&m| m == 1).count(), 0);
    }
}
