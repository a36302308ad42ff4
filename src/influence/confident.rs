//! Confident learning (Northcutt, Jiang, Chuang, JAIR 2021) on out-of-fold probabilities: per-class
//! thresholds, the confident joint, and which records are label issues.
//!
//! The rule is also kept as numbers (thresholds and, for prune-by-noise-rate, the smallest
//! margin that was pruned per pair of classes) so an incremental scan judges a new record the way
//! the full scan would have ([`LabelRule::judge`]).

use serde::{Deserialize, Serialize};

/// Which records confident learning calls label issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelIssueRule {
    /// The off-diagonal members of the confident joint (cleanlab `filter_by="confident_learning"`).
    ConfidentJoint,
    /// cleanlab's default (`filter_by="prune_by_noise_rate"`): the confident joint, calibrated to
    /// the class sizes, estimates how many records labelled `i` belong to `j`; that many records
    /// labelled `i` with the largest margin p_j - p_i are issues (only where p_j > p_i).
    PruneByNoiseRate,
}

/// What confident learning found (`Default`: nothing, for a scan without the surrogate).
#[derive(Default)]
pub struct ConfidentLearning {
    pub thresholds: Vec<f64>,
    pub joint: Vec<Vec<u64>>,
    pub issue: Vec<bool>,
    pub suggested: Vec<u32>,
    pub count: usize,
    /// Prune-by-noise-rate: `[i * k + j]` the smallest margin p_j - p_i pruned among records
    /// labelled `i` (infinite where none was).
    pub prune_margins: Vec<f32>,
    /// `[i * k + j]`: see [`likelihood_ratios`].
    pub likelihood_ratio: Vec<f64>,
    /// `[i * k + j]`: classes i and j overlap, and records labelled one that look like the other
    /// are not label issues (see [`likelihood_ratios`]).
    pub overlapping: Vec<bool>,
    /// Records of overlapping pairs that the rule would otherwise have called label issues.
    pub set_aside: usize,
    /// Records left out of the joint because their vector is all zero ([`carries_label_evidence`]).
    pub zero_vectors: usize,
}

/// Whether a record's vector can speak for or against its label: not all zero. A ReLU layer
/// maps the inputs it discards to the zero vector, whatever their class, so the surrogate gives
/// every such record the same probabilities: the label mix of the pile. Confident learning then
/// calls the pile's minority labels issues of its majority class, whose threshold the pile itself
/// pulls down. Seen on a generated ReLU layer of 1M records (10 classes): one class all zero
/// vectors (threshold 0.49), 12-18% of four other classes zero too, 52 469 "label issues", every
/// one a zero vector of a correctly labelled record. cleanlab does the same.
pub fn carries_label_evidence(vector: &[f32]) -> bool {
    crate::stats::is_live(vector)
}

/// Class `j`'s threshold is the mean predicted probability of `j` among records labelled `j`; a
/// record counts toward the confident joint at (given label, the most probable class among those
/// whose probability reaches its threshold). Off-diagonal members are label issues (cleanlab's
/// `filter_by="confident_learning"`), except between classes that overlap (both likelihood
/// ratios above `max_overlap`: see [`likelihood_ratios`]). Records where `evidence` is false
/// (all-zero vectors) count toward the thresholds, as in cleanlab, but are never placed in the
/// joint, so they are never label issues and do not inflate a pair's estimated noise.
pub fn confident_learning(
    probs: &[f32],
    labels: &[u32],
    k: usize,
    max_overlap: f64,
    evidence: &[bool],
) -> ConfidentLearning {
    let n = labels.len();
    let mut sums = vec![0f64; k];
    let mut counts = vec![0usize; k];
    for p in 0..n {
        let y = labels[p] as usize;
        sums[y] += probs[p * k + y] as f64;
        counts[y] += 1;
    }
    let thresholds: Vec<f64> = (0..k).map(|j| sums[j] / counts[j].max(1) as f64).collect();
    let mut joint = vec![vec![0u64; k]; k];
    let confident: Vec<Option<usize>> = (0..n)
        .map(|p| confident_class(&probs[p * k..(p + 1) * k], &thresholds).filter(|_| evidence[p]))
        .collect();
    for (p, j) in confident.iter().enumerate() {
        if let Some(j) = *j {
            joint[labels[p] as usize][j] += 1;
        }
    }
    let likelihood_ratio = likelihood_ratios(probs, &counts, &confident);
    // Both ratios high, and the model confidently mistakes each class for the other at least
    // once: with many classes the surrogate's probability floor alone lifts the ratios of
    // unrelated pairs (1 000 classes: 118 000 pairs above 0.2 with no disagreement at all, and
    // random flips set aside, recall 0.76 -> 0.51).
    let overlapping: Vec<bool> = (0..k * k)
        .map(|ij| {
            let (i, j) = (ij / k, ij % k);
            i != j
                && likelihood_ratio[i * k + j] > max_overlap
                && likelihood_ratio[j * k + i] > max_overlap
                && joint[i][j] > 0
                && joint[j][i] > 0
        })
        .collect();
    let mut issue = vec![false; n];
    let mut suggested: Vec<u32> = labels.to_vec();
    let mut set_aside = 0;
    for (p, j) in confident.iter().enumerate() {
        let y = labels[p] as usize;
        match *j {
            Some(j) if j != y && overlapping[y * k + j] => set_aside += 1,
            Some(j) if j != y => {
                issue[p] = true;
                suggested[p] = j as u32;
            }
            _ => {}
        }
    }
    let count = issue.iter().filter(|&&i| i).count();
    ConfidentLearning {
        thresholds,
        joint,
        issue,
        suggested,
        count,
        prune_margins: vec![f32::INFINITY; k * k],
        likelihood_ratio,
        overlapping,
        set_aside,
        zero_vectors: evidence.iter().filter(|&&e| !e).count(),
    }
}

/// `[i * k + j]`: the mean out-of-fold p(i) among records the model is confident are j, over
/// label i's share of all records. It says how much rarer label i is where the model is sure of
/// j than in the data as a whole.
///
/// Why: confident learning cannot tell a wrong label from a right one that the features do not
/// determine (classes that overlap, as in many tabular sets), and flags both; cleanlab does the
/// same. The ratio tells them apart at the level of a pair of classes. Labels flipped at random
/// at rate r give about r in both directions (the surrogate learns them as a floor: 0.004-0.12
/// measured at 5% flips on generated Gaussian and ReLU sets); a targeted flip from j to i raises
/// one direction only; overlapping classes give a large ratio both ways (0.28-5.7 measured on
/// generated heavy-tailed tabular sets of 3-10 classes).
/// `label_count[c]` is the number of records labelled c; `confident` each record's confident class.
pub fn likelihood_ratios(probs: &[f32], label_count: &[usize], confident: &[Option<usize>]) -> Vec<f64> {
    let (n, k) = (confident.len(), label_count.len());
    let mut confident_count = vec![0usize; k];
    let mut probability_sum = vec![0f64; k * k]; // [i * k + j]: sum of p(i) over confident-j records
    for (p, j) in confident.iter().enumerate() {
        if let Some(j) = *j {
            confident_count[j] += 1;
            for i in 0..k {
                probability_sum[i * k + j] += probs[p * k + i] as f64;
            }
        }
    }
    (0..k * k)
        .map(|ij| {
            let (i, j) = (ij / k, ij % k);
            if confident_count[j] == 0 || label_count[i] == 0 {
                return 0.0;
            }
            probability_sum[ij] / confident_count[j] as f64 / (label_count[i] as f64 / n as f64)
        })
        .collect()
}

/// The most probable class among those whose probability reaches its threshold.
fn confident_class(row: &[f32], thresholds: &[f64]) -> Option<usize> {
    (0..row.len())
        .filter(|&j| row[j] as f64 >= thresholds[j])
        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
}

/// Applies [`LabelIssueRule::PruneByNoiseRate`] on top of the confident joint in `cl`; records
/// without `evidence` are neither counted nor ranked.
pub fn prune_by_noise_rate(cl: &mut ConfidentLearning, probs: &[f32], labels: &[u32], k: usize, evidence: &[bool]) {
    let n = labels.len();
    let mut by_label: Vec<Vec<usize>> = vec![Vec::new(); k];
    (0..n)
        .filter(|&p| evidence[p])
        .for_each(|p| by_label[labels[p] as usize].push(p));
    let mut issue = vec![false; n];
    let mut suggested: Vec<u32> = labels.to_vec();
    let mut best_margin = vec![0f32; n];
    let mut aside = vec![false; n];
    for i in 0..k {
        let row_total: u64 = cl.joint[i].iter().sum();
        if row_total == 0 {
            continue;
        }
        for j in (0..k).filter(|&j| j != i) {
            let estimate = cl.joint[i][j] as f64 / row_total as f64 * by_label[i].len() as f64;
            let count = estimate.round() as usize;
            if count == 0 {
                continue;
            }
            let margin = |p: usize| probs[p * k + j] - probs[p * k + i];
            let mut ranked: Vec<usize> = by_label[i].iter().copied().filter(|&p| margin(p) > 0.0).collect();
            ranked.sort_by(|&a, &b| margin(b).total_cmp(&margin(a)).then(a.cmp(&b)));
            ranked.truncate(count);
            if cl.overlapping[i * k + j] {
                ranked.iter().for_each(|&p| aside[p] = true);
                continue;
            }
            if let Some(&last) = ranked.last() {
                cl.prune_margins[i * k + j] = margin(last);
            }
            for &p in &ranked {
                if !issue[p] || margin(p) > best_margin[p] {
                    issue[p] = true;
                    suggested[p] = j as u32;
                    best_margin[p] = margin(p);
                }
            }
        }
    }
    cl.count = issue.iter().filter(|&&i| i).count();
    cl.set_aside = (0..n).filter(|&p| aside[p] && !issue[p]).count();
    cl.issue = issue;
    cl.suggested = suggested;
}

/// A fitted label-issue rule, as an incremental scan applies it to records the fit never saw.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelRule {
    pub rule: LabelIssueRule,
    pub thresholds: Vec<f64>,
    #[serde(with = "crate::codec::f32s")]
    pub prune_margins: Vec<f32>,
    /// `[i * k + j]`: pairs of overlapping classes, never label issues of each other (empty in
    /// a reference written before 0.2.10: none).
    #[serde(default)]
    pub overlapping: Vec<bool>,
}

impl LabelRule {
    /// The class a record labelled `label` with probabilities `row` confidently belongs to
    /// instead, if it is a label issue: for prune-by-noise-rate, a margin at least the smallest
    /// one the full scan pruned for that pair of classes (it would have ranked among them).
    pub fn judge(&self, row: &[f32], label: usize) -> Option<u32> {
        let k = row.len();
        let overlapping = |j: usize| self.overlapping.get(label * k + j).copied().unwrap_or(false);
        match self.rule {
            LabelIssueRule::ConfidentJoint => confident_class(row, &self.thresholds)
                .filter(|&j| j != label && !overlapping(j))
                .map(|j| j as u32),
            LabelIssueRule::PruneByNoiseRate => (0..k)
                .filter(|&j| j != label)
                .map(|j| (j, row[j] - row[label]))
                .filter(|&(j, m)| m > 0.0 && m >= self.prune_margins[label * k + j])
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(j, _)| j as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confident_learning_marks_a_confidently_other_record() {
        // Two classes; record 2 is labelled 0 but the model is sure it is class 1.
        let probs: Vec<f32> = vec![0.9, 0.1, 0.8, 0.2, 0.05, 0.95, 0.85, 0.15, 0.1, 0.9, 0.2, 0.8];
        let labels = [0, 0, 0, 0, 1, 1];
        let cl = confident_learning(&probs, &labels, 2, f64::INFINITY, &vec![true; labels.len()]);
        assert!((cl.thresholds[0] - 0.65).abs() < 1e-6 && (cl.thresholds[1] - 0.85).abs() < 1e-6);
        assert_eq!(cl.issue, [false, false, true, false, false, false]);
        assert_eq!(cl.suggested[2], 1);
        assert_eq!(cl.joint, [[3, 1], [0, 1]]);
    }

    #[test]
    fn disagreements_between_overlapping_classes_are_set_aside_and_flips_elsewhere_kept() {
        // Classes 0 and 1 overlap: a fifth of each looks like the other (p = 0.7 of the other
        // class). Class 2 is apart; three records labelled 0 sit in it (p(2) = 0.97): flips.
        let mut probs: Vec<f32> = Vec::new();
        let mut labels: Vec<u32> = Vec::new();
        for (label, own, other) in [(0u32, 0usize, 1usize), (1, 1, 0)] {
            for m in 0..50 {
                let mut row = [0.01f32; 3];
                (row[own], row[other]) = if m < 10 { (0.29, 0.7) } else { (0.7, 0.29) };
                probs.extend(row);
                labels.push(label);
            }
        }
        for m in 0..53 {
            probs.extend([0.015, 0.015, 0.97]);
            labels.push(if m < 3 { 0 } else { 2 });
        }
        let cl = confident_learning(&probs, &labels, 3, 0.2, &vec![true; labels.len()]);
        assert!(
            cl.likelihood_ratio[1] > 0.2 && cl.likelihood_ratio[3] > 0.2,
            "{:?}",
            cl.likelihood_ratio
        );
        assert!(cl.likelihood_ratio[2] < 0.2, "{:?}", cl.likelihood_ratio);
        assert_eq!(
            cl.overlapping,
            [false, true, false, true, false, false, false, false, false]
        );
        let issues: Vec<usize> = (0..labels.len()).filter(|&p| cl.issue[p]).collect();
        assert_eq!(issues, [100, 101, 102], "only the flips into class 2");
        assert_eq!(cl.set_aside, 20);
        // cleanlab's rule (no overlap test) calls the 20 look-alikes label issues too.
        assert_eq!(
            confident_learning(&probs, &labels, 3, f64::INFINITY, &vec![true; labels.len()]).count,
            23
        );
    }

    #[test]
    fn the_probability_floor_of_many_classes_does_not_make_them_overlap() {
        // 30 classes: the model spreads 0.3 over the 29 others, so every unrelated pair's
        // likelihood ratios are about 0.31 both ways. Three records labelled 0 look like class 5
        // (p = 0.9), and nothing labelled 5 looks like 0: flips, not overlap.
        let k = 30;
        let row = |own: usize, p: f32| -> Vec<f32> {
            (0..k)
                .map(|c| if c == own { p } else { (1.0 - p) / (k - 1) as f32 })
                .collect()
        };
        let (mut probs, mut labels) = (Vec::new(), Vec::new());
        for class in 0..k {
            for m in 0..20 {
                let looks_like = if class == 0 && m < 3 { 5 } else { class };
                probs.extend(row(looks_like, if looks_like == class { 0.7 } else { 0.9 }));
                labels.push(class as u32);
            }
        }
        let cl = confident_learning(&probs, &labels, k, 0.2, &vec![true; labels.len()]);
        assert!(
            cl.likelihood_ratio[5] > 0.2 && cl.likelihood_ratio[5 * k] > 0.2,
            "ratios above 0.2"
        );
        assert!(cl.overlapping.iter().all(|&o| !o), "no pair overlaps");
        let issues: Vec<usize> = (0..labels.len()).filter(|&p| cl.issue[p]).collect();
        assert_eq!(issues, [0, 1, 2]);
        assert_eq!(cl.set_aside, 0);
    }

    #[test]
    fn all_zero_vectors_are_never_label_issues_and_a_real_flip_still_is() {
        // A layer zeroes all of class 2 and a third of class 0: those 30 records share one
        // probability vector, the pile's label mix (2 of 3 labelled 2), so class 2's threshold is
        // 0.6 and cleanlab's rule calls the pile's ten class-0 records issues of class 2. Record
        // 60 is a live class-2 record labelled 0: a flip.
        let pile = [0.35f32, 0.05, 0.6];
        let (mut probs, mut labels, mut evidence) = (Vec::new(), Vec::new(), Vec::new());
        for p in 0..61 {
            let (label, row, live) = match p {
                0..10 => (0u32, pile, false),
                10..30 => (0, [0.9, 0.05, 0.05], true),
                30..40 => (1, [0.05, 0.9, 0.05], true),
                40..60 => (2, pile, false),
                _ => (0, [0.05, 0.05, 0.9], true),
            };
            probs.extend(row);
            labels.push(label);
            evidence.push(live);
        }
        let everyone = vec![true; labels.len()];
        assert_eq!(confident_learning(&probs, &labels, 3, 0.2, &everyone).count, 11);
        for rule in [LabelIssueRule::ConfidentJoint, LabelIssueRule::PruneByNoiseRate] {
            let mut cl = confident_learning(&probs, &labels, 3, 0.2, &evidence);
            if rule == LabelIssueRule::PruneByNoiseRate {
                prune_by_noise_rate(&mut cl, &probs, &labels, 3, &evidence);
            }
            let issues: Vec<usize> = (0..labels.len()).filter(|&p| cl.issue[p]).collect();
            assert_eq!(issues, [60], "{rule:?}");
            assert_eq!((cl.suggested[60], cl.zero_vectors), (2, 30));
        }
        assert!(carries_label_evidence(&[0.0, 0.1]) && !carries_label_evidence(&[0.0, -0.0]));
    }

    #[test]
    fn prune_by_noise_rate_takes_the_estimated_count_by_margin() {
        // Class 0 has 4 records; the joint puts 1 of its 3 confident records in class 1, so
        // 4 * 1/3 -> 1 record is pruned: the one with the largest p1 - p0 (record 3, not 2).
        let probs: Vec<f32> = vec![0.9, 0.1, 0.95, 0.05, 0.45, 0.55, 0.12, 0.88, 0.1, 0.9, 0.2, 0.8];
        let labels = [0, 0, 0, 0, 1, 1];
        let mut cl = confident_learning(&probs, &labels, 2, f64::INFINITY, &vec![true; labels.len()]);
        assert_eq!(cl.joint[0], [2, 1]);
        prune_by_noise_rate(&mut cl, &probs, &labels, 2, &[true; 6]);
        assert_eq!(cl.issue, [false, false, false, true, false, false]);
        assert_eq!(cl.count, 1);
        // The kept rule judges new records as the ranking would have: a new record labelled 0
        // with a margin above record 3's is an issue, one with record 2's margin is not.
        let rule = LabelRule {
            rule: LabelIssueRule::PruneByNoiseRate,
            thresholds: cl.thresholds.clone(),
            prune_margins: cl.prune_margins.clone(),
            overlapping: cl.overlapping.clone(),
        };
        assert_eq!(rule.judge(&[0.05, 0.95], 0), Some(1));
        assert_eq!(rule.judge(&[0.45, 0.55], 0), None);
        assert_eq!(rule.judge(&[0.05, 0.95], 1), None, "no pruning from class 1 to 0");
    }
}
