//! Activation clustering (Chen et al. 2018, arXiv:1811.03728): per class, PCA to `nb-dims`, k-means
//! with k = 2, then look at the split: a small, well-separated cluster is what a backdoor leaves.
//!
//! Unlike ART 1.20 we never call the smaller cluster of every class poison: the class signal is the
//! split's silhouette when the smaller cluster is small, and `score` compares it across classes.

use serde::{Deserialize, Serialize};

use super::kmeans::KMeans;

use super::sample_rows;
use super::{ClassScores, ClassSignal, ClassView, DetectError, Detector, Grouping, ParamError, SAMPLE_ROWS, Stat};

/// Silhouette a k = 2 split of a clean class can reach. Gaussian classes split in halves at
/// 0.1-0.3; sparse ReLU activations split off a 30% lobe at up to 0.45. A backdoor cluster that
/// k-means isolates sits well above.
const CLEAN_SILHOUETTE: f64 = 0.5;

/// Rows per class k-means is fitted on.
const KMEANS_FIT_ROWS: usize = 20_000;

/// `[detect.activation-clustering]` in a pipeline file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ActivationClusteringParams {
    /// PCA dimensions before clustering (the paper's 10). Shared with the other detectors' basis.
    pub nb_dims: usize,
    /// k-means++ restarts; the lowest-inertia run wins. Default 4.
    pub n_runs: usize,
    /// A cluster holding less than this share of its class counts as "small" (the paper's 0.35).
    pub max_relative_size: f64,
    /// Also run the distance analysis, on a split of the records' directions with these
    /// settings (`detect::distance_analysis`; default true, `--no-distance-analysis` turns it off).
    pub distance_analysis: bool,
    /// The distance analysis's cluster counts only while it holds less than this share of the
    /// split's records, which leave out the class's all-zero and short vectors (default 0.2; 0.5
    /// turns the bound off). Raise it where a class may be more than about a sixth poisoned, or
    /// where many of its vectors are zero or short (a 13% backdoor in a class whose third was
    /// zero vectors held 21% of its split), at the price of clean sub-populations of that size.
    /// Like every detector setting, a change re-fits an incremental scan's reference.
    pub distance_max_cluster_share: f64,
}

impl Default for ActivationClusteringParams {
    fn default() -> Self {
        ActivationClusteringParams {
            nb_dims: 10,
            n_runs: 4,
            max_relative_size: 0.35,
            distance_analysis: true,
            distance_max_cluster_share: 0.2,
        }
    }
}

impl ActivationClusteringParams {
    pub fn check(self) -> Result<ActivationClustering, ParamError> {
        if self.nb_dims == 0 {
            return Err(ParamError::new("nb-dims", "must be at least 1", self.nb_dims));
        }
        if self.n_runs == 0 {
            return Err(ParamError::new("n-runs", "must be at least 1", self.n_runs));
        }
        if !(self.max_relative_size > 0.0 && self.max_relative_size <= 0.5) {
            return Err(ParamError::new(
                "max-relative-size",
                "must be in (0, 0.5]",
                self.max_relative_size,
            ));
        }
        if !(self.distance_max_cluster_share > 0.0 && self.distance_max_cluster_share <= 0.5) {
            return Err(ParamError::new(
                "distance-max-cluster-share",
                "must be in (0, 0.5]",
                self.distance_max_cluster_share,
            ));
        }
        Ok(ActivationClustering { params: self })
    }
}

/// The checked detector; made only by [`ActivationClusteringParams::check`].
#[derive(Clone, Debug)]
pub struct ActivationClustering {
    params: ActivationClusteringParams,
}

impl ActivationClustering {
    /// See [`ActivationClusteringParams::distance_max_cluster_share`].
    pub(super) fn distance_max_cluster_share(&self) -> f64 {
        self.params.distance_max_cluster_share
    }
}

/// The fit a later scan scores new records under: the two cluster centres (`2 * k`, in the class
/// basis's coordinates) and which of them was the smaller cluster (kept, so a split near half
/// and half does not swap sides when a few records arrive).
#[derive(Serialize, Deserialize)]
struct Centroids {
    centroids: Vec<f32>,
    small: Option<u8>,
}

/// A class's k = 2 split: each record's cluster (0 or 1) and which cluster is the smaller.
pub struct Split {
    pub(super) cluster: Vec<u8>,
    pub(super) small: u8,
    /// The two centres, `k` values each, in the class basis's coordinates.
    centroids: Vec<f32>,
    k: usize,
    /// What [`ClassScores::fit`] stores, so a later scan splits the same way.
    pub(super) fit: Option<serde_json::Value>,
}

impl Split {
    fn centre(&self, c: u8) -> &[f32] {
        &self.centroids[c as usize * self.k..(c as usize + 1) * self.k]
    }

    /// Records of the smaller cluster.
    pub(super) fn small_rows(&self) -> Vec<usize> {
        (0..self.cluster.len())
            .filter(|&i| self.cluster[i] == self.small)
            .collect()
    }
}

impl Detector for ActivationClustering {
    fn name(&self) -> &'static str {
        "activation_clustering"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        Ok(self.score_split(view, &self.class_split(view, None)?))
    }

    fn rescore(&self, view: &ClassView<'_>, fit: Option<&serde_json::Value>) -> Result<ClassScores, DetectError> {
        Ok(self.score_split(view, &self.class_split(view, Some(fit))?))
    }
}

impl ActivationClustering {
    /// The class's split in its basis coordinates.
    fn class_split(
        &self,
        view: &ClassView<'_>,
        stored: Option<Option<&serde_json::Value>>,
    ) -> Result<Split, DetectError> {
        let (points, k) = (&view.basis.projected, view.basis.k);
        self.split_points(self.name(), points, k, KMEANS_FIT_ROWS, view.seed, stored)
    }

    /// The k = 2 split of `points` (`k` coordinates each), fitted afresh on an even sample of
    /// at most `fit_rows` of them (`stored` = `None`) or under an earlier scan's centres
    /// (`Some(fit)`). The distance analysis (`detect::distance_analysis`) splits its own points
    /// through this too.
    pub(super) fn split_points(
        &self,
        detector: &'static str,
        points: &[f32],
        k: usize,
        fit_rows: usize,
        seed: u64,
        stored: Option<Option<&serde_json::Value>>,
    ) -> Result<Split, DetectError> {
        let mut fit = match stored {
            Some(fit) => {
                let fit: Centroids = super::parse_fit(detector, fit)?;
                if fit.centroids.len() != 2 * k || fit.small.is_some_and(|s| s > 1) {
                    return Err(DetectError::Failed {
                        detector,
                        message: "the reference's cluster centres do not match the class basis".into(),
                    });
                }
                fit
            }
            // k-means++ centres, fitted on an even sample of the points (two centres in 10
            // dimensions are as well placed by 20 000 records as by 100 000).
            None => {
                let sample: Vec<f32> = sample_rows(points.len() / k, fit_rows)
                    .into_iter()
                    .flat_map(|i| points[i * k..(i + 1) * k].iter().copied())
                    .collect();
                if sample.len() < 2 * k {
                    return Err(DetectError::Failed {
                        detector,
                        message: format!("{} record(s) cannot be split in two clusters", sample.len() / k),
                    });
                }
                let centroids = KMeans::new(2, self.params.n_runs, 100, 1e-4)
                    .fit(&sample, k, seed)
                    .centroids;
                Centroids { centroids, small: None }
            }
        };
        let (c0, c1) = (&fit.centroids[..k], &fit.centroids[k..2 * k]);
        let cluster: Vec<u8> = points
            .chunks_exact(k)
            .map(|row| (dist(row, c1) < dist(row, c0)) as u8)
            .collect();
        let ones = cluster.iter().filter(|&&c| c == 1).count();
        let small = *fit
            .small
            .get_or_insert(if cluster.len() - ones <= ones { 0 } else { 1 });
        Ok(Split {
            cluster,
            small,
            fit: super::store_fit(&fit),
            centroids: fit.centroids,
            k,
        })
    }

    /// Everything after the split: sizes, silhouette, each record's side.
    fn score_split(&self, view: &ClassView<'_>, split: &Split) -> ClassScores {
        let (n, k) = (view.n(), view.basis.k);
        let z = &view.basis.projected;
        let relative_size = split.small_rows().len() as f64 / n as f64;
        let (c_small, c_big) = (split.centre(split.small), split.centre(1 - split.small));

        // Score: how much closer a record is to the small cluster's centre than to the big one's, in
        // [-1, 1]; positive means it sits in the small cluster.
        let scores: Vec<f32> = z
            .chunks_exact(k)
            .map(|row| {
                let (ds, db) = (dist(row, c_small), dist(row, c_big));
                ((db - ds) / (db + ds).max(f32::MIN_POSITIVE)).clamp(-1.0, 1.0)
            })
            .collect();

        let silhouette = silhouette(z, k, &split.cluster, &sample_rows(n, SAMPLE_ROWS));
        let is_small = relative_size < self.params.max_relative_size;
        ClassScores {
            scores,
            stats: vec![
                Stat {
                    name: "relative_cluster_size".into(),
                    value: relative_size,
                },
                Stat {
                    name: "silhouette".into(),
                    value: silhouette,
                },
            ],
            // A clean class split in two by k-means has a silhouette of about 0.1-0.3 at balanced sizes.
            signal: Some(ClassSignal::new(
                split_signal(is_small, silhouette),
                CLEAN_SILHOUETTE,
                0.1,
            )),
            grouping: Some(Grouping {
                suspect: is_small.then_some(split.small),
                cluster: split.cluster.clone(),
                closer_to_class: None,
                suspect_is_whole: true,
                ..Grouping::default()
            }),
            record_level: None,
            flagged: Vec::new(),
            fit: split.fit.clone(),
        }
    }
}

/// The class signal of a k = 2 split: its silhouette. A split without a small side never judges
/// its class attacked (capped at the clean bound), but its silhouette still tells what splits of
/// this data reach, so the classes' median and spread come from every class. Scoring such splits
/// 0, as before 0.2.17, left a spread of 0 whenever one class split off a small side: on a
/// generated ReLU layer of 100 000 records per class a clean 29% lobe at 0.533, beside the other
/// classes' splits at 0.44-0.59, stood 5.3 MADs out, and 42% of its class was flagged.
fn split_signal(is_small: bool, silhouette: f64) -> f64 {
    if is_small {
        silhouette.max(0.0)
    } else {
        silhouette.clamp(0.0, CLEAN_SILHOUETTE)
    }
}

pub(super) fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

/// Mean silhouette (Rousseeuw 1987) of a 2-cluster assignment over the sampled rows.
fn silhouette(z: &[f32], k: usize, cluster: &[u8], sample: &[usize]) -> f64 {
    let mut total = 0.0;
    let mut counted = 0usize;
    for &i in sample {
        let (mut sum, mut cnt) = ([0f64; 2], [0usize; 2]);
        for &j in sample {
            if i != j {
                let c = cluster[j] as usize;
                sum[c] += dist(&z[i * k..(i + 1) * k], &z[j * k..(j + 1) * k]) as f64;
                cnt[c] += 1;
            }
        }
        let own = cluster[i] as usize;
        if cnt[own] == 0 || cnt[1 - own] == 0 {
            continue; // singleton cluster in the sample: silhouette undefined, skip (Rousseeuw: s = 0)
        }
        let (a, b) = (sum[own] / cnt[own] as f64, sum[1 - own] / cnt[1 - own] as f64);
        total += (b - a) / a.max(b).max(f64::MIN_POSITIVE);
        counted += 1;
    }
    if counted == 0 { 0.0 } else { total / counted as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nb_dims_cannot_be_zero() {
        let err = ActivationClusteringParams {
            nb_dims: 0,
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(err.key, "nb-dims");
    }

    #[test]
    fn max_relative_size_must_be_a_minority() {
        let err = ActivationClusteringParams {
            max_relative_size: 0.7,
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(err.key, "max-relative-size");
    }

    #[test]
    fn distance_max_cluster_share_must_be_in_0_to_a_half() {
        let with = |share| ActivationClusteringParams {
            distance_max_cluster_share: share,
            ..Default::default()
        };
        for share in [0.0, 0.6, f64::NAN] {
            assert_eq!(with(share).check().unwrap_err().key, "distance-max-cluster-share");
        }
        assert!(with(0.5).check().is_ok());
    }

    #[test]
    fn a_split_without_a_small_side_shows_its_silhouette_up_to_the_clean_bound() {
        assert_eq!(split_signal(true, 0.533), 0.533);
        assert_eq!(split_signal(false, 0.3), 0.3);
        assert_eq!(split_signal(false, 0.584), CLEAN_SILHOUETTE);
        assert_eq!(split_signal(true, -0.1), 0.0);
    }

    #[test]
    fn silhouette_is_high_for_separated_clusters() {
        let z: Vec<f32> = (0..40)
            .flat_map(|i| {
                if i < 30 {
                    [0.0, i as f32 * 0.01]
                } else {
                    [10.0, i as f32 * 0.01]
                }
            })
            .collect();
        let cluster: Vec<u8> = (0..40).map(|i| (i >= 30) as u8).collect();
        let s = silhouette(&z, 2, &cluster, &(0..40).collect::<Vec<_>>());
        assert!(s > 0.9, "{s}");
    }
}
