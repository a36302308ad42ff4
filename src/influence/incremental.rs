//! The influence stage of an incremental scan: the reference's fitted state (surrogate, label
//! rule, trusted-set direction, neighbour index) applied to the records that are new or changed
//! since it, and the reference's values carried over for every other record.
//!
//! What is carried over is what the full scan computed for those records; what the new records
//! change about them is only their near-copy groups (a group that gains copies tonight is found
//! whole). Their neighbour scores are not revisited: at a few percent of new data the shares of
//! disagreeing neighbours move by a few percent at most, and the next re-fit recomputes them.
//! Separated groups are carried over the same way (new records join none until the next full
//! scan): the components need every record's neighbours, which only a full search has.

use std::collections::HashMap;

use super::confident::{LabelRule, carries_label_evidence};
use super::neighbourhood::{self, Groups};
use super::softmax::Softmax;
use super::{
    IncrementalReport, InfluenceModel, InfluenceParams, InfluenceState, argmax, knn, position_labels, self_influence,
    trusted_influence,
};
use crate::io::Dataset;
use crate::progress::Progress;

/// The influence state of `dataset` from `reference`'s, where `known[p]` is the reference
/// position of the record at position `p` (unchanged since the reference) or `None` (new or
/// changed: scored here). Fails, saying why, when the reference cannot score this dataset.
pub fn extend(
    reference: &InfluenceState,
    known: &[Option<u32>],
    dataset: &Dataset,
    params: &InfluenceParams,
    progress: &dyn Progress,
) -> Result<InfluenceState, String> {
    let started = std::time::Instant::now();
    let model = reference
        .model
        .as_ref()
        .ok_or("the reference's influence state holds no fitted model")?;
    let (n, k, dim) = (dataset.rows(), dataset.classes.len(), dataset.dim);
    let reference_rows = reference.rows();
    if reference.classes != k || model.map.input_dim() != dim || reference.duplicate_group.len() != reference_rows {
        return Err("the reference's influence state does not match this dataset's classes or vectors".into());
    }
    let labels = position_labels(dataset);
    let fresh: Vec<usize> = (0..n).filter(|&p| known[p].is_none()).collect();
    progress.start("influence", fresh.len() as u64);
    let fresh_labels: Vec<u32> = fresh.iter().map(|&p| labels[p]).collect();
    let scored = model
        .surrogate
        .as_ref()
        .zip(model.label_rule.as_ref())
        .map(|(surrogate, rule)| score_fresh(surrogate, rule, model, dataset, &fresh, &fresh_labels));

    // Neighbours of the new records among all records, with the reference's index lists.
    let knn_dims = model.knn_dims;
    let coords = model.map.coordinates(&dataset.x, dim, knn_dims);
    let fresh_coords: Vec<f32> = fresh
        .iter()
        .flat_map(|&p| coords[p * knn_dims..(p + 1) * knn_dims].iter().copied())
        .collect();
    let fresh_lists = model.index.assign(&fresh_coords, knn_dims);
    drop(fresh_coords);
    let mut slot = vec![usize::MAX; n];
    fresh.iter().enumerate().for_each(|(q, &p)| slot[p] = q);
    let assignment: Vec<u32> = (0..n)
        .map(|p| match known[p] {
            Some(r) => model.index.assignment[r as usize],
            None => fresh_lists[slot[p]],
        })
        .collect();
    let index = knn::IvfIndex {
        centroids: model.index.centroids.clone(),
        assignment,
    };
    let nb = knn::search(&coords, knn_dims, params.knn_k, params.knn_probes, &index, &fresh);
    let (fresh_disagreement, fresh_distance) = neighbourhood::disagreement_and_distance(&nb, &fresh_labels, &labels);
    let fresh_ratio = neighbourhood::nearest_ratios(&nb, model.median_nearest);

    // Copy groups: the reference's, with the new records linked in.
    let norms = neighbourhood::norms(&dataset.x, dim);
    let live = neighbourhood::live(&norms, &labels, &model.typical_norms);
    let copyable = neighbourhood::copyable(&dataset.x, dim, &live);
    let mut groups = Groups::new(n);
    let mut member_of: HashMap<u32, u32> = HashMap::new();
    for (p, r) in known.iter().enumerate() {
        let Some(r) = *r else { continue };
        let root = reference.duplicate_group[r as usize];
        if reference.duplicate_group_size[r as usize] > 1 {
            let first = *member_of.entry(root).or_insert(p as u32);
            groups.seed(first, p as u32);
        }
    }
    let threshold = params.near_duplicate_ratio * model.median_nearest;
    groups.link_close(&nb, &fresh, &copyable, threshold);
    let copies = groups.finish(
        &coords,
        knn_dims,
        &labels,
        threshold,
        params.near_duplicate_min_group,
        (&nb, &fresh),
    );
    drop(coords);

    let mut out = InfluenceState {
        classes: k,
        label_probability: Vec::new(),
        suggested_probability: Vec::new(),
        legacy_out_of_fold: Vec::new(),
        label_issue: Vec::new(),
        suggested: Vec::new(),
        self_influence: Vec::new(),
        trusted_influence: None,
        knn_disagreement: vec![0.0; n],
        knn_distance: vec![0.0; n],
        nearest_ratio: vec![0.0; n],
        duplicate_group_size: copies.size,
        duplicate_group_labels: copies.labels,
        duplicate_group: copies.root,
        separated_group_size: vec![0; n],
        separated_outsider_disagreement: vec![0.0; n],
        report: reference.report.clone(),
        model: None,
    };
    for p in 0..n {
        let (dis, dist, ratio) = match known[p] {
            Some(r) => {
                let r = r as usize;
                (
                    reference.knn_disagreement[r],
                    reference.knn_distance[r],
                    reference.nearest_ratio[r],
                )
            }
            None => {
                let q = slot[p];
                (fresh_disagreement[q], fresh_distance[q], fresh_ratio[q])
            }
        };
        out.knn_disagreement[p] = dis;
        out.knn_distance[p] = dist;
        out.nearest_ratio[p] = ratio;
        if let Some(r) = known[p]
            .map(|r| r as usize)
            .filter(|&r| r < reference.separated_group_size.len())
        {
            out.separated_group_size[p] = reference.separated_group_size[r];
            out.separated_outsider_disagreement[p] = reference.separated_outsider_disagreement[r];
        }
    }
    let correct =
        scored.map(|fresh_scores| carry_surrogate_scores(&mut out, reference, known, &slot, &labels, &fresh_scores));
    progress.advance(fresh.len() as u64);
    progress.finish();

    out.report.label_issues = out.label_issue.iter().filter(|&&i| i).count();
    if correct.is_some() {
        // Tonight's records too, as a full scan would count them (not the reference's count).
        out.report.zero_vectors_not_label_checked = dataset
            .x
            .chunks_exact(dim)
            .filter(|v| !carries_label_evidence(v))
            .count();
    }
    out.report.knn.near_duplicate_groups = copies.count;
    out.report.knn.near_duplicate_records = copies.records;
    out.report.knn.separated_records = out.separated_group_size.iter().filter(|&&s| s > 0).count();
    out.report.knn.separated_seconds = 0.0;
    out.report.seconds = started.elapsed().as_secs_f64();
    out.report.incremental = Some(IncrementalReport {
        records_scored: fresh.len(),
        records_reused: n - fresh.len(),
        seconds: out.report.seconds,
        new_record_accuracy: correct
            .filter(|_| !fresh.is_empty())
            .map(|c| c as f64 / fresh.len() as f64),
    });
    let mut model = model.clone();
    model.index = index;
    out.model = Some(model);
    Ok(out)
}

/// The reference's surrogate on the new records (`fresh`, labelled `fresh_labels`): their
/// probabilities (`fresh.len() * k`, out-of-sample for it, like out-of-fold ones), the label
/// rule's verdicts, self- and trusted-set influence.
struct FreshScores {
    probs: Vec<f32>,
    judged: Vec<Option<u32>>,
    self_influence: Vec<f32>,
    trusted: Option<Vec<f32>>,
}

fn score_fresh(
    surrogate: &Softmax,
    rule: &LabelRule,
    model: &InfluenceModel,
    dataset: &Dataset,
    fresh: &[usize],
    fresh_labels: &[u32],
) -> FreshScores {
    let (dim, k) = (dataset.dim, dataset.classes.len());
    let x_new: Vec<f32> = fresh
        .iter()
        .flat_map(|&p| dataset.x[p * dim..(p + 1) * dim].iter().copied())
        .collect();
    let (design, _) = model.map.features(&x_new, dim, 1);
    drop(x_new);
    let cols = model.map.dims + 1;
    let probs = surrogate.predict(&design);
    let judged = probs
        .chunks_exact(k)
        .zip(fresh_labels)
        .zip(fresh)
        .map(|((row, &label), &p)| {
            carries_label_evidence(&dataset.x[p * dim..(p + 1) * dim])
                .then(|| rule.judge(row, label as usize))
                .flatten()
        })
        .collect();
    FreshScores {
        self_influence: self_influence(&probs, &design, cols, fresh_labels),
        trusted: model
            .trusted_direction
            .as_ref()
            .map(|d| trusted_influence(d, &design, cols, fresh_labels, &probs, k)),
        judged,
        probs,
    }
}

/// Fills `out`'s surrogate scores: the reference's for records it knows (`known`), `fresh`'s for
/// the others (`slot[p]`: their row there). Returns how many new records the surrogate labels
/// as they are labelled.
fn carry_surrogate_scores(
    out: &mut InfluenceState,
    reference: &InfluenceState,
    known: &[Option<u32>],
    slot: &[usize],
    labels: &[u32],
    fresh: &FreshScores,
) -> usize {
    let (n, k) = (labels.len(), out.classes);
    out.label_probability = vec![0.0; n];
    out.suggested_probability = vec![0.0; n];
    out.label_issue = vec![false; n];
    out.suggested = labels.to_vec();
    out.self_influence = vec![0.0; n];
    out.trusted_influence = fresh.trusted.as_ref().map(|_| vec![0.0; n]);
    let mut correct = 0usize;
    for p in 0..n {
        let ((label_probability, suggested_probability), issue, suggested, si, ti) = match known[p] {
            Some(r) => {
                let r = r as usize;
                let ti = reference.trusted_influence.as_ref().map_or(0.0, |t| t[r]);
                let pair = reference.probabilities_of(r, labels[p] as usize);
                (
                    pair,
                    reference.label_issue[r],
                    reference.suggested[r],
                    reference.self_influence[r],
                    ti,
                )
            }
            None => {
                let q = slot[p];
                let row = &fresh.probs[q * k..(q + 1) * k];
                correct += (argmax(row) == labels[p] as usize) as usize;
                let suggested = fresh.judged[q].unwrap_or(labels[p]);
                let pair = (row[labels[p] as usize], row[suggested as usize]);
                let ti = fresh.trusted.as_ref().map_or(0.0, |t| t[q]);
                (pair, fresh.judged[q].is_some(), suggested, fresh.self_influence[q], ti)
            }
        };
        out.label_probability[p] = label_probability;
        out.suggested_probability[p] = suggested_probability;
        out.label_issue[p] = issue;
        out.suggested[p] = suggested;
        out.self_influence[p] = si;
        if let Some(t) = out.trusted_influence.as_mut() {
            t[p] = ti;
        }
    }
    correct
}
