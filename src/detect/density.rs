//! Density: records packed unusually close together. A backdoor's triggered records often share
//! one dominant feature (the trigger), so they sit much closer to each other than a class's
//! records naturally do (Chen et al. 2018 saw it as a separate compact cluster); a tight group
//! that is neither far from the class nor large moves neither the class's spectrum nor a 2-means
//! split, but it shows as records whose neighbours are unusually near.
//!
//! Per record: the mean distance to its k nearest neighbours from the influence stage's
//! neighbour search (all classes), on a log scale, in robust z-units of its class (denser =
//! higher). The class signal is the share of records more than `DENSE_Z` MADs denser than the
//! class's median: natural classes have almost none there (measured: at most 1 in 500 on Gaussian
//! classes), a planted cluster puts its members there. Near-zero vectors (which a ReLU layer gives
//! to many unrelated inputs, and which therefore coincide) are left out, as for near-copies.

use serde::{Deserialize, Serialize};

use super::{ClassScores, ClassSignal, ClassView, DetectError, Detector, Grouping, Stat};
use crate::influence::neighbourhood::{self, is_live};
use crate::stats::{mad_sigma, median};

/// Robust z (log mean kNN distance below the class median, in MADs) that makes a record dense.
const DENSE_Z: f64 = 3.0;

pub struct Density;

/// The class's scale the scores are measured in: the median and MAD of its records' log kNN
/// distances, and its median vector norm (for the near-zero cut). Kept, so an incremental scan
/// measures tonight's records, and yesterday's, in the same units.
#[derive(Serialize, Deserialize)]
struct Scale {
    centre: f64,
    spread: f64,
    typical_norm: f64,
}

impl Detector for Density {
    fn name(&self) -> &'static str {
        "density"
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let (norms, log_distance) = measures(view)?;
        let typical_norm = median(&norms);
        let live: Vec<f64> = (0..view.n())
            .filter(|&i| is_live(norms[i], typical_norm))
            .map(|i| log_distance[i])
            .collect();
        let centre = median(&live);
        let scale = Scale {
            centre,
            spread: mad_sigma(&live, centre).max(1e-9),
            typical_norm,
        };
        Ok(score_with(view, &norms, &log_distance, scale))
    }

    fn rescore(&self, view: &ClassView<'_>, fit: Option<&serde_json::Value>) -> Result<ClassScores, DetectError> {
        let scale: Scale = super::parse_fit(self.name(), fit)?;
        let (norms, log_distance) = measures(view)?;
        Ok(score_with(view, &norms, &log_distance, scale))
    }
}

/// Each record's vector norm and log mean kNN distance.
fn measures(view: &ClassView<'_>) -> Result<(Vec<f64>, Vec<f64>), DetectError> {
    let state = view.influence("density")?;
    let norms = neighbourhood::norms(view.x, view.dim);
    let log_distance = state.knn_distance[view.positions()]
        .iter()
        .map(|&d| (d as f64).max(1e-12).ln())
        .collect();
    Ok((norms, log_distance))
}

/// The dense records are a cluster's core, not all of it (its edge members are only 1-3 MADs
/// denser than the class): the group is regrown from them along what separates them.
fn cluster_of_dense(view: &ClassView<'_>, dense: &[u8]) -> Vec<u8> {
    super::untangle::grow_group(dense, || view.coordinates())
}

/// Scores, dense group and class signal in the units of `scale`.
fn score_with(view: &ClassView<'_>, norms: &[f64], log_distance: &[f64], scale: Scale) -> ClassScores {
    let n = view.n();
    let scores: Vec<f32> = (0..n)
        .map(|i| {
            if is_live(norms[i], scale.typical_norm) {
                ((scale.centre - log_distance[i]) / scale.spread) as f32
            } else {
                0.0
            }
        })
        .collect();
    let dense: Vec<u8> = scores.iter().map(|&z| (z as f64 > DENSE_Z) as u8).collect();
    let share = dense.iter().filter(|&&d| d == 1).count() as f64 / n.max(1) as f64;
    // A clean class of n records puts about one record there by chance; two more than that
    // plus 0.4% of the class is beyond what the measured clean classes reached.
    let clean_bound = 0.004 + 2.0 / n.max(1) as f64;
    // Sparse activations (a ReLU layer: many exact zeros) have natural dense clumps of records
    // with few active units: on the generator's trained ReLU layers 2-3% of a clean class, as
    // many as a planted cluster. There the detector ranks but does not judge.
    let zeros = super::zero_share(view.x);
    let judges = zeros <= super::MAX_ZERO_SHARE;
    ClassScores {
        scores,
        stats: vec![
            Stat {
                name: "dense_share".into(),
                value: share,
            },
            Stat {
                name: "dense_share_clean_bound".into(),
                value: clean_bound,
            },
            Stat {
                name: "zero_share".into(),
                value: zeros,
            },
        ],
        signal: judges.then_some(ClassSignal::new(share, clean_bound, 0.004)),
        grouping: judges.then(|| Grouping {
            cluster: cluster_of_dense(view, &dense),
            suspect: Some(1),
            closer_to_class: None,
            suspect_is_whole: false,
            ..Grouping::default()
        }),
        record_level: None,
        flagged: Vec::new(),
        fit: super::store_fit(&scale),
    }
}
