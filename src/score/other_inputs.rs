//! A group of other classes' inputs at the top of a class's SPECTRE tail.
//!
//! Why: a backdoor a few records strong (1-5% of a few hundred records per class) often leaves a
//! class's statistics like the other classes' while its records top the class's SPECTRE scores.
//! Deep k-NN misses them when they are each other's nearest records (the trigger ties them
//! together, and they carry the target label). Set the tail aside and a poisoned record's
//! nearest records are those of the classes its inputs came from, the reasoning of activation
//! clustering's exclusionary reclassification (Chen et al. 2018, arXiv 1811.03728) and of
//! `influence::separated`, here at the scale of a handful of records; a clean tail record's
//! nearest are its own class's. More tests keep out what else looks like that: the records
//! must be a group (each one's nearest record of its class is another of them: label noise and
//! boundary cases are scattered) of some size against the tail, and their outsiders must come
//! from more than one class (a natural overlap with a neighbouring class, or records flipped
//! from one class, come from one; all-to-one poison from several).
//!
//! Measured on generated ReLU layers (tuning seeds 1-20 at 64 units x 500 records per class and
//! 128 x 300: 1%, 5% and faint 5% backdoors, clean and label-flip datasets; seeds 1-8 at 3000
//! per class): 8 of 19 backdoor classes that no other rule found passed, and where the target
//! class passed, 137 of its 138 marked records were poison; no class of a clean dataset, and no
//! other class of an attacked one, passed. Label-flip classes do (their marked records are
//! mostly flipped ones).

use rayon::prelude::*;

use super::{ClassEvidence, RecordEvidence, detector, label_issues};
use crate::stats::{is_live, mean_where};

/// Outsiders (nearest records outside the tail, any class) per queried record.
const OUTSIDERS: usize = 10;
/// Tail records queried, highest SPECTRE score first (all in one pass over the records).
const MAX_QUERIES: usize = 48;
/// Outsiders' other-label share from which a tail record looks like another class's input.
pub(super) const MIN_OUTSIDER_SHARE: f64 = 0.5;
/// Fewest records in the group...
pub(super) const MIN_GROUP: usize = 3;
/// ...and its least share of the tail: a heavy-tailed class of thousands flags hundreds of
/// records, among which small groups of boundary cases are natural (tuning seeds, 3000 records
/// per class: clean classes' groups were at most 2.1% of their tails; at 300-500 per class the
/// poison's were 6.1-43%). With [`MAX_QUERIES`] queried, a tail of over 1 200 records cannot
/// pass: such a class is left to the other rules.
const MIN_SHARE_OF_TAIL: f64 = 0.04;
/// Fewest classes the group's outsiders come from (each member counted by its outsiders' most
/// common other class).
pub(super) const MIN_SOURCES: usize = 2;
/// How many times the rest of the class's other-label share (deep k-NN's, mean over the records
/// not in the group) the group's outsider share must be. In a class that overlaps others, a
/// tail's boundary records are each other's nearest and look like other classes' inputs as a
/// matter of course; poison looks so against a class whose records otherwise do not. Measured on
/// generated ReLU layers (tuning seeds 11-40, 50 classes x 200 records x 128 units, clean and
/// 5%/15% backdoors; 1-60 at 10 classes x 300-500): the clean classes that passed the other
/// tests had 1.8-6.7 times their rest's share (50 classes; their rest's 0.12-0.47) and 7.1-18
/// (10 classes, 4 classes in 840 sets), the backdoors' 9.7-137 (50 classes) and 13-2 500 or
/// more (10 classes; the rest's often ~0). Its cost, seen on the unseen 3 000-per-class grid:
/// a 47-record poison group (outsider share 1.00) in a class whose rest share is over 1/8 can no
/// longer pass (seed 1013, 128 units, faint 5%). Letting a group pass instead by its excess over
/// the rest (members x (share - rest) >= 24 records, where that one had 41 and the tuning sets'
/// false groups at most 12.8) was tried: on 50 classes x 1 000 records false groups of 35-46
/// reached 25-37, and it judged 4 more clean classes attacked in 10 sets. Not kept.
pub(super) const MIN_RATIO_TO_THE_REST: f64 = 8.0;
/// Mean label doubt of a group under which it is grown (see [`OtherInputs::learned`]).
const MAX_DOUBT_TO_GROW: f64 = 0.5;
/// Records searched for outsiders at most (see [`search`]).
const MAX_OUTSIDER_ROWS: usize = 50_000;
/// Candidate rows per parallel task of the outsider search.
const ROWS_PER_TASK: usize = 2048;

/// The tail records that look like other classes' inputs, when they hold a group.
pub(super) struct OtherInputs {
    /// Class-local indices of the queried tail records whose outsiders' other-label share is at
    /// least [`MIN_OUTSIDER_SHARE`], with that share.
    pub members: Vec<(usize, f64)>,
    /// How many of them have another member as their class's nearest record.
    pub grouped: usize,
    /// Classes their outsiders come from.
    pub sources: usize,
    /// Their mean 1 - p(label) out of fold (confident learning's scores), if it ran.
    pub label_doubt: Option<f64>,
    /// Whether they were found by a shared trigger's fingerprint (`fingerprint`; the tail was
    /// not set aside to search their nearest records) rather than as each other's nearest.
    pub by_fingerprint: bool,
    /// Records beyond the members that share their fingerprint (class-local index, cosine of
    /// their leftover with the members' mean); empty for a group not found by one.
    pub sharing: Vec<(usize, f64)>,
}

impl OtherInputs {
    pub fn mean_share(&self) -> f64 {
        self.members.iter().map(|m| m.1).sum::<f64>() / self.members.len().max(1) as f64
    }

    /// The records of class `e` sharing a trigger's fingerprint (`members`, from `sources`
    /// source classes, and the records found `sharing` it beyond them), as a group: each one's
    /// nearest of the class is not asked (the fingerprint ties them), so all count as grouped.
    pub fn from_fingerprint(
        e: &ClassEvidence<'_>,
        names: &[&str],
        members: Vec<(usize, f64)>,
        sources: usize,
        sharing: Vec<(usize, f64)>,
    ) -> OtherInputs {
        let label_doubt = mean_label_doubt(e, names, members.iter().map(|m| m.0));
        OtherInputs {
            grouped: members.len(),
            members,
            sources,
            label_doubt,
            by_fingerprint: true,
            sharing,
        }
    }

    /// Whether the surrogate learned their label (or did not run): then they are a population
    /// trained into the class, as a backdoor's poison is (its trigger is a feature to learn),
    /// and worth growing to the whole of it; labels it doubts are label noise's, whose records
    /// share nothing to grow along (label-flip runs at 64 x 500, tuning seeds 1-20: growing
    /// every group added 10 clean records per run and found 0.006 more of the flipped ones).
    pub fn learned(&self) -> bool {
        self.label_doubt.is_none_or(|doubt| doubt < MAX_DOUBT_TO_GROW)
    }
}

/// Mean label doubt (confident learning's 1 - p(label) out of fold) of class `e`'s records at
/// `indices` (class-local); `None` when confident learning did not run.
fn mean_label_doubt(e: &ClassEvidence<'_>, names: &[&str], indices: impl Iterator<Item = usize>) -> Option<f64> {
    let doubt = detector(e, names, "confident_learning")?;
    let (sum, count) = indices.fold((0.0, 0usize), |(sum, count), i| {
        (sum + doubt.scores[i] as f64, count + 1)
    });
    Some(sum / count.max(1) as f64)
}

/// What searching a class's tail for other classes' inputs found.
pub(super) struct TailSearch {
    /// How far the queried top of the tail looks like other classes' inputs beyond the rest of
    /// the class: ln((mean outsider share + [`SHARE_FLOOR`]) / (rest's deep k-NN other-label
    /// share + [`SHARE_FLOOR`])), the rest being the records not queried. `None` without deep
    /// k-NN. Compared across the classes by the tails (see `tails::tails_of_other_inputs`).
    pub tail_over_rest: Option<f64>,
    /// The group, if the tail holds one.
    pub group: Option<OtherInputs>,
}

/// Added to both shares of [`TailSearch::tail_over_rest`]: a class whose records never
/// neighbour another class's would otherwise make any tail look infinitely far out.
const SHARE_FLOOR: f64 = 0.02;

/// Class `at`'s tail records (its record flags but confident learning's label issues, which are
/// that detector's finding) that look like other classes' inputs, if they form a group from
/// several classes; `None` too without vectors (`geometry`) or SPECTRE. (The tails ask
/// [`search_tail`], which also says how far the tail stands out.)
#[cfg(test)]
pub(super) fn group_of_other_inputs(
    evidence: &[ClassEvidence<'_>],
    at: usize,
    names: &[&str],
    record: &RecordEvidence,
) -> Option<OtherInputs> {
    search_tail(evidence, at, names, record)?.group
}

/// Searches class `at`'s top tail records (its record flags but confident learning's label
/// issues, which are that detector's finding, highest SPECTRE score first) for other classes'
/// inputs: how far they look so beyond the rest of the class, and whether they form a group
/// from several classes. `None` when there is nothing to search: no vectors (`geometry`), no
/// SPECTRE, too few flags.
pub(super) fn search_tail(
    evidence: &[ClassEvidence<'_>],
    at: usize,
    names: &[&str],
    record: &RecordEvidence,
) -> Option<TailSearch> {
    let e = &evidence[at];
    e.geometry?; // no vectors to search
    let spectre = detector(e, names, "spectre")?;
    let issues = label_issues(e, names);
    let mut queries: Vec<usize> = (0..record.flag.len())
        .filter(|&i| record.flag[i] && !issues[i])
        .collect();
    let min_group = MIN_GROUP.max((MIN_SHARE_OF_TAIL * queries.len() as f64).ceil() as usize);
    if queries.len() < min_group {
        return None;
    }
    queries.sort_by(|&a, &b| spectre.scores[b].total_cmp(&spectre.scores[a]).then(a.cmp(&b)));
    queries.truncate(MAX_QUERIES);
    let found = search(evidence, at, &record.flag, &queries, true);
    let shares: Vec<f64> = found.iter().map(|f| f.other_classes_than(e.class).1).collect();
    let mut queried = vec![false; record.flag.len()];
    queries.iter().for_each(|&i| queried[i] = true);
    let tail_over_rest = rest_other_label_share(e, names, &queried).map(|rest| {
        let tail = shares.iter().sum::<f64>() / shares.len() as f64;
        ((tail + SHARE_FLOOR) / (rest + SHARE_FLOOR)).ln()
    });
    let marked: Vec<Marked> = queries
        .iter()
        .zip(&found)
        .zip(&shares)
        .filter(|(_, share)| **share >= MIN_OUTSIDER_SHARE)
        .map(|((&index, found), &share)| Marked {
            index,
            share,
            source: most_common(&found.other_classes_than(e.class).0),
            nearest_of_class: found.nearest_of_class.map(|n| n.1),
        })
        .collect();
    let group = group_of(e, names, marked, min_group);
    Some(TailSearch { tail_over_rest, group })
}

/// The `marked` tail records as a group, if at least `min_group` of them are each other's
/// nearest of the class, from [`MIN_SOURCES`] classes or more, and they stand out against the
/// rest of the class ([`MIN_RATIO_TO_THE_REST`]).
fn group_of(e: &ClassEvidence<'_>, names: &[&str], marked: Vec<Marked>, min_group: usize) -> Option<OtherInputs> {
    let is_marked = |j: usize| marked.iter().any(|m| m.index == j);
    let grouped: Vec<&Marked> = marked
        .iter()
        .filter(|m| m.nearest_of_class.is_some_and(is_marked))
        .collect();
    let mut sources: Vec<usize> = grouped.iter().map(|m| m.source).collect();
    sources.sort_unstable();
    sources.dedup();
    log::debug!(
        "class {}: {} queried tail records look like other classes' inputs, {} of them grouped, from {} classes (group needs {})",
        e.class,
        marked.len(),
        grouped.len(),
        sources.len(),
        min_group
    );
    if grouped.len() < min_group || sources.len() < MIN_SOURCES {
        return None;
    }
    let label_doubt = mean_label_doubt(e, names, marked.iter().map(|m| m.index));
    let group = OtherInputs {
        grouped: grouped.len(),
        sources: sources.len(),
        label_doubt,
        by_fingerprint: false,
        sharing: Vec::new(),
        members: marked.into_iter().map(|m| (m.index, m.share)).collect(),
    };
    let mut in_group = vec![false; e.rows.len()];
    group.members.iter().for_each(|&(i, _)| in_group[i] = true);
    match rest_other_label_share(e, names, &in_group) {
        Some(rest) if group.mean_share() < MIN_RATIO_TO_THE_REST * rest => None,
        _ => Some(group),
    }
}

/// Deep k-NN's other-label share, mean over class `e`'s records not `in_group` (class-local);
/// what a group that looks like other classes' inputs is measured against (see
/// [`MIN_RATIO_TO_THE_REST`]). Label issues stay in: in a class that label flips fill they raise
/// it, and confident learning flags them anyway. So do all-zero vectors, as the threshold was
/// measured, though their share is whichever tied zero vectors the search kept (0.6-0.7 on the
/// 64-unit tuning sets that had them): leaving them out let two groups of classes without
/// poison pass at 10 classes, by a hair (ratios 7.1 -> about 8.2). `None` when deep k-NN did
/// not run or no record is left.
pub(super) fn rest_other_label_share(e: &ClassEvidence<'_>, names: &[&str], in_group: &[bool]) -> Option<f64> {
    let knn = detector(e, names, "deep_knn")?;
    mean_where(&knn.scores, |i| !in_group[i])
}

/// A queried tail record whose outsiders are mostly other classes'.
struct Marked {
    /// Class-local index.
    index: usize,
    /// Other classes' share of its outsiders.
    share: f64,
    /// The class most of them are.
    source: usize,
    /// Its nearest other record of its class (class-local index).
    nearest_of_class: Option<usize>,
}

/// The most common value of a non-empty list (the smallest on ties).
pub(super) fn most_common(values: &[usize]) -> usize {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted
        .chunk_by(|a, b| a == b)
        .max_by(|a, b| a.len().cmp(&b.len()).then(b[0].cmp(&a[0])))
        .map_or(usize::MAX, |run| run[0])
}

/// One of a queried record's nearest records.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Outsider {
    /// Squared distance to the queried record.
    pub d: f32,
    /// Its class (label index).
    pub class: usize,
    /// Where it is: the index of its class's evidence, and its class-local index.
    pub at: usize,
    pub index: usize,
}

/// What one pass over the records finds for a queried record.
#[derive(Clone, Default)]
pub(super) struct Found {
    /// Its [`OUTSIDERS`] nearest records, nearest first.
    pub outsiders: Vec<Outsider>,
    /// Its nearest other live record of its own class, as (squared distance, class-local index).
    pub nearest_of_class: Option<(f32, usize)>,
}

impl Found {
    /// Its outsiders' classes but `own`, and their share of its outsiders.
    pub fn other_classes_than(&self, own: usize) -> (Vec<usize>, f64) {
        let other: Vec<usize> = self.outsiders.iter().map(|o| o.class).filter(|&c| c != own).collect();
        let share = other.len() as f64 / self.outsiders.len().max(1) as f64;
        (other, share)
    }

    /// Keeps `outsiders` the [`OUTSIDERS`] smallest distances seen, sorted (the first offered
    /// first among equals).
    fn offer_outsider(&mut self, outsider: Outsider) {
        let top = &mut self.outsiders;
        if top.len() == OUTSIDERS && outsider.d >= top[OUTSIDERS - 1].d {
            return;
        }
        let pos = top.partition_point(|seen| seen.d <= outsider.d);
        top.insert(pos, outsider);
        top.truncate(OUTSIDERS);
    }

    fn offer_of_class(&mut self, d: f32, index: usize) {
        if self.nearest_of_class.is_none_or(|best| (d, index) < best) {
            self.nearest_of_class = Some((d, index));
        }
    }

    fn merge(&mut self, other: Found) {
        other.outsiders.into_iter().for_each(|o| self.offer_outsider(o));
        if let Some((d, index)) = other.nearest_of_class {
            self.offer_of_class(d, index);
        }
    }
}

/// For each of class `at`'s records `queries` (class-local indices): its outsiders, the nearest
/// records among every analysed class's but the all-zero ones and class `at`'s records in
/// `excluded`; and, with `with_nearest_of_class`, its nearest other live record of class `at`,
/// excluded or not (which visits every record of the class, not only the sampled). One pass over
/// the records, in parallel blocks, each block holding every query. Over [`MAX_OUTSIDER_ROWS`]
/// records, every k-th record of each class stands for all as an outsider (by its index in its
/// class, so each class keeps its share): the outsiders' labels are what counts, and a pass over
/// millions of rows per class searched would cost seconds.
pub(super) fn search(
    evidence: &[ClassEvidence<'_>],
    at: usize,
    excluded: &[bool],
    queries: &[usize],
    with_nearest_of_class: bool,
) -> Vec<Found> {
    let rows: usize = evidence
        .iter()
        .filter(|e| e.geometry.is_some())
        .map(|e| e.rows.len())
        .sum();
    let stride = rows.div_ceil(MAX_OUTSIDER_ROWS).max(1);
    let Some(own) = evidence[at].geometry else {
        return vec![Found::default(); queries.len()];
    };
    let dim = own.dim;
    let query_rows: Vec<&[f32]> = queries.iter().map(|&i| &own.x[i * dim..(i + 1) * dim]).collect();
    let empty = || vec![Found::default(); queries.len()];
    let blocks: Vec<(usize, usize, &[f32])> = evidence
        .iter()
        .enumerate()
        .filter_map(|(c, e)| e.geometry.map(|g| (c, g.x)))
        .flat_map(|(c, x)| {
            x.chunks(ROWS_PER_TASK * dim)
                .enumerate()
                .map(move |(b, chunk)| (c, b * ROWS_PER_TASK, chunk))
        })
        .collect();
    blocks
        .par_iter()
        .map(|&(c, first, chunk)| {
            let mut found = empty();
            for (r, row) in chunk.chunks_exact(dim).enumerate() {
                let j = first + r;
                let own_nearest = c == at && with_nearest_of_class;
                let outsider = j % stride == 0 && !(c == at && excluded[j]);
                if !(outsider || own_nearest) || !is_live(row) {
                    continue;
                }
                for ((f, query), &q) in found.iter_mut().zip(&query_rows).zip(queries) {
                    let d = squared_distance(query, row);
                    if outsider && !(c == at && j == q) {
                        f.offer_outsider(Outsider {
                            d,
                            class: evidence[c].class,
                            at: c,
                            index: j,
                        });
                    }
                    if own_nearest && j != q {
                        f.offer_of_class(d, j);
                    }
                }
            }
            found
        })
        .reduce(empty, |mut a, b| {
            a.iter_mut().zip(b).for_each(|(a, b)| a.merge(b));
            a
        })
}

/// In eight lanes, so the compiler can vectorise it (a float sum in one lane must keep its order).
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            lanes[k] += (x[k] - y[k]) * (x[k] - y[k]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{BasisFit, ClassScores, Flag};
    use crate::score::ClassGeometry;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    const DIM: usize = 6;
    const PER_CLASS: usize = 60;

    /// Four classes of `PER_CLASS` records at 10 along their own axis (noise 0.5). Class 0's
    /// first records are replaced by `tail` (row values), flagged and topping its SPECTRE scores;
    /// `issues` of them are confident learning's label issues.
    fn four_classes(tail: &[[f32; DIM]], issues: usize) -> (Vec<ClassEvidence<'static>>, RecordEvidence) {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
        let mut evidence = Vec::new();
        for c in 0..4 {
            let mut x: Vec<f32> = (0..PER_CLASS * DIM)
                .map(|k| {
                    let noise: f64 = StandardNormal.sample(&mut rng);
                    (k % DIM == c) as u8 as f32 * 10.0 + 0.5 * noise as f32
                })
                .collect();
            if c == 0 {
                x[..tail.len() * DIM].copy_from_slice(tail.as_flattened());
            }
            let x: &'static [f32] = Box::leak(x.into_boxed_slice());
            let basis: &'static BasisFit = Box::leak(Box::new(BasisFit::fit(x, DIM, 2)));
            let rows: &'static [u32] = Box::leak((0..PER_CLASS as u32).map(|r| r + (c * PER_CLASS) as u32).collect());
            let scores = |values: Vec<f32>, flagged: Vec<Flag>| ClassScores {
                scores: values,
                stats: Vec::new(),
                signal: None,
                grouping: None,
                record_level: None,
                flagged,
                fit: None,
            };
            let spectre: Vec<f32> = (0..PER_CLASS)
                .map(|i| {
                    if c == 0 && i < tail.len() {
                        100.0 - i as f32
                    } else {
                        1.0
                    }
                })
                .collect();
            let label_issues = (0..if c == 0 { issues } else { 0 })
                .map(|index| Flag {
                    index,
                    strength: 0.5,
                    why: "label issue".into(),
                })
                .collect();
            evidence.push(ClassEvidence {
                class: c,
                rows,
                scores: vec![scores(spectre, Vec::new()), scores(vec![0.0; PER_CLASS], label_issues)].into(),
                geometry: Some(ClassGeometry { basis, x, dim: DIM }),
            });
        }
        let record = RecordEvidence {
            evidence: vec![0.0; PER_CLASS],
            flag: (0..PER_CLASS).map(|i| i < tail.len()).collect(),
            why: vec![String::new(); PER_CLASS],
        };
        (evidence, record)
    }

    /// Class `source`'s input: at 10 along its axis, `trigger` along the last, `jitter` along its own.
    fn input_of(source: usize, trigger: f32, jitter: f32) -> [f32; DIM] {
        let mut row = [0.0; DIM];
        row[source] = 10.0 + jitter;
        row[DIM - 1] = trigger;
        row
    }

    fn group(tail: &[[f32; DIM]], issues: usize) -> Option<OtherInputs> {
        let (evidence, record) = four_classes(tail, issues);
        group_of_other_inputs(&evidence, 0, &["spectre", "confident_learning"], &record)
    }

    #[test]
    fn a_triggered_group_from_several_classes_is_found() {
        // Two triggered inputs from each of classes 1, 2, 3: each one's nearest of class 0 is
        // its twin, its nearest outside the tail are its source class's records.
        let tail: Vec<[f32; DIM]> = (1..4)
            .flat_map(|s| [input_of(s, 6.0, 0.0), input_of(s, 6.0, 0.2)])
            .collect();
        let found = group(&tail, 0).expect("a group");
        assert_eq!(
            found.members.iter().map(|m| m.0).collect::<Vec<_>>(),
            (0..6).collect::<Vec<_>>()
        );
        assert!(found.members.iter().all(|m| m.1 == 1.0));
        assert_eq!((found.grouped, found.sources), (6, 3));
        // Confident learning's label issues are its finding: without them, too few remain.
        assert!(group(&tail, 4).is_none());
    }

    #[test]
    fn a_group_in_a_class_whose_records_often_neighbour_other_classes_is_no_group() {
        // The triggered group above, in a class whose other records' deep k-NN other-label share
        // is `rest`: a group of other classes' inputs means something only where the class's
        // records otherwise keep to their own class.
        let tail: Vec<[f32; DIM]> = (1..4)
            .flat_map(|s| [input_of(s, 6.0, 0.0), input_of(s, 6.0, 0.2)])
            .collect();
        let found_with_rest = |rest: f32| {
            let (mut evidence, record) = four_classes(&tail, 0);
            let knn: Vec<f32> = (0..PER_CLASS)
                .map(|i| if i < tail.len() { 1.0 } else { rest })
                .collect();
            let mut knn_scores = evidence[0].scores[1].clone();
            knn_scores.scores = knn;
            knn_scores.flagged.clear();
            evidence[0].scores.to_mut().push(knn_scores);
            group_of_other_inputs(&evidence, 0, &["spectre", "confident_learning", "deep_knn"], &record)
        };
        assert!(found_with_rest(0.02).is_some());
        // Outsider share 1.0 against the rest's 0.2: five times, under MIN_RATIO_TO_THE_REST.
        assert!(found_with_rest(0.2).is_none());
    }

    #[test]
    fn one_source_scattered_records_or_the_class_s_own_tail_are_no_group() {
        // All from class 1: a natural overlap, or labels flipped from one class.
        let one_source: Vec<[f32; DIM]> = (0..6).map(|k| input_of(1, 6.0, k as f32 * 0.1)).collect();
        assert!(group(&one_source, 0).is_none());
        // Other classes' inputs, each with an unflagged record of class 0 beside it (a boundary
        // case, not a group): its nearest of the class is not another member.
        let mut scattered: Vec<[f32; DIM]> = (1..4).map(|s| input_of(s, 0.0, 0.0)).collect();
        scattered.extend((1..4).map(|s| input_of(s, 0.0, 0.1)));
        let (mut evidence, mut record) = four_classes(&scattered, 0);
        record.flag[3..6].fill(false);
        evidence[0].scores.to_mut()[0].scores[3..6].fill(1.0);
        assert!(group_of_other_inputs(&evidence, 0, &["spectre", "confident_learning"], &record).is_none());
        // Far records of the class's own shape: their nearest outside the tail are class 0's.
        let own: Vec<[f32; DIM]> = (0..6).map(|k| input_of(0, 0.0, 8.0 + k as f32 * 0.1)).collect();
        assert!(group(&own, 0).is_none());
    }

    #[test]
    fn outsiders_are_the_nearest_kept_and_sorted_and_blocks_merge_to_the_same() {
        let offers: Vec<Outsider> = [(5.0, 1), (1.0, 2), (3.0, 3)]
            .into_iter()
            .cycle()
            .take(30)
            .enumerate()
            .map(|(index, (d, class))| Outsider {
                d,
                class,
                at: class,
                index,
            })
            .collect();
        let mut whole = Found::default();
        offers.iter().for_each(|&o| whole.offer_outsider(o));
        assert_eq!(whole.outsiders.len(), OUTSIDERS);
        assert!(whole.outsiders.windows(2).all(|w| w[0].d <= w[1].d));
        assert_eq!(whole.outsiders.iter().filter(|t| t.class == 2).count(), OUTSIDERS);
        // Split in two blocks and merged: the same outsiders; the nearest of the class is the
        // smallest distance, the smallest index among equals.
        let (mut first, mut second) = (Found::default(), Found::default());
        offers[..13].iter().for_each(|&o| first.offer_outsider(o));
        offers[13..].iter().for_each(|&o| second.offer_outsider(o));
        first.offer_of_class(2.0, 7);
        second.offer_of_class(2.0, 4);
        second.offer_of_class(3.0, 1);
        first.merge(second);
        assert_eq!(first.outsiders, whole.outsiders);
        assert_eq!(first.nearest_of_class, Some((2.0, 4)));
        assert_eq!(most_common(&[3, 1, 3, 1, 2]), 1);
        assert_eq!(most_common(&[2, 3, 3]), 3);
    }

    #[test]
    fn over_the_sample_size_every_class_keeps_its_share_of_outsiders() {
        // Two classes of 30 000 records in 2 dimensions (60 000 > MAX_OUTSIDER_ROWS: every
        // second record of each class is an outsider), their global rows interleaved (class c
        // holds rows 2k + c, so a stride on global rows would drop class 1 whole). A query of
        // class 0 at class 1's place finds class 1's records as its outsiders; a tail record of
        // class 0 past the first block is its nearest of the class.
        let n = 30_000;
        let evidence: Vec<ClassEvidence<'static>> = (0..2)
            .map(|c| {
                let x: Vec<f32> = (0..n)
                    .flat_map(|i| [c as f32 * 10.0 + (i % 100) as f32 * 0.01, 1.0 + (i / 100) as f32 * 0.01])
                    .collect();
                let x: &'static [f32] = Box::leak(x.into_boxed_slice());
                let basis: &'static BasisFit = Box::leak(Box::new(BasisFit::fit(x, 2, 1)));
                let rows: &'static [u32] = Box::leak((0..n as u32).map(|k| 2 * k + c as u32).collect());
                ClassEvidence {
                    class: c,
                    rows,
                    scores: Vec::new().into(),
                    geometry: Some(ClassGeometry { basis, x, dim: 2 }),
                }
            })
            .collect();
        let mut x0 = evidence[0].geometry.unwrap().x.to_vec();
        let (query, twin) = (5_000, 25_000);
        x0[query * 2..query * 2 + 2].copy_from_slice(&[10.0, 1.0]);
        x0[twin * 2..twin * 2 + 2].copy_from_slice(&[10.001, 1.0]);
        let x0: &'static [f32] = Box::leak(x0.into_boxed_slice());
        let mut evidence = evidence;
        evidence[0].geometry = Some(ClassGeometry {
            x: x0,
            ..evidence[0].geometry.unwrap()
        });
        let mut excluded = vec![false; n];
        excluded[query] = true;
        excluded[twin] = true;
        let found = search(&evidence, 0, &excluded, &[query], true);
        assert_eq!(found[0].outsiders.len(), OUTSIDERS);
        assert!(
            found[0].outsiders.iter().all(|o| o.class == 1),
            "{:?}",
            found[0].outsiders
        );
        assert_eq!(found[0].nearest_of_class.map(|n| n.1), Some(twin));
    }
}
