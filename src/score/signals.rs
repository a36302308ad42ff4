//! Step 1 of the decision: each class signal compared across the classes (anomaly indices,
//! margins over the threshold), and which signals too many classes share to mean anything.

use super::{ClassEvidence, DecisionParams};
use crate::stats::{mad_sigma, median};

/// Whether a class signal other than those `attacking` the class ranks it far out among the
/// classes ([`SECONDING_FACTOR`] times the anomaly threshold) though its value is under its own
/// clean bound.
/// Such a second opinion keeps a verdict [`tail_among_its_own_class`](super::tails::tail_among_its_own_class) would overturn: a backdoor
/// whose triggered records became each other's neighbours can look like a tail of the class, but
/// the distance analysis still sees its cluster's median pulled toward other classes, further
/// than any clean class's (tuning seeds 1-20 at 300-500 per class, 1-40 at 64 dims x 500 5%, 1-8
/// at 3 000: the overturn took two targets' verdicts, whose distance signal stood 9.3 and 14.5
/// MADs above the classes' median with their clusters' medians still nearer their own class, and
/// 28 other classes', 16 of them in clean sets, whose other signals reached at most 2.1).
pub(super) fn seconded(
    anomaly: &[Option<f64>],
    attacking: &[usize],
    compared: &[bool],
    common: &[bool],
    params: &DecisionParams,
) -> bool {
    anomaly.iter().enumerate().any(|(d, index)| {
        !attacking.contains(&d)
            && compared[d]
            && !common[d]
            && index.is_some_and(|a| a > SECONDING_FACTOR * params.anomaly_threshold)
    })
}

/// How many times the decision's anomaly threshold a second signal must rank the class out to
/// second it. At 1x (to 0.2.36), distance signals of 4.1-4.3 MADs, under their clean bound,
/// seconded SPECTRE's verdict on four clean classes' tails (tuning seeds 201-320, and 261-280 at
/// 3 000 per class: 83, 51, 682 and 656 records quarantined, up to 2.2% of a clean dataset);
/// the targets it was built for stood 9.3 and 14.5 out. At 2x those four runs lost their false
/// class and no run lost a poisoned record (1 400 ReLU runs).
const SECONDING_FACTOR: f64 = 2.0;

/// Per class: whether a class signal (not one too many classes share) is over its threshold.
pub(super) fn judged_by_a_signal(margins: &[Vec<Option<f64>>], common: &[bool]) -> Vec<bool> {
    margins
        .iter()
        .map(|m| {
            m.iter()
                .zip(common)
                .any(|(m, &common)| !common && m.is_some_and(|m| m > 0.0))
        })
        .collect()
}

/// Each class signal's margin over the decision's threshold, in anomaly-index units:
/// `[class][detector]`, negative when the value is below the bound it is judged by (the clean
/// bound, or the lower one its detector's group allows), whatever its rank.
pub(super) fn signal_margins(
    evidence: &[ClassEvidence<'_>],
    anomaly: &[Vec<Option<f64>>],
    params: &DecisionParams,
) -> Vec<Vec<Option<f64>>> {
    evidence
        .iter()
        .zip(anomaly)
        .map(|(e, indices)| {
            indices
                .iter()
                .zip(e.scores.iter())
                .map(|(index, scores)| {
                    let (signal, index) = (scores.signal?, (*index)?);
                    Some(if signal.over_bound() {
                        index - params.anomaly_threshold
                    } else {
                        -params.anomaly_threshold.max(1.0)
                    })
                })
                .collect()
        })
        .collect()
}

/// Per detector: whether its class signal marks more than a quarter of the analysed classes
/// (and more than one). An outlier among classes is a minority by definition; when many classes
/// share a high value, the median/MAD comparison has broken down (measured: sparse ReLU classes
/// of 10k records where 4 of 10 split off a natural 20-35% lobe at silhouette 0.5-0.9), and
/// judging them attacked would quarantine a third of each. Backdoors target one class or a few.
/// A signal with no comparison (`compared`) is judged class by class instead.
pub(super) fn common_signals(margins: &[Vec<Option<f64>>], compared: &[bool]) -> Vec<bool> {
    let most = (margins.len() / 4).max(1);
    compared
        .iter()
        .enumerate()
        .map(|(d, &compared)| compared && margins.iter().filter(|m| m[d].is_some_and(|m| m > 0.0)).count() > most)
        .collect()
}

/// Per detector: whether at least 3 classes carry its class signal, so that a class can be
/// compared with the rest (with fewer, the median/MAD comparison has no "rest").
pub(super) fn compared_signals(evidence: &[ClassEvidence<'_>], n_detectors: usize) -> Vec<bool> {
    (0..n_detectors)
        .map(|d| evidence.iter().filter(|e| e.scores[d].signal.is_some()).count() >= 3)
        .collect()
}

/// Anomaly index of each class signal among the analysed classes: `[class][detector]`.
pub(super) fn class_anomaly_indices(evidence: &[ClassEvidence<'_>], n_detectors: usize) -> Vec<Vec<Option<f64>>> {
    let mut out = vec![vec![None; n_detectors]; evidence.len()];
    for d in 0..n_detectors {
        // Excess over the clean bound: a signal's clean level depends on the class's size (a
        // small class's top eigenvalue is noisier), and classes of a long-tailed dataset differ
        // in size 100-fold; for classes of one size this is the plain value, shifted.
        let excess = |s: &crate::detect::ClassSignal| s.value - s.clean_bound;
        let values: Vec<f64> = evidence
            .iter()
            .filter_map(|e| e.scores[d].signal.as_ref().map(excess))
            .collect();
        if values.is_empty() {
            continue;
        }
        let m = median(&values);
        // With fewer than 3 classes there is no "rest" to compare with: the index is infinite, and
        // `decide` asks such a class for a separated group instead (`separated_minority`).
        let spread = if values.len() >= 3 {
            mad_sigma(&values, m)
        } else {
            f64::NAN
        };
        for (i, e) in evidence.iter().enumerate() {
            if let Some(s) = e.scores[d].signal {
                let floor = s.min_spread.max(1e-9);
                out[i][d] = Some(if spread.is_nan() {
                    f64::INFINITY
                } else {
                    (excess(&s) - m) / spread.max(floor)
                });
            }
        }
    }
    out
}
