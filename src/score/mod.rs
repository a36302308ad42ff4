//! One calibrated decision from every detector's scores: which classes look attacked, which records
//! in them to quarantine, and a `suspicion` in [0, 1] with the reasons.
//!
//! The rule, in two steps (after SCAn, Tang et al. 2021, which also picks attacked classes as
//! outliers among classes):
//! 1. A class is attacked when one of its class signals (SPECTRE's whitened top eigenvalue,
//!    activation clustering's split silhouette) both exceeds what a clean class of its size reaches
//!    and is an outlier among the classes: `anomaly-threshold` robust z-scores (median/MAD) above
//!    their median. Classes that look like the rest get nothing quarantined; there is no "flag a
//!    fixed share of every class". A signal that marks more than a quarter of the classes marks
//!    none: outliers are a minority, and many high classes are the data's own structure.
//!    With fewer than 3 classes there is no comparison: a signal over its clean bound may be
//!    the data's own shape (heavy-tailed features, a class made of natural sub-populations), so
//!    the class is attacked only when the records it would quarantine hold a minority separated
//!    from the rest of the class (`detect::untangle`), and only that minority is quarantined.
//!    On sparse (ReLU) activations the class's SPECTRE tail also speaks: a group atop it whose
//!    nearest records outside the tail are other classes' (`other_inputs`), or a tail whose
//!    records look like other classes' inputs (neighbours of other labels, a label the
//!    surrogate doubts), makes a class attacked whose signals are not outliers, and a tail that
//!    does not undoes a verdict SPECTRE's signal alone gave. Where none of that speaks, a few
//!    records atop the SPECTRE ranking (then self-influence's, in datasets of up to 13 classes)
//!    that look like other classes' inputs and share what their source classes lack (a
//!    trigger's fingerprint, `fingerprint`) make it attacked. Last, short records pointing
//!    elsewhere than the rest of their class (a trigger mapped to few units, `directions`) make
//!    it attacked, and in a class judged attacked otherwise add the records pointing elsewhere
//!    to its quarantine.
//! 2. In an attacked class, recall matters more than a few clean records: a record is quarantined
//!    when its SPECTRE score is in the tail (more than `record-threshold` sigmas, sigma estimated
//!    from the class's median, which the poison minority cannot move much), or when it sits in
//!    the small cluster of a split that is itself a real one; those flags are then regrown to the
//!    separated population they belong to, if any (`detect::untangle`).
//!
//! `suspicion` = min(evidence that the class is attacked, evidence that the record stands out), each
//! a logistic of its margin over its threshold; it is >= 0.5 exactly for quarantined records.
//!
//! Layout: this file holds the rule's walk through each class ([`decide`]); `signals` compares
//! the class signals across classes (step 1), `records` gathers each record's evidence (step 2),
//! `tails`, `other_inputs`, `fingerprint` and `directions` judge sparse classes by their tails
//! and short records, `regrow` turns flags into the population they belong to.
//!
//! Imports: `detect` (score types, `untangle`), `stats`.

use serde::{Deserialize, Serialize};

use crate::detect::{BasisFit, ClassScores, ParamError};

mod directions;
mod fingerprint;
mod other_inputs;
mod records;
mod regrow;
mod signals;
mod tails;

use records::{RecordEvidence, record_evidence};
use regrow::{grow_flagged, mark_population, separated_minority, whole_groups_only};
use signals::{class_anomaly_indices, common_signals, compared_signals, judged_by_a_signal, seconded, signal_margins};
use tails::{
    TailQuarantine, flag_only, flag_pointing_elsewhere, flag_sharing, flags_cover_the_signal,
    separated_group_at_the_dense_core, separated_group_in_a_class_that_overlaps_others, tail_among_its_own_class,
    tails_of_other_inputs,
};

/// `[decision]` in a pipeline file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DecisionParams {
    /// Robust z-score (in MADs above the median class) a class signal needs to mark a class attacked.
    pub anomaly_threshold: f64,
    /// In an attacked class, SPECTRE scores beyond this many sigmas are quarantined.
    pub record_threshold: f64,
    /// Never quarantine more than this share of all rows (the most suspicious are kept in). Default 0.2.
    pub max_quarantine_fraction: f64,
    /// The poison share you expect, if you know it; caps the whole quarantine at twice this share
    /// of all rows plus 1% of them (the most suspicious kept in). Not needed.
    pub expected_poison_rate: Option<f64>,
}

impl Default for DecisionParams {
    fn default() -> Self {
        DecisionParams {
            anomaly_threshold: 3.5,
            record_threshold: 2.0,
            max_quarantine_fraction: 0.2,
            expected_poison_rate: None,
        }
    }
}

impl DecisionParams {
    pub fn check(&self) -> Result<(), ParamError> {
        if self.anomaly_threshold.is_nan() || self.anomaly_threshold <= 0.0 {
            return Err(ParamError::new(
                "anomaly-threshold",
                "must be positive",
                self.anomaly_threshold,
            ));
        }
        if self.record_threshold.is_nan() || self.record_threshold <= 0.0 {
            return Err(ParamError::new(
                "record-threshold",
                "must be positive",
                self.record_threshold,
            ));
        }
        if !(0.0..=1.0).contains(&self.max_quarantine_fraction) {
            return Err(ParamError::new(
                "max-quarantine-fraction",
                "must be in [0, 1]",
                self.max_quarantine_fraction,
            ));
        }
        if let Some(r) = self
            .expected_poison_rate
            .filter(|r| !(0.0..1.0).contains(r) || *r == 0.0)
        {
            return Err(ParamError::new("expected-poison-rate", "must be in (0, 1)", r));
        }
        Ok(())
    }
}

/// What the detectors said about one analysed class; `scores[d]` is detector `d`'s output.
pub struct ClassEvidence<'a> {
    pub class: usize,
    /// Global rows of the class's records, in the order of every `scores[d].scores`.
    pub rows: &'a [u32],
    /// Borrowed from the cluster stage's result (owned in tests).
    pub scores: std::borrow::Cow<'a, [ClassScores]>,
    /// The class's vectors and basis, for testing whether a suspect group is a population of its
    /// own where classes cannot be compared; `None` leaves such a class unjudged.
    pub geometry: Option<ClassGeometry<'a>>,
}

/// One class's vectors (`x`, `dim` values per record, in the order of its scores) and basis.
#[derive(Clone, Copy)]
pub struct ClassGeometry<'a> {
    pub basis: &'a BasisFit,
    pub x: &'a [f32],
    pub dim: usize,
}

/// The verdict on one class, for the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassVerdict {
    pub attacked: bool,
    /// Plain-language reason for the verdict.
    pub why: String,
    /// Per detector with a class signal: (detector, signal, clean bound, anomaly index).
    pub signals: Vec<SignalVerdict>,
    pub flagged: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignalVerdict {
    pub detector: String,
    pub value: f64,
    pub clean_bound: f64,
    /// The lower bound the value was judged by, where the detector found a group of its own
    /// (`detect::ClassSignal::bound_with_group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_with_group: Option<f64>,
    pub anomaly_index: f64,
}

impl SignalVerdict {
    /// Whether the value is over the bound it was judged by (as `ClassSignal::over_bound`).
    pub fn over_bound(&self) -> bool {
        crate::detect::over_bound(self.value, self.clean_bound, self.bound_with_group)
    }
}

/// Per-record decision, indexed by global row.
#[derive(Serialize, Deserialize)]
pub struct Decision {
    #[serde(with = "crate::codec::f64s")]
    pub suspicion: Vec<f64>,
    pub quarantined: Vec<bool>,
    pub reasons: Vec<String>,
    /// Indexed by class; `None` for classes that were not analysed.
    pub verdicts: Vec<Option<ClassVerdict>>,
}

impl Decision {
    /// Keeps `rows` (global row, why) in clean whatever the detectors say: records a reviewer
    /// released that have not changed since. `class_of[g]` is row `g`'s class.
    pub fn keep_in_clean(&mut self, rows: &[(u32, String)], class_of: &[u32]) {
        for (g, why) in rows {
            let g = *g as usize;
            if !self.quarantined[g] {
                continue;
            }
            self.quarantined[g] = false;
            if let Some(v) = self.verdicts[class_of[g] as usize].as_mut() {
                v.flagged = v.flagged.saturating_sub(1);
            }
            self.suspicion[g] = self.suspicion[g].min(0.4999);
            self.reasons[g] = format!("kept in clean: {why}; flagged again: {}", self.reasons[g]);
        }
    }
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Decides over all analysed classes. `names[d]` is detector `d`'s name; `class_names` label reasons.
pub fn decide(
    evidence: &[ClassEvidence<'_>],
    names: &[&str],
    class_names: &[String],
    total_rows: usize,
    params: &DecisionParams,
) -> Decision {
    let mut out = Decision {
        suspicion: vec![0.0; total_rows],
        quarantined: vec![false; total_rows],
        reasons: vec![String::new(); total_rows],
        verdicts: vec![None; class_names.len()],
    };
    // Step 1: class signals compared across classes.
    let anomaly = class_anomaly_indices(evidence, names.len());
    let compared = compared_signals(evidence, names.len());
    let margins = signal_margins(evidence, &anomaly, params);
    let common = common_signals(&margins, &compared);
    let records: Vec<RecordEvidence> = evidence
        .iter()
        .map(|e| record_evidence(e, names, class_names, params))
        .collect();
    let judged = judged_by_a_signal(&margins, &common);
    let (tails, elsewhere_heard) = tails_of_other_inputs(evidence, names, &records, &judged);
    let mut candidates: Vec<(usize, f64)> = Vec::new(); // (global row, suspicion) of flagged records
    for (((e, anomaly), margins), (mut record, tail)) in evidence
        .iter()
        .zip(&anomaly)
        .zip(&margins)
        .zip(records.into_iter().zip(tails))
    {
        let SignalEvidence {
            signals,
            mut class_margin,
            mut attacked_by,
            attacking,
            set_aside,
        } = weigh_signals(e, names, anomaly, margins, &compared, &common, params);
        let attacked_by_comparison = !attacking.is_empty();
        // Step 2: record evidence within the class.
        let mut unproven = None;
        // Its tail, not a class signal, says so: compared with the classes by `tails_of_other_inputs`.
        let mut attacked_by_tail = false;
        // Its records pointing elsewhere flagged already (see below).
        let mut pointed_elsewhere = false;
        if class_margin <= 0.0
            && let Some(verdict) = tail
        {
            attacked_by.push(verdict.why);
            class_margin = verdict.margin.min(params.anomaly_threshold);
            attacked_by_tail = true;
            match verdict.quarantine {
                TailQuarantine::Flags => {}
                TailQuarantine::Group(group) => {
                    flag_only(&mut record, &group);
                    if group.learned() {
                        grow_flagged(e, &mut record);
                    }
                    flag_sharing(&mut record, &group);
                }
                TailQuarantine::PointingElsewhere(elsewhere) => {
                    flag_pointing_elsewhere(&mut record, &elsewhere, true);
                    pointed_elsewhere = true;
                }
            }
        }
        if class_margin > 0.0 && !attacked_by_comparison && !attacked_by_tail {
            match separated_minority(e, &mut record) {
                Some(why) => attacked_by.push(why),
                None => {
                    let why = "the records it would quarantine are no population of their own (not separated \
                               from the rest of the class)";
                    unproven = Some(overturn(&mut attacked_by, &mut class_margin, params, why));
                }
            }
        }
        if class_margin > 0.0 && attacked_by_comparison {
            if let Some(members) = whole_groups_only(e, &attacking) {
                mark_population(&mut record, &members, true);
            }
            // A group that is what let its detector judge by a lower bound is a mode found as
            // such along its own line; regrown, it would run on into the class's spread (a clean
            // class's lean group of 25 on generated ReLU layers grew to 115).
            if !judged_by_their_groups(e, &attacking) {
                grow_flagged(e, &mut record);
            }
        }
        if class_margin > 0.0
            && attacked_by.len() == 1
            && !seconded(anomaly, &attacking, &compared, &common, params)
            && let Some(why) = tail_among_its_own_class(e, names, &attacking, &record)
        {
            unproven = Some(overturn(&mut attacked_by, &mut class_margin, params, &why));
        }
        // Not asked to be seconded: the clump, or the class's overlap with others, is what the
        // group is, whatever else ranks the class high (with 100 classes, a signal's largest
        // anomaly index passes 3.5 by chance).
        if class_margin > 0.0
            && attacked_by.len() == 1
            && let Some(why) = separated_group_at_the_dense_core(e, names, &attacking)
                .or_else(|| separated_group_in_a_class_that_overlaps_others(e, names, &attacking))
        {
            unproven = Some(overturn(&mut attacked_by, &mut class_margin, params, &why));
        }
        if class_margin > 0.0
            && let Some(share) = flags_cover_the_signal(e, &record)
        {
            let why = format!(
                "its record flags would cover {:.0}% of its non-zero vectors: they split the class's \
                 all-zero vectors from the rest, which is its shape",
                share * 100.0
            );
            unproven = Some(overturn(&mut attacked_by, &mut class_margin, params, &why));
        }
        // Whatever judged the class (by comparison or its tail: with fewer than 3 classes only
        // the separated minority is quarantined), a trigger mapped to short records is the
        // records pointing elsewhere: a fingerprint's clique and those sharing it held 54 of a
        // faint backdoor's 150 where the records pointing elsewhere were 115 (fresh seed 2009).
        // Not where the rule was silenced (too many classes: the data), nor where the records
        // would cover the class's signal.
        if class_margin > 0.0
            && (attacked_by_comparison || attacked_by_tail)
            && elsewhere_heard
            && !pointed_elsewhere
            && let Some(elsewhere) = tails::pointing_elsewhere_in(e)
        {
            let before = record.clone();
            flag_pointing_elsewhere(&mut record, &elsewhere, false);
            if flags_cover_the_signal(e, &record).is_some() {
                record = before;
            } else {
                attacked_by.push(elsewhere.why());
            }
        }
        let attacked = class_margin > 0.0;
        let class_evidence = logistic(class_margin.max(-20.0) * 1.5);
        let n = e.rows.len();
        let standalone: Vec<f64> = (0..n)
            .map(|i| {
                e.scores
                    .iter()
                    .filter_map(|s| s.record_level.as_ref())
                    .map(|v| v[i].clamp(0.0, 1.0) as f64)
                    .fold(0.0, f64::max)
            })
            .collect();
        for i in 0..n {
            let g = e.rows[i] as usize;
            let s = class_evidence.min(record.evidence[i]).max(0.49 * standalone[i]);
            if attacked && record.flag[i] {
                candidates.push((g, s.max(0.5)));
                out.reasons[g] = format!(
                    "class `{}` attacked: {}; record: {}",
                    class_names[e.class],
                    attacked_by.join("; "),
                    record.why[i]
                );
            } else {
                out.suspicion[g] = s.min(0.4999);
            }
        }
        let why = if attacked {
            attacked_by.join("; ")
        } else if let Some(unproven) = unproven {
            unproven
        } else if !set_aside.is_empty() {
            set_aside.join("; ")
        } else if signals.iter().any(SignalVerdict::over_bound) {
            "signals above the bound they are judged by, but not outliers among the classes".into()
        } else {
            "every class signal within what a clean class reaches".into()
        };
        out.verdicts[e.class] = Some(ClassVerdict {
            attacked,
            why,
            signals,
            flagged: 0, // counted after the caps below
        });
    }
    add_detectors_own_flags(evidence, total_rows, &mut candidates, &mut out.reasons);
    apply_caps(candidates, total_rows, params, &mut out);
    for e in evidence {
        if let Some(v) = out.verdicts[e.class].as_mut() {
            v.flagged = e.rows.iter().filter(|&&g| out.quarantined[g as usize]).count();
        }
    }
    out
}

/// Adds to `candidates` ((global row, suspicion) of flagged records) the records a detector's
/// own method marks (label issues, near-copy groups), whatever the class verdict: these methods
/// are calibrated by their own construction (see each detector). Their reasons join `reasons`.
fn add_detectors_own_flags(
    evidence: &[ClassEvidence<'_>],
    total_rows: usize,
    candidates: &mut Vec<(usize, f64)>,
    reasons: &mut [String],
) {
    let mut candidate_of: Vec<Option<usize>> = vec![None; total_rows];
    candidates
        .iter()
        .enumerate()
        .for_each(|(i, &(g, _))| candidate_of[g] = Some(i));
    for e in evidence {
        for s in e.scores.iter() {
            for f in &s.flagged {
                let g = e.rows[f.index] as usize;
                let suspicion = 0.5 + 0.49 * f.strength.clamp(0.0, 1.0);
                match candidate_of[g] {
                    Some(i) => {
                        candidates[i].1 = candidates[i].1.max(suspicion);
                        reasons[g] = format!("{}; {}", reasons[g], f.why);
                    }
                    None => {
                        candidate_of[g] = Some(candidates.len());
                        candidates.push((g, suspicion));
                        reasons[g] = f.why.clone();
                    }
                }
            }
        }
    }
}

/// Quarantines the `candidates`, the most suspicious first, up to the caps
/// (`max_quarantine_fraction`, and twice the `expected_poison_rate` + 1% where given); the rest go
/// back to clean, and their reasons say so.
fn apply_caps(mut candidates: Vec<(usize, f64)>, total_rows: usize, params: &DecisionParams, out: &mut Decision) {
    let mut cap = (params.max_quarantine_fraction * total_rows as f64).floor() as usize;
    if let Some(rate) = params.expected_poison_rate {
        cap = cap.min(((2.0 * rate + 0.01) * total_rows as f64).ceil() as usize);
    }
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (rank, &(g, s)) in candidates.iter().enumerate() {
        if rank < cap {
            out.quarantined[g] = true;
            out.suspicion[g] = s;
        } else {
            out.suspicion[g] = 0.4999;
            out.reasons[g] = format!("{} (kept: over the quarantine cap of {cap} rows)", out.reasons[g]);
        }
    }
}

/// What a class's signals say, compared across the classes (step 1 of [`decide`]).
struct SignalEvidence {
    signals: Vec<SignalVerdict>,
    /// The largest margin of a signal over its threshold: positive when one judges the class
    /// attacked; -max(threshold, 1) when only set-aside signals passed; -inf without signals.
    class_margin: f64,
    /// Why the class is attacked, one entry per signal that says so.
    attacked_by: Vec<String>,
    /// Detectors whose class signal judges the class attacked by comparison with the other
    /// classes (not for want of them).
    attacking: Vec<usize>,
    /// Signals over their threshold but set aside: too many classes are.
    set_aside: Vec<String>,
}

/// Step 1 of [`decide`] for class `e`: its signals (`anomaly`, `margins`: per detector) against
/// the classes' (`compared`: the signal could be compared; `common`: it marks too many classes).
fn weigh_signals(
    e: &ClassEvidence<'_>,
    names: &[&str],
    anomaly: &[Option<f64>],
    margins: &[Option<f64>],
    compared: &[bool],
    common: &[bool],
    params: &DecisionParams,
) -> SignalEvidence {
    let mut weighed = SignalEvidence {
        signals: Vec::new(),
        class_margin: f64::NEG_INFINITY,
        attacked_by: Vec::new(),
        attacking: Vec::new(),
        set_aside: Vec::new(),
    };
    for (d, a) in anomaly.iter().enumerate() {
        let (Some(sig), Some(a), Some(margin)) = (e.scores[d].signal, a, margins[d]) else {
            continue;
        };
        weighed.signals.push(SignalVerdict {
            detector: names[d].into(),
            value: sig.value,
            clean_bound: sig.clean_bound,
            bound_with_group: sig.bound_with_group,
            anomaly_index: *a,
        });
        if margin > 0.0 && common[d] {
            weighed.class_margin = weighed.class_margin.max(-params.anomaly_threshold.max(1.0));
            weighed.set_aside.push(format!(
                "{} {:.3} is {:.1} MADs above the classes' median, but too many classes are (the data's own structure, not an outlier)",
                names[d], sig.value, a
            ));
            continue;
        }
        weighed.class_margin = weighed.class_margin.max(margin);
        if margin > 0.0 && compared[d] {
            weighed.attacking.push(d);
            weighed.attacked_by.push(format!(
                "{} {:.3} is {:.1} MADs above the classes' median ({})",
                names[d],
                sig.value,
                a,
                bound_text(&sig)
            ));
        } else if margin > 0.0 {
            weighed.attacked_by.push(format!(
                "{} {:.3} is over its {} (fewer than 3 classes to compare with)",
                names[d],
                sig.value,
                bound_text(&sig)
            ));
        }
    }
    weighed
}

/// Whether every signal `attacking` the class passed only by the lower bound its detector's
/// group allowed ([`crate::detect::ClassSignal::bound_with_group`]), not by its clean bound.
fn judged_by_their_groups(e: &ClassEvidence<'_>, attacking: &[usize]) -> bool {
    attacking.iter().all(|&d| {
        e.scores[d]
            .signal
            .is_some_and(|s| s.bound_with_group.is_some() && s.value <= s.clean_bound)
    })
}

/// The bound a class signal was judged by, for reasons: "clean bound 1.000", or with the lower
/// bound a group of the detector's own allowed, "clean bound 1.000, 0.500 with the group it holds".
fn bound_text(signal: &crate::detect::ClassSignal) -> String {
    match signal.bound_with_group {
        Some(lower) => format!(
            "clean bound {:.3}, {lower:.3} with the group it holds",
            signal.clean_bound
        ),
        None => format!("clean bound {:.3}", signal.clean_bound),
    }
}

/// The verdict "attacked" overturned: says which signals judged it so and `why` not, and moves the
/// class's margin below the threshold.
fn overturn(attacked_by: &mut Vec<String>, class_margin: &mut f64, params: &DecisionParams, why: &str) -> String {
    let text = format!("{}, but {why}", attacked_by.join("; "));
    attacked_by.clear();
    *class_margin = -params.anomaly_threshold.max(1.0);
    text
}

/// Detector `name`'s scores for the class, if it is in the pipeline.
fn detector<'e>(e: &'e ClassEvidence<'_>, names: &[&str], name: &str) -> Option<&'e ClassScores> {
    names.iter().position(|&n| n == name).map(|d| &e.scores[d])
}

/// Per record of the class: whether confident learning flags it as a label issue (none when it
/// is not in the pipeline).
fn label_issues(e: &ClassEvidence<'_>, names: &[&str]) -> Vec<bool> {
    let mut issue = vec![false; e.rows.len()];
    if let Some(confident) = detector(e, names, "confident_learning") {
        confident.flagged.iter().for_each(|f| issue[f.index] = true);
    }
    issue
}

/// Whether the class's activations are sparse (`detect::is_sparse`); `false` without its vectors.
fn is_sparse_class(e: &ClassEvidence<'_>) -> bool {
    e.geometry.is_some_and(|g| crate::detect::is_sparse(g.x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::separated_group::NAME as SEPARATED_GROUP;
    use crate::detect::{ClassSignal, Flag, Grouping, Stat};

    fn scores(values: Vec<f32>, signal: f64) -> ClassScores {
        ClassScores {
            scores: values,
            stats: vec![Stat {
                name: "whitened_top_eigenvalue".into(),
                value: signal,
            }],
            signal: Some(ClassSignal::new(signal, 1.5, 0.05)),
            grouping: None,
            record_level: None,
            flagged: Vec::new(),
            fit: None,
        }
    }

    fn classes(signals: &[f64], rows: &[Vec<u32>]) -> (Vec<ClassEvidence<'static>>, usize) {
        let rows: &'static [Vec<u32>] = Box::leak(rows.to_vec().into_boxed_slice());
        let mut total = 0;
        let ev = signals
            .iter()
            .enumerate()
            .map(|(c, &s)| {
                let r = &rows[c];
                total += r.len();
                // One far record (index 0) in every class; the rest in a tight half-normal-like band.
                let v = (0..r.len())
                    .map(|i| if i == 0 { 400.0 } else { 0.5 + (i % 10) as f32 * 0.1 })
                    .collect();
                ClassEvidence {
                    class: c,
                    rows: r,
                    scores: vec![scores(v, s)].into(),
                    geometry: None,
                }
            })
            .collect();
        (ev, total)
    }

    fn rows(n_classes: usize, per: u32) -> Vec<Vec<u32>> {
        (0..n_classes as u32)
            .map(|c| (c * per..(c + 1) * per).collect())
            .collect()
    }

    /// Two classes of `n` records in 6 dimensions: class 0 Gaussian with its last `cluster`
    /// records shifted far along one axis, class 1 heavy-tailed (Student t, 3 dof) and nothing
    /// planted. Both carry a SPECTRE-like signal over its clean bound; scores are squared norms.
    fn two_classes(n: usize, cluster: usize) -> (Vec<f32>, Vec<Vec<u32>>) {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
        let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
        let mut x = Vec::new();
        for c in 0..2 {
            for i in 0..n {
                let chi2: f32 = (0..3).map(|_| normal().powi(2)).sum();
                let tail = if c == 1 { (chi2 / 3.0).sqrt().max(0.05) } else { 1.0 };
                for j in 0..6 {
                    let shift = if c == 0 && i >= n - cluster && j == 2 {
                        10.0
                    } else {
                        0.0
                    };
                    x.push(normal() / tail + shift);
                }
            }
        }
        (x, rows(2, n as u32))
    }

    /// Each of `classes` consecutive classes of `n` records fitted a 4-dimensional basis.
    fn class_fits(x: &[f32], classes: usize, n: usize, dim: usize) -> Vec<BasisFit> {
        (0..classes)
            .map(|c| BasisFit::fit(&x[c * n * dim..(c + 1) * n * dim], dim, 4))
            .collect()
    }

    #[test]
    fn with_two_classes_only_a_separated_group_makes_a_class_attacked() {
        let (n, dim) = (600, 6);
        let (x, rows) = two_classes(n, 30);
        let fits = class_fits(&x, 2, n, dim);
        let evidence: Vec<ClassEvidence<'_>> = (0..2)
            .map(|c| {
                let xc = &x[c * n * dim..(c + 1) * n * dim];
                let centred_norms = xc
                    .chunks_exact(dim)
                    .map(|r| {
                        r.iter()
                            .zip(&fits[c].mean)
                            .map(|(&v, m)| (v as f64 - m).powi(2))
                            .sum::<f64>() as f32
                    })
                    .collect();
                ClassEvidence {
                    class: c,
                    rows: &rows[c],
                    scores: vec![scores(centred_norms, 3.0)].into(),
                    geometry: Some(ClassGeometry {
                        basis: &fits[c],
                        x: xc,
                        dim,
                    }),
                }
            })
            .collect();
        let names = vec!["a".to_string(), "b".to_string()];
        let d = decide(&evidence, &["spectre"], &names, 2 * n, &DecisionParams::default());
        let verdict = |c: usize| d.verdicts[c].as_ref().unwrap();
        // Class 0: exactly its separated cluster, not the Gaussian's own tail.
        let flagged: Vec<usize> = (0..n).filter(|&g| d.quarantined[g]).collect();
        assert_eq!(flagged, (n - 30..n).collect::<Vec<_>>(), "{}", verdict(0).why);
        assert!(verdict(0).why.contains("separated group of 30"), "{}", verdict(0).why);
        // Class 1: a heavy tail over the same signal is no population: nothing quarantined.
        assert!(!verdict(1).attacked, "{}", verdict(1).why);
        assert!(
            verdict(1).why.contains("no population of their own"),
            "{}",
            verdict(1).why
        );
        assert!((n..2 * n).all(|g| !d.quarantined[g]));
        // Without the vectors the class cannot be judged.
        let blind: Vec<ClassEvidence<'_>> = evidence
            .iter()
            .map(|e| ClassEvidence {
                class: e.class,
                rows: e.rows,
                scores: e.scores.clone(),
                geometry: None,
            })
            .collect();
        let d = decide(&blind, &["spectre"], &names, 2 * n, &DecisionParams::default());
        assert!(d.quarantined.iter().all(|&q| !q));
    }

    #[test]
    fn classes_of_different_sizes_are_compared_by_their_excess_over_the_bound() {
        // Ten classes: the small ones' clean level (and bound) is far above the large ones', as
        // a robust covariance of few records gives, and they pass it by a hair; class 9 alone
        // stands out from its bound.
        let rows = rows(10, 100);
        let evidence: Vec<ClassEvidence<'_>> = (0..10)
            .map(|c| {
                let bound = if c < 3 { 1.0 } else { 0.2 };
                let excess = match c {
                    9 => 0.6,
                    0..3 => 0.02,
                    _ => -0.1 + 0.01 * (c % 4) as f64,
                };
                let mut s = scores(
                    (0..100).map(|i| if i == 0 { 400.0 } else { 1.0 }).collect(),
                    bound + excess,
                );
                s.signal.as_mut().unwrap().clean_bound = bound;
                ClassEvidence {
                    class: c,
                    rows: &rows[c],
                    scores: vec![s].into(),
                    geometry: None,
                }
            })
            .collect();
        let names: Vec<String> = (0..10).map(|c| c.to_string()).collect();
        let d = decide(&evidence, &["spectre"], &names, 1000, &DecisionParams::default());
        let attacked: Vec<usize> = (0..10).filter(|&c| d.verdicts[c].as_ref().unwrap().attacked).collect();
        assert_eq!(attacked, vec![9]);
    }

    #[test]
    fn quiet_when_every_class_looks_alike() {
        let (ev, total) = classes(&[1.3, 1.32, 1.28, 1.31, 1.29, 1.3], &rows(6, 100));
        let names: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let d = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        assert_eq!(d.quarantined.iter().filter(|&&q| q).count(), 0);
        assert!(d.suspicion.iter().all(|&s| s < 0.5));
    }

    /// Five Gaussian classes of `n` records in `dim` dimensions (seed 11), consecutive, with their
    /// rows and basis fits; class 0's last `cluster` records shifted by 9 along axis 2.
    /// Class `c`'s geometry where every class holds `n` records of `x` in turn.
    fn geometry_of_class<'a>(x: &'a [f32], fits: &'a [BasisFit], c: usize, n: usize, dim: usize) -> ClassGeometry<'a> {
        ClassGeometry {
            basis: &fits[c],
            x: &x[c * n * dim..(c + 1) * n * dim],
            dim,
        }
    }

    fn five_classes_with_a_cluster_in_class_0(
        n: usize,
        dim: usize,
        cluster: usize,
    ) -> (Vec<f32>, Vec<Vec<u32>>, Vec<BasisFit>) {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
        let x: Vec<f32> = (0..5 * n)
            .flat_map(|g| {
                let shifted = g < n && g >= n - cluster;
                (0..dim)
                    .map(|j| {
                        let v: f32 = StandardNormal.sample(&mut rng);
                        v + if shifted && j == 2 { 9.0 } else { 0.0 }
                    })
                    .collect::<Vec<f32>>()
            })
            .collect();
        let fits = class_fits(&x, 5, n, dim);
        (x, rows(5, n as u32), fits)
    }

    #[test]
    fn in_a_class_attacked_by_comparison_the_flags_grow_to_their_whole_cluster() {
        // Five Gaussian classes of 400 in 6 dims; class 0 holds a cluster of 40 shifted by 9
        // along axis 2, but its SPECTRE-like score (squared distance from the class mean) ranks
        // only every other member (the cluster's edge looks ordinary to it). The class signal makes class 0 the outlier.
        let (n, dim, cluster) = (400usize, 6usize, 40usize);
        let (x, rows, fits) = five_classes_with_a_cluster_in_class_0(n, dim, cluster);
        let evidence: Vec<ClassEvidence<'_>> = (0..5)
            .map(|c| {
                let xc = &x[c * n * dim..(c + 1) * n * dim];
                let along: Vec<f32> = xc
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(i, r)| {
                        let seen = !(c == 0 && i >= n - cluster && i % 2 == 0);
                        if seen {
                            r.iter().zip(&fits[c].mean).map(|(&v, &m)| (v - m as f32).powi(2)).sum()
                        } else {
                            dim as f32
                        }
                    })
                    .collect();
                let signal = if c == 0 { 5.0 } else { 1.0 + 0.05 * c as f64 };
                ClassEvidence {
                    class: c,
                    rows: &rows[c],
                    scores: vec![scores(along, signal)].into(),
                    geometry: Some(ClassGeometry {
                        basis: &fits[c],
                        x: xc,
                        dim,
                    }),
                }
            })
            .collect();
        let names: Vec<String> = (0..5).map(|c| c.to_string()).collect();
        let d = decide(&evidence, &["spectre"], &names, 5 * n, &DecisionParams::default());
        assert!(d.verdicts[0].as_ref().unwrap().attacked);
        let found = (n - cluster..n).filter(|&g| d.quarantined[g]).count();
        assert_eq!(found, cluster, "{found} of the cluster's {cluster} quarantined");
        assert!(
            d.reasons[n - cluster].contains("in the separated group"),
            "{}",
            d.reasons[n - cluster]
        );
        assert!((n..5 * n).all(|g| !d.quarantined[g]), "a clean class lost records");
    }

    #[test]
    fn a_group_that_let_its_detector_judge_by_a_lower_bound_is_not_regrown() {
        // Five Gaussian classes of 400 in 6 dims; class 0 holds a cluster of 40 shifted by 9
        // along axis 2, of which a detector's whole group holds every other member.
        let (n, dim, cluster) = (400usize, 6usize, 40usize);
        let (x, rows, fits) = five_classes_with_a_cluster_in_class_0(n, dim, cluster);
        let group: Vec<u8> = (0..n).map(|i| (i >= n - cluster && i % 2 == 0) as u8).collect();
        let quarantined_of_class_0 = |value: f64| -> usize {
            let evidence: Vec<ClassEvidence<'_>> = (0..5)
                .map(|c| ClassEvidence {
                    class: c,
                    rows: &rows[c],
                    scores: vec![ClassScores {
                        signal: Some(ClassSignal {
                            bound_with_group: (c == 0).then_some(0.5),
                            ..ClassSignal::new(if c == 0 { value } else { 0.1 + 0.01 * c as f64 }, 1.0, 0.05)
                        }),
                        grouping: (c == 0).then(|| Grouping {
                            cluster: group.clone(),
                            suspect: Some(1),
                            closer_to_class: None,
                            suspect_is_whole: true,
                            ..Grouping::default()
                        }),
                        ..scores(vec![0.0; n], 0.0)
                    }]
                    .into(),
                    geometry: Some(geometry_of_class(&x, &fits, c, n, dim)),
                })
                .collect();
            let names: Vec<String> = (0..5).map(|c| c.to_string()).collect();
            let d = decide(
                &evidence,
                &["distance_analysis"],
                &names,
                5 * n,
                &DecisionParams::default(),
            );
            assert!(d.verdicts[0].as_ref().unwrap().attacked);
            assert!((n..5 * n).all(|g| !d.quarantined[g]), "a clean class lost records");
            (0..n).filter(|&g| d.quarantined[g]).count()
        };
        // Under the clean bound, judged by the group's: the group alone.
        assert_eq!(quarantined_of_class_0(0.7), cluster / 2);
        // Over the clean bound, the flags regrow to the whole cluster.
        assert_eq!(quarantined_of_class_0(1.5), cluster);
    }

    #[test]
    fn a_sparse_class_s_flags_regrow_along_the_centroids_and_a_dense_one_s_by_fisher() {
        use crate::detect::untangle::tests::{relu_class, top_on};
        // untangle's ReLU-like class (2 000 records, a quarter of the values zero) with 100
        // poison; the flags: the 10 poison records highest on the unit they drive.
        let (x, truth) = relu_class(true);
        let (n, dim) = (truth.len(), 16);
        let seeds = top_on(&x, 2, 10, |i| truth[i]);
        let outcome = |x: &[f32]| {
            let basis = BasisFit::fit(x, dim, 10);
            let e = ClassEvidence {
                class: 0,
                rows: &[],
                scores: Vec::new().into(),
                geometry: Some(ClassGeometry { basis: &basis, x, dim }),
            };
            let mut record = RecordEvidence {
                evidence: vec![0.0; n],
                flag: seeds.iter().map(|&s| s == 1).collect(),
                why: vec![String::new(); n],
            };
            grow_flagged(&e, &mut record);
            let found = (0..n).filter(|&i| record.flag[i] && truth[i]).count();
            (found, (0..n).filter(|&i| record.flag[i] && !truth[i]).count())
        };
        let (found, clean) = outcome(&x);
        assert!(found >= 95 && clean <= 20, "sparse: {found} poison, {clean} clean");
        // Shifted off zero the class is dense and takes the Fisher path, which regrows it
        // differently (what that path finds is tested above and below).
        let dense: Vec<f32> = x.iter().map(|v| v + 0.5).collect();
        assert_ne!(outcome(&dense), (found, clean), "the dense class took the sparse path");
    }

    #[test]
    fn a_whole_group_seeds_the_fisher_regrowth_without_the_class_s_tail() {
        use crate::detect::untangle::tests::{relu_class, top_on};
        // untangle's ReLU-like class with 100 poison, shifted off zero so that it is dense and
        // takes the Fisher path (as a sparse class does where the centroid line finds no mode).
        // A detector found 60 of the poison as a whole group; the flags also hold 286 clean
        // records from all over the class, as SPECTRE's record tail does in a heavy-tailed class
        // of thousands.
        let (x, truth) = relu_class(true);
        let x: Vec<f32> = x.iter().map(|v| v + 0.5).collect();
        let (n, dim) = (truth.len(), 16);
        let group = top_on(&x, 2, 60, |i| truth[i]);
        let tail: Vec<u8> = (0..n).map(|i| (!truth[i] && i % 7 == 0) as u8).collect();
        let basis = BasisFit::fit(&x, dim, 10);
        let separated = ClassScores {
            grouping: Some(Grouping {
                cluster: group.clone(),
                suspect: Some(1),
                closer_to_class: None,
                suspect_is_whole: true,
                ..Grouping::default()
            }),
            signal: Some(ClassSignal::new(60.0, 11.0, 1.0)),
            ..scores(vec![0.0; n], 60.0)
        };
        let outcome = |scores: Vec<ClassScores>| {
            let e = ClassEvidence {
                class: 0,
                rows: &[],
                scores: scores.into(),
                geometry: Some(ClassGeometry {
                    basis: &basis,
                    x: &x,
                    dim,
                }),
            };
            let mut record = RecordEvidence {
                evidence: vec![0.0; n],
                flag: (0..n).map(|i| group[i] == 1 || tail[i] == 1).collect(),
                why: vec![String::new(); n],
            };
            grow_flagged(&e, &mut record);
            let found = (0..n).filter(|&i| record.flag[i] && truth[i]).count();
            (found, (0..n).filter(|&i| record.flag[i] && !truth[i]).count())
        };
        let (found, clean) = outcome(vec![separated]);
        assert!(
            found >= 60 && clean <= 60,
            "from the group: {found} poison, {clean} clean"
        );
        // Without a whole group the tail's flags stand (and seed the regrowth).
        let (_, clean_without) = outcome(vec![scores(vec![0.0; n], 1.0)]);
        assert!(clean_without >= 286, "without a group: {clean_without} clean");
    }

    #[test]
    fn a_cluster_too_small_for_a_principal_direction_grows_along_its_own_shift() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        // Four classes of 200 records in 300 dims, each with 4 strong directions of its own (the
        // basis) over isotropic noise. Class 0 holds a cluster of 30 shifted 4.5-6.5 sigmas
        // along one random direction: too little variance to own a principal direction against
        // the noise (300 records in 300 dims swell its eigenvalues up to ~4), so on the basis
        // only the members' residual norms differ, by about one sd. The score sees only the
        // 22 most shifted members; the other 8 must be regrown (none are without the shift outside the basis).
        let (n, dim, cluster) = (200usize, 300usize, 30usize);
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(21);
        let mut normal = move || -> f32 { StandardNormal.sample(&mut rng) };
        let unit = |normal: &mut dyn FnMut() -> f32| {
            let v: Vec<f32> = (0..dim).map(|_| normal()).collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.iter().map(|a| a / norm).collect::<Vec<f32>>()
        };
        let direction = unit(&mut normal);
        let factors: Vec<Vec<Vec<f32>>> = (0..4).map(|_| (0..4).map(|_| unit(&mut normal)).collect()).collect();
        let shift = |i: usize| 4.5 + 2.0 * ((i * 7) % cluster) as f32 / cluster as f32;
        let x: Vec<f32> = (0..4 * n)
            .flat_map(|g| {
                let member = (g < n && g >= n - cluster).then(|| shift(g));
                let weights: Vec<f32> = (0..4).map(|_| 4.0 * normal()).collect();
                let mut row: Vec<f32> = (0..dim).map(|_| normal()).collect();
                for (w, f) in weights.iter().zip(&factors[g / n]) {
                    row.iter_mut().zip(f).for_each(|(v, d)| *v += w * d);
                }
                if let Some(s) = member {
                    row.iter_mut().zip(&direction).for_each(|(v, d)| *v += s * d);
                }
                row
            })
            .collect();
        let seen = |g: usize| shift(g) >= 5.0;
        assert_eq!((n - cluster..n).filter(|&g| !seen(g)).count(), 8);
        let rows = rows(4, n as u32);
        let fits = class_fits(&x, 4, n, dim);
        let evidence: Vec<ClassEvidence<'_>> = (0..4)
            .map(|c| {
                let score: Vec<f32> = (0..n)
                    .map(|i| {
                        if c == 0 && i >= n - cluster && seen(i) {
                            100.0
                        } else {
                            1.0
                        }
                    })
                    .collect();
                ClassEvidence {
                    class: c,
                    rows: &rows[c],
                    scores: vec![scores(score, if c == 0 { 5.0 } else { 1.0 + 0.05 * c as f64 })].into(),
                    geometry: Some(geometry_of_class(&x, &fits, c, n, dim)),
                }
            })
            .collect();
        let names: Vec<String> = (0..4).map(|c| c.to_string()).collect();
        let d = decide(&evidence, &["spectre"], &names, 4 * n, &DecisionParams::default());
        assert!(d.verdicts[0].as_ref().unwrap().attacked);
        let regrown = (n - cluster..n).filter(|&g| !seen(g) && d.quarantined[g]).count();
        assert!(regrown >= 6, "{regrown} of the 8 unseen members regrown");
        let clean = (0..n - cluster).filter(|&g| d.quarantined[g]).count();
        assert!(clean <= 1, "{clean} clean records of the class quarantined");
        assert!((n..4 * n).all(|g| !d.quarantined[g]), "a clean class lost records");
    }

    #[test]
    fn a_detectors_own_flags_quarantine_in_a_quiet_class_and_record_evidence_only_ranks() {
        let (mut ev, total) = classes(&[1.3, 1.32, 1.28, 1.31, 1.29, 1.3], &rows(6, 100));
        let mut label = scores(vec![0.0; 100], 0.0);
        label.signal = None;
        label.flagged = vec![crate::detect::Flag {
            index: 7,
            strength: 0.9,
            why: "confident_learning: label issue".into(),
        }];
        label.record_level = Some((0..100).map(|i| if i == 8 { 0.8 } else { 0.0 }).collect());
        ev[2].scores.to_mut().push(label);
        for e in ev.iter_mut().filter(|e| e.class != 2) {
            let mut quiet = scores(vec![0.0; 100], 0.0);
            quiet.signal = None;
            e.scores.to_mut().push(quiet);
        }
        let names: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let d = decide(
            &ev,
            &["spectre", "confident_learning"],
            &names,
            total,
            &DecisionParams::default(),
        );
        let flagged: Vec<usize> = (0..total).filter(|&g| d.quarantined[g]).collect();
        assert_eq!(flagged, vec![207], "the flagged record of class 2, nothing else");
        assert!((d.suspicion[207] - (0.5 + 0.49 * 0.9)).abs() < 1e-9);
        assert_eq!(d.reasons[207], "confident_learning: label issue");
        assert!(
            !d.verdicts[2].as_ref().unwrap().attacked,
            "a label issue does not make a class attacked"
        );
        assert!(d.suspicion[208] > 0.3 && d.suspicion[208] < 0.5, "{}", d.suspicion[208]);
    }

    #[test]
    fn flags_only_the_tail_of_the_outlier_class() {
        let (ev, total) = classes(&[1.3, 1.32, 1.28, 6.0, 1.29, 1.3], &rows(6, 100));
        let names: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let d = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        let flagged: Vec<usize> = (0..total).filter(|&g| d.quarantined[g]).collect();
        assert_eq!(flagged, vec![300], "only class 3's far record");
        assert!(d.suspicion[300] >= 0.5 && d.reasons[300].contains("spectre"));
        assert!(d.verdicts[3].as_ref().unwrap().attacked);
        assert!(!d.verdicts[0].as_ref().unwrap().attacked);
    }

    /// Six classes of 100 records (class signals as in `flags_only_the_tail_of_the_outlier_class`,
    /// class 3 the outlier); class 3 has 4-dimensional vectors `value(record, coordinate, noise)`
    /// and its SPECTRE scores put the records of `tail` far out.
    fn six_classes_with_a_tail_in_class_3(
        value: impl Fn(usize, usize, f32) -> f32,
        tail: std::ops::Range<usize>,
    ) -> (Vec<ClassEvidence<'static>>, usize) {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
        let x: &'static [f32] = Box::leak(
            (0..100)
                .flat_map(|i| (0..4).map(move |j| (i, j)))
                .map(|(i, j)| value(i, j, StandardNormal.sample(&mut rng)))
                .collect::<Vec<f32>>()
                .into_boxed_slice(),
        );
        let basis: &'static BasisFit = Box::leak(Box::new(BasisFit::fit(x, 4, 2)));
        let (mut ev, total) = classes(&[1.3, 1.32, 1.28, 6.0, 1.29, 1.3], &rows(6, 100));
        let values = (0..100)
            .map(|i| {
                if tail.contains(&i) {
                    400.0
                } else {
                    0.5 + (i % 10) as f32 * 0.1
                }
            })
            .collect();
        ev[3].scores = vec![scores(values, 6.0)].into();
        ev[3].geometry = Some(ClassGeometry { basis, x, dim: 4 });
        (ev, total)
    }

    /// [`six_classes_with_a_tail_in_class_3`] with class 3 sparse: 10 far records (its SPECTRE
    /// tail), 60 near the origin and 30 all-zero vectors.
    fn a_sparse_tail_in_class_3() -> (Vec<ClassEvidence<'static>>, usize) {
        six_classes_with_a_tail_in_class_3(
            |i, j, noise| match i {
                _ if i < 10 => 10.0 + (j == 0) as u8 as f32 * 5.0 + noise * 0.3,
                _ if i >= 70 => 0.0,
                _ => 1.0 + noise * 0.3,
            },
            0..10,
        )
    }

    /// A per-record score with no class signal for class `c` of `six_classes_with_a_tail_in_class_3`:
    /// `tail` on class 3's first 10 records, `rest` on its others, 0 in other classes.
    fn record_scores(c: usize, (tail, rest): (f32, f32)) -> ClassScores {
        let mut s = scores(vec![if c == 3 { rest } else { 0.0 }; 100], 0.0);
        s.signal = None;
        if c == 3 {
            s.scores[..10].fill(tail);
        }
        s
    }

    /// Class 3's quarantined records (global rows 300..400) under `decide`, with its verdict.
    fn class_3_outcome(ev: &[ClassEvidence<'_>], detectors: &[&str], total: usize) -> (Vec<usize>, ClassVerdict) {
        let names: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let d = decide(ev, detectors, &names, total, &DecisionParams::default());
        let quarantined = (300..400).filter(|&g| d.quarantined[g]).collect();
        (quarantined, d.verdicts[3].clone().unwrap())
    }

    #[test]
    fn flags_on_every_non_zero_vector_of_a_class_overturn_its_verdict() {
        // Class 3: `zeros` all-zero vectors, then 40 far records (SPECTRE's tail) and the rest
        // near the origin. With 20 zeros the 40 far records are half of the non-zero ones (an
        // all-to-one backdoor can be): attacked, the 40 quarantined. With 60 zeros the tail is
        // every non-zero vector: the class's shape, nothing quarantined.
        for (zeros, attacked) in [(20, true), (60, false)] {
            let (ev, total) = six_classes_with_a_tail_in_class_3(
                |i, j, noise| match i {
                    _ if i < zeros => 0.0,
                    _ if i < zeros + 40 => 10.0 + (j == 0) as u8 as f32 * 5.0 + noise * 0.3,
                    _ => 1.0 + noise * 0.3,
                },
                zeros..zeros + 40,
            );
            let (quarantined, verdict) = class_3_outcome(&ev, &["spectre"], total);
            assert_eq!(verdict.attacked, attacked, "{}", verdict.why);
            if attacked {
                assert_eq!(quarantined, (300 + zeros..340 + zeros).collect::<Vec<_>>());
            } else {
                assert!(quarantined.is_empty(), "{quarantined:?}");
                assert!(
                    verdict.why.contains("cover 100% of its non-zero vectors"),
                    "{}",
                    verdict.why
                );
            }
        }
    }

    #[test]
    fn a_sparse_class_s_spectre_tail_among_its_own_class_does_not_make_it_attacked() {
        // Class 3: 10 far records (SPECTRE's tail) and 90 near the origin, 30 of those all zero
        // when `sparse`. Deep k-NN gives the tail `tail_share` of neighbours with another label
        // and the rest `rest_share`; confident learning, where given, label doubt (tail, rest). A
        // sparse tail is overturned unless its share is 0.03 and 3 times the rest's, or half that
        // with its doubt 0.03 and 3 times the rest's; a dense one, or one judged without deep
        // k-NN, is not.
        for (sparse, tail_share, rest_share, doubt, with_knn, attacked) in [
            (true, 0.3, 0.0, None, true, true),
            (true, 0.0, 0.0, None, true, false),
            (true, 0.05, 0.02, None, true, false),
            (true, 0.028, 0.0, Some((0.06, 0.012)), true, true),
            (true, 0.028, 0.0, Some((0.03, 0.012)), true, false),
            (true, 0.0, 0.0, Some((0.06, 0.012)), true, false),
            (true, 0.0, 0.0, None, false, true),
            (false, 0.0, 0.0, None, true, true),
        ] {
            let (mut ev, total) = six_classes_with_a_tail_in_class_3(
                |i, j, noise| match i {
                    _ if i < 10 => 10.0 + (j == 0) as u8 as f32 * 5.0 + noise * 0.3,
                    _ if sparse && i >= 70 => 0.0,
                    _ => 1.0 + noise * 0.3,
                },
                0..10,
            );
            let mut detectors = vec!["spectre"];
            if with_knn {
                detectors.push("deep_knn");
                for (c, e) in ev.iter_mut().enumerate() {
                    e.scores.to_mut().push(record_scores(c, (tail_share, rest_share)));
                }
            }
            if let Some(doubt) = doubt {
                detectors.push("confident_learning");
                for (c, e) in ev.iter_mut().enumerate() {
                    e.scores.to_mut().push(record_scores(c, doubt));
                }
            }
            let (quarantined, verdict) = class_3_outcome(&ev, &detectors, total);
            let case = format!("sparse {sparse}, shares {tail_share}/{rest_share}, doubt {doubt:?}, knn {with_knn}");
            assert_eq!(verdict.attacked, attacked, "{case}: {}", verdict.why);
            if attacked {
                assert_eq!(quarantined, (300..310).collect::<Vec<_>>(), "{case}");
            } else {
                assert!(quarantined.is_empty(), "{case}: {quarantined:?}");
                assert!(verdict.why.contains("sit among their own class"), "{}", verdict.why);
            }
        }
    }

    /// Class `c`'s separated-group scores for `six_classes_with_a_tail_in_class_3`: class 3's
    /// group is records 10-21 (each scored `group_score`), its signal 12 over a clean bound of 11.
    fn separated_group_of_class_3(c: usize, group_score: f32) -> ClassScores {
        let in_group = |i: usize| c == 3 && (10..22).contains(&i);
        let per_record = (0..100).map(|i| if in_group(i) { group_score } else { 0.0 }).collect();
        let mut group = scores(per_record, if c == 3 { 12.0 } else { 0.0 });
        group.signal = group.signal.map(|s| ClassSignal { clean_bound: 11.0, ..s });
        group.grouping = Some(Grouping {
            cluster: (0..100).map(|i| in_group(i) as u8).collect(),
            suspect: Some(1),
            closer_to_class: None,
            suspect_is_whole: true,
            ..Grouping::default()
        });
        group
    }

    #[test]
    fn a_separated_group_that_is_a_dense_clump_at_a_sparse_class_s_core_does_not_make_it_attacked() {
        // Class 3 (records 70-99 all zero when `sparse`) has a separated group, records 10-21,
        // its only signal over the bound. SPECTRE scores the group `group_spectre` and the rest
        // 1; density, the group `group_density` and the rest 0. With `elsewhere` the group's
        // records have units on that the rest leave off: unit 0, or (`spread`) units 0 and 1 in
        // turn. Only a group denser than the class (z over 1) and lower in SPECTRE's ranking than
        // the rest, in a sparse class, and pointing the class's way or all one way, is
        // overturned; otherwise the group alone is quarantined.
        for (sparse, group_spectre, group_density, elsewhere, spread, attacked) in [
            (true, 0.5, 2.0, false, false, false),
            (true, 2.0, 2.0, false, false, true),
            (true, 0.5, 0.8, false, false, true),
            (true, 0.5, 2.0, true, false, false),
            (true, 0.5, 2.0, true, true, true),
            (false, 0.5, 2.0, false, false, true),
        ] {
            let (mut ev, total) = six_classes_with_a_tail_in_class_3(
                |i, j, noise| {
                    let on = match (elsewhere, (10..22).contains(&i)) {
                        (false, _) => true,
                        (true, false) => j >= 2,
                        (true, true) => j == if spread { i % 2 } else { 0 },
                    };
                    if (sparse && i >= 70) || !on {
                        0.0
                    } else {
                        1.0 + noise * 0.3
                    }
                },
                0..0,
            );
            for (c, e) in ev.iter_mut().enumerate() {
                let in_group = |i: usize| c == 3 && (10..22).contains(&i);
                let per_record =
                    |group: f32, rest: f32| (0..100).map(|i| if in_group(i) { group } else { rest }).collect();
                let spectre = scores(per_record(group_spectre, 1.0), 1.3);
                let mut density = scores(per_record(group_density, 0.0), 0.0);
                density.signal = None;
                e.scores = vec![spectre, density, separated_group_of_class_3(c, 0.0)].into();
            }
            let (quarantined, verdict) = class_3_outcome(&ev, &["spectre", "density", SEPARATED_GROUP], total);
            let case = format!(
                "sparse {sparse}, group SPECTRE {group_spectre}, density {group_density}, \
                 elsewhere {elsewhere}, spread {spread}"
            );
            assert_eq!(verdict.attacked, attacked, "{case}: {}", verdict.why);
            if attacked {
                assert_eq!(quarantined, (310..322).collect::<Vec<_>>(), "{case}");
            } else {
                assert!(quarantined.is_empty(), "{case}: {quarantined:?}");
                assert!(
                    verdict.why.contains("dense clump at the class's core"),
                    "{}",
                    verdict.why
                );
            }
        }
    }

    #[test]
    fn a_separated_group_in_a_class_whose_records_neighbour_other_classes_does_not_make_it_attacked() {
        // Class 3's separated group, records 10-21 (outsider disagreement 0.75), is its only
        // signal over the bound; deep k-NN gives its other records an other-label share `rest`.
        // Against 0.03 (25x) and 0.25 (3x, the least that stands) the group stands and alone is
        // quarantined, and so it does without deep k-NN; against 0.375 (2x) the class overlaps
        // others and the verdict is overturned.
        for (rest, attacked) in [
            (Some(0.03), true),
            (Some(0.25), true),
            (None, true),
            (Some(0.375), false),
        ] {
            let (mut ev, total) = six_classes_with_a_tail_in_class_3(|_, _, noise| 1.0 + noise * 0.3, 0..0);
            for (c, e) in ev.iter_mut().enumerate() {
                let in_group = |i: usize| c == 3 && (10..22).contains(&i);
                // Without deep k-NN's name the scores are there but not read: at 0.375 they would
                // overturn the verdict.
                let knn_share = if c == 3 { rest.unwrap_or(0.375) } else { 0.0 };
                let mut knn = scores(
                    (0..100).map(|i| if in_group(i) { 0.0 } else { knn_share }).collect(),
                    0.0,
                );
                knn.signal = None;
                e.scores = vec![scores(vec![1.0; 100], 1.3), separated_group_of_class_3(c, 0.75), knn].into();
            }
            let knn_name = if rest.is_some() { "deep_knn" } else { "not_deep_knn" };
            let (quarantined, verdict) = class_3_outcome(&ev, &["spectre", SEPARATED_GROUP, knn_name], total);
            assert_eq!(verdict.attacked, attacked, "rest {rest:?}: {}", verdict.why);
            if attacked {
                assert_eq!(quarantined, (310..322).collect::<Vec<_>>(), "rest {rest:?}");
            } else {
                assert!(quarantined.is_empty(), "rest {rest:?}: {quarantined:?}");
                assert!(verdict.why.contains("a class that overlaps others"), "{}", verdict.why);
            }
        }
    }

    #[test]
    fn a_second_signal_ranking_the_class_an_outlier_keeps_its_sparse_spectre_tail_attacked() {
        // As the overturned case above (sparse, no other-label neighbours), with a second class
        // signal under its clean bound (1.5) in every class: class 3's `value` against the
        // others' 0.48-0.52. At 1.2 it ranks class 3 14 MADs out (min spread 0.05) and the
        // verdict stands; at 0.75, 5 MADs (over the threshold, under twice it), and at 0.6, 2
        // MADs, it is overturned.
        for (value, attacked) in [(1.2, true), (0.75, false), (0.6, false)] {
            let (mut ev, total) = a_sparse_tail_in_class_3();
            for (c, e) in ev.iter_mut().enumerate() {
                e.scores.to_mut().push(record_scores(c, (0.0, 0.0)));
                let signal = [0.5, 0.52, 0.48, value, 0.49, 0.5][c];
                e.scores.to_mut().push(scores(vec![0.0; 100], signal));
            }
            let (quarantined, verdict) = class_3_outcome(&ev, &["spectre", "deep_knn", "distance_analysis"], total);
            assert_eq!(verdict.attacked, attacked, "second signal {value}: {}", verdict.why);
            if attacked {
                assert_eq!(quarantined, (300..310).collect::<Vec<_>>());
            } else {
                assert!(verdict.why.contains("sit among their own class"), "{}", verdict.why);
            }
        }
    }

    #[test]
    fn a_sparse_class_whose_tail_looks_like_other_classes_inputs_is_attacked_without_an_outlying_signal() {
        // Every class's SPECTRE signal is 2.0: over its clean bound (1.5), no outlier. Class 3 is
        // sparse (30 all-zero vectors) with 10 far records, SPECTRE's tail. Its tail's
        // neighbours of another label and label doubt are `knn` and `doubt` against 0 and 0.02 in
        // the rest. Attacked when both are 5 times the rest's (and at least 0.03), unless they
        // are so only through records confident learning calls label issues (its own finding:
        // `issues` of the tail, doubt 0.9), confident learning is not in the pipeline, or a twin
        // class 1 that no signal judges attacked passes too (with 6 classes, at most one may; a
        // twin judged by its outlying signal does not count).
        for (knn, doubt, issues, twin_signal, with_doubt, attacked) in [
            (0.3, 0.3, 0, None, true, true),
            (0.3, 0.08, 0, None, true, false),
            (0.02, 0.3, 0, None, true, false),
            (0.3, 0.3, 10, None, true, false),
            (0.3, 0.05, 5, None, true, false),
            (0.3, 0.3, 0, None, false, false),
            (0.3, 0.3, 0, Some(2.0), true, false),
            (0.3, 0.3, 0, Some(6.0), true, true),
        ] {
            let (mut ev, total) = a_sparse_tail_in_class_3();
            for (c, e) in ev.iter_mut().enumerate() {
                let class_scores = e.scores.to_mut();
                class_scores[0].signal.as_mut().unwrap().value = 2.0;
                class_scores.push(record_scores(c, (knn, 0.0)));
                if with_doubt {
                    let mut label_doubt = record_scores(c, (doubt, 0.02));
                    if c == 3 {
                        label_doubt.scores[..issues].fill(0.9);
                        label_doubt.flagged = (0..issues)
                            .map(|index| Flag {
                                index,
                                strength: 0.5,
                                why: "label issue".into(),
                            })
                            .collect();
                    }
                    class_scores.push(label_doubt);
                }
            }
            if let Some(signal) = twin_signal {
                ev[1].scores = ev[3].scores.clone();
                ev[1].scores.to_mut()[0].signal.as_mut().unwrap().value = signal;
                ev[1].geometry = ev[3].geometry;
            }
            let detectors: &[&str] = if with_doubt {
                &["spectre", "deep_knn", "confident_learning"]
            } else {
                &["spectre", "deep_knn"]
            };
            let (quarantined, verdict) = class_3_outcome(&ev, detectors, total);
            let case = format!("knn {knn}, doubt {doubt}, issues {issues}, twin {twin_signal:?}, doubt {with_doubt}");
            assert_eq!(verdict.attacked, attacked, "{case}: {}", verdict.why);
            if attacked {
                assert_eq!(quarantined, (300..310).collect::<Vec<_>>(), "{case}");
                assert!(
                    verdict.why.contains("look like other classes' inputs"),
                    "{}",
                    verdict.why
                );
            } else {
                // Label issues are quarantined by confident learning's own flags, whatever the verdict.
                assert_eq!(quarantined, (300..300 + issues).collect::<Vec<_>>(), "{case}");
            }
        }
    }

    /// Five sparse classes of 60 records in 6 units (ReLU-like: class c's unit at 10, noise
    /// clipped at 0), SPECTRE signal 2.0 each (over the clean bound 1.5, no outlier). The first 6
    /// records of class 0 (and of class 1 with `twin`) are triggered inputs of three other
    /// classes, two each (unit 5 at 6), topping the class's SPECTRE scores.
    fn five_sparse_classes(twin: bool) -> (Vec<ClassEvidence<'static>>, usize) {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        const DIM: usize = 6;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let (mut ev, total) = classes(&[2.0; 5], &rows(5, 60));
        for (c, e) in ev.iter_mut().enumerate() {
            let planted = c == 0 || (twin && c == 1);
            let x: Vec<f32> = (0..60 * DIM)
                .map(|k| {
                    let (i, j) = (k / DIM, k % DIM);
                    let noise: f64 = StandardNormal.sample(&mut rng);
                    let source = (c + 1 + i / 2) % 5;
                    let centre = match () {
                        _ if planted && i < 6 && j == DIM - 1 => 6.0,
                        _ if planted && i < 6 => (j == source) as u8 as f32 * 10.0,
                        _ => (j == c) as u8 as f32 * 10.0,
                    };
                    (centre + 0.5 * noise as f32).max(0.0)
                })
                .collect();
            let x: &'static [f32] = Box::leak(x.into_boxed_slice());
            let basis: &'static BasisFit = Box::leak(Box::new(BasisFit::fit(x, DIM, 2)));
            e.geometry = Some(ClassGeometry { basis, x, dim: DIM });
            let values = (0..60)
                .map(|i| {
                    if planted && i < 6 {
                        100.0 - i as f32
                    } else {
                        0.5 + (i % 10) as f32 * 0.1
                    }
                })
                .collect();
            e.scores = vec![scores(values, 2.0)].into();
        }
        (ev, total)
    }

    #[test]
    fn a_sparse_class_whose_tail_tops_with_other_classes_inputs_quarantines_them() {
        let names: Vec<String> = (0..5).map(|c| c.to_string()).collect();
        let (ev, total) = five_sparse_classes(false);
        let d = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        let verdict = d.verdicts[0].clone().unwrap();
        assert!(
            verdict.attacked && verdict.why.contains("atop its tail"),
            "{}",
            verdict.why
        );
        for g in 0..6 {
            assert!(d.quarantined[g], "row {g}");
            assert!(
                d.reasons[g].contains("looks like another class's input"),
                "{}",
                d.reasons[g]
            );
        }
        // The group alone: growing it (no surrogate here, so it is grown) finds no more of it.
        let in_class_0 = d.quarantined[..60].iter().filter(|&&q| q).count();
        assert_eq!(in_class_0, 6, "quarantined in class 0");
        assert!(d.verdicts[1..].iter().all(|v| !v.as_ref().unwrap().attacked));
        assert!(!d.quarantined[60..].iter().any(|&q| q));
        // Two of five classes holding such a group are more than a quarter: the data, not an
        // attack (each passes on its own).
        let (ev, total) = five_sparse_classes(true);
        for c in 0..2 {
            let record = record_evidence(&ev[c], &["spectre"], &names, &DecisionParams::default());
            assert!(
                other_inputs::group_of_other_inputs(&ev, c, &["spectre"], &record).is_some(),
                "class {c}"
            );
        }
        let d = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        assert!(d.verdicts.iter().all(|v| !v.as_ref().unwrap().attacked));
        assert!(!d.quarantined.iter().any(|&q| q));
    }

    /// Five sparse classes (13 units, each class on two of its own), SPECTRE's signal under its
    /// bound in every one; the classes in `planted` end in 40 short records on the last three
    /// units, a trigger's mapped to few units of its own.
    fn five_classes_with_short_records_elsewhere(planted: &[usize]) -> (Vec<ClassEvidence<'static>>, usize) {
        use directions::tests::{Planted, sparse_class};
        const DIM: usize = 13;
        let sizes: Vec<u32> = (0..5).map(|c| if planted.contains(&c) { 340 } else { 300 }).collect();
        let starts: Vec<u32> = sizes
            .iter()
            .scan(0, |at, &n| Some(std::mem::replace(at, *at + n)))
            .collect();
        let rows: Vec<Vec<u32>> = starts.iter().zip(&sizes).map(|(&s, &n)| (s..s + n).collect()).collect();
        let (mut ev, total) = classes(&[1.0; 5], &rows);
        for (c, e) in ev.iter_mut().enumerate() {
            let records = if planted.contains(&c) { 40 } else { 0 };
            let planted = Planted {
                records,
                length: 0.1,
                one_direction: false,
            };
            let x: &'static [f32] = Box::leak(sparse_class(DIM, 2 * c..2 * c + 2, true, planted).into_boxed_slice());
            let basis: &'static BasisFit = Box::leak(Box::new(BasisFit::fit(x, DIM, 2)));
            e.geometry = Some(ClassGeometry { basis, x, dim: DIM });
        }
        (ev, total)
    }

    #[test]
    fn a_sparse_class_whose_short_records_point_elsewhere_quarantines_every_record_that_does() {
        let names: Vec<String> = (0..5).map(|c| c.to_string()).collect();
        let (ev, total) = five_classes_with_short_records_elsewhere(&[0]);
        let d = decided_attacked_by(&ev, total, "point elsewhere");
        let quarantined: Vec<usize> = (0..total).filter(|&g| d.quarantined[g]).collect();
        assert_eq!(quarantined, (300..340).collect::<Vec<_>>());
        assert!(
            d.reasons[300].contains("points elsewhere than its class"),
            "{}",
            d.reasons[300]
        );
        assert_eq!(d.verdicts.iter().filter(|v| v.as_ref().unwrap().attacked).count(), 1);
        // Two of five classes so are more than a quarter: the data, not an attack.
        let (ev, total) = five_classes_with_short_records_elsewhere(&[1, 3]);
        let d = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        assert!(d.verdicts.iter().all(|v| !v.as_ref().unwrap().attacked));
        assert!(!d.quarantined.iter().any(|&q| q));
    }

    #[test]
    fn a_class_judged_attacked_otherwise_quarantines_its_records_pointing_elsewhere_too() {
        let (mut ev, total) = five_classes_with_short_records_elsewhere(&[0]);
        ev[0].scores.to_mut()[0].signal.as_mut().unwrap().value = 6.0;
        let d = decided_attacked_by(&ev, total, "spectre");
        let verdict = d.verdicts[0].clone().unwrap();
        assert!(verdict.why.contains("point elsewhere"), "{}", verdict.why);
        // SPECTRE's far record (index 0) and the records pointing elsewhere.
        let quarantined: Vec<usize> = (0..total).filter(|&g| d.quarantined[g]).collect();
        assert_eq!(quarantined, [0].into_iter().chain(300..340).collect::<Vec<_>>());
        assert!(
            d.reasons[300].contains("points elsewhere than its class"),
            "{}",
            d.reasons[300]
        );
        // Where the rule was silenced (two more classes so among four unjudged: the data), it
        // adds nothing to a class judged otherwise.
        let (mut ev, total) = five_classes_with_short_records_elsewhere(&[0, 1, 2]);
        ev[0].scores.to_mut()[0].signal.as_mut().unwrap().value = 6.0;
        let d = decided_attacked_by(&ev, total, "spectre");
        assert!(!d.verdicts[0].as_ref().unwrap().why.contains("point elsewhere"));
        assert!(!d.quarantined[300]);
    }

    /// [`five_sparse_classes`] with SPECTRE's signal under its clean bound in every class: the
    /// tail rules do not ask, a trigger's fingerprint can.
    fn five_sparse_classes_under_their_bound(twin: bool) -> (Vec<ClassEvidence<'static>>, usize) {
        let (mut ev, total) = five_sparse_classes(twin);
        for e in ev.iter_mut() {
            e.scores.to_mut()[0].signal.as_mut().unwrap().value = 1.0;
        }
        (ev, total)
    }

    /// The decision on the five sparse classes `ev` (SPECTRE only), whose class 0 must be judged
    /// attacked with `why` in its verdict.
    fn decided_attacked_by(ev: &[ClassEvidence<'static>], total: usize, why: &str) -> Decision {
        let names: Vec<String> = (0..5).map(|c| c.to_string()).collect();
        let d = decide(ev, &["spectre"], &names, total, &DecisionParams::default());
        let verdict = d.verdicts[0].clone().unwrap();
        assert!(verdict.attacked && verdict.why.contains(why), "{}", verdict.why);
        d
    }

    #[test]
    fn a_sparse_class_whose_top_records_share_a_trigger_s_fingerprint_is_attacked_under_its_bound() {
        let names: Vec<String> = (0..5).map(|c| c.to_string()).collect();
        let (ev, total) = five_sparse_classes_under_their_bound(false);
        let d = decided_attacked_by(&ev, total, "a trigger's fingerprint");
        let quarantined: Vec<usize> = (0..total).filter(|&g| d.quarantined[g]).collect();
        assert_eq!(quarantined, (0..6).collect::<Vec<_>>());
        assert!(
            d.reasons[0].contains("shares a trigger's fingerprint"),
            "{}",
            d.reasons[0]
        );
        assert!(d.verdicts[1..].iter().all(|v| !v.as_ref().unwrap().attacked));
        // Two of five classes are more than a quarter: none.
        let (ev, total) = five_sparse_classes_under_their_bound(true);
        let d = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        assert!(d.verdicts.iter().all(|v| !v.as_ref().unwrap().attacked));
        assert!(!d.quarantined.iter().any(|&q| q));
    }

    #[test]
    fn records_sharing_the_fingerprint_are_quarantined_with_the_clique_and_say_why() {
        // As above (signals under the bound, the fingerprint speaks), and four of class 0's own
        // inputs (records 6-9, low in its SPECTRE ranking) carry the trigger too: they look like
        // the class's own inputs, so only their shared fingerprint can name them.
        let (mut ev, total) = five_sparse_classes_under_their_bound(false);
        let geometry = ev[0].geometry.unwrap();
        let dim = geometry.dim;
        let mut x = geometry.x.to_vec();
        (6..10).for_each(|i| x[i * dim + dim - 1] = 6.0);
        let x: &'static [f32] = Box::leak(x.into_boxed_slice());
        let basis: &'static BasisFit = Box::leak(Box::new(BasisFit::fit(x, dim, 2)));
        ev[0].geometry = Some(ClassGeometry { basis, x, dim });
        let d = decided_attacked_by(&ev, total, "and 4 more of its records share it");
        let quarantined: Vec<usize> = (0..total).filter(|&g| d.quarantined[g]).collect();
        assert_eq!(quarantined, (0..10).collect::<Vec<_>>());
        for g in 6..10 {
            assert!(
                d.reasons[g].contains("shares the trigger's fingerprint of the records flagged atop the ranking"),
                "{}",
                d.reasons[g]
            );
        }
        assert!(d.verdicts[1..].iter().all(|v| !v.as_ref().unwrap().attacked));
    }

    #[test]
    fn a_signal_many_classes_share_attacks_none_but_two_outliers_are_both_attacked() {
        let names: Vec<String> = (0..10).map(|c| c.to_string()).collect();
        // 4 of 10 classes high: the data's structure (more than a quarter), nothing quarantined.
        let common = [1.3, 6.0, 1.32, 6.5, 1.28, 6.2, 1.29, 5.9, 1.3, 1.31];
        let (ev, total) = classes(&common, &rows(10, 100));
        let d = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        assert_eq!(d.quarantined.iter().filter(|&&q| q).count(), 0);
        let verdict = d.verdicts[3].as_ref().unwrap();
        assert!(
            !verdict.attacked && verdict.why.contains("too many classes"),
            "{}",
            verdict.why
        );
        // 2 of 10: still outliers (a backdoor may target more than one class).
        let two = [1.3, 6.0, 1.32, 6.5, 1.28, 1.3, 1.29, 1.31, 1.3, 1.31];
        let (ev, total) = classes(&two, &rows(10, 100));
        let d = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        let flagged: Vec<usize> = (0..total).filter(|&g| d.quarantined[g]).collect();
        assert_eq!(flagged, vec![100, 300]);
    }

    #[test]
    fn cap_keeps_the_most_suspicious() {
        let (ev, total) = classes(&[1.3, 1.32, 1.28, 6.0, 1.29, 1.3], &rows(6, 100));
        let names: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let params = DecisionParams {
            max_quarantine_fraction: 0.0,
            ..Default::default()
        };
        let d = decide(&ev, &["spectre"], &names, total, &params);
        assert!(d.quarantined.iter().all(|&q| !q));
        assert!(d.reasons[300].contains("cap"));
    }

    #[test]
    fn a_real_split_flags_its_suspect_group_and_a_weak_one_does_not() {
        let rows: Vec<Vec<u32>> = rows(4, 50);
        let names: Vec<String> = (0..4).map(|c| c.to_string()).collect();
        let evidence = |split: f64, bound_with_group: Option<f64>| -> Vec<ClassEvidence<'_>> {
            rows.iter()
                .enumerate()
                .map(|(c, r)| {
                    let attacked = c == 2;
                    let cluster: Vec<u8> = (0..r.len()).map(|i| (attacked && i < 5) as u8).collect();
                    ClassEvidence {
                        class: c,
                        rows: r,
                        scores: std::borrow::Cow::Owned(vec![ClassScores {
                            scores: vec![0.0; r.len()],
                            stats: vec![],
                            signal: Some(ClassSignal {
                                bound_with_group: bound_with_group.filter(|_| attacked),
                                ..ClassSignal::new(if attacked { split } else { 0.0 }, 0.5, 0.1)
                            }),
                            grouping: Some(Grouping {
                                cluster,
                                suspect: Some(1),
                                closer_to_class: None,
                                suspect_is_whole: true,
                                // The detector says more of one member.
                                notes: (0..r.len())
                                    .map(|i| {
                                        if attacked && i == 0 {
                                            "found first".into()
                                        } else {
                                            String::new()
                                        }
                                    })
                                    .collect(),
                                ..Grouping::default()
                            }),
                            record_level: None,
                            flagged: Vec::new(),
                            fit: None,
                        }]),
                        geometry: None,
                    }
                })
                .collect()
        };
        let strong = decide(
            &evidence(0.9, None),
            &["activation_clustering"],
            &names,
            200,
            &DecisionParams::default(),
        );
        let flagged: Vec<usize> = (0..200).filter(|&g| strong.quarantined[g]).collect();
        assert_eq!(flagged, vec![100, 101, 102, 103, 104]);
        assert!(strong.reasons[100].contains("suspect group (10.0% of class, class signal 0.90): found first"));
        assert!(strong.reasons[101].contains("suspect group (10.0% of class, class signal 0.90)"));
        assert!(!strong.reasons[101].contains("found first"));
        // Below the clean bound the class is not attacked, whatever its rank among classes.
        let weak = decide(
            &evidence(0.4, None),
            &["activation_clustering"],
            &names,
            200,
            &DecisionParams::default(),
        );
        assert!(weak.quarantined.iter().all(|&q| !q));
        // Unless the detector holds the group that lets it judge by a lower bound.
        let grouped = decide(
            &evidence(0.4, Some(0.3)),
            &["activation_clustering"],
            &names,
            200,
            &DecisionParams::default(),
        );
        let flagged: Vec<usize> = (0..200).filter(|&g| grouped.quarantined[g]).collect();
        assert_eq!(flagged, vec![100, 101, 102, 103, 104]);
        let why = &grouped.verdicts[2].as_ref().unwrap().why;
        assert!(
            why.contains("clean bound 0.500, 0.300 with the group it holds"),
            "{why}"
        );
    }

    /// Four classes of 50; class 2 holds a group (records 0-14) whose detector judges it attacked
    /// and, elsewhere, a SPECTRE tail (records 20-29); SPECTRE's own class signal is
    /// `spectre_signal` (its bound 1.5, the other classes 1.0). Returns the quarantined rows and
    /// class 2's verdict.
    fn group_and_tail(suspect_is_whole: bool, spectre_signal: f64) -> (Vec<usize>, String) {
        let rows: Vec<Vec<u32>> = rows(4, 50);
        let names: Vec<String> = (0..4).map(|c| c.to_string()).collect();
        let evidence: Vec<ClassEvidence<'_>> = rows
            .iter()
            .enumerate()
            .map(|(c, r)| {
                let attacked = c == 2;
                let tails: Vec<f32> = (0..r.len())
                    .map(|i| if attacked && (20..30).contains(&i) { 100.0 } else { 1.0 })
                    .collect();
                let spectre = scores(tails, if attacked { spectre_signal } else { 1.0 });
                let group = ClassScores {
                    scores: vec![0.0; r.len()],
                    stats: vec![],
                    signal: Some(ClassSignal::new(if attacked { 15.0 } else { 0.0 }, 11.0, 1.0)),
                    grouping: attacked.then(|| Grouping {
                        cluster: (0..r.len()).map(|i| (i < 15) as u8).collect(),
                        suspect: Some(1),
                        closer_to_class: None,
                        suspect_is_whole,
                        ..Grouping::default()
                    }),
                    record_level: None,
                    flagged: Vec::new(),
                    fit: None,
                };
                ClassEvidence {
                    class: c,
                    rows: r,
                    scores: vec![spectre, group].into(),
                    geometry: None,
                }
            })
            .collect();
        let d = decide(
            &evidence,
            &["spectre", SEPARATED_GROUP],
            &names,
            200,
            &DecisionParams::default(),
        );
        let flagged = (0..200).filter(|&g| d.quarantined[g]).collect();
        (flagged, d.verdicts[2].as_ref().unwrap().why.clone())
    }

    #[test]
    fn a_class_attacked_only_by_whole_groups_quarantines_the_groups_not_its_tails() {
        let group: Vec<usize> = (100..115).collect();
        let with_tail: Vec<usize> = (100..115).chain(120..130).collect();
        let (flagged, why) = group_and_tail(true, 1.0);
        assert_eq!(flagged, group);
        assert!(why.contains("separated_group 15.000"));
        // A group that only marks where a tail begins (density's clump) keeps SPECTRE's tail.
        assert_eq!(group_and_tail(false, 1.0).0, with_tail);
        // So does a class that SPECTRE's own signal also judges attacked.
        let (flagged, why) = group_and_tail(true, 6.0);
        assert_eq!(flagged, with_tail);
        assert!(why.contains("spectre 6.000"));
    }

    #[test]
    fn a_record_flagged_for_its_population_says_so_first() {
        let mut record = RecordEvidence {
            evidence: vec![0.8, 0.8, 0.0],
            flag: vec![true, true, false],
            why: vec![
                "separated_group suspect group".into(),
                "activation_clustering suspect group".into(),
                String::new(),
            ],
        };
        // The whole group is record 0: record 1's flag is cleared.
        mark_population(&mut record, &[1, 0, 0], true);
        assert_eq!(record.flag, [true, false, false]);
        // A regrowth takes records 1 and 2 in.
        mark_population(&mut record, &[1, 1, 1], false);
        assert_eq!(record.flag, [true, true, true]);
        assert_eq!(record.why[0], "separated_group suspect group");
        assert_eq!(
            record.why[1],
            "in the separated group; activation_clustering suspect group"
        );
        assert_eq!(record.why[2], "in the separated group");
        assert!(record.evidence.iter().all(|&e| e >= 0.75));
    }

    #[test]
    fn a_group_that_may_be_part_seeds_the_regrowth_only_beside_a_whole_one() {
        // Both signals over their bound (2.0 > 1.5): a split's whole cluster (records 0-2) and a
        // shared shift's group that may be part of its population (records 7-9).
        let grouped = |cluster: Vec<u8>, may_be_part: bool| ClassScores {
            grouping: Some(Grouping {
                may_be_part,
                ..Grouping::whole(cluster)
            }),
            ..scores(vec![1.0; 10], 2.0)
        };
        let split = grouped(vec![1, 1, 1, 0, 0, 0, 0, 0, 0, 0], false);
        let shift = grouped(vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1], true);
        let rows: Vec<u32> = (0..10).collect();
        let evidence = |scores: Vec<ClassScores>| ClassEvidence {
            class: 0,
            rows: &rows,
            scores: scores.into(),
            geometry: None,
        };
        assert_eq!(regrow::whole_group(&evidence(vec![shift.clone()])), None);
        assert_eq!(
            regrow::whole_group(&evidence(vec![split, shift])),
            Some(vec![1, 1, 1, 0, 0, 0, 0, 1, 1, 1])
        );
    }

    #[test]
    fn whole_groups_only_unites_every_attacking_group_and_needs_one_from_each() {
        // Activation clustering's suspect is its cluster 0 (records 0-2); the separated group is
        // cluster 1 (records 7-9); SPECTRE (detector 2) has no group.
        let grouped = |cluster: Vec<u8>, suspect: u8, suspect_is_whole: bool| ClassScores {
            grouping: Some(Grouping {
                cluster,
                suspect: Some(suspect),
                closer_to_class: None,
                suspect_is_whole,
                ..Grouping::default()
            }),
            ..scores(vec![1.0; 10], 1.0)
        };
        let ac = grouped(vec![0, 0, 0, 1, 1, 1, 1, 1, 1, 1], 0, true);
        let rows: Vec<u32> = (0..10).collect();
        let evidence = |separated_is_whole: bool| ClassEvidence {
            class: 0,
            rows: &rows,
            scores: vec![
                ac.clone(),
                grouped(vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1], 1, separated_is_whole),
                scores(vec![1.0; 10], 1.0),
            ]
            .into(),
            geometry: None,
        };
        let e = evidence(true);
        assert_eq!(whole_groups_only(&e, &[0]), Some(vec![1, 1, 1, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(whole_groups_only(&e, &[0, 1]), Some(vec![1, 1, 1, 0, 0, 0, 0, 1, 1, 1]));
        assert_eq!(
            whole_groups_only(&e, &[0, 1, 2]),
            None,
            "SPECTRE attacks without a group"
        );
        assert_eq!(
            whole_groups_only(&evidence(false), &[0, 1]),
            None,
            "a clump is not whole"
        );
        assert_eq!(whole_groups_only(&e, &[]), None);
    }

    /// Whether class 3 is judged attacked when ten classes carry activation-clustering-like
    /// signals `values` (clean bound 0.5, floor 0.1) and class 3's split has a small side.
    fn split_judged_attacked(values: &[f64]) -> bool {
        let rows = rows(values.len(), 40);
        let names: Vec<String> = (0..values.len()).map(|c| c.to_string()).collect();
        let evidence: Vec<ClassEvidence<'_>> = rows
            .iter()
            .zip(values)
            .enumerate()
            .map(|(c, (r, &value))| ClassEvidence {
                class: c,
                rows: r,
                scores: vec![ClassScores {
                    signal: Some(ClassSignal::new(value, 0.5, 0.1)),
                    grouping: Some(Grouping {
                        cluster: (0..r.len()).map(|i| (i < 12) as u8).collect(),
                        suspect: (c == 3).then_some(1),
                        closer_to_class: None,
                        suspect_is_whole: true,
                        ..Grouping::default()
                    }),
                    ..scores(vec![0.0; r.len()], value)
                }]
                .into(),
                geometry: None,
            })
            .collect();
        let d = decide(
            &evidence,
            &["activation_clustering"],
            &names,
            400,
            &DecisionParams::default(),
        );
        d.verdicts[3].as_ref().unwrap().attacked
    }

    #[test]
    fn a_small_split_is_compared_with_every_class_s_split() {
        // The 1M ReLU case: class 3's 29% lobe at 0.533, other classes' balanced splits at
        // 0.44-0.59 (capped at the bound). Scored 0, those splits made 0.533 an outlier.
        let ordinary = [0.5, 0.5, 0.487, 0.533, 0.5, 0.439, 0.0, 0.452, 0.461, 0.494];
        assert!(!split_judged_attacked(&ordinary));
        let mut zeroed = [0.0; 10];
        zeroed[3] = 0.533;
        assert!(split_judged_attacked(&zeroed));
        // A backdoor's split still stands out among clean splits at 0.1-0.3.
        let backdoor = [0.2, 0.25, 0.3, 0.8, 0.15, 0.22, 0.28, 0.1, 0.19, 0.24];
        assert!(split_judged_attacked(&backdoor));
    }

    #[test]
    fn expected_poison_rate_caps_the_quarantine() {
        // Class 3 flags its far record plus its band above 2 sigma; a tiny expected rate keeps
        // only what 2x the rate (+1% slack) of 600 rows allows: ceil(0.0102 * 600) = 7 rows.
        let (ev, total) = classes(&[1.3, 1.32, 1.28, 6.0, 1.29, 1.3], &rows(6, 100));
        let names: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let free = decide(&ev, &["spectre"], &names, total, &DecisionParams::default());
        let params = DecisionParams {
            expected_poison_rate: Some(0.0001),
            ..Default::default()
        };
        let capped = decide(&ev, &["spectre"], &names, total, &params);
        let count = |d: &Decision| d.quarantined.iter().filter(|&&q| q).count();
        assert!(
            count(&capped) <= 7 && count(&capped) <= count(&free),
            "{} vs {}",
            count(&capped),
            count(&free)
        );
        assert!(capped.quarantined[300], "the most suspicious record stays quarantined");
    }

    #[test]
    fn max_quarantine_fraction_is_checked() {
        let p = DecisionParams {
            max_quarantine_fraction: 1.5,
            ..Default::default()
        };
        assert_eq!(p.check().unwrap_err().key, "max-quarantine-fraction");
    }
}
